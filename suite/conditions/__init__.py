"""Conditions: how a model under attack comes to be (undistilled, defensive distillation, synthetic
data, adversarial training, ARD, the accuracy-matched control).

Each kind is one `ConditionKind` entry of CONDITIONS: its manifest settings model, a function
called `run(ctx=, cond=, seed=, parent_id=) -> list[ModelRun]` that trains (or reuses) the kind's
models for one seed in child runs of `parent_id`, and `keys(manifest, cond, seed, dependency)`, the
identities of those models without training anything (what `suite run --dry-run` looks up in the
store); the runner knows nothing else about them.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from suite.conditions.adversarial import adversarial_keys, run_adversarial
from suite.conditions.ard import ard_keys, run_ard
from suite.conditions.defensive import defensive_keys, run_defensive
from suite.conditions.matched import matched_keys, run_matched
from suite.conditions.standard import run_standard, standard_keys
from suite.conditions.synthetic import run_synthetic, synthetic_keys
from suite.identity import ModelKey
from suite.job import Context, Dependency, ModelRun
from suite.manifest import (
    AdversarialCondition,
    ARDCondition,
    DefensiveCondition,
    Manifest,
    MatchedCondition,
    StandardCondition,
    SyntheticBase,
)


@dataclass(frozen=True)
class ConditionKind:
    """A condition kind: its manifest settings and how its models come to be."""

    params: type[BaseModel]
    run: Callable[..., list[ModelRun]]
    keys: Callable[[Manifest, Any, int, Dependency | None], list[ModelKey]]
    depends_on: str | None = None  # the field naming the condition whose model this one needs


CONDITIONS: dict[str, ConditionKind] = {
    "standard": ConditionKind(StandardCondition, run_standard, standard_keys),
    "defensive": ConditionKind(DefensiveCondition, run_defensive, defensive_keys),
    "synthetic": ConditionKind(SyntheticBase, run_synthetic, synthetic_keys),
    "adversarial": ConditionKind(AdversarialCondition, run_adversarial, adversarial_keys),
    "ard": ConditionKind(ARDCondition, run_ard, ard_keys, depends_on="teacher"),
    "matched": ConditionKind(MatchedCondition, run_matched, matched_keys, depends_on="match"),
}


def _entry(cond: BaseModel) -> ConditionKind:
    kind = getattr(cond, "kind", None)
    entry = CONDITIONS.get(kind) if isinstance(kind, str) else None
    if entry is None or not isinstance(cond, entry.params):
        raise TypeError(f"no condition kind takes {type(cond).__name__} (kind {kind!r})")
    return entry


def run_condition(*, ctx: Context, cond: BaseModel, seed: int, parent_id: str) -> list[ModelRun]:
    """Train (or reuse) the models of `cond` for `seed`; the last one is the model under attack."""
    return _entry(cond).run(ctx=ctx, cond=cond, seed=seed, parent_id=parent_id)


def model_keys(
    manifest: Manifest, cond: BaseModel, seed: int, dependency: Dependency | None = None
) -> list[ModelKey]:
    """The keys `run_condition` would give the models of `cond` for `seed`, in its order; a kind
    made from another condition's model (`dependency_of`) has none until that model is known."""
    return _entry(cond).keys(manifest, cond, seed, dependency)


def dependency_of(cond: BaseModel) -> str | None:
    """The condition whose model under attack `cond`'s models are made from, if any."""
    field = _entry(cond).depends_on
    return getattr(cond, field) if field else None
