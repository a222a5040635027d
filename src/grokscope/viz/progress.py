"""Figures of the progress measures over training: restricted and excluded loss beside the training curves, the
logits' cos(w_k(a+b-c)) coefficients and the one-frequency excluded losses per key frequency, Gini and weight norm."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from grokscope.viz.common import loss_trace

SPLIT_COLORS = {"train": "steelblue", "test": "darkorange", "all": "seagreen"}
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
        yaxis={"title": "cross-entropy loss", "type": "log"},
    )
    return figure


def _per_key_frequency(rows: list[dict[str, Any]], value: Any, title: str, y_title: str, log: bool) -> go.Figure:
    figure = go.Figure()
    steps = [r["step"] for r in rows]
    for k in rows[-1]["key_frequencies"]:
        figure.add_scatter(x=steps, y=[value(r, k) for r in rows], name=f"k = {k}", mode="lines")
    figure.update_layout(title=title, xaxis_title="step", yaxis={"title": y_title, "type": "log" if log else "linear"})
    return figure


def _single_excluded(row: dict[str, Any], k: int) -> float | None:
    sweep = row.get("single_excluded")
    if not sweep:
        return None
    losses = sweep["loss"].get("train", sweep["loss"]["all"])
    return losses[k - 1]


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
    figure.update_layout(title="Sparsity in frequency (Gini) and total sum of squared weights", xaxis_title="step")
    figure.update_yaxes(title_text="Gini coefficient", range=[0, 1], secondary_y=False)
    figure.update_yaxes(title_text="sum of squared weights", secondary_y=True)
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
