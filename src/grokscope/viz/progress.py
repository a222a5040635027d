"""Figures of the progress measures: restricted and excluded loss beside the training curves, Gini and weight norm."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from grokscope.viz.common import loss_trace

SPLIT_COLORS = {"train": "steelblue", "test": "darkorange", "all": "seagreen"}
MEASURE_DASHES = {"loss": "solid", "restricted_loss": "dot", "excluded_loss": "dash"}


def _splits(rows: list[dict[str, Any]]) -> list[str]:
    """Train and test where the results have them, else every input."""
    scored = rows[-1]["restricted_loss"]
    return [s for s in ("train", "test") if s in scored] or ["all"]


def _progress_measures(rows: list[dict[str, Any]], metrics: list[dict[str, Any]]) -> go.Figure:
    """Restricted and excluded loss (logit level) over training, with the train and test loss."""
    figure = go.Figure()
    steps = [r["step"] for r in rows]
    for split in _splits(rows):
        color = SPLIT_COLORS[split]
        trace = loss_trace(metrics, split, {"color": color, "dash": MEASURE_DASHES["loss"]})
        if trace is not None:
            figure.add_trace(trace)
        for measure in ("restricted_loss", "excluded_loss"):
            figure.add_scatter(
                x=steps,
                y=[r[measure][split] for r in rows],
                name=f"{split} {measure.replace('_', ' ')}",
                mode="lines+markers",
                line={"color": color, "dash": MEASURE_DASHES[measure]},
            )
    keys = ", ".join(map(str, rows[-1]["key_frequencies"])) or "none"
    figure.update_layout(
        title=f"Progress measures (key frequencies at the last checkpoint: {keys})",
        xaxis_title="step",
        yaxis={"title": "cross-entropy loss", "type": "log"},
    )
    return figure


def _gini_and_weight_norm(rows: list[dict[str, Any]]) -> go.Figure:
    """Gini coefficients of the W_E and W_L frequency norms (left axis) and the sum of squared weights (right)."""
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    steps = [r["step"] for r in rows]
    for key, name, color in (("gini_embed", "Gini of W_E", "steelblue"), ("gini_unembed", "Gini of W_L", "crimson")):
        figure.add_scatter(x=steps, y=[r[key] for r in rows], name=name, line={"color": color}, secondary_y=False)
    figure.add_scatter(
        x=steps,
        y=[r["weight_norm_sq"] for r in rows],
        name="sum of squared weights",
        line={"color": "gray", "dash": "dash"},
        secondary_y=True,
    )
    figure.update_layout(title="Sparsity in frequency (Gini) and total weight norm over training", xaxis_title="step")
    figure.update_yaxes(title_text="Gini coefficient", range=[0, 1], secondary_y=False)
    figure.update_yaxes(title_text="sum of squared weights", secondary_y=True)
    return figure


def figures(rows: list[dict[str, Any]], metrics: list[dict[str, Any]]) -> dict[str, go.Figure]:
    """``progress_measures`` and ``gini_and_weight_norm``, over the checkpoints in ``rows``."""
    if not rows:
        return {}
    return {
        "progress_measures": _progress_measures(rows, metrics),
        "gini_and_weight_norm": _gini_and_weight_norm(rows),
    }
