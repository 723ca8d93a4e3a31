"""Models trained on a synthetic distilled set alone (dataset distillation) or a real coreset."""

import dataclasses
import io

import torch
from torch import nn

from suite import schema
from suite.conditions.common import cached_training
from suite.distill import EvalRecipe, distill, train_on_synthetic
from suite.errors import TrainingError
from suite.job import Context, ModelRun
from suite.manifest import SyntheticCondition, config_hash, flatten
from suite.models import build_model
from suite.plots import ImageRow, image_grid
from suite.training import accuracy


def run_synthetic(
    *, ctx: Context, cond: SyntheticCondition, seed: int, parent_id: str
) -> list[ModelRun]:
    """Distil `ipc` images per class from the training split, then train the condition's `arch`
    (default `model.arch`) on them alone with that architecture's recipe."""
    arch = cond.arch or ctx.manifest.model.arch
    recipe = cond.eval.recipe(arch)
    cfg = config_hash("synthetic", ctx.data_config(), arch, dataclasses.asdict(recipe), cond, seed)
    params = {
        **ctx.base_params(),
        **flatten({"method": cond.method, "ipc": cond.ipc, "init": cond.init}),
        **flatten({**dataclasses.asdict(recipe), "min_test_acc": cond.eval.min_test_acc}, "eval"),
        **flatten(cond.params, "distill"),
        "model.arch": arch,
        "seed": seed,
    }
    return [
        cached_training(
            ctx,
            parent_id,
            condition=cond.name,
            kind=cond.kind,
            role=schema.ROLE_MODEL,
            seed=seed,
            cfg_hash=cfg,
            params=params,
            attack=True,
            train=lambda run_id: _distil_and_train(ctx, cond, arch, recipe, seed, run_id),
            arch=arch,
            dropout=recipe.dropout,
        )
    ]


def _distil_and_train(
    ctx: Context,
    cond: SyntheticCondition,
    arch: str,
    recipe: EvalRecipe,
    seed: int,
    run_id: str,
) -> tuple[nn.Module, float, float]:
    store, data = ctx.store, ctx.data
    label = f"{cond.name} seed {seed}: {cond.method} ipc={cond.ipc}"
    task = ctx.progress.task(label, total=None)
    curve: list[tuple[int, float]] = []

    def on_step(i: int, total: int, loss: float) -> None:
        curve.append((i, loss))
        task.update(i, total=total, loss=f"{loss:.4g}")

    try:
        result = distill(
            cond.method,
            cond.params,
            data.train.x,
            data.train.y,
            ipc=cond.ipc,
            init=cond.init,
            seed=seed,
            device=ctx.device,
            on_step=on_step,
            compile=ctx.manifest.experiment.compile,
        )
    finally:
        task.close()
    for step, loss in curve:
        store.log_metrics(run_id, {"distill_loss": loss}, step=step)
    blob = io.BytesIO()
    torch.save({"x": result.x_syn, "y": result.y_syn, "lrs": result.lrs}, blob)
    store.log_artifact_bytes(run_id, "synthetic/set.pt", lambda p: p.write_bytes(blob.getvalue()))
    store.log_artifact_bytes(
        run_id, "synthetic/grid.png", lambda p: synthetic_grid(result.x_syn, result.y_syn, p)
    )

    torch.manual_seed(seed)
    model = ctx.place(build_model(arch, dropout=recipe.dropout))
    task = ctx.progress.task(f"{label}: train {arch} on the set", total=recipe.epochs)
    try:
        train_on_synthetic(
            model,
            result.x_syn,
            result.y_syn,
            recipe,
            seed=seed,
            on_epoch=lambda epoch, loss: task.update(epoch, loss=f"{loss:.4g}"),
        )
    finally:
        task.close()
    val_acc = accuracy(model, data.val.x, data.val.y)
    test_acc = accuracy(model, data.test.x, data.test.y)
    store.log_metrics(run_id, {"val_acc": val_acc, "test_acc": test_acc}, step=recipe.epochs)
    check_floor(cond, arch, seed, test_acc)
    return model, val_acc, test_acc


def check_floor(cond: SyntheticCondition, arch: str, seed: int, test_acc: float) -> None:
    """Refuse a model that is no real classifier: attacking it would compare near-chance models on
    the few digits they happen to get right. Raised inside the run, the reason becomes its
    `suite.error` tag and the run ends FAILED, so no verdict is drawn from it."""
    floor = cond.eval.min_test_acc
    if test_acc < floor:
        raise TrainingError(
            f"conditions.{cond.name}.eval.min_test_acc: the {arch} model of seed {seed}, trained on "
            f"the {cond.method} ipc {cond.ipc} set, reached {test_acc:.1%} clean test accuracy, "
            f"below the floor {floor:.0%}; give [conditions.eval] a better recipe (epochs, lr, "
            "optimizer) or lower min_test_acc"
        )


def synthetic_grid(x: torch.Tensor, y: torch.Tensor, path) -> None:
    """PNG of the synthetic set: one row per class, labelled with it, up to ten images each."""
    images, labels = x.numpy()[:, 0], y.numpy()
    rows = [ImageRow(images=images[labels == c][:10], label=str(c)) for c in sorted(set(labels))]
    image_grid(rows, path)
