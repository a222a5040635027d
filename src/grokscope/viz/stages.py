"""Figures of staged experiments (curriculum, sequential finetuning): a measure after each stage, per seed, with the
direct baseline beside the last stage; with the LLC, its trajectory along the chain against direct training and each
stage's final LLC."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from grokscope.viz.common import ACCURACY_AXIS


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
    figure.update_layout(title=title, xaxis_title="stage", yaxis={"title": value.replace("_", " "), **ACCURACY_AXIS})
    return {"stages": figure}


# The local learning coefficient along the chain ---------------------------------------------------------------------
STAGE_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
DIRECT_COLOR = "black"


def _symbols(points: list[dict[str, Any]]) -> list[str]:
    """Filled markers for converged estimates, open ones for those whose sampler failed a check."""
    return ["circle" if p.get("converged") else "circle-open" for p in points]


def _llc_trajectory(rows: list[dict[str, Any]], boundaries: list[int]) -> go.Figure:
    """Each stage's LLC at its estimated checkpoints on the chain's timeline (one color per stage, one line per seed),
    the direct run's over the same total steps (black, dashed), stage boundaries as dotted lines."""
    figure = go.Figure()
    stages = [label for label in dict.fromkeys(r["stage"] for r in rows) if label != "direct"]
    shown: set[str] = set()
    for r in rows:
        points = (r.get("llc") or {}).get("trajectory") or []
        if not points:
            continue
        direct = r["stage"] == "direct"
        color = DIRECT_COLOR if direct else STAGE_COLORS[stages.index(r["stage"]) % len(STAGE_COLORS)]
        figure.add_scatter(
            x=[p["global_step"] for p in points],
            y=[p["llc_mean"] for p in points],
            error_y={"type": "data", "array": [p.get("llc_std") or 0.0 for p in points]},
            mode="lines+markers",
            marker={"symbol": _symbols(points), "size": 8, "color": color},
            line={"color": color, "dash": "dash" if direct else "solid"},
            name=r["stage"],
            legendgroup=r["stage"],
            showlegend=r["stage"] not in shown,
            hovertext=[f"seed {r['seed']}, {r['stage']}, step {p['step']}" for p in points],
        )
        shown.add(r["stage"])
    for boundary in boundaries[:-1]:
        figure.add_vline(x=boundary, line={"dash": "dot", "color": "gray"})
    figure.update_layout(
        title="LLC along the chain (each stage on its own training data) vs direct training; open: not converged",
        xaxis_title="step (summed over the chain)",
        yaxis_title="LLC",
    )
    return figure


def _llc_final(rows: list[dict[str, Any]]) -> go.Figure:
    """The final LLC of each stage and of the direct run: every seed's estimate, and the mean ± sd across seeds."""
    figure = go.Figure()
    labels = list(dict.fromkeys(r["stage"] for r in rows))
    estimated = [r for r in rows if r.get("llc") and r["llc"].get("llc_mean") is not None]
    for seed in sorted({r["seed"] for r in estimated}):
        mine = [r for r in estimated if r["seed"] == seed]
        figure.add_scatter(
            x=[r["stage"] for r in mine],
            y=[r["llc"]["llc_mean"] for r in mine],
            mode="markers",
            marker={"symbol": _symbols([r["llc"] for r in mine]), "size": 10, "line": {"width": 2}},
            name=f"seed {seed}",
        )
    means, sds, kept = [], [], []
    for label in labels:
        values = [r["llc"]["llc_mean"] for r in estimated if r["stage"] == label]
        if values:
            kept.append(label)
            means.append(sum(values) / len(values))
            n = len(values)
            sds.append((sum((v - means[-1]) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else 0.0)
    figure.add_scatter(
        x=kept,
        y=means,
        error_y={"type": "data", "array": sds, "color": DIRECT_COLOR, "thickness": 2},
        mode="markers",
        # A bar across the category, so that the seeds' points stay visible under it.
        marker={"symbol": "line-ew", "size": 40, "line": {"width": 3, "color": DIRECT_COLOR}},
        name="mean ± sd across seeds",
    )
    figure.update_layout(
        title="Final LLC per stage vs direct training (open: not converged)",
        xaxis={"title": "stage", "categoryorder": "array", "categoryarray": labels},
        yaxis_title="LLC",
    )
    return figure


def llc_figures(rows: list[dict[str, Any]], boundaries: list[int]) -> dict[str, go.Figure]:
    """``llc_trajectory`` (the LLC along the chain against the direct run's) and ``llc_final`` (each stage's final
    LLC, per seed and mean ± sd) from result rows carrying ``llc`` (``boundaries``: the summed stage budgets)."""
    return {"llc_trajectory": _llc_trajectory(rows, boundaries), "llc_final": _llc_final(rows)}
