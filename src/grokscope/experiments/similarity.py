"""Task similarity: one source task transferred to several targets of graded similarity, on shared source runs.

Each target is a transfer experiment (:mod:`grokscope.experiments.transfer`) with the similarity config's conditions,
seeds, budgets and criteria; all of them start from the same source runs (trained once, ``<name>/source/``), and each
writes its own results, statistics and figures under ``<name>/<target>/``. The targets are listed from most to
least similar as the user orders them (e.g. ``sub``, ``mul``, ``quad``, and ``random``: a fixed random table that no
circuit of the source can share). Collected per target and condition: the speed-up over the baseline to the
``speedup_at`` test accuracy (bootstrap interval) and the final retention of the source task (mean ± sd, against
chance 1/p), in ``results.json`` and in one figure against the target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from grokscope.analysis.common import jsonable
from grokscope.experiments import transfer
from grokscope.experiments.runs import Name, check_run_count
from grokscope.store import write_json
from grokscope.viz.similarity import figures
from grokscope.viz.write import write_figures

TargetName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$", max_length=60)]


class SimilarityConfig(transfer.TransferConfig):
    """``grokscope experiment`` config of kind ``similarity``: a transfer config whose ``targets`` (name -> the
    ``--set`` overrides that turn the source into that target, most similar first) replace ``target_set``."""

    kind: Literal["similarity"]  # type: ignore[assignment]  # narrows the transfer config's kind
    name: Name = "similarity"
    target_set: list[str] = Field(default_factory=list, description="unused: each target has its own in targets")
    targets: dict[TargetName, list[str]] = Field(min_length=1, description="target name -> --set overrides")
    speedup_at: Literal[0.9, 0.95, 0.99, 0.999] = Field(
        0.99, description="the test accuracy whose epochs-to-threshold the speed-ups compare"
    )

    @model_validator(mode="after")
    def _check_targets(self) -> SimilarityConfig:
        if self.target_set:
            raise ValueError("target_set: give each target's overrides under targets")
        empty = next((name for name, sets in self.targets.items() if not sets), None)
        if empty is not None:
            raise ValueError(f"targets.{empty}: needs at least one --set override (else it is the source task)")
        if "source" in self.targets:
            raise ValueError("targets.source: the name is taken by the shared source runs")
        per_target = sum(len(c.seeds) for c in self.planned_conditions()) * (2 if self.relearn_steps else 1)
        n = len(self.all_seeds) + len(self.targets) * per_target
        check_run_count(n, "targets", f"{len(self.targets)} targets x {per_target} target runs and the sources")
        return self

    def transfer_config(self, target: str) -> transfer.TransferConfig:
        """The transfer experiment of one target (named after it, inside this experiment's folder)."""
        data = self.model_dump(exclude={"kind", "name", "targets", "target_set", "speedup_at"})
        return transfer.TransferConfig.model_validate(
            {**data, "kind": "transfer", "name": target, "target_set": self.targets[target]}
        )


@dataclass
class TargetSummary:
    """What one target's transfer found, per condition: speed-up over the baseline, and the source kept."""

    target: str
    target_set: list[str]
    baseline: str | None
    threshold: str  # the test accuracy of the speed-ups
    speedup: dict[str, dict[str, Any]] = field(default_factory=dict)  # condition -> Speedup at threshold
    retention: dict[str, dict[str, Any]] = field(default_factory=dict)  # condition -> mean ± sd of final retention
    final_test_acc: dict[str, dict[str, Any]] = field(default_factory=dict)
    chance: float | None = None


@dataclass
class SimilarityResult:
    targets: list[TargetSummary]
    conditions: list[str]


def run_experiment(
    config: SimilarityConfig, config_path: Path, out: Path, *, device: str = "auto", progress: bool = True
) -> SimilarityResult:
    """Every target's transfer experiment, on one set of source runs; then the comparison across targets."""
    root = out / config.name
    configs = {name: config.transfer_config(name) for name in config.targets}
    for target_config in configs.values():  # every target planned (and checked) before anything trains
        transfer.plan(target_config, config_path)
    summaries = []
    for name, target_config in configs.items():
        result = transfer.run_experiment(
            target_config, config_path, root, device=device, progress=progress, source_root=root / "source"
        )
        summaries.append(_summarize(name, config.targets[name], result, str(config.speedup_at)))
    outcome = SimilarityResult(summaries, config.condition_names)
    write_json(root / "results.json", jsonable({"config": config.model_dump(), **vars(outcome)}))
    write_figures(figures(jsonable(vars(outcome))), root / "figures")
    return outcome


def _summarize(name: str, target_set: list[str], result: transfer.TransferResult, threshold: str) -> TargetSummary:
    statistics = result.statistics
    settings = statistics.get("settings", {})
    speedups = {s["name"]: s for s in statistics.get("speedup", {}).get(threshold, [])}
    final = statistics.get("final", {})
    return TargetSummary(
        target=name,
        target_set=target_set,
        baseline=settings.get("baseline"),
        threshold=threshold,
        speedup=speedups,
        retention={c: m["source_retention"] for c, m in final.items() if "source_retention" in m},
        final_test_acc={c: m["test_acc"] for c, m in final.items() if "test_acc" in m},
        chance=settings.get("chance"),
    )


def _fmt(value: float | None, form: str) -> str:
    return "—" if value is None else format(value, form)


def summary_lines(result: SimilarityResult) -> list[str]:
    at = result.targets[0].threshold if result.targets else "?"
    lines = [f"target | condition | speed-up to {at} test acc [95% CI] | final source retention | final test acc"]
    for t in result.targets:
        for condition in result.conditions:
            s = t.speedup.get(condition)
            if condition == t.baseline:
                speed = "baseline"
            elif s is None or s.get("ratio") is None:
                speed = "—" if s is None else f"— ({s.get('note') or 'not reached'})"
            else:
                speed = f"{s['ratio']:.2f}x [{_fmt(s.get('ci_low'), '.2f')}, {_fmt(s.get('ci_high'), '.2f')}]"
            kept, acc = t.retention.get(condition, {}), t.final_test_acc.get(condition, {})
            retention = f"{_fmt(kept.get('mean'), '.1%')} ± {_fmt(kept.get('sd'), '.1%')}" if kept else "—"
            accuracy = f"{_fmt(acc.get('mean'), '.1%')}" if acc else "—"
            lines.append(f"{t.target} | {condition} | {speed} | {retention} | {accuracy}")
    if result.targets and result.targets[0].chance is not None:
        lines.append(f"chance (1/p): {result.targets[0].chance:.1%}")
    return lines


CONFIG = SimilarityConfig
