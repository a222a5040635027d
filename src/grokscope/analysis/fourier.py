"""Fourier spectra of a model's weights over Z_p, and the key frequencies a grokked model computes with.

The number tokens' embeddings, the unembedding, the neuron-to-logit map and the attention and MLP input weights are
functions on Z_p along one axis; their norm per frequency shows which frequencies the model uses. Three rules pick
key frequencies (neuron clusters, the logit spectrum, the embedding spectrum) and the consensus of at least two
is the model's ``key_frequencies``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from grokscope.analysis import basis, neurons
from grokscope.analysis.common import AnswerActivations, jsonable, require_grid
from grokscope.analysis.spec import AnalysisSpec, RowResult
from grokscope.errors import UserError
from grokscope.tasks import ModularTask, Split

if TYPE_CHECKING:
    from grokscope.models import GrokTransformer

NAME = "fourier"

# Defaults, checked on the quickstart model (p = 59, grokked on frequencies 20, 21, 24, 27) and its random init.
# Relative to the largest frequency norm, the grokked W_L spectrum has its key frequencies at 0.70-1.00 and every
# other frequency below 0.07; W_E has 0.82-1.00 against at most 0.33. A threshold of 0.5 sits in both gaps.
# At random init every frequency is within 0.82-1.00 of the largest, so a relative threshold alone would call all
# of them key; the contrast guard (MIN_GAP) rejects such flat spectra. Its 1.5 passes the grokked W_E (contrast
# 2.5) and the run halfway through grokking (1.8, step 200), and rejects every memorizing checkpoint (at most 1.4).
# Grokked quickstart clusters hold 70-106 of 512 neurons; MIN_CLUSTER_SIZE only keeps stray neurons from counting.
LOGIT_THRESHOLD = 0.5
EMBED_THRESHOLD = 0.5
MIN_GAP = 1.5
MIN_CLUSTER_SIZE = 3


def jaccard(a: list[int], b: list[int]) -> float:
    """|a & b| / |a | b|; two empty sets are identical (1.0)."""
    union = set(a) | set(b)
    return len(set(a) & set(b)) / len(union) if union else 1.0


def spectral_rule(norms: Float[Tensor, " n_freq"], threshold: float, min_gap: float) -> list[int]:
    """Frequencies whose norm is at least ``threshold`` x the largest, if they stand out from the rest.

    The selection counts only when its weakest member is at least ``min_gap`` x the strongest frequency left out;
    a flat spectrum (random init, where every frequency passes a relative threshold) gives no key frequencies.
    """
    selected = norms >= threshold * norms.max()
    if selected.all() or norms.max() <= 0:
        return []
    if norms[selected].min() < min_gap * norms[~selected].max():
        return []
    return (selected.nonzero().squeeze(1) + 1).tolist()


@dataclass
class FourierResult(RowResult):
    """Per-frequency norms (index k-1 is frequency k) of the weights, and the key-frequency rules' verdicts.

    ``logit_norms`` (of ``W_L = W_out @ W_U``) exists for one-layer models only; the per-head and MLP-input
    spectra are of layer 0, the only layer that reads the embedding directly. ``embedding_coefficients`` live in the
    sidecar file (``ARRAYS``), the rest in the row.
    """

    ARRAYS = ("embedding_coefficients",)

    modulus: int
    embedding_coefficients: Float[Tensor, "p d_model"]
    embedding_norms: Float[Tensor, " n_freq"]
    unembedding_norms: Float[Tensor, " n_freq"]
    logit_norms: Float[Tensor, " n_freq"] | None
    query_norms: Float[Tensor, "n_heads n_freq"]
    key_norms: Float[Tensor, "n_heads n_freq"]
    value_norms: Float[Tensor, "n_heads n_freq"]
    mlp_input_norms: Float[Tensor, " n_freq"] | None
    neuron_cluster_sizes: Int[Tensor, " n_freq"]
    rules: dict[str, list[int]]
    parameters: dict[str, Any] = field(default_factory=dict)
    # Norm of each basis vector's coefficient across d_model, labelled by ``basis.basis_labels(p)``; kept in the
    # cached row, where the full coefficients (too large for it) are not.
    embedding_basis_norms: Float[Tensor, " p"] | None = None

    def __post_init__(self) -> None:
        if self.embedding_basis_norms is None and self.embedding_coefficients is not None:
            self.embedding_basis_norms = self.embedding_coefficients.norm(dim=1)

    @property
    def votes(self) -> dict[int, int]:
        """How many rules chose each frequency (only frequencies with at least one vote)."""
        counts: dict[int, int] = {}
        for chosen in self.rules.values():
            for k in chosen:
                counts[k] = counts.get(k, 0) + 1
        return counts

    @property
    def key_frequencies(self) -> list[int]:
        """The consensus: frequencies chosen by at least two of the three rules, ascending."""
        return sorted(k for k, n in self.votes.items() if n >= 2)

    @property
    def found_by_all(self) -> list[int]:
        return sorted(k for k, n in self.votes.items() if n == len(self.rules))

    @property
    def rule_jaccard(self) -> dict[str, float]:
        return {f"{a}/{b}": jaccard(self.rules[a], self.rules[b]) for a, b in combinations(self.rules, 2)}

    def to_dict(self) -> dict[str, Any]:
        return jsonable(
            {
                "key_frequencies": self.key_frequencies,
                "rules": self.rules,
                "found_by_all": self.found_by_all,
                "found_by_at_least_two": self.key_frequencies,
                "rule_jaccard": self.rule_jaccard,
                "parameters": self.parameters,
                "modulus": self.modulus,
                "n_frequencies": basis.n_frequencies(self.modulus),
                "embedding_norms": self.embedding_norms,
                "unembedding_norms": self.unembedding_norms,
                "logit_norms": self.logit_norms,
                "mlp_input_norms": self.mlp_input_norms,
                "query_norms": self.query_norms,
                "key_norms": self.key_norms,
                "value_norms": self.value_norms,
                "neuron_cluster_sizes": self.neuron_cluster_sizes,
                "basis_labels": basis.basis_labels(self.modulus),
                "embedding_basis_norms": self.embedding_basis_norms,
            }
        )


def _check_fraction(name: str, value: float) -> None:
    if not 0 < value <= 1:
        raise UserError(f"{NAME}: {name} must be in (0, 1], got {value}")


@torch.no_grad()
def compute(
    model: GrokTransformer,
    task: ModularTask,
    *,
    split: Split | None = None,
    cluster_threshold: float = neurons.CLUSTER_THRESHOLD,
    min_cluster_size: int = MIN_CLUSTER_SIZE,
    logit_threshold: float = LOGIT_THRESHOLD,
    embed_threshold: float = EMBED_THRESHOLD,
    min_gap: float = MIN_GAP,
    layer: int | None = None,
    activations: AnswerActivations | None = None,
    neurons_result: neurons.NeuronsResult | None = None,
) -> FourierResult:
    """Weight spectra and key frequencies; ``split`` is unused (weights and the full grid only).

    Key-frequency rules (frequency k is chosen when):

    * ``neurons``: at least ``min_cluster_size`` neurons of MLP ``layer`` (default: the last) have FVE >=
      ``cluster_threshold`` for k (see :mod:`grokscope.analysis.neurons`);
    * ``logits``: k's norm in the ``W_L = W_out @ W_U`` spectrum (one-layer models; ``W_U`` for deeper ones) is
      at least ``logit_threshold`` x the largest;
    * ``embedding``: k's norm in the ``W_E`` spectrum is at least ``embed_threshold`` x the largest.

    The two spectral rules also need ``min_gap`` contrast (:func:`spectral_rule`). ``key_frequencies`` are the
    frequencies at least two rules choose. ``activations`` (:func:`common.answer_activations`) lets the neuron
    rule reuse a forward pass already run on this checkpoint, and ``neurons_result`` (same layer and threshold) the
    neuron analysis itself.
    """
    p = require_grid(task, NAME)
    _check_fraction("logit_threshold", logit_threshold)
    _check_fraction("embed_threshold", embed_threshold)
    if min_gap < 1:
        raise UserError(f"{NAME}: min_gap must be at least 1, got {min_gap}")
    if min_cluster_size < 1:
        raise UserError(f"{NAME}: min_cluster_size must be at least 1, got {min_cluster_size}")

    def f64(weight: Tensor) -> Tensor:
        return weight.detach().to(torch.float64)

    embed = f64(model.W_E[:p])
    unembed = f64(model.W_U[:, :p])
    cfg = model.cfg

    def per_head(weight: Float[Tensor, "n_heads d_model d_head"]) -> Float[Tensor, "n_heads n_freq"]:
        return basis.spectrum(torch.einsum("pm,hmd->phd", embed, f64(weight))).norm(dim=-1).T

    embedding_coefficients = basis.fourier_basis(p).to(embed.device) @ embed
    embedding_norms = basis.frequency_norms(embedding_coefficients).norm(dim=1)
    unembedding_norms = basis.matrix_spectrum(unembed.T)
    has_mlp = not cfg.attn_only
    logit_norms = basis.matrix_spectrum((f64(model.W_out[0]) @ unembed).T) if has_mlp and cfg.n_layers == 1 else None
    mlp_input_norms = basis.matrix_spectrum(embed @ f64(model.W_in[0])) if has_mlp else None

    n_freq = basis.n_frequencies(p)
    if has_mlp:
        reusable = (
            neurons_result is not None
            and neurons_result.layer == neurons.resolve_layer(model, layer)
            and neurons_result.cluster_threshold == cluster_threshold
        )
        if not reusable:
            neurons_result = neurons.compute(
                model, task, layer=layer, cluster_threshold=cluster_threshold, activations=activations
            )
        cluster_sizes = neurons_result.cluster_sizes
    else:
        cluster_sizes = torch.zeros(n_freq, dtype=torch.long)
    logit_spectrum = logit_norms if logit_norms is not None else unembedding_norms
    rules = {
        "neurons": (torch.nonzero(cluster_sizes >= min_cluster_size).squeeze(1) + 1).tolist(),
        "logits": spectral_rule(logit_spectrum, logit_threshold, min_gap),
        "embedding": spectral_rule(embedding_norms, embed_threshold, min_gap),
    }
    return FourierResult(
        modulus=p,
        embedding_coefficients=embedding_coefficients.cpu(),
        embedding_norms=embedding_norms.cpu(),
        unembedding_norms=unembedding_norms.cpu(),
        logit_norms=None if logit_norms is None else logit_norms.cpu(),
        query_norms=per_head(model.W_Q[0]).cpu(),
        key_norms=per_head(model.W_K[0]).cpu(),
        value_norms=per_head(model.W_V[0]).cpu(),
        mlp_input_norms=None if mlp_input_norms is None else mlp_input_norms.cpu(),
        neuron_cluster_sizes=cluster_sizes,
        rules=rules,
        parameters={
            "cluster_threshold": cluster_threshold,
            "min_cluster_size": min_cluster_size,
            "logit_threshold": logit_threshold,
            "embed_threshold": embed_threshold,
            "min_gap": min_gap,
            "logit_spectrum": "W_L" if logit_norms is not None else "W_U",
        },
    )


def key_frequencies(model: GrokTransformer, task: ModularTask, **params: Any) -> list[int]:
    """The model's key frequencies (ascending ints in 1..p//2): those at least two rules of :func:`compute` choose."""
    return compute(model, task, **params).key_frequencies


SPEC = AnalysisSpec(
    name=NAME,
    compute=compute,
    result=FourierResult,
    inputs=frozenset({"split", "activations"}),
    uses=("neurons",),
    needs_grid=True,
    key_frequencies=key_frequencies,
)
