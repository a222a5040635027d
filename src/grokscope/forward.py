"""The one forward pass of grokscope's transformer, over a leading model axis, with optional hooks.

Parameters are a dict of TransformerLens names to tensors of shape ``(n_models, ...)``: one model's parameters seen
through :func:`parameter_views`, or many seeds' stacked by :func:`stack_parameters`. The model's own forward
(:class:`~grokscope.models.GrokTransformer`) calls :func:`logits` with one model, every position and a ``hook`` that
routes each activation through the model's ``HookPoint`` of the same name; training calls it without hooks, for N
models at once, and only where the loss reads:

* embedding is ``F.embedding`` (its backward is a cheap scatter, not the indexing of ``W_E[tokens]``);
* the last layer's queries, MLP and unembedding run only at the ``query`` positions — after the last attention
  nothing mixes positions, so this is exact (for the answer-only loss, 1/3 of the work in the Nanda format);
* N models' matrix products are batched GEMMs;
* a one-layer model without normalization (Nanda et al.'s) trains through token tables (:func:`table_logits`):
  everything before the MLP's nonlinearity depends on a row only through its attention weights, so the products with
  ``W_K``, ``W_V``, ``W_O``, ``W_in`` and ``W_U`` are taken on ``(position, token)`` tables (``n_ctx x d_vocab`` rows)
  instead of on every row, and each row gathers and weighs its rows of them.

A test holds it to TransformerLens 3.9's ``HookedTransformer`` (logits and gradients) within 1e-10 in float64, and
the table path to the general one.
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


def tables_apply(arch: Architecture, hook: Hook) -> bool:
    """Whether :func:`table_logits` computes this forward: one layer, no normalization, nothing hooked."""
    return hook is None and arch.n_layers == 1 and arch.normalization is None and not arch.attn_result


def logits(
    params: Params,
    tokens: Int[Tensor, "n batch pos"],
    arch: Architecture,
    query: slice,
    hook: Hook = None,
    *,
    tables: bool = True,
    batched: bool | None = None,
) -> Float[Tensor, "n batch q d_vocab_out"]:
    """Logits at positions ``query`` for each model's own token batch (``tokens[i]`` goes through model ``i``);
    ``hook`` sees (and may replace) every activation TransformerLens names, in its order. ``tables=False`` keeps the
    general path where :func:`table_logits` would apply (for comparisons); ``batched`` is :func:`table_logits`'."""
    if tables and tables_apply(arch, hook):
        return table_logits(params, tokens, arch, query, batched=batched)
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


def table_logits(
    params: Params, tokens: Int[Tensor, "n batch pos"], arch: Architecture, query: slice, batched: bool | None = None
) -> Float[Tensor, "n batch q d_vocab_out"]:
    """:func:`logits` of a one-layer model without normalization, through ``(position, token)`` tables.

    With ``x[t] = W_E[tok_t] + W_pos[t]`` and ``p_h(q, t)`` the attention of query ``q`` to key ``t``:

    * ``resid_mid[q] = x[q] + b_O + sum_{h,t} p_h(q, t) (x[t] W_V^h + b_V^h) W_O^h``, so its product with ``W_in``
      (and with ``W_U``) is a weighted sum of rows of tables indexed by ``(t, tok_t, h)``: one ``embedding_bag``;
    * ``logits[q] = resid_mid[q] W_U + act(resid_mid[q] W_in + b_in) (W_out W_U) + b_out W_U + b_U``.

    Per row this leaves the attention scores (gathered query and key rows), one ``d_mlp``-wide weighted sum and the
    ``d_mlp x d_vocab_out`` product; every ``d_model``-wide product is taken once per table row. Exact up to
    floating-point reassociation (the tests hold it to :func:`logits`' general path in float64).

    ``batched``: a stack of models in one set of products (what a GPU does), or one model after another (``None``:
    one after another on the CPU only; ``True`` forces the stack, as the tests do on the CPU).
    """
    n, batch, t = tokens.shape
    if n > 1 and not (batched if batched is not None else tokens.device.type != "cpu"):
        # One model at a time on the CPU: the reductions of the table products' backward are blocked by the
        # tensors' shapes, so a stack would give a seed other bits than it gets alone (or in a stack of another
        # size, as when a resumed stack has fewer seeds left), and CPU runs are bitwise reproducible per seed.
        one = [
            table_logits({k: v[i : i + 1] for k, v in params.items()}, tokens[i : i + 1], arch, query) for i in range(n)
        ]
        return torch.cat(one)
    w_e, w_pos = params["embed.W_E"], params["pos_embed.W_pos"][:, :t]
    d_vocab, h = w_e.shape[1], arch.n_heads
    a = "blocks.0.attn"
    w_q, w_k, w_v, w_o = (params[f"{a}.W_{k}"] for k in "QKVO")  # (n, h, d, e); W_O (n, h, e, d)
    w_in, b_in = params["blocks.0.mlp.W_in"], params["blocks.0.mlp.b_in"]
    w_out, b_out = params["blocks.0.mlp.W_out"], params["blocks.0.mlp.b_out"]
    w_u, b_u = params["unembed.W_U"], params["unembed.b_U"]
    query_pos = torch.arange(t, device=tokens.device)[query]
    n_q = len(query_pos)

    x = w_e[:, None] + w_pos[:, :, None]  # (n, t, vocab, d): the residual stream of every (position, token)
    keys = torch.einsum("ntvd,nhde->ntvhe", x, w_k) + params[f"{a}.b_K"][:, None, None]
    x_q = x[:, query_pos]
    queries = torch.einsum("nqvd,nhde->nqvhe", x_q, w_q) + params[f"{a}.b_Q"][:, None, None]
    values = torch.einsum("ntvd,nhde->ntvhe", x, w_v) + params[f"{a}.b_V"][:, None, None]
    d_mlp, d_out = w_in.shape[-1], w_u.shape[-1]
    # What a unit of attention to (key position, key token, head) adds to the MLP input and to the logits ...
    from_keys = torch.einsum("ntvhe,nhem->ntvhm", values, torch.einsum("nhed,ndm->nhem", w_o, w_in))
    from_keys_u = torch.einsum("ntvhe,nheu->ntvhu", values, torch.einsum("nhed,ndu->nheu", w_o, w_u))
    # ... and the query's own residual stream with the biases after attention (b_out reaches only the logits).
    b_o = params[f"{a}.b_O"][:, None, None]
    own = torch.einsum("nqvd,ndm->nqvm", x_q + b_o, w_in) + b_in[:, None, None]
    own_u = torch.einsum("nqvd,ndu->nqvu", x_q + b_o + b_out[:, None, None], w_u) + b_u[:, None, None]
    # One table per product, per model its t * vocab * h key rows, then its n_q * vocab own rows.
    table = torch.cat([from_keys.reshape(n, -1, d_mlp), own.reshape(n, -1, d_mlp)], 1)
    table_u = torch.cat([from_keys_u.reshape(n, -1, d_out), own_u.reshape(n, -1, d_out)], 1)
    per_model = table.shape[1]

    model = torch.arange(n, device=tokens.device).view(n, 1, 1)
    positions = torch.arange(t, device=tokens.device)
    q_index = torch.arange(n_q, device=tokens.device)
    q_tokens = tokens[:, :, query_pos]
    scores = _table_scores(queries, keys, tokens, q_tokens) / arch.attn_scale  # (n, batch, q, h, t)
    future = positions[None, :] > query_pos[:, None]  # (q, t)
    pattern = scores.masked_fill(future[:, None], float("-inf")).softmax(-1)

    # Every (query, head, key) weighs its table row (key position, key token, head); then the own row, weight 1.
    start = (model * per_model).view(n, 1, 1, 1, 1)
    heads = torch.arange(h, device=tokens.device)[:, None]
    key_entries = start + ((positions * d_vocab + tokens) * h)[:, :, None, None, :] + heads  # (n, batch, 1, h, t)
    own_entries = model * per_model + t * d_vocab * h + q_index * d_vocab + q_tokens
    bag = torch.cat(
        [key_entries.expand(n, batch, n_q, h, t).reshape(n, batch, n_q, h * t), own_entries[..., None]], -1
    ).reshape(-1, h * t + 1)
    weights = torch.cat([pattern.reshape(n, batch, n_q, h * t), pattern.new_ones(n, batch, n_q, 1)], -1)
    weights = weights.reshape(bag.shape)
    # Two bags with the same entries rather than one wide one: measured faster (the backward's per-entry dot
    # products stay in cache).
    pre = F.embedding_bag(bag, table.reshape(-1, d_mlp), per_sample_weights=weights, mode="sum")
    direct = F.embedding_bag(bag, table_u.reshape(-1, d_out), per_sample_weights=weights, mode="sum")
    post = ACTIVATIONS[arch.act_fn](pre).view(n, batch * n_q, d_mlp)
    w_out_u = torch.bmm(w_out, w_u)  # (n, d_mlp, d_vocab_out): W_out and W_U in one product per row
    return torch.baddbmm(direct.view(n, batch * n_q, d_out), post, w_out_u).view(n, batch, n_q, d_out)


def _table_scores(
    queries: Float[Tensor, "n q vocab h e"],
    keys: Float[Tensor, "n t vocab h e"],
    tokens: Int[Tensor, "n batch t"],
    q_tokens: Int[Tensor, "n batch q"],
) -> Float[Tensor, "n batch q h t"]:
    """Each row's unscaled attention scores from the query and key tables.

    When the vocabulary is small against the batch (``vocab^2 <= 4 batch``, the full-batch Nanda case), every
    (query token, key token) score is computed once and gathered; otherwise each row's query and key rows are
    gathered and multiplied elementwise (a few keys per row, where a batched GEMM would be many tiny ones).
    """
    n, n_q, d_vocab, h, e = queries.shape
    t, batch = keys.shape[1], tokens.shape[1]
    model = torch.arange(n, device=tokens.device).view(n, 1, 1)
    key_pos = torch.arange(t, device=tokens.device)
    q_pos = torch.arange(n_q, device=tokens.device)
    if d_vocab * d_vocab <= 4 * batch:
        table = torch.einsum("nqvhe,ntwhe->nqvtwh", queries, keys).reshape(-1, h)
        q_part = ((model * n_q + q_pos) * d_vocab + q_tokens) * (t * d_vocab)  # (n, batch, q)
        k_part = key_pos * d_vocab + tokens  # (n, batch, t)
        rows = q_part[..., None] + k_part[:, :, None, :]  # (n, batch, q, t)
        return F.embedding(rows, table).transpose(-1, -2)
    k_row = F.embedding((model * t + key_pos) * d_vocab + tokens, keys.reshape(-1, h * e)).view(n, batch, 1, t, h, e)
    q_rows = (model * n_q + q_pos) * d_vocab + q_tokens
    q_row = F.embedding(q_rows, queries.reshape(-1, h * e)).view(n, batch, n_q, 1, h, e)
    return (q_row * k_row).sum(-1).transpose(-1, -2)
