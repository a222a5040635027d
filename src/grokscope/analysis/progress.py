"""Progress measures of grokking as Nanda et al. (2023) define them: restricted and excluded loss, Gini, weight norm.

Following "Progress measures for grokking via mechanistic interpretability" (ICLR 2023), section 5.1 and appendix
(the definitions written out in ``shared/reference/progress-measures.md``); everything in float64.

* ``L``: answer-position logits over the first p outputs for every input, rows ``a * p + b``; the answer
  ``t = (a + b) mod p`` (add) or ``(a - b) mod p`` (sub).
* The **directions** of frequency k: ``cos(w_k s)`` and ``sin(w_k s)`` over the (a, b) grid, ``s = a + b`` (add) or
  ``a - b`` (sub), ``w_k = 2 pi k / p``, each scaled to unit norm in R^{p^2}
  (:func:`~grokscope.analysis.basis.trig_directions`). For an even p
  the sin of p/2 vanishes and is left out.
* The **trig part** of L for a key set K: ``T = sum_u u u^T L`` over the directions u of every k in K: for each
  output, the projection of its column onto those directions. Nothing else is kept (no one-input terms, no
  ``cos(w (a - b))`` for add, no products of two frequencies).
* **Restricted loss**: cross-entropy of ``T + m``, ``m[c]`` the mean over all inputs of ``(L - T)[:, c]`` (each
  output's mean restored). Headline on ``all`` inputs.
* **Excluded loss**: cross-entropy of ``L - T``. Headline on ``train``.
* **Neuron level** (one-layer models): ``N``, the MLP activations at the answer position, and their trig part
  ``A = sum_u u u^T N``, read out through the rest of the model from ``hook_post`` on (:func:`neuron_level_logits`).
  Restricted: logits ``(mean_rows(N) + A) W_out W_U`` with each output's mean set back to that of L (the
  TransformerLens grokking demo's construction); with a final normalization, the model's logits with ``hook_post =
  mean_rows(N) + A`` and ``resid_mid`` at its mean, passed through it. Excluded: the model's own logits with
  ``N - A`` in place of N (everything else in the residual stream untouched); the same as ablating the key
  frequencies' directions from the neurons (``neuron_frequencies`` in :mod:`grokscope.analysis.ablation`).
* **Single frequency** (the paper's 2-D excluded loss, Figure 7): each measure with K = {k}, for every k.
* ``logit_cos_coefficients[k - 1]``: the inner product of L with the unit-norm ``cos(w_k (s - c))`` over the p^3
  grid (the paper's "coefficients of cos(w_k(a+b-c))" in the logits, section 5.2).
* ``gini_embed`` / ``gini_unembed``: :func:`gini` of the per-frequency norms of W_E (number tokens) and of
  ``W_L = W_out @ W_U`` (first p outputs); ``weight_norm_sq``: the total sum of squared weights.

Losses are means over a split (``train``, ``test``, ``all``); an input counts as right only when the answer's logit
beats every other strictly. The key set is given: the runner passes one reference set for a whole run (by default
the final checkpoint's key frequencies, the paper's protocol); without one, this checkpoint's own key frequencies
(:func:`grokscope.analysis.fourier.key_frequencies`) are used and ``key_reference`` says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from grokscope.analysis import fourier
from grokscope.analysis.basis import matrix_spectrum, trig_directions, trig_part
from grokscope.analysis.common import (
    AnswerActivations,
    Score,
    answer_activations,
    answer_grid,
    answer_logits,
    answer_loss,
    model_device,
    require_grid,
    score_splits,
    set_at_answer,
    split_indices,
)
from grokscope.analysis.phases import detect_phases
from grokscope.analysis.spec import AnalysisSpec, RowResult
from grokscope.errors import UserError
from grokscope.tasks import ModularTask, Split

if TYPE_CHECKING:
    from grokscope.models import GrokTransformer

NAME = "progress"
OPERATIONS = ("add", "sub")
SWEEP_CHUNK = 2**22  # elements of one [frequencies, p^2, p] block of single-frequency logits


# Results ----------------------------------------------------------------------------------------------------------
@dataclass
class Sweep:
    """Scores with each single frequency as the key set: ``loss[split][k - 1]``, ``acc[split][k - 1]``."""

    loss: dict[str, list[float]]
    acc: dict[str, list[float]]


@dataclass
class ProgressResult(RowResult):
    """The measures of one checkpoint (module docstring). Neuron-level scores are None for deeper models; the
    single-frequency sweeps are None when not asked for. ``key_reference`` says where the key set came from:
    ``final:<step>`` / ``step:<step>`` (a reference checkpoint's), ``given``, or ``own`` (this checkpoint's)."""

    modulus: int
    key_frequencies: list[int]
    key_reference: str
    full: Score
    restricted: Score
    excluded: Score
    neuron_restricted: Score | None
    neuron_excluded: Score | None
    single_restricted: Sweep | None
    single_excluded: Sweep | None
    logit_cos_coefficients: list[float]
    gini_embed: float
    gini_unembed: float
    weight_norm_sq: float
    param_norms: dict[str, float]

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        """``single_frequency``: one row per frequency, a ``<measure>_<loss|acc>_<split>`` column per score."""
        if self.single_restricted is None or self.single_excluded is None:
            return {}
        n_freq = len(self.logit_cos_coefficients)
        rows: list[dict[str, Any]] = [
            {"frequency": k, "logit_cos_coefficient": c}
            for k, c in zip(range(1, n_freq + 1), self.logit_cos_coefficients, strict=True)
        ]
        for name, sweep in (("restricted", self.single_restricted), ("excluded", self.single_excluded)):
            for kind, scores in (("loss", sweep.loss), ("acc", sweep.acc)):
                for split, values in scores.items():
                    for row, value in zip(rows, values, strict=True):
                        row[f"{name}_{kind}_{split}"] = value
        return {"single_frequency": rows}


# The paper's measures on plain tensors ----------------------------------------------------------------------------
def restricted_logits(
    logits: Float[Tensor, "p_sq p"], frequencies: Sequence[int], operation: str = "add"
) -> Float[Tensor, "p_sq p"]:
    """``T + m``: the logits' trig part over the key set, each output's mean over the inputs restored."""
    p = logits.shape[1]
    trig = trig_part(logits, trig_directions(p, operation, frequencies))
    return trig + (logits - trig).mean(0)


def excluded_logits(
    logits: Float[Tensor, "p_sq p"], frequencies: Sequence[int], operation: str = "add"
) -> Float[Tensor, "p_sq p"]:
    """``L - T``: the logits less their trig part over the key set."""
    p = logits.shape[1]
    return logits - trig_part(logits, trig_directions(p, operation, frequencies))


def logit_cos_coefficients(logits: Float[Tensor, "p_sq p"], operation: str = "add") -> Float[Tensor, " n_freq"]:
    """``<L, cos(w_k (s - c)) / |cos(w_k (s - c))|>`` over the p^3 grid for every k = 1..p//2.

    The wave depends on (a, b, c) only through ``r = (t - c) mod p``, so the sum over p^3 cells is a sum over the p
    values of r of the logits summed over the cells with that r (each r holds p^2 cells).
    """
    p = logits.shape[1]
    r = (answer_grid(p, operation, logits.device).flatten()[:, None] - torch.arange(p, device=logits.device)) % p
    sums = logits.new_zeros(p).index_add_(0, r.flatten(), logits.flatten())
    ks = torch.arange(1, p // 2 + 1, device=logits.device, dtype=logits.dtype)
    cos = torch.cos(2 * math.pi * ks[:, None] * torch.arange(p, device=logits.device, dtype=logits.dtype) / p)
    return (cos @ sums) / (p**2 * cos.pow(2).sum(1)).sqrt()


def gini(x: Float[Tensor, " n"]) -> float:
    """Gini coefficient of non-negative values: ``2 sum_i i x_(i) / (n sum x) - (n + 1) / n`` over the values
    sorted ascending, i = 1..n. 0 when all are equal, (n - 1) / n when one holds everything; 0 for all zeros."""
    x = x.double().flatten().sort().values
    n, total = x.numel(), x.sum()
    if total == 0:
        return 0.0
    ranks = torch.arange(1, n + 1, dtype=x.dtype, device=x.device)
    return float(2 * (ranks * x).sum() / (n * total) - (n + 1) / n)


def single_frequency_sweeps(
    logits: Float[Tensor, "p_sq p"], operation: str, splits: dict[str, Tensor]
) -> tuple[Sweep, Sweep]:
    """Restricted and excluded scores with K = {k} for every k, without a [p^2, p] table per frequency.

    Frequency k's directions are functions of the answer t = a ± b alone, so its trig part is a [p, p] table
    ``tau_k[t, c]`` (the logits summed over the p inputs of each answer, projected), read at each input's own t. The
    restricted logits ``tau_k[t] + m`` take p distinct rows, scored once each. The excluded logits
    ``L(x) − tau_k[t(x)]`` are scored through their log-sum-exp, which factors: for the p inputs of one answer t,
    ``sum_c e^(L(x, c)) e^(−tau_k[t, c])`` for every k is a [p, p] x [p, n_freq] product. Only the accuracy (does
    the answer's logit beat every other?) still compares p logits per input and frequency.
    """
    n, p = logits.shape
    device = logits.device
    answers = answer_grid(p, operation, device).flatten()
    order = torch.argsort(answers, stable=True)
    by_answer = logits[order].reshape(p, p, p)  # [t, the p inputs with answer t, c]
    diag = torch.arange(p, device=device)
    ks = list(range(1, p // 2 + 1))
    # Input a = t, b = 0 has answer t: each direction's value at answer t.
    waves = [d[:, diag * p] for d in (trig_directions(p, operation, [k]).to(logits) for k in ks)]
    summed = by_answer.sum(1)  # [t, c]: the logits summed over the inputs of each answer
    tau = torch.stack([w.T @ (w @ summed) for w in waves])  # [n_freq, t, c]

    # Restricted: one row per answer t (every t is the answer of p inputs, so means over t are means over inputs).
    restricted = tau + (logits.mean(0) - tau.mean(1)).unsqueeze(1)
    loss_r, right_r = answer_loss(restricted, diag)  # [n_freq, t]
    loss_r, right_r = loss_r[:, :, None].expand(-1, -1, p), right_r[:, :, None].expand(-1, -1, p)

    # Excluded: the log-sum-exp from one product per answer, both factors scaled by their maxima to stay in range.
    right_value = by_answer[diag, :, diag][None] - tau[:, diag, diag][:, :, None]  # [n_freq, t, x]
    top = by_answer.amax(2, keepdim=True)  # [t, x, 1]
    neg_top = (-tau).amax(2, keepdim=True)  # [n_freq, t, 1]
    sums = torch.bmm((by_answer - top).exp(), (-tau - neg_top).exp().permute(1, 2, 0))  # [t, x, n_freq]
    lse = sums.log().permute(2, 0, 1) + top.squeeze(2)[None] + neg_top
    loss_e = (lse - right_value).clamp_min(0)  # a loss of ~1e-16 can round below zero
    wrong_only = tau.clone()
    wrong_only[:, diag, diag] = math.inf  # the answer itself drops out of the best other logit
    right_e = torch.empty_like(right_value, dtype=torch.bool)
    per_block = max(1, SWEEP_CHUNK // (n * p))
    for block in torch.arange(len(ks), device=device).split(per_block):
        best_other = (by_answer[None] - wrong_only[block][:, :, None, :]).amax(3)  # [block, t, x]
        right_e[block] = right_value[block] > best_other

    sweeps = []
    for loss, right in ((loss_r, right_r), (loss_e, right_e)):
        per_input = loss.new_empty(len(ks), n)
        per_input[:, order] = loss.reshape(len(ks), n)
        hits = torch.empty(len(ks), n, dtype=torch.float64, device=device)
        hits[:, order] = right.reshape(len(ks), n).double()
        sweeps.append(
            Sweep(
                loss={s: per_input[:, i].mean(1).tolist() for s, i in splits.items()},
                acc={s: hits[:, i].mean(1).tolist() for s, i in splits.items()},
            )
        )
    return sweeps[0], sweeps[1]


# The model ----------------------------------------------------------------------------------------------------------
def neuron_level_logits(
    model: GrokTransformer,
    task: ModularTask,
    activations: AnswerActivations,
    frequencies: Sequence[int],
    *,
    linear: bool | None = None,
) -> tuple[Float[Tensor, "p_sq p"], Float[Tensor, "p_sq p"]]:
    """The neuron-level restricted and excluded logits (first p outputs, float64) of a one-layer model.

    What is read out: the model's own logits from its MLP neurons (``hook_post`` at the answer position) on, through
    the rest of the forward: ``W_out``, ``b_out``, the residual stream, the final normalization if any, ``W_U``,
    ``b_U``. With ``A`` the neurons' trig part over ``frequencies`` (:func:`~grokscope.analysis.basis.trig_part`):

    * excluded: the logits with ``hook_post = N - A``, the rest of the residual stream (``resid_mid``) as it is;
    * restricted: the logits with ``hook_post = mean_rows(N) + A`` and ``resid_mid`` at its mean over the inputs,
      so that only the neurons' trig part varies with the input; then each output's mean set to that of the
      model's logits.

    Without normalization the readout is linear and these are the paper's formulas exactly (reference
    ``progress-measures.md``): excluded ``L - A W_out W_U``, and restricted ``(mean_rows(N) + A) W_out W_U`` with
    each output's mean restored (``resid_mid``'s mean, ``b_out`` and ``b_U`` are constants the restoration
    replaces). That closed form is used when ``linear`` (default: the model has no normalization); otherwise the
    model is run with the hooks set, which a final LayerNorm needs. ``linear=False`` forces the forward.
    """
    p = task.modulus
    layer = f"blocks.{model.cfg.n_layers - 1}"
    if activations.post is None:
        raise UserError(f"{NAME}: the neuron level needs the MLP activations at the answer position")
    logits, post = activations.logits[:, :p].double(), activations.post.double()
    trig = trig_part(post, trig_directions(p, task.operation.name, frequencies))
    if linear is None:
        linear = model.cfg.normalization_type is None
    if linear:
        unembed = model.W_out[-1].double() @ model.W_U[:, :p].double()  # W_L: [d_mlp, p]
        restricted = (post.mean(0) + trig) @ unembed
        excluded = logits - trig @ unembed
    else:
        resid_mean = activations.resid_mid.double().mean(0).expand_as(activations.resid_mid)
        restricted = _logits_with(
            model, task, {f"{layer}.hook_resid_mid": resid_mean, f"{layer}.mlp.hook_post": post.mean(0) + trig}
        )
        excluded = _logits_with(model, task, {f"{layer}.mlp.hook_post": post - trig})
    return restricted + (logits.mean(0) - restricted.mean(0)), excluded


def _logits_with(model: GrokTransformer, task: ModularTask, values: dict[str, Tensor]) -> Float[Tensor, "p_sq p"]:
    """Answer logits (first p outputs, float64) with each hook point in ``values`` set at the answer position."""
    hooks = [set_at_answer(model, task, name, value) for name, value in values.items()]
    return answer_logits(model, task, hooks=hooks)[:, : task.modulus].double()


def _check_keys(given: Sequence[int], n_freq: int) -> list[int]:
    bad = [k for k in given if isinstance(k, bool) or not (isinstance(k, int) and 1 <= k <= n_freq)]
    if bad:
        raise UserError(f"{NAME}.key_frequencies: {bad} not integers in 1..{n_freq}")
    return sorted(set(given))


@torch.no_grad()
def compute(
    model: GrokTransformer,
    task: ModularTask,
    *,
    split: Split | None = None,
    key_frequencies: Sequence[int] | None = None,
    key_reference: str | None = None,
    single_frequencies: bool = True,
    activations: AnswerActivations | None = None,
) -> ProgressResult:
    """Progress measures of ``model`` on ``task`` (definitions in the module docstring).

    ``key_frequencies``: ints in 1..p//2, held fixed across a run (``key_reference`` names where they came from,
    default ``given``); None uses this checkpoint's own key frequencies. ``single_frequencies``: also every single
    frequency as the key set. ``activations``: a forward pass already run on this checkpoint.
    """
    if task.operation.name not in OPERATIONS:
        raise UserError(
            f"{NAME}: needs an answer that is a function of a+b or a-b (add, sub), not {task.operation.name}"
        )
    p = require_grid(task, NAME)
    op = task.operation.name
    device = model_device(model)
    acts = activations if activations is not None else answer_activations(model, task)
    if key_frequencies is None:
        keys, reference = fourier.key_frequencies(model, task, activations=acts), "own"
    else:
        keys, reference = _check_keys(key_frequencies, p // 2), key_reference or "given"

    splits = split_indices(p * p, split, device)
    answers = answer_grid(p, op, device).flatten()

    def score(logits: Float[Tensor, "p_sq p"]) -> Score:
        return score_splits(*answer_loss(logits, answers), splits)

    logits = acts.logits[:, :p].double()
    trig = trig_part(logits, trig_directions(p, op, keys))
    unembed = model.W_out[-1].double() @ model.W_U[:, :p].double()  # W_L: [d_mlp, p]

    neuron_restricted = neuron_excluded = None
    if model.cfg.n_layers == 1 and acts.post is not None:
        restricted_neurons, without_trig = neuron_level_logits(model, task, acts, keys)
        neuron_restricted, neuron_excluded = score(restricted_neurons), score(without_trig)

    single_restricted = single_excluded = None
    if single_frequencies:
        single_restricted, single_excluded = single_frequency_sweeps(logits, op, splits)

    params = {name: param.detach().double() for name, param in model.named_parameters()}
    return ProgressResult(
        modulus=p,
        key_frequencies=keys,
        key_reference=reference,
        full=score(logits),
        restricted=score(trig + (logits - trig).mean(0)),
        excluded=score(logits - trig),
        neuron_restricted=neuron_restricted,
        neuron_excluded=neuron_excluded,
        single_restricted=single_restricted,
        single_excluded=single_excluded,
        logit_cos_coefficients=logit_cos_coefficients(logits, op).tolist(),
        gini_embed=gini(matrix_spectrum(model.W_E[:p].double())),
        gini_unembed=gini(matrix_spectrum(unembed.T)),
        weight_norm_sq=float(sum(w.pow(2).sum() for w in params.values())),
        param_norms={name: float(w.norm()) for name, w in params.items()},
    )


SPEC = AnalysisSpec(
    name=NAME,
    compute=compute,
    result=ProgressResult,
    inputs=frozenset({"split", "activations", "key_frequencies"}),
    needs_grid=True,
    operations=OPERATIONS,
    summarize=detect_phases,
)
