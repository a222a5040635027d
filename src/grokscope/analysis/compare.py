"""Compare the circuits of two models trained on the same task: shared key frequencies, agreeing predictions,
and how closely their number embeddings span the same functions of the input.

The embedding comparison works in token space: the column space of a centred ``W_E[:p]`` (p x d_model) is a
subspace of functions on Z_p, so it does not depend on the arbitrary basis of either model's residual stream and
models of different widths compare directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from grokscope.analysis import fourier
from grokscope.analysis.common import (
    answer_logits,
    answer_loss,
    grid_inputs,
    jsonable,
    require_grid,
    score_splits,
    split_indices,
)
from grokscope.errors import UserError
from grokscope.tasks import ModularTask, Split

if TYPE_CHECKING:
    from grokscope.models import GrokTransformer

NAME = "compare"

# A grokked embedding concentrates on a handful of key frequencies, two directions (cos, sin) each; ten directions
# hold about five key frequencies, the most that models on common moduli use.
EMBEDDING_DIRECTIONS = 10


@dataclass
class CompareResult:
    """How alike two models are. Agreement is the fraction of inputs where both predict the same answer (argmax);
    an accuracy counts an input right only when its answer's logit beats every other strictly; ``principal_angles``
    (radians, ascending) are between the top-``k`` principal subspaces of their embeddings."""

    key_frequencies_a: list[int]
    key_frequencies_b: list[int]
    key_frequency_jaccard: float
    agreement: float
    test_agreement: float | None
    accuracy_a: float
    accuracy_b: float
    k: int
    principal_angles: Float[Tensor, " k"]

    @property
    def subspace_overlap(self) -> float:
        """Mean squared cosine of the principal angles: 1 for the same subspace, about k/p for random ones."""
        return float(self.principal_angles.cos().pow(2).mean())

    def to_dict(self) -> dict[str, Any]:
        return jsonable(
            {
                "key_frequencies_a": self.key_frequencies_a,
                "key_frequencies_b": self.key_frequencies_b,
                "key_frequency_jaccard": self.key_frequency_jaccard,
                "agreement": self.agreement,
                "test_agreement": self.test_agreement,
                "accuracy_a": self.accuracy_a,
                "accuracy_b": self.accuracy_b,
                "k": self.k,
                "principal_angles": self.principal_angles,
                "principal_angles_degrees": torch.rad2deg(self.principal_angles),
                "subspace_overlap": self.subspace_overlap,
            }
        )


def principal_subspace(embedding: Float[Tensor, "p d_model"], k: int) -> Float[Tensor, "p k"]:
    """Orthonormal basis of the span of the top-k principal directions of the token-centred embedding, in R^p."""
    centred = embedding - embedding.mean(0, keepdim=True)
    left, _, _ = torch.linalg.svd(centred, full_matrices=False)
    return left[:, :k]


def principal_angles(a: Float[Tensor, "p k"], b: Float[Tensor, "p k"]) -> Float[Tensor, " k"]:
    """Angles between the column spaces of two orthonormal bases, ascending.

    The cosines are the singular values of ``a^T b`` (Björck-Golub) and the sines those of b's part outside
    span(a); ``atan2`` of the two stays accurate for tiny angles, where ``arccos`` of a cosine near 1 is not.
    """
    cosines = torch.linalg.svdvals(a.T @ b)
    sines = torch.linalg.svdvals(b - a @ (a.T @ b)).flip(0)
    return torch.atan2(sines, cosines)


@torch.no_grad()
def compare(
    model_a: GrokTransformer,
    model_b: GrokTransformer,
    task: ModularTask,
    *,
    split: Split | None = None,
    k: int = EMBEDDING_DIRECTIONS,
    **fourier_params: Any,
) -> CompareResult:
    """Compare two models on ``task``; ``split.test`` (if given) adds the agreement on held-out inputs.

    Key frequencies come from :func:`grokscope.analysis.fourier.key_frequencies` (``fourier_params`` pass through).
    ``k`` is capped at ``min(p - 1, d_model)`` of the narrower model: centring removes the constant direction.
    """
    p = require_grid(task, NAME)
    if k < 1:
        raise UserError(f"{NAME}: k must be at least 1, got {k}")
    for name, model in (("model_a", model_a), ("model_b", model_b)):
        if model.cfg.d_vocab != task.d_vocab or model.cfg.d_vocab_out != task.d_vocab_out:
            raise UserError(f"{NAME}: {name}'s vocabulary does not fit {task.describe()}")
    data = grid_inputs(task)
    logits = [answer_logits(model, task, data).cpu() for model in (model_a, model_b)]
    # Accuracy as every analysis scores it (the answer must win strictly); agreement compares the argmax predictions.
    accuracy = [score_splits(*answer_loss(x, data.answers), split_indices(len(data), None)).acc["all"] for x in logits]
    predictions = [x.argmax(-1) for x in logits]
    same = predictions[0] == predictions[1]
    test_agreement = None
    if split is not None and len(split.test):
        test_agreement = float(same[split.test].double().mean())

    embeddings = [model.W_E[:p].detach().cpu().to(torch.float64) for model in (model_a, model_b)]
    k_used = min(k, p - 1, *(e.shape[1] for e in embeddings))
    bases = [principal_subspace(e, k_used) for e in embeddings]

    keys_a = fourier.key_frequencies(model_a, task, **fourier_params)
    keys_b = fourier.key_frequencies(model_b, task, **fourier_params)
    return CompareResult(
        key_frequencies_a=keys_a,
        key_frequencies_b=keys_b,
        key_frequency_jaccard=fourier.jaccard(keys_a, keys_b),
        agreement=float(same.double().mean()),
        test_agreement=test_agreement,
        accuracy_a=accuracy[0],
        accuracy_b=accuracy[1],
        k=k_used,
        principal_angles=principal_angles(*bases),
    )


def compute(
    model: GrokTransformer, task: ModularTask, *, split: Split | None = None, other: GrokTransformer, **params: Any
) -> CompareResult:
    """The common analysis interface: compare ``model`` with ``other``."""
    return compare(model, other, task, split=split, **params)
