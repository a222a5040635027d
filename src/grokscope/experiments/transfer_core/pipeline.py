"""A transfer from start to end: train the sources, choose their checkpoints, train every condition's target runs
(and relearning), measure each, then the statistics and the files (``results.csv``, ``results.json``,
``stats.json``, ``figures/``).

:func:`run_transfer` does the training and measuring on an engine; :func:`summarize_transfer` the rest. The
transfer and similarity kinds both run on these two.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from grokscope import stats
from grokscope.analysis.common import jsonable
from grokscope.analysis.runner import analysis_summary, analyze
from grokscope.config import RunConfig
from grokscope.experiments.engine import Engine, Failure
from grokscope.experiments.transfer_core.checkpoints import Choice, choose_checkpoints
from grokscope.experiments.transfer_core.config import RANDOM, TransferSettings
from grokscope.experiments.transfer_core.measures import (
    TargetResult,
    crossings,
    final_predictions,
    measure_run,
    prediction_agreement,
)
from grokscope.experiments.transfer_core.plan import Plan, target_view, with_init
from grokscope.experiments.transfer_core.statistics import SpeedOn, summarize
from grokscope.store import Run, atomic_write_text, write_json
from grokscope.viz.transfer import figures
from grokscope.viz.write import write_figures


@dataclass
class Measured:
    """What :func:`run_transfer` trained and measured, before the statistics."""

    conditions: list[str]
    sources: dict[int, dict[str, Choice]]
    source_metrics: dict[int, list[dict[str, Any]]]
    targets: list[TargetResult]
    agreement: list[dict[str, Any]]
    chance: float
    relearn_budget: int = 0
    speed_on: SpeedOn = "test_acc"


def run_transfer(
    config: TransferSettings,
    planned: Plan,
    engine: Engine,
    root: Path,
    source_root: Path,
    speed_on: SpeedOn = "test_acc",
) -> Measured:
    """Train (what is missing) and measure one transfer; failed runs are reported in their rows, not raised."""
    seeds = config.all_seeds
    trained = engine.train([planned.source.with_seed(s) for s in seeds], [source_root / f"seed{s}" for s in seeds])
    sources = dict(zip(seeds, trained, strict=True))
    uses_memorized = any(c.init == "memorized" for c in config.planned_conditions())
    choices = {
        s: _choices(config, run, uses_memorized, engine.failure_of(source_root / f"seed{s}"))
        for s, run in sources.items()
    }

    targets: list[TargetResult] = []
    for condition in config.planned_conditions():
        target_config = planned.targets[condition.name]
        jobs: list[tuple[RunConfig, Path]] = []
        for seed in condition.seeds:
            choice = Choice(None, "random init") if condition.init == RANDOM else choices[seed][condition.init]
            result = TargetResult(condition.name, seed, choice.step, choice.reason, None, target_config.train.steps)
            targets.append(result)
            source = sources[seed]
            if source is None:  # a run needs its seed's source (retention, the split): reported, not trained
                result.source_reason = choices[seed]["grokked"].reason  # "source run failed: ..."
                continue
            if condition.init != RANDOM and choice.step is None:
                continue  # the source never satisfied the criterion: reported, not trained
            init_from = None if choice.step is None else str(source.checkpoint_path(choice.step))
            result.run_dir = str(root / condition.name / f"seed{seed}")
            jobs.append((with_init(target_config, seed, init_from), Path(result.run_dir)))
        done = engine.train([c for c, _ in jobs], [d for _, d in jobs])
        for (_, run_dir), run in zip(jobs, done, strict=True):
            if run is None:
                failed = next(t for t in targets if t.run_dir == str(run_dir))
                why = engine.failure_of(run_dir)
                failed.run_dir, failed.source_reason = None, f"failed: {why.error if why else 'unknown error'}"

    runs = {(t.condition, t.seed): target_view(Run.open(t.run_dir)) for t in targets if t.run_dir is not None}
    relearned = _relearn(runs, planned.relearn, root, engine)
    predictions: dict[tuple[str, int], Tensor] = {}
    test_sets: dict[tuple[str, int], Tensor] = {}
    for result in targets:
        key = (result.condition, result.seed)
        source = sources[result.seed]
        if key in runs and source is not None:
            measure_run(result, runs[key], source, config.early_epoch, config.learning_pattern, relearned.get(key))
            if runs[key].steps():
                predictions[key] = final_predictions(runs[key])
                test_sets[key] = runs[key].split().test
    return Measured(
        conditions=config.condition_names,
        sources=choices,
        source_metrics={s: r.metrics() for s, r in sources.items() if r is not None},
        targets=targets,
        agreement=prediction_agreement(predictions, test_sets, config.condition_names),
        chance=1 / planned.source.task.modulus,
        relearn_budget=config.relearn_steps,
        speed_on=speed_on,
    )


def _choices(
    config: TransferSettings, source: Run | None, uses_memorized: bool, failure: Failure | None
) -> dict[str, Choice]:
    """The checkpoint each condition starts from on one seed's source run (none when the source failed)."""
    if source is None:
        why = f"source run failed: {failure.error if failure is not None else 'unknown error'}"
        return {name: Choice(None, why) for name in ("grokked", "memorized", *(p.name for p in config.partial))}
    memorization_end = None
    if uses_memorized and config.criteria.memorized_pick == "phase" and source.steps():
        # The phases come from the source's progress measures (cached in its analysis/ like grokscope analyze).
        analyze(source, ["progress"], progress=False)
        memorization_end = (analysis_summary(source, "progress") or {}).get("memorization_end")
    return choose_checkpoints(source.metrics(), source.steps(), config.criteria, config.partial, memorization_end)


def _relearn(
    runs: Mapping[tuple[str, int], Run], relearn: RunConfig | None, root: Path, engine: Engine
) -> dict[tuple[str, int], Run]:
    """Retrain the source task from each target run's final checkpoint (one group: the configs differ only in seed
    and ``init_from``); the relearn runs by (condition, seed), failed ones left out."""
    if relearn is None:
        return {}
    keys = [key for key, run in runs.items() if run.steps()]
    configs = [
        with_init(relearn, seed, str(runs[(c, seed)].checkpoint_path(runs[(c, seed)].steps()[-1]))) for c, seed in keys
    ]
    done = engine.train(configs, [root / c / f"seed{seed}_relearn" for c, seed in keys])
    return {key: run for key, run in zip(keys, done, strict=True) if run is not None}


def summarize_transfer(
    measured: Measured, config: TransferSettings, planned: Plan, root: Path, config_dump: dict[str, Any]
) -> dict[str, Any]:
    """The statistics over conditions, written with the per-run rows and figures under ``root``; the result as
    plain data (what ``results.json`` holds, with ``config_dump`` as its config)."""
    m = measured
    statistics = summarize(
        m.targets,
        m.conditions,
        baseline=config.reference,
        outlier_z=config.outlier_z,
        chance=m.chance,
        relearn_budget=m.relearn_budget or None,
        scratch=[crossings(rows) for rows in m.source_metrics.values()],
        agreement=m.agreement,
        speed_on=m.speed_on,
    )
    statistics["settings"] = {
        "learning_pattern": config.learning_pattern.model_dump(),
        "criteria": config.criteria.model_dump(),
        "baseline": config.reference,
        "outlier_z": config.outlier_z,
        "normality_alpha": stats.NORMALITY_ALPHA,
        "chance": m.chance,
        "seeds": {c.name: c.seeds for c in config.planned_conditions()},
        "budgets_steps": {name: c.train.steps for name, c in planned.targets.items()},
    }
    result = {
        "config": config_dump,
        "conditions": m.conditions,
        "sources": m.sources,
        "source_seeds": list(m.sources),
        "source_generalization_steps": [
            stats.steps_to_threshold([r["step"] for r in rows], [r["test_acc"] for r in rows], 0.99)
            for rows in m.source_metrics.values()
        ],
        "source_test_acc_curves": {
            s: [(r["epoch"], r["test_acc"]) for r in rows] for s, rows in m.source_metrics.items()
        },
        "targets": m.targets,
        "statistics": statistics,
        "relearn_budget": m.relearn_budget,
    }
    data = jsonable(result)
    rows = [t.row() for t in m.targets]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    atomic_write_text(root / "results.csv", buffer.getvalue())
    write_json(root / "results.json", data)
    write_json(root / "stats.json", data["statistics"])
    write_figures(figures(data), root / "figures")
    return data
