"""The report's conclusion: sentences built only from the computed numbers.

It ends by checking the seed report's claim on this run, with the thresholds below.
"""

import math

import numpy as np
import pandas as pd

from suite.report.formatting import NORM_LABELS, ci, code, esc, num, pct, pvalue
from suite.report.frames import ReportData, attack_kinds, headline_attack
from suite.report.masking import CLEAR, COLUMNS, INCOMPLETE, MASKED

CLAIM = "distillation changes accuracy by about ±2% and distortion not much"
CLAIM_ACCURACY_PP = 2.0
CLAIM_RATIO_BAND = (0.8, 1.25)
CONTROL_KINDS = frozenset({"adversarial"})
"""Positive controls: trained to be robust, so the instrument must find them more robust."""


def conclusion(
    data: ReportData,
    attacked_acc: pd.Series,
    compared: pd.DataFrame,
    order: list[str],
    checks: pd.DataFrame | None = None,
) -> str:
    """Three paragraphs built only from the numbers: results per condition against its own
    baseline (all attacked digits), the answer (with gradient-masking caveats), and the seed
    report's claim checked on this run. `checks` is the three-way masking table
    (`suite.report.masking.three_way`): a condition found more robust is called robust only
    where all three checks ran and none flagged it."""
    checks = pd.DataFrame(columns=COLUMNS) if checks is None else checks
    kinds = data.accuracy.drop_duplicates("condition").set_index("condition")["kind"]
    attack_kind_of = attack_kinds(data.attacks)
    parts = []
    for base in dict.fromkeys(data.baselines.values()):
        acc = attacked_acc.get(base, np.nan)
        parts.append(
            f"The baseline {code(base)} has no finished run, so nothing is compared with it."
            if math.isnan(acc)
            else f"The baseline {code(base)} reaches {pct(acc)} test accuracy."
        )
    pooled = compared[(compared["scope"] == "pooled") & (compared["subset"] == "all digits")]
    deltas = {}
    for condition in [c for c in order if c in data.baselines]:
        base = data.baselines[condition]
        acc = attacked_acc.get(condition, np.nan)
        deltas[condition] = 100 * (acc - attacked_acc.get(base, np.nan))
        kind = kinds.get(condition.split("/")[0], "?")
        sentence = (
            f"{code(condition)} ({esc(kind)}, against {code(base)}): {pct(acc)} test accuracy"
        )
        sentence += "" if math.isnan(deltas[condition]) else f" ({deltas[condition]:+.1f} pp)"
        parts.append(
            sentence + _effects(pooled[pooled["condition"] == condition], attack_kind_of) + "."
        )
    trained = [c for c in deltas if "/" not in c]  # attacked teachers are not distilled
    controls = [c for c in trained if kinds.get(c) in CONTROL_KINDS]
    distilled = [c for c in trained if kinds.get(c, "standard") not in {"standard", *CONTROL_KINDS}]
    answer = [
        _answer(distilled, pooled),
        *_control(controls, pooled, deltas),
        *_robust_claims([*distilled, *controls], pooled, checks),
        *_masking_caveat(data.masking),
    ]
    paragraphs = [
        " ".join(parts),
        " ".join(a for a in answer if a),
        _claim_check({c: deltas[c] for c in distilled}, pooled, distilled),
    ]
    return "\n\n".join(p for p in paragraphs if p)


def _effects(mine: pd.DataFrame, kinds: dict[str, str]) -> str:
    """The headline comparison in full (the published headline's attack, `headline_attack`, where
    it ran, else the first minimal-norm attack, else the first attack); the other attacks by
    verdict in one clause, their numbers being in the report's tables."""
    if mine.empty:
        return ""
    lead = headline_attack(mine["attack"], kinds)
    minimal = mine[mine["test"] != "mcnemar"]
    chosen = mine[mine["attack"] == lead]
    head = (chosen if not chosen.empty else minimal if not minimal.empty else mine).iloc[0]
    text = (
        f"; under {esc(head.attack)}, {_ratio_name(head.test, head.norm)} "
        f"{ci(head.ratio, head.ratio_lo, head.ratio_hi)} (adjusted p {pvalue(head.p_adj)}): "
        f"{esc(head.verdict)}" + (f", {esc(head.seeds)}" if head.seeds else "")
    )
    others: dict[str, list[str]] = {}
    for r in mine[mine["attack"] != head.attack].itertuples():
        others.setdefault(str(r.verdict), []).append(esc(r.attack))
    same = others.pop(str(head.verdict), [])
    text += f", likewise under {', '.join(same)}" if same else ""
    if others:
        text += "; " + "; ".join(f"{v} under {', '.join(a)}" for v, a in others.items())
    return text


def _names(conditions: list[str]) -> str:
    """`a`; `a` and `b`; `a`, `b` and `c`."""
    names = [code(c) for c in conditions]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _ratio_name(test: str, norm: str) -> str:
    if test == "mcnemar":
        return "robust-accuracy ratio"
    return f"{NORM_LABELS[norm]} ratio (Hodges–Lehmann)"


def _masking_caveat(masking: pd.DataFrame) -> list[str]:
    if masking.empty:
        return []
    flags = masking.groupby("condition", sort=False)["flagged"].agg(["sum", "size"])
    flagged = [f"{code(c)} ({int(k)} of {n} seeds)" for c, (k, n) in flags.iterrows() if k > 0]
    if not flagged:
        return []
    return [
        f"The gradient-masking diagnostic flags {', '.join(flagged)}: a larger distortion there "
        "need not mean real robustness."
    ]


def _robust_claims(conditions: list[str], pooled: pd.DataFrame, checks: pd.DataFrame) -> list[str]:
    """For the conditions found more robust under some attack, whether the attacks that do not use
    their gradient agree (`suite.report.masking`): only then is one called robust. One sentence
    per reason, naming every condition it applies to."""
    verdicts = checks.set_index("condition")["verdict"] if not checks.empty else pd.Series()
    reasons: dict[tuple[bool, str], list[str]] = {}  # (less robust elsewhere, masking verdict)
    for condition in conditions:
        mine = pooled[pooled["condition"] == condition]
        if not any(str(v).startswith("more robust") for v in mine["verdict"]):
            continue
        verdict = verdicts.get(condition, INCOMPLETE)
        less = any(str(v).startswith("less robust") for v in mine["verdict"])
        if not less and verdict not in (CLEAR, MASKED):
            verdict = INCOMPLETE
        reasons.setdefault((less, verdict), []).append(condition)
    sentences = []
    for (less, verdict), names in reasons.items():
        one = len(names) == 1
        its, is_ = ("its", "is") if one else ("their", "are")
        if less:
            sentences.append(
                f"{_names(names)} {is_} not called robust: less robust under other attacks "
                f"(gradient-masking checks: {esc(verdict)})."
            )
        elif verdict == CLEAR:
            sentences.append(
                f"{_names(names)} {is_} robust by this evidence: the transfer and gradient-free "
                "attacks find no adversarials the white-box attacks missed."
            )
        elif verdict == MASKED:
            sentences.append(
                f"{_names(names)} {is_} not called robust: attacks that do not use {its} gradient "
                "fool digits the white-box softmax attack could not (see Gradient masking: three "
                f"checks), so {its} larger distortions there are gradient masking."
            )
        else:
            sentences.append(
                f"{_names(names)} {is_} not called robust: the transfer or gradient-free check did "
                f"not run on {'it' if one else 'them'}, so masked gradients are not ruled out."
            )
    return sentences


def _control(controls: list[str], pooled: pd.DataFrame, deltas: dict[str, float]) -> list[str]:
    """Whether the instrument saw robustness where it was built in: a positive control must come
    out more robust under every attack, at the clean-accuracy cost shown beside it."""
    sentences = []
    for condition in controls:
        mine = pooled[pooled["condition"] == condition]
        if mine.empty:
            continue
        verdicts = ", ".join(f"{esc(r.attack)}: {esc(r.verdict)}" for r in mine.itertuples())
        cost = deltas.get(condition, math.nan)
        cost_text = "" if math.isnan(cost) else f", at a clean-accuracy cost of {cost:+.1f} pp"
        detected = all(str(v).startswith("more robust") for v in mine["verdict"])
        sentences.append(
            f"The positive control {code(condition)} (adversarial training) comes out more robust "
            f"under every attack ({verdicts}){cost_text}: the instrument detects robustness where "
            "it is built in."
            if detected
            else f"The positive control {code(condition)} (adversarial training) is not more "
            f"robust under every attack ({verdicts}){cost_text}: the instrument did not detect the "
            "robustness built into it, so a verdict of no difference elsewhere may only show an "
            "insensitive instrument."
        )
    return sentences


def _answer(distilled: list[str], pooled: pd.DataFrame) -> str:
    """Group distilled conditions by their pooled verdicts across attacks."""
    if not distilled or pooled.empty:
        return ""
    groups: dict[str, list[str]] = {}
    for condition in distilled:
        verdicts = set(pooled.loc[pooled["condition"] == condition, "verdict"])
        if not verdicts:
            continue
        if all(v.startswith("no verdict") for v in verdicts):
            groups.setdefault("no verdict (see Conditions without a verdict)", []).append(
                code(condition)
            )
            continue
        more, less = "more robust" in verdicts, "less robust" in verdicts
        some = "under some attacks, no significant difference under the others"
        if more and less:
            group = "more robust under some attacks and less robust under others"
        elif more or less:
            word = "more" if more else "less"
            mixed = len(verdicts) > 1
            group = f"{word} robust {some}" if mixed else f"{word} robust under every attack"
        else:
            group = "no significant difference under any attack"
        groups.setdefault(group, []).append(code(condition))
    found = "; ".join(f"{g}: {', '.join(cs)}" for g, cs in groups.items())
    return f"Distilled conditions against their baselines: {found}." if found else ""


def _claim_check(deltas: dict[str, float], pooled: pd.DataFrame, distilled: list[str]) -> str:
    """`deltas`: each distilled condition's test-accuracy change against its own baseline (pp)."""
    intro = f'The seed report\'s claim, "{CLAIM}", on this run:'
    if not distilled:
        return f"{intro} cannot be checked (no distilled condition compared with a baseline)."
    deltas = {c: d for c, d in deltas.items() if not math.isnan(d)}
    if deltas:
        worst = max(deltas, key=lambda c: abs(deltas[c]))
        holds = abs(deltas[worst]) <= CLAIM_ACCURACY_PP
        accuracy = (
            f"the accuracy part {'holds' if holds else 'does not hold'} (largest change "
            f"{deltas[worst]:+.1f} pp for {code(worst)}, against ±{CLAIM_ACCURACY_PP:g} pp)"
        )
    else:
        accuracy = "the accuracy part cannot be checked (no finished distilled run)"
    lo, hi = CLAIM_RATIO_BAND
    minimal = pooled[pooled["condition"].isin(distilled) & (pooled["test"] != "mcnemar")]
    if minimal.empty:
        distortion = "the distortion part cannot be checked (no minimal-perturbation comparison)"
    else:
        ratios = minimal["ratio"].to_numpy(dtype=float)
        outside = minimal[(ratios < lo) | (ratios > hi)]
        band = (
            f"ratio {num(ratios[0])}"
            if ratios.size == 1
            else f"ratios from {num(np.nanmin(ratios))} to {num(np.nanmax(ratios))}"
        )
        if outside.empty:
            distortion = f"the distortion part holds ({band}, all within [{lo:g}, {hi:g}])"
        else:
            first = outside.iloc[0]
            distortion = (
                f"the distortion part does not hold ({band}; {code(first['condition'])} under "
                f"{esc(first['attack'])} is outside [{lo:g}, {hi:g}])"
            )
    return f"{intro} {accuracy}; {distortion}."
