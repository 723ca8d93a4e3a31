"""Gradient masking from three sources: is a model that resists the softmax-gradient attack robust,
or does it only hide its gradient?

Each check asks whether an attack that does not follow the model's softmax gradient finds
adversarials that the softmax-gradient attack (PGD, else FGSM) missed — "black-box attacks beat
white-box attacks", the sign of masked gradients of Athalye, Carlini & Wagner (2018, §3.1):

- logit: C&W on the logits against the softmax attack, per seed (the run's own diagnostic,
  `masking.flagged`: the softmax attack succeeds on under half as many digits);
- transfer: adversarials crafted on another model (Carlini & Wagner 2017, §VIII) that lie within
  the softmax attack's largest ε, against that attack at that ε;
- gradient-free: Square (Andriushchenko et al. 2020), at the largest ε both attacks ran, against
  the softmax attack at that ε.

The transfer and gradient-free checks pair (seed, digit) rows of the clean-correct digits and ask,
with a one-sided exact McNemar test, whether the other attack alone fools more digits than the
softmax attack alone. Each such digit is a proof: an adversarial exists inside the budget where
the white-box attack found none. Like the logit check, a check flags masking only when the gap is
also large — the softmax attack succeeds on under half as many digits (`MASKING_RATIO`) — since a
white-box attack with a short budget that misses a few digits Square finds (PGD-20 at 95.7% vs
Square at 100% on the undistilled model of the seed study) is weak, not masked. Pure pandas and
scipy on the report's frames.
"""

import math

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from suite.attacks import NORM_TOLERANCE, SOFTMAX_KINDS, attack_kind
from suite.attacks.diagnostics import MASKING_RATIO
from suite.report import stats
from suite.report.frames import attack_kinds, attack_norm

_KEYS = ["seed", *stats.PAIR_KEYS]  # a (seed, digit[, target]) row, as the paired tests pair them

COLUMNS = [
    "condition", "softmax_attack", "seeds", "logit_flagged_seeds",
    "transfer_attack", "transfer_source", "transfer_eps", "softmax_success_at_transfer_eps",
    "transfer_success", "transfer_only", "softmax_only_transfer", "transfer_p", "transfer_flagged",
    "gradient_free_attack", "gradient_free_eps", "softmax_success_at_gradient_free_eps",
    "gradient_free_success", "gradient_free_only", "softmax_only_gradient_free",
    "gradient_free_p", "gradient_free_flagged", "verdict",
]  # fmt: skip

MASKED, CLEAR, INCOMPLETE = "masking", "no masking found", "incomplete"
"""Verdicts: a check flagged the condition; all three ran and none did; some did not run. The
transfer check does not apply to the transfer's own source (its adversarials are the direct
attack's), so there two checks suffice."""


def softmax_attack(direct: pd.DataFrame) -> str | None:
    """The white-box softmax-gradient attack the checks compare against: the first iterative one
    of the experiment (PGD), else its first single-step one (FGSM): the stronger where both ran."""
    kinds = attack_kinds(direct)
    found = [a for a, k in kinds.items() if k in SOFTMAX_KINDS]
    found.sort(key=lambda a: attack_kind(kinds[a]).single_step)  # stable: experiment order within
    return str(found[0]) if found else None


def three_way(
    masking: pd.DataFrame,
    direct: pd.DataFrame,
    transfer: pd.DataFrame,
    gradient_free: list[str],
    budgets: dict[str, list[float]],
    order: list[str],
    alpha: float,
) -> pd.DataFrame:
    """One row per condition (in `order`): the three checks and the verdict (module docstring).
    `direct` and `transfer` are the report's per-digit attack rows, `masking` its per-seed
    diagnostic, `budgets` each fixed-budget attack's ε list. Empty without a softmax attack."""
    soft = softmax_attack(direct)
    if soft is None or not budgets.get(soft):
        return pd.DataFrame(columns=COLUMNS)
    soft_rows = direct[direct["attack"] == soft]
    norm = attack_norm(str(soft_rows["attack_kind"].iloc[0]), soft_rows)
    free = next((a for a in gradient_free if a in set(direct["attack"])), None)
    free_eps = _largest_common(budgets.get(free or "", []), budgets[soft])
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
        flags = masking[masking["condition"] == condition]["flagged"].astype(bool)
        row: dict[str, object] = {
            "condition": condition,
            "softmax_attack": soft,
            "seeds": int(mine["seed"].nunique()),
            "logit_flagged_seeds": int(flags.sum()) if len(flags) else math.nan,
        }
        if condition != source:
            row |= _transfer_check(mine, transfer, moved_name, condition, norm, max(budgets[soft]))
        row["transfer_source"] = source
        if free is not None and free_eps is not None:
            other = direct[(direct["attack"] == free) & (direct["condition"] == condition)]
            row |= _prefixed(
                "gradient_free", free, free_eps, _paired(mine, other, free_eps, free_eps, None)
            )
        out.append(row)
    table = pd.DataFrame(out).reindex(columns=COLUMNS)
    for check in ("transfer", "gradient_free"):
        soft_rate = table[f"softmax_success_at_{check}_eps"].astype(float)
        other_rate = table[f"{check}_success"].astype(float)
        table[f"{check}_flagged"] = (table[f"{check}_p"] < alpha) & (
            soft_rate < MASKING_RATIO * other_rate
        )
    table["verdict"] = [_verdict(r) for r in table.itertuples()]
    return table


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
    """MASKED if the transfer or gradient-free check flags the condition, or the logit check flags
    it on a majority of seeds; CLEAR if all three ran (the transfer's source: the other two) and
    none did; INCOMPLETE otherwise."""
    logit = row.logit_flagged_seeds
    logit_ran = not (isinstance(logit, float) and math.isnan(logit))
    if (
        bool(row.transfer_flagged)
        or bool(row.gradient_free_flagged)
        or (logit_ran and logit > row.seeds / 2)
    ):
        return MASKED
    transfer_ran = not pd.isna(row.transfer_p) or row.condition == row.transfer_source
    ran = [logit_ran, transfer_ran, not pd.isna(row.gradient_free_p)]
    return CLEAR if all(ran) else INCOMPLETE
