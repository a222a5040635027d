"""Transfer: one source task to one target, from grokked, memorized and random inits (the kind ``transfer``).

For each seed a source run trains the source task; the ``grokked`` and ``memorized`` checkpoints are chosen by
criteria (memorized: the end of the source's memorization phase), target runs start from them or from a random
init with everything else identical, and stop by one rule on the target operation. With ``replay: {fraction: f}``
each source-initialised condition gets a twin, ``<name>_replay``, that trains the source and target operations in
one model with a seeded share ``f`` of the source's training pairs. Measures and statistics: see
:mod:`grokscope.experiments.transfer_core`. Writes ``results.csv``, ``results.json``, ``stats.json`` and
``figures/`` under ``<out>/<name>/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from grokscope.experiments.engine import Engine
from grokscope.experiments.runs import Name, check_run_count
from grokscope.experiments.spec import ExperimentSpec
from grokscope.experiments.transfer_core.config import TransferSettings
from grokscope.experiments.transfer_core.pipeline import Measured, run_transfer, summarize_transfer
from grokscope.experiments.transfer_core.plan import Plan, plan
from grokscope.viz.transfer_text import describe


class TransferConfig(TransferSettings):
    """``grokscope experiment`` config of kind ``transfer`` (``source`` is a run config, relative to this file)."""

    kind: Literal["transfer"]
    name: Name = "transfer"
    target_set: list[str] = Field(min_length=1, description="--set overrides that turn the source into the target")

    @model_validator(mode="after")
    def _count(self) -> TransferConfig:
        n = len(self.all_seeds) + self.runs_per_target
        check_run_count(n, "seeds", f"{len(self.all_seeds)} source runs and {self.runs_per_target} target runs")
        return self


def plan_transfer(config: TransferConfig, config_path: Path) -> Plan:
    return plan(config, config_path, config.name, config.target_set)


def execute(config: TransferConfig, planned: Plan, engine: Engine) -> Measured:
    return run_transfer(config, planned, engine, engine.root, engine.root / "source")


def summarize(config: TransferConfig, planned: Plan, measured: Measured, root: Path) -> dict[str, Any]:
    return summarize_transfer(measured, config, planned, root, config.model_dump())


SPEC = ExperimentSpec("transfer", TransferConfig, plan_transfer, execute, summarize, describe)
