"""The undistilled baseline: cross-entropy on hard labels at T = 1."""

from suite.conditions import Context, ModelRun, cached_training, train_model
from suite.manifest import StandardCondition, config_hash


def run_standard(
    ctx: Context, cond: StandardCondition, seed: int, parent_id: str
) -> list[ModelRun]:
    """Train (or reuse) one model of `model.arch` on the hard labels for this seed."""
    m = ctx.manifest
    epochs = cond.epochs or m.train.epochs
    cfg = config_hash("standard", ctx.data_config(), m.model, m.train, epochs, seed)
    run = cached_training(
        ctx,
        parent_id,
        condition=cond.name,
        kind=cond.kind,
        role="model",
        seed=seed,
        cfg_hash=cfg,
        params={**ctx.base_params(), "seed": seed, "train.epochs": epochs},
        attack=True,
        train=lambda run_id: train_model(
            ctx,
            run_id,
            f"{cond.name} seed {seed}: train",
            seed=seed,
            targets=ctx.data.train.y,
            epochs=epochs,
        ),
    )
    return [run]
