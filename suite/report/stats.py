"""Statistics for the report: confidence intervals, paired tests against the baseline, Holm.

Pure functions: arrays (or the tidy attack frame) in, numbers out. Per-sample distortions use
one encoding throughout: the distortion where the attack succeeded, +inf where it failed on a
clean-correct sample (no adversarial example found), NaN where the sample does not count
(misclassified clean, or not attacked).
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from suite.report.frames import NORMS

_BOOTSTRAP_CELLS = 2_000_000


def wilson_interval(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (nan, nan) when n == 0."""
    if n == 0:
        return float("nan"), float("nan")
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(1 - alpha, method="wilson")
    return float(ci.low), float(ci.high)


def bootstrap_ci(
    values: np.ndarray,
    statistic: Callable[..., np.ndarray] = np.median,
    n_resamples: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI of `statistic` (called with `axis=1`); NaNs are dropped first.

    The same seed gives the same interval; (nan, nan) when no value remains. +inf values are
    kept (order statistics of them are well defined).
    """
    x = np.asarray(values, dtype=float).ravel()
    x = x[~np.isnan(x)]
    if x.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    batch = max(1, _BOOTSTRAP_CELLS // x.size)  # resamples drawn at once, to bound memory
    reps = []
    for start in range(0, n_resamples, batch):
        idx = rng.integers(0, x.size, size=(min(batch, n_resamples - start), x.size))
        reps.append(statistic(x[idx], axis=1))
    reps = np.concatenate(reps)
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2], method="inverted_cdf")
    return float(lo), float(hi)


@dataclass(frozen=True)
class PairedResult:
    """One condition against the baseline on the same samples.

    Field meanings: `paired_comparison` (minimal-perturbation attacks) and
    `mcnemar_comparison` (fixed-budget attacks). "Failed" always means the attack failed.
    """

    n_pairs: int
    n_both_success: int
    n_only_base_failed: int
    n_only_other_failed: int
    n_both_failed: int
    median_ratio: float
    ratio_ci: tuple[float, float]
    wilcoxon_statistic: float
    wilcoxon_p: float
    rank_biserial: float
    n_other_larger: int
    n_base_larger: int
    sign_test_p: float
    test: str
    p: float


def paired_comparison(
    base: np.ndarray,
    other: np.ndarray,
    *,
    alpha: float = 0.05,
    seed: int = 0,
    n_resamples: int = 2000,
) -> PairedResult:
    """Compare per-sample distortions of `other` with `base`, position i being the same image.

    Failure policy. A pair counts when neither value is NaN. A failed attack (+inf) means no
    adversarial example was found: the model is at least as robust there as anywhere else.
    - Sign test (exact binomial): other > base vs other < base over all counted pairs, a failure
      ranking above every distortion; ties (including both failed) are dropped.
    - Wilcoxon signed-rank (scipy, two-sided, zero differences dropped) and its matched-pairs
      rank-biserial r = (T+ - T-) / (T+ + T-) only on pairs where both attacks succeeded;
      r > 0 means `other` needs larger perturbations.
    - Ratio other/base per pair where at least one succeeded: inf when only `other` failed,
      0 when only `base` failed; its median with a percentile bootstrap CI.
    `p` is the Wilcoxon p when no pair has exactly one failure, otherwise the sign-test p,
    because the Wilcoxon would then drop exactly the samples where the models differ most.
    """
    b = np.asarray(base, dtype=float).ravel()
    o = np.asarray(other, dtype=float).ravel()
    if b.shape != o.shape:
        raise ValueError(f"base and other must pair one to one, got {b.size} and {o.size} values")
    counted = ~np.isnan(b) & ~np.isnan(o)
    b, o = b[counted], o[counted]
    b_failed, o_failed = np.isposinf(b), np.isposinf(o)
    both_ok = ~b_failed & ~o_failed
    only_b, only_o = b_failed & ~o_failed, o_failed & ~b_failed

    one_ok = ~(b_failed & o_failed)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(only_o, np.inf, np.where(only_b, 0.0, o / b))[one_ok]
    ratio = ratio[~np.isnan(ratio)]
    median_ratio = float(np.median(ratio)) if ratio.size else float("nan")
    ratio_ci = bootstrap_ci(ratio, np.median, n_resamples=n_resamples, alpha=alpha, seed=seed)

    w_stat, w_p, r_rb = _wilcoxon(o[both_ok] - b[both_ok])

    n_other_larger = int(np.sum(o > b))
    n_base_larger = int(np.sum(o < b))
    n_sign = n_other_larger + n_base_larger
    sign_p = float(stats.binomtest(n_other_larger, n_sign).pvalue) if n_sign else float("nan")

    use_sign = bool(only_b.any() or only_o.any())
    return PairedResult(
        n_pairs=int(b.size),
        n_both_success=int(both_ok.sum()),
        n_only_base_failed=int(only_b.sum()),
        n_only_other_failed=int(only_o.sum()),
        n_both_failed=int((b_failed & o_failed).sum()),
        median_ratio=median_ratio,
        ratio_ci=ratio_ci,
        wilcoxon_statistic=w_stat,
        wilcoxon_p=w_p,
        rank_biserial=r_rb,
        n_other_larger=n_other_larger,
        n_base_larger=n_base_larger,
        sign_test_p=sign_p,
        test="sign" if use_sign else "wilcoxon",
        p=sign_p if use_sign else w_p,
    )


def mcnemar_comparison(
    base_fooled: np.ndarray,
    other_fooled: np.ndarray,
    *,
    alpha: float = 0.05,
    seed: int = 0,
    n_resamples: int = 2000,
) -> PairedResult:
    """Fixed-budget attacks: exact McNemar test on per-sample success (1 fooled, 0 not, NaN out).

    Distortions at a fixed ε are not minimal, so only success is compared. `median_ratio` here
    is the robust-accuracy ratio other/base (fraction not fooled) with a paired percentile
    bootstrap CI; the Wilcoxon fields are NaN; `p` is the McNemar p. A seed-pooled value of
    0.5 (fooled on half the seeds) counts as not fooled, as a seed-pooled +inf distortion
    counts as a failure in `paired_comparison`.
    """
    b = np.asarray(base_fooled, dtype=float).ravel()
    o = np.asarray(other_fooled, dtype=float).ravel()
    if b.shape != o.shape:
        raise ValueError(f"base and other must pair one to one, got {b.size} and {o.size} values")
    counted = ~np.isnan(b) & ~np.isnan(o)
    b_robust, o_robust = b[counted] <= 0.5, o[counted] <= 0.5
    only_b = b_robust & ~o_robust
    only_o = o_robust & ~b_robust
    n_disc = int(only_b.sum() + only_o.sum())
    p = float(stats.binomtest(int(only_o.sum()), n_disc).pvalue) if n_disc else float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = float(o_robust.mean() / b_robust.mean()) if counted.any() else float("nan")
    ratio_ci = _paired_ratio_ci(b_robust, o_robust, n_resamples, alpha, seed)
    nan = float("nan")
    return PairedResult(
        n_pairs=int(counted.sum()),
        n_both_success=int((~b_robust & ~o_robust).sum()),
        n_only_base_failed=int(only_b.sum()),
        n_only_other_failed=int(only_o.sum()),
        n_both_failed=int((b_robust & o_robust).sum()),
        median_ratio=ratio,
        ratio_ci=ratio_ci,
        wilcoxon_statistic=nan,
        wilcoxon_p=nan,
        rank_biserial=nan,
        n_other_larger=int(only_o.sum()),
        n_base_larger=int(only_b.sum()),
        sign_test_p=p,
        test="mcnemar",
        p=p,
    )


def _paired_ratio_ci(
    base: np.ndarray, other: np.ndarray, n_resamples: int, alpha: float, seed: int
) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(other) / mean(base), resampling pairs."""
    if base.size == 0:
        return float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, base.size, size=(n_resamples, base.size))
    with np.errstate(divide="ignore", invalid="ignore"):
        reps = other[idx].mean(axis=1) / base[idx].mean(axis=1)
    reps = reps[~np.isnan(reps)]
    if reps.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2], method="inverted_cdf")
    return float(lo), float(hi)


def _wilcoxon(diff: np.ndarray) -> tuple[float, float, float]:
    """Wilcoxon signed-rank statistic, two-sided p and matched-pairs rank-biserial r."""
    nonzero = diff[diff != 0]
    if nonzero.size == 0:
        return float("nan"), float("nan"), float("nan")
    ranks = stats.rankdata(np.abs(nonzero))
    t_plus, t_minus = ranks[nonzero > 0].sum(), ranks[nonzero < 0].sum()
    res = stats.wilcoxon(diff, zero_method="wilcox", alternative="two-sided")
    return float(res.statistic), float(res.pvalue), float((t_plus - t_minus) / (t_plus + t_minus))


def holm_bonferroni(pvalues: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values: monotone in the raw p, capped at 1; NaN stays NaN."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    tested = ~np.isnan(p)
    q = p[tested]
    order = np.argsort(q, kind="stable")
    steps = np.arange(q.size, 0, -1)
    adjusted = np.empty_like(q)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(steps * q[order]))
    out[tested] = adjusted
    return out


def verdict(adjusted_p: float, median_ratio: float, alpha: float = 0.05) -> str:
    """Direction of a significant difference from the median ratio other/base, else none."""
    if adjusted_p < alpha and median_ratio > 1:
        return "more robust"
    if adjusted_p < alpha and median_ratio < 1:
        return "less robust"
    return f"no significant difference at α = {alpha:g}"


def encoded_distortion(rows: pd.DataFrame, norm: str) -> np.ndarray:
    """Per-row distortion in the module's encoding (value / +inf failed / NaN not counted)."""
    value = rows[norm].to_numpy(dtype=float)
    clean_correct = rows["clean_correct"].to_numpy(dtype=bool)
    success = rows["success"].to_numpy(dtype=bool)
    return np.where(~clean_correct, np.nan, np.where(success, value, np.inf))


def pool_over_seeds(attacks: pd.DataFrame) -> pd.DataFrame:
    """Median over seeds of each encoded norm per (condition, attack, sample_index).

    One row per image, so a pooled paired test does not count seeds as extra samples; a sample
    whose attack failed on half the seeds or more pools to +inf, one never counted to NaN.
    Also pools `fooled` (1 success, 0 failure) the same way, for fixed-budget attacks.
    """
    keys = ["condition", "attack", "sample_index"]
    encoded = attacks[keys].copy()
    for norm in NORMS:
        encoded[norm] = encoded_distortion(attacks, norm)
    encoded["fooled"] = fooled(attacks)
    grouped = encoded.groupby(keys, sort=True)
    pooled = grouped[[*NORMS, "fooled"]].median()
    pooled["n_seeds"] = attacks.groupby(keys, sort=True)["seed"].nunique()
    return pooled.reset_index()


def fooled(rows: pd.DataFrame) -> np.ndarray:
    """Per row 1.0 where the attack succeeded, 0.0 where it failed, NaN if misclassified clean."""
    clean_correct = rows["clean_correct"].to_numpy(dtype=bool)
    success = rows["success"].to_numpy(dtype=bool)
    return np.where(clean_correct, success.astype(float), np.nan)


def paired_vectors(
    rows: pd.DataFrame, baseline: str, condition: str, value: str
) -> tuple[np.ndarray, np.ndarray]:
    """`value` of `baseline` and of `condition` aligned by sample_index (one row per sample)."""
    wide = rows.pivot(index="sample_index", columns="condition", values=value)
    if baseline not in wide or condition not in wide:
        return np.empty(0), np.empty(0)
    return wide[baseline].to_numpy(dtype=float), wide[condition].to_numpy(dtype=float)
