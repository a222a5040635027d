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
(:mod:`grokscope.experiments.stages`). A seed whose stage failed stops there and is reported as failed; the others
finish.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, model_validator

from grokscope.analysis.common import answer_logits
from grokscope.errors import UserError
from grokscope.experiments.engine import Engine
from grokscope.experiments.runs import Name
from grokscope.experiments.spec import ExperimentSpec
from grokscope.experiments.stages import (
    StagedConfig,
    StagedPlan,
    StageLLC,
    base_config,
    chain_llc,
    check_stages,
    plan_stages,
    train_stages,
    write_results,
)
from grokscope.store import Run
from grokscope.tasks import ModularTask
from grokscope.viz.stages_text import describe_curriculum


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
    """One seed's stage (or its direct run): accuracies after it; ``status`` ``failed`` (metrics None) with the
    reason when the run failed or its chain stopped before it."""

    seed: int
    stage: str  # "range 8", ... or "direct"
    input_range: int
    steps: int
    train_pairs: int | None = None
    train_acc: float | None = None
    test_acc: float | None = None
    full_acc: float | None = None  # every pair of the full task
    unseen_acc: float | None = None  # pairs in no training set of this chain
    run_dir: str = ""
    llc: StageLLC | None = None  # with llc: in the config
    status: Literal["ok", "failed"] = "ok"
    error: str | None = None


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


def plan(config: CurriculumConfig, config_path: Path) -> StagedPlan:
    """Every stage's and the direct baseline's run configs, validated (a range above the modulus is refused)."""
    base = base_config(config, config_path)
    if config.stages[-1] > base.task.modulus:
        raise UserError(f"{config_path}: stages: {config.stages[-1]} exceeds the modulus {base.task.modulus}")
    # Nested splits: each stage's training set holds every earlier stage's, so a stage's test pairs were trained on
    # in no stage so far; the direct baseline (the last stage's task) has the last stage's split.
    stages: list[tuple[str, dict[str, Any]]] = [
        (f"range{r}", {"input_range": r, "split": "nested"}) for r in config.stages
    ]
    last = config.stages[-1]
    stages[-1] = (stages[-1][0], {"input_range": None if last == base.task.modulus else last, "split": "nested"})
    return plan_stages(config, base, config_path, stages)


def execute(config: CurriculumConfig, plan: StagedPlan, engine: Engine) -> list[StageResult]:
    """Train the chain and the direct runs through the engine; per seed and stage, accuracy on every pair and on
    the pairs no stage so far trained on (and the LLC with ``llc:``)."""
    trained = train_stages(plan, engine)
    full = ModularTask.from_config(plan.base.task.model_copy(update={"input_range": None}))
    budgets = config.budgets(len(plan.labels))
    llc = None
    if config.llc is not None:
        llc = chain_llc(config, trained.chain, trained.direct, device=engine.device, progress=engine.progress)
    results = []
    for i, seed in enumerate(config.seeds):
        seen = torch.zeros(full.n_pairs, dtype=torch.bool)
        for k, (r, n, stage) in enumerate(zip(config.stages, budgets, trained.chain, strict=True)):
            run = stage[i]
            if run is not None:
                seen |= trained_pairs(run, full)
            run_dir = plan.chain_dirs(engine.root)[k][i]
            results.append(_result(seed, f"range {r}", r, n, run, run_dir, full, seen, trained.why))
            results[-1].llc = llc[0][k][i] if llc is not None else None
        run, run_dir = trained.direct[i], plan.direct_dirs(engine.root)[i]
        direct_seen = trained_pairs(run, full) if run is not None else seen
        results.append(
            _result(seed, "direct", config.stages[-1], sum(budgets), run, run_dir, full, direct_seen, trained.why)
        )
        results[-1].llc = llc[1][i] if llc is not None else None
    return results


def summarize(config: CurriculumConfig, plan: StagedPlan, measures: list[StageResult], root: Path) -> dict[str, Any]:
    """``results.json`` (a row per seed and stage, the LLC across seeds with ``llc:``) and the figure."""
    title = "curriculum: accuracy on every pair after each stage vs direct training"
    return write_results(config, root, measures, title, value="full_acc")


def _result(
    seed: int,
    stage: str,
    input_range: int,
    steps: int,
    run: Run | None,
    run_dir: Path,
    full: ModularTask,
    seen: torch.Tensor,
    why: dict[str, str],
) -> StageResult:
    if run is None:
        error = why.get(str(run_dir), "did not finish")
        return StageResult(seed, stage, input_range, steps, run_dir=str(run_dir), status="failed", error=error)
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


SPEC = ExperimentSpec(
    kind="curriculum",
    config=CurriculumConfig,
    plan=plan,
    execute=execute,
    summarize=summarize,
    describe=describe_curriculum,
)
