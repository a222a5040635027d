"""Training end to end on tiny configs: determinism, resume, early stop, formats, minibatches."""

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import torch

from conftest import InterruptAt, tiny_config
from grokscope.errors import UserError
from grokscope.rundir import LOCK_FILE
from grokscope.store import METRICS_FILE, Run
from grokscope.training import Callback, train


def weights(run: Run) -> dict[str, torch.Tensor]:
    return run.load_state_dict()


def test_run_directory_layout(tmp_path, tiny):
    result = train(tiny, tmp_path / "r", device="cpu", progress=False)
    root = result.run.root
    names = {p.name for p in root.iterdir()}
    assert {
        "config.yaml",
        "split.safetensors",
        "metrics.jsonl",
        "summary.json",
        "checkpoints",
        "trainer_state.pt",
    } <= names
    assert result.run.steps() == [0, 20, 40, 60]
    rows = [json.loads(line) for line in (root / METRICS_FILE).read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(0, 61, 10))
    assert {"step", "epoch", "train_loss", "train_acc", "test_loss", "test_acc"} <= rows[0].keys()
    summary = json.loads((root / "summary.json").read_text())
    assert summary["final"] == rows[-1] and summary["device"] == "cpu"
    assert summary["versions"]["transformer-lens"] == version("transformer-lens")


def test_checkpoint_reproduces_logged_test_accuracy(tmp_path, tiny):
    result = train(tiny, tmp_path / "r", device="cpu", progress=False)
    run = Run.open(result.run.checkpoint_dir)  # a bare checkpoints/ folder is enough
    model = run.load_model(60)
    data, split = run.dataset(), run.split()
    test = data.subset(split.test)
    with torch.no_grad():
        acc = (model(test.tokens)[:, -1].argmax(-1) == test.answers).sum().item() / len(test)
    assert acc == pytest.approx(result.summary["final"]["test_acc"], abs=1e-12)


def test_bitwise_deterministic_on_cpu(tmp_path, tiny):
    a = train(tiny, tmp_path / "a", device="cpu", progress=False)
    b = train(tiny, tmp_path / "b", device="cpu", progress=False)
    assert a.run.metrics() == b.run.metrics()
    wa, wb = weights(a.run), weights(b.run)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not torch.are_deterministic_algorithms_enabled()  # training restored the caller's setting


@pytest.mark.parametrize("batch_size", [None, 32])
def test_resume_ends_where_an_uninterrupted_run_ends(tmp_path, batch_size):
    cfg = tiny_config(train={"batch_size": batch_size})
    whole = train(cfg, tmp_path / "whole", device="cpu", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", device="cpu", progress=False, callbacks=[InterruptAt(50)])
    cut = Run.open(tmp_path / "cut")
    assert cut.steps()[-1] == 40 and cut.summary() is None
    resumed = train(cfg, tmp_path / "cut", device="cpu", progress=False, resume=True)
    assert resumed.run.metrics() == whole.run.metrics()
    wa, wb = weights(whole.run), weights(resumed.run)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert resumed.summary["generalization_step"] == whole.summary["generalization_step"]


def test_resume_refuses_another_config_and_keeps_the_run(tmp_path, tiny):
    train(tiny, tmp_path / "r", device="cpu", progress=False)

    def files() -> dict[str, bytes]:  # the lock file's note names the latest holder: not run data
        return {p.name: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file() and p.name != LOCK_FILE}

    before = files()
    other = tiny_config(optim={"lr": 3e-3})
    with pytest.raises(UserError, match=r"another config \(optim.lr: 0.01 != 0.003\)"):
        train(other, tmp_path / "r", device="cpu", progress=False, resume=True)
    with pytest.raises(UserError, match="already exists"):
        train(tiny, tmp_path / "r", device="cpu", progress=False)
    assert files() == before


def test_resume_of_a_finished_run_changes_nothing(tmp_path, tiny):
    first = train(tiny, tmp_path / "r", device="cpu", progress=False)
    again = train(tiny, tmp_path / "r", device="cpu", progress=False, resume=True)
    assert again.run.metrics() == first.run.metrics()
    assert again.run.steps() == first.run.steps()


def test_early_stop_holds_for_patience(tmp_path):
    cfg = tiny_config(
        optim={"lr": 1e-2},
        train={"steps": 400, "early_stop": {"metric": "train_acc", "threshold": 0.99, "patience": 30}},
    )
    result = train(cfg, tmp_path / "r", device="cpu", progress=False)
    rows = result.run.metrics()
    first = next(r["step"] for r in rows if r["train_acc"] >= 0.99)
    assert result.summary["stopped_early"]
    assert rows[-1]["step"] == first + 30
    assert result.run.steps()[-1] == rows[-1]["step"]


def test_power_format_all_positions_and_float64(tmp_path):
    cfg = tiny_config(
        task={"format": "power", "loss_on": "all", "val_fraction": 0.2},
        model={"preset": "power", "dtype": "float64"},
        train={"loss_dtype": "float64", "steps": 20},
    )
    result = train(cfg, tmp_path / "r", device="cpu", progress=False)
    row = result.run.metrics()[-1]
    assert {"val_loss", "val_acc"} <= row.keys()
    assert result.model.W_E.dtype == torch.float64
    # Position 1 sees only BOS, so its loss is at least the entropy of the operand a over the training set:
    # the mean over the 7 loss positions can never fall below a seventh of it.
    run = result.run
    a = run.dataset().pairs[run.split().train, 0]
    freq = torch.bincount(a, minlength=13).double() / len(a)
    entropy = -(freq[freq > 0] * freq[freq > 0].log()).sum().item()
    assert row["train_loss"] >= entropy / 7


REPRODUCE = """
import hashlib, sys
sys.path.insert(0, {tests!r})
from conftest import tiny_config
from grokscope.training import train
cfg = tiny_config(task={{"modulus": 59, "train_fraction": 0.4}},
                  model={{"d_model": 128, "d_mlp": 512, "n_heads": 4, "d_head": 32}}, train={{"steps": 20}})
result = train(cfg, {out!r}, device="cpu", progress=False)
print(hashlib.sha256(b"".join(v.numpy().tobytes() for v in result.run.load_state_dict().values())).hexdigest())
"""


@pytest.mark.slow
def test_bitwise_reproducible_across_processes(tmp_path):
    # Two threads, a quickstart-sized model: the size at which parallel embedding backward used to differ.
    tests = str(Path(__file__).parents[1])
    hashes = []
    for name in ("a", "b"):
        code = REPRODUCE.format(tests=tests, out=str(tmp_path / name))
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
        hashes.append(proc.stdout.strip().splitlines()[-1])
    assert hashes[0] == hashes[1]


class InterruptAtCheckpoint(Callback):
    """A crash after the checkpoint and metrics of ``step`` are written, before the resume state is."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_checkpoint(self, step, model):
        if step == self.step:
            raise KeyboardInterrupt


def test_crash_before_the_resume_state_loses_nothing(tmp_path, tiny):
    whole = train(tiny, tmp_path / "whole", device="cpu", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(tiny, tmp_path / "cut", device="cpu", progress=False, callbacks=[InterruptAtCheckpoint(40)])
    resumed = train(tiny, tmp_path / "cut", device="cpu", progress=False, resume=True)
    assert resumed.run.metrics() == whole.run.metrics()


def test_resume_at_a_checkpoint_between_evaluations_stops_where_the_whole_run_stops(tmp_path):
    cfg = tiny_config(
        train={
            "steps": 100,
            "eval_every": 10,
            "checkpoints": {"every": 25},
            "early_stop": {"metric": "train_loss", "threshold": 100.0, "patience": 22},  # met from the start
        }
    )
    whole = train(cfg, tmp_path / "whole", device="cpu", progress=False)
    assert whole.summary["steps_trained"] == 30
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", device="cpu", progress=False, callbacks=[InterruptAt(27)])
    resumed = train(cfg, tmp_path / "cut", device="cpu", progress=False, resume=True)
    assert resumed.run.metrics() == whole.run.metrics()


def test_overwrite_deletes_only_run_directories(tmp_path, tiny):
    precious = tmp_path / "tiny"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(UserError, match="grokscope did not create"):
        train(tiny, precious, device="cpu", progress=False, overwrite=True)
    assert (precious / "thesis.tex").read_text() == "years of work"
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="not a directory"):
        train(tiny, tmp_path / "file", device="cpu", progress=False)
