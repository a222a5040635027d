"""Grokking accelerators: gradient filters applied between ``loss.backward()`` and ``optimizer.step()``, and a loss.

* :class:`GrokfastEMA`, :class:`GrokfastMA`: amplify the slow (low-frequency) part of each parameter's gradient
  sequence (Lee et al. 2024, "Grokfast: Accelerated Grokking by Amplifying Slow Gradients").
* :class:`OrthoGrad` (⊥Grad) and :func:`stablemax_cross_entropy`: remove the gradient component that merely scales
  the weights up, and a softmax replacement that avoids softmax collapse (Prieto et al. 2025, "Grokking at the Edge
  of Numerical Stability"). The loss lives in :mod:`grokscope.losses` with the other training objectives (analyses
  evaluate it too) and is re-exported here.

Filters keep per-parameter state keyed by position in the ``params`` sequence (pass the same ordered list every
step), on the parameters' device and dtype. Parameters may be stacked along a leading model axis; only
:class:`OrthoGrad` needs to know (``model_axis=True``), as the Grokfast filters are elementwise.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from grokscope.losses import stablemax_cross_entropy

__all__ = ["GradientFilter", "GrokfastEMA", "GrokfastMA", "OrthoGrad", "chain", "stablemax_cross_entropy"]


class GradientFilter(ABC):
    """Rewrites ``p.grad`` in place for every ``p`` in ``params`` that has a gradient."""

    @abstractmethod
    def apply(self, params: Sequence[Tensor]) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        """Live references to the state, as ``torch.optim`` does: save (or copy) it before the next :meth:`apply`."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} has no state, got keys {sorted(state)}")


def _restore(tensors: dict[int, Tensor], p: Tensor, i: int, shape: tuple[int, ...]) -> Tensor | None:
    """Fetch state ``i``, moved to ``p``'s device and dtype (state may have been loaded elsewhere)."""
    t = tensors.get(i)
    if t is None:
        return None
    if tuple(t.shape) != shape:
        raise ValueError(f"filter state for parameter {i} has shape {tuple(t.shape)}, expected {shape}")
    if t.device != p.device or t.dtype != p.dtype:
        t = tensors[i] = t.to(device=p.device, dtype=p.dtype)
    return t


def _copy(tensors: dict[Any, Tensor]) -> dict[int, Tensor]:
    # Clone so the loaded filter never shares storage with the state it was loaded from.
    return {int(i): t.detach().clone() for i, t in tensors.items()}


class GrokfastEMA(GradientFilter):
    """``mu <- alpha * mu + (1 - alpha) * g`` (``mu`` starts at the first gradient), then ``g <- g + lamb * mu``."""

    def __init__(self, alpha: float = 0.98, lamb: float = 2.0) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        self.alpha, self.lamb = float(alpha), float(lamb)
        self.mu: dict[int, Tensor] = {}

    @torch.no_grad()
    def apply(self, params: Sequence[Tensor]) -> None:
        for i, p in enumerate(params):
            g = p.grad
            if g is None:
                continue
            mu = _restore(self.mu, p, i, tuple(g.shape))
            if mu is None:
                self.mu[i] = mu = g.detach().clone()
            else:
                # lerp keeps mu exactly equal to g when the gradient is constant.
                mu.lerp_(g, 1.0 - self.alpha)
            g.add_(mu, alpha=self.lamb)

    def state_dict(self) -> dict[str, Any]:
        return {"mu": dict(self.mu)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mu = _copy(state["mu"])


class GrokfastMA(GradientFilter):
    """Once ``window`` gradients are seen, ``g <- g + lamb * mean(last window gradients)``; before that ``g`` is kept.

    Each parameter has a ring buffer of shape ``(*p.shape, window)`` (so memory is ``window`` copies of the
    parameters; the window axis is last so that a leading model axis stays leading) and a running sum, updated in
    O(size) per step. To stop float drift from the add/subtract, the sum is
    recomputed exactly from the buffer each time the ring wraps, so it never carries more than ``2 * window`` steps
    of rounding error.
    """

    def __init__(self, window: int = 100, lamb: float = 5.0) -> None:
        if int(window) != window or window < 1:
            raise ValueError(f"window must be a positive integer, got {window}")
        self.window, self.lamb = int(window), float(lamb)
        self.buffer: dict[int, Tensor] = {}
        self.total: dict[int, Tensor] = {}
        self.count: dict[int, int] = {}

    @torch.no_grad()
    def apply(self, params: Sequence[Tensor]) -> None:
        for i, p in enumerate(params):
            g = p.grad
            if g is None:
                continue
            buf = _restore(self.buffer, p, i, (*g.shape, self.window))
            if buf is None:
                self.buffer[i] = buf = torch.zeros((*g.shape, self.window), dtype=g.dtype, device=g.device)
                self.count[i] = 0
            n, slot = self.count[i], self.count[i] % self.window
            total = _restore(self.total, p, i, tuple(g.shape))
            if total is not None:
                total.sub_(buf[..., slot]).add_(g)
            buf[..., slot].copy_(g)
            self.count[i] = n + 1
            if slot == self.window - 1:
                if total is None:
                    self.total[i] = total = torch.empty_like(g)
                torch.sum(buf, dim=-1, out=total)
            if total is not None:
                g.add_(total, alpha=self.lamb / self.window)

    def state_dict(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "buffer": dict(self.buffer),
            "total": dict(self.total),
            "count": dict(self.count),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["window"] != self.window:
            raise ValueError(f"state was saved with window {state['window']}, this filter has {self.window}")
        self.buffer, self.total = _copy(state["buffer"]), _copy(state["total"])
        self.count = {int(i): int(c) for i, c in state["count"].items()}


class OrthoGrad(GradientFilter):
    """⊥Grad: ``g <- g_perp * ||g|| / (||g_perp|| + eps)`` with ``g_perp = g - <w, g> / (<w, w> + eps) * w``.

    With ``model_axis=True`` inner products and norms are taken per model (over all dims but dim 0). A 1-D stacked
    tensor then holds one scalar per model, whose gradient is always parallel to it: it becomes zero (unless that
    model's weight is zero, when ``g`` passes unchanged), exactly as for an unstacked scalar parameter.

    Degenerate cases: when ``||g_perp|| <= sqrt(machine eps) * ||g||`` the gradient is numerically parallel to ``w``
    and what is left is rounding noise, which the rescale would blow up to full size; such gradients become zero
    (the whole gradient is the weight-scaling direction ⊥Grad removes). ``g = 0`` gives zero; ``w = 0`` keeps ``g``.
    Reductions run in at least float32, so half-precision parameters neither overflow nor lose ``eps``.
    """

    def __init__(self, eps: float = 1e-30, model_axis: bool = False) -> None:
        self.eps, self.model_axis = float(eps), model_axis

    @torch.no_grad()
    def apply(self, params: Sequence[Tensor]) -> None:
        for p in params:
            if p.grad is not None:
                p.grad.copy_(self.project(p.detach(), p.grad))

    def project(self, w: Tensor, g: Tensor) -> Tensor:
        """The ⊥Grad gradient for weight ``w`` and gradient ``g`` (neither is modified)."""
        if self.model_axis and w.ndim == 0:
            raise ValueError("model_axis=True needs parameters with a leading model axis, got a 0-dim tensor")
        work = torch.promote_types(g.dtype, torch.float32)
        w, g = w.to(work), g.to(work)
        dims = tuple(range(1, w.ndim)) if self.model_axis else None

        def total(x: Tensor) -> Tensor:
            # Per model with model_axis; a (N,) stacked tensor sums over nothing, as sum(dim=()) would sum over all.
            if dims is None:
                return x.sum()
            return x.sum(dims, keepdim=True) if dims else x

        g_perp = g - total(w * g) / (total(w * w) + self.eps) * w
        g_norm, perp_norm = total(g * g).sqrt(), total(g_perp * g_perp).sqrt()
        scaled = g_perp * (g_norm / (perp_norm + self.eps))
        keep = perp_norm > torch.finfo(work).eps ** 0.5 * g_norm
        return torch.where(keep, scaled, torch.zeros((), dtype=work, device=g.device))


class _Chain(GradientFilter):
    def __init__(self, filters: Sequence[GradientFilter]) -> None:
        self.filters = list(filters)

    def apply(self, params: Sequence[Tensor]) -> None:
        for f in self.filters:
            f.apply(params)

    def state_dict(self) -> dict[str, Any]:
        return {"filters": [f.state_dict() for f in self.filters]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["filters"]) != len(self.filters):
            raise ValueError(f"state holds {len(state['filters'])} filters, this chain has {len(self.filters)}")
        for f, s in zip(self.filters, state["filters"], strict=True):
            f.load_state_dict(s)


def chain(*filters: GradientFilter) -> GradientFilter:
    """Apply ``filters`` in order (e.g. ``chain(OrthoGrad(), GrokfastEMA())``); the state nests as a list."""
    return _Chain(filters)
