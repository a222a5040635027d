import copy
import json

import pytest
import torch

from conftest import tiny_config
from grokscope.analysis.gradients import GradientNormRecorder, component_of, compute, layer_of, training_gradients
from grokscope.models import build_model
from grokscope.tasks import ModularTask, make_split
from grokscope.training import train


@pytest.fixture
def setup():
    cfg = tiny_config(model={"dtype": "float64"})
    task = ModularTask.from_config(cfg.task)
    model = build_model(cfg.model, task, seed=0)
    split = make_split(task.n_pairs, 0.5, seed=0)
    return model, task, split


def test_names_group_into_components_and_layers():
    assert component_of("blocks.0.attn.W_Q") == "blocks.0.attn"
    assert component_of("embed.W_E") == "embed"
    assert layer_of("blocks.1.mlp.W_in") == "blocks.1"
    assert layer_of("unembed.W_U") == "unembed"


def test_gradient_norms_match_autograd(setup):
    model, task, split = setup
    train_data = task.dataset().subset(split.train)
    loss = task.loss(model(train_data.tokens), train_data.labels, torch.float64)
    expected = dict(
        zip([n for n, _ in model.named_parameters()], torch.autograd.grad(loss, list(model.parameters())), strict=True)
    )
    result = compute(model, task, split=split)
    assert result.loss == pytest.approx(loss.item(), rel=1e-12)
    for name, grad in expected.items():
        assert result.grad_norms[name] == pytest.approx(grad.norm().item(), rel=1e-9)
    by_hand = sum(g.norm() ** 2 for n, g in expected.items() if n.startswith("blocks.0.attn")) ** 0.5
    assert result.grad_norm_by_component["blocks.0.attn"] == pytest.approx(by_hand.item(), rel=1e-9)
    assert all(p.grad is None for p in model.parameters())  # leaves the model as it found it


def test_movement_and_alignment_against_a_known_previous_model(setup):
    model, task, split = setup
    previous = copy.deepcopy(model)
    with torch.no_grad():
        previous.embed.W_E.mul_(2.0)
    result = compute(model, task, split=split, previous=previous)
    assert result.update_ratio["embed.W_E"] == pytest.approx(0.5, rel=1e-12)  # ||W - 2W|| / ||2W||
    assert result.update_ratio["unembed.W_U"] == 0.0
    same = compute(model, task, split=split, previous=copy.deepcopy(model))
    assert same.grad_cosine_previous == pytest.approx(1.0, abs=1e-12)
    assert same.update_ratio_total == 0.0


def test_recorder_logs_the_gradients_the_trainer_used(tmp_path):
    cfg = tiny_config(train={"steps": 30, "loss_dtype": "float64"}, model={"dtype": "float64"})
    recorder = GradientNormRecorder(every=10)
    result = train(cfg, tmp_path / "r", device="cpu", progress=False, callbacks=[recorder])
    rows = [
        json.loads(line) for line in (tmp_path / "r" / "recordings" / "gradient_norms.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in rows] == [0, 10, 20]
    # Full batch: the gradient before update 20 is the training gradient of the checkpoint at step 20.
    model = result.run.load_model(20)
    _, grads = training_gradients(model, result.run.task, result.run.split())
    attn = sum(g.norm() ** 2 for n, g in grads.items() if n.startswith("blocks.0.attn")) ** 0.5
    assert rows[2]["blocks.0.attn"] == pytest.approx(attn.item(), rel=1e-9)
