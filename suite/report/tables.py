"""The report's numbers as tables: accuracy, success rates, distortions, paired comparisons.

Numeric DataFrames (formatting is render.py's job), so they can be written as CSV; only the
transfer matrix holds its cells as the report shows them.
"""

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from scipy.stats import norm as normal

from suite import schema
from suite.attacks import FIXED_BUDGET_KINDS
from suite.report import stats
from suite.report.formatting import pct
from suite.report.frames import (
    NORMS,
    ReportData,
    attack_kinds,
    attack_norm,
    best_of,
    is_fixed_budget,
    model_label,
)
from suite.schema import Status

SUBSETS = ("all digits", "both correct")
_ROW_KEYS = ["seed", *stats.PAIR_KEYS]


def condition_order(data: ReportData) -> list[str]:
    """The baselines first, then the other conditions, each in the order they were collected."""
    seen = dict.fromkeys([*data.accuracy.get("condition", []), *data.attacks.get("condition", [])])
    bases = set(data.baselines.values())
    return [c for c in seen if c in bases] + [c for c in seen if c not in bases]


def with_best_of(attacks: pd.DataFrame, outside: Sequence[str] = ()) -> pd.DataFrame:
    """The attack frame plus, per norm that two or more minimal-norm attacks ran in, the rows of
    a derived attack `best-<norm>`: per (condition, seed, digit) the row of the attack that found
    the smallest distortion (the digit's worst case over the attacks that ran on it). Attacks in
    `outside` (the manifest's `ensemble = false`) stay out of it.

    Minimal-norm means not a fixed-budget kind (`suite.attacks.FIXED_BUDGET_KINDS`); the norm
    is the kind's (`attack_norm`).
    """
    minimal = attacks[
        ~attacks["attack_kind"].isin(FIXED_BUDGET_KINDS) & ~attacks["attack"].isin(list(outside))
    ]
    derived = []
    for norm, group in minimal.groupby(minimal["attack_kind"].map(attack_norm), sort=False):
        if group["attack"].nunique() < 2:
            continue
        value = pd.Series(stats.encoded_distortion(group, norm), index=group.index)
        keys = [group["condition"], *(group[k] for k in _ROW_KEYS)]
        best = group.loc[value.groupby(keys, dropna=False).idxmin()]
        derived.append(best.assign(attack=best_of(norm), attack_kind=best_of(norm)))
    return pd.concat([attacks, *derived], ignore_index=True) if derived else attacks


def best_of_wins(
    attacks: pd.DataFrame, best: str, order: list[str], outside: Sequence[str] = ()
) -> pd.DataFrame:
    """Each member attack's share of the digits it won in the ensemble `best` ('best-l2'):
    (seed, digit) rows where it found the smallest distortion, over rows some attack fooled
    (ties count for every attack that reached the minimum); `outside` are not members."""
    norm = attack_norm(best)
    members = attacks[
        ~attacks["attack_kind"].isin(FIXED_BUDGET_KINDS)
        & (attacks["attack_kind"].map(attack_norm) == norm)
        & (attacks["attack"] != best)
        & ~attacks["attack"].isin(list(outside))
    ].copy()
    members["_value"] = stats.encoded_distortion(members, norm)
    keys = ["condition", *_ROW_KEYS]
    low = members.groupby(keys, dropna=False)["_value"].transform("min")
    members["_won"] = (members["_value"] == low) & np.isfinite(low) & (low > 0)
    members["_decided"] = np.isfinite(low) & (low > 0)
    out = []
    for condition in order:
        mine = members[members["condition"] == condition]
        for attack, rows in mine.groupby("attack", sort=False):
            decided = int(rows["_decided"].sum())
            won = int(rows["_won"].sum())
            out.append([condition, attack, won, decided, won / decided if decided else np.nan])
    return pd.DataFrame(out, columns=["condition", "attack", "wins", "fooled_rows", "share"])


def accuracy_table(
    accuracy: pd.DataFrame, order: list[str], seeds: dict[str, int] | None = None
) -> pd.DataFrame:
    """Val/test accuracy mean and sd over finished seeds per (condition, kind, role), with the
    seeds the manifest asks of each condition (`seeds`; default: the runs in the store)."""
    rank = {c: i for i, c in enumerate(order)}
    rows = []
    for (condition, kind, role), group in accuracy.groupby(["condition", "kind", "role"]):
        done = group[group["status"] == Status.FINISHED]
        rows.append(
            {
                "condition": condition,
                "kind": kind,
                "role": role,
                "seeds_finished": len(done),
                "seeds_total": (seeds or {}).get(condition, len(group)),
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
    """Mean test accuracy over finished seeds of the model under attack, per report label
    (a condition, or `condition/teacher` for an attacked teacher)."""
    done = accuracy[accuracy["status"] == Status.FINISHED]
    label = pd.Series(
        [model_label(c, r) for c, r in zip(done["condition"], done["role"], strict=True)],
        index=done.index,
        dtype=object,
    )
    return done.groupby(label)["test_acc"].mean()


def no_verdict(data: ReportData, attacked: pd.Series) -> dict[str, str]:
    """Conditions that get no robustness verdict, with the reason: a run of the model under
    attack that did not finish (its `suite.error` when recorded), or a mean clean test accuracy
    (`attacked`: `attacked_accuracy(data.accuracy)`) below the condition's floor. A comparison
    whose baseline is listed gets none either."""
    reasons: dict[str, str] = {}
    acc = data.accuracy
    for row in acc[
        (acc["status"] != Status.FINISHED) & acc["role"].isin(schema.ATTACKED_ROLES)
    ].itertuples():
        error = getattr(row, "error", "") or ""
        reasons.setdefault(
            row.condition, f"seed {row.seed} {row.status}" + (f": {error}" if error else "")
        )
    for condition, mean in attacked.items():
        floor = data.floors.get(condition.split("/")[0])
        if floor is not None and condition not in reasons and mean < floor:
            reasons[condition] = (
                f"clean test accuracy {100 * mean:.1f}% is below the floor {100 * floor:g}%"
            )
    return reasons


def success_table(rows: pd.DataFrame, order: list[str], alpha: float, seed: int) -> pd.DataFrame:
    """Success rate over clean-correct (seed, digit) rows per condition; the CI resamples seeds,
    then digits within seed, widened to at least the Wilson interval of the pooled count (a
    bootstrap of an all-success sample collapses to [100, 100]); `per_seed` lists each seed's
    own rate."""
    out = []
    for condition in order:
        mine = rows[(rows["condition"] == condition) & rows["clean_correct"].astype(bool)]
        if mine.empty:
            continue
        groups = [g["success"].to_numpy(dtype=float) for _, g in mine.groupby("seed")]
        lo, hi = stats.two_level_bootstrap_ci(groups, np.nanmean, alpha=alpha, seed=seed)
        k, n = int(mine["success"].astype(bool).sum()), len(mine)
        wilson = binomtest(k, n).proportion_ci(1 - alpha, method="wilson")
        lo, hi = min(lo, wilson.low), max(hi, wilson.high)
        out.append([condition, n, k, k / n, lo, hi, [float(g.mean()) for g in groups]])
    columns = ["condition", "n", "successes", "rate", "rate_lo", "rate_hi", "per_seed"]
    return pd.DataFrame(out, columns=columns)


def distortion_table(rows: pd.DataFrame, order: list[str], alpha: float, seed: int) -> pd.DataFrame:
    """Per condition and norm: the median over ALL attacked (seed, digit) rows (0 if misclassified
    clean, ∞ if the attack failed) and the median and mean over successes, each with a two-level
    (seeds, then digits) bootstrap CI; `per_seed` lists each seed's all-digit median."""
    out = []
    for condition in order:
        mine = rows[rows["condition"] == condition]
        if mine.empty:
            continue
        for norm in NORMS:
            encoded = stats.encoded_distortion(mine, norm)
            by_seed = [
                encoded[(mine["seed"] == s).to_numpy()] for s in sorted(mine["seed"].unique())
            ]
            fooled = [np.where(np.isfinite(v) & (v > 0), v, np.nan) for v in by_seed]
            values = np.concatenate(fooled)
            values = values[~np.isnan(values)]
            ci = [
                stats.two_level_bootstrap_ci(g, f, alpha=alpha, seed=seed)
                for g, f in ((by_seed, np.nanmedian), (fooled, np.nanmedian), (fooled, np.nanmean))
            ]
            out.append(
                [
                    condition,
                    norm,
                    np.median(encoded),
                    *ci[0],
                    [float(np.median(v)) for v in by_seed],
                ]
                + [values.size, np.median(values) if values.size else np.nan, *ci[1]]
                + [values.mean() if values.size else np.nan, *ci[2]]
            )
    columns = ["condition", "norm", "median_all", "median_all_lo", "median_all_hi", "per_seed"]
    columns += ["n", "median", "median_lo", "median_hi", "mean", "mean_lo", "mean_hi"]
    return pd.DataFrame(out, columns=columns)


SEED_COLUMNS = [
    "k", "seed_p", "i2", "tau", "agree", "seed_est", "seed_lo", "seed_hi", "seed_lo_tost",
    "seed_hi_tost", "why", "digit_ratio", "digit_ratio_lo", "digit_ratio_hi", "digit_p",
]  # fmt: skip
"""Columns of a pooled minimal-attack row beyond `stats.PairedResult`: its seed-level pooling
(`stats.SeedPooled`, log scale) and the digit-level estimate it replaces in ratio/ratio_lo/
ratio_hi/p."""


FIXED_COLUMNS = ["eps", "robust_base", "robust_other", "diff", "diff_lo", "diff_hi"]
"""Columns of a fixed-budget row: its ε, both models' robust accuracy over the paired rows, and
their difference (other − baseline) with a two-level bootstrap interval (seeds, then digits)."""


def comparisons(
    attacks: pd.DataFrame,
    baselines: dict[str, str],
    blocked: dict[str, str],
    alpha: float,
    seed: int,
    primary: str | None = None,
    margin: float = 0.9,
    budgets: dict[str, list[float]] | None = None,
    unsound: dict[tuple[str, str], str] | None = None,
) -> pd.DataFrame:
    """Every condition against its own baseline, per attack (fixed-budget attacks: per ε of their
    grid) and digit subset, pooled over seeds and per seed.

    Pairs are the same (seed, digit) under both models. Minimal attacks: `paired_comparison`
    on the log distortion ratios, per seed; the pooled row pools the per-seed Hodges–Lehmann
    estimates with seeds as the unit (`stats.seed_pooled`), its ratio and interval being that
    pooling's (the digit-level pooled estimate is kept as `digit_ratio*`). Fixed-budget attacks,
    at each ε of `budgets` (else of their rows): `mcnemar_comparison` on robustness over every
    (seed, digit) pair, and the robust-accuracy difference with its seed-level interval
    (FIXED_COLUMNS). Subsets: every attacked digit, and the digits both models classified
    correctly when clean.
    Only the primary endpoint (`primary`, all digits, pooled) gives verdicts: Holm adjusts within
    that family, and `stats.primary_verdict` words it (more robust, less robust, equivalent inside
    [margin, 1/margin], inconclusive). Every other pooled row is "secondary" (its estimate and
    unadjusted p, no verdict); "not testable at ε" where both models are at 0% or 100% robust
    accuracy or every pair ties; "not used: …" where `unsound` gives the (attack, condition) a
    reason (`suite.report.soundness`). `attacks` holds the best-of attacks too (`with_best_of`);
    conditions in `blocked` (`no_verdict`), or whose baseline is, are tested but get no verdict.
    """
    budgets, unsound = budgets or {}, unsound or {}
    rows: list[dict] = []
    levels: list[stats.SeedPooled | None] = []  # beside each row: its seed-level pooling, if any
    for attack, kind in attack_kinds(attacks).items():
        mine = attacks[attacks["attack"] == attack]
        fixed = is_fixed_budget(mine)
        value = "fooled" if fixed else attack_norm(kind, mine)
        grid = (budgets.get(attack) or sorted(mine["eps"].dropna().unique())) if fixed else [None]
        for eps in grid:
            valued = mine.assign(
                _v=stats.fooled(mine, eps) if fixed else stats.encoded_distortion(mine, value)
            )
            head = {"attack": attack, "norm": value, "eps": np.nan if eps is None else eps}
            for condition, baseline in baselines.items():
                pairs = _pairs(valued, baseline, condition)
                if pairs.empty:
                    continue
                for subset in SUBSETS:
                    chosen = pairs if subset == SUBSETS[0] else pairs[pairs["both_correct"]]
                    found = _subset_rows(
                        chosen, fixed, head | {"condition": condition, "baseline": baseline,
                                               "subset": subset}, alpha, seed
                    )  # fmt: skip
                    rows += found[0]
                    levels += found[1]
    columns = ["attack", "norm", "eps", "condition", "baseline", "subset", "scope"]
    columns += list(stats.PairedResult.__dataclass_fields__) + FIXED_COLUMNS[1:] + SEED_COLUMNS
    table = pd.DataFrame(rows, columns=columns)
    reasons = [
        blocked.get(c) or _baseline_reason(blocked.get(b), b)
        for c, b in zip(table["condition"], table["baseline"], strict=True)
    ]
    unused = [
        unsound.get((a, c), "") for a, c in zip(table["attack"], table["condition"], strict=True)
    ]
    is_pooled = table["scope"] == "pooled"
    family = (
        is_pooled
        & (table["subset"] == SUBSETS[0])
        & (table["attack"] == primary)
        & pd.Series([r is None and not u for r, u in zip(reasons, unused, strict=True)],
                    index=table.index, dtype=bool)
    )  # fmt: skip
    table["p_adj"] = np.nan
    table.loc[family, "p_adj"] = stats.holm_bonferroni(table.loc[family, "p"].to_numpy())
    table["verdict"] = [
        _verdict(table.loc[i], level, reason or unused[i] or None, bool(family[i]), margin, alpha)
        for i, level, reason in zip(table.index, levels, reasons, strict=True)
    ]
    table["seeds"] = [
        "" if level is None or not _has_verdict(v) else _heterogeneity(level)
        for level, v in zip(levels, table["verdict"], strict=True)
    ]
    return table


def _subset_rows(
    chosen: pd.DataFrame, fixed: bool, head: dict[str, object], alpha: float, seed: int
) -> tuple[list[dict], list[stats.SeedPooled | None]]:
    """The pooled row and the per-seed rows of one (attack, ε, condition, subset), each with its
    seed-level pooling (None where there is none); nothing where no pair remains."""
    per_seed = []
    for s, g in chosen.groupby("seed"):
        result = _compare(g, fixed, alpha, seed)
        if result.n_pairs:
            per_seed.append(head | {"scope": f"seed {s}"} | vars(result) | _robust(g, fixed))
    result = _compare(chosen, fixed, alpha, seed)
    if result.n_pairs == 0:
        return [], []
    pooled = head | {"scope": "pooled"} | vars(result) | _robust(chosen, fixed, alpha, seed)
    level = None if fixed else _seed_level(per_seed, alpha)
    if level is not None:
        pooled |= _level_columns(level)
        if np.isfinite(level.estimate):  # seeds as the unit: their interval
            pooled |= {f"digit_{k}": pooled[k] for k in ("ratio", "ratio_lo", "ratio_hi", "p")}
            pooled |= {
                "ratio": float(np.exp(level.estimate)),
                "ratio_lo": float(np.exp(level.lo)),
                "ratio_hi": float(np.exp(level.hi)),
                "p": level.p,
            }
    return [pooled, *per_seed], [level] + [None] * len(per_seed)


def _robust(
    pairs: pd.DataFrame, fixed: bool, alpha: float | None = None, seed: int = 0
) -> dict[str, float]:
    """A fixed-budget row's robust accuracies and their difference (the interval only for a pooled
    row, `alpha` given); nothing for a minimal attack."""
    if not fixed:
        return {}
    b, o = pairs["_v_base"].to_numpy(float), pairs["_v_other"].to_numpy(float)
    out = {"robust_base": float(1 - b.mean()), "robust_other": float(1 - o.mean())}
    if alpha is None:
        return out | {"diff": out["robust_other"] - out["robust_base"]}
    diff, lo, hi = stats.robust_difference(b, o, pairs["seed"].to_numpy(), alpha, seed)
    return out | {"diff": diff, "diff_lo": lo, "diff_hi": hi}


def _seed_level(per_seed: list[dict], alpha: float) -> stats.SeedPooled:
    """A pooled row's seeds as the unit: the per-seed Hodges–Lehmann log ratios and their standard
    errors (from their (1 − α) intervals) pooled by `stats.seed_pooled`."""
    ratio = np.array([r["ratio"] for r in per_seed], dtype=float)
    lo = np.array([r["ratio_lo"] for r in per_seed], dtype=float)
    hi = np.array([r["ratio_hi"] for r in per_seed], dtype=float)
    z = float(normal.ppf(1 - alpha / 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        return stats.seed_pooled(np.log(ratio), (np.log(hi) - np.log(lo)) / (2 * z), alpha)


def _level_columns(level: stats.SeedPooled) -> dict[str, object]:
    """A seed-level pooling as the comparisons table's SEED_COLUMNS (log scale)."""
    return {
        "k": level.k,
        "seed_p": level.p,
        "i2": level.i2,
        "tau": level.tau,
        "agree": level.agree,
        "seed_est": level.estimate,
        "seed_lo_tost": level.lo_tost,
        "seed_hi_tost": level.hi_tost,
        "seed_lo": level.lo,
        "seed_hi": level.hi,
        "why": level.why,
    }


def _verdict(
    row: pd.Series,
    level: stats.SeedPooled | None,
    reason: str | None,
    primary: bool,
    margin: float,
    alpha: float,
) -> str:
    if reason and reason.startswith("not used"):
        return reason if row["scope"] == "pooled" else ""
    if reason:
        return f"no verdict: {reason}"
    if row["scope"] != "pooled":
        return ""
    if row["test"] == "mcnemar":
        at = f"not testable at ε {row['eps']:g}"
        for value in (0.0, 1.0):
            if row["robust_base"] == value and row["robust_other"] == value:
                return f"{at}: both models at {100 * value:.0f}% robust accuracy"
        if row["n_other_larger"] == 0 and row["n_base_larger"] == 0:
            return f"{at}: every pair ties"
    if not primary:
        return "secondary"
    if level is None:
        return "inconclusive (a fixed-budget primary endpoint has no seed-level pooling)"
    return stats.primary_verdict(level, row["p_adj"], margin, alpha)


def _has_verdict(verdict: str) -> bool:
    """Whether a row's verdict is a statement about the data (its heterogeneity is shown)."""
    return not verdict.startswith(("no verdict", "not used", "not testable"))


def _heterogeneity(level: stats.SeedPooled) -> str:
    """A pooled minimal-attack row's between-seed spread: I², τ and the seeds on its side."""
    if np.isnan(level.estimate):
        return ""
    side = f"{level.agree} of {level.k} seeds on the estimate's side"
    if np.isnan(level.i2):
        return f"{side} (heterogeneity not estimable: a seed's interval is unbounded)"
    return f"I² {level.i2:.0%}, τ {level.tau:.3f}; {side}"


def _baseline_reason(reason: str | None, baseline: str) -> str | None:
    return f"its baseline {baseline} has none ({reason})" if reason else None


def _pairs(rows: pd.DataFrame, baseline: str, condition: str) -> pd.DataFrame:
    """Baseline and condition values side by side per (seed, digit), with `both_correct`."""
    cols = [*_ROW_KEYS, "_v", "clean_correct"]
    base = rows.loc[rows["condition"] == baseline, cols]
    other = rows.loc[rows["condition"] == condition, cols]
    pairs = base.merge(other, on=_ROW_KEYS, suffixes=("_base", "_other"))
    pairs["both_correct"] = pairs["clean_correct_base"].astype(bool) & pairs[
        "clean_correct_other"
    ].astype(bool)
    return pairs


def _compare(pairs: pd.DataFrame, fixed: bool, alpha: float, seed: int) -> stats.PairedResult:
    """McNemar on robustness over the (seed, digit) pairs (fixed budget); else the Wilcoxon on
    log ratios, one value per digit (the median of its per-seed log ratios)."""
    if fixed:
        b, o = pairs["_v_base"].to_numpy(), pairs["_v_other"].to_numpy()
        return stats.mcnemar_comparison(b, o, alpha=alpha, seed=seed)
    digit = pairs.groupby(stats.PAIR_KEYS, dropna=False).ngroup().to_numpy()  # target may be NaN
    d = stats.log_ratios(pairs["_v_base"].to_numpy(), pairs["_v_other"].to_numpy())
    return stats.paired_comparison(stats.pooled_log_ratios(d, digit), alpha)


def summary_table(
    successes: pd.DataFrame,
    distortions: pd.DataFrame,
    compared: pd.DataFrame,
    accuracy: pd.Series,
    norm: str,
    baselines: dict[str, str],
) -> pd.DataFrame:
    """One attack at a glance per condition: its baseline, accuracy, success rate, median
    distortion over all digits (with per-seed medians), and the pooled comparisons on all
    digits and on both-correct digits; `compared` holds the attack's rows of `comparisons`."""
    rows = []
    for _, s in successes.iterrows():
        condition = s["condition"]
        d = distortions[(distortions["condition"] == condition) & (distortions["norm"] == norm)]
        row = {
            "condition": condition,
            "baseline": baselines.get(condition, ""),
            "test_acc": accuracy.get(condition, np.nan),
            "success_rate": s["rate"],
            "success_lo": s["rate_lo"],
            "success_hi": s["rate_hi"],
            "norm": norm,
        }
        for key in ("median_all", "median_all_lo", "median_all_hi", "per_seed"):
            row[key] = d[key].iloc[0] if len(d) else np.nan
        for subset, prefix in zip(SUBSETS, ("", "correct_"), strict=True):
            c = compared[
                (compared["condition"] == condition)
                & (compared["scope"] == "pooled")
                & (compared["subset"] == subset)
            ].sort_values("eps")  # a fixed-budget attack: its smallest ε (all are in comparisons)
            for key in ("ratio", "ratio_lo", "ratio_hi", "p_adj", "verdict", "seeds"):
                row[prefix + key] = c[key].iloc[0] if len(c) else np.nan
        if not isinstance(row["verdict"], str):
            row["verdict"] = (
                "baseline"
                if condition in baselines.values()
                else "not compared (no baseline or no paired digits)"
            )
        rows.append(row)
    return pd.DataFrame(rows)


def split_transfer(attacks: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(direct, transfer): the rows of attacks that name a `source` condition go to the transfer
    matrix only; paired comparisons, figures and the conclusion read the direct attacks."""
    if "source" not in attacks:
        return attacks, attacks.iloc[0:0]
    transfer_names = set(attacks.loc[attacks["source"].notna(), "attack"])
    is_transfer = attacks["attack"].isin(transfer_names)
    return attacks[~is_transfer], attacks[is_transfer]


def transfer_matrix(transfer: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Source model × target model (C&W 2017 §VIII): per transfer attack and target condition, the
    share of the target's clean-correct (seed, digit) rows the source's adversarials fool, pooled
    over seeds; where the attack minimises a norm, also those rescaled to the target's own median
    distortion. The source's own cell is the direct attack."""
    out = []
    for attack, rows in transfer.groupby("attack", sort=False):
        row = {"attack": attack, "source": str(rows["source"].dropna().iloc[0])}
        for condition in order:
            mine = rows[rows["condition"] == condition]
            correct = mine["clean_correct"].to_numpy(bool)
            if not correct.any():
                row[condition] = "—"
                continue
            cell = pct(mine["success"].to_numpy(bool)[correct].mean())
            if "success_scaled" in mine and mine["success_scaled"].notna().any():
                scaled = mine["success_scaled"].fillna(False).to_numpy(bool)[correct].mean()
                cell += f" ({pct(scaled)})"
            row[condition] = cell
        out.append(row)
    return pd.DataFrame(out, columns=["attack", "source", *order])


PRIMARY_COLUMNS = [
    "condition", "baseline", "test_acc", "attacked_correct", "attacked_rows", "seeds_k", "ratio",
    "ratio_lo", "ratio_hi", "p_adj", "verdict", "heterogeneity", "per_seed",
]  # fmt: skip


def primary_table(
    compared: pd.DataFrame, primary: str | None, attacked: pd.Series, attacks: pd.DataFrame
) -> pd.DataFrame:
    """The answer's table: per compared model, its clean test accuracy (`attacked_accuracy`: the
    whole test split, mean over seeds), the share of its attacked (seed, digit) rows classified
    correctly clean (with that denominator), and the primary endpoint's pooled all-digit effect
    with its seed-level interval, adjusted p, verdict and heterogeneity; `per_seed` lists each
    seed's own ratio (for the figure)."""
    rows = compared[(compared["attack"] == primary) & (compared["subset"] == SUBSETS[0])]
    mine = attacks[attacks["attack"] == primary]
    out = []
    for r in rows[rows["scope"] == "pooled"].itertuples():
        seeds = rows[(rows["condition"] == r.condition) & (rows["scope"] != "pooled")]
        attacked_rows = mine[mine["condition"] == r.condition]
        out.append(
            [r.condition, r.baseline, attacked.get(r.condition, np.nan),
             attacked_rows["clean_correct"].astype(bool).mean(), len(attacked_rows),
             int(r.k) if pd.notna(r.k) else seeds["scope"].nunique(), r.ratio, r.ratio_lo,
             r.ratio_hi, r.p_adj, r.verdict, r.seeds, seeds["ratio"].astype(float).tolist()]
        )  # fmt: skip
    return pd.DataFrame(out, columns=PRIMARY_COLUMNS)
