"""A live progress bar for training: step, loss and accuracy, silenced by ``--quiet``."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainingProgress:
    """``with TrainingProgress(name, start, total) as bar: bar.update(step, metrics_row)``."""

    def __init__(self, name: str, start: int, total: int, enabled: bool = True) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            disable=not enabled,
        )
        self._task = self._progress.add_task(name, total=total, completed=start, stats="")

    def __enter__(self) -> TrainingProgress:
        self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def update(self, step: int, row: dict[str, Any]) -> None:
        stats = f"train {row['train_loss']:.3g} / {row['train_acc']:.1%}  test {row['test_loss']:.3g} / {row['test_acc']:.1%}"
        self._progress.update(self._task, completed=step, stats=stats)
