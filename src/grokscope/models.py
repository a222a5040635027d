"""grokscope's hooked transformer: TransformerLens conventions on TransformerLens's lasting core.

:class:`GrokTransformer` is a ``HookedRootModule`` with ``HookPoint``s — the part of TransformerLens that 3.9 and 4.x
share — built for the small models grokking is studied on: the Nanda and Power architectures (any depth and head
count, ReLU/GELU/SiLU, LayerNorm, RMSNorm or none). It keeps TransformerLens's names everywhere a researcher meets
them: parameters and buffers (``embed.W_E``, ``blocks.0.attn.W_Q``, ``blocks.0.attn.mask``, ... so every checkpoint
a ``HookedTransformer`` wrote loads unchanged and the other way round), hook points (``hook_embed``,
``blocks.0.attn.hook_pattern``, ``blocks.0.mlp.hook_post``, ...), weight properties (``W_E``, ``W_U``, ``W_in``,
``W_Q``, ``QK``, ``OV``, ...), ``cfg`` fields, ``run_with_cache`` and ``run_with_hooks``. Its forward is the one
forward of :mod:`grokscope.training.forward`, which training calls without hooks and over many models at once.
Initialisation follows ``HookedTransformer``'s (GPT-2: weights N(0, 0.8/sqrt(d_model)), biases 0) draw for draw, in
a private RNG scope, so a seed gives the weights it gave under TransformerLens 3.9.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from grokscope import forward
from grokscope.errors import UserError

with warnings.catch_warnings():  # TransformerLens 3.9 announces its 4.0 removals on import
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    from transformer_lens import ActivationCache, HookedRootModule
    from transformer_lens.hook_points import HookPoint

if TYPE_CHECKING:
    from grokscope.config import ModelConfig
    from grokscope.tasks import ModularTask

__all__ = ["ActivationCache", "GrokConfig", "GrokTransformer", "build_model", "load_model"]

DTYPES = {"float32": torch.float32, "float64": torch.float64}
Normalization = Literal["LN", "LNPre", "RMS", "RMSPre"] | None


@dataclass
class GrokConfig:
    """The architecture, under ``HookedTransformerConfig``'s field names (TransformerLens tools read ``model.cfg``).

    The fields after ``dtype`` are what TransformerLens's caches and patching tools ask of a model; a grokscope model
    has standard positional embeddings, causal attention, sequential attention and MLP, and no tokenizer.
    """

    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    d_vocab_out: int
    n_ctx: int
    act_fn: str = "relu"
    normalization_type: Normalization = None
    dtype: torch.dtype = torch.float32
    eps: float = 1e-5
    use_attn_scale: bool = True
    # Switches as in TransformerLens: per-head attention outputs at hook_result, the MLP input at hook_mlp_in.
    use_attn_result: bool = False
    use_hook_mlp_in: bool = False
    use_split_qkv_input: bool = False
    use_attn_in: bool = False
    device: str = "cpu"
    model_name: str = "grokscope"
    positional_embedding_type: str = "standard"
    attention_dir: str = "causal"
    attn_only: bool = False
    parallel_attn_mlp: bool = False
    final_rms: bool = False
    gated_mlp: bool = False
    n_key_value_heads: int | None = None
    original_architecture: str | None = None
    tokenizer_name: str | None = None
    default_prepend_bos: bool = False
    post_embedding_ln: bool = False
    use_normalization_before_and_after: bool = False
    attn_types: list[str] | None = None
    seed: int | None = None

    @property
    def attn_scale(self) -> float:
        return math.sqrt(self.d_head) if self.use_attn_scale else 1.0

    @property
    def initializer_range(self) -> float:
        """GPT-2's (and TransformerLens's default) standard deviation of the initial weights."""
        return 0.8 / math.sqrt(self.d_model)

    @classmethod
    def of(cls, cfg: ModelConfig, task: ModularTask) -> GrokConfig:
        """The architecture of a grokscope model config on a task (vocabulary and context come from the task)."""
        return cls(
            n_layers=cfg.n_layers,
            d_model=cfg.d_model,
            n_heads=cfg.n_heads,
            d_head=cfg.d_head,
            d_mlp=cfg.d_mlp,
            d_vocab=task.d_vocab,
            d_vocab_out=task.d_vocab_out,
            n_ctx=task.n_ctx,
            act_fn=cfg.act_fn,
            normalization_type=None if cfg.normalization == "none" else cfg.normalization,
            dtype=DTYPES[cfg.dtype],
        )

    def hooked_transformer_fields(self) -> dict[str, Any]:
        """The ``HookedTransformerConfig`` fields that describe this architecture (TransformerLens 3.x)."""
        return dict(
            n_layers=self.n_layers,
            d_model=self.d_model,
            n_heads=self.n_heads,
            d_head=self.d_head,
            d_mlp=self.d_mlp,
            act_fn=self.act_fn,
            normalization_type=self.normalization_type,
            d_vocab=self.d_vocab,
            d_vocab_out=self.d_vocab_out,
            n_ctx=self.n_ctx,
            eps=self.eps,
            use_attn_scale=self.use_attn_scale,
            dtype=self.dtype,
        )

    def architecture(self) -> forward.Architecture:
        if self.use_split_qkv_input or self.use_attn_in:
            raise NotImplementedError("per-head attention inputs (use_split_qkv_input, use_attn_in) are not supported")
        return forward.Architecture(
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            d_head=self.d_head,
            act_fn=self.act_fn,
            normalization=self.normalization_type,
            eps=self.eps,
            attn_scale=self.attn_scale,
            attn_result=self.use_attn_result,
            hook_mlp_in=self.use_hook_mlp_in,
        )


def _empty(cfg: GrokConfig, *shape: int) -> nn.Parameter:
    # Weights start empty and are drawn by GrokTransformer.init_weights, as TransformerLens does.
    return nn.Parameter(torch.empty(*shape, dtype=cfg.dtype))


def _zeros(cfg: GrokConfig, *shape: int) -> nn.Parameter:
    return nn.Parameter(torch.zeros(*shape, dtype=cfg.dtype))


class Embed(nn.Module):
    def __init__(self, cfg: GrokConfig) -> None:
        super().__init__()
        self.W_E = _empty(cfg, cfg.d_vocab, cfg.d_model)


class PosEmbed(nn.Module):
    def __init__(self, cfg: GrokConfig) -> None:
        super().__init__()
        self.W_pos = _empty(cfg, cfg.n_ctx, cfg.d_model)


class Norm(nn.Module):
    """LayerNorm, RMSNorm or their weightless ``Pre`` forms: parameters ``w`` (and ``b`` for LN), hooks
    ``hook_scale`` and ``hook_normalized``."""

    def __init__(self, cfg: GrokConfig) -> None:
        super().__init__()
        kind = cfg.normalization_type
        if kind in ("LN", "RMS"):
            self.w = nn.Parameter(torch.ones(cfg.d_model, dtype=cfg.dtype))
        if kind == "LN":
            self.b = _zeros(cfg, cfg.d_model)
        self.hook_scale = HookPoint()  # [batch, pos, 1]
        self.hook_normalized = HookPoint()  # [batch, pos, d_model]


class Attention(nn.Module):
    def __init__(self, cfg: GrokConfig) -> None:
        super().__init__()
        h, d, e = cfg.n_heads, cfg.d_model, cfg.d_head
        # TransformerLens's registration order (it fixes the order of the initial draws and of the optimizer state).
        self.W_Q = _empty(cfg, h, d, e)
        self.W_O = _empty(cfg, h, e, d)
        self.b_Q = _zeros(cfg, h, e)
        self.b_O = _zeros(cfg, d)
        self.W_K = _empty(cfg, h, d, e)
        self.W_V = _empty(cfg, h, d, e)
        self.b_K = _zeros(cfg, h, e)
        self.b_V = _zeros(cfg, h, e)
        # Kept only so that state dicts match TransformerLens's; the causal mask is built in the forward.
        self.register_buffer("mask", torch.empty((0, 0), dtype=torch.bool))
        self.register_buffer("IGNORE", torch.tensor(-torch.inf))
        self.hook_k = HookPoint()  # [batch, pos, head_index, d_head]
        self.hook_q = HookPoint()
        self.hook_v = HookPoint()
        self.hook_z = HookPoint()
        self.hook_attn_scores = HookPoint()  # [batch, head_index, query_pos, key_pos]
        self.hook_pattern = HookPoint()
        self.hook_result = HookPoint()  # [batch, pos, head_index, d_model], with cfg.use_attn_result

    def _load_from_state_dict(self, state_dict: dict[str, Tensor], prefix: str, *args: Any, **kwargs: Any) -> None:
        # Older TransformerLens versions saved a full [n_ctx, n_ctx] mask: it carries nothing, keep ours.
        for name in ("mask", "IGNORE"):
            if prefix + name in state_dict:
                state_dict[prefix + name] = getattr(self, name)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class MLP(nn.Module):
    def __init__(self, cfg: GrokConfig) -> None:
        super().__init__()
        self.W_in = _empty(cfg, cfg.d_model, cfg.d_mlp)
        self.b_in = _zeros(cfg, cfg.d_mlp)
        self.W_out = _empty(cfg, cfg.d_mlp, cfg.d_model)
        self.b_out = _zeros(cfg, cfg.d_model)
        self.hook_pre = HookPoint()  # [batch, pos, d_mlp]
        self.hook_post = HookPoint()


class Block(nn.Module):
    def __init__(self, cfg: GrokConfig) -> None:
        super().__init__()
        normalized = cfg.normalization_type is not None
        self.ln1 = Norm(cfg) if normalized else nn.Identity()
        self.ln2 = Norm(cfg) if normalized else nn.Identity()
        self.attn = Attention(cfg)
        self.mlp = MLP(cfg)
        # TransformerLens's block hooks; the three *_input hooks and hook_attn_in exist for name compatibility only.
        self.hook_attn_in = HookPoint()
        self.hook_q_input = HookPoint()
        self.hook_k_input = HookPoint()
        self.hook_v_input = HookPoint()
        self.hook_mlp_in = HookPoint()  # with cfg.use_hook_mlp_in
        self.hook_attn_out = HookPoint()  # [batch, pos, d_model]
        self.hook_mlp_out = HookPoint()
        self.hook_resid_pre = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.hook_resid_post = HookPoint()


class Unembed(nn.Module):
    def __init__(self, cfg: GrokConfig) -> None:
        super().__init__()
        self.W_U = _empty(cfg, cfg.d_model, cfg.d_vocab_out)
        self.b_U = _zeros(cfg, cfg.d_vocab_out)
        self.hook_in = HookPoint()  # [batch, pos, d_model]
        self.hook_out = HookPoint()  # [batch, pos, d_vocab_out]


class GrokTransformer(HookedRootModule):
    """A decoder-only transformer with TransformerLens's names, hooks and weight properties.

    ``model(tokens)`` gives logits ``[batch, pos, d_vocab_out]``; ``model.run_with_cache(tokens)`` and
    ``model.run_with_hooks(tokens, fwd_hooks=[...])`` work as with a ``HookedTransformer``.
    """

    def __init__(self, cfg: GrokConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = Embed(cfg)
        self.hook_embed = HookPoint()  # [batch, pos, d_model]
        self.pos_embed = PosEmbed(cfg)
        self.hook_pos_embed = HookPoint()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        if cfg.normalization_type is not None:  # a LayerNorm-free HookedTransformer has no ln_final either
            self.ln_final = Norm(cfg)
        self.unembed = Unembed(cfg)
        self.setup()

    # The forward -------------------------------------------------------------------------------------------------
    def forward(
        self, tokens: Int[Tensor, "batch pos"], return_type: Literal["logits"] | None = "logits"
    ) -> Float[Tensor, "batch pos d_vocab_out"] | None:
        if return_type not in ("logits", None):
            raise ValueError(f"return_type {return_type!r}: a GrokTransformer returns logits (or None)")
        if tokens.dim() == 1:
            tokens = tokens[None]
        views = forward.parameter_views(self)
        logits = forward.logits(views, tokens[None], self.cfg.architecture(), slice(None), hook=self._hook)[0]
        return logits if return_type == "logits" else None

    def run_with_cache(
        self, *model_args: Any, return_cache_object: bool = True, remove_batch_dim: bool = False, **kwargs: Any
    ) -> tuple[Any, ActivationCache | dict[str, Tensor]]:
        """The output and every cached activation, as ``HookedTransformer.run_with_cache`` gives them: an
        ``ActivationCache`` (``accumulated_resid``, ``decompose_resid``, ``stack_head_results``, ...), or the plain
        dict with ``return_cache_object=False``. (TransformerLens 4's ``HookedRootModule`` returns the dict.)"""
        out, cache = super().run_with_cache(*model_args, remove_batch_dim=remove_batch_dim, **kwargs)
        if return_cache_object and not isinstance(cache, ActivationCache):
            cache = ActivationCache(cache, self, has_batch_dim=not remove_batch_dim)
        return out, cache

    def _hook(self, name: str, x: Tensor) -> Tensor:
        # The shared forward carries a leading model axis of 1; hook functions see TransformerLens's shapes.
        return self.hook_dict[name](x[0])[None]

    def init_weights(self) -> None:
        """TransformerLens's GPT-2 initialisation, draw for draw: every ``W_`` tensor from N(0, initializer_range),
        in ``named_parameters`` order, from the global RNG (:func:`build_model` seeds a private scope)."""
        with torch.no_grad():
            for name, param in self.named_parameters():
                if "W_" in name:
                    nn.init.normal_(param, std=self.cfg.initializer_range)

    def to(self, *args: Any, print_details: bool = False, **kwargs: Any) -> GrokTransformer:
        """``nn.Module.to``; accepts HookedTransformer's ``print_details`` (tools such as devinterp pass it)."""
        return super().to(*args, **kwargs)

    def _apply(self, fn: Any, recurse: bool = True) -> GrokTransformer:
        # .to(), .cuda(), .double() ...: keep cfg.device and cfg.dtype true, as TransformerLens tools read them.
        super()._apply(fn, recurse)
        first = self.embed.W_E
        self.cfg.device, self.cfg.dtype = str(first.device), first.dtype
        return self

    # TransformerLens's switches ----------------------------------------------------------------------------------
    def set_use_attn_result(self, use_attn_result: bool) -> None:
        self.cfg.use_attn_result = use_attn_result

    def set_use_hook_mlp_in(self, use_hook_mlp_in: bool) -> None:
        self.cfg.use_hook_mlp_in = use_hook_mlp_in

    def set_use_split_qkv_input(self, use_split_qkv_input: bool) -> None:
        if use_split_qkv_input:
            raise NotImplementedError("GrokTransformer has no per-head attention inputs (use_split_qkv_input)")

    def set_use_attn_in(self, use_attn_in: bool) -> None:
        if use_attn_in:
            raise NotImplementedError("GrokTransformer has no per-head attention inputs (use_attn_in)")

    # Weights, stacked over layers as TransformerLens shows them ----------------------------------------------------
    def _stack(self, module: str, name: str) -> Tensor:
        return torch.stack([getattr(getattr(block, module), name) for block in self.blocks])

    @property
    def W_E(self) -> Float[Tensor, "d_vocab d_model"]:
        return self.embed.W_E

    @property
    def W_pos(self) -> Float[Tensor, "n_ctx d_model"]:
        return self.pos_embed.W_pos

    @property
    def W_E_pos(self) -> Float[Tensor, "d_vocab_plus_n_ctx d_model"]:
        return torch.cat([self.W_E, self.W_pos], dim=0)

    @property
    def W_U(self) -> Float[Tensor, "d_model d_vocab_out"]:
        return self.unembed.W_U

    @property
    def b_U(self) -> Float[Tensor, " d_vocab_out"]:
        return self.unembed.b_U

    @property
    def W_Q(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return self._stack("attn", "W_Q")

    @property
    def W_K(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return self._stack("attn", "W_K")

    @property
    def W_V(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return self._stack("attn", "W_V")

    @property
    def W_O(self) -> Float[Tensor, "n_layers n_heads d_head d_model"]:
        return self._stack("attn", "W_O")

    @property
    def b_Q(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        return self._stack("attn", "b_Q")

    @property
    def b_K(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        return self._stack("attn", "b_K")

    @property
    def b_V(self) -> Float[Tensor, "n_layers n_heads d_head"]:
        return self._stack("attn", "b_V")

    @property
    def b_O(self) -> Float[Tensor, "n_layers d_model"]:
        return self._stack("attn", "b_O")

    @property
    def W_in(self) -> Float[Tensor, "n_layers d_model d_mlp"]:
        return self._stack("mlp", "W_in")

    @property
    def b_in(self) -> Float[Tensor, "n_layers d_mlp"]:
        return self._stack("mlp", "b_in")

    @property
    def W_out(self) -> Float[Tensor, "n_layers d_mlp d_model"]:
        return self._stack("mlp", "W_out")

    @property
    def b_out(self) -> Float[Tensor, "n_layers d_model"]:
        return self._stack("mlp", "b_out")

    @property
    def QK(self) -> Any:
        """``FactoredMatrix(W_Q, W_K^T)``: [n_layers, n_heads, d_model, d_model]."""
        from transformer_lens import FactoredMatrix

        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))

    @property
    def OV(self) -> Any:
        """``FactoredMatrix(W_V, W_O)``: [n_layers, n_heads, d_model, d_model]."""
        from transformer_lens import FactoredMatrix

        return FactoredMatrix(self.W_V, self.W_O)

    def all_head_labels(self) -> list[str]:
        return [f"L{layer}H{head}" for layer in range(self.cfg.n_layers) for head in range(self.cfg.n_heads)]

    # Interop -----------------------------------------------------------------------------------------------------
    def to_hooked_transformer(self) -> Any:
        """An equivalent TransformerLens ``HookedTransformer`` (TransformerLens 3.x only; 4.0 removed the class)."""
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=DeprecationWarning)
                from transformer_lens import HookedTransformer, HookedTransformerConfig
        except ImportError:
            raise UserError(
                "to_hooked_transformer: this TransformerLens has no HookedTransformer (removed in 4.0); a "
                "GrokTransformer is itself a HookedRootModule: use run_with_cache, run_with_hooks and "
                "transformer_lens.patching on it directly"
            ) from None
        tl_cfg = HookedTransformerConfig(**self.cfg.hooked_transformer_fields(), init_weights=False, device="cpu")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            model = HookedTransformer(tl_cfg, move_to_device=False)
        model.load_state_dict({k: v.detach().cpu() for k, v in self.state_dict().items()}, strict=True)
        return model.to(self.cfg.device, print_details=False)  # HookedTransformer.to prints otherwise


def build_model(
    cfg: ModelConfig, task: ModularTask, seed: int | None = 0, device: torch.device | str = "cpu"
) -> GrokTransformer:
    """A freshly initialised model; the same seed gives the same weights on every device (and the weights the same
    seed gave a TransformerLens 3.9 ``HookedTransformer``). ``seed=None`` skips the initial draws (for a model about
    to receive a state dict)."""
    model = GrokTransformer(GrokConfig.of(cfg, task))
    if seed is not None:
        # Drawn on the CPU inside a forked RNG scope: reproducible, and the caller's RNG is untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model.init_weights()
            if cfg.init_perturbation > 0:
                perturb(model, cfg.init_perturbation, cfg.perturbation_seed)
    # Eval mode: nothing in the model depends on it, and TransformerLens 4's analysis tools insist on it.
    return model.to(device).eval()


@torch.no_grad()
def perturb(model: nn.Module, epsilon: float, seed: int) -> None:
    """Add ``epsilon x RMS(W) x N(0, 1)`` noise to every parameter tensor W, in place, from its own seeded stream.

    Scaling by each tensor's RMS makes epsilon a relative size (||delta|| / ||W|| ~ epsilon); tensors that start
    at zero (the biases) stay at zero.
    """
    generator = torch.Generator().manual_seed(seed)
    for _, param in sorted(model.named_parameters()):
        noise = torch.randn(param.shape, generator=generator, dtype=torch.float64)
        param.add_((epsilon * param.double().pow(2).mean().sqrt() * noise).to(param.dtype))


def load_model(
    cfg: ModelConfig,
    task: ModularTask,
    state_dict: dict[str, torch.Tensor],
    device: torch.device | str = "cpu",
) -> GrokTransformer:
    """A model holding ``state_dict`` (TransformerLens names), in the config's dtype."""
    model = build_model(cfg, task, seed=None)
    model.load_state_dict(state_dict, strict=True)
    return model.to(device).eval()


COMPONENTS = {  # optim.freeze names -> TransformerLens parameter-name patterns
    "embed": ("embed.",),
    "pos_embed": ("pos_embed.",),
    "attn": (".attn.",),
    "mlp": (".mlp.",),
    "unembed": ("unembed.",),
    "norm": (".ln1.", ".ln2.", "ln_final."),
}


def component_parameters(names: list[str], components: list[str]) -> set[str]:
    """The parameter names that belong to any of ``components`` (e.g. ``["embed", "attn"]``)."""
    patterns = [p for c in components for p in COMPONENTS[c]]
    return {n for n in names if any(n.startswith(p) if not p.startswith(".") else p in n for p in patterns)}


def transplant(
    source: dict[str, torch.Tensor],
    source_task: ModularTask,
    fresh: dict[str, torch.Tensor],
    task: ModularTask,
) -> dict[str, torch.Tensor]:
    """Source weights shaped for ``task``'s vocabulary, starting from ``fresh`` (the target's own initial weights).

    The rule: ``W_E`` rows and ``W_U`` columns (and ``b_U`` entries) of tokens both vocabularies share — residues
    below both moduli, special tokens by name — are copied from ``source``; tokens only the target has keep their
    fresh initialisation. Every other tensor must have the same shape in both and is copied whole.
    """
    out = {}
    inputs = torch.tensor(task.shared_tokens(source_task)).T
    outputs = torch.tensor(task.shared_tokens(source_task, output=True)).T
    for name, tensor in fresh.items():
        if name not in source:
            raise UserError(f"model.init_from: the checkpoint has no tensor {name}")
        old = source[name].to(tensor.dtype)
        vocab_axis = {"embed.W_E": 0, "unembed.W_U": -1, "unembed.b_U": -1}.get(name)
        if vocab_axis is not None and _without(old.shape, vocab_axis) != _without(tensor.shape, vocab_axis):
            raise UserError(
                f"model.init_from: {name} has shape {tuple(old.shape)} in the checkpoint, "
                f"{tuple(tensor.shape)} in this model (only the vocabulary may differ)"
            )
        if name == "embed.W_E":
            new = tensor.clone()
            new[inputs[0]] = old[inputs[1]]
        elif name in ("unembed.W_U", "unembed.b_U"):
            new = tensor.clone()
            new[..., outputs[0]] = old[..., outputs[1]]
        elif old.shape != tensor.shape:
            raise UserError(
                f"model.init_from: {name} has shape {tuple(old.shape)} in the checkpoint, "
                f"{tuple(tensor.shape)} in this model (only the vocabulary may differ)"
            )
        else:
            new = old.clone()
        out[name] = new
    return out


def _without(shape: torch.Size, axis: int) -> tuple[int, ...]:
    dims = list(shape)
    del dims[axis]
    return tuple(dims)
