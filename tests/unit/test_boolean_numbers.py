"""Booleans are not numbers: pydantic reads ``true`` as 1, so ``train.steps: true`` trained one step. Every int and
float field of every run-config section, and of experiment configs, refuses a boolean with one line naming it."""

import pytest

from conftest import tiny_config
from grokscope.config import parse_config, set_field
from grokscope.errors import UserError
from grokscope.experiments.runs import FingerprintOptions, RecordedExperiment


def with_value(path: str, value):
    """The tiny config's data with the dotted field ``path`` set to ``value``."""
    data = tiny_config().to_dict()
    set_field(data, path, value)
    return data


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("train.steps", True, "train.steps: expected an integer, got true"),
        ("train.batch_size", False, "train.batch_size: expected an integer, got false"),
        ("train.eval_every", True, "train.eval_every: expected an integer, got true"),
        ("train.checkpoints.every", True, "train.checkpoints.every: expected an integer, got true"),
        ("seed", True, "seed: expected an integer, got true"),
        ("task.modulus", True, "task.modulus: expected an integer, got true"),
        ("task.input_range", True, "task.input_range: expected an integer, got true"),
        ("task.train_fraction", True, "task.train_fraction: expected a number, got true"),
        ("model.d_model", True, "model.d_model: expected an integer, got true"),
        ("optim.lr", True, "optim.lr: expected a number, got true"),
        ("optim.warmup_steps", False, "optim.warmup_steps: expected an integer, got false"),
        ("optim.betas", [True, 0.9], "optim.betas: item 0: expected a number, got true"),
    ],
)
def test_a_boolean_for_a_number_is_refused(path, value, expected):
    with pytest.raises(UserError) as err:
        parse_config(with_value(path, value), source="c.yaml")
    assert str(err.value) == f"c.yaml: {expected}"


def test_booleans_still_fill_boolean_fields_and_numbers_number_fields():
    config = parse_config(with_value("optim.orthograd", True))
    assert config.optim.orthograd is True
    assert parse_config(with_value("train.steps", 7)).train.steps == 7
    assert parse_config(with_value("optim.lr", 1)).optim.lr == 1.0


def test_early_stop_and_grokfast_sections_refuse_booleans_too():
    data = with_value("train.early_stop", {"metric": "test_acc", "patience": True})
    with pytest.raises(UserError, match=r"^c.yaml: train.early_stop.patience: expected an integer, got true$"):
        parse_config(data, source="c.yaml")
    data = with_value("optim.grokfast", {"window": True})
    with pytest.raises(UserError, match=r"^c.yaml: optim.grokfast.window: expected an integer, got true$"):
        parse_config(data, source="c.yaml")


def test_experiment_models_refuse_booleans_for_numbers():
    with pytest.raises(ValueError, match="record_every: expected an integer, got true"):
        RecordedExperiment(record_every=True)
    with pytest.raises(ValueError, match="probe_size: expected an integer, got false"):
        FingerprintOptions(probe_size=False)
    assert RecordedExperiment(record_every=3).record_every == 3
