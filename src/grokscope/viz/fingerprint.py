"""Figures of quantile fingerprints over training: each quantile of the correct answer's log-probability vs step,
with the test accuracy on a right axis of its own."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.colors import sample_colorscale

from grokscope.viz.common import (
    ACCURACY_AXIS,
    ACCURACY_COLOR,
    LEGEND_BELOW,
    linear_axis,
    right_axis,
    test_accuracy_trace,
    trace_values,
)

# What figures() draws, in the order a report shows them.
FIGURES = ("fingerprint_quantiles",)
SCALE = "Viridis"  # low quantiles dark, high ones light: the order of the lines reads off their colour


def quantile_figure(steps: list[int], quantiles: list[float], table: list[list[float]], title: str) -> go.Figure:
    """One line per quantile level (rows of ``table`` are steps), coloured along the quantile scale, the median
    drawn thicker."""
    figure = go.Figure()
    colors = sample_colorscale(SCALE, [0.9 * j / max(len(quantiles) - 1, 1) for j in range(len(quantiles))])
    for j, level in enumerate(quantiles):
        median = abs(level - 0.5) < 1e-9
        figure.add_scatter(
            x=steps,
            y=[row[j] for row in table],
            name=f"q{level:.2f}" + (" (median)" if median else ""),
            line={"width": 3.5 if median else 1.2, "color": colors[j]},
        )
    figure.update_layout(
        title=title,
        xaxis_title="step",
        yaxis={"title": "log p(correct answer)", **linear_axis(trace_values(figure), include=(0.0,))},
        legend=LEGEND_BELOW,
    )
    return figure


def figures(rows: list[dict[str, Any]], metrics: list[dict[str, Any]]) -> dict[str, go.Figure]:
    steps = [r["step"] for r in rows]
    figure = quantile_figure(
        steps, rows[-1]["quantiles"], [r["log_prob"] for r in rows], "Fingerprint at each checkpoint: quantiles"
    )
    if metrics:
        trace = test_accuracy_trace(metrics)
        trace.update(yaxis="y2")
        figure.add_trace(trace)
        figure.update_layout(yaxis2=right_axis(ACCURACY_AXIS, "test accuracy", ACCURACY_COLOR))
    return {"fingerprint_quantiles": figure}
