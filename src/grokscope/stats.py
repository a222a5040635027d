"""Multi-seed statistics for grokking experiments: describe and compare groups of runs, e.g. epochs to 99.9% test
accuracy from grokked, memorized and random inits, a few seeds each.

A run that never reaches its threshold within the training budget is *censored*: its value is only known to be
"> budget". Censored runs are counted and reported beside every statistic, never dropped silently and never replaced
by the budget, which would bias means downwards. Randomness (the bootstrap) comes only from an explicit ``seed``.

Beside the two-group comparisons: Shapiro–Wilk normality checks (:func:`shapiro`, also attached to every Welch test),
a one-sample test against a fixed value such as chance accuracy (:func:`one_sample`), the speed-up of one group over
a reference with a bootstrap interval (:func:`speedup`), and mean ± sd summaries (:func:`spread`).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np
from scipy import special
from scipy import stats as sps

Method = Literal["holm", "bonferroni"]
Alternative = Literal["greater", "less", "two-sided"]

NORMALITY_ALPHA = 0.05
"""Shapiro–Wilk rejects normality below this p-value (the conventional level; a flag, not a correction)."""


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
    ``ci_*`` is the t-interval of the mean, ``boot_*`` the percentile bootstrap interval. ``km_median`` is the
    Kaplan–Meier median over all runs (censored included); None means fewer than half the runs reached it."""

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

    def to_dict(self) -> dict[str, Any]:
        return {k: v if isinstance(v, int) else _num(v) for k, v in asdict(self).items()}


def kaplan_meier_median(sample: SampleLike) -> float | None:
    """First value where the Kaplan–Meier survival estimate drops to <= 0.5; None when it never does.

    Every run in a sample is censored at the same budget, after every reached value, so each product-limit factor
    telescopes and survival just after ``t`` is exactly (n - #reached <= t) / n; integer counts avoid rounding."""
    s = _as_sample(sample)
    # Within a tie the first index crossing n/2 returns the same value as the last one would, so ties need no care.
    return next((v for i, v in enumerate(sorted(s.values), start=1) if 2 * i >= s.n), None)


def describe(sample: SampleLike, confidence: float = 0.95, n_boot: int = 10_000, seed: int = 0) -> Summary:
    """Summarise one group of runs (see ``Summary``); with fewer than two reached runs, spreads and CIs are None."""
    s = _as_sample(sample)
    x = np.asarray(s.values)
    k = len(x)
    mean = float(x.mean()) if k else None
    sd = sem = cv = ci_low = ci_high = boot_low = boot_high = None
    if k >= 2:
        sd = float(x.std(ddof=1))
        sem = sd / math.sqrt(k)
        cv = sd / mean if mean else None
        # t.interval with a zero scale yields NaN; the explicit half-width gives the degenerate interval instead.
        half = float(sps.t.ppf((1 + confidence) / 2, df=k - 1)) * sem
        ci_low, ci_high = mean - half, mean + half
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
    which case read Mann–Whitney's."""

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

    def to_dict(self) -> dict[str, Any]:
        # bool is an int: flags stay True/False/None.
        return {k: v if isinstance(v, int | str) else _num(v) for k, v in asdict(self).items()}


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
    with warnings.catch_warnings():  # constant groups warn and give NaN, reported as None
        warnings.simplefilter("ignore", RuntimeWarning)
        if len(x) >= 2 and len(y) >= 2:
            welch_t, welch_p = sps.ttest_ind(x, y, equal_var=False)
        if sa.n and sb.n:
            xc = np.concatenate([x, np.full(sa.censored, np.inf)])
            yc = np.concatenate([y, np.full(sb.censored, np.inf)])
            mw_u, mw_p = sps.mannwhitneyu(xc, yc, alternative="two-sided")
    d, g = _effect_sizes(x, y)
    normal_a, normal_b = shapiro(x), shapiro(y)
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


def epochs_to_threshold(steps: Sequence[float], values: Sequence[float], threshold: float) -> float | None:
    """First step whose metric is >= threshold; None if it never is (a censored run). NaN never counts."""
    if len(steps) != len(values):
        raise ValueError(f"steps and values differ in length: {len(steps)} and {len(values)}")
    hit = np.flatnonzero(np.asarray(values, dtype=float) >= threshold)
    return float(steps[hit[0]]) if len(hit) else None


def first_crossings(
    steps: Sequence[float], values: Sequence[float], thresholds: Sequence[float] = (0.9, 0.95, 0.99, 0.999)
) -> dict[float, float | None]:
    """``epochs_to_threshold`` for each threshold."""
    return {t: epochs_to_threshold(steps, values, t) for t in thresholds}


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
    (they are different runs; seeds need not match); None with fewer than 2 reached runs in either group."""

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

    def to_dict(self) -> dict[str, Any]:
        return {k: v if isinstance(v, int | str) else _num(v) for k, v in asdict(self).items()}


def speedup(
    reference: SampleLike,
    sample: SampleLike,
    names: tuple[str, str] = ("sample", "reference"),
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> Speedup:
    """The speed-up of ``sample`` over ``reference`` (see :class:`Speedup`); ``names`` is (sample, reference).

    The bootstrap draws ``n_boot`` resamples of the reference's reached values, then ``n_boot`` of the sample's,
    from ``numpy.random.default_rng(seed)``."""
    r, s = _as_sample(reference), _as_sample(sample)
    y, x = np.asarray(r.values), np.asarray(s.values)
    ratio = low = high = None
    note = ""
    if not len(x) or not len(y):
        note = f"no run of {names[0] if not len(x) else names[1]} reached the threshold"
    elif x.mean() == 0:
        note = f"every reached run of {names[0]} was at the threshold from the start: no finite speed-up"
    else:
        ratio = float(y.mean() / x.mean())
        if len(x) < 2 or len(y) < 2:
            note = "fewer than 2 reached runs in a group: no interval"
    if ratio is not None and len(x) >= 2 and len(y) >= 2:
        rng = np.random.default_rng(seed)
        ref_means = y[rng.integers(0, len(y), size=(n_boot, len(y)))].mean(axis=1)
        means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = ref_means / means
        if np.isfinite(ratios).all():
            alpha = 100 * (1 - confidence) / 2
            low, high = (float(q) for q in np.percentile(ratios, [alpha, 100 - alpha]))
        else:  # a resample of only zeros (runs at the threshold from the start) has no ratio
            note = "some resamples had mean 0 (runs at the threshold from the start): no interval"
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
        note=note,
    )
