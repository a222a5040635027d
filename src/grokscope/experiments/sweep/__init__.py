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

Each condition's seeds train as one group of the :class:`~grokscope.experiments.engine.Engine` (stacked by
:func:`~grokscope.training.many.train_many` on a GPU), in this process or as a Ray task. A run whose
``summary.json`` exists is reused; one with a ``config.yaml`` but no summary is resumed. When a group fails, its
runs are retrained one by one so the failure is pinned on the run that caused it; failed runs are rows of
``results.csv`` (with the error) and entries of the engine's ``failures.json``, and the rest of the sweep goes on.
Outputs: ``results.csv`` / ``results.json`` (one row per run: swept values, seed, regime, steps, final metrics,
loss bounds), ``regimes.json`` (regime counts by condition and by field, and a table over the first
two swept fields) and ``figures/``.

Recorders: with ``record`` every run trains with those recorders (runs then train one after another: a recorder
watches one model). With fingerprints recorded, each run's recording is fitted by DMD (``dmd`` settings, see
:func:`grokscope.analysis.dynamics.fit_recording`) and the spectra are compared across conditions: ``dmd.json`` (every
run's eigenvalues, spectral radius and one-step error, and their mean and spread per condition) and the figure
``dmd_spectra`` (every run's eigenvalues on one unit circle, a colour per condition; HTML, PNG and PDF). A finished
run reused from before ``record`` was set has no recording: it is listed as skipped, not retrained.

The modules: :mod:`~grokscope.experiments.sweep.config` (the config model), :mod:`~grokscope.experiments.sweep.plan`
(conditions, names, run configs), :mod:`~grokscope.experiments.sweep.results` (per-run rows, regime counts),
:mod:`~grokscope.experiments.sweep.dynamics` (the DMD comparison); this one wires them into the kind's
:class:`~grokscope.experiments.spec.ExperimentSpec`. The printed text is :mod:`grokscope.viz.sweep_text`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grokscope.experiments.engine import Engine
from grokscope.experiments.spec import ExperimentSpec
from grokscope.experiments.sweep.config import DMDOptions, SweepConfig
from grokscope.experiments.sweep.dynamics import compare_dynamics
from grokscope.experiments.sweep.plan import (
    PlannedRun,
    SweepPlan,
    condition_label,
    expand,
    field_aliases,
    format_value,
    plan,
    run_name,
    swept_fields,
)
from grokscope.experiments.sweep.results import RunResult, collect, curve, regime_summary, results_csv
from grokscope.store import atomic_write_text, write_json
from grokscope.viz.dmd import write_images
from grokscope.viz.sweep import dmd_figures, figures
from grokscope.viz.sweep_text import describe, regime_table
from grokscope.viz.write import write_figures

__all__ = [
    "SPEC",
    "DMDOptions",
    "PlannedRun",
    "RunResult",
    "SweepConfig",
    "SweepPlan",
    "condition_label",
    "describe",
    "execute",
    "expand",
    "field_aliases",
    "format_value",
    "plan",
    "regime_summary",
    "regime_table",
    "results_csv",
    "run_name",
    "summarize",
    "swept_fields",
]

RESULTS_CSV = "results.csv"
RESULTS_JSON = "results.json"
REGIMES_JSON = "regimes.json"
DMD_JSON = "dmd.json"
FIGURES_DIR = "figures"


@dataclass
class SweepMeasures:
    """What :func:`execute` measured: a row per planned run (in plan order), the curves of the finished ones, which
    runs trained now, and when the sweep started (for its wall time)."""

    runs: list[RunResult]
    curves: list[dict[str, Any]]
    trained: list[str] = field(default_factory=list)
    started: float = 0.0


def execute(config: SweepConfig, plan: SweepPlan, engine: Engine) -> SweepMeasures:
    """Train every unfinished run through the engine, each condition's seeds as one group, and read each run's row
    (a run the engine could not train is a ``failed`` row with its error)."""
    started = time.perf_counter()
    groups = list(plan.conditions().values())
    before = len(engine.trained)
    engine.train_groups([([r.config for r in runs], [engine.root / r.name for r in runs]) for runs in groups])
    trained = {Path(d).name for d in engine.trained[before:]}
    measured = []
    for run in plan.runs:
        failure = engine.failure_of(engine.root / run.name)
        measured.append(collect(run, engine.root / run.name, config.rules, failure.error if failure else None))
    return SweepMeasures(
        runs=[r for r, _ in measured],
        curves=[curve(r, rows) for r, rows in measured if rows],
        trained=[r.name for r in plan.runs if r.name in trained],
        started=started,
    )


def summarize(config: SweepConfig, plan: SweepPlan, measures: SweepMeasures, root: Path) -> dict[str, Any]:
    """The regime counts and (with fingerprints recorded) the DMD comparison; writes ``results.csv``,
    ``results.json``, ``regimes.json``, ``dmd.json`` and the figures under ``root``. Returns ``results.json``'s
    data with the regime summary, the DMD comparison and what :func:`describe` prints besides."""
    root.mkdir(parents=True, exist_ok=True)
    runs = measures.runs
    grid = regime_summary(runs, plan.fields)
    atomic_write_text(root / RESULTS_CSV, results_csv(runs, plan.fields))
    stored = {
        "sweep": config.model_dump(mode="json"),
        "fields": plan.fields,
        "rules": config.rules.to_dict(),
        "runs": [r.to_dict() for r in runs],
    }
    write_json(root / RESULTS_JSON, stored)
    write_json(root / REGIMES_JSON, {"rules": config.rules.to_dict(), **grid})
    write_figures(figures(grid["table"], measures.curves), root / FIGURES_DIR)
    dynamics, notes = None, []
    if "fingerprint" in config.record:
        dynamics = compare_dynamics(runs, config.dmd or DMDOptions())
        write_json(root / DMD_JSON, dynamics)
        drawn = dmd_figures(dynamics)
        write_figures(drawn, root / FIGURES_DIR)
        for stem, figure in drawn.items():
            _, why_not = write_images(figure, root / FIGURES_DIR, stem)
            if why_not:
                notes.append(why_not)
    return {
        **stored,
        "name": config.name,
        "root": str(root),
        "regimes": grid,
        "dmd": dynamics,
        "trained": measures.trained,
        "wall_time_s": time.perf_counter() - measures.started,
        "notes": notes,
    }


SPEC = ExperimentSpec(
    kind="sweep", config=SweepConfig, plan=plan, execute=execute, summarize=summarize, describe=describe
)
