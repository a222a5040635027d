"""Condition sweeps: which training conditions make a model grok, generalize at once, or only memorize?

A sweep config names a base run config (``base``, relative to the sweep file, with ``set`` overrides like
``--set``), the conditions to try and the seeds::

    kind: sweep
    name: conditions
    base: power_p97.yaml
    set: ["train.steps=20000"]
    grid:                                   # every combination (the last field varies fastest) ...
      task.loss_on: [answer, all]
      optim.weight_decay: [0, 1]
    # runs: [{optim.weight_decay: 0}, {optim.weight_decay: 1, train.batch_size: 512}]   # ... or an explicit list
    seeds: [0, 1, 2]
    rules: {grok_ratio: 2.0}                # regime rules, see grokscope.experiments.regimes
    record: [fingerprint]                   # recorders on every run (also gradients), every record_every steps
    record_every: 10
    fingerprint: {probe_from: all}          # the probe (probe_size, probe_seed, probe_from, token_index)
    dmd: {method: rrr, n_delays: 32, rank: 10}   # DMD of each run's fingerprints, compared across conditions

Every (condition, seed) is one run directory under ``out/<name>/``, named from the swept fields' values
(``loss_on=all_wd=1_seed0``). Every run config is built and validated before anything trains, so a bad combination
is a one-line :class:`~grokscope.errors.UserError` naming the run and the field.

Paired initial weights: runs that share the seed and the architecture start from identical weights, because
:func:`~grokscope.models.build_model` draws the initialization from ``config.seed`` alone. A weight-decay, batch-size,
masking or training-fraction pair with the same seed therefore differs only in the swept condition (the split
follows the seed too, but its size follows ``task.train_fraction``). Fields that change the architecture or the
vocabulary, such as ``model.n_layers``, ``model.d_model`` or ``task.modulus``, change the shapes of the weights, so
those runs cannot share them.

Each condition's seeds train as one group (stacked by :func:`~grokscope.training.many.train_many` on a GPU), in
this process or as a Ray task (:mod:`grokscope.experiments.launch`). A run whose ``summary.json`` exists is reused;
one with a ``config.yaml`` but no summary is resumed. When a group fails, its runs are retrained one by one so the
failure is pinned on the run that caused it; failed runs are reported in ``results.csv`` and ``failures.json`` and
the rest of the sweep goes on. Outputs: ``results.csv`` / ``results.json`` (one row per run: swept values, seed, regime, steps,
final metrics, loss bounds), ``regimes.json`` (regime counts by condition and by field, and a table over the first
two swept fields), ``failures.json`` and ``figures/``.

Recorders: with ``record`` every run trains with those recorders (runs then train one after another: a recorder
watches one model). With fingerprints recorded, each run's recording is fitted by DMD (``dmd`` settings, see
:func:`grokscope.analysis.dynamics.fit_recording`) and the spectra are compared across conditions: ``dmd.json`` (every
run's eigenvalues, spectral radius and one-step error, and their mean and spread per condition) and the figure
``dmd_spectra`` (every run's eigenvalues on one unit circle, a colour per condition; HTML, PNG and PDF). A finished
run reused from before ``record`` was set has no recording: it is listed as skipped, not retrained.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import itertools
import json
import logging
import math
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from grokscope.analysis.dmd import complex_dict
from grokscope.analysis.dynamics import fit_recording
from grokscope.analysis.fingerprint import load_recording, recording_path
from grokscope.config import RunConfig, config_differences, parse_config, set_field
from grokscope.errors import UserError
from grokscope.experiments.launch import Launcher, run_groups
from grokscope.experiments.regimes import REGIMES, SHORT, LossBounds, RegimeRules, classify_run, loss_bounds
from grokscope.experiments.runs import (
    ExperimentModel,
    Name,
    RecordedExperiment,
    Seed,
    check_buildable,
    check_run_count,
    check_seeds,
    load_base,
)
from grokscope.recorders import RecordPlan
from grokscope.stats import Sample, kaplan_meier_median
from grokscope.store import SUMMARY_FILE, Run, atomic_write_text, write_json
from grokscope.viz.dmd import write_images
from grokscope.viz.sweep import dmd_figures, figures
from grokscope.viz.write import write_figures

log = logging.getLogger(__name__)

RESULTS_CSV = "results.csv"
RESULTS_JSON = "results.json"
REGIMES_JSON = "regimes.json"
FAILURES_JSON = "failures.json"
DMD_JSON = "dmd.json"
FIGURES_DIR = "figures"

# Short names of common swept fields in run names; any other field goes by the last part of its path.
ALIASES = {"weight_decay": "wd", "batch_size": "bs", "train_fraction": "frac", "n_layers": "layers"}
RESERVED = {"seed": "sweep seeds with `seeds:`", "name": "run names are made from the swept values"}
MAX_NAME = 120
_UNSAFE = re.compile(r"[^A-Za-z0-9._,+-]")


class DMDOptions(ExperimentModel):
    """How each run's fingerprints are fitted for the comparison (:func:`~grokscope.analysis.dynamics.fit_recording`;
    ``center`` null: the method's default, per_snapshot_mean for rrr and time_mean for projected)."""

    method: Literal["rrr", "projected"] = "rrr"
    n_delays: int = Field(32, ge=1)
    rank: int = Field(10, ge=1)
    center: Literal["per_snapshot_mean", "time_mean", "relative_to_t0", "none"] | None = None
    observable: Literal["log_prob", "margin", "entropy"] = "log_prob"


class SweepConfig(RecordedExperiment):
    """``grokscope experiment`` config of kind ``sweep`` (see the module docstring)."""

    kind: Literal["sweep"]
    name: Name = "sweep"
    base: str
    set: list[str] = Field(default_factory=list, description="--set overrides applied to the base config")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="field path -> values (every combination)")
    runs: list[dict[str, Any]] = Field(default_factory=list, description="explicit overrides, one run each")
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1)
    rules: RegimeRules = Field(default_factory=RegimeRules)
    dmd: DMDOptions | None = Field(None, description="DMD settings for comparing the recorded fingerprints")

    @model_validator(mode="after")
    def _check(self) -> SweepConfig:
        if self.dmd is not None and "fingerprint" not in self.record:
            raise ValueError("dmd: compares recorded fingerprints; needs record: [fingerprint]")
        if self.grid and self.runs:
            raise ValueError("grid, runs: give one of them, not both")
        for key, values in self.grid.items():
            if not values:
                raise ValueError(f"grid.{key}: needs at least one value")
        for i, point in enumerate(self.runs):
            for key in point:
                _check_key(key, f"runs.{i}.{key}")
        for key in self.grid:
            _check_key(key, f"grid.{key}")
        check_seeds(self.seeds)
        # Counted from the axis lengths, before a single combination is built.
        seeds = f"{len(self.seeds)} seed{'s' if len(self.seeds) > 1 else ''}"
        if self.grid:
            n = math.prod(len(values) for values in self.grid.values()) * len(self.seeds)
            check_run_count(n, "grid", " x ".join(str(len(v)) for v in self.grid.values()) + f" values x {seeds}")
        else:
            n = max(len(self.runs), 1) * len(self.seeds)
            check_run_count(n, "runs" if self.runs else "seeds", f"{max(len(self.runs), 1)} runs x {seeds}")
        return self


def _check_key(key: str, where: str) -> None:
    parts = key.split(".")
    if not all(parts):
        raise ValueError(f"{where}: not a field path (expected e.g. optim.weight_decay)")
    if parts[0] in RESERVED:
        raise ValueError(f"{where}: cannot be swept ({RESERVED[parts[0]]})")


# Expansion and naming ----------------------------------------------------------------------------------------------
def expand(config: SweepConfig) -> list[dict[str, Any]]:
    """The override mappings, one per condition: the grid's Cartesian product (last field fastest), the ``runs``
    list as given, or the base alone."""
    if config.grid:
        keys = list(config.grid)
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*config.grid.values())]
    if config.runs:
        return [dict(point) for point in config.runs]
    return [{}]


def swept_fields(config: SweepConfig) -> list[str]:
    """The swept field paths: the grid's keys, or every key of the ``runs`` list in order of first appearance."""
    if config.grid:
        return list(config.grid)
    return list(dict.fromkeys(key for point in config.runs for key in point))


def field_aliases(fields: list[str]) -> dict[str, str]:
    """A short name per field (:data:`ALIASES`, else the last path component); fields whose short names would
    collide keep their full path."""
    short = {f: ALIASES.get(f.rsplit(".", 1)[-1], f.rsplit(".", 1)[-1]) for f in fields}
    counts = Counter(short.values())
    return {f: s if counts[s] == 1 else f for f, s in short.items()}


def _compact_float(x: float) -> str:
    if x != x or x in (float("inf"), float("-inf")):
        return str(x).lower()
    d = Decimal(repr(x)).normalize()
    sign, digits, exponent = d.as_tuple()
    mantissa = "".join(map(str, digits))
    scientific = (
        ("-" if sign else "")
        + mantissa[0]
        + ("." + mantissa[1:] if len(mantissa) > 1 else "")
        + f"e{exponent + len(mantissa) - 1}"
    )
    plain = format(d, "f")
    return scientific if len(scientific) < len(plain) else plain


def format_value(value: Any) -> str:
    """A value as it appears in a run name: compact (``1e-3``, ``0.3``, ``1``), ``none`` for None, lowercase
    booleans, lists joined by commas; characters outside ``[A-Za-z0-9._,+-]`` become ``-``."""
    if value is None:
        text = "none"
    elif isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        text = _compact_float(value)
    elif isinstance(value, list | tuple):
        text = ",".join(format_value(v) for v in value)
    elif isinstance(value, dict):
        text = ",".join(f"{k}-{format_value(v)}" for k, v in sorted(value.items()))
    else:
        text = str(value)
    return _UNSAFE.sub("-", text)


def condition_label(values: dict[str, Any], aliases: dict[str, str]) -> str:
    """``alias=value`` for each swept field, joined by ``_`` (empty when nothing is swept)."""
    label = "_".join(f"{aliases[f]}={format_value(v)}" for f, v in values.items())
    if len(label) > MAX_NAME:
        digest = hashlib.sha1(label.encode()).hexdigest()[:10]
        label = f"{label[: MAX_NAME - 11]}-{digest}"
    return label


def run_name(label: str, seed: int) -> str:
    """The run directory's name: the condition label and the seed, e.g. ``wd=1_loss_on=all_seed0``."""
    return f"{label}_seed{seed}" if label else f"seed{seed}"


def _config_name(label: str, fallback: str) -> str:
    # RunConfig names allow [A-Za-z0-9._-]; the seed is not part of it (train_many wants seeds to share a config).
    name = re.sub(r"[^A-Za-z0-9._-]", "-", label)[:MAX_NAME]
    return name if name.strip(".") else fallback


def _lookup(data: dict[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


# Planning ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlannedRun:
    """One (condition, seed) of a sweep, with its validated config and its directory."""

    name: str
    condition: str
    values: dict[str, Any]
    seed: int
    config: RunConfig
    run_dir: Path


def plan_runs(config: SweepConfig, config_path: Path, out: Path) -> tuple[list[str], list[PlannedRun]]:
    """The swept fields and every run of the sweep, validated; raises :class:`UserError` before anything trains."""
    config_path = Path(config_path)
    data, base = load_base(config_path, config.base, config.set)
    fields = swept_fields(config)
    aliases = field_aliases(fields)
    root = Path(out) / config.name
    planned: list[PlannedRun] = []
    for i, point in enumerate(expand(config)):
        where = f"{config_path}: run {i} ({condition_label(point, field_aliases(list(point))) or 'base'})"
        run_data = copy.deepcopy(data)
        for path, value in point.items():
            set_field(run_data, path, value, where=f"{where}: ")
        run_config = parse_config(run_data, source=where)
        resolved = run_config.to_dict()
        values = {f: _lookup(resolved, f) for f in fields}
        label = condition_label(values, aliases)
        run_config = parse_config({**resolved, "name": _config_name(label, base.name)}, source=where)
        check_buildable(run_config, where)
        for seed in config.seeds:
            name = run_name(label, seed)
            planned.append(PlannedRun(name, label, values, seed, run_config.with_seed(seed), root / name))
    seen: dict[str, PlannedRun] = {}
    for run in planned:
        other = seen.setdefault(run.name.lower(), run)
        if other is not run:
            raise UserError(
                f"{config_path}: two runs would share the directory {run.name!r} "
                f"({other.values} and {run.values}); make the swept values distinct"
            )
    return fields, planned


# Launching -----------------------------------------------------------------------------------------------------------
def launch(
    planned: list[PlannedRun],
    *,
    launcher: Launcher = "local",
    address: str | None = None,
    device: str = "auto",
    progress: bool = True,
    record: RecordPlan | None = None,
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Train every unfinished run, each condition's seeds as one group (see :mod:`grokscope.experiments.launch`),
    with ``record``'s recorders on each. Returns the names of the runs trained now and the failures by run name."""
    groups: dict[str, list[PlannedRun]] = {}
    for run in planned:
        if not (run.run_dir / SUMMARY_FILE).is_file():
            groups.setdefault(run.condition, []).append(run)
    pending = list(groups.values())
    outcomes = run_groups(
        [([r.config for r in runs], [r.run_dir for r in runs]) for runs in pending],
        launcher=launcher,
        address=address,
        device=device,
        progress=progress,
        record=record.to_dict() if record is not None else None,
    )
    failures = {}
    for runs, results in zip(pending, outcomes, strict=True):
        for run, outcome in zip(runs, results, strict=True):
            if not outcome.ok:
                log.warning("sweep run %s failed: %s", run.name, outcome.error)
                failures[run.name] = {
                    "name": run.name,
                    "condition": run.condition,
                    "seed": run.seed,
                    "run_dir": str(run.run_dir),
                    "error": outcome.error,
                    "traceback": outcome.traceback,
                }
    return [r.name for runs in pending for r in runs], failures


# Results -------------------------------------------------------------------------------------------------------------
@dataclass
class RunResult:
    """One run's row in ``results.csv``: its condition, regime, steps, final metrics and (all-position) loss
    bounds. ``status`` is ``ok`` or ``failed`` (then ``error`` says why and the metrics are None)."""

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ratio(value: float | None, bound: LossBounds | None) -> float | None:
    if value is None or bound is None or bound.generalization <= 0:
        return None
    return value / bound.generalization


def collect(
    run: PlannedRun, rules: RegimeRules, failure: dict[str, Any] | None
) -> tuple[RunResult, list[dict[str, Any]]]:
    """The result of one run from its directory (and its metric rows, for the figures)."""
    result = RunResult(run.name, run.condition, run.values, run.seed, "failed", run_dir=str(run.run_dir))
    if failure is not None:
        result.error = failure["error"]
        return result, []
    if not (run.run_dir / SUMMARY_FILE).is_file():
        result.error = "did not finish"
        return result, []
    stored = Run.open(run.run_dir)
    diffs = config_differences(stored.config, run.config)
    if diffs:
        more = f" and {len(diffs) - 1} more" if len(diffs) > 1 else ""
        result.error = (
            f"the finished run in {run.run_dir} was made with another config ({diffs[0]}{more}); "
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


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _counts(runs: list[RunResult]) -> dict[str, int]:
    counts = Counter(r.regime for r in runs if r.status == "ok")
    out = {regime: counts[regime] for regime in REGIMES if counts[regime]}
    failed = sum(r.status != "ok" for r in runs)
    return out | ({"failed": failed} if failed else {})


def median_generalization_step(runs: list[RunResult]) -> float | None:
    """Kaplan–Meier median of the generalization step over the finished runs; runs that never generalized count as
    censored at their training length. None when fewer than half of them generalized (or none finished)."""
    ok = [r for r in runs if r.status == "ok"]
    if not ok:
        return None
    values = [r.generalization_step for r in ok]
    budget = max([r.steps_trained or 0 for r in ok] + [v for v in values if v is not None])
    return kaplan_meier_median(Sample.from_values(values, budget=float(budget)))


def _distinct(runs: list[RunResult], f: str) -> list[Any]:
    return list({_key(r.values[f]): r.values[f] for r in runs}.values())


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
            "generalized": sum(r.generalization_step is not None for r in group if r.status == "ok"),
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
        "generalized": [
            [sum(r.generalization_step is not None for r in c if r.status == "ok") for c in row] for row in cells
        ],
        "median_generalization_step": [[median_generalization_step(c) for c in row] for row in cells],
    }
    return {"fields": fields, "by_condition": by_condition, "by_field": by_field, "table": table}


@dataclass
class SweepResult:
    """Everything a sweep produced; ``grid`` is what ``regimes.json`` holds."""

    name: str
    root: Path
    fields: list[str]
    rules: RegimeRules
    runs: list[RunResult]
    grid: dict[str, Any]
    trained: list[str] = field(default_factory=list)
    wall_time_s: float = 0.0
    dynamics: dict[str, Any] | None = None  # what dmd.json holds, when fingerprints were recorded
    notes: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[RunResult]:
        return [r for r in self.runs if r.status != "ok"]


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


def _spread(values: list[float]) -> dict[str, float | int | None]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"mean": None, "sd": None, "n": 0}
    mean = sum(finite) / len(finite)
    sd = math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)) if len(finite) > 1 else None
    return {"mean": mean, "sd": sd, "n": len(finite)}


def compare_dynamics(planned: list[PlannedRun], runs: list[RunResult], options: DMDOptions) -> dict[str, Any]:
    """DMD of every finished run's fingerprint recording with the same settings, and per condition the mean and
    sample sd over its seeds of the spectral radius and the one-step error. Runs that cannot be fitted (no
    recording, too few snapshots) are listed under ``skipped`` with the reason."""
    settings = options.model_dump()
    entries, skipped = [], []
    for plan, result in zip(planned, runs, strict=True):
        if result.status != "ok":
            continue
        run = Run.open(plan.run_dir)
        if not recording_path(run).is_file():
            skipped.append(
                {
                    "name": plan.name,
                    "reason": "no fingerprint recording (finished before record: [fingerprint] "
                    "was set; delete the run to retrain it with recorders)",
                }
            )
            continue
        try:
            recording = load_recording(run)
            fit = fit_recording(recording, **settings)
        except UserError as err:
            skipped.append({"name": plan.name, "reason": str(err)})
            continue
        entries.append(
            {
                "name": plan.name,
                "condition": plan.condition,
                "values": plan.values,
                "seed": plan.seed,
                "eigenvalues": complex_dict(fit.eigenvalues),
                "moduli": [float(abs(v)) for v in fit.eigenvalues],
                "spectral_radius": fit.spectral_radius,
                "reconstruction_error": fit.reconstruction_error,
                "rank": fit.rank,
                "center": fit.center,
                "snapshots": fit.n_snapshots,
                "every": recording.every,
                "probe": {"spec": asdict(recording.spec), "rows_saved": recording.probe_rows_saved},
            }
        )
    by_condition = []
    for condition in dict.fromkeys(p.condition for p in planned):
        group = [e for e in entries if e["condition"] == condition]
        by_condition.append(
            {
                "condition": condition,
                "n": len(group),
                "spectral_radius": _spread([e["spectral_radius"] for e in group]),
                "reconstruction_error": _spread([e["reconstruction_error"] for e in group]),
            }
        )
    return {"settings": settings, "runs": entries, "by_condition": by_condition, "skipped": skipped}


def run_experiment(
    config: SweepConfig,
    config_path: Path,
    out: Path,
    *,
    device: str = "auto",
    progress: bool = True,
    launcher: Launcher = "local",
    address: str | None = None,
) -> SweepResult:
    """Plan and validate every run, train what is unfinished (``local`` or ``ray`` launcher), classify regimes and
    write the results, the regime grid and the figures under ``out/<name>/``."""
    started = time.perf_counter()
    fields, planned = plan_runs(config, Path(config_path), Path(out))
    root = Path(out) / config.name
    root.mkdir(parents=True, exist_ok=True)
    record = config.record_plan()
    trained, failures = launch(
        planned, launcher=launcher, address=address, device=device, progress=progress, record=record
    )
    collected = [collect(run, config.rules, failures.get(run.name)) for run in planned]
    runs = [result for result, _ in collected]
    grid = regime_summary(runs, fields)
    result = SweepResult(config.name, root, fields, config.rules, runs, grid, trained)
    atomic_write_text(root / RESULTS_CSV, results_csv(runs, fields))
    write_json(
        root / RESULTS_JSON,
        {
            "sweep": config.model_dump(mode="json"),
            "fields": fields,
            "rules": config.rules.to_dict(),
            "runs": [r.to_dict() for r in runs],
        },
    )
    write_json(root / REGIMES_JSON, {"rules": config.rules.to_dict(), **grid})
    write_json(
        root / FAILURES_JSON, [failures.get(r.name) or {"name": r.name, "error": r.error} for r in result.failures]
    )
    curves = [
        {
            "name": r.name,
            "condition": r.condition,
            "steps": [row["step"] for row in rows],
            **{k: [row.get(k) for row in rows] for k in ("train_acc", "test_acc", "train_loss", "test_loss")},
            "loss_bound": r.loss_bound,
            "loss_floor": r.loss_floor,
        }
        for r, rows in collected
        if rows
    ]
    write_figures(figures(grid["table"], curves), root / FIGURES_DIR)
    if "fingerprint" in config.record:
        result.dynamics = compare_dynamics(planned, runs, config.dmd or DMDOptions())
        write_json(root / DMD_JSON, result.dynamics)
        drawn = dmd_figures(result.dynamics)
        write_figures(drawn, root / FIGURES_DIR)
        for stem, figure in drawn.items():
            _, why_not = write_images(figure, root / FIGURES_DIR, stem)
            if why_not:
                result.notes.append(why_not)
    result.wall_time_s = time.perf_counter() - started
    return result


# Printing ------------------------------------------------------------------------------------------------------------
def _cell_text(counts: dict[str, int]) -> str:
    if not counts:
        return "-"
    return ", ".join(f"{n} {SHORT.get(regime, regime)}" for regime, n in counts.items())


def regime_table(table: dict[str, Any]) -> list[str]:
    """The regime table as aligned text lines (a header, then one line per row value)."""
    header = ["", *table["column_labels"]]
    body = [
        [label, *(_cell_text(c) for c in row)] for label, row in zip(table["row_labels"], table["counts"], strict=True)
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    return ["  ".join(text.ljust(w) for text, w in zip(line, widths, strict=True)).rstrip() for line in [header, *body]]


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def _mean(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return sum(got) / len(got) if got else None


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def describe(result: SweepResult) -> list[str]:
    """Printable lines: a headline, the regime table, one line per condition, and the failures."""
    n_failed = len(result.failures)
    lines = [
        f"sweep {result.name}: {len(result.runs)} runs ({len(result.runs) - n_failed} ok, {n_failed} failed; "
        f"{len(result.trained)} trained now, {len(result.runs) - len(result.trained)} reused) "
        f"in {_duration(result.wall_time_s)} -> {result.root}"
    ]
    table = result.grid["table"]
    axes = " x ".join(f for f in (table["rows"], table["columns"]) if f) or "all runs"
    lines.append(f"regimes by {axes} (instant / grok / memo / unstable / none; cells pool seeds and other fields):")
    lines += [f"  {line}" for line in regime_table(table)]
    lines.append("conditions (mean over seeds of the final metrics; accuracy is answer accuracy):")
    groups: dict[str, list[RunResult]] = {}
    for r in result.runs:
        groups.setdefault(r.condition, []).append(r)
    for entry in result.grid["by_condition"]:
        group = [r for r in groups[entry["condition"]] if r.status == "ok"]
        median = entry["median_generalization_step"]
        text = (
            f"  {entry['condition'] or 'base'}: {_cell_text(entry['regimes'])}; "
            f"median step to 99% test acc {'-' if median is None else f'{median:g}'}; "
            f"final acc train {_pct(_mean([r.final_train_acc for r in group]))} "
            f"test {_pct(_mean([r.final_test_acc for r in group]))}; "
            f"loss train {_num(_mean([r.final_train_loss for r in group]))} "
            f"test {_num(_mean([r.final_test_loss for r in group]))}"
        )
        bound = next((r for r in group if r.loss_bound is not None), None)
        if bound is not None:
            text += f" (all-position bound {bound.loss_bound:.3g}, memorization floor {bound.loss_floor:.3g})"
        lines.append(text)
    if n_failed:
        lines.append("failed runs (see failures.json):")
        lines += [f"  {r.name}: {r.error}" for r in result.failures]
    lines += describe_dynamics(result.dynamics)
    lines += result.notes
    return lines


def _mean_sd(stat: dict[str, Any], digits: str = ".4f") -> str:
    if stat["mean"] is None:
        return "-"
    return f"{stat['mean']:{digits}}" + (f" ± {stat['sd']:{digits}}" if stat["sd"] is not None else "")


def describe_dynamics(dynamics: dict[str, Any] | None) -> list[str]:
    """Printable lines for ``dmd.json``: the settings, then per condition the spectral radius and one-step error."""
    if dynamics is None:
        return []
    s = dynamics["settings"]
    lines = [
        f"DMD of the recorded fingerprints ({s['method']}, {s['observable']}, {s['n_delays']} delays, rank "
        f"{s['rank']}; mean ± sd over seeds; figure dmd_spectra):"
    ]
    for entry in dynamics["by_condition"]:
        lines.append(
            f"  {entry['condition'] or 'base'}: spectral radius {_mean_sd(entry['spectral_radius'])}, one-step error "
            f"{_mean_sd(entry['reconstruction_error'], '.3g')} ({entry['n']} run{'s' if entry['n'] != 1 else ''})"
        )
    lines += [f"  skipped {skip['name']}: {skip['reason']}" for skip in dynamics["skipped"]]
    return lines


# What grokscope.experiments.run looks up in an experiment module.
CONFIG = SweepConfig
summary_lines = describe
LAUNCHERS = ("local", "ray")
