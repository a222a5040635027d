"""``grokscope train --forecast`` and ``grokscope forecast`` on a real quickstart run, with the shipped predictor.

What every machine gives: the run memorizes and generalizes (its steps differ a little across CPUs), so the live
forecast starts at memorization, ends with "generalized", and each line equals what ``grokscope forecast --at``
prints for that step; a forecast made at memorization brackets a plausible step. No exact step is held.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from conftest import QUICKSTART
from grokscope.cli import app

pytestmark = pytest.mark.slow


def test_train_with_forecast_then_forecast_the_run(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        app, ["train", str(QUICKSTART), "--out", str(tmp_path), "--device", "cpu", "--quiet", "--forecast"]
    )
    assert result.exit_code == 0, result.output
    run = tmp_path / "quickstart"
    summary = json.loads((run / "summary.json").read_text())
    memorized, generalized = summary["memorization_step"], summary["generalization_step"]
    assert memorized is not None and generalized is not None
    lines = [json.loads(line) for line in (run / "forecast.jsonl").read_text().splitlines()]
    assert lines[0]["step"] == memorized and lines[-1]["status"] == "generalized"
    assert all(line["status"] == "forecast" for line in lines[:-1])  # the quickstart lies in the calibrated domain

    first = json.loads(runner.invoke(app, ["forecast", str(run), "--at", str(memorized), "--json"]).output)
    assert first["predicted_step"] == lines[0]["predicted_step"] and first["at"] == memorized
    low, high = first["interval"]
    assert memorized < low < first["predicted_step"] < high
    assert first["p_generalize_within_budget"] > 0.5  # the quickstart generalizes well within its 1,500 steps
    assert "censored log-normal" in first["method"]

    text = runner.invoke(app, ["forecast", str(run), "--at", "0"])
    assert text.exit_code == 0 and "too early" in text.output
    done = runner.invoke(app, ["forecast", str(run)])
    assert done.exit_code == 0 and f"already generalized at step {generalized}" in done.output
