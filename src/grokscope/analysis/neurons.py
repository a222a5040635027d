"""Which frequency each MLP neuron computes: 2-D Fourier transforms of neuron activations over the (a, b) grid.

A neuron's activation at the answer position, over every input, is a p x p table indexed ``[a, b]``. Its 2-D
transform ``F = B A B^T`` (:func:`~grokscope.analysis.basis.fourier_2d`) splits the table's variance into Fourier
cells; the fraction of variance explained (FVE) by frequency k is the energy in k's cells
(:func:`~grokscope.analysis.basis.frequency_cells`) over all non-constant energy. Grokked modular-addition models
have neurons that specialize on one key frequency each.

The result also carries a weights-only measure of the residual stream (the Fourier-space specialization of the
transfer study, :func:`residual_specialization`): how much of what residual dimension d reads from the number
embeddings and writes to the number logits sits on one frequency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from grokscope.analysis import basis
from grokscope.analysis.common import (
    AnswerActivations,
    answer_index,
    answer_run,
    grid_inputs,
    jsonable,
    require_grid,
)
from grokscope.analysis.spec import AnalysisSpec, RowResult
from grokscope.errors import UserError
from grokscope.tasks import ModularTask, Split

if TYPE_CHECKING:
    from grokscope.models import GrokTransformer

NAME = "neurons"
CLUSTER_THRESHOLD = 0.85
# A residual dimension is specialized when its dominant frequency holds more than this share of its product spectrum.
RESIDUAL_SPECIALIZED_SHARE = 0.5

# A residual dimension whose embed x unembed product over all frequencies is below this fraction of
# ||W_E[:p, d]|| * ||W_U[d, :p]|| (its bound, by Cauchy-Schwarz) carries no frequency: rounding noise has no argmax.
_EMPTY_TOLERANCE = 1e-12


@dataclass
class NeuronsResult(RowResult):
    """Per-neuron frequency specialization of one MLP layer, and the residual stream's (from the weights).

    ``fve[k-1, n]`` is the fraction of neuron n's variance explained by frequency k; dead (constant) neurons
    have FVE 0 everywhere and ``dominant_frequency`` 0. Means and fractions are over live neurons.

    Residual stream (:func:`residual_specialization`), for each residual dimension d of the product spectrum
    ``|W_E[:p, d]|_k * |W_U[d, :p]|_k`` over k = 1..p//2:

    * ``residual_dominant_frequency[d]``: its largest frequency (0 for a dimension with no frequency content);
    * ``residual_dominant_share[d]``: that frequency's share of the sum over k (0 for an empty dimension);
    * ``residual_mean_dominant_share``: the mean share over all ``d_model`` dimensions;
    * ``residual_dims_specialized``: dimensions whose share exceeds ``RESIDUAL_SPECIALIZED_SHARE`` (0.5);
    * ``residual_distinct_dominant_frequencies``: distinct dominant frequencies over ALL dimensions with frequency
      content (specialized or not), so it counts how many frequencies the residual stream is organised around.

    ``embed_unembed_product`` is the same product summed over d.

    The row holds the summary, the counts and the residual stream's fields; the per-neuron tensors live in the sidecar
    file (``ARRAYS``).
    """

    ARRAYS = ("fve", "dominant_frequency", "max_fve", "dead")

    layer: int
    cluster_threshold: float
    fve: Float[Tensor, "n_freq d_mlp"]
    dominant_frequency: Int[Tensor, " d_mlp"]
    max_fve: Float[Tensor, " d_mlp"]
    dead: Bool[Tensor, " d_mlp"]
    embed_unembed_product: Float[Tensor, " n_freq"]
    residual_dominant_frequency: Int[Tensor, " d_model"]
    residual_dominant_share: Float[Tensor, " d_model"]

    @property
    def residual_mean_dominant_share(self) -> float:
        return float(self.residual_dominant_share.double().mean())

    @property
    def residual_dims_specialized(self) -> int:
        return int((self.residual_dominant_share > RESIDUAL_SPECIALIZED_SHARE).sum())

    @property
    def residual_distinct_dominant_frequencies(self) -> int:
        frequencies = self.residual_dominant_frequency
        return int(frequencies[frequencies > 0].unique().numel())

    @property
    def clustered(self) -> Bool[Tensor, " d_mlp"]:
        return self.max_fve >= self.cluster_threshold

    @property
    def n_frequencies(self) -> int:
        return self.fve.shape[0]

    def _counts(self, mask: Bool[Tensor, " d_mlp"]) -> Int[Tensor, " n_freq"]:
        """Neurons in ``mask`` per dominant frequency (index k-1)."""
        counts = torch.bincount(self.dominant_frequency[mask], minlength=self.n_frequencies + 1)
        return counts[1:]

    @property
    def cluster_sizes(self) -> Int[Tensor, " n_freq"]:
        """Neurons whose FVE for frequency k is at least ``cluster_threshold`` (a neuron joins at most one)."""
        return self._counts(self.clustered & ~self.dead)

    @property
    def dominant_counts(self) -> Int[Tensor, " n_freq"]:
        """Live neurons whose largest FVE is at frequency k, however small."""
        return self._counts(~self.dead)

    def clusters(self) -> dict[int, list[int]]:
        """Frequency -> indices of the neurons clustered on it, for the frequencies that have any."""
        members = (self.clustered & ~self.dead).nonzero().squeeze(1)
        freqs = self.dominant_frequency[members]
        return {int(k): members[freqs == k].tolist() for k in freqs.unique()}

    def summary(self) -> dict[str, float | int]:
        live = ~self.dead
        n_live = int(live.sum())
        clustered = self.clustered & live
        return {
            "n_neurons": int(self.dead.numel()),
            "n_dead": int(self.dead.sum()),
            "mean_max_fve": float(self.max_fve[live].mean()) if n_live else 0.0,
            "n_above_half": int((self.max_fve > 0.5).sum()),
            "n_clustered": int(clustered.sum()),
            "fraction_clustered": float(clustered.sum()) / n_live if n_live else 0.0,
            "n_cluster_frequencies": int(self.dominant_frequency[clustered].unique().numel()),
            "residual_mean_dominant_share": self.residual_mean_dominant_share,
            "residual_dims_specialized": self.residual_dims_specialized,
            "residual_distinct_dominant_frequencies": self.residual_distinct_dominant_frequencies,
        }

    def to_dict(self) -> dict[str, Any]:
        return jsonable(
            {
                "layer": self.layer,
                "cluster_threshold": self.cluster_threshold,
                **self.summary(),
                "cluster_sizes": self.cluster_sizes,
                "dominant_counts": self.dominant_counts,
                "embed_unembed_product": self.embed_unembed_product,
                "residual_dominant_frequency": self.residual_dominant_frequency,
                "residual_dominant_share": self.residual_dominant_share,
            }
        )

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        """One row per neuron: its dominant frequency (0 when dead), that frequency's FVE, and flags."""
        columns = {
            "neuron": torch.arange(self.dead.numel()).tolist(),
            "dominant_frequency": self.dominant_frequency.tolist(),
            "max_fve": self.max_fve.tolist(),
            "clustered": (self.clustered & ~self.dead).tolist(),
            "dead": self.dead.tolist(),
        }
        return {"neurons": [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]}


def resolve_layer(model: GrokTransformer, layer: int | None) -> int:
    """``layer`` as a non-negative index (default: the last layer), after checking the model has that MLP."""
    n_layers = model.cfg.n_layers
    if model.cfg.attn_only:
        raise UserError(f"{NAME}: the model is attention-only and has no MLP neurons")
    index = n_layers - 1 if layer is None else layer
    if not -n_layers <= index < n_layers:
        raise UserError(f"{NAME}: layer must be in [0, {n_layers}), got {layer}")
    return index % n_layers


def neuron_activations(
    model: GrokTransformer, task: ModularTask, layer: int | None = None, chunk: int = 16_384
) -> Float[Tensor, "p p d_mlp"]:
    """MLP post-activations at the answer position for every (a, b), indexed ``[a, b, neuron]``, in the model's
    dtype."""
    p = require_grid(task, NAME)
    name = f"blocks.{resolve_layer(model, layer)}.mlp.hook_post"
    # Nothing after the neurons is needed: the forward ends there.
    run = answer_run(model, task, grid_inputs(task), capture=[name], until=name, chunk=chunk)
    return run.captured[name][:, answer_index(model, task, name)].reshape(p, p, -1)


def fve_from_activations(acts: Float[Tensor, "p p n"], chunk: int = 128) -> Float[Tensor, "n_freq n"]:
    """Fraction of each neuron's variance explained by each frequency (float64); 0 for neurons constant over the grid.

    The denominator is all energy but the constant cell (0, 0), so cross terms between two different frequencies
    count as unexplained and a neuron's FVEs sum to at most 1 (:func:`~grokscope.analysis.basis.frequency_shares`).
    ``chunk`` neurons are transformed at a time.
    """
    return _fve_and_live(acts, chunk)[0]


def _fve_and_live(
    acts: Float[Tensor, "p p n"], chunk: int = 128
) -> tuple[Float[Tensor, "n_freq n"], Bool[Tensor, " n"]]:
    # Chunks of neurons keep the float64 temporaries small: faster (cache, no fresh pages) and bounded in memory.
    parts = [
        basis.frequency_shares(acts[..., i : i + chunk].to(torch.float64)) for i in range(0, acts.shape[-1], chunk)
    ]
    return torch.cat([fve for fve, _ in parts], dim=1), torch.cat([live for _, live in parts])


@torch.no_grad()
def embed_unembed_products(model: GrokTransformer, task: ModularTask) -> Float[Tensor, "n_freq d_model"]:
    """``|W_E[:p, d]|_k * |W_U[d, :p]|_k`` (float64): how much residual dimension d both reads and writes frequency k.

    Over the p number tokens (rows of ``W_E``) and the p number outputs (columns of ``W_U``). ``|.|_k`` is the norm
    of the frequency-k coefficients in the orthonormal real basis (:func:`~grokscope.analysis.basis.spectrum`):
    ``sqrt(|X_k|^2 + |X_{p-k}|^2) / sqrt(p)`` for the DFT ``X``, i.e. the conjugate pair's magnitude folded into
    one, with the same constant ``1 / sqrt(p)`` for every k. For odd p that is ``|X_k| * sqrt(2 / p)``, so shares
    across frequencies equal those of the plain ``|FFT|`` over k = 1..(p-1)/2; for even p the Nyquist frequency
    p/2 has no partner and is not doubled. The constant (k = 0) is left out.
    """
    p = task.modulus
    embed = basis.spectrum(model.W_E[:p].to(torch.float64))
    unembed = basis.spectrum(model.W_U[:, :p].T.to(torch.float64))
    return embed * unembed


@torch.no_grad()
def embed_unembed_spectrum(model: GrokTransformer, task: ModularTask) -> Float[Tensor, " n_freq"]:
    """``sum_d |W_E[:p, d]|_k * |W_U[d, :p]|_k``: :func:`embed_unembed_products` summed over residual dimensions.

    Some studies report this as a frequency spectrum; it looks at weights only and is NOT the neuron FVE, which
    measures what the MLP neurons actually compute.
    """
    return embed_unembed_products(model, task).sum(1)


@torch.no_grad()
def residual_specialization(
    model: GrokTransformer, task: ModularTask, products: Float[Tensor, "n_freq d_model"] | None = None
) -> tuple[Int[Tensor, " d_model"], Float[Tensor, " d_model"]]:
    """Each residual dimension's dominant frequency and its share of the dimension's embed x unembed product.

    For dimension d, with ``P[k, d]`` from :func:`embed_unembed_products` (k = 1..p//2, constant left out):
    dominant frequency ``argmax_k P[k, d]`` (1-based) and share ``max_k P[k, d] / sum_k P[k, d]``, between
    ``1 / (p // 2)`` (no preference) and 1 (one frequency only). A residual direction that reads a frequency from
    the embedding and writes the same one to the logits has share near 1, as in grokked modular-addition models.
    A dimension with no frequency content (e.g. constant over the numbers) gets frequency 0 and share 0.
    ``products`` (from :func:`embed_unembed_products`) saves recomputing them.
    """
    p = task.modulus
    if products is None:
        products = embed_unembed_products(model, task)
    total = products.sum(0)
    bound = model.W_E[:p].to(torch.float64).norm(dim=0) * model.W_U[:, :p].to(torch.float64).norm(dim=1)
    live = total > _EMPTY_TOLERANCE * bound
    top, argmax = products.max(0)
    return torch.where(live, argmax + 1, 0), torch.where(live, top / total.where(live, 1.0), 0.0)


@torch.no_grad()
def compute(
    model: GrokTransformer,
    task: ModularTask,
    *,
    split: Split | None = None,
    layer: int | None = None,
    cluster_threshold: float = CLUSTER_THRESHOLD,
    activations: AnswerActivations | None = None,
) -> NeuronsResult:
    """Neuron frequency specialization of MLP ``layer`` (default: the last) over the full input grid.

    A neuron is clustered on frequency k when its FVE for k is at least ``cluster_threshold``; ``split`` is
    unused (every (a, b) is needed for the transform). ``activations`` (from :func:`common.answer_activations`)
    saves the forward pass when another analysis of this checkpoint already ran it.
    """
    if not 0.5 < cluster_threshold <= 1:
        # Above 0.5 a neuron can only cluster on one frequency, since its FVEs sum to at most 1.
        raise UserError(f"{NAME}: cluster_threshold must be in (0.5, 1], got {cluster_threshold}")
    index = resolve_layer(model, layer)
    if activations is not None and activations.post is not None and index == model.cfg.n_layers - 1:
        acts = activations.post.reshape(task.modulus, task.modulus, -1)
    else:
        acts = neuron_activations(model, task, index)
    fve, live = _fve_and_live(acts)
    max_fve, argmax = fve.max(0)
    dead = ~live
    products = embed_unembed_products(model, task)
    residual_frequency, residual_share = residual_specialization(model, task, products)
    return NeuronsResult(
        layer=index,
        cluster_threshold=cluster_threshold,
        fve=fve.cpu(),
        dominant_frequency=torch.where(dead, 0, argmax + 1).cpu(),
        max_fve=max_fve.cpu(),
        dead=dead.cpu(),
        embed_unembed_product=products.sum(1).cpu(),
        residual_dominant_frequency=residual_frequency.cpu(),
        residual_dominant_share=residual_share.cpu(),
    )


SPEC = AnalysisSpec(
    name=NAME, compute=compute, result=NeuronsResult, inputs=frozenset({"split", "activations"}), needs_grid=True
)
