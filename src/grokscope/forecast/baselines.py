"""The two baselines every forecast is measured against.

* The first-passage law: the delay after memorization is T_grok − T_mem = ln(V_mem / V*) / (2 κ η λ), with V_mem
  the squared weight norm at memorization, η the learning rate and λ the weight decay; κ and V* are calibrated on
  runs of one hyperparameter cell, as published. Taking logs, ln V_mem = ln V* + κ · 2ηλ(T_grok − T_mem): a
  straight line through the calibration runs, fitted by least squares.
* The median delay of the calibration runs, whatever their settings.

Neither reads anything past memorization, so neither improves as a run goes on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from grokscope.errors import UserError
from grokscope.forecast.calibration import LabelledRun
from grokscope.forecast.trajectory import Trajectory


def eta_lambda(run: Trajectory) -> float:
    return float(run.settings["optim.lr"]) * float(run.settings["optim.weight_decay"])


def squared_norm_at(run: Trajectory, step: int) -> float:
    return next(float(r["weight_norm"]) ** 2 for r in run.rows if r["step"] == step)


@dataclass(frozen=True)
class FirstPassageLaw:
    """T_grok − T_mem = ln(V_mem / V*) / (2 κ η λ)."""

    kappa: float
    v_star: float

    @classmethod
    def fit(cls, runs: Sequence[LabelledRun]) -> FirstPassageLaw:
        """κ and V* from runs that memorized and generalized (with weight decay): at least two, with different
        2ηλ·delay, or the line through them is not determined."""
        points = [
            (2 * eta_lambda(r.trajectory) * r.delay, math.log(squared_norm_at(r.trajectory, r.memorization_step)))
            for r in runs
            if r.delay is not None and r.memorization_step is not None and eta_lambda(r.trajectory) > 0
        ]
        if len(points) < 2 or len({x for x, _ in points}) < 2:
            raise UserError("the first-passage law needs two or more generalized runs with different delays to fit")
        x, y = np.array(points).T
        kappa, ln_v_star = np.polyfit(x, y, 1)
        return cls(float(kappa), float(math.exp(ln_v_star)))

    def delay(self, run: Trajectory, memorization_step: int) -> float:
        """The predicted delay (steps after memorization): 0 when V_mem is already at or below V* (the passage is
        behind the run), infinite when 2κηλ is not positive (without weight decay the norm never falls)."""
        rate = 2 * self.kappa * eta_lambda(run)
        gap = math.log(squared_norm_at(run, memorization_step) / self.v_star)
        if rate <= 0:
            return math.inf
        return max(gap, 0.0) / rate


@dataclass(frozen=True)
class MedianDelay:
    """The median delay of the calibration runs that generalized."""

    steps: float

    @classmethod
    def fit(cls, runs: Sequence[LabelledRun]) -> MedianDelay:
        delays = [r.delay for r in runs if r.delay is not None]
        if not delays:
            raise UserError("no calibration run generalized: no median delay")
        return cls(float(np.median(delays)))

    def delay(self, run: Trajectory, memorization_step: int) -> float:
        return self.steps
