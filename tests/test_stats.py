"""Report statistics against hand-computed, published and scipy values, and the verdict cases of
issue 11 that the old median-ratio / sign-test logic got wrong."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from suite.report import stats

INF, NAN = math.inf, math.nan


def compared(base, other):
    return stats.paired_comparison(stats.log_ratios(np.asarray(base), np.asarray(other)))


def test_tied_integer_l0_with_more_pairs_larger_is_more_robust():
    # issue 11: integer L0 distortions, 437 pairs larger vs 259 smaller (the rest equal); the
    # median ratio is exactly 1, so the old code printed "no significant difference" at p ~ 1e-11
    rng = np.random.default_rng(0)
    base = rng.integers(5, 40, 1000).astype(float)
    other = base + np.r_[np.ones(437), -np.ones(259), np.zeros(304)]
    r = compared(base, other)
    assert (r.n_other_larger, r.n_base_larger, r.n_ties) == (437, 259, 304)
    assert r.p < 1e-5 and r.effect > 0 and r.ratio > 1 and r.ratio_lo > 1


def test_negative_rank_biserial_is_never_more_robust():
    # issue 11: r = -0.37 at p = 2e-24 printed "more robust", because 56% of pairs were 2%
    # larger (median ratio 1.01) while the rest were 40% smaller
    rng = np.random.default_rng(1)
    base = rng.lognormal(0.3, 0.3, 1000)
    other = base * np.where(np.arange(1000) < 560, 1.02, 0.6) * rng.lognormal(0, 0.005, 1000)
    assert np.median(other / base) > 1
    r = compared(base, other)
    assert r.effect == pytest.approx(-0.372, abs=0.005) and r.p < 1e-20
    assert r.ratio < 1 and r.ratio_hi < 1


def test_a_difference_in_failures_only_is_significant_with_ratio_one():
    # equal distortions everywhere except 20 digits where only `other` resisted: the old code
    # switched to the sign test and read its direction from the median ratio (1): no verdict
    base = np.linspace(1.0, 2.0, 100)
    other = base.copy()
    other[:20] = INF
    r = compared(base, other)
    assert (r.n_other_larger, r.n_other_infinite, r.n_ties) == (20, 20, 80)
    assert r.p == pytest.approx(sps.wilcoxon(np.ones(20)).pvalue)
    assert r.ratio == 1.0 and r.effect == 1.0
    # and the mirror image
    r = compared(other, base)
    assert r.n_base_infinite == 20 and r.effect == -1.0


def test_one_failure_does_not_switch_the_test():
    base = np.array([1.0, 2, 3, 4, 5, 6, 7, 8])
    other = base * 1.5
    with_failure = other.copy()
    with_failure[0] = INF
    a = stats.paired_comparison(stats.log_ratios(base, other))
    b = stats.paired_comparison(stats.log_ratios(base, with_failure))
    assert a.test == b.test == "wilcoxon"
    # the failure is the largest |d|: the ranks, hence the exact p, are those of all-positive d
    assert b.p == pytest.approx(sps.wilcoxon(np.arange(1.0, 9)).pvalue)


def test_integer_ties_use_midranks_like_scipy():
    base = np.array([2, 2, 4, 4, 3, 6, 5, 5, 1, 8], dtype=float)
    other = np.array([4, 4, 2, 8, 3, 12, 10, 5, 2, 4], dtype=float)
    d = stats.log_ratios(base, other)
    np.testing.assert_allclose(d[[0, 1, 3, 5, 6, 8]], math.log(2))  # equal ratios tie exactly
    statistic, p, r = stats.signed_rank(d)
    expected = sps.wilcoxon(d, zero_method="wilcox")
    assert (statistic, p) == pytest.approx((expected.statistic, expected.pvalue))
    # |d| all equal (log 2) on the 8 non-zero pairs: mid-rank 4.5, 6 positive and 2 negative
    assert r == pytest.approx((6 - 2) / 8)


def test_log_ratio_rules_for_failures_and_clean_errors():
    base = np.array([0.0, 0.0, INF, INF, 1.0, 2.0, 0.0, 4.0, NAN])
    other = np.array([0.0, 1.0, INF, 1.0, 0.0, 4.0, INF, 2.0, 1.0])
    d = stats.log_ratios(base, other)
    np.testing.assert_array_equal(
        d, [0.0, INF, 0.0, -INF, -INF, math.log(2), INF, -math.log(2), NAN]
    )
    with pytest.raises(ValueError, match="pair one to one"):
        stats.log_ratios(np.ones(3), np.ones(4))


def test_hodges_lehmann_matches_walsh_averages_and_maps_infinities_back():
    d = np.array([-0.5, 0.1, 0.2, 0.4, 0.9])
    walsh = [(a + b) / 2 for i, a in enumerate(d) for b in d[i:]]
    est, lo, hi = stats.hodges_lehmann(d)
    assert est == pytest.approx(np.median(walsh))
    assert lo == min(walsh) and hi == max(walsh)  # n = 5: the 95% CI is the full range
    est, lo, hi = stats.hodges_lehmann(np.r_[np.full(6, INF), 0.1, 0.2, 0.3])
    # n = 9: k = floor(45 / 2 - 1.96 * sqrt(9 * 10 * 19 / 24)) = 5, the 5th smallest of the
    # finite Walsh averages 0.1, 0.15, 0.2, 0.2, 0.25, 0.3; the other 39 involve an infinity
    assert est == INF and hi == INF and lo == pytest.approx(0.25)
    assert all(math.isnan(x) for x in stats.hodges_lehmann(np.empty(0)))


def test_hodges_lehmann_ci_covers_the_true_shift():
    rng = np.random.default_rng(3)
    covered = sum(
        lo <= 0.3 <= hi
        for _, lo, hi in (stats.hodges_lehmann(rng.normal(0.3, 1, 40)) for _ in range(200))
    )
    assert covered >= 180


def test_darwins_data_match_scipy_and_hand_values():
    darwin = np.array([6, 8, 14, 16, 23, 24, 28, 29, 41, -48, 49, 56, 60, -67, 75], dtype=float)
    r = stats.paired_comparison(darwin)
    expected = sps.wilcoxon(darwin)
    assert r.statistic == expected.statistic == 24.0
    assert r.p == pytest.approx(expected.pvalue) == pytest.approx(0.041259765625)
    # ranks of |d|: the negative differences 48 and 67 have ranks 10 and 14, T- = 24, T+ = 96
    assert r.effect == pytest.approx((96 - 24) / 120)


def test_all_ties_give_no_test():
    base = np.array([1.0, 2.0, 0.0, INF])
    r = compared(base, base.copy())
    assert math.isnan(r.p) and math.isnan(r.effect) and r.ratio == 1.0


def test_pooling_over_seeds_gives_one_value_per_digit():
    d = np.array([0.2, 0.4, INF, -INF, INF, 1.0, NAN, 0.3, NAN])
    digit = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4])
    # medians per digit: (0.2 + 0.4) / 2; +inf with -inf is a tie; +inf; the NaN is skipped
    np.testing.assert_allclose(stats.pooled_log_ratios(d, digit), [0.3, 0.0, INF, 0.3])


def test_mcnemar_counts_discordant_pairs():
    base_fooled = np.array([1, 1, 1, 1, 1, 0, NAN])
    other_fooled = np.array([0, 0, 0, 1, 1, 0, 1])
    r = stats.mcnemar_comparison(base_fooled, other_fooled)
    assert r.n_pairs == 6 and (r.n_other_larger, r.n_base_larger, r.n_ties) == (3, 0, 3)
    assert r.p == pytest.approx(0.25)  # 3 of 3 discordant pairs favour other
    assert r.ratio == pytest.approx((4 / 6) / (1 / 6)) and r.effect == 1.0
    assert r.test == "mcnemar"


def test_two_level_bootstrap_resamples_seeds_not_only_digits():
    rng = np.random.default_rng(4)
    # three seeds that disagree: digits alone would give a narrow interval around 1
    groups = [rng.normal(m, 0.1, 200) for m in (0.0, 1.0, 2.0)]
    lo, hi = stats.two_level_bootstrap_ci(groups, np.nanmean, seed=0)
    naive = np.quantile(
        [rng.choice(np.concatenate(groups), 600).mean() for _ in range(500)], [0.025, 0.975]
    )
    assert hi - lo > 5 * (naive[1] - naive[0])
    assert lo < 1.0 < hi
    assert stats.two_level_bootstrap_ci(groups, seed=1) == stats.two_level_bootstrap_ci(
        groups, seed=1
    )
    assert all(math.isnan(x) for x in stats.two_level_bootstrap_ci([np.array([NAN])]))


def test_one_group_bootstrap_covers_the_true_median():
    rng = np.random.default_rng(1)
    covered = sum(
        lo <= math.log(2) <= hi
        for lo, hi in (
            stats.two_level_bootstrap_ci([rng.exponential(1.0, 40)], n_resamples=500, seed=i)
            for i in range(200)
        )
    )
    assert covered >= 180


def test_holm_on_a_hand_computed_vector():
    # sorted 0.005, 0.01, 0.03, 0.04 → ×4, ×3, ×2, ×1 = 0.02, 0.03, 0.06, 0.04 → running max
    adjusted = stats.holm_bonferroni(np.array([0.01, 0.04, 0.03, 0.005]))
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(
        stats.holm_bonferroni(np.array([0.01, NAN, 0.04])), [0.02, NAN, 0.04]
    )


def dl_hksj_by_hand(y, se, alpha=0.05):
    """DerSimonian–Laird τ² and the Hartung–Knapp interval, written out term by term."""
    k = len(y)
    w = [1 / e**2 for e in se]
    fixed = sum(wi * yi for wi, yi in zip(w, y, strict=True)) / sum(w)
    q = sum(wi * (yi - fixed) ** 2 for wi, yi in zip(w, y, strict=True))
    c = sum(w) - sum(wi**2 for wi in w) / sum(w)
    tau2 = max(0.0, (q - (k - 1)) / c)
    ws = [1 / (e**2 + tau2) for e in se]
    mu = sum(wi * yi for wi, yi in zip(ws, y, strict=True)) / sum(ws)
    var = sum(wi * (yi - mu) ** 2 for wi, yi in zip(ws, y, strict=True)) / ((k - 1) * sum(ws))
    half = sps.t(k - 1).ppf(1 - alpha / 2) * math.sqrt(var)
    return mu, mu - half, mu + half, tau2, max(0.0, (q - (k - 1)) / q)


def test_seed_pooling_is_dersimonian_laird_with_hartung_knapp():
    y, se = [0.10, -0.05, 0.20, 0.02, 0.08], [0.01, 0.012, 0.015, 0.01, 0.008]  # heterogeneous
    mu, lo, hi, tau2, i2 = dl_hksj_by_hand(y, se)
    got = stats.seed_pooled(np.array(y), np.array(se))
    assert got.k == 5 and got.agree == 4
    assert got.estimate == pytest.approx(mu) and got.tau == pytest.approx(math.sqrt(tau2))
    assert got.i2 == pytest.approx(i2) and i2 > 0.9
    t_half = sps.t(4).ppf(0.975) * np.std(y, ddof=1) / math.sqrt(5)
    half = max((hi - lo) / 2, t_half)  # Hartung–Knapp, widened to the t-interval where narrower
    assert (got.lo, got.hi) == (pytest.approx(mu - half), pytest.approx(mu + half))
    # with equal standard errors and no heterogeneity beyond them, Hartung–Knapp is the t-interval
    flat = stats.seed_pooled(np.array(y), np.full(5, 0.01))
    mu2, lo2, hi2, _, _ = dl_hksj_by_hand(y, [0.01] * 5)
    assert flat.estimate == pytest.approx(np.mean(y)) == pytest.approx(mu2)
    assert flat.hi - flat.lo == pytest.approx(hi2 - lo2) == pytest.approx(2 * t_half)


def test_seed_pooling_is_never_narrower_than_the_seed_level_t_interval():
    # wide per-seed intervals around agreeing estimates: no heterogeneity, HKSJ is then narrow
    y, se = np.array([0.10, 0.11, 0.09]), np.array([0.5, 0.5, 0.5])
    got = stats.seed_pooled(y, se)
    t_half = sps.t(2).ppf(0.975) * y.std(ddof=1) / math.sqrt(3)
    assert got.tau == 0 and got.hi - got.lo >= 2 * t_half - 1e-12
    assert got.lo == pytest.approx(y.mean() - t_half) and got.hi == pytest.approx(y.mean() + t_half)


def test_seeds_that_disagree_are_inconclusive_never_a_direction():
    y, se = np.array([0.30, 0.25, -0.02]), np.array([0.01, 0.01, 0.01])
    got = stats.seed_pooled(y, se)
    assert got.agree == 2
    assert stats.primary_verdict(got, adjusted_p=0.001).startswith("inconclusive (seeds disagree")
    assert stats.primary_verdict(stats.seed_pooled(y[:2], se[:2]), 0.001) == "more robust"
    assert stats.primary_verdict(stats.seed_pooled(-y[:2], se[:2]), 0.001) == "less robust"


def test_equivalence_needs_the_whole_interval_inside_the_margin():
    y, se = np.array([0.01, -0.01, 0.0, 0.005, -0.005]), np.full(5, 0.005)
    got = stats.seed_pooled(y, se)
    assert stats.primary_verdict(got, adjusted_p=got.p) == "equivalent"
    wide = stats.seed_pooled(np.array([0.09, -0.08, 0.0]), np.full(3, 0.01))
    assert (
        stats.primary_verdict(wide, adjusted_p=wide.p) == "inconclusive"
    )  # no gain shown, none excluded
    assert stats.primary_verdict(got, adjusted_p=got.p, margin=0.999) == "inconclusive"


def test_one_seed_or_an_infinite_seed_effect_is_inconclusive():
    one = stats.seed_pooled(np.array([0.4]), np.array([0.01]))
    assert stats.primary_verdict(one, 0.0) == "inconclusive (fewer than two seeds)"
    inf = stats.seed_pooled(np.array([0.4, INF]), np.array([0.01, 0.01]))
    assert stats.primary_verdict(inf, 0.0) == "inconclusive (a seed's effect is infinite)"
    # a seed whose interval is unbounded: the seeds' own t-interval, every seed counted alike
    y = np.array([0.30, 0.20, 0.25])
    unbounded = stats.seed_pooled(y, np.array([0.01, INF, 0.02]))
    half = sps.t(2).ppf(0.975) * y.std(ddof=1) / math.sqrt(3)
    assert unbounded.estimate == pytest.approx(0.25) and math.isnan(unbounded.i2)
    assert (unbounded.lo, unbounded.hi) == (pytest.approx(0.25 - half), pytest.approx(0.25 + half))


def test_encoding_keeps_clean_errors_as_zero_and_failures_as_infinity():
    rows = pd.DataFrame(
        {
            "clean_correct": [True, True, False],
            "success": [True, False, False],
            "l2": [1.5, NAN, NAN],
        }
    )
    np.testing.assert_array_equal(stats.encoded_distortion(rows, "l2"), [1.5, INF, 0.0])
    np.testing.assert_array_equal(stats.fooled(rows), [1.0, 0.0, 1.0])


def test_success_interval_at_100_percent_is_not_a_point():
    """All 60 (seed, digit) rows fooled: the two-level bootstrap alone gives [1, 1]; the reported
    interval is at least the Wilson interval (lower bound ~0.94)."""
    from suite.report.tables import success_table

    rows = pd.DataFrame(
        {
            "condition": "c",
            "seed": np.repeat([0, 1], 30),
            "clean_correct": True,
            "success": True,
        }
    )
    row = success_table(rows, ["c"], alpha=0.05, seed=0).iloc[0]
    assert row["rate"] == 1.0 and row["rate_hi"] == pytest.approx(1.0)
    assert 0.93 < row["rate_lo"] < 0.95
