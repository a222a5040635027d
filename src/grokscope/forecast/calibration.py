"""Calibration runs: finding them under folders, their true memorization and generalization steps, and refitting
the predictor from them (``grokscope forecast-fit``).

A calibration run is any finished run directory (``summary.json`` written) of one operation; its generalization
step is the one ``summary.json`` gives, and a run without one is a censored example (it did not generalize within
its budget).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grokscope.errors import UserError
from grokscope.forecast.predictor import Domain, Predictor, fit, ln_squared_norm_at_generalization, observations
from grokscope.forecast.trajectory import Trajectory, read_trajectory
from grokscope.store import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, read_summary


@dataclass(frozen=True)
class LabelledRun:
    """A finished run's whole trajectory and what it did: memorization and generalization steps (None: never)."""

    path: Path
    trajectory: Trajectory
    memorization_step: int | None
    generalization_step: int | None

    @property
    def delay(self) -> int | None:
        if self.memorization_step is None or self.generalization_step is None:
            return None
        return self.generalization_step - self.memorization_step


def run_dirs(paths: Iterable[Path | str]) -> list[Path]:
    """Every finished run directory at or under ``paths``, sorted."""
    found: set[Path] = set()
    for path in map(Path, paths):
        if not path.exists():
            raise UserError(f"{path}: no such folder")
        candidates = [path] if (path / CONFIG_FILE).is_file() else [p.parent for p in path.rglob(CONFIG_FILE)]
        found.update(p for p in candidates if (p / SUMMARY_FILE).is_file() and (p / METRICS_FILE).is_file())
    return sorted(found)


def label(path: Path) -> LabelledRun:
    trajectory = read_trajectory(path)
    summary = read_summary(path / SUMMARY_FILE)
    return LabelledRun(path, trajectory, summary.get("memorization_step"), summary.get("generalization_step"))


def labelled_runs(paths: Iterable[Path | str]) -> list[LabelledRun]:
    """The finished runs under ``paths`` with their outcomes; one-line error when there are none."""
    dirs = run_dirs(paths)
    if not dirs:
        raise UserError(f"{', '.join(map(str, paths))}: no finished runs (folders with {SUMMARY_FILE}) found")
    return [label(d) for d in dirs]


def v_star(runs: Sequence[LabelledRun]) -> float:
    """ln V*: the median ln of the squared weight norm at generalization over the runs that generalized."""
    values = [
        ln_squared_norm_at_generalization(r.trajectory, r.generalization_step)
        for r in runs
        if r.generalization_step is not None
    ]
    if not values:
        raise UserError("none of the calibration runs generalized: nothing to fit the forecast on")
    return float(np.median(values))


def fit_predictor(runs: Sequence[LabelledRun], stride: int = 1) -> Predictor:
    """Fit the predictor on ``runs``; its domain is what they span."""
    domain = Domain.of([r.trajectory.settings for r in runs])
    ln_v_star = v_star(runs)
    obs = [o for r in runs for o in observations(r.trajectory, r.generalization_step, ln_v_star, stride)]
    return fit(obs, ln_v_star, domain)
