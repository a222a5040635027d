"""The measurements a forecast is made from: a few numbers read off a run's rows at one step after memorization.

Each is computable live at an evaluation and offline from ``metrics.jsonl`` alike (no checkpoint is read):

* the hyperparameters that set the pace in the first-passage law (ln ηλ), and the task's size (ln p, ln of the
  training fraction);
* the weight norm, as the first-passage law reads it: the gap left to the squared norm at which calibration runs
  generalized, ln(ln ‖θ_t‖² − ln V*) (V*: the predictor's, the median over its calibration runs), so that a run
  obeying T − t = ln(‖θ_t‖² / V*) / (2κηλ) is exactly linear in these measurements; the squared norm itself (ln),
  how far it has fallen since memorization, ln(‖θ_t‖² / ‖θ_mem‖²), and how fast it falls now (−d ln ‖θ‖² / d step
  over the last :data:`WINDOW` steps, per 1,000 steps);
* the test loss: its level (ln) and its trend (d ln loss / d step, per 1,000 steps, same window);
* the test accuracy, and how long ago memorization was (ln of the steps since, plus one evaluation).
"""

from __future__ import annotations

import math

import numpy as np

from grokscope.forecast.trajectory import Trajectory

WINDOW = 100  # steps over which the trends are read (at least the last two evaluations)
ETA_LAMBDA_FLOOR = 1e-5  # keeps ln ηλ finite for a run without weight decay (ηλ of the calibration: 2.5e-3..4e-2)
GAP_FLOOR = 1e-3  # ln ‖θ‖² − ln V* at or below V*: the law says "now", the logarithm needs a floor

NAMES = (
    "ln_eta_lambda",
    "ln_modulus",
    "ln_train_fraction",
    "ln_memorization_step",
    "ln_norm_gap",
    "ln_weight_norm_sq",
    "norm_fallen",
    "norm_fall_rate",
    "ln_test_loss",
    "test_loss_trend",
    "test_acc",
    "ln_since_memorization",
)


def _slope(steps: np.ndarray, values: np.ndarray) -> float:
    """Least-squares slope of ``values`` against ``steps``, per 1,000 steps."""
    if len(steps) < 2:
        return 0.0
    x = steps - steps.mean()
    return float((x * (values - values.mean())).sum() / (x * x).sum()) * 1000.0


def features(run: Trajectory, ln_v_star: float) -> np.ndarray:
    """The :data:`NAMES` measurements of ``run`` at its last step :attr:`~Trajectory.at` (``ln_v_star``: ln V*);
    the run must have memorized by then."""
    m = run.memorization_step
    if m is None:
        raise ValueError(f"{run.name}: not memorized by step {run.at}")
    rows = run.rows
    s = run.settings
    steps = np.array([r["step"] for r in rows], dtype=float)
    ln_v = np.log(np.array([r["weight_norm"] for r in rows], dtype=float) ** 2)
    ln_loss = np.log(np.maximum(np.array([r["test_loss"] for r in rows], dtype=float), 1e-12))
    recent = steps >= max(run.at - WINDOW, steps[-2] if len(steps) > 1 else 0)
    at_mem = int(np.flatnonzero(steps == m)[0])
    return np.array(
        [
            math.log(s["optim.lr"] * s["optim.weight_decay"] + ETA_LAMBDA_FLOOR),
            math.log(s["task.modulus"]),
            math.log(s["task.train_fraction"]),
            math.log(max(m, 1)),
            math.log(max(ln_v[-1] - ln_v_star, GAP_FLOOR)),
            ln_v[-1],
            ln_v[-1] - ln_v[at_mem],
            -_slope(steps[recent], ln_v[recent]),
            ln_loss[-1],
            _slope(steps[recent], ln_loss[recent]),
            rows[-1]["test_acc"],
            math.log(run.at - m + run.eval_every),
        ]
    )
