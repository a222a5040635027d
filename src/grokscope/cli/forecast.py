"""``grokscope forecast RUN`` and ``grokscope forecast-fit DIR...``: when will a run generalize, and refitting that.

``forecast`` wires :func:`grokscope.forecast.forecast` to a run directory, or to every run under a folder (one
line each), reading only what was logged by ``--at``; ``--json`` prints one object per run. A run too early to
forecast, outside the calibrated domain, or already generalized says so in its line (exit 0); a malformed run is
an ``error:`` line (exit 2). ``forecast-fit`` refits the predictor from finished runs and writes it as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from grokscope.cli.guard import EXIT_USER_ERROR, guard
from grokscope.errors import UserError


def forecast(
    run: Annotated[Path, typer.Argument(help="A run directory, or a folder of runs (seeds, a sweep).")],
    at: Annotated[
        int | None,
        typer.Option(min=0, metavar="STEP", help="Forecast from what was logged by STEP (default: the last step)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per run.")] = False,
    predictor: Annotated[
        Path | None, typer.Option(metavar="FILE", help="A predictor from forecast-fit (default: the shipped one).")
    ] = None,
) -> None:
    """Predict the step at which a run generalizes (test acc >= 99%), with an 80% interval."""

    def work() -> int:
        from grokscope.forecast import Predictor, forecast_trajectory, read_trajectory, shipped_predictor
        from grokscope.forecast.calibration import run_dirs
        from grokscope.store import CONFIG_FILE, METRICS_FILE

        fitted = Predictor.load(predictor) if predictor is not None else shipped_predictor()
        if (run / CONFIG_FILE).is_file() or not run.is_dir():
            dirs = [run]  # a single run: read_trajectory says what is wrong with it, if anything
        else:
            dirs = run_dirs([run], finished=False)
            if not dirs:
                raise UserError(f"{run}: no runs (folders with {CONFIG_FILE} and {METRICS_FILE}) under it")
        failed = False
        for path in dirs:
            try:
                result = forecast_trajectory(read_trajectory(path, at), fitted)
            except UserError as err:
                if len(dirs) == 1:
                    raise
                typer.echo(f"error: {err}", err=True)
                failed = True
                continue
            name = str(path)
            row = {**result.to_dict(), "run": name}
            typer.echo(json.dumps(row) if as_json else result.describe().replace(result.run, name, 1))
        return EXIT_USER_ERROR if failed else 0

    code = guard(work, "interrupted: nothing was written")
    if code:
        raise typer.Exit(code)


def forecast_fit(
    dirs: Annotated[list[Path], typer.Argument(help="Folders of finished runs to calibrate on.")],
    out: Annotated[Path, typer.Option(metavar="FILE", help="Where to write the predictor (JSON).")],
    stride: Annotated[int, typer.Option(min=1, help="Use every STRIDE-th evaluation of each run.")] = 1,
) -> None:
    """Refit the forecast's predictor from finished runs (e.g. configs/forecast_calibration*.yaml)."""

    def work() -> None:
        from grokscope.forecast import fit_predictor, labelled_runs

        runs = labelled_runs(dirs)
        fitted = fit_predictor(runs, stride=stride)
        fitted.save(out)
        info = fitted.fitted_on
        typer.echo(
            f"{out}: fitted on {info['runs']} runs ({info['runs_censored']} did not generalize within their budget), "
            f"{info['observations']} observations"
        )

    guard(work, "interrupted: nothing was written")
