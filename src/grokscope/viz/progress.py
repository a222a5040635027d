"""Figures of the progress measures over training: restricted and excluded loss beside the training curves, the
logits' cos(w_k(a+b-c)) coefficients and the one-frequency excluded losses per key frequency, Gini and weight norm."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.colors import qualitative

from grokscope.viz.common import (
    ACCURACY_AXIS,
    LEGEND_BELOW,
    linear_axis,
    log_axis,
    loss_trace,
    right_axis,
    trace_values,
    value_axis,
)

# What figures() draws, in the order a report shows them.
FIGURES = ("progress_measures", "single_frequency_excluded", "logit_cos_coefficients", "gini_and_weight_norm")
SPLIT_COLORS = {"train": "steelblue", "test": "darkorange", "all": "seagreen"}
KEY_COLORS = qualitative.D3
GINI_COLORS = {"gini_embed": "steelblue", "gini_unembed": "crimson"}
WEIGHT_COLOR = "dimgray"
# Each measure on the split the paper headlines it on, and where present the other ones.
MEASURES = (
    ("restricted", "all", "seagreen", "dot"),
    ("excluded", "train", "crimson", "dash"),
    ("neuron_restricted", "test", "mediumpurple", "dot"),
    ("neuron_excluded", "train", "saddlebrown", "dash"),
)


def _score(row: dict[str, Any], measure: str, split: str) -> float | None:
    score = row.get(measure)
    if not score:
        return None
    return score["loss"].get(split, score["loss"].get("all"))


def _progress_measures(rows: list[dict[str, Any]], metrics: list[dict[str, Any]]) -> go.Figure:
    """Restricted loss (all inputs) and excluded loss (train) over training, with the train and test loss."""
    figure = go.Figure()
    steps = [r["step"] for r in rows]
    for split in ("train", "test"):
        trace = loss_trace(metrics, split, {"color": SPLIT_COLORS[split]})
        if trace is not None:
            figure.add_trace(trace)
    for measure, split, color, dash in MEASURES:
        values = [_score(r, measure, split) for r in rows]
        if all(v is None for v in values):
            continue
        shown = split if split in rows[-1]["full"]["loss"] else "all"
        figure.add_scatter(
            x=steps,
            y=values,
            name=f"{shown} {measure.replace('_', ' ')} loss",
            mode="lines+markers",
            line={"color": color, "dash": dash},
        )
    keys = ", ".join(map(str, rows[-1]["key_frequencies"])) or "none"
    reference = rows[-1].get("key_reference", "")
    figure.update_layout(
        title=f"Progress measures (Nanda et al. 2023), key frequencies {keys} ({reference})",
        xaxis_title="step",
        yaxis={"title": "cross-entropy loss", **log_axis(trace_values(figure))},
    )
    return figure


def _per_key_frequency(rows: list[dict[str, Any]], value: Any, title: str, y_title: str, log: bool) -> go.Figure:
    figure = go.Figure()
    steps = [r["step"] for r in rows]
    for i, k in enumerate(rows[-1]["key_frequencies"]):
        figure.add_scatter(
            x=steps,
            y=[value(r, k) for r in rows],
            name=f"k = {k}",
            mode="lines",
            line={"color": KEY_COLORS[i % len(KEY_COLORS)]},
        )
    figure.update_layout(
        title=title, xaxis_title="step", yaxis={"title": y_title, **value_axis(trace_values(figure), log=log)}
    )
    return figure


def _single_excluded(row: dict[str, Any], k: int) -> float | None:
    sweep = row.get("single_excluded")
    if not sweep:
        return None
    losses = sweep["loss"].get("train", sweep["loss"]["all"])
    return losses[k - 1]


def _gini_and_weight_norm(rows: list[dict[str, Any]]) -> go.Figure:
    """Gini coefficients of the W_E and W_L frequency norms (left axis, 0 to 1) and the sum of squared weights (right
    axis, its own range and ticks, in its line's colour)."""
    figure = go.Figure()
    steps = [r["step"] for r in rows]
    for key, name in (("gini_embed", "Gini of W_E"), ("gini_unembed", "Gini of W_L")):
        figure.add_scatter(x=steps, y=[r[key] for r in rows], name=name, line={"color": GINI_COLORS[key]})
    figure.add_scatter(
        x=steps,
        y=[r["weight_norm_sq"] for r in rows],
        name="sum of squared weights",
        line={"color": WEIGHT_COLOR, "dash": "dash"},
        yaxis="y2",
    )
    figure.update_layout(
        title="Sparsity in frequency (Gini) and total sum of squared weights",
        xaxis_title="step",
        yaxis={"title": "Gini coefficient", **ACCURACY_AXIS},
        yaxis2=right_axis(linear_axis(trace_values(figure, "y2")), "sum of squared weights", WEIGHT_COLOR),
        legend=LEGEND_BELOW,
    )
    return figure


def figures(rows: list[dict[str, Any]], metrics: list[dict[str, Any]]) -> dict[str, go.Figure]:
    """The progress figures over the checkpoints in ``rows`` (one shared key set, that of the last row)."""
    if not rows:
        return {}
    out = {
        "progress_measures": _progress_measures(rows, metrics),
        "logit_cos_coefficients": _per_key_frequency(
            rows,
            lambda r, k: r["logit_cos_coefficients"][k - 1],
            "Coefficient of cos(w_k(a+b-c)) in the logits, per key frequency",
            "coefficient",
            log=False,
        ),
        "gini_and_weight_norm": _gini_and_weight_norm(rows),
    }
    if any(r.get("single_excluded") for r in rows):
        out["single_frequency_excluded"] = _per_key_frequency(
            rows,
            _single_excluded,
            "Excluded loss with one key frequency removed at a time (train)",
            "cross-entropy loss",
            log=True,
        )
    return out
