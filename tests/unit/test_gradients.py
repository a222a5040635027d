import copy
import json

import pytest
import torch

from conftest import stablemax_loss_by_hand, tiny_config
from grokscope.analysis.gradients import GradientNormRecorder, component_of, compute, layer_of, training_gradients
from grokscope.errors import UserError
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


def test_stablemax_run_is_analysed_under_stablemax(setup):
    model, task, split = setup
    train_data = task.dataset().subset(split.train)
    names = [n for n, _ in model.named_parameters()]
    logits = model(train_data.tokens)[:, task.answer_position]
    by_hand = stablemax_loss_by_hand(logits, train_data.answers)
    expected = dict(zip(names, torch.autograd.grad(by_hand, list(model.parameters())), strict=True))

    result = compute(model, task, split=split, loss_fn="stablemax")
    assert result.loss == pytest.approx(by_hand.item(), rel=1e-12)
    for name, grad in expected.items():
        torch.testing.assert_close(result.gradients[name], grad, rtol=1e-9, atol=1e-12)
    assert result.to_dict()["loss_fn"] == "stablemax"
    softmax = compute(model, task, split=split)
    # A different objective, not a rounding of the same one (near initialisation both losses are near log p).
    assert abs(softmax.loss - result.loss) > 1e-3
    assert softmax.grad_norm != pytest.approx(result.grad_norm, rel=0.1)
    with pytest.raises(UserError, match="loss_fn"):
        compute(model, task, split=split, loss_fn="hinge")


def test_loss_dtype_follows_the_trainer_rule(setup):
    model, task, split = setup
    float32 = copy.deepcopy(model).float()
    # A float64 model keeps a float64 loss whatever loss_dtype says (the trainer's rule) ...
    assert compute(model, task, split=split, loss_dtype="float32").loss == compute(model, task, split=split).loss
    # ... while a float32 model's loss is rounded to float32 only when asked.
    low = compute(float32, task, split=split, loss_dtype="float32").loss
    assert low == float(torch.tensor(low, dtype=torch.float32))
    assert low == pytest.approx(compute(float32, task, split=split).loss, rel=1e-5)


def test_movement_is_per_training_step(setup):
    # The same displacement between two checkpoints 10 or 100 steps apart: the movement per step differs by 10x.
    previous, task, split = setup
    model = copy.deepcopy(previous)
    generator = torch.Generator().manual_seed(1)
    deltas = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            deltas[name] = 0.01 * torch.randn(p.shape, generator=generator, dtype=p.dtype)
            p.add_(deltas[name])
    base = compute(previous, task, split=split)
    kwargs = {"split": split, "previous": previous, "previous_gradients": base.gradients}
    near = compute(model, task, previous_step=100, step=110, **kwargs)
    far = compute(model, task, previous_step=100, step=200, **kwargs)

    assert (near.steps_between, far.steps_between) == (10, 100)
    assert near.update_ratio_total == far.update_ratio_total  # the raw movement does not know the gap
    assert near.update_ratio_total_per_step == pytest.approx(10 * far.update_ratio_total_per_step, rel=1e-12)
    old = torch.cat([p.detach().flatten() for p in previous.parameters()])
    moved = torch.cat([d.flatten() for d in deltas.values()])
    assert near.update_ratio_total_per_step == pytest.approx(float(moved.norm() / old.norm()) / 10, rel=1e-9)
    sizes = {name: p.detach().norm() for name, p in previous.named_parameters()}
    for name, ratio in near.update_ratio_per_step.items():
        if sizes[name] == 0:  # a tensor that was zero (biases at init) has no ratio
            assert ratio is None and far.update_ratio_per_step[name] is None
            continue
        assert ratio == pytest.approx(10 * far.update_ratio_per_step[name], rel=1e-12)
        assert ratio == pytest.approx(float(deltas[name].norm() / sizes[name]) / 10, rel=1e-9)
    assert sum(r is not None for r in near.update_ratio_per_step.values()) >= 6
    row = far.to_dict()
    assert row["steps_between"] == 100 and row["update_ratio_total_per_step"] == far.update_ratio_total_per_step
    # Without the steps the per-step fields stay empty; a lone step or a step backwards is a user error.
    plain = compute(model, task, **kwargs)
    assert plain.steps_between is None and plain.update_ratio_total_per_step is None
    with pytest.raises(UserError, match="both previous_step and step"):
        compute(model, task, step=110, **kwargs)
    with pytest.raises(UserError, match="must come after"):
        compute(model, task, previous_step=110, step=110, **kwargs)


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
