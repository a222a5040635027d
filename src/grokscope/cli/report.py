"""``grokscope report``: one self-contained HTML page of a run or an experiment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from grokscope.cli.guard import guard


def report(
    path: Annotated[Path, typer.Argument(help="A run directory or an experiment directory.")],
    out: Annotated[Path | None, typer.Option(help="Where to write the page (default: PATH/report.html).")] = None,
) -> None:
    """One self-contained HTML page of a run or an experiment: summary, curves, analyses, figures (works offline)."""

    def work() -> None:
        from grokscope.viz.report import write_report

        typer.echo(f"wrote {write_report(path, out)}")

    guard(work, "interrupted: no page was written")
