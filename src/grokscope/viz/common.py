"""Pieces several figures share: the test-accuracy and loss traces, and axes with explicit ranges and ticks.

plotly's automatic ticks fail in two ways on the figures of a grokking run: a second y axis laid over the first gets
its ticks synchronised to the first axis's grid (plotly.js 3+ ``tickmode: "sync"``), which on a log or differently
scaled first axis gives unevenly spaced, meaningless labels (−0.857, −0.727 …); and a log axis gets unlabelled
minor digits (2, 3, … 9) between its decades. The axes here say what they draw: a range with a little room around the
data (so that a line at 1.0 is not cut in half by the plot's edge) and evenly spaced ticks, every decade (or every
few decades) on a log axis.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import plotly.graph_objects as go

ACCURACY_COLOR = "black"
PAD = 0.05  # room around the data, as a fraction of the axis's span (plotly's own autorange pads about as much)
LOG_ROOM = 0.02  # decades
# Accuracy in [0, 1], with room for a line lying on 0 or 1, ticks every 0.2.
ACCURACY_AXIS: dict[str, Any] = {
    "range": [-PAD, 1 + PAD],
    "autorange": False,
    "tickmode": "linear",
    "tick0": 0.0,
    "dtick": 0.2,
}
# Cosines in [-1, 1], ticks every 0.5.
COSINE_AXIS: dict[str, Any] = {
    "range": [-1 - 2 * PAD, 1 + 2 * PAD],
    "autorange": False,
    "tickmode": "linear",
    "tick0": 0.0,
    "dtick": 0.5,
}
# Below the plot, where it meets neither a right axis nor the phase labels above the plot.
LEGEND_BELOW: dict[str, Any] = {"orientation": "h", "x": 0.0, "xanchor": "left", "y": -0.2, "yanchor": "top"}


def finite(values: Iterable[Any]) -> list[float]:
    """The finite numbers among ``values`` (None, NaN, inf and non-numbers dropped; nested lists flattened)."""
    out: list[float] = []
    for value in values:
        if isinstance(value, list | tuple):
            out += finite(value)
        elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out.append(float(value))
    return out


def nice_step(span: float, ticks: int = 5) -> float:
    """A step of 1, 2, 2.5 or 5 times a power of ten that cuts ``span`` into about ``ticks`` intervals."""
    raw = span / max(ticks, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * power >= raw * (1 - 1e-9))


def linear_axis(values: Iterable[Any], include: Iterable[float] = (), ticks: int = 5) -> dict[str, Any]:
    """A linear axis around ``values`` (and the points in ``include``, e.g. 0), padded, ticks every nice step."""
    data = finite(values) + finite(include)
    lo, hi = (min(data), max(data)) if data else (0.0, 1.0)
    if hi - lo <= 1e-12 * max(abs(lo), abs(hi), 1e-300):  # one value: a span around it
        half = abs(lo) * 0.1 if lo else 1.0
        lo, hi = lo - half, hi + half
    span = hi - lo
    return {
        "type": "linear",
        "range": [lo - PAD * span, hi + PAD * span],
        "autorange": False,
        "tickmode": "linear",
        "tick0": 0.0,
        "dtick": nice_step(span, ticks),
    }


def log_axis(values: Iterable[Any], ticks: int = 6) -> dict[str, Any]:
    """A log axis around the positive ``values`` from one whole decade to another, ticks on whole decades (every
    one, or every few when the data span many), labelled as powers of ten: evenly spaced labels at every scale,
    where plotly's own would add unevenly spaced minor digits (2, 3, … 9) inside a decade."""
    data = [v for v in finite(values) if v > 0]
    if not data:
        return {"type": "log"}
    lo, hi = math.log10(min(data)), math.log10(max(data))
    # A hair of room, so that a value on a decade does not lie on the plot's edge.
    bottom, top = math.floor(lo - LOG_ROOM), math.ceil(hi + LOG_ROOM)
    return {
        "type": "log",
        "range": [bottom, top],  # log axes take their range in decades
        "autorange": False,
        "tickmode": "linear",
        "tick0": 0.0,
        "dtick": max(1, math.ceil((top - bottom) / ticks)),
        "exponentformat": "power",
        "showexponent": "all",
    }


def value_axis(values: Iterable[Any], log: bool = False, include: Iterable[float] = ()) -> dict[str, Any]:
    """:func:`log_axis` or :func:`linear_axis` of ``values``."""
    return log_axis(values) if log else linear_axis(values, include)


def right_axis(axis: dict[str, Any], title: str, color: str, overlaying: str = "y") -> dict[str, Any]:
    """A second y axis on the right of the plot, over ``overlaying``, with its own ticks (``axis``: a range and tick
    settings from this module) and its title and labels in the colour of what it measures. It draws no grid: the
    grid is the left axis's, and two grids that do not line up would be read as one."""
    return {
        **axis,
        "title": {"text": title, "font": {"color": color}},
        "tickfont": {"color": color},
        "overlaying": overlaying,
        "side": "right",
        "showgrid": False,
        "zeroline": False,
    }


def level_line(
    figure: go.Figure, value: float, text: str, line: dict[str, Any], log: bool, xref: str = "x", yref: str = "y"
) -> None:
    """A horizontal line at ``value`` across the panel of ``xref``/``yref``, labelled at its right end below it.
    (plotly's ``add_hline`` puts its label at ``value`` in the axis's own units, which on a log axis is decades:
    the label of a line at 4.08 landed at 12 000.)"""
    figure.add_shape(
        type="line", xref=f"{xref} domain", x0=0, x1=1, yref=yref, y0=value, y1=value, line=line, layer="above"
    )
    figure.add_annotation(
        x=1,
        xref=f"{xref} domain",
        xanchor="right",
        y=math.log10(value) if log else value,
        yref=yref,
        yanchor="top",
        text=text,
        showarrow=False,
        font={"size": 10, "color": line.get("color", "black")},
    )


def trace_values(figure: go.Figure, axis: str = "y") -> list[float]:
    """Every finite y value (and error bar end) of the traces of ``figure`` drawn on the y axis ``axis``."""
    values: list[float] = []
    for trace in figure.data:
        if (getattr(trace, "yaxis", None) or "y") != axis or getattr(trace, "y", None) is None:
            continue
        ys = list(trace.y)
        values += finite(ys)
        error = getattr(trace, "error_y", None)
        if error is not None and error.array is not None and error.visible is not False:
            values += finite(y + e for y, e in zip(ys, error.array, strict=False) if y is not None and e is not None)
            values += finite(y - e for y, e in zip(ys, error.array, strict=False) if y is not None and e is not None)
    return values


def test_accuracy_trace(metrics: list[dict[str, Any]]) -> go.Scatter:
    """The run's test accuracy over training, drawn dotted so an analysis curve can be read against it."""
    return go.Scatter(
        x=[m["step"] for m in metrics],
        y=[m.get("test_acc") for m in metrics],
        name="test accuracy",
        line={"color": ACCURACY_COLOR, "dash": "dot"},
    )


def loss_trace(metrics: list[dict[str, Any]], split: str, line: dict[str, Any]) -> go.Scatter | None:
    """The run's ``split`` loss over training (the rows where it was logged), or None when it never was."""
    logged = [m for m in metrics if m.get(f"{split}_loss") is not None]
    if not logged:
        return None
    return go.Scatter(
        x=[m["step"] for m in logged], y=[m[f"{split}_loss"] for m in logged], name=f"{split} loss", line=line
    )
