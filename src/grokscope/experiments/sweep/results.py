"""What a sweep measured: one row per run (regime, steps, final metrics, loss bounds) and the regime counts.

:func:`collect` reads one run's directory into a :class:`RunResult` (``results.csv`` / ``results.json`` rows); a run
that failed, did not finish, or was made with another config is a ``failed`` row with the reason, never a crash.
:func:`regime_summary` counts regimes per condition, per value of each swept field and over the first two swept
fields (``regimes.json``), with the Kaplan–Meier median step to generalization (runs that never generalized are
censored at the step budget). Every step here is an optimizer step (``metrics.jsonl``'s ``step``), never an epoch.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from grokscope.config import config_differences
from grokscope.experiments.regimes import REGIMES, LossBounds, RegimeRules, classify_run, loss_bounds
from grokscope.experiments.sweep.plan import PlannedRun, field_aliases, format_value
from grokscope.stats import Sample, kaplan_meier_median
from grokscope.store import SUMMARY_FILE, Run


@dataclass
class RunResult:
    """One run's row in ``results.csv``: its condition, regime, steps, final metrics and (all-position) loss
    bounds. ``status`` is ``ok`` or ``failed`` (then ``error`` says why and the metrics are None). Steps are
    optimizer steps; ``step_budget`` is the run's ``train.steps``, where runs that never generalized are censored."""

    name: str
    condition: str
    values: dict[str, Any]
    seed: int
    status: Literal["ok", "failed"]
    error: str | None = None
    regime: str | None = None
    underlying_regime: str | None = None
    memorization_step: int | None = None
    generalization_step: int | None = None
    steps_to_99_test: int | None = None
    generalization_ratio: float | None = None
    collapse_step: int | None = None
    spike_step: int | None = None
    steps_trained: int | None = None
    final_train_acc: float | None = None
    final_test_acc: float | None = None
    final_train_loss: float | None = None
    final_test_loss: float | None = None
    loss_bound: float | None = None
    loss_floor: float | None = None
    train_loss_vs_bound: float | None = None
    test_loss_vs_bound: float | None = None
    wall_time_s: float | None = None
    run_dir: str = ""
    step_budget: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ratio(value: float | None, bound: LossBounds | None) -> float | None:
    if value is None or bound is None or bound.generalization <= 0:
        return None
    return value / bound.generalization


def collect(
    run: PlannedRun, run_dir: Path, rules: RegimeRules, error: str | None = None
) -> tuple[RunResult, list[dict[str, Any]]]:
    """The result of one run from its directory (and its metric rows, for the figures); ``error``: why the engine
    could not train it."""
    result = RunResult(run.name, run.condition, run.values, run.seed, "failed", run_dir=str(run_dir))
    result.step_budget = run.config.train.steps
    if error is not None:
        result.error = error
        return result, []
    if not (run_dir / SUMMARY_FILE).is_file():
        result.error = "did not finish"
        return result, []
    stored = Run.open(run_dir)
    diffs = config_differences(stored.config, run.config)
    if diffs:
        more = f" and {len(diffs) - 1} more" if len(diffs) > 1 else ""
        result.error = (
            f"the finished run in {run_dir} was made with another config ({diffs[0]}{more}); "
            "delete it or give the sweep another name"
        )
        return result, []
    rows, summary = stored.metrics(), stored.summary() or {}
    task = stored.task
    bounds = loss_bounds(task, task.pairs()[stored.split().train])
    verdict = classify_run(rows, rules, bounds.memorization_floor if bounds else 0.0)
    final = rows[-1] if rows else {}
    result.status = "ok"
    result.regime, result.underlying_regime = verdict.regime, verdict.underlying
    result.memorization_step, result.generalization_step = verdict.memorization_step, verdict.generalization_step
    result.generalization_ratio = verdict.generalization_ratio
    result.collapse_step, result.spike_step = verdict.collapse_step, verdict.spike_step
    result.steps_to_99_test = next((r["step"] for r in rows if (r.get("test_acc") or 0) >= 0.99), None)
    result.steps_trained = summary.get("steps_trained", final.get("step"))
    result.final_train_acc, result.final_test_acc = final.get("train_acc"), final.get("test_acc")
    result.final_train_loss, result.final_test_loss = final.get("train_loss"), final.get("test_loss")
    if bounds is not None:
        result.loss_bound, result.loss_floor = bounds.generalization, bounds.memorization_floor
        result.train_loss_vs_bound = _ratio(result.final_train_loss, bounds)
        result.test_loss_vs_bound = _ratio(result.final_test_loss, bounds)
    result.wall_time_s = summary.get("wall_time_s")
    return result, rows


def curve(result: RunResult, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One run's curves for the figures (:mod:`grokscope.viz.sweep`): accuracy and loss over steps, its bounds."""
    return {
        "name": result.name,
        "condition": result.condition,
        "steps": [row["step"] for row in rows],
        **{k: [row.get(k) for row in rows] for k in ("train_acc", "test_acc", "train_loss", "test_loss")},
        "loss_bound": result.loss_bound,
        "loss_floor": result.loss_floor,
    }


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _counts(runs: list[RunResult]) -> dict[str, int]:
    counts = Counter(r.regime for r in runs if r.status == "ok")
    out = {regime: counts[regime] for regime in REGIMES if counts[regime]}
    failed = sum(r.status != "ok" for r in runs)
    return out | ({"failed": failed} if failed else {})


def median_generalization_step(runs: list[RunResult]) -> float | None:
    """Kaplan–Meier median of the generalization step (in optimizer steps) over the finished runs; runs that never
    generalized count as censored at the step budget (``train.steps``; the largest when the budget is swept).
    None when fewer than half of them generalized (or none finished)."""
    ok = [r for r in runs if r.status == "ok"]
    if not ok:
        return None
    values = [r.generalization_step for r in ok]
    # The planned budget, not only the steps logged: an early-stopped run is censored where training would have ended.
    budget = max([r.step_budget or 0 for r in ok] + [r.steps_trained or 0 for r in ok] + [v or 0 for v in values])
    return kaplan_meier_median(Sample.from_values(values, budget=float(budget)))


def _distinct(runs: list[RunResult], f: str) -> list[Any]:
    return list({_key(r.values[f]): r.values[f] for r in runs}.values())


def _generalized(runs: list[RunResult]) -> int:
    return sum(r.generalization_step is not None for r in runs if r.status == "ok")


def regime_summary(runs: list[RunResult], fields: list[str]) -> dict[str, Any]:
    """Regime counts per condition, per value of each swept field, and as a table over the first two swept fields
    (rows: the first, columns: the second; each cell pools the other fields and the seeds)."""
    aliases = field_aliases(fields)
    conditions: dict[str, list[RunResult]] = {}
    for r in runs:
        conditions.setdefault(r.condition, []).append(r)
    by_condition = [
        {
            "condition": label,
            "values": group[0].values,
            "n": len(group),
            "regimes": _counts(group),
            "generalized": _generalized(group),
            "median_generalization_step": median_generalization_step(group),
        }
        for label, group in conditions.items()
    ]
    by_field = {
        f: [
            {"value": v, "regimes": _counts([r for r in runs if _key(r.values[f]) == _key(v)])}
            for v in _distinct(runs, f)
        ]
        for f in fields
    }
    row_field = fields[0] if fields else None
    col_field = fields[1] if len(fields) > 1 else None
    row_values = _distinct(runs, row_field) if row_field else [None]
    col_values = _distinct(runs, col_field) if col_field else [None]

    def cell(rv: Any, cv: Any) -> list[RunResult]:
        return [
            r
            for r in runs
            if (row_field is None or _key(r.values[row_field]) == _key(rv))
            and (col_field is None or _key(r.values[col_field]) == _key(cv))
        ]

    cells = [[cell(rv, cv) for cv in col_values] for rv in row_values]
    table = {
        "rows": row_field,
        "columns": col_field,
        "row_labels": [f"{aliases[row_field]}={format_value(v)}" if row_field else "all" for v in row_values],
        "column_labels": [f"{aliases[col_field]}={format_value(v)}" if col_field else "all" for v in col_values],
        "row_values": row_values,
        "column_values": col_values,
        "counts": [[_counts(c) for c in row] for row in cells],
        "n": [[len(c) for c in row] for row in cells],
        "generalized": [[_generalized(c) for c in row] for row in cells],
        "median_generalization_step": [[median_generalization_step(c) for c in row] for row in cells],
    }
    return {"fields": fields, "by_condition": by_condition, "by_field": by_field, "table": table}


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list | tuple | dict):
        return json.dumps(value)
    return value


def results_csv(runs: list[RunResult], fields: list[str]) -> str:
    """``results.csv``: one row per run, a column per swept field (named by its path), then the results."""
    skip = {"values", "name", "condition", "seed"}
    columns = ["name", "condition", *fields, "seed", *(k for k in RunResult.__dataclass_fields__ if k not in skip)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in runs:
        row = {k: v for k, v in r.to_dict().items() if k != "values"}
        row.update({f: r.values[f] for f in fields})
        writer.writerow({k: _csv_cell(row[k]) for k in columns})
    return buffer.getvalue()
