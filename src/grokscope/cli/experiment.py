"""``grokscope experiment``: run an experiment config (transfer, sweep, curriculum, ...) through the engine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from grokscope.cli.common import complete_config, config_file
from grokscope.cli.guard import EXIT_RUNS_FAILED, guard


def experiment(
    config: Annotated[
        Path,
        typer.Argument(
            help="An experiment config (it has a kind:), or a preset's name (grokscope configs lists them): "
            "transfer_quick, configs/perturbation.yaml.",
            autocompletion=complete_config,
        ),
    ],
    out: Annotated[Path, typer.Option(help="Folder in which the experiment's directory is created.")] = Path("runs"),
    launcher: Annotated[
        str, typer.Option(help="Where runs execute: local, or ray (extra grokscope\\[ray]).")
    ] = "local",
    address: Annotated[
        str | None, typer.Option(help="Ray cluster: auto or HOST:PORT (default: start a local Ray instance).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a field of the experiment config: --set budgets.grokked=100."),
    ] = None,
    log: Annotated[
        list[str] | None,
        typer.Option(
            help="Log every run the experiment trains to tensorboard or wandb (as train --log; also the config's "
            "log:). Repeatable."
        ),
    ] = None,
) -> None:
    """Run an experiment (perturbation, transfer, similarity, sweep, curriculum, finetune); finished runs are reused."""

    def work() -> None:
        from grokscope.experiments import run as run_experiment

        path = config_file(config, "experiment")
        options = dict(
            device=device, progress=not quiet, launcher=launcher, address=address, log=log or (), overrides=set_ or ()
        )
        report = run_experiment(path, out, **options)
        for line in report.lines:
            typer.echo(line)
        for failure in report.failures:
            typer.echo(f"error: run failed: {failure.run_dir}: {failure.error}", err=True)
        if report.failures:
            typer.echo(f"error: {len(report.failures)} run(s) failed (their tracebacks: failures.json)", err=True)
            raise typer.Exit(EXIT_RUNS_FAILED)

    guard(work, "interrupted: run the same command again; finished runs are reused and interrupted ones resumed")
