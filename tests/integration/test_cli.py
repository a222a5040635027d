"""The command line: exit codes, one-line errors, nothing on disk harmed."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from grokscope.cli import app, parse_seeds
from grokscope.errors import UserError

runner = CliRunner()


@pytest.fixture
def config_file(tmp_path, tiny):
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny.to_yaml())
    return path


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_parse_seeds():
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("5,1,2-3") == [1, 2, 3, 5]
    for bad in ("a", "3-1", "1,,2"):
        with pytest.raises(UserError):
            parse_seeds(bad)


def test_train_several_seeds_into_sibling_directories(tmp_path, config_file):
    result = invoke("train", config_file, "--out", tmp_path / "runs", "--seeds", "0-1", "--quiet", "--device", "cpu")
    assert result.exit_code == 0, result.output
    for seed in (0, 1):
        run_dir = tmp_path / "runs" / f"tiny_seed{seed}"
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert cfg["seed"] == seed and cfg["task"]["split_seed"] is None  # the split follows the seed
        assert str(run_dir) in result.output
    # A second train into the same place is refused; --resume finds both finished.
    again = invoke("train", config_file, "--out", tmp_path / "runs", "--seeds", "0-1", "--quiet")
    assert again.exit_code == 2 and "already exists" in again.output
    resumed = invoke("train", config_file, "--out", tmp_path / "runs", "--seeds", "0-1", "--quiet", "--resume")
    assert resumed.exit_code == 0, resumed.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "task.train_fraction=2"], "task.train_fraction"),
        (["--set", "task.operation=div", "--set", "task.modulus=12"], "prime modulus"),
        (["--set", "model.preset=gpt9"], "model.preset"),
        (["--set", "optim.momentum=0.9"], "optim.momentum: unknown key"),
        (["--device", "tpu"], "--device tpu"),
        (["--seeds", "x"], "--seeds"),
        (["--record", "telepathy"], "--record telepathy: unknown recorder"),
    ],
)
def test_user_errors_exit_2_with_one_line(tmp_path, config_file, args, message):
    result = invoke("train", config_file, "--out", tmp_path / "runs", "--quiet", *args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert not (tmp_path / "runs" / "tiny").exists()


def test_missing_config_and_resume_without_run(tmp_path, config_file):
    result = invoke("train", tmp_path / "nope.yaml")
    assert result.exit_code == 2 and "no such config file" in result.output
    # --resume continues what was started and starts what was not: rerunning a command always continues it.
    result = invoke("train", config_file, "--out", tmp_path / "runs", "--resume", "--quiet")
    assert result.exit_code == 0 and "resumed" not in result.output, result.output
    assert (tmp_path / "runs" / "tiny" / "summary.json").is_file()


def test_corrupt_checkpoint_on_resume_is_one_line_and_nothing_is_lost(tmp_path, config_file):
    assert invoke("train", config_file, "--out", tmp_path, "--quiet").exit_code == 0
    run_dir = tmp_path / "tiny"
    (run_dir / "trainer_state.pt").write_bytes(b"not a torch file")
    before = sorted(p.name for p in run_dir.rglob("*"))
    result = invoke("train", config_file, "--out", tmp_path, "--quiet", "--resume")
    assert result.exit_code == 2 and "trainer_state.pt: corrupt" in result.output
    assert sorted(p.name for p in run_dir.rglob("*")) == before


def test_real_process_prints_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task:\n  modulus: 1\n")
    exe = Path(sys.executable).with_name("grokscope")
    proc = subprocess.run([str(exe), "train", str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {bad}: task.modulus: Input should be greater than or equal to 2 (got 1)"
    assert "Traceback" not in proc.stderr + proc.stdout


def test_record_gradients_during_training(tmp_path, config_file):
    result = invoke("train", config_file, "--out", tmp_path, "--quiet", "--record", "gradients", "--record-every", "20")
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "tiny" / "recordings" / "gradient_norms.jsonl").read_text().splitlines()
    assert [yaml.safe_load(line)["step"] for line in lines] == [0, 20, 40]
