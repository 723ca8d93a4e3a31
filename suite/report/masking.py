"""Gradient masking from three sources: does a model that resists the softmax-gradient attack only
hide its gradient? Each check asks whether an attack that does not follow that gradient finds
adversarials, inside the same budget, that the softmax-gradient attack (PGD, else FGSM) missed:
"black-box attacks beat white-box attacks", the sign of masked gradients of Athalye, Carlini &
Wagner (2018, §3.1):

- margin: a fixed-budget attack on another loss (AutoAttack: APGD-T on the DLR margin) at the
  largest ε both ran;
- gradient-free: Square (Andriushchenko et al. 2020) at the largest ε both ran;
- transfer: adversarials crafted on another model (Carlini & Wagner 2017, §VIII; high-confidence
  ones where the manifest asks for κ > 0) that lie within the softmax attack's largest ε, the
  target's own budget.

Every check is at a matched budget: an attack without a bound (C&W) always succeeds, so comparing
it with a bounded one would call real robustness masking. Each pairs the (seed, digit) rows of the
clean-correct digits and asks, with a one-sided exact McNemar test, whether the other attack alone
fools more digits than the softmax attack alone. Each such digit is a proof: an adversarial exists
inside the budget where the white-box attack found none. A check flags masking only when the gap
is also large — the softmax attack succeeds on under half as many digits (`MASKING_RATIO`) and the
other attack's success rate is `MASKING_GAP` higher — since a white-box attack that misses a few
digits another finds is weak, not masked: on adversarially trained models APGD-T's targeted DLR
loss beats PGD's cross-entropy by a few points of robust accuracy (Croce & Hein 2020), which a
ratio alone calls masking where both rates are small (`suite.report.soundness` checks PGD's
strength). Pure pandas and scipy on the report's frames.
"""

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from suite.attacks import NORM_TOLERANCE, SOFTMAX_KINDS, attack_kind
from suite.attacks.diagnostics import MASKING_RATIO
from suite.report import stats
from suite.report.frames import attack_kinds, attack_norm

MASKING_GAP = 0.10
"""The least difference in success rate (fractions of the clean-correct rows) a check flags."""
_KEYS = ["seed", *stats.PAIR_KEYS]  # a (seed, digit[, target]) row, as the paired tests pair them

CHECKS = ("margin", "gradient_free", "transfer")
COLUMNS = [
    "condition", "softmax_attack", "seeds",
    "margin_attack", "margin_eps", "softmax_success_at_margin_eps", "margin_success",
    "margin_only", "softmax_only_margin", "margin_p", "margin_flagged",
    "transfer_attack", "transfer_source", "transfer_eps", "softmax_success_at_transfer_eps",
    "transfer_success", "transfer_only", "softmax_only_transfer", "transfer_p", "transfer_flagged",
    "gradient_free_attack", "gradient_free_eps", "softmax_success_at_gradient_free_eps",
    "gradient_free_success", "gradient_free_only", "softmax_only_gradient_free",
    "gradient_free_p", "gradient_free_flagged", "verdict",
]  # fmt: skip

MASKED, CLEAR, INCOMPLETE = "masking", "no masking found", "incomplete"
"""Verdicts: a check flagged the condition; the transfer check and at least one matched-budget
check (margin, gradient-free) ran and none flagged it; otherwise incomplete. The transfer check
does not apply to the transfer's own source (its adversarials are the direct attack's)."""


def softmax_attack(direct: pd.DataFrame) -> str | None:
    """The white-box softmax-gradient attack the checks compare against: the first iterative one
    of the experiment (PGD), else its first single-step one (FGSM): the stronger where both ran."""
    kinds = attack_kinds(direct)
    found = [a for a, k in kinds.items() if k in SOFTMAX_KINDS]
    found.sort(key=lambda a: attack_kind(kinds[a]).single_step)  # stable: experiment order within
    return str(found[0]) if found else None


def three_way(
    direct: pd.DataFrame,
    transfer: pd.DataFrame,
    gradient_free: list[str],
    budgets: dict[str, list[float]],
    order: list[str],
    alpha: float,
) -> pd.DataFrame:
    """One row per condition (in `order`): the three checks and the verdict (module docstring).
    `direct` and `transfer` are the report's per-digit attack rows, `budgets` each fixed-budget
    attack's ε list, `gradient_free` the attacks that use no gradient. Empty without a softmax
    attack."""
    soft = softmax_attack(direct)
    if soft is None or not budgets.get(soft):
        return pd.DataFrame(columns=COLUMNS)
    soft_rows = direct[direct["attack"] == soft]
    norm = attack_norm(str(soft_rows["attack_kind"].iloc[0]), soft_rows)
    matched = {
        "gradient_free": _matched(direct, gradient_free, budgets, soft, norm, free=True),
        "margin": _matched(direct, gradient_free, budgets, soft, norm, free=False),
    }
    moved = transfer["attack"].drop_duplicates().tolist() if not transfer.empty else []
    moved_name = moved[0] if moved else None
    source = (
        str(transfer.loc[transfer["attack"] == moved_name, "source"].dropna().iloc[0])
        if moved_name
        else None
    )
    out = []
    for condition in order:
        mine = soft_rows[soft_rows["condition"] == condition]
        if mine.empty:
            continue
        row: dict[str, object] = {
            "condition": condition,
            "softmax_attack": soft,
            "seeds": int(mine["seed"].nunique()),
        }
        if condition != source:
            row |= _transfer_check(mine, transfer, moved_name, condition, norm, max(budgets[soft]))
        row["transfer_source"] = source
        for check, (other, eps) in matched.items():
            if other is None or eps is None:
                continue
            theirs = direct[(direct["attack"] == other) & (direct["condition"] == condition)]
            row |= _prefixed(check, other, eps, _paired(mine, theirs, eps, eps, None))
        out.append(row)
    table = pd.DataFrame(out).reindex(columns=COLUMNS)
    for check in CHECKS:
        soft_rate = table[f"softmax_success_at_{check}_eps"].astype(float)
        other_rate = table[f"{check}_success"].astype(float)
        table[f"{check}_flagged"] = (
            (table[f"{check}_p"] < alpha)
            & (soft_rate < MASKING_RATIO * other_rate)
            & (other_rate - soft_rate >= MASKING_GAP)
        )
    table["verdict"] = [_verdict(r) for r in table.itertuples()]
    return table


def _matched(
    direct: pd.DataFrame,
    gradient_free: list[str],
    budgets: dict[str, list[float]],
    soft: str,
    norm: str,
    free: bool,
) -> tuple[str | None, float | None]:
    """The first fixed-budget attack of `norm` that does not follow the softmax gradient and is
    (`free`) or is not gradient-free, with the largest ε it shares with `soft`; (None, None)."""
    kinds = attack_kinds(direct)
    for attack, kind in kinds.items():
        if attack == soft or kind in SOFTMAX_KINDS or (attack in gradient_free) != free:
            continue
        if not attack_kind(kind).fixed_budget:
            continue
        rows = direct[direct["attack"] == attack]
        eps = _largest_common(budgets.get(attack, []), budgets[soft])
        if attack_norm(kind, rows) == norm and eps is not None:
            return attack, eps
    return None, None


def _transfer_check(
    mine: pd.DataFrame,
    transfer: pd.DataFrame,
    attack: str | None,
    condition: str,
    norm: str,
    eps: float,
) -> dict[str, object]:
    """The transfer check of one condition (not the transfer's own source); nothing where no
    transfer ran on it."""
    if attack is None:
        return {}
    rows = transfer[(transfer["attack"] == attack) & (transfer["condition"] == condition)]
    if rows.empty:
        return {}
    return _prefixed("transfer", attack, eps, _paired(mine, rows, eps, None, norm))


def _paired(
    soft: pd.DataFrame,
    other: pd.DataFrame,
    soft_eps: float,
    other_eps: float | None,
    other_norm: str | None,
) -> dict[str, float]:
    """Success of the softmax attack within `soft_eps` and of the other attack (within its own
    `other_eps`, or with a perturbation norm within `soft_eps` when `other_norm` is given) on the
    clean-correct (seed, digit) rows both ran, pooled over seeds, and the one-sided exact McNemar
    p-value that the other attack alone fools more of them."""
    if other.empty:
        return {}
    both = soft.merge(other, on=_KEYS, suffixes=("_s", "_o"))
    both = both[both["clean_correct_s"].astype(bool) & both["clean_correct_o"].astype(bool)]
    if both.empty:
        return {}
    s_hit = both["success_s"].astype(bool) & (both["eps_s"] <= soft_eps + NORM_TOLERANCE)
    o_hit = both["success_o"].astype(bool)
    if other_norm is not None:
        o_hit &= both[f"{other_norm}_o"] <= soft_eps + NORM_TOLERANCE
    else:
        o_hit &= both["eps_o"] <= (other_eps or 0) + NORM_TOLERANCE
    only_other, only_soft = int((o_hit & ~s_hit).sum()), int((s_hit & ~o_hit).sum())
    p = (
        binomtest(only_other, only_other + only_soft, 0.5, alternative="greater").pvalue
        if only_other + only_soft
        else 1.0
    )
    return {
        "softmax": float(s_hit.mean()),
        "success": float(o_hit.mean()),
        "only": only_other,
        "softmax_only": only_soft,
        "p": float(p),
    }


def _prefixed(check: str, attack: str, eps: float, found: dict[str, float]) -> dict[str, object]:
    if not found:
        return {}
    return {
        f"{check}_attack": attack,
        f"{check}_eps": eps,
        f"softmax_success_at_{check}_eps": found["softmax"],
        f"{check}_success": found["success"],
        f"{check}_only": found["only"],
        f"softmax_only_{check}": found["softmax_only"],
        f"{check}_p": found["p"],
    }


def _largest_common(a: list[float], b: list[float]) -> float | None:
    common = set(np.round(a, 9)) & set(np.round(b, 9))
    return float(max(common)) if common else None


def _verdict(row) -> str:
    """MASKED if any check flags the condition; CLEAR if the transfer check (or, on the transfer's
    source, none is needed) and at least one matched-budget check ran and none flagged it;
    INCOMPLETE otherwise."""
    if any(bool(getattr(row, f"{check}_flagged")) for check in CHECKS):
        return MASKED
    transfer_ran = not pd.isna(row.transfer_p) or row.condition == row.transfer_source
    matched_ran = not pd.isna(row.margin_p) or not pd.isna(row.gradient_free_p)
    return CLEAR if transfer_ran and matched_ran else INCOMPLETE
