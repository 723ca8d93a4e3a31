"""The tidy frames a report is rendered from, and what their columns mean."""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from suite import schema
from suite.attacks import FIXED_BUDGET_KINDS, LOGIT_L2_KIND, attack_kind

NORMS = ("l0", "l2", "linf")


@dataclass
class ReportData:
    """Everything `render_report` needs, collected from the store by `collect.py`.

    Accuracies are fractions in [0, 1]; `accuracy.error` is a run's `suite.error` reason ("" if
    none). Distortions are NaN where the attack failed or the sample was misclassified clean;
    `eps` is NaN except for fixed-budget attacks. `baselines` maps each compared condition (and
    attacked teacher, `condition/teacher`) to the standard condition it is compared with;
    `floors` maps a condition to the clean accuracy below which it gets no verdict;
    `synthetic_sets` each synthetic condition to its set's method, ipc, iterations and network;
    `gradient_free` names the attacks that use no gradient of the model (Square); `budgets` maps
    each fixed-budget attack to its ε list, `attack_params` each attack to its manifest settings,
    `attack_commits` to the commits whose code computed its results. `controls` maps each learned
    synthetic set's condition to its same-size random real-image control (`same_size_controls`),
    `coresets` to its same-size herding coreset,
    `matched` each synthetic condition to its accuracy-matched control (`accuracy_matched_controls`);
    `outside_ensemble` names the minimal attacks the manifest keeps out of the best-of, `protocols`
    maps an attack to the paper whose evaluation it reproduces (`dd-robustbench`, `beard`),
    `trained_in` each adversarially trained condition to the (norm, ε) ball it was trained in,
    `trained_by` to its training method (`pgd`, `fgsm-rs`);
    `verified` holds the verifications' per-digit records (`collect.VERIFY_COLUMNS`: a certified
    `lower` bound, the exact `value` where `solved`, the proved `upper`).
    `seeds_of` maps a condition that runs fewer seeds than the experiment (a control's own
    `seeds`) to them. `primary` is the attack whose comparison gives the
    verdicts (the manifest's `experiment.primary`), `equivalence_margin` its equivalence band.
    `examples[f"{condition}/{attack}"]` is `[k, 3, 28, 28]` (clean, adversarial, perturbation)
    for the same k sample indices in every condition. `run_seconds` is the time during which at
    least one of the finished model runs read was open (their training and attacks).
    """

    experiment: str
    setup: dict[str, object]
    baselines: dict[str, str]
    accuracy: pd.DataFrame
    curves: pd.DataFrame
    attacks: pd.DataFrame
    masking: pd.DataFrame
    examples: dict[str, np.ndarray] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    floors: dict[str, float] = field(default_factory=dict)
    synthetic_sets: dict[str, dict[str, object]] = field(default_factory=dict)
    gradient_free: list[str] = field(default_factory=list)
    budgets: dict[str, list[float]] = field(default_factory=dict)
    attack_params: dict[str, dict[str, object]] = field(default_factory=dict)
    attack_commits: dict[str, list[str]] = field(default_factory=dict)
    controls: dict[str, str] = field(default_factory=dict)
    coresets: dict[str, str] = field(default_factory=dict)
    matched: dict[str, str] = field(default_factory=dict)
    outside_ensemble: list[str] = field(default_factory=list)
    protocols: dict[str, str] = field(default_factory=dict)
    trained_in: dict[str, tuple[str, float]] = field(default_factory=dict)
    trained_by: dict[str, str] = field(default_factory=dict)
    verified: pd.DataFrame = field(default_factory=pd.DataFrame)
    seeds_of: dict[str, list[int]] = field(default_factory=dict)
    run_seconds: float = 0.0
    job_seconds: float = 0.0  # the runs' open time summed per job (one process's compute)
    primary: str | None = None  # the manifest's primary endpoint (None: `headline_attack`)
    equivalence_margin: float = 0.9

    def seeds_for(self, condition: str) -> list[int]:
        """The seeds the manifest runs of `condition`: its own (`seeds_of`), else every one."""
        every = self.setup.get("seeds")
        return self.seeds_of.get(condition, every if isinstance(every, list) else [])


_BEST = "best-"


def best_of(norm: str) -> str:
    """The name (and kind) of the per-digit best of the minimal-`norm` attacks, an attack of its
    own (`tables.with_best_of`)."""
    return f"{_BEST}{norm}"


BEST_L2 = best_of("l2")


def best_of_norm(kind: str) -> str | None:
    """The norm of a best-of attack's kind; None for any other kind."""
    return kind.removeprefix(_BEST) if kind.startswith(_BEST) else None


def headline_attack(names: Iterable[str], kinds: Mapping[str, str]) -> str | None:
    """The attack a published answer leads with: the best of the minimal-L2 attacks where it ran
    (`names` holds it), else the first C&W L2 on the logits; None without either."""
    names = list(names)
    if BEST_L2 in names:
        return BEST_L2
    return next((a for a in names if kinds.get(a) == LOGIT_L2_KIND), None)


def primary_attack(data: "ReportData", names: Iterable[str]) -> str | None:
    """The primary endpoint among the attacks `names`: the manifest's `experiment.primary` where
    it ran, else `headline_attack`."""
    names = list(names)
    if data.primary in names:
        return data.primary
    return headline_attack(names, attack_kinds(data.attacks))


def model_label(condition: str, role: str) -> str:
    """How the report names a model: its condition for the model under attack, else
    `condition/role` (an attacked teacher)."""
    return condition if role in schema.ATTACKED_ROLES else f"{condition}/{role}"


def attack_kinds(attacks: pd.DataFrame) -> dict[str, str]:
    """Attack name → attack kind, in the order the attacks appear ({} for a frame without any)."""
    if "attack" not in attacks:
        return {}
    first = attacks.drop_duplicates("attack")
    return dict(zip(first["attack"], first["attack_kind"], strict=True))


def attack_norm(kind: str, rows: pd.DataFrame | None = None) -> str:
    """The norm an attack minimises (or bounds): the `norm` column of its records where they have
    one (fixed-budget kinds, where it can be a setting: AutoAttack); the one a derived `best-<norm>`
    attack names (`tables.with_best_of`); else its kind's in the attack registry."""
    if rows is not None and "norm" in rows and rows["norm"].notna().any():
        return str(rows["norm"].dropna().iloc[0])
    return best_of_norm(kind) or attack_kind(kind).default_norm()


def row_norms(attacks: pd.DataFrame) -> pd.Series:
    """The norm of each attack row: its `norm` column where recorded, else its kind's."""
    by_kind = attacks["attack_kind"].map(attack_norm)
    return attacks["norm"].fillna(by_kind) if "norm" in attacks else by_kind


def is_fixed_budget(rows: pd.DataFrame) -> bool:
    """True when the attack's kind runs at fixed ε budgets instead of minimising a norm (decided by
    kind: a fixed-budget attack that never succeeds has no ε in any row)."""
    return bool(rows["attack_kind"].isin(FIXED_BUDGET_KINDS).any())
