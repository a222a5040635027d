"""Sequential finetuning across moduli (e.g. 7 -> 11 -> 23 -> 49 -> 53), against direct training on the last one.

Stage k trains (a op b) mod ``moduli[k]`` for ``stage_steps[k]`` steps from stage k-1's final weights, moved onto the
new vocabulary by :func:`grokscope.models.transplant` (residues below both moduli and the special tokens keep their
rows; new residues start from the seed's fresh init) with a fresh AdamW. The direct baseline trains the last modulus
for the summed budget. After each stage, retention: the model's accuracy on every earlier modulus's test split,
read through the same transplant rule in reverse (exact here, as the moduli increase and every earlier token exists).
With ``llc:``, each stage's LLC on its own modulus's training pairs, and the direct run's
(:mod:`grokscope.experiments.stages`). A seed whose stage failed stops there and is reported as failed; the others
finish.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, model_validator

from grokscope.analysis.common import answer_logits
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
from grokscope.models import build_model, load_model, transplant
from grokscope.store import Run
from grokscope.training.summary import first_step_at
from grokscope.viz.stages_text import describe_finetune


class FinetuneConfig(StagedConfig):
    """``grokscope experiment`` config of kind ``finetune``: a chain of increasing moduli."""

    kind: Literal["finetune"]
    name: Name = "finetune"
    moduli: list[Annotated[int, Field(ge=2)]] = Field(min_length=2)

    @model_validator(mode="after")
    def _check(self) -> FinetuneConfig:
        check_stages(self.moduli, "moduli", self.stage_steps, self.seeds)
        return self


@dataclass
class StageResult:
    """One seed's stage (or its direct run); ``status`` ``failed`` (metrics None) with the reason when the run failed
    or its chain stopped before it. Steps are optimizer steps."""

    seed: int
    stage: str  # "mod 7", ... or "direct"
    modulus: int
    steps: int
    train_acc: float | None = None
    test_acc: float | None = None
    steps_to_test_acc_99: int | None = None
    retention: dict[str, float] = field(default_factory=dict)  # earlier modulus -> test accuracy now
    run_dir: str = ""
    llc: StageLLC | None = None  # with llc: in the config
    status: Literal["ok", "failed"] = "ok"
    error: str | None = None


@torch.no_grad()
def accuracy_on(model_run: Run, earlier: Run) -> float:
    """Test accuracy of ``model_run``'s final weights on ``earlier``'s task and test split (transplanted back)."""
    task, source_task = earlier.task, model_run.task
    fresh = build_model(earlier.config.model, task, seed=earlier.config.seed).state_dict()
    model = load_model(earlier.config.model, task, transplant(model_run.load_state_dict(), source_task, fresh, task))
    data = task.dataset()
    test = earlier.split().test
    return float((answer_logits(model, task, data).argmax(-1)[test] == data.answers[test]).double().mean())


def plan(config: FinetuneConfig, config_path: Path) -> StagedPlan:
    """Every stage's and the direct baseline's run configs, validated."""
    stages: list[tuple[str, dict[str, Any]]] = [(f"mod{m}", {"modulus": m}) for m in config.moduli]
    return plan_stages(config, base_config(config, config_path), config_path, stages)


def execute(config: FinetuneConfig, plan: StagedPlan, engine: Engine) -> list[StageResult]:
    """Train the chain and the direct runs through the engine; per seed and stage, test accuracy, steps to 99% and
    retention of every earlier modulus (and the LLC with ``llc:``)."""
    trained = train_stages(plan, engine)
    budgets = config.budgets(len(plan.labels))
    llc = None
    if config.llc is not None:
        llc = chain_llc(config, trained.chain, trained.direct, device=engine.device, progress=engine.progress)
    chain_dirs, direct_dirs = plan.chain_dirs(engine.root), plan.direct_dirs(engine.root)
    results = []
    for i, seed in enumerate(config.seeds):
        runs = [stage[i] for stage in trained.chain]
        for k, (m, n, run) in enumerate(zip(config.moduli, budgets, runs, strict=True)):
            result = _result(seed, f"mod {m}", m, n, run, chain_dirs[k][i], trained.why)
            if run is not None:
                # Every earlier stage of this seed finished (the chain stops at a failed stage).
                result.retention = {f"mod {e.task.modulus}": accuracy_on(run, e) for e in runs[:k] if e is not None}
            result.llc = llc[0][k][i] if llc is not None else None
            results.append(result)
        direct = _result(
            seed, "direct", config.moduli[-1], sum(budgets), trained.direct[i], direct_dirs[i], trained.why
        )
        direct.llc = llc[1][i] if llc is not None else None
        results.append(direct)
    return results


def summarize(config: FinetuneConfig, plan: StagedPlan, measures: list[StageResult], root: Path) -> dict[str, Any]:
    """``results.json`` (a row per seed and stage, the LLC across seeds with ``llc:``) and the figure."""
    title = "sequential finetuning: test accuracy after each stage vs direct training"
    return write_results(config, root, measures, title, value="test_acc")


def _result(
    seed: int, stage: str, modulus: int, steps: int, run: Run | None, run_dir: Path, why: dict[str, str]
) -> StageResult:
    if run is None:
        error = why.get(str(run_dir), "did not finish")
        return StageResult(seed, stage, modulus, steps, run_dir=str(run_dir), status="failed", error=error)
    rows = run.metrics()
    first = first_step_at(rows, "test_acc", 0.99)
    final = rows[-1]
    return StageResult(seed, stage, modulus, steps, final["train_acc"], final["test_acc"], first, run_dir=str(run.root))


SPEC = ExperimentSpec(
    kind="finetune",
    config=FinetuneConfig,
    plan=plan,
    execute=execute,
    summarize=summarize,
    describe=describe_finetune,
)
