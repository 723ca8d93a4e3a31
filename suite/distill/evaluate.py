"""Training a model on a synthetic set alone: the evaluation recipe of DC, DSA and DM."""

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from suite.devices import model_device
from suite.distill import dsa
from suite.errors import TrainingError


def train_on_synthetic(
    model: nn.Module,
    x_syn: torch.Tensor,
    y_syn: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    augment: bool,
    seed: int,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    strategy: str = dsa.DEFAULT_STRATEGY,
    on_epoch: Callable[[int, float], None] | None = None,
) -> nn.Module:
    """Train `model` in place, on its own device, on (x_syn, y_syn) and return it in eval mode.

    SGD with momentum and weight decay; after half the epochs the rate drops ×0.1 on a fresh
    optimiser, as the papers' `evaluate_synset` does. With `augment`, every batch gets per-image DSA
    (`strategy`, by default the papers'), applied in the set's own standardised space as the papers
    augment normalised images. Shuffling and augmentation follow `seed`; the init is the caller's.
    `on_epoch(epoch, mean_loss)` is called after each epoch (1-based).
    """
    device = model_device(model)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    x, y = x_syn.to(device), y_syn.to(device)
    mean, std = x.mean(), x.std().clamp_min(1e-6)

    def sgd(rate: float) -> torch.optim.SGD:
        return torch.optim.SGD(
            model.parameters(), lr=rate, momentum=momentum, weight_decay=weight_decay
        )

    optimizer = sgd(lr)
    for epoch in range(1, epochs + 1):
        if epoch == epochs // 2 + 1 and epoch > 1:
            optimizer = sgd(lr * 0.1)
        total = 0.0
        for idx in torch.randperm(len(y), generator=generator).split(batch_size):
            idx = idx.to(device)
            xb = x[idx]
            if augment:
                xb = dsa.augment((xb - mean) / std, strategy, generator) * std + mean
            loss = F.cross_entropy(model(xb), y[idx])
            if not math.isfinite(loss.item()):
                raise TrainingError(
                    f"train_on_synthetic: loss became {loss.item()} at epoch {epoch}; "
                    f"lower lr (got {lr})"
                )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        if on_epoch is not None:
            on_epoch(epoch, total / len(y))
    return model.eval()
