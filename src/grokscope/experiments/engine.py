"""The engine every experiment kind runs on: it trains the runs a kind asks for and keeps what happened.

A kind hands the engine groups of run configs (runs that differ only in their seed and starting checkpoint, so the
many-seeds trainer can pack them) with their directories. The engine trains what is missing — finished runs are
reused, interrupted ones resumed — in this process or as Ray tasks (:mod:`grokscope.experiments.launch`), gives
every run the experiment's recorders and loggers, and records each failed run instead of stopping the others.
A kind reads a failed run as ``None`` and reports it; :func:`grokscope.experiments.run` then exits non-zero,
naming every failed run. The engine names no kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from grokscope.config import RunConfig
from grokscope.experiments.launch import Launcher, Outcome, run_groups
from grokscope.recorders import RecordPlan
from grokscope.store import SUMMARY_FILE, Run


@dataclass(frozen=True)
class Failure:
    """A run that failed: its directory, ``Type: first line`` of the error, and the full traceback."""

    run_dir: str
    error: str
    traceback: str = ""


@dataclass
class Engine:
    """Where and how an experiment's runs train. ``root`` is the experiment's own folder (``<out>/<name>``)."""

    root: Path
    device: str = "auto"
    progress: bool = True
    launcher: Launcher = "local"
    address: str | None = None
    record: RecordPlan | None = None
    gpus_per_task: float = 0.0
    max_retries: int = 1
    failures: list[Failure] = field(default_factory=list)
    trained: list[str] = field(default_factory=list)

    def train(self, configs: Sequence[RunConfig], dirs: Sequence[Path]) -> list[Run | None]:
        """Train one group (configs differing only in seed and ``model.init_from``); a run per directory, None
        where it failed."""
        return self.train_groups([(configs, dirs)])[0]

    def train_groups(self, groups: Sequence[tuple[Sequence[RunConfig], Sequence[Path]]]) -> list[list[Run | None]]:
        """Train every group (finished runs reused); per group, a run per directory, None where it failed."""
        pending = []
        for configs, dirs in groups:
            todo = [(c, Path(d)) for c, d in zip(configs, dirs, strict=True) if not (Path(d) / SUMMARY_FILE).is_file()]
            if todo:
                pending.append(([c for c, _ in todo], [d for _, d in todo]))
        outcomes = run_groups(
            pending,
            launcher=self.launcher,
            address=self.address,
            device=self.device,
            progress=self.progress,
            gpus_per_task=self.gpus_per_task,
            max_retries=self.max_retries,
            record=self.record.to_dict() if self.record is not None else None,
        )
        failed: dict[str, Outcome] = {}
        for (_, dirs), results in zip(pending, outcomes, strict=True):
            for d, outcome in zip(dirs, results, strict=True):
                if outcome.ok:
                    self.trained.append(str(d))
                else:
                    failed[str(d)] = outcome
                    self.failures.append(Failure(str(d), outcome.error or "failed", outcome.traceback or ""))
        return [[None if str(Path(d)) in failed else Run.open(Path(d)) for d in dirs] for _, dirs in groups]

    def failure_of(self, run_dir: str | Path) -> Failure | None:
        """Why the run in ``run_dir`` failed, or None."""
        return next((f for f in self.failures if f.run_dir == str(run_dir)), None)
