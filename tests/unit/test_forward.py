"""The fast training forward against the plain HookedTransformer forward, in float64."""

import pytest
import torch

from grokscope.config import parse_config
from grokscope.models import build_model
from grokscope.tasks import ModularTask
from grokscope.training import forward
from grokscope.training.loop import Objective

ARCHITECTURES = {
    "nanda": {"task": {"modulus": 17}, "model": {"preset": "nanda"}},
    "power, LN, 2 layers": {"task": {"modulus": 11, "format": "power"}, "model": {"preset": "power"}},
    "power, all positions, RMS, gelu_new, 3 layers": {
        "task": {"modulus": 11, "format": "power", "loss_on": "all"},
        "model": {"preset": "power", "normalization": "RMS", "act_fn": "gelu_new", "n_layers": 3},
    },
    "LNPre, gelu": {"task": {"modulus": 13}, "model": {"normalization": "LNPre", "act_fn": "gelu"}},
    "RMSPre, silu": {"task": {"modulus": 13}, "model": {"normalization": "RMSPre", "act_fn": "silu", "n_layers": 2}},
}


def models_and_task(sections: dict, n: int = 3):
    sections = {**sections, "model": {**sections["model"], "dtype": "float64", "d_model": 32, "d_mlp": 64}}
    sections["model"].update(n_heads=2, d_head=16)
    config = parse_config(sections)
    task = ModularTask.from_config(config.task)
    return [build_model(config.model, task, seed=s) for s in range(n)], task, config


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_fast_forward_matches_hooked_transformer_in_float64(name):
    models, task, config = models_and_task(ARCHITECTURES[name])
    window = Objective.of(config, task).window
    tokens = task.dataset().tokens[:200]
    arch = forward.Architecture.of(models[0])
    assert forward.unsupported(models[0]) is None
    with torch.no_grad():
        stacked = forward.logits(forward.stack_parameters(models), tokens.expand(3, -1, -1), arch, window)
        single = forward.logits(forward.parameter_views(models[1]), tokens[None], arch, window)[0]
        reference = torch.stack([m(tokens)[:, window] for m in models])
    assert stacked.shape == reference.shape
    assert (stacked - reference).abs().max().item() <= 1e-10
    assert (single - reference[1]).abs().max().item() <= 1e-10


def test_fast_forward_gradients_reach_the_models_own_parameters():
    models, task, config = models_and_task(ARCHITECTURES["power, LN, 2 layers"], n=1)
    model = models[0]
    objective = Objective.of(config, task)
    data = task.dataset().subset(slice(0, 64))
    arch = forward.Architecture.of(model)
    fast = objective.loss(
        forward.logits(forward.parameter_views(model), data.tokens[None], arch, objective.window), data.labels[None]
    ).sum()
    fast.backward()
    fast_grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    task.loss(model(data.tokens), data.labels, torch.float64).backward()
    for name, p in model.named_parameters():
        assert torch.allclose(fast_grads[name], p.grad, atol=1e-12, rtol=0), name


def test_unsupported_architectures_are_named():
    models, _, _ = models_and_task({"task": {"modulus": 7}, "model": {"act_fn": "solu_ln"}}, n=1)
    assert forward.unsupported(models[0]) == "act_fn solu_ln"
