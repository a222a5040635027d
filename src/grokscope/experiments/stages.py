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

from pydantic import Field

from grokscope.analysis.common import jsonable
from grokscope.config import RunConfig
from grokscope.experiments.runs import (
    ExperimentModel,
    Name,
    Seed,
    check_run_count,
    check_seeds,
    checked,
    load_base,
    train_chain,
    train_missing,
    with_seeds,
)
from grokscope.store import Run, write_json
from grokscope.viz.stages import figures
from grokscope.viz.write import write_figures


class StagedConfig(ExperimentModel):
    """Fields every staged experiment has (``base`` is a run config, relative to the experiment file)."""

    name: Name
    base: str
    set: list[str] = Field(default_factory=list, description="--set overrides applied to the base config")
    stage_steps: int | list[int] = Field(500, description="steps per stage (one value for all, or one per stage)")
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1)

    def budgets(self, n_stages: int) -> list[int]:
        return self.stage_steps if isinstance(self.stage_steps, list) else [self.stage_steps] * n_stages


def check_stages(values: Sequence[int], field: str, stage_steps: int | list[int], seeds: Sequence[int]) -> None:
    """Stages must grow (so that every earlier token exists later) and have one budget of at least a step each;
    each seed once."""
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise ValueError(f"{field}: must increase, got {list(values)}")
    if isinstance(stage_steps, list) and len(stage_steps) != len(values):
        raise ValueError(f"stage_steps: {len(stage_steps)} values for {len(values)} stages")
    if any(n < 1 for n in (stage_steps if isinstance(stage_steps, list) else [stage_steps])):
        raise ValueError(f"stage_steps: every stage needs at least 1 step, got {stage_steps}")
    check_seeds(seeds)
    n = len(seeds) * (len(values) + 1)
    check_run_count(n, field, f"{len(seeds)} seeds x {len(values)} stages and the direct baseline")


def base_config(config: StagedConfig, config_path: Path) -> RunConfig:
    return load_base(config_path, config.base, config.set)[1]


def plan_stages(
    config: StagedConfig, base: RunConfig, config_path: Path, stages: Sequence[tuple[str, dict[str, Any]]]
) -> tuple[list[list[RunConfig]], list[RunConfig]]:
    """Every run config of the chain (``[stage][seed]``) and of the direct baseline (per seed), validated.

    A stage the base config cannot take (an input range above a modulus, a composite modulus for ``div``, a split
    that leaves no training pair) is a one-line error naming the experiment file and the stage.
    """
    budgets = config.budgets(len(stages))

    def build(task: dict[str, Any], steps: int, label: str) -> list[RunConfig]:
        data = base.to_dict()
        data["name"], data["train"]["steps"], data["train"]["early_stop"] = f"{config.name}_{label}", steps, None
        data["task"].update(task)
        return with_seeds(checked(data, f"{config_path}: stage {label}"), config.seeds)

    chain = [build(task, n, label) for (label, task), n in zip(stages, budgets, strict=True)]
    return chain, build(stages[-1][1], sum(budgets), "direct")


def run_stages(
    config: StagedConfig,
    base: RunConfig,
    config_path: Path,
    out: Path,
    stages: Sequence[tuple[str, dict[str, Any]]],
    *,
    device: str,
    progress: bool,
) -> tuple[list[list[Run]], list[Run]]:
    """Train every stage (``(folder name, task fields)``) for every seed, then the direct baseline.

    Every config is built and validated before anything trains. Returns the stage runs as ``[stage][seed]`` and the
    direct runs per seed (finished runs are reused).
    """
    root = out / config.name
    chain_configs, direct_configs = plan_stages(config, base, config_path, stages)
    chain = train_chain(
        chain_configs,
        [[root / f"seed{s}" / label for s in config.seeds] for label, _ in stages],
        device=device,
        progress=progress,
    )
    direct = train_missing(
        direct_configs, [root / f"seed{s}" / "direct" for s in config.seeds], device=device, progress=progress
    )
    return chain, direct


def write_results(config: StagedConfig, out: Path, results: list[Any], title: str, value: str) -> None:
    """``results.json`` (config and one row per stage and seed) and the stage figure."""
    root = out / config.name
    rows = jsonable(results)
    write_json(root / "results.json", {"config": config.model_dump(), "stages": rows})
    write_figures(figures(rows, title, value=value), root / "figures")
