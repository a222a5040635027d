"""The forecast with known answers: runs whose metrics follow a planted first-passage law, built here.

A law run memorizes at step 40; from then on its squared weight norm falls as V(t) = V_mem e^(−2κηλ(t − 40)) and it
generalizes (test accuracy jumps to 1) at the first evaluation where V <= V*, exactly as the first-passage law
T_grok − T_mem = ln(V_mem / V*) / (2κηλ) says. The predictor fitted on such runs must give a new run's planted step
back; the first-passage baseline must give back κ and V*; nothing past ``--at`` may reach a forecast.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import QUICKSTART, assert_one_line_error
from grokscope.callbacks import Callback
from grokscope.cli import app
from grokscope.config import load_config, parse_config
from grokscope.forecast import Predictor, fit_predictor, forecast, forecast_trajectory, labelled_runs, read_trajectory
from grokscope.forecast.baselines import FirstPassageLaw
from grokscope.forecast.live import FORECAST_FILE
from grokscope.store import write_json, write_metrics
from grokscope.training.summary import summarize

KAPPA, V_STAR, MEMORIZED = 0.8, 900.0, 40


def law_run(
    root: Path, *, lr: float, wd: float, delay: int, modulus: int = 59, frac: float = 0.4, budget: int = 3000
) -> Path:
    """A run directory whose metrics follow the planted law, generalizing ``delay`` steps after memorization
    (V_mem is chosen so that the law gives exactly that delay)."""
    config = load_config(QUICKSTART).to_dict()
    config["task"].update(modulus=modulus, train_fraction=frac)
    config["optim"].update(lr=lr, weight_decay=wd)
    config["train"].update(steps=budget)
    config["name"] = f"law_lr{lr}_wd{wd}_d{delay}_p{modulus}_f{frac}"
    run_config = parse_config(config)
    path = root / run_config.name
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(run_config.to_yaml())
    rate = 2 * KAPPA * lr * wd
    v_mem = V_STAR * math.exp(rate * delay)
    generalized = MEMORIZED + delay
    rows = []
    for step in range(0, generalized + 1, 10):
        v = v_mem * (0.5 + 0.5 * step / MEMORIZED) if step < MEMORIZED else v_mem * math.exp(-rate * (step - MEMORIZED))
        done = step >= generalized
        rows.append(
            {
                "step": step,
                "epoch": float(step),
                "train_loss": 0.01,
                "train_acc": min(1.0, step / MEMORIZED),
                "test_loss": 0.01 if done else 2.0 + math.log(v / V_STAR),
                "test_acc": 1.0 if done else 0.05,
                "weight_norm": math.sqrt(v),
                "lr": lr,
            }
        )
    write_metrics(path / "metrics.jsonl", rows)
    write_json(path / "summary.json", summarize(rows))
    return path


CELLS = [(lr, wd) for lr in (0.005, 0.01, 0.02) for wd in (0.5, 1.0, 2.0)]


@pytest.fixture(scope="module")
def calibration(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("law_calibration")
    for i, (lr, wd) in enumerate(CELLS):
        for delay in (200, 500, 1200):
            law_run(root, lr=lr, wd=wd, delay=delay + 10 * i, modulus=53 + 8 * (i % 2), frac=0.35 + 0.1 * (i % 3))
    return root


@pytest.fixture(scope="module")
def predictor(calibration) -> Predictor:
    return fit_predictor(labelled_runs([calibration]))


def test_first_passage_baseline_gives_back_kappa_and_v_star(calibration):
    law = FirstPassageLaw.fit(labelled_runs([calibration]))
    assert law.kappa == pytest.approx(KAPPA, rel=1e-9)
    assert law.v_star == pytest.approx(V_STAR, rel=1e-9)


@pytest.mark.parametrize("share", [0.0, 0.5])
def test_planted_law_gives_back_the_planted_step(predictor, tmp_path, share):
    path = law_run(tmp_path, lr=0.007, wd=1.4, delay=640, modulus=57, frac=0.42)
    at = MEMORIZED + round(share * 640 / 10) * 10
    result = forecast(path, at=at, predictor=predictor)
    assert result.status == "forecast"
    planted = MEMORIZED + 640
    assert abs(result.predicted_step - planted) <= 0.05 * 640, result
    assert result.interval[0] <= planted <= result.interval[1]
    assert result.p_generalize_within_budget > 0.9


def test_at_never_reads_past_the_step(predictor, tmp_path):
    path = law_run(tmp_path, lr=0.01, wd=1.0, delay=500)
    clean = forecast(path, at=200, predictor=predictor)
    # What comes later is damage and a generalization: neither may change the forecast at step 200.
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    later = [r for r in rows if r["step"] > 200]
    for r in later:
        r["weight_norm"] = None
        r["test_acc"] = 1.0
    write_metrics(path / "metrics.jsonl", [r for r in rows if r["step"] <= 200] + later)
    assert forecast(path, at=200, predictor=predictor) == clean
    assert clean.at == 200 and clean.status == "forecast"


def test_too_early_generalized_and_outside_domain(predictor, tmp_path):
    path = law_run(tmp_path, lr=0.01, wd=1.0, delay=300)
    early = forecast(path, at=20, predictor=predictor)
    assert early.status == "too_early" and early.predicted_step is None and "not memorized" in early.reason
    done = forecast(path, predictor=predictor)
    assert done.status == "generalized" and done.predicted_step == MEMORIZED + 300
    outside = forecast(law_run(tmp_path, lr=0.01, wd=1.0, delay=300, modulus=113), at=100, predictor=predictor)
    assert outside.status == "outside_domain" and "task.modulus is 113" in outside.reason


def test_a_run_that_will_not_make_its_budget_is_not_expected(predictor, tmp_path):
    path = law_run(tmp_path, lr=0.005, wd=0.5, delay=1200, budget=600)
    result = forecast(path, at=100, predictor=predictor)
    assert result.status == "not_expected" and result.predicted_step is None
    assert result.p_generalize_within_budget < 0.05


def test_predictor_round_trips_and_damage_is_one_line(predictor, tmp_path):
    predictor.save(tmp_path / "p.json")
    assert Predictor.load(tmp_path / "p.json") == predictor
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    runner = CliRunner()
    law = law_run(tmp_path, lr=0.01, wd=1.0, delay=300)
    assert_one_line_error(
        runner.invoke(app, ["forecast", str(law), "--predictor", str(tmp_path / "bad.json")]),
        "bad.json",
        "not a grokscope forecast predictor",
    )


def test_cli_lines_json_and_folders(predictor, tmp_path):
    predictor.save(tmp_path / "p.json")
    runs = tmp_path / "runs"
    law_run(runs, lr=0.01, wd=1.0, delay=400)
    law_run(runs, lr=0.02, wd=1.0, delay=300)
    runner = CliRunner()
    one = next(runs.iterdir())
    result = runner.invoke(app, ["forecast", str(one), "--at", "100", "--predictor", str(tmp_path / "p.json")])
    assert result.exit_code == 0 and len(result.output.strip().splitlines()) == 1, result.output
    assert "generalizes" in result.output and "80% interval" in result.output
    result = runner.invoke(
        app, ["forecast", str(runs), "--at", "100", "--json", "--predictor", str(tmp_path / "p.json")]
    )
    lines = [json.loads(line) for line in result.output.strip().splitlines()]
    assert result.exit_code == 0 and len(lines) == 2
    for line in lines:
        assert {"at", "predicted_step", "interval", "p_generalize_within_budget", "method"} <= line.keys()
        assert line["at"] == 100
    early = runner.invoke(app, ["forecast", str(one), "--at", "10", "--predictor", str(tmp_path / "p.json")])
    assert early.exit_code == 0 and "too early" in early.output and len(early.output.strip().splitlines()) == 1


def test_malformed_runs_are_one_line_errors(predictor, tmp_path):
    predictor.save(tmp_path / "p.json")
    runner = CliRunner()
    path = law_run(tmp_path, lr=0.01, wd=1.0, delay=300)
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        del r["weight_norm"]
    write_metrics(path / "metrics.jsonl", rows)
    assert_one_line_error(
        runner.invoke(app, ["forecast", str(path), "--predictor", str(tmp_path / "p.json")]),
        "metrics.jsonl",
        "weight_norm",
    )
    (path / "metrics.jsonl").unlink()
    assert_one_line_error(
        runner.invoke(app, ["forecast", str(path), "--predictor", str(tmp_path / "p.json")]), "no metrics.jsonl"
    )
    assert_one_line_error(runner.invoke(app, ["forecast", str(tmp_path / "nowhere")]), "nowhere")


def test_forecast_fit_writes_a_predictor_that_forecasts(calibration, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["forecast-fit", str(calibration), "--out", str(tmp_path / "p.json")])
    assert result.exit_code == 0, result.output
    assert "fitted on 27 runs" in result.output
    refit = Predictor.load(tmp_path / "p.json")
    path = law_run(tmp_path, lr=0.01, wd=1.0, delay=500)
    assert forecast(path, at=MEMORIZED, predictor=refit).status == "forecast"
    assert_one_line_error(runner.invoke(app, ["forecast-fit", str(tmp_path / "empty"), "--out", "x.json"]), "empty")


def test_live_forecast_equals_the_offline_forecast_at_each_step(predictor, tmp_path):
    """Training with the live forecast writes, at each evaluation after memorization, what ``forecast --at`` says."""
    from grokscope.forecast.live import LiveForecast
    from grokscope.training import train

    class Seen(Callback):  # stands where a --log logger stands: after the forecast
        def __init__(self) -> None:
            self.rows: list[dict] = []

        def on_eval(self, step, model, metrics):
            self.rows.append(dict(metrics))

    config = load_config(QUICKSTART, ["train.steps=120", "train.checkpoints.every=60"])
    # The law runs' domain is the quickstart family: the quickstart itself lies inside it.
    seen = Seen()
    result = train(config, tmp_path / "live", device="cpu", progress=False, callbacks=[LiveForecast(predictor), seen])
    lines = [json.loads(line) for line in (result.run.root / FORECAST_FILE).read_text().splitlines()]
    memorized = result.summary["memorization_step"]
    assert lines and lines[0]["step"] == memorized
    # The loggers see the forecast's numbers; metrics.jsonl keeps the rows as measured.
    logged = {row["step"]: row for row in seen.rows}
    assert all(logged[line["step"]]["forecast_p_within_budget"] == line["p_generalize_within_budget"] for line in lines)
    assert not any(k.startswith("forecast") for row in result.run.metrics() for k in row)
    for line in lines:
        offline = forecast_trajectory(read_trajectory(result.run.root, line["step"]), predictor)
        assert line["status"] == offline.status and line["predicted_step"] == offline.predicted_step
        assert line["p_generalize_within_budget"] == offline.p_generalize_within_budget


def test_live_forecast_stops_a_run_that_will_not_make_its_budget(predictor, tmp_path):
    """``stop_below``: a quickstart run with a 150-step budget (it generalizes near step 270) is stopped two
    evaluations after memorization, and its summary says why."""
    from grokscope.forecast.live import LiveForecast
    from grokscope.training import train

    config = load_config(QUICKSTART, ["train.steps=150"])
    result = train(
        config, tmp_path / "stopped", device="cpu", progress=False, callbacks=[LiveForecast(predictor, stop_below=0.5)]
    )
    lines = [json.loads(line) for line in (result.run.root / FORECAST_FILE).read_text().splitlines()]
    assert [line["status"] for line in lines[:2]] == ["not_expected", "not_expected"]
    assert result.summary["steps_trained"] == lines[1]["step"] < 150
    assert result.summary["stopped_by"].startswith("forecast: P(generalize within 150 steps)")


def test_a_sweep_opts_in_to_forecast_stopping():
    from grokscope.experiments.sweep.config import SweepConfig

    base = {"kind": "sweep", "base": "quickstart.yaml", "seeds": [0]}
    assert SweepConfig.model_validate(base).record_plan() is None
    plan = SweepConfig.model_validate({**base, "forecast_stop": 0.05}).record_plan()
    assert plan is not None and plan.forecast_stop == 0.05 and plan.attaches
    assert type(plan.recorders()[0]).__name__ == "LiveForecast"
    with pytest.raises(ValueError, match="forecast_stop"):
        SweepConfig.model_validate({**base, "forecast_stop": 1.5})


def test_a_folder_with_a_malformed_run_forecasts_the_others_and_exits_2(predictor, tmp_path):
    predictor.save(tmp_path / "p.json")
    runs = tmp_path / "runs"
    good = law_run(runs, lr=0.01, wd=1.0, delay=400)
    bad = law_run(runs, lr=0.02, wd=1.0, delay=300)
    (bad / "metrics.jsonl").write_text('{"step": 0, "train_acc": "high"}\n')
    result = CliRunner().invoke(app, ["forecast", str(runs), "--at", "100", "--predictor", str(tmp_path / "p.json")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in result.output
    assert any(line.startswith(f"{good} at step 100: generalizes") for line in lines)
    assert any(line.startswith("error: ") and bad.name in line for line in lines)


def test_a_diverging_run_gets_no_forecast(predictor, tmp_path):
    from grokscope.forecast.trajectory import Trajectory

    run = read_trajectory(law_run(tmp_path, lr=0.01, wd=1.0, delay=300), at=100)
    rows = [*run.rows[:-1], {**run.rows[-1], "test_loss": math.nan}]
    result = forecast_trajectory(Trajectory(run.name, rows, run.at, run.budget, run.settings), predictor)
    assert result.status == "not_finite" and result.predicted_step is None and "diverging" in result.reason
