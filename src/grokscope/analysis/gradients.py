"""Layer-wise gradient flow: gradient norms on the training set, update-to-weight ratios, gradient alignment.

At a checkpoint, :func:`compute` takes the gradient of the training objective (the run's ``train.loss_fn``, softmax
or StableMax cross-entropy, see :mod:`grokscope.losses`) over the whole training split and reports its norm per
parameter tensor, per component (``embed``, ``blocks.0.attn``, ``blocks.0.mlp``, ``unembed``, ...) and per layer.
Given the previously analysed checkpoint (``previous``), it adds how far each tensor moved relative to its size,
``||W_t - W_prev|| / ||W_prev||``, and the cosine between the two checkpoints' gradients. Given both checkpoints'
steps it also divides the movement by the number of training steps between them, so that movement stays
comparable where the checkpoint spacing changes (e.g. from every 10 to every 100 steps).

:class:`GradientNormRecorder` is the in-training counterpart: a callback that logs per-component gradient norms every
``every`` updates into ``recordings/gradient_norms.jsonl``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from grokscope.analysis.common import model_device
from grokscope.analysis.spec import AnalysisSpec, RowResult
from grokscope.callbacks import Callback
from grokscope.errors import UserError
from grokscope.losses import loss_dtype as resolve_loss_dtype
from grokscope.losses import loss_function
from grokscope.store import RECORDINGS_DIR, atomic_write_text, read_metrics
from grokscope.tasks import ModularTask, Split

if TYPE_CHECKING:
    from grokscope.models import GrokTransformer
    from grokscope.store import Run

NAME = "gradients"
RECORDING_FILE = "gradient_norms.jsonl"
CHUNK = 8192  # training rows per backward pass; the gradient of the mean loss is accumulated across chunks


def component_of(parameter: str) -> str:
    """``blocks.0.attn.W_Q`` -> ``blocks.0.attn``; ``embed.W_E`` -> ``embed``."""
    return parameter.rsplit(".", 1)[0]


def layer_of(parameter: str) -> str:
    """``blocks.1.mlp.W_in`` -> ``blocks.1``; ``unembed.W_U`` -> ``unembed``."""
    parts = parameter.split(".")
    return ".".join(parts[:2]) if parts[0] == "blocks" else parts[0]


def _group_norms(norms: dict[str, Tensor], key) -> dict[str, float]:
    """Combine per-tensor norms into per-group norms: sqrt of the summed squares."""
    groups: dict[str, Tensor] = {}
    for name, norm in norms.items():
        groups[key(name)] = groups.get(key(name), 0) + norm.pow(2)
    return {g: float(v.sqrt()) for g, v in groups.items()}


def training_gradients(
    model: GrokTransformer,
    task: ModularTask,
    split: Split | None,
    loss_fn: str = "softmax",
    loss_dtype: str = "float64",
) -> tuple[float, dict[str, Tensor]]:
    """Loss and gradient (per parameter, float64 copies) of the mean training loss; the model's .grad is left clear.

    ``loss_fn`` and ``loss_dtype`` name the objective and the dtype it is computed in, as ``train.loss_fn`` and
    ``train.loss_dtype`` do (see :func:`compute`).
    """
    loss_function(loss_fn)  # an unknown name fails here, before any work
    dtype = resolve_loss_dtype(loss_dtype)
    data = task.dataset()
    if split is not None:
        data = data.subset(split.train)
    data = data.to(model_device(model))
    model.zero_grad(set_to_none=True)
    total = 0.0
    with torch.enable_grad():
        for start in range(0, len(data), CHUNK):
            chunk = data.subset(slice(start, start + CHUNK))
            # Summed over chunks, each weighted by its share of the rows, this is the gradient of the full mean.
            loss = task.loss(model(chunk.tokens), chunk.labels, dtype, loss_fn=loss_fn) * (len(chunk) / len(data))
            loss.backward()
            total += loss.item()
    grads = {
        name: (p.grad.detach().double().clone() if p.grad is not None else torch.zeros_like(p, dtype=torch.float64))
        for name, p in model.named_parameters()
    }
    model.zero_grad(set_to_none=True)
    return total, grads


@dataclass
class GradientsResult(RowResult):
    """Gradient norms at one checkpoint, and (when a previous checkpoint was given) movement and alignment.

    * ``loss``, ``grad_norm`` (all parameters), ``grad_norms`` (per tensor), ``grad_norm_by_component``,
      ``grad_norm_by_layer``: the training objective ``loss_fn`` (computed in ``loss_dtype``) over the training split
      and the norms of its gradient.
    * ``update_ratio`` (per tensor; None for a tensor that was zero) and ``update_ratio_total`` (all parameters as
      one vector): ``||W_t - W_prev|| / ||W_prev||`` between this and the previous checkpoint, however many steps
      apart they are.
    * ``steps_between``: training steps from the previous checkpoint to this one (given both steps).
    * ``update_ratio_per_step``, ``update_ratio_total_per_step``: the two above divided by ``steps_between``, the
      average net movement per training step. Comparable across changes of checkpoint spacing; a lower bound on the
      per-step update size, since the path between checkpoints may turn (it is exact for a straight path).
    * ``grad_cosine_previous``, ``grad_cosine_by_component``: cosine between this and the previous checkpoint's
      gradients, overall and per component. They depend on how far apart the checkpoints are and have no per-step
      form: compare them at equal ``steps_between``.

    ``gradients`` (per tensor, float64) live in the sidecar file (``ARRAYS``), the rest in the row.
    """

    ARRAYS = ("gradients",)

    loss: float
    grad_norm: float
    grad_norms: dict[str, float]
    grad_norm_by_component: dict[str, float]
    grad_norm_by_layer: dict[str, float]
    loss_fn: str = "softmax"
    loss_dtype: str = "float64"
    update_ratio: dict[str, float | None] | None = None
    update_ratio_total: float | None = None
    steps_between: int | None = None
    update_ratio_per_step: dict[str, float | None] | None = None
    update_ratio_total_per_step: float | None = None
    grad_cosine_previous: float | None = None
    grad_cosine_by_component: dict[str, float] | None = None
    gradients: dict[str, Tensor] = field(default_factory=dict, repr=False)


def _cosine(a: Tensor, b: Tensor) -> float:
    denom = a.norm() * b.norm()
    return float(a.flatten() @ b.flatten() / denom) if denom > 0 else 0.0


def compute(
    model: GrokTransformer,
    task: ModularTask,
    *,
    split: Split | None = None,
    previous: GrokTransformer | None = None,
    previous_gradients: dict[str, Tensor] | None = None,
    previous_result: GradientsResult | None = None,
    previous_step: int | None = None,
    step: int | None = None,
    loss_fn: str = "softmax",
    loss_dtype: str = "float64",
) -> GradientsResult:
    """Gradient flow at this checkpoint; pass the previous analysed checkpoint's model to get movement and alignment.

    ``previous_gradients`` (or ``previous_result``, whose ``gradients`` they are) saves recomputing the previous
    checkpoint's gradient.
    ``previous_step`` and ``step`` (the two checkpoints' training steps, both or neither) give ``steps_between`` and
    the per-step movement fields (see :class:`GradientsResult`).

    ``loss_fn`` is the run's ``train.loss_fn`` (``"softmax"`` or ``"stablemax"``): pass it, or a StableMax run is
    analysed under a loss it was not trained on. ``loss_dtype`` (``"float32"`` or ``"float64"``, as
    ``train.loss_dtype``; never below the model's dtype) defaults to float64, which resolves the tiny losses and
    gradients of a grokked model; pass the run's ``train.loss_dtype`` to reproduce the trainer's rounding instead
    (e.g. float32 softmax collapse, where the gradient of confidently-right examples becomes exactly zero).
    """
    if previous is not None and (previous_step is None) != (step is None):
        raise UserError(f"{NAME}: give both previous_step and step, or neither (got {previous_step} and {step})")
    if previous is not None and step is not None and step <= previous_step:
        raise UserError(f"{NAME}: step {step} must come after previous_step {previous_step}")
    loss, grads = training_gradients(model, task, split, loss_fn, loss_dtype)
    norms = {name: g.norm() for name, g in grads.items()}
    result = GradientsResult(
        loss=loss,
        grad_norm=float(torch.stack(list(norms.values())).pow(2).sum().sqrt()),
        grad_norms={name: float(n) for name, n in norms.items()},
        grad_norm_by_component=_group_norms(norms, component_of),
        grad_norm_by_layer=_group_norms(norms, layer_of),
        loss_fn=loss_fn,
        loss_dtype=loss_dtype,
        gradients=grads,
    )
    if previous is None:
        return result
    if previous_gradients is None and previous_result is not None and previous_result.gradients:
        previous_gradients = previous_result.gradients
    if previous_gradients is None:
        _, previous_gradients = training_gradients(previous, task, split, loss_fn, loss_dtype)
    old = {name: p.detach().double() for name, p in previous.named_parameters()}
    new = {name: p.detach().double() for name, p in model.named_parameters()}
    moved = {name: (new[name] - old[name]).norm() for name in new}
    size = {name: old[name].norm() for name in new}
    result.update_ratio = {name: float(moved[name] / size[name]) if size[name] > 0 else None for name in new}
    total_size = torch.stack(list(size.values())).pow(2).sum().sqrt()
    result.update_ratio_total = float(torch.stack(list(moved.values())).pow(2).sum().sqrt() / total_size)
    if step is not None:
        gap = result.steps_between = step - previous_step
        result.update_ratio_per_step = {
            name: ratio / gap if ratio is not None else None for name, ratio in result.update_ratio.items()
        }
        result.update_ratio_total_per_step = result.update_ratio_total / gap
    flat_now = torch.cat([g.flatten() for g in grads.values()])
    flat_before = torch.cat([previous_gradients[name].flatten() for name in grads])
    result.grad_cosine_previous = _cosine(flat_now, flat_before)
    by_component: dict[str, list[str]] = {}
    for name in grads:
        by_component.setdefault(component_of(name), []).append(name)
    result.grad_cosine_by_component = {
        comp: _cosine(
            torch.cat([grads[n].flatten() for n in names]), torch.cat([previous_gradients[n].flatten() for n in names])
        )
        for comp, names in by_component.items()
    }
    return result


class GradientNormRecorder(Callback):
    """Log per-component gradient norms every ``every`` updates into ``recordings/gradient_norms.jsonl``.

    Norms are kept on the device and read back only when the rows are written (at checkpoints), so recording adds no
    host sync per step. Rows past the step a run resumes from are dropped, matching the resumed metrics.
    """

    def __init__(self, every: int = 10) -> None:
        self.every = every
        self.rows: list[dict[str, Any]] = []
        self._pending: list[tuple[int, list[str], Tensor]] = []
        self._run: Run | None = None

    @property
    def path(self):
        return self._run.root / RECORDINGS_DIR / RECORDING_FILE

    def on_train_begin(self, run: Run, model: GrokTransformer, step: int) -> None:
        self._run = run
        self.rows = [row for row in read_metrics(self.path) if row["step"] < step] if step else []

    def on_after_backward(self, step: int, model: GrokTransformer) -> None:
        if step % self.every:
            return
        groups: dict[str, list[Tensor]] = {}
        for name, p in model.named_parameters():
            if p.grad is not None:
                groups.setdefault(component_of(name), []).append(p.grad.detach().pow(2).sum())
        names = list(groups)
        self._pending.append((step, names, torch.stack([torch.stack(v).sum().sqrt() for v in groups.values()])))

    def _flush(self) -> None:
        for step, names, norms in self._pending:
            self.rows.append({"step": step, **dict(zip(names, norms.tolist(), strict=True))})
        self._pending.clear()
        if self._run is not None:
            atomic_write_text(self.path, "".join(json.dumps(row) + "\n" for row in self.rows))

    def on_checkpoint(self, step: int, model: GrokTransformer) -> None:
        self._flush()

    def on_train_end(self, run: Run, model: GrokTransformer, step: int) -> None:
        self._flush()


SPEC = AnalysisSpec(
    name=NAME,
    compute=compute,
    result=GradientsResult,
    inputs=frozenset({"split", "previous", "objective"}),
)
