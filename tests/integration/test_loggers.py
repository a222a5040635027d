"""Experiment logging: what TensorBoard and W&B are sent is read back from their own files and held to metrics.jsonl."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import tiny_config
from grokscope.callbacks import Callback
from grokscope.cli import app
from grokscope.loggers import TensorBoardLogger, WandbLogger, metric_tag
from grokscope.training import train

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="the tensorboard package is not installed (pip install 'grokscope[tensorboard]')",
)


def tensorboard_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in a run's event files as TensorBoard itself reads them (purges applied)."""
    acc = event_accumulator.EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def expected_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl, column by column, under the tag each column is logged as (written out here, not by the
    library: loss and accuracy go under <metric>/<split>[/<operation>])."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    out: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for key, value in row.items():
            if key == "step":
                continue
            split, _, rest = key.partition("_")
            if split in ("train", "test", "val") and rest:
                metric, _, operation = rest.partition("_")
                tag = f"{metric}/{split}" + (f"/{operation}" if operation else "")
            else:
                tag = key
            out.setdefault(tag, []).append((row["step"], value))
    return out


def assert_same(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for tag, points in want.items():
        assert [s for s, _ in got[tag]] == [s for s, _ in points], tag
        for (_, a), (_, b) in zip(got[tag], points, strict=True):
            assert a == pytest.approx(b, rel=1e-6, abs=1e-30), tag  # event files hold float32


def test_metric_tags():
    assert metric_tag("train_loss") == "loss/train"
    assert metric_tag("test_acc") == "acc/test"
    assert metric_tag("val_loss_quad_plus_a") == "loss/val/quad_plus_a"
    assert metric_tag("lr") == "lr" and metric_tag("epoch") == "epoch"


def test_tensorboard_events_read_back_equal_the_metrics_with_per_operation_columns(tmp_path):
    config = tiny_config(task={"operation": ["add", "sub"]}, train={"steps": 40, "checkpoints": {"every": 20}})
    result = train(config, tmp_path / "multi", device="cpu", callbacks=[TensorBoardLogger()], progress=False)
    got = tensorboard_scalars(result.run.root)
    assert {"acc/test/add", "acc/test/sub", "loss/train/sub", "lr", "epoch"} <= set(got)
    assert_same(got, expected_scalars(result.run.root))
    acc = event_accumulator.EventAccumulator(str(result.run.root / "tensorboard"))
    acc.Reload()
    assert {"config/text_summary", "summary/text_summary"} <= set(acc.Tags()["tensors"])


class Interrupt(Callback):
    """Stops training with an error right after the metrics of ``step`` were logged (before its checkpoint), and
    first makes the TensorBoard logger write its events, as a process that lived a little longer would have."""

    def __init__(self, step: int, logger: TensorBoardLogger) -> None:
        self.step, self.logger = step, logger

    def on_eval(self, step, model, metrics):
        if step == self.step:
            self.logger._writer.flush()
            raise RuntimeError("stop")


def test_tensorboard_resume_logs_every_step_once_and_overwrite_starts_afresh(tmp_path):
    config = tiny_config()  # 60 steps, metrics every 10, checkpoints every 20
    first = TensorBoardLogger()
    with pytest.raises(RuntimeError, match="stop"):
        train(config, tmp_path / "tiny", device="cpu", callbacks=[first, Interrupt(30, first)], progress=False)
    # Steps 0..30 reached the event file; the run resumes from its step-20 checkpoint and logs 30 again.
    train(config, tmp_path / "tiny", device="cpu", resume=True, callbacks=[TensorBoardLogger()], progress=False)
    run_dir = tmp_path / "tiny"
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 2
    got = tensorboard_scalars(run_dir)
    assert [s for s, _ in got["loss/test"]] == [0, 10, 20, 30, 40, 50, 60]
    assert_same(got, expected_scalars(run_dir))
    # --overwrite: a new run, whose events replace the old ones.
    train(config, run_dir, device="cpu", overwrite=True, callbacks=[TensorBoardLogger()], progress=False)
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert_same(tensorboard_scalars(run_dir), expected_scalars(run_dir))


def test_cli_log_tensorboard_for_each_seed(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_config().to_yaml())
    result = CliRunner().invoke(
        app, ["train", str(config), "--out", str(tmp_path), "--seeds", "0-1", "--log", "tensorboard", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    for seed in (0, 1):
        run_dir = tmp_path / f"tiny_seed{seed}"
        assert_same(tensorboard_scalars(run_dir), expected_scalars(run_dir))


def wandb_history(run_file: Path) -> dict[str, list[tuple[int, float]]]:
    """The history rows of a W&B run file (``run-<id>.wandb``), decoded here: a 7-byte header (``:W&B``, magic,
    version), then LevelDB log records in 32 KiB blocks (7-byte record header: crc32, length, type FULL=1 /
    FIRST=2 / MIDDLE=3 / LAST=4), each record a ``wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos = run_file.read_bytes(), 32768, 7
    assert data[:4] == b":W&B"
    records, pending = [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            records.append(pending)
            pending = b""
    history: dict[str, list[tuple[int, float]]] = {}
    for raw in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") != "history":
            continue
        for item in record.history.item:
            key = item.key or "/".join(item.nested_key)
            if not key.startswith("_"):  # W&B's own _step, _runtime, _timestamp
                history.setdefault(key, []).append((record.history.step.num, json.loads(item.value_json)))
    return history


def test_wandb_offline_runs_hold_the_metrics_one_per_seed(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="the wandb package is not installed (pip install 'grokscope[wandb]')")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_config().to_yaml())
    result = CliRunner().invoke(
        app, ["train", str(config), "--out", str(tmp_path), "--seeds", "0-1", "--log", "wandb", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    ids = set()
    for seed in (0, 1):
        run_dir = tmp_path / f"tiny_seed{seed}"
        files = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))  # offline: nothing left the machine
        assert len(files) == 1
        run_id = (run_dir / "wandb" / "id").read_text().strip()
        assert files[0].name == f"run-{run_id}.wandb"
        ids.add(run_id)
        got, want = wandb_history(files[0]), expected_scalars(run_dir)
        assert sorted(got) == sorted(want)
        for tag, points in want.items():
            assert [s for s, _ in got[tag]] == [s for s, _ in points]
            assert all(math.isclose(a, b, rel_tol=1e-12) for (_, a), (_, b) in zip(got[tag], points, strict=True))
    assert len(ids) == 2


class Fail(Callback):
    def on_eval(self, step, model, metrics):
        if step == 30:
            raise RuntimeError("stop")


def test_wandb_resumed_run_logs_under_the_same_id(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="the wandb package is not installed (pip install 'grokscope[wandb]')")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "tiny"
    logger = WandbLogger()
    with pytest.raises(RuntimeError, match="stop"):
        train(tiny_config(), run_dir, device="cpu", callbacks=[logger, Fail()], progress=False)
    logger._run.finish()  # what the end of the interrupted process does
    first_id = (run_dir / "wandb" / "id").read_text().strip()
    train(tiny_config(), run_dir, device="cpu", resume=True, callbacks=[WandbLogger()], progress=False)
    assert (run_dir / "wandb" / "id").read_text().strip() == first_id
    files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert [f.name for f in files] == [f"run-{first_id}.wandb"] * 2
    steps = sorted([s for s, _ in wandb_history(f)["loss/test"]] for f in files)
    assert steps == [[0, 10, 20, 30], [30, 40, 50, 60]]  # the resumed process: from the step-20 checkpoint on


def test_experiments_log_every_run_they_train(tmp_path):
    import yaml

    (tmp_path / "base.yaml").write_text(tiny_config(train={"checkpoints": {"every": 10}}).to_yaml())
    spec = {"kind": "curriculum", "name": "cur", "base": "base.yaml", "stages": [7, 13], "stage_steps": 10}
    path = tmp_path / "cur.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(
        app, ["experiment", str(path), "--out", str(tmp_path / "out"), "--log", "tensorboard", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    for folder in ("range7", "range13", "direct"):
        run_dir = tmp_path / "out" / "cur" / "seed0" / folder
        assert_same(tensorboard_scalars(run_dir), expected_scalars(run_dir))
