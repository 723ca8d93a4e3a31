"""Supervised training on tensors: hard or soft targets, a softmax temperature, deterministic per seed.

Pure torch: progress and logging reach the outside world only through the callbacks.
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from suite.errors import TrainingError


@dataclass(frozen=True)
class Recipe:
    """The optimisation settings training needs (a manifest's [train] table maps onto it)."""

    epochs: int
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    lr_decay_epochs: tuple[int, ...] = ()
    lr_decay: float = 0.1


BatchLoss = Callable[
    [nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]
]


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int
    train_loss: float
    train_acc: float
    val_acc: float
    test_acc: float
    seconds: float

    def as_metrics(self) -> dict[str, float]:
        """The per-epoch values as MLflow metric names (`val_acc`, ...)."""
        return {
            "train_loss": self.train_loss,
            "train_acc": self.train_acc,
            "val_acc": self.val_acc,
            "test_acc": self.test_acc,
            "epoch_seconds": self.seconds,
        }


def distillation_loss(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Cross-entropy of softmax(logits / T) against hard labels (int) or a soft distribution (float)."""
    log_probs = F.log_softmax(logits / temperature, dim=1)
    if targets.dtype == torch.long:
        return F.nll_loss(log_probs, targets)
    return -(targets * log_probs).sum(dim=1).mean()


def make_optimizer(params: list[nn.Parameter], recipe: Recipe) -> torch.optim.Optimizer:
    """SGD with (Nesterov) momentum, or Adam, as the recipe says."""
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(
        params,
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov and recipe.momentum > 0,
        weight_decay=recipe.weight_decay,
    )


@torch.no_grad()
def predict_logits(
    model: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = 1000
) -> torch.Tensor:
    """Logits of `model` (in eval mode) over `x`, computed in batches, returned on the CPU."""
    was_training = model.training
    model.eval()
    out = [model(chunk.to(device)).cpu() for chunk in x.split(batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 10)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> float:
    """Top-1 accuracy in eval mode; NaN for an empty split."""
    if len(x) == 0:
        return math.nan
    return (predict_logits(model, x, device).argmax(1) == y).float().mean().item()


def fit(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    labels: torch.Tensor,
    recipe: Recipe,
    *,
    seed: int,
    device: torch.device,
    temperature: float = 1.0,
    evaluate: Callable[[nn.Module], tuple[float, float]] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    batch_loss: BatchLoss | None = None,
) -> list[EpochMetrics]:
    """Train `model` in place for `recipe.epochs`; return per-epoch metrics.

    `targets` are hard labels (int64) or soft labels (float rows summing to 1) and the loss is
    taken at softmax temperature `temperature`; `labels` are the hard labels used for train
    accuracy. `evaluate(model) -> (val_acc, test_acc)` runs after each epoch. The batch order comes
    from a generator seeded with `seed`, so a CPU run repeats bit for bit. A NaN/inf loss raises
    TrainingError naming the epoch and batch. `batch_loss(model, x, targets, labels) -> (logits,
    loss)` replaces the loss for objectives that change the inputs (adversarial training); train
    accuracy is then taken on the logits it returns.
    """
    model.to(device).train()
    optimizer = make_optimizer(list(model.parameters()), recipe)
    generator = torch.Generator().manual_seed(seed)
    n_batches = math.ceil(len(x) / recipe.batch_size)
    history: list[EpochMetrics] = []
    for epoch in range(1, recipe.epochs + 1):
        if epoch in recipe.lr_decay_epochs:
            for group in optimizer.param_groups:
                group["lr"] *= recipe.lr_decay
        start = time.perf_counter()
        total_loss, correct = 0.0, 0
        order = torch.randperm(len(x), generator=generator)
        for b, idx in enumerate(order.split(recipe.batch_size), start=1):
            xb, tb = x[idx].to(device), targets[idx].to(device)
            if batch_loss is None:
                logits = model(xb)
                loss = distillation_loss(logits, tb, temperature)
            else:
                logits, loss = batch_loss(model, xb, tb, labels[idx].to(device))
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"training diverged: loss is {loss.item()} at epoch {epoch}, batch {b}; "
                    f"lower train.lr (now {recipe.lr}) or check the data"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(idx)
            correct += (logits.argmax(1).cpu() == labels[idx]).sum().item()
            if on_batch is not None:
                on_batch(b, n_batches)
        val_acc, test_acc = evaluate(model) if evaluate else (math.nan, math.nan)
        model.train()
        metrics = EpochMetrics(
            epoch=epoch,
            train_loss=total_loss / len(x),
            train_acc=correct / len(x),
            val_acc=val_acc,
            test_acc=test_acc,
            seconds=time.perf_counter() - start,
        )
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(metrics)
    model.eval()
    return history
