"""Minimal-perturbation (C&W L2/L∞/L0, DDN) and fixed-budget (PGD, FGSM,
AutoAttack) attacks, batched.

`run_attack(kind, params, model, x, y, sample_index, seed=...)` runs one; `ATTACK_PARAMS` maps each
kind to its settings model; `summarize` turns per-sample records into metrics.
"""

from suite.attacks.common import L0_TOLERANCE
from suite.attacks.run import (
    ATTACK_PARAMS,
    FIXED_BUDGET_KINDS,
    MINIMAL_NORMS,
    SOFTMAX_KINDS,
    AttackResult,
    budget_eps,
    distortions,
    is_gradient_free,
    run_attack,
    summarize,
)

__all__ = [
    "ATTACK_PARAMS",
    "FIXED_BUDGET_KINDS",
    "L0_TOLERANCE",
    "MINIMAL_NORMS",
    "SOFTMAX_KINDS",
    "AttackResult",
    "budget_eps",
    "distortions",
    "is_gradient_free",
    "run_attack",
    "summarize",
]
