"""Each digit's true minimal distortion bracketed: below by a certified radius (or the exact value),
above by the best adversarial any attack found; and the soundness check that no attack reports an
adversarial inside a certified radius (a bug in the attack, the bound or the records if one does).
Pure pandas on `ReportData.verified` and the attack records."""

import numpy as np
import pandas as pd

from suite.verify.exact import NONE_WITHIN

VIOLATION_SLACK = 1e-5
"""An attack's distortion counts as below a certified radius when it is smaller by more than this
(relative, plus the same absolute): the attack measures its images in float32."""

BRACKET_COLUMNS = [
    "condition", "verification", "norm", "digits", "median_lower", "median_attack",
    "median_ratio", "solved", "median_exact", "median_gap", "worst_gap", "violations",
]  # fmt: skip


def best_found(attacks: pd.DataFrame, norm: str) -> pd.Series:
    """Per (condition, seed, sample_index), the smallest `norm` distortion of a successful
    adversarial over every attack's records (minimal-norm and fixed-budget alike)."""
    if attacks.empty or norm not in attacks:
        return pd.Series(dtype=float)
    won = attacks[attacks["success"].astype(bool) & attacks[norm].notna()]
    return won.groupby(["condition", "seed", "sample_index"])[norm].min()


def violations(verified: pd.DataFrame, attacks: pd.DataFrame) -> pd.DataFrame:
    """Every (attack record, certified digit) where the attack's adversarial is closer than the
    certified radius allows: condition, seed, sample_index, verification, attack, distortion,
    lower."""
    columns = ["condition", "seed", "sample_index", "verification", "attack", "distortion", "lower"]
    if verified.empty or attacks.empty:
        return pd.DataFrame(columns=columns)
    found = []
    for norm, bounds in verified.groupby("norm"):
        if norm not in attacks:
            continue
        won = attacks[attacks["success"].astype(bool) & attacks[norm].notna()]
        keys = ["condition", "seed", "sample_index"]
        pairs = won[[*keys, "attack", norm]].merge(
            bounds[[*keys, "verification", "lower"]], on=keys
        )
        bad = pairs[pairs[norm] < pairs["lower"] * (1 - VIOLATION_SLACK) - VIOLATION_SLACK]
        found.append(bad.rename(columns={norm: "distortion"})[columns])
    return pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=columns)


def brackets(verified: pd.DataFrame, attacks: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Per model (condition, all seeds) × verification: the correctly classified digits, the
    median certified lower bound, the median best attack distortion of that norm and the median
    ratio of the two (how wide the bracket is); where exact values exist, how many digits were
    solved, their median, and the attacks' optimality gap (best found ÷ exact − 1: median and
    worst digit); and the number of soundness violations."""
    if verified.empty:
        return pd.DataFrame(columns=BRACKET_COLUMNS)
    bad = violations(verified, attacks)
    rows = []
    clean = verified[verified["status"] != "misclassified"]
    for (condition, name), group in clean.groupby(["condition", "verification"], sort=False):
        norm = str(group["norm"].iloc[0])
        keyed = group.set_index(["condition", "seed", "sample_index"])
        best = best_found(attacks, norm).reindex(keyed.index)
        ratio = best / keyed["lower"].where(keyed["lower"] > 0)
        solved = keyed[keyed["solved"].astype(bool)]
        gap = best.reindex(solved.index) / solved["value"] - 1
        rows.append({
            "condition": condition, "verification": name, "norm": norm, "digits": len(group),
            "median_lower": keyed["lower"].median(), "median_attack": best.median(),
            "median_ratio": ratio.median(), "solved": len(solved),
            "median_exact": solved["value"].median() if len(solved) else np.nan,
            "median_gap": gap.median() if gap.notna().any() else np.nan,
            "worst_gap": gap.max() if gap.notna().any() else np.nan,
            "violations": int(((bad["condition"] == condition) & (bad["verification"] == name)).sum()),
        })  # fmt: skip
    frame = pd.DataFrame(rows, columns=BRACKET_COLUMNS)
    rank = {c: i for i, c in enumerate(order)}
    return frame.sort_values("condition", key=lambda s: s.map(rank), kind="stable")


EXACT_KIND = "exact"
"""The attack kind exact minimal distortions are compared under (`exact_records`)."""


def exact_records(verified: pd.DataFrame) -> pd.DataFrame:
    """The exact verifications' per-digit values as attack records, so the same paired statistics
    compare models on them (issue 30): one pseudo-attack per verification, named after it, whose
    distortion is the exact minimum where solved; a digit proved clean up to `eps_max` counts as
    a failed attack (∞, a lower bound like any failed attack's), a misclassified one as 0, and a
    digit the solver left open (time limit) is left out, so only digits decided in both models
    pair."""
    columns = ["condition", "seed", "sample_index", "target", "attack", "attack_kind", "norm",
               "clean_correct", "success"]  # fmt: skip
    if verified.empty:
        return pd.DataFrame(columns=columns)
    exact = verified[verified["kind"] == EXACT_KIND]
    solved = exact["solved"].astype(bool)
    misclassified = exact["status"] == "misclassified"
    clean_at_max = exact["status"] == NONE_WITHIN  # not a time limit that found no witness
    decided = exact[solved | misclassified | clean_at_max]
    records = pd.DataFrame({
        "condition": decided["condition"], "seed": decided["seed"],
        "sample_index": decided["sample_index"], "target": np.nan,
        "attack": decided["verification"], "attack_kind": EXACT_KIND, "norm": decided["norm"],
        "clean_correct": decided["status"] != "misclassified",
        "success": decided["solved"].astype(bool),
    })  # fmt: skip
    for norm in decided["norm"].unique():
        records[norm] = decided["value"].where(decided["norm"] == norm)
    return records.reset_index(drop=True)
