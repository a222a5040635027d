import json

import pytest
import torch

from grokscope.errors import UserError
from grokscope.models import build_model
from grokscope.store import Run, atomic_write_text, checkpoint_name, read_checkpoint_header
from grokscope.tasks import ModularTask, make_split


@pytest.fixture
def run(tmp_path, tiny):
    task = ModularTask.from_config(tiny.task)
    split = make_split(task.n_pairs, 0.5, seed=0)
    run = Run.create(tmp_path / "r", tiny, split)
    model = build_model(tiny.model, task, seed=0)
    run.save_checkpoint(0, model.state_dict())
    run.save_checkpoint(20, model.state_dict())
    return run


def test_checkpoint_is_self_describing(run, tiny):
    step, cfg = read_checkpoint_header(run.checkpoint_path(20))
    assert step == 20 and cfg == tiny
    bare = Run.open(run.checkpoint_dir)
    assert bare.config == tiny and bare.steps() == [0, 20]


def test_open_run_lists_and_loads(run, tiny):
    opened = Run.open(run.root)
    assert opened.steps() == [0, 20]
    assert checkpoint_name(20) == "step_0000020.safetensors"
    model = opened.load_model(20)
    reference = build_model(tiny.model, opened.task, seed=0)
    for name, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    assert torch.equal(opened.split().train, make_split(opened.task.n_pairs, 0.5, seed=0).train)


def test_build_model_is_seeded_and_leaves_global_rng_alone(tiny):
    task = ModularTask.from_config(tiny.task)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = build_model(tiny.model, task, seed=1)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = build_model(tiny.model, task, seed=1)
    c = build_model(tiny.model, task, seed=2)
    assert torch.equal(a.W_E, b.W_E) and not torch.equal(a.W_E, c.W_E)


def test_float64_models(tiny):
    cfg = tiny.model.model_copy(update={"dtype": "float64"})
    model = build_model(cfg, ModularTask.from_config(tiny.task), seed=0)
    assert model.W_E.dtype == torch.float64


def test_truncated_checkpoint_is_a_clear_error(run):
    path = run.checkpoint_path(20)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserError, match="corrupt or truncated"):
        run.load_model(20)
    with pytest.raises(UserError, match="no checkpoint at step 30"):
        run.load_model(30)


def test_checkpoint_of_another_model_is_a_clear_error(run, tiny):
    bigger = tiny.model.model_copy(update={"d_mlp": 128})
    other = build_model(bigger, run.task, seed=0)
    run.save_checkpoint(40, other.state_dict())
    with pytest.raises(UserError, match="does not fit"):
        run.load_model(40)


def test_open_errors(tmp_path):
    with pytest.raises(UserError, match="no such run directory"):
        Run.open(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither a run directory"):
        Run.open(tmp_path / "empty")


def test_atomic_write_leaves_old_file_when_writer_fails(tmp_path):
    path = tmp_path / "summary.json"
    atomic_write_text(path, json.dumps({"ok": 1}))

    def failing(tmp):
        tmp.write_text("partial")
        raise RuntimeError("disk full")

    from grokscope.store import atomic_write

    with pytest.raises(RuntimeError):
        atomic_write(path, failing)
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_non_finite_metrics_are_written_as_strict_json(tmp_path):
    from grokscope.store import read_metrics, write_metrics

    path = tmp_path / "metrics.jsonl"
    write_metrics(path, [{"step": 0, "train_loss": float("nan"), "test_loss": float("inf")}])

    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    json.loads(path.read_text(), parse_constant=refuse)
    assert read_metrics(path) == [{"step": 0, "train_loss": None, "test_loss": None}]


def test_damaged_checkpoint_metadata_is_a_clear_error(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "step_0000001.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"format": "grokscope-checkpoint/1", "config": "{oops"})
    with pytest.raises(UserError, match="not a grokscope checkpoint"):
        read_checkpoint_header(path)
