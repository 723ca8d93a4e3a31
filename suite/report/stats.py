"""Statistics for the report: paired tests against a baseline, effect estimates, intervals, Holm.

Pure functions: arrays (or the tidy attack frame) in, numbers out. Per-row distortions use one
encoding throughout (`encoded_distortion`): the distortion where the attack succeeded, 0 where
the model already misclassified the clean digit (it is adversarial as it stands), +inf where the
attack failed (no adversarial example found), NaN only where a value is missing.

A comparison of a condition with its baseline works on per-pair log ratios
d = log(other / baseline), pairs being the same digit under the same training seed:
- a failure is +inf, so d = +inf when only `other` resisted and -inf when only the baseline did;
- a clean-misclassified digit is 0, so d = -inf when only `other` misclassified it and +inf when
  only the baseline did (log 0 = -inf);
- both failed, or both misclassified: 0/0 and inf/inf are ties, d = 0.
So infinities are the most extreme pairs, with their sign, and tie among themselves: the
Wilcoxon signed-rank test and the Hodges–Lehmann estimate then work on ranks and order
statistics, which infinities do not break.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from suite.attacks import NORM_TOLERANCE

_BOOTSTRAP_CELLS = 2_000_000
PAIR_KEYS = ["sample_index", "target"]


def log_ratios(base: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Per pair log(other / base) under the module's rules (0/0 and inf/inf are 0; NaN stays)."""
    b = np.asarray(base, dtype=float)
    o = np.asarray(other, dtype=float)
    if b.shape != o.shape:
        raise ValueError(f"base and other must pair one to one, got {b.size} and {o.size} values")
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.log(o / b)  # o / b exactly, so equal integer ratios (L0) tie exactly
    tie = ((b == 0) & (o == 0)) | (np.isposinf(b) & np.isposinf(o))
    return np.where(tie, 0.0, d)


def pooled_log_ratios(d: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """One value per digit: the median over seeds of its per-seed log ratios (NaNs skipped).

    Seeds replicate the training, not the digits, so a pooled test must not count them as extra
    pairs. A median of +inf and -inf is a tie (0).
    """
    frame = pd.DataFrame({"g": groups, "d": np.asarray(d, dtype=float)}).dropna()
    with np.errstate(invalid="ignore"):
        return frame.groupby("g", sort=True)["d"].median().fillna(0.0).to_numpy(dtype=float)


def _finite_augmented(d: np.ndarray) -> tuple[np.ndarray, float]:
    """±inf replaced by ±(4F + 4), F = the largest finite |d|: above every finite value, so
    ranks and order statistics are unchanged; returns the values and F."""
    finite = np.abs(d[np.isfinite(d)])
    top = float(finite.max()) if finite.size else 0.0
    return np.where(np.isinf(d), np.sign(d) * (4 * top + 4), d), top


def signed_rank(d: np.ndarray) -> tuple[float, float, float]:
    """Wilcoxon signed-rank test of the log ratios: statistic, two-sided p, rank-biserial r.

    Zero differences (ties) are dropped (scipy's `zero_method="wilcox"`); ties among |d| get
    mid-ranks with the tie-corrected normal approximation where scipy uses it.
    r = (T+ - T-) / (T+ + T-) on the same ranks, so its sign is the side the test measures:
    r > 0 means `other` needs larger perturbations. NaNs when every pair is a tie.
    """
    x, _ = _finite_augmented(np.asarray(d, dtype=float))
    nonzero = x[x != 0]
    if nonzero.size == 0:
        return float("nan"), float("nan"), float("nan")
    ranks = stats.rankdata(np.abs(nonzero))
    t_plus, t_minus = ranks[nonzero > 0].sum(), ranks[nonzero < 0].sum()
    res = stats.wilcoxon(nonzero, zero_method="wilcox", alternative="two-sided")
    return float(res.statistic), float(res.pvalue), float((t_plus - t_minus) / (t_plus + t_minus))


def hodges_lehmann(d: np.ndarray, alpha: float = 0.05) -> tuple[float, float, float]:
    """Hodges–Lehmann estimate of the log ratio with its distribution-free CI.

    The estimate is the median of the Walsh averages (d_i + d_j) / 2, i <= j; the CI is the
    pair of Walsh averages at the Wilcoxon critical ranks (normal approximation). Infinities are
    finite-augmented first; a Walsh average that involved one maps back to ±inf (+inf with
    -inf is a tie, 0). NaNs when there is no pair.
    """
    x, top = _finite_augmented(np.asarray(d, dtype=float))
    n = x.size
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    i, j = np.triu_indices(n)
    walsh = np.sort((x[i] + x[j]) / 2)
    m = walsh.size
    z = stats.norm.ppf(1 - alpha / 2)
    k = int(np.floor(m / 2 - z * np.sqrt(n * (n + 1) * (2 * n + 1) / 24)))  # 1-based rank
    k = min(max(k, 1), (m + 1) // 2)
    picked = np.array([np.median(walsh), walsh[k - 1], walsh[m - k]])
    with np.errstate(invalid="ignore"):
        picked = np.where(np.abs(picked) > top, np.sign(picked) * np.inf, picked)
    return float(picked[0]), float(picked[1]), float(picked[2])


@dataclass(frozen=True)
class PairedResult:
    """One condition against its baseline on the same digits.

    `ratio` [`ratio_lo`, `ratio_hi`] is the effect on the ratio scale (other / baseline);
    `effect` is the estimate of what the test tests, its sign the verdict's direction
    (> 0: the condition is harder to attack). Counts are over the pairs tested.
    """

    test: str
    n_pairs: int
    n_other_larger: int
    n_base_larger: int
    n_ties: int
    n_other_infinite: int
    n_base_infinite: int
    ratio: float
    ratio_lo: float
    ratio_hi: float
    statistic: float
    p: float
    effect: float


def paired_comparison(d: np.ndarray, alpha: float = 0.05) -> PairedResult:
    """Minimal-perturbation attacks: Wilcoxon signed-rank on the log ratios `d` (one per pair,
    NaN skipped), the Hodges–Lehmann ratio with its CI, and the rank-biserial r as `effect`.

    The same test for every pair: failures and clean errors are ±inf pairs, never a reason to
    switch tests. The verdict's direction is r's sign (the side the test found); the ratio says
    how large the typical change is, and is 1 when only failures differ.
    """
    x = np.asarray(d, dtype=float)
    x = x[~np.isnan(x)]
    statistic, p, r = signed_rank(x)
    est, lo, hi = hodges_lehmann(x, alpha)
    return PairedResult(
        test="wilcoxon",
        n_pairs=int(x.size),
        n_other_larger=int((x > 0).sum()),
        n_base_larger=int((x < 0).sum()),
        n_ties=int((x == 0).sum()),
        n_other_infinite=int(np.isposinf(x).sum()),
        n_base_infinite=int(np.isneginf(x).sum()),
        ratio=float(np.exp(est)),
        ratio_lo=float(np.exp(lo)),
        ratio_hi=float(np.exp(hi)),
        statistic=statistic,
        p=p,
        effect=r,
    )


def mcnemar_comparison(
    base_fooled: np.ndarray,
    other_fooled: np.ndarray,
    *,
    alpha: float = 0.05,
    seed: int = 0,
    n_resamples: int = 2000,
) -> PairedResult:
    """Fixed-budget attacks: exact McNemar test on per-digit robustness (fooled 1, not 0, NaN
    skipped; a seed-pooled value of 0.5 counts as not fooled).

    `ratio` is the robust-accuracy ratio other / base with a paired percentile bootstrap CI;
    `effect` = (only other robust - only base robust) / discordant pairs, its sign the direction.
    """
    b = np.asarray(base_fooled, dtype=float).ravel()
    o = np.asarray(other_fooled, dtype=float).ravel()
    if b.shape != o.shape:
        raise ValueError(f"base and other must pair one to one, got {b.size} and {o.size} values")
    counted = ~np.isnan(b) & ~np.isnan(o)
    b_robust, o_robust = b[counted] <= 0.5, o[counted] <= 0.5
    n_o, n_b = int((o_robust & ~b_robust).sum()), int((b_robust & ~o_robust).sum())
    n_disc = n_o + n_b
    p = float(stats.binomtest(n_o, n_disc).pvalue) if n_disc else float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = float(o_robust.mean() / b_robust.mean()) if counted.any() else float("nan")
    lo, hi = _paired_ratio_ci(b_robust, o_robust, n_resamples, alpha, seed)
    return PairedResult(
        test="mcnemar",
        n_pairs=int(counted.sum()),
        n_other_larger=n_o,
        n_base_larger=n_b,
        n_ties=int(counted.sum()) - n_disc,
        n_other_infinite=0,
        n_base_infinite=0,
        ratio=ratio,
        ratio_lo=lo,
        ratio_hi=hi,
        statistic=float(n_o),
        p=p,
        effect=(n_o - n_b) / n_disc if n_disc else float("nan"),
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


def two_level_bootstrap_ci(
    groups: list[np.ndarray],
    statistic: Callable[..., np.ndarray] = np.nanmedian,
    n_resamples: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile CI of `statistic` for values nested in groups (digits within training seeds).

    Each resample draws the groups with replacement, then the values within each drawn group
    with replacement, and applies `statistic(matrix, axis=1)` to the pooled draw (NaN-padded,
    so use a NaN-aware statistic). With one group it is the ordinary bootstrap. NaNs in the
    inputs are dropped first; (nan, nan) when nothing remains. Same seed, same interval.
    """
    kept = [np.asarray(g, dtype=float) for g in groups]
    kept = [g[~np.isnan(g)] for g in kept]
    kept = [g for g in kept if g.size]
    if not kept:
        return float("nan"), float("nan")
    sizes = np.array([g.size for g in kept])
    width = int(sizes.max())
    table = np.full((len(kept), width), np.nan)
    for i, g in enumerate(kept):
        table[i, : g.size] = g
    rng = np.random.default_rng(seed)
    k = len(kept)
    batch = max(1, _BOOTSTRAP_CELLS // (k * width))
    reps = []
    for start in range(0, n_resamples, batch):
        b = min(batch, n_resamples - start)
        drawn = rng.integers(0, k, size=(b, k))
        n = sizes[drawn][..., None]
        idx = np.minimum((rng.random((b, k, width)) * n).astype(int), width - 1)
        values = table[drawn[..., None], idx]
        values[np.arange(width)[None, None, :] >= n] = np.nan  # a small group keeps its weight
        with np.errstate(invalid="ignore"):
            reps.append(statistic(values.reshape(b, k * width), axis=1))
    reps = np.concatenate(reps)
    reps = reps[~np.isnan(reps)]
    if reps.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2], method="inverted_cdf")
    return float(lo), float(hi)


@dataclass(frozen=True)
class SeedPooled:
    """A comparison pooled over training seeds, the unit of inference: the pooled log ratio with its
    (1 - α) and (1 - 2α) intervals (the latter for equivalence), the p-value of "no effect", the
    heterogeneity between seeds (I², and τ, the between-seed SD of the log ratio), the number of
    seeds and how many lie on the estimate's side. NaN where fewer than two seeds have a finite
    effect (`why` says so)."""

    k: int
    estimate: float
    lo: float
    hi: float
    lo_tost: float
    hi_tost: float
    p: float
    i2: float
    tau: float
    agree: int
    why: str = ""


def seed_pooled(estimates: np.ndarray, ses: np.ndarray, alpha: float = 0.05) -> SeedPooled:
    """Random-effects pooling of per-seed log-ratio `estimates` with standard errors `ses`:
    DerSimonian–Laird τ², the Hartung–Knapp–Sidik–Jonkman variance with a t(k − 1) reference
    (IntHout, Ioannidis & Borm 2014, BMC Med Res Methodol 14:25), never narrower than the plain
    seed-level t-interval (the per-seed estimates as k observations). Deviations: a zero standard
    error is floored at 1e-12 (a seed whose pairs all tie); where a seed's interval is unbounded
    (many infinite pairs) the seed-level t-interval alone is used, I² and τ then NaN."""
    y = np.asarray(estimates, dtype=float)
    v = np.maximum(np.asarray(ses, dtype=float) ** 2, 1e-24)
    k = int(y.size)
    if k < 2 or not np.isfinite(y).all():
        why = "fewer than two seeds" if k < 2 else "a seed's effect is infinite"
        nan = float("nan")
        return SeedPooled(k, nan, nan, nan, nan, nan, nan, nan, nan, 0, why)
    if not np.isfinite(v).all():  # a seed's interval is unbounded: no weights, seeds count alike
        return _seed_t(y, alpha)
    w = 1 / v
    fixed = float((w * y).sum() / w.sum())
    q = float((w * (y - fixed) ** 2).sum())
    c = float(w.sum() - (w**2).sum() / w.sum())
    tau2 = max(0.0, (q - (k - 1)) / c) if c > 0 else 0.0
    ws = 1 / (v + tau2)
    mu = float((ws * y).sum() / ws.sum())
    se_hk = float(np.sqrt((ws * (y - mu) ** 2).sum() / ((k - 1) * ws.sum())))
    se = max(se_hk, float(y.std(ddof=1) / np.sqrt(k)))
    t = stats.t(df=k - 1)
    half, half_tost = float(t.ppf(1 - alpha / 2)) * se, float(t.ppf(1 - alpha)) * se
    p = float(2 * t.sf(abs(mu) / se)) if se > 0 else (1.0 if mu == 0 else 0.0)
    return SeedPooled(
        k=k,
        estimate=mu,
        lo=mu - half,
        hi=mu + half,
        lo_tost=mu - half_tost,
        hi_tost=mu + half_tost,
        p=p,
        i2=max(0.0, (q - (k - 1)) / q) if q > 0 else 0.0,
        tau=float(np.sqrt(tau2)),
        agree=int((np.sign(y) == np.sign(mu)).sum()) if mu != 0 else 0,
    )


def _seed_t(y: np.ndarray, alpha: float) -> SeedPooled:
    """The plain seed-level t-interval of the per-seed estimates (heterogeneity not estimable)."""
    k, mu = int(y.size), float(y.mean())
    se = float(y.std(ddof=1) / np.sqrt(k))
    t = stats.t(df=k - 1)
    half, half_tost = float(t.ppf(1 - alpha / 2)) * se, float(t.ppf(1 - alpha)) * se
    p = float(2 * t.sf(abs(mu) / se)) if se > 0 else (1.0 if mu == 0 else 0.0)
    agree = int((np.sign(y) == np.sign(mu)).sum()) if mu != 0 else 0
    nan = float("nan")
    return SeedPooled(
        k, mu, mu - half, mu + half, mu - half_tost, mu + half_tost, p, nan, nan, agree
    )


def primary_verdict(
    pooled: SeedPooled, adjusted_p: float, margin: float = 0.9, alpha: float = 0.05
) -> str:
    """The primary endpoint's verdict, seeds as the unit: "more robust" / "less robust" when the
    Holm-adjusted p < α and every seed lies on the estimate's side; "equivalent" when the (1 − 2α)
    interval of the ratio lies inside [margin, 1 / margin] (two one-sided tests); else
    "inconclusive", with the reason."""
    if np.isnan(pooled.estimate):
        return f"inconclusive ({pooled.why})"
    if adjusted_p < alpha:
        if pooled.agree == pooled.k:
            return "more robust" if pooled.estimate > 0 else "less robust"
        return f"inconclusive (seeds disagree: {pooled.agree} of {pooled.k} on the estimate's side)"
    bound = -np.log(margin)
    if -bound <= pooled.lo_tost and pooled.hi_tost <= bound:
        return "equivalent"
    return "inconclusive"


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


def encoded_distortion(rows: pd.DataFrame, norm: str) -> np.ndarray:
    """Per-row distortion in the module's encoding: value if fooled, 0 if misclassified clean,
    +inf if the attack failed."""
    value = rows[norm].to_numpy(dtype=float)
    clean_correct = rows["clean_correct"].to_numpy(dtype=bool)
    success = rows["success"].to_numpy(dtype=bool)
    return np.where(~clean_correct, 0.0, np.where(success, value, np.inf))


def fooled(rows: pd.DataFrame, eps: float | None = None) -> np.ndarray:
    """Per row 1.0 where the digit ends misclassified (attack succeeded, within ε where `eps` is
    given, or misclassified clean: the standard robust-accuracy denominator is every attacked
    digit), else 0.0."""
    clean_correct = rows["clean_correct"].to_numpy(dtype=bool)
    success = rows["success"].to_numpy(dtype=bool)
    if eps is not None:
        success = success & (rows["eps"].to_numpy(dtype=float) <= eps + NORM_TOLERANCE)
    return np.where(clean_correct, success.astype(float), 1.0)


def robust_difference(
    base_fooled: np.ndarray,
    other_fooled: np.ndarray,
    seeds: np.ndarray,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Robust accuracy of other minus baseline over paired (seed, digit) rows, with a two-level
    bootstrap interval (seeds, then digits within seed) of the mean paired difference, so the
    interval carries the seed-to-seed variation."""
    d = (np.asarray(base_fooled, float) - np.asarray(other_fooled, float)).ravel()
    if d.size == 0:
        return float("nan"), float("nan"), float("nan")
    seeds = np.asarray(seeds).ravel()
    groups = [d[seeds == s] for s in np.unique(seeds)]
    lo, hi = two_level_bootstrap_ci(groups, np.nanmean, alpha=alpha, seed=seed)
    return float(d.mean()), lo, hi
