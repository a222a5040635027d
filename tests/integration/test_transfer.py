"""The transfer experiment end to end on a tiny model: every condition trains, every output is written."""

import csv
import json
from pathlib import Path

import pytest
import yaml

from conftest import tiny_config
from grokscope.experiments import run
from grokscope.experiments import transfer as transfer_module
from grokscope.store import SUMMARY_FILE
from grokscope.viz.report import build_report


@pytest.fixture
def experiment(tmp_path):
    source = tiny_config(train={"steps": 150, "eval_every": 10, "checkpoints": {"every": 10}})
    (tmp_path / "source.yaml").write_text(source.to_yaml())
    spec = {
        "kind": "transfer",
        "name": "tiny_transfer",
        "source": "source.yaml",
        "target_set": ["task.operation=sub", "train.steps=60"],
        "seeds": [0, 1],
        "criteria": {"grokked_test_acc": 0.3, "memorized_train_acc": 0.9, "memorized_test_acc": 0.25},
        "budgets": {"random": 80},
        "freeze": ["embed"],
        "early_epoch": 20,
        "relearn_steps": 20,
    }
    path = tmp_path / "transfer.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path, tmp_path / "out"


def test_transfer_experiment_writes_every_output_and_reuses_runs(experiment, monkeypatch):
    path, out = experiment
    lines = run(path, out, device="cpu", progress=False)
    root = out / "tiny_transfer"
    assert lines[0].startswith("condition")
    assert {p.name for p in (root / "figures").glob("*.html")} == {
        "transfer_accuracy.html",
        "transfer_epochs_to_threshold.html",
        "transfer_retention.html",
        "transfer_source_generalization.html",
    }
    rows = list(csv.DictReader((root / "results.csv").open()))
    assert len(rows) == 6 and {r["condition"] for r in rows} == {"grokked", "memorized", "random"}
    results = json.loads((root / "results.json").read_text())
    trained = [t for t in results["targets"] if t["run_dir"]]
    assert trained, "no condition was trained"
    for target in trained:
        assert target["budget"] == (80 if target["condition"] == "random" else 60)
        assert len(target["source_retention"]) == len(target["steps"]) > 1
        assert target["relearn_epochs_to"] is not None
        config = yaml.safe_load((Path(target["run_dir"]) / "config.yaml").read_text())
        assert config["task"]["operation"] == "sub" and config["optim"]["freeze"] == ["embed"]
        if target["condition"] == "random":
            assert config["model"]["init_from"] is None
        else:
            assert config["model"]["init_from"].endswith(f"step_{target['source_step']:07d}.safetensors")
            # The target starts from the source checkpoint: its retention at step 0 is the source's test accuracy.
            chosen = results["sources"][str(target["seed"])][target["condition"]]
            assert target["source_retention"][0] == pytest.approx(chosen["test_acc"], abs=1e-9)
    statistics = json.loads((root / "stats.json").read_text())
    assert set(statistics["describe"]["0.999"]) <= {"grokked", "memorized", "random"}
    for described in statistics["describe"]["0.999"].values():
        assert described["n"] == described["n_reached"] + described["n_censored"]

    # The experiment's report page gathers its tables and every figure.
    page = build_report(root)
    assert "transfer experiment tiny_transfer" in page and "Results" in page and page.count("class='figure'") >= 4

    # A rerun trains nothing: every run is finished.
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("grokscope.experiments.runs.train_many", no_training)
    before = {p: p.stat().st_mtime_ns for p in root.rglob(SUMMARY_FILE)}
    assert run(path, out, device="cpu", progress=False) == lines
    assert before == {p: p.stat().st_mtime_ns for p in root.rglob(SUMMARY_FILE)}


def test_bad_transfer_config_is_one_line(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("kind: transfer\nsource: x.yaml\ntarget_set: []\n")
    with pytest.raises(Exception, match="target_set"):
        run(path, tmp_path, device="cpu", progress=False)
    assert transfer_module.CONFIG is transfer_module.TransferConfig
