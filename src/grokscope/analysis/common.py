"""What every analysis shares: the full (a, b) input grid, answer-position logits, and JSON-ready results.

Analyses take a ``HookedTransformer`` and a :class:`~grokscope.tasks.ModularTask` and return a dataclass with
``to_dict()``; :func:`jsonable` turns tensors, arrays and nested dataclasses into plain JSON values.
:func:`answer_activations` runs the grid once, computing the last layer only at the answer position, so that
several analyses of one checkpoint can share a single forward pass.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
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


@dataclass(frozen=True)
class AnswerActivations:
    """Last-layer activations at the answer position for every row of ``task.dataset()`` (a-major grid order)."""

    resid_mid: Float[Tensor, "n d_model"]
    post: Float[Tensor, "n d_mlp"] | None
    logits: Float[Tensor, "n d_vocab_out"]


@torch.no_grad()
def answer_activations(model: HookedTransformer, task: ModularTask, chunk: int = 16_384) -> AnswerActivations:
    """One pass over every input that keeps only the answer position after the last attention layer.

    After the last attention nothing mixes positions, so dropping the others at ``hook_resid_mid`` leaves the
    answer position's MLP and logits exact while skipping (n_ctx - 1) / n_ctx of the last MLP and unembedding.
    """
    layer = model.cfg.n_layers - 1
    position = task.answer_position
    tokens = task.dataset().tokens.to(model_device(model))
    keep_positions = not model.cfg.parallel_attn_mlp  # parallel blocks have no resid_mid to cut at
    captured: dict[str, list[Tensor]] = {"resid_mid": [], "post": []}

    def answer_only(resid_mid: Tensor, hook: Any) -> Tensor:
        kept = resid_mid[:, position : position + 1] if keep_positions else resid_mid
        captured["resid_mid"].append(kept[:, -1] if keep_positions else kept[:, position])
        return kept

    def capture_post(post: Tensor, hook: Any) -> None:
        captured["post"].append(post[:, -1] if keep_positions else post[:, position])

    hooks = [(f"blocks.{layer}.hook_resid_mid", answer_only)]
    if not model.cfg.attn_only:
        hooks.append((f"blocks.{layer}.mlp.hook_post", capture_post))
    logits = []
    for start in range(0, len(tokens), chunk):
        out = model.run_with_hooks(tokens[start : start + chunk], fwd_hooks=hooks)
        logits.append(out[:, -1] if keep_positions else out[:, position])
    return AnswerActivations(
        resid_mid=torch.cat(captured["resid_mid"]),
        post=torch.cat(captured["post"]) if captured["post"] else None,
        logits=torch.cat(logits),
    )


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
