"""Build TransformerLens ``HookedTransformer`` models from a config: the only module touching TL model classes.

Keeping TL behind this module means a later move to TransformerLens 4's ``TransformerBridge`` changes one file.
Initialisation is seeded with a private RNG scope, so building a model never moves the caller's global RNG.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch

from grokscope.errors import UserError

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from grokscope.config import ModelConfig
    from grokscope.tasks import ModularTask

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _tl():
    """Import TransformerLens lazily (it takes seconds) and without its 3.x deprecation notice for HookedTransformer."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        import transformer_lens

    return transformer_lens


def hooked_config(cfg: ModelConfig, task: ModularTask) -> HookedTransformerConfig:
    """The ``HookedTransformerConfig`` for a model config on a task (vocabulary and context from the task)."""
    return _tl().HookedTransformerConfig(
        n_layers=cfg.n_layers,
        d_model=cfg.d_model,
        n_heads=cfg.n_heads,
        d_head=cfg.d_head,
        d_mlp=cfg.d_mlp,
        act_fn=cfg.act_fn,
        normalization_type=None if cfg.normalization == "none" else cfg.normalization,
        d_vocab=task.d_vocab,
        d_vocab_out=task.d_vocab_out,
        n_ctx=task.n_ctx,
        init_weights=True,
        dtype=DTYPES[cfg.dtype],
        device="cpu",
        seed=None,  # TL's own seeding sets the global RNGs; we seed a private scope instead.
    )


def build_model(
    cfg: ModelConfig, task: ModularTask, seed: int | None = 0, device: torch.device | str = "cpu"
) -> HookedTransformer:
    """A freshly initialised ``HookedTransformer``; the same seed gives the same weights on every device.

    ``seed=None`` skips the seeded initialisation (for models about to receive a state dict).
    """
    tl_cfg = hooked_config(cfg, task)
    # Initialise on the CPU inside a forked RNG scope: reproducible, and the caller's RNG is untouched either way.
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        if seed is not None:
            torch.manual_seed(seed)
        model = _tl().HookedTransformer(tl_cfg, move_to_device=False)
        if seed is not None and cfg.init_perturbation > 0:
            perturb(model, cfg.init_perturbation, cfg.perturbation_seed)
    return model.to(device, print_details=False)


@torch.no_grad()
def perturb(model: HookedTransformer, epsilon: float, seed: int) -> None:
    """Add ``epsilon x RMS(W) x N(0, 1)`` noise to every parameter tensor W, in place, from its own seeded stream.

    Scaling by each tensor's RMS makes epsilon a relative size (||delta|| / ||W|| ~ epsilon); tensors that start
    at zero (TransformerLens biases) stay at zero.
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
) -> HookedTransformer:
    """A ``HookedTransformer`` holding ``state_dict`` (TransformerLens names), in the config's dtype."""
    model = build_model(cfg, task, seed=None)
    model.load_state_dict(state_dict, strict=True)
    return model.to(device, print_details=False)


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
