"""The attack registry: every kind a manifest may name, with its settings model, its function and
the facts the rest of the suite reads here instead of deriving them from a kind's name."""

from typing import Any

from pydantic import BaseModel, ValidationError

from suite.attacks.autoattack import AUTOATTACK
from suite.attacks.common import AttackKind
from suite.attacks.cw_l0 import CW_L0
from suite.attacks.cw_l2 import CW_L2
from suite.attacks.cw_linf import CW_LINF
from suite.attacks.ddn import DDN
from suite.attacks.fmn import FMN, FMN_LINF
from suite.attacks.pgd import FGSM, PGD_L2, PGD_LINF

_KINDS: dict[str, AttackKind[Any]] = {
    k.name: k
    for k in (CW_L2, CW_LINF, CW_L0, DDN, FMN, FMN_LINF, PGD_LINF, PGD_L2, FGSM, AUTOATTACK)
}


def attack_kind(kind: str) -> AttackKind[Any]:
    """The registry entry of `kind`; a KeyError that lists the known kinds for any other name."""
    if kind not in _KINDS:
        raise KeyError(f"unknown attack kind {kind!r}; known: {', '.join(sorted(_KINDS))}")
    return _KINDS[kind]


ATTACK_PARAMS: dict[str, type[BaseModel]] = {kind: k.params for kind, k in _KINDS.items()}
FIXED_BUDGET_KINDS: frozenset[str] = frozenset(kind for kind, k in _KINDS.items() if k.fixed_budget)
MINIMAL_NORMS: dict[str, str] = {
    kind: k.minimal_norm for kind, k in _KINDS.items() if k.minimal_norm
}
SOFTMAX_KINDS: frozenset[str] = frozenset(kind for kind, k in _KINDS.items() if k.softmax_gradient)
LOGIT_L2_KIND = CW_L2.name
"""C&W L2, the reference minimal-L2 attack on the logit margin: the logit attack of the masking
diagnostic and the attack a published headline falls back to."""


def budget_eps(kind: str, params: dict[str, Any]) -> list[float]:
    """The ε budgets a fixed-budget attack of `kind` runs at with these (manifest) settings, in
    ascending order; [] for a minimal-norm kind or settings this version cannot read."""
    entry = _KINDS.get(kind)
    if entry is None or entry.budget is None:
        return []
    try:
        return entry.budget(entry.params(**params)).eps
    except ValidationError:
        return []


def is_gradient_free(kind: str, params: dict[str, Any]) -> bool:
    """Whether an attack of `kind` with these (manifest) settings uses no gradient of the model:
    what the gradient-masking checks need from an attack that cannot be fooled by a masked one."""
    entry = _KINDS.get(kind)
    if entry is None or entry.gradient_free is None:
        return False
    try:
        return entry.gradient_free(entry.params(**params))
    except ValidationError:  # settings this version does not know (an older store): not claimed
        return False
