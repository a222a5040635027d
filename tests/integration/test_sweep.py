"""Sweeps end to end on a tiny power-format task: outputs, reuse of finished runs, failure isolation, paired inits."""

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import grokscope.experiments.runs as runs
from grokscope.experiments import run as run_experiment
from grokscope.store import SUMMARY_FILE, Run

BASE = {
    "name": "tinypower",
    "seed": 0,
    "task": {"operation": "add", "modulus": 7, "format": "power", "train_fraction": 0.5},
    "model": {"preset": "power", "n_layers": 1, "d_model": 16, "n_heads": 2, "d_head": 8, "d_mlp": 32},
    "optim": {"lr": 1e-2, "weight_decay": 1.0},
    "train": {"steps": 20, "eval_every": 5, "checkpoints": {"every": 10}},
}


def make_sweep(tmp_path, **fields):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    spec = {"kind": "sweep", "name": "s", "base": "base.yaml", **fields}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))  # the grid's order names the runs
    return spec, path


@dataclass
class Outcome:
    """What a test reads back from a sweep: the printed lines, the rows of results.json and dmd.json."""

    lines: list[str]
    runs: list[dict]
    failures: list
    dynamics: dict | None

    @property
    def trained(self) -> int:
        """How many runs trained in this call, as the headline says."""
        return int(re.search(r"(\d+) trained now", self.lines[0]).group(1))


def run(config, path, out):
    report = run_experiment(path, out, device="cpu", progress=False)
    root = out / config["name"]
    dmd = root / "dmd.json"
    return Outcome(
        report.lines,
        json.loads((root / "results.json").read_text())["runs"],
        report.failures,
        json.loads(dmd.read_text()) if dmd.is_file() else None,
    )


GRID = {"task.loss_on": ["answer", "all"], "optim.weight_decay": [0, 1]}


@pytest.mark.slow  # about 5-15 s on 2 CPU cores, most of it importing TransformerLens when it runs first
def test_sweep_writes_every_output(tmp_path):
    config, path = make_sweep(tmp_path, grid=GRID)
    result = run(config, path, tmp_path / "out")
    root = tmp_path / "out" / "s"
    names = [
        "loss_on=answer_wd=0_seed0",
        "loss_on=answer_wd=1_seed0",
        "loss_on=all_wd=0_seed0",
        "loss_on=all_wd=1_seed0",
    ]
    assert [r["name"] for r in result.runs] == names
    assert all(r["status"] == "ok" and r["regime"] is not None for r in result.runs)
    for name in names:
        assert (root / name / SUMMARY_FILE).is_file()

    rows = list(csv.DictReader((root / "results.csv").open()))
    assert [r["name"] for r in rows] == names
    assert {"task.loss_on", "optim.weight_decay", "seed", "regime", "memorization_step", "generalization_step"} <= set(
        rows[0]
    )
    # Loss bounds only for all-position runs, with the loss beside them.
    assert rows[0]["loss_bound"] == "" and float(rows[2]["loss_bound"]) > float(rows[2]["loss_floor"]) > 0
    assert float(rows[2]["train_loss_vs_bound"]) == pytest.approx(
        float(rows[2]["final_train_loss"]) / float(rows[2]["loss_bound"])
    )

    results = json.loads((root / "results.json").read_text())
    assert results["fields"] == ["task.loss_on", "optim.weight_decay"] and len(results["runs"]) == 4
    regimes = json.loads((root / "regimes.json").read_text())
    table = regimes["table"]
    assert table["row_labels"] == ["loss_on=answer", "loss_on=all"] and table["column_labels"] == ["wd=0", "wd=1"]
    assert [[sum(cell.values()) for cell in row] for row in table["counts"]] == [[1, 1], [1, 1]]
    assert not (root / "failures.json").exists() and result.failures == []
    for figure in ("generalization_heatmap", "accuracy_curves", "loss_vs_bounds"):
        assert (root / "figures" / f"{figure}.html").is_file()

    lines = result.lines
    assert lines[0].startswith("sweep s: 4 runs (4 ok, 0 failed; 4 trained now, 0 reused)")
    assert any("wd=0" in line and "wd=1" in line for line in lines)
    assert any(line.strip().startswith("loss_on=all ") for line in lines)


def test_rerun_skips_finished_runs_and_resumes_partial_ones(tmp_path, monkeypatch):
    config, path = make_sweep(tmp_path, grid={"optim.weight_decay": [0, 1]})
    first = run(config, path, tmp_path / "out")
    root = tmp_path / "out" / "s"
    summaries = {r["name"]: (root / r["name"] / SUMMARY_FILE) for r in first.runs}
    mtimes = {name: p.stat().st_mtime_ns for name, p in summaries.items()}

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    with monkeypatch.context() as m:
        m.setattr(runs, "train_many", refuse)
        again = run(config, path, tmp_path / "out")
    assert again.trained == 0 and all(r["status"] == "ok" for r in again.runs)
    assert {name: p.stat().st_mtime_ns for name, p in summaries.items()} == mtimes
    assert again.runs == first.runs

    # A run without its summary (interrupted at the very end) is resumed, not started over.
    summaries["wd=1_seed0"].unlink()
    calls = []
    real = runs.train_many

    def spy(configs, dirs, **kwargs):
        calls.append(([d.name for d in dirs], kwargs["resume"]))
        return real(configs, dirs, **kwargs)

    monkeypatch.setattr(runs, "train_many", spy)
    resumed = run(config, path, tmp_path / "out")
    assert calls == [(["wd=1_seed0"], True)]
    assert resumed.trained == 1 and all(r["status"] == "ok" for r in resumed.runs)
    assert summaries["wd=0_seed0"].stat().st_mtime_ns == mtimes["wd=0_seed0"]


def test_one_failing_run_does_not_stop_the_others(tmp_path, monkeypatch):
    config, path = make_sweep(tmp_path, grid={"optim.weight_decay": [0, 1]}, seeds=[0, 1])
    real_many = runs.train_many

    def failing(configs, dirs, **kwargs):
        # The stack of wd=0 seeds fails; retried alone, only seed 1 does.
        if configs[0].optim.weight_decay == 0 and len(configs) > 1:
            raise RuntimeError("stack blew up")
        if configs[0].optim.weight_decay == 0 and configs[0].seed == 1:
            raise RuntimeError("boom\nsecond line")
        return real_many(configs, dirs, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(runs, "train_many", failing)
        result = run(config, path, tmp_path / "out")
    status = {r["name"]: (r["status"], r["error"]) for r in result.runs}
    assert status == {
        "wd=0_seed0": ("ok", None),
        "wd=0_seed1": ("failed", "RuntimeError: boom"),
        "wd=1_seed0": ("ok", None),
        "wd=1_seed1": ("ok", None),
    }
    root = tmp_path / "out" / "s"
    # The engine writes failures.json (and the command exits 1 naming the run); the row keeps the error.
    failures = json.loads((root / "failures.json").read_text())
    assert [(Path(f["run_dir"]).name, f["error"]) for f in failures] == [("wd=0_seed1", "RuntimeError: boom")]
    assert "Traceback" in failures[0]["traceback"] and [f.error for f in result.failures] == ["RuntimeError: boom"]
    rows = {r["name"]: r for r in csv.DictReader((root / "results.csv").open())}
    assert rows["wd=0_seed1"]["status"] == "failed" and rows["wd=0_seed1"]["error"] == "RuntimeError: boom"
    assert any("wd=0_seed1: RuntimeError: boom" in line for line in result.lines)
    regimes = json.loads((root / "regimes.json").read_text())
    assert regimes["table"]["counts"][0][0]["failed"] == 1

    # Rerun without the fault: only the failed run trains, and the failure is gone.
    again = run(config, path, tmp_path / "out")
    assert again.trained == 1 and all(r["status"] == "ok" for r in again.runs)
    assert json.loads((root / "failures.json").read_text()) == []


def test_a_single_failing_run_is_recorded_without_a_retry(tmp_path, monkeypatch):
    config, path = make_sweep(tmp_path, grid={"optim.weight_decay": [0, 1]})
    real_many = runs.train_many
    attempts = []

    def fail_wd0(configs, dirs, **kwargs):
        if configs[0].optim.weight_decay == 0:
            attempts.append(dirs[0].name)
            raise ValueError("bad")
        return real_many(configs, dirs, **kwargs)

    monkeypatch.setattr(runs, "train_many", fail_wd0)
    result = run(config, path, tmp_path / "out")
    assert attempts == ["wd=0_seed0"]
    assert [(r["name"], r["status"]) for r in result.runs] == [("wd=0_seed0", "failed"), ("wd=1_seed0", "ok")]


def test_weight_decay_pairs_share_their_initial_weights(tmp_path):
    config, path = make_sweep(tmp_path, grid={"optim.weight_decay": [0, 1]}, seeds=[0, 1])
    result = run(config, path, tmp_path / "out")
    runs = {r["name"]: Run.open(r["run_dir"]) for r in result.runs}
    for seed in (0, 1):
        a, b = runs[f"wd=0_seed{seed}"].load_state_dict(0), runs[f"wd=1_seed{seed}"].load_state_dict(0)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
        # Same start, different training: the final weights differ.
        fa, fb = runs[f"wd=0_seed{seed}"].load_state_dict(), runs[f"wd=1_seed{seed}"].load_state_dict()
        assert any(not torch.equal(fa[k], fb[k]) for k in fa)
    # Another seed is another init.
    s0, s1 = runs["wd=0_seed0"].load_state_dict(0), runs["wd=0_seed1"].load_state_dict(0)
    assert any(not torch.equal(s0[k], s1[k]) for k in s0 if s0[k].numel())


RECORDED = {
    "grid": {"optim.weight_decay": [0, 1]},
    "seeds": [0, 1],
    "record": ["fingerprint", "gradients"],
    "record_every": 1,
    "fingerprint": {"probe_size": 20, "probe_from": "test"},
    "dmd": {"method": "projected", "n_delays": 3, "rank": 3},
}


@pytest.mark.slow  # about 5 s: four 20-step runs with recorders
def test_recorders_on_every_run_and_dmd_spectra_compared_across_conditions(tmp_path):
    from grokscope.analysis.dmd import dmd_projected
    from grokscope.analysis.fingerprint import load_recording

    config, path = make_sweep(tmp_path, **RECORDED)
    result = run(config, path, tmp_path / "out")
    root = tmp_path / "out" / "s"
    fits = {}
    for r in result.runs:
        stored = Run.open(r["run_dir"])
        recording = load_recording(stored)
        assert recording.steps.tolist() == list(range(21)) and recording.spec.probe_from == "test"
        assert set(recording.probe_rows.tolist()) <= set(stored.split().test.tolist())
        assert (stored.root / "recordings" / "gradient_norms.jsonl").is_file()
        # The comparison's fit, by hand: projected DMD of the log-prob quantiles, time-mean centred.
        fits[r["name"]] = dmd_projected(recording.values["log_prob"].double().numpy(), n_delays=3, rank=3)

    dynamics = json.loads((root / "dmd.json").read_text())
    assert dynamics["skipped"] == [] and [e["name"] for e in dynamics["runs"]] == [r["name"] for r in result.runs]
    for entry in dynamics["runs"]:
        found = np.array(entry["eigenvalues"]["re"]) + 1j * np.array(entry["eigenvalues"]["im"])
        np.testing.assert_allclose(found, fits[entry["name"]].eigenvalues, atol=1e-10)
        assert entry["center"] == "time_mean"
    for entry in dynamics["by_condition"]:
        radii = [fits[f"{entry['condition']}_seed{s}"].spectral_radius for s in (0, 1)]
        assert entry["n"] == 2
        assert entry["spectral_radius"]["mean"] == pytest.approx(np.mean(radii), rel=1e-12)
        assert entry["spectral_radius"]["sd"] == pytest.approx(np.std(radii, ddof=1), rel=1e-12)
    assert [e["condition"] for e in dynamics["by_condition"]] == ["wd=0", "wd=1"]

    figure = json.loads((root / "figures" / "dmd_spectra.json").read_text())
    markers = [t for t in figure["data"] if t.get("mode") == "markers"]
    assert len(markers) == 4  # one trace per run, a colour per condition
    colours = {t["legendgroup"]: t["marker"]["color"] for t in markers}
    assert len(set(colours.values())) == 2 and all(t["marker"]["color"] == colours[t["legendgroup"]] for t in markers)
    lines = result.lines
    assert any(line.startswith("DMD of the recorded fingerprints (projected, log_prob") for line in lines)
    assert any(line.strip().startswith("wd=1: spectral radius") for line in lines)


def test_runs_finished_before_record_was_set_are_listed_as_skipped(tmp_path):
    config, path = make_sweep(tmp_path, grid={"optim.weight_decay": [0, 1]})
    run(config, path, tmp_path / "out")
    recorded, path = make_sweep(tmp_path, grid={"optim.weight_decay": [0, 1]}, record=["fingerprint"])
    again = run(recorded, path, tmp_path / "out")
    assert again.trained == 0
    skipped = again.dynamics["skipped"]
    assert [s["name"] for s in skipped] == ["wd=0_seed0", "wd=1_seed0"]
    assert all("finished before record: [fingerprint] was set" in s["reason"] for s in skipped)
    assert not (tmp_path / "out" / "s" / "figures" / "dmd_spectra.html").exists()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"dmd": {"rank": 3}}, "dmd: compares recorded fingerprints; needs record: [fingerprint]"),
        ({"record": ["gradients"], "fingerprint": {"probe_from": "test"}}, "fingerprint: probe settings need record"),
        ({"record": ["weights"]}, "record.0"),
        ({"record": ["fingerprint"], "record_every": 0}, "record_every"),
        ({"record": ["fingerprint"], "fingerprint": {"probe_from": "val"}}, "fingerprint.probe_from"),
    ],
)
def test_bad_record_settings_are_one_line(tmp_path, fields, message):
    from typer.testing import CliRunner

    from grokscope.cli import app

    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"kind": "sweep", "name": "s", "base": "base.yaml", **fields}))
    result = CliRunner().invoke(app, ["experiment", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
