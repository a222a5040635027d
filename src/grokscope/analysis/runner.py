"""Run analyses across a run's checkpoints from their specs, caching per checkpoint.

``analysis/<name>.json`` is a list with one object per analysed checkpoint (``step`` plus the result's fields and
the inputs the runner fed it: ``key_reference``, ``previous_step``, ``options``). A cached row is reused only when
those match what this call would feed, so re-running on a grown run analyses only the new checkpoints and results
computed against different key sets never mix. Per-checkpoint tables go to ``analysis/<name>.<table>.parquet``
with a ``step`` column, what a run's rows add up to (the progress phases) to ``analysis/<name>.summary.json``.

The runner knows analyses only through their :class:`~grokscope.analysis.spec.AnalysisSpec`: every module of
``grokscope.analysis`` with a ``SPEC`` is an analysis. Measures that take key frequencies get one **reference key
set** for the whole run: by default the final analysed checkpoint's (Nanda et al. 2023's protocol), or those of a
given step, or given ones, or each checkpoint's own (``key_from="each"``).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from grokscope.analysis.common import answer_activations, jsonable, require_grid
from grokscope.analysis.spec import AnalysisSpec, rows_frame
from grokscope.errors import UserError
from grokscope.store import ANALYSIS_DIR, Run, atomic_write, read_json, write_json
from grokscope.tasks import ModularTask

TABLE_SUFFIX = ".parquet"
SUMMARY_SUFFIX = ".summary.json"


def registry() -> dict[str, AnalysisSpec]:
    """Every analysis: the ``SPEC`` of each module of ``grokscope.analysis`` that declares one, in module order."""
    package = importlib.import_module("grokscope.analysis")
    specs = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        spec = getattr(importlib.import_module(f"grokscope.analysis.{info.name}"), "SPEC", None)
        if isinstance(spec, AnalysisSpec):
            specs[spec.name] = spec
    return _ordered(specs)


def _ordered(specs: dict[str, AnalysisSpec]) -> dict[str, AnalysisSpec]:
    """``specs`` with every analysis after those it ``uses`` (a depth-first topological order)."""
    ordered: dict[str, AnalysisSpec] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            raise ValueError(f"analyses use each other in a cycle: {' -> '.join((*path, name))}")
        if name in ordered or name not in specs:
            return
        for used in specs[name].uses:
            visit(used, (*path, name))
        ordered[name] = specs[name]

    for name in specs:
        visit(name, ())
    return ordered


def analysis_spec(name: str) -> AnalysisSpec:
    specs = registry()
    if name not in specs:
        raise UserError(f"unknown analysis {name!r} (known: {', '.join(specs)})")
    return specs[name]


def default_analyses() -> list[str]:
    """What ``--all`` runs: every analysis whose spec is ``in_all`` (all but the slow LLC)."""
    return [name for name, spec in registry().items() if spec.in_all]


def not_applicable(name: str, task: ModularTask) -> str | None:
    """Why an analysis cannot run on ``task`` (it needs the full (a, b) grid, or an operation it defines), or None."""
    spec = analysis_spec(name)
    if spec.needs_grid:
        try:
            require_grid(task, name)
        except UserError as err:
            return str(err)
    if spec.operations is not None and task.operation.name not in spec.operations:
        return f"{name}: defined for {', '.join(spec.operations)}, not {task.operation.name}"
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


@dataclass(frozen=True)
class KeyReference:
    """The key set fed to every checkpoint (``frequencies`` None: each checkpoint's own) and where it came from."""

    frequencies: list[int] | None
    label: str  # "final:<step>", "step:<step>", "given" or "each"


def parse_key_from(text: str | int) -> str | int:
    """``final``, ``each`` or a checkpoint step."""
    if isinstance(text, int) or str(text).isdigit():
        return int(text)
    if text not in ("final", "each"):
        raise UserError(f"--key-from {text!r}: expected final, each or a checkpoint step")
    return str(text)


def _read_rows(path: Path) -> dict[int, dict[str, Any]]:
    if not path.is_file():
        return {}
    rows = read_json(path)
    if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("step"), int) for r in rows):
        raise UserError(f"{path}: not an analysis file (expected a list of objects with an integer step)")
    return {r["step"]: r for r in rows}


def _write_table(path: Path, new_rows: dict[int, list[dict[str, Any]]]) -> None:
    """Merge one table's rows for the newly analysed steps into its parquet file (rows of other steps are kept)."""
    fresh = pd.DataFrame([{"step": step, **row} for step, rows in new_rows.items() for row in rows])
    if path.is_file():
        try:
            kept = pd.read_parquet(path)
        except Exception as err:  # pyarrow raises several types for a damaged file
            raise UserError(f"{path}: not a readable parquet table ({err})") from None
        fresh = pd.concat([kept[~kept["step"].isin(list(new_rows))], fresh], ignore_index=True)
    fresh = fresh.sort_values("step", kind="stable").reset_index(drop=True)
    atomic_write(path, lambda tmp: fresh.to_parquet(tmp, index=False))


@dataclass
class AnalysisReport:
    """What :func:`analyze` did: rows per analysis (all cached + new), the selected steps, the newly analysed ones,
    analyses skipped as not applicable to the task (with the reason), summaries and the files written."""

    rows: dict[str, list[dict[str, Any]]]
    selected: list[int]
    computed: dict[str, list[int]]
    skipped: dict[str, str] = field(default_factory=dict)
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    key_reference: KeyReference | None = None

    def latest(self, name: str) -> dict[str, Any] | None:
        """The row of the latest selected step."""
        return next((r for r in self.rows.get(name, []) if r["step"] == self.selected[-1]), None)

    def from_cache(self, name: str) -> int:
        """How many selected steps were read from the cache rather than analysed now."""
        return len(self.selected) - len(self.computed.get(name, []))


class _Checkpoint:
    """One checkpoint's model and shared forward pass, loaded on first use."""

    def __init__(self, run: Run, step: int, device: str) -> None:
        self.run, self.step, self.device = run, step, device
        self._model = self._activations = None

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = self.run.load_model(self.step, device=self.device)
        return self._model

    @property
    def activations(self) -> Any:
        if self._activations is None:
            self._activations = answer_activations(self.model, self.run.task)
        return self._activations


def _key_reference(
    run: Run,
    selected: list[int],
    given: Sequence[int] | None,
    key_from: str | int,
    load: Any,
) -> KeyReference | None:
    """The reference key set, from the one spec that can tell a checkpoint's key frequencies."""
    if given is not None:
        return KeyReference(sorted(set(given)), "given")
    if key_from == "each":
        return KeyReference(None, "each")
    step = selected[-1] if key_from == "final" else int(key_from)
    if step not in run.steps():
        raise UserError(f"--key-from {step}: no checkpoint at that step")
    label = f"final:{step}" if key_from == "final" else f"step:{step}"
    return KeyReference(_own_keys(run, step, load), label)


def _own_keys(run: Run, step: int, load: Any) -> list[int]:
    provider = next((s for s in registry().values() if s.key_frequencies is not None), None)
    if provider is None:
        raise UserError("no analysis can tell key frequencies")
    checkpoint = load(step)
    return list(provider.key_frequencies(checkpoint.model, run.task, activations=checkpoint.activations))


def analyze(
    run: Run,
    names: Sequence[str],
    *,
    steps: Sequence[int] | None = None,
    every: int | None = None,
    out_dir: Path | None = None,
    device: str = "cpu",
    progress: bool = True,
    skip_inapplicable: bool = False,
    key_frequencies: Sequence[int] | None = None,
    key_from: str | int = "final",
    options: dict[str, dict[str, Any]] | None = None,
) -> AnalysisReport:
    """Run the named analyses on the selected checkpoints of ``run``; see the module docstring for the outputs.

    ``skip_inapplicable`` leaves out (and reports) analyses the task does not support, as when every analysis was
    asked for; otherwise such an analysis is a :class:`UserError`. ``key_frequencies`` / ``key_from``: the
    reference key set (given, or ``final``, ``each`` or a step). ``options``: extra ``compute`` keywords per
    analysis (a cached row is reused only when computed with the same options).
    """
    every_spec = registry()
    unknown = [n for n in names if n not in every_spec]
    if unknown:
        raise UserError(f"unknown analysis {unknown[0]!r} (known: {', '.join(every_spec)})")
    skipped = {}
    if skip_inapplicable:
        skipped = {n: reason for n in names if (reason := not_applicable(n, run.task)) is not None}
    specs = {n: s for n, s in every_spec.items() if n in names and n not in skipped}
    options = {n: jsonable(dict((options or {}).get(n, {}))) for n in specs}
    key_from = parse_key_from(key_from)
    out_dir = Path(out_dir) if out_dir is not None else run.root / ANALYSIS_DIR
    selected = select_steps(run.steps(), steps, every)
    task, split = run.task, run.split()
    # The run's own loss function; losses are evaluated in float64 whatever the run trained in, so that the tiny
    # losses of a grokked model are resolved.
    objective = {"loss_fn": run.config.train.loss_fn}
    cache = {name: _read_rows(out_dir / f"{name}.json") for name in specs}
    tables: dict[str, dict[str, dict[int, list[dict[str, Any]]]]] = {name: {} for name in specs}
    computed: dict[str, list[int]] = {name: [] for name in specs}
    last = selected[-1]
    loaded: dict[int, _Checkpoint] = {}

    def load(step: int) -> _Checkpoint:
        if step not in loaded:
            for old in [s for s in loaded if s != step and s != previous_of.get(step)]:
                del loaded[old]  # keep this checkpoint and its predecessor only
            loaded[step] = _Checkpoint(run, step, device)
        return loaded[step]

    previous_of = {step: (selected[i - 1] if i else None) for i, step in enumerate(selected)}
    reference = None
    if any("key_frequencies" in s.inputs for s in specs.values()):
        reference = _key_reference(run, selected, key_frequencies, key_from, load)

    def fed(name: str, step: int) -> dict[str, Any]:
        """What the runner records in a row about the inputs it fed (compared to reuse a cached row)."""
        spec, out = specs[name], {}
        if "key_frequencies" in spec.inputs and reference is not None:
            out["key_reference"] = reference.label
            if reference.frequencies is not None:
                out["key_frequencies"] = reference.frequencies
        if "previous" in spec.inputs:
            out["previous_step"] = previous_of.get(step)
        if options[name]:
            out["options"] = options[name]
        return out

    def is_cached(name: str, step: int) -> bool:
        row = cache[name].get(step)
        if row is None or any(row.get(k) != v for k, v in fed(name, step).items()):
            return False
        latest_only = specs[name].latest_only
        return not (step == last and latest_only and not row.get(latest_only[1]))

    bar = Progress(
        TextColumn("[bold]analyze"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), disable=not progress
    )
    results_by_step: dict[int, dict[str, Any]] = {}
    try:
        with bar:
            task_id = bar.add_task("", total=len(selected))
            for step in selected:
                todo = [n for n in specs if not is_cached(n, step)]
                results: dict[str, Any] = {}
                for name in todo:
                    spec, checkpoint = specs[name], load(step)
                    kwargs: dict[str, Any] = dict(options[name])
                    if "split" in spec.inputs:
                        kwargs["split"] = split
                    if "activations" in spec.inputs:
                        kwargs["activations"] = checkpoint.activations
                    if "objective" in spec.inputs:
                        kwargs.update(objective)
                    if "key_frequencies" in spec.inputs and reference is not None:
                        own = reference.frequencies is None
                        kwargs["key_frequencies"] = _own_keys(run, step, load) if own else reference.frequencies
                    if "previous" in spec.inputs:
                        prev = previous_of[step]
                        kwargs["previous"] = load(prev).model if prev is not None else None
                        kwargs["previous_step"], kwargs["step"] = prev, step
                        kwargs["previous_result"] = results_by_step.get(prev, {}).get(name)
                    for used in spec.uses:
                        if used in results:
                            kwargs[f"{used}_result"] = results[used]
                    if spec.latest_only:
                        kwargs[spec.latest_only[0]] = step == last
                    result = spec.compute(checkpoint.model, task, **kwargs)
                    results[name] = result
                    cache[name][step] = {"step": step, **result.to_dict(), **fed(name, step)}
                    for table, rows in (result.tables() if hasattr(result, "tables") else {}).items():
                        tables[name].setdefault(table, {})[step] = jsonable(rows)
                    computed[name].append(step)
                results_by_step = {step: results}
                bar.advance(task_id)
    finally:
        files = _save(cache, tables, computed, out_dir)
    # Every cached checkpoint fed as this call feeds the selected ones (the same reference key set): the rows of
    # one trajectory, which figures and summaries may draw together.
    rows = {
        name: [
            row
            for _, row in sorted(cache[name].items())
            if all(row.get(k) == v for k, v in fed(name, row["step"]).items() if k != "previous_step")
        ]
        for name in specs
    }
    summaries: dict[str, dict[str, Any]] = {}
    metrics = run.metrics()
    for name, spec in specs.items():
        if spec.summarize is not None and rows[name]:
            summaries[name] = spec.summarize(rows[name], metrics).to_dict()
            path = out_dir / f"{name}{SUMMARY_SUFFIX}"
            write_json(path, summaries[name])
            files.append(path)
    return AnalysisReport(
        rows=rows,
        selected=selected,
        computed=computed,
        skipped=skipped,
        summaries=summaries,
        files=files,
        key_reference=reference,
    )


def _save(cache, tables, computed, out_dir: Path) -> list[Path]:
    """Write every analysis that gained rows: its JSON list and its tables."""
    files = []
    for name, steps in computed.items():
        if not steps:
            continue
        # Tables first: the JSON marks a step as analysed, so it must not name steps whose tables are missing.
        for table, by_step in tables[name].items():
            table_path = out_dir / f"{name}.{table}{TABLE_SUFFIX}"
            _write_table(table_path, by_step)
            files.append(table_path)
        path = out_dir / f"{name}.json"
        write_json(path, [cache[name][s] for s in sorted(cache[name])])
        files.append(path)
    return files


def over_checkpoints(
    run: Run | str | Path,
    name: str,
    steps: Sequence[int] | None = None,
    *,
    key_frequencies: Sequence[int] | None = None,
    key_from: str | int = "final",
    device: str = "cpu",
    **options: Any,
) -> list[Any]:
    """One typed result per selected checkpoint of ``run`` (all by default), read from or written to the same
    cache as ``grokscope analyze``; ``options`` are ``compute`` keywords of the analysis."""
    run = run if isinstance(run, Run) else Run.open(run)
    spec = analysis_spec(name)
    report = analyze(
        run,
        [name],
        steps=steps,
        device=device,
        progress=False,
        key_frequencies=key_frequencies,
        key_from=key_from,
        options={name: options},
    )
    chosen = set(report.selected)
    return [spec.result.from_dict(row) for row in report.rows[name] if row["step"] in chosen]


def analysis_frame(run: Run, name: str) -> pd.DataFrame:
    """The cached rows of one analysis as a table: a row per checkpoint (indexed by step), a column per scalar."""
    analysis_spec(name)
    path = run.root / ANALYSIS_DIR / f"{name}.json"
    if not path.is_file():
        raise UserError(f"{path}: not analysed yet (run grokscope analyze {run.root} --only {name})")
    return rows_frame([cache_row for _, cache_row in sorted(_read_rows(path).items())])


def analysis_summary(run: Run, name: str) -> dict[str, Any] | None:
    """What ``analysis/<name>.summary.json`` holds (e.g. the progress phases), or None."""
    path = run.root / ANALYSIS_DIR / f"{name}{SUMMARY_SUFFIX}"
    return read_json(path) if path.is_file() else None
