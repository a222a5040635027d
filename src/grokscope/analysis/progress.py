"""Progress measures of grokking (Nanda et al. 2023): how much of the model's loss its key Fourier frequencies carry.

Logits ``L[a, b, c]`` are the answer-position logits over the first p outputs for every input (a, b); the answer
is ``t = (a + b) mod p`` for add and ``t = (a - b) mod p`` for sub. A loss is the mean cross-entropy at the answers
over a split (``train``, ``test``, ``all``); an input counts as right when the answer's logit is strictly larger
than every other logit (ties are wrong, so uniform logits score 0). For a key set K of frequencies:

* key cells of K: the cells of the 2-D Fourier transform over (a, b) (rows: basis over a, columns: basis over b,
  :func:`basis.fourier_basis`) whose row and column both are the constant or a frequency in K, less the constant
  cell itself. For K = {k} these are exactly ``basis.frequency_cells(p)[k - 1]``; for larger K they add the cross
  cells of two key frequencies (``cos k1 a * sin k2 b``), so that keeping every frequency keeps everything.
* restricted (logit level): for each output c, keep only the constant cell and the key cells of the transform of
  ``L[:, :, c]``, transform back. Keeping every frequency gives back L.
* excluded (logit level): remove from L, for each k in K, its components along ``cos(w_k s)`` and ``sin(w_k s)``
  with ``s = t - c`` (a + b - c or a - b - c), each with coefficient ``<L, u> / <u, u>`` over the whole p^3 grid.
* neuron level (one-layer models only, else None): the same cell selection applied to every neuron's activation
  at ``blocks.0.mlp.hook_post`` at the answer position over (a, b): restricted keeps the constant and the key
  cells, excluded zeroes the key cells. The modified activations replace the originals through a hook, so everything
  after the MLP is the model's own computation.
* single frequency: each measure with K = {k} for every frequency k; the best restricted k has the lowest loss on
  ``all``, the worst excluded k the highest. At the neuron level the sweep reads the modified activations out
  through ``W_out @ W_U`` instead of a hooked forward per frequency, which is the same computation only when
  nothing normalises after the MLP; with a final LayerNorm the neuron-level sweep is None.
* ``gini_embed`` / ``gini_unembed``: :func:`gini` of the per-frequency norms of W_E (number tokens) and of
  ``W_L = W_out @ W_U`` (last layer, first p outputs), the Fourier transform taken over the token / output
  dimension and the norm over the other one; the constant component is left out.
* ``weight_norm_sq``: sum of squared entries of every parameter; ``param_norms``: L2 norm of each parameter.

Without given key frequencies a simple private fallback picks those whose W_L norm is at least
``FALLBACK_FRACTION`` of the largest (``fourier.py`` owns the official rule).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from grokscope.analysis.basis import (
    basis_frequencies,
    fourier_basis,
    frequency_membership,
    matrix_spectrum,
)
from grokscope.analysis.common import (
    AnswerActivations,
    answer_activations,
    grid_inputs,
    jsonable,
    model_device,
    require_grid,
)
from grokscope.errors import UserError
from grokscope.tasks import ModularTask, Split

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

NAME = "progress"
NEEDS_GRID = True  # every (a, b) in Z_p x Z_p: the runner skips tasks without it when asked to
OPERATIONS = ("add", "sub")
FALLBACK_FRACTION = 0.3
HOOK_POST = "blocks.0.mlp.hook_post"
FORWARD_CHUNK = 16_384  # inputs per forward pass
# Elements of one [frequencies, p^2, p] block of sweep logits: 16 MB in float64, so a block is still in the
# cache when its loss is taken (a frequency at a time at p = 113; larger blocks ran twice as slowly).
SWEEP_CHUNK = 2**21


# Results ----------------------------------------------------------------------------------------------------------
@dataclass
class Score:
    """Mean loss and accuracy per split: ``train`` and ``test`` (when a split was given) and ``all``."""

    loss: dict[str, float]
    acc: dict[str, float]


@dataclass
class Sweep:
    """Scores with each single frequency as the key set: ``loss[split][k - 1]``, ``acc[split][k - 1]``."""

    loss: dict[str, list[float]]
    acc: dict[str, list[float]]

    def pick(self, best: Callable[[list[float]], float]) -> dict[str, Any]:
        """The frequency whose ``all`` loss is ``best`` (min or max) of all, with its scores."""
        losses = self.loss["all"]
        i = losses.index(best(losses))
        return {
            "frequency": i + 1,
            "loss": {s: v[i] for s, v in self.loss.items()},
            "acc": {s: v[i] for s, v in self.acc.items()},
        }


@dataclass
class ProgressResult:
    """The measures of one checkpoint. ``to_dict()`` gives ``<measure>_loss`` / ``<measure>_acc`` ({split: value};
    None at the neuron level of deeper models) for full, restricted, excluded, neuron_restricted and
    neuron_excluded; ``single_frequency`` ({"frequency": [1..], "<measure>_loss": {split: [per k]}});
    ``[neuron_]best_single_restricted`` and ``[neuron_]worst_single_excluded`` ({frequency, loss, acc}); and the
    key frequencies, Gini coefficients and weight norms as named here. ``tables()`` adds the per-frequency accuracies.
    """

    key_frequencies: list[int]
    key_frequencies_source: str  # "given" or "fallback"
    full: Score
    restricted: Score
    excluded: Score
    neuron_restricted: Score | None
    neuron_excluded: Score | None
    single: dict[str, Sweep]  # measure name -> sweep; empty when not asked for
    gini_embed: float
    gini_unembed: float
    weight_norm_sq: float
    param_norms: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key_frequencies": self.key_frequencies,
            "key_frequencies_source": self.key_frequencies_source,
        }
        for name in ("full", "restricted", "excluded", "neuron_restricted", "neuron_excluded"):
            score = getattr(self, name)
            out[f"{name}_loss"] = score.loss if score else None
            out[f"{name}_acc"] = score.acc if score else None
        if self.single:
            n_freq = len(next(iter(self.single.values())).loss["all"])
            out["single_frequency"] = {"frequency": list(range(1, n_freq + 1))}
            out["single_frequency"].update({f"{name}_loss": sweep.loss for name, sweep in self.single.items()})
        else:
            out["single_frequency"] = None
        for prefix in ("", "neuron_"):
            restricted, excluded = self.single.get(f"{prefix}restricted"), self.single.get(f"{prefix}excluded")
            out[f"{prefix}best_single_restricted"] = restricted.pick(min) if restricted else None
            out[f"{prefix}worst_single_excluded"] = excluded.pick(max) if excluded else None
        out |= {
            "gini_embed": self.gini_embed,
            "gini_unembed": self.gini_unembed,
            "weight_norm_sq": self.weight_norm_sq,
            "param_norms": self.param_norms,
        }
        return jsonable(out)

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        """``single_frequency``: one row per frequency, a ``<measure>_<loss|acc>_<split>`` column per score."""
        if not self.single:
            return {}
        n_freq = len(next(iter(self.single.values())).loss["all"])
        rows: list[dict[str, Any]] = [{"frequency": k} for k in range(1, n_freq + 1)]
        for name, sweep in self.single.items():
            for kind, scores in (("loss", sweep.loss), ("acc", sweep.acc)):
                for split, values in scores.items():
                    for row, value in zip(rows, values, strict=True):
                        row[f"{name}_{kind}_{split}"] = value
        return {"single_frequency": jsonable(rows)}


# Logit-level measures on plain tensors ----------------------------------------------------------------------------
def answer_grid(p: int, operation: str, device: torch.device | str = "cpu") -> Int[Tensor, "p p"]:
    """``t[a, b]``: the answer of ``a + b`` or ``a - b`` mod p."""
    x = torch.arange(p, device=device)
    sign = {"add": 1, "sub": -1}[operation]
    return (x[:, None] + sign * x[None, :]) % p


def answer_loss(
    logits: Float[Tensor, "*batch n p"], answers: Int[Tensor, " n"]
) -> tuple[Float[Tensor, "*batch n"], Bool[Tensor, "*batch n"]]:
    """Cross-entropy at the answers, and whether the answer's logit beats every other logit strictly."""
    return _answer_loss_(logits.clone(), answers)


def _answer_loss_(
    logits: Float[Tensor, "*batch n p"], answers: Int[Tensor, " n"]
) -> tuple[Float[Tensor, "*batch n"], Bool[Tensor, "*batch n"]]:
    """:func:`answer_loss`, overwriting ``logits`` to save the memory passes of the sweeps."""
    index = answers.expand(logits.shape[:-1]).unsqueeze(-1)
    right = logits.gather(-1, index).squeeze(-1)
    others = logits.scatter_(-1, index, -math.inf)
    best_other = others.amax(-1)
    top = torch.maximum(right, best_other)
    rest = others.sub_(top.unsqueeze(-1)).exp_().sum(-1)  # sum of exp(logit - top) over the wrong outputs
    # With the answer on top the loss is log1p(rest), which stays precise for tiny losses.
    loss = torch.where(right >= best_other, torch.log1p(rest), top - right + torch.log(torch.exp(right - top) + rest))
    return loss, right > best_other


def _transform_ab(
    x: Float[Tensor, "p p *rest"], basis_a: Float[Tensor, "i p"], basis_b: Float[Tensor, "j p"]
) -> Float[Tensor, "i j *rest"]:
    """2-D Fourier coefficients of ``x`` over (a, b) on the given basis rows (two thin products, not one big one)."""
    over_a = torch.einsum("ia,ab...->ib...", basis_a, x)
    return torch.einsum("jb,ib...->ij...", basis_b, over_a)


def _inverse_ab(
    coeffs: Float[Tensor, "i j *rest"], basis_a: Float[Tensor, "i p"], basis_b: Float[Tensor, "j p"]
) -> Float[Tensor, "p p *rest"]:
    """Inverse of :func:`_transform_ab` on the same basis rows."""
    over_i = torch.einsum("ia,ij...->aj...", basis_a, coeffs)
    return torch.einsum("jb,aj...->ab...", basis_b, over_i)


def keep_cells(x: Float[Tensor, "p p *rest"], keep: Bool[Tensor, "p p"]) -> Float[Tensor, "p p *rest"]:
    """``x`` with only the 2-D Fourier cells in ``keep`` (rows: basis over a, columns: basis over b).

    Only the basis rows that ``keep`` touches take part, so a few kept frequencies cost a few thin products.
    """
    basis = fourier_basis(x.shape[0], x.dtype).to(x.device)
    keep = keep.to(x.device)
    rows, cols = keep.any(1), keep.any(0)
    mask = keep[rows][:, cols].to(x.dtype)
    coeffs = _transform_ab(x, basis[rows], basis[cols]) * mask.reshape(*mask.shape, *[1] * (x.dim() - 2))
    return _inverse_ab(coeffs, basis[rows], basis[cols])


def key_cells(p: int, frequencies: Sequence[int], constant: bool = False) -> Bool[Tensor, "p p"]:
    """The key cells of a set of frequencies (module docstring), and the constant cell when ``constant``."""
    kept = torch.isin(basis_frequencies(p), torch.tensor([0, *frequencies], dtype=torch.long))
    cells = kept[:, None] & kept[None, :]
    cells[0, 0] = constant
    return cells


def restricted_logits(logits: Float[Tensor, "p p p"], frequencies: Sequence[int]) -> Float[Tensor, "p p p"]:
    """Logits ``[a, b, c]`` with only the constant and the frequencies' cells of the (a, b) transform kept."""
    return keep_cells(logits, key_cells(logits.shape[0], frequencies, constant=True))


def frequency_profiles(logits: Float[Tensor, "p p p"], operation: str) -> Float[Tensor, "n_freq p"]:
    """``R[k - 1, s]``: the projection of the logits onto ``cos(w_k s)``, ``sin(w_k s)``, ``s = t - c``, as a
    function of s.

    Those functions depend on (a, b, c) only through s, and each value of s occurs p^2 times, so the projection
    over the p^3 grid is the projection over Z_p of ``g[s]``, the mean of the logits over the inputs with that s.
    """
    p = logits.shape[0]
    shift = shift_index(p, operation, logits.device)
    g = logits.new_zeros(p).index_add_(0, shift.flatten(), logits.flatten()) / p**2
    basis = fourier_basis(p, logits.dtype).to(logits.device)
    membership = frequency_membership(p, logits.dtype).to(logits.device)
    return (membership * (basis @ g)) @ basis


def shift_index(p: int, operation: str, device: torch.device | str = "cpu") -> Int[Tensor, "p p p"]:
    """``s[a, b, c] = (t[a, b] - c) mod p``."""
    return (answer_grid(p, operation, device)[:, :, None] - torch.arange(p, device=device)) % p


def excluded_logits(
    logits: Float[Tensor, "p p p"], frequencies: Sequence[int], operation: str = "add"
) -> Float[Tensor, "p p p"]:
    """Logits ``[a, b, c]`` less their components along ``cos/sin(w_k (t - c))`` for each frequency k."""
    p = logits.shape[0]
    removed = frequency_profiles(logits, operation)[[k - 1 for k in frequencies]].sum(0)
    return logits - removed[shift_index(p, operation, logits.device)]


def gini(x: Float[Tensor, " n"]) -> float:
    """Gini coefficient of non-negative values: ``2 sum_i i x_(i) / (n sum x) - (n + 1) / n`` over the values
    sorted ascending, i = 1..n. 0 when all are equal, (n - 1) / n when one holds everything; 0 for all zeros."""
    x = x.double().flatten().sort().values
    n, total = x.numel(), x.sum()
    if total == 0:
        return 0.0
    ranks = torch.arange(1, n + 1, dtype=x.dtype, device=x.device)
    return float(2 * (ranks * x).sum() / (n * total) - (n + 1) / n)


# Single-frequency sweeps ------------------------------------------------------------------------------------------
def _padded_transform(x: Float[Tensor, "p p p"]) -> Float[Tensor, "p+1 p+1 p"]:
    """2-D Fourier coefficients over (a, b), padded with a zero row and column (the missing sin of p/2)."""
    basis = fourier_basis(x.shape[0], x.dtype).to(x.device)
    return torch.nn.functional.pad(_transform_ab(x, basis, basis), (0, 0, 0, 1, 0, 1))


def _with_frequency_parts(
    base: Float[Tensor, "n p"] | None,
    coeffs: Float[Tensor, "p+1 p+1 p"],
    frequencies: Int[Tensor, " k"],
    *,
    constant: bool,
    sign: float = 1.0,
) -> Float[Tensor, "k n p"]:
    """``base + sign * part``, where part is, for each frequency k, the part of the padded transform ``coeffs`` in
    k's cells (and the constant cell when ``constant``), over the inputs ``n = p^2`` a-major."""
    p = coeffs.shape[-1]
    basis = torch.nn.functional.pad(fourier_basis(p, coeffs.dtype).to(coeffs.device), (0, 0, 0, 1))
    # basis.py order: const, cos 1, sin 1, cos 2, ...; the missing sin p/2 of an even p lands on the zero row p.
    ks = frequencies.to(coeffs.device)
    rows = torch.stack([torch.zeros_like(ks), 2 * ks - 1, 2 * ks], dim=1)
    blocks = coeffs[rows[:, :, None], rows[:, None, :]]  # [k, 3, 3, p]: every cell of {const, cos k, sin k}^2
    if not constant:
        blocks[:, 0, 0] = 0
    b = basis[rows]  # [k, 3, p]
    # Contract b first, then a: the second product has inner size 3, so writing the output is most of its cost.
    over_b = torch.einsum("kjb,kijc->kibc", b, sign * blocks).reshape(len(ks), 3, p * p)
    parts = torch.bmm(b.transpose(1, 2), over_b).reshape(len(ks), p * p, p)
    return parts if base is None else parts.add_(base)  # baddbmm with a broadcast base ran 20x slower


def _sweep(
    logits_for: Callable[[Int[Tensor, " k"]], Float[Tensor, "k n p"]],
    n_freq: int,
    answers: Int[Tensor, " n"],
    splits: dict[str, Tensor],
) -> Sweep:
    """Scores of ``logits_for(ks)`` for every frequency, computed a block of frequencies ``ks`` at a time."""
    n = answers.numel()
    per_block = max(1, SWEEP_CHUNK // (n * math.isqrt(n)))  # n = p^2 inputs, p outputs each
    parts = [_answer_loss_(logits_for(ks), answers) for ks in torch.arange(1, n_freq + 1).split(per_block)]
    loss = torch.cat([loss for loss, _ in parts])
    correct = torch.cat([correct for _, correct in parts]).double()
    return Sweep(
        loss={s: loss[:, i].mean(1).tolist() for s, i in splits.items()},
        acc={s: correct[:, i].mean(1).tolist() for s, i in splits.items()},
    )


def _sweeps(
    logits: Float[Tensor, "n p"],
    post: Float[Tensor, "n d_mlp"] | None,
    unembed: Float[Tensor, "d_mlp p"] | None,
    operation: str,
    splits: dict[str, Tensor],
) -> dict[str, Sweep]:
    """Every measure with each single frequency as the key set; the neuron level needs ``post`` and ``unembed``."""
    n, p = logits.shape
    n_freq = p // 2
    answers = answer_grid(p, operation, logits.device).flatten()
    grid = logits.reshape(p, p, p)
    coeffs = _padded_transform(grid)
    profiles = frequency_profiles(grid, operation)
    # In the frame of s = t - c the removed profile is the same for every input and the answer sits at s = 0;
    # c = t - s is the same index map as s = t - c.
    aligned = logits.gather(1, shift_index(p, operation, logits.device).reshape(n, p))
    sweeps = {
        "restricted": _sweep(
            lambda ks: _with_frequency_parts(None, coeffs, ks, constant=True), n_freq, answers, splits
        ),
        "excluded": _sweep(lambda ks: aligned - profiles[ks - 1, None, :], n_freq, torch.zeros_like(answers), splits),
    }
    if post is not None and unembed is not None:
        # The logits are linear in hook_post when nothing normalises after the MLP: changing the activations adds
        # (change) @ W_L, and the (a, b) cell selection commutes with that product over the neurons.
        neurons = post @ unembed
        neuron_coeffs = _padded_transform(neurons.reshape(p, p, p))
        rest = logits - neurons
        sweeps["neuron_restricted"] = _sweep(
            lambda ks: _with_frequency_parts(rest, neuron_coeffs, ks, constant=True), n_freq, answers, splits
        )
        sweeps["neuron_excluded"] = _sweep(
            lambda ks: _with_frequency_parts(logits, neuron_coeffs, ks, constant=False, sign=-1.0),
            n_freq,
            answers,
            splits,
        )
    return sweeps


# The model ----------------------------------------------------------------------------------------------------------
@torch.no_grad()
def _forward(
    model: HookedTransformer, task: ModularTask, tokens: Int[Tensor, "n n_ctx"], post: Tensor | None = None
) -> tuple[Float[Tensor, "n p"], Float[Tensor, "n d_mlp"] | None]:
    """Answer logits (first p outputs, float64) and, for one-layer models, the answer-position ``hook_post``.

    With ``post`` given, it replaces the answer-position activations before the rest of the model runs.
    """
    pos, p, one_layer = task.answer_position, task.modulus, model.cfg.n_layers == 1
    logits_parts, post_parts = [], []
    for start in range(0, len(tokens), FORWARD_CHUNK):
        rows = slice(start, start + FORWARD_CHUNK)

        def hook(act: Tensor, hook: Any, rows: slice = rows) -> Tensor:
            if post is None:
                post_parts.append(act[:, pos].double())
            else:
                act[:, pos] = post[rows].to(act.dtype)  # this forward's own activations, free to overwrite
            return act

        hooks = [(HOOK_POST, hook)] if one_layer else []
        logits = model.run_with_hooks(tokens[rows], fwd_hooks=hooks)
        logits_parts.append(logits[:, pos, :p].double())
    return torch.cat(logits_parts), torch.cat(post_parts) if post_parts else None


def _key_frequencies(given: Sequence[int] | None, unembed_norms: Tensor, n_freq: int) -> tuple[list[int], str]:
    if given is None:
        chosen = (unembed_norms >= FALLBACK_FRACTION * unembed_norms.max()).nonzero().flatten() + 1
        return chosen.tolist(), "fallback"
    bad = [k for k in given if not (isinstance(k, int) and 1 <= k <= n_freq)]
    if bad:
        raise UserError(f"{NAME}.key_frequencies: {bad} not integers in 1..{n_freq}")
    return sorted(set(given)), "given"


def _score(loss: Tensor, correct: Tensor, splits: dict[str, Tensor]) -> Score:
    correct = correct.double()
    return Score(
        loss={s: float(loss[i].mean()) for s, i in splits.items()},
        acc={s: float(correct[i].mean()) for s, i in splits.items()},
    )


@torch.no_grad()
def compute(
    model: HookedTransformer,
    task: ModularTask,
    *,
    split: Split | None = None,
    key_frequencies: list[int] | None = None,
    single_frequencies: bool = True,
    activations: AnswerActivations | None = None,
) -> ProgressResult:
    """Progress measures of ``model`` on ``task`` (definitions in the module docstring).

    ``key_frequencies``: ints in 1..p//2, or None for the fallback rule; ``single_frequencies``: also sweep every
    single frequency (the costly part); ``activations``: a forward pass already run on this checkpoint
    (:func:`common.answer_activations`).
    """
    if task.operation.name not in OPERATIONS:
        raise UserError(
            f"{NAME}: needs an answer that is a function of a+b or a-b (add, sub), not {task.operation.name}"
        )
    p = require_grid(task, NAME)
    n_freq = p // 2
    device = model_device(model)
    op = task.operation.name

    unembed = model.W_out[-1].double() @ model.W_U[:, :p].double()  # W_L: [d_mlp, p]
    unembed_norms = matrix_spectrum(unembed.T)
    keys, source = _key_frequencies(key_frequencies, unembed_norms, n_freq)

    splits = {"all": torch.arange(p * p, device=device)}
    if split is not None:
        splits = {"train": split.train.to(device), "test": split.test.to(device)} | splits
    answers = answer_grid(p, op, device).flatten()

    def score(logits: Float[Tensor, "p p p"]) -> Score:
        return _score(*answer_loss(logits.reshape(p * p, p), answers), splits)

    acts = activations if activations is not None else answer_activations(model, task)
    logits = acts.logits[:, :p].double()
    one_layer = model.cfg.n_layers == 1 and acts.post is not None
    post = acts.post.double() if one_layer else None
    # With nothing normalising after the MLP the logits are linear in hook_post: a change of the activations adds
    # (change) @ W_L. That read-out is exact and far cheaper than a hooked forward per variant.
    linear_readout = one_layer and model.cfg.normalization_type is None
    grid = logits.reshape(p, p, p)
    full = score(grid)
    restricted = score(restricted_logits(grid, keys))
    excluded = score(excluded_logits(grid, keys, op))

    neuron_restricted = neuron_excluded = None
    if post is not None:
        grid_post = post.reshape(p, p, -1)
        kept = keep_cells(grid_post, key_cells(p, keys, constant=True)).reshape(p * p, -1)
        without_keys = (grid_post - keep_cells(grid_post, key_cells(p, keys))).reshape(p * p, -1)
        if linear_readout:
            neuron_restricted = score(logits + (kept - post) @ unembed)
            neuron_excluded = score(logits + (without_keys - post) @ unembed)
        else:
            tokens = grid_inputs(task, device).tokens
            neuron_restricted = score(_forward(model, task, tokens, kept)[0])
            neuron_excluded = score(_forward(model, task, tokens, without_keys)[0])

    single: dict[str, Sweep] = {}
    if single_frequencies:
        single = _sweeps(logits, post, unembed if linear_readout else None, op, splits)

    params = {name: param.detach().double() for name, param in model.named_parameters()}
    return ProgressResult(
        key_frequencies=keys,
        key_frequencies_source=source,
        full=full,
        restricted=restricted,
        excluded=excluded,
        neuron_restricted=neuron_restricted,
        neuron_excluded=neuron_excluded,
        single=single,
        gini_embed=gini(matrix_spectrum(model.W_E[:p].double())),
        gini_unembed=gini(unembed_norms),
        weight_norm_sq=float(sum(w.pow(2).sum() for w in params.values())),
        param_norms={name: float(w.norm()) for name, w in params.items()},
    )
