"""What curriculum and sequential-finetuning experiments share: a chain of stages against a direct baseline.

Every stage is the base run config with some task fields changed (an input range, a modulus) and its own step
budget; each seed's stage k starts from its stage k-1 final weights (``model.init_from``, a fresh AdamW) and spends
its whole budget (no early stop). The direct baseline changes the task to the last stage's and trains for the summed
budget from the same seed.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from grokscope.analysis.common import jsonable
from grokscope.config import RunConfig, load_config
from grokscope.experiments.runs import train_chain, train_missing
from grokscope.store import Run, write_json
from grokscope.viz.stages import figures
from grokscope.viz.write import write_figures


class StagedConfig(BaseModel):
    """Fields every staged experiment has (``base`` is a run config, relative to the experiment file)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")
    base: str
    set: list[str] = Field(default_factory=list, description="--set overrides applied to the base config")
    stage_steps: int | list[int] = Field(500, description="steps per stage (one value for all, or one per stage)")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)

    def budgets(self, n_stages: int) -> list[int]:
        return self.stage_steps if isinstance(self.stage_steps, list) else [self.stage_steps] * n_stages


def check_stages(values: Sequence[int], field: str, stage_steps: int | list[int]) -> None:
    """Stages must grow (so that every earlier token exists later) and have one budget each."""
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise ValueError(f"{field}: must increase, got {list(values)}")
    if isinstance(stage_steps, list) and len(stage_steps) != len(values):
        raise ValueError(f"stage_steps: {len(stage_steps)} values for {len(values)} stages")


def base_config(config: StagedConfig, config_path: Path) -> RunConfig:
    return load_config((config_path.parent / config.base).resolve(), config.set)


def run_stages(
    config: StagedConfig,
    base: RunConfig,
    out: Path,
    stages: Sequence[tuple[str, dict[str, Any]]],
    *,
    device: str,
    progress: bool,
) -> tuple[list[list[Run]], list[Run]]:
    """Train every stage (``(folder name, task fields)``) for every seed, then the direct baseline.

    Returns the stage runs as ``[stage][seed]`` and the direct runs per seed (finished runs are reused).
    """
    root = out / config.name
    budgets = config.budgets(len(stages))

    def stage_config(seed: int, task: dict[str, Any], steps: int, label: str) -> RunConfig:
        data = base.with_seed(seed).to_dict()
        data["name"], data["train"]["steps"], data["train"]["early_stop"] = f"{config.name}_{label}", steps, None
        data["task"].update(task)
        return RunConfig.model_validate(data)

    chain = train_chain(
        [
            [stage_config(s, task, n, label) for s in config.seeds]
            for (label, task), n in zip(stages, budgets, strict=True)
        ],
        [[root / f"seed{s}" / label for s in config.seeds] for label, _ in stages],
        device=device,
        progress=progress,
    )
    direct = train_missing(
        [stage_config(s, stages[-1][1], sum(budgets), "direct") for s in config.seeds],
        [root / f"seed{s}" / "direct" for s in config.seeds],
        device=device,
        progress=progress,
    )
    return chain, direct


def write_results(config: StagedConfig, out: Path, results: list[Any], title: str, value: str) -> None:
    """``results.json`` (config and one row per stage and seed) and the stage figure."""
    root = out / config.name
    rows = jsonable(results)
    write_json(root / "results.json", {"config": config.model_dump(), "stages": rows})
    write_figures(figures(rows, title, value=value), root / "figures")
