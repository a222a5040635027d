"""Multi-seed statistics for grokking experiments: describe and compare groups of runs, e.g. optimizer steps to 99.9%
test accuracy from grokked, memorized and random inits, a few seeds each.

Values and budgets are in whatever unit the caller passes; experiments pass optimizer steps, the unit training is
budgeted and logged in (:func:`epochs_from_steps` is the labelled conversion for reports). A run that never reaches
its threshold within the training budget is *censored*: its value is only known to be "> budget". Censored runs are
counted and reported beside every statistic, never dropped silently and never replaced by the budget, which would
bias means downwards. Randomness (the bootstrap) comes only from an explicit ``seed``.

Nothing here overstates what a handful of seeds can show:

* no percentile bootstrap interval below :data:`MIN_BOOTSTRAP_N` reached runs per group (with 2 runs it is the range
  of the data and covers the mean half the time); :func:`describe` keeps its t-interval from 2 runs (very wide, and
  rightly so) and :func:`speedup` gives a Fieller interval (:func:`fieller_interval`) at any size;
* every :class:`Comparison` states its n per group, the smallest Cohen's d it could detect
  (:func:`min_detectable_d`), the smallest p-value Mann–Whitney can reach with those n
  (:func:`min_mann_whitney_p`: 1/3 with 2 runs against 2), how many censored runs Welch's t left out, and computes
  Mann–Whitney's p exactly (all splits of the runs) whenever that is affordable, ties included.

Beside the two-group comparisons: Shapiro–Wilk normality checks (:func:`shapiro`, also attached to every Welch test),
a one-sample test against a fixed value such as chance accuracy (:func:`one_sample`), the speed-up of one group over
a reference (:func:`speedup`), mean ± sd summaries (:func:`spread`) and Holm/Bonferroni corrections
(:func:`adjust_p_values`, applied by :func:`compare_all`).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np
from scipy import optimize, special
from scipy import stats as sps

Method = Literal["holm", "bonferroni"]
Alternative = Literal["greater", "less", "two-sided"]

NORMALITY_ALPHA = 0.05
"""Shapiro–Wilk rejects normality below this p-value (the conventional level; a flag, not a correction)."""

MIN_BOOTSTRAP_N = 15
"""The fewest reached runs per group for which a percentile bootstrap interval is given.

The percentile interval of a mean is, to first order, ``mean ± z · s·√((n-1)/n) / √n``: the normal quantile where
the t quantile belongs, and the plug-in sd (ddof = 0), so it is too narrow at small n ("narrowness bias",
Hesterberg 2015, *What teachers should know about the bootstrap*, The American Statistician 69(4), §4; Efron &
Tibshirani 1993, *An Introduction to the Bootstrap*, ch. 13). For normal data a nominal 95% interval then covers the
mean with probability P(|T_{n-1}| <= 1.96·√((n-1)/n)): about 85% at n = 5, 90% at n = 10, 92% at n = 15, 94% at
n = 30. With n = 2 the resampled means are x1, x2 and their midpoint, so the interval is exactly [min, max] of the
data, which misses the mean whenever both runs fall on the same side of it: half the time (a "1.90x [1.66, 2.15]"
speed-up came from 2 seeds). 15 is where the shortfall drops to about 3 points, small beside the Monte Carlo and
skewness error of the percentile method itself; below it the t-interval (:func:`describe`) or the Fieller interval
(:func:`speedup`) states the uncertainty honestly."""

ALPHA = 0.05
"""The two-sided level at which :func:`min_detectable_d` and :func:`min_mann_whitney_p` say what a comparison can
detect (a statement about the design, not a test decision)."""

POWER = 0.8
"""The power at which :func:`min_detectable_d` reports the smallest detectable effect (Cohen 1988's convention)."""

EXACT_MANN_WHITNEY_SPLITS = 20_000
"""Mann–Whitney's p is exact (every split of the pooled runs into the two group sizes, ties included) when there are
at most this many splits, C(n_a + n_b, n_a): 8 against 8 has 12,870 (~0.1 s). Above it scipy's default applies
(exact without ties up to 8 per group, else the normal approximation with tie correction)."""


def _num(x: Any) -> float | None:
    """A plain float, or None for anything undefined (None, NaN, inf), so results serialise as strict JSON."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass(frozen=True)
class Sample:
    """One group of runs: the values of the runs that reached the threshold, plus how many were censored at
    ``budget`` (their value is only known to exceed it). ``budget`` is required when anything is censored."""

    values: tuple[float, ...]
    censored: int = 0
    budget: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(float(v) for v in self.values))
        if not all(math.isfinite(v) for v in self.values):
            raise ValueError("sample values must be finite; mark censored runs with None, not NaN or inf")
        if self.censored < 0:
            raise ValueError(f"censored must be >= 0, got {self.censored}")
        if self.budget is not None and not math.isfinite(self.budget):
            raise ValueError(f"budget must be finite, got {self.budget}")
        if self.censored and self.budget is None:
            raise ValueError("a sample with censored runs needs the budget they were censored at")
        if self.budget is not None and any(v > self.budget for v in self.values):
            raise ValueError(f"a reached value exceeds the budget {self.budget}")

    @classmethod
    def from_values(cls, values: Sequence[float | None], budget: float | None = None) -> Sample:
        """Build from per-run values where None marks a run censored at ``budget``."""
        return cls(tuple(v for v in values if v is not None), sum(v is None for v in values), budget)

    @property
    def n(self) -> int:
        return len(self.values) + self.censored


SampleLike = Sample | Sequence[float | None]


def _as_sample(s: SampleLike) -> Sample:
    return s if isinstance(s, Sample) else Sample.from_values(s)


@dataclass(frozen=True)
class Summary:
    """Descriptive statistics over the reached values; ``n_censored`` runs sit beside them, uncounted.

    ``ci_*`` is the t-interval of the mean, given from 2 reached runs: with 2 its quantile is t(0.975, 1) = 12.7,
    so the 95% interval is 12.7 times as wide as the gap between the two runs, which is what 2 runs can tell.
    ``boot_*`` is the percentile bootstrap interval, given only from ``min_boot_n`` (:data:`MIN_BOOTSTRAP_N`)
    reached runs; below that it is None and ``boot_note`` says why. ``km_median`` is the Kaplan–Meier median over
    all runs (censored included); None means fewer than half the runs reached it."""

    n: int
    n_reached: int
    n_censored: int
    budget: float | None
    mean: float | None
    sd: float | None
    sem: float | None
    cv: float | None
    median: float | None
    min: float | None
    max: float | None
    confidence: float
    ci_low: float | None
    ci_high: float | None
    boot_low: float | None
    boot_high: float | None
    km_median: float | None
    min_boot_n: int = MIN_BOOTSTRAP_N
    boot_note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: v if isinstance(v, int | str) else _num(v) for k, v in asdict(self).items()}


def _too_few_for_bootstrap(counts: Sequence[int], min_boot_n: int) -> str:
    """The note for an interval left out: "" when every count reaches ``min_boot_n``."""
    if min(counts) >= min_boot_n:
        return ""
    runs = " and ".join(str(c) for c in counts)
    return (
        f"n too small for a bootstrap interval (n = {runs} reached run{'s' if counts != [1] else ''}; at least "
        f"{min_boot_n} per group: below that a percentile bootstrap interval is too narrow)"
    )


def kaplan_meier_median(sample: SampleLike) -> float | None:
    """First value where the Kaplan–Meier survival estimate drops to <= 0.5; None when it never does.

    Every run in a sample is censored at the same budget, after every reached value, so each product-limit factor
    telescopes and survival just after ``t`` is exactly (n - #reached <= t) / n; integer counts avoid rounding."""
    s = _as_sample(sample)
    # Within a tie the first index crossing n/2 returns the same value as the last one would, so ties need no care.
    return next((v for i, v in enumerate(sorted(s.values), start=1) if 2 * i >= s.n), None)


def describe(
    sample: SampleLike,
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
    min_boot_n: int = MIN_BOOTSTRAP_N,
) -> Summary:
    """Summarise one group of runs (see ``Summary``); with fewer than two reached runs, spreads and CIs are None,
    and the bootstrap interval needs ``min_boot_n`` reached runs (lowering it is the caller's claim to justify)."""
    s = _as_sample(sample)
    x = np.asarray(s.values)
    k = len(x)
    mean = float(x.mean()) if k else None
    sd = sem = cv = ci_low = ci_high = boot_low = boot_high = None
    boot_note = _too_few_for_bootstrap([k], max(min_boot_n, 2))
    if k >= 2:
        sd = float(x.std(ddof=1))
        sem = sd / math.sqrt(k)
        cv = sd / mean if mean else None
        # t.interval with a zero scale yields NaN; the explicit half-width gives the degenerate interval instead.
        half = float(sps.t.ppf((1 + confidence) / 2, df=k - 1)) * sem
        ci_low, ci_high = mean - half, mean + half
    if k >= 2 and not boot_note:
        rng = np.random.default_rng(seed)
        means = x[rng.integers(0, k, size=(n_boot, k))].mean(axis=1)
        alpha = 100 * (1 - confidence) / 2
        boot_low, boot_high = (float(q) for q in np.percentile(means, [alpha, 100 - alpha]))
    return Summary(
        n=s.n,
        n_reached=k,
        n_censored=s.censored,
        budget=s.budget,
        mean=mean,
        sd=sd,
        sem=sem,
        cv=cv,
        median=float(np.median(x)) if k else None,
        min=float(x.min()) if k else None,
        max=float(x.max()) if k else None,
        confidence=confidence,
        ci_low=ci_low,
        ci_high=ci_high,
        boot_low=boot_low,
        boot_high=boot_high,
        km_median=kaplan_meier_median(s) if s.n else None,
        min_boot_n=max(min_boot_n, 2),
        boot_note=boot_note,
    )


@dataclass(frozen=True)
class Normality:
    """Shapiro–Wilk test of one group of values (H0: drawn from a normal distribution).

    ``testable`` is False, with the reason in ``note``, for fewer than 3 values (the test is undefined) and for
    values that are all equal (no spread to test; scipy would return W = 1 with a warning). ``rejected`` is
    ``p < alpha`` when testable, else None. With 5 seeds the test has little power: not rejected is weak evidence
    of normality, so a t-test stays paired with the rank test beside it."""

    n: int
    statistic: float | None
    p: float | None
    alpha: float
    testable: bool
    note: str = ""

    @property
    def rejected(self) -> bool | None:
        return None if self.p is None else self.p < self.alpha

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "shapiro_w": _num(self.statistic),
            "shapiro_p": _num(self.p),
            "alpha": self.alpha,
            "testable": self.testable,
            "rejected": self.rejected,
            "note": self.note,
        }


def shapiro(values: Sequence[float | None], alpha: float = NORMALITY_ALPHA) -> Normality:
    """Shapiro–Wilk on the defined values (None and non-finite values are left out and not counted)."""
    x = np.asarray([v for v in values if _num(v) is not None], dtype=float)
    n = len(x)
    if n < 3:
        return Normality(n, None, None, alpha, False, f"n = {n} < 3: Shapiro–Wilk needs at least 3 values")
    if x.max() == x.min():
        return Normality(n, None, None, alpha, False, "all values equal: no spread to test")
    w, p = sps.shapiro(x)
    return Normality(n, _num(w), _num(p), alpha, True)


def normality_rejected(*checks: Normality) -> bool | None:
    """Whether a test that assumes normality in every group should be distrusted: True when any testable group
    rejects normality, False when every group was testable and none rejects, None when some group could not be
    tested and none rejects (too few values to tell)."""
    if any(c.rejected for c in checks):
        return True
    return False if all(c.testable for c in checks) else None


@dataclass(frozen=True)
class Comparison:
    """Group ``a`` against group ``b``. Welch's t, Cohen's d and Hedges' g use reached values only (d, g and
    ``mean_difference`` are a - b); Mann–Whitney uses every run. ``*_adjusted`` are set by ``compare_all``.

    ``shapiro_p_a``/``shapiro_p_b`` test the reached values Welch's t uses for normality (None with fewer than 3 or
    all equal); ``normality_rejected`` (see :func:`normality_rejected`) flags a Welch p-value not to rely on, in
    which case read Mann–Whitney's.

    What the comparison could show, stated beside what it found: ``n_a``/``n_b`` count every run,
    ``n_reached_a``/``n_reached_b`` those Welch's t, d and g use, and ``welch_dropped_censored`` the censored runs
    they leave out (Mann–Whitney keeps them). ``min_detectable_d`` (:func:`min_detectable_d`) is the smallest
    |Cohen's d| detectable with power ``power`` at two-sided level ``alpha`` with the reached counts;
    ``min_mann_whitney_p`` (:func:`min_mann_whitney_p`) the smallest p Mann–Whitney can give with ``n_a`` and
    ``n_b`` runs: when it is above ``alpha`` no outcome could be significant. ``mann_whitney_method`` says how its
    p was computed ("exact": every split of the runs, ties included; "normal approximation"). ``note`` puts the
    limits in words, one sentence each."""

    a: str
    b: str
    n_a: int
    n_b: int
    n_censored_a: int
    n_censored_b: int
    mean_difference: float | None
    welch_t: float | None
    welch_p: float | None
    mann_whitney_u: float | None
    mann_whitney_p: float | None
    cohens_d: float | None
    hedges_g: float | None
    welch_p_adjusted: float | None = None
    mann_whitney_p_adjusted: float | None = None
    shapiro_p_a: float | None = None
    shapiro_p_b: float | None = None
    normality_rejected: bool | None = None
    n_reached_a: int = 0
    n_reached_b: int = 0
    welch_dropped_censored: int = 0
    alpha: float = ALPHA
    power: float = POWER
    min_detectable_d: float | None = None
    min_mann_whitney_p: float | None = None
    mann_whitney_method: str = ""
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        # bool is an int: flags stay True/False/None.
        return {k: v if isinstance(v, int | str) else _num(v) for k, v in asdict(self).items()}


def min_mann_whitney_p(n_a: int, n_b: int) -> float | None:
    """The smallest two-sided p-value the Mann–Whitney U test can give with groups of ``n_a`` and ``n_b`` runs.

    Under H0 every split of the pooled ranks into the two groups is equally likely, C(n_a + n_b, n_a) of them
    (Mann & Whitney 1947; Hollander, Wolfe & Chicken 2014, *Nonparametric Statistical Methods*, §4.1). The most
    extreme outcome, one group entirely below the other, is one split, so its one-sided p is 1/C and its two-sided
    p 2/C (capped at 1): 1/3 for 2 against 2, 1/10 for 3 against 3, 1/35 for 4 against 4. This is for untied
    values; ties (censored runs in both groups tie among themselves) can only raise it. None when a group is
    empty."""
    if n_a < 1 or n_b < 1:
        return None
    return min(1.0, 2 / math.comb(n_a + n_b, n_a))


# Past this many degrees of freedom the t-test's power is computed with the normal distribution: scipy's noncentral
# t returns NaN for some large (df, noncentrality), and t(1000) differs from the normal by under 0.1% in its quantile.
NORMAL_POWER_DF = 1000


def _t_power(d: float, n_a: int, n_b: int, alpha: float) -> float:
    """Power of the two-sided equal-variance t-test at Cohen's d: P(|T| > t_{1-α/2}), T noncentral t."""
    df = n_a + n_b - 2
    nc = d * math.sqrt(n_a * n_b / (n_a + n_b))
    if df > NORMAL_POWER_DF:
        crit = float(sps.norm.ppf(1 - alpha / 2))
        return float(sps.norm.sf(crit - nc) + sps.norm.cdf(-crit - nc))
    crit = float(sps.t.ppf(1 - alpha / 2, df))
    return float(sps.nct.sf(crit, df, nc) + sps.nct.cdf(-crit, df, nc))


def min_detectable_d(n_a: int, n_b: int, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """The smallest Cohen's d a two-sample t-test on ``n_a`` and ``n_b`` values detects with probability ``power``
    at two-sided level ``alpha``; None below 2 values in a group.

    Exact for the equal-variance t-test: the statistic is noncentral t with n_a + n_b - 2 degrees of freedom and
    noncentrality d·√(n_a·n_b / (n_a + n_b)), and the power P(|T| > t_{1-α/2}) is solved for d (Cohen 1988,
    *Statistical Power Analysis for the Behavioral Sciences*, ch. 2; 64 per group detect d = 0.5 at 80%). Welch's t,
    which :func:`compare` reports, has a little less power at equal variances (fewer degrees of freedom), so this is
    a slight understatement of the effect it needs. The normal approximation (z_{1-α/2} + z_power)·√(1/n_a + 1/n_b)
    is close at large n and too optimistic at small n: 2 runs against 2 need d ≈ 5.7, not 2.8."""
    if n_a < 2 or n_b < 2:
        return None
    if not (0 < alpha < 1 and alpha < power < 1):
        raise ValueError(f"need 0 < alpha < power < 1, got alpha = {alpha}, power = {power}")
    # Power rises with d from alpha at d = 0: bracket the root by doubling, then solve.
    high = 1.0
    while _t_power(high, n_a, n_b, alpha) < power:
        high *= 2
    return float(optimize.brentq(lambda d: _t_power(d, n_a, n_b, alpha) - power, 0.0, high, xtol=1e-10))


def _exact_rank_sum_p(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided Mann–Whitney p over every split of the pooled mid-ranks into the two group sizes, equally likely
    under H0 (the exact conditional null, ties included): 2 · min(P(W <= w), P(W >= w)), capped at 1, for the
    observed rank sum w of ``x``. Mid-ranks are multiples of 1/2, so the sums compare exactly in floating point."""
    ranks = sps.rankdata(np.concatenate([x, y]))
    w = ranks[: len(x)].sum()
    splits = np.array(list(itertools.combinations(range(len(ranks)), len(x))), dtype=np.intp)
    sums = ranks[splits].sum(axis=1)
    return min(1.0, 2 * min(float(np.mean(sums <= w)), float(np.mean(sums >= w))))


def _mann_whitney(x: np.ndarray, y: np.ndarray) -> tuple[float | None, float | None, str]:
    """U of ``x``, two-sided p, and how p was computed: exact over every split when there are few enough."""
    u = float(sps.rankdata(np.concatenate([x, y]))[: len(x)].sum() - len(x) * (len(x) + 1) / 2)
    if math.comb(len(x) + len(y), len(x)) <= EXACT_MANN_WHITNEY_SPLITS:
        # scipy's default turns to the normal approximation whenever values tie (as censored runs do), which with
        # 3 runs against 3 gives p = 0.064 where no split can give less than 0.1.
        return u, _exact_rank_sum_p(x, y), "exact"
    # More splits than that means a group of more than 8 (8 against 8 has 12,870), where scipy's default is the
    # normal approximation (with tie and continuity corrections), close at these sizes.
    return u, _num(sps.mannwhitneyu(x, y, alternative="two-sided").pvalue), "normal approximation"


def _effect_sizes(x: np.ndarray, y: np.ndarray) -> tuple[float | None, float | None]:
    n1, n2 = len(x), len(y)
    if n1 < 2 or n2 < 2:
        return None, None
    df = n1 + n2 - 2
    pooled = math.sqrt(((n1 - 1) * x.var(ddof=1) + (n2 - 1) * y.var(ddof=1)) / df)
    if pooled == 0:
        return None, None
    d = float(x.mean() - y.mean()) / pooled
    # Exact small-sample correction J(df) = Γ(df/2) / (√(df/2) Γ((df-1)/2)); ≈ 1 - 3/(4df - 1).
    j = math.exp(special.gammaln(df / 2) - special.gammaln((df - 1) / 2)) / math.sqrt(df / 2)
    return d, d * j


def compare(a: SampleLike, b: SampleLike, names: tuple[str, str] = ("a", "b")) -> Comparison:
    """Compare two groups of runs.

    Mann–Whitney U (two-sided) ranks every censored run above every reached value, with censored runs tied among
    themselves. That is exact when both groups were censored at the same budget (a censored run is known to exceed
    every reached value, which is <= the budget), so if either group has censored runs and the budgets differ this
    raises ValueError. Tests and effect sizes that need two reached values per group are None otherwise."""
    sa, sb = _as_sample(a), _as_sample(b)
    if (sa.censored or sb.censored) and sa.budget != sb.budget:
        raise ValueError(
            f"cannot compare {names[0]!r} and {names[1]!r}: censored runs need one shared budget, "
            f"got {sa.budget} and {sb.budget}"
        )
    x, y = np.asarray(sa.values), np.asarray(sb.values)
    welch_t = welch_p = mw_u = mw_p = None
    mw_method = ""
    with warnings.catch_warnings():  # constant groups warn and give NaN, reported as None
        warnings.simplefilter("ignore", RuntimeWarning)
        if len(x) >= 2 and len(y) >= 2:
            welch_t, welch_p = sps.ttest_ind(x, y, equal_var=False)
        if sa.n and sb.n:
            xc = np.concatenate([x, np.full(sa.censored, np.inf)])
            yc = np.concatenate([y, np.full(sb.censored, np.inf)])
            mw_u, mw_p, mw_method = _mann_whitney(xc, yc)
    d, g = _effect_sizes(x, y)
    normal_a, normal_b = shapiro(x), shapiro(y)
    dropped = sa.censored + sb.censored  # Welch's t, d and g see reached values only
    min_d = min_detectable_d(len(x), len(y))
    min_p = min_mann_whitney_p(sa.n, sb.n)
    notes = [f"n = {sa.n} ({names[0]}) and {sb.n} ({names[1]}) runs."]
    if dropped and welch_p is not None:
        notes.append(f"Welch's t leaves out {dropped} censored run{'s' if dropped != 1 else ''}.")
    if min_d is not None:
        notes.append(f"Smallest effect detectable ({POWER:.0%} power, two-sided {ALPHA:g}): |d| = {min_d:.2g}.")
    if min_p is not None and min_p > ALPHA:
        notes.append(f"Mann–Whitney cannot reach p < {ALPHA:g} with these n (smallest p {min_p:.3g}).")
    return Comparison(
        a=names[0],
        b=names[1],
        n_a=sa.n,
        n_b=sb.n,
        n_censored_a=sa.censored,
        n_censored_b=sb.censored,
        mean_difference=float(x.mean() - y.mean()) if len(x) and len(y) else None,
        welch_t=_num(welch_t),
        welch_p=_num(welch_p),
        mann_whitney_u=_num(mw_u),
        mann_whitney_p=_num(mw_p),
        cohens_d=d,
        hedges_g=g,
        shapiro_p_a=normal_a.p,
        shapiro_p_b=normal_b.p,
        normality_rejected=normality_rejected(normal_a, normal_b),
        n_reached_a=len(x),
        n_reached_b=len(y),
        welch_dropped_censored=dropped,
        min_detectable_d=min_d,
        min_mann_whitney_p=min_p,
        mann_whitney_method=mw_method,
        note=" ".join(notes),
    )


def adjust_p_values(p_values: Sequence[float], method: Method = "holm") -> list[float]:
    """Family-wise corrected p-values, as statsmodels' ``multipletests`` (Holm step-down, monotone, capped at 1)."""
    p = np.asarray(p_values, dtype=float)
    if np.any(~((p >= 0) & (p <= 1))):
        raise ValueError("p-values must lie in [0, 1]")
    m = len(p)
    if method == "bonferroni":
        return np.minimum(p * m, 1.0).tolist()
    if method != "holm":
        raise ValueError(f"unknown method {method!r}; use 'holm' or 'bonferroni'")
    order = np.argsort(p, kind="stable")
    # The i-th smallest p is multiplied by (m - i); the running max keeps adjusted values in the order of raw ones.
    stepped = np.minimum(np.maximum.accumulate(p[order] * (m - np.arange(m))), 1.0)
    out = np.empty(m)
    out[order] = stepped
    return out.tolist()


def _adjust_defined(ps: list[float | None], method: Method) -> list[float | None]:
    """Adjust within the family of defined p-values; undefined ones stay None and do not count towards m."""
    idx = [i for i, p in enumerate(ps) if p is not None]
    out: list[float | None] = [None] * len(ps)
    for i, q in zip(idx, adjust_p_values([ps[i] for i in idx], method), strict=True):
        out[i] = q
    return out


def compare_all(
    samples: Mapping[str, SampleLike], reference: str | None = None, method: Method = "holm"
) -> list[Comparison]:
    """Every pair of groups (in mapping order), or each group against ``reference`` (as a = group, b = reference),
    with Welch and Mann–Whitney p-values each corrected across the family of comparisons."""
    if reference is not None and reference not in samples:
        raise ValueError(f"reference {reference!r} is not one of {list(samples)}")
    if reference is None:
        pairs = list(itertools.combinations(samples, 2))
    else:
        pairs = [(name, reference) for name in samples if name != reference]
    results = [compare(samples[a], samples[b], names=(a, b)) for a, b in pairs]
    welch = _adjust_defined([r.welch_p for r in results], method)
    mw = _adjust_defined([r.mann_whitney_p for r in results], method)
    return [
        replace(r, welch_p_adjusted=w, mann_whitney_p_adjusted=u) for r, w, u in zip(results, welch, mw, strict=True)
    ]


def spearman(x: Sequence[float | None], y: Sequence[float | None]) -> tuple[float, float] | None:
    """Spearman's (rho, p) over pairs where both are defined; None with fewer than 3 pairs or a constant input."""
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} and {len(y)}")
    pairs = [(a, b) for a, b in zip(x, y, strict=True) if _num(a) is not None and _num(b) is not None]
    if len(pairs) < 3:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sps.ConstantInputWarning)
        rho, p = sps.spearmanr(*zip(*pairs, strict=True))
    rho, p = _num(rho), _num(p)
    return None if rho is None or p is None else (rho, p)


def max_abs_z(n: int) -> float | None:
    """The largest |z| any of ``n`` values can have, z using the sample sd (ddof=1): (n - 1)/√n (Shiffler 1988),
    attained when n - 1 values are equal. None below n = 2 (no sample sd).

    So |z| > 3 needs n >= 11 and |z| > 2 needs n >= 6: with 5 seeds the bound is 4/√5 ≈ 1.79 and no threshold of
    1.79 or more can flag anything (with the population sd, ddof=0, the bound is √(n - 1) = 2 at n = 5, still not
    above 2)."""
    return (n - 1) / math.sqrt(n) if n >= 2 else None


def zscore_outliers(values: Sequence[float], threshold: float = 3.0) -> list[int]:
    """Indices of values with |z| > threshold, z using the sample sd (ddof=1).

    With ddof=1 no value can have |z| above (n-1)/√n (:func:`max_abs_z`), so a threshold of 3 flags nothing below
    n = 11, and 2 nothing below n = 6."""
    x = np.asarray(values, dtype=float)
    if len(x) < 3:
        return []
    sd = x.std(ddof=1)
    if sd == 0:
        return []
    return np.flatnonzero(np.abs(x - x.mean()) / sd > threshold).tolist()


def steps_to_threshold(steps: Sequence[float], values: Sequence[float], threshold: float) -> float | None:
    """The first of ``steps`` whose metric is >= threshold; None if it never is (a censored run). NaN never counts.

    ``steps`` is whatever x axis the caller logs (optimizer steps, or the epoch column): the result is in its unit."""
    if len(steps) != len(values):
        raise ValueError(f"steps and values differ in length: {len(steps)} and {len(values)}")
    hit = np.flatnonzero(np.asarray(values, dtype=float) >= threshold)
    return float(steps[hit[0]]) if len(hit) else None


epochs_to_threshold = steps_to_threshold
"""The former name of :func:`steps_to_threshold`, kept for callers: nothing in it assumes epochs."""


def first_crossings(
    steps: Sequence[float], values: Sequence[float], thresholds: Sequence[float] = (0.9, 0.95, 0.99, 0.999)
) -> dict[float, float | None]:
    """:func:`steps_to_threshold` for each threshold."""
    return {t: steps_to_threshold(steps, values, t) for t in thresholds}


def epochs_from_steps(steps: float, batch_size: int | None, n_train: int) -> float:
    """Passes over the training set after ``steps`` optimizer updates: the labelled conversion for reports, whose
    statistics are in steps (the unit of training budgets and of metrics.jsonl's ``step``).

    Full batch (``batch_size`` None, or at least ``n_train``): one step is one epoch, so epochs = steps. Minibatch:
    the loop cuts each epoch's permutation into ceil(n_train / batch_size) batches, the last one short
    (:func:`grokscope.training.loop.batch_indices`), so epochs = steps / ceil(n_train / batch_size), as
    metrics.jsonl's ``epoch`` column. That is steps × batch_size / n_train when the batch size divides the
    training set, and slightly more otherwise (the short batch still takes a step)."""
    if n_train < 1:
        raise ValueError(f"n_train must be at least 1, got {n_train}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1 or None (full batch), got {batch_size}")
    if batch_size is None or batch_size >= n_train:
        return float(steps)
    return float(steps) / -(-n_train // batch_size)


@dataclass(frozen=True)
class Spread:
    """Mean ± sd (ddof=1) of the defined values, with their count and range; sd is None below 2 values."""

    n: int
    mean: float | None
    sd: float | None
    min: float | None
    max: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "mean": _num(self.mean), "sd": _num(self.sd), "min": _num(self.min), "max": _num(self.max)}


def spread(values: Sequence[float | None]) -> Spread:
    """:class:`Spread` of ``values``; None and non-finite values are left out and not counted."""
    x = np.asarray([v for v in values if _num(v) is not None], dtype=float)
    if not len(x):
        return Spread(0, None, None, None, None)
    return Spread(len(x), float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else None, float(x.min()), float(x.max()))


@dataclass(frozen=True)
class OneSample:
    """Values (one per seed) against a fixed ``mu``, e.g. retention accuracy against chance 1/p.

    ``t``, ``p``: one-sample t-test (``alternative``: the mean is greater than, less than or unequal to ``mu``);
    None below 2 values or when every value is equal (the sd is 0 and t is undefined, not infinite).
    ``wilcoxon_w``, ``wilcoxon_p``: Wilcoxon signed-rank test, the rank alternative that does not assume normality;
    ``wilcoxon_w`` is W+, the sum of the ranks of |x - mu| over the values above ``mu``. Values equal to ``mu`` are
    dropped (Wilcoxon's convention); p is exact (all 2^n sign patterns) when no |x - mu| are tied and n <= 50.
    With 5 values its smallest one-sided p is 1/32. ``normality`` is Shapiro–Wilk on the values."""

    n: int
    mean: float | None
    sd: float | None
    mu: float
    alternative: str
    t: float | None
    p: float | None
    wilcoxon_w: float | None
    wilcoxon_p: float | None
    normality: Normality

    def to_dict(self) -> dict[str, Any]:
        out = {k: v if isinstance(v, int | str) else _num(v) for k, v in asdict(self).items() if k != "normality"}
        out["shapiro_p"] = _num(self.normality.p)
        out["normality_rejected"] = self.normality.rejected
        out["normality_note"] = self.normality.note
        return out


def one_sample(values: Sequence[float | None], mu: float, alternative: Alternative = "greater") -> OneSample:
    """Test the values (None and non-finite ones left out) against ``mu``; see :class:`OneSample`."""
    if alternative not in ("greater", "less", "two-sided"):
        raise ValueError(f"alternative must be 'greater', 'less' or 'two-sided', got {alternative!r}")
    x = np.asarray([v for v in values if _num(v) is not None], dtype=float)
    n = len(x)
    t = p = w = wp = None
    if n >= 2 and x.max() != x.min():
        # scipy turns an all-equal sample into t = ±1e16 from rounding in the sd; the check above keeps it None.
        t, p = sps.ttest_1samp(x, mu, alternative=alternative)
    d = x - mu
    d = d[d != 0]
    if len(d):
        w = float(sps.rankdata(np.abs(d))[d > 0].sum())
        with warnings.catch_warnings():  # small or tied samples warn that the normal approximation is used
            warnings.simplefilter("ignore")
            wp = sps.wilcoxon(d, alternative=alternative).pvalue
    return OneSample(
        n=n,
        mean=float(x.mean()) if n else None,
        sd=float(x.std(ddof=1)) if n > 1 else None,
        mu=float(mu),
        alternative=alternative,
        t=_num(t),
        p=_num(p),
        wilcoxon_w=w,
        wilcoxon_p=_num(wp),
        normality=shapiro(x),
    )


@dataclass(frozen=True)
class Speedup:
    """How many times faster ``name`` reaches a threshold than ``reference``: mean(reference) / mean(name), each mean
    over the runs that reached it (censored runs are counted beside, not averaged in: a censored reference run makes
    the ratio an underestimate, a censored run of ``name`` an overestimate).

    ``ci_low``/``ci_high``: percentile bootstrap interval of the ratio, the two groups resampled independently
    (they are different runs; seeds need not match); None below ``min_boot_n`` (:data:`MIN_BOOTSTRAP_N`) reached
    runs in either group, where it would be too narrow (with 2 runs per group it spans little more than the ratios
    of the runs' extremes). ``fieller_low``/``fieller_high``: the Fieller interval of the same ratio of means
    (:func:`fieller_interval`), given from 2 reached runs per group at any size; None when unbounded or undefined.
    ``note`` says why an interval is missing."""

    name: str
    reference: str
    ratio: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float
    mean: float | None
    reference_mean: float | None
    n_reached: int
    n_censored: int
    reference_n_reached: int
    reference_n_censored: int
    note: str = ""
    fieller_low: float | None = None
    fieller_high: float | None = None
    fieller_df: float | None = None
    min_boot_n: int = MIN_BOOTSTRAP_N

    def to_dict(self) -> dict[str, Any]:
        return {k: v if isinstance(v, int | str) else _num(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class RatioInterval:
    """A confidence interval of mean(numerator) / mean(denominator); ``low``/``high`` None with ``note`` saying why."""

    low: float | None
    high: float | None
    df: float | None
    confidence: float
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: v if isinstance(v, str) else _num(v) for k, v in asdict(self).items()}


def fieller_interval(
    numerator: Sequence[float], denominator: Sequence[float], confidence: float = 0.95
) -> RatioInterval:
    """Fieller's interval for the ratio of the means of two independent normal samples, unequal variances allowed.

    With means ȳ (numerator), x̄ (denominator) and squared standard errors a = s_y²/n_y, b = s_x²/n_x, the ratio
    ρ = μ_y/μ_x is in the interval when (ȳ - ρ·x̄)² <= t²·(a + ρ²·b): ȳ - ρ·x̄ has mean 0 and variance
    σ_y²/n_y + ρ²·σ_x²/n_x at the true ρ (Fieller 1954, *Some problems in interval estimation*, JRSS B 16(2);
    the unequal-variance form with Welch–Satterthwaite degrees of freedom evaluated at the estimated ratio, as in
    Tamhane & Logan 2004, J. Biopharm. Stat. 14(4)). Solving the quadratic gives a bounded interval exactly when
    x̄ differs from 0 at this level (x̄² > t²·b); otherwise the set is unbounded and None is returned with a note.

    Unlike the percentile bootstrap it uses the t quantile, so it is honest at 2 runs per group (and very wide:
    t(0.975, 1) = 12.7). It assumes normal means, which times to a threshold over a few seeds only roughly are."""
    y, x = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    if len(x) < 2 or len(y) < 2:
        return RatioInterval(None, None, None, confidence, "fewer than 2 values in a group: no interval")
    my, mx = float(y.mean()), float(x.mean())
    a, b = float(y.var(ddof=1)) / len(y), float(x.var(ddof=1)) / len(x)
    if a == 0 and b == 0:
        return RatioInterval(None, None, None, confidence, "no spread in either group: no interval")
    if mx == 0:
        return RatioInterval(None, None, None, confidence, "the denominator's mean is 0: no ratio")
    rho = my / mx
    df = (a + rho**2 * b) ** 2 / (a**2 / (len(y) - 1) + rho**4 * b**2 / (len(x) - 1)) if a or rho else math.nan
    if not math.isfinite(df):  # a constant numerator of 0: the ratio is 0 with no variance to scale
        return RatioInterval(None, None, None, confidence, "the numerator is 0 in every run: no interval")
    t2 = float(sps.t.ppf((1 + confidence) / 2, df)) ** 2
    lead = mx**2 - t2 * b
    if lead <= 0:
        return RatioInterval(
            None,
            None,
            df,
            confidence,
            "Fieller interval unbounded: the denominator's mean is not distinguishable from 0",
        )
    # The discriminant t²·(a·lead + b·ȳ²) is never negative once lead > 0.
    root = math.sqrt(t2 * (a * lead + b * my**2))
    return RatioInterval((mx * my - root) / lead, (mx * my + root) / lead, df, confidence)


def speedup(
    reference: SampleLike,
    sample: SampleLike,
    names: tuple[str, str] = ("sample", "reference"),
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
    min_boot_n: int = MIN_BOOTSTRAP_N,
) -> Speedup:
    """The speed-up of ``sample`` over ``reference`` (see :class:`Speedup`); ``names`` is (sample, reference).

    The bootstrap (from ``min_boot_n`` reached runs per group) draws ``n_boot`` resamples of the reference's
    reached values, then ``n_boot`` of the sample's, from ``numpy.random.default_rng(seed)``."""
    r, s = _as_sample(reference), _as_sample(sample)
    y, x = np.asarray(r.values), np.asarray(s.values)
    ratio = low = high = None
    fieller: RatioInterval | None = None
    notes: list[str] = []
    min_boot_n = max(min_boot_n, 2)
    if not len(x) or not len(y):
        notes.append(f"no run of {names[0] if not len(x) else names[1]} reached the threshold")
    elif x.mean() == 0:
        notes.append(f"every reached run of {names[0]} was at the threshold from the start: no finite speed-up")
    else:
        ratio = float(y.mean() / x.mean())
        if len(x) < 2 or len(y) < 2:
            notes.append("fewer than 2 reached runs in a group: no interval")
        else:
            fieller = fieller_interval(y, x, confidence)
            if fieller.note:
                notes.append(fieller.note)
            too_few = _too_few_for_bootstrap([len(x), len(y)], min_boot_n)
            if too_few:
                notes.append(too_few)
    if ratio is not None and min(len(x), len(y)) >= min_boot_n:
        rng = np.random.default_rng(seed)
        ref_means = y[rng.integers(0, len(y), size=(n_boot, len(y)))].mean(axis=1)
        means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = ref_means / means
        if np.isfinite(ratios).all():
            alpha = 100 * (1 - confidence) / 2
            low, high = (float(q) for q in np.percentile(ratios, [alpha, 100 - alpha]))
        else:  # a resample of only zeros (runs at the threshold from the start) has no ratio
            notes.append("some resamples had mean 0 (runs at the threshold from the start): no bootstrap interval")
    return Speedup(
        name=names[0],
        reference=names[1],
        ratio=ratio,
        ci_low=low,
        ci_high=high,
        confidence=confidence,
        mean=float(x.mean()) if len(x) else None,
        reference_mean=float(y.mean()) if len(y) else None,
        n_reached=len(x),
        n_censored=s.censored,
        reference_n_reached=len(y),
        reference_n_censored=r.censored,
        note="; ".join(notes),
        fieller_low=None if fieller is None else fieller.low,
        fieller_high=None if fieller is None else fieller.high,
        fieller_df=None if fieller is None else _num(fieller.df),
        min_boot_n=min_boot_n,
    )
