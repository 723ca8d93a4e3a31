"""Report statistics against hand-computed, published and scipy values."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from suite.report import stats

INF, NAN = math.inf, math.nan


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [
        (0, 10, 0.0, 0.2775),
        (5, 10, 0.2366, 0.7634),
        (10, 10, 0.7225, 1.0),
        # Newcombe (1998), Stat. Med. 17:857, Table I, method 3 (Wilson score)
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_matches_published_values(k, n, lo, hi):
    assert stats.wilson_interval(k, n) == pytest.approx((lo, hi), abs=5e-5)


def test_wilson_interval_of_nothing_is_nan():
    assert all(math.isnan(x) for x in stats.wilson_interval(0, 0))


def test_wilson_interval_widens_with_confidence():
    lo95, hi95 = stats.wilson_interval(5, 10, alpha=0.05)
    lo99, hi99 = stats.wilson_interval(5, 10, alpha=0.01)
    assert lo99 < lo95 and hi99 > hi95


def test_bootstrap_ci_covers_the_true_median():
    rng = np.random.default_rng(1)
    true_median = math.log(2)  # of Exp(1)
    covered = 0
    for i in range(200):
        lo, hi = stats.bootstrap_ci(rng.exponential(1.0, 40), n_resamples=500, seed=i)
        covered += lo <= true_median <= hi
    assert covered >= 180


def test_bootstrap_ci_is_deterministic_and_drops_nans():
    values = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0])
    with_nan = np.r_[values, NAN, NAN]
    assert stats.bootstrap_ci(values, seed=3) == stats.bootstrap_ci(with_nan, seed=3)
    assert stats.bootstrap_ci(values, seed=3) != stats.bootstrap_ci(values, seed=4)
    lo, hi = stats.bootstrap_ci(values, np.mean, seed=0)
    assert lo < values.mean() < hi
    assert all(math.isnan(x) for x in stats.bootstrap_ci(np.array([NAN])))


DARWIN = np.array([6, 8, 14, 16, 23, 24, 28, 29, 41, -48, 49, 56, 60, -67, 75], dtype=float)


def test_wilcoxon_on_darwins_data_matches_scipy_and_hand_values():
    base = np.full(DARWIN.size, 100.0)
    result = stats.paired_comparison(base, base + DARWIN)
    expected = sps.wilcoxon(DARWIN)
    assert result.wilcoxon_statistic == expected.statistic == 24.0
    assert result.wilcoxon_p == pytest.approx(expected.pvalue) == pytest.approx(0.041259765625)
    # ranks of |d|: the negative differences 48 and 67 have ranks 10 and 14, T- = 24, T+ = 96
    assert result.rank_biserial == pytest.approx((96 - 24) / 120)
    assert (result.n_other_larger, result.n_base_larger) == (13, 2)
    assert result.sign_test_p == pytest.approx(sps.binomtest(13, 15).pvalue)
    assert result.test == "wilcoxon" and result.p == result.wilcoxon_p


def test_failures_count_in_the_sign_test_but_not_in_the_wilcoxon():
    base = np.array([1, 2, 3, 4, 5, 6, 7, INF, INF, NAN, 2.0])
    other = np.array([2, 3, 4, 5, 6, 7, 7, INF, 5, 1, NAN])
    r = stats.paired_comparison(base, other)
    assert r.n_pairs == 9  # the two pairs with a NaN do not count
    assert (r.n_both_success, r.n_only_base_failed, r.n_only_other_failed) == (7, 1, 0)
    assert r.n_both_failed == 1
    # other larger on 6 pairs; the tie (7, 7) and both-failed pair are dropped; base failed once
    assert (r.n_other_larger, r.n_base_larger) == (6, 1)
    assert r.sign_test_p == pytest.approx(2 * (1 + 7) / 2**7)
    # Wilcoxon on the 7 both-success pairs only: differences 1,1,1,1,1,1,0
    assert r.wilcoxon_p == pytest.approx(sps.wilcoxon([1, 1, 1, 1, 1, 1, 0.0]).pvalue)
    assert r.rank_biserial == 1.0
    assert r.test == "sign" and r.p == r.sign_test_p
    # ratios: 2, 1.5, 4/3, 1.25, 1.2, 7/6, 1 and 0 where only base failed
    assert r.median_ratio == pytest.approx((1.2 + 1.25) / 2)
    assert r.ratio_ci[0] <= r.median_ratio <= r.ratio_ci[1]


def test_only_other_failing_makes_the_ratio_infinite():
    base = np.array([1.0, 1.0, 1.0, 1.0, 1.0])
    other = np.array([INF, INF, INF, 2.0, 0.5])
    r = stats.paired_comparison(base, other)
    assert r.median_ratio == INF and r.n_only_other_failed == 3
    assert r.ratio_ci[1] == INF


def test_all_ties_give_no_test_and_no_verdict():
    base = np.array([1.0, 2.0, 3.0, INF])
    r = stats.paired_comparison(base, base.copy())
    assert math.isnan(r.wilcoxon_p) and math.isnan(r.sign_test_p) and math.isnan(r.p)
    assert r.median_ratio == 1.0
    assert stats.verdict(r.p, r.median_ratio) == "no significant difference at α = 0.05"


def test_unpaired_lengths_are_refused():
    with pytest.raises(ValueError, match="pair one to one"):
        stats.paired_comparison(np.ones(3), np.ones(4))


def test_mcnemar_counts_discordant_pairs():
    base_fooled = np.array([1, 1, 1, 1, 1, 0, NAN])
    other_fooled = np.array([0, 0, 0, 1, 1, 0, 1])
    r = stats.mcnemar_comparison(base_fooled, other_fooled)
    assert r.n_pairs == 6
    assert (r.n_only_base_failed, r.n_only_other_failed) == (0, 3)
    assert r.p == pytest.approx(0.25)  # 3 of 3 discordant pairs favour other
    assert r.median_ratio == pytest.approx((4 / 6) / (1 / 6))
    assert r.test == "mcnemar"


def test_holm_on_a_hand_computed_vector():
    # sorted 0.005, 0.01, 0.03, 0.04 → ×4, ×3, ×2, ×1 = 0.02, 0.03, 0.06, 0.04 → running max
    adjusted = stats.holm_bonferroni(np.array([0.01, 0.04, 0.03, 0.005]))
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_skips_nan():
    np.testing.assert_allclose(stats.holm_bonferroni(np.array([0.5, 0.6])), [1.0, 1.0])
    np.testing.assert_allclose(
        stats.holm_bonferroni(np.array([0.01, NAN, 0.04])), [0.02, NAN, 0.04]
    )
    assert stats.holm_bonferroni(np.array([])).size == 0


def test_verdict_reads_direction_from_the_ratio():
    assert stats.verdict(0.01, 1.4) == "more robust"
    assert stats.verdict(0.01, 0.7) == "less robust"
    assert stats.verdict(0.2, 1.4) == "no significant difference at α = 0.05"
    assert stats.verdict(0.02, 1.4, alpha=0.01) == "no significant difference at α = 0.01"
    assert stats.verdict(NAN, 2.0).startswith("no significant difference")


def _rows(records):
    frame = pd.DataFrame(
        records, columns=["condition", "seed", "sample_index", "clean_correct", "success", "l2"]
    )
    frame["attack"] = "cw-l2"
    frame["l0"] = frame["l2"] * 10
    frame["linf"] = frame["l2"] / 10
    return frame


def test_pool_over_seeds_gives_one_value_per_image():
    rows = _rows(
        [
            ("a", 0, 0, True, True, 1.0),
            ("a", 1, 0, True, True, 3.0),
            ("a", 0, 1, True, True, 1.0),
            ("a", 1, 1, True, False, NAN),  # failed on one of two seeds → pools to +inf
            ("a", 0, 2, False, False, NAN),  # misclassified on one seed → the other seed alone
            ("a", 1, 2, True, True, 2.0),
            ("a", 0, 3, False, False, NAN),
            ("a", 1, 3, False, False, NAN),
        ]
    )
    np.testing.assert_array_equal(
        stats.encoded_distortion(rows, "l2"), [1.0, 3.0, 1.0, INF, NAN, 2.0, NAN, NAN]
    )
    pooled = stats.pool_over_seeds(rows).set_index("sample_index")
    np.testing.assert_array_equal(pooled["l2"], [2.0, INF, 2.0, NAN])
    np.testing.assert_array_equal(pooled["l0"], [20.0, INF, 20.0, NAN])
    np.testing.assert_array_equal(pooled["fooled"], [1.0, 0.5, 1.0, NAN])
    assert pooled["n_seeds"].tolist() == [2, 2, 2, 2]


def test_paired_vectors_align_by_sample_index():
    rows = pd.DataFrame(
        {
            "condition": ["base", "base", "base", "other", "other"],
            "sample_index": [5, 1, 3, 1, 5],
            "l2": [1.5, 1.1, 1.3, 2.1, 2.5],
        }
    )
    base, other = stats.paired_vectors(rows, "base", "other", "l2")
    np.testing.assert_array_equal(base, [1.1, 1.3, 1.5])
    np.testing.assert_array_equal(other, [2.1, NAN, 2.5])
    assert stats.paired_vectors(rows, "base", "absent", "l2")[0].size == 0
