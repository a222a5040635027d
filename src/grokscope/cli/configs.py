"""``grokscope configs`` and ``grokscope configs show``: the presets shipped with grokscope."""

from __future__ import annotations

import shutil
import sys
from typing import Annotated

import typer

from grokscope.cli.common import complete_preset
from grokscope.cli.guard import guard

app = typer.Typer(
    help="The presets: configs shipped with grokscope, usable by name wherever a config path goes.",
    no_args_is_help=False,
)


@app.callback(invoke_without_command=True)
def configs(ctx: typer.Context) -> None:
    """List the presets (name, kind, first comment line): grokscope train NAME or grokscope experiment NAME runs one
    from any folder, grokscope configs show NAME prints it. A file of the same name in the current folder wins."""
    if ctx.invoked_subcommand is not None:
        return

    def work() -> None:
        from grokscope.presets import available

        presets = available()
        wide = max(len(p.name) for p in presets)
        kinds = max(len(p.kind) for p in presets)
        # In a terminal, one line each (`configs show` has the whole text); piped, nothing is cut.
        width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
        for p in presets:
            line = f"{p.name:<{wide}}  {p.kind:<{kinds}}  {p.description}"
            typer.echo(line if width is None or len(line) <= width else line[: width - 1] + "…")

    guard(work)


@app.command("show")
def configs_show(
    name: Annotated[str, typer.Argument(help="A preset's name, e.g. quickstart.", autocompletion=complete_preset)],
) -> None:
    """Print a preset's file as shipped; grokscope configs show quickstart > mine.yaml starts a config of your own."""

    def work() -> None:
        from grokscope.presets import find

        typer.echo(find(name).path.read_text(encoding="utf-8"), nl=False)

    guard(work)
