"""Figures of the DMD of recorded fingerprints: the spectrum against the unit circle, and sliding-window scores."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from grokscope.viz.common import test_accuracy_trace

N_MODULI = 3  # leading eigenvalue moduli drawn per window; more lines would hide the spectral radius


def _spectrum(result: dict[str, Any]) -> go.Figure:
    """Eigenvalues in the complex plane with the unit circle: outside it a mode grows, inside it decays."""
    figure = go.Figure()
    angle = np.linspace(0, 2 * np.pi, 361)
    figure.add_scatter(
        x=np.cos(angle), y=np.sin(angle), mode="lines", name="|λ| = 1", line={"color": "gray", "dash": "dash"}
    )
    eigenvalues = result["eigenvalues"]
    figure.add_scatter(
        x=eigenvalues["re"],
        y=eigenvalues["im"],
        mode="markers",
        name="eigenvalues",
        marker={"size": 9, "color": result["moduli"], "colorscale": "Viridis", "colorbar": {"title": "|λ|"}},
        customdata=result["moduli"],
        hovertemplate="λ = %{x:.4f} %{y:+.4f}i<br>|λ| = %{customdata:.4f}<extra></extra>",
    )
    figure.update_layout(
        title=(
            f"DMD spectrum (reduced-rank regression, rank {result['rank']}, {result['n_delays']} delays, "
            f"one-step residual {result['reconstruction_error']:.3g})"
        ),
        xaxis_title="Re λ",
        yaxis={"title": "Im λ", "scaleanchor": "x", "scaleratio": 1},
    )
    return figure


def _windows(windowed: dict[str, Any], metrics: list[dict[str, Any]]) -> go.Figure:
    """Leading eigenvalue moduli (top) and the one-step residual score (bottom) per window, test accuracy beside."""
    figure = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        specs=[[{"secondary_y": True}], [{"secondary_y": True}]],
        vertical_spacing=0.08,
    )
    steps = windowed["step"]
    moduli = windowed["moduli"]
    for k in range(min(N_MODULI, len(moduli[0]) if moduli else 0)):
        figure.add_scatter(
            x=steps,
            y=[row[k] for row in moduli],
            name="spectral radius" if k == 0 else f"|λ_{k + 1}|",
            mode="lines+markers",
            row=1,
            col=1,
        )
    figure.add_hline(y=1.0, line={"color": "gray", "dash": "dash"}, row=1, col=1)
    figure.add_scatter(
        x=steps, y=windowed["residual"], name="one-step residual (score)", mode="lines+markers", row=2, col=1
    )
    if metrics:
        for row in (1, 2):
            trace = test_accuracy_trace(metrics)
            trace.update(showlegend=row == 1, legendgroup="test_acc")
            figure.add_trace(trace, row=row, col=1, secondary_y=True)
        figure.update_yaxes(title_text="test accuracy", range=[0, 1.05], secondary_y=True)
    figure.update_layout(
        title=f"Windowed DMD: {windowed['window']} snapshots every {windowed['stride']}, plotted at each window's last step"
    )
    figure.update_yaxes(title_text="|λ|", row=1, col=1, secondary_y=False)
    figure.update_yaxes(title_text="||A Y0 - Y1|| / ||Y1||", type="log", row=2, col=1, secondary_y=False)
    figure.update_xaxes(title_text="step", row=2, col=1)
    return figure


def figures(
    result: dict[str, Any], windowed: dict[str, Any] | None, metrics: list[dict[str, Any]]
) -> dict[str, go.Figure]:
    """``dmd_spectrum`` from ``DMDResult.to_dict()``, and ``dmd_windows`` from ``WindowedDMD.to_dict()`` when given;
    ``metrics`` are the run's logged rows (``step``, ``test_acc``)."""
    out = {"dmd_spectrum": _spectrum(result)}
    if windowed is not None and windowed["step"]:
        out["dmd_windows"] = _windows(windowed, metrics)
    return out
