"""What every analysis shares: the (a, b) input grid, the answer-position forward, scoring, JSON-ready values.

Analyses take a :class:`~grokscope.models.GrokTransformer` and a :class:`~grokscope.tasks.ModularTask` and return a result dataclass;
:func:`jsonable` turns tensors, arrays and nested dataclasses into plain JSON values. :func:`answer_activations`
runs the grid once, computing the last layer only at the answer position, so that several analyses of one
checkpoint share a single forward pass. :func:`answer_loss` and :func:`score_splits` score logits the same way
everywhere: mean cross-entropy at the answers per split, and an input right only when its answer wins strictly.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from grokscope.errors import UserError
from grokscope.tasks import Dataset, ModularTask, Split

if TYPE_CHECKING:
    from grokscope.models import GrokTransformer


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


def model_device(model: GrokTransformer) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def answer_logits(
    model: GrokTransformer, task: ModularTask, data: Dataset, chunk: int = 16_384
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
def answer_activations(model: GrokTransformer, task: ModularTask, chunk: int = 16_384) -> AnswerActivations:
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


def answer_grid(p: int, operation: str, device: torch.device | str = "cpu") -> Int[Tensor, "p p"]:
    """``t[a, b]``: the answer of ``a + b`` (add) or ``a - b`` (sub) mod p."""
    x = torch.arange(p, device=device)
    sign = {"add": 1, "sub": -1}[operation]
    return (x[:, None] + sign * x[None, :]) % p


def answer_loss(
    logits: Float[Tensor, "*batch n c"], answers: Int[Tensor, " n"]
) -> tuple[Float[Tensor, "*batch n"], Bool[Tensor, "*batch n"]]:
    """Cross-entropy at the answers, and whether the answer's logit beats every other logit strictly (ties are
    wrong, so uniform logits score 0). Precise for tiny losses, where ``log_softmax`` rounds to 0."""
    index = answers.expand(logits.shape[:-1]).unsqueeze(-1)
    right = logits.gather(-1, index).squeeze(-1)
    others = logits.scatter(-1, index, -math.inf)
    best_other = others.amax(-1)
    top = torch.maximum(right, best_other)
    rest = (others - top.unsqueeze(-1)).exp().sum(-1)  # sum of exp(logit - top) over the wrong outputs
    # With the answer on top the loss is log1p(rest), which stays precise for tiny losses.
    loss = torch.where(right >= best_other, torch.log1p(rest), top - right + torch.log(torch.exp(right - top) + rest))
    return loss, right > best_other


@dataclass
class Score:
    """Mean loss and accuracy per split: ``train`` and ``test`` (when the run has a split) and ``all``."""

    loss: dict[str, float]
    acc: dict[str, float]


def split_indices(n: int, split: Split | None, device: torch.device | str = "cpu") -> dict[str, Int[Tensor, " m"]]:
    """Row indices of ``train`` and ``test`` (when a split is given) and ``all`` of ``n`` inputs."""
    splits = {"all": torch.arange(n, device=device)}
    if split is not None:
        splits = {"train": split.train.to(device), "test": split.test.to(device)} | splits
    return splits


def score_splits(loss: Float[Tensor, " n"], correct: Bool[Tensor, " n"], splits: dict[str, Tensor]) -> Score:
    """Mean loss and accuracy over each split's rows."""
    correct = correct.double()
    return Score(
        loss={s: float(loss[i].mean()) for s, i in splits.items()},
        acc={s: float(correct[i].mean()) for s, i in splits.items()},
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
