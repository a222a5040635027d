"""Figures of gradient flow over training: gradient norm per component, each weight matrix's update ratio per step,
and how far and how aligned the whole model moved between analysed checkpoints.

Movement is divided by the training steps between the two checkpoints (``*_per_step``), so that a change of
checkpoint spacing (every 10 steps, then every 100) does not show as a jump.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.colors import qualitative

from grokscope.viz.common import COSINE_AXIS, LEGEND_BELOW, log_axis, right_axis, trace_values

# What figures() draws, in the order a report shows them.
FIGURES = ("gradient_movement", "update_ratios", "gradient_norms")
PALETTE = qualitative.D3
MOVEMENT_COLOR = "steelblue"
COSINE_COLOR = "crimson"


def _norms(rows: list[dict[str, Any]]) -> go.Figure:
    steps = [r["step"] for r in rows]
    figure = go.Figure()
    for i, component in enumerate(rows[-1]["grad_norm_by_component"]):
        figure.add_scatter(
            x=steps,
            y=[r["grad_norm_by_component"].get(component) for r in rows],
            name=component,
            line={"color": PALETTE[i % len(PALETTE)]},
        )
    figure.update_layout(
        title="Gradient norm of the training loss, per component",
        xaxis_title="step",
        yaxis={"title": "||grad||", **log_axis(trace_values(figure))},
    )
    return figure


def _update_ratios(later: list[dict[str, Any]]) -> go.Figure:
    """||W_t − W_prev|| / ||W_prev|| per training step of every weight matrix (biases left out: near zero norms make
    their ratios large and uninformative)."""
    figure = go.Figure()
    steps = [r["step"] for r in later]
    matrices = [name for name in later[-1]["update_ratio_per_step"] if name.rsplit(".", 1)[-1].startswith("W_")]
    for i, name in enumerate(matrices):
        figure.add_scatter(
            x=steps,
            y=[(r.get("update_ratio_per_step") or {}).get(name) for r in later],
            name=name,
            line={"color": PALETTE[i % len(PALETTE)]},
        )
    figure.update_layout(
        title="Update ratio ||W_t − W_prev|| / ||W_prev|| per training step, per weight matrix",
        xaxis_title="step",
        yaxis={"title": "update / weight per step", **log_axis(trace_values(figure))},
    )
    return figure


def _movement(later: list[dict[str, Any]]) -> go.Figure:
    """The whole model's update ratio per step (left, log) and the cosine between consecutive gradients (right)."""
    steps = [r["step"] for r in later]
    figure = go.Figure()
    figure.add_scatter(
        x=steps,
        y=[r["update_ratio_total_per_step"] for r in later],
        name="||W_t − W_prev|| / ||W_prev|| per step",
        line={"color": MOVEMENT_COLOR},
    )
    figure.add_scatter(
        x=steps,
        y=[r.get("grad_cosine_previous") for r in later],
        name="cos(grad_t, grad_prev)",
        yaxis="y2",
        line={"color": COSINE_COLOR},
    )
    figure.update_layout(
        title="Movement per step and gradient alignment between analysed checkpoints",
        xaxis_title="step",
        yaxis={
            "title": {"text": "update / weight per step", "font": {"color": MOVEMENT_COLOR}},
            "tickfont": {"color": MOVEMENT_COLOR},
            **log_axis(trace_values(figure)),
        },
        yaxis2=right_axis(COSINE_AXIS, "cosine", COSINE_COLOR),
        legend=LEGEND_BELOW,
    )
    return figure


def figures(rows: list[dict[str, Any]], metrics: list[dict[str, Any]]) -> dict[str, go.Figure]:
    """``gradient_norms``; with two or more checkpoints, ``gradient_movement`` and ``update_ratios`` (per step)."""
    if not rows:
        return {}
    out = {"gradient_norms": _norms(rows)}
    later = [r for r in rows if r.get("update_ratio_total_per_step") is not None]
    if later:
        out["gradient_movement"] = _movement(later)
        if later[-1].get("update_ratio_per_step"):
            out["update_ratios"] = _update_ratios(later)
    return out
