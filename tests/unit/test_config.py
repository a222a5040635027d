import importlib
from pathlib import Path

import pytest
import yaml

from grokscope.config import RunConfig, apply_overrides, config_differences, load_config, parse_config
from grokscope.errors import UserError

CONFIGS = Path(__file__).parents[2] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path, tmp_path):
    data = yaml.safe_load(path.read_text())
    if "kind" in data:  # an experiment config: the run configs it will train must load too
        module = importlib.import_module(f"grokscope.experiments.{data['kind']}")
        experiment = module.CONFIG.model_validate(data)
        if data["kind"] == "transfer":
            module._configs(experiment, path)  # source and target
        elif data["kind"] == "sweep":
            assert module.plan_runs(experiment, path, tmp_path)[1]
        else:
            load_config(path.parent / experiment.base, experiment.set)
        return
    cfg = load_config(path)
    assert cfg.name == path.stem


def test_presets_are_resolved_and_overridable():
    cfg = parse_config({"model": {"preset": "power", "d_mlp": 256}})
    assert (cfg.model.n_layers, cfg.model.normalization, cfg.model.d_mlp) == (2, "LN", 256)
    nanda = parse_config({})
    assert (nanda.model.n_layers, nanda.model.normalization, nanda.model.act_fn) == (1, "none", "relu")


def test_resolved_config_round_trips():
    cfg = parse_config({"seed": 3, "task": {"modulus": 31}})
    assert cfg.split_seed == 3 and cfg.task.split_seed is None
    again = RunConfig.model_validate(cfg.to_dict())
    assert again == cfg
    assert config_differences(cfg, again) == []


def test_with_seed_moves_a_following_split_seed_only():
    follows = parse_config({"seed": 1})
    assert follows.with_seed(4).split_seed == 4
    pinned = parse_config({"seed": 1, "task": {"split_seed": 9}})
    assert pinned.with_seed(4).split_seed == 9
    same = parse_config({"seed": 0, "task": {"split_seed": 0}})  # pinned to the seed's own value: still pinned
    assert same.with_seed(4).split_seed == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"task": {"modulus": 1}}, "task.modulus"),
        ({"task": {"train_fraction": 1.5}}, "task.train_fraction"),
        ({"task": {"train_fraction": 0}}, "task.train_fraction"),
        ({"task": {"operation": "pow"}}, "task.operation: unknown operation 'pow'"),
        ({"task": {"operation": "div", "modulus": 12}}, "task.modulus: div needs a prime modulus"),
        ({"model": {"preset": "gpt9"}}, "model.preset"),
        ({"optim": {"lr": "fast"}}, "optim.lr"),
        ({"optim": {"learning_rate": 1}}, "optim.learning_rate: unknown key"),
        ({"bogus": 1}, "bogus: unknown key"),
        ({"task": {"format": "nanda", "loss_on": "all"}}, "task.loss_on"),
        ({"train": {"early_stop": {"metric": "val_acc"}}}, "train.early_stop.metric"),
        ({"name": ".."}, "name"),
        ({"seed": 2**40}, "seed"),
    ],
)
def test_bad_values_name_the_field(data, message):
    with pytest.raises(UserError) as err:
        parse_config(data, source="x.yaml")
    text = str(err.value)
    assert text.startswith("x.yaml: ") and message in text and "\n" not in text


def test_overrides():
    data = apply_overrides({"task": {"modulus": 7}}, ["task.modulus=11", "optim.lr=3e-3", "train.batch_size=null"])
    cfg = parse_config(data)
    assert (cfg.task.modulus, cfg.optim.lr, cfg.train.batch_size) == (11, 3e-3, None)
    with pytest.raises(UserError, match="key=value"):
        apply_overrides({}, ["nonsense"])
    with pytest.raises(UserError, match="unknown key"):
        parse_config(apply_overrides({}, ["optim.momentum=0.9"]))


def test_file_errors(tmp_path):
    with pytest.raises(UserError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(bad)
    toml = tmp_path / "t.toml"
    toml.write_text('[task]\noperation = "mul"\nmodulus = 17\n')
    cfg = load_config(toml)
    assert (cfg.name, cfg.task.operation, cfg.task.modulus) == ("t", "mul", 17)


def test_set_fills_a_null_section_from_its_defaults():
    data = apply_overrides({"optim": {"grokfast": None}}, ["optim.grokfast.lamb=5"])
    assert data["optim"]["grokfast"] == {"lamb": 5}
    assert parse_config(data).optim.grokfast.filter == "ema"
