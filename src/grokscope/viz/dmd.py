"""Figures of the DMD of recorded fingerprints: the spectrum against the unit circle, spectra of several runs on one
circle (a colour per condition), sliding-window scores, and the spectrum as PNG and PDF beside the HTML.

Static images go through plotly's export (kaleido), which renders in a Chromium-based browser: the system's
(``BROWSER_PATH``, then ``chromium``, ``chromium-browser`` or ``google-chrome`` on ``PATH``, then
``/usr/bin/chromium``). Without one, :func:`write_images` writes nothing and says so in one line.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from grokscope.store import atomic_write_bytes
from grokscope.viz.common import (
    ACCURACY_AXIS,
    ACCURACY_COLOR,
    LEGEND_BELOW,
    linear_axis,
    log_axis,
    right_axis,
    test_accuracy_trace,
    trace_values,
)
from grokscope.viz.phases import mark_phases

# What figures() draws, in the order a report shows them.
FIGURES = ("dmd_windows", "dmd_spectrum")
N_MODULI = 3  # leading eigenvalue moduli drawn per window; more lines would hide the spectral radius
METHOD_NAMES = {"rrr": "reduced-rank regression", "projected": "POD-projected DMD"}
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
SYSTEM_CHROMIUM = "/usr/bin/chromium"
IMAGE_FORMATS = ("png", "pdf")
MODULUS_COLORS = ("#1f77b4", "#2ca02c", "#9467bd")
RESIDUAL_COLOR = "#d62728"
IMAGE_SIZE = {"width": 760, "height": 640}  # the spectrum is square in data units; room for the legend and title


def _unit_circle(figure: go.Figure) -> None:
    angle = np.linspace(0, 2 * np.pi, 361)
    figure.add_scatter(
        x=np.cos(angle), y=np.sin(angle), mode="lines", name="|λ| = 1", line={"color": "gray", "dash": "dash"}
    )


def _spectrum(result: dict[str, Any]) -> go.Figure:
    """Eigenvalues in the complex plane with the unit circle: outside it a mode grows, inside it decays."""
    figure = go.Figure()
    _unit_circle(figure)
    eigenvalues = result["eigenvalues"]
    figure.add_scatter(
        x=eigenvalues["re"],
        y=eigenvalues["im"],
        mode="markers",
        name="eigenvalues",
        marker={"size": 9, "color": result["moduli"], "colorscale": "Viridis", "colorbar": {"title": "|λ|"}},
        customdata=result["moduli"],
        hovertemplate="λ = %{x:.4f} %{y:+.4f}i<br>|λ| = %{customdata:.4f}<extra></extra>",
    )
    figure.update_layout(
        title=(
            f"DMD spectrum ({METHOD_NAMES.get(result.get('method', 'rrr'), result.get('method'))}, rank "
            f"{result['rank']}, {result['n_delays']} delays, one-step residual {result['reconstruction_error']:.3g})"
        ),
        xaxis_title="Re λ",
        yaxis={"title": "Im λ", "scaleanchor": "x", "scaleratio": 1},
        legend={"orientation": "h", "x": 0, "y": -0.15},  # below the plot: the colour bar holds the right side
    )
    return figure


def _windows(windowed: dict[str, Any], metrics: list[dict[str, Any]]) -> go.Figure:
    """Leading eigenvalue moduli (top) and the one-step residual score (bottom) per window, test accuracy beside on a
    right axis of each panel (0 to 1, its own ticks)."""
    figure = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        specs=[[{"secondary_y": True}], [{"secondary_y": True}]],
        vertical_spacing=0.1,
    )
    steps = windowed["step"]
    moduli = windowed["moduli"]
    for k in range(min(N_MODULI, len(moduli[0]) if moduli else 0)):
        figure.add_scatter(
            x=steps,
            y=[row[k] for row in moduli],
            name="spectral radius" if k == 0 else f"|λ_{k + 1}|",
            mode="lines+markers",
            line={"color": MODULUS_COLORS[k % len(MODULUS_COLORS)]},
            row=1,
            col=1,
        )
    figure.add_hline(y=1.0, line={"color": "gray", "dash": "dash"}, row=1, col=1)
    figure.add_scatter(
        x=steps,
        y=windowed["residual"],
        name="one-step residual (score)",
        mode="lines+markers",
        line={"color": RESIDUAL_COLOR},
        row=2,
        col=1,
    )
    if metrics:
        for row in (1, 2):
            trace = test_accuracy_trace(metrics)
            trace.update(showlegend=row == 1, legendgroup="test_acc")
            figure.add_trace(trace, row=row, col=1, secondary_y=True)
    figure.update_layout(
        title=f"Windowed DMD: {windowed['window']} snapshots every {windowed['stride']}, plotted at each window's "
        "last step",
        yaxis={"title": "|λ|", **linear_axis(trace_values(figure, "y"), include=(1.0,))},
        yaxis3={"title": "||A Y0 − Y1|| / ||Y1||", **log_axis(trace_values(figure, "y3"))},
        legend=LEGEND_BELOW,
        height=640,
    )
    if metrics:
        figure.update_layout(
            yaxis2=right_axis(ACCURACY_AXIS, "test accuracy", ACCURACY_COLOR, overlaying="y"),
            yaxis4=right_axis(ACCURACY_AXIS, "test accuracy", ACCURACY_COLOR, overlaying="y3"),
        )
    figure.update_xaxes(title_text="step", row=2, col=1)
    return figure


def figures(
    result: dict[str, Any],
    windowed: dict[str, Any] | None,
    metrics: list[dict[str, Any]],
    phases: dict[str, Any] | None = None,
) -> dict[str, go.Figure]:
    """``dmd_spectrum`` from ``DMDResult.to_dict()``, and ``dmd_windows`` from ``WindowedDMD.to_dict()`` when given;
    ``metrics`` are the run's logged rows (``step``, ``test_acc``), ``phases`` the run's phases (``progress.summary``)
    to shade on the windows' figure."""
    out = {"dmd_spectrum": _spectrum(result)}
    if windowed is not None and windowed["step"]:
        out["dmd_windows"] = mark_phases(_windows(windowed, metrics), phases)
    return out


def compared_spectra(spectra: list[dict[str, Any]], title: str = "DMD spectra by condition") -> go.Figure:
    """Eigenvalues of several fits on one unit-circle plot, one colour per condition (its runs share it, a marker
    symbol per seed). Each entry: ``condition``, ``name`` (the run), ``seed`` and ``eigenvalues`` (``{"re", "im"}``,
    as ``DMDResult.to_dict()`` stores them)."""
    figure = go.Figure()
    _unit_circle(figure)
    conditions = list(dict.fromkeys(entry["condition"] for entry in spectra))
    colours = {c: qualitative.Plotly[i % len(qualitative.Plotly)] for i, c in enumerate(conditions)}
    seeds = list(dict.fromkeys(entry.get("seed") for entry in spectra))
    symbols = ("circle", "diamond", "square", "triangle-up", "x", "star", "cross", "pentagon")
    shown: set[str] = set()
    for entry in spectra:
        condition = entry["condition"]
        pairs = [
            (re, im)
            for re, im in zip(entry["eigenvalues"]["re"], entry["eigenvalues"]["im"], strict=True)
            if re is not None and im is not None
        ]
        figure.add_scatter(
            x=[p[0] for p in pairs],
            y=[p[1] for p in pairs],
            mode="markers",
            name=condition or "base",
            legendgroup=condition,
            showlegend=condition not in shown,
            marker={
                "size": 9,
                "color": colours[condition],
                "symbol": symbols[seeds.index(entry.get("seed")) % len(symbols)],
                "line": {"width": 0.5, "color": "white"},
            },
            hovertext=entry.get("name"),
            hovertemplate="%{hovertext}<br>λ = %{x:.4f} %{y:+.4f}i<extra></extra>",
        )
        shown.add(condition)
    figure.update_layout(
        title=title,
        xaxis_title="Re λ",
        yaxis={"title": "Im λ", "scaleanchor": "x", "scaleratio": 1},
        legend={"title": {"text": "condition (symbol: seed)"}},
    )
    return figure


def find_browser() -> str | None:
    """The Chromium-based browser plotly's static export will use, or None: ``BROWSER_PATH`` when it names an
    executable, else the first of :data:`BROWSERS` on ``PATH``, else ``/usr/bin/chromium`` when present."""
    given = os.environ.get("BROWSER_PATH")
    if given and os.access(given, os.X_OK):
        return given
    for name in BROWSERS:
        if found := shutil.which(name):
            return found
    return SYSTEM_CHROMIUM if os.access(SYSTEM_CHROMIUM, os.X_OK) else None


async def _render(figure: go.Figure, formats: tuple[str, ...], browser: str) -> list[bytes]:
    import kaleido

    # One browser for every format: starting Chromium is most of the cost.
    async with kaleido.Kaleido(path=browser) as k:
        return [await k.calc_fig(figure, opts={"format": f, **IMAGE_SIZE}) for f in formats]


def write_images(
    figure: go.Figure, folder: Path, stem: str, formats: tuple[str, ...] = IMAGE_FORMATS
) -> tuple[list[Path], str | None]:
    """``folder/<stem>.png`` and ``.pdf`` (atomic writes), and None; or no files and one line saying why not (no
    browser, kaleido missing, the export failed), so that the HTML is still the result. Images of an earlier figure
    of that name are then removed: an image beside the HTML always shows the same figure."""
    why_not = None
    browser = find_browser()
    if browser is None:
        why_not = (
            f"{stem}: no PNG/PDF written: plotly's static export needs Chromium "
            f"(none at {SYSTEM_CHROMIUM}, on PATH or in BROWSER_PATH; install it, e.g. apt install chromium)"
        )
    else:
        try:
            import kaleido  # noqa: F401 - a dependency; missing only in a broken environment
        except ImportError:
            why_not = (
                f"{stem}: no PNG/PDF written: plotly's static export needs the kaleido package (pip install kaleido)"
            )
    if why_not is None:
        try:
            # In a thread of its own, with its own event loop: a notebook's running loop cannot run another.
            with ThreadPoolExecutor(1) as pool:
                images = pool.submit(asyncio.run, _render(figure, formats, browser)).result()
        except Exception as err:  # kaleido and the browser fail in many ways; none of them must lose the HTML
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            why_not = f"{stem}: no PNG/PDF written: static export with {browser} failed ({first})"
    if why_not is not None:
        for fmt in formats:
            with suppress(OSError):
                (folder / f"{stem}.{fmt}").unlink(missing_ok=True)
        return [], why_not
    written = []
    for fmt, data in zip(formats, images, strict=True):
        path = folder / f"{stem}.{fmt}"
        atomic_write_bytes(path, data)
        written.append(path)
    return written, None
