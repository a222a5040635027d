"""Perturbation runs: how far do two trainings drift apart when their initial weights differ by a little?

For each seed, a base run and, for each epsilon, a run whose initial weights carry ``epsilon`` relative noise
(``model.init_perturbation``; same data, split and batch order). All are trained with the fingerprint recorder.
For each (base, perturbed) pair this measures, over training: the relative parameter distance
``||W_a - W_b|| / ||W_a||`` and the prediction disagreement on every input (at common checkpoints), the distance
between the two fingerprints (log-probability quantiles, at every recorded step), and whether and when both grok.
Every run trains through the experiment engine (local or Ray; finished runs reused, so rerunning the experiment
only trains what is missing). A pair whose base or perturbed run failed is reported as failed; the others finish.
The printed text is :mod:`grokscope.viz.perturbation_text`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, model_validator

from grokscope.analysis.common import answer_logits, jsonable
from grokscope.analysis.fingerprint import load_recording
from grokscope.config import RunConfig
from grokscope.experiments.engine import Engine
from grokscope.experiments.runs import (
    Name,
    RecordedExperiment,
    Seed,
    check_buildable,
    check_run_count,
    check_seeds,
    checked,
    load_base,
)
from grokscope.experiments.spec import ExperimentSpec
from grokscope.recorders import RecordPlan
from grokscope.store import Run, write_json
from grokscope.viz.perturbation import figures
from grokscope.viz.perturbation_text import describe
from grokscope.viz.write import write_figures

RESULT_FILE = "perturbation.json"
MAX_EPSILON = 100.0
"""Relative noise above this swamps the initial weights (and toward 1e38 overflows float32): not a perturbation."""

Epsilon = Annotated[float, Field(gt=0, le=MAX_EPSILON)]


class PerturbationConfig(RecordedExperiment):
    """``grokscope experiment`` config of kind ``perturbation`` (``base`` is a run config, relative to this file).

    Every run records fingerprints (the distance between two runs' fingerprints is a measure here), every
    ``record_every`` steps on ``probe_size`` inputs; ``record`` may add other recorders and ``log`` loggers."""

    kind: Literal["perturbation"]
    name: Name = "perturbation"
    base: str
    set: list[str] = Field(default_factory=list, description="--set overrides applied to the base config")
    epsilons: list[Epsilon] = Field(
        default_factory=lambda: [1e-4, 1e-2], min_length=1, description="relative noise, in (0, 100]"
    )
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1)
    record_every: int = Field(2, ge=1)
    probe_size: int = Field(100, ge=1)

    @model_validator(mode="after")
    def _fingerprint_needs_its_recorder(self) -> PerturbationConfig:
        return self  # the fingerprint recorder is always attached here: probe settings need no record: entry

    @model_validator(mode="after")
    def _check(self) -> PerturbationConfig:
        folders: dict[str, int] = {}
        for i, epsilon in enumerate(self.epsilons):
            j = folders.setdefault(folder_name(0, epsilon), i)
            if j != i:
                raise ValueError(
                    f"epsilons: {self.epsilons[j]!r} and {epsilon!r} would share the run folder "
                    f"{folder_name(0, epsilon)!r}; give distinct values"
                )
        check_seeds(self.seeds)
        n = len(self.seeds) * (1 + len(self.epsilons))
        check_run_count(n, "epsilons", f"{len(self.seeds)} seeds x (1 + {len(self.epsilons)} epsilons)")
        return self

    def record_plan(self) -> RecordPlan:
        """The fingerprint recorder (``probe_size`` inputs, ``fingerprint`` settings) on every run, and whatever
        ``record`` and ``log`` add."""
        probe = {"probe_size": self.probe_size} | (
            self.fingerprint.model_dump(exclude_none=True) if self.fingerprint else {}
        )
        names = tuple(dict.fromkeys(["fingerprint", *self.record]))
        return RecordPlan(names, self.record_every, probe, where="record", loggers=tuple(dict.fromkeys(self.log)))


def folder_name(seed: int, epsilon: float) -> str:
    return f"seed{seed}_eps{epsilon:g}"


def base_folder(seed: int) -> str:
    return f"seed{seed}_base"


@dataclass
class PairResult:
    """Divergence of one perturbed run from its base run; ``status`` ``failed`` (no measures) with the reason when
    either run failed."""

    seed: int
    epsilon: float
    steps: list[int] = field(default_factory=list)
    parameter_distance: list[float] = field(default_factory=list)
    prediction_disagreement: list[float] = field(default_factory=list)
    fingerprint_steps: list[int] = field(default_factory=list)
    fingerprint_distance: list[float] = field(default_factory=list)
    base_generalization_step: int | None = None
    perturbed_generalization_step: int | None = None
    both_grokked: bool = False
    base_diverged_step: int | None = None
    perturbed_diverged_step: int | None = None
    status: Literal["ok", "failed"] = "ok"
    error: str | None = None


@torch.no_grad()
def compare_runs(base: Run, perturbed: Run, seed: int, epsilon: float) -> PairResult:
    """Parameter distance and prediction disagreement at common checkpoints; fingerprint distance at common steps."""
    task = base.task
    data = task.dataset()
    steps = sorted(set(base.steps()) & set(perturbed.steps()))
    distance, disagreement = [], []
    for step in steps:
        model_a, model_b = base.load_model(step), perturbed.load_model(step)
        # Parameters only: state dicts also hold buffers such as attention's -inf mask value.
        a, b = dict(model_a.named_parameters()), dict(model_b.named_parameters())
        diff = sum((a[n].double() - b[n].double()).pow(2).sum() for n in a).sqrt()
        size = sum(w.double().pow(2).sum() for w in a.values()).sqrt()
        distance.append(float(diff / size))
        logits_a = answer_logits(model_a, task, data)
        logits_b = answer_logits(model_b, task, data)
        disagreement.append(float((logits_a.argmax(-1) != logits_b.argmax(-1)).double().mean()))
    rec_a, rec_b = load_recording(base), load_recording(perturbed)
    common = sorted(set(rec_a.steps.tolist()) & set(rec_b.steps.tolist()))
    index_a = {s: i for i, s in enumerate(rec_a.steps.tolist())}
    index_b = {s: i for i, s in enumerate(rec_b.steps.tolist())}
    fa, fb = rec_a.snapshots(), rec_b.snapshots()
    fingerprint_distance = [float((fa[index_a[s]] - fb[index_b[s]]).norm()) for s in common]
    sa, sb = base.summary() or {}, perturbed.summary() or {}
    return PairResult(
        seed=seed,
        epsilon=epsilon,
        steps=steps,
        parameter_distance=distance,
        prediction_disagreement=disagreement,
        fingerprint_steps=common,
        fingerprint_distance=fingerprint_distance,
        base_generalization_step=sa.get("generalization_step"),
        perturbed_generalization_step=sb.get("generalization_step"),
        both_grokked=sa.get("regime") == "grokked" and sb.get("regime") == "grokked",
        base_diverged_step=_diverged_step(sa),
        perturbed_diverged_step=_diverged_step(sb),
    )


def _diverged_step(summary: dict) -> int | None:
    diverged = summary.get("diverged")
    return diverged.get("step") if isinstance(diverged, dict) else None


def plan(config: PerturbationConfig, config_path: Path) -> list[tuple[RunConfig, list[tuple[float, RunConfig]]]]:
    """Per seed: the base run config and one perturbed config per epsilon, all validated before anything trains."""
    base_config = load_base(config_path, config.base, config.set)[1]
    check_buildable(base_config, f"{config_path}: base {config.base}")
    planned = []
    for seed in config.seeds:
        seeded = base_config.with_seed(seed)
        perturbed = []
        for i, epsilon in enumerate(config.epsilons):
            data = seeded.to_dict()
            data["model"] |= {"init_perturbation": epsilon, "perturbation_seed": seed}
            perturbed.append((epsilon, checked(data, f"{config_path}: epsilons.{i}")))
        planned.append((seeded, perturbed))
    return planned


def execute(
    config: PerturbationConfig, plan: list[tuple[RunConfig, list[tuple[float, RunConfig]]]], engine: Engine
) -> list[PairResult]:
    """Train every base and perturbed run through the engine (reusing finished ones) and measure each pair."""
    root = engine.root
    # The base runs differ only in their seed: one group. A perturbed run also has its own perturbation seed, so it
    # is a group of its own.
    groups = [([seeded for seeded, _ in plan], [root / base_folder(s) for s in config.seeds])]
    for seed, (_, perturbed) in zip(config.seeds, plan, strict=True):
        groups += [([c], [root / folder_name(seed, epsilon)]) for epsilon, c in perturbed]
    trained = engine.train_groups(groups)
    bases, perturbed_runs = trained[0], [runs[0] for runs in trained[1:]]
    pairs, j = [], 0
    for seed, base, (_, perturbed) in zip(config.seeds, bases, plan, strict=True):
        for epsilon, _ in perturbed:
            other, j = perturbed_runs[j], j + 1
            if base is None or other is None:
                dirs = (root / base_folder(seed), root / folder_name(seed, epsilon))
                failures = [(d.name, f.error) for d in dirs if (f := engine.failure_of(d)) is not None]
                error = "; ".join(f"{name}: {why}" for name, why in failures) or "did not finish"
                pairs.append(PairResult(seed, epsilon, status="failed", error=error))
            else:
                pairs.append(compare_runs(base, other, seed, epsilon))
    return pairs


def summarize(config: PerturbationConfig, plan: Any, measures: list[PairResult], root: Path) -> dict[str, Any]:
    """``perturbation.json`` (the config and every pair's divergence) and the figure; returns that data."""
    data = {"config": config.model_dump(), "pairs": jsonable(measures)}
    write_json(root / RESULT_FILE, data)
    write_figures(figures([p for p in data["pairs"] if p["status"] == "ok"]), root / "figures")
    return data


SPEC = ExperimentSpec(
    kind="perturbation",
    config=PerturbationConfig,
    plan=plan,
    execute=execute,
    summarize=summarize,
    describe=describe,
)
