"""Models trained on a synthetic distilled set alone (dataset distillation) or a real coreset."""

import dataclasses

import torch
from torch import nn

from suite import schema
from suite.cache import cached_training, find_set_run
from suite.distill import DistillResult, EvalRecipe, distill, train_on_synthetic
from suite.errors import TrainingError
from suite.identity import ModelKey, config_hash
from suite.job import Context, Dependency, ModelRun
from suite.manifest import Manifest, SyntheticCondition, flatten
from suite.models import build_model
from suite.plots import ImageRow, image_grid
from suite.training import accuracy


def synthetic_keys(
    m: Manifest, cond: SyntheticCondition, seed: int, dependency: Dependency | None = None
) -> list[ModelKey]:
    """The key of the model trained on the condition's set for `seed`."""
    arch = cond.arch or m.model.arch
    recipe = cond.eval.recipe(arch)
    return [
        ModelKey(
            cond.name, cond.kind, schema.ROLE_MODEL, seed,
            ("synthetic", Context.data_config_of(m), arch, dataclasses.asdict(recipe), cond, seed),
            {
                **flatten({"method": cond.method, "ipc": cond.ipc, "init": cond.init}),
                **flatten(
                    {**dataclasses.asdict(recipe), "min_test_acc": cond.eval.min_test_acc}, "eval"
                ),
                **flatten(cond.params, "distill"),
                "model.arch": arch,
            },
        )
    ]  # fmt: skip


def run_synthetic(
    *, ctx: Context, cond: SyntheticCondition, seed: int, parent_id: str
) -> list[ModelRun]:
    """Distil `ipc` images per class from the training split (or reuse the stored set with the
    same identity: method, settings, ipc, init, the data and the set's seed, `set_seed` or the
    run's), then train the condition's `arch` (default `model.arch`) on them alone with that
    architecture's recipe."""
    arch = cond.arch or ctx.manifest.model.arch
    recipe = cond.eval.recipe(arch)
    (key,) = synthetic_keys(ctx.manifest, cond, seed)
    return [
        cached_training(
            ctx,
            parent_id,
            key,
            lambda run_id: _distil_and_train(ctx, cond, arch, recipe, seed, run_id),
            attack=True,
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
    set_seed = seed if cond.set_seed is None else cond.set_seed
    set_hash = config_hash(
        "set", ctx.data_config(), cond.method, cond.params, cond.ipc, cond.init, set_seed
    )
    synthetic = [c.name for c in ctx.manifest.conditions if c.kind == "synthetic"]
    with store.claim(f"set/{ctx.experiment_id}/{set_hash}/{data.digest}"):
        source = find_set_run(store, ctx.experiment_id, synthetic, set_hash, data.digest)
        if source is not None:
            ctx.progress.log(f"{label}: reusing the set of run {source.run_id}")
            result = stored_set(store, source.run_id)
            store.set_tags(run_id, {schema.SET_FROM: source.run_id})
        else:
            result = _distil(ctx, cond, label, set_seed, run_id)
        log_set(store, run_id, result)
        store.set_tags(run_id, {schema.SET_HASH: set_hash})

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


def _distil(
    ctx: Context, cond: SyntheticCondition, label: str, set_seed: int, run_id: str
) -> DistillResult:
    """Distil the condition's set from the training split with `set_seed`, with a bar and the
    objective's curve logged on `run_id`."""
    data = ctx.data
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
            seed=set_seed,
            device=ctx.device,
            on_step=on_step,
            compile=ctx.manifest.experiment.compile,
        )
    finally:
        task.close()
    for step, loss in curve:
        ctx.store.log_metrics(run_id, {"distill_loss": loss}, step=step)
    return result


def log_set(store, run_id: str, result: DistillResult) -> None:
    """The set as exact arrays (`schema.SYNTHETIC_SET`, read back without unpickling) and its
    picture."""
    arrays = {"x": result.x_syn.numpy(), "y": result.y_syn.numpy()}
    if result.lrs is not None:
        arrays["lrs"] = result.lrs.detach().cpu().numpy()
    store.log_arrays(run_id, schema.SYNTHETIC_SET, arrays)
    store.log_artifact_bytes(
        run_id, "synthetic/grid.png", lambda p: synthetic_grid(result.x_syn, result.y_syn, p)
    )


def stored_set(store, run_id: str) -> DistillResult:
    """The set `log_set` stored on `run_id`, checked to be images in [0, 1] with a label each."""
    arrays = store.load_arrays(run_id, schema.SYNTHETIC_SET)
    x, y = torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"])
    if x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28) or len(x) != len(y):
        raise TrainingError(
            f"run {run_id}: {schema.SYNTHETIC_SET} holds no image set; rerun with --force"
        )
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise TrainingError(f"run {run_id}: {schema.SYNTHETIC_SET} has pixels outside [0, 1]")
    lrs = torch.from_numpy(arrays["lrs"]) if "lrs" in arrays else None
    return DistillResult(x.float(), y.long(), [], lrs)


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
