"""The undistilled baseline: cross-entropy on hard labels at T = 1."""

from suite import schema
from suite.conditions.common import cached_training, train_model
from suite.job import Context, ModelRun
from suite.manifest import ModelSpec, StandardCondition, config_hash


def run_standard(
    *, ctx: Context, cond: StandardCondition, seed: int, parent_id: str
) -> list[ModelRun]:
    """Train (or reuse) one model of the condition's `arch` (default `model.arch`) on the hard
    labels for this seed."""
    m = ctx.manifest
    epochs = cond.epochs or m.train.epochs
    model = ModelSpec(arch=cond.arch or m.model.arch)
    cfg = config_hash("standard", ctx.data_config(), model, m.train, epochs, seed)
    run = cached_training(
        ctx,
        parent_id,
        condition=cond.name,
        kind=cond.kind,
        role=schema.ROLE_MODEL,
        seed=seed,
        cfg_hash=cfg,
        params={
            **ctx.base_params(),
            "seed": seed,
            "train.epochs": epochs,
            "model.arch": model.arch,
        },
        attack=True,
        train=lambda run_id: train_model(
            ctx,
            run_id,
            f"{cond.name} seed {seed}: train",
            seed=seed,
            targets=ctx.data.train.y,
            epochs=epochs,
            arch=model.arch,
        ),
        arch=model.arch,
    )
    return [run]
