"""The error guard every command runs its body under, and the usage-error face of the whole app.

A user's mistake is one ``error:`` line on stderr and exit code 2, never a traceback; an interrupt (Ctrl-C,
SIGTERM) says how to continue and exits 130 or 143. Both rules live here, once, so that no command can forget them.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from typer.core import TyperGroup

try:  # typer >= 0.22 carries its own copy of click; earlier versions use click itself
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - older typer
    from click.exceptions import NoArgsIsHelpError, UsageError

from grokscope.errors import UserError

T = TypeVar("T")

EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3
EXIT_RUNS_FAILED = 1  # an experiment finished, but some of its runs failed


class OneLineUsageErrors(TyperGroup):
    """Usage mistakes (an unknown flag, a bad value, a missing argument) as one ``error:`` line and exit code 2, like
    every other user error, instead of click's boxed usage block."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except NoArgsIsHelpError as err:
            typer.echo(err.ctx.get_help() if err.ctx else str(err))
            result = 0
        except UsageError as err:
            where = f"{err.ctx.command_path}: " if err.ctx else ""
            typer.echo(f"error: {where}{err.format_message()}", err=True)
            result = err.exit_code
        except typer.Abort:
            typer.echo("interrupted", err=True)
            result = 130
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else 0)


class Terminated(KeyboardInterrupt):
    """SIGTERM outside the training loop (which handles it itself): stop like Ctrl-C, with the shell's exit code."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def guard(work: Callable[[], T], interrupted: str = "interrupted") -> T:
    """Run a command body: user errors become one line and exit code 2; an interrupt (Ctrl-C, SIGTERM) says how
    to continue (``interrupted``) and exits 130 or 143."""
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if on_main_thread else None
    try:
        return work()
    except UserError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None
    except OSError as err:  # a path the user gave: missing, read-only, full, a file where a folder should be
        name = os.fsdecode(err.filename) if isinstance(err.filename, bytes | str) else err.filename  # not b'...'
        where = f"{name}: " if name else ""
        typer.echo(f"error: {where}{err.strerror or err}", err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None
    except KeyboardInterrupt as err:
        # Duck-typed, importing nothing: an interrupt may land while torch is half imported.
        if hasattr(err, "signal_name") and hasattr(err, "run_dirs"):
            dirs = ", ".join(str(d) for d in err.run_dirs)
            typer.echo(
                f"interrupted by {err.signal_name} at step {err.step}: saved a checkpoint and the resume state of "
                f"{dirs}; continue with the same command and --resume",
                err=True,
            )
            raise typer.Exit(err.exit_code) from None
        term = isinstance(err, Terminated) or getattr(err, "signal_name", None) == "SIGTERM"
        typer.echo(f"{interrupted} ({'SIGTERM' if term else 'SIGINT'})", err=True)
        raise typer.Exit(143 if term else 130) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
