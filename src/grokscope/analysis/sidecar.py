"""Sidecar files: the arrays of a result that are too large for its JSON row, one safetensors file per checkpoint.

A result names those fields in ``ARRAYS`` (:class:`~grokscope.analysis.spec.RowResult`), gives them as named tensors
with ``arrays()`` and takes them back with ``from_dict(row, arrays)``. Beside an analysis's JSON cache the runner
keeps one file per analysed checkpoint::

    analysis/neurons.json
    analysis/neurons.arrays/step_0000470.safetensors    fve, dominant_frequency, max_fve, dead

written (atomically) as soon as the checkpoint is analysed, so before the JSON row that names the step. Results
without ``ARRAYS`` have no sidecar. Never pickle: safetensors holds plain tensors and string metadata only.

A file is tied to its row: its metadata holds a digest of the row's JSON and one of its tensors' bytes. A file that
is missing, unreadable, damaged, or written for another row of the step (analysis killed between the sidecar and the
JSON, or redone with other options) makes the row count as not cached: ``analyze`` recomputes it and says so in its
notes, as it does for damaged rows.

Float64 arrays whose every value is a float32 value (attention patterns and gradients computed in double from a
float32 model) are stored as float32 and read back as float64: half the bytes, the same values.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import Tensor

from grokscope.errors import UserError
from grokscope.store import atomic_write_bytes, checkpoint_name, finite

SUFFIX = ".arrays"
FORMAT = "grokscope-arrays/1"


def sidecar_path(cache: Path, step: int) -> Path:
    """The sidecar of ``step`` for the JSON cache file ``cache``:
    ``neurons.json`` -> ``neurons.arrays/step_0000470.safetensors``."""
    return cache.with_suffix(SUFFIX) / checkpoint_name(step)


def _row_digest(row: dict[str, Any]) -> str:
    # The row as write_json writes it (non-finite numbers as null), keys sorted: the same text once read back.
    return hashlib.sha256(json.dumps(finite(row), sort_keys=True, allow_nan=False).encode()).hexdigest()


def _arrays_digest(tensors: Mapping[str, Tensor], names: list[str], narrowed: list[str]) -> str:
    digest = hashlib.sha256(json.dumps([names, sorted(narrowed)]).encode())
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def write(cache: Path, row: dict[str, Any], result: Any) -> Path | None:
    """Write the sidecar of ``result``, whose JSON row is ``row`` (with its ``step``); None when it has no arrays."""
    if not getattr(result, "ARRAYS", ()):
        return None
    tensors: dict[str, Tensor] = {}
    narrowed: list[str] = []
    for name, array in result.arrays().items():
        # A private contiguous copy: safetensors refuses tensors that share memory or are strided.
        tensor = array.detach().cpu().clone(memory_format=torch.contiguous_format)
        if tensor.dtype == torch.float64 and torch.equal(tensor.float().double(), tensor):
            tensor = tensor.float()
            narrowed.append(name)
        tensors[name] = tensor
    names = list(tensors)  # safetensors sorts its tensors by name: their order (a dict field's) is kept here
    metadata = {
        "format": FORMAT,
        "row": _row_digest(row),
        "arrays": _arrays_digest(tensors, names, narrowed),
        "names": json.dumps(names),
        "float64": json.dumps(narrowed),
    }
    path = sidecar_path(cache, row["step"])
    atomic_write_bytes(path, save(tensors, metadata=metadata))
    return path


def read(cache: Path, row: dict[str, Any]) -> dict[str, Tensor]:
    """The arrays of the cached ``row``, as ``arrays()`` gave them; a missing, damaged or stale file is a one-line
    :class:`UserError` naming it."""
    path = sidecar_path(cache, row["step"])
    if not path.is_file():
        raise UserError(f"{path}: missing")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            # Copies: safe_open's tensors map the file, and a result must not change when the file does.
            tensors = {key: f.get_tensor(key).clone() for key in f.keys()}  # noqa: SIM118 (safe_open is no mapping)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise UserError(f"{path}: not a readable safetensors file ({err})") from None
    if metadata.get("format") != FORMAT:
        raise UserError(f"{path}: not a grokscope sidecar file")
    if metadata.get("row") != _row_digest(row):
        raise UserError(f"{path}: written for another row of step {row['step']} (an interrupted or later analysis)")
    try:
        names, narrowed = json.loads(metadata.get("names", "")), json.loads(metadata.get("float64", ""))
        intact = sorted(names) == sorted(tensors) and metadata.get("arrays") == _arrays_digest(tensors, names, narrowed)
    except (ValueError, TypeError):  # metadata that is not the lists of names written
        intact = False
    if not intact:
        raise UserError(f"{path}: damaged (its arrays do not match their digest)")
    return {name: tensors[name].double() if name in narrowed else tensors[name] for name in names}


def rebuild(cache: Path, row: dict[str, Any], result: type) -> Any:
    """The typed ``result`` of one row of the JSON cache ``cache``, with its sidecar arrays when it has any. A row
    that does not rebuild, or a sidecar that cannot be used, is a one-line :class:`UserError`."""
    arrays = read(cache, row) if getattr(result, "ARRAYS", ()) else None
    try:
        return result.from_dict(row, arrays)
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as err:
        problem = f"{type(err).__name__}: {err}"
        raise UserError(f"{cache}: step {row['step']}: cannot rebuild a {result.__name__} ({problem})") from None


def problem(cache: Path, row: dict[str, Any], result: type) -> str | None:
    """Why the cached ``row`` cannot be reused (its sidecar, or the row itself, does not rebuild a result), or None."""
    try:
        rebuild(cache, row, result)
    except UserError as err:
        return str(err)
    return None


def notes(problems: Mapping[str, list[str]]) -> list[str]:
    """One note per analysis whose cached rows could not be rebuilt (they are recomputed)."""
    out = []
    for name, found in problems.items():
        more = f" (and {len(found) - 1} more step(s) of {name})" if len(found) > 1 else ""
        out.append(f"{found[0]}{more}; recomputed")
    return out
