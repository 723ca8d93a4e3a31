"""Conditions: how a model under attack comes to be (undistilled, defensive distillation, synthetic data).

Each condition kind is one function `(ctx, condition, seed, parent_run_id) -> list[ModelRun]`,
registered in CONDITIONS; the runner knows nothing else about them.
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from suite.data import DataSplits
from suite.manifest import Manifest, flatten
from suite.models import build_model
from suite.progress import Progress
from suite.tracking import Store
from suite.training import BatchLoss, EpochMetrics, Recipe, accuracy, fit


@dataclass
class Context:
    """Everything a condition needs that is shared by the whole experiment."""

    manifest: Manifest
    data: DataSplits
    store: Store
    experiment_id: str
    device: torch.device
    progress: Progress
    force: bool = False

    def data_config(self) -> dict:
        """The settings that fix the data split (part of every config hash)."""
        return self.data_config_of(self.manifest)

    @staticmethod
    def data_config_of(manifest: Manifest) -> dict:
        d = manifest.data
        return {
            "dataset": d.dataset,
            "train_samples": d.train_samples,
            "val_samples": d.val_samples,
            "split_seed": d.split_seed,
        }

    def recipe(self, epochs: int | None = None) -> Recipe:
        t = self.manifest.train
        return Recipe(
            epochs=epochs or t.epochs,
            batch_size=t.batch_size,
            optimizer=t.optimizer,
            lr=t.lr,
            momentum=t.momentum,
            nesterov=t.nesterov,
            weight_decay=t.weight_decay,
            lr_decay_epochs=tuple(t.lr_decay_epochs),
            lr_decay=t.lr_decay,
        )

    def place(self, model: nn.Module) -> nn.Module:
        """Move `model` to the experiment's device (in place) and return it: the one place where the
        suite moves a model, done when a model is built or loaded. Everything downstream runs a model
        on its own device (`suite.devices.model_device`), so a model never meets inputs elsewhere."""
        return model.to(self.device)

    def base_params(self) -> dict:
        m = self.manifest
        return flatten(
            {
                "data": {**self.data_config(), "source": self.data.source},
                "model": m.model,
                "train": m.train,
            }
        )


@dataclass
class ModelRun:
    """One trained (or reused) model, on the experiment's device, and where it is logged."""

    condition: str
    kind: str
    role: str
    seed: int
    run_id: str
    model: nn.Module
    reused: bool
    attack: bool
    val_acc: float
    test_acc: float
    seconds: float
    extra: dict[str, float] = field(default_factory=dict)


def cached_training(
    ctx: Context,
    parent_id: str,
    *,
    condition: str,
    kind: str,
    role: str,
    seed: int,
    cfg_hash: str,
    params: dict,
    attack: bool,
    train: Callable[[str], tuple[nn.Module, float, float]],
    tags: dict[str, str] | None = None,
    arch: str | None = None,
    dropout: float | None = None,
) -> ModelRun:
    """Reuse the trusted run with this config hash (`Store.find_model_run`); else train it in a new
    child run.

    `train(run_id) -> (model, val_acc, test_acc)` does the work and logs its own curves, returning
    the model on `ctx.device`; this function logs the model, the final metrics and the timing, and
    marks the run reusable. Either way the returned model is on `ctx.device`. `arch` and `dropout`
    (default `model.arch`, `train.dropout`) are the trained model's, logged so it loads back.
    """
    store = ctx.store
    if not ctx.force:
        run = store.find_model_run(ctx.experiment_id, condition, cfg_hash)
        if run is not None:
            m = run.data.metrics
            return ModelRun(
                condition,
                kind,
                role,
                seed,
                run.info.run_id,
                ctx.place(store.load_model(run)),
                True,
                attack,
                m.get("final_val_acc", math.nan),
                m.get("final_test_acc", math.nan),
                m.get("train_seconds", math.nan),
            )
    name = f"{condition}/seed={seed}" + ("" if role == "model" else f"/{role}")
    run_tags = {
        "condition": condition,
        "kind": kind,
        "seed": str(seed),
        "role": role,
        "config_hash": cfg_hash,
        **(tags or {}),
    }
    run_id = store.create_child(ctx.experiment_id, parent_id, name, run_tags, params)
    store.log_dataset(run_id, ctx.data)
    with store.active(run_id):
        torch.manual_seed(seed)
        start = time.perf_counter()
        model, val_acc, test_acc = train(run_id)
        seconds = time.perf_counter() - start
        store.log_metrics(
            run_id, {"final_val_acc": val_acc, "final_test_acc": test_acc, "train_seconds": seconds}
        )
        store.log_model(
            run_id,
            model,
            arch or ctx.manifest.model.arch,
            ctx.manifest.train.dropout if dropout is None else dropout,
        )
    return ModelRun(
        condition, kind, role, seed, run_id, model, False, attack, val_acc, test_acc, seconds
    )


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
) -> tuple[nn.Module, float, float]:
    """Build `arch` (default `model.arch`) from the seed on `ctx.device` and fit it there on the
    training split; log per-epoch curves. The model is returned where it was trained, on
    `ctx.device`.

    `batch_loss` replaces the (soft-)label loss (see `training.fit`); `epoch_metrics(model)` adds
    named values to each epoch's curves (robust validation accuracy)."""
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
        )
    finally:
        task.close()
    return model, history[-1].val_acc, history[-1].test_acc
