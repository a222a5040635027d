"""Statistics over a transfer's conditions (``stats.json``), with :mod:`grokscope.stats`.

Budgets and censoring are in steps: a run that has not reached a threshold by its budget is censored there. Steps
to a threshold are read on test accuracy, or on train accuracy for a target whose test accuracy is chance by
construction (a random table: nothing learned on the training pairs says anything about the others); the measure
used is named in ``stats.json`` (``speed_on``) and in the printed summary. Every comparison carries n per group;
intervals follow :mod:`grokscope.stats` (no percentile bootstrap on a handful of runs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from grokscope import stats
from grokscope.experiments.transfer_core.config import RANDOM, SCRATCH, THRESHOLDS
from grokscope.experiments.transfer_core.measures import TargetResult

SpeedOn = Literal["test_acc", "train_acc"]


def _sample(values: Sequence[float | None], budget: int) -> stats.Sample:
    """Steps reached within ``budget`` (steps); the rest censored at it."""
    return stats.Sample.from_values([v if v is not None and v <= budget else None for v in values], budget=budget)


def _per_condition(
    by_condition: Mapping[str, list[TargetResult]], measures: Callable[[TargetResult], Mapping[str, Any] | None]
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{condition: {measure: mean ± sd over its runs}}`` for the named numbers ``measures`` gives per run."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for condition, runs in by_condition.items():
        per_run = [m for t in runs if (m := measures(t))]
        names = list(dict.fromkeys(k for m in per_run for k in m))
        if names:
            out[condition] = {k: stats.spread([m.get(k) for m in per_run]).to_dict() for k in names}
    return out


def _speedups(samples: Mapping[str, stats.Sample], reference: str | None) -> list[dict[str, Any]]:
    if reference is None or reference not in samples:
        return []
    return [
        stats.speedup(samples[reference], s, names=(c, reference)).to_dict()
        for c, s in samples.items()
        if c != reference
    ]


def _relearn_statistics(
    by_condition: Mapping[str, list[TargetResult]], budget: int, scratch: Sequence[dict[str, float | None]]
) -> dict[str, Any]:
    """Relearning the source after the target, per condition, against learning it from scratch (the source runs
    themselves, from random init, censored at the same budget)."""
    out: dict[str, Any] = {"budget": budget, "reference": SCRATCH, "describe": {}, "compare": {}, "speedup": {}}
    for threshold in map(str, THRESHOLDS):
        samples = {
            c: _sample([t.relearn_steps_to[threshold] for t in runs if t.relearn_steps_to is not None], budget)
            for c, runs in by_condition.items()
        }
        samples = {c: s for c, s in samples.items() if s.n}
        samples[SCRATCH] = _sample([e[threshold] for e in scratch], budget)
        out["describe"][threshold] = {c: stats.describe(s).to_dict() for c, s in samples.items()}
        if len(samples) > 1:
            out["compare"][threshold] = [p.to_dict() for p in stats.compare_all(samples, reference=SCRATCH)]
            out["speedup"][threshold] = _speedups(samples, SCRATCH)
    return out


def _normality(by_condition: Mapping[str, list[TargetResult]], speed_on: SpeedOn) -> list[dict[str, Any]]:
    """Shapiro–Wilk per condition and per-run metric: the values the t-tests and t-intervals use (steps to each
    threshold on ``speed_on``: ``train_steps_to_*`` for a target read on train accuracy)."""
    on_train = speed_on == "train_acc"
    metrics: dict[str, Callable[[TargetResult], float | None]] = {
        **{
            f"{'train_' if on_train else ''}steps_to_{t}": (
                lambda r, t=str(t): (r.train_steps_to if on_train else r.steps_to).get(t)
            )
            for t in THRESHOLDS
        },
        "early_test_acc": lambda r: r.early_test_acc,
        "final_test_acc": lambda r: r.final_test_acc,
        "final_source_retention": lambda r: r.final_source_retention,
    }
    return [
        {"metric": metric, "condition": c, **stats.shapiro([get(t) for t in runs]).to_dict()}
        for metric, get in metrics.items()
        for c, runs in by_condition.items()
    ]


def summarize(
    targets: list[TargetResult],
    conditions: list[str],
    *,
    baseline: str | None = None,
    outlier_z: float = 2.0,
    chance: float | None = None,
    relearn_budget: int | None = None,
    scratch: Sequence[dict[str, float | None]] = (),
    agreement: list[dict[str, Any]] | None = None,
    speed_on: SpeedOn = "test_acc",
) -> dict[str, Any]:
    """``stats.json``: per condition and threshold a description of steps-to-threshold on ``speed_on`` (censored
    runs counted, not averaged), and every condition against ``baseline`` (default random init, else all pairs),
    Holm-corrected per threshold, each with Shapiro–Wilk flags; speed-ups over the baseline with the intervals
    :func:`grokscope.stats.speedup` gives for their n; normality per
    condition and metric; retention against ``chance`` (one-sided one-sample t-test over seeds, Wilcoxon beside);
    outliers at |z| > ``outlier_z``; relearning against the source runs (``scratch``: their steps-to-threshold) at
    ``relearn_budget``; ``agreement`` (from :func:`prediction_agreement`); and per-condition mean ± sd of the final
    accuracy, the learning pattern, specialization, attention and gradient summaries."""
    out: dict[str, Any] = {
        "speed_on": speed_on,
        "unit": "steps",
        "describe": {},
        "compare": {},
        "spearman_early_acc_vs_steps_to_0.999": None,
        "outliers": {},
    }
    trained = [t for t in targets if t.run_dir is not None]
    by_condition = {c: [t for t in trained if t.condition == c] for c in conditions}
    by_condition = {c: runs for c, runs in by_condition.items() if runs}
    # Comparisons censor every condition at the smallest budget, so that "not reached" means the same everywhere.
    common = min((t.budget for runs in by_condition.values() for t in runs), default=0)
    if baseline is None and RANDOM in by_condition:
        baseline = RANDOM
    reference = baseline if baseline in by_condition else None

    def reached(t: TargetResult) -> dict[str, float | None]:
        return t.steps_to if speed_on == "test_acc" else t.train_steps_to

    def sample(runs: list[TargetResult], threshold: str, budget: int | None = None) -> stats.Sample:
        cap = budget if budget is not None else max(t.budget for t in runs)
        return _sample([reached(t)[threshold] for t in runs], cap)

    out["speedup"] = {}
    for threshold in map(str, THRESHOLDS):
        own = {c: sample(runs, threshold) for c, runs in by_condition.items()}
        out["describe"][threshold] = {c: stats.describe(s).to_dict() for c, s in own.items()}
        if len(by_condition) > 1:
            samples = {c: sample(runs, threshold, common) for c, runs in by_condition.items()}
            pairs = stats.compare_all(samples, reference=reference, method="holm")
            out["compare"][threshold] = [p.to_dict() for p in pairs]
        # Speed-ups use each condition's own budget: a longer baseline is what makes its mean known.
        out["speedup"][threshold] = _speedups(own, reference)
    out["compare_budget"] = common
    rho = stats.spearman([t.early_test_acc for t in trained], [reached(t)["0.999"] for t in trained])
    out["spearman_early_acc_vs_steps_to_0.999"] = None if rho is None else {"rho": rho[0], "p": rho[1]}
    out["outlier_rule"] = []
    for condition in conditions:
        runs = [t for t in trained if t.condition == condition and reached(t)["0.999"] is not None]
        flagged = stats.zscore_outliers([reached(t)["0.999"] for t in runs], threshold=outlier_z)
        out["outliers"][condition] = [runs[i].seed for i in flagged]
        bound = stats.max_abs_z(len(runs))
        out["outlier_rule"].append(
            {
                "condition": condition,
                "metric": f"steps_to_0.999 ({speed_on})",
                "z": outlier_z,
                "n": len(runs),
                "max_possible_abs_z": bound,
                # zscore_outliers needs 3 values, and no |z| can pass a threshold at or above the bound.
                "can_flag": bound is not None and len(runs) >= 3 and bound > outlier_z,
                "flagged_seeds": out["outliers"][condition],
            }
        )
    out["normality"] = _normality(by_condition, speed_on)
    if chance is not None:
        out["retention_vs_chance"] = [
            {"condition": c, "chance": chance, **stats.one_sample(kept, chance, "greater").to_dict()}
            for c, runs in by_condition.items()
            if (kept := [t.final_source_retention for t in runs if t.final_source_retention is not None])
        ]
    out["agreement"] = agreement or []
    out["final"] = _per_condition(
        by_condition, lambda t: {"test_acc": t.final_test_acc, "source_retention": t.final_source_retention}
    )
    out["learning_pattern"] = _per_condition(by_condition, lambda t: t.learning)
    out["specialization"] = _per_condition(by_condition, lambda t: t.specialization)
    out["attention"] = _per_condition(by_condition, lambda t: t.attention)
    out["gradients"] = _per_condition(by_condition, lambda t: t.gradients)
    if relearn_budget:
        out["relearn"] = _relearn_statistics(by_condition, relearn_budget, scratch)
    return out


# --- outputs ----------------------------------------------------------------------------------------------------
