"""Forecasting grokking: when will a run generalize, from what it has logged so far.

:mod:`.trajectory` reads a run up to a step (never past it), :mod:`.features` turns it into a few measurements,
:mod:`.predictor` is the fitted model (a censored log-normal model of the steps left, shipped as
``predictor.json``), :mod:`.forecasting` makes the :class:`Forecast`, :mod:`.calibration` refits the predictor
from finished runs, :mod:`.baselines` holds the first-passage law and the median delay it is measured against, and
:mod:`.live` forecasts during training. Validation: ``benchmarks/forecast.py`` and docs/how-to/forecast.md.
"""

from grokscope.forecast.calibration import LabelledRun, fit_predictor, labelled_runs
from grokscope.forecast.forecasting import Forecast, forecast, forecast_trajectory, shipped_predictor
from grokscope.forecast.predictor import Predictor
from grokscope.forecast.trajectory import Trajectory, read_trajectory

__all__ = [
    "Forecast",
    "LabelledRun",
    "Predictor",
    "Trajectory",
    "fit_predictor",
    "forecast",
    "forecast_trajectory",
    "labelled_runs",
    "read_trajectory",
    "shipped_predictor",
]
