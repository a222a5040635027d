"""Curriculum learning: train on growing input ranges over a fixed vocabulary, against direct training.

Stage k trains (a op b) mod p with a, b < ``stages[k]`` (``task.input_range``; the vocabulary stays that of p, so
stages nest as true subsets) for ``stage_steps[k]`` steps, starting from stage k-1's final weights (a fresh AdamW
each stage). Every stage and the baseline use the nested split (``task.split: nested``,
:func:`grokscope.tasks.make_nested_split`): each stage's training set holds the previous stage's, so a stage's test
pairs were trained on in no stage up to it. The direct baseline trains the full range for the summed budget, from the
same seed, on the last stage's split. Per stage and for
the baseline this records the number of training pairs, the stage's own train/test accuracy, accuracy on every
pair of the full task, and on the pairs the model never trained on (for the curriculum: in no stage's training set).
With ``llc:``, each stage's LLC on its own input range's training pairs, and the direct run's
(:mod:`grokscope.experiments.stages`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import torch
from pydantic import Field, model_validator

from grokscope.analysis.common import answer_logits
from grokscope.errors import UserError
from grokscope.experiments.runs import Name
from grokscope.experiments.stages import (
    StagedConfig,
    StageLLC,
    base_config,
    chain_llc,
    check_stages,
    llc_cell,
    llc_lines,
    run_stages,
    write_results,
)
from grokscope.store import Run
from grokscope.tasks import ModularTask


class CurriculumConfig(StagedConfig):
    """``grokscope experiment`` config of kind ``curriculum``: input ranges, growing, over one vocabulary."""

    kind: Literal["curriculum"]
    name: Name = "curriculum"
    stages: list[Annotated[int, Field(ge=1)]] = Field(
        min_length=1, description="input ranges, increasing; the last is usually the modulus"
    )

    @model_validator(mode="after")
    def _check(self) -> CurriculumConfig:
        check_stages(self.stages, "stages", self.stage_steps, self.seeds)
        return self


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
    llc: StageLLC | None = None  # with llc: in the config


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
    base = base_config(config, config_path)
    if config.stages[-1] > base.task.modulus:
        raise UserError(f"{config_path}: stages: {config.stages[-1]} exceeds the modulus {base.task.modulus}")
    full = ModularTask.from_config(base.task.model_copy(update={"input_range": None}))
    # Nested splits: each stage's training set holds every earlier stage's, so a stage's test pairs were trained on
    # in no stage so far; the direct baseline (the last stage's task) has the last stage's split.
    stages = [(f"range{r}", {"input_range": r, "split": "nested"}) for r in config.stages]
    last = config.stages[-1]
    stages[-1] = (stages[-1][0], {"input_range": None if last == full.modulus else last, "split": "nested"})
    chain, direct = run_stages(config, base, config_path, out, stages, device=device, progress=progress)
    budgets = config.budgets(len(stages))
    llc = chain_llc(config, chain, direct, device=device, progress=progress) if config.llc is not None else None
    results = []
    for i, seed in enumerate(config.seeds):
        seen = torch.zeros(full.n_pairs, dtype=torch.bool)
        for k, (r, n, stage) in enumerate(zip(config.stages, budgets, chain, strict=True)):
            seen |= trained_pairs(stage[i], full)
            results.append(_result(seed, f"range {r}", r, n, stage[i], full, seen))
            results[-1].llc = llc[0][k][i] if llc is not None else None
        direct_seen = trained_pairs(direct[i], full)
        results.append(_result(seed, "direct", config.stages[-1], sum(budgets), direct[i], full, direct_seen))
        results[-1].llc = llc[1][i] if llc is not None else None
    title = "curriculum: accuracy on every pair after each stage vs direct training"
    write_results(config, out, results, title, value="full_acc")
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
    with_llc = any(r.llc is not None for r in results)
    header = "seed | stage | train pairs | steps | stage test acc | acc on every pair | acc on never-trained pairs"
    lines = [header + (" | final LLC" if with_llc else "")]
    for r in results:
        unseen = "—" if r.unseen_acc is None else f"{r.unseen_acc:.1%}"
        line = f"{r.seed} | {r.stage} | {r.train_pairs} | {r.steps} | {r.test_acc:.1%} | {r.full_acc:.1%} | {unseen}"
        lines.append(line + (f" | {llc_cell(r.llc)}" if with_llc else ""))
    return lines + (llc_lines(results) if with_llc else [])


CONFIG = CurriculumConfig
