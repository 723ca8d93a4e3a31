"""The undistilled baseline: cross-entropy on hard labels at T = 1."""

from suite import schema
from suite.cache import cached_training
from suite.conditions.common import train_model
from suite.identity import ModelKey
from suite.job import Context, Dependency, ModelRun
from suite.manifest import Manifest, ModelSpec, StandardCondition


def standard_keys(
    m: Manifest, cond: StandardCondition, seed: int, dependency: Dependency | None = None
) -> list[ModelKey]:
    """The key of the condition's one model for `seed`."""
    epochs = cond.epochs or m.train.epochs
    model = ModelSpec(arch=cond.arch or m.model.arch)
    return [
        ModelKey(
            cond.name, cond.kind, schema.ROLE_MODEL, seed,
            ("standard", Context.data_config_of(m), model, m.train, epochs, seed),
            {"train.epochs": epochs, "model.arch": model.arch},
        )
    ]  # fmt: skip


def run_standard(
    *, ctx: Context, cond: StandardCondition, seed: int, parent_id: str
) -> list[ModelRun]:
    """Train (or reuse) one model of the condition's `arch` (default `model.arch`) on the hard
    labels for this seed."""
    m = ctx.manifest
    epochs = cond.epochs or m.train.epochs
    model = ModelSpec(arch=cond.arch or m.model.arch)
    (key,) = standard_keys(m, cond, seed)
    run = cached_training(
        ctx,
        parent_id,
        key,
        lambda run_id: train_model(
            ctx,
            run_id,
            f"{cond.name} seed {seed}: train",
            seed=seed,
            targets=ctx.data.train.y,
            epochs=epochs,
            arch=model.arch,
        ),
        attack=True,
        arch=model.arch,
    )
    return [run]
