"""Figures of transfer experiments: target accuracy per condition with confidence bands, epochs-to-threshold box
plots, source retention during target training, and the source runs' generalization epochs."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import plotly.graph_objects as go
from scipy import stats as scipy_stats

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")


def _band(curves: list[list[tuple[float, float]]]) -> tuple[list[float], list[float], list[float], list[float]]:
    """Mean and 95% t-interval across runs at the epochs every run logged."""
    by_epoch: dict[float, list[float]] = defaultdict(list)
    for curve in curves:
        for epoch, value in curve:
            by_epoch[epoch].append(value)
    epochs = sorted(e for e, v in by_epoch.items() if len(v) == len(curves))
    mean, low, high = [], [], []
    for e in epochs:
        v = by_epoch[e]
        m = sum(v) / len(v)
        half = 0.0
        if len(v) > 1:
            sd = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))
            half = scipy_stats.t.ppf(0.975, len(v) - 1) * sd / math.sqrt(len(v))
        mean.append(m)
        low.append(max(0.0, m - half))
        high.append(min(1.0, m + half))
    return epochs, mean, low, high


def accuracy_bands(result: dict[str, Any]) -> go.Figure:
    figure = go.Figure()
    for i, condition in enumerate(result["conditions"]):
        curves = [t["test_acc_curve"] for t in result["targets"] if t["condition"] == condition and t["run_dir"]]
        if not curves:
            continue
        epochs, mean, low, high = _band(curves)
        color = COLORS[i % len(COLORS)]
        figure.add_scatter(
            x=epochs + epochs[::-1],
            y=high + low[::-1],
            fill="toself",
            fillcolor=color,
            opacity=0.2,
            line={"width": 0},
            hoverinfo="skip",
            showlegend=False,
            legendgroup=condition,
        )
        figure.add_scatter(
            x=epochs, y=mean, name=f"{condition} (n={len(curves)})", line={"color": color}, legendgroup=condition
        )
    figure.update_layout(
        title="Target test accuracy: mean and 95% CI across seeds", xaxis_title="epoch", yaxis_title="test accuracy"
    )
    return figure


def epochs_boxes(result: dict[str, Any], threshold: str = "0.999") -> go.Figure:
    figure = go.Figure()
    for condition in result["conditions"]:
        runs = [t for t in result["targets"] if t["condition"] == condition and t["run_dir"]]
        reached = [t["epochs_to"][threshold] for t in runs if t["epochs_to"].get(threshold) is not None]
        censored = len(runs) - len(reached)
        label = condition + (f" ({censored} never reached)" if censored else "")
        figure.add_box(y=reached, name=label, boxpoints="all")
    figure.update_layout(
        title=f"Epochs to {float(threshold):.1%} target test accuracy (censored runs left out, counted)",
        yaxis_title="epochs",
        showlegend=False,
    )
    return figure


def retention(result: dict[str, Any]) -> go.Figure:
    figure = go.Figure()
    for i, condition in enumerate(result["conditions"]):
        color = COLORS[i % len(COLORS)]
        first = True
        for t in result["targets"]:
            if t["condition"] == condition and t["source_retention"]:
                figure.add_scatter(
                    x=t["steps"],
                    y=t["source_retention"],
                    name=condition,
                    legendgroup=condition,
                    showlegend=first,
                    line={"color": color},
                    opacity=0.7,
                )
                first = False
    figure.update_layout(
        title="Source-task test accuracy during target training (retention)",
        xaxis_title="step",
        yaxis_title="source test accuracy",
    )
    return figure


def source_generalization(result: dict[str, Any]) -> go.Figure:
    epochs = [e for e in result["source_generalization_epochs"] if e is not None]
    figure = go.Figure(go.Histogram(x=epochs, nbinsx=max(5, len(epochs))))
    never = len(result["source_generalization_epochs"]) - len(epochs)
    figure.update_layout(
        title=f"Source runs: epoch of 99% test accuracy ({never} never)", xaxis_title="epoch", yaxis_title="runs"
    )
    return figure


def figures(result: dict[str, Any]) -> dict[str, go.Figure]:
    return {
        "transfer_accuracy": accuracy_bands(result),
        "transfer_epochs_to_threshold": epochs_boxes(result),
        "transfer_retention": retention(result),
        "transfer_source_generalization": source_generalization(result),
    }
