"""Phase bands and the chance loss on every figure drawn over training steps.

A panel is over training when its x axis (or the x axis it shares, in a stack of panels) is titled ``step``
(``step (…)`` too); every such panel gets the phases of ``detect_phases`` (Nanda et al. 2023, section 5.2) as shaded
bands, labelled once above the top panel, and every loss axis of such a panel (y title containing ``loss``, a right
axis too) gets the chance loss ln p, the cross-entropy of a uniform guess over the p answers. What this module drew
is named :data:`MARK`, so marking a figure again (a report marks every figure it gathers) replaces the marks
instead of stacking them.
"""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go

BANDS = (
    (None, "memorization_end", "memorization", "rgba(70, 130, 180, 0.10)"),
    ("memorization_end", "circuit_formation_end", "circuit formation", "rgba(255, 165, 0, 0.13)"),
    ("circuit_formation_end", "cleanup_end", "cleanup", "rgba(46, 139, 87, 0.12)"),
)
MARK = "grokscope-phases"
CHANCE_COLOR = "dimgray"
LABEL_ROW = 13  # pixels between the two rows of phase labels, so that labels of narrow bands do not overlap


def _axis_name(axis_id: str) -> str:
    """``x`` -> ``xaxis``, ``y2`` -> ``yaxis2``."""
    return f"{axis_id[0]}axis{axis_id[1:]}"


def _title(figure: go.Figure, axis_id: str) -> str:
    axis = figure.layout[_axis_name(axis_id)]
    return ((axis.title.text if axis is not None and axis.title is not None else None) or "").strip().lower()


def _panels(figure: go.Figure) -> list[tuple[str, str]]:
    """The (x axis, primary y axis) of every panel drawn over steps, top panel first."""
    pairs = list(dict.fromkeys((t.xaxis or "x", t.yaxis or "y") for t in figure.data if hasattr(t, "xaxis")))
    over: list[tuple[str, str]] = []
    for x_id, y_id in pairs:
        y_axis = figure.layout[_axis_name(y_id)]
        primary = (y_axis.overlaying if y_axis is not None else None) or y_id
        if (x_id, primary) not in over and _over_steps(figure, x_id):
            over.append((x_id, primary))

    def top(pair: tuple[str, str]) -> float:
        domain = figure.layout[_axis_name(pair[1])].domain
        return -(domain[1] if domain else 1.0)

    return sorted(over, key=top)


def _over_steps(figure: go.Figure, x_id: str) -> bool:
    """Whether the x axis ``x_id``, or the axis it is matched to, or any axis matched to it, is titled step."""
    group = {x_id}
    for name in figure.layout:
        if name.startswith("xaxis"):
            other = "x" + name[len("xaxis") :]
            matches = figure.layout[name].matches
            if matches == x_id or other == figure.layout[_axis_name(x_id)].matches:
                group |= {other, matches or other}
    return any(_title(figure, axis).split(" (")[0] == "step" for axis in group)


def unmark(figure: go.Figure) -> go.Figure:
    """``figure`` without the shapes and labels :func:`mark_phases` drew."""
    figure.layout.shapes = [s for s in figure.layout.shapes if s.name != MARK]
    figure.layout.annotations = [a for a in figure.layout.annotations if a.name != MARK]
    return figure


def mark_phases(figure: go.Figure, phases: dict[str, Any] | None) -> go.Figure:
    """Shade the phases (from ``detect_phases``) on every panel over steps and draw ln p on their loss axes; a figure
    with no panel over steps is unchanged, a figure marked before has its old marks replaced."""
    panels = _panels(figure) if phases else []
    if not panels:
        return figure
    unmark(figure)
    bands = []
    for start_key, end_key, label, color in BANDS:
        end = phases.get(end_key)
        if end is None:
            continue
        start = phases.get(start_key) if start_key else None
        x0 = start if start is not None else _first_step(figure)
        if x0 is None or end <= x0:
            continue
        bands.append((x0, end, label, color))
    for x_id, y_id in panels:
        if _has_heatmap(figure, x_id, y_id):
            # A heatmap would hide a band drawn below it: its boundaries as lines over it instead.
            first = _first_step(figure)
            for boundary in sorted({x for x0, x1, _, _ in bands for x in (x0, x1) if first is None or x > first}):
                figure.add_shape(
                    type="line",
                    xref=x_id,
                    yref=f"{y_id} domain",
                    x0=boundary,
                    x1=boundary,
                    y0=0,
                    y1=1,
                    line={"color": "white", "dash": "dash", "width": 1.5},
                    layer="above",
                    name=MARK,
                )
            continue
        for x0, x1, _, color in bands:
            figure.add_shape(
                type="rect",
                xref=x_id,
                yref=f"{y_id} domain",
                x0=x0,
                x1=x1,
                y0=0,
                y1=1,
                fillcolor=color,
                line_width=0,
                layer="below",
                name=MARK,
            )
    x_top, y_top = panels[0]
    for i, (x0, x1, label, _) in enumerate(bands):
        # Above the top panel, alternately one row higher: a narrow band's label may be wider than the band.
        figure.add_annotation(
            x=(x0 + x1) / 2,
            xref=x_top,
            y=1,
            yref=f"{y_top} domain",
            yanchor="bottom",
            yshift=2 + LABEL_ROW * (i % 2),
            text=label,
            showarrow=False,
            font={"size": 10, "color": "#555"},
            name=MARK,
        )
    chance = phases.get("chance_loss")
    if chance is not None:
        for x_id, y_id in panels:
            for axis_id in _loss_axes(figure, y_id):
                _chance_line(figure, x_id, axis_id, chance)
    return figure


def _has_heatmap(figure: go.Figure, x_id: str, y_id: str) -> bool:
    return any(t.type == "heatmap" and (t.xaxis or "x", t.yaxis or "y") == (x_id, y_id) for t in figure.data)


def _loss_axes(figure: go.Figure, primary: str) -> list[str]:
    """The y axes of the panel whose primary axis is ``primary`` (itself and those laid over it) titled as a loss."""
    ids = [primary] + [
        "y" + name[len("yaxis") :]
        for name in figure.layout
        if name.startswith("yaxis") and figure.layout[name].overlaying == primary
    ]
    return [axis for axis in ids if "loss" in _title(figure, axis)]


def _chance_line(figure: go.Figure, x_id: str, y_id: str, chance: float) -> None:
    axis = figure.layout[_axis_name(y_id)]
    at = math.log10(chance) if axis.type == "log" else chance
    if axis.autorange is False and axis.range is not None and not axis.range[0] < at < axis.range[1]:
        # An axis fitted to the data alone would hide the line: widen it (its ticks are set by step, not count).
        lo, hi = axis.range
        room = 0.05 * (max(hi, at) - min(lo, at))
        axis.range = [min(lo, at - room), max(hi, at + room)]
    figure.add_shape(
        type="line",
        xref=f"{x_id} domain",
        x0=0,
        x1=1,
        yref=y_id,
        y0=chance,
        y1=chance,
        line={"color": CHANCE_COLOR, "dash": "dot", "width": 1.5},
        name=MARK,
    )
    # An annotation's position on a log axis is in decades (a shape's is in data units).
    figure.add_annotation(
        x=1,
        xref=f"{x_id} domain",
        xanchor="right",
        y=at,
        yref=y_id,
        yanchor="top",  # below the line: late in a run the losses lie below chance, above it lie the curves
        text=f"chance ln p = {chance:.2f}",
        showarrow=False,
        font={"size": 10, "color": CHANCE_COLOR},
        name=MARK,
    )


def _first_step(figure: go.Figure) -> float | None:
    xs = [x for trace in figure.data for x in (getattr(trace, "x", None) or ()) if isinstance(x, int | float)]
    return min(xs) if xs else None
