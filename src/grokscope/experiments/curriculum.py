"""Curriculum learning: train on growing input ranges over a fixed vocabulary, against direct training.

Stage k trains (a op b) mod p with a, b < ``stages[k]`` (``task.input_range``; the vocabulary stays that of p, so
stages nest as true subsets) for ``stage_steps[k]`` steps, starting from stage k-1's final weights (a fresh AdamW
each stage). The direct baseline trains the full range for the summed budget, from the same seed. Per stage and for
the baseline this records the number of training pairs, the stage's own train/test accuracy, accuracy on every
pair of the full task, and on the pairs the model never trained on (for the curriculum: in no stage's training set).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from grokscope.analysis.common import answer_logits, jsonable
from grokscope.config import RunConfig, load_config
from grokscope.errors import UserError
from grokscope.experiments.runs import train_chain, train_missing
from grokscope.store import Run, write_json
from grokscope.tasks import ModularTask
from grokscope.viz.stages import figures
from grokscope.viz.write import write_figures


class CurriculumConfig(BaseModel):
    """``grokscope experiment`` config of kind ``curriculum`` (``base`` is a run config, relative to this file)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["curriculum"]
    name: str = Field("curriculum", pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")
    base: str
    set: list[str] = Field(default_factory=list)
    stages: list[int] = Field(min_length=1, description="input ranges, increasing; the last is usually the modulus")
    stage_steps: int | list[int] = Field(500, description="steps per stage (one value for all, or one per stage)")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)

    @model_validator(mode="after")
    def _check(self) -> CurriculumConfig:
        if any(b <= a for a, b in itertools.pairwise(self.stages)):
            raise ValueError(f"stages: input ranges must increase, got {self.stages}")
        if isinstance(self.stage_steps, list) and len(self.stage_steps) != len(self.stages):
            raise ValueError(f"stage_steps: {len(self.stage_steps)} values for {len(self.stages)} stages")
        return self

    @property
    def steps(self) -> list[int]:
        return self.stage_steps if isinstance(self.stage_steps, list) else [self.stage_steps] * len(self.stages)


@dataclass
class StageResult:
    seed: int
    stage: str  # "range 8", ... or "direct"
    input_range: int
    steps: int
    train_pairs: int
    train_acc: float
    test_acc: float
    full_acc: float  # every pair of the full task
    unseen_acc: float | None  # pairs in no training set of this chain
    run_dir: str


@torch.no_grad()
def correct_on(run: Run, task: ModularTask) -> torch.Tensor:
    """Whether the run's final model answers each pair of ``task`` (same vocabulary) correctly."""
    data = task.dataset()
    return answer_logits(run.load_model(), task, data).argmax(-1) == data.answers


def trained_pairs(run: Run, task: ModularTask) -> torch.Tensor:
    """Rows of ``task.dataset()`` that were in ``run``'s training set (matched by (a, b))."""
    pairs = run.task.pairs()[run.split().train]
    index = pairs[:, 0] * task.modulus + pairs[:, 1]
    seen = torch.zeros(task.modulus * task.modulus, dtype=torch.bool)
    seen[index] = True
    full = task.pairs()
    return seen[full[:, 0] * task.modulus + full[:, 1]]


def run_experiment(
    config: CurriculumConfig, config_path: Path, out: Path, *, device: str = "auto", progress: bool = True
) -> list[StageResult]:
    base = load_config((config_path.parent / config.base).resolve(), config.set)
    if config.stages[-1] > base.task.modulus:
        raise UserError(f"{config_path}: stages: {config.stages[-1]} exceeds the modulus {base.task.modulus}")
    full = ModularTask.from_config(base.task.model_copy(update={"input_range": None}))
    root = out / config.name

    def stage_config(seed: int, input_range: int | None, steps: int, name: str) -> RunConfig:
        data = base.with_seed(seed).to_dict()
        data["name"], data["task"]["input_range"], data["train"]["steps"] = name, input_range, steps
        data["train"]["early_stop"] = None  # every stage spends its budget, as the baseline does
        return RunConfig.model_validate(data)

    chain = train_chain(
        [
            [stage_config(s, r, n, f"{config.name}_range{r}") for s in config.seeds]
            for r, n in zip(config.stages, config.steps, strict=True)
        ],
        [[root / f"seed{s}" / f"range{r}" for s in config.seeds] for r in config.stages],
        device=device,
        progress=progress,
    )
    direct = train_missing(
        [stage_config(s, None, sum(config.steps), f"{config.name}_direct") for s in config.seeds],
        [root / f"seed{s}" / "direct" for s in config.seeds],
        device=device,
        progress=progress,
    )
    results = []
    for i, seed in enumerate(config.seeds):
        runs = [stage[i] for stage in chain]
        seen = torch.zeros(full.n_pairs, dtype=torch.bool)
        for r, n, run in zip(config.stages, config.steps, runs, strict=True):
            seen |= trained_pairs(run, full)
            results.append(_result(seed, f"range {r}", r, n, run, full, seen))
        results.append(
            _result(seed, "direct", full.modulus, sum(config.steps), direct[i], full, trained_pairs(direct[i], full))
        )
    rows = jsonable(results)
    write_json(root / "results.json", {"config": config.model_dump(), "stages": rows})
    write_figures(
        figures(rows, "curriculum: accuracy on every pair after each stage vs direct training"), root / "figures"
    )
    return results


def _result(
    seed: int, stage: str, input_range: int, steps: int, run: Run, full: ModularTask, seen: torch.Tensor
) -> StageResult:
    final = run.metrics()[-1]
    correct = correct_on(run, full)
    unseen = ~seen
    return StageResult(
        seed=seed,
        stage=stage,
        input_range=input_range,
        steps=steps,
        train_pairs=len(run.split().train),
        train_acc=final["train_acc"],
        test_acc=final["test_acc"],
        full_acc=float(correct.double().mean()),
        unseen_acc=float(correct[unseen].double().mean()) if unseen.any() else None,
        run_dir=str(run.root),
    )


def summary_lines(results: list[StageResult]) -> list[str]:
    lines = ["seed | stage | train pairs | steps | stage test acc | acc on every pair | acc on never-trained pairs"]
    for r in results:
        unseen = "—" if r.unseen_acc is None else f"{r.unseen_acc:.1%}"
        lines.append(
            f"{r.seed} | {r.stage} | {r.train_pairs} | {r.steps} | {r.test_acc:.1%} | {r.full_acc:.1%} | {unseen}"
        )
    return lines


CONFIG = CurriculumConfig
