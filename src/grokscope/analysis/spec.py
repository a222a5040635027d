"""What an analysis declares so that the runner can order and feed it without knowing it by name.

Each analysis module ends with ``SPEC = AnalysisSpec(...)``: its name, its ``compute``, its result type, the inputs
the runner must feed it (from :data:`INPUTS`), the other analyses whose result of the same checkpoint it reuses, and
what it needs of the task. :class:`RowResult` is the base of results: it gives ``to_dict`` (the JSON row: by default
every field but the ``ARRAYS``), ``arrays`` (those fields as tensors, which the runner keeps in a sidecar file),
``from_dict(row, arrays)`` (the result again, from both: a lossless round trip through the cache) and ``to_frame``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import jaxtyping
import numpy as np
import pandas as pd
import torch
from torch import Tensor

from grokscope.analysis.common import jsonable
from grokscope.analysis.options import AnalysisOptions

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
    ``options``: the :class:`~grokscope.analysis.options.AnalysisOptions` models whose keywords ``compute`` takes
    (the command line's flags for this analysis come from them).
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
    options: tuple[type[AnalysisOptions], ...] = ()

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
    """``value`` (plain JSON) as the type ``annotation`` names: dataclasses rebuilt, tensors from lists, tuples."""
    if value is None:
        # jsonable writes a non-finite number as null: a field that is a float was NaN (or infinite) rather than absent.
        return math.nan if annotation is float else None
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _from_json(options[0], value) if len(options) == 1 else value
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return from_row(annotation, value)
    array_type = getattr(annotation, "array_type", annotation)  # jaxtyping's Float[Tensor, "..."] names its array type
    if isinstance(array_type, type) and issubclass(array_type, Tensor | np.ndarray):
        tensor = _tensor(annotation, value)
        return tensor.numpy() if issubclass(array_type, np.ndarray) else tensor
    if origin is list and isinstance(value, list):
        (inner,) = typing.get_args(annotation) or (Any,)
        return [_from_json(inner, v) for v in value]
    if origin is tuple and isinstance(value, list):
        args = typing.get_args(annotation)
        fixed = args and Ellipsis not in args
        return tuple(_from_json(args[i] if fixed else (args[0] if args else Any), v) for i, v in enumerate(value))
    if origin is dict and isinstance(value, dict):
        inner = typing.get_args(annotation)[1] if typing.get_args(annotation) else Any
        return {k: _from_json(inner, v) for k, v in value.items()}
    return value


# jaxtyping's dtype classes, as the torch dtype a JSON list comes back in (JSON holds every float64 exactly).
_DTYPES = {jaxtyping.Float: torch.float64, jaxtyping.Int: torch.int64, jaxtyping.Bool: torch.bool}


def _tensor(annotation: Any, value: Any) -> Tensor:
    """A tensor from :func:`jsonable`'s nested lists, nulls (non-finite numbers) as NaN: in float64, int64 or bool as
    the annotation says, else as the values are (floats in float64)."""
    data = _nan_for_null(value)
    dtype = _DTYPES.get(getattr(annotation, "dtype", None))
    if dtype is None:
        guess = torch.tensor(data)
        dtype = torch.float64 if guess.is_floating_point() else guess.dtype
    return torch.tensor(data, dtype=dtype)


def _nan_for_null(value: Any) -> Any:
    if isinstance(value, list):
        return [_nan_for_null(v) for v in value]
    return math.nan if value is None else value


def _from_arrays(annotation: Any, name: str, arrays: Mapping[str, Tensor]) -> Any:
    """Field ``name`` from a result's sidecar arrays: a tensor (a numpy array when annotated so), or a dict of the
    tensors named ``<name>/<key>``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if name in arrays:
        array_type = getattr(annotation, "array_type", annotation)
        is_numpy = isinstance(array_type, type) and issubclass(array_type, np.ndarray)
        return arrays[name].numpy() if is_numpy else arrays[name]
    prefix = f"{name}/"
    return {key.removeprefix(prefix): tensor for key, tensor in arrays.items() if key.startswith(prefix)}


def from_row(cls: type, row: dict[str, Any], arrays: Mapping[str, Tensor] | None = None) -> Any:
    """Rebuild a result dataclass from a cached row: its :func:`jsonable` fields, typed again (keys that are not
    fields, such as ``step``, are ignored), and its ``ARRAYS`` fields from ``arrays`` (what ``arrays()`` gave; the
    runner reads them from the sidecar file). A field the row does not hold comes back as its default, else None."""
    names = getattr(cls, "ARRAYS", ())
    arrays = arrays or {}
    missing = [n for n in names if n not in arrays and not any(k.startswith(f"{n}/") for k in arrays)]
    if missing:
        raise ValueError(
            f"{cls.__name__}.from_dict: {', '.join(missing)} live outside the JSON row; "
            "pass them as arrays= (result.arrays(), or the sidecar file the runner wrote)"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in names:
            kwargs[f.name] = _from_arrays(hints[f.name], f.name, arrays)
        elif f.name in row:
            kwargs[f.name] = _from_json(hints[f.name], row[f.name])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kwargs[f.name] = None
    return cls(**kwargs)


class RowResult:
    """Base of result dataclasses. Their cached row is their fields as plain JSON, but for ``ARRAYS``: fields too
    large for JSON (tensors, numpy arrays, or dicts of tensors), which ``arrays()`` gives as named tensors and the
    runner keeps in a sidecar safetensors file per checkpoint (:mod:`grokscope.analysis.sidecar`). So
    ``R.from_dict(r.to_dict(), r.arrays())`` equals ``r``; a result without ``ARRAYS`` needs the row only.

    ``ARRAYS`` fields are always filled by ``compute`` (never None, a dict never empty): the sidecar file must hold
    each of them. A result whose ``to_dict`` is not its fields overrides ``from_dict`` too."""

    ARRAYS: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        return {f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name not in self.ARRAYS}

    def arrays(self) -> dict[str, Tensor]:
        """The ``ARRAYS`` fields as named tensors, a dict field's tensors as ``<field>/<key>``."""
        out = {}
        for name in self.ARRAYS:
            value = getattr(self, name)
            for key, array in value.items() if isinstance(value, dict) else [(None, value)]:
                out[name if key is None else f"{name}/{key}"] = torch.as_tensor(array)
        return out

    @classmethod
    def from_dict(cls, row: dict[str, Any], arrays: Mapping[str, Tensor] | None = None) -> Any:
        return from_row(cls, row, arrays)

    def to_frame(self) -> pd.DataFrame:
        """One row: every scalar field (nested dicts joined with ``_``)."""
        return pd.DataFrame([scalar_columns(self.to_dict())])
