"""Figures of the Fourier analysis: the embedding spectrum over training and the key frequencies at the end."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

# What figures() draws, in the order a report shows them.
FIGURES = ("fourier_embedding_spectrum", "fourier_key_frequencies")
KEY_COLOR = "crimson"


def _embedding_spectrum(rows: list[dict[str, Any]]) -> go.Figure:
    """Norm of W_E per frequency (rows) at each checkpoint (columns)."""
    n_freq = len(rows[-1]["embedding_norms"])
    figure = go.Figure(
        go.Heatmap(
            z=[list(column) for column in zip(*(r["embedding_norms"] for r in rows), strict=True)],
            x=[r["step"] for r in rows],
            y=list(range(1, n_freq + 1)),
            colorscale="Viridis",
            colorbar={"title": "norm"},
            hovertemplate="step %{x}, frequency %{y}: %{z:.3f}<extra></extra>",
        )
    )
    figure.update_layout(
        title="Embedding (W_E) norm per frequency over training",
        xaxis_title="step",
        yaxis_title="frequency",
    )
    return figure


def _key_frequencies(row: dict[str, Any]) -> go.Figure:
    """The last checkpoint's W_E and W_L (or W_U) spectra, each relative to its largest, key frequencies marked."""
    logit_name = "W_L" if row.get("logit_norms") is not None else "W_U"
    spectra = {"W_E": row["embedding_norms"], logit_name: row.get("logit_norms") or row["unembedding_norms"]}
    n_freq = len(spectra["W_E"])
    frequencies = list(range(1, n_freq + 1))
    key = set(row["key_frequencies"])
    figure = go.Figure()
    for (name, norms), color in zip(spectra.items(), ("steelblue", "darkorange"), strict=True):
        largest = max(norms) or 1.0
        figure.add_bar(
            x=frequencies,
            y=[n / largest for n in norms],
            name=name,
            marker_color=color,
            hovertemplate=f"{name}, frequency %{{x}}: %{{y:.3f}} of the largest<extra></extra>",
        )
    for k in sorted(key):
        figure.add_vrect(x0=k - 0.5, x1=k + 0.5, fillcolor=KEY_COLOR, opacity=0.12, line_width=0, layer="below")
    keys = ", ".join(map(str, sorted(key))) or "none"
    figure.update_layout(
        title=f"Spectra at step {row['step']}; key frequencies (shaded): {keys}",
        barmode="group",
        xaxis_title="frequency",
        yaxis_title="norm / largest norm",
    )
    return figure


def figures(rows: list[dict[str, Any]], metrics: list[dict[str, Any]]) -> dict[str, go.Figure]:
    """``fourier_embedding_spectrum`` (over training) and ``fourier_key_frequencies`` (last checkpoint)."""
    if not rows:
        return {}
    return {
        "fourier_embedding_spectrum": _embedding_spectrum(rows),
        "fourier_key_frequencies": _key_frequencies(rows[-1]),
    }
