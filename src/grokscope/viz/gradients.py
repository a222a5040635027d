"""Figures of gradient flow over training: gradient norm per component, and how far and how aligned each step moved."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go


def figures(rows: list[dict[str, Any]], metrics: list[dict[str, Any]]) -> dict[str, go.Figure]:
    steps = [r["step"] for r in rows]
    norms = go.Figure()
    for component in rows[-1]["grad_norm_by_component"]:
        norms.add_scatter(x=steps, y=[r["grad_norm_by_component"].get(component) for r in rows], name=component)
    norms.update_layout(
        title="Gradient norm of the training loss, per component",
        xaxis_title="step",
        yaxis_title="||grad||",
        yaxis_type="log",
    )
    movement = go.Figure()
    # Per training step, so that a change of checkpoint spacing does not show as a jump.
    later = [r for r in rows if r.get("update_ratio_total_per_step") is not None]
    movement.add_scatter(
        x=[r["step"] for r in later],
        y=[r["update_ratio_total_per_step"] for r in later],
        name="||W_t - W_prev|| / ||W_prev|| per step",
    )
    movement.add_scatter(
        x=[r["step"] for r in later],
        y=[r["grad_cosine_previous"] for r in later],
        name="cos(grad_t, grad_prev)",
        yaxis="y2",
    )
    movement.update_layout(
        title="Movement and gradient alignment between analysed checkpoints",
        xaxis_title="step",
        yaxis={"title": "update / weight per step", "type": "log"},
        yaxis2={"title": "cosine", "overlaying": "y", "side": "right", "range": [-1, 1]},
    )
    return {"gradient_norms": norms, "gradient_movement": movement}
