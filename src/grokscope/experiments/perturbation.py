"""Perturbation runs: how far do two trainings drift apart when their initial weights differ by a little?

For each seed, a base run and, for each epsilon, a run whose initial weights carry ``epsilon`` relative noise
(``model.init_perturbation``; same data, split and batch order). All are trained with the fingerprint recorder.
For each (base, perturbed) pair this measures, over training: the relative parameter distance
``||W_a - W_b|| / ||W_a||`` and the prediction disagreement on every input (at common checkpoints), the distance
between the two fingerprints (log-probability quantiles, at every recorded step), and whether and when both grok.
Finished runs are reused, so rerunning the experiment only trains what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import torch
from pydantic import Field, model_validator

from grokscope.analysis.common import answer_logits, jsonable
from grokscope.analysis.fingerprint import FingerprintRecorder, FingerprintSpec, load_recording
from grokscope.config import RunConfig
from grokscope.experiments.runs import (
    ExperimentModel,
    Name,
    Seed,
    check_buildable,
    check_run_count,
    check_seeds,
    checked,
    load_base,
)
from grokscope.store import SUMMARY_FILE, Run, write_json
from grokscope.training import train
from grokscope.viz.perturbation import figures
from grokscope.viz.write import write_figures

RESULT_FILE = "perturbation.json"
MAX_EPSILON = 100.0
"""Relative noise above this swamps the initial weights (and toward 1e38 overflows float32): not a perturbation."""

Epsilon = Annotated[float, Field(gt=0, le=MAX_EPSILON)]


class PerturbationConfig(ExperimentModel):
    """``grokscope experiment`` config of kind ``perturbation`` (``base`` is a run config, relative to this file)."""

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


def folder_name(seed: int, epsilon: float) -> str:
    return f"seed{seed}_eps{epsilon:g}"


@dataclass
class PairResult:
    """Divergence of one perturbed run from its base run."""

    seed: int
    epsilon: float
    steps: list[int]
    parameter_distance: list[float]
    prediction_disagreement: list[float]
    fingerprint_steps: list[int]
    fingerprint_distance: list[float]
    base_generalization_step: int | None
    perturbed_generalization_step: int | None
    both_grokked: bool
    base_diverged_step: int | None = None
    perturbed_diverged_step: int | None = None


def _train_or_reuse(
    config: RunConfig, run_dir: Path, recorder_every: int, spec: FingerprintSpec, device: str, progress: bool
) -> Run:
    if (run_dir / SUMMARY_FILE).is_file():
        return Run.open(run_dir)
    recorder = FingerprintRecorder(every=recorder_every, spec=spec)
    return train(config, run_dir, device=device, resume=True, progress=progress, callbacks=[recorder]).run


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


def run_experiment(
    config: PerturbationConfig, config_path: Path, out: Path, *, device: str = "auto", progress: bool = True
) -> list[PairResult]:
    """Train every base and perturbed run (reusing finished ones) and measure each pair's divergence."""
    planned = plan(config, config_path)
    root = out / config.name
    spec = FingerprintSpec(probe_size=config.probe_size)
    pairs = []
    for seed, (seeded, perturbed) in zip(config.seeds, planned, strict=True):
        base = _train_or_reuse(seeded, root / f"seed{seed}_base", config.record_every, spec, device, progress)
        for epsilon, perturbed_config in perturbed:
            run_dir = root / folder_name(seed, epsilon)
            perturbed_run = _train_or_reuse(perturbed_config, run_dir, config.record_every, spec, device, progress)
            pairs.append(compare_runs(base, perturbed_run, seed, epsilon))
    rows = jsonable(pairs)
    write_json(root / RESULT_FILE, {"config": config.model_dump(), "pairs": rows})
    write_figures(figures(rows), root / "figures")
    return pairs


def _g(x: float | None) -> str:
    return "nan" if x is None else f"{x:.2g}"


def describe(pair: PairResult) -> str:
    """One line per pair; robust to runs that diverged (no common checkpoints, nan distances)."""
    if pair.parameter_distance:
        first, last = pair.parameter_distance[0], pair.parameter_distance[-1]
        distance = f"parameter distance {_g(first)} -> {_g(last)}"
    else:
        distance = "no common checkpoints"
    disagreement = pair.prediction_disagreement[-1] if pair.prediction_disagreement else None
    parts = [distance]
    if disagreement is not None and disagreement == disagreement:
        parts.append(f"final disagreement {disagreement:.1%}")
    parts.append(f"generalized at {pair.base_generalization_step} vs {pair.perturbed_generalization_step}")
    for who, step in (("base", pair.base_diverged_step), ("perturbed", pair.perturbed_diverged_step)):
        if step is not None:
            parts.append(f"{who} run diverged at step {step}")
    return f"seed {pair.seed}, eps {pair.epsilon:g}: " + ", ".join(parts)


CONFIG = PerturbationConfig


def summary_lines(pairs: list[PairResult]) -> list[str]:
    return [describe(pair) for pair in pairs]
