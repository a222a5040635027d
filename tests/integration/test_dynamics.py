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


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory):
    """One tiny run with fingerprints recorded every 2 steps, shared by this module's tests (each analyze rewrites
    its own outputs)."""
    tmp_path = tmp_path_factory.mktemp("recorded")
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny_config(train={"steps": 200}).to_yaml())
    result = invoke("train", path, "--out", tmp_path, "--quiet", "--record", "fingerprint", "--record-every", "2")
    assert result.exit_code == 0, result.output
    return tmp_path / "tiny"


def test_dmd_of_recorded_fingerprints(recorded_run):
    result = invoke("analyze", recorded_run, "--dmd", "--quiet")
    assert result.exit_code == 0, result.output
    assert "dmd (rrr, center per_snapshot_mean): " in result.output and "spectral radius" in result.output
    written = json.loads((recorded_run / "analysis" / "dmd.json").read_text())
    assert written["snapshots"] == 101 and written["windows"] is not None
    eigenvalues = np.load(recorded_run / "analysis" / "eigenvalues.npy", allow_pickle=False)
    assert eigenvalues.dtype == np.complex128 and len(eigenvalues) == written["result"]["rank"]
    assert (recorded_run / "analysis" / "figures" / "dmd_spectrum.html").is_file()


def can_export_images() -> bool:
    from grokscope.viz.dmd import find_browser

    try:
        import kaleido  # noqa: F401
    except ImportError:
        return False
    return find_browser() is not None


def test_dmd_flags_choose_the_estimator_and_write_png_and_pdf(recorded_run):
    from grokscope.analysis.dmd import dmd_projected
    from grokscope.analysis.fingerprint import load_recording
    from grokscope.store import Run

    args = ["--dmd-method", "projected", "--dmd-delays", 8, "--dmd-rank", 4, "--dmd-observable", "margin"]
    result = invoke("analyze", recorded_run, "--dmd", *args, "--dmd-window", 30, "--quiet")
    assert result.exit_code == 0, result.output
    assert "dmd (projected, center time_mean): 4 modes" in result.output
    written = json.loads((recorded_run / "analysis" / "dmd.json").read_text())
    fit = written["result"]
    assert (fit["method"], fit["n_delays"], fit["rank"], fit["center"]) == ("projected", 8, 4, "time_mean")
    assert written["observable"] == "margin" and written["windows"]["window"] == 30
    assert written["windows"]["method"] == "projected"
    # The same fit by hand from the recording: the margin quantiles, time-mean centred, 8 delays, rank 4.
    recording = load_recording(Run.open(recorded_run))
    by_hand = dmd_projected(recording.values["margin"].double().numpy(), n_delays=8, rank=4, dt=2.0)
    eigenvalues = np.array(fit["eigenvalues"]["re"]) + 1j * np.array(fit["eigenvalues"]["im"])
    np.testing.assert_allclose(eigenvalues, by_hand.eigenvalues, atol=1e-12)
    # The probe the recording watched: saved rows, split into training and test rows of the run.
    probe = written["probe"]
    assert probe["rows_saved"] and probe["rows"] == recording.probe_rows.tolist()
    assert probe["in_train"] + probe["in_test"] == len(probe["rows"]) == 100
    assert 0 < probe["in_train"] < 100  # the default probe draws from every input, not from the training set
    figures = recorded_run / "analysis" / "figures"
    assert (figures / "dmd_spectrum.html").is_file()
    if can_export_images():
        assert (figures / "dmd_spectrum.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (figures / "dmd_spectrum.pdf").read_bytes()[:5] == b"%PDF-"
    else:
        assert "dmd_spectrum: no PNG/PDF written" in result.output


def test_without_a_browser_the_html_is_written_and_one_line_says_why(recorded_run, monkeypatch):
    import grokscope.viz.dmd as viz_dmd

    monkeypatch.setattr(viz_dmd, "find_browser", lambda: None)
    result = invoke("analyze", recorded_run, "--dmd", "--quiet")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "PNG/PDF" in line]
    assert len(lines) == 1 and "needs Chromium" in lines[0]
    assert (recorded_run / "analysis" / "figures" / "dmd_spectrum.html").is_file()
    assert not (recorded_run / "analysis" / "figures" / "dmd_spectrum.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dmd-rank", 3], "--dmd-rank: needs --dmd"),
        (["--dmd", "--dmd-method", "exact"], "--dmd-method exact: expected one of rrr, projected"),
        (["--dmd", "--dmd-center", "median"], "--dmd-center median: expected one of per_snapshot_mean"),
        (["--dmd", "--probe-seed", 3], "--dmd: probe_seed 3: the fingerprint recording was made with probe_seed 0"),
        (["--dmd", "--probe-from", "test"], "--dmd: probe_from test: the fingerprint recording was made with"),
        (["--dmd", "--dmd-window", 5], "--dmd-window 5: must be at least n_delays + rank = 42"),
        (["--dmd", "--dmd-window", 500], "--dmd-window 500: the recording has only 101 fingerprints"),
        (["--fourier", "--probe-from", "test"], "--probe-from: applies to --fingerprint and --dmd"),
        (["--fingerprint", "--probe-from", "val"], "--probe-from val: expected one of all, train, test"),
    ],
)
def test_dmd_and_probe_flag_mistakes_are_one_line(recorded_run, args, message):
    result = invoke("analyze", recorded_run, *args, "--quiet")
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_dmd_settings_the_recording_cannot_fit_name_the_flags(recorded_run):
    """DMD's own checks speak of n_delays, rank and T; the user changes --dmd-delays and --dmd-rank."""
    before = sorted(p.relative_to(recorded_run) for p in recorded_run.rglob("*"))
    for args, fragments in (
        (["--dmd-delays", 100], ["--dmd-delays 100 + --dmd-rank 10", "has 101"]),
        (["--dmd-delays", 1, "--dmd-rank", 60], ["--dmd-rank 60", "--dmd-delays"]),
    ):
        result = invoke("analyze", recorded_run, "--dmd", *args, "--quiet")
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: --dmd-"), result.output
        assert "snapshots" not in lines[0] and "n_delays=" not in lines[0], result.output
        for fragment in fragments:
            assert fragment in lines[0], result.output
    assert sorted(p.relative_to(recorded_run) for p in recorded_run.rglob("*")) == before


def test_probe_flags_choose_the_checkpoint_fingerprint_probe(recorded_run, tmp_path):
    from grokscope.store import Run

    args = ["--fingerprint", "--probe-from", "test", "--probe-size", 20, "--probe-seed", 5, "--token-index", -1]
    result = invoke("analyze", recorded_run, *args, "--every", 100, "--out", tmp_path, "--quiet")
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "fingerprint.json").read_text())
    test_rows = set(Run.open(recorded_run).split().test.tolist())
    assert rows and all(len(r["probe_rows"]) == 20 and set(r["probe_rows"]) <= test_rows for r in rows)


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


@pytest.mark.slow  # about 8 s: a source and a target run with recorders
def test_transfer_experiment_attaches_recorders_to_every_run(tmp_path):
    from grokscope.analysis.fingerprint import load_recording
    from grokscope.store import Run

    (tmp_path / "source.yaml").write_text(tiny_config(train={"steps": 30}).to_yaml())
    spec = {
        "kind": "transfer",
        "name": "t",
        "source": "source.yaml",
        "target_set": ["task.operation=sub", "train.steps=20"],
        "seeds": [0],
        "conditions": ["random"],
        "record": ["fingerprint", "gradients"],
        "record_every": 5,
        "fingerprint": {"probe_size": 10, "probe_from": "train"},
    }
    config = tmp_path / "transfer.yaml"
    config.write_text(yaml.safe_dump(spec))
    result = invoke("experiment", config, "--out", tmp_path / "out", "--quiet", "--device", "cpu")
    assert result.exit_code == 0, result.output
    for run_dir, steps in (
        (tmp_path / "out" / "t" / "source" / "seed0", 30),
        (tmp_path / "out" / "t" / "random" / "seed0", 20),
    ):
        run = Run.open(run_dir)
        recording = load_recording(run)
        assert recording.steps.tolist() == list(range(0, steps + 1, 5)) and recording.every == 5
        assert len(recording.probe_rows) == 10 and set(recording.probe_rows.tolist()) <= set(run.split().train.tolist())
        assert (run_dir / "recordings" / "gradient_norms.jsonl").is_file()


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
