"""Fingerprints recorded during training, DMD of them, and perturbation experiments, end to end on tiny runs."""

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from conftest import tiny_config
from grokscope.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def recorded_run(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny_config(train={"steps": 200}).to_yaml())
    result = invoke("train", path, "--out", tmp_path, "--quiet", "--record", "fingerprint", "--record-every", "2")
    assert result.exit_code == 0, result.output
    return tmp_path / "tiny"


def test_dmd_of_recorded_fingerprints(recorded_run):
    result = invoke("analyze", recorded_run, "--dmd", "--quiet")
    assert result.exit_code == 0, result.output
    assert "dmd: " in result.output and "spectral radius" in result.output
    written = json.loads((recorded_run / "analysis" / "dmd.json").read_text())
    assert written["snapshots"] == 101 and written["windows"] is not None
    eigenvalues = np.load(recorded_run / "analysis" / "eigenvalues.npy", allow_pickle=False)
    assert eigenvalues.dtype == np.complex128 and len(eigenvalues) == written["result"]["rank"]
    assert (recorded_run / "analysis" / "figures" / "dmd_spectrum.html").is_file()


def test_dmd_bad_input_is_one_line(tmp_path, recorded_run):
    no_recording = tmp_path / "plain.yaml"
    no_recording.write_text(tiny_config(name="plain").to_yaml())
    assert invoke("train", no_recording, "--out", tmp_path, "--quiet").exit_code == 0
    result = invoke("analyze", tmp_path / "plain", "--dmd", "--quiet")
    assert result.exit_code == 2 and "no fingerprint recording" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_perturbation_experiment(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(tiny_config(train={"steps": 40}).to_yaml())
    config = tmp_path / "perturb.yaml"
    config.write_text(
        yaml.safe_dump(
            {"kind": "perturbation", "name": "p", "base": "base.yaml", "epsilons": [1e-3, 1e-1], "seeds": [0]}
        )
    )
    result = invoke("experiment", config, "--out", tmp_path / "out", "--quiet", "--device", "cpu")
    assert result.exit_code == 0, result.output
    pairs = json.loads((tmp_path / "out" / "p" / "perturbation.json").read_text())["pairs"]
    small, large = pairs
    # At step 0 the relative parameter distance is the perturbation itself.
    assert small["parameter_distance"][0] == pytest.approx(1e-3, rel=0.2)
    assert large["parameter_distance"][0] == pytest.approx(1e-1, rel=0.2)
    assert small["fingerprint_distance"][0] < large["fingerprint_distance"][0]
    assert (tmp_path / "out" / "p" / "figures" / "perturbation_divergence.html").is_file()
    # A rerun reuses the finished runs.
    again = invoke("experiment", config, "--out", tmp_path / "out", "--quiet", "--device", "cpu")
    assert again.exit_code == 0 and again.output == result.output


def test_experiment_bad_config_is_one_line(tmp_path):
    config = tmp_path / "x.yaml"
    config.write_text("kind: telepathy\n")
    result = invoke("experiment", config)
    assert result.exit_code == 2 and "unknown experiment kind 'telepathy'" in result.output
    config.write_text("kind: perturbation\nbase: nowhere.yaml\n")
    result = invoke("experiment", config)
    assert result.exit_code == 2 and "no such config file" in result.output


@pytest.mark.slow
def test_llc_per_checkpoint_from_the_cli(grokked_run, tmp_path):
    last = grokked_run.run.steps()[-1]
    result = invoke("analyze", grokked_run.run.root, "--llc", "--steps", last, "--out", tmp_path, "--quiet")
    assert result.exit_code == 0, result.output
    row = json.loads((tmp_path / "llc.json").read_text())[-1]
    assert row["step"] == last and np.isfinite(row["llc_mean"]) and row["llc_mean"] > 0
    assert len(row["llc_per_chain"]) == 4
