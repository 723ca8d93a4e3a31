"""The report's numbers as tables: accuracy, success rates, distortions, paired comparisons.

Numeric DataFrames only (formatting is render.py's job), so they can be written as CSV.
"""

import dataclasses

import numpy as np
import pandas as pd

from suite.report import stats
from suite.report.frames import NORMS, ReportData, attack_norm, is_fixed_budget


def condition_order(data: ReportData) -> list[str]:
    """The baseline first, then the other conditions in the order they were collected."""
    seen = [*data.accuracy.get("condition", []), *data.attacks.get("condition", [])]
    others = [c for c in dict.fromkeys(seen) if c != data.baseline]
    return [data.baseline, *others]


def attack_kinds(attacks: pd.DataFrame) -> dict[str, str]:
    """Attack name → attack kind, in the order the attacks appear."""
    first = attacks.drop_duplicates("attack")
    return dict(zip(first["attack"], first["attack_kind"], strict=True))


def accuracy_table(accuracy: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Val/test accuracy mean and sd over finished seeds per (condition, kind, role)."""
    rank = {c: i for i, c in enumerate(order)}
    rows = []
    for (condition, kind, role), group in accuracy.groupby(["condition", "kind", "role"]):
        done = group[group["status"] == "FINISHED"]
        rows.append(
            {
                "condition": condition,
                "kind": kind,
                "role": role,
                "seeds_finished": len(done),
                "seeds_total": len(group),
                "val_mean": done["val_acc"].mean(),
                "val_sd": done["val_acc"].std(ddof=1),
                "test_mean": done["test_acc"].mean(),
                "test_sd": done["test_acc"].std(ddof=1),
            }
        )
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["_rank"] = table["condition"].map(rank).fillna(len(rank))
    return table.sort_values(["_rank", "role"]).drop(columns="_rank").reset_index(drop=True)


def attacked_accuracy(accuracy: pd.DataFrame) -> pd.Series:
    """Mean test accuracy over finished seeds of the model under attack, per condition."""
    done = accuracy[(accuracy["status"] == "FINISHED") & (accuracy["role"] != "teacher")]
    return done.groupby("condition")["test_acc"].mean()


def success_table(rows: pd.DataFrame, order: list[str], alpha: float) -> pd.DataFrame:
    """Success rate over clean-correct (seed, sample) rows per condition, with Wilson CI."""
    out = []
    for condition in order:
        mine = rows[(rows["condition"] == condition) & rows["clean_correct"].astype(bool)]
        if mine.empty:
            continue
        k, n = int(mine["success"].astype(bool).sum()), len(mine)
        lo, hi = stats.wilson_interval(k, n, alpha)
        out.append([condition, n, k, k / n, lo, hi])
    return pd.DataFrame(out, columns=["condition", "n", "successes", "rate", "rate_lo", "rate_hi"])


def distortion_table(
    pooled: pd.DataFrame, order: list[str], alpha: float, seed: int
) -> pd.DataFrame:
    """Median and mean of each norm over successes (seed-pooled per sample) with bootstrap CIs."""
    out = []
    for condition in order:
        mine = pooled[pooled["condition"] == condition]
        if mine.empty:
            continue
        for norm in NORMS:
            values = mine[norm].to_numpy(dtype=float)
            values = values[np.isfinite(values)]
            med_lo, med_hi = stats.bootstrap_ci(values, np.median, alpha=alpha, seed=seed)
            mean_lo, mean_hi = stats.bootstrap_ci(values, np.mean, alpha=alpha, seed=seed)
            median = np.median(values) if values.size else np.nan
            mean = values.mean() if values.size else np.nan
            out.append(
                [condition, norm, values.size, median, med_lo, med_hi, mean, mean_lo, mean_hi]
            )
    columns = ["condition", "norm", "n", "median", "median_lo", "median_hi"]
    return pd.DataFrame(out, columns=[*columns, "mean", "mean_lo", "mean_hi"])


def comparisons(data: ReportData, order: list[str], alpha: float, seed: int) -> pd.DataFrame:
    """Every condition against the baseline, per attack, pooled over seeds and per seed.

    Minimal attacks compare their own norm with `paired_comparison`, fixed-budget attacks
    compare success with `mcnemar_comparison`. Holm adjusts two families: all pooled rows
    (the verdicts), and all per-seed rows (replications of the pooled ones on the same
    images, so they are kept out of the headline family rather than inflating it).
    """
    attacks = data.attacks
    pooled = stats.pool_over_seeds(attacks)
    rows = []
    for attack, kind in attack_kinds(attacks).items():
        fixed = is_fixed_budget(attacks[attacks["attack"] == attack])
        value = "fooled" if fixed else attack_norm(kind)
        per_row = attacks[attacks["attack"] == attack].copy()
        per_row[value] = (
            stats.fooled(per_row) if fixed else stats.encoded_distortion(per_row, value)
        )
        scopes = [("pooled", pooled[pooled["attack"] == attack])]
        scopes += [(f"seed {s}", g) for s, g in per_row.groupby("seed")]
        for condition in order[1:]:
            for scope, frame in scopes:
                base, other = stats.paired_vectors(frame, data.baseline, condition, value)
                if base.size == 0:
                    continue
                compare = stats.mcnemar_comparison if fixed else stats.paired_comparison
                result = compare(base, other, alpha=alpha, seed=seed)
                if result.n_pairs == 0:
                    continue
                rows.append(
                    {"attack": attack, "norm": value, "condition": condition, "scope": scope}
                    | {k: v for k, v in vars(result).items() if k != "ratio_ci"}
                    | {"ratio_lo": result.ratio_ci[0], "ratio_hi": result.ratio_ci[1]}
                )
    fields = [f.name for f in dataclasses.fields(stats.PairedResult) if f.name != "ratio_ci"]
    columns = ["attack", "norm", "condition", "scope", *fields, "ratio_lo", "ratio_hi"]
    table = pd.DataFrame(rows, columns=columns)
    pooled = table["scope"] == "pooled"
    table["p_adj"] = np.nan
    for family in (pooled, ~pooled):
        table.loc[family, "p_adj"] = stats.holm_bonferroni(table.loc[family, "p"].to_numpy())
    table["verdict"] = [
        stats.verdict(p, r, alpha)
        for p, r in zip(table["p_adj"], table["median_ratio"], strict=True)
    ]
    return table


def summary_table(
    attack: str,
    successes: pd.DataFrame,
    distortions: pd.DataFrame,
    compared: pd.DataFrame,
    accuracy: pd.Series,
    norm: str,
    baseline: str,
) -> pd.DataFrame:
    """One attack at a glance: accuracy, success rate, median distortion, pooled comparison."""
    rows = []
    for _, s in successes.iterrows():
        condition = s["condition"]
        d = distortions[(distortions["condition"] == condition) & (distortions["norm"] == norm)]
        c = compared[
            (compared["attack"] == attack)
            & (compared["condition"] == condition)
            & (compared["scope"] == "pooled")
        ]
        row = {
            "condition": condition,
            "test_acc": accuracy.get(condition, np.nan),
            "success_rate": s["rate"],
            "success_lo": s["rate_lo"],
            "success_hi": s["rate_hi"],
            "norm": norm,
            "median": d["median"].iloc[0] if len(d) else np.nan,
            "median_lo": d["median_lo"].iloc[0] if len(d) else np.nan,
            "median_hi": d["median_hi"].iloc[0] if len(d) else np.nan,
        }
        for key in ("median_ratio", "ratio_lo", "ratio_hi", "p_adj"):
            row[key] = c[key].iloc[0] if len(c) else np.nan
        if len(c):
            row["verdict"] = c["verdict"].iloc[0]
        else:
            row["verdict"] = (
                "baseline" if condition == baseline else "not compared (no paired samples)"
            )
        rows.append(row)
    return pd.DataFrame(rows)
