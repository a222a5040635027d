"""Figures of ablations: the change in test accuracy per ablation at the last checkpoint, and the key frequencies
vs as many other frequencies ablated over training.

The bars are horizontal, one panel per kind of ablation (heads, single frequencies, key vs control sets, …), each
sorted from the most damaging down and cut to the :data:`TOP` most damaging, with how many more there were and the
largest change among them in the panel's title: a single-frequency sweep has p/2 ablations, almost all harmless, and
drawn side by side their labels overlap.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from grokscope.viz.common import ACCURACY_AXIS, linear_axis

# What figures() draws, in the order a report shows them.
FIGURES = ("ablation_bars", "ablation_key_vs_other")
# Where each frequency ablation acts, as labels and legends name it: the embedding, the neurons' cos/sin(w_k(a+-b))
# directions (what excluded loss removes), or the neurons' whole 2-D Fourier cells.
SPACES = {"embed_frequencies": "embedding", "neuron_frequencies": "neurons", "neuron_frequency_cells": "neuron cells"}
_DASHES = {"embed_frequencies": "solid", "neuron_frequencies": "dash", "neuron_frequency_cells": "dot"}
TOP = 8  # bars per panel
BAR_PX = 24  # height per bar, so that labels never overlap
ROLE_COLORS = {"key": "crimson", "control": "gray"}
GROUP_COLORS = {"head": "#1f77b4", "single": "#ff7f0e", "roles": "crimson", "other": "#2ca02c"}


def short_label(ablation: dict[str, Any]) -> str:
    """A bar's label: ``L0H2 (mean)``, ``k = 20 (embedding)``, ``key k = 20, 21 (neurons)``; otherwise the
    ablation's own label."""
    component, target, method = ablation["component"], ablation["target"], ablation["method"]
    if component == "head" and len(target) == 1:
        return f"L{ablation['layer']}H{target[0]} ({method})"
    if component in SPACES:
        ks = ", ".join(map(str, target))
        role = f"{ablation['role']} " if ablation.get("role") else ""
        return f"{role}k = {ks} ({SPACES[component]})"
    if component == "position":
        return f"position {', '.join(map(str, target))} ({method})"
    return ablation["label"]


def _role(ablation: dict[str, Any], row: dict[str, Any]) -> str:
    """``key`` for a key-frequency set and for a single key frequency (drawn in the key colour in every panel)."""
    if ablation.get("role"):
        return ablation["role"]
    single = ablation["component"] in SPACES and len(ablation["target"]) == 1
    return "key" if single and ablation["target"][0] in row.get("key_frequencies", ()) else ""


def _group(ablation: dict[str, Any]) -> str:
    if ablation.get("role"):
        return "roles"
    if ablation["component"] == "head":
        return "head"
    if ablation["component"] in SPACES and len(ablation["target"]) == 1:
        return "single"
    return "other"


_TITLES = {
    "head": "heads",
    "single": "single frequencies (key ones in red)",
    "roles": "key frequencies vs as many others",
    "other": "other ablations",
}


def _bars(row: dict[str, Any]) -> go.Figure:
    groups: dict[str, list[dict[str, Any]]] = {}
    for ablation in row["ablations"]:
        groups.setdefault(_group(ablation), []).append(ablation)
    order = [g for g in ("roles", "head", "single", "other") if g in groups]
    shown, titles = {}, []
    for g in order:
        ranked = sorted(groups[g], key=lambda a: a["delta_test_acc"])
        shown[g] = ranked[:TOP]
        title = _TITLES[g]
        if len(ranked) > TOP:
            rest = max(abs(a["delta_test_acc"]) for a in ranked[TOP:])
            others = f"the other {len(ranked) - TOP} change it by ≤ {rest:.1%}"
            title += f": the {TOP} most damaging of {len(ranked)} ({others})"
        titles.append(title)
    heights = [len(shown[g]) for g in order]
    figure = make_subplots(
        rows=len(order),
        cols=1,
        shared_xaxes=True,
        subplot_titles=titles,
        row_heights=heights,
        vertical_spacing=min(0.12, 0.5 / max(len(order), 1)),
    )
    for i, g in enumerate(order, start=1):
        bars = shown[g]
        colors = [ROLE_COLORS.get(_role(a, row), GROUP_COLORS[g]) for a in bars]
        figure.add_bar(
            x=[a["delta_test_acc"] for a in bars],
            y=[short_label(a) for a in bars],
            orientation="h",
            marker_color=colors,
            text=[f"{a['delta_test_acc']:+.1%}" for a in bars],
            textposition="outside",
            cliponaxis=False,
            customdata=[a["label"] for a in bars],
            hovertemplate="%{customdata}<br>test accuracy change: %{x:+.2%}<extra></extra>",
            showlegend=False,
            row=i,
            col=1,
        )
        # Most damaging at the top of its panel.
        figure.update_yaxes(autorange="reversed", type="category", row=i, col=1)
    deltas = [a["delta_test_acc"] for g in order for a in shown[g]]
    axis = linear_axis(deltas, include=(0.0,))
    span = axis["range"][1] - axis["range"][0]
    axis["range"] = [axis["range"][0] - 0.1 * span, axis["range"][1] + 0.1 * span]  # room for the bar's number
    figure.update_xaxes(**axis, tickformat=".0%", zeroline=True, zerolinecolor="gray")
    figure.update_xaxes(title_text="change in test accuracy", row=len(order), col=1)
    clean = row["clean"]["test_acc"]
    figure.update_layout(
        title=f"Change in test accuracy per ablation at step {row['step']} (clean: {clean:.1%})",
        height=140 + BAR_PX * sum(heights) + 60 * len(order),
        bargap=0.25,
        margin={"l": 170},
    )
    return figure


def _key_vs_other(rows: list[dict[str, Any]]) -> go.Figure:
    figure = go.Figure()
    figure.add_scatter(
        x=[r["step"] for r in rows],
        y=[r["clean"]["test_acc"] for r in rows],
        name="clean",
        line={"color": "black"},
    )
    for component, space in SPACES.items():
        for role, what in (("key", "key"), ("control", "other")):
            points = [
                (r["step"], a["test_acc"])
                for r in rows
                for a in r["ablations"]
                if a["component"] == component and a["role"] == role
            ]
            if points:
                steps, accuracy = zip(*points, strict=True)
                figure.add_scatter(
                    x=steps,
                    y=accuracy,
                    name=f"{what} frequencies ablated ({space})",
                    line={
                        "color": ROLE_COLORS[role],
                        "dash": _DASHES[component],
                    },
                )
    figure.update_layout(
        title="Test accuracy with the key frequencies vs as many other frequencies ablated",
        xaxis_title="step",
        yaxis={"title": "test accuracy", **ACCURACY_AXIS},
    )
    return figure


def figures(rows: list[dict[str, Any]], metrics: list[dict[str, Any]]) -> dict[str, go.Figure]:
    """``ablation_bars`` for the last checkpoint; ``ablation_key_vs_other`` when key frequencies were ablated."""
    if not rows:
        return {}
    out = {"ablation_bars": _bars(rows[-1])}
    if any(a["role"] for r in rows for a in r["ablations"]):
        out["ablation_key_vs_other"] = _key_vs_other(rows)
    return out
