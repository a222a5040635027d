"""Malformed files inside a run directory: every one is a one-line UserError naming the file and what is wrong.

Each case writes a file that parses (valid JSON, a valid torch or safetensors file, valid YAML) but holds the wrong
thing, the damage a hand edit, another tool or another version leaves; the readers in ``grokscope.store`` and the
analysis cache readers must say so in one line rather than fail later with a traceback.
"""

import json

import pytest
import torch
from safetensors.torch import save_file

from grokscope.analysis.runner import analysis_frame, analysis_summary, read_rows, registry
from grokscope.errors import UserError
from grokscope.models import build_model
from grokscope.store import (
    METRICS_FILE,
    SPLIT_FILE,
    SUMMARY_FILE,
    TRAINER_STATE_FILE,
    Run,
    load_split,
    non_finite,
    read_checkpoint_header,
    read_metrics,
    save_checkpoint,
)
from grokscope.tasks import ModularTask, make_split


@pytest.fixture
def run(tmp_path, tiny):
    task = ModularTask.from_config(tiny.task)
    run = Run.create(tmp_path / "r", tiny, make_split(task.n_pairs, 0.5, seed=0))
    run.save_checkpoint(0, build_model(tiny.model, task, seed=0).state_dict())
    return run


def one_line_error(call, *args) -> str:
    with pytest.raises(UserError) as info:
        call(*args)
    message = str(info.value)
    assert "\n" not in message, message
    return message


# metrics.jsonl -------------------------------------------------------------------------------------------------------
GOOD_ROW = '{"step": 0, "train_loss": 2.5, "test_acc": null}'


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{oops", "not valid JSON"),
        ("[1, 2]", "expected a JSON object, got [1, 2]"),
        ("3", "expected a JSON object, got 3"),
        ('"x"', 'expected a JSON object, got "x"'),
        ("null", "expected a JSON object, got null"),
        ('{"train_loss": 1.0}', 'no "step"'),
        ('{"step": "20"}', '"step" must be a non-negative integer, got "20"'),
        ('{"step": 20.5}', '"step" must be a non-negative integer, got 20.5'),
        ('{"step": true}', '"step" must be a non-negative integer, got true'),
        ('{"step": -20}', '"step" must be a non-negative integer, got -20'),
        ('{"step": null}', '"step" must be a non-negative integer, got null'),
        ('{"step": 20, "train_loss": "low"}', '"train_loss" must be a number or null, got "low"'),
        ('{"step": 20, "test_acc": [0.5]}', '"test_acc" must be a number or null, got [0.5]'),
        ('{"step": 20, "lr": {"v": 1}}', '"lr" must be a number or null, got {"v": 1}'),
        ('{"step": 20, "stopped": false}', '"stopped" must be a number or null, got false'),
    ],
)
def test_malformed_metrics_rows(run, line, problem):
    path = run.root / METRICS_FILE
    path.write_text(f"{GOOD_ROW}\n\n{line}\n")
    assert one_line_error(run.metrics) == f"{path}: line 3: {problem}"


def test_good_metrics_rows_pass(run):
    path = run.root / METRICS_FILE
    path.write_text(f'{GOOD_ROW}\n{{"step": 20, "train_loss": NaN, "epoch": 1}}\n')
    rows = read_metrics(path)
    assert [r["step"] for r in rows] == [0, 20]


def test_metrics_that_are_not_text(run):
    path = run.root / METRICS_FILE
    path.write_bytes(b"\xff\xfe\x00garbage")
    assert one_line_error(run.metrics) == f"{path}: not UTF-8 text"


# summary.json --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("[1, 2]", "expected a JSON object (the run's summary), got [1, 2]"),
        ("42", "expected a JSON object (the run's summary), got 42"),
        ('"grokked"', 'expected a JSON object (the run\'s summary), got "grokked"'),
        ('{"regime": 3}', '"regime" must be a string, got 3'),
        ('{"memorization_step": "10"}', '"memorization_step" must be a non-negative integer or null, got "10"'),
        ('{"generalization_ratio": "2x"}', '"generalization_ratio" must be a number or null, got "2x"'),
        ('{"final": [1]}', '"final" must be a metrics row (step and numbers) or null, got [1]'),
        ('{"final": {"test_acc": 1.0}}', '"final" must be a metrics row (step and numbers) or null'),
        ('{"accelerators": "orthograd"}', '"accelerators" must be a list of strings, got "orthograd"'),
        ("{", "not valid JSON"),
    ],
)
def test_malformed_summary(run, content, problem):
    path = run.root / SUMMARY_FILE
    path.write_text(content)
    message = one_line_error(run.summary)
    assert message.startswith(f"{path}: {problem}"), message


# config.yaml ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "got"),
    [("- 1\n- 2\n", "[1, 2]"), ("just a string\n", '"just a string"'), ("3\n", "3"), ("", "null"), ("~\n", "null")],
)
def test_config_that_is_not_a_mapping(run, content, got):
    path = run.root / "config.yaml"
    path.write_text(content)
    assert one_line_error(Run.open, run.root) == f"{path}: expected a mapping of config fields, got {got}"


def test_config_that_is_not_yaml(run):
    path = run.root / "config.yaml"
    path.write_text("name: [unclosed\n")
    assert one_line_error(Run.open, run.root) == f"{path}: not valid YAML"
    path.write_bytes(b"\xff\xfe\x00")
    assert one_line_error(Run.open, run.root) == f"{path}: not UTF-8 text"


# checkpoint headers --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        ({"step": "20", "config": "[1, 2]"}, "the config is [1, 2], not an object"),
        ({"step": "-20", "config": "{}"}, "negative step -20"),
        ({"step": "x", "config": "{}"}, "invalid literal"),
    ],
)
def test_malformed_checkpoint_header(tmp_path, metadata, problem):
    path = tmp_path / "step_0000020.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"format": "grokscope-checkpoint/1", **metadata})
    message = one_line_error(read_checkpoint_header, path)
    assert message.startswith(f"{path}: not a grokscope checkpoint") and problem in message, message


# split.safetensors ---------------------------------------------------------------------------------------------------
def write_split(run, **parts):
    tensors = {**run.split().as_dict(), **parts}
    save_file({k: v.contiguous() for k, v in tensors.items() if v is not None}, str(run.root / SPLIT_FILE))


@pytest.mark.parametrize(
    ("parts", "problem"),
    [
        ({"train": torch.arange(10, dtype=torch.float32)}, '"train" indices are float32, expected integers'),
        ({"test": torch.ones(3, dtype=torch.bool)}, '"test" indices are bool, expected integers'),
        ({"train": torch.arange(12).reshape(3, 4)}, '"train" indices have shape (3, 4), expected one dimension'),
        ({"train": torch.tensor([-1, 2, 3])}, '"train" index -1 is negative'),
        ({"test": torch.tensor([0, 169])}, '"test" index 169 is outside the task\'s 169 examples'),  # 13 x 13
        ({"val": None}, 'no "val" indices (a split holds train, test and val)'),
        ({"train": torch.tensor([], dtype=torch.long)}, 'no "train" examples (the split is empty)'),
        ({"train": torch.tensor([4, 4, 5])}, '"train" repeats index 4'),
    ],
)
def test_malformed_split(run, parts, problem):
    write_split(run, **parts)
    path = run.root / SPLIT_FILE
    assert one_line_error(run.split) == f"{path}: {problem}"


def test_split_parts_that_overlap(run):
    split = run.split()
    write_split(run, test=torch.cat([split.test, split.train[:1]]))
    path = run.root / SPLIT_FILE
    assert one_line_error(run.split) == f'{path}: index {int(split.train[0])} is in both "train" and "test"'


def test_split_garbage_and_bounds_without_a_task(run):
    path = run.root / SPLIT_FILE
    write_split(run, test=torch.tensor([0, 10_000]))
    assert load_split(path).test.tolist() == [0, 10_000]  # no task given: no upper bound
    path.write_bytes(b"garbage")
    assert one_line_error(run.split).startswith(f"{path}: corrupt split file")


# trainer_state.pt ----------------------------------------------------------------------------------------------------
def real_state(config):
    """What training saves: AdamW's state after one update (and the filter state of the config's accelerators)."""
    from grokscope.training.loop import gradient_filter

    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    optimizer, grad_filter = torch.optim.AdamW(params), gradient_filter(config.optim)
    for p in params:
        p.grad = torch.ones_like(p)
    if grad_filter is not None:
        grad_filter.apply(params)
    optimizer.step()
    state = {"step": 20, "optimizer": optimizer.state_dict(), "wall_time_s": 1.5}
    if grad_filter is not None:
        state["grad_filter"] = grad_filter.state_dict()
    return state


def save_state(run, state):
    torch.save(state, run.root / TRAINER_STATE_FILE)


def optimizer_with(saved, **changes):
    return {**saved, "optimizer": {**saved["optimizer"], **changes}}


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda s: [1, 2], "expected a dict, got [1, 2]"),
        (lambda s: {k: v for k, v in s.items() if k != "optimizer"}, 'no "optimizer"'),
        (lambda s: {**s, "step": "20"}, '"step" must be a non-negative integer, got "20"'),
        (lambda s: {**s, "step": 20.0}, '"step" must be a non-negative integer, got 20.0'),
        (lambda s: {**s, "step": -1}, '"step" must be a non-negative integer, got -1'),
        (lambda s: {**s, "step": torch.tensor(20)}, '"step" must be a non-negative integer, got a tensor of shape ()'),
        (lambda s: {**s, "wall_time_s": "1.5"}, '"wall_time_s" must be a non-negative number of seconds, got "1.5"'),
        (lambda s: {**s, "wall_time_s": float("nan")}, '"wall_time_s" must be a non-negative number of seconds'),
        (lambda s: {**s, "optimizer": [1]}, '"optimizer": expected a dict with "state" and "param_groups", got [1]'),
        (lambda s: optimizer_with(s, param_groups=[]), '"param_groups" must be a non-empty list of dicts, got []'),
        (
            lambda s: optimizer_with(s, param_groups=[{"params": ["a"]}]),
            'param group 0: "params" must be a list of parameter indices, got ["a"]',
        ),
        (
            lambda s: optimizer_with(s, param_groups=[{"params": [0, 0, 1]}]),
            "a parameter index is listed twice in param_groups",
        ),
        (
            lambda s: optimizer_with(s, param_groups=[{**s["optimizer"]["param_groups"][0], "params": [0]}]),
            "state of parameter 1, which no param group lists",
        ),
        (lambda s: optimizer_with(s, state={0: [1.0]}), "state of parameter 0 must be a dict of tensors, got [1.0]"),
        (lambda s: optimizer_with(s, state=[]), '"state" must be a dict by parameter index, got []'),
        (
            lambda s: optimizer_with(
                s,
                state={0: {**s["optimizer"]["state"][0], "exp_avg_sq": torch.zeros(5)}, 1: s["optimizer"]["state"][1]},
            ),
            "state of parameter 0: exp_avg and exp_avg_sq differ in shape",
        ),
    ],
)
def test_malformed_trainer_state(run, tiny, damage, problem):
    save_state(run, damage(real_state(tiny)))
    path = run.root / TRAINER_STATE_FILE
    message = one_line_error(run.load_trainer_state)
    assert message.startswith(f"{path}: not a grokscope trainer state (") and problem in message, message


@pytest.mark.parametrize(
    ("optim", "damage", "problem"),
    [
        ({"grokfast": {"filter": "ema"}}, lambda s: {k: v for k, v in s.items() if k != "grad_filter"}, "no "),
        ({"grokfast": {"filter": "ema"}}, lambda s: {**s, "grad_filter": [1]}, "expected a dict, got [1]"),
        ({"grokfast": {"filter": "ema"}}, lambda s: {**s, "grad_filter": {"mu": [1]}}, '"mu" must be a dict'),
        (
            {"grokfast": {"filter": "ma", "window": 3}},
            lambda s: {**s, "grad_filter": {**s["grad_filter"], "window": 5}},
            '"window" is 5; the config has 3',
        ),
        (
            {"grokfast": {"filter": "ma", "window": 3}},
            lambda s: {**s, "grad_filter": {**s["grad_filter"], "count": {0: "one"}}},
            '"count" must be a dict of counts',
        ),
        (
            {"orthograd": True, "grokfast": {"filter": "ema"}},
            lambda s: {**s, "grad_filter": {"filters": [{}]}},
            "holds 1 filter states; the config has 2 (orthograd, ema)",
        ),
        (
            {"orthograd": True, "grokfast": {"filter": "ema"}},
            lambda s: {**s, "grad_filter": {"filters": [{"x": 1}, s["grad_filter"]["filters"][1]]}},
            "orthograd: orthograd keeps no state",
        ),
    ],
)
def test_malformed_filter_state(tmp_path, optim, damage, problem):
    from conftest import tiny_config

    config = tiny_config(optim=optim)
    task = ModularTask.from_config(config.task)
    run = Run.create(tmp_path / "r", config, make_split(task.n_pairs, 0.5, seed=0))
    assert run.load_trainer_state() is None
    save_state(run, real_state(config))
    assert run.load_trainer_state()["step"] == 20  # what training saves passes
    save_state(run, damage(real_state(config)))
    message = one_line_error(run.load_trainer_state)
    assert f"{run.root / TRAINER_STATE_FILE}: not a grokscope trainer state" in message and problem in message, message


def test_trainer_state_that_is_not_a_torch_file(run):
    (run.root / TRAINER_STATE_FILE).write_bytes(b"not a zip")
    assert "corrupt trainer state" in one_line_error(run.load_trainer_state)


# non-finite weights --------------------------------------------------------------------------------------------------
def test_non_finite_names_the_first_bad_tensor():
    w = {"a": torch.ones(2), "b": torch.tensor([1.0, float("nan")]), "c": torch.tensor([float("inf")])}
    assert non_finite(w) == "NaN in b and 1 more tensor(s)"
    assert non_finite({"c": w["c"], "i": torch.tensor([1])}) == "inf in c"
    assert non_finite({"a": w["a"]}) is None


# analysis cache ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{", "not valid JSON"),
        ('{"step": 0}', 'expected a list of rows (one per checkpoint), got {"step": 0}'),
        ("[1, 2]", "row 0: expected an object, got 1 (2 of 2 rows unusable)"),
        ('[{"step": "0"}]', 'row 0: "step" must be a non-negative integer, got "0"'),
        ('[{"step": true}]', 'row 0: "step" must be a non-negative integer, got true'),
        ('[{"nostep": 1}]', 'row 0: "step" must be a non-negative integer, got null'),
    ],
)
def test_unusable_analysis_files(tmp_path, content, problem):
    path = tmp_path / "x.json"
    path.write_text(content)
    for spec in registry().values():
        rows, message = read_rows(path, spec)
        assert rows == {} and message.startswith(f"{path}: {problem}"), message


@pytest.mark.parametrize(
    ("name", "row", "problem"),
    [
        ("gradients", {"loss": "low"}, 'loss: expected a number, got "low"'),
        ("gradients", {"grad_norms": [1.0]}, "grad_norms: expected an object, got [1.0]"),
        ("gradients", {"grad_norms": {"W_E": "big"}}, 'grad_norms.W_E: expected a number, got "big"'),
        ("gradients", {"steps_between": 2.5}, "steps_between: expected an integer, got 2.5"),
        ("fingerprint", {"quantiles": 0.5}, "quantiles: expected a list, got 0.5"),
        ("progress", {}, 'no "modulus"'),  # a result whose row is its fields must have them all
        ("neurons", {"embed_unembed_product": [[1, "x"]]}, "expected (nested lists of) numbers"),
        ("ablation", {"clean": {"test_acc": "high"}}, 'clean.test_acc: expected a number, got "high"'),
    ],
)
def test_rows_of_the_wrong_types_are_set_aside(tmp_path, name, row, problem):
    spec = registry()[name]
    path = tmp_path / f"{name}.json"
    # A result whose row is its fields must have them all: the field of the wrong type is the only fault.
    whole = {}
    if name == "gradients":
        from grokscope.analysis.gradients import GradientsResult

        empty = {"grad_norms": {}, "grad_norm_by_component": {}, "grad_norm_by_layer": {}}
        whole = GradientsResult(loss=1.0, grad_norm=1.0, **empty).to_dict()
    path.write_text(json.dumps([{"step": 0, **whole, **row}]))
    rows, message = read_rows(path, spec)
    assert rows == {} and message.startswith(f"{path}: row 0 (step 0): "), message
    assert problem in message and "\n" not in message, message


def test_cache_readers_on_damaged_files(run):
    spec = next(iter(registry().values()))
    folder = run.root / "analysis"
    folder.mkdir()
    (folder / f"{spec.name}.json").write_text('[{"step": 0}, 5]')
    message = one_line_error(analysis_frame, run, spec.name)
    assert message.startswith(f"{folder / spec.name}.json: row ") and "grokscope analyze" in message
    with_summary = next(s for s in registry().values() if s.summarize is not None)
    path = folder / f"{with_summary.name}.summary.json"
    for garbage in ("{", "[1]", '{"memorization_end": "x"}', "{}"):
        path.write_text(garbage)
        assert analysis_summary(run, with_summary.name) is None, garbage


def test_checkpoint_written_by_hand_with_nan_is_still_readable(run, tiny):
    # The store reads what is there; deciding what to do with NaN weights is the analyses' business.
    state = build_model(tiny.model, run.task, seed=0).state_dict()
    state["blocks.0.mlp.W_in"][0, 0] = float("nan")
    save_checkpoint(run.checkpoint_path(20), state, 20, tiny)
    assert torch.isnan(run.load_state_dict(20)["blocks.0.mlp.W_in"]).any()
