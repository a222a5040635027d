"""Figures as a real browser draws them: every value axis's tick labels, read back from the SVG that plotly.js
renders in headless Chromium, are numbers that run one way, evenly spaced on the screen and in value (in decades on
a log axis), inside the axis's range; and no curve is cut by the plot's edge.

Plotly's figure JSON alone cannot show the defect this guards against: a second y axis laid over the first gets its
ticks synchronised to the first axis's grid in the browser (plotly.js 3+), which drew −0.857, −0.727 … 0.93 on the
gradient-movement figure, and a log axis gets unevenly spaced minor digits (2, 3 … 9). The figures are drawn from a
real grokked run's analyses (the session's quickstart run, analysed into a folder of this test's own).

Without Chromium these tests skip, and with CI=true they fail (see test_report.chromium).
"""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import pytest
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from grokscope.analysis.dmd import windowed_dmd
from grokscope.analysis.runner import analyze
from grokscope.viz import ablation as viz_ablation
from grokscope.viz import dmd as viz_dmd
from grokscope.viz.common import ACCURACY_AXIS
from grokscope.viz.common import test_accuracy_trace as accuracy_trace  # (not collected as a test)
from grokscope.viz.phases import MARK, mark_phases
from grokscope.viz.report import training_curves
from grokscope.viz.write import analysis_figures

from .test_report import chromium, render

# The figures with a second y axis: each must have one, and its ticks are checked like every other axis's.
TWO_AXIS = {"gradient_movement", "fingerprint_quantiles", "gini_and_weight_norm", "llc_over_training", "dmd_windows"}
PIXELS = 1.5  # tolerance on the screen spacing of ticks (labels are positioned to whole or half pixels)

# Draws every figure, then writes each one's axes (type, range as drawn) and tick labels (text, the markup plotly
# was given, and the label's place on the screen) into <pre id="ticks">, for --dump-dom to carry out.
_COLLECT = r"""
async function collect() {
  var out = {};
  for (const [name, fig] of Object.entries(FIGURES)) {
    var div = document.createElement("div");
    div.style.width = "1000px";
    document.body.appendChild(div);
    await Plotly.newPlot(div, fig.data, fig.layout);
    var axes = {};
    for (const key of Object.keys(div._fullLayout)) {
      if (!/^[xy]axis[0-9]*$/.test(key)) continue;
      var ax = div._fullLayout[key];
      var labels = [];
      div.querySelectorAll("g." + ax._id + "tick text").forEach(function (t) {
        if (!t.textContent.trim()) return;
        // Where plotly put the tick: the label's translation (its box moves with a superscript).
        var at = /translate\(([-0-9.e]+)[ ,]+([-0-9.e]+)\)/.exec(t.getAttribute("transform") || "");
        var box = t.getBoundingClientRect();
        labels.push({
          text: t.textContent,
          markup: t.getAttribute("data-unformatted") || t.textContent,
          x: at ? parseFloat(at[1]) : box.left + box.width / 2,
          y: at ? parseFloat(at[2]) : box.top + box.height / 2,
        });
      });
      axes[ax._id] = {type: ax.type, range: ax.range.slice(), overlaying: ax.overlaying || null, labels: labels};
    }
    out[name] = axes;
  }
  document.getElementById("ticks").textContent = JSON.stringify(out);
}
collect().catch(function (e) { document.getElementById("ticks").textContent = "ERROR " + e; });
"""

SI = {"p": 1e-12, "n": 1e-9, "µ": 1e-6, "μ": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9}


def label_value(markup: str) -> float:
    """The number a tick label shows: ``0.25``, ``−0.5``, ``40%``, ``10<sup>−3</sup>``, ``2k``; ValueError if it
    is not one."""
    text = html.unescape(markup).replace("−", "-").replace("\u2009", "").replace(",", "").strip()
    power = re.fullmatch(r"(?:([-\d.]+)\s*[×x]\s*)?10<sup>([-\d.]+)</sup>", text)
    if power:
        return float(power.group(1) or 1) * 10 ** float(power.group(2))
    if text.endswith("%"):
        return float(text[:-1]) / 100
    if text and text[-1] in SI:
        return float(text[:-1]) * SI[text[-1]]
    return float(text)


def round_ticks(scaled: list[float], log: bool) -> bool:
    """Whether evenly spaced tick values are ones a reader can use: whole decades on a log axis (``scaled`` holds
    their logarithms), multiples of a step of 1, 2, 2.5 or 5 times a power of ten on a linear one. Synchronised
    ticks are evenly spaced too, but at values such as 0.003711965, 0.02588435, … (a factor 6.97 apart)."""
    if log:
        return all(abs(v - round(v)) < 1e-6 for v in scaled)
    step = abs(scaled[1] - scaled[0])
    mantissa = step / 10 ** math.floor(math.log10(step))
    nice = any(abs(mantissa - m) < 1e-6 for m in (1.0, 2.0, 2.5, 5.0, 10.0))
    return nice and all(abs(v / step - round(v / step)) < 1e-6 for v in scaled)


def axis_problems(name: str, axis_id: str, axis: dict[str, Any]) -> list[str]:
    """What is wrong with the tick labels the browser drew on one axis (nothing: an empty list)."""
    where = f"{name} {axis_id}"
    labels = axis["labels"]
    if len(labels) < 2:
        return [f"{where}: {len(labels)} tick label(s) drawn: {[t['text'] for t in labels]}"]
    try:
        values = [label_value(t["markup"]) for t in labels]
    except ValueError:
        return [f"{where}: tick labels that are not numbers: {[t['text'] for t in labels]}"]
    coordinate = "x" if axis_id.startswith("x") else "y"
    ordered = sorted(zip((t[coordinate] for t in labels), values, strict=True))
    positions = [p for p, _ in ordered]
    shown = [v for _, v in ordered]
    log = axis["type"] == "log"
    scaled = [math.log10(v) if log and v > 0 else v for v in shown]
    if log and any(v <= 0 for v in shown):
        return [f"{where}: a log axis labelled with {shown}"]
    steps = np.diff(scaled)
    problems = []
    if not (np.all(steps > 0) or np.all(steps < 0)):
        along = [t["text"] for t in sorted(labels, key=lambda t: t[coordinate])]
        problems.append(f"{where}: tick labels not monotone along the axis: {along}")
    elif np.ptp(steps) > 1e-6 * np.max(np.abs(steps)):
        problems.append(f"{where}: unevenly spaced tick values {shown}")
    elif not round_ticks(scaled, log):
        problems.append(f"{where}: tick values that are not round numbers: {[t['text'] for t in labels]}")
    gaps = np.diff(positions)
    if np.ptp(gaps) > PIXELS:
        problems.append(f"{where}: ticks unevenly spaced on screen (gaps {np.round(gaps, 1).tolist()} px)")
    lo, hi = sorted(axis["range"])
    inside = [lo - 1e-9 * (hi - lo) <= v <= hi + 1e-9 * (hi - lo) for v in scaled]
    if not all(inside):
        problems.append(f"{where}: tick labels {shown} outside the axis range {axis['range']}")
    return problems


def cut_curves(name: str, figure: go.Figure, axes: dict[str, dict[str, Any]]) -> list[str]:
    """Traces whose y values reach the edge of their y axis's range as drawn (a line there is cut in half)."""
    problems = []
    for trace in figure.data:
        if trace.type not in ("scatter", "scattergl") or trace.y is None:
            continue
        axis = axes[trace.yaxis or "y"]
        ys = [float(y) for y in trace.y if isinstance(y, int | float) and math.isfinite(y)]
        if axis["type"] == "log":
            ys = [math.log10(y) for y in ys if y > 0]
        lo, hi = sorted(axis["range"])
        if ys and not lo < min(ys) <= max(ys) < hi:
            problems.append(
                f"{name}: {trace.name!r} spans {min(ys):.4g}..{max(ys):.4g} on {trace.yaxis or 'y'}, whose range is "
                f"{axis['range']}"
            )
    return problems


@pytest.fixture(scope="session")
def browser() -> str:
    """Headless Chromium. Session-scoped and asked for first, so that pytest sets it up before the session's trained
    run: without a browser a test skips (or fails on CI) before training anything."""
    return chromium()


def drawn_axes(browser: str, figures: dict[str, go.Figure], tmp_path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Every figure drawn in headless Chromium; per figure, per axis id: type, range and tick labels."""
    payload = json.dumps({name: json.loads(figure.to_json()) for name, figure in figures.items()})
    page = tmp_path / "figures.html"
    page.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<script>{get_plotlyjs()}</script></head><body><pre id='ticks'></pre>"
        f"<script>var FIGURES = {payload};\n{_COLLECT}</script></body></html>",
        encoding="utf-8",
    )
    dom = render(browser, page, tmp_path)
    found = re.search(r"<pre id=\"ticks\">(.*?)</pre>", dom, re.DOTALL)
    assert found and found.group(1).strip(), "the page wrote no tick labels"
    text = html.unescape(found.group(1))
    assert not text.startswith("ERROR"), text
    return json.loads(text)


@pytest.fixture(scope="module")
def run_figures(grokked_run, tmp_path_factory) -> dict[str, go.Figure]:
    """Every figure of the analyses (LLC with a short sampler), the windowed DMD of the analysed fingerprints and
    the training curves of the grokked quickstart run, with its phases marked as ``grokscope analyze`` marks them."""
    run = grokked_run.run
    steps = run.steps()
    chosen = sorted({0, 10, 20, 30, 40, 50, 60, 80, 100, 200, 300, steps[-1]} & set(steps))
    out = tmp_path_factory.mktemp("figures_analysis")
    names = ["fourier", "neurons", "progress", "attention", "ablation", "gradients", "fingerprint"]
    report = analyze(run, names, steps=chosen, out_dir=out, progress=False)
    llc = analyze(
        run,
        ["llc"],
        steps=[0, 40, steps[-1]],
        out_dir=out,
        progress=False,
        options={"llc": {"num_chains": 2, "num_draws": 20, "num_burnin": 0}},
    )
    phases = report.summaries["progress"]
    metrics = run.metrics()
    figures: dict[str, go.Figure] = {}
    for name, rows in {**report.rows, **llc.rows}.items():
        figures.update(analysis_figures(name, rows, metrics, phases))
    # Windowed DMD of the analysed fingerprints (the log-prob quantiles at each chosen checkpoint).
    fingerprints = report.rows["fingerprint"]
    snapshots = np.array([r["log_prob"] for r in fingerprints])
    windows = windowed_dmd(snapshots, [r["step"] for r in fingerprints], window=6, stride=1, n_delays=2, rank=2)
    figures["dmd_windows"] = viz_dmd.figures(_spectrum_stub(), windows.to_dict(), metrics, phases)["dmd_windows"]
    figures["training_curves"] = mark_phases(training_curves(metrics), phases)
    return figures


def _spectrum_stub() -> dict[str, Any]:
    """A DMD result's fields that ``viz.dmd.figures`` reads for the spectrum (only the windows are checked here)."""
    return {
        "eigenvalues": {"re": [0.9], "im": [0.1]},
        "moduli": [0.905],
        "rank": 1,
        "n_delays": 2,
        "reconstruction_error": 0.1,
    }


@pytest.mark.slow
def test_two_axis_figures_have_their_own_right_axis(run_figures):
    assert set(run_figures) >= TWO_AXIS
    for name in TWO_AXIS:
        layout = run_figures[name].layout
        right = [k for k in layout if k.startswith("yaxis") and layout[k].overlaying]
        assert right, f"{name}: no second y axis"
        for key in right:
            axis = layout[key]
            # Their own ticks (not synchronised to the left axis's grid), their own range and no grid of their own.
            assert axis.tickmode == "linear" and axis.range is not None and axis.showgrid is False, (name, key)


@pytest.mark.slow
def test_every_axis_the_browser_draws_is_labelled_evenly_and_nothing_is_cut(browser, run_figures, tmp_path):
    drawn = drawn_axes(browser, run_figures, tmp_path)
    problems, checked = [], set()
    for name, axes in drawn.items():
        for axis_id, axis in axes.items():
            if axis["type"] not in ("linear", "log") or not axis["labels"]:
                continue  # a category axis (ablation labels), or one drawn without labels (shared x of a stack)
            problems += axis_problems(name, axis_id, axis)
            checked.add((name, axis_id))
        problems += cut_curves(name, run_figures[name], axes)
    assert len(checked) >= 40, sorted(checked)  # every figure's value axes, not a few
    assert not problems, "\n".join(problems)
    # The right axes were among those checked (not skipped for lack of labels).
    for name in TWO_AXIS:
        overlaid = [a for a, axis in drawn[name].items() if axis["overlaying"]]
        assert overlaid and all((name, a) in checked for a in overlaid), (name, overlaid)


@pytest.mark.slow
def test_the_checks_catch_the_old_defects(browser, run_figures, tmp_path):
    """The checks fail on what the figures used to be: a right axis with plotly's synchronised ticks over a log
    axis, a log axis with its minor digits, and an accuracy line on the top edge of a [0, 1] axis.

    The last is built from synthetic metrics that end at exactly 1.0: whether the session's run ends at 100% test
    accuracy depends on the machine (on some CPUs it ends at 99.62%, below the edge)."""
    old = go.Figure(run_figures["gradient_movement"])
    old.update_layout(
        yaxis={"type": "log", "autorange": True, "tickmode": None, "dtick": None, "tick0": None, "range": None},
        yaxis2={"range": [-1, 1], "tickmode": None, "dtick": None, "tick0": None, "showgrid": None},
    )
    clipped, padded = accuracy_beside_loss([0, 1]), accuracy_beside_loss(ACCURACY_AXIS["range"])
    drawn = drawn_axes(browser, {"old_movement": old, "clipped": clipped, "padded": padded}, tmp_path)
    problems = axis_problems("old_movement", "y2", drawn["old_movement"]["y2"])
    problems += axis_problems("old_movement", "y", drawn["old_movement"]["y"])
    assert any("y2: unevenly spaced" in p or "y2: tick labels not monotone" in p for p in problems), problems
    assert any("old_movement y:" in p for p in problems), problems
    assert any("'test accuracy'" in p for p in cut_curves("clipped", clipped, drawn["clipped"]))
    assert cut_curves("padded", padded, drawn["padded"]) == []  # the same line with the room the figures give it


def accuracy_beside_loss(accuracy_range: list[float]) -> go.Figure:
    """A loss on the left axis and a test accuracy that reaches exactly 1.0 on the right one, drawn over
    ``accuracy_range`` (as the fingerprint and gradient figures draw a run's accuracy beside their curves)."""
    metrics = [{"step": s, "test_acc": a} for s, a in zip(range(0, 500, 100), (0.02, 0.1, 0.6, 0.99, 1.0), strict=True)]
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    figure.add_scatter(x=[m["step"] for m in metrics], y=[4.0, 2.0, 1.0, 0.5, 0.25], name="loss")
    figure.add_trace(accuracy_trace(metrics), secondary_y=True)
    figure.update_yaxes(range=[0, 5], secondary_y=False)
    figure.update_yaxes(range=accuracy_range, secondary_y=True)
    return figure


@pytest.mark.parametrize(
    ("markup", "value"),
    [("0.25", 0.25), ("−0.5", -0.5), ("40%", 0.4), ("10<sup>−3</sup>", 1e-3), ("100µ", 1e-4), ("2k", 2000.0)],
)
def test_label_values(markup, value):
    assert label_value(markup) == pytest.approx(value)


def test_evenness_check_on_known_labels():
    def axis(values, positions, kind="linear", range_=(0, 1)):
        return {
            "type": kind,
            "range": list(range_),
            "labels": [
                {"text": str(v), "markup": str(v), "x": 0, "y": p} for v, p in zip(values, positions, strict=True)
            ],
        }

    assert axis_problems("f", "y", axis([0, 0.5, 1], [300, 200, 100], range_=(-0.1, 1.1))) == []
    assert (
        "unevenly spaced tick values"
        in axis_problems("f", "y", axis([0, 0.4, 1], [300, 200, 100], range_=(-0.1, 1.1)))[0]
    )
    assert "on screen" in axis_problems("f", "y", axis([0, 0.5, 1], [300, 190, 100], range_=(-0.1, 1.1)))[0]
    # plotly's own log ticks: minor digits between the decades.
    assert "not monotone" in axis_problems("f", "y", axis([2, 5, 0.01, 2], [400, 300, 200, 100], "log", (-3, -1)))[0]
    assert "outside the axis range" in axis_problems("f", "y", axis([0, 0.5, 1], [300, 200, 100], range_=(0, 0.9)))[0]
    assert axis_problems("f", "y", axis(["0.001", "0.01", "0.1"], [300, 200, 100], "log", (-3.1, -0.9))) == []
    # Synchronised ticks: evenly spaced, but not at round values.
    synced = axis(["76.33735μ", "532.3172μ", "0.003711965"], [300, 200, 100], "log", (-4.2, -2.3))
    assert "not round numbers" in axis_problems("f", "y2", synced)[0]
    assert "not round numbers" in axis_problems("f", "y2", axis([0.1, 0.3, 0.5], [300, 200, 100], range_=(0, 1)))[0]
    assert axis_problems("f", "x", axis([-0.5, -0.25, 0, 0.25], [0, 100, 200, 300], range_=(-0.6, 0.3))) == []


# Figure content that needs no browser ------------------------------------------------------------------------------
def test_phases_are_marked_on_every_panel_once():
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, specs=[[{"secondary_y": True}], [{}]])
    figure.add_scatter(x=[0, 100, 200], y=[1.0, 0.5, 0.1], row=1, col=1)
    figure.add_scatter(x=[0, 100, 200], y=[5.0, 3.0, 0.01], row=1, col=1, secondary_y=True)
    figure.add_scatter(x=[0, 100, 200], y=[0.1, 0.5, 1.0], row=2, col=1)
    figure.update_yaxes(title_text="test loss", type="log", row=1, col=1, secondary_y=True)
    figure.update_xaxes(title_text="step", row=2, col=1)
    phases = {"memorization_end": 50, "circuit_formation_end": 120, "cleanup_end": 180, "chance_loss": math.log(59)}
    for _ in range(2):  # marking again replaces the marks
        mark_phases(figure, phases)
    bands = [s for s in figure.layout.shapes if s.name == MARK and s.type == "rect"]
    assert sorted((s.xref, s.yref, s.x0, s.x1) for s in bands) == sorted(
        (x, f"{y} domain", x0, x1) for x, y in (("x", "y"), ("x2", "y3")) for x0, x1 in ((0, 50), (50, 120), (120, 180))
    )
    (chance,) = [s for s in figure.layout.shapes if s.type == "line"]
    assert chance.yref == "y2" and chance.y0 == pytest.approx(math.log(59))  # the loss axis is the right one
    (label,) = [a for a in figure.layout.annotations if a.text.startswith("chance")]
    assert label.y == pytest.approx(math.log10(math.log(59)))  # an annotation on a log axis is placed in decades
    assert sorted(a.text for a in figure.layout.annotations if a.yref == "y domain") == [
        "circuit formation",
        "cleanup",
        "memorization",
    ]


def test_ablation_bars_show_the_most_damaging_with_readable_labels():
    def ablation(component, target, delta, role="", method="zero"):
        return {
            "label": f"{component}:{','.join(map(str, target))}:{method}",
            "component": component,
            "method": method,
            "layer": 0,
            "target": target,
            "role": role,
            "delta_test_acc": delta,
            "test_acc": 1 + delta,
        }

    singles = [ablation("embed_frequencies", [k], -0.001 * k) for k in range(1, 30)]
    singles[19]["delta_test_acc"] = -0.5  # k = 20
    row = {
        "step": 100,
        "clean": {"test_acc": 1.0},
        "key_frequencies": [20],
        "ablations": [
            *[ablation("head", [h], -0.1 * h, method="mean") for h in range(4)],
            *singles,
            ablation("embed_frequencies", [20, 21], -0.9, role="key"),
            ablation("embed_frequencies", [1, 2], -0.02, role="control"),
        ],
    }
    figure = viz_ablation.figures([row], [])["ablation_bars"]
    bars = {trace.yaxis: trace for trace in figure.data}
    assert all(trace.orientation == "h" for trace in figure.data)
    panels = [a.text for a in figure.layout.annotations]
    assert panels[0] == "key frequencies vs as many others" and panels[1] == "heads"
    assert "8 most damaging of 29 (the other 21 change it by ≤ 2.2%)" in panels[2]
    single = bars["y3"]
    assert list(single.y) == [f"k = {k} (embedding)" for k in (20, 29, 28, 27, 26, 25, 24, 23)]
    assert list(single.x) == sorted(single.x)  # most damaging first (at the top: the axis is reversed)
    assert single.marker.color[0] == viz_ablation.ROLE_COLORS["key"] != single.marker.color[1]
    assert list(bars["y2"].y) == ["L0H3 (mean)", "L0H2 (mean)", "L0H1 (mean)", "L0H0 (mean)"]
    assert max(len(label) for trace in figure.data for label in trace.y) < 40


def test_attention_panels_use_the_legend_colours():
    heads = [{"label": f"L0H{h}", "mean_attention": {"a": 0.3, "b": 0.6, "=": 0.1}} for h in range(3)]
    rows = [{"step": s, "positions": ["a", "b", "="], "heads": heads, "score_fve": None} for s in (0, 10)]
    for row in rows:
        for h in row["heads"]:
            h["score_fve"] = [0.5, 0.5]
    from grokscope.viz import attention

    figure = attention.figures(rows, [{"step": 0, "test_acc": 0.0}, {"step": 10, "test_acc": 1.0}])[
        "attention_over_training"
    ]
    by_head: dict[str, set[str]] = {}
    for trace in figure.data:
        by_head.setdefault(trace.name, set()).add(trace.line.color)
    assert all(len(colors) == 1 for colors in by_head.values()), by_head
    assert len({next(iter(c)) for c in by_head.values()}) == len(by_head)  # one colour each
