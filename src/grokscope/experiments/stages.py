"""What curriculum and sequential-finetuning experiments share: a chain of stages against a direct baseline.

Every stage is the base run config with some task fields changed (an input range, a modulus) and its own step
budget; each seed's stage k starts from its stage k-1 final weights (``model.init_from``, a fresh AdamW) and spends
its whole budget (no early stop). The direct baseline changes the task to the last stage's and trains for the summed
budget from the same seed. Every run trains through the experiment engine
(:class:`~grokscope.experiments.engine.Engine`): a seed whose stage failed stops there and is reported, the other
seeds go on.

With ``llc:`` in the config, the local learning coefficient (:mod:`grokscope.analysis.llc`) of each stage run's
final checkpoint (or of every checkpoint, or every N-th, for a trajectory along the chain) and of the direct run's
checkpoints at the stage boundaries is estimated on that run's own training data and objective, by the analysis
runner into the run's ``analysis/llc.json`` (cached per checkpoint with its settings: a rerun estimates nothing
again). Stage k's step s sits at ``sum(stage_steps[:k]) + s`` on the chain's timeline, where the direct run's step s
sits at s.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from grokscope import stats
from grokscope.analysis.common import jsonable
from grokscope.analysis.llc import SamplerSettings, require_sampler
from grokscope.analysis.runner import analyze, select_steps
from grokscope.config import RunConfig, parse_config
from grokscope.errors import UserError
from grokscope.experiments.engine import Engine, Failure
from grokscope.experiments.runs import (
    Name,
    RecordedExperiment,
    Seed,
    check_run_count,
    check_seeds,
    checked,
    load_base,
    with_seeds,
)
from grokscope.store import Run, write_json
from grokscope.training.loop import resolve_device
from grokscope.viz.stages import figures, llc_figures
from grokscope.viz.write import write_figures


class LLCConfig(SamplerSettings):
    """``llc:`` of a staged experiment: the sampler settings of :func:`grokscope.analysis.llc.compute` (its keyword
    names and defaults) and which checkpoints of each stage to estimate."""

    checkpoints: Literal["final", "all"] | Annotated[int, Field(ge=1)] = Field(
        "final",
        description="final: each stage's last checkpoint (and the direct run's at the stage boundaries); all: every "
        "checkpoint; N: those whose step is a multiple of N, and the last",
    )


class StagedConfig(RecordedExperiment):
    """Fields every staged experiment has (``base`` is a run config, relative to the experiment file); ``record``
    attaches recorders to every stage and direct run."""

    name: Name
    base: str
    set: list[str] = Field(default_factory=list, description="--set overrides applied to the base config")
    stage_steps: int | list[int] = Field(500, description="steps per stage (one value for all, or one per stage)")
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1)
    llc: LLCConfig | None = Field(
        None, description="estimate the LLC of every stage's and the direct run's checkpoints"
    )

    def budgets(self, n_stages: int) -> list[int]:
        return self.stage_steps if isinstance(self.stage_steps, list) else [self.stage_steps] * n_stages


def check_stages(values: Sequence[int], field: str, stage_steps: int | list[int], seeds: Sequence[int]) -> None:
    """Stages must grow (so that every earlier token exists later) and have one budget of at least a step each;
    each seed once."""
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise ValueError(f"{field}: must increase, got {list(values)}")
    if isinstance(stage_steps, list) and len(stage_steps) != len(values):
        raise ValueError(f"stage_steps: {len(stage_steps)} values for {len(values)} stages")
    if any(n < 1 for n in (stage_steps if isinstance(stage_steps, list) else [stage_steps])):
        raise ValueError(f"stage_steps: every stage needs at least 1 step, got {stage_steps}")
    check_seeds(seeds)
    n = len(seeds) * (len(values) + 1)
    check_run_count(n, field, f"{len(seeds)} seeds x {len(values)} stages and the direct baseline")


def base_config(config: StagedConfig, config_path: Path) -> RunConfig:
    return load_base(config_path, config.base, config.set)[1]


@dataclass(frozen=True)
class StagedPlan:
    """Every run config of a staged experiment, validated: the chain as ``[stage][seed]`` (``init_from`` is filled
    in while training, from the previous stage's final checkpoint), the direct baseline per seed, the stages'
    folder names, and the base run config they were built from."""

    base: RunConfig
    labels: list[str]
    chain: list[list[RunConfig]]
    direct: list[RunConfig]
    seeds: list[int]

    def chain_dirs(self, root: Path) -> list[list[Path]]:
        return [[root / f"seed{s}" / label for s in self.seeds] for label in self.labels]

    def direct_dirs(self, root: Path) -> list[Path]:
        return [root / f"seed{s}" / "direct" for s in self.seeds]


def plan_stages(
    config: StagedConfig, base: RunConfig, config_path: Path, stages: Sequence[tuple[str, dict[str, Any]]]
) -> StagedPlan:
    """Every run config of the chain (``[stage][seed]``) and of the direct baseline (per seed), validated.

    A stage the base config cannot take (an input range above a modulus, a composite modulus for ``div``, a split
    that leaves no training pair) is a one-line error naming the experiment file and the stage; so are LLC settings
    the task cannot take. Nothing trains.
    """
    budgets = config.budgets(len(stages))

    def build(task: dict[str, Any], steps: int, label: str) -> list[RunConfig]:
        data = base.to_dict()
        data["name"], data["train"]["steps"], data["train"]["early_stop"] = f"{config.name}_{label}", steps, None
        data["task"].update(task)
        return with_seeds(checked(data, f"{config_path}: stage {label}"), config.seeds)

    if config.llc is not None:
        if len(base.task.operations) > 1:
            raise UserError(f"{config_path}: llc: not supported for tasks with several operations")
        require_sampler()  # before anything trains
    chain = [build(task, n, label) for (label, task), n in zip(stages, budgets, strict=True)]
    direct = build(stages[-1][1], sum(budgets), "direct")
    return StagedPlan(base, [label for label, _ in stages], chain, direct, list(config.seeds))


@dataclass
class Trained:
    """The runs of a staged experiment: ``chain[stage][seed]`` and ``direct[seed]``, None where a run failed or
    could not start; ``why`` says why for each such run directory."""

    chain: list[list[Run | None]]
    direct: list[Run | None]
    why: dict[str, str] = field(default_factory=dict)


def train_stages(plan: StagedPlan, engine: Engine) -> Trained:
    """Train the chain stage by stage through the engine, then the direct baseline (finished runs reused).

    Each seed's stage k starts from its stage k-1 final checkpoint; a seed whose stage failed (or left no
    checkpoint, e.g. it diverged at once) stops there: its later stages are not trained and are reported with the
    reason, while the other seeds go on. A stage that cannot hand over is recorded as the engine's failure, so the
    experiment exits non-zero naming it.
    """
    dirs = plan.chain_dirs(engine.root)
    chain: list[list[Run | None]] = []
    why: dict[str, str] = {}
    for k, (configs, stage_dirs) in enumerate(zip(plan.chain, dirs, strict=True)):
        ready: list[int] = []
        starts: list[RunConfig] = []
        for i, (config, run_dir) in enumerate(zip(configs, stage_dirs, strict=True)):
            if k == 0:
                ready.append(i)
                starts.append(config)
                continue
            previous = chain[-1][i]
            if previous is None:
                why[str(run_dir)] = f"not trained: stage {plan.labels[k - 1]} did not finish"
                continue
            start, reason = _starting_from(config, previous)
            if start is None:
                why[str(run_dir)] = reason
                engine.failures.append(Failure(str(run_dir), f"RuntimeError: {reason}"))
                continue
            ready.append(i)
            starts.append(start)
        runs = engine.train(starts, [stage_dirs[i] for i in ready]) if ready else []
        stage: list[Run | None] = [None] * len(configs)
        for i, run in zip(ready, runs, strict=True):
            stage[i] = run
            failure = engine.failure_of(stage_dirs[i])
            if run is None and failure is not None:
                why[str(stage_dirs[i])] = failure.error
        chain.append(stage)
    direct_dirs = plan.direct_dirs(engine.root)
    direct = engine.train(plan.direct, direct_dirs)
    for run, run_dir in zip(direct, direct_dirs, strict=True):
        failure = engine.failure_of(run_dir)
        if run is None and failure is not None:
            why[str(run_dir)] = failure.error
    return Trained(chain, direct, why)


def _starting_from(config: RunConfig, previous: Run) -> tuple[RunConfig | None, str]:
    """``config`` starting from ``previous``'s final checkpoint, or None and why it cannot."""
    steps = previous.steps()
    if not steps:
        diverged = (previous.summary() or {}).get("diverged") or {}
        how = f"diverged at step {diverged['step']} and " if "step" in diverged else ""
        return None, f"{previous.root}: this stage {how}left no checkpoint for the next stage to start from"
    data = config.to_dict()
    data["model"]["init_from"] = str(previous.checkpoint_path(steps[-1]))
    return parse_config(data, source=config.name), ""


# The LLC along the chain ----------------------------------------------------------------------------------------
@dataclass
class LLCPoint:
    """The LLC at one checkpoint: its step in the run and on the chain's timeline, mean and between-chain sd."""

    step: int
    global_step: int
    llc_mean: float | None
    llc_std: float | None
    converged: bool


@dataclass
class StageLLC:
    """The LLC of one stage run (or of the direct run): at its last estimated checkpoint, and every point estimated."""

    step: int
    llc_mean: float | None
    llc_std: float | None
    converged: bool
    trajectory: list[LLCPoint] = field(default_factory=list)


def _llc_steps(run: Run, checkpoints: str | int, boundaries: Sequence[int] = ()) -> list[int]:
    """The checkpoints of ``run`` to estimate: its last (and, for the direct run, those at the chain's stage
    boundaries), every one, or every N-th and the last."""
    available = run.steps()
    if not available:
        raise UserError(f"{run.root}: no checkpoint to estimate the LLC of")
    if checkpoints == "final":
        return sorted({*(b for b in boundaries if b in set(available)), available[-1]})
    return select_steps(available, every=None if checkpoints == "all" else int(checkpoints))


def _run_llc(run: Run, steps: list[int], offset: int, settings: LLCConfig, device: str, progress: bool) -> StageLLC:
    report = analyze(run, ["llc"], steps=steps, device=device, progress=progress, options={"llc": settings.options()})
    by_step = {row["step"]: row for row in report.rows["llc"]}
    points = [
        LLCPoint(
            step=step,
            global_step=offset + step,
            llc_mean=by_step[step].get("llc_mean"),
            llc_std=by_step[step].get("llc_std"),
            converged=bool(by_step[step].get("converged")),
        )
        for step in report.selected  # checkpoints with non-finite weights are left out (and have no row)
        if step in by_step
    ]
    if not points:
        return StageLLC(step=steps[-1], llc_mean=None, llc_std=None, converged=False)
    last = points[-1]
    return StageLLC(last.step, last.llc_mean, last.llc_std, last.converged, points)


def chain_llc(
    config: StagedConfig, chain: list[list[Run | None]], direct: list[Run | None], *, device: str, progress: bool
) -> tuple[list[list[StageLLC | None]], list[StageLLC | None]]:
    """The LLC of every stage run (``[stage][seed]``) and of every direct run (per seed), as ``config.llc`` asks;
    None for a run that did not train.

    Each run's LLC is estimated on its own training split and objective (its stage's input range or modulus) by the
    analysis runner, which caches every estimate in the run's ``analysis/llc.json`` with its settings.
    """
    settings = config.llc
    if settings is None:
        raise ValueError("chain_llc needs a config with llc")
    dev = str(resolve_device(device))
    budgets = config.budgets(len(chain))
    offsets = [sum(budgets[:k]) for k in range(len(chain))]
    boundaries = list(itertools.accumulate(budgets))
    per_stage = [
        [
            None
            if run is None
            else _run_llc(run, _llc_steps(run, settings.checkpoints), offset, settings, dev, progress)
            for run in runs
        ]
        for runs, offset in zip(chain, offsets, strict=True)
    ]
    per_seed_direct = [
        None
        if run is None
        else _run_llc(run, _llc_steps(run, settings.checkpoints, boundaries), 0, settings, dev, progress)
        for run in direct
    ]
    return per_stage, per_seed_direct


def llc_across_seeds(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per stage (in chain order, then ``direct``), from result rows: the final LLC's mean and sd (ddof 1) over the
    seeds with an estimate, how many converged, and each seed's value; and the last stage against the direct run
    (Welch and Mann-Whitney tests, :func:`grokscope.stats.compare`)."""
    stages = []
    values: dict[str, list[float]] = {}
    for label in dict.fromkeys(r["stage"] for r in rows):
        mine = [r for r in rows if r["stage"] == label and r.get("llc") and _finite(r["llc"].get("llc_mean"))]
        values[label] = [r["llc"]["llc_mean"] for r in mine]
        x = np.asarray(values[label], dtype=float)
        stages.append(
            {
                "stage": label,
                "n": len(x),
                "mean": float(x.mean()) if len(x) else None,
                "sd": float(x.std(ddof=1)) if len(x) > 1 else None,
                "converged": sum(bool(r["llc"].get("converged")) for r in mine),
                "seeds": {str(r["seed"]): r["llc"]["llc_mean"] for r in mine},
            }
        )
    out: dict[str, Any] = {"stages": stages}
    chain_labels = _chain_labels(rows)
    if chain_labels and values[chain_labels[-1]] and values.get("direct"):
        comparison = stats.compare(values[chain_labels[-1]], values["direct"], (chain_labels[-1], "direct"))
        out["last_stage_vs_direct"] = comparison.to_dict()
    return jsonable(out)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def write_results(config: StagedConfig, root: Path, results: list[Any], title: str, value: str) -> dict[str, Any]:
    """``results.json`` under ``root`` (the config, one row per stage and seed, and with ``llc`` the LLC summary
    across seeds) and the figures; returns what ``results.json`` holds."""
    rows = jsonable(results)
    data: dict[str, Any] = {"config": config.model_dump(), "stages": rows}
    drawn = figures(rows, title, value=value)
    if config.llc is not None:
        data["llc"] = {"settings": config.llc.model_dump(), **llc_across_seeds(rows)}
        boundaries = list(itertools.accumulate(config.budgets(len(_chain_labels(rows)))))
        drawn |= llc_figures(rows, boundaries)
    write_json(root / "results.json", data)
    write_figures(drawn, root / "figures")
    return data


def _chain_labels(rows: list[dict[str, Any]]) -> list[str]:
    """The chain's stage labels in order (``direct`` left out)."""
    return [label for label in dict.fromkeys(r["stage"] for r in rows) if label != "direct"]
