"""TOML manifests: the validated description of one experiment (data, model, recipe, conditions, attacks).

Every problem is reported as one line `FILE: field.path: what is wrong (got VALUE)`, all of them at
once, before anything is trained or written.
"""

import dataclasses
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from suite.adversarial_training import PGDTraining
from suite.attacks import ATTACK_PARAMS
from suite.data import DATASETS
from suite.distill import METHOD_PARAMS, RANDOM_METHOD, REAL_IMAGE_METHODS, RECIPES, EvalRecipe
from suite.distill.common import DSAStrategy
from suite.errors import ManifestError
from suite.limits import MAX_EPOCHS, MAX_L2_RADIUS, MAX_STEPS
from suite.models import MODELS
from suite.verify.kinds import VERIFY_PARAMS
from suite.verify.network import unverifiable


class Strict(BaseModel):
    """Base for every manifest table: unknown keys are errors, values are not coerced silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=NAME_PATTERN)]
# Bounds on numbers that size memory or seed a generator: `suite validate` rejects what `suite run`
# cannot do (torch and numpy seeds are unsigned 32-bit; a batch or sample count sizes tensors).
Seed = Annotated[int, Field(ge=0, lt=2**32)]
MAX_SAMPLES = 1_000_000
MAX_BATCH = 65_536


class ExperimentSpec(Strict):
    name: Name
    seeds: list[Seed] = Field(min_length=1, max_length=1000)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = Field(
        default=True,
        description="run networks through torch.compile where that pays (DM at 200 iterations or "
        "more): the same results, faster; false runs everything eagerly",
    )
    attack_seed: Seed = Field(
        default=0, description="draws the attacked test subset, once per experiment"
    )
    primary: Name | None = Field(
        default=None,
        description="the primary endpoint: an attack's name, or best-<norm> (the per-digit best "
        "of the minimal attacks of that norm); default best-l2 where a minimal L2 attack runs",
    )
    equivalence_margin: float = Field(
        default=0.9,
        gt=0.5,
        lt=1,
        description="ratios inside [margin, 1/margin] count as no change (two one-sided tests)",
    )

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError("must be unique")
        return seeds


class DataSpec(Strict):
    dataset: Literal[DATASETS] = "mnist-5k"  # type: ignore[valid-type]
    root: Path | None = None
    train_samples: int | None = Field(default=None, gt=0, le=MAX_SAMPLES)
    val_samples: int = Field(default=500, ge=0, le=MAX_SAMPLES)
    attack_samples: int = Field(default=100, gt=0, le=MAX_SAMPLES)
    split_seed: Seed = 0


Arch = Literal[tuple(MODELS)]  # type: ignore[valid-type]


class ModelSpec(Strict):
    arch: Arch = "cw-mnist"  # type: ignore[valid-type]


class TrainSpec(Strict):
    UNHASHED_AT: ClassVar[dict[str, object]] = {
        "precision": "fp32"
    }  # as training ran before it existed

    epochs: int = Field(default=10, gt=0, le=MAX_EPOCHS)
    batch_size: int = Field(default=128, gt=0, le=MAX_BATCH)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(default=0.01, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(default=0.0, ge=0)
    dropout: float = Field(default=0.5, ge=0, lt=1)
    lr_decay_epochs: list[Annotated[int, Field(ge=1, le=MAX_EPOCHS)]] = Field(
        default_factory=list, max_length=100
    )
    lr_decay: float = Field(default=0.1, gt=0, le=1)
    precision: Literal["fp32", "bf16"] = Field(
        default="fp32",
        description="bf16: forward and loss under bfloat16 autocast in channels-last memory "
        "(float32 weights and optimiser; evaluation and attacks stay float32). Trains the "
        "standard, defensive, adversarial and ARD models; a synthetic set's model follows its "
        "own recipe",
    )


BASELINE_HELP = (
    "the standard condition this one is compared with; default: the one trained for the same "
    "epochs (a defensive student's epochs, train.epochs for a synthetic condition)"
)
PROTOCOLS = {
    "dd-robustbench": "DD-RobustBench's",
    "beard": "BEARD's",
}  # another paper's evaluation an attack reproduces (the report's literature section)


class StandardCondition(Strict):
    """The undistilled baseline: cross-entropy on hard labels."""

    name: Name
    kind: Literal["standard"]
    epochs: int | None = Field(
        default=None, gt=0, le=MAX_EPOCHS, description="overrides train.epochs"
    )
    arch: Arch | None = Field(default=None, description="overrides model.arch")


class MatchedCondition(Strict):
    """The accuracy-matched control of a model trained on a synthetic set: the standard network
    trained on the full training split with the manifest's recipe, stopped as soon as its
    validation accuracy reaches that of `match`'s model of the same seed (checked every
    `check_every` batches). A synthetic model that is less robust than this one lost more than
    its lower accuracy explains."""

    name: Name
    kind: Literal["matched"]
    match: Name = Field(description="a synthetic condition listed earlier")
    epochs: int | None = Field(
        default=None, gt=0, le=MAX_EPOCHS, description="at most this many epochs (train.epochs)"
    )
    check_every: int = Field(
        default=5, ge=1, le=10000, description="batches between validation checks"
    )
    baseline: Name | None = Field(default=None, description=BASELINE_HELP)


class DefensiveCondition(Strict):
    """Defensive distillation (Papernot et al. 2016): teacher and student at temperature T."""

    UNHASHED_AT: ClassVar[dict[str, object]] = {"arch": None}  # added after results were stored

    name: Name
    kind: Literal["defensive"]
    temperature: float = Field(gt=0)
    teacher_epochs: int | None = Field(default=None, gt=0, le=MAX_EPOCHS)
    student_epochs: int | None = Field(default=None, gt=0, le=MAX_EPOCHS)
    attack_teacher: bool = False
    arch: Arch | None = Field(
        default=None, description="overrides model.arch (teacher and student)"
    )
    baseline: Name | None = Field(default=None, description=BASELINE_HELP)


class AdversarialSettings(Strict):
    """PGD examples for training (shared by `adversarial` and `ard`). Defaults: Madry et al.'s
    MNIST setting, L∞ ε = 0.3 and 40 steps of 0.01 (ε/30), from a random start; `norm = "l2"`
    trains in the L2 ball instead, the right control for an L2 primary endpoint. `method =
    "fgsm-rs"` is Wong, Rice & Kolter 2020's fast L∞ variant: one step of 1.25 ε from a random
    start."""

    epochs: int | None = Field(
        default=None, gt=0, le=MAX_EPOCHS, description="overrides train.epochs"
    )
    method: Literal["pgd", "fgsm-rs"] = "pgd"
    norm: Literal["linf", "l2"] = Field(
        default="linf", description="the ball of the training examples (l2: Madry et al.'s L2 PGD)"
    )
    eps: float = Field(default=0.3, gt=0, le=MAX_L2_RADIUS, description="≤ 1 at L∞")
    steps: int | None = Field(
        default=None, ge=1, le=MAX_STEPS, description="pgd: default 40; fgsm-rs: 1"
    )
    step_size: float | None = Field(
        default=None, gt=0, description="per-step move as a fraction of eps, as in pgd-linf"
    )
    random_start: bool = True
    baseline: Name | None = Field(default=None, description=BASELINE_HELP)
    seeds: list[Seed] | None = Field(
        default=None,
        min_length=1,
        description="a subset of experiment.seeds: a costly control may run fewer; its comparisons "
        "pair on the seeds it has (default: every seed)",
    )
    eps_warmup_epochs: int = Field(
        default=0,
        ge=0,
        le=MAX_EPOCHS,
        description="epochs over which eps grows linearly from 0 (per batch)",
    )
    val_samples: int = Field(
        default=200, ge=1, le=MAX_SAMPLES, description="validation digits attacked after each epoch"
    )
    val_steps: int = Field(
        default=10, ge=1, le=MAX_STEPS, description="PGD steps of that per-epoch check"
    )

    @model_validator(mode="after")
    def _one_fgsm_step(self) -> "AdversarialSettings":
        if self.method == "fgsm-rs" and self.steps not in (None, 1):
            raise ManifestFieldError(
                "steps", 'fgsm-rs takes exactly one step; use method = "pgd" for more', self.steps
            )
        if self.method == "fgsm-rs" and self.norm != "linf":
            raise ManifestFieldError(
                "norm", 'fgsm-rs is an L∞ method; use method = "pgd" for L2 training', self.norm
            )
        if self.norm == "linf" and self.eps > 1:
            raise ManifestFieldError(
                "eps", "an L∞ radius above 1 covers the whole pixel box; use ≤ 1", self.eps
            )
        return self

    def pgd_training(self) -> PGDTraining:
        """The resolved settings (method defaults filled in)."""
        fast = self.method == "fgsm-rs"
        return PGDTraining(
            eps=self.eps,
            steps=1 if fast else self.steps or 40,
            step_size=self.step_size or (1.25 if fast else 1 / 30),
            random_start=self.random_start,
            norm=self.norm,
        )


class AdversarialCondition(AdversarialSettings):
    """The positive control: a model trained on its own PGD (or FGSM-RS) examples."""

    name: Name
    kind: Literal["adversarial"]


class ARDCondition(AdversarialSettings):
    """Adversarially Robust Distillation (Goldblum et al. 2020): a student trained on its own PGD
    examples to match the soft labels of `teacher` (an earlier condition's model) on clean inputs.
    α = 1 and T = 30 are the authors' defaults."""

    name: Name
    kind: Literal["ard"]
    teacher: Name
    alpha: float = Field(default=1.0, ge=0, le=1)
    temperature: float = Field(default=30.0, gt=0)


class SyntheticEval(Strict):
    """How the model is trained on the synthetic set alone, and the accuracy it must reach.

    A recipe setting left out takes the measured default of the condition's architecture
    (`suite/distill/evaluate.py`, RECIPES): the papers' recipe suits their ConvNet, not cw-mnist.
    """

    optimizer: Literal["sgd", "adam"] | None = None
    lr: float | None = Field(default=None, gt=0)
    epochs: int | None = Field(default=None, gt=0, le=MAX_EPOCHS)
    batch_size: int | None = Field(default=None, gt=0, le=MAX_BATCH)
    augment: bool | None = None
    dsa_strategy: DSAStrategy | None = Field(
        default=None,
        description="the papers' default includes `flip`, which mirrors digits; the recipes leave it out",
    )
    dropout: float | None = Field(default=None, ge=0, lt=1)
    min_test_acc: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="a model below this clean test accuracy is FAILED, not attacked: no verdict",
    )

    def recipe(self, arch: str) -> EvalRecipe:
        """The architecture's measured recipe with the settings this table gives."""
        return dataclasses.replace(
            RECIPES[arch], **self.model_dump(exclude_none=True, exclude={"min_test_acc"})
        )


class SyntheticBase(Strict):
    """A model trained only on a distilled synthetic set (or a real-image coreset baseline)."""

    UNHASHED_AT: ClassVar[dict[str, object]] = {
        "set_seed": None
    }  # a set per seed, as sets were made before

    name: Name
    kind: Literal["synthetic"]
    ipc: int = Field(ge=1, le=1000)
    init: Literal["real", "noise"] = "real"
    set_seed: Seed | None = Field(
        default=None,
        description="distil one set with this seed and train every seed's model on it (the set "
        "is stored and reused); default: each seed distils its own",
    )
    arch: Arch | None = Field(default=None, description="overrides model.arch")
    eval: SyntheticEval = SyntheticEval()
    baseline: Name | None = Field(default=None, description=BASELINE_HELP)


class AttackBase(Strict):
    """One attack run on every model under attack, on the experiment's shared test subset."""

    UNHASHED_AT: ClassVar[dict[str, object]] = {
        "source": None
    }  # a direct attack, as every attack was before transfer

    name: Name
    samples: int | None = Field(default=None, gt=0, le=MAX_SAMPLES)
    batch_size: int | None = Field(
        default=None,
        gt=0,
        le=MAX_BATCH,
        description="samples per batch; default 256 on a CPU, all on a GPU",
    )
    source: Name | None = Field(
        default=None,
        description="transfer: craft on this condition's model (same seed), evaluate on every model",
    )
    ensemble: bool = Field(
        default=True,
        description="a minimal attack joins its norm's best-of; false: reported on its own (e.g. "
        "another paper's protocol)",
    )
    protocol: Literal[tuple(PROTOCOLS)] | None = Field(  # type: ignore[valid-type]
        default=None,
        description="the paper's evaluation this attack reproduces; the report says whether the "
        "synthetic-set models look more robust under it and under the primary endpoint",
    )


class VerifyBase(Strict):
    """One verification run on every model under attack, on the first `samples` digits of the
    experiment's shared test subset (`suite.verify.kinds`)."""

    name: Name
    norm: Literal["linf", "l2", "l1"] = "linf"
    samples: int | None = Field(
        default=None, gt=0, le=MAX_SAMPLES, description="default: data.attack_samples"
    )
    conditions: list[Name] | None = Field(
        default=None,
        min_length=1,
        description="the conditions whose models it verifies (default: every condition), e.g. the "
        "exact solver on the small networks only",
    )

    def covers(self, condition: str) -> bool:
        """Whether this verification runs on `condition`'s models."""
        return self.conditions is None or condition in self.conditions

    @model_validator(mode="after")
    def _exact_norms(self) -> "VerifyBase":
        if getattr(self, "kind", None) != "exact":
            return self
        params = self.params  # type: ignore[attr-defined]
        if self.norm == "l2":
            raise ManifestFieldError(
                "norm", 'the exact solver is L∞ or L1 (an L2 ball is not linear); use kind = '
                '"certified" for L2', self.norm,
            )  # fmt: skip
        if self.norm == "linf" and params.eps_max > 1:
            raise ManifestFieldError(
                "params.eps_max", "an L∞ radius above 1 leaves the pixel box; at most 1",
                params.eps_max,
            )  # fmt: skip
        if self.norm == "l1" and "eps_max" not in params.model_fields_set:
            raise ManifestFieldError(
                "params.eps_max", "the exact L1 solver needs the largest L1 distortion it searches "
                "(e.g. eps_max = 15; the default 0.5 is an L∞ radius)", "unset",
            )  # fmt: skip
        return self


def _tagged(base: type[Strict], tag: str, registry: dict[str, type[BaseModel]]) -> Any:
    """One union member per registry entry: `tag = "<key>"` plus `params` typed by that entry, so
    every params error carries its exact path (`attacks[0].params.max_iterations`)."""
    members = [
        create_model(
            f"{base.__name__}[{key}]",
            __base__=base,
            **{tag: (Literal[key], ...), "params": (cls, Field(default_factory=cls))},
        )
        for key, cls in registry.items()
    ]
    return Annotated[typing.Union[tuple(members)], Field(discriminator=tag)]  # noqa: UP007


SyntheticCondition = _tagged(SyntheticBase, "method", METHOD_PARAMS)
AttackSpec = _tagged(AttackBase, "kind", ATTACK_PARAMS)
VerifySpec = _tagged(VerifyBase, "kind", VERIFY_PARAMS)
Condition = Annotated[
    StandardCondition
    | DefensiveCondition
    | SyntheticCondition
    | AdversarialCondition
    | ARDCondition
    | MatchedCondition,
    Field(discriminator="kind"),
]
TAGS = {
    "standard", "defensive", "synthetic", "adversarial", "ard", "matched", *METHOD_PARAMS,
    *ATTACK_PARAMS, *VERIFY_PARAMS,
}  # fmt: skip


class Manifest(Strict):
    experiment: ExperimentSpec
    data: DataSpec = DataSpec()
    model: ModelSpec = ModelSpec()
    train: TrainSpec = TrainSpec()
    conditions: list[Condition] = Field(min_length=1)
    attacks: list[AttackSpec] = Field(default_factory=list)
    verify: list[VerifySpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> "Manifest":
        """Condition names are unique; attack and verification names are unique among both (their
        results share one namespace per model run)."""
        tables = (
            ("conditions", self.conditions, {}),
            ("attacks", self.attacks, seen := {}),
            ("verify", self.verify, seen),
        )
        for table, items, used in tables:
            for i, item in enumerate(items):
                if item.name in used:
                    raise ManifestFieldError(
                        f"{table}[{i}].name",
                        f"duplicate name, already used by {used[item.name]}; names must be unique",
                        item.name,
                    )
                used[item.name] = f"{table}[{i}]"
        return self

    @model_validator(mode="after")
    def _verifiable_models(self) -> "Manifest":
        """A verification bounds every model under attack: each condition's network must be one
        bound propagation can walk (not `convnet`)."""
        if not self.verify:
            return self
        names = [c.name for c in self.conditions]
        for i, spec in enumerate(self.verify):
            unknown = sorted(set(spec.conditions or []) - set(names))
            if unknown:
                raise ManifestFieldError(
                    f"verify[{i}].conditions",
                    f"names no condition of this manifest (one of {names})",
                    unknown[0],
                )
        for i, cond in enumerate(self.conditions):
            arch = getattr(cond, "arch", None) or self.model.arch
            for j, spec in enumerate(self.verify):
                why = unverifiable(arch, spec.kind) if spec.covers(cond.name) else None
                if why is not None:
                    raise ManifestFieldError(
                        f"verify[{j}]",
                        f"conditions[{i}] ({cond.name}) is a {arch}, which {spec.kind} cannot "
                        f"verify ({why}); leave it out of this table's conditions",
                        arch,
                    )
        return self

    def seeds_of(self, condition: str) -> list[int]:
        """The seeds `condition` runs: its own `seeds` where a control sets them, else every one."""
        cond = next(c for c in self.conditions if c.name == condition)
        return getattr(cond, "seeds", None) or self.experiment.seeds

    @model_validator(mode="after")
    def _condition_seeds_are_experiment_seeds(self) -> "Manifest":
        """A control's own seeds are distinct seeds of the experiment; a transfer source runs every
        seed (each target needs its source's adversarials), an `ard` student only its teacher's."""
        for i, cond in enumerate(self.conditions):
            own = getattr(cond, "seeds", None)
            if own is None:
                continue
            stray = [seed for seed in own if seed not in self.experiment.seeds]
            if stray or len(set(own)) != len(own):
                raise ManifestFieldError(
                    f"conditions[{i}].seeds",
                    f"must be distinct seeds of experiment.seeds {self.experiment.seeds}",
                    own,
                )
            teacher = getattr(cond, "teacher", None)
            if teacher is not None and not set(own) <= set(self.seeds_of(teacher)):
                raise ManifestFieldError(
                    f"conditions[{i}].seeds", f"its teacher {teacher!r} does not run them all", own
                )
        for i, attack in enumerate(self.attacks):
            known = any(c.name == attack.source for c in self.conditions)
            if known and self.seeds_of(attack.source) != self.experiment.seeds:
                raise ManifestFieldError(
                    f"attacks[{i}].source",
                    "a transfer source must run every seed of experiment.seeds",
                    attack.source,
                )
        return self

    @model_validator(mode="after")
    def _known_baselines(self) -> "Manifest":
        baselines(  # raises on an unknown or unmatched baseline
            [c.model_dump(mode="json") for c in self.conditions], self.train.epochs, self.model.arch
        )
        return self

    @model_validator(mode="after")
    def _teachers_come_first(self) -> "Manifest":
        """An `ard` teacher is a condition listed earlier: it exists, is trained (or reused) before
        its student by the sequential executor, and chains of teachers cannot loop."""
        for i, cond in enumerate(self.conditions):
            earlier = [c.name for c in self.conditions[:i]]
            if isinstance(cond, ARDCondition) and cond.teacher not in earlier:
                raise ManifestFieldError(
                    f"conditions[{i}].teacher",
                    f"no condition listed before this one has that name; name one of {earlier}",
                    cond.teacher,
                )
        return self

    @model_validator(mode="after")
    def _matches_come_first(self) -> "Manifest":
        """A `matched` control's `match` is a synthetic condition listed earlier, on the same
        architecture as the manifest's model (the control trains `model.arch`)."""
        for i, cond in enumerate(self.conditions):
            if not isinstance(cond, MatchedCondition):
                continue
            earlier = {c.name: c for c in self.conditions[:i] if c.kind == "synthetic"}
            if cond.match not in earlier:
                raise ManifestFieldError(
                    f"conditions[{i}].match",
                    f"no synthetic condition listed before this one has that name; name one of "
                    f"{sorted(earlier)}",
                    cond.match,
                )
            arch = getattr(earlier[cond.match], "arch", None) or self.model.arch
            if arch != self.model.arch:
                raise ManifestFieldError(
                    f"conditions[{i}].match",
                    f"{cond.match} trains {arch}, the control trains model.arch "
                    f"({self.model.arch}); match a condition on {self.model.arch}",
                    cond.match,
                )
        return self

    @model_validator(mode="after")
    def _known_primary(self) -> "Manifest":
        primary = self.experiment.primary
        names = [a.name for a in self.attacks]
        if primary is not None and primary not in names and not primary.startswith("best-"):
            raise ManifestFieldError(
                "experiment.primary",
                f"names no attack; use one of {names} or best-<norm> (e.g. best-l2)",
                primary,
            )
        return self

    @model_validator(mode="after")
    def _known_sources(self) -> "Manifest":
        names = [c.name for c in self.conditions]
        for i, attack in enumerate(self.attacks):
            if attack.source is not None and attack.source not in names:
                raise ManifestFieldError(
                    f"attacks[{i}].source", f"no such condition; name one of {names}", attack.source
                )
        return self

    def attack_subset_size(self) -> int:
        """How many test images the largest attack needs; smaller attacks use a prefix of them."""
        sizes = [a.samples or self.data.attack_samples for a in [*self.attacks, *self.verify]]
        return max(sizes, default=self.data.attack_samples)


class ManifestFieldError(ValueError):
    """A cross-field check that knows the exact field path it concerns."""

    def __init__(self, loc: str, message: str, value: object) -> None:
        super().__init__(message)
        self.loc, self.message, self.value = loc, message, value


def baselines(
    conditions: list[dict[str, Any]], train_epochs: int, model_arch: str = ""
) -> dict[str, str]:
    """Each non-standard condition's baseline: its `baseline` if set, else the standard condition
    trained for the same number of epochs on the same architecture (a condition's `arch`, else
    `model_arch`; the first match in manifest order).

    Works on the JSON form of the conditions, so the report resolves a stored manifest with the
    same rule. A manifest without standard conditions compares nothing (empty result); an explicit
    baseline that names no standard condition, or a default that matches none, is a
    ManifestFieldError naming the field.
    """
    standard = {
        c["name"]: (c.get("epochs") or train_epochs, c.get("arch") or model_arch)
        for c in conditions
        if c["kind"] == "standard"
    }
    out: dict[str, str] = {}
    for i, cond in enumerate(conditions):
        if cond["kind"] == "standard":
            continue
        chosen = cond.get("baseline")
        if chosen is not None and chosen not in standard:
            raise ManifestFieldError(
                f"conditions[{i}].baseline",
                f"must name a standard condition of this manifest (one of {sorted(standard)})",
                chosen,
            )
        if chosen is None and standard:
            epochs = cond.get("student_epochs" if cond["kind"] == "defensive" else "epochs")
            key = (epochs or train_epochs, cond.get("arch") or model_arch)
            chosen = next((n for n, k in standard.items() if k == key), None)
            if chosen is None:
                raise ManifestFieldError(
                    f"conditions[{i}].baseline",
                    f"no standard condition trains {key[1] or 'the model'} for {key[0]} epochs like "
                    'this one; add one or set baseline = "<standard condition name>"',
                    None,
                )
        if chosen is not None:
            out[cond["name"]] = chosen
    return out


def accuracy_matched_controls(conditions: list[dict[str, Any]]) -> dict[str, str]:
    """Each synthetic condition → its accuracy-matched control (the `matched` condition naming
    it; the first one where several do). Works on the JSON form of the conditions."""
    out: dict[str, str] = {}
    for c in conditions:
        if c["kind"] == "matched":
            out.setdefault(c["match"], c["name"])
    return out


def same_size_controls(
    conditions: list[dict[str, Any]], model_arch: str = "", method: str = RANDOM_METHOD
) -> dict[str, str]:
    """Each synthetic condition that learns its images (not a real-image coreset) → the condition
    that trains on the same number of real images per class chosen by `method` (random: the
    compression control of dataset distillation; herding: the best same-size real set) on the same
    architecture, where the manifest has one. Works on the JSON form of the conditions, as
    `baselines` does."""

    def key(c: dict[str, Any]) -> tuple[object, object]:
        return c.get("ipc"), c.get("arch") or model_arch

    synthetic = [c for c in conditions if c["kind"] == "synthetic"]
    controls = {key(c): c["name"] for c in reversed(synthetic) if c.get("method") == method}
    return {
        c["name"]: controls[key(c)]
        for c in synthetic
        if c.get("method") not in REAL_IMAGE_METHODS and key(c) in controls
    }


# ---- loading, overrides, hashing -------------------------------------------------------------


MAX_DEPTH = 16  # tables and lists nest at most this deep (a manifest needs 5)


def load_manifest(path: Path, overrides: list[str] | None = None) -> Manifest:
    """Read, override (`--set a.b=v`) and validate a manifest; raise ManifestError listing every problem."""
    raw = read_toml(path)
    for item in overrides or []:
        apply_override(raw, item, path)
    return validate_manifest(raw, path)


def check_depth(value: Any, where: str) -> None:
    """ManifestError unless tables and lists in `value` nest at most MAX_DEPTH levels (walked without
    recursion, so no depth reaches Python's own limit)."""
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _too_deep(where)
        children = (
            node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        )
        stack.extend((child, depth + 1) for child in children)


def _parse_toml(text: str, where: str) -> dict[str, Any]:
    """tomllib.loads with a nesting bound: a value nested thousands deep is one line, not a
    RecursionError from the parser."""
    try:
        raw = tomllib.loads(text)
    except RecursionError:
        raise _too_deep(where) from None
    check_depth(raw, where)
    return raw


def _too_deep(where: str) -> ManifestError:
    return ManifestError(
        f"{where}: tables or lists nested over {MAX_DEPTH} levels deep; a manifest needs at most 5"
    )


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file into a dict, turning I/O and syntax errors into one-line ManifestErrors."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{path}: no such manifest file; see manifests/ for examples") from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
            "save it as UTF-8"
        ) from None
    try:
        return _parse_toml(text, str(path))
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{path}: not valid TOML: {exc}") from None


def validate_manifest(raw: dict[str, Any], path: Path | str) -> Manifest:
    """Validate a raw manifest dict; every problem becomes one line of the ManifestError."""
    check_depth(raw, str(path))
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{path}: {format_error(err)}" for err in exc.errors()]
        raise ManifestError("\n".join(dict.fromkeys(lines))) from None


def format_error(err: Any) -> str:
    """One pydantic error as `field.path: must be > 0 (got -5)`."""
    loc = _display_loc(err["loc"])
    if err["type"] == "value_error" and isinstance(
        err.get("ctx", {}).get("error"), ManifestFieldError
    ):
        fe = err["ctx"]["error"]
        where = (
            f"{loc}.{fe.loc}" if err["loc"] else fe.loc
        )  # a nested table's check: its path first
        return f"{where}: {fe.message} (got {fe.value!r})"
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(err["loc"][:-1])
        hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        return f"{loc}: unknown key{hint}"
    if err["type"] == "union_tag_invalid":
        ctx = err["ctx"]
        field = ctx["discriminator"].strip("'")
        return f"{loc}.{field}: must be one of {ctx['expected_tags']} (got {ctx['tag']!r})"
    if err["type"] == "missing":
        return f"{loc}: required but missing"
    message = _MESSAGES.get(err["type"], lambda ctx: err["msg"].removeprefix("Value error, "))(
        err.get("ctx", {})
    )
    if err["type"] in ("missing_argument",) or "input" not in err:
        return f"{loc}: {message}"
    return f"{loc}: {message} (got {err['input']!r})"


def _n(value: Any) -> str:
    """0.0 → '0', 0.5 → '0.5': bounds read as the user would write them."""
    return f"{value:g}" if isinstance(value, float) else str(value)


_MESSAGES: dict[str, typing.Callable[[dict[str, Any]], str]] = {
    "greater_than": lambda c: f"must be > {_n(c['gt'])}",
    "greater_than_equal": lambda c: f"must be >= {_n(c['ge'])}",
    "less_than": lambda c: f"must be < {_n(c['lt'])}",
    "less_than_equal": lambda c: f"must be <= {_n(c['le'])}",
    "too_short": lambda c: f"must have at least {c['min_length']} item(s)",
    "string_too_short": lambda c: "must not be empty",
    "string_pattern_mismatch": lambda c: "must be letters, digits, '.', '_' or '-'",
    "literal_error": lambda c: f"must be one of {c['expected']}",
    "union_tag_not_found": lambda c: f"needs a {c['discriminator']} key",
    "int_parsing": lambda c: "must be an integer",
    "int_type": lambda c: "must be an integer",
    "int_from_float": lambda c: "must be an integer",
    "float_parsing": lambda c: "must be a number",
    "float_type": lambda c: "must be a number",
    "bool_type": lambda c: "must be true or false",
    "bool_parsing": lambda c: "must be true or false",
    "string_type": lambda c: "must be a string",
    "list_type": lambda c: "must be a list",
    "dict_type": lambda c: "must be a table",
    "model_type": lambda c: "must be a table",
    "model_attributes_type": lambda c: "must be a table",
}


def _display_loc(loc: tuple[Any, ...]) -> str:
    """('conditions', 2, 'defensive', 'temperature') → 'conditions[2].temperature'."""
    out = ""
    after_item = False
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            after_item = True
            continue
        if after_item and part in TAGS:
            continue  # a discriminator tag pydantic inserts into the path
        after_item = False
        out += f".{part}" if out else str(part)
    return out or "(top level)"


def _allowed_keys(parent: tuple[Any, ...]) -> list[str]:
    """The keys the table at `parent` accepts, found by walking the schema along the error path."""
    model: Any = Manifest
    for part in parent:
        if isinstance(part, int):
            continue
        if isinstance(model, type) and issubclass(model, BaseModel) and part in model.model_fields:
            model = _unwrap(model.model_fields[part].annotation)
        else:
            model = _member(model, part)
            if model is None:
                return []
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _member(union: Any, tag: str) -> Any:
    """The member of a (nested) discriminated union whose `kind`/`method` literal is `tag`."""
    for arg in typing.get_args(_unwrap(union)):
        arg = _unwrap(arg)
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            for field in ("kind", "method"):
                info = arg.model_fields.get(field)
                if info is not None and tag in typing.get_args(info.annotation):
                    return arg
        elif (found := _member(arg, tag)) is not None:
            return found
    return None


def _unwrap(annotation: Any) -> Any:
    """list[X] → X, X | None → X, Annotated[X, ...] → X; unions of models stay as they are."""
    while True:
        origin = typing.get_origin(annotation)
        if origin in (Annotated, list):
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def apply_override(raw: dict[str, Any], item: str, path: Path | str) -> None:
    """Apply one `--set a.b[1].c=value` in place; the value is parsed as TOML (a bare word is a string).

    List items can be addressed by index (`conditions[1]`) or by their name (`conditions.t100`).
    """
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ManifestError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.epochs=2")
    try:
        value = _parse_toml(f"v = {text}", f"--set {key.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    parts: list[str | int] = [
        name if name else int(index) for name, index in _PATH_PART.findall(key.strip())
    ]
    if not parts or _join(parts) != key.strip():
        raise ManifestError(
            f"--set {item!r}: {key.strip()!r} is not a field path; write e.g. train.epochs or "
            "conditions[0].temperature"
        )
    node: Any = raw
    for depth, part in enumerate(parts[:-1]):
        node = _step(node, part, parts[: depth + 1], key, path)
    last = parts[-1]
    if isinstance(node, list):
        node = _step(node, last, parts, key, path)
        raise ManifestError(f"--set {key}: cannot replace a whole list item; set one of its fields")
    if not isinstance(node, dict):
        raise ManifestError(f"--set {key}: {_join(parts[:-1])} is not a table in {path}")
    node[last] = value


def _step(node: Any, part: str | int, so_far: list[str | int], key: str, path: Path | str) -> Any:
    """Descend one level for an override, creating missing tables; lists by index or by item name."""
    if isinstance(node, list):
        if isinstance(part, int):
            if part >= len(node):
                raise ManifestError(
                    f"--set {key}: {_join(so_far)} does not exist ({len(node)} item(s) in {path})"
                )
            return node[part]
        for entry in node:
            if isinstance(entry, dict) and entry.get("name") == part:
                return entry
        names = [e.get("name") for e in node if isinstance(e, dict)]
        raise ManifestError(f"--set {key}: no item named {part!r} (have {names}) in {path}")
    if not isinstance(node, dict) or isinstance(part, int):
        raise ManifestError(f"--set {key}: {_join(so_far[:-1])} is not a list in {path}")
    return node.setdefault(part, {})


def _join(parts: list[str | int]) -> str:
    return "".join(
        f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(parts)
    )


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dict/model → {'train.lr': 0.01, ...} for MLflow params."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = value
    return out
