"""Multi-seed statistics: known answers from scipy and hand-worked examples, censoring, and degenerate samples."""

import json
import math

import numpy as np
import pytest
import scipy.stats as sps

from grokscope.stats import (
    Sample,
    adjust_p_values,
    compare,
    compare_all,
    describe,
    epochs_to_threshold,
    first_crossings,
    kaplan_meier_median,
    spearman,
    zscore_outliers,
)

X = [12.0, 15.0, 9.0, 20.0, 14.0, 11.0]
Y = [18.0, 22.0, 17.0, 25.0, 21.0, 30.0, 19.0]


def strict_json(d: dict) -> dict:
    return json.loads(json.dumps(d, allow_nan=False))


def test_describe_matches_scipy():
    s = describe(X)
    x = np.array(X)
    sem = x.std(ddof=1) / math.sqrt(len(x))
    assert s.n == s.n_reached == 6 and s.n_censored == 0
    assert s.mean == pytest.approx(x.mean())
    assert s.sd == pytest.approx(x.std(ddof=1))
    assert s.sem == pytest.approx(sps.sem(x))
    assert s.cv == pytest.approx(x.std(ddof=1) / x.mean())
    assert (s.median, s.min, s.max) == (13.0, 9.0, 20.0)
    lo, hi = sps.t.interval(0.95, df=5, loc=x.mean(), scale=sem)
    assert (s.ci_low, s.ci_high) == (pytest.approx(lo), pytest.approx(hi))
    assert strict_json(s.to_dict())["mean"] == pytest.approx(x.mean())


def test_bootstrap_brackets_the_mean_and_is_reproducible():
    s = describe(X, seed=1)
    assert s.boot_low < s.mean < s.boot_high
    # The bootstrap interval is narrower than the t-interval here: percentiles ignore the small-n t quantile.
    assert s.ci_low < s.boot_low and s.boot_high < s.ci_high
    assert describe(X, seed=1) == s
    # Means of a few integers fall on a coarse grid, so tell seeds apart on continuous data.
    z = list(np.random.default_rng(0).normal(size=8))
    assert describe(z, seed=1).boot_low != describe(z, seed=2).boot_low
    narrow = describe(X, confidence=0.5, seed=1)
    assert s.boot_low < narrow.boot_low < narrow.boot_high < s.boot_high


def test_welch_and_mann_whitney_match_scipy():
    c = compare(X, Y, names=("x", "y"))
    t = sps.ttest_ind(X, Y, equal_var=False)
    u = sps.mannwhitneyu(X, Y, alternative="two-sided")
    assert (c.a, c.b, c.n_a, c.n_b) == ("x", "y", 6, 7)
    assert c.welch_t == pytest.approx(t.statistic) and c.welch_p == pytest.approx(t.pvalue)
    assert c.mann_whitney_u == pytest.approx(u.statistic) and c.mann_whitney_p == pytest.approx(u.pvalue)
    assert c.mean_difference == pytest.approx(np.mean(X) - np.mean(Y))
    assert strict_json(c.to_dict())["welch_p"] == pytest.approx(t.pvalue)


def test_cohens_d_and_hedges_g_by_hand():
    # Means 4 and 2, variances 4 and 1, pooled sd sqrt((2*4 + 2*1) / 4) = sqrt(2.5).
    c = compare([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    assert c.cohens_d == pytest.approx(2 / math.sqrt(2.5))
    # With df = 4 the exact correction is Γ(2) / (√2 Γ(3/2)) = √(2/π).
    assert c.hedges_g == pytest.approx(c.cohens_d * math.sqrt(2 / math.pi))
    assert compare([1.0, 1.0], [2.0, 2.0]).cohens_d is None  # zero pooled sd


def test_censored_runs_are_counted_not_averaged():
    s = describe(Sample.from_values([100, 200, None, 300, None], budget=1000))
    assert (s.n, s.n_reached, s.n_censored, s.budget) == (5, 3, 2, 1000)
    assert s.mean == pytest.approx(200.0)  # the budget would give 520
    assert s.max == 300.0
    assert s.km_median == 300.0


def test_mann_whitney_ranks_censored_above_everything():
    a = Sample.from_values([120, None, 90, None, 300], budget=500)
    b = Sample.from_values([400, 450, None, 480], budget=500)
    c = compare(a, b)
    ref = sps.mannwhitneyu([120, 501, 90, 501, 300], [400, 450, 501, 480], alternative="two-sided")
    assert c.mann_whitney_u == pytest.approx(ref.statistic)
    assert c.mann_whitney_p == pytest.approx(ref.pvalue)
    assert (c.n_censored_a, c.n_censored_b) == (2, 1)
    # Welch sees only the reached values.
    assert c.welch_p == pytest.approx(sps.ttest_ind([120, 90, 300], [400, 450, 480], equal_var=False).pvalue)


def test_censoring_with_different_budgets_is_refused():
    a = Sample.from_values([10, None], budget=100)
    with pytest.raises(ValueError, match="shared budget"):
        compare(a, Sample.from_values([10, 20], budget=200))
    # Without any censoring the budgets do not matter.
    assert compare(Sample((1.0, 2.0), budget=100), Sample((3.0, 4.0), budget=200)).mann_whitney_p is not None


def test_invalid_samples():
    with pytest.raises(ValueError, match="budget"):
        Sample.from_values([1.0, None])
    with pytest.raises(ValueError, match="exceeds"):
        Sample.from_values([1.0, 20.0], budget=10)
    with pytest.raises(ValueError, match="finite"):
        Sample.from_values([1.0, math.nan])


def test_kaplan_meier_median():
    # n = 5, censoring at the budget: S(10) = 4/5, S(20) = 4/5·3/4 = 3/5, S(30) = 3/5·2/3 = 2/5 <= 1/2.
    assert kaplan_meier_median(Sample.from_values([10, 20, None, 30, None], budget=50)) == 30
    # Exactly half reached: S(20) = 1/2, which counts.
    assert kaplan_meier_median(Sample.from_values([20, None, 10, None], budget=50)) == 20
    # More than half censored: S never drops to 1/2, the median is not reached.
    s = describe(Sample.from_values([10, None, None, 20, None], budget=50))
    assert s.km_median is None and s.mean == 15.0
    assert kaplan_meier_median([5.0, 5.0, 7.0, 9.0]) == 5.0  # a tie across the half


def test_holm_and_bonferroni_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    # Sorted 0.005·4, 0.01·3, 0.03·2, 0.04·1 = 0.02, 0.03, 0.06, 0.04 -> running max makes the last 0.06.
    assert adjust_p_values(p, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert adjust_p_values(p, "bonferroni") == pytest.approx([0.04, 0.16, 0.12, 0.02])
    assert adjust_p_values([0.5, 0.6]) == [1.0, 1.0]
    assert adjust_p_values([]) == []
    with pytest.raises(ValueError, match="method"):
        adjust_p_values(p, "bh")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        adjust_p_values([0.1, math.nan])


def test_compare_all_pairs_and_reference():
    groups = {
        "grokked": Sample.from_values([50, 60, 55, 70], budget=1000),
        "memorized": Sample.from_values([300, 350, None, 420], budget=1000),
        "random": Sample.from_values([800, None, None, 900], budget=1000),
    }
    pairs = compare_all(groups)
    assert [(c.a, c.b) for c in pairs] == [("grokked", "memorized"), ("grokked", "random"), ("memorized", "random")]
    holm = adjust_p_values([c.mann_whitney_p for c in pairs])
    assert [c.mann_whitney_p_adjusted for c in pairs] == pytest.approx(holm)
    assert all(c.welch_p_adjusted >= c.welch_p for c in pairs)
    vs_random = compare_all(groups, reference="random", method="bonferroni")
    assert [(c.a, c.b) for c in vs_random] == [("grokked", "random"), ("memorized", "random")]
    assert vs_random[0].welch_p_adjusted == pytest.approx(min(1.0, 2 * vs_random[0].welch_p))
    with pytest.raises(ValueError, match="reference"):
        compare_all(groups, reference="nope")


def test_degenerate_samples_give_none():
    empty = describe([])
    assert (empty.n, empty.mean, empty.median, empty.km_median, empty.boot_low) == (0, None, None, None, None)
    one = describe([7.0])
    assert (one.mean, one.median, one.sd, one.sem, one.ci_low, one.boot_high) == (7.0, 7.0, None, None, None, None)
    all_censored = describe(Sample.from_values([None, None], budget=10))
    assert (all_censored.n, all_censored.n_reached, all_censored.mean) == (2, 0, None)
    strict_json(empty.to_dict())
    strict_json(one.to_dict())

    c = compare([7.0], X)
    assert c.welch_p is None and c.cohens_d is None and c.hedges_g is None
    assert c.mann_whitney_p is not None and c.mean_difference == pytest.approx(7.0 - np.mean(X))
    c0 = compare([], X)
    assert c0.mann_whitney_p is None and c0.mean_difference is None
    strict_json(c0.to_dict())


def test_spearman():
    x = [1.0, 2.0, None, 4.0, 5.0, math.nan, 7.0]
    y = [2.0, 1.0, 3.0, 5.0, 4.0, 6.0, 9.0]
    ref = sps.spearmanr([1, 2, 4, 5, 7], [2, 1, 5, 4, 9])
    assert spearman(x, y) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue))
    assert spearman([1.0, None, 3.0], [1.0, 2.0, 3.0]) is None
    assert spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None
    with pytest.raises(ValueError, match="length"):
        spearman([1.0], [1.0, 2.0])


def test_zscore_finds_a_planted_outlier():
    values = list(np.random.default_rng(0).normal(100.0, 5.0, size=20))
    values[13] = 200.0
    assert zscore_outliers(values) == [13]
    # With ddof=1, |z| <= (n-1)/√n < 3 for n = 10: even a huge outlier cannot pass a threshold of 3.
    assert zscore_outliers([0.0] * 9 + [1e6]) == []
    assert zscore_outliers([0.0] * 9 + [1e6], threshold=2.5) == [9]
    assert zscore_outliers([5.0] * 12) == [] and zscore_outliers([1.0, 100.0]) == []


def test_epochs_to_threshold_on_a_synthetic_history():
    steps = list(range(0, 1000, 100))
    acc = [0.1, 0.2, 0.5, math.nan, 0.92, 0.96, 0.95, 0.991, 0.995, 0.998]
    assert epochs_to_threshold(steps, acc, 0.5) == 200.0
    assert epochs_to_threshold(steps, acc, 0.95) == 500.0
    assert epochs_to_threshold(steps, acc, 0.999) is None
    assert first_crossings(steps, acc) == {0.9: 400.0, 0.95: 500.0, 0.99: 700.0, 0.999: None}
    assert epochs_to_threshold([], [], 0.5) is None
    with pytest.raises(ValueError, match="length"):
        epochs_to_threshold([0, 1], [0.5], 0.5)
