"""Forecasting one run at one step: from what it had logged then to a :class:`Forecast`, or a plain reason why not.

A run that has not memorized, that lies outside the predictor's calibrated domain, that is diverging (its test loss
or weight norm no longer finite) or that has already generalized gets no guess: its forecast says which, in one
line. Otherwise the predicted generalization step is the median of the predictor's distribution, with its 80%
interval and the probability of generalizing within the run's budget; when that median lies past the budget the
forecast is "not expected within the budget" (no step).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import stats

from grokscope.forecast.features import features
from grokscope.forecast.predictor import Z80, Predictor
from grokscope.forecast.trajectory import GENERALIZE_AT, MEMORIZE_AT, Trajectory, read_trajectory

Status = Literal["forecast", "not_expected", "generalized", "too_early", "outside_domain", "not_finite"]
SHIPPED = "predictor.json"


def shipped_predictor() -> Predictor:
    """The predictor that ships with grokscope (fitted on ``configs/forecast_calibration*.yaml``)."""
    with resources.as_file(resources.files("grokscope.forecast") / SHIPPED) as path:
        return Predictor.load(path)


@dataclass(frozen=True)
class Forecast:
    """When a run will generalize, as seen at step :attr:`at` (see the module docstring for :attr:`status`)."""

    run: str
    at: int
    status: Status
    predicted_step: int | None
    interval: list[int] | None
    p_generalize_within_budget: float | None
    memorization_step: int | None
    budget: int
    method: str
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line for a person."""
        head = f"{self.run} at step {self.at}: "
        if self.status == "forecast":
            low, high = self.interval or (None, None)
            return (
                f"{head}generalizes (test acc >= {GENERALIZE_AT:.0%}) at step ~{self.predicted_step} "
                f"(80% interval {low}-{high}; P(within the {self.budget}-step budget) = "
                f"{self.p_generalize_within_budget:.2f})"
            )
        if self.status == "not_expected":
            return (
                f"{head}not expected to generalize within the {self.budget}-step budget "
                f"(P = {self.p_generalize_within_budget:.2f})"
            )
        return head + self.reason


def method_of(predictor: Predictor) -> str:
    n = predictor.fitted_on.get("runs")
    return f"censored log-normal model of the steps left on {len(predictor.names)} run measurements" + (
        f" (fitted on {n} runs)" if n else ""
    )


def _steps(log_steps: float) -> float:
    return math.exp(min(log_steps, 40.0))  # e^40 steps is "never" already; past it exp overflows


def forecast_trajectory(run: Trajectory, predictor: Predictor) -> Forecast:
    """The forecast for ``run`` as it stood at its last step."""
    base = dict(run=run.name, at=run.at, budget=run.budget, method=method_of(predictor))
    m = run.memorization_step
    nothing: dict[str, Any] = dict(predicted_step=None, interval=None, p_generalize_within_budget=None)
    g = run.generalization_step
    if g is not None:
        return Forecast(
            **base,
            status="generalized",
            predicted_step=g,
            interval=[g, g],
            p_generalize_within_budget=1.0,
            memorization_step=m,
            reason=f"already generalized at step {g}; nothing to forecast",
        )
    outside = predictor.domain.outside(run.settings)
    if outside is not None:
        return Forecast(
            **base,
            **nothing,
            status="outside_domain",
            memorization_step=m,
            reason=f"outside the domain the forecast was calibrated on: {outside}",
        )
    if m is None:
        train_acc = run.rows[-1]["train_acc"]
        return Forecast(
            **base,
            **nothing,
            status="too_early",
            memorization_step=None,
            reason=f"too early: not memorized yet (train acc {train_acc:.1%} < {MEMORIZE_AT:.0%}); "
            "a forecast starts at memorization",
        )
    measured = features(run, predictor.ln_v_star)
    if not np.isfinite(measured).all():  # a diverging run: its loss or weights are no longer finite
        return Forecast(
            **base,
            **nothing,
            status="not_finite",
            memorization_step=m,
            reason="no forecast: the test loss or the weight norm is not finite (the run is diverging)",
        )
    mu, sigma = (float(v[0]) for v in predictor.distribution(measured))
    left = run.budget - run.at
    p = float(stats.norm.cdf((math.log(left) - mu) / sigma)) if left > 0 else 0.0
    median = run.at + _steps(mu)
    interval = [round(run.at + _steps(mu + k * Z80 * sigma)) for k in (-1, 1)]
    if median > run.budget:
        return Forecast(
            **base,
            status="not_expected",
            predicted_step=None,
            interval=interval,
            p_generalize_within_budget=p,
            memorization_step=m,
        )
    return Forecast(
        **base,
        status="forecast",
        predicted_step=round(median),
        interval=interval,
        p_generalize_within_budget=p,
        memorization_step=m,
    )


def forecast(path: Path | str, at: int | None = None, predictor: Predictor | None = None) -> Forecast:
    """Forecast the run at ``path`` from what it had logged by step ``at`` (default: its last logged step)."""
    return forecast_trajectory(read_trajectory(path, at), predictor or shipped_predictor())
