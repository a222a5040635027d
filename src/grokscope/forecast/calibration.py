"""Calibration runs: finding them under folders, their true memorization and generalization steps, and refitting
the predictor from them (``grokscope forecast-fit``).

A calibration run is any finished run directory (``summary.json`` written) of one operation; its generalization
step is the one ``summary.json`` gives, and a run without one is a censored example (it did not generalize within
its budget). The interval's width is set by cross-validation (:func:`interval_scale`): the spread the likelihood
fits covers the calibration runs themselves, not new ones.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from grokscope.errors import UserError
from grokscope.forecast.predictor import Z80, Domain, Predictor, fit, ln_squared_norm_at_generalization, observations
from grokscope.forecast.trajectory import Trajectory, read_trajectory
from grokscope.store import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, read_summary

FOLDS = 6


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


def run_dirs(paths: Iterable[Path | str], finished: bool = True) -> list[Path]:
    """Every run directory (with metrics; ``finished``: and a summary) at or under ``paths``, sorted."""
    found: set[Path] = set()
    for path in map(Path, paths):
        if not path.exists():
            raise UserError(f"{path}: no such folder")
        candidates = [path] if (path / CONFIG_FILE).is_file() else [p.parent for p in path.rglob(CONFIG_FILE)]
        found.update(
            p for p in candidates if (p / METRICS_FILE).is_file() and (not finished or (p / SUMMARY_FILE).is_file())
        )
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


def fit_predictor(runs: Sequence[LabelledRun], stride: int = 1, folds: int = FOLDS) -> Predictor:
    """Fit the predictor on ``runs`` (its domain is what they span), with the interval width set by
    :func:`interval_scale`."""
    fitted = _fit(runs, stride)
    scale = interval_scale(runs, stride, folds)
    gamma = [fitted.gamma[0] + math.log(scale), *fitted.gamma[1:]]
    return replace(fitted, gamma=gamma, fitted_on={**fitted.fitted_on, "interval_scale": scale})


def _fit(runs: Sequence[LabelledRun], stride: int) -> Predictor:
    domain = Domain.of([r.trajectory.settings for r in runs])
    ln_v_star = v_star(runs)
    obs = [o for r in runs for o in observations(r.trajectory, r.generalization_step, ln_v_star, stride)]
    sources = sorted({r.path.parent.name for r in runs})  # the sweeps (folders) the runs came from
    return fit(obs, ln_v_star, domain, {"sources": sources, "stride": stride})


def interval_scale(runs: Sequence[LabelledRun], stride: int = 1, folds: int = FOLDS) -> float:
    """How much wider (> 1) or narrower the fitted spread must be for the 80% interval to cover 80% of forecasts
    on runs it was not fitted on: ``folds``-fold cross-validation over the calibration runs, the seeds of one
    setting always in the same fold; every evaluation between memorization and generalization of a held-out run
    that generalized is one forecast, each run weighted once. 1 when there are too few settings to fold."""
    cells = sorted({json.dumps(r.trajectory.settings, sort_keys=True) for r in runs})
    fold_of = {cell: i % folds for i, cell in enumerate(cells)}
    z, weights = [], []
    for fold in range(min(folds, len(cells))):
        inside = [r for r in runs if fold_of[json.dumps(r.trajectory.settings, sort_keys=True)] != fold]
        try:
            fitted = _fit(inside, stride)
        except UserError:
            continue
        fitted_on = {id(r) for r in inside}
        for r in runs:
            if id(r) in fitted_on or r.generalization_step is None:
                continue
            obs = observations(r.trajectory, r.generalization_step, fitted.ln_v_star, stride)
            if not obs:
                continue
            mu, sigma = fitted.distribution(np.array([o.x for o in obs]))
            z += list(np.abs(np.array([o.y for o in obs]) - mu) / sigma)
            weights += [1 / len(obs)] * len(obs)
    if not z:
        return 1.0
    order = np.argsort(z)
    cumulative = np.cumsum(np.array(weights)[order]) / sum(weights)
    q80 = float(np.array(z)[order][np.searchsorted(cumulative, 0.8)])
    return q80 / Z80
