"""Figures and text of a task-similarity experiment: speed-up and source retention against the target task."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from grokscope.viz.text import MISSING, mean_sd, ratio_interval
from grokscope.viz.transfer import speedup_bounds

PALETTE = qualitative.Plotly  # a condition keeps its colour in both panels (one legend entry)


def figures(result: dict[str, Any]) -> dict[str, go.Figure]:
    """``similarity``: speed-up over the baseline to the ``speedup_at`` accuracy (95% interval where n allows) and
    final source retention (mean ± sd over seeds, chance 1/p dashed), one trace per condition, targets in the
    config's order."""
    targets = [t["target"] for t in result["targets"]]
    at = float(result["targets"][0]["threshold"]) if result["targets"] else 0.99
    on_train = [t["target"] for t in result["targets"] if t.get("speed_on") == "train_acc"]
    on = "test acc" + (f"; train acc for {', '.join(on_train)}" if on_train else "")
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(f"speed-up over the baseline (to {at:.1%} {on})", "source task kept (final retention)"),
    )
    for i, condition in enumerate(result["conditions"]):
        colour = PALETTE[i % len(PALETTE)]
        ratio, low, high = [], [], []
        kept, kept_sd = [], []
        for t in result["targets"]:
            s = t["speedup"].get(condition) or {}
            r = s.get("ratio")
            ratio.append(r)
            lo, hi = speedup_bounds(s)
            low.append(None if r is None or lo is None else r - lo)
            high.append(None if r is None or hi is None else hi - r)
            m = t["retention"].get(condition) or {}
            kept.append(m.get("mean"))
            kept_sd.append(m.get("sd"))
        is_baseline = all(t.get("baseline") == condition for t in result["targets"])

        def trace(y: list, error: dict, legend: bool, colour: str = colour, condition: str = condition) -> go.Scatter:
            return go.Scatter(
                x=targets,
                y=y,
                name=condition,
                legendgroup=condition,
                showlegend=legend,
                mode="lines+markers",
                line={"color": colour},
                error_y={"type": "data", "visible": True, **error},
            )

        if not is_baseline:  # the baseline's speed-up over itself is 1 by definition
            fig.add_trace(trace(ratio, {"array": high, "arrayminus": low}, True), row=1, col=1)
        fig.add_trace(trace(kept, {"array": kept_sd}, is_baseline), row=1, col=2)
    fig.add_hline(y=1.0, line={"dash": "dot", "color": "grey"}, row=1, col=1)
    chance = next((t["chance"] for t in result["targets"] if t.get("chance") is not None), None)
    if chance is not None:
        fig.add_hline(y=chance, line={"dash": "dash", "color": "grey"}, row=1, col=2)
    fig.update_xaxes(title_text="target task (most similar first)", type="category")
    fig.update_yaxes(title_text="speed-up (x)", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="accuracy on the source task", range=[0, 1.02], tickformat=".0%", row=1, col=2)
    fig.update_layout(title="task similarity: what transfers, and what is kept", height=420, width=980)
    return {"similarity": fig}


def describe(result: dict[str, Any]) -> list[str]:
    """One line per target and condition: the speed-up over the baseline (with the interval :mod:`grokscope.stats`
    gave, if any, and n), the final source retention and the final test accuracy; targets whose test accuracy is
    chance by construction are marked as read on train accuracy."""
    at = result["targets"][0]["threshold"] if result["targets"] else "?"
    lines = [f"target | condition | speed-up to {at} accuracy (n) | final source retention | final test acc"]
    for t in result["targets"]:
        on = " (on train acc: test acc is chance by construction)" if t.get("speed_on") == "train_acc" else ""
        for condition in result["conditions"]:
            s = t["speedup"].get(condition)
            if condition == t["baseline"]:
                speed = "baseline"
            elif s is None or s.get("ratio") is None:
                speed = MISSING if s is None else f"{MISSING} ({s.get('note') or 'not reached'})"
            else:
                bounds = ratio_interval(s)
                n = f"n = {s['n_reached'] + s['n_censored']} vs {s['reference_n_reached'] + s['reference_n_censored']}"
                speed = f"{s['ratio']:.2f}x" + (f" {bounds}" if bounds else "") + f" ({n}){on}"
            kept, acc = t["retention"].get(condition), t["final_test_acc"].get(condition)
            lines.append(f"{t['target']} | {condition} | {speed} | {mean_sd(kept, '.1%')} | {mean_sd(acc, '.1%')}")
    if result["targets"] and result["targets"][0]["chance"] is not None:
        lines.append(f"chance (1/p): {result['targets'][0]['chance']:.1%}")
    return lines
