"""Write plotly figures as HTML that works offline: plotly.js is written once beside them and loaded relatively.

Each figure is also written as ``<name>.json`` (plotly's figure JSON), so that a report can gather every figure of a
run or an experiment without knowing which module drew it.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from grokscope.store import atomic_write, atomic_write_text
from grokscope.viz.phases import mark_phases

BUNDLE = "plotly.min.js"


def write_figures(figures: dict[str, go.Figure], folder: Path) -> list[Path]:
    """``folder/<name>.html`` for each figure, and ``folder/plotly.min.js`` (written atomically, mended if damaged)."""
    folder.mkdir(parents=True, exist_ok=True)
    bundle, script = folder / BUNDLE, get_plotlyjs()
    # plotly would write its bundle only when absent and not atomically, so a crash could leave it truncated.
    if not bundle.is_file() or bundle.stat().st_size != len(script.encode()):
        atomic_write_text(bundle, script)
    written = []
    for stem, figure in figures.items():
        path = folder / f"{stem}.html"
        atomic_write(path, lambda tmp, fig=figure: fig.write_html(tmp, include_plotlyjs="directory", full_html=True))
        atomic_write_text(folder / f"{stem}.json", figure.to_json())
        written += [path, folder / f"{stem}.json"]
    return written


def analysis_figures(
    name: str, rows: list[dict[str, Any]], metrics: list[dict[str, Any]], phases: dict[str, Any] | None = None
) -> dict[str, go.Figure]:
    """The figures of one analysis's rows (``grokscope.viz.<name>.figures``), phases marked on those over steps."""
    try:
        module = importlib.import_module(f"grokscope.viz.{name}")
    except ModuleNotFoundError:
        return {}
    return {stem: mark_phases(figure, phases) for stem, figure in module.figures(rows, metrics).items()}


def write_analysis_figures(
    rows: dict[str, list[dict[str, Any]]],
    metrics: list[dict[str, Any]],
    folder: Path,
    phases: dict[str, Any] | None = None,
) -> list[Path]:
    """Every analysis's figures into ``folder`` (offline HTML and JSON)."""
    written = []
    for name, analysis_rows in rows.items():
        if analysis_rows:
            written += write_figures(analysis_figures(name, analysis_rows, metrics, phases), folder)
    return written
