"""Kill training (SIGKILL) at many points and check that rerunning the command with --resume ends bitwise where an
uninterrupted run ends: inside every checkpoint, metrics and trainer-state write, between updates, while the run
folder is being created, and during multi-seed runs (one after another and stacked)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import tiny_config
from grokscope.cli import app

from .crashing import run_killed

pytestmark = pytest.mark.slow

CONFIG = tiny_config().to_yaml()  # (a + b) mod 13, 60 steps, checkpoints every 20
VOLATILE = {"wall_time_s", "versions", "seeds_trained_together"}


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(CONFIG)
    return path


def snapshot(run_dir: Path) -> dict:
    """Everything a run leaves that must not depend on having been interrupted."""
    summary = json.loads((run_dir / "summary.json").read_text())
    checkpoints = {
        p.name: {k: v.numpy().tobytes() for k, v in load_file(p).items()}
        for p in sorted((run_dir / "checkpoints").iterdir())
    }
    return {
        "metrics": (run_dir / "metrics.jsonl").read_text(),
        "checkpoints": checkpoints,
        "summary": {k: v for k, v in summary.items() if k not in VOLATILE},
        "config": (run_dir / "config.yaml").read_text(),
        "split": (run_dir / "split.safetensors").read_bytes(),
    }


def leftovers(out: Path) -> list[str]:
    return [str(p) for p in out.rglob("*.tmp")]


def kill_and_resume(argv: list, where: str, n: int, scratch: Path) -> None:
    killed, _, _ = run_killed(argv, where, n, scratch)
    assert killed, f"the run finished before kill point {where} {n}"
    result = CliRunner().invoke(app, [str(a) for a in [*argv, "--resume"]])
    assert result.exit_code == 0, (where, n, result.output)


def test_single_seed_resumes_bitwise_from_every_kill_point(tmp_path, config_file):
    argv = ["train", config_file, "--quiet", "--device", "cpu", "--out"]
    killed, writes, updates = run_killed([*argv, tmp_path / "whole"], "none", 0, tmp_path)
    assert not killed and writes >= 14 and updates == 60
    whole = snapshot(tmp_path / "whole" / "tiny")
    points = (
        [("write", n) for n in range(1, writes + 1)]  # inside every write: marker, config, split, checkpoints, ...
        + [("written", n) for n in (1, 2, 3, 4, 6, writes - 1)]  # between two writes
        + [("update", n) for n in (1, 7, 20, 33, 59)]  # between checkpoints, and one update before the end
    )
    for where, n in points:
        out = tmp_path / f"{where}{n}"
        kill_and_resume([*argv, out], where, n, tmp_path)
        assert snapshot(out / "tiny") == whole, (where, n)
        assert not leftovers(out), (where, n)
    print(f"single seed: {len(points)} kill points resumed bitwise")


@pytest.mark.parametrize("pack", [1, 3])
def test_seed_list_resumes_bitwise_started_seeds_continue_others_start(tmp_path, config_file, pack):
    argv = ["train", config_file, "--quiet", "--device", "cpu", "--seeds", "0-2", "--pack", pack, "--out"]
    killed, writes, _ = run_killed([*argv, tmp_path / "whole"], "none", 0, tmp_path)
    assert not killed
    whole = {s: snapshot(tmp_path / "whole" / f"tiny_seed{s}") for s in range(3)}
    per_seed = writes // 3
    if pack == 1:  # seeds one after another: every write of seed 1 and of seed 2's creation, updates of seed 1
        points = [("write", n) for n in range(per_seed + 1, 2 * per_seed + 4)]
        points += [("written", per_seed + 9), ("update", 60 + 25)]
    else:  # stacked: every write (one seed's checkpoint killed while the others have saved theirs), updates
        points = [("write", n) for n in range(1, writes + 1)] + [("written", 20), ("update", 1), ("update", 30)]
    for where, n in points:
        out = tmp_path / f"{where}{n}"
        kill_and_resume([*argv, out], where, n, tmp_path)
        for s in range(3):
            assert snapshot(out / f"tiny_seed{s}") == whole[s], (pack, where, n, s)
        assert not leftovers(out), (where, n)
    print(f"seed list (pack {pack}): {len(points)} kill points resumed bitwise")
