"""grokscope's model and its one forward, against TransformerLens 3.9's HookedTransformer, in float64.

Under every TransformerLens version: the stored reference (logits and gradients TransformerLens 3.9 computed, see
tests/fixtures/make_tl39_reference.py) and the training path (stacked models, loss window) against the model's own
forward. Under TransformerLens 3.x also live: the same initial weights draw for draw, ``to_hooked_transformer``, and
the same activations at every hook point.
"""

import warnings
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from grokscope import forward
from grokscope.config import parse_config
from grokscope.models import GrokConfig, GrokTransformer, build_model
from grokscope.tasks import ModularTask
from grokscope.training.loop import Objective, reproducible

REFERENCE = Path(__file__).parents[1] / "fixtures" / "tl39_reference.safetensors"
TL3 = version("transformer-lens").startswith("3.")

ARCHITECTURES = {
    "nanda": {"task": {"modulus": 17}, "model": {"preset": "nanda"}},
    "power, LN, 2 layers": {"task": {"modulus": 11, "format": "power"}, "model": {"preset": "power"}},
    "power, all positions, RMS, gelu_new, 3 layers": {
        "task": {"modulus": 11, "format": "power", "loss_on": "all"},
        "model": {"preset": "power", "normalization": "RMS", "act_fn": "gelu_new", "n_layers": 3},
    },
    "LNPre, gelu": {"task": {"modulus": 13}, "model": {"normalization": "LNPre", "act_fn": "gelu"}},
    "RMSPre, silu": {"task": {"modulus": 13}, "model": {"normalization": "RMSPre", "act_fn": "silu", "n_layers": 2}},
    # One layer without normalization: the training path goes through the token tables (forward.table_logits).
    "power, one layer, no norm, all positions, gelu": {
        "task": {"modulus": 11, "format": "power", "loss_on": "all"},
        "model": {"preset": "power", "n_layers": 1, "normalization": "none", "act_fn": "gelu"},
    },
    "nanda, two operations": {"task": {"modulus": 13, "operation": ["add", "sub"]}, "model": {"preset": "nanda"}},
}
TABLE_PATH = ["nanda", "power, one layer, no norm, all positions, gelu", "nanda, two operations"]


def models_and_task(sections: dict, n: int = 3):
    sections = {**sections, "model": {**sections["model"], "dtype": "float64", "d_model": 32, "d_mlp": 64}}
    sections["model"].update(n_heads=2, d_head=16)
    config = parse_config(sections)
    task = ModularTask.from_config(config.task)
    return [build_model(config.model, task, seed=s) for s in range(n)], task, config


def reference_models() -> list[str]:
    with safe_open(str(REFERENCE), framework="pt") as f:
        return sorted({key.split(".")[0] for key in f.keys()})  # noqa: SIM118 (safe_open is not a dict)


@pytest.mark.parametrize("name", reference_models())
def test_logits_and_gradients_match_transformer_lens_3_9s_stored_reference(name):
    stored = {k[len(name) + 1 :]: v for k, v in load_file(REFERENCE).items() if k.startswith(f"{name}.")}
    weights = {k[len("weight.") :]: v for k, v in stored.items() if k.startswith("weight.")}
    buffers = {k[len("buffer.") :]: v for k, v in stored.items() if k.startswith("buffer.")}
    blocks = {int(k.split(".")[1]) for k in weights if k.startswith("blocks.")}
    attn = weights["blocks.0.attn.W_Q"]
    norm = next((kind for kind, key in (("LN", "blocks.0.ln1.b"), ("RMS", "blocks.0.ln1.w")) if key in weights), None)
    cfg = GrokConfig(
        n_layers=len(blocks),
        d_model=attn.shape[1],
        n_heads=attn.shape[0],
        d_head=attn.shape[2],
        d_mlp=weights["blocks.0.mlp.W_in"].shape[1],
        d_vocab=weights["embed.W_E"].shape[0],
        d_vocab_out=weights["unembed.W_U"].shape[1],
        n_ctx=weights["pos_embed.W_pos"].shape[0],
        act_fn={"nanda": "relu", "power_ln": "relu", "rms_gelu_new": "gelu_new", "lnpre_silu": "silu"}[name],
        normalization_type=norm or ("LNPre" if name == "lnpre_silu" else None),
        dtype=torch.float64,
    )
    model = GrokTransformer(cfg)
    model.load_state_dict({**weights, **buffers}, strict=True)  # the checkpoint format is TransformerLens's
    logits = model(stored["tokens"])
    assert (logits - stored["logits"]).abs().max().item() <= 1e-10
    (logits * stored["probe"]).sum().backward()
    for param_name, p in model.named_parameters():
        assert (p.grad - stored[f"grad.{param_name}"]).abs().max().item() <= 1e-10, param_name


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_the_training_path_is_the_models_forward_stacked_and_windowed(name):
    models, task, config = models_and_task(ARCHITECTURES[name])
    window = Objective.of(config, task).window
    tokens = task.dataset().tokens[:200]
    arch = models[0].cfg.architecture()
    with torch.no_grad():
        stacked = forward.logits(forward.stack_parameters(models), tokens.expand(3, -1, -1), arch, window)
        reference = torch.stack([m(tokens)[:, window] for m in models])
    assert stacked.shape == reference.shape
    assert (stacked - reference).abs().max().item() <= 1e-10


def test_gradients_of_the_training_path_reach_the_models_own_parameters():
    models, task, config = models_and_task(ARCHITECTURES["power, LN, 2 layers"], n=1)
    model = models[0]
    objective = Objective.of(config, task)
    data = task.dataset().subset(slice(0, 64))
    arch = model.cfg.architecture()
    fast = objective.loss(
        forward.logits(forward.parameter_views(model), data.tokens[None], arch, objective.window), data.labels[None]
    ).sum()
    fast.backward()
    fast_grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    task.loss(model(data.tokens), data.labels, torch.float64).backward()
    for name, p in model.named_parameters():
        assert torch.allclose(fast_grads[name], p.grad, atol=1e-12, rtol=0), name


@pytest.mark.parametrize("rows", [150, 20])  # scores from a (query token, key token) table, or per row
@pytest.mark.parametrize("name", TABLE_PATH)
def test_the_token_table_path_matches_the_general_forward_in_logits_and_every_gradient(name, rows):
    models, task, config = models_and_task(ARCHITECTURES[name], n=2)
    objective = Objective.of(config, task)
    arch = models[0].cfg.architecture()
    assert forward.tables_apply(arch, None)
    assert (task.d_vocab**2 <= 4 * rows) == (rows == 150)  # both ways of scoring are exercised
    data = task.dataset()
    tokens = torch.stack([data.tokens[:rows], data.tokens[-rows:]])  # each model its own rows
    labels = torch.stack([data.labels[:rows], data.labels[-rows:]])
    results = []
    for tables in (True, False):
        params = forward.stack_parameters(models)
        out = forward.logits(params, tokens, arch, objective.window, tables=tables)
        torch.manual_seed(0)
        (out * torch.randn_like(out)).sum().backward()  # a random probe: every logit's gradient counts
        objective.loss(forward.logits(params, tokens, arch, objective.window, tables=tables), labels).sum().backward()
        results.append((out.detach(), {k: p.grad for k, p in params.items()}))
    (fast, fast_grads), (general, general_grads) = results
    assert (fast - general).abs().max().item() <= 1e-10
    for k, grad in general_grads.items():
        assert (fast_grads[k] - grad).abs().max().item() <= 1e-10, k


@pytest.mark.parametrize("n", [1, 2, 5])
@pytest.mark.parametrize("name", TABLE_PATH)
def test_the_batched_table_path_matches_the_general_forward_for_a_stack(name, n):
    """The stacked products a GPU run of many seeds takes, forced on the CPU: logits and every gradient equal the
    general forward's within 1e-10 in float64, for stacks of models with different weights and rows."""
    models, task, config = models_and_task(ARCHITECTURES[name], n=n)
    objective = Objective.of(config, task)
    arch = models[0].cfg.architecture()
    data = task.dataset()
    rows = 40
    tokens = torch.stack([data.tokens[i * 7 : i * 7 + rows] for i in range(n)])
    labels = torch.stack([data.labels[i * 7 : i * 7 + rows] for i in range(n)])
    results = []
    for tables, batched in ((True, True), (False, None)):
        params = forward.stack_parameters(models)
        out = forward.logits(params, tokens, arch, objective.window, tables=tables, batched=batched)
        torch.manual_seed(0)
        (out * torch.randn_like(out)).sum().backward()
        objective.loss(
            forward.logits(params, tokens, arch, objective.window, tables=tables, batched=batched), labels
        ).sum().backward()
        results.append((out.detach(), {k: p.grad for k, p in params.items()}))
    (fast, fast_grads), (general, general_grads) = results
    assert (fast - general).abs().max().item() <= 1e-10
    for k, grad in general_grads.items():
        assert (fast_grads[k] - grad).abs().max().item() <= 1e-10, k


def test_hooks_see_transformer_lens_shapes_and_can_change_the_output():
    (model,), task, _ = models_and_task(ARCHITECTURES["power, LN, 2 layers"], n=1)
    tokens = task.dataset().tokens[:5]
    b, t = tokens.shape
    c = model.cfg
    logits, cache = model.run_with_cache(tokens)
    expected = {
        "hook_embed": (b, t, c.d_model),
        "hook_pos_embed": (b, t, c.d_model),
        "blocks.1.attn.hook_q": (b, t, c.n_heads, c.d_head),
        "blocks.1.attn.hook_pattern": (b, c.n_heads, t, t),
        "blocks.1.attn.hook_z": (b, t, c.n_heads, c.d_head),
        "blocks.0.ln1.hook_scale": (b, t, 1),
        "blocks.0.mlp.hook_post": (b, t, c.d_mlp),
        "blocks.1.hook_resid_post": (b, t, c.d_model),
        "ln_final.hook_normalized": (b, t, c.d_model),
        "unembed.hook_out": (b, t, c.d_vocab_out),
    }
    for name, shape in expected.items():
        assert tuple(cache[name].shape) == shape, name
    assert torch.equal(cache["unembed.hook_out"], logits)
    # Zero-ablating every MLP neuron through a hook equals removing the MLP output by hand.
    zeroed = model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.mlp.hook_post", lambda x, hook: torch.zeros_like(x))])
    by_hand = model.run_with_hooks(
        tokens, fwd_hooks=[("blocks.1.hook_mlp_out", lambda x, hook: model.blocks[1].mlp.b_out.expand_as(x))]
    )
    assert (zeroed - by_hand).abs().max().item() <= 1e-12
    # Per-head results, as with TransformerLens's use_attn_result, sum to the attention output.
    model.set_use_attn_result(True)
    _, cache = model.run_with_cache(tokens)
    attn_out = cache["blocks.0.attn.hook_result"].sum(-2) + model.blocks[0].attn.b_O
    assert (attn_out - cache["blocks.0.hook_attn_out"]).abs().max().item() <= 1e-12
    assert (model(tokens) - logits).abs().max().item() <= 1e-12


def test_weight_properties_stack_layers_as_transformer_lens_does():
    (model,), _, _ = models_and_task(ARCHITECTURES["power, LN, 2 layers"], n=1)
    c = model.cfg
    assert model.W_in.shape == (2, c.d_model, c.d_mlp) and torch.equal(model.W_in[1], model.blocks[1].mlp.W_in)
    assert model.W_Q.shape == (2, c.n_heads, c.d_model, c.d_head)
    assert model.W_O.shape == (2, c.n_heads, c.d_head, c.d_model)
    assert model.QK.shape == (2, c.n_heads, c.d_model, c.d_model)
    ov = model.OV.AB
    assert torch.allclose(ov[0, 1], model.W_V[0, 1] @ model.W_O[0, 1])


@pytest.mark.skipif(not TL3, reason="TransformerLens 4 has no HookedTransformer")
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_live_against_hooked_transformer(name):
    """Under TransformerLens 3.x: the same initial draws, and ``to_hooked_transformer`` computes the same thing."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        from transformer_lens import HookedTransformer, HookedTransformerConfig

    (model,), task, _ = models_and_task(ARCHITECTURES[name], n=1)
    tl_cfg = HookedTransformerConfig(**model.cfg.hooked_transformer_fields(), device="cpu", seed=None)
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.manual_seed(0)
        drawn_by_tl = HookedTransformer(tl_cfg, move_to_device=False).state_dict()
    ours = model.state_dict()
    assert list(ours) == list(drawn_by_tl)
    assert all(torch.equal(ours[k], drawn_by_tl[k]) and ours[k].dtype == drawn_by_tl[k].dtype for k in ours)

    hooked = model.to_hooked_transformer()
    tokens = task.dataset().tokens[:100]
    ours_logits, ours_cache = model.run_with_cache(tokens)
    tl_logits, tl_cache = hooked.run_with_cache(tokens)
    assert (ours_logits - tl_logits).abs().max().item() <= 1e-10
    assert set(ours_cache.keys()) == set(tl_cache.keys())
    for key in tl_cache.keys():  # noqa: SIM118 (an ActivationCache)
        a, b = ours_cache[key], tl_cache[key]
        masked = a.isinf()  # the causal mask: -inf in both
        assert torch.equal(masked, b.isinf()), key
        assert (a[~masked] - b[~masked]).abs().max().item() <= 1e-10, key


def test_a_model_builds_without_transformer_lens_deprecation_warnings():
    sections = ARCHITECTURES["nanda"]
    config = parse_config({**sections, "model": {**sections["model"], "d_model": 16, "d_mlp": 32}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = build_model(config.model, ModularTask.from_config(config.task))
        model.run_with_cache(torch.zeros(2, 3, dtype=torch.long))


def test_transformer_lens_tools_work_on_the_model():
    """Activation patching and ActivationCache helpers of the installed TransformerLens (3.9 or 4.x), with known
    answers: the corrupted input differs from the clean one at position 0 only, so patching the clean residual
    stream at layer 0, position 0 restores the clean metric exactly, and patching any later position changes
    nothing."""
    from transformer_lens import ActivationCache, patching

    (model,), task, _ = models_and_task(ARCHITECTURES["nanda"], n=1)
    clean = task.dataset().tokens[:16]
    corrupted = clean.clone()
    corrupted[:, 0] = (corrupted[:, 0] + 1) % task.modulus
    logits, cache = model.run_with_cache(clean)
    assert isinstance(cache, ActivationCache)

    def metric(out: torch.Tensor) -> torch.Tensor:
        return out[:, -1].log_softmax(-1).gather(-1, clean[:, :1] * 0 + 3).mean()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TransformerLens's progress bars
        patched = patching.get_act_patch_resid_pre(model, corrupted, cache, metric)
    assert patched.shape == (1, 3)
    assert abs(patched[0, 0].item() - metric(logits).item()) <= 1e-6  # TransformerLens stores results in float32
    assert abs(patched[0, 1].item() - metric(model(corrupted)).item()) <= 1e-6
    accumulated = cache.accumulated_resid(apply_ln=False)
    assert torch.equal(accumulated[-1], cache["blocks.0.hook_resid_post"])
    heads = cache.stack_head_results(layer=-1)
    assert heads.shape == (model.cfg.n_heads, 16, 3, model.cfg.d_model)


def test_in_place_hooks_change_copies_not_the_weights():
    (model,), task, _ = models_and_task(ARCHITECTURES["power, LN, 2 layers"], n=1)
    model.set_use_hook_mlp_in(True)
    w_pos = model.W_pos.detach().clone()
    tokens = task.dataset().tokens[:1]
    seen = {}

    def zero(x, hook):
        x.zero_()

    def keep(x, hook):
        seen["resid_mid"] = x

    hooks = [("hook_pos_embed", zero), ("blocks.0.hook_resid_mid", keep), ("blocks.0.hook_mlp_in", zero)]
    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=hooks)
    assert torch.equal(model.W_pos, w_pos)
    # Zeroing the MLP input in place leaves the residual stream it was copied from as it was.
    assert seen["resid_mid"].abs().sum() > 0


def test_a_fully_masked_attention_row_reads_as_zeros_as_in_transformer_lens():
    (model,), task, _ = models_and_task(ARCHITECTURES["nanda"], n=1)
    tokens = task.dataset().tokens[:4]

    def mask_last_row(scores, hook):
        scores[:, :, -1, :] = float("-inf")
        return scores

    logits = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_attn_scores", mask_last_row)])
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("tables", [True, False])
def test_a_seed_gets_the_same_bits_alone_and_in_a_stack(tables):
    # What bitwise resume of a stacked seed list rests on: a resumed stack may hold fewer seeds than it started with.
    models, task, config = models_and_task(ARCHITECTURES["nanda"], n=3)
    for m in models:
        m.float()
    objective = Objective.of(config, task)
    arch = models[0].cfg.architecture()
    data = task.dataset().subset(slice(0, 120))

    def run(stack):
        params = forward.stack_parameters(stack)
        n = len(stack)
        out = forward.logits(params, data.tokens.expand(n, -1, -1), arch, objective.window, tables=tables)
        objective.loss(out, data.labels.expand(n, -1, -1)).sum().backward()
        return out.detach()[-1], {k: p.grad[-1] for k, p in params.items()}

    with reproducible(torch.device("cpu")):
        (alone, alone_grads), (stacked, stacked_grads) = run(models[2:]), run(models)
    assert torch.equal(alone, stacked)
    assert all(torch.equal(alone_grads[k], stacked_grads[k]) for k in alone_grads)
