"""Curriculum and sequential finetuning chains end to end on tiny models."""

import itertools
import json

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
    lines = run(path, tmp_path / "out", device="cpu", progress=False)
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
