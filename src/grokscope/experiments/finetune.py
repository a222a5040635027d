"""Sequential finetuning across moduli (e.g. 7 -> 11 -> 23 -> 49 -> 53), against direct training on the last one.

Stage k trains (a op b) mod ``moduli[k]`` for ``stage_steps[k]`` steps from stage k-1's final weights, moved onto the
new vocabulary by :func:`grokscope.models.transplant` (residues below both moduli and the special tokens keep their
rows; new residues start from the seed's fresh init) with a fresh AdamW. The direct baseline trains the last modulus
for the summed budget. After each stage, retention: the model's accuracy on every earlier modulus's test split,
read through the same transplant rule in reverse (exact here, as the moduli increase and every earlier token exists).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from grokscope.analysis.common import answer_logits, jsonable
from grokscope.config import RunConfig, load_config
from grokscope.experiments.runs import train_chain, train_missing
from grokscope.models import build_model, load_model, transplant
from grokscope.store import Run, write_json
from grokscope.viz.stages import figures
from grokscope.viz.write import write_figures


class FinetuneConfig(BaseModel):
    """``grokscope experiment`` config of kind ``finetune`` (``base`` is a run config, relative to this file)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["finetune"]
    name: str = Field("finetune", pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")
    base: str
    set: list[str] = Field(default_factory=list)
    moduli: list[int] = Field(min_length=2)
    stage_steps: int | list[int] = 1000
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)

    @model_validator(mode="after")
    def _check(self) -> FinetuneConfig:
        if any(b <= a for a, b in itertools.pairwise(self.moduli)):
            raise ValueError(f"moduli: must increase (so that every earlier token exists later), got {self.moduli}")
        if isinstance(self.stage_steps, list) and len(self.stage_steps) != len(self.moduli):
            raise ValueError(f"stage_steps: {len(self.stage_steps)} values for {len(self.moduli)} moduli")
        return self

    @property
    def steps(self) -> list[int]:
        return self.stage_steps if isinstance(self.stage_steps, list) else [self.stage_steps] * len(self.moduli)


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
    base = load_config((config_path.parent / config.base).resolve(), config.set)
    root = out / config.name

    def stage_config(seed: int, modulus: int, steps: int, name: str) -> RunConfig:
        data = base.with_seed(seed).to_dict()
        data["name"], data["task"]["modulus"], data["train"]["steps"] = name, modulus, steps
        data["train"]["early_stop"] = None
        return RunConfig.model_validate(data)

    chain = train_chain(
        [
            [stage_config(s, m, n, f"{config.name}_mod{m}") for s in config.seeds]
            for m, n in zip(config.moduli, config.steps, strict=True)
        ],
        [[root / f"seed{s}" / f"mod{m}" for s in config.seeds] for m in config.moduli],
        device=device,
        progress=progress,
    )
    direct = train_missing(
        [stage_config(s, config.moduli[-1], sum(config.steps), f"{config.name}_direct") for s in config.seeds],
        [root / f"seed{s}" / "direct" for s in config.seeds],
        device=device,
        progress=progress,
    )
    results = []
    for i, seed in enumerate(config.seeds):
        runs = [stage[i] for stage in chain]
        for k, (m, n, run) in enumerate(zip(config.moduli, config.steps, runs, strict=True)):
            result = _result(seed, f"mod {m}", m, n, run)
            result.retention = {f"mod {e.task.modulus}": accuracy_on(run, e) for e in runs[:k]}
            results.append(result)
        results.append(_result(seed, "direct", config.moduli[-1], sum(config.steps), direct[i]))
    rows = jsonable(results)
    write_json(root / "results.json", {"config": config.model_dump(), "stages": rows})
    write_figures(
        figures(rows, "sequential finetuning: test accuracy after each stage vs direct training", value="test_acc"),
        root / "figures",
    )
    return results


def _result(seed: int, stage: str, modulus: int, steps: int, run: Run) -> StageResult:
    rows = run.metrics()
    first = next((r["step"] for r in rows if r["test_acc"] >= 0.99), None)
    final = rows[-1]
    return StageResult(seed, stage, modulus, steps, final["train_acc"], final["test_acc"], first, run_dir=str(run.root))


def summary_lines(results: list[StageResult]) -> list[str]:
    lines = ["seed | stage | steps | test acc | steps to 99% | retention of earlier moduli"]
    for r in results:
        kept = ", ".join(f"{k} {v:.0%}" for k, v in r.retention.items()) or "—"
        reached = "never" if r.steps_to_test_acc_99 is None else r.steps_to_test_acc_99
        lines.append(f"{r.seed} | {r.stage} | {r.steps} | {r.test_acc:.1%} | {reached} | {kept}")
    return lines


CONFIG = FinetuneConfig
