"""Figures of the local learning coefficient over training, beside the loss curves, and of the sampler's chains."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from grokscope.viz.common import LEGEND_BELOW, linear_axis, log_axis, loss_trace, right_axis, trace_values

# What figures() draws, in the order a report shows them.
FIGURES = ("llc_over_training", "llc_chains")
LLC_COLOR = "black"
LOSS_COLORS = {"train": "steelblue", "test": "darkorange"}
LOSS_AXIS_COLOR = "dimgray"  # the right axis serves two lines; the legend tells them apart


def _llc_over_training(rows: list[dict[str, Any]], metrics: list[dict[str, Any]]) -> go.Figure:
    """LLC mean ± between-chain std per checkpoint (left axis, from 0), train and test loss (right, log axis).

    Checkpoints whose sampler did not converge are drawn as open markers, so a reader does not trust them blindly.
    """
    figure = go.Figure()
    figure.add_scatter(
        x=[r["step"] for r in rows],
        y=[r["llc_mean"] for r in rows],
        error_y={"type": "data", "array": [r.get("llc_std") or 0.0 for r in rows]},
        mode="lines+markers",
        marker={"symbol": ["circle" if r.get("converged") else "circle-open" for r in rows], "size": 8},
        line={"color": LLC_COLOR},
        name="LLC (open: not converged)",
    )
    for split, color in LOSS_COLORS.items():
        trace = loss_trace(metrics, split, {"color": color, "dash": "dot"})
        if trace is not None:
            trace.update(yaxis="y2")
            figure.add_trace(trace)
    figure.update_layout(
        title="Local learning coefficient over training",
        xaxis_title="step",
        yaxis={"title": "LLC", **linear_axis(trace_values(figure), include=(0.0,))},
        legend=LEGEND_BELOW,
    )
    if any(t.yaxis == "y2" for t in figure.data):
        figure.update_layout(
            yaxis2=right_axis(log_axis(trace_values(figure, "y2")), "cross-entropy loss", LOSS_AXIS_COLOR)
        )
    return figure


def _llc_chains(row: dict[str, Any]) -> go.Figure:
    """Each chain's loss trace after burn-in at one checkpoint, with the checkpoint's own loss for reference."""
    figure = go.Figure()
    block = row.get("loss_trace_block", 1)
    for chain, trace in enumerate(row.get("loss_trace") or []):
        figure.add_scatter(x=[(i + 0.5) * block for i in range(len(trace))], y=trace, name=f"chain {chain}")
    if row.get("init_loss") is not None:
        figure.add_hline(y=row["init_loss"], line={"dash": "dash", "color": "gray"}, annotation_text="L(w*)")
    verdict = "converged" if row.get("converged") else "not converged"
    figure.update_layout(
        title=f"SGLD loss traces at step {row.get('step')} ({verdict}; R-hat {_fmt(row.get('r_hat'))}, "
        f"drift {_fmt(row.get('drift'))})",
        xaxis_title=f"draw (means of {block} draws)" if block > 1 else "draw",
        yaxis_title="training loss",
    )
    return figure


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def figures(rows: list[dict[str, Any]], metrics: list[dict[str, Any]]) -> dict[str, go.Figure]:
    """``llc_over_training`` always; ``llc_chains`` for the last row when it carries its loss traces."""
    out = {"llc_over_training": _llc_over_training(rows, metrics)}
    if rows and rows[-1].get("loss_trace"):
        out["llc_chains"] = _llc_chains(rows[-1])
    return out
