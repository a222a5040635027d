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
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from grokscope.analysis.common import answer_logits, jsonable
from grokscope.analysis.fingerprint import FingerprintRecorder, FingerprintSpec, load_recording
from grokscope.config import RunConfig, load_config
from grokscope.errors import UserError
from grokscope.store import SUMMARY_FILE, Run, write_json
from grokscope.training import train
from grokscope.viz.perturbation import figures
from grokscope.viz.write import write_figures

RESULT_FILE = "perturbation.json"


class PerturbationConfig(BaseModel):
    """``grokscope experiment`` config of kind ``perturbation`` (``base`` is a run config, relative to this file)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["perturbation"]
    name: str = Field("perturbation", pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")
    base: str
    set: list[str] = Field(default_factory=list, description="--set overrides applied to the base config")
    epsilons: list[float] = Field(default_factory=lambda: [1e-4, 1e-2], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    record_every: int = Field(2, ge=1)
    probe_size: int = Field(100, ge=1)


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
    )


def run_experiment(
    config: PerturbationConfig, config_path: Path, out: Path, *, device: str = "auto", progress: bool = True
) -> list[PairResult]:
    """Train every base and perturbed run (reusing finished ones) and measure each pair's divergence."""
    base_path = (config_path.parent / config.base).resolve()
    base_config = load_config(base_path, config.set)
    if any(e <= 0 for e in config.epsilons):
        raise UserError(f"{config_path}: epsilons must be positive, got {config.epsilons}")
    root = out / config.name
    spec = FingerprintSpec(probe_size=config.probe_size)
    pairs = []
    for seed in config.seeds:
        seeded = base_config.with_seed(seed)
        base = _train_or_reuse(seeded, root / f"seed{seed}_base", config.record_every, spec, device, progress)
        for epsilon in config.epsilons:
            data = seeded.to_dict()
            data["model"] |= {"init_perturbation": epsilon, "perturbation_seed": seed}
            perturbed_config = RunConfig.model_validate(data)
            run_dir = root / f"seed{seed}_eps{epsilon:g}"
            perturbed = _train_or_reuse(perturbed_config, run_dir, config.record_every, spec, device, progress)
            pairs.append(compare_runs(base, perturbed, seed, epsilon))
    rows = jsonable(pairs)
    write_json(root / RESULT_FILE, {"config": config.model_dump(), "pairs": rows})
    write_figures(figures(rows), root / "figures")
    return pairs


def describe(pair: PairResult) -> str:
    final = pair.parameter_distance[-1] if pair.parameter_distance else float("nan")
    grok = f"generalized at {pair.base_generalization_step} vs {pair.perturbed_generalization_step}"
    return (
        f"seed {pair.seed}, eps {pair.epsilon:g}: parameter distance {pair.parameter_distance[0]:.2g} -> {final:.2g}, "
        f"final disagreement {pair.prediction_disagreement[-1]:.1%}, {grok}"
    )


CONFIG = PerturbationConfig


def summary_lines(pairs: list[PairResult]) -> list[str]:
    return [describe(pair) for pair in pairs]
