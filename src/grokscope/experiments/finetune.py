"""Sequential finetuning across moduli (e.g. 7 -> 11 -> 23 -> 49 -> 53), against direct training on the last one.

Stage k trains (a op b) mod ``moduli[k]`` for ``stage_steps[k]`` steps from stage k-1's final weights, moved onto the
new vocabulary by :func:`grokscope.models.transplant` (residues below both moduli and the special tokens keep their
rows; new residues start from the seed's fresh init) with a fresh AdamW. The direct baseline trains the last modulus
for the summed budget. After each stage, retention: the model's accuracy on every earlier modulus's test split,
read through the same transplant rule in reverse (exact here, as the moduli increase and every earlier token exists).
With ``llc:``, each stage's LLC on its own modulus's training pairs, and the direct run's
(:mod:`grokscope.experiments.stages`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import torch
from pydantic import Field, model_validator

from grokscope.analysis.common import answer_logits
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
from grokscope.models import build_model, load_model, transplant
from grokscope.store import Run
from grokscope.training.summary import first_step_at


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
    seed: int
    stage: str  # "mod 7", ... or "direct"
    modulus: int
    steps: int
    train_acc: float
    test_acc: float
    steps_to_test_acc_99: int | None
    retention: dict[str, float] = field(default_factory=dict)  # earlier modulus -> test accuracy now
    run_dir: str = ""
    llc: StageLLC | None = None  # with llc: in the config


@torch.no_grad()
def accuracy_on(model_run: Run, earlier: Run) -> float:
    """Test accuracy of ``model_run``'s final weights on ``earlier``'s task and test split (transplanted back)."""
    task, source_task = earlier.task, model_run.task
    fresh = build_model(earlier.config.model, task, seed=earlier.config.seed).state_dict()
    model = load_model(earlier.config.model, task, transplant(model_run.load_state_dict(), source_task, fresh, task))
    data = task.dataset()
    test = earlier.split().test
    return float((answer_logits(model, task, data).argmax(-1)[test] == data.answers[test]).double().mean())


def run_experiment(
    config: FinetuneConfig, config_path: Path, out: Path, *, device: str = "auto", progress: bool = True
) -> list[StageResult]:
    stages = [(f"mod{m}", {"modulus": m}) for m in config.moduli]
    base = base_config(config, config_path)
    chain, direct = run_stages(config, base, config_path, out, stages, device=device, progress=progress)
    budgets = config.budgets(len(stages))
    llc = chain_llc(config, chain, direct, device=device, progress=progress) if config.llc is not None else None
    results = []
    for i, seed in enumerate(config.seeds):
        runs = [stage[i] for stage in chain]
        for k, (m, n, run) in enumerate(zip(config.moduli, budgets, runs, strict=True)):
            result = _result(seed, f"mod {m}", m, n, run)
            result.retention = {f"mod {e.task.modulus}": accuracy_on(run, e) for e in runs[:k]}
            result.llc = llc[0][k][i] if llc is not None else None
            results.append(result)
        results.append(_result(seed, "direct", config.moduli[-1], sum(budgets), direct[i]))
        results[-1].llc = llc[1][i] if llc is not None else None
    title = "sequential finetuning: test accuracy after each stage vs direct training"
    write_results(config, out, results, title, value="test_acc")
    return results


def _result(seed: int, stage: str, modulus: int, steps: int, run: Run) -> StageResult:
    rows = run.metrics()
    first = first_step_at(rows, "test_acc", 0.99)
    final = rows[-1]
    return StageResult(seed, stage, modulus, steps, final["train_acc"], final["test_acc"], first, run_dir=str(run.root))


def summary_lines(results: list[StageResult]) -> list[str]:
    with_llc = any(r.llc is not None for r in results)
    lines = [
        "seed | stage | steps | test acc | steps to 99% | retention of earlier moduli" + (" | final LLC" * with_llc)
    ]
    for r in results:
        kept = ", ".join(f"{k} {v:.0%}" for k, v in r.retention.items()) or "—"
        reached = "never" if r.steps_to_test_acc_99 is None else r.steps_to_test_acc_99
        line = f"{r.seed} | {r.stage} | {r.steps} | {r.test_acc:.1%} | {reached} | {kept}"
        lines.append(line + (f" | {llc_cell(r.llc)}" if with_llc else ""))
    return lines + (llc_lines(results) if with_llc else [])


CONFIG = FinetuneConfig
