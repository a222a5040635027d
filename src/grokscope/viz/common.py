"""Pieces several figures share."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go


def test_accuracy_trace(metrics: list[dict[str, Any]]) -> go.Scatter:
    """The run's test accuracy over training, drawn dotted so an analysis curve can be read against it."""
    return go.Scatter(
        x=[m["step"] for m in metrics],
        y=[m.get("test_acc") for m in metrics],
        name="test accuracy",
        line={"color": "black", "dash": "dot"},
    )
