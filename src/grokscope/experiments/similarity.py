"""Task similarity: one source task transferred to several targets of graded similarity, on shared source runs
(the kind ``similarity``).

Each target is a transfer (:mod:`grokscope.experiments.transfer_core`) with this config's conditions, seeds,
budgets and criteria; all of them start from the same source runs (trained once, ``<name>/source/``), and each
writes its own results, statistics and figures under ``<name>/<target>/``. The targets are listed from most to least
similar as the user orders them (e.g. ``sub``, ``mul``, ``quad``, and ``random``: a fixed random table that no
circuit of the source can share). Collected per target and condition: the speed-up over the baseline to the
``speedup_at`` accuracy and the final retention of the source task (mean ± sd, against chance 1/p), in
``results.json`` and one figure against the target. The speed-up is read on test accuracy, except for a target whose
test accuracy is chance by construction (the random table: its test labels are independent of its training
pairs), whose speed-up is read on train accuracy and labelled so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from grokscope.analysis.common import jsonable
from grokscope.experiments.engine import Engine
from grokscope.experiments.runs import Name, check_run_count
from grokscope.experiments.spec import ExperimentSpec
from grokscope.experiments.transfer_core.config import TransferSettings
from grokscope.experiments.transfer_core.pipeline import Measured, run_transfer, summarize_transfer
from grokscope.experiments.transfer_core.plan import Plan, plan
from grokscope.experiments.transfer_core.statistics import SpeedOn
from grokscope.store import write_json
from grokscope.viz.similarity import describe, figures
from grokscope.viz.write import write_figures

TargetName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$", max_length=60)]
CHANCE_BY_CONSTRUCTION = frozenset({"random"})
"""Operations whose test labels no training pair predicts (grokscope.tasks' fixed random table)."""


class SimilarityConfig(TransferSettings):
    """``grokscope experiment`` config of kind ``similarity``: transfer settings and ``targets`` (name -> the
    ``--set`` overrides that turn the source into that target, most similar first)."""

    kind: Literal["similarity"]
    name: Name = "similarity"
    targets: dict[TargetName, list[str]] = Field(min_length=1, description="target name -> --set overrides")
    speedup_at: Literal[0.9, 0.95, 0.99, 0.999] = Field(
        0.99, description="the accuracy whose steps-to-threshold the speed-ups compare"
    )

    @model_validator(mode="before")
    @classmethod
    def _no_target_set(cls, data: Any) -> Any:
        """A transfer's ``target_set`` here is a mistake worth naming (else it reads as an unknown key)."""
        if isinstance(data, dict) and "target_set" in data:
            raise ValueError("target_set: give each target's overrides under targets")
        return data

    @model_validator(mode="after")
    def _check_targets(self) -> SimilarityConfig:
        empty = next((name for name, sets in self.targets.items() if not sets), None)
        if empty is not None:
            raise ValueError(f"targets.{empty}: needs at least one --set override (else it is the source task)")
        if "source" in self.targets:
            raise ValueError("targets.source: the name is taken by the shared source runs")
        n = len(self.all_seeds) + len(self.targets) * self.runs_per_target
        check_run_count(n, "targets", f"{len(self.targets)} targets x {self.runs_per_target} runs and the sources")
        return self


def plan_targets(config: SimilarityConfig, config_path: Path) -> dict[str, Plan]:
    """Every target's transfer, planned and checked before anything trains."""
    return {name: plan(config, config_path, name, sets, f"targets.{name}") for name, sets in config.targets.items()}


def speed_on(planned: Plan) -> SpeedOn:
    """Test accuracy, or train accuracy for a target whose test accuracy is chance by construction."""
    target = next(iter(planned.targets.values())).task.operations[-1]
    return "train_acc" if target in CHANCE_BY_CONSTRUCTION else "test_acc"


def execute(config: SimilarityConfig, planned: dict[str, Plan], engine: Engine) -> dict[str, Measured]:
    root = engine.root
    return {
        name: run_transfer(config, target, engine, root / name, root / "source", speed_on(target))
        for name, target in planned.items()
    }


def summarize(
    config: SimilarityConfig, planned: dict[str, Plan], measured: dict[str, Measured], root: Path
) -> dict[str, Any]:
    """Each target's transfer statistics (in its folder), then per target and condition the speed-up at
    ``speedup_at``, the final source retention and test accuracy (``results.json``, ``figures/``)."""
    threshold = str(config.speedup_at)
    summaries = []
    for name, target in planned.items():
        data = summarize_transfer(measured[name], config, target, root / name, {**config.model_dump(), "target": name})
        statistics = data["statistics"]
        final = statistics.get("final", {})
        summaries.append(
            {
                "target": name,
                "target_set": config.targets[name],
                "baseline": statistics["settings"]["baseline"],
                "threshold": threshold,
                "speed_on": statistics["speed_on"],
                "speedup": {s["name"]: s for s in statistics.get("speedup", {}).get(threshold, [])},
                "retention": {c: m["source_retention"] for c, m in final.items() if "source_retention" in m},
                "final_test_acc": {c: m["test_acc"] for c, m in final.items() if "test_acc" in m},
                "chance": statistics["settings"]["chance"],
            }
        )
    result = jsonable({"config": config.model_dump(), "targets": summaries, "conditions": config.condition_names})
    write_json(root / "results.json", result)
    write_figures(figures(result), root / "figures")
    return result


SPEC = ExperimentSpec("similarity", SimilarityConfig, plan_targets, execute, summarize, describe)
