"""A CPU run records what decides its digits beside its config and seed (thread count, CPU capability, torch), and
``--resume`` in another environment says so in one line and goes on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import InterruptAt
from grokscope.cli import app
from grokscope.store import TRAINER_STATE_FILE, Run, read_summary
from grokscope.training import train
from grokscope.training.loop import describe_environment, environment

CPU = torch.device("cpu")


@pytest.fixture
def config_file(tmp_path, tiny):
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny.to_yaml())
    return path


def interrupted(tiny, run_dir: Path) -> Path:
    """A run of ``tiny`` stopped at step 30: its resume state is the checkpoint of step 20's."""
    with pytest.raises(KeyboardInterrupt):
        train(tiny, run_dir, device="cpu", progress=False, callbacks=[InterruptAt(30)])
    return run_dir


def state_of(run_dir: Path) -> dict:
    return torch.load(run_dir / TRAINER_STATE_FILE, weights_only=True)


def resume(config_file: Path, run_dir: Path):
    args = ["train", config_file, "--out", run_dir.parent, "--quiet", "--device", "cpu", "--resume"]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result, [line for line in result.output.splitlines() if line.startswith("note:")]


def test_a_run_records_the_environment_that_trained_it(tmp_path, tiny):
    now = environment(CPU)
    assert now == {
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
    }
    result = train(tiny, tmp_path / "r", device="cpu", progress=False)
    record = [{"from_step": 0, **now}]
    assert result.summary["trained_with"] == record
    assert read_summary(result.run.root / "summary.json")["trained_with"] == record  # passes the summary's checks
    assert state_of(result.run.root)["trained_with"] == record  # read back with weights_only=True


def test_resume_in_another_environment_prints_one_line_and_goes_on(tmp_path, tiny, config_file):
    run_dir = interrupted(tiny, tmp_path / "tiny")
    state = state_of(run_dir)
    assert state["step"] == 20
    # As if another machine had trained it: 7 threads, no vector kernels, another torch.
    elsewhere = {"from_step": 0, "device": "cpu", "threads": 7, "cpu_capability": "DEFAULT", "torch": "2.0.0"}
    state["trained_with"] = [elsewhere]
    torch.save(state, run_dir / TRAINER_STATE_FILE)

    result, notes = resume(config_file, run_dir)
    now = environment(CPU)
    assert notes == [
        f"note: {run_dir} was trained with 7 threads on cpu DEFAULT, torch 2.0.0; resuming with "
        f"{describe_environment(now)}: the rest of the run will not be bitwise the same as an uninterrupted one"
    ]
    assert f"{run_dir}: resumed from step 20" in result.output
    summary = Run.open(run_dir).summary()
    assert summary["steps_trained"] == 60
    assert summary["trained_with"] == [elsewhere, {"from_step": 20, **now}]  # where the other environment took over


def test_resume_in_the_same_environment_or_of_a_run_without_the_record_says_nothing(tmp_path, tiny, config_file):
    same = interrupted(tiny, tmp_path / "same" / "tiny")
    _, notes = resume(config_file, same)
    assert notes == []
    assert Run.open(same).summary()["trained_with"] == [{"from_step": 0, **environment(CPU)}]

    # A run from before the record: it resumes as before, with no note (nothing to compare with), and its record
    # starts where this process took over.
    old = interrupted(tiny, tmp_path / "old" / "tiny")
    state = state_of(old)
    del state["trained_with"]
    torch.save(state, old / TRAINER_STATE_FILE)
    _, notes = resume(config_file, old)
    assert notes == []
    assert Run.open(old).summary()["trained_with"] == [{"from_step": 20, **environment(CPU)}]


def test_a_finished_run_gives_no_note(tmp_path, tiny, config_file):
    run_dir = tmp_path / "tiny"
    train(tiny, run_dir, device="cpu", progress=False)
    state = state_of(run_dir)
    state["trained_with"][0]["threads"] += 1
    torch.save(state, run_dir / TRAINER_STATE_FILE)
    _, notes = resume(config_file, run_dir)  # nothing is left to train, so nothing will differ
    assert notes == []


INTERRUPTED = """
import sys
sys.path.insert(0, {tests!r})
from conftest import InterruptAt, tiny_config
from grokscope.training import train

try:
    train(tiny_config(), {run_dir!r}, device="cpu", progress=False, callbacks=[InterruptAt(30)])
except KeyboardInterrupt:
    pass
"""


@pytest.mark.slow
def test_the_record_is_the_process_s_own(tmp_path, config_file):
    """Real processes: one thread and the generic kernels (``ATEN_CPU_CAPABILITY=default``) train the first 20 steps,
    two threads with the CPU's own kernels resume."""
    run_dir = tmp_path / "tiny"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "ATEN_CPU_CAPABILITY")}
    code = INTERRUPTED.format(tests=str(Path(__file__).parents[1]), run_dir=str(run_dir))
    first = {**env, "OMP_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "default"}
    subprocess.run([sys.executable, "-c", code], env=first, check=True, timeout=300)
    (before,) = state_of(run_dir)["trained_with"]
    assert (before["threads"], before["cpu_capability"]) == (1, "DEFAULT")

    exe = Path(sys.executable).with_name("grokscope")
    args = ["train", str(config_file), "--out", str(tmp_path), "--quiet", "--device", "cpu", "--resume"]
    proc = subprocess.run(
        [str(exe), *args], env={**env, "OMP_NUM_THREADS": "2"}, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    (note,) = [line for line in proc.stderr.splitlines() if line.startswith("note:")]
    assert f"{run_dir} was trained with 1 thread on cpu DEFAULT" in note and "resuming with 2 threads" in note
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [(e["from_step"], e["threads"]) for e in summary["trained_with"]] == [(0, 1), (20, 2)]
