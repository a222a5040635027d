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


def loss_trace(metrics: list[dict[str, Any]], split: str, line: dict[str, Any]) -> go.Scatter | None:
    """The run's ``split`` loss over training (the rows where it was logged), or None when it never was."""
    logged = [m for m in metrics if m.get(f"{split}_loss") is not None]
    if not logged:
        return None
    return go.Scatter(
        x=[m["step"] for m in logged], y=[m[f"{split}_loss"] for m in logged], name=f"{split} loss", line=line
    )
