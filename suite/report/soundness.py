"""Which attack may speak for which model: an attack gives no verdict, primary or secondary, where
it is single-step, where the masking checks found the model's gradient masked and the attack
follows it, or where on the model's baseline it fools fewer digits than the strongest attack of
its norm and budget by more than `WEAKER_BY`; and whether the study's PGD runs at strength.

PGD's strength, two ways (Madry et al. 2018, §5; Croce & Hein 2020, §4): its settings (steps ×
step size ≥ `PGD_TRAVEL` ε, ≥ `PGD_STEPS` steps, a random start and a restart) and, per ε, its
success on each baseline against AutoAttack's APGD-CE, the same loss with a step-size schedule:
PGD must fool at least APGD-CE's count minus `WEAKER_BY`. Pure pandas on the report's frames.
"""

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from pydantic import ValidationError

from suite.attacks import FIXED_BUDGET_KINDS, NORM_TOLERANCE, attack_kind
from suite.report.frames import attack_kinds, attack_norm, best_of_norm
from suite.report.masking import MASKED

WEAKER_BY = 0.01
"""An attack more than one point (of the baseline's clean-correct digits) below the strongest of
its norm and budget is weaker than that one, and says nothing about robustness."""
PGD_TRAVEL, PGD_STEPS, PGD_RESTARTS = 2.5, 40, 2
APGD_CE = "apgd-ce"

STRENGTH_COLUMNS = [
    "attack", "baseline", "eps", "pgd_success", "apgd_ce_success", "reference_attack", "digits",
    "settings", "flagged",
]  # fmt: skip


def pgd_settings_problem(kind: str, params: Mapping[str, object]) -> str:
    """Why an iterative softmax attack's settings are under Madry et al.'s budget ("" where they
    are not, or for any other kind): too little travel, too few steps, no random restart."""
    entry = attack_kind(kind)
    if not entry.softmax_gradient or entry.single_step or entry.budget is None:
        return ""
    try:
        p = entry.params(**params)
    except ValidationError:  # settings this version cannot read (an older store): not judged
        return ""
    problems = []
    if p.travel() < PGD_TRAVEL - 1e-9:
        problems.append(f"travels {p.travel():g} ε (< {PGD_TRAVEL:g} ε)")
    if p.steps < PGD_STEPS:
        problems.append(f"{p.steps} steps (< {PGD_STEPS})")
    if not p.random_start or p.restarts < PGD_RESTARTS:
        problems.append("no random restart")
    return "under-budgeted: " + ", ".join(problems) if problems else ""


def pgd_strength(
    attacks: pd.DataFrame,
    baselines: Mapping[str, str],
    budgets: Mapping[str, list[float]],
    params: Mapping[str, Mapping[str, object]],
) -> pd.DataFrame:
    """Per iterative softmax attack, baseline and ε: its success on the baseline's clean-correct
    (seed, digit) rows, APGD-CE's (the digits AutoAttack's APGD-CE fooled at that ε or a smaller
    one: a lower bound of what APGD-CE does at that ε), its settings' problem, and whether it is
    flagged (settings under budget, or more than `WEAKER_BY` below APGD-CE)."""
    kinds = attack_kinds(attacks)
    out = []
    references = [
        a
        for a, k in kinds.items()
        if k == "autoattack" and "component" in attacks
        and (attacks.loc[attacks["attack"] == a, "component"] == APGD_CE).any()
    ]  # fmt: skip
    for attack, kind in kinds.items():
        entry = attack_kind(kind) if best_of_norm(kind) is None else None
        if entry is None or not entry.softmax_gradient or entry.single_step:
            continue
        settings = pgd_settings_problem(kind, params.get(attack, {}))
        for base in dict.fromkeys(baselines.values()):
            mine = _correct(attacks, attack, base)
            ref_rows = _correct(attacks, references[0], base) if references else mine.iloc[0:0]
            for eps in budgets.get(attack, []):
                ours = _within(mine, eps).mean() if len(mine) else math.nan
                ref = (
                    (_within(ref_rows, eps) & (ref_rows["component"] == APGD_CE)).mean()
                    if len(ref_rows)
                    else math.nan
                )
                weak = not math.isnan(ref) and ours < ref - WEAKER_BY
                out.append(
                    [attack, base, eps, ours, ref, references[0] if references else "",
                     len(mine), settings, bool(settings) or weak]
                )  # fmt: skip
    return pd.DataFrame(out, columns=STRENGTH_COLUMNS)


def unsound(
    attacks: pd.DataFrame,
    baselines: Mapping[str, str],
    budgets: Mapping[str, list[float]],
    checks: pd.DataFrame,
    strength: pd.DataFrame,
) -> dict[tuple[str, str], str]:
    """(attack, model) → why that attack gives no verdict for that model (the module's rules);
    models are the conditions compared with a baseline (`baselines`) that were attacked, attacks
    those of `attacks` (direct and best-of). A rule on the baseline applies to every model
    compared with it."""
    kinds = attack_kinds(attacks)
    masked = (
        set(checks.loc[checks["verdict"] == MASKED, "condition"]) if not checks.empty else set()
    )
    weaker = {
        (attack, base): why
        for base in dict.fromkeys(baselines.values())
        for attack, why in _weaker_on(attacks, kinds, base, budgets).items()
    }
    flagged = strength[strength["flagged"].astype(bool)] if not strength.empty else strength
    reasons: dict[tuple[str, str], str] = {}
    attacked = set(attacks["condition"]) if "condition" in attacks else set()
    for attack, kind in kinds.items():
        entry = attack_kind(kind) if best_of_norm(kind) is None else None
        for model, base in baselines.items():
            if model not in attacked:
                continue
            why = ""
            if entry is not None and entry.single_step:
                why = "not used: single-step"
            elif entry is not None and entry.softmax_gradient and model in masked:
                why = "not used: gradient masked on this model (Gradient masking checks)"
            elif not (hit := flagged[_on(flagged, attack, base)]).empty:
                why = "not used: " + (
                    hit["settings"].iloc[0]
                    or f"weaker than APGD-CE on the baseline ({_pgd_gap(hit.iloc[0])})"
                )
            elif (attack, base) in weaker:
                why = weaker[(attack, base)]
            if why:
                reasons[(attack, model)] = why
    return reasons


def _on(strength: pd.DataFrame, attack: str, base: str) -> pd.Series:
    return (strength["attack"] == attack) & (strength["baseline"] == base)


def _pgd_gap(row: pd.Series) -> str:
    return (
        f"{100 * row['pgd_success']:.1f}% vs {100 * row['apgd_ce_success']:.1f}% at ε "
        f"{row['eps']:g}"
    )


def _weaker_on(
    attacks: pd.DataFrame, kinds: Mapping[str, str], base: str, budgets: Mapping[str, list[float]]
) -> dict[str, str]:
    """Attack → "not used: weaker than X on the baseline (…)" for the attacks that, on `base`'s
    clean-correct rows, fool more than `WEAKER_BY` fewer digits than another attack of the same
    norm within the same budget: at each ε of a fixed-budget attack (against the fixed-budget
    attacks run at that ε and every minimal attack, whose norm must be within it), and with no
    bound for a minimal attack (against every attack of the norm at any budget). Best-of attacks
    are judged, never named as the stronger one (they are their members' union)."""
    rows = {a: _correct(attacks, a, base) for a in kinds}
    rows = {a: r for a, r in rows.items() if len(r)}
    norms = {a: attack_norm(k, rows.get(a)) for a, k in kinds.items()}
    fixed = {a for a, k in kinds.items() if k in FIXED_BUDGET_KINDS}
    out: dict[str, str] = {}
    for attack, mine in rows.items():
        rivals = [a for a in rows if a != attack and norms[a] == norms[attack]]
        rivals = [a for a in rivals if best_of_norm(kinds[a]) is None]
        limits = budgets.get(attack, []) if attack in fixed else [math.inf]
        for eps in limits:
            ours = _fooled(mine, eps, attack in fixed, norms[attack]).mean()
            best, name = ours, ""
            for other in rivals:
                if attack not in fixed and other in fixed:
                    theirs = _fooled(rows[other], math.inf, True, norms[other]).mean()
                elif attack in fixed and other in fixed and not _runs_at(budgets, other, eps):
                    continue
                else:
                    theirs = _fooled(rows[other], eps, other in fixed, norms[other]).mean()
                if theirs > best:
                    best, name = theirs, other
            if name and ours < best - WEAKER_BY:
                at = "" if math.isinf(eps) else f" at ε {eps:g}"
                out[attack] = (
                    f"not used: weaker than {name} on the baseline "
                    f"({100 * ours:.1f}% vs {100 * best:.1f}%{at})"
                )
                break
    return out


def _runs_at(budgets: Mapping[str, list[float]], attack: str, eps: float) -> bool:
    return any(np.isclose(e, eps) for e in budgets.get(attack, []))


def _correct(attacks: pd.DataFrame, attack: str, condition: str) -> pd.DataFrame:
    """The clean-correct (seed, digit) rows of one attack on one model."""
    rows = attacks[(attacks["attack"] == attack) & (attacks["condition"] == condition)]
    return rows[rows["clean_correct"].astype(bool)]


def _within(rows: pd.DataFrame, eps: float) -> pd.Series:
    """Fixed-budget rows fooled at ε or a smaller ε of the attack's grid."""
    return rows["success"].astype(bool) & (rows["eps"] <= eps + NORM_TOLERANCE)


def _fooled(rows: pd.DataFrame, eps: float, fixed: bool, norm: str) -> pd.Series:
    """Rows fooled within ε: a fixed-budget attack at ε (any ε where `eps` is ∞), a minimal one with
    its distortion in `norm` at most ε."""
    if fixed and not math.isinf(eps):
        return _within(rows, eps)
    hit = rows["success"].astype(bool)
    return hit if math.isinf(eps) else hit & (rows[norm] <= eps + NORM_TOLERANCE)
