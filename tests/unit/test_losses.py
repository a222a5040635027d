"""The training objectives by name: one lookup shared by the trainer, the task and the analyses."""

import typing

import pytest
import torch
import torch.nn.functional as F

from conftest import stablemax_loss_by_hand, tiny_config
from grokscope import losses
from grokscope.config import TrainConfig
from grokscope.errors import UserError
from grokscope.tasks import ModularTask
from grokscope.training import accelerators
from grokscope.training.loop import Objective


def test_names_are_the_configs_values():
    assert set(losses.LOSS_FUNCTIONS) == set(typing.get_args(TrainConfig.model_fields["loss_fn"].annotation))
    assert set(losses.LOSS_DTYPES) == set(typing.get_args(TrainConfig.model_fields["loss_dtype"].annotation))
    assert accelerators.stablemax_cross_entropy is losses.stablemax_cross_entropy  # re-exported, not copied


def test_unknown_names_are_one_line_user_errors():
    with pytest.raises(UserError, match=r"^loss_fn: unknown loss 'hinge' \(known: softmax, stablemax\)$"):
        losses.loss_function("hinge")
    with pytest.raises(UserError, match=r"^loss_dtype: unknown dtype 'float16'"):
        losses.loss_dtype("float16")
    assert losses.loss_dtype("float32", torch.float64) == torch.float64  # never below the logits' precision
    assert losses.loss_dtype("float64", torch.float32) == torch.float64


@pytest.mark.parametrize("loss_fn", ["softmax", "stablemax"])
def test_trainer_objective_is_bit_identical_to_the_named_loss(loss_fn):
    task = ModularTask.from_config(tiny_config(task={"format": "power", "loss_on": "all"}).task)
    data = task.dataset()
    logits = torch.randn(2, 5, len(task.loss_positions), task.d_vocab_out, generator=torch.Generator().manual_seed(0))
    labels = data.labels[:5].expand(2, -1, -1)
    got = Objective(task, torch.float32, loss_fn).row_losses(logits, labels)
    flat_labels = labels[..., Objective(task).window].flatten()
    direct = F.cross_entropy if loss_fn == "softmax" else losses.stablemax_cross_entropy
    expected = direct(logits.flatten(0, 2), flat_labels, reduction="none").view(2, 5, -1).mean(-1)
    assert torch.equal(got, expected)


def test_task_loss_evaluates_the_named_objective():
    task = ModularTask.from_config(tiny_config().task)
    data = task.dataset()
    logits = 3 * torch.randn(len(data), task.n_ctx, task.d_vocab_out, generator=torch.Generator().manual_seed(1))
    answer_logits = logits[:, task.answer_position]
    softmax = task.loss(logits, data.labels, torch.float64)
    assert torch.equal(softmax, F.cross_entropy(answer_logits.double(), data.answers))
    stablemax = task.loss(logits, data.labels, torch.float64, loss_fn="stablemax")
    assert stablemax.item() == pytest.approx(stablemax_loss_by_hand(answer_logits, data.answers).item(), rel=1e-12)
    assert abs(stablemax.item() - softmax.item()) > 0.1
    assert task.loss(logits.double(), data.labels).dtype == torch.float64  # as the trainer: never below the logits
    with pytest.raises(UserError, match="loss_fn"):
        task.loss(logits, data.labels, loss_fn="hinge")
