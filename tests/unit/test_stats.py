"""Multi-seed statistics: known answers from scipy and hand-worked examples, censoring, and degenerate samples."""

import itertools
import json
import math

import numpy as np
import pytest
import scipy.stats as sps

from grokscope.stats import (
    MIN_BOOTSTRAP_N,
    Sample,
    adjust_p_values,
    compare,
    compare_all,
    describe,
    epochs_from_steps,
    epochs_to_threshold,
    fieller_interval,
    first_crossings,
    kaplan_meier_median,
    min_detectable_d,
    min_mann_whitney_p,
    spearman,
    speedup,
    steps_to_threshold,
    zscore_outliers,
)

X = [12.0, 15.0, 9.0, 20.0, 14.0, 11.0]
Y = [18.0, 22.0, 17.0, 25.0, 21.0, 30.0, 19.0]


def strict_json(d: dict) -> dict:
    return json.loads(json.dumps(d, allow_nan=False))


def exact_rank_sum_p(x: list[float], y: list[float]) -> float:
    """Two-sided Mann–Whitney p by brute force: every assignment of the pooled mid-ranks to x's size, equally
    likely under H0; p = 2 · min(P(W <= w), P(W >= w)), capped at 1, for x's observed rank sum w."""
    ranks = sps.rankdata(np.concatenate([x, y]))
    w = ranks[: len(x)].sum()
    sums = np.array([ranks[list(c)].sum() for c in itertools.combinations(range(len(ranks)), len(x))])
    return min(1.0, 2 * min(np.mean(sums <= w + 1e-9), np.mean(sums >= w - 1e-9)))


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
    # The mechanics, on 6 values with the minimum lowered explicitly (the default gives none at n = 6).
    s = describe(X, seed=1, min_boot_n=2)
    assert s.boot_low < s.mean < s.boot_high and s.boot_note == "" and s.min_boot_n == 2
    # The bootstrap interval is narrower than the t-interval here: percentiles ignore the small-n t quantile.
    assert s.ci_low < s.boot_low and s.boot_high < s.ci_high
    assert describe(X, seed=1, min_boot_n=2) == s
    # Means of a few integers fall on a coarse grid, so tell seeds apart on continuous data.
    z = list(np.random.default_rng(0).normal(size=MIN_BOOTSTRAP_N))
    assert describe(z, seed=1).boot_low != describe(z, seed=2).boot_low
    narrow = describe(X, confidence=0.5, seed=1, min_boot_n=2)
    assert s.boot_low < narrow.boot_low < narrow.boot_high < s.boot_high


def test_no_bootstrap_interval_below_the_minimum_group_size():
    two = describe([1.66, 2.15])
    assert two.boot_low is None and two.boot_high is None
    assert two.boot_note.startswith("n too small for a bootstrap interval (n = 2 reached runs")
    # The t-interval stays: with n = 2 its half-width is t(0.975, 1) · sd / √2 = 12.71 · sd / √2, very wide.
    sd = abs(2.15 - 1.66) / math.sqrt(2)
    assert two.ci_high - two.ci_low == pytest.approx(2 * sps.t.ppf(0.975, 1) * sd / math.sqrt(2))
    assert strict_json(two.to_dict())["boot_note"] == two.boot_note
    # Why: with n = 2 the resampled means are x1, x2 and their midpoint, so the percentile interval is the range.
    forced = describe([1.66, 2.15], min_boot_n=2)
    assert (forced.boot_low, forced.boot_high) == (pytest.approx(1.66), pytest.approx(2.15))
    at_min = describe(list(np.random.default_rng(1).normal(10, 1, size=MIN_BOOTSTRAP_N)))
    below = describe(list(np.random.default_rng(1).normal(10, 1, size=MIN_BOOTSTRAP_N - 1)))
    assert at_min.boot_low is not None and at_min.boot_note == "" and below.boot_low is None
    thirty = describe(list(np.random.default_rng(2).normal(10, 1, size=30)))
    assert thirty.boot_low < thirty.mean < thirty.boot_high


def test_percentile_bootstrap_undercovers_small_groups():
    """The reason for MIN_BOOTSTRAP_N, by simulation on normal data (fixed seed, tolerant bounds): a nominal 95%
    percentile interval of the mean covers about 85% at n = 5 and about 92% at n = 15 (first-order theory in the
    constant's docstring), while the t-interval holds 95% at both."""
    rng = np.random.default_rng(11)

    def coverage(n: int, reps: int = 1000, n_boot: int = 1000) -> tuple[float, float]:
        data = rng.normal(0.0, 1.0, size=(reps, n))
        draws = rng.integers(0, n, size=(n_boot, n))
        means = data[:, draws].mean(axis=2)  # (reps, n_boot)
        low, high = np.percentile(means, [2.5, 97.5], axis=1)
        half = sps.t.ppf(0.975, n - 1) * data.std(axis=1, ddof=1) / math.sqrt(n)
        return float(((low <= 0) & (high >= 0)).mean()), float((np.abs(data.mean(axis=1)) <= half).mean())

    boot5, t5 = coverage(5)
    boot15, t15 = coverage(MIN_BOOTSTRAP_N)
    assert 0.80 < boot5 < 0.89 and 0.93 < t5 < 0.97
    assert 0.89 < boot15 < 0.95 and 0.93 < t15 < 0.97 and boot5 < boot15


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
    # The censored runs tie, so scipy's default is the normal approximation; compare's p is exact over all splits.
    assert c.mann_whitney_p == pytest.approx(exact_rank_sum_p([120, 501, 90, 501, 300], [400, 450, 501, 480]))
    assert c.mann_whitney_method == "exact"
    assert (c.n_censored_a, c.n_censored_b) == (2, 1)
    # Welch sees only the reached values, and says how many censored runs it left out.
    assert c.welch_p == pytest.approx(sps.ttest_ind([120, 90, 300], [400, 450, 480], equal_var=False).pvalue)
    assert (c.n_reached_a, c.n_reached_b, c.welch_dropped_censored) == (3, 3, 3)
    assert "Welch's t leaves out 3 censored runs." in c.note


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


# --- what a comparison can detect ---------------------------------------------------------------------------------


def brute_min_mann_whitney_p(n_a: int, n_b: int) -> float:
    """Enumerate every assignment of ranks 1..N to group a; the most extreme rank sum's two-sided p."""
    sums = [sum(c) for c in itertools.combinations(range(1, n_a + n_b + 1), n_a)]
    low = min(sums)
    return min(1.0, 2 * sum(s <= low for s in sums) / len(sums))


@pytest.mark.parametrize(("n_a", "n_b"), [(1, 1), (1, 4), (2, 2), (3, 3), (4, 4), (2, 5), (5, 5), (6, 4)])
def test_min_mann_whitney_p_by_enumeration(n_a, n_b):
    assert min_mann_whitney_p(n_a, n_b) == pytest.approx(brute_min_mann_whitney_p(n_a, n_b), rel=1e-12)
    # And scipy's exact test reaches it on fully separated groups.
    x, y = list(range(n_a)), list(range(100, 100 + n_b))
    assert compare(x, y).mann_whitney_p == pytest.approx(min_mann_whitney_p(n_a, n_b))


def test_min_mann_whitney_p_known_values():
    assert min_mann_whitney_p(2, 2) == pytest.approx(1 / 3)
    assert min_mann_whitney_p(3, 3) == pytest.approx(0.1)
    assert min_mann_whitney_p(4, 4) == pytest.approx(2 / 70)
    assert min_mann_whitney_p(0, 3) is None


def test_two_against_two_says_significance_is_impossible():
    c = compare([10.0, 11.0], [50.0, 51.0], names=("grokked", "random"))
    assert c.mann_whitney_p == pytest.approx(1 / 3) and c.min_mann_whitney_p == pytest.approx(1 / 3)
    assert "n = 2 (grokked) and 2 (random) runs." in c.note
    assert "Mann–Whitney cannot reach p < 0.05 with these n (smallest p 0.333)." in c.note
    assert c.min_detectable_d == pytest.approx(min_detectable_d(2, 2)) and c.min_detectable_d > 5
    d = strict_json(c.to_dict())
    assert d["min_mann_whitney_p"] == pytest.approx(1 / 3) and d["welch_dropped_censored"] == 0
    big = compare(list(range(10)), list(range(5, 15)))
    assert "cannot reach" not in big.note and big.min_mann_whitney_p == pytest.approx(2 / math.comb(20, 10))


def test_exact_mann_whitney_with_censored_ties():
    # 3 reached against 3 censored (tied among themselves): scipy's default normal approximation says 0.064,
    # below the 0.1 that no split of 6 runs can go under; compare's p is the exact one.
    a = Sample.from_values([100, 120, 130], budget=500)
    b = Sample.from_values([None, None, None], budget=500)
    c = compare(a, b)
    assert sps.mannwhitneyu([100, 120, 130], [501, 501, 501]).pvalue < 0.07
    assert c.mann_whitney_p == pytest.approx(0.1) == pytest.approx(exact_rank_sum_p([100, 120, 130], [501] * 3))
    assert c.mann_whitney_method == "exact" and c.welch_p is None
    mixed_x, mixed_y = [5.0, 7.0, 7.0, 9.0, 501.0], [6.0, 7.0, 10.0, 501.0, 501.0, 12.0]
    assert compare(mixed_x, mixed_y).mann_whitney_p == pytest.approx(exact_rank_sum_p(mixed_x, mixed_y))
    # Past EXACT_MANN_WHITNEY_SPLITS it is scipy's normal approximation, and says so.
    large = compare(list(range(0, 40, 2)), list(range(1, 41, 2)))
    assert large.mann_whitney_method == "normal approximation"
    assert large.mann_whitney_p == pytest.approx(sps.mannwhitneyu(range(0, 40, 2), range(1, 41, 2)).pvalue)


def test_min_detectable_d_against_cohen_and_the_normal_approximation():
    # Cohen (1988), table 2.4.1: 64 per group detect d = 0.5 with 80% power at two-sided 0.05.
    assert min_detectable_d(64, 64) == pytest.approx(0.5, abs=0.002)
    # Large n: the normal approximation (z_.975 + z_.8)·√(1/n_a + 1/n_b).
    z = sps.norm.ppf(0.975) + sps.norm.ppf(0.8)
    assert min_detectable_d(2000, 3000) == pytest.approx(z * math.sqrt(1 / 2000 + 1 / 3000), rel=2e-3)
    # Small n needs more than the normal approximation says.
    assert min_detectable_d(3, 3) > z * math.sqrt(2 / 3) * 1.3
    assert min_detectable_d(1, 5) is None
    assert min_detectable_d(5, 5) > min_detectable_d(10, 10) > min_detectable_d(20, 20)


def test_min_detectable_d_has_the_stated_power_by_simulation():
    # Brute force: simulate equal-variance t-tests at the reported d and count rejections (fixed seed).
    rng = np.random.default_rng(5)
    n_a, n_b, reps = 4, 6, 20_000
    d = min_detectable_d(n_a, n_b)
    x = rng.normal(d, 1.0, size=(reps, n_a))
    y = rng.normal(0.0, 1.0, size=(reps, n_b))
    pooled = np.sqrt(((n_a - 1) * x.var(axis=1, ddof=1) + (n_b - 1) * y.var(axis=1, ddof=1)) / (n_a + n_b - 2))
    t = (x.mean(axis=1) - y.mean(axis=1)) / (pooled * math.sqrt(1 / n_a + 1 / n_b))
    power = np.mean(np.abs(t) > sps.t.ppf(0.975, n_a + n_b - 2))
    assert power == pytest.approx(0.8, abs=0.015)


# --- speed-ups and their intervals ----------------------------------------------------------------------------------


def test_fieller_interval_solves_its_defining_inequality():
    y, x = [2000.0, 2300.0, 2150.0], [1100.0, 1150.0, 990.0, 1050.0]
    f = fieller_interval(y, x)
    a, b = np.var(y, ddof=1) / 3, np.var(x, ddof=1) / 4
    rho = np.mean(y) / np.mean(x)
    df = (a + rho**2 * b) ** 2 / (a**2 / 2 + rho**4 * b**2 / 3)
    t2 = sps.t.ppf(0.975, df) ** 2
    assert f.df == pytest.approx(df)
    # The ends are where (ȳ - ρx̄)² = t²(a + ρ²b); inside it holds, just outside it fails.
    g = lambda r: (np.mean(y) - r * np.mean(x)) ** 2 - t2 * (a + r**2 * b)  # noqa: E731
    assert g(f.low) == pytest.approx(0, abs=1e-6 * np.mean(y) ** 2) and g(f.high) == pytest.approx(0, abs=1e-3)
    assert g(rho) < 0 and g(f.low * 0.999) > 0 and g(f.high * 1.001) > 0
    assert f.low < rho < f.high
    # A denominator indistinguishable from 0: the set is unbounded, and says so.
    wide = fieller_interval([10.0, 12.0], [0.1, 5.0])
    assert wide.low is None and "unbounded" in wide.note
    assert fieller_interval([1.0], [2.0, 3.0]).low is None
    assert fieller_interval([2.0, 2.0], [1.0, 1.0]).note == "no spread in either group: no interval"


def test_fieller_interval_covers_at_its_level_where_the_bootstrap_does_not():
    """Coverage on synthetic normal data with a fixed seed (a tolerant property, not a trajectory): Fieller's 95%
    interval holds the true ratio about 95% of the time with 3 runs per group; the percentile bootstrap far less."""
    rng = np.random.default_rng(7)
    reps, hit_fieller, hit_boot = 600, 0, 0
    for _ in range(reps):
        ref, cond = rng.normal(2000.0, 200.0, size=3), rng.normal(1000.0, 150.0, size=3)
        f = fieller_interval(ref, cond)
        hit_fieller += f.low is not None and f.low <= 2.0 <= f.high
        s = speedup(list(ref), list(cond), n_boot=400, seed=int(rng.integers(1 << 30)), min_boot_n=2)
        hit_boot += s.ci_low <= 2.0 <= s.ci_high
    assert 0.92 <= hit_fieller / reps <= 0.98
    assert hit_boot / reps < 0.85


def test_speedup_gives_no_bootstrap_interval_below_the_minimum():
    # The issue's case: two seeds each. No bootstrap interval; Fieller's, much wider than the runs' range of ratios.
    s = speedup([2000.0, 2300.0], [1100.0, 1150.0], names=("grokked", "random"))
    assert s.ratio == pytest.approx(2150 / 1125) and s.ci_low is None and s.ci_high is None
    assert "n too small for a bootstrap interval (n = 2 and 2 reached runs" in s.note
    assert s.fieller_low < 2000 / 1150 and s.fieller_high > 2300 / 1100
    expected = fieller_interval([2000.0, 2300.0], [1100.0, 1150.0])
    assert (s.fieller_low, s.fieller_high, s.fieller_df) == (expected.low, expected.high, expected.df)
    assert strict_json(s.to_dict())["ci_low"] is None
    rng = np.random.default_rng(3)
    thirty = speedup(list(rng.normal(2000, 100, 30)), list(rng.normal(1000, 80, 30)))
    assert thirty.ci_low < thirty.ratio < thirty.ci_high and thirty.note == ""
    assert thirty.fieller_low < thirty.ratio < thirty.fieller_high
    # Bootstrap and Fieller agree closely at n = 30.
    assert thirty.ci_low == pytest.approx(thirty.fieller_low, rel=0.02)
    assert thirty.ci_high == pytest.approx(thirty.fieller_high, rel=0.02)


# --- steps and epochs ---------------------------------------------------------------------------------------------


def test_epochs_from_steps():
    assert epochs_from_steps(1500, None, 3830) == 1500.0  # full batch: a step is an epoch
    assert epochs_from_steps(1500, 5000, 3830) == 1500.0  # a batch as large as the set is full batch
    assert epochs_from_steps(1000, 100, 1000) == pytest.approx(1000 * 100 / 1000)  # the batch divides the set
    # 1000 examples in batches of 300: 4 steps per epoch (the last batch is 100), as the loop's epoch column.
    assert epochs_from_steps(8, 300, 1000) == 2.0
    with pytest.raises(ValueError, match="n_train"):
        epochs_from_steps(10, 5, 0)
    with pytest.raises(ValueError, match="batch_size"):
        epochs_from_steps(10, 0, 5)


def test_steps_to_threshold_is_the_unit_free_name():
    assert epochs_to_threshold is steps_to_threshold
    assert steps_to_threshold([0, 500, 1000], [0.1, 0.999, 1.0], 0.999) == 500.0


def test_fieller_interval_on_a_zero_numerator_gives_none():
    assert fieller_interval([0.0, 0.0], [3.0, 5.0]).note == "the numerator is 0 in every run: no interval"
