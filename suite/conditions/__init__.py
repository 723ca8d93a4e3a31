"""Conditions: how a model under attack comes to be (undistilled, defensive distillation, synthetic
data, adversarial training, ARD, the accuracy-matched control).

Each kind is one `ConditionKind` entry of CONDITIONS: its manifest settings model and a function
called `run(ctx=, cond=, seed=, parent_id=) -> list[ModelRun]` that trains (or reuses) the kind's
models for one seed in child runs of `parent_id`; the runner knows nothing else about them.
"""

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel

from suite.conditions.adversarial import run_adversarial
from suite.conditions.ard import run_ard
from suite.conditions.defensive import run_defensive
from suite.conditions.matched import run_matched
from suite.conditions.standard import run_standard
from suite.conditions.synthetic import run_synthetic
from suite.job import Context, ModelRun
from suite.manifest import (
    AdversarialCondition,
    ARDCondition,
    DefensiveCondition,
    MatchedCondition,
    StandardCondition,
    SyntheticBase,
)


@dataclass(frozen=True)
class ConditionKind:
    """A condition kind: its manifest settings and how its models come to be."""

    params: type[BaseModel]
    run: Callable[..., list[ModelRun]]


CONDITIONS: dict[str, ConditionKind] = {
    "standard": ConditionKind(params=StandardCondition, run=run_standard),
    "defensive": ConditionKind(params=DefensiveCondition, run=run_defensive),
    "synthetic": ConditionKind(params=SyntheticBase, run=run_synthetic),
    "adversarial": ConditionKind(params=AdversarialCondition, run=run_adversarial),
    "ard": ConditionKind(params=ARDCondition, run=run_ard),
    "matched": ConditionKind(params=MatchedCondition, run=run_matched),
}


def run_condition(*, ctx: Context, cond: BaseModel, seed: int, parent_id: str) -> list[ModelRun]:
    """Train (or reuse) the models of `cond` for `seed`; the last one is the model under attack."""
    kind = getattr(cond, "kind", None)
    entry = CONDITIONS.get(kind) if isinstance(kind, str) else None
    if entry is None or not isinstance(cond, entry.params):
        raise TypeError(f"no condition kind takes {type(cond).__name__} (kind {kind!r})")
    return entry.run(ctx=ctx, cond=cond, seed=seed, parent_id=parent_id)
