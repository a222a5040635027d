"""What every analysis shares: the full (a, b) input grid, answer-position logits, and JSON-ready results.

Analyses take a ``HookedTransformer`` and a :class:`~grokscope.tasks.ModularTask` and return a dataclass with
``to_dict()``; :func:`jsonable` turns tensors, arrays and nested dataclasses into plain JSON values.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from grokscope.errors import UserError
from grokscope.tasks import Dataset, ModularTask

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer


def require_grid(task: ModularTask, analysis: str) -> int:
    """The modulus p, after checking that the task covers the full p x p grid of (a, b) that Fourier analyses need."""
    if task.operation.b_nonzero or (task.input_range is not None and task.input_range != task.modulus):
        raise UserError(
            f"{analysis}: needs every (a, b) in Z_p x Z_p; {task.describe()} leaves some out (b = 0 or input_range)"
        )
    return task.modulus


def grid_inputs(task: ModularTask, device: torch.device | str = "cpu") -> Dataset:
    """Every (a, b) pair, a-major: row ``a * p + b``, so ``.reshape(p, p, ...)`` indexes ``[a, b]``."""
    return task.dataset().to(device)


def model_device(model: HookedTransformer) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def answer_logits(
    model: HookedTransformer, task: ModularTask, data: Dataset, chunk: int = 16_384
) -> Float[Tensor, "n d_vocab_out"]:
    """Logits at the answer position for every row of ``data``, in chunks to bound memory."""
    parts = [model(data.tokens[i : i + chunk])[:, task.answer_position] for i in range(0, len(data), chunk)]
    return torch.cat(parts)


def jsonable(value: Any) -> Any:
    """Plain JSON values from tensors, arrays, dataclasses, tuples and non-finite floats (as None)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Tensor):
        return jsonable(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray | np.generic):
        return jsonable(value.tolist())
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
