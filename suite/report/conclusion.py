"""The report's conclusion: sentences built only from the computed numbers.

It ends by checking the seed report's claim on this run, with the thresholds below.
"""

import math

import numpy as np
import pandas as pd

from suite.report.formatting import NORM_LABELS, ci, code, esc, num, pct, pvalue
from suite.report.frames import ReportData, attack_kinds, attack_norm, primary_attack
from suite.report.masking import CLEAR, COLUMNS, INCOMPLETE, MASKED
from suite.report.references import references_for, robust_accuracy

CLAIM = "distillation changes accuracy by about ±2% and distortion not much"
CLAIM_ACCURACY_PP = 2.0
CLAIM_RATIO_BAND = (0.8, 1.25)
CONTROL_KINDS = frozenset({"adversarial"})
"""Positive controls: trained to be robust, so the instrument must find them more robust."""
REFERENCE_GAP_PP = 10.0
"""How far below its method's published robust accuracy a positive control may fall (issue 26)."""
REFERENCE_KINDS = frozenset({"standard", "matched"})
"""Not distillation: the full-data network, and the same network stopped at a synthetic model's
accuracy (its accuracy-matched control)."""


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
    parts = []
    for base in dict.fromkeys(data.baselines.values()):
        acc = attacked_acc.get(base, np.nan)
        parts.append(
            f"The baseline {code(base)} has no finished run, so nothing is compared with it."
            if math.isnan(acc)
            else f"The baseline {code(base)} reaches {pct(acc)} test accuracy."
        )
    pooled = compared[(compared["scope"] == "pooled") & (compared["subset"] == "all digits")]
    primary = primary_attack(data, compared["attack"].unique() if "attack" in compared else [])
    primary_rows = pooled[pooled["attack"] == primary]
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
        parts.append(sentence + _effects(pooled[pooled["condition"] == condition], primary) + ".")
    trained = [c for c in deltas if "/" not in c]  # attacked teachers are not distilled
    controls = [c for c in trained if kinds.get(c) in CONTROL_KINDS]
    distilled = [
        c for c in trained if kinds.get(c, "standard") not in {*REFERENCE_KINDS, *CONTROL_KINDS}
    ]
    answer = [
        _answer(distilled, primary_rows, primary),
        *_control(controls, primary_rows, deltas, data.trained_in, _norm_of(data, primary)),
        *[_control_reference(data, c) for c in controls],
        *_robust_claims([*distilled, *controls], primary_rows, checks),
        *_masking_caveat(checks),
    ]
    defensive = [c for c in deltas if kinds.get(c.split("/")[0]) == "defensive"]  # and teachers
    synthetic = [c for c in trained if kinds.get(c) == "synthetic"]
    paragraphs = [
        " ".join(parts),
        " ".join(a for a in answer if a),
        _claim_check({c: deltas[c] for c in defensive}, primary_rows, defensive),
        _synthetic(synthetic, deltas, primary_rows, primary),
    ]
    return "\n\n".join(p for p in paragraphs if p)


def _effects(mine: pd.DataFrame, primary: str | None) -> str:
    """The primary endpoint's comparison in full (seed-level interval, adjusted p, verdict,
    heterogeneity); the secondary attacks named in one clause, their estimates being in the
    report's tables and carrying no verdict."""
    if mine.empty:
        return ""
    chosen = mine[mine["attack"] == primary]
    if chosen.empty:
        return "; no primary-endpoint comparison"
    head = chosen.iloc[0]
    text = (
        f"; under the primary endpoint {esc(head.attack)}, {_ratio_name(head.test, head.norm)} "
        f"{ci(head.ratio, head.ratio_lo, head.ratio_hi)} ({_level(head)} interval, adjusted p "
        f"{pvalue(head.p_adj)}): {esc(head.verdict)}"
        + (f"; {esc(head.seeds)}" if head.seeds else "")
    )
    others = mine[mine["attack"] != head.attack]

    def named(keep) -> list[str]:
        found = [a for a, v in zip(others["attack"], others["verdict"], strict=True) if keep(v)]
        return [esc(a) for a in dict.fromkeys(found)]  # an attack at several ε is named once

    secondary = named(lambda v: v == "secondary")
    untestable = named(lambda v: v.startswith("not testable"))
    unused = named(lambda v: v.startswith("not used"))
    if secondary:
        text += f"; secondary, without a verdict: {', '.join(secondary)}"
    if untestable:
        text += f"; not testable at some ε (both models equally fooled): {', '.join(untestable)}"
    if unused:
        text += f"; not used (unsound on this model): {', '.join(unused)}"
    return text


def _level(row) -> str:
    """Which interval a pooled row carries: seeds as the unit where their pooling exists."""
    return "seed-level" if pd.notna(getattr(row, "seed_est", np.nan)) else "digit-level"


def _names(conditions: list[str]) -> str:
    """`a`; `a` and `b`; `a`, `b` and `c`."""
    names = [code(c) for c in conditions]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _ratio_name(test: str, norm: str) -> str:
    if test == "mcnemar":
        return "robust-accuracy ratio"
    return f"{NORM_LABELS[norm]} ratio (Hodges–Lehmann)"


def _masking_caveat(checks: pd.DataFrame) -> list[str]:
    """The models the matched-budget masking checks flag: their softmax-gradient attacks are not
    used, whatever they found."""
    flagged = checks.loc[checks["verdict"] == MASKED, "condition"].tolist() if len(checks) else []
    if not flagged:
        return []
    return [
        f"The masking checks flag {_names(flagged)}: attacks that do not follow the softmax "
        "gradient fool, inside the same ε, digits the softmax-gradient attack could not, so "
        "that attack's numbers there are not used."
    ]


def _robust_claims(conditions: list[str], pooled: pd.DataFrame, checks: pd.DataFrame) -> list[str]:
    """For the conditions found more robust under the primary endpoint (`pooled` holds its rows),
    whether the attacks that do not use their gradient agree (`suite.report.masking`): only then
    is one called robust. One sentence per reason, naming every condition it applies to."""
    verdicts = checks.set_index("condition")["verdict"] if not checks.empty else pd.Series()
    reasons: dict[str, list[str]] = {}  # masking verdict → conditions
    for condition in conditions:
        mine = pooled[pooled["condition"] == condition]
        if not any(str(v).startswith("more robust") for v in mine["verdict"]):
            continue
        verdict = verdicts.get(condition, INCOMPLETE)
        reasons.setdefault(verdict if verdict in (CLEAR, MASKED) else INCOMPLETE, []).append(
            condition
        )
    sentences = []
    for verdict, names in reasons.items():
        one = len(names) == 1
        its, is_ = ("its", "is") if one else ("their", "are")
        if verdict == CLEAR:
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


def _norm_of(data: ReportData, attack: str | None) -> str | None:
    """The norm the attack `attack` measures (the primary endpoint's: `best-l2` → l2)."""
    if attack is None:
        return None
    return attack_norm(attack_kinds(data.attacks).get(attack, attack))


def _control(
    controls: list[str],
    primary_rows: pd.DataFrame,
    deltas: dict[str, float],
    trained_in: dict[str, tuple[str, float]],
    primary_norm: str | None,
) -> list[str]:
    """Whether the instrument saw robustness where it was built in: a positive control must come
    out more robust under the primary endpoint, at the clean-accuracy cost shown beside it. A
    control trained in another norm's ball than the primary endpoint measures is said to test the
    instrument only in its own norm."""
    sentences = []
    for condition in controls:
        mine = primary_rows[primary_rows["condition"] == condition]
        if mine.empty:
            continue
        verdict = str(mine["verdict"].iloc[0])
        cost = deltas.get(condition, math.nan)
        cost_text = "" if math.isnan(cost) else f", at a clean-accuracy cost of {cost:+.1f} pp"
        norm, eps = trained_in.get(condition, (None, math.nan))
        what = (
            "adversarial training"
            if norm is None
            else f"adversarial training in the {NORM_LABELS[norm]} ball of radius {eps:g}"
        )
        if verdict.startswith("more robust"):
            sentences.append(
                f"The positive control {code(condition)} ({what}) comes out more "
                f"robust under the primary endpoint{cost_text}: the instrument detects robustness "
                "where it is built in."
            )
        elif verdict.startswith("no verdict"):  # unfinished or refused runs: nothing was tested
            sentences.append(
                f"The positive control {code(condition)} ({what}) cannot be judged "
                f"yet ({esc(verdict)}), so this report does not show that the instrument would "
                "detect robustness built into a model."
            )
        elif norm is not None and primary_norm is not None and norm != primary_norm:
            sentences.append(
                f"The positive control {code(condition)} ({what}) is not more robust under the "
                f"primary endpoint ({esc(verdict)}){cost_text}; it was trained against "
                f"{NORM_LABELS[norm]} perturbations and the primary endpoint measures "
                f"{NORM_LABELS[primary_norm]} distortion, so it does not test whether the "
                f"instrument detects {NORM_LABELS[primary_norm]} robustness (a control trained in "
                f"the {NORM_LABELS[primary_norm]} ball would); its fixed-ε "
                f"{NORM_LABELS[norm]} results test what it was trained for."
            )
        else:
            sentences.append(
                f"The positive control {code(condition)} ({what}) is not more "
                f"robust under the primary endpoint ({esc(verdict)}){cost_text}: the instrument "
                "did not detect the robustness built into it, so an equivalent or inconclusive "
                "verdict elsewhere may only show an insensitive instrument."
            )
    return sentences


def _control_reference(data: ReportData, condition: str) -> str:
    """The control's robust accuracy under AutoAttack at the published point of its training
    method, and whether it comes within REFERENCE_GAP_PP of it (a control far below its method's
    published model tests the instrument on weaker robustness than the method builds); '' where
    the study ran no AutoAttack at that point."""
    method = data.trained_by.get(condition)
    dataset = str(data.setup.get("dataset"))
    for attack, kind in attack_kinds(data.attacks).items():
        if kind != "autoattack" or attack in data.gradient_free:
            continue
        rows = data.attacks[data.attacks["attack"] == attack]
        norm = attack_norm(kind, rows)
        points = references_for(dataset, kind, norm, data.budgets.get(attack, []))
        for point in [p for p in points if p.training == method]:
            ours = robust_accuracy(rows, [condition], point.eps)
            if ours.empty:
                continue
            gap = 100 * (point.robust - float(ours.iloc[0]))
            judged = (
                f"within {REFERENCE_GAP_PP:g} points of it"
                if gap <= REFERENCE_GAP_PP
                else f"{gap:.1f} points below it, so the control tests the instrument on weaker "
                "robustness than its method's published model has"
            )
            return (
                f"Under {code(attack)} at {NORM_LABELS[norm]} ε = {point.eps:g}, "
                f"{code(condition)} keeps {pct(float(ours.iloc[0]))} of the attacked digits, "
                f"against {pct(point.robust)} published for {esc(point.method)} (the published "
                f"reference points, other test digits): {judged}."
            )
    return ""


def _answer(distilled: list[str], primary_rows: pd.DataFrame, primary: str | None) -> str:
    """Group distilled conditions by their primary-endpoint verdict (no other attack speaks)."""
    if not distilled or primary_rows.empty:
        return ""
    groups: dict[str, list[str]] = {}
    for condition in distilled:
        verdicts = primary_rows.loc[primary_rows["condition"] == condition, "verdict"]
        if verdicts.empty:
            continue
        verdict = str(verdicts.iloc[0])
        group = (
            "no verdict (see Conditions without a verdict)"
            if verdict.startswith("no verdict")
            else verdict.split(" (")[0]
        )
        groups.setdefault(group, []).append(code(condition))
    found = "; ".join(f"{g}: {', '.join(cs)}" for g, cs in groups.items())
    return (
        f"Distilled and small-set conditions against their baselines, under the primary endpoint "
        f"{esc(primary)}: "
        f"{found}."
        if found
        else ""
    )


def _claim_check(deltas: dict[str, float], pooled: pd.DataFrame, distilled: list[str]) -> str:
    """The seed report's claim, judged on the conditions the seed ran: defensive distillation's
    students and teachers (`distilled`), their primary-endpoint ratios (`pooled`) and `deltas`, each
    one's test-accuracy change against its own baseline (pp)."""
    if not distilled:  # a study of other conditions: the claim is not its question
        return ""
    intro = f"The seed report's claim, \"{CLAIM}\", on this run's defensive distillation:"
    deltas = {c: d for c, d in deltas.items() if not math.isnan(d)}
    if deltas:
        worst = max(deltas, key=lambda c: abs(deltas[c]))
        holds = abs(deltas[worst]) <= CLAIM_ACCURACY_PP
        accuracy = (
            f"the accuracy part {'holds' if holds else 'does not hold'} (largest change "
            f"{deltas[worst]:+.1f} pp for {code(worst)}, against ±{CLAIM_ACCURACY_PP:g} pp)"
        )
    else:
        accuracy = "the accuracy part cannot be checked (no finished defensive run)"
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


def _synthetic(
    synthetic: list[str], deltas: dict[str, float], primary_rows: pd.DataFrame, primary: str | None
) -> str:
    """Models trained on synthetic sets, a question the seed report did not ask: each one's
    accuracy change and primary-endpoint ratio against its baseline, in one paragraph."""
    if not synthetic:
        return ""
    items = []
    for condition in synthetic:
        row = primary_rows[primary_rows["condition"] == condition]
        delta = deltas.get(condition, math.nan)
        text = code(condition) + ("" if math.isnan(delta) else f" {delta:+.1f} pp")
        if not row.empty:
            r = row.iloc[0]
            text += f", ratio {ci(r.ratio, r.ratio_lo, r.ratio_hi)} ({esc(r.verdict)})"
        items.append(text)
    return (
        "Models trained only on synthetic or coreset images (a question the seed report did not "
        f"ask), test-accuracy change and {esc(primary)} ratio against their baselines: "
        f"{'; '.join(items)}."
    )


CLAIM_SEEDS = 5
"""Seeds a study needs before its verdicts are claims: with fewer, the seed-level t-interval's
t(k − 1) quantile alone widens it (4.30 at 3 seeds, 2.78 at 5)."""


def answer(
    data: ReportData,
    compared: pd.DataFrame,
    controlled: pd.DataFrame,
    order: list[str],
    checks: pd.DataFrame,
    level: str,
) -> str:
    """The report's answer in a few sentences, first on its first page: the primary endpoint and
    its unit of inference, then defensive distillation, models trained on synthetic sets (against
    the full-data baseline, then against their same-size real and accuracy-matched controls,
    `controlled`) and positive controls, each grouped by verdict with every effect and its
    seed-level interval, then what limits it (masking, too few seeds)."""
    kinds = data.accuracy.drop_duplicates("condition").set_index("condition")["kind"]
    pooled = compared[(compared["scope"] == "pooled") & (compared["subset"] == "all digits")]
    primary = primary_attack(data, compared["attack"].unique() if "attack" in compared else [])
    rows = pooled[pooled["attack"] == primary]
    if primary is None or rows.empty:
        return "No primary-endpoint comparison ran, so this report gives no answer."
    k = int(rows["k"].max()) if rows["k"].notna().any() else 0
    lo, hi = data.equivalence_margin, 1 / data.equivalence_margin
    tost = f"{2 * float(level.rstrip('%')) - 100:g}%"  # the (1 − 2α) interval of a (1 − α) level
    sentences = [
        f"Does distillation make a network harder to attack? Primary endpoint: {esc(primary)}, "
        f"the ratio of each model's per-digit distortion to its own baseline's on the same "
        f"digits, pooled over {k} training seed{'' if k == 1 else 's'} as the unit of inference "
        f"({level} seed-level "
        f"intervals; equivalent: the {tost} interval, two one-sided tests, inside "
        f"[{lo:g}, {hi:.3g}])."
    ]
    defensive = [c for c in order if kinds.get(c.split("/")[0]) == "defensive"]
    teachers = ", and their teachers" if any("/" in c for c in defensive) else ""
    groups = {
        f"Defensive distillation (students deployed at T = 1{teachers})": defensive,
        "Models trained only on small synthetic or coreset sets": [
            c for c in order if kinds.get(c) == "synthetic"
        ],
        "Positive controls (adversarial training)": [
            c for c in order if kinds.get(c) in CONTROL_KINDS
        ],
        "Accuracy-matched controls (the full-data network stopped at a synthetic model's "
        "validation accuracy)": [c for c in order if kinds.get(c) == "matched"],
    }
    for name, conditions in groups.items():
        found = _by_verdict([c for c in conditions if c in set(rows["condition"])], rows)
        if found:
            sentences.append(f"{name}: {found}.")
    against = controlled[
        (controlled["scope"] == "pooled")
        & (controlled["subset"] == "all digits")
        & (controlled["attack"] == primary)
    ]
    for control, rows_of in against.groupby("baseline", sort=False):
        found = _by_verdict(list(rows_of["condition"]), rows_of)
        if kinds.get(control) == "matched":
            what = (
                "the full-data network stopped at the same validation accuracy (what the lower "
                "accuracy alone explains)"
            )
        elif control in data.coresets.values():
            what = (
                "as many herding-selected real images per class on the same network (what "
                "learning the images adds to choosing them well)"
            )
        else:
            what = (
                "as many random real images per class on the same network (what distillation "
                "adds to a small training set)"
            )
        sentences.append(f"Against {code(control)}, {what}: {found}.")
    flagged = checks.loc[checks["verdict"] == MASKED, "condition"].tolist() if len(checks) else []
    if flagged:
        sentences.append(
            f"The masking checks flag {_names(flagged)}: gradient-free and margin attacks inside "
            "the same ε fool what the softmax-gradient attack cannot, so no softmax-gradient "
            "result speaks for them."
        )
    if not groups["Positive controls (adversarial training)"]:
        sentences.append(
            "No positive control (an adversarially trained model) ran in this study, so it does "
            "not show that the instrument would find real robustness here."
        )
    if k < CLAIM_SEEDS:
        sentences.append(
            f"With {k} seed{'' if k == 1 else 's'} (a claim needs {CLAIM_SEEDS}) the intervals are "
            "wide and the verdicts provisional."
        )
    return " ".join(sentences)


def _by_verdict(conditions: list[str], rows: pd.DataFrame) -> str:
    """`verdict: `a` r [lo, hi], `b` r [lo, hi]; other verdict: …` in the order first seen."""
    groups: dict[str, list[str]] = {}
    for condition in conditions:
        r = rows[rows["condition"] == condition].iloc[0]
        verdict = str(r["verdict"]).split(" (")[0]
        groups.setdefault(verdict, []).append(
            f"{code(condition)} {ci(r['ratio'], r['ratio_lo'], r['ratio_hi'])}"
        )
    return "; ".join(f"{esc(v)} for {', '.join(items)}" for v, items in groups.items())
