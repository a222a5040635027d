"""What a transfer plans before anything trains: conditions that differ only in what the study varies, one stopping
rule read on the target operation, and (similarity) which accuracy a target's speed-up is read on."""

import itertools

import pytest
import yaml

from conftest import tiny_config
from grokscope.config import RunConfig
from grokscope.experiments import similarity
from grokscope.experiments.transfer import TransferConfig, plan_transfer
from grokscope.experiments.transfer_core.plan import on_target_operation, with_init

STOP = {"metric": "test_acc", "threshold": 0.99, "patience": 50}
STUDIED = {"task.operation", "task.replay", "model.init_from", "train.steps"}


def flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out |= flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def differences(a: RunConfig, b: RunConfig) -> set[str]:
    fa, fb = flat(a.to_dict()), flat(b.to_dict())
    return {k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k)}


@pytest.fixture
def source_file(tmp_path):
    source = tiny_config(train={"steps": 200, "early_stop": STOP, "checkpoints": {"every": 10}})
    (tmp_path / "source.yaml").write_text(source.to_yaml())
    return tmp_path / "transfer.yaml"


def test_every_target_condition_stops_by_one_rule_on_the_target_operation(source_file):
    config = TransferConfig.model_validate(
        {
            "kind": "transfer",
            "source": "source.yaml",
            "target_set": ["task.operation=sub"],
            "conditions": ["grokked", "memorized", "random", {"name": "random_long", "init": "random", "budget": 900}],
            "partial": [{"name": "at40", "step": 40}],
            "budgets": {"grokked": 300},
            "replay": {"fraction": 0.2},
        }
    )
    planned = plan_transfer(config, source_file)
    names = ["grokked", "grokked_replay", "memorized", "memorized_replay", "at40", "at40_replay"]
    assert list(planned.targets) == [*names, "random", "random_long"]
    rule = {"metric": "test_acc_sub", "threshold": 0.99, "patience": 50}
    for name, target in planned.targets.items():
        assert target.to_dict()["train"]["early_stop"] == rule, name
        assert target.train.early_stop.operation == "sub"
    # Replay twins train [add, sub] with the replayed share; their plain twins sub alone.
    for name, target in planned.targets.items():
        replayed = name.endswith("_replay")
        assert target.task.operation == (["add", "sub"] if replayed else "sub"), name
        assert target.task.replay == (0.2 if replayed else None), name
    budgets = {"grokked": 300, "grokked_replay": 300, "random_long": 900}
    assert {n: t.train.steps for n, t in planned.targets.items()} == {n: budgets.get(n, 200) for n in planned.targets}
    # Any two conditions differ only in what the study varies: the operation and replay, and the budget where
    # their budgets differ.
    for (a, ca), (b, cb) in itertools.combinations(planned.targets.items(), 2):
        diff = differences(ca, cb)
        assert diff <= STUDIED, (a, b, diff)
        assert ("train.steps" in diff) == (ca.train.steps != cb.train.steps), (a, b)
        assert ("task.operation" in diff) == (a.endswith("_replay") != b.endswith("_replay")), (a, b)
    # init_from is filled in per seed, and only it (beside the seed) changes.
    target = planned.targets["grokked"]
    filled = with_init(target, 3, "/runs/source/seed3/checkpoints/step_0000040.safetensors")
    assert differences(filled, target.with_seed(3)) == {"model.init_from"}
    assert with_init(target, 3, None) == target.with_seed(3)
    # The relearn config is the source's task.
    assert planned.relearn is None


def test_the_rule_reads_the_named_operation_once_and_no_rule_stays_none(source_file):
    target = tiny_config(task={"operation": "sub"}, train={"early_stop": {**STOP, "metric": "test_acc_sub"}})
    assert on_target_operation(target)["metric"] == "test_acc_sub"  # not test_acc_sub_sub
    assert on_target_operation(tiny_config()) is None
    data = yaml.safe_load((source_file.parent / "source.yaml").read_text())
    data["train"].pop("early_stop")
    (source_file.parent / "source.yaml").write_text(yaml.safe_dump(data))
    config = TransferConfig.model_validate(
        {"kind": "transfer", "source": "source.yaml", "target_set": ["task.operation=sub"], "replay": {"fraction": 0.1}}
    )
    assert all(t.train.early_stop is None for t in plan_transfer(config, source_file).targets.values())


def test_similarity_reads_a_random_tables_speed_up_on_train_accuracy(source_file):
    config = similarity.SimilarityConfig.model_validate(
        {
            "kind": "similarity",
            "source": "source.yaml",
            "targets": {"sub": ["task.operation=sub"], "random": ["task.operation=random"]},
            "seeds": [0],
        }
    )
    planned = similarity.plan_targets(config, source_file)
    assert list(planned) == ["sub", "random"]
    assert similarity.speed_on(planned["sub"]) == "test_acc"
    assert similarity.speed_on(planned["random"]) == "train_acc"
    # The random table stops on its own operation too.
    assert {t.train.early_stop.metric for t in planned["random"].targets.values()} == {"test_acc_random"}
