"""Figures of transfer experiments: target accuracy per condition with confidence bands, epochs-to-threshold box
plots, source retention during target training, the source runs' generalization epochs, the final-accuracy
distribution (a point per seed over a box), the speed-up over the baseline with its bootstrap interval, and
relearning the source task against learning it from scratch."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import plotly.graph_objects as go
from scipy import stats as scipy_stats

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")


def _band(curves: list[list[tuple[float, float]]]) -> tuple[list[float], list[float], list[float], list[float]]:
    """Mean and 95% t-interval across runs at the epochs every run logged."""
    by_epoch: dict[float, list[float]] = defaultdict(list)
    for curve in curves:
        for epoch, value in curve:
            by_epoch[epoch].append(value)
    epochs = sorted(e for e, v in by_epoch.items() if len(v) == len(curves))
    mean, low, high = [], [], []
    for e in epochs:
        v = by_epoch[e]
        m = sum(v) / len(v)
        half = 0.0
        if len(v) > 1:
            sd = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))
            half = scipy_stats.t.ppf(0.975, len(v) - 1) * sd / math.sqrt(len(v))
        mean.append(m)
        low.append(max(0.0, m - half))
        high.append(min(1.0, m + half))
    return epochs, mean, low, high


def _bands(groups: dict[str, list[list[tuple[float, float]]]], title: str, yaxis: str) -> go.Figure:
    """One mean line and 95% band per group of curves (each a list of (epoch, value))."""
    figure = go.Figure()
    for i, (name, curves) in enumerate(groups.items()):
        if not curves:
            continue
        epochs, mean, low, high = _band(curves)
        color = COLORS[i % len(COLORS)]
        figure.add_scatter(
            x=epochs + epochs[::-1],
            y=high + low[::-1],
            fill="toself",
            fillcolor=color,
            opacity=0.2,
            line={"width": 0},
            hoverinfo="skip",
            showlegend=False,
            legendgroup=name,
        )
        figure.add_scatter(x=epochs, y=mean, name=f"{name} (n={len(curves)})", line={"color": color}, legendgroup=name)
    figure.update_layout(title=title, xaxis_title="epoch", yaxis_title=yaxis)
    return figure


def accuracy_bands(result: dict[str, Any]) -> go.Figure:
    groups = {
        c: [t["test_acc_curve"] for t in result["targets"] if t["condition"] == c and t["run_dir"]]
        for c in result["conditions"]
    }
    return _bands(groups, "Target test accuracy: mean and 95% CI across seeds", "test accuracy")


def speedup_bounds(s: dict[str, Any]) -> tuple[float | None, float | None]:
    """The interval a speed-up carries, as the text names it: the bootstrap where n allowed one, else Fieller's."""
    if s.get("ci_low") is not None and s.get("ci_high") is not None:
        return s["ci_low"], s["ci_high"]
    return s.get("fieller_low"), s.get("fieller_high")


def steps_boxes(result: dict[str, Any], threshold: str = "0.999") -> go.Figure:
    """Steps to ``threshold`` per condition, read on what the statistics read (test accuracy, or train accuracy for
    a target whose test accuracy is chance by construction); a run past its budget counts as censored there too."""
    on_train = result["statistics"].get("speed_on") == "train_acc"
    key = "train_steps_to" if on_train else "steps_to"
    figure = go.Figure()
    for condition in result["conditions"]:
        runs = [t for t in result["targets"] if t["condition"] == condition and t["run_dir"]]
        values = [(t.get(key) or {}).get(threshold) for t in runs]
        reached = [v for v, t in zip(values, runs, strict=True) if v is not None and v <= t["budget"]]
        censored = len(runs) - len(reached)
        label = condition + (f" ({censored} never reached)" if censored else "")
        figure.add_box(y=reached, name=label, boxpoints="all")
    figure.update_layout(
        title=f"Steps to {float(threshold):.1%} target {'train' if on_train else 'test'} accuracy "
        "(censored runs left out, counted)",
        yaxis_title="steps",
        showlegend=False,
    )
    return figure


def retention(result: dict[str, Any]) -> go.Figure:
    figure = go.Figure()
    for i, condition in enumerate(result["conditions"]):
        color = COLORS[i % len(COLORS)]
        first = True
        for t in result["targets"]:
            if t["condition"] == condition and t["source_retention"]:
                figure.add_scatter(
                    x=t["steps"],
                    y=t["source_retention"],
                    name=condition,
                    legendgroup=condition,
                    showlegend=first,
                    line={"color": color},
                    opacity=0.7,
                )
                first = False
    figure.update_layout(
        title="Source-task test accuracy during target training (retention)",
        xaxis_title="step",
        yaxis_title="source test accuracy",
    )
    return figure


def source_generalization(result: dict[str, Any]) -> go.Figure:
    steps = [e for e in result["source_generalization_steps"] if e is not None]
    figure = go.Figure(go.Histogram(x=steps, nbinsx=max(5, len(steps))))
    never = len(result["source_generalization_steps"]) - len(steps)
    figure.update_layout(
        title=f"Source runs: step of 99% test accuracy ({never} never)", xaxis_title="step", yaxis_title="runs"
    )
    return figure


def final_accuracy(result: dict[str, Any]) -> go.Figure:
    """Final target test accuracy per condition: every seed as a point over the condition's box."""
    figure = go.Figure()
    for i, condition in enumerate(result["conditions"]):
        runs = [t for t in result["targets"] if t["condition"] == condition and t.get("final_test_acc") is not None]
        if not runs:
            continue
        figure.add_box(
            y=[t["final_test_acc"] for t in runs],
            name=f"{condition} (n={len(runs)})",
            boxpoints="all",
            jitter=0.3,
            pointpos=0,
            text=[f"seed {t['seed']}" for t in runs],
            marker={"color": COLORS[i % len(COLORS)], "size": 8},
        )
    figure.update_layout(
        title="Final target test accuracy: a point per seed", yaxis_title="test accuracy", showlegend=False
    )
    return figure


def speedup(result: dict[str, Any]) -> go.Figure | None:
    """Speed-up over the baseline (mean steps of the baseline / of the condition) per threshold, with the interval
    it carries (bootstrap where n allows, else Fieller); None when there is no baseline or nothing to show."""
    by_threshold = result["statistics"].get("speedup", {})
    rows = [(t, r) for t, rs in by_threshold.items() for r in rs if r["ratio"] is not None]
    if not rows:
        return None
    figure = go.Figure()
    for i, threshold in enumerate(dict.fromkeys(t for t, _ in rows)):
        shown = [r for t, r in rows if t == threshold]
        bounds = [speedup_bounds(r) for r in shown]
        low = [r["ratio"] - lo if lo is not None else 0 for r, (lo, _) in zip(shown, bounds, strict=True)]
        high = [hi - r["ratio"] if hi is not None else 0 for r, (_, hi) in zip(shown, bounds, strict=True)]
        figure.add_bar(
            x=[r["name"] for r in shown],
            y=[r["ratio"] for r in shown],
            error_y={"type": "data", "array": high, "arrayminus": low},
            name=f"to {float(threshold):.1%}",
            marker_color=COLORS[i % len(COLORS)],
            # Hatched: no interval (too few runs for one), so the zero-width bar is not a CI.
            marker_pattern_shape=["" if lo is not None else "/" for lo, _ in bounds],
            hovertext=[
                f"{r['n_reached']}/{r['n_reached'] + r['n_censored']} vs "
                f"{r['reference_n_reached']}/{r['reference_n_reached'] + r['reference_n_censored']} runs reached"
                for r in shown
            ],
        )
    figure.add_hline(y=1, line_dash="dot", line_color="gray")
    reference = rows[0][1]["reference"]
    figure.update_layout(
        title=f"Speed-up over {reference} (its mean steps to threshold / the condition's; reached runs), "
        "95% interval where n allows<br><sup>hatched: no interval (too few runs for one)</sup>",
        yaxis_title="speed-up (x)",
        barmode="group",
    )
    return figure


def relearning(result: dict[str, Any]) -> go.Figure | None:
    """Source test accuracy while relearning the source task from each final target model, against the source
    runs learning it from scratch over the same budget; None without relearn runs."""
    budget = result.get("relearn_budget") or 0
    groups = {
        c: [
            t["relearn_test_acc_curve"]
            for t in result["targets"]
            if t["condition"] == c and t.get("relearn_test_acc_curve")
        ]
        for c in result["conditions"]
    }
    if not budget or not any(groups.values()):
        return None
    scratch = [[(e, v) for e, v in curve if e <= budget] for curve in result.get("source_test_acc_curves", {}).values()]
    groups["from scratch"] = [c for c in scratch if c]
    return _bands(groups, "Relearning the source task: mean and 95% CI across seeds", "source test accuracy")


def figures(result: dict[str, Any]) -> dict[str, go.Figure]:
    out = {
        "transfer_accuracy": accuracy_bands(result),
        "transfer_steps_to_threshold": steps_boxes(result),
        "transfer_retention": retention(result),
        "transfer_source_generalization": source_generalization(result),
        "transfer_final_accuracy": final_accuracy(result),
        "transfer_speedup": speedup(result),
        "transfer_relearning": relearning(result),
    }
    return {name: figure for name, figure in out.items() if figure is not None}
