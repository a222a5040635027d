"""Figures of neuron frequency specialization over training."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from grokscope.viz.common import ACCURACY_AXIS, test_accuracy_trace

# What figures() draws, in the order a report shows them.
FIGURES = ("neuron_specialization", "neuron_frequencies")
FVE_COLOR = "steelblue"
CLUSTERED_COLOR = "crimson"


def _frequencies(rows: list[dict[str, Any]]) -> go.Figure:
    """Live neurons per dominant frequency (rows) at each checkpoint (columns)."""
    n_freq = len(rows[-1]["dominant_counts"])
    figure = go.Figure(
        go.Heatmap(
            z=[list(column) for column in zip(*(r["dominant_counts"] for r in rows), strict=True)],
            x=[r["step"] for r in rows],
            y=list(range(1, n_freq + 1)),
            colorscale="Viridis",
            colorbar={"title": "neurons"},
            hovertemplate="step %{x}, frequency %{y}: %{z} neurons<extra></extra>",
        )
    )
    figure.update_layout(
        title="Neurons per dominant frequency over training", xaxis_title="step", yaxis_title="frequency"
    )
    return figure


def _specialization(rows: list[dict[str, Any]], metrics: list[dict[str, Any]]) -> go.Figure:
    """Mean largest FVE and fraction of neurons clustered on one frequency, with test accuracy for context."""
    steps = [r["step"] for r in rows]
    threshold = rows[-1]["cluster_threshold"]
    figure = go.Figure()
    figure.add_scatter(
        x=steps,
        y=[r["mean_max_fve"] for r in rows],
        name="mean of each neuron's largest FVE",
        line={"color": FVE_COLOR},
    )
    figure.add_scatter(
        x=steps,
        y=[r["fraction_clustered"] for r in rows],
        name=f"fraction with FVE ≥ {threshold}",
        line={"color": CLUSTERED_COLOR},
    )
    if metrics:
        figure.add_trace(test_accuracy_trace(metrics))
    figure.update_layout(
        title="Neuron frequency specialization over training (live neurons)",
        xaxis_title="step",
        yaxis={"title": "fraction", **ACCURACY_AXIS},
    )
    return figure


def figures(rows: list[dict[str, Any]], metrics: list[dict[str, Any]]) -> dict[str, go.Figure]:
    """``neuron_frequencies`` and ``neuron_specialization``, both over training."""
    if not rows:
        return {}
    return {"neuron_frequencies": _frequencies(rows), "neuron_specialization": _specialization(rows, metrics)}
