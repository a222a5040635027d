"""Several operations in one model: per-operation metrics, replay, and analyses one operation at a time."""

import json

import pytest
import torch
from typer.testing import CliRunner

from conftest import tiny_config
from grokscope.analysis.common import answer_logits
from grokscope.cli import app
from grokscope.store import Run
from grokscope.training.loop import train
from grokscope.training.many import train_many

runner = CliRunner()


def _accuracy_by_hand(run: Run, step: int, part: str, op_index: int) -> float:
    """A checkpoint's accuracy on one operation's rows of one split part, from the model and the dataset alone."""
    task, split = run.task, run.split()
    data = task.dataset()
    rows = [i for i in getattr(split, part).tolist() if int(data.operation[i]) == op_index]
    model = run.load_model(step)
    with torch.no_grad():
        guess = answer_logits(model, task, data.subset(torch.tensor(rows))).argmax(-1)
    return float((guess == data.answers[rows]).double().mean())


def test_two_operations_report_each_and_split_alike(tmp_path):
    config = tiny_config(task={"operation": ["add", "sub"]}, train={"steps": 40, "checkpoints": {"every": 20}})
    run = train(config, tmp_path / "r", device="cpu", progress=False).run
    last = run.metrics()[-1]
    for k, op in enumerate(["add", "sub"]):
        for part in ("train", "test"):
            assert last[f"{part}_acc_{op}"] == pytest.approx(_accuracy_by_hand(run, 40, part, k), abs=1e-12)
    summary = json.loads((run.root / "summary.json").read_text())
    assert set(summary["operations"]) == {"add", "sub"}
    # The overall accuracy is the rows' mean over both operations (equal counts: split alike).
    assert last["test_acc"] == pytest.approx((last["test_acc_add"] + last["test_acc_sub"]) / 2, abs=1e-12)
    # Seen through one operation, the run's metrics are that operation's columns.
    sub = run.for_operation("sub")
    assert sub.metrics()[-1]["test_acc"] == last["test_acc_sub"] and "test_acc_add" not in sub.metrics()[-1]
    assert len(sub.split().test) == len(run.split().test) // 2


def test_stacked_seeds_give_the_same_per_operation_metrics(tmp_path):
    config = tiny_config(task={"operation": ["add", "mul"]}, train={"steps": 20, "checkpoints": {"every": 20}})
    single = train(config, tmp_path / "single", device="cpu", progress=False).run.metrics()
    stacked = train_many(
        [config, config.with_seed(1)], [tmp_path / "s0", tmp_path / "s1"], device="cpu", progress=False, pack=2
    )
    assert stacked[0].run.metrics()[-1]["test_acc_mul"] == pytest.approx(single[-1]["test_acc_mul"], abs=1e-6)


def test_replay_trains_a_sample_of_the_earlier_operation(tmp_path):
    config = tiny_config(task={"operation": ["add", "sub"], "replay": 0.25}, train={"steps": 10})
    run = train(config, tmp_path / "r", device="cpu", progress=False).run
    data, split = run.task.dataset(), run.split()
    ops = data.operation[split.train]
    assert int((ops == 0).sum()) == round(0.25 / 0.75 * int((ops == 1).sum()))
    assert "train_acc_add" in run.metrics()[-1]


def test_analyze_reads_one_operation_at_a_time(tmp_path):
    config = tiny_config(task={"operation": ["add", "sub"]}, train={"steps": 20, "checkpoints": {"every": 10}})
    run = train(config, tmp_path / "r", device="cpu", progress=False).run
    result = runner.invoke(app, ["analyze", str(run.root), "--fourier", "--operation", "mul", "--quiet"])
    assert result.exit_code == 2 and "trains add, sub" in result.output, result.output
    result = runner.invoke(app, ["analyze", str(run.root), "--fourier", "--operation", "sub", "--quiet"])
    assert result.exit_code == 0, result.output
    assert (run.root / "analysis" / "sub" / "fourier.json").is_file()
    assert not (run.root / "analysis" / "add").exists() and not (run.root / "analysis" / "fourier.json").exists()
    result = runner.invoke(app, ["analyze", str(run.root), "--fourier", "--quiet"])  # every operation in turn
    assert result.exit_code == 0 and "operation add:" in result.output and "operation sub:" in result.output
    assert (run.root / "analysis" / "add" / "fourier.json").is_file()
    # Each operation has its own cached rows, one per checkpoint.
    from grokscope.analysis.runner import analysis_frame

    add_rows, sub_rows = (
        analysis_frame(run.for_operation("add"), "fourier"),
        analysis_frame(run.for_operation("sub"), "fourier"),
    )
    assert list(add_rows.index) == list(sub_rows.index) == run.steps()


def test_the_report_tells_each_operation_apart(tmp_path):
    from grokscope.viz.report import build_report

    config = tiny_config(task={"operation": ["add", "sub"]}, train={"steps": 20, "checkpoints": {"every": 10}})
    run = train(config, tmp_path / "r", device="cpu", progress=False).run
    assert runner.invoke(app, ["analyze", str(run.root), "--fourier", "--quiet"]).exit_code == 0
    page = build_report(run.root)
    for op in ("add", "sub"):
        assert f"id='{op}-training'" in page and f"id='{op}-fourier'" in page and f"href='#{op}-fourier'" in page


def test_early_stop_on_one_operations_metric_and_on_resume(tmp_path):
    # Stop on sub's training accuracy alone: the run-wide train_acc, which averages in add's rows, may lag behind.
    early = {"metric": "train_acc_sub", "threshold": 0.98, "patience": 10}
    config = tiny_config(task={"operation": ["add", "sub"]}, train={"steps": 300, "early_stop": early})
    result = train(config, tmp_path / "r", device="cpu", progress=False)
    rows = result.run.metrics()
    first = next(r["step"] for r in rows if r["train_acc_sub"] >= 0.98)
    assert result.summary["stopped_early"] and rows[-1]["step"] == first + 10 < 300
    # Not the run-wide metric's stop: in this run add lags, so train_acc was still below the threshold at `first`.
    assert next(r["train_acc"] for r in rows if r["step"] == first) < 0.98
    # A crash after the last checkpoint, before the summary: resuming finds the stop already due and trains no more.
    (result.run.root / "summary.json").unlink()
    again = train(config, tmp_path / "r", device="cpu", progress=False, resume=True)
    assert again.run.metrics() == rows and again.summary["steps_trained"] == rows[-1]["step"]


def test_one_rule_for_a_plain_task_and_its_replay_twin(tmp_path):
    early = {"threshold": 0.98, "patience": 10}

    def run(name: str, metric: str, **task) -> list[dict]:
        config = tiny_config(task=task, train={"steps": 300, "early_stop": {"metric": metric, **early}})
        result = train(config, tmp_path / name, device="cpu", progress=False)
        assert result.summary["stopped_early"]
        # Resuming after a crash before the summary reads the rule from the same column: no further training.
        (result.run.root / "summary.json").unlink()
        again = train(config, tmp_path / name, device="cpu", progress=False, resume=True)
        assert again.run.metrics() == result.run.metrics()
        return result.run.metrics()

    # train_acc_sub on a task of sub alone is its train_acc: the same run, stopped at the same step, and
    # metrics.jsonl keeps its run-wide columns only.
    plain = run("plain", "train_acc_sub", operation="sub")
    assert plain == run("plain_run_wide", "train_acc", operation="sub") and "train_acc_sub" not in plain[-1]
    # The replay twin (add replayed beside sub) stops on sub's own rows under the same rule.
    twin = run("twin", "train_acc_sub", operation=["add", "sub"], replay=0.25)
    first = next(r["step"] for r in twin if r["train_acc_sub"] >= 0.98)
    assert twin[-1]["step"] == first + 10
