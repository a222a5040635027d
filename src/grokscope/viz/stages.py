"""Figures of staged experiments (curriculum, sequential finetuning): a measure after each stage, per seed, with the
direct baseline beside the last stage."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go


def figures(rows: list[dict[str, Any]], title: str, value: str = "full_acc") -> dict[str, go.Figure]:
    figure = go.Figure()
    for seed in sorted({r["seed"] for r in rows}):
        mine = [r for r in rows if r["seed"] == seed]
        staged = [r for r in mine if r["stage"] != "direct"]
        figure.add_scatter(
            x=[r["stage"] for r in staged],
            y=[r[value] for r in staged],
            mode="lines+markers",
            name=f"seed {seed}",
            legendgroup=str(seed),
        )
        direct = [r for r in mine if r["stage"] == "direct"]
        figure.add_scatter(
            x=["direct"] * len(direct),
            y=[r[value] for r in direct],
            mode="markers",
            marker={"symbol": "diamond", "size": 12},
            name=f"seed {seed}, direct",
            legendgroup=str(seed),
            showlegend=False,
        )
    figure.update_layout(title=title, xaxis_title="stage", yaxis_title=value.replace("_", " "), yaxis_range=[0, 1.02])
    return {"stages": figure}
