"""The training objectives by name: cross-entropy over softmax, or over StableMax (Prieto et al. 2025).

A run's ``train.loss_fn`` names one of :data:`LOSS_FUNCTIONS` and ``train.loss_dtype`` one of :data:`LOSS_DTYPES`.
The trainer, :meth:`grokscope.tasks.ModularTask.loss` and the analyses that evaluate the training objective
(:mod:`grokscope.analysis.gradients`, :mod:`grokscope.analysis.llc`) all look them up here, so they compute the
same loss. The module sits at the top level because ``analysis`` may not import ``training``.

Every loss takes logits ``(n, c)`` and labels ``(n,)`` and follows :func:`torch.nn.functional.cross_entropy` for
``ignore_index`` and ``reduction``.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from grokscope.errors import UserError

__all__ = [
    "LOSS_DTYPES",
    "LOSS_FUNCTIONS",
    "LossFunction",
    "loss_dtype",
    "loss_function",
    "softmax_cross_entropy",
    "stablemax_cross_entropy",
]


class LossFunction(Protocol):
    def __call__(
        self, logits: Float[Tensor, "n c"], labels: Int[Tensor, " n"], *, ignore_index: int = ..., reduction: str = ...
    ) -> Tensor: ...


def softmax_cross_entropy(
    logits: Float[Tensor, "n c"], labels: Int[Tensor, " n"], ignore_index: int = -100, reduction: str = "mean"
) -> Tensor:
    """Plain cross-entropy over softmax: exactly :func:`torch.nn.functional.cross_entropy`, in the logits' dtype."""
    return F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction=reduction)


def stablemax_cross_entropy(
    logits: Float[Tensor, "n c"], labels: Int[Tensor, " n"], ignore_index: int = -100, reduction: str = "mean"
) -> Tensor:
    """Cross-entropy with StableMax ``s(x) = x + 1 (x >= 0), 1 / (1 - x) (x < 0)`` in place of ``exp``.

    Computed in float64 and returned in the logits' dtype; ``ignore_index`` and ``reduction`` follow
    :func:`torch.nn.functional.cross_entropy` (``"mean"`` averages over kept rows, ``"none"`` gives 0 on ignored ones).
    """
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"expected logits (n, c) and labels (n,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    x = logits.double()
    # Clamp each branch to its own half-line so the branch torch.where discards has no inf/nan gradient.
    pos, neg = x.clamp_min(0.0), x.clamp_max(0.0)
    log_s = torch.where(x >= 0, torch.log1p(pos), -torch.log1p(-neg))
    log_total = torch.log((pos + 1.0).where(x >= 0, 1.0 / (1.0 - neg)).sum(dim=1))
    kept = labels != ignore_index
    safe = torch.where(kept, labels, torch.zeros_like(labels))
    loss = (log_total - log_s.gather(1, safe[:, None]).squeeze(1)) * kept
    if reduction == "sum":
        loss = loss.sum()
    elif reduction == "mean":
        loss = loss.sum() / kept.sum()
    return loss.to(logits.dtype)


# The names are the values of the config's train.loss_fn and train.loss_dtype.
LOSS_FUNCTIONS: dict[str, LossFunction] = {"softmax": softmax_cross_entropy, "stablemax": stablemax_cross_entropy}
LOSS_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}


def loss_function(name: str) -> LossFunction:
    """The loss called ``name`` in :data:`LOSS_FUNCTIONS`; an unknown name is a :class:`UserError`."""
    try:
        return LOSS_FUNCTIONS[name]
    except KeyError:
        raise UserError(f"loss_fn: unknown loss {name!r} (known: {', '.join(LOSS_FUNCTIONS)})") from None


def loss_dtype(name: str | torch.dtype, logits_dtype: torch.dtype | None = None) -> torch.dtype:
    """The dtype a loss is computed in: ``name`` (a :data:`LOSS_DTYPES` key or a dtype), but never below the logits'.

    This is the trainer's rule: a float64 model keeps a float64 loss even with ``loss_dtype: float32``.
    """
    if isinstance(name, torch.dtype):
        dtype = name
    elif name in LOSS_DTYPES:
        dtype = LOSS_DTYPES[name]
    else:
        raise UserError(f"loss_dtype: unknown dtype {name!r} (known: {', '.join(LOSS_DTYPES)})")
    return dtype if logits_dtype is None else torch.promote_types(logits_dtype, dtype)
