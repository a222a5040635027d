"""Starting a run from another run's checkpoint (same or another modulus) and freezing parts of the model."""

import pytest
import torch

from conftest import tiny_config
from grokscope.errors import UserError
from grokscope.models import build_model, component_parameters, transplant
from grokscope.tasks import ModularTask
from grokscope.training import train
from grokscope.training.many import train_many


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return train(tiny_config(), tmp_path_factory.mktemp("src") / "source", device="cpu", progress=False).run


def test_init_from_a_checkpoint_starts_from_its_weights(tmp_path, source):
    checkpoint = source.checkpoint_path(source.steps()[-1])
    config = tiny_config(seed=5, task={"operation": "sub"}, model={"init_from": str(checkpoint)})
    run = train(config, tmp_path / "target", device="cpu", progress=False).run
    start, original = run.load_state_dict(0), source.load_state_dict()
    assert all(torch.equal(start[k], original[k]) for k in original)
    assert run.config.model.init_from == str(checkpoint)


def test_cross_modulus_transplant_keeps_shared_residues_and_special_tokens(source):
    small, large = (
        ModularTask.from_config(tiny_config().task),
        ModularTask.from_config(tiny_config(task={"modulus": 17}).task),
    )
    config = tiny_config(task={"modulus": 17})
    fresh = build_model(config.model, large, seed=3).state_dict()
    weights = source.load_state_dict()
    moved = transplant(weights, small, fresh, large)
    assert torch.equal(moved["embed.W_E"][:13], weights["embed.W_E"][:13])  # residues 0..12
    assert torch.equal(moved["embed.W_E"][17], weights["embed.W_E"][13])  # the "=" token, moved by name
    assert torch.equal(moved["embed.W_E"][13:17], fresh["embed.W_E"][13:17])  # new residues keep their init
    assert torch.equal(moved["unembed.W_U"][:, :13], weights["unembed.W_U"])
    assert torch.equal(moved["unembed.W_U"][:, 13:], fresh["unembed.W_U"][:, 13:])
    assert torch.equal(moved["blocks.0.mlp.W_in"], weights["blocks.0.mlp.W_in"])
    # Shrinking keeps the residues both have.
    back = transplant(moved, large, build_model(tiny_config().model, small, seed=0).state_dict(), small)
    assert torch.equal(back["embed.W_E"], weights["embed.W_E"])


def test_transplant_refuses_another_architecture(source):
    task = ModularTask.from_config(tiny_config().task)
    wider = build_model(tiny_config(model={"d_mlp": 32}).model, task, seed=0).state_dict()
    with pytest.raises(UserError, match=r"blocks\.0\.mlp\.W_in"):
        transplant(source.load_state_dict(), task, wider, task)


@pytest.mark.parametrize("stacked", [False, True])
def test_frozen_parts_stay_bitwise_unchanged(tmp_path, stacked):
    config = tiny_config(optim={"freeze": ["embed", "attn"]}, train={"steps": 30})
    if stacked:
        runs = [
            r.run
            for r in train_many(
                [config, config.with_seed(1)], [tmp_path / "a", tmp_path / "b"], device="cpu", progress=False, pack=2
            )
        ]
    else:
        runs = [train(config, tmp_path / "a", device="cpu", progress=False).run]
    for run in runs:
        first, last = run.load_state_dict(0), run.load_state_dict()
        frozen = component_parameters(list(first), ["embed", "attn"])
        assert "embed.W_E" in frozen and "blocks.0.attn.W_Q" in frozen and "blocks.0.mlp.W_in" not in frozen
        assert all(torch.equal(first[k], last[k]) for k in frozen)
        assert not torch.equal(first["blocks.0.mlp.W_in"], last["blocks.0.mlp.W_in"])
