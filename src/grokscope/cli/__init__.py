"""The ``grokscope`` command line: thin typer commands that parse, wire the library together and print.

One module per command (:mod:`.train`, :mod:`.analyze`, :mod:`.forecast`, :mod:`.experiment`, :mod:`.report`,
:mod:`.configs`, :mod:`.compare`, :mod:`.importing`), the error guard they share (:mod:`.guard`) and helpers for
CONFIG arguments (:mod:`.common`). Heavy imports (torch, TransformerLens) happen inside the commands so that
``grokscope --help`` answers at once; ``analyze``, whose flags come from the analyses themselves, is built only when
it is used.
A :class:`~grokscope.errors.UserError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from grokscope import __version__
from grokscope.cli import compare, configs, experiment, forecast, importing, report, train
from grokscope.cli.guard import EXIT_DIVERGED, EXIT_USER_ERROR, OneLineUsageErrors
from grokscope.cli.train import parse_seeds

__all__ = ["EXIT_DIVERGED", "EXIT_USER_ERROR", "app", "parse_seeds"]


class LazyCommand:
    """A command that stands in for the click command ``build`` makes, building it on first real use: listing it
    (``grokscope --help``, completing a command name) reads only the attributes set here."""

    hidden = False
    deprecated = False
    rich_help_panel = None

    def __init__(self, name: str, build: Callable[[], Any], short_help: str) -> None:
        self.name = name
        self.short_help = short_help  # `help` and everything else: the real command's
        self._build = build
        self._command: Any = None

    def get_short_help_str(self, limit: int = 45) -> str:
        return self.short_help if len(self.short_help) <= limit else self.short_help[: limit - 3] + "..."

    def __getattr__(self, attr: str) -> Any:  # only for what is not set above: the real command's
        if attr.startswith("_"):
            raise AttributeError(attr)
        if self._command is None:
            self._command = self._build()
        return getattr(self._command, attr)


def _build_analyze() -> Any:
    from grokscope.cli.analyze import command

    return command()


# Commands built on first use (their flags import the analyses, and torch with them), with the short help that
# `grokscope --help` lists for them meanwhile.
LAZY: dict[str, tuple[Callable[[], Any], str]] = {
    "analyze": (_build_analyze, "Analyze a run's checkpoints through TransformerLens hooks; writes analysis/..."),
}
ORDER = ("train", "analyze", "forecast", "forecast-fit", "compare", "import", "report", "experiment", "configs")


class Commands(OneLineUsageErrors):
    """The app's group: its commands in :data:`ORDER`, with the :data:`LAZY` ones as :class:`LazyCommand`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, (build, short) in LAZY.items():
            self.commands[name] = LazyCommand(name, build, short)  # type: ignore[assignment]

    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))


app = typer.Typer(
    cls=Commands,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish and PowerShell
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train, analyze and compare grokking transformers on modular arithmetic.",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"grokscope {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Train, analyze and compare grokking transformers on modular arithmetic."""


app.command()(train.train)
app.command()(forecast.forecast)
app.command("forecast-fit")(forecast.forecast_fit)
app.command()(compare.compare)
app.command("import")(importing.import_run)
app.command()(report.report)
app.command()(experiment.experiment)
app.add_typer(configs.app, name="configs")
