"""Published robust accuracies to read ours against, each with its source and setting.

Only points measured in the same threat model as ours (data set, norm, ε, attack) are listed,
and the report shows them in their own table with the setting beside them: other models, other
test digits, so a point of reference, never a paired comparison.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

AUTOATTACK_README = (
    "AutoAttack's own list of evaluated defenses (Croce & Hein 2020, github.com/fra31/auto-attack "
    "README, commit 0185c79, table 'MNIST - Linf'): the full 10,000-digit MNIST test set, "
    "AutoAttack as published then (APGD-CE, APGD-DLR, FAB, Square; 5 restarts), each paper's own "
    "model"
)


@dataclass(frozen=True)
class Reference:
    """One published robust accuracy: what was measured, on what, and where it is written."""

    method: str
    clean: float  # clean test accuracy, fraction
    robust: float  # robust accuracy under the attack at ε, fraction
    datasets: tuple[str, ...]  # our data set names it is comparable with
    attack_kind: str
    norm: str
    eps: float
    source: str
    training: str | None = None  # the adversarial-training `method` of a condition it publishes


REFERENCES = (
    Reference(
        method="PGD adversarial training (Madry et al. 2018)", clean=0.9853, robust=0.8843,
        datasets=("mnist", "mnist-5k"), attack_kind="autoattack", norm="linf", eps=0.3,
        source=AUTOATTACK_README, training="pgd",
    ),
    Reference(
        method="FGSM-RS adversarial training (Wong et al. 2020)", clean=0.9850, robust=0.8288,
        datasets=("mnist", "mnist-5k"), attack_kind="autoattack", norm="linf", eps=0.3,
        source=AUTOATTACK_README, training="fgsm-rs",
    ),
    Reference(
        method="TRADES (Zhang et al. 2019)", clean=0.9948, robust=0.9276,
        datasets=("mnist", "mnist-5k"), attack_kind="autoattack", norm="linf", eps=0.3,
        source=AUTOATTACK_README,
    ),
)  # fmt: skip


def references_for(dataset: str, attack_kind: str, norm: str, eps: list[float]) -> list[Reference]:
    """The published points measured in this threat model (data set, attack kind, norm, an ε
    the attack ran at)."""
    return [
        r
        for r in REFERENCES
        if dataset in r.datasets
        and r.attack_kind == attack_kind
        and r.norm == norm
        and any(np.isclose(r.eps, e) for e in eps)
    ]


def robust_accuracy(rows: pd.DataFrame, order: list[str], eps: float) -> pd.Series:
    """Per condition, the standard robust accuracy at ε of one fixed-budget attack's rows: the
    share of all attacked (seed, digit) rows classified correctly and not fooled within ε."""
    fooled = rows["success"].astype(bool) & (rows["eps"] <= eps + 1e-9)
    robust = rows["clean_correct"].astype(bool) & ~fooled
    by = robust.groupby(rows["condition"]).mean()
    return by.reindex([c for c in order if c in by.index])
