"""``grokscope report PATH``: one self-contained HTML page for a run or an experiment, readable without a terminal.

A run's page tells the run's story in order, under a table of contents: what happened (the grokking sentence, the
phases and the summary), the training curves with the phases, then one section per kind of analysis (progress
measures, Fourier, neurons, attention, ablations, gradients, dynamics), each opening with one sentence of what it
shows and the numbers that matter (from the cached analysis rows), followed by its figures; the config last. An
experiment's page shows its results table first, then the statistics, every figure and the runs inside it.
Figures are gathered from the ``<name>.json`` that :func:`grokscope.viz.write.write_figures` writes beside each HTML
figure, and plotly.js is inlined once, so the page works offline. A small script records any JavaScript error in
``<html data-errors>`` (and the console), which is how the test suite checks the page in a real browser.

A damaged config, metrics or summary of a run is a one-line error (as for every command). Analysis results and
figures are caches that ``grokscope analyze`` can redo: a damaged one is left out of the page with a visible note.
"""

from __future__ import annotations

import contextlib
import csv
import html
import importlib
import io
import json
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from grokscope.errors import UserError
from grokscope.store import CONFIG_FILE, SUMMARY_FILE, Run, atomic_write_text, read_json, read_summary, read_text
from grokscope.training.summary import describe
from grokscope.viz.common import ACCURACY_AXIS, LEGEND_BELOW, log_axis, loss_trace, trace_values
from grokscope.viz.describe import describe_dmd, describe_over_training, describe_phases
from grokscope.viz.phases import mark_phases

REPORT_FILE = "report.html"
MAX_TABLE_ROWS = 200

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; line-height: 1.45; }
h1 { margin-bottom: .2rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2.2rem; }
.lead { font-size: 1.1rem; color: #444; } table { border-collapse: collapse; margin: .6rem 0; font-size: .9rem; }
td, th { border: 1px solid #ddd; padding: .25rem .55rem; text-align: left; } th { background: #f5f5f5; }
pre { background: #f7f7f7; padding: .8rem; overflow-x: auto; font-size: .85rem; } .figure { margin: 1rem 0; }
.note { color: #a15c00; }
nav.toc { background: #f7f7f7; border: 1px solid #e3e3e3; padding: .5rem 1rem; display: inline-block; }
nav.toc ol { margin: .3rem 0 0; padding-left: 1.4rem; }
"""
# Records every error (uncaught, rejected promise, console.error) so a headless browser can be asked about them.
_ERROR_PROBE = """
(function () {
  var errors = [];
  function note(message) { errors.push(String(message)); document.documentElement.dataset.errors = errors.join(" | "); }
  window.addEventListener("error", function (e) { note(e.message); });
  window.addEventListener("unhandledrejection", function (e) { note(e.reason); });
  var original = console.error;
  console.error = function () { note(Array.prototype.join.call(arguments, " ")); original.apply(console, arguments); };
})();
"""


def write_report(path: Path, out: Path | None = None) -> Path:
    """Write the report of the run or experiment directory ``path`` (default: ``path/report.html``)."""
    target = out or path / REPORT_FILE
    if target.suffix.lower() not in (".html", ".htm"):  # a slip such as --out runs/x/summary.json must not land
        raise UserError(f"--out {target}: a report is an .html file; give a path ending in .html")
    atomic_write_text(target, build_report(path))
    return target


def build_report(path: Path) -> str:
    """The report page of a run directory (it has a config.yaml) or an experiment directory, as HTML."""
    if not path.is_dir():
        raise UserError(f"{path}: not a directory (give a run or an experiment directory)")
    if (path / CONFIG_FILE).is_file():
        title, body = _run_page(Run.open(path))
    elif _is_experiment(path):
        title, body = _experiment_page(path)
    else:
        raise UserError(f"{path}: neither a run directory (no {CONFIG_FILE}) nor an experiment directory (no results)")
    return _page(title, body)


def _is_experiment(path: Path) -> bool:
    """Whether ``path`` holds what an experiment writes: figures, results.csv or a JSON object of results."""
    if (path / "figures").is_dir() or (path / "results.csv").is_file():
        return True
    return any(isinstance(_json_or_note(p)[0], dict) for p in sorted(path.glob("*.json")))


def _json_or_note(path: Path) -> tuple[Any, str | None]:
    """The JSON in ``path``, or None and the one-line reason it cannot be read."""
    try:
        return read_json(path), None
    except UserError as err:
        return None, str(err)


def _note(text: str) -> str:
    return f"<p class='note'>{html.escape(text)}</p>"


def _page(title: str, body: list[str]) -> str:
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en" data-errors="">',
            f"<head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_STYLE}</style>",
            f"<script>{_ERROR_PROBE}</script>",
            f"<script>{get_plotlyjs()}</script></head>",
            "<body>",
            *body,
            "</body></html>",
        ]
    )


def _figure(figure: go.Figure) -> str:
    return f"<div class='figure'>{pio.to_html(figure, full_html=False, include_plotlyjs=False)}</div>"


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>(empty)</p>"
    columns = list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(row.get(c)))}</td>" for c in columns) + "</tr>"
        for row in rows[:MAX_TABLE_ROWS]
    )
    more = f"<p>… {len(rows) - MAX_TABLE_ROWS} more rows</p>" if len(rows) > MAX_TABLE_ROWS else ""
    return f"<table><tr>{head}</tr>{body}</table>{more}"


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value)[:120]
    return str(value)


def _figures_in(folder: Path, phases: dict[str, Any] | None = None) -> dict[str, str]:
    """Every figure written under ``folder`` (its ``.json`` figure files) by name, in name order, as HTML, the phases
    marked on those over steps (again: a figure drawn before the phases were known, or by a command that did not
    pass them, gets them too); an unreadable one is a note in its place."""
    out = {}
    for path in sorted(folder.glob("*.json")):
        try:
            out[path.stem] = _figure(mark_phases(pio.from_json(read_text(path)), phases))
        except UserError as err:
            out[path.stem] = _note(f"{err}; figure left out")
        except (ValueError, TypeError, KeyError, AttributeError) as err:  # what plotly raises for a non-figure
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            out[path.stem] = _note(f"{path}: not a plotly figure ({first}); left out")
    return out


def training_curves(metrics: list[dict[str, Any]]) -> go.Figure:
    """Loss (log scale) and accuracy over training, train and test (and validation), one colour per split."""
    figure = make_subplots(rows=1, cols=2, horizontal_spacing=0.1)
    for split, color in (("train", "#1f77b4"), ("test", "#d62728"), ("val", "#2ca02c")):
        trace = loss_trace(metrics, split, {"color": color})
        if trace is None:
            continue
        figure.add_trace(trace, row=1, col=1)
        logged = [m for m in metrics if m.get(f"{split}_acc") is not None]
        figure.add_scatter(
            x=[m["step"] for m in logged],
            y=[m[f"{split}_acc"] for m in logged],
            row=1,
            col=2,
            name=f"{split} accuracy",
            line={"color": color, "dash": "dot"},
        )
    # Axis titles rather than panel titles: above the panels are the phase labels.
    figure.update_yaxes(title_text="cross-entropy loss", **log_axis(trace_values(figure, "y")), row=1, col=1)
    figure.update_yaxes(title_text="accuracy", **ACCURACY_AXIS, row=1, col=2)
    figure.update_xaxes(title_text="step")
    figure.update_layout(title="Training curves", height=460, legend=LEGEND_BELOW)
    return figure


@dataclass
class Section:
    """One section of a report: its heading (and anchor), one sentence of what it shows with the numbers that
    matter, and its content (tables, figures, notes) as HTML."""

    anchor: str
    title: str
    lead: str
    body: list[str] = field(default_factory=list)

    def html(self) -> list[str]:
        lead = f"<p class='lead'>{html.escape(self.lead)}</p>" if self.lead else ""
        return [f"<h2 id='{self.anchor}'>{html.escape(self.title)}</h2>", lead, *self.body]


def _contents(sections: list[Section]) -> str:
    items = "".join(f"<li><a href='#{s.anchor}'>{html.escape(s.title)}</a></li>" for s in sections)
    return f"<nav class='toc'><b>Contents</b><ol>{items}</ol></nav>"


# The analyses' sections of a run's report, in the order the story of a run is told: the circuit's progress
# measures first, then where it lives (Fourier, neurons, attention), what breaks it (ablations), how training moved
# the weights (gradients) and the dynamics of the whole (fingerprints, DMD, LLC). Each section shows the figures
# its analyses' viz modules declare (FIGURES), in that order.
NARRATIVE = (
    ("progress", "Progress measures", ("progress",)),
    ("fourier", "Fourier", ("fourier",)),
    ("neurons", "Neurons", ("neurons",)),
    ("attention", "Attention", ("attention",)),
    ("ablation", "Ablations", ("ablation",)),
    ("gradients", "Gradients", ("gradients",)),
    ("dynamics", "Dynamics: fingerprints, DMD and the learning coefficient", ("fingerprint", "dmd", "llc")),
)
SHOWS = {
    "progress": "Restricted and excluded loss beside the training loss, the logits' key-frequency terms, and the "
    "sparsity of the weights in frequency (Nanda et al. 2023).",
    "fourier": "How the embedding's norm spreads over the frequencies during training, and the final spectra.",
    "neurons": "How many MLP neurons specialise on one frequency during training.",
    "attention": "Where the answer position attends, per head, over training and over the inputs.",
    "ablation": "How much test accuracy each ablation costs at the last checkpoint, and key vs other frequencies "
    "ablated over training.",
    "gradients": "How far the weights move per training step and how aligned consecutive gradients are.",
    "dynamics": "The distribution of the model's log-probabilities over training, its linear dynamics (DMD) and "
    "the local learning coefficient.",
}


def _figures_of(name: str) -> tuple[str, ...]:
    try:
        return importlib.import_module(f"grokscope.viz.{name}").FIGURES
    except (ModuleNotFoundError, AttributeError):
        return ()


def _what_happened(run: Run, summary: dict[str, Any] | None, phases: dict[str, Any] | None) -> Section:
    section = Section("what-happened", "What happened", "")
    if summary is None:
        section.lead = "Training has not finished (no summary.json yet)."
        return section
    try:
        section.lead = describe(summary) + "."
    except (KeyError, TypeError) as err:  # a partial summary: the facts it has are still shown
        why = f"no {err} field" if isinstance(err, KeyError) else "its fields do not go together"
        section.body.append(_note(f"{run.root / SUMMARY_FILE}: {why}, so no grokking sentence"))
    if phases:
        section.body.append(f"<p>{html.escape(describe_phases(phases))} ({html.escape(phases.get('rule', ''))}).</p>")
    facts = {
        k: summary.get(k)
        for k in (
            "memorization_step",
            "generalization_step",
            "generalization_ratio",
            "regime",
            "steps_trained",
            "wall_time_s",
            "device",
            "accelerators",
        )
    }
    section.body += [_table([facts]), _table([summary["final"]]) if isinstance(summary.get("final"), dict) else ""]
    return section


def _training_section(metrics: list[dict[str, Any]], phases: dict[str, Any] | None) -> Section:
    last = metrics[-1]
    finals = ", ".join(
        f"{what} {_cell(last[key])}"
        for key, what in (
            ("train_loss", "train loss"),
            ("test_loss", "test loss"),
            ("train_acc", "train accuracy"),
            ("test_acc", "test accuracy"),
        )
        if isinstance(last.get(key), int | float)
    )
    lead = f"Loss (log scale) and accuracy of each split over {last['step']} steps; at the last logged step {finals}."
    if phases:
        lead += f" Shaded: the phases; dotted: the chance loss ln p = {phases['chance_loss']:.2f}."
    return Section("training", "Training curves", lead, [_figure(mark_phases(training_curves(metrics), phases))])


def _analysis_sections(run: Run, phases: dict[str, Any] | None) -> list[Section]:
    from grokscope.analysis.runner import read_rows, registry

    specs = registry()
    figures = _figures_in(run.analysis_dir / "figures", phases)
    sections = []
    for anchor, title, names in NARRATIVE:
        section = Section(anchor, title, "")
        sentences = []
        for name in names:
            sentence, notes = _analysis_sentence(run, name, specs, read_rows)
            sentences += [sentence] if sentence else []
            section.body += [_note(n) for n in notes]
            section.body += [figures.pop(stem) for stem in _figures_of(name) if stem in figures]
        if not (sentences or section.body):
            continue
        section.lead = " ".join([SHOWS[anchor], *sentences])
        sections.append(section)
    if figures:  # drawn by an analysis the narrative does not name (or an older version's)
        sections.append(Section("other-figures", "Other figures", "Figures of other analyses.", list(figures.values())))
    return sections


def _analysis_sentence(run: Run, name: str, specs: dict[str, Any], read_rows: Any) -> tuple[str, list[str]]:
    """The section sentence of analysis ``name`` from its cached rows (``dmd.json`` for dmd), and notes on damaged
    files."""
    path = run.analysis_dir / f"{name}.json"
    if name == "dmd":
        data, note = _json_or_note(path) if path.is_file() else (None, None)
        if note is not None:
            return "", [f"{note}; not shown"]
        if not isinstance(data, dict):
            return "", []
        with contextlib.suppress(KeyError, TypeError, ValueError, AttributeError, IndexError):
            return describe_dmd(data["result"], data.get("windows")), []
        return "", []
    if name not in specs:
        return "", []
    rows, note = read_rows(path, specs[name])
    notes = [f"{note}; not shown"] if note else []
    if not rows:
        return "", notes
    ordered = [rows[step] for step in sorted(rows)]
    # A row layout the sentence does not know (another version's) gets none; its figures still show.
    with contextlib.suppress(KeyError, TypeError, ValueError, AttributeError, IndexError, ZeroDivisionError):
        return describe_over_training(name, ordered), notes
    return "", notes


def _run_page(run: Run) -> tuple[str, list[str]]:
    from grokscope.analysis.runner import analysis_summary

    summary, metrics = run.summary(), run.metrics()
    phases = analysis_summary(run, "progress")
    title = f"grokscope run {run.config.name}"
    sections = [_what_happened(run, summary, phases)]
    if metrics:
        sections.append(_training_section(metrics, phases))
    if run.analysis_dir.is_dir():
        sections += _analysis_sections(run, phases)
    if run.full_task.is_multi:  # each operation's curves and analyses (analysis/<operation>/), told apart by name
        for op in run.full_task.operation_names:
            view = run.for_operation(op)
            op_phases = analysis_summary(view, "progress")
            own = [_training_section(view.metrics(), op_phases)] if metrics else []
            for section in [*own, *(_analysis_sections(view, op_phases) if view.analysis_dir.is_dir() else [])]:
                section.anchor, section.title = f"{op}-{section.anchor}", f"{op}: {section.title}"
                sections.append(section)
    sections.append(
        Section("config", "Config", "The resolved config.", [f"<pre>{html.escape(run.config.to_yaml())}</pre>"])
    )
    body = [f"<h1>{html.escape(title)}</h1>", f"<p class='lead'>{html.escape(run.task.describe())}</p>"]
    body += [_contents(sections)] + [part for s in sections for part in s.html()]
    return title, body


def _experiment_page(root: Path) -> tuple[str, list[str]]:
    config: dict[str, Any] = {}
    notes: list[str] = []
    for path in sorted(root.glob("*.json")):
        data, note = _json_or_note(path)
        if note is not None:
            notes.append(f"{note}; left out")
        elif isinstance(data, dict) and isinstance(data.get("config"), dict) and not config:
            config = data["config"]
    kind = config.get("kind", "experiment")
    title = f"grokscope {kind} experiment {config.get('name', root.name)}"
    sections = []
    if (root / "results.csv").is_file():
        sections.append(_results_section(root / "results.csv"))
    if (root / "stats.json").is_file():
        stats = _stats(root / "stats.json")
        conditions = _stats_conditions(root / "stats.json")
        lead = (
            "Steps to each accuracy threshold per condition (runs that never reached it counted as censored) and "
            "the comparisons between conditions"
        )
        lead += f", over {len(conditions)} conditions ({', '.join(conditions)})." if conditions else "."
        sections.append(Section("statistics", "Statistics", lead, stats))
    figures = list(_figures_in(root / "figures").values())
    if figures:
        sections.append(Section("figures", "Figures", f"The experiment's {len(figures)} figures.", figures))
    runs = sorted(p.parent for p in root.rglob(SUMMARY_FILE))
    if runs:
        sections.append(_runs_section(root, runs))
    if config:
        sections.append(
            Section(
                "config",
                "Config",
                "The experiment's config.",
                [f"<pre>{html.escape(json.dumps(config, indent=2))}</pre>"],
            )
        )
    body = [f"<h1>{html.escape(title)}</h1>", *map(_note, notes), _contents(sections)]
    return title, body + [part for s in sections for part in s.html()]


def _results_section(path: Path) -> Section:
    try:
        rows = list(csv.DictReader(io.StringIO(read_text(path))))
    except UserError as err:
        return Section("results", "Results", "", [_note(f"{err}; results left out")])
    except csv.Error as err:
        return Section("results", "Results", "", [_note(f"{path}: not a CSV table ({err}); results left out")])
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lead = f"What the experiment measured: {len(rows)} rows of {', '.join(columns) or 'no columns'}."
    return Section("results", "Results", lead, [_table(rows)])


def _stats_conditions(path: Path) -> list[str]:
    stats, _ = _json_or_note(path)
    described = stats.get("describe") if isinstance(stats, dict) else None
    if not isinstance(described, dict):
        return []
    return list(dict.fromkeys(c for groups in described.values() if isinstance(groups, dict) for c in groups))


def _runs_section(root: Path, runs: list[Path]) -> Section:
    rows, notes = [], []
    for run_dir in runs:
        try:
            s = read_summary(run_dir / SUMMARY_FILE)
        except UserError as err:  # one damaged run does not hide the others
            notes.append(_note(f"{err}; run left out of the table"))
            continue
        final = s.get("final") or {}
        rows.append(
            {
                "run": str(run_dir.relative_to(root)),
                "regime": s.get("regime"),
                "generalization_step": s.get("generalization_step"),
                "test_acc": final.get("test_acc"),
            }
        )
    regimes = Counter(str(r["regime"]).replace("_", " ") for r in rows if r["regime"])
    steps = sorted(r["generalization_step"] for r in rows if isinstance(r["generalization_step"], int | float))
    unread = f"; {len(runs) - len(rows)} unreadable" if len(rows) < len(runs) else ""
    lead = f"Every run inside the experiment ({len(rows)}{unread})"
    if regimes:
        lead += ": " + ", ".join(f"{n} {regime}" for regime, n in regimes.most_common())
    if steps:
        lead += f"; median generalization step {statistics.median(steps):g} over the {len(steps)} that generalized"
    return Section("runs", f"Runs ({len(rows)})", lead + ".", [*notes, _table(rows)])


def _records(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, dict) for v in value)


def _stats(path: Path) -> list[str]:
    """The statistics tables of ``stats.json``: ``describe`` (threshold -> condition -> statistics) and ``compare``
    (threshold -> rows), then the other sections by their shape (:func:`_more_stats`); a layout other than that is a
    note."""
    stats, note = _json_or_note(path)
    if note is not None:
        return [_note(f"{note}; statistics left out")]
    if not isinstance(stats, dict) or not _threshold_shape(stats.get("describe", {}), stats.get("compare", {})):
        return [_note(f"{path}: not the statistics an experiment writes (describe, compare); left out")]
    out = _threshold_tables(stats.get("describe", {}), stats.get("compare", {}), "")
    return out + _more_stats({k: v for k, v in stats.items() if k not in ("describe", "compare")})


def _threshold_shape(described: Any, compared: Any) -> bool:
    return (
        isinstance(described, dict)
        and all(isinstance(g, dict) and all(isinstance(d, dict) for d in g.values()) for g in described.values())
        and isinstance(compared, dict)
        and all(_records(pairs) for pairs in compared.values())
    )


def _threshold_tables(described: dict[str, Any], compared: dict[str, Any], prefix: str) -> list[str]:
    out = []
    for threshold, groups in described.items():
        out += [
            f"<h3>{html.escape(prefix)}Steps to {html.escape(threshold)}</h3>",
            _table(
                [{"condition": c, **{k: v for k, v in d.items() if not isinstance(v, list)}} for c, d in groups.items()]
            ),
        ]
    for threshold, pairs in compared.items():
        out += [f"<h3>{html.escape(prefix)}Comparisons at {html.escape(threshold)}</h3>", _table(pairs)]
    return out


def _spread_table(value: Any) -> bool:
    """``{group: {measure: {"mean": ..., ...}}}``: a mean ± sd per group and measure."""
    return (
        isinstance(value, dict)
        and bool(value)
        and all(
            isinstance(g, dict) and all(isinstance(m, dict) and "mean" in m for m in g.values()) for g in value.values()
        )
    )


def _mean_sd_cell(m: dict[str, Any]) -> str:
    sd = m.get("sd")
    return _cell(m.get("mean")) + ("" if sd is None else f" ± {_cell(sd)}") + f" (n={_cell(m.get('n'))})"


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float)


def _more_stats(sections: dict[str, Any], prefix: str = "") -> list[str]:
    """The other sections of ``stats.json`` by their shape: a list of rows is a table, ``{threshold: rows}`` a
    table per threshold, ``{group: {measure: mean/sd}}`` a mean ± sd table, a nested describe/compare its tables,
    a flat object a one-row table; plain values are gathered in one row, anything else is shown as JSON."""
    out, plain = [], {}
    for key, value in sections.items():
        title = html.escape(prefix + key.replace("_", " "))
        if _scalar(value):
            plain[key] = value
        elif _records(value):
            out += [f"<h3>{title}</h3>", _table(value)] if value else []
        elif not isinstance(value, dict):
            out += [f"<h3>{title}</h3>", f"<pre>{html.escape(json.dumps(value, indent=1)[:4000])}</pre>"]
        elif _spread_table(value):
            rows = [{"condition": g, **{k: _mean_sd_cell(m) for k, m in ms.items()}} for g, ms in value.items()]
            out += [f"<h3>{title} (mean ± sd over seeds)</h3>", _table(rows)]
        elif value and all(_records(v) for v in value.values()):
            out += [f"<h3>{title} at {html.escape(k)}</h3>{_table(rows)}" for k, rows in value.items() if rows]
        elif "describe" in value and _threshold_shape(value["describe"], value.get("compare", {})):
            out += _threshold_tables(value["describe"], value.get("compare", {}), f"{prefix}{key}: ")
            out += _more_stats({k: v for k, v in value.items() if k not in ("describe", "compare")}, f"{key} ")
        elif value and all(_scalar(v) for v in value.values()):
            out += [f"<h3>{title}</h3>", _table([value])]
        elif value:
            out += [f"<h3>{title}</h3>", f"<pre>{html.escape(json.dumps(value, indent=1)[:4000])}</pre>"]
    if plain:
        out += [f"<h3>{html.escape(prefix)}values</h3>" if prefix else "<h3>Other values</h3>", _table([plain])]
    return out
