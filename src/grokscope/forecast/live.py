"""The forecast during training (``grokscope train ... --forecast``): a callback that forecasts at every evaluation
after memorization, from the rows logged so far, exactly as ``grokscope forecast RUN --at STEP`` would.

Each forecast is a line of ``forecast.jsonl`` in the run (rewritten with the metrics at every checkpoint; a
resumed run recomputes its earlier lines from its metrics), and its numbers join the evaluation's row that the
progress line and the ``--log`` loggers see (``forecast_step``, ``forecast_low``, ``forecast_high``,
``forecast_p_within_budget``); ``metrics.jsonl`` itself is never changed. With ``stop_below`` (a sweep's
``forecast_stop``), a run whose probability of generalizing within its budget stays below it for
:data:`STOP_AFTER` evaluations in a row is stopped there, and its summary says so (``stopped_by``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from grokscope.callbacks import Callback
from grokscope.forecast.forecasting import Forecast, forecast_trajectory, shipped_predictor
from grokscope.forecast.predictor import Predictor
from grokscope.forecast.trajectory import COLUMNS, Trajectory, settings_of
from grokscope.store import atomic_write_text

if TYPE_CHECKING:
    from grokscope.models import GrokTransformer
    from grokscope.store import Run

FORECAST_FILE = "forecast.jsonl"
STOP_AFTER = 2  # forecasts in a row below the threshold before a run is stopped (one may be a blip)


def forecast_line(result: Forecast) -> dict[str, Any]:
    """One line of ``forecast.jsonl``."""
    keep = ("status", "predicted_step", "interval", "p_generalize_within_budget", "reason")
    return {"step": result.at, **{k: v for k, v in result.to_dict().items() if k in keep}}


def progress_text(result: Forecast) -> str:
    """What the progress line shows of a forecast."""
    if result.status == "forecast":
        return f"groks ~{result.predicted_step}"
    if result.status == "not_expected":
        return f"no grok by {result.budget} (p {result.p_generalize_within_budget:.2f})"
    return {"outside_domain": "forecast: outside domain", "generalized": ""}.get(result.status, "")


class LiveForecast(Callback):
    """Forecasts at each evaluation after memorization; see the module docstring."""

    def __init__(self, predictor: Predictor | None = None, stop_below: float | None = None) -> None:
        self.predictor = predictor or shipped_predictor()
        self.stop_below = stop_below
        self.lines: list[dict[str, Any]] = []
        self._rows: list[dict[str, Any]] = []
        self._run: Run | None = None
        self._settings: dict[str, Any] = {}

    def on_train_begin(self, run: Run, model: GrokTransformer, step: int) -> None:
        self._run, self._settings = run, settings_of(run)
        self._rows, self.lines = [], []
        if step > 0:  # resumed: the forecasts up to here follow from the metrics up to here
            for row in run.metrics():
                if row["step"] <= step:
                    self._observe(row)

    def _observe(self, row: dict[str, Any]) -> Forecast | None:
        assert self._run is not None
        self._rows.append({"step": row["step"], **{k: row.get(k) for k in COLUMNS}})
        trajectory = Trajectory(
            self._run.root.name, self._rows, row["step"], self._run.config.train.steps, self._settings
        )
        if trajectory.memorization_step is None or (self.lines and self.lines[-1]["status"] == "generalized"):
            return None
        result = forecast_trajectory(trajectory, self.predictor)
        self.lines.append(forecast_line(result))
        return result

    def on_eval(self, step: int, model: GrokTransformer, metrics: dict[str, Any]) -> None:
        result = self._observe(metrics)
        if result is None:
            return
        p = result.p_generalize_within_budget
        recent = [line["p_generalize_within_budget"] for line in self.lines[-STOP_AFTER:]]
        if (
            self.stop_below is not None
            and len(recent) == STOP_AFTER
            and all(q is not None and q < self.stop_below for q in recent)
        ):
            self.stop_reason = (
                f"forecast: P(generalize within {result.budget} steps) = {p:.3f} < {self.stop_below} at "
                f"{STOP_AFTER} evaluations in a row (step {step})"
            )
        low, high = result.interval or (None, None)
        metrics.update(
            forecast_step=result.predicted_step,
            forecast_low=low,
            forecast_high=high,
            forecast_p_within_budget=result.p_generalize_within_budget,
            forecast_text=progress_text(result),
        )

    def _write(self) -> None:
        assert self._run is not None
        atomic_write_text(self._run.root / FORECAST_FILE, "".join(json.dumps(line) + "\n" for line in self.lines))

    def on_checkpoint(self, step: int, model: GrokTransformer) -> None:
        self._write()

    def on_train_end(self, run: Run, model: GrokTransformer, step: int) -> None:
        self._write()
