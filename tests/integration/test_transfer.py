"""The transfer experiment end to end on a tiny model: every condition trains, every output is written."""

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from scipy import stats as scipy_stats
from typer.testing import CliRunner

from conftest import tiny_config
from grokscope.analysis.common import answer_logits
from grokscope.cli import app
from grokscope.errors import UserError
from grokscope.experiments import run
from grokscope.experiments import runs as runs_module
from grokscope.experiments import transfer as transfer_module
from grokscope.experiments.transfer_core import pipeline
from grokscope.store import SUMMARY_FILE, Run
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
    report = run(path, out, device="cpu", progress=False)
    lines = report.lines
    root = out / "tiny_transfer"
    assert report.failures == [] and not (root / "failures.json").exists()
    assert lines[0].startswith("condition")
    assert {p.name for p in (root / "figures").glob("*.html")} == {
        "transfer_accuracy.html",
        "transfer_steps_to_threshold.html",
        "transfer_retention.html",
        "transfer_source_generalization.html",
        "transfer_final_accuracy.html",
        "transfer_relearning.html",  # no speed-up figure: no run reached a threshold within these tiny budgets
    }
    rows = list(csv.DictReader((root / "results.csv").open()))
    assert len(rows) == 6 and {r["condition"] for r in rows} == {"grokked", "memorized", "random"}
    results = json.loads((root / "results.json").read_text())
    trained = [t for t in results["targets"] if t["run_dir"]]
    assert trained, "no condition was trained"
    for target in trained:
        assert target["budget"] == (80 if target["condition"] == "random" else 60)
        assert len(target["source_retention"]) == len(target["steps"]) > 1
        assert target["relearn_steps_to"] is not None
        config = yaml.safe_load((Path(target["run_dir"]) / "config.yaml").read_text())
        assert config["task"]["operation"] == "sub" and config["optim"]["freeze"] == ["embed"]
        if target["condition"] == "random":
            assert config["model"]["init_from"] is None
        else:
            assert config["model"]["init_from"].endswith(f"step_{target['source_step']:07d}.safetensors")
            # The target starts from the source checkpoint: its retention at step 0 is the source's test accuracy.
            chosen = results["sources"][str(target["seed"])][target["condition"]]
            assert target["source_retention"][0] == pytest.approx(chosen["test_acc"], abs=1e-9)
    # memorized is chosen by the source's memorization phase (the default), never by the accuracy ceiling.
    for seed, choices in results["sources"].items():
        reason = choices["memorized"]["reason"]
        assert "memorization" in reason and "ceiling" not in reason, reason
        assert (root / "source" / f"seed{seed}" / "analysis").is_dir()  # the progress measures the phase came from
    statistics = json.loads((root / "stats.json").read_text())
    assert statistics["unit"] == "steps" and statistics["speed_on"] == "test_acc"
    assert set(statistics["describe"]["0.999"]) <= {"grokked", "memorized", "random"}
    for described in statistics["describe"]["0.999"].values():
        assert described["n"] == described["n_reached"] + described["n_censored"]
    trained_conditions = {t["condition"] for t in trained}
    assert set(statistics["relearn"]["describe"]["0.99"]) == trained_conditions | {"from scratch"}
    assert {r["condition"] for r in statistics["retention_vs_chance"]} == trained_conditions
    assert set(statistics["specialization"]) == set(statistics["attention"]) == trained_conditions
    assert statistics["settings"]["outlier_z"] == 2.0 and statistics["settings"]["chance"] == pytest.approx(1 / 13)

    # The experiment's report page gathers its tables and every figure.
    page = build_report(root)
    assert "transfer experiment tiny_transfer" in page and "Results" in page and page.count("class='figure'") >= 4

    # A rerun trains nothing: every run is finished.
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("grokscope.experiments.runs.train_many", no_training)
    before = {p: p.stat().st_mtime_ns for p in root.rglob(SUMMARY_FILE)}
    assert run(path, out, device="cpu", progress=False).lines == lines
    assert before == {p: p.stat().st_mtime_ns for p in root.rglob(SUMMARY_FILE)}


def test_bad_transfer_config_is_one_line(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("kind: transfer\nsource: x.yaml\ntarget_set: []\n")
    with pytest.raises(Exception, match="target_set"):
        run(path, tmp_path, device="cpu", progress=False)
    assert transfer_module.SPEC.config is transfer_module.TransferConfig


@pytest.mark.slow
def test_study_plan_in_one_experiment_with_every_transfer_output(tmp_path):
    """The first study's plan at tiny scale: transfer and a short baseline on 3 seeds, a long baseline on 2, in one
    experiment; every new output checked against numbers recomputed here from the runs."""
    source = tiny_config(
        task={"train_fraction": 0.9}, train={"steps": 250, "eval_every": 10, "checkpoints": {"every": 10}}
    )
    (tmp_path / "source.yaml").write_text(source.to_yaml())
    spec = {
        "kind": "transfer",
        "name": "plan",
        "source": "source.yaml",
        # The same task again (a tiny model learns it within the budgets), so that thresholds are reached.
        "target_set": ["train.eval_every=10"],
        "seeds": [0, 1, 2],
        "conditions": [
            {"name": "grokked", "budget": 200},
            {"name": "random", "budget": 200},
            {"name": "random_long", "init": "random", "budget": 400, "seeds": [0, 1]},
        ],
        "criteria": {"grokked_test_acc": 0.9},
        "baseline": "random_long",
        "outlier_z": 1.0,
        "relearn_steps": 20,
        "learning_pattern": {"early": 5, "late": 20},
    }
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(spec))
    lines = run(path, tmp_path / "out", device="cpu", progress=False).lines
    root = tmp_path / "out" / "plan"

    rows = list(csv.DictReader((root / "results.csv").open()))
    by_condition = {c: [r for r in rows if r["condition"] == c] for c in ("grokked", "random", "random_long")}
    assert [r["seed"] for r in by_condition["random_long"]] == ["0", "1"] and not (root / "random_long/seed2").exists()
    for condition, budget in (("grokked", 200), ("random", 200), ("random_long", 400)):
        for row in by_condition[condition]:
            assert int(row["budget_steps"]) == budget
            if row["run_dir"]:
                assert yaml.safe_load((Path(row["run_dir"]) / "config.yaml").read_text())["train"]["steps"] == budget
    # The learning pattern by hand from each run's metrics: gained over epochs 0-5 and over the last 20 epochs.
    for row in rows:
        if row["run_dir"]:
            metrics = Run.open(row["run_dir"]).metrics()
            at = lambda epoch, m=metrics: next((r for r in reversed(m) if r["epoch"] <= epoch), m[0])  # noqa: E731
            early = at(5)["test_acc"] - metrics[0]["test_acc"]
            late = metrics[-1]["test_acc"] - at(metrics[-1]["epoch"] - 20)["test_acc"]
            assert float(row["gain_early"]) == pytest.approx(early) and float(row["gain_late"]) == pytest.approx(late)
            # Full-batch training: the labelled epochs beside the steps are the same numbers.
            assert row["epochs_to_0.9"] == row["steps_to_0.9"]
    statistics = json.loads((root / "stats.json").read_text())
    assert statistics["settings"]["seeds"] == {"grokked": [0, 1, 2], "random": [0, 1, 2], "random_long": [0, 1]}

    # Agreement on matched seeds: the final models' answers on the test split, compared here.
    pair = next(a for a in statistics["agreement"] if (a["a"], a["b"]) == ("random", "random_long"))
    assert pair["matched_seeds"] == [0, 1]
    for seed in (0, 1):
        runs = [Run.open(root / c / f"seed{seed}") for c in ("random", "random_long")]
        test = runs[0].split().test
        tokens = runs[0].task.dataset().tokens[test]
        answers = [r.load_model()(tokens)[:, runs[0].task.answer_position].argmax(-1) for r in runs]
        assert pair["per_seed"][str(seed)] == pytest.approx(float((answers[0] == answers[1]).double().mean()))

    # Speed-up at each threshold: the long baseline's mean over reached runs / the condition's.
    def reached(condition: str, threshold: str) -> list[float]:
        return [float(r[f"steps_to_{threshold}"]) for r in by_condition[condition] if r[f"steps_to_{threshold}"]]

    for threshold, speedups in statistics["speedup"].items():
        for s in speedups:
            ref, own = reached("random_long", threshold), reached(s["name"], threshold)
            expected = sum(ref) / len(ref) / (sum(own) / len(own)) if ref and own and sum(own) else None
            assert s["reference"] == "random_long" and s["ratio"] == pytest.approx(expected)

    # Retention against chance 1/13: the one-sided t-test over seeds, by hand.
    for row in statistics["retention_vs_chance"]:
        kept = [float(r["final_source_retention"]) for r in by_condition[row["condition"]] if r["run_dir"]]
        mean, n = sum(kept) / len(kept), len(kept)
        sd = (sum((k - mean) ** 2 for k in kept) / (n - 1)) ** 0.5 if n > 1 else 0
        if sd > 0:
            t = (mean - 1 / 13) / (sd / n**0.5)
            assert row["t"] == pytest.approx(t) and row["p"] == pytest.approx(scipy_stats.t.sf(t, n - 1))
    assert statistics["relearn"]["budget"] == 20 and "from scratch" in statistics["relearn"]["describe"]["0.99"]
    assert len(statistics["normality"]) == 7 * len({r["condition"] for r in rows if r["run_dir"]})
    assert {r["z"] for r in statistics["outlier_rule"]} == {1.0}
    trained = {r["condition"] for r in rows if r["run_dir"]}
    for section in ("final", "learning_pattern", "specialization", "attention", "gradients"):
        assert set(statistics[section]) == trained, section

    figures = {p.stem for p in (root / "figures").glob("*.json")}
    assert {"transfer_final_accuracy", "transfer_relearning"} <= figures
    # The grokked source starts above 90%: no finite speed-up there, and the note says why; the short random
    # baseline reaches 90% on some seeds, so there is a speed-up to draw.
    at_90 = {s["name"]: s for s in statistics["speedup"]["0.9"]}
    assert at_90["grokked"]["ratio"] is None and "from the start" in at_90["grokked"]["note"]
    assert at_90["random"]["ratio"] is not None and "transfer_speedup" in figures
    page = build_report(root)
    for heading in ("retention vs chance", "agreement", "specialization (mean ± sd over seeds)", "relearn: "):
        assert heading in page
    assert any(line.startswith("speed-up to 99.9%") for line in lines)
    assert any(line.startswith("agreement random vs random_long") for line in lines)


def test_replay_conditions_train_both_tasks_and_measure_retention_through_the_source_token(tmp_path):
    source = tiny_config(train={"steps": 120, "eval_every": 10, "checkpoints": {"every": 10}})
    (tmp_path / "source.yaml").write_text(source.to_yaml())
    spec = {
        "kind": "transfer",
        "name": "replayed",
        "source": "source.yaml",
        "target_set": ["task.operation=sub", "train.steps=40"],
        "seeds": [0],
        "conditions": ["random"],
        "partial": [{"name": "at50", "step": 50}],  # a checkpoint every source has
        "replay": {"fraction": 0.2},
    }
    path = tmp_path / "transfer.yaml"
    path.write_text(yaml.safe_dump(spec))
    run(path, tmp_path / "out", device="cpu", progress=False)
    root = tmp_path / "out" / "replayed"
    results = json.loads((root / "results.json").read_text())
    assert results["conditions"] == ["at50", "at50_replay", "random"]
    twin = next(t for t in results["targets"] if t["condition"] == "at50_replay")
    plain = next(t for t in results["targets"] if t["condition"] == "at50")
    replayed = Run.open(twin["run_dir"])
    assert replayed.config.task.operation == ["add", "sub"] and replayed.config.task.replay == 0.2
    assert Run.open(plain["run_dir"]).config.task.operation == "sub"
    # Retention by hand: the final replay model asked (a + b) with the source's "=" token, on the source's test pairs.
    src = Run.open(root / "source" / "seed0")
    task = replayed.full_task.view_of("add")
    data = task.dataset()
    with torch.no_grad():
        guess = answer_logits(replayed.load_model(), task, data).argmax(-1)
    test = src.split().test
    by_hand = float((guess[test] == (data.pairs[test, 0] + data.pairs[test, 1]) % 13).double().mean())
    assert twin["source_retention"][-1] == pytest.approx(by_hand, abs=1e-12)
    # The target's own measures read the subtraction examples only.
    sub = replayed.for_operation("sub")
    assert twin["final_test_acc"] == pytest.approx(sub.metrics()[-1]["test_acc"], abs=1e-12)
    stats_json = json.loads((root / "stats.json").read_text())
    assert "at50_replay" in stats_json["final"]


def test_replay_needs_tasks_that_differ_only_in_the_operation(tmp_path):
    (tmp_path / "source.yaml").write_text(tiny_config().to_yaml())
    spec = {
        "kind": "transfer",
        "source": "source.yaml",
        "target_set": ["task.operation=sub", "task.modulus=11"],
        "replay": {"fraction": 0.1},
    }
    path = tmp_path / "transfer.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(UserError, match=r"replay: task\.modulus is 11 in the target but 13"):
        run(path, tmp_path / "out", device="cpu", progress=False)
    assert not (tmp_path / "out").exists()


def two_seed_transfer(tmp_path, name):
    """A tiny transfer (seeds 0 and 1: a random-init condition and a partial one from step 40) written to disk."""
    source = tiny_config(train={"steps": 60, "eval_every": 10, "checkpoints": {"every": 10}})
    (tmp_path / "source.yaml").write_text(source.to_yaml())
    spec = {
        "kind": "transfer",
        "name": name,
        "source": "source.yaml",
        "target_set": ["task.operation=sub", "train.steps=30"],
        "seeds": [0, 1],
        "conditions": ["random"],
        "partial": [{"name": "at40", "step": 40}],
    }
    path = tmp_path / "transfer.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_failed_target_run_is_reported_in_its_row_and_the_command_exits_1_naming_it(tmp_path, monkeypatch):
    path = two_seed_transfer(tmp_path, "broken")
    out = tmp_path / "out"
    root = out / "broken"
    # Seed 1's target run of at40 starts from a checkpoint the engine cannot load.
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    real = pipeline.with_init

    def with_broken_init(config, seed, init_from):
        if init_from is not None and config.name.endswith("_target") and seed == 1:
            init_from = str(broken)
        return real(config, seed, init_from)

    with monkeypatch.context() as m:
        m.setattr(pipeline, "with_init", with_broken_init)
        result = CliRunner().invoke(app, ["experiment", str(path), "--out", str(out), "--quiet", "--device", "cpu"])
    failed_dir = root / "at40" / "seed1"
    assert result.exit_code == 1, result.output
    assert result.stdout.splitlines()[0].startswith("condition")  # the experiment still summarized
    errors = result.stderr.splitlines()
    assert errors[0].startswith(f"error: run failed: {failed_dir}: ") and errors[-1].startswith(
        "error: 1 run(s) failed"
    )
    failures = json.loads((root / "failures.json").read_text())
    assert [f["run_dir"] for f in failures] == [str(failed_dir)] and "Traceback" in failures[0]["traceback"]
    # The failed run is a row with no run directory and the failure as its reason; the others are measured.
    results = json.loads((root / "results.json").read_text())
    rows = {(t["condition"], t["seed"]): t for t in results["targets"]}
    assert rows[("at40", 1)]["run_dir"] is None and rows[("at40", 1)]["source_step"] == 40
    assert rows[("at40", 1)]["source_reason"] == f"failed: {failures[0]['error']}"
    assert all(t["run_dir"] for key, t in rows.items() if key != ("at40", 1))
    table = {(r["condition"], r["seed"]): r for r in csv.DictReader((root / "results.csv").open())}
    assert table[("at40", "1")]["run_dir"] == "" and table[("at40", "1")]["note"].startswith("failed: ")
    statistics = json.loads((root / "stats.json").read_text())
    assert statistics["describe"]["0.999"]["at40"]["n"] == 1 and statistics["describe"]["0.999"]["random"]["n"] == 2

    # Run again without the fault: only the failed run trains, and the failures are gone.
    before = {p: p.stat().st_mtime_ns for p in root.rglob(SUMMARY_FILE)}
    again = run(path, out, device="cpu", progress=False)
    assert before == {p: p.stat().st_mtime_ns for p in root.rglob(SUMMARY_FILE) if p in before}
    assert again.failures == [] and json.loads((root / "failures.json").read_text()) == []
    assert (failed_dir / SUMMARY_FILE).is_file()
    assert all(t["run_dir"] for t in json.loads((root / "results.json").read_text())["targets"])


def test_a_failed_source_run_leaves_its_seed_untrained_and_reported_and_the_rest_summarized(tmp_path, monkeypatch):
    path = two_seed_transfer(tmp_path, "nosource")
    real = runs_module.train_many

    def failing(configs, dirs, **kwargs):
        if any(str(d).endswith("source/seed1") for d in dirs):
            raise RuntimeError("source blew up")
        return real(configs, dirs, **kwargs)

    monkeypatch.setattr(runs_module, "train_many", failing)
    report = run(path, tmp_path / "out", device="cpu", progress=False)
    root = tmp_path / "out" / "nosource"
    assert [f.run_dir for f in report.failures] == [str(root / "source" / "seed1")]
    results = json.loads((root / "results.json").read_text())
    rows = {(t["condition"], t["seed"]): t for t in results["targets"]}
    for condition in ("at40", "random"):  # random init too: its retention is scored on that seed's source split
        assert rows[(condition, 1)]["run_dir"] is None
        assert rows[(condition, 1)]["source_reason"] == "source run failed: RuntimeError: source blew up"
        assert rows[(condition, 0)]["run_dir"] and rows[(condition, 0)]["steps_to"]
    assert not (root / "random" / "seed1").exists()
    statistics = json.loads((root / "stats.json").read_text())
    assert statistics["describe"]["0.999"]["random"]["n"] == 1
