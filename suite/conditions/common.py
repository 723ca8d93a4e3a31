"""What the condition kinds share: train a model in a child run, or reuse the stored one."""

import math
import time
from collections.abc import Callable

import torch
from torch import nn

from suite import schema
from suite.cache import data_changed, reusable_model
from suite.job import Context, ModelRun
from suite.models import build_model
from suite.tracking import ReusedModel
from suite.training import BatchLoss, EpochMetrics, accuracy, fit
from suite.weights import NonFiniteModel


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
    """Reuse the trusted run with this config hash made on this data (`cache.reusable_model`: the
    data's content digest is part of a model's identity); else train it in a new child run, saying
    so when the stored model was made on other data.

    `train(run_id) -> (model, val_acc, test_acc)` does the work and logs its own curves, returning
    the model on `ctx.device`; this function logs the model, the final metrics and the timing, and
    marks the run reusable. Either way the returned model is on `ctx.device`. `arch` and `dropout`
    (default `model.arch`, `train.dropout`) are the trained model's, logged so it loads back.
    """
    store, digest = ctx.store, ctx.data.digest
    record = {"condition": condition, "kind": kind, "role": role, "seed": seed, "attack": attack}
    what = f"{condition} seed {seed}" + ("" if role == schema.ROLE_MODEL else f" ({role})")

    def reusable() -> ReusedModel | None:
        if ctx.force:
            return None
        try:
            return reusable_model(store, ctx.experiment_id, condition, cfg_hash, digest)
        except NonFiniteModel as exc:  # a diverged or tampered model: train a fresh one
            ctx.progress.log(f"warning: {what}: {exc}; retraining")
            return None

    def waiting(holder: str) -> None:
        ctx.progress.log(f"{what}: {holder} is training it; waiting to reuse it")

    # claimed, so a concurrent run on this store waits for the model and then reuses it
    with store.claim(f"model/{ctx.experiment_id}/{condition}/{cfg_hash}/{digest}", waiting):
        reused = reusable()
        if reused is None:
            changed = (
                None
                if ctx.force
                else data_changed(store, ctx.experiment_id, condition, cfg_hash, digest)
            )
            if changed:
                ctx.progress.log(f"{what}: the data changed (now {digest}; {changed}): retraining")
            run_id, model, final = _train_in_child_run(
                ctx, parent_id, record, cfg_hash, params, train, tags, arch, dropout
            )
    if reused is not None:
        run_id, model, final = reused.run_id, ctx.place(reused.model), reused.metrics
    return ModelRun(
        **record,
        run_id=run_id,
        model=model,
        reused=reused is not None,
        val_acc=final.get(schema.FINAL_VAL_ACC, math.nan),
        test_acc=final.get(schema.FINAL_TEST_ACC, math.nan),
        seconds=final.get(schema.TRAIN_SECONDS, math.nan),
    )


def _train_in_child_run(
    ctx: Context,
    parent_id: str,
    record: dict,
    cfg_hash: str,
    params: dict,
    train: Callable[[str], tuple[nn.Module, float, float]],
    tags: dict[str, str] | None,
    arch: str | None,
    dropout: float | None,
) -> tuple[str, nn.Module, dict[str, float]]:
    """Train in a new child run and log the model and its final metrics: (run id, model, metrics)."""
    store, condition, seed, role = ctx.store, record["condition"], record["seed"], record["role"]
    name = f"{condition}/seed={seed}" + ("" if role == schema.ROLE_MODEL else f"/{role}")
    run_tags = {
        schema.CONDITION: condition,
        schema.KIND: record["kind"],
        schema.SEED: str(seed),
        schema.ROLE: role,
        schema.CONFIG_HASH: cfg_hash,
        schema.DATA_DIGEST: ctx.data.digest,
        **(tags or {}),
    }
    run_id = store.create_child(ctx.experiment_id, parent_id, name, run_tags, params)
    store.log_dataset(run_id, ctx.data)
    with store.active(run_id):
        torch.manual_seed(seed)
        start = time.perf_counter()
        model, val_acc, test_acc = train(run_id)
        final = {
            schema.FINAL_VAL_ACC: val_acc,
            schema.FINAL_TEST_ACC: test_acc,
            schema.TRAIN_SECONDS: time.perf_counter() - start,
        }
        store.log_metrics(run_id, final)
        store.log_model(
            run_id,
            model,
            arch or ctx.manifest.model.arch,
            ctx.manifest.train.dropout if dropout is None else dropout,
        )
    return run_id, model, final


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
