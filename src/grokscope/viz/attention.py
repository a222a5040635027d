"""Figures of attention: per-head heatmaps over (a, b), the Fourier make-up of the scores, and attention over
training."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from grokscope.viz.common import ACCURACY_AXIS, test_accuracy_trace

# What figures() draws, in the order a report shows them.
FIGURES = ("attention_over_training", "attention_heatmaps", "attention_fourier")
HEAD_COLORS = qualitative.D3  # one colour per head, the same in every panel (the legend shows the first panel's)


def _heatmaps(row: dict[str, Any]) -> go.Figure:
    """Attention from the answer position to a, one panel per head, laid out layers x heads."""
    heads = row["heads"]
    n_layers = 1 + max(h["layer"] for h in heads)
    n_heads = 1 + max(h["head"] for h in heads)
    figure = make_subplots(
        rows=n_layers,
        cols=n_heads,
        subplot_titles=[h["label"] for h in heads],
        horizontal_spacing=0.03,
        vertical_spacing=0.08,
    )
    for h in heads:
        figure.add_heatmap(
            z=row["heatmaps"][h["label"]]["a"],
            coloraxis="coloraxis",
            row=h["layer"] + 1,
            col=h["head"] + 1,
            hovertemplate="a=%{y} b=%{x}<br>attention to a: %{z:.3f}<extra></extra>",
        )
    figure.update_xaxes(title_text="b", row=n_layers)
    figure.update_yaxes(autorange="reversed")  # a = 0 at the top, as in a table
    figure.update_yaxes(title_text="a", col=1)
    figure.update_layout(
        title=f"Attention from the answer position to a over (a, b), step {row['step']}",
        coloraxis={"cmin": 0.0, "cmax": 1.0, "colorscale": "Viridis", "colorbar": {"title": "attention"}},
    )
    return figure


def _fourier(row: dict[str, Any]) -> go.Figure:
    """Share of each head's score variance (answer position to a) per frequency."""
    heads = row["heads"]
    n_freq = len(heads[0]["score_fve"])
    figure = go.Figure(
        go.Heatmap(
            z=[h["score_fve"] for h in heads],
            x=list(range(1, n_freq + 1)),
            y=[h["label"] for h in heads],
            zmin=0.0,
            zmax=1.0,
            colorscale="Blues",
            colorbar={"title": "share"},
            hovertemplate="%{y}, frequency %{x}: %{z:.3f}<extra></extra>",
        )
    )
    figure.update_layout(
        title=f"Share of the attention-score variance (answer position to a) per frequency, step {row['step']}",
        xaxis_title="frequency",
        yaxis={"title": "head", "autorange": "reversed"},
    )
    return figure


def _over_training(rows: list[dict[str, Any]], metrics: list[dict[str, Any]]) -> go.Figure:
    """Mean attention from the answer position to a, b and =, one panel each, per head (a colour per head in every
    panel), with test accuracy below."""
    positions = [name for name in rows[-1]["positions"] if name in ("a", "b", "=")]
    # Each panel says what it shows on its y axis: a title above a panel would meet the phase labels.
    panels = [f"attention to {name}" for name in positions] + (["test accuracy"] if metrics else [])
    figure = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.04)
    steps = [r["step"] for r in rows]
    for i, name in enumerate(positions, start=1):
        for k, head in enumerate(rows[-1]["heads"]):
            values = [r["heads"][k]["mean_attention"][name] for r in rows]
            figure.add_scatter(
                x=steps,
                y=values,
                name=head["label"],
                legendgroup=head["label"],
                showlegend=i == 1,
                line={"color": HEAD_COLORS[k % len(HEAD_COLORS)]},
                row=i,
                col=1,
            )
    if metrics:
        figure.add_trace(test_accuracy_trace(metrics), row=len(panels), col=1)
    figure.update_yaxes(**ACCURACY_AXIS)  # attention weights and accuracy both lie in [0, 1]
    for i, title in enumerate(panels, start=1):
        figure.update_yaxes(title_text=title, row=i, col=1)
    figure.update_xaxes(title_text="step", row=len(panels))
    figure.update_layout(title="Attention from the answer position over training", height=250 * len(panels))
    return figure


def figures(rows: list[dict[str, Any]], metrics: list[dict[str, Any]]) -> dict[str, go.Figure]:
    """``attention_heatmaps`` (last row with heatmaps), ``attention_fourier`` (last row),
    ``attention_over_training``."""
    if not rows:
        return {}
    out = {"attention_fourier": _fourier(rows[-1]), "attention_over_training": _over_training(rows, metrics)}
    with_heatmaps = [r for r in rows if r.get("heatmaps")]
    if with_heatmaps:
        out["attention_heatmaps"] = _heatmaps(with_heatmaps[-1])
    return out
