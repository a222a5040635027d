"""Stopping training cleanly: on SIGINT or SIGTERM, and when the loss stops being finite.

A signal does not stop the loop where it lands (perhaps between a backward and its optimizer step); it asks the loop
to stop at the next step boundary, where the loop saves a checkpoint and the resume state and raises
:class:`TrainingInterrupted`. A second signal stops at once (the last saved state still resumes). Handlers are
installed only in the main thread (Python allows no other), and the caller's handlers come back afterwards.
"""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
LOSS_METRICS = ("train_loss", "test_loss", "val_loss")


class SignalInterrupt(KeyboardInterrupt):
    """Stopped at once by a signal (the second one); ``signal_name`` says which, for the exit code."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal after saving a checkpoint and the resume state of every run it was training."""

    def __init__(self, signal_name: str, step: int, run_dirs: Sequence[Path]) -> None:
        super().__init__(f"{signal_name} at step {step}")
        self.signal_name, self.step, self.run_dirs = signal_name, step, list(run_dirs)

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number."""
        return 128 + int(signal.Signals[self.signal_name])


class StopSignals:
    """``with StopSignals() as stop: ... if stop.requested: save and raise stop.interrupted(step, dirs)``."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            raise SignalInterrupt(signal.Signals(signum).name)  # asked twice: stop now
        self.received = signal.Signals(signum)

    @property
    def requested(self) -> bool:
        return self.received is not None

    def interrupted(self, step: int, run_dirs: Sequence[Path]) -> TrainingInterrupted:
        assert self.received is not None
        return TrainingInterrupted(self.received.name, step, run_dirs)


def non_finite_loss(row: dict[str, Any]) -> str | None:
    """The first loss in a metrics row that is NaN or infinite, or None."""
    for name in LOSS_METRICS:
        value = row.get(name)
        if isinstance(value, float) and not math.isfinite(value):
            return name
    return None
