"""Write plotly figures as HTML that works offline: plotly.js is written once beside them and loaded relatively.

Each figure is also written as ``<name>.json`` (plotly's figure JSON), so that a report can gather every figure of a
run or an experiment without knowing which module drew it.
"""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from grokscope.store import atomic_write, atomic_write_text

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
