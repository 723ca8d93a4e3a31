"""Minimal-perturbation (C&W L2/L∞/L0, DDN) and fixed-budget (PGD, FGSM,
AutoAttack) attacks, batched.

`run_attack(kind, params, model, x, y, sample_index, seed=...)` runs one; `attack_kind(kind)` is
its registry entry (settings model, function, norm, budget, ...); `ATTACK_PARAMS` maps each kind to
its settings model; `summarize` turns per-sample records into metrics.
"""

from suite.attacks.common import L0_TOLERANCE, NORM_TOLERANCE, AttackKind, AttackParams
from suite.attacks.kinds import (
    ATTACK_PARAMS,
    FIXED_BUDGET_KINDS,
    LOGIT_L2_KIND,
    MINIMAL_NORMS,
    SOFTMAX_KINDS,
    attack_kind,
    budget_eps,
    is_gradient_free,
)
from suite.attacks.run import AttackResult, distortions, run_attack, summarize

__all__ = [
    "ATTACK_PARAMS",
    "FIXED_BUDGET_KINDS",
    "L0_TOLERANCE",
    "LOGIT_L2_KIND",
    "MINIMAL_NORMS",
    "NORM_TOLERANCE",
    "SOFTMAX_KINDS",
    "AttackKind",
    "AttackParams",
    "AttackResult",
    "attack_kind",
    "budget_eps",
    "distortions",
    "is_gradient_free",
    "run_attack",
    "summarize",
]
