"""What the condition kinds share: train a model from its seed on the training split, with its
curves logged (reuse is `suite.cache.cached_training`)."""

import math
from collections.abc import Callable

import torch
from torch import nn

from suite.job import Context
from suite.models import build_model
from suite.training import BatchLoss, EpochMetrics, accuracy, fit


def train_model(
    ctx: Context,
    run_id: str,
    label: str,
    *,
    seed: int,
    targets: torch.Tensor,
    epochs: int | None = None,
    temperature: float = 1.0,
    batch_loss: BatchLoss | None = None,
    epoch_metrics: Callable[[nn.Module], dict[str, float]] | None = None,
    arch: str | None = None,
    stop: Callable[[nn.Module], bool] | None = None,
    stop_every: int = 1,
) -> tuple[nn.Module, float, float]:
    """Build `arch` (default `model.arch`) from the seed on `ctx.device` and fit it there on the
    training split; log per-epoch curves. The model is returned where it was trained, on
    `ctx.device`.

    `batch_loss` replaces the (soft-)label loss (see `training.fit`); `epoch_metrics(model)` adds
    named values to each epoch's curves (robust validation accuracy); `stop` and `stop_every` end
    training early (see `training.fit`)."""
    m = ctx.manifest
    torch.manual_seed(seed)
    model = ctx.place(build_model(arch or m.model.arch, dropout=m.train.dropout))
    recipe = ctx.recipe(epochs)
    split = ctx.data
    n_batches = math.ceil(len(split.train.x) / recipe.batch_size)
    task = ctx.progress.task(label, total=recipe.epochs * n_batches)

    extra: dict[str, float] = {}

    def evaluate(net: nn.Module) -> tuple[float, float]:
        extra.update(epoch_metrics(net) if epoch_metrics else {})
        return (
            accuracy(net, split.val.x, split.val.y),
            accuracy(net, split.test.x, split.test.y),
        )

    epochs_done = 0

    def on_epoch(e: EpochMetrics) -> None:
        nonlocal epochs_done
        epochs_done = e.epoch
        ctx.store.log_metrics(run_id, {**e.as_metrics(), **extra}, step=e.epoch)
        task.update(e.epoch * n_batches, val_acc=f"{e.val_acc:.3f}")

    def on_batch(b: int, total: int) -> None:
        if b % 10 == 0:
            task.update(epochs_done * n_batches + b)

    try:
        history = fit(
            model,
            split.train.x,
            targets,
            split.train.y,
            recipe,
            seed=seed,
            temperature=temperature,
            batch_loss=batch_loss,
            evaluate=evaluate,
            on_batch=on_batch,
            on_epoch=on_epoch,
            stop=stop,
            stop_every=stop_every,
        )
    finally:
        task.close()
    return model, history[-1].val_acc, history[-1].test_acc
