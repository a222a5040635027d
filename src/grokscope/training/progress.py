"""A live progress bar for training: step, loss and accuracy, silenced by ``--quiet``.

The line is laid out for the terminal's width at every refresh, so that an 80-column terminal shows it whole::

    quickstart ━━━━━━  120/1500 train 0.0012 100.0%  test    4.6  12.3% 00:05<00:51

The step counts, the metrics and the times are never cut: the bar gives way first (it disappears below a few columns),
then the run name (ending in "…"), and in a terminal too narrow for all of them the metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

from rich.console import Console, RenderableType
from rich.progress import Progress, ProgressColumn, Task
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

MAX_BAR = 40  # rich's own default bar width
MIN_BAR = 4  # narrower than this, the counts say as much: no bar
MIN_NAME = 8  # a run name is cut to no fewer characters than this (with its "…")
NO_STATS = ""  # before the first evaluation


def clock(seconds: float | None) -> str:
    """``MM:SS``, or ``H:MM:SS`` from an hour on; ``--:--`` when not known yet."""
    if seconds is None:
        return "--:--"
    s = int(seconds)
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m:02d}:{s % 60:02d}"


def format_stats(row: dict[str, Any]) -> str:
    """``train <loss> <acc>  test <loss> <acc>`` in fixed widths, so that the line does not jitter as values change;
    then the live forecast's text, if the row has one."""
    stats = (
        f"train {row['train_loss']:>6.2g} {row['train_acc']:>6.1%}  "
        f"test {row['test_loss']:>6.2g} {row['test_acc']:>6.1%}"
    )
    forecast = row.get("forecast_text")  # the live forecast's (grokscope.forecast.live), when there is one
    return f"{stats}  {forecast}" if forecast else stats


class FittedLine(ProgressColumn):
    """The whole line as one column, fitted to ``width()`` columns: name, bar, ``step/total``, stats, times."""

    def __init__(self, width: Callable[[], int]) -> None:
        super().__init__()
        self._width = width

    def render(self, task: Task) -> RenderableType:
        total = int(task.total or 0)
        counts = f"{int(task.completed):>{len(str(total))}}/{total}"
        times = f"{clock(task.elapsed)}<{clock(task.time_remaining)}"
        stats = str(task.fields.get("stats", NO_STATS))
        width, name = self._width(), task.description
        fixed = [counts, stats, times] if stats else [counts, times]
        if stats and width - sum(len(part) + 1 for part in fixed) < MIN_NAME + 1:
            fixed = [counts, times]  # a very narrow terminal: the metrics go before the counts and times are cut
        # Every part is followed by one blank, except the last.
        room = width - sum(len(part) + 1 for part in fixed)  # for the name, the bar and their blanks
        if len(name) + 1 + MIN_BAR + 1 > room:  # the name gives way first, down to MIN_NAME
            name = cut(name, max(MIN_NAME, room - MIN_BAR - 2))
        bar = min(MAX_BAR, room - len(name) - 2)
        grid = Table.grid(padding=(0, 1))
        cells: list[RenderableType] = [Text(name, style="bold", no_wrap=True)]
        if bar >= MIN_BAR:
            cells.append(ProgressBar(total=task.total, completed=task.completed, width=bar))
        cells += [Text(part, no_wrap=True) for part in fixed]
        for _ in cells:
            grid.add_column(no_wrap=True)
        grid.add_row(*cells)
        return grid


def cut(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, ending in "…" when cut."""
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


class TrainingProgress:
    """``with TrainingProgress(name, start, total) as bar: bar.update(step, metrics_row)``."""

    def __init__(self, name: str, start: int, total: int, enabled: bool = True, console: Console | None = None) -> None:
        self._progress = Progress(
            FittedLine(lambda: self._progress.console.width), disable=not enabled, console=console
        )
        self._task = self._progress.add_task(name, total=total, completed=start, stats=NO_STATS)

    def __enter__(self) -> TrainingProgress:
        self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def update(self, step: int, row: dict[str, Any]) -> None:
        self._progress.update(self._task, completed=step, stats=format_stats(row))
