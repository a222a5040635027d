"""Run analyses across a run's checkpoints from their specs, caching per checkpoint.

``analysis/<name>.json`` is a list with one object per analysed checkpoint (``step`` plus the result's fields and
the inputs the runner fed it: ``key_reference``, ``previous_step``, ``options``). A cached row is reused only when
those match what this call would feed, so re-running on a grown run analyses only the new checkpoints and results
computed against different key sets never mix. Per-checkpoint tables go to ``analysis/<name>.<table>.parquet``
with a ``step`` column, what a run's rows add up to (the progress phases) to ``analysis/<name>.summary.json``, and
the arrays of a result too large for its row to ``analysis/<name>.arrays/step_<step>.safetensors`` (:mod:`sidecar`).

The runner knows analyses only through their :class:`~grokscope.analysis.spec.AnalysisSpec`: every module of
``grokscope.analysis`` with a ``SPEC`` is an analysis. Measures that take key frequencies get one **reference key
set** for the whole run: by default the key set of the run's final checkpoint on disk, whatever steps are selected
(Nanda et al. 2023's protocol). A key set of another step (``key_from=STEP``), given frequencies, or each
checkpoint's own (``key_from="each"``) are variants: their rows, tables and summaries go to a folder of their own
(``analysis/key_from_each/``, ``analysis/key_from_step_400/``, ``analysis/key_frequencies_1_21_49/``), so that they
never overwrite or mix with the default's rows or its phases.

The cache is checked before it is reused: a file that is not a list of rows, or a row whose fields do not have the
types of the analysis's result, or that does not rebuild its result with its sidecar file (missing, damaged, or
written for another row), is set aside and recomputed (:attr:`AnalysisReport.notes` says so), and a damaged
parquet table is replaced. Checkpoints with NaN or infinite weights are skipped (:attr:`AnalysisReport.skipped_steps`).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from grokscope.analysis import sidecar
from grokscope.analysis.common import answer_activations, jsonable, require_grid
from grokscope.analysis.reference import KeyReference, key_reference, parse_key_from, variant_folder
from grokscope.analysis.spec import AnalysisSpec, RowResult, rows_frame
from grokscope.errors import UserError
from grokscope.rundir import FolderLock
from grokscope.specs import declared_specs
from grokscope.store import (
    Run,
    atomic_write,
    is_count,
    is_number,
    non_finite,
    read_json,
    show,
    write_json,
)
from grokscope.tasks import ModularTask

TABLE_SUFFIX = ".parquet"
SUMMARY_SUFFIX = ".summary.json"


def registry() -> dict[str, AnalysisSpec]:
    """Every analysis: the ``SPEC`` of each module of ``grokscope.analysis`` that declares one, in module order."""
    return _ordered({spec.name: spec for spec in declared_specs("grokscope.analysis", AnalysisSpec)})


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


# Reading the cache -----------------------------------------------------------------------------------------------
# Cached files are grokscope's own, but a file on disk may hold anything. What the runner reuses must have the types
# its consumers (summaries, figures, descriptions) index and format, so rows are checked against the result type's
# annotations; a file or row that fails is treated as absent (``analyze`` recomputes it) rather than half-trusted.


def _misfit(annotation: Any, value: Any, where: str = "") -> str | None:
    """Why the JSON ``value`` cannot be what ``annotation`` names (None: it can), prefixed by ``where`` it is.

    Null passes anywhere: ``jsonable`` writes non-finite numbers (and so whole NaN fields) as null. Types the
    check does not know pass too.
    """
    if value is None or annotation is Any:
        return None
    at = f"{where}: " if where else ""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        problems = [_misfit(a, value, where) for a in args if a is not type(None)]
        return None if any(p is None for p in problems) else problems[0]
    if origin is typing.Literal:
        return None if value in args else f"{at}expected one of {', '.join(map(repr, args))}, got {show(value)}"
    if origin in (list, tuple, Sequence):
        if not isinstance(value, list):
            return f"{at}expected a list, got {show(value)}"
        fixed = origin is tuple and Ellipsis not in args
        if fixed and len(value) != len(args):
            return f"{at}expected {len(args)} values, got {len(value)}"
        for i, item in enumerate(value):
            inner = args[i] if fixed else (args[0] if args else Any)
            problem = _misfit(inner, item, f"{where}[{i}]")
            if problem is not None:
                return problem
        return None
    if origin is dict:
        if not isinstance(value, dict):
            return f"{at}expected an object, got {show(value)}"
        inner = args[1] if args else Any
        for key, item in value.items():
            problem = _misfit(inner, item, f"{where}.{key}" if where else str(key))
            if problem is not None:
                return problem
        return None
    if not isinstance(annotation, type):
        return None
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            return f"{at}expected an object, got {show(value)}"
        hints = _type_hints(annotation)
        for f in dataclasses.fields(annotation):
            if f.name in value:
                problem = _misfit(hints[f.name], value[f.name], f"{where}.{f.name}" if where else f.name)
                if problem is not None:
                    return problem
        return None
    array = getattr(annotation, "array_type", annotation)  # jaxtyping's Float[Tensor, "..."] names its array type
    if isinstance(array, type) and issubclass(array, torch.Tensor | np.ndarray):
        return None if _is_array(value) else f"{at}expected (nested lists of) numbers, got {show(value)}"
    if annotation is bool:
        return None if isinstance(value, bool) else f"{at}expected true or false, got {show(value)}"
    if annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else f"{at}expected an integer, got {show(value)}"
    if annotation is float:
        return None if is_number(value) else f"{at}expected a number, got {show(value)}"
    if annotation is str:
        return None if isinstance(value, str) else f"{at}expected a string, got {show(value)}"
    return None


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_array(value: Any) -> bool:
    """A tensor as ``jsonable`` writes it: a number (or bool, or null) or nested lists of them."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            pending.extend(item)
        elif item is not None and not isinstance(item, int | float):
            return False
    return True


def _plain_layout(result: Any) -> bool:
    """Whether a result's JSON is exactly its fields (``RowResult.to_dict``), so that every field must be there."""
    return dataclasses.is_dataclass(result) and getattr(result, "to_dict", None) is RowResult.to_dict


def _rebuilt_from_fields(result: Any) -> bool:
    """Whether a result is rebuilt from its row's fields (``RowResult.from_dict``): its ``to_dict`` may add keys (the
    Fourier row adds ``key_frequencies``, ...), but a field with no default that the row lacks would come back None."""
    from_dict = getattr(result, "from_dict", None)
    return dataclasses.is_dataclass(result) and getattr(from_dict, "__func__", None) is RowResult.from_dict.__func__


@functools.cache
def _property_hints(result: Any) -> dict[str, Any]:
    """The return types of a result's annotated properties, by name: what ``to_dict`` writes of them into the row
    (``FourierResult.key_frequencies``: ``list[int]``) is checked like a field. One whose hint cannot be resolved is
    left out."""
    hints = {}
    for name, member in inspect.getmembers(result, lambda m: isinstance(m, property)):
        try:
            hint = typing.get_type_hints(member.fget).get("return")
        except Exception:  # a hint naming what its module does not import at run time: unchecked
            continue
        if hint is not None:
            hints[name] = hint
    return hints


def _result_problem(result: Any, data: dict[str, Any]) -> str | None:
    """Why ``data`` cannot be the JSON of a ``result`` (None: it can): its fields' types and those of the properties
    its row holds; for a result whose JSON is exactly its fields, every field there, and for any other rebuilt from
    its fields, every field without a default."""
    problem = _misfit(result, data)  # what is there, first: a wrong type says more than a missing field
    if problem is None and dataclasses.is_dataclass(result):
        for name, hint in _property_hints(result).items():
            problem = _misfit(hint, data[name], name) if name in data else None
            if problem is not None:
                return problem
    if problem is not None:
        return problem
    kept = getattr(result, "ARRAYS", ())  # in the sidecar file, not the row
    needed = [f for f in dataclasses.fields(result) if f.name not in kept] if dataclasses.is_dataclass(result) else []
    if not _plain_layout(result):
        if not _rebuilt_from_fields(result):
            return None
        needed = [f for f in needed if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = next((f.name for f in needed if f.name not in data), None)
    return None if missing is None else f'no "{missing}"'


def row_problem(spec: AnalysisSpec, row: Any) -> str | None:
    """Why one cached row cannot be reused for ``spec`` (None: it can): an object with a non-negative integer
    ``step`` that fits the spec's result type."""
    if not isinstance(row, dict):
        return f"expected an object, got {show(row)}"
    if not is_count(row.get("step")):
        return f'"step" must be a non-negative integer, got {show(row.get("step"))}'
    return _result_problem(spec.result, row)


def read_rows(path: Path, spec: AnalysisSpec) -> tuple[dict[int, dict[str, Any]], str | None]:
    """The usable rows of the cache file ``path`` of analysis ``spec``, by step, and a one-line message naming the
    file when it, or some of its rows, could not be used (None when all could; an absent file has no rows)."""
    if not path.is_file():
        return {}, None
    try:
        data = read_json(path)
    except UserError as err:
        return {}, str(err)
    if not isinstance(data, list):
        return {}, f"{path}: expected a list of rows (one per checkpoint), got {show(data)}"
    rows: dict[int, dict[str, Any]] = {}
    bad: list[str] = []
    for i, row in enumerate(data):
        problem = row_problem(spec, row)
        if problem is None:
            rows[row["step"]] = row
        else:
            step = f" (step {row['step']})" if isinstance(row, dict) and is_count(row.get("step")) else ""
            bad.append(f"row {i}{step}: {problem}")
    if not bad:
        return rows, None
    return rows, f"{path}: {bad[0]}" + (f" ({len(bad)} of {len(data)} rows unusable)" if len(bad) > 1 else "")


def _read_table(path: Path) -> pd.DataFrame:
    """A cached parquet table with its ``step`` column; a damaged one is a one-line :class:`UserError`."""
    try:
        table = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several types for a damaged file
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"{path}: not a readable parquet table ({first})") from None
    if "step" not in table.columns or not pd.api.types.is_integer_dtype(table["step"]):
        raise UserError(f"{path}: not an analysis table (no integer step column)")
    return table


def _write_table(path: Path, new_rows: dict[int, list[dict[str, Any]]]) -> str | None:
    """Merge one table's rows for the newly analysed steps into its parquet file (rows of other steps are kept).
    A damaged table on disk is replaced by the new rows alone; the message saying so is returned."""
    fresh = pd.DataFrame([{"step": step, **row} for step, rows in new_rows.items() for row in rows])
    problem = None
    if path.is_file():
        try:
            kept = _read_table(path)
        except UserError as err:
            problem = str(err)
        else:
            fresh = pd.concat([kept[~kept["step"].isin(list(new_rows))], fresh], ignore_index=True)
    fresh = fresh.sort_values("step", kind="stable").reset_index(drop=True)
    atomic_write(path, lambda tmp: fresh.to_parquet(tmp, index=False))
    return problem


@dataclass
class AnalysisReport:
    """What :func:`analyze` did: rows per analysis (all cached + new), the selected steps (those with non-finite
    weights left out), the newly analysed ones, analyses skipped as not applicable to the task (with the reason),
    summaries and the files written.

    ``skipped_steps``: selected checkpoints left out, with why (``non-finite weights (NaN in blocks.0.mlp.W_in)``).
    ``notes``: one line each for the user about what was left out or set aside: those checkpoints
    (``step 40: non-finite weights (...); skipped``) and cache files or rows that could not be reused.
    """

    rows: dict[str, list[dict[str, Any]]]
    selected: list[int]
    computed: dict[str, list[int]]
    skipped: dict[str, str] = field(default_factory=dict)
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    key_reference: KeyReference | None = None
    skipped_steps: dict[int, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    out_dir: Path | None = None  # where the results went: the analysis folder, or a key-set variant's subfolder

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
            model = self.run.load_model(self.step, device=self.device)
            # analyze() leaves out non-finite checkpoints it has no rows for; one reached anyway (rewritten since it
            # was analysed) is an error rather than NaN results.
            problem = non_finite(dict(model.named_parameters()))
            if problem is not None:
                raise UserError(f"{self.run.checkpoint_path(self.step)}: non-finite weights ({problem})")
            self._model = model
        return self._model

    @property
    def activations(self) -> Any:
        if self._activations is None:
            self._activations = answer_activations(self.model, self.run.task)
        return self._activations


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

    The output folder is locked while this runs (a second ``analyze`` of it gets one line naming this process; a
    run that is training meanwhile is not blocked), and temporary files a killed ``analyze`` left there go.
    """
    folder = Path(out_dir) if out_dir is not None else run.analysis_dir
    with FolderLock(folder, "grokscope analyze"):
        # Only the temporary files of what analyze and its figures write: --out may be a folder of the user's.
        ours = (".json", ".parquet", ".npy", ".html", ".js", ".safetensors")
        sidecars = folder.glob(f"*{sidecar.SUFFIX}/.*.tmp")
        for leftover in [*folder.glob(".*.tmp"), *folder.glob("figures/.*.tmp"), *sidecars]:
            if leftover.name[1:].rsplit(".", 2)[0].endswith(ours):
                leftover.unlink(missing_ok=True)
        return _analyze(
            run,
            names,
            steps=steps,
            every=every,
            out_dir=folder,
            device=device,
            progress=progress,
            skip_inapplicable=skip_inapplicable,
            key_frequencies=key_frequencies,
            key_from=key_from,
            options=options,
        )


def _analyze(
    run: Run,
    names: Sequence[str],
    *,
    steps: Sequence[int] | None,
    every: int | None,
    out_dir: Path,
    device: str,
    progress: bool,
    skip_inapplicable: bool,
    key_frequencies: Sequence[int] | None,
    key_from: str | int,
    options: dict[str, dict[str, Any]] | None,
) -> AnalysisReport:
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
    out_dir = Path(out_dir) if out_dir is not None else run.analysis_dir
    variant = variant_folder(key_frequencies, key_from)
    if variant is not None:
        if not any("key_frequencies" in s.inputs for s in specs.values()):
            users = ", ".join(n for n, s in every_spec.items() if "key_frequencies" in s.inputs)
            flag = "--key-frequencies" if key_frequencies is not None else "--key-from"
            raise UserError(f"{flag}: applies to the analyses that use key frequencies ({users}), none of them asked")
        # A variant key set is a whole analysis of its own: its rows, tables, summaries and figures never meet the
        # default's (the run's final key set).
        out_dir = out_dir / variant
        out_dir.mkdir(parents=True, exist_ok=True)
    if not run.steps():
        raise UserError(f"{run.checkpoint_dir}: no checkpoints to analyse")
    selected = select_steps(run.steps(), steps, every)
    task, split = run.task, run.split()
    # The run's own loss function; losses are evaluated in float64 whatever the run trained in, so that the tiny
    # losses of a grokked model are resolved.
    objective = {"loss_fn": run.config.train.loss_fn}
    notes: list[str] = []
    cache: dict[str, dict[int, dict[str, Any]]] = {}
    unusable: set[str] = set()  # analyses whose cache file held something unusable: rewritten without it
    for name, spec in specs.items():
        cache[name], problem = read_rows(out_dir / f"{name}.json", spec)
        if problem is not None:
            unusable.add(name)
            notes.append(f"{problem}; set aside, recomputed where selected")
    # Analyses of NaN weights are NaN at best: checkpoints with non-finite weights are left out as if not selected.
    bad = _non_finite_steps(run, selected, [cache[name] for name in specs])
    skipped_steps = {step: f"non-finite weights ({where})" for step, where in bad.items()}
    notes += [f"step {step}: {why}; skipped" for step, why in skipped_steps.items()]
    selected = [step for step in selected if step not in bad]
    if not selected:
        step, where = next(iter(bad.items()))
        raise UserError(
            f"{run.checkpoint_dir}: all {len(bad)} selected checkpoint(s) have non-finite weights "
            f"(step {step}: {where}); nothing to analyse"
        )
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
    provider = next((s for s in every_spec.values() if s.key_frequencies is not None), None)
    # Key frequencies come from the full (a, b) grid: on a task without one (input_range), only given ones exist.
    knowable = key_frequencies is not None or (provider is not None and not_applicable(provider.name, task) is None)
    if knowable and any("key_frequencies" in s.inputs for s in specs.values()):
        reference = key_reference(run, key_frequencies, key_from, lambda step: _own_keys(run, step, load))

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

    def same_options(name: str, row: dict[str, Any]) -> bool:
        # Rows record options only when some were given: a row computed with options is not one without any.
        return (row.get("options") or {}) == options[name]

    unbuilt: dict[str, list[str]] = {}  # why cached rows did not rebuild their results (a sidecar file, mostly)

    def is_cached(name: str, step: int) -> bool:
        row = cache[name].get(step)
        if row is None or any(row.get(k) != v for k, v in fed(name, step).items()) or not same_options(name, row):
            return False
        latest_only = specs[name].latest_only
        if step == last and latest_only and not row.get(latest_only[1]):
            return False
        problem = sidecar.problem(out_dir / f"{name}.json", row, specs[name].result)
        if problem is not None:
            unbuilt.setdefault(name, []).append(problem)
        return problem is None

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
                    sidecar.write(out_dir / f"{name}.json", cache[name][step], result)  # before the row is saved
                    for table, rows in (result.tables() if hasattr(result, "tables") else {}).items():
                        tables[name].setdefault(table, {})[step] = jsonable(rows)
                    computed[name].append(step)
                results_by_step = {step: results}
                bar.advance(task_id)
    finally:
        notes += sidecar.notes(unbuilt)
        files = _save(cache, tables, computed, out_dir, unusable, notes)
    # Every cached checkpoint fed as this call feeds the selected ones (the same reference key set): the rows of
    # one trajectory, which figures and summaries may draw together.
    rows = {
        name: [
            row
            for _, row in sorted(cache[name].items())
            if all(row.get(k) == v for k, v in fed(name, row["step"]).items() if k != "previous_step")
            and same_options(name, row)
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
        skipped_steps=skipped_steps,
        notes=notes,
        out_dir=out_dir,
    )


def _non_finite_steps(run: Run, selected: list[int], caches: list[dict[int, dict[str, Any]]]) -> dict[int, str]:
    """The selected checkpoints with NaN or infinite weights, with where (``NaN in blocks.0.mlp.W_in``). Only those
    that some analysis has no cached row for are read: a checkpoint with rows everywhere was finite when analysed."""
    todo = [step for step in selected if any(step not in rows for rows in caches)]
    if not todo:
        return {}
    # The weights are the model's parameters (its buffers may be infinite by design); one model tells their names.
    weights = {name for name, _ in run.load_model(todo[-1]).named_parameters()}
    out = {}
    for step in todo:
        problem = non_finite({k: v for k, v in run.load_state_dict(step).items() if k in weights})
        if problem is not None:
            out[step] = problem
    return out


def _save(cache, tables, computed, out_dir: Path, unusable: set[str], notes: list[str]) -> list[Path]:
    """Write every analysis that gained rows, or whose cache file held unusable rows: its JSON list and its tables."""
    files = []
    for name, steps in computed.items():
        if not steps and name not in unusable:
            continue
        # Tables first: the JSON marks a step as analysed, so it must not name steps whose tables are missing.
        for table, by_step in tables[name].items():
            table_path = out_dir / f"{name}.{table}{TABLE_SUFFIX}"
            problem = _write_table(table_path, by_step)
            if problem is not None:
                # The damaged table's other steps are gone: their rows go too, to be analysed again when selected.
                notes.append(f"{problem}; replaced by the rows of the steps analysed now")
                cache[name] = {s: row for s, row in cache[name].items() if s in steps}
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
    cache as ``grokscope analyze``; ``options`` are ``compute`` keywords of the analysis. Checkpoints with
    non-finite weights have no result (as ``grokscope analyze`` skips them). Each result is whole: rebuilt from its
    JSON row and its sidecar arrays, whether computed now or read from the cache."""
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
    cache = (report.out_dir or run.analysis_dir) / f"{name}.json"  # a variant key set's rows live in a subfolder
    return [sidecar.rebuild(cache, row, spec.result) for row in report.rows[name] if row["step"] in chosen]


def analysis_frame(
    run: Run, name: str, *, key_frequencies: Sequence[int] | None = None, key_from: str | int = "final"
) -> pd.DataFrame:
    """The cached rows of one analysis as a table: a row per checkpoint (indexed by step), a column per scalar.
    A cache file with unusable rows is a one-line :class:`UserError` (``grokscope analyze`` rewrites it).

    Rows of one reference key set only, named in ``frame.attrs["key_reference"]``: by default the run's own (the
    final checkpoint's; when the run has grown since it was analysed, the rows of the newest reference cached), or
    a variant's (``key_from``: ``each`` or a step; ``key_frequencies``), as ``over_checkpoints`` takes them.
    """
    spec = analysis_spec(name)
    variant = variant_folder(key_frequencies, key_from)
    folder = run.analysis_dir / variant if variant is not None else run.analysis_dir
    path = folder / f"{name}.json"
    option = (
        ""
        if variant is None
        else " "
        + (
            f"--key-frequencies {','.join(map(str, sorted(set(key_frequencies))))}"
            if key_frequencies is not None
            else f"--key-from {key_from}"
        )
    )
    redo = f"grokscope analyze {run.root} --only {name}{option}"
    if not path.is_file():
        raise UserError(f"{path}: not analysed yet (run {redo})")
    rows, problem = read_rows(path, spec)
    if problem is not None:
        raise UserError(f"{problem} (run {redo} to redo it)")
    ordered = [cache_row for _, cache_row in sorted(rows.items())]
    references = [row.get("key_reference") for row in ordered]
    reference = None
    if any(r is not None for r in references):
        current = f"final:{run.steps()[-1]}" if run.steps() else None
        reference = current if current in references else next(r for r in reversed(references) if r is not None)
        ordered = [row for row in ordered if row.get("key_reference") == reference]
    frame = rows_frame(ordered)
    frame.attrs["key_reference"] = reference
    return frame


def analysis_summary(run: Run, name: str) -> dict[str, Any] | None:
    """What ``analysis/<name>.summary.json`` holds (e.g. the progress phases), or None when there is none. A
    damaged one counts as none: it is derived from the rows, and ``grokscope analyze`` writes it again."""
    spec = analysis_spec(name)
    path = run.analysis_dir / f"{name}{SUMMARY_SUFFIX}"
    if not path.is_file() or spec.summarize is None:
        return None
    try:
        summary = read_json(path)
    except UserError:
        return None
    try:
        result = typing.get_type_hints(spec.summarize).get("return", Any)
    except NameError:  # an annotation that does not resolve: check the summary's shape only
        result = Any
    if not isinstance(summary, dict) or _result_problem(result, summary) is not None:
        return None
    return summary
