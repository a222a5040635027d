"""Figures of quantile fingerprints over training: each quantile of the correct answer's log-probability vs step."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from grokscope.viz.common import test_accuracy_trace


def quantile_figure(steps: list[int], quantiles: list[float], table: list[list[float]], title: str) -> go.Figure:
    """One line per quantile level (rows of ``table`` are steps), the median drawn thicker."""
    figure = go.Figure()
    for j, level in enumerate(quantiles):
        figure.add_scatter(
            x=steps,
            y=[row[j] for row in table],
            name=f"q{level:.2f}",
            line={"width": 3 if abs(level - 0.5) < 1e-9 else 1},
        )
    figure.update_layout(title=title, xaxis_title="step", yaxis_title="log p(correct answer)")
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
        figure.update_layout(yaxis2={"title": "test accuracy", "overlaying": "y", "side": "right", "range": [0, 1]})
    return {"fingerprint_quantiles": figure}
