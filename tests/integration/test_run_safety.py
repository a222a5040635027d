"""Nothing a user does destroys data or ends in a traceback: ownership, half-created runs, locking, memory bounds,
divergence, OS errors, signals and leftovers (issue: run-directory safety). Kill/resume is in test_kill_resume.py."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import tiny_config
from grokscope.cli import app
from grokscope.rundir import LOCK_FILE, FolderLock
from grokscope.store import MARKER_FILE

from .crashing import outcome, spawn

runner = CliRunner()

CONFIG = tiny_config().to_yaml()  # (a + b) mod 13, 60 steps, checkpoints every 20


@pytest.fixture
def config_file(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(CONFIG)
    return path


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def train(config_file, out, *args):
    return invoke("train", config_file, "--out", out, "--quiet", "--device", "cpu", *args)


def one_line_error(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def tree(folder: Path) -> dict[str, bytes]:
    """Every file and its bytes, but the lock (its note names the latest holder)."""
    files = (p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != LOCK_FILE)
    return {str(p.relative_to(folder)): p.read_bytes() for p in files}


def complete(run_dir: Path) -> bool:
    summary = json.loads((run_dir / "summary.json").read_text())
    return summary["steps_trained"] == 60 and (run_dir / "checkpoints" / "step_0000060.safetensors").is_file()


# 1. --overwrite deletes only what grokscope made --------------------------------------------------------------------
@pytest.mark.parametrize("with_split", [False, True])
def test_overwrite_refuses_a_folder_that_only_looks_like_a_run(tmp_path, config_file, with_split):
    folder = tmp_path / "runs" / "tiny"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(CONFIG)  # even a valid grokscope config
    (folder / "thesis.tex").write_text("years of work")
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "model.pt").write_bytes(b"someone else's weights")
    if with_split:
        (folder / "split.safetensors").write_bytes(b"not a split")  # an unparseable file is not an old run either
    before = tree(folder)
    for flag in ("--overwrite", "--resume", None):
        line = one_line_error(train(config_file, tmp_path / "runs", *([flag] if flag else [])))
        assert "grokscope did not create" in line
    assert tree(folder) == before and not (folder / LOCK_FILE).exists()


def test_overwrite_removes_only_grokscopes_entries(tmp_path, config_file):
    assert train(config_file, tmp_path).exit_code == 0
    run_dir = tmp_path / "tiny"
    (run_dir / "notes.md").write_text("mine")
    (run_dir / "checkpoints" / "favourite.pt").write_text("mine too")
    old_config = (run_dir / "config.yaml").read_text()
    result = train(config_file, tmp_path, "--overwrite", "--set", "train.steps=40")
    assert result.exit_code == 0, result.output
    assert (run_dir / "notes.md").read_text() == "mine"
    assert (run_dir / "checkpoints" / "favourite.pt").read_text() == "mine too"
    assert (run_dir / "config.yaml").read_text() != old_config
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step_*")) == [
        "step_0000000.safetensors",
        "step_0000020.safetensors",
        "step_0000040.safetensors",
    ]


def test_a_run_made_before_the_marker_is_still_grokscopes(tmp_path, config_file):
    assert train(config_file, tmp_path).exit_code == 0
    (tmp_path / "tiny" / MARKER_FILE).unlink()
    assert train(config_file, tmp_path, "--resume").exit_code == 0
    assert train(config_file, tmp_path, "--overwrite").exit_code == 0
    assert (tmp_path / "tiny" / MARKER_FILE).is_file()


# 2. half-created run folders are resumed or replaced by a command ---------------------------------------------------
def _half(kind: str, folder: Path) -> None:
    folder.mkdir(parents=True)
    if kind == "empty checkpoints/ (an older grokscope killed while starting)":
        (folder / "checkpoints").mkdir()
        return
    if kind == "marker being written":
        (folder / f".{MARKER_FILE}.x1y2.tmp").write_text("{")
        (folder / LOCK_FILE).write_text("")
        return
    (folder / MARKER_FILE).write_text('{"format": "grokscope-run/1"}')
    if kind in ("marker + checkpoints/", "marker + checkpoints/ + config"):
        (folder / "checkpoints").mkdir()
    if kind == "marker + checkpoints/ + config":
        (folder / "config.yaml").write_text(CONFIG)


HALF = [
    "empty checkpoints/ (an older grokscope killed while starting)",
    "marker being written",
    "marker only",
    "marker + checkpoints/",
    "marker + checkpoints/ + config",
]


@pytest.mark.parametrize("kind", HALF)
@pytest.mark.parametrize("flag", [None, "--resume", "--overwrite"])
def test_a_half_created_run_is_started_by_any_command(tmp_path, config_file, kind, flag):
    _half(kind, tmp_path / "tiny")
    result = train(config_file, tmp_path, *([flag] if flag else []))
    assert result.exit_code == 0, result.output
    assert complete(tmp_path / "tiny")


# 3. a seed list resumes: started seeds continue, the others start ---------------------------------------------------
def test_resuming_a_seed_list_continues_started_seeds_and_starts_the_rest(tmp_path, config_file):
    assert train(config_file, tmp_path, "--seeds", "0").exit_code == 0  # seed 0 finished
    _half("marker + checkpoints/", tmp_path / "tiny_seed1")  # seed 1 killed while starting; seed 2 never started
    result = train(config_file, tmp_path, "--seeds", "0-2", "--resume")
    assert result.exit_code == 0, result.output
    assert "tiny_seed0: resumed from step 60" in result.output
    assert all(complete(tmp_path / f"tiny_seed{s}") for s in range(3))


# 4. one process per run folder --------------------------------------------------------------------------------------
def test_a_held_run_folder_is_refused_naming_the_holder(tmp_path, config_file):
    assert train(config_file, tmp_path).exit_code == 0
    run_dir = tmp_path / "tiny"
    before = tree(run_dir)
    with FolderLock(run_dir, "grokscope train"):
        for flag in ("--resume", "--overwrite", None):
            line = one_line_error(train(config_file, tmp_path, *([flag] if flag else [])))
            assert f"in use by pid {os.getpid()}" in line and "grokscope train" in line, line
        assert tree(run_dir) == before
    assert train(config_file, tmp_path, "--resume").exit_code == 0  # released


@pytest.fixture
def children():
    """Processes a test spawns; any still running at the end (a failed assertion) are killed, not left training."""
    spawned: list = []
    yield spawned
    for process in spawned:
        if process.is_alive():
            os.kill(process.pid, signal.SIGKILL)
            process.join()


def _wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _holder_pid(run_dir: Path) -> int | None:
    try:
        return json.loads((run_dir / LOCK_FILE).read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


@pytest.mark.slow
def test_concurrent_writers_one_trains_the_others_are_refused(tmp_path, config_file, children):
    long = ["--set", "train.steps=200000", "--set", "train.eval_every=1000"]
    run_dir = tmp_path / "tiny"
    # Two starts at the same moment: exactly one trains.
    first = spawn(["train", config_file, "--out", tmp_path, "--quiet", "--device", "cpu", *long], tmp_path / "a")
    second = spawn(["train", config_file, "--out", tmp_path, "--quiet", "--device", "cpu", *long], tmp_path / "b")
    children += [first, second]
    _wait_for(lambda: (first.exitcode is not None) or (second.exitcode is not None))
    loser, winner = (first, second) if first.exitcode is not None else (second, first)
    code, output = outcome(tmp_path / ("a" if loser is first else "b"))
    assert code == 2 and f"in use by pid {winner.pid}" in output, output
    _wait_for(lambda: (run_dir / "checkpoints" / "step_0000000.safetensors").is_file())
    assert _holder_pid(run_dir) == winner.pid
    # While it trains: a plain start, --resume and --overwrite are each refused, naming it, and harm nothing.
    for flag in (None, "--resume", "--overwrite"):
        line = one_line_error(train(config_file, tmp_path, *long, *([flag] if flag else [])))
        assert f"in use by pid {winner.pid}" in line
    assert winner.is_alive() and (run_dir / "config.yaml").is_file()
    # The OS drops the lock of a killed process: the run resumes.
    os.kill(winner.pid, signal.SIGKILL)
    winner.join()
    with FolderLock(run_dir):  # free again (resuming it is test_a_killed_holder_leaves_a_resumable_run)
        pass


@pytest.mark.slow
def test_a_killed_holder_leaves_a_resumable_run(tmp_path, config_file, children):
    long = ["--set", "train.steps=4000", "--set", "train.eval_every=500", "--set", "train.checkpoints.every=500"]
    holder = spawn(["train", config_file, "--out", tmp_path, "--quiet", "--device", "cpu", *long], tmp_path / "a")
    children.append(holder)
    run_dir = tmp_path / "tiny"
    _wait_for(lambda: (run_dir / "checkpoints" / "step_0000000.safetensors").is_file())
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    result = train(config_file, tmp_path, "--resume", *long)
    assert result.exit_code == 0, result.output
    assert json.loads((run_dir / "summary.json").read_text())["steps_trained"] == 4000


# 5. memory bounds ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--set", "task.modulus=100000"], "task.modulus"),
        (["--set", "model.d_mlp=2000000000"], "model"),
        (["--set", "task.modulus=3000", "--set", "train.batch_size=null"], "train.batch_size"),
    ],
)
def test_a_job_that_cannot_fit_in_memory_is_refused_before_anything_is_made(tmp_path, config_file, args, field):
    line = one_line_error(train(config_file, tmp_path, *args))
    assert line.startswith(f"error: {field}") and "available" in line, line
    assert not (tmp_path / "tiny").exists()


@pytest.mark.parametrize(
    ("seeds", "message"),
    [
        ("0-1000000", "1,000,001 seeds; at most 10,000"),
        ("4294967296", "out of range"),
        ("0-5,3-99999999999", "out of range"),
        ("0-9999999,5", "10,000,000 seeds"),
    ],
)
def test_seed_lists_are_bounded(tmp_path, config_file, seeds, message):
    assert message in one_line_error(train(config_file, tmp_path, "--seeds", seeds))
    assert not any(tmp_path.glob("tiny_seed*"))


def test_the_largest_seed_trains(tmp_path, config_file):
    assert train(config_file, tmp_path, "--seeds", "4294967295", "--set", "train.steps=10").exit_code == 0


# 6. divergence ------------------------------------------------------------------------------------------------------
def test_a_diverging_run_stops_keeps_its_finite_checkpoints_and_analyses_run(tmp_path, config_file):
    args = ["--set", "optim.lr=1e4", "--set", "train.eval_every=5", "--set", "train.checkpoints.every=5"]
    result = train(config_file, tmp_path, *args)
    assert result.exit_code == 3, result.output
    assert "diverged: train_loss became non-finite (NaN or inf) by step 5" in result.output
    assert "kept the checkpoints up to step 0" in result.output and "Traceback" not in result.output
    run_dir = tmp_path / "tiny"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["diverged"] == {"step": 5, "metric": "train_loss", "last_checkpoint": 0}
    for path in (run_dir / "checkpoints").iterdir():
        assert all(torch.isfinite(t).all() for k, t in load_file(path).items() if not k.endswith("IGNORE"))
    assert torch.load(run_dir / "trainer_state.pt", weights_only=True)["step"] == 0
    analysed = invoke("analyze", run_dir, "--fourier", "--progress", "--quiet", "--no-figures")
    assert analysed.exit_code == 0, analysed.output


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", ".inf"])
def test_non_finite_learning_rates_are_refused(tmp_path, config_file, value):
    assert "optim.lr" in one_line_error(train(config_file, tmp_path, "--set", f"optim.lr={value}"))
    assert not (tmp_path / "tiny").exists()


# 7. OS errors on paths the user gave --------------------------------------------------------------------------------
def test_os_errors_on_user_paths_are_one_line(tmp_path, config_file):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert "is a file" in one_line_error(train(config_file, a_file))
    assert "cannot create" in one_line_error(train(config_file, "/proc/grokscope-test"))
    assert train(config_file, tmp_path).exit_code == 0
    run_dir = tmp_path / "tiny"
    one_line_error(invoke("analyze", run_dir, "--fourier", "--quiet", "--out", a_file / "sub"))
    one_line_error(invoke("report", run_dir, "--out", a_file / "report.html"))
    one_line_error(invoke("report", run_dir, "--out", "/proc/report.html"))
    assert a_file.read_text() == "x"


def _limit_file_size() -> None:
    limit = 20_000  # bytes: the config and split fit, the first checkpoint does not
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails (EFBIG) instead of killing the process


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_the_run_resumes_afterwards(tmp_path, config_file):
    exe = Path(sys.executable).with_name("grokscope")
    cmd = [str(exe), "train", str(config_file), "--out", str(tmp_path), "--quiet", "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, preexec_fn=_limit_file_size)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "step_0000000.safetensors: cannot write (File too large)" in proc.stderr
    assert not list(tmp_path.rglob("*.tmp"))
    assert train(config_file, tmp_path, "--resume").exit_code == 0 and complete(tmp_path / "tiny")


# 9. smaller cases ---------------------------------------------------------------------------------------------------
def test_refusals_come_before_the_run_folder_exists(tmp_path, config_file):
    cases = [
        (["--set", "model.init_from=missing.safetensors"], "model.init_from"),
        (["--set", "optim.freeze=[embed,pos_embed,attn,mlp,unembed]"], "optim.freeze"),
    ]
    for args, field in cases:
        assert field in one_line_error(train(config_file, tmp_path, *args))
        assert not (tmp_path / "tiny").exists()
    dup = tmp_path / "dup.yaml"
    dup.write_text(CONFIG + "seed: 1\n")
    assert "duplicate key 'seed'" in one_line_error(train(dup, tmp_path))
    assert not (tmp_path / "tiny").exists()


def test_stale_temporary_files_are_cleaned_by_the_next_run_command(tmp_path, config_file):
    assert train(config_file, tmp_path).exit_code == 0
    run_dir = tmp_path / "tiny"
    stale = [
        run_dir / ".metrics.jsonl.ab12.tmp",
        run_dir / ".trainer_state.pt.cd34.tmp",
        run_dir / "checkpoints" / ".step_0000020.safetensors.ef56.tmp",
    ]
    for path in stale:
        path.write_bytes(b"half")
    theirs = run_dir / ".draft.tex.tmp"  # not a temporary file of a run file: left alone
    theirs.write_text("mine")
    assert train(config_file, tmp_path, "--resume").exit_code == 0
    assert not any(p.exists() for p in stale) and theirs.read_text() == "mine"


def test_report_on_a_folder_with_nothing_to_report_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    assert "neither a run directory" in one_line_error(invoke("report", tmp_path / "empty"))
    assert not (tmp_path / "empty" / "report.html").exists()


def test_an_interrupted_analyze_says_how_to_continue(tmp_path, config_file, monkeypatch):
    assert train(config_file, tmp_path).exit_code == 0
    import grokscope.analysis.runner as runner_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner_module, "analyze", interrupted)
    result = invoke("analyze", tmp_path / "tiny", "--fourier", "--quiet")
    assert result.exit_code == 130
    assert "run the same command again" in result.output and "--resume" not in result.output


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_the_run_says_how_to_resume_and_resumes_bitwise(tmp_path, config_file, sig, children):
    long = ["--set", "train.steps=3000", "--set", "train.eval_every=100", "--set", "train.checkpoints.every=1000"]
    assert train(config_file, tmp_path / "whole", *long).exit_code == 0
    child = spawn(
        ["train", config_file, "--out", tmp_path / "cut", "--quiet", "--device", "cpu", *long], tmp_path / "r"
    )
    children.append(child)
    run_dir = tmp_path / "cut" / "tiny"
    _wait_for(lambda: (run_dir / "checkpoints" / "step_0000000.safetensors").is_file())
    time.sleep(0.3)
    os.kill(child.pid, sig)
    child.join(timeout=120)
    code, output = outcome(tmp_path / "r")
    assert code == 128 + sig, output
    assert f"interrupted by {signal.Signals(sig).name} at step " in output and "--resume" in output, output
    step = int(output.split(" at step ")[1].split(":")[0])
    assert 0 < step < 3000
    assert (run_dir / "checkpoints" / f"step_{step:07d}.safetensors").is_file()
    assert torch.load(run_dir / "trainer_state.pt", weights_only=True)["step"] == step
    assert train(config_file, tmp_path / "cut", *long, "--resume").exit_code == 0
    whole = tmp_path / "whole" / "tiny"
    assert (run_dir / "metrics.jsonl").read_text() == (whole / "metrics.jsonl").read_text()
    for name in ("step_0001000.safetensors", "step_0003000.safetensors"):
        a, b = load_file(whole / "checkpoints" / name), load_file(run_dir / "checkpoints" / name)
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_analyze_holds_its_output_folder_and_cleans_what_a_killed_analyze_left(tmp_path, config_file):
    assert train(config_file, tmp_path).exit_code == 0
    analysis = tmp_path / "tiny" / "analysis"
    with FolderLock(analysis, "grokscope analyze"):
        line = one_line_error(invoke("analyze", tmp_path / "tiny", "--fourier", "--quiet"))
        assert f"in use by pid {os.getpid()}" in line
    stale = [analysis / ".fourier.json.ab12.tmp", analysis / "figures" / ".fourier.html.cd34.tmp"]
    stale[1].parent.mkdir(parents=True, exist_ok=True)
    for path in stale:
        path.write_text("half")
    assert invoke("analyze", tmp_path / "tiny", "--fourier", "--quiet").exit_code == 0
    assert not any(p.exists() for p in stale)
    # A run that is training does not block analysing it: the two hold different folders.
    with FolderLock(tmp_path / "tiny", "grokscope train"):
        assert invoke("analyze", tmp_path / "tiny", "--fourier", "--quiet", "--no-figures").exit_code == 0


# Cases from a hostile-user audit -----------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["no trainer_state.pt", "trainer_state.pt is a folder"])
def test_a_trained_run_without_its_resume_state_is_never_wiped_silently(tmp_path, config_file, damage):
    assert train(config_file, tmp_path, "--record", "fingerprint").exit_code == 0
    run_dir = tmp_path / "tiny"
    (run_dir / "trainer_state.pt").unlink()
    if damage == "trainer_state.pt is a folder":
        (run_dir / "trainer_state.pt").mkdir()
    before = tree(run_dir)
    for flag in (None, "--resume"):
        line = one_line_error(train(config_file, tmp_path, *([flag] if flag else [])))
        assert "cannot be resumed" in line and "--overwrite" in line
        assert tree(run_dir) == before
    if damage == "no trainer_state.pt":
        assert train(config_file, tmp_path, "--overwrite").exit_code == 0 and complete(run_dir)
    else:  # a folder where a file belongs is not grokscope's to delete: refused whole, before anything goes
        assert "expected a file" in one_line_error(train(config_file, tmp_path, "--overwrite"))
        assert tree(run_dir) == before


def test_resuming_from_a_checkpoint_that_does_not_fit_is_one_line(tmp_path, config_file):
    assert train(config_file, tmp_path, "--set", "train.steps=40").exit_code == 0
    run_dir = tmp_path / "tiny"
    last = run_dir / "checkpoints" / "step_0000040.safetensors"
    other = tmp_path / "other"
    assert train(config_file, other, "--set", "model.d_model=16", "--set", "train.steps=40").exit_code == 0
    last.write_bytes((other / "tiny" / "checkpoints" / "step_0000040.safetensors").read_bytes())
    line = one_line_error(train(config_file, tmp_path, "--resume", "--set", "train.steps=40"))
    assert "step_0000040.safetensors" in line and "does not fit" in line


def test_a_hand_edited_optimizer_state_is_one_line(tmp_path, config_file):
    assert train(config_file, tmp_path, "--set", "train.steps=40").exit_code == 0
    path = tmp_path / "tiny" / "trainer_state.pt"
    state = torch.load(path, weights_only=True)
    state["optimizer"]["param_groups"][0]["betas"] = "ab"
    torch.save(state, path)
    line = one_line_error(train(config_file, tmp_path, "--resume", "--set", "train.steps=40"))
    assert "trainer_state.pt" in line and "betas" in line


@pytest.mark.parametrize("change", ["d_model", "nan"])
def test_init_from_a_checkpoint_that_cannot_start_this_model_is_one_line(tmp_path, config_file, change):
    source = tmp_path / "source"
    d_model = "16" if change == "d_model" else "32"
    assert train(config_file, source, "--set", f"model.d_model={d_model}", "--set", "train.steps=20").exit_code == 0
    checkpoint = source / "tiny" / "checkpoints" / "step_0000020.safetensors"
    if change == "nan":
        from grokscope.store import read_checkpoint_header, save_checkpoint

        step, config = read_checkpoint_header(checkpoint)
        state = load_file(checkpoint)
        state["embed.W_E"][0, 0] = float("nan")
        save_checkpoint(checkpoint, state, step, config)
    line = one_line_error(train(config_file, tmp_path / "runs", "--set", f"model.init_from={checkpoint}"))
    assert "model.init_from" in line and ("shape" in line if change == "d_model" else "non-finite" in line)
    assert not (tmp_path / "runs" / "tiny").exists()


def test_report_never_replaces_what_is_not_a_report(tmp_path, config_file):
    assert train(config_file, tmp_path).exit_code == 0
    run_dir = tmp_path / "tiny"
    summary = (run_dir / "summary.json").read_bytes()
    assert ".html" in one_line_error(invoke("report", run_dir, "--out", run_dir / "summary.json"))
    assert (run_dir / "summary.json").read_bytes() == summary
    fifo = tmp_path / "pipe.html"
    os.mkfifo(fifo)
    assert "not a regular file" in one_line_error(invoke("report", run_dir, "--out", fifo))
    assert fifo.exists() and not fifo.is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pack", "0"], "--pack"),
        (["--pack", "abc"], "--pack"),
        (["--record-every", "0"], "--record-every"),
        (["--no-such-flag"], "No such option"),
        (["extra-argument"], "unexpected extra argument"),
    ],
)
def test_usage_mistakes_are_one_line_too(tmp_path, config_file, args, message):
    line = one_line_error(train(config_file, tmp_path, *args))
    assert message.lower() in line.lower()


def test_seed_lists_take_ascii_digits_only(tmp_path, config_file):
    assert "expected seeds" in one_line_error(train(config_file, tmp_path, "--seeds", "١-٣"))


# Cases from a code review ------------------------------------------------------------------------------------------
def test_overwrite_with_a_config_that_cannot_start_keeps_the_old_run(tmp_path, config_file):
    assert train(config_file, tmp_path).exit_code == 0
    before = tree(tmp_path / "tiny")
    line = one_line_error(train(config_file, tmp_path, "--overwrite", "--set", "task.train_fraction=0.001"))
    assert "train_fraction" in line
    assert tree(tmp_path / "tiny") == before


def test_a_start_killed_after_its_first_recording_is_still_half_created(tmp_path, config_file):
    folder = tmp_path / "tiny"
    _half("marker + checkpoints/ + config", folder)
    (folder / "checkpoints" / "step_0000000.safetensors").write_bytes(b"killed before its resume state")
    (folder / "recordings").mkdir()
    (folder / "recordings" / "fingerprints.safetensors").write_bytes(b"flushed at the step-0 checkpoint")
    assert train(config_file, tmp_path).exit_code == 0 and complete(folder)


def test_a_seed_list_is_refused_whole_before_any_seed_trains(tmp_path, config_file):
    (tmp_path / "tiny_seed2").mkdir()
    (tmp_path / "tiny_seed2" / "thesis.tex").write_text("mine")
    for extra in ([], ["--record", "gradients"]):
        line = one_line_error(train(config_file, tmp_path, "--seeds", "0-2", *extra))
        assert "tiny_seed2" in line and "grokscope did not create" in line
        assert not (tmp_path / "tiny_seed0").exists()


def test_temporary_files_that_are_not_grokscopes_are_left_alone(tmp_path, config_file):
    assert train(config_file, tmp_path).exit_code == 0
    out = tmp_path / "mine"
    out.mkdir()
    theirs = [out / ".notes.txt.x1.tmp", tmp_path / "tiny" / "checkpoints" / ".readme.txt.ab.tmp"]
    for path in theirs:
        path.write_text("mine")
    assert invoke("analyze", tmp_path / "tiny", "--fourier", "--quiet", "--no-figures", "--out", out).exit_code == 0
    assert train(config_file, tmp_path, "--resume").exit_code == 0
    assert all(path.read_text() == "mine" for path in theirs)


def test_overwrite_does_not_pull_analysis_away_from_a_running_analyze(tmp_path, config_file):
    assert train(config_file, tmp_path).exit_code == 0
    assert invoke("analyze", tmp_path / "tiny", "--fourier", "--quiet", "--no-figures").exit_code == 0
    before = tree(tmp_path / "tiny")
    with FolderLock(tmp_path / "tiny" / "analysis", "grokscope analyze"):
        line = one_line_error(train(config_file, tmp_path, "--overwrite"))
        assert f"in use by pid {os.getpid()}" in line and "analysis" in line
    assert tree(tmp_path / "tiny") == before
