"""The accuracy-matched control of a synthetic-set model (issue 26, item 3): the undistilled
network on the full training split, stopped as soon as its validation accuracy reaches the
synthetic model's. It separates "less robust" from "less accurate": a model trained on a distilled
set that is less robust than this one lost more robustness than its lower accuracy explains."""

from suite import schema
from suite.cache import cached_training
from suite.conditions.common import train_model
from suite.identity import ModelKey
from suite.job import Context, Dependency, ModelRun
from suite.manifest import Manifest, MatchedCondition
from suite.training import accuracy


def matched_keys(
    m: Manifest, cond: MatchedCondition, seed: int, dependency: Dependency | None = None
) -> list[ModelKey]:
    """The key of the model stopped at `dependency`'s validation accuracy, for `seed` (none
    without it: the goal is part of the identity)."""
    if dependency is None:
        return []
    epochs = cond.epochs or m.train.epochs
    goal = dependency.val_acc
    return [
        ModelKey(
            cond.name, cond.kind, schema.ROLE_MODEL, seed,
            ("matched", Context.data_config_of(m), m.model, m.train, epochs, goal,
             cond.check_every, seed),
            {
                "train.epochs": epochs,
                "matched.condition": cond.match,
                "matched.run_id": dependency.run_id,
                "matched.val_acc": goal,
                "matched.check_every": cond.check_every,
            },
        )
    ]  # fmt: skip


def run_matched(
    *, ctx: Context, cond: MatchedCondition, seed: int, parent_id: str
) -> list[ModelRun]:
    """Get `cond.match`'s model for this seed through the registry (reused from the store, as it
    is when listed first), then train (or reuse) `model.arch` on the full training split until its
    validation accuracy first reaches that model's, checked every `check_every` batches, for at
    most `epochs` (train.epochs)."""
    from suite.conditions import run_condition  # the registry lists this module: import it late

    m = ctx.manifest
    matched_cond = next(c for c in m.conditions if c.name == cond.match)
    target = run_condition(ctx=ctx, cond=matched_cond, seed=seed, parent_id=parent_id)[-1]
    goal = target.val_acc
    epochs = cond.epochs or m.train.epochs
    (key,) = matched_keys(m, cond, seed, Dependency(target.run_id, goal))
    val = ctx.data.val

    def reached(model) -> bool:
        return accuracy(model, val.x, val.y) >= goal

    def train(run_id: str):
        model, val_acc, test_acc = train_model(
            ctx,
            run_id,
            f"{cond.name} seed {seed}: train until val acc {goal:.2%} ({cond.match}'s)",
            seed=seed,
            targets=ctx.data.train.y,
            epochs=epochs,
            stop=reached,
            stop_every=cond.check_every,
        )
        if val_acc < goal:
            ctx.progress.log(
                f"warning: {cond.name} seed {seed}: {epochs} epochs reached {val_acc:.2%} "
                f"validation accuracy, below {cond.match}'s {goal:.2%}; raise epochs to match it"
            )
        return model, val_acc, test_acc

    run = cached_training(ctx, parent_id, key, train, attack=True)
    return [run]
