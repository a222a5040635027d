"""Phase bands and the chance loss on every figure drawn over training steps.

A figure is over training when its x axis is titled ``step``; a loss axis (y title containing ``loss``) also gets
the chance loss ln p, the cross-entropy of a uniform guess over the p answers.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

BANDS = (
    (None, "memorization_end", "memorization", "rgba(70, 130, 180, 0.08)"),
    ("memorization_end", "circuit_formation_end", "circuit formation", "rgba(255, 165, 0, 0.10)"),
    ("circuit_formation_end", "cleanup_end", "cleanup", "rgba(46, 139, 87, 0.10)"),
)


def _is_over_steps(figure: go.Figure) -> bool:
    title = figure.layout.xaxis.title.text
    return bool(title) and title.strip().lower() == "step"


def mark_phases(figure: go.Figure, phases: dict[str, Any] | None) -> go.Figure:
    """Shade the phases (from ``detect_phases``) and draw ln p on loss axes; figures not over steps are unchanged."""
    if not phases or not _is_over_steps(figure):
        return figure
    for start_key, end_key, label, color in BANDS:
        end = phases.get(end_key)
        if end is None:
            continue
        start = phases.get(start_key) if start_key else None
        x0 = start if start is not None else _first_step(figure)
        if x0 is None or end <= x0:
            continue
        figure.add_vrect(
            x0=x0,
            x1=end,
            fillcolor=color,
            line_width=0,
            layer="below",
            annotation_text=label,
            annotation_position="top left",
            annotation_font_size=10,
        )
    title = (figure.layout.yaxis.title.text or "").lower()
    if "loss" in title and phases.get("chance_loss") is not None:
        figure.add_hline(
            y=phases["chance_loss"],
            line_dash="dot",
            line_color="gray",
            annotation_text="chance ln p",
            annotation_position="bottom right",
        )
    return figure


def _first_step(figure: go.Figure) -> float | None:
    xs = [x for trace in figure.data for x in (getattr(trace, "x", None) or ()) if isinstance(x, int | float)]
    return min(xs) if xs else None
