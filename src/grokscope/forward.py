"""The one forward pass of grokscope's transformer, over a leading model axis, with optional hooks.

Parameters are a dict of TransformerLens names to tensors of shape ``(n_models, ...)``: one model's parameters seen
through :func:`parameter_views`, or many seeds' stacked by :func:`stack_parameters`. The model's own forward
(:class:`~grokscope.models.GrokTransformer`) calls :func:`logits` with one model, every position and a ``hook`` that
routes each activation through the model's ``HookPoint`` of the same name; training calls it without hooks, for N
models at once, and only where the loss reads:

* embedding is ``F.embedding`` (its backward is a cheap scatter, not the indexing of ``W_E[tokens]``);
* the last layer's queries, MLP and unembedding run only at the ``query`` positions — after the last attention
  nothing mixes positions, so this is exact (for the answer-only loss, 1/3 of the work in the Nanda format);
* N models' matrix products are batched GEMMs.

A test holds it to TransformerLens 3.9's ``HookedTransformer`` (logits and gradients) within 1e-10 in float64.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

if TYPE_CHECKING:
    from torch import nn

Params = dict[str, Tensor]
# hook(name, activation) -> activation: called at each TransformerLens hook point, the model axis leading.
Hook = Callable[[str, Tensor], Tensor] | None

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "silu": F.silu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
}
NORMALIZATIONS = (None, "LN", "LNPre", "RMS", "RMSPre")


@dataclass(frozen=True)
class Architecture:
    """What the forward needs to know beyond the parameters (``GrokConfig.architecture()``)."""

    n_layers: int
    n_heads: int
    d_head: int
    act_fn: str
    normalization: str | None
    eps: float
    attn_scale: float
    attn_result: bool = False  # run per-head attention outputs through hook_result
    hook_mlp_in: bool = False  # run the MLP input through hook_mlp_in

    def __post_init__(self) -> None:
        if self.act_fn not in ACTIVATIONS:
            raise ValueError(f"act_fn {self.act_fn!r}: expected one of {', '.join(ACTIVATIONS)}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization {self.normalization!r}: expected one of {NORMALIZATIONS}")


def parameter_views(model: nn.Module) -> Params:
    """The model's own parameters with a model axis of 1: gradients of the forward land in ``model``."""
    return {name: p.unsqueeze(0) for name, p in model.named_parameters()}


def stack_parameters(models: Sequence[nn.Module]) -> Params:
    """Fresh leaf tensors ``(len(models), ...)`` in ``named_parameters`` order (the optimizer state's order)."""
    names = [name for name, _ in models[0].named_parameters()]
    return {
        name: torch.stack([dict(m.named_parameters())[name].detach() for m in models]).requires_grad_(True)
        for name in names
    }


def _at(hook: Hook, name: str, x: Tensor) -> Tensor:
    return x if hook is None else hook(name, x)


def _norm(x: Tensor, params: Params, prefix: str, arch: Architecture, hook: Hook) -> Tensor:
    """TransformerLens's LayerNorm / RMSNorm (and their weightless Pre forms), with its hook_scale and
    hook_normalized."""
    kind = arch.normalization
    if kind is None:
        return x
    if kind.startswith("LN"):
        x = x - x.mean(-1, keepdim=True)
    scale = _at(hook, f"{prefix}.hook_scale", (x.pow(2).mean(-1, keepdim=True) + arch.eps).sqrt())
    x = x / scale
    if kind == "RMS":
        return _at(hook, f"{prefix}.hook_normalized", x) * _per_model(params[f"{prefix}.w"], x)
    if kind == "LN":
        x = x * _per_model(params[f"{prefix}.w"], x) + _per_model(params[f"{prefix}.b"], x)
    return _at(hook, f"{prefix}.hook_normalized", x)


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
    x: Float[Tensor, "n b t d"], params: Params, prefix: str, arch: Architecture, query: slice, hook: Hook
) -> Float[Tensor, "n b q d"]:
    n, b, t, _ = x.shape
    h, e = arch.n_heads, arch.d_head
    bias = {k: params[f"{prefix}.b_{k}"].reshape(n, h * e) for k in "QKV"}
    q = _linear(x[:, :, query], _heads(params[f"{prefix}.W_Q"]), bias["Q"]).view(n, b, -1, h, e)
    k = _linear(x, _heads(params[f"{prefix}.W_K"]), bias["K"]).view(n, b, t, h, e)
    v = _linear(x, _heads(params[f"{prefix}.W_V"]), bias["V"]).view(n, b, t, h, e)
    q, k, v = (_at(hook, f"{prefix}.hook_{name}", a) for name, a in (("q", q), ("k", k), ("v", v)))
    scores = torch.einsum("nbqhe,nbkhe->nbhqk", q, k) / arch.attn_scale
    query_pos = torch.arange(t, device=x.device)[query]
    future = torch.arange(t, device=x.device)[None, :] > query_pos[:, None]
    scores = _at(hook, f"{prefix}.hook_attn_scores", scores.masked_fill(future, float("-inf")))
    pattern = scores.softmax(-1)
    if hook is not None:  # a hook may mask a whole row; TransformerLens reads its NaNs as 0 (unhooked, none can occur)
        pattern = _at(hook, f"{prefix}.hook_pattern", torch.where(pattern.isnan(), 0.0, pattern))
    z = _at(hook, f"{prefix}.hook_z", torch.einsum("nbhqk,nbkhe->nbqhe", pattern, v))
    if arch.attn_result:  # per-head outputs, as TransformerLens's use_attn_result
        result = _at(hook, f"{prefix}.hook_result", torch.einsum("nbqhe,nhed->nbqhd", z, params[f"{prefix}.W_O"]))
        return result.sum(-2) + _per_model(params[f"{prefix}.b_O"], result[..., 0, :])
    w_o = params[f"{prefix}.W_O"].reshape(n, h * e, -1)
    return _linear(z.reshape(n, b, -1, h * e), w_o, params[f"{prefix}.b_O"])


def logits(
    params: Params, tokens: Int[Tensor, "n batch pos"], arch: Architecture, query: slice, hook: Hook = None
) -> Float[Tensor, "n batch q d_vocab_out"]:
    """Logits at positions ``query`` for each model's own token batch (``tokens[i]`` goes through model ``i``);
    ``hook`` sees (and may replace) every activation TransformerLens names, in its order."""
    w_e = params["embed.W_E"]
    n, d_vocab, d_model = w_e.shape
    # One embedding table of n * d_vocab rows: model i reads rows offset by i * d_vocab.
    offsets = torch.arange(n, device=tokens.device).view(n, 1, 1) * d_vocab
    embed = _at(hook, "hook_embed", F.embedding(tokens + offsets, w_e.reshape(n * d_vocab, d_model)))
    pos_embed = params["pos_embed.W_pos"][:, None, : tokens.shape[-1]]
    if hook is not None:  # TransformerLens's hook_pos_embed sees [batch, pos, d_model]
        pos_embed = hook("hook_pos_embed", pos_embed.expand(n, tokens.shape[1], -1, -1).clone())  # not W_pos itself
    x = embed + pos_embed
    activation = ACTIVATIONS[arch.act_fn]
    for layer in range(arch.n_layers):
        prefix = f"blocks.{layer}"
        last = layer == arch.n_layers - 1
        attn_query = query if last else slice(None)
        x = _at(hook, f"{prefix}.hook_resid_pre", x)
        attn_in = _norm(x, params, f"{prefix}.ln1", arch, hook)
        attn_out = _attention(attn_in, params, f"{prefix}.attn", arch, attn_query, hook)
        x = _at(hook, f"{prefix}.hook_resid_mid", x[:, :, attn_query] + _at(hook, f"{prefix}.hook_attn_out", attn_out))
        mlp_in = _at(hook, f"{prefix}.hook_mlp_in", x.clone()) if arch.hook_mlp_in else x  # a copy, as in TL
        mlp_in = _norm(mlp_in, params, f"{prefix}.ln2", arch, hook)
        pre = _at(
            hook, f"{prefix}.mlp.hook_pre", _linear(mlp_in, params[f"{prefix}.mlp.W_in"], params[f"{prefix}.mlp.b_in"])
        )
        post = _at(hook, f"{prefix}.mlp.hook_post", activation(pre))
        mlp_out = _linear(post, params[f"{prefix}.mlp.W_out"], params[f"{prefix}.mlp.b_out"])
        x = _at(hook, f"{prefix}.hook_resid_post", x + _at(hook, f"{prefix}.hook_mlp_out", mlp_out))
    x = _at(hook, "unembed.hook_in", _norm(x, params, "ln_final", arch, hook))
    return _at(hook, "unembed.hook_out", _linear(x, params["unembed.W_U"], params["unembed.b_U"]))
