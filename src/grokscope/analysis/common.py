"""What every analysis shares: the (a, b) input grid, the answer-position forward, scoring, JSON-ready values.

Analyses take a :class:`~grokscope.models.GrokTransformer` and a :class:`~grokscope.tasks.ModularTask` and return a
result dataclass; :func:`jsonable` turns tensors, arrays and nested dataclasses into plain JSON values.
:func:`answer_run` is the one forward pass they make: over every input (or given rows), computing the last layer only at
the answer position, with optional hooks and captured activations; :func:`answer_logits` and :func:`answer_activations`
are its common uses, the latter shared by several analyses of one checkpoint. :func:`answer_loss` and
:func:`score_splits` score logits the same way everywhere: mean cross-entropy at the answers per split, and an input
right only when its answer wins strictly. The Fourier side of the shared numerics lives in
:mod:`grokscope.analysis.basis`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Sequence
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


# hook(this chunk's activation, the rows of the data it holds) -> a replacement activation, or None to keep it.
RowHook = Callable[[Tensor, slice], Tensor | None]

# Hook points of the last layer from hook_resid_mid on: after the last attention nothing mixes positions, so the
# answer-position forward keeps only the answer position there (and so do the hooks that see them).
_AFTER_LAST_ATTENTION = ("hook_resid_mid", "hook_mlp_in", "ln2.", "mlp.", "hook_mlp_out", "hook_resid_post")


def answer_only(model: GrokTransformer, name: str) -> bool:
    """Whether :func:`answer_run` gives hook point ``name`` the answer position alone (a position axis of 1)."""
    last = f"blocks.{model.cfg.n_layers - 1}."
    after = name.startswith(last) and name.removeprefix(last).startswith(_AFTER_LAST_ATTENTION)
    return after or name.startswith(("ln_final.", "unembed."))


def answer_index(model: GrokTransformer, task: ModularTask, name: str) -> int:
    """Where the answer position sits on the position axis of hook point ``name`` in :func:`answer_run`."""
    return 0 if answer_only(model, name) else task.answer_position


@dataclass(frozen=True)
class AnswerRun:
    """What :func:`answer_run` gives: the answer-position logits (None when it stopped early) and the captured
    activations, each as the hook point holds it (:func:`answer_index`: where the answer sits), rows concatenated."""

    logits: Float[Tensor, "n d_vocab_out"] | None
    captured: dict[str, Tensor]


class _Stop(Exception):
    """Raised after the ``until`` hook point: nothing later in the forward is needed."""


@torch.no_grad()
def answer_run(
    model: GrokTransformer,
    task: ModularTask,
    data: Dataset | None = None,
    *,
    hooks: Sequence[tuple[str, RowHook]] = (),
    capture: Sequence[str] = (),
    until: str | None = None,
    chunk: int = 16_384,
) -> AnswerRun:
    """The one answer-position forward of the analyses, over ``data`` (default: ``task.dataset()``) in chunks.

    From the last layer's ``hook_resid_mid`` on only the answer position is computed (:func:`answer_only`): exact,
    since nothing after the last attention mixes positions, and it skips (n_ctx - 1) / n_ctx of the last MLP and
    the unembedding. ``hooks`` see each chunk's activation and its rows of ``data`` and may replace it; ``capture``
    keeps activations (after the hooks at the same point); ``until`` ends the forward after that hook point (its
    hooks and capture run; ``logits`` is then None).
    """
    data = task.dataset() if data is None else data
    tokens = data.tokens.to(model_device(model))
    cut = f"blocks.{model.cfg.n_layers - 1}.hook_resid_mid"
    captured: dict[str, list[Tensor]] = {name: [] for name in capture}

    def keep_answer(resid_mid: Tensor, hook: Any) -> Tensor:
        return resid_mid[:, task.answer_position : task.answer_position + 1]

    def keep(activation: Tensor, hook: Any) -> None:
        captured[hook.name].append(activation)

    def stop(activation: Tensor, hook: Any) -> None:
        raise _Stop

    logits = []
    for start in range(0, len(tokens), chunk):
        rows = slice(start, start + chunk)
        fwd_hooks = [(cut, keep_answer)]
        fwd_hooks += [(name, lambda act, hook, fn=fn, rows=rows: fn(act, rows)) for name, fn in hooks]
        fwd_hooks += [(name, keep) for name in capture] + ([(until, stop)] if until is not None else [])
        with contextlib.suppress(_Stop):  # run_with_hooks removes its hooks however the pass ends
            logits.append(model.run_with_hooks(tokens[rows], fwd_hooks=fwd_hooks)[:, 0])
    return AnswerRun(
        logits=torch.cat(logits) if logits else None,
        captured={name: torch.cat(parts) for name, parts in captured.items()},
    )


def answer_logits(
    model: GrokTransformer,
    task: ModularTask,
    data: Dataset | None = None,
    *,
    hooks: Sequence[tuple[str, RowHook]] = (),
    chunk: int = 16_384,
) -> Float[Tensor, "n d_vocab_out"]:
    """Logits at the answer position for every row of ``data`` (default: ``task.dataset()``), with optional
    ``hooks`` (:func:`answer_run`)."""
    logits = answer_run(model, task, data, hooks=hooks, chunk=chunk).logits
    assert logits is not None
    return logits


def set_at_answer(
    model: GrokTransformer, task: ModularTask, name: str, values: Float[Tensor, "n ..."]
) -> tuple[str, RowHook]:
    """A hook for :func:`answer_run` that sets hook point ``name`` at the answer position to ``values[row]`` for
    every row of the data (cast to the activation's dtype), every other position left as it is."""
    index = answer_index(model, task, name)

    def set_rows(activation: Tensor, rows: slice) -> Tensor:
        activation = activation.clone()  # a tensor the model may still read elsewhere
        activation[:, index] = values[rows].to(activation)
        return activation

    return name, set_rows


@dataclass(frozen=True)
class AnswerActivations:
    """Last-layer activations at the answer position for every row of ``task.dataset()`` (a-major grid order)."""

    resid_mid: Float[Tensor, "n d_model"]
    post: Float[Tensor, "n d_mlp"] | None
    logits: Float[Tensor, "n d_vocab_out"]


def answer_activations(model: GrokTransformer, task: ModularTask, chunk: int = 16_384) -> AnswerActivations:
    """One pass over every input that keeps the last layer's ``resid_mid`` and MLP ``hook_post`` at the answer
    position and the logits there, so that several analyses of one checkpoint share a single forward pass."""
    layer = f"blocks.{model.cfg.n_layers - 1}"
    names = [f"{layer}.hook_resid_mid"] + ([] if model.cfg.attn_only else [f"{layer}.mlp.hook_post"])
    run = answer_run(model, task, capture=names, chunk=chunk)
    assert run.logits is not None
    post = run.captured.get(f"{layer}.mlp.hook_post")
    return AnswerActivations(
        resid_mid=run.captured[names[0]][:, 0], post=None if post is None else post[:, 0], logits=run.logits
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
