"""The training progress line fits the terminal: at 80 columns the step counts, metrics and times are whole."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from grokscope.training.progress import TrainingProgress, clock

ROW = {"train_loss": 1.23e-5, "train_acc": 1.0, "test_loss": 4.56, "test_acc": 0.123}


def line(name: str, step: int, total: int, width: int, row: dict | None = None) -> str:
    """The line as a terminal of ``width`` columns shows it (colours off)."""
    bar = TrainingProgress(name, 0, total, console=Console(file=io.StringIO(), width=width, color_system=None))
    if row is not None:
        bar.update(step, row)
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(bar._progress.get_renderable())
    return out.getvalue().rstrip("\n")


@pytest.mark.parametrize("name", ["quickstart", "conditions_sweep_quick/wd1.0_seed3", "nanda_p113 x64 seeds"])
@pytest.mark.parametrize(("step", "total"), [(120, 1500), (4560, 30000), (99999, 100000), (0, 7)])
def test_the_line_fits_80_columns_with_whole_counts_metrics_and_times(name, step, total):
    text = line(name, step, total, 80, ROW)
    assert "\n" not in text and len(text) <= 80
    assert f"{step}/{total}" in text  # the counts, never "120/1…"
    assert "train 1.2e-05 100.0%" in text and "test    4.6  12.3%" in text
    assert re.search(r" \d\d:\d\d<(\d\d:\d\d|--:--)$", text)  # elapsed<remaining, never "0:00:…"
    cut = text.split("…")[0] if "…" in text else None  # only the name is ever cut, at its end
    assert text.startswith(f"{name} ") or (cut is not None and len(cut) >= 7 and name.startswith(cut))


def test_before_the_first_evaluation_and_in_a_wide_terminal():
    assert re.fullmatch(r"quickstart ━* +0/1500 \d\d:\d\d<--:--", line("quickstart", 0, 1500, 80))
    wide = line("quickstart", 120, 1500, 200, ROW)
    assert wide.startswith("quickstart ") and "120/1500" in wide and len(wide) < 200  # the bar stops at 40 columns


def test_a_narrow_terminal_drops_the_metrics_before_cutting_the_counts():
    text = line("quickstart", 120, 1500, 50, ROW)
    assert len(text) <= 50 and "120/1500" in text and "train" not in text


def test_clock():
    assert clock(None) == "--:--"
    assert clock(5.9) == "00:05"
    assert clock(61) == "01:01"
    assert clock(3600 + 62) == "1:01:02"
