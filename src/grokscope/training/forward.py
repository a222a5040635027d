"""The training forward pass: HookedTransformer's computation over a leading model axis, only where the loss reads.

Parameters are a dict of TransformerLens names to tensors of shape ``(n_models, ...)``: one model's parameters seen
through :func:`parameter_views`, or many seeds' stacked by :func:`stack_parameters`. Compared with calling the
``HookedTransformer`` it (1) embeds with ``F.embedding``, whose backward is a cheap scatter, instead of indexing
``W_E[tokens]``; (2) computes the last layer's queries, MLP and unembedding only at the positions the loss reads —
after the last attention nothing mixes positions, so this is exact (for the answer-only loss, 1/3 of the work in
the Nanda format); (3) runs N models' matrix products as batched GEMMs. A test holds it to the plain
``HookedTransformer`` forward in float64 (max abs difference <= 1e-10).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

Params = dict[str, Tensor]

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "silu": F.silu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
}
NORMALIZATIONS = (None, "LN", "LNPre", "RMS", "RMSPre")


@dataclass(frozen=True)
class Architecture:
    """What the forward needs to know beyond the parameters (read from a ``HookedTransformerConfig``)."""

    n_layers: int
    n_heads: int
    d_head: int
    act_fn: str
    normalization: str | None
    eps: float
    attn_scale: float

    @classmethod
    def of(cls, model: HookedTransformer) -> Architecture:
        c = model.cfg
        return cls(
            n_layers=c.n_layers,
            n_heads=c.n_heads,
            d_head=c.d_head,
            act_fn=c.act_fn,
            normalization=c.normalization_type,
            eps=c.eps,
            attn_scale=c.attn_scale if c.use_attn_scale else 1.0,
        )


def unsupported(model: HookedTransformer) -> str | None:
    """Why :func:`logits` cannot stand in for this model's forward, or None when it can."""
    c = model.cfg
    checks = {
        f"act_fn {c.act_fn}": c.act_fn not in ACTIVATIONS,
        f"normalization {c.normalization_type}": c.normalization_type not in NORMALIZATIONS,
        f"positional embedding {c.positional_embedding_type}": c.positional_embedding_type != "standard",
        "attn_only": c.attn_only,
        "parallel attention and MLP": c.parallel_attn_mlp,
        "non-causal attention": c.attention_dir != "causal",
        "grouped-query attention": c.n_key_value_heads not in (None, c.n_heads),
    }
    return next((what for what, bad in checks.items() if bad), None)


def parameter_views(model: HookedTransformer) -> Params:
    """The model's own parameters with a model axis of 1: gradients of the fast forward land in ``model``."""
    return {name: p.unsqueeze(0) for name, p in model.named_parameters()}


def stack_parameters(models: Sequence[HookedTransformer]) -> Params:
    """Fresh leaf tensors ``(len(models), ...)`` in ``named_parameters`` order (the optimizer state's order)."""
    names = [name for name, _ in models[0].named_parameters()]
    return {
        name: torch.stack([dict(m.named_parameters())[name].detach() for m in models]).requires_grad_(True)
        for name in names
    }


def _norm(x: Tensor, params: Params, prefix: str, arch: Architecture) -> Tensor:
    kind = arch.normalization
    if kind is None:
        return x
    if kind.startswith("LN"):
        x = x - x.mean(-1, keepdim=True)
    x = x / (x.pow(2).mean(-1, keepdim=True) + arch.eps).sqrt()
    if kind in ("LN", "RMS"):
        x = x * _per_model(params[f"{prefix}.w"], x)
    if kind == "LN":
        x = x + _per_model(params[f"{prefix}.b"], x)
    return x


def _per_model(vector: Float[Tensor, "n d"], like: Tensor) -> Tensor:
    """A per-model vector broadcast over the batch and position axes of ``like`` (n, batch, pos, d)."""
    return vector.view(vector.shape[0], *([1] * (like.dim() - 2)), vector.shape[-1])


def _linear(x: Float[Tensor, "n b t d"], weight: Float[Tensor, "n d e"], bias: Tensor | None) -> Tensor:
    """``x @ weight + bias`` per model, as one batched GEMM over the flattened batch and position axes."""
    n, b, t, _ = x.shape
    flat = x.reshape(n, b * t, -1)
    out = torch.bmm(flat, weight) if bias is None else torch.baddbmm(bias.unsqueeze(1), flat, weight)
    return out.view(n, b, t, -1)


def _heads(w: Float[Tensor, "n h d e"]) -> Float[Tensor, "n d he"]:
    n, h, d, e = w.shape
    return w.permute(0, 2, 1, 3).reshape(n, d, h * e)


def _attention(
    x: Float[Tensor, "n b t d"], params: Params, prefix: str, arch: Architecture, query: slice
) -> Float[Tensor, "n b q d"]:
    n, b, t, _ = x.shape
    h, e = arch.n_heads, arch.d_head
    bias = {k: params[f"{prefix}.b_{k}"].reshape(n, h * e) for k in "QKV"}
    q = _linear(x[:, :, query], _heads(params[f"{prefix}.W_Q"]), bias["Q"]).view(n, b, -1, h, e)
    k = _linear(x, _heads(params[f"{prefix}.W_K"]), bias["K"]).view(n, b, t, h, e)
    v = _linear(x, _heads(params[f"{prefix}.W_V"]), bias["V"]).view(n, b, t, h, e)
    scores = torch.einsum("nbqhe,nbkhe->nbhqk", q, k) / arch.attn_scale
    query_pos = torch.arange(t, device=x.device)[query]
    future = torch.arange(t, device=x.device)[None, :] > query_pos[:, None]
    pattern = scores.masked_fill(future, float("-inf")).softmax(-1)
    z = torch.einsum("nbhqk,nbkhe->nbqhe", pattern, v).reshape(n, b, -1, h * e)
    w_o = params[f"{prefix}.W_O"].reshape(n, h * e, -1)
    return _linear(z, w_o, params[f"{prefix}.b_O"])


def logits(
    params: Params, tokens: Int[Tensor, "n batch pos"], arch: Architecture, query: slice
) -> Float[Tensor, "n batch q d_vocab_out"]:
    """Logits at positions ``query`` for each model's own token batch (``tokens[i]`` goes through model ``i``)."""
    w_e = params["embed.W_E"]
    n, d_vocab, d_model = w_e.shape
    # One embedding table of n * d_vocab rows: model i reads rows offset by i * d_vocab.
    offsets = torch.arange(n, device=tokens.device).view(n, 1, 1) * d_vocab
    x = F.embedding(tokens + offsets, w_e.reshape(n * d_vocab, d_model))
    x = x + params["pos_embed.W_pos"][:, None, : tokens.shape[-1]]
    activation = ACTIVATIONS[arch.act_fn]
    for layer in range(arch.n_layers):
        prefix = f"blocks.{layer}"
        last = layer == arch.n_layers - 1
        attn_query = query if last else slice(None)
        attn_out = _attention(_norm(x, params, f"{prefix}.ln1", arch), params, f"{prefix}.attn", arch, attn_query)
        x = x[:, :, attn_query] + attn_out
        mlp_in = _norm(x, params, f"{prefix}.ln2", arch)
        hidden = activation(_linear(mlp_in, params[f"{prefix}.mlp.W_in"], params[f"{prefix}.mlp.b_in"]))
        x = x + _linear(hidden, params[f"{prefix}.mlp.W_out"], params[f"{prefix}.mlp.b_out"])
    x = _norm(x, params, "ln_final", arch)
    return _linear(x, params["unembed.W_U"], params["unembed.b_U"])
