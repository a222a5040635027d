"""Run analyses across a run's checkpoints, caching per checkpoint, and write JSON, CSV tables and figures.

``analysis/<name>.json`` is a list with one object per analysed checkpoint (``step`` plus the result's fields).
A checkpoint already in that file is not analysed again, so re-running on a run that has grown only analyses the
new checkpoints. Large per-checkpoint tables go to ``analysis/<name>.<table>.csv`` with a ``step`` column, figures to
``analysis/figures/<figure>.html`` (plotly, with its JavaScript written once beside them, so they work offline).

Key frequencies flow from ``fourier`` into ``progress`` and ``ablation``; ``gradients`` is given the previously
analysed checkpoint so it can report movement and gradient alignment between checkpoints. A module may name a
costly option (``LATEST_ONLY_OPTION``: attention heatmaps, the per-frequency ablation sweep) that the runner turns
on for the latest analysed checkpoint only.
"""

from __future__ import annotations

import csv
import importlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from grokscope.analysis.common import answer_activations, require_grid
from grokscope.errors import UserError
from grokscope.store import ANALYSIS_DIR, Run, atomic_write_text, read_json, write_json
from grokscope.tasks import ModularTask
from grokscope.viz.write import write_figures as write_figure_files

ANALYSES = ("fourier", "neurons", "progress", "attention", "ablation", "gradients", "fingerprint", "llc")
# What --all runs: everything but the LLC, which is slow and needs the optional devinterp extra.
DEFAULT_ANALYSES = tuple(name for name in ANALYSES if name != "llc")
FIGURES_DIR = "figures"
_USES_KEY_FREQUENCIES = ("progress", "ablation")
_USES_ACTIVATIONS = ("fourier", "neurons", "progress")


def analysis_module(name: str) -> ModuleType:
    if name not in ANALYSES:
        raise UserError(f"unknown analysis {name!r} (known: {', '.join(ANALYSES)})")
    return importlib.import_module(f"grokscope.analysis.{name}")


@dataclass
class AnalysisReport:
    """What :func:`analyze` did: rows per analysis (all cached + new), the selected steps, the newly analysed ones,
    analyses skipped as not applicable to the task (with the reason), and the files written."""

    rows: dict[str, list[dict[str, Any]]]
    selected: list[int]
    computed: dict[str, list[int]]
    skipped: dict[str, str] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def latest(self, name: str) -> dict[str, Any] | None:
        """The row of the latest selected step."""
        return next((r for r in self.rows.get(name, []) if r["step"] == self.selected[-1]), None)

    def from_cache(self, name: str) -> int:
        """How many selected steps were read from the cache rather than analysed now."""
        return len(self.selected) - len(self.computed.get(name, []))


def not_applicable(name: str, task: ModularTask) -> str | None:
    """Why an analysis cannot run on ``task`` (it needs the full (a, b) grid, or an operation it defines), or None."""
    module = analysis_module(name)
    try:
        if getattr(module, "NEEDS_GRID", False):
            require_grid(task, name)
    except UserError as err:
        return str(err)
    operations = getattr(module, "OPERATIONS", None)
    if operations is not None and task.operation.name not in operations:
        return f"{name}: defined for {', '.join(operations)}, not {task.operation.name}"
    return None


def select_steps(available: Sequence[int], steps: Sequence[int] | None = None, every: int | None = None) -> list[int]:
    """Checkpoint steps to analyse: the listed ones (each must exist), every ``every``-th step, or all."""
    if not available:
        raise UserError("no checkpoints to analyse")
    if steps:
        missing = sorted(set(steps) - set(available))
        if missing:
            raise UserError(f"--steps: no checkpoint at step {missing[0]} (have {available[0]}..{available[-1]})")
        return sorted(set(steps))
    if every:
        chosen = [s for s in available if s % every == 0]
        return sorted(set(chosen) | {available[-1]})
    return list(available)


def _read_rows(path: Path) -> dict[int, dict[str, Any]]:
    if not path.is_file():
        return {}
    rows = read_json(path)
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "step" in r for r in rows):
        raise UserError(f"{path}: not an analysis file (expected a list of objects with a step)")
    return {int(r["step"]): r for r in rows}


def _write_table(path: Path, new_rows: dict[int, list[dict[str, Any]]]) -> None:
    """Merge one table's rows for the newly analysed steps into its CSV (rows of other steps are kept)."""
    kept: list[dict[str, Any]] = []
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as f:
            kept = [row for row in csv.DictReader(f) if int(row["step"]) not in new_rows]
    rows = kept + [{"step": step, **row} for step, rows in new_rows.items() for row in rows]
    rows.sort(key=lambda r: int(r["step"]))
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def write_figures(name: str, rows: list[dict[str, Any]], metrics: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Render an analysis's figures into ``out_dir/figures`` (offline HTML)."""
    viz = importlib.import_module(f"grokscope.viz.{name}")
    return write_figure_files(viz.figures(rows, metrics), out_dir / FIGURES_DIR)


def analyze(
    run: Run,
    names: Sequence[str],
    *,
    steps: Sequence[int] | None = None,
    every: int | None = None,
    out_dir: Path | None = None,
    device: str = "cpu",
    figures: bool = True,
    progress: bool = True,
    skip_inapplicable: bool = False,
) -> AnalysisReport:
    """Run the named analyses on the selected checkpoints of ``run``; see the module docstring for the outputs.

    ``skip_inapplicable`` leaves out (and reports) analyses the task does not support, as when every analysis was
    asked for; otherwise such an analysis is a :class:`UserError`.
    """
    skipped = {}
    if skip_inapplicable:
        skipped = {n: reason for n in names if (reason := not_applicable(n, run.task)) is not None}
        names = [n for n in names if n not in skipped]
    modules = {name: analysis_module(name) for name in names}
    out_dir = Path(out_dir) if out_dir is not None else run.root / ANALYSIS_DIR
    selected = select_steps(run.steps(), steps, every)
    task, split = run.task, run.split()
    cache = {name: _read_rows(out_dir / f"{name}.json") for name in names}
    tables: dict[str, dict[str, dict[int, list[dict[str, Any]]]]] = {name: {} for name in names}
    computed: dict[str, list[int]] = {name: [] for name in names}
    last = selected[-1]

    def needed(step: int) -> list[str]:
        """Analyses missing at ``step``, and at the latest step those whose latest-only extras are missing."""
        latest_only = {n: getattr(m, "LATEST_ONLY_KEY", None) for n, m in modules.items()}
        previous_step = _previous(step)
        return [
            n
            for n in names
            if step not in cache[n]
            or (step == last and latest_only[n] and not cache[n][step].get(latest_only[n]))
            # Movement and alignment are relative to the previous selected step: a different one means new numbers.
            or (n == "gradients" and cache[n][step].get("previous_step") != previous_step)
        ]

    def _previous(step: int) -> int | None:
        index = selected.index(step)
        return selected[index - 1] if index > 0 else None

    previous: tuple[int, Any] | None = None  # (step, model) of the previous selected checkpoint, for gradients
    previous_gradients: dict[int, Any] = {}
    bar = Progress(
        TextColumn("[bold]analyze"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), disable=not progress
    )
    try:
        with bar:
            task_id = bar.add_task("", total=len(selected))
            for index, step in enumerate(selected):
                todo = needed(step)
                if todo:
                    model = run.load_model(step, device=device)
                    # One answer-position forward pass serves every analysis of this checkpoint that reads it.
                    shared = {}
                    if any(n in todo for n in _USES_ACTIVATIONS) or (
                        any(n in todo for n in _USES_KEY_FREQUENCIES) and step not in cache.get("fourier", {})
                    ):
                        shared["activations"] = answer_activations(model, task)
                    results: dict[str, Any] = {}
                    if "neurons" in todo:  # first, so the Fourier neuron rule reuses it rather than recomputing it
                        results["neurons"] = modules["neurons"].compute(model, task, split=split, **shared)
                    if "fourier" in todo:
                        results["fourier"] = modules["fourier"].compute(
                            model, task, split=split, neurons_result=results.get("neurons"), **shared
                        )
                    key_frequencies = None
                    if any(n in todo for n in _USES_KEY_FREQUENCIES):
                        key_frequencies = _key_frequencies(step, model, task, results, cache, shared)
                    for name in todo:
                        kwargs: dict[str, Any] = {"split": split}
                        if name in _USES_ACTIVATIONS:
                            kwargs.update(shared)
                        if name in _USES_KEY_FREQUENCIES:
                            kwargs["key_frequencies"] = key_frequencies
                        if hasattr(modules[name], "LATEST_ONLY_OPTION"):
                            # Costly extras (attention heatmaps, the per-frequency ablation sweep) for the latest only.
                            kwargs[modules[name].LATEST_ONLY_OPTION] = step == last
                        if name == "gradients" and index > 0:
                            prev_step = selected[index - 1]
                            if previous is None or previous[0] != prev_step:
                                previous = (prev_step, run.load_model(prev_step, device=device))
                            kwargs["previous"] = previous[1]
                            kwargs["previous_gradients"] = previous_gradients.get(prev_step)
                        if name not in results:
                            results[name] = modules[name].compute(model, task, **kwargs)
                        result = results[name]
                        cache[name][step] = {"step": step, **result.to_dict()}
                        if name == "gradients":
                            cache[name][step]["previous_step"] = _previous(step)
                        if name == "gradients":
                            previous_gradients = {step: result.gradients}
                        for table, rows in (result.tables() if hasattr(result, "tables") else {}).items():
                            tables[name].setdefault(table, {})[step] = rows
                        computed[name].append(step)
                    previous = (step, model)
                bar.advance(task_id)
    finally:
        files = _save(cache, tables, computed, out_dir)
    rows = {name: [cache[name][s] for s in sorted(cache[name])] for name in names}
    report = AnalysisReport(rows=rows, selected=selected, computed=computed, skipped=skipped, files=files)
    if figures:
        metrics = run.metrics()
        for name in names:
            if rows[name]:
                report.files += write_figures(name, rows[name], metrics, out_dir)
    return report


def _key_frequencies(step: int, model, task, results: dict[str, Any], cache, shared: dict[str, Any]) -> list[int]:
    """Key frequencies at ``step``: from this step's Fourier result, else from the Fourier cache, else computed."""
    if "fourier" in results:
        return list(results["fourier"].key_frequencies)
    cached = cache.get("fourier", {}).get(step)
    if cached is not None:
        return list(cached["key_frequencies"])
    return analysis_module("fourier").key_frequencies(model, task, **shared)


def _save(cache, tables, computed, out_dir: Path) -> list[Path]:
    """Write every analysis that gained rows: its JSON list and its tables."""
    files = []
    for name, steps in computed.items():
        if not steps:
            continue
        # Tables first: the JSON marks a step as analysed, so it must not name steps whose tables are missing.
        for table, by_step in tables[name].items():
            table_path = out_dir / f"{name}.{table}.csv"
            _write_table(table_path, by_step)
            files.append(table_path)
        path = out_dir / f"{name}.json"
        write_json(path, [cache[name][s] for s in sorted(cache[name])])
        files.append(path)
    return files


def describe_row(name: str, row: dict[str, Any]) -> str:
    """One line of the most telling numbers of an analysis result."""

    def split_of(scores: dict) -> str:
        return "test" if scores.get("test") is not None else "all"

    if name == "fourier":
        rules = "; ".join(f"{rule} {found}" for rule, found in row["rules"].items())
        return f"key frequencies {row['key_frequencies']} ({rules})"
    if name == "neurons":
        return (
            f"{row['fraction_clustered']:.0%} of neurons clustered (FVE >= {row['cluster_threshold']}) on "
            f"{row['n_cluster_frequencies']} frequencies; mean max FVE {row['mean_max_fve']:.2f}"
        )
    if name == "progress":
        s = split_of(row["full_loss"])
        return (
            f"{s} loss {row['full_loss'][s]:.3g}, restricted to {row['key_frequencies']} {row['restricted_loss'][s]:.3g}, "
            f"excluding them {row['excluded_loss'][s]:.3g}; Gini W_E {row['gini_embed']:.2f}"
        )
    if name == "attention":
        return "; ".join(
            f"{h['label']} attends " + " ".join(f"{k} {v:.2f}" for k, v in h["mean_attention"].items())
            for h in row["heads"]
        )
    if name == "ablation":
        roles = {r["role"]: r for r in row["ablations"] if r["role"] and r["component"] == "embed_frequencies"}
        clean = f"clean test acc {row['clean']['test_acc']:.1%}"
        if "key" in roles and "control" in roles:
            return (
                f"{clean}; key frequencies ablated {roles['key']['test_acc']:.1%}, "
                f"as many others {roles['control']['test_acc']:.1%}"
            )
        worst = min(row["ablations"], key=lambda r: r["test_acc"], default=None)
        return clean + (f"; most damaging {worst['label']} -> {worst['test_acc']:.1%}" if worst else "")
    if name == "llc":
        state = "converged" if row["converged"] else "NOT converged (see r_hat, spread, drift)"
        return f"LLC {row['llc_mean']:.1f} ± {row['llc_std']:.1f} over {len(row['llc_per_chain'])} chains, {state}"
    if name == "fingerprint":
        median = row["log_prob"][len(row["log_prob"]) // 2]
        return f"median log p(answer) {median:.3g}, q0.05 {row['log_prob'][0]:.3g}"
    if name == "gradients":
        moved = row.get("update_ratio_total")
        extra = f", moved {moved:.3g} of its norm since the previous checkpoint" if moved is not None else ""
        return f"training loss {row['loss']:.3g}, gradient norm {row['grad_norm']:.3g}{extra}"
    return ""
