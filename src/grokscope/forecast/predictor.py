"""The fitted predictor: a log-normal model of the steps left until generalization, with censoring.

At a step t after memorization, ln(G − t) ~ Normal(μ, σ²) with μ = β · z and ln σ = γ · z', where z are the
standardized :mod:`~grokscope.forecast.features` (plus a constant) and z' the constant and the standardized
ln(steps since memorization): the further a run is past memorization, the narrower its forecast may be. A run that
has not generalized by its last step L only says ln(G − t) > ln(L + eval_every − t) (a censored observation), so
runs that never generalize teach the model too. Every evaluation of a calibration run between memorization and
generalization is one observation, weighted so that each run counts once.

From μ and σ: the predicted step t + e^μ (the median), the 80% interval t + e^(μ ± 1.2816 σ), and the probability
of generalizing within the budget B, Φ((ln(B − t) − μ) / σ). The fit is maximum likelihood (L-BFGS) with a small
ridge on β. The predictor ships as JSON (coefficients, standardization, the calibrated domain); no pickle.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import optimize, stats

from grokscope.errors import UserError
from grokscope.forecast.features import NAMES, features
from grokscope.forecast.trajectory import Trajectory
from grokscope.store import atomic_write_text, read_json

Z80 = float(stats.norm.ppf(0.9))  # half-width of a central 80% normal interval, in standard deviations
RIDGE = 1e-3
FORMAT = "grokscope-forecast-predictor/1"
SINCE = NAMES.index("ln_since_memorization")


@dataclass(frozen=True)
class Observation:
    """One calibration point: the measurements at step ``at`` and ln of the steps left (a lower bound when
    ``censored``)."""

    x: np.ndarray
    y: float
    censored: bool
    weight: float
    run: str


def ln_squared_norm_at_generalization(run: Trajectory, generalization_step: int) -> float:
    return 2 * math.log(next(r["weight_norm"] for r in run.rows if r["step"] == generalization_step))


def observations(
    run: Trajectory, generalization_step: int | None, ln_v_star: float, stride: int = 1
) -> list[Observation]:
    """Every ``stride``-th evaluation of ``run`` from memorization up to (not including) generalization, each with
    its remaining steps; a run that never generalized gives censored observations (remaining > last step + one
    evaluation − t)."""
    m = run.memorization_step
    if m is None:
        return []
    end = generalization_step if generalization_step is not None else run.at + run.eval_every
    steps = [r["step"] for r in run.rows if m <= r["step"] < end][::stride]
    if not steps:
        return []
    return [
        Observation(
            features(run.until(t), ln_v_star), math.log(end - t), generalization_step is None, 1 / len(steps), run.name
        )
        for t in steps
    ]


@dataclass(frozen=True)
class Domain:
    """Where the predictor was calibrated: config fields that were the same in every calibration run (``fixed``)
    and the range of each field that varied (``ranges``)."""

    fixed: dict[str, Any]
    ranges: dict[str, list[float]]

    @classmethod
    def of(cls, settings: Sequence[dict[str, Any]]) -> Domain:
        keys = sorted(set().union(*settings))
        fixed, ranges = {}, {}
        for key in keys:
            values = [s.get(key) for s in settings]
            if all(v == values[0] for v in values):
                fixed[key] = values[0]
            elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                ranges[key] = [min(values), max(values)]
            else:
                raise UserError(f"calibration runs differ in {key} ({values[0]!r} vs others): fit one setting")
        return cls(fixed, ranges)

    def outside(self, settings: dict[str, Any]) -> str | None:
        """Why ``settings`` lie outside the domain (the first field that does), or None."""
        for key, value in self.fixed.items():
            if settings.get(key) != value:
                return f"{key} is {settings.get(key)!r}; calibrated on {value!r} only"
        for key, (lo, hi) in self.ranges.items():
            value = settings.get(key)
            if not isinstance(value, (int, float)) or not lo <= value <= hi:
                return f"{key} is {value!r}; calibrated on {lo:g} to {hi:g}"
        return None


@dataclass(frozen=True)
class Predictor:
    """ln V* (the median squared weight norm at generalization of the calibration runs), the standardization, mean
    coefficients ``beta`` (constant first), log-scale coefficients ``gamma`` (constant, ln steps since
    memorization), the domain and what it was fitted on."""

    ln_v_star: float
    names: list[str]
    mean: list[float]
    scale: list[float]
    beta: list[float]
    gamma: list[float]
    domain: Domain
    fitted_on: dict[str, Any] = field(default_factory=dict)

    def _design(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = (np.atleast_2d(x) - np.array(self.mean)) / np.array(self.scale)
        ones = np.ones((len(z), 1))
        return np.hstack([ones, z]), np.hstack([ones, z[:, [SINCE]]])

    def distribution(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """μ and σ of ln(steps left) for each row of measurements ``x``."""
        design, scale_design = self._design(x)
        return design @ np.array(self.beta), np.exp(scale_design @ np.array(self.gamma))

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **asdict(self)}, indent=1)

    def save(self, path: Path) -> None:
        atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: Path | str) -> Predictor:
        data = read_json(Path(path))
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise UserError(f"{path}: not a grokscope forecast predictor (expected format {FORMAT!r})")
        try:
            domain = Domain(**data["domain"])
            predictor = cls(
                ln_v_star=float(data["ln_v_star"]),
                names=list(data["names"]),
                mean=[float(v) for v in data["mean"]],
                scale=[float(v) for v in data["scale"]],
                beta=[float(v) for v in data["beta"]],
                gamma=[float(v) for v in data["gamma"]],
                domain=domain,
                fitted_on=dict(data.get("fitted_on", {})),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise UserError(f"{path}: damaged forecast predictor ({type(err).__name__}: {err})") from None
        if predictor.names != list(NAMES) or len(predictor.beta) != len(NAMES) + 1 or len(predictor.gamma) != 2:
            raise UserError(f"{path}: a predictor for other measurements than this grokscope's ({', '.join(NAMES)})")
        return predictor


def fit(
    obs: Sequence[Observation], ln_v_star: float, domain: Domain, fitted_on: dict[str, Any] | None = None
) -> Predictor:
    """Maximum-likelihood fit of the censored log-normal model to ``obs`` (see the module docstring)."""
    if sum(not o.censored for o in obs) < 2 * (len(NAMES) + 1):
        raise UserError(
            f"{len({o.run for o in obs})} runs give {sum(not o.censored for o in obs)} observations before "
            "generalization: too few to fit the forecast"
        )
    x = np.array([o.x for o in obs])
    y = np.array([o.y for o in obs])
    censored = np.array([o.censored for o in obs])
    w = np.array([o.weight for o in obs])
    mean, scale = x.mean(0), x.std(0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    design = np.hstack([np.ones((len(z), 1)), z])
    scale_design = np.hstack([np.ones((len(z), 1)), z[:, [SINCE]]])
    k = design.shape[1]

    def nll(theta: np.ndarray) -> float:
        beta, gamma = theta[:k], theta[k:]
        mu, log_sigma = design @ beta, scale_design @ gamma
        r = (y - mu) / np.exp(log_sigma)
        ll = np.where(censored, stats.norm.logsf(r), -0.5 * r * r - log_sigma)
        return float(-(w * ll).sum() / w.sum() + RIDGE * (beta[1:] ** 2).sum())

    start_beta = np.linalg.lstsq(design[~censored], y[~censored], rcond=None)[0]
    start = np.concatenate([start_beta, [math.log(np.std(y[~censored] - design[~censored] @ start_beta) + 1e-3), 0]])
    result = optimize.minimize(nll, start, method="L-BFGS-B")
    theta = result.x
    info = {
        "runs": len({o.run for o in obs}),
        "runs_censored": len({o.run for o in obs if o.censored}),
        "observations": len(obs),
        **(fitted_on or {}),
    }
    return Predictor(
        ln_v_star, list(NAMES), mean.tolist(), scale.tolist(), theta[:k].tolist(), theta[k:].tolist(), domain, info
    )
