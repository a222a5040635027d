"""Curriculum and sequential finetuning chains end to end on tiny models."""

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from conftest import tiny_config
from grokscope.errors import UserError
from grokscope.experiments import run
from grokscope.experiments.finetune import accuracy_on
from grokscope.store import Run


def write(tmp_path, spec: dict, **base_sections) -> object:
    (tmp_path / "base.yaml").write_text(tiny_config(**base_sections).to_yaml())
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump({"base": "base.yaml", **spec}))
    return path


def test_curriculum_chain_starts_each_stage_from_the_last(tmp_path):
    spec = {"kind": "curriculum", "name": "cur", "stages": [6, 10, 13], "stage_steps": [20, 20, 30], "seeds": [0, 1]}
    path = write(tmp_path, spec, train={"checkpoints": {"every": 10}})
    lines = run(path, tmp_path / "out", device="cpu", progress=False).lines
    root = tmp_path / "out" / "cur"
    results = json.loads((root / "results.json").read_text())["stages"]
    assert [r["stage"] for r in results if r["seed"] == 0] == ["range 6", "range 10", "range 13", "direct"]
    assert len(lines) == 1 + len(results) and (root / "figures" / "stages.html").is_file()
    for seed in (0, 1):
        stages = [Run.open(root / f"seed{seed}" / f"range{r}") for r in (6, 10, 13)]
        assert stages[0].config.task.input_range == 6 and stages[0].config.model.init_from is None
        for before, after in itertools.pairwise(stages):
            start, end = after.load_state_dict(0), before.load_state_dict()
            assert all(torch.equal(start[k], end[k]) for k in end)  # same vocabulary: an exact handover
        direct = Run.open(root / f"seed{seed}" / "direct")
        assert direct.config.train.steps == 70 and direct.config.task.input_range is None
        # Nested: each stage trains on every pair an earlier stage trained on, and tests on none of them.
        trained: set = set()
        for stage in [*stages, direct]:
            pairs, split = stage.task.pairs(), stage.split()
            train = {tuple(pairs[i].tolist()) for i in split.train.tolist()}
            test = {tuple(pairs[i].tolist()) for i in split.test.tolist()}
            assert trained <= train and not (test & trained)
            trained = train
    first = next(r for r in results if r["stage"] == "range 6")
    assert first["train_pairs"] == 18 and 0 <= first["unseen_acc"] <= 1  # half of 6 x 6 pairs


def test_finetune_chain_moves_weights_across_moduli_and_measures_retention(tmp_path):
    spec = {"kind": "finetune", "name": "ft", "moduli": [7, 11, 13], "stage_steps": 25, "seeds": [0]}
    path = write(tmp_path, spec, train={"checkpoints": {"every": 25}})
    run(path, tmp_path / "out", device="cpu", progress=False)
    root = tmp_path / "out" / "ft"
    results = json.loads((root / "results.json").read_text())["stages"]
    assert [r["stage"] for r in results] == ["mod 7", "mod 11", "mod 13", "direct"]
    assert [list(r["retention"]) for r in results] == [[], ["mod 7"], ["mod 7", "mod 11"], []]
    mod7, mod11 = Run.open(root / "seed0" / "mod7"), Run.open(root / "seed0" / "mod11")
    start, end = mod11.load_state_dict(0), mod7.load_state_dict()
    assert torch.equal(start["embed.W_E"][:7], end["embed.W_E"][:7])
    assert torch.equal(start["embed.W_E"][11], end["embed.W_E"][7])  # "=" moves with the vocabulary
    # Retention reads a model through the transplant rule: on its own run it is the run's final test accuracy.
    assert accuracy_on(mod7, mod7) == pytest.approx(results[0]["test_acc"], abs=1e-9)
    assert 0 <= results[1]["retention"]["mod 7"] <= 1


def test_stage_configs_are_checked(tmp_path):
    path = write(tmp_path, {"kind": "finetune", "moduli": [11, 7]})
    with pytest.raises(UserError, match="moduli: must increase"):
        run(path, tmp_path / "out", device="cpu", progress=False)
    path = write(tmp_path, {"kind": "curriculum", "stages": [8, 20]})
    with pytest.raises(UserError, match="exceeds the modulus 13"):
        run(path, tmp_path / "out", device="cpu", progress=False)


# The local learning coefficient along the chain ---------------------------------------------------------------------
# Short full-batch chains: enough for a finite, positive estimate at a trained checkpoint in a fraction of a second.
CHEAP_LLC = {"lr": 1e-3, "num_chains": 2, "num_draws": 20, "num_burnin": 20, "batch_size": None}


def _loss_by_hand(run: Run) -> float:
    """Mean cross-entropy of the run's final model on its own training pairs, at the answer position, in float64."""
    task, split = run.task, run.split()
    data = task.dataset().subset(split.train)
    with torch.no_grad():
        logits = run.load_model()(data.tokens)[:, task.answer_position].double()
    return torch.nn.functional.cross_entropy(logits, data.answers).item()


@pytest.mark.slow
def test_curriculum_llc_per_stage_and_seed_on_each_stages_own_data_cached_on_rerun(tmp_path, monkeypatch):
    spec = {
        "kind": "curriculum",
        "name": "cur",
        "stages": [6, 10, 13],
        "stage_steps": 30,
        "seeds": [0, 1],
        "llc": CHEAP_LLC,
    }
    path = write(tmp_path, spec, train={"checkpoints": {"every": 10}})
    lines = run(path, tmp_path / "out", device="cpu", progress=False).lines
    root = tmp_path / "out" / "cur"
    data = json.loads((root / "results.json").read_text())
    rows = data["stages"]
    labels = ["range 6", "range 10", "range 13", "direct"]
    assert [(r["seed"], r["stage"]) for r in rows] == [(s, label) for s in (0, 1) for label in labels]
    for r in rows:
        stage_run = Run.open(r["run_dir"])
        estimate = r["llc"]
        # The final checkpoint of a trained run sits near a minimum of its own loss: a finite, positive LLC.
        assert estimate["step"] == stage_run.steps()[-1] and math.isfinite(estimate["llc_mean"])
        assert estimate["llc_mean"] > 0 and estimate["llc_std"] >= 0
        # Estimated on the stage's own training pairs and loss: n_beta = n / ln n for its n training pairs, and
        # L(w*) is the cross-entropy of the stage's model on them.
        cached = {row["step"]: row for row in json.loads((stage_run.analysis_dir / "llc.json").read_text())}
        row = cached[estimate["step"]]
        n = len(stage_run.split().train)
        assert row["llc_mean"] == estimate["llc_mean"] and row["n_beta"] == pytest.approx(n / math.log(n))
        assert row["init_loss"] == pytest.approx(_loss_by_hand(stage_run), rel=1e-6)
        assert row["settings"]["num_chains"] == 2 and row["settings"]["lr"] == 1e-3
    assert {r["llc"]["step"] for r in rows if r["stage"] == "range 6"} == {30}
    # The chain's timeline: stage k's final checkpoint sits at the summed budgets; the direct run is estimated at the
    # same stage boundaries.
    for r in rows:
        offset = 30 * labels.index(r["stage"]) if r["stage"] != "direct" else 0
        steps = [(p["step"], p["global_step"]) for p in r["llc"]["trajectory"]]
        assert steps == ([(30, offset + 30)] if r["stage"] != "direct" else [(30, 30), (60, 60), (90, 90)])
    # Across seeds: mean and sd (ddof 1) of the seeds' final estimates, recomputed here.
    for stage in data["llc"]["stages"]:
        values = [r["llc"]["llc_mean"] for r in rows if r["stage"] == stage["stage"]]
        mean = sum(values) / 2
        assert stage["n"] == 2 and stage["mean"] == pytest.approx(mean)
        assert stage["sd"] == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in values)))
    assert [s["stage"] for s in data["llc"]["stages"]] == labels
    assert data["llc"]["last_stage_vs_direct"]["a"] == "range 13" and data["llc"]["settings"]["num_draws"] == 20
    assert lines[0].endswith("| final LLC") and any(line.startswith("final LLC across seeds") for line in lines)
    assert all((root / "figures" / f"{name}.html").is_file() for name in ("llc_trajectory", "llc_final"))

    # A rerun trains nothing and estimates nothing: every LLC comes from the runs' caches.
    caches = sorted(root.glob("seed*/*/analysis/llc.json"))
    assert len(caches) == 8
    stamps = [c.stat().st_mtime_ns for c in caches]

    def no_sampling(*args, **kwargs):
        raise AssertionError("the LLC was estimated again")

    monkeypatch.setattr("grokscope.analysis.llc.estimate_llc", no_sampling)
    again = run(path, tmp_path / "out", device="cpu", progress=False).lines
    assert again == lines and [c.stat().st_mtime_ns for c in caches] == stamps


@pytest.mark.slow
def test_finetune_llc_trajectory_along_the_chain(tmp_path):
    spec = {
        "kind": "finetune",
        "name": "ft",
        "moduli": [7, 11, 13],
        "stage_steps": 20,
        "seeds": [0],
        "llc": {**CHEAP_LLC, "checkpoints": 10},
    }
    path = write(tmp_path, spec, train={"checkpoints": {"every": 10}})
    lines = run(path, tmp_path / "out", device="cpu", progress=False).lines
    rows = json.loads((tmp_path / "out" / "ft" / "results.json").read_text())["stages"]
    for k, r in enumerate(rows[:3]):
        # Every 10th step of each stage (and its last), placed after the earlier stages' 20 steps each.
        points = r["llc"]["trajectory"]
        assert [p["step"] for p in points] == [0, 10, 20]
        assert [p["global_step"] for p in points] == [20 * k, 20 * k + 10, 20 * k + 20]
        assert all(math.isfinite(p["llc_mean"]) for p in points)
        # Each stage is sampled on its own modulus: n_beta from its own training pairs.
        cached = json.loads((Path(r["run_dir"]) / "analysis" / "llc.json").read_text())
        n = len(Run.open(r["run_dir"]).split().train)
        assert [row["n_beta"] for row in cached] == [pytest.approx(n / math.log(n))] * 3
    assert [p["global_step"] for p in rows[3]["llc"]["trajectory"]] == [0, 10, 20, 30, 40, 50, 60]
    assert rows[2]["llc"]["llc_mean"] > 0 and rows[3]["llc"]["llc_mean"] > 0
    assert "| final LLC" in lines[0] and len(lines) == 1 + 4 + 1  # the table, and the across-seeds line


def test_llc_settings_are_checked_before_anything_trains(tmp_path):
    cases = [
        ({"lr": 0}, "llc.lr: Input should be greater than 0"),
        ({"num_chains": 0}, "llc.num_chains: Input should be greater than or equal to 1"),
        ({"checkpoints": "some"}, "llc.checkpoints"),
        ({"steps": 5}, "llc.steps: unknown key"),
        ({"batch_size": 0}, "llc.batch_size"),
    ]
    for settings, message in cases:
        path = write(tmp_path, {"kind": "curriculum", "stages": [6, 13], "llc": settings})
        with pytest.raises(UserError, match=message) as err:
            run(path, tmp_path / "out", device="cpu", progress=False)
        assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_staged_experiments_attach_recorders_to_every_run(tmp_path):
    spec = {"kind": "curriculum", "name": "rec", "stages": [7, 13], "stage_steps": 10, "seeds": [0]}
    path = write(tmp_path, {**spec, "record": ["gradients"], "record_every": 5}, train={"checkpoints": {"every": 10}})
    run(path, tmp_path / "out", device="cpu", progress=False)
    for folder in ("range7", "range13", "direct"):
        recordings = tmp_path / "out" / "rec" / "seed0" / folder / "recordings"
        assert recordings.is_dir() and any(recordings.iterdir()), folder


def test_a_failed_stage_stops_its_seed_and_the_others_finish(tmp_path, monkeypatch):
    import grokscope.experiments.runs as runs

    real = runs.train_many

    def failing(configs, dirs, **kwargs):
        if any(c.seed == 1 and c.task.input_range == 6 for c in configs):
            raise RuntimeError("boom")
        return real(configs, dirs, **kwargs)

    monkeypatch.setattr(runs, "train_many", failing)
    spec = {"kind": "curriculum", "name": "cur", "stages": [6, 13], "stage_steps": 10, "seeds": [0, 1]}
    path = write(tmp_path, spec, train={"checkpoints": {"every": 10}})
    report = run(path, tmp_path / "out", device="cpu", progress=False)
    root = tmp_path / "out" / "cur"
    assert [Path(f.run_dir) for f in report.failures] == [root / "seed1" / "range6"]
    rows = {(r["seed"], r["stage"]): r for r in json.loads((root / "results.json").read_text())["stages"]}
    assert all(rows[(0, stage)]["status"] == "ok" for stage in ("range 6", "range 13", "direct"))
    assert rows[(1, "range 6")]["status"] == "failed" and rows[(1, "range 6")]["error"] == "RuntimeError: boom"
    assert rows[(1, "range 13")]["error"] == "not trained: stage range6 did not finish"
    assert rows[(1, "direct")]["status"] == "ok" and not (root / "seed1" / "range13").exists()
    assert any(line == "1 | range 13 | failed: not trained: stage range6 did not finish" for line in report.lines)
