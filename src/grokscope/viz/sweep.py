"""Figures of condition sweeps: when each condition generalized, every run's accuracy (and loss) over training, and
the DMD spectra of the recorded fingerprints compared across conditions.

Inputs are plain data: the regime table of ``regimes.json``, per-run curves (dicts with name, condition, steps,
train_acc, test_acc, train_loss, test_loss and, for all-position runs, loss_bound and loss_floor), and ``dmd.json``.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.colors import qualitative

from grokscope.viz.common import ACCURACY_AXIS, level_line, log_axis, trace_values
from grokscope.viz.dmd import compared_spectra

PALETTE = qualitative.Plotly


def _colours(curves: list[dict[str, Any]]) -> dict[str, str]:
    conditions = list(dict.fromkeys(c["condition"] for c in curves))
    return {cond: PALETTE[i % len(PALETTE)] for i, cond in enumerate(conditions)}


def generalization_heatmap(table: dict[str, Any]) -> go.Figure:
    """Median steps to 99% test accuracy over the first two swept fields (Kaplan–Meier median: runs that never
    generalized count as censored; blank where fewer than half generalized)."""
    z = table["median_generalization_step"]
    text = [
        [f"{'-' if m is None else f'{m:g}'}<br>{g}/{n} generalized" for m, g, n in zip(zrow, grow, nrow, strict=True)]
        for zrow, grow, nrow in zip(z, table["generalized"], table["n"], strict=True)
    ]
    figure = go.Figure(
        go.Heatmap(
            z=z,
            x=table["column_labels"],
            y=table["row_labels"],
            text=text,
            texttemplate="%{text}",
            colorscale="Viridis",
            colorbar={"title": "steps"},
            hovertemplate="%{y}, %{x}<br>median steps to 99% test acc: %{z}<extra></extra>",
        )
    )
    figure.update_layout(
        title="Median steps to 99% test accuracy",
        xaxis_title=table["columns"] or "",
        yaxis_title=table["rows"] or "",
        yaxis={"autorange": "reversed"},
    )
    return figure


def accuracy_curves(curves: list[dict[str, Any]]) -> go.Figure:
    """Test accuracy (solid) and train accuracy (dotted) of every run, one colour per condition."""
    colours = _colours(curves)
    figure = go.Figure()
    shown: set[str] = set()
    for c in curves:
        cond = c["condition"] or "base"
        group = {"legendgroup": cond, "line": {"color": colours[c["condition"]]}}
        figure.add_scatter(
            x=c["steps"], y=c["test_acc"], name=cond, showlegend=cond not in shown, hovertext=c["name"], **group
        )
        figure.add_scatter(
            x=c["steps"],
            y=c["train_acc"],
            name=f"{cond} (train)",
            showlegend=False,
            opacity=0.5,
            hovertext=c["name"],
            legendgroup=cond,
            line={"color": colours[c["condition"]], "dash": "dot"},
        )
        shown.add(cond)
    figure.update_layout(
        title="Answer accuracy by condition (solid: test, dotted: train)",
        xaxis_title="step",
        yaxis={"title": "accuracy", **ACCURACY_AXIS},
    )
    return figure


def loss_vs_bounds(curves: list[dict[str, Any]]) -> go.Figure | None:
    """Train (dotted) and test (solid) loss of the all-position runs against their loss bounds; None if none."""
    runs = [c for c in curves if c.get("loss_bound") is not None]
    if not runs:
        return None
    colours = _colours(runs)
    figure = go.Figure()
    shown: set[str] = set()
    for c in runs:
        cond = c["condition"] or "base"
        colour = colours[c["condition"]]
        figure.add_scatter(
            x=c["steps"],
            y=c["test_loss"],
            name=cond,
            legendgroup=cond,
            showlegend=cond not in shown,
            hovertext=c["name"],
            line={"color": colour},
        )
        figure.add_scatter(
            x=c["steps"],
            y=c["train_loss"],
            name=f"{cond} (train)",
            legendgroup=cond,
            showlegend=False,
            hovertext=c["name"],
            line={"color": colour, "dash": "dot"},
        )
        shown.add(cond)
    bounds = sorted({c["loss_bound"] for c in runs})
    floors = sorted({c["loss_floor"] for c in runs})
    for value in bounds:
        level_line(figure, value, f"bound {value:.3g}", {"color": "black", "dash": "dash"}, log=True)
    for value in floors:
        level_line(figure, value, f"memorization floor {value:.3g}", {"color": "grey", "dash": "dot"}, log=True)
    figure.update_layout(
        title="All-position loss against its bounds (solid: test, dotted: train)",
        xaxis_title="step",
        yaxis={"title": "mean loss per position", **log_axis(trace_values(figure) + bounds + floors)},
    )
    return figure


def figures(table: dict[str, Any], curves: list[dict[str, Any]]) -> dict[str, go.Figure]:
    out = {"generalization_heatmap": generalization_heatmap(table), "accuracy_curves": accuracy_curves(curves)}
    loss = loss_vs_bounds(curves)
    if loss is not None:
        out["loss_vs_bounds"] = loss
    return out


def dmd_figures(dynamics: dict[str, Any]) -> dict[str, go.Figure]:
    """``dmd_spectra``: every fitted run's DMD eigenvalues on one unit circle, a colour per condition (``dmd.json``)."""
    if not dynamics["runs"]:
        return {}
    s = dynamics["settings"]
    title = (
        f"DMD spectra of the fingerprints by condition ({s['method']}, {s['observable']}, "
        f"{s['n_delays']} delays, rank {s['rank']})"
    )
    return {"dmd_spectra": compared_spectra(dynamics["runs"], title)}
