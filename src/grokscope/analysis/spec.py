"""What an analysis declares so that the runner can order and feed it without knowing it by name.

Each analysis module ends with ``SPEC = AnalysisSpec(...)``: its name, its ``compute``, its result type, the inputs
the runner must feed it (from :data:`INPUTS`), the other analyses whose result of the same checkpoint it reuses, and
what it needs of the task. :class:`RowResult` is the base of results whose JSON row is just their fields: it gives
``to_dict`` / ``from_dict`` (a lossless round trip through the cache) and ``to_frame``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from grokscope.analysis.common import jsonable

# What the runner can feed a compute function, as keyword arguments of these names:
#   split            the run's train/test split
#   activations      one answer-position forward pass of the checkpoint, shared by every analysis that reads it
#   key_frequencies  the run's reference key set (with key_reference: where it came from)
#   previous         the previous analysed checkpoint's model (previous_step, step: their steps)
#   objective        the run's training objective (loss_fn, loss_dtype from the run's config)
INPUTS = ("split", "activations", "key_frequencies", "previous", "objective")


@dataclass(frozen=True)
class AnalysisSpec:
    """One analysis, as the runner sees it.

    ``uses``: analyses whose result of the same checkpoint ``compute`` takes as ``<name>_result`` when they run too
    (the runner computes those first). ``latest_only``: ``(option, key)``, a costly ``compute`` option turned on for
    the latest analysed checkpoint only, and the row key that is non-empty when it ran. ``key_frequencies``: a
    function ``(model, task, activations=...) -> list[int]`` that gives a checkpoint's key frequencies; the runner
    takes the reference key set from the spec that has one. ``in_all``: run by ``--all``. ``summarize``:
    ``(rows, metrics) -> RowResult``, what the run's rows add up to (e.g. phases), written as ``<name>.summary.json``.
    """

    name: str
    compute: Callable[..., Any]
    result: type
    inputs: frozenset[str] = frozenset()
    uses: tuple[str, ...] = ()
    needs_grid: bool = False
    operations: tuple[str, ...] | None = None
    latest_only: tuple[str, str] | None = None
    key_frequencies: Callable[..., list[int]] | None = None
    in_all: bool = True
    summarize: Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        unknown = set(self.inputs) - set(INPUTS)
        if unknown:
            raise ValueError(f"{self.name}: unknown inputs {sorted(unknown)} (known: {', '.join(INPUTS)})")


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}_{key}" if prefix else str(key), inner, out)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        # A list of records (attention heads, ablations): one group of columns per record, named by its label.
        for i, inner in enumerate(value):
            _flatten(f"{prefix}_{inner.get('label', i)}", inner, out)
    elif value is None or isinstance(value, bool | int | float | str):
        out[prefix] = value


def scalar_columns(row: dict[str, Any]) -> dict[str, Any]:
    """The scalar fields of a JSON row, nested dicts joined with ``_`` (``restricted.loss.all`` ->
    ``restricted_loss_all``; a list of records by each one's label); lists of numbers are left out (they live in
    the row and in the tables)."""
    out: dict[str, Any] = {}
    _flatten("", row, out)
    return out


def rows_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """A row per checkpoint, a column per scalar field, indexed by step when the rows have one."""
    frame = pd.DataFrame([scalar_columns(row) for row in rows])
    return frame.set_index("step") if "step" in frame.columns else frame


def _from_json(annotation: Any, value: Any) -> Any:
    """``value`` (plain JSON) as the type ``annotation`` names: dataclasses rebuilt, tensors from lists."""
    if value is None:
        return None
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _from_json(options[0], value) if len(options) == 1 else value
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return from_row(annotation, value)
    if isinstance(annotation, type) and issubclass(annotation, torch.Tensor):
        return torch.tensor(value)
    if origin is list and isinstance(value, list):
        (inner,) = typing.get_args(annotation) or (Any,)
        return [_from_json(inner, v) for v in value]
    if origin is dict and isinstance(value, dict):
        inner = typing.get_args(annotation)[1] if typing.get_args(annotation) else Any
        return {k: _from_json(inner, v) for k, v in value.items()}
    return value


def from_row(cls: type, row: dict[str, Any]) -> Any:
    """Rebuild a result dataclass from a cached row: its :func:`jsonable` fields, typed again (keys that are not
    fields, such as ``step``, are ignored). A field the row does not hold (a table too large for the JSON cache,
    such as every neuron's FVE) comes back as its default, else None: ``compute`` gives it."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in row:
            kwargs[f.name] = _from_json(hints[f.name], row[f.name])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kwargs[f.name] = None
    return cls(**kwargs)


class RowResult:
    """Base of result dataclasses whose cached row is exactly their fields (as plain JSON)."""

    def to_dict(self) -> dict[str, Any]:
        return jsonable(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Any:
        return from_row(cls, row)

    def to_frame(self) -> pd.DataFrame:
        """One row: every scalar field (nested dicts joined with ``_``)."""
        return pd.DataFrame([scalar_columns(self.to_dict())])
