"""Figures of ablations: test-accuracy change per ablation, and key vs control frequencies ablated over training."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

_SPACES = {"embed_frequencies": "embedding", "neuron_frequencies": "neurons"}


def _bars(row: dict[str, Any]) -> go.Figure:
    figure = go.Figure()
    components = dict.fromkeys(a["component"] for a in row["ablations"])
    for component in components:
        chosen = [a for a in row["ablations"] if a["component"] == component]
        figure.add_bar(
            x=[a["label"] for a in chosen],
            y=[a["delta_test_acc"] for a in chosen],
            name=component,
            hovertemplate="%{x}<br>test accuracy change: %{y:.3f}<extra></extra>",
        )
    clean = row["clean"]["test_acc"]
    figure.update_layout(
        title=f"Change in test accuracy per ablation (clean {clean:.3f}), step {row['step']}",
        xaxis={"title": "ablation", "tickangle": -45},
        yaxis_title="Δ test accuracy",
    )
    return figure


def _key_vs_other(rows: list[dict[str, Any]]) -> go.Figure:
    figure = go.Figure()
    figure.add_scatter(
        x=[r["step"] for r in rows],
        y=[r["clean"]["test_acc"] for r in rows],
        name="clean",
        line={"color": "black"},
    )
    for component, space in _SPACES.items():
        for role, dash, what in (("key", "solid", "key"), ("control", "dash", "other")):
            points = [
                (r["step"], a["test_acc"])
                for r in rows
                for a in r["ablations"]
                if a["component"] == component and a["role"] == role
            ]
            if points:
                steps, accuracy = zip(*points, strict=True)
                figure.add_scatter(
                    x=steps, y=accuracy, name=f"{what} frequencies ablated ({space})", line={"dash": dash}
                )
    figure.update_layout(
        title="Test accuracy with the key frequencies vs as many other frequencies ablated",
        xaxis_title="step",
        yaxis={"title": "test accuracy", "range": [0, 1.02]},
    )
    return figure


def figures(rows: list[dict[str, Any]], metrics: list[dict[str, Any]]) -> dict[str, go.Figure]:
    """``ablation_bars`` for the last checkpoint; ``ablation_key_vs_other`` when key frequencies were ablated."""
    if not rows:
        return {}
    out = {"ablation_bars": _bars(rows[-1])}
    if any(a["role"] for r in rows for a in r["ablations"]):
        out["ablation_key_vs_other"] = _key_vs_other(rows)
    return out
