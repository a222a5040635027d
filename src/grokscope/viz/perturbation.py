"""Figures of perturbation experiments: how two runs from nearby initial weights drift apart over training."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from grokscope.viz.common import ACCURACY_AXIS, log_axis, trace_values


def figures(pairs: list[dict[str, Any]]) -> dict[str, go.Figure]:
    figure = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        subplot_titles=("relative parameter distance", "fingerprint distance", "prediction disagreement"),
    )
    for pair in pairs:
        label = f"seed {pair['seed']}, eps {pair['epsilon']:g}"
        group = {"legendgroup": label, "name": label}
        figure.add_scatter(x=pair["steps"], y=pair["parameter_distance"], row=1, col=1, **group)
        figure.add_scatter(
            x=pair["fingerprint_steps"], y=pair["fingerprint_distance"], row=2, col=1, showlegend=False, **group
        )
        figure.add_scatter(x=pair["steps"], y=pair["prediction_disagreement"], row=3, col=1, showlegend=False, **group)
    figure.update_yaxes(**log_axis(trace_values(figure, "y")), row=1, col=1)
    figure.update_yaxes(**log_axis(trace_values(figure, "y2")), row=2, col=1)
    figure.update_yaxes(**ACCURACY_AXIS, row=3, col=1)  # a share of the inputs, in [0, 1]
    figure.update_xaxes(title_text="step", row=3, col=1)
    figure.update_layout(title="Divergence of perturbed runs from their base run", height=800)
    return {"perturbation_divergence": figure}
