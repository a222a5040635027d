import importlib
import math
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import BaseModel

from grokscope.config import (
    RunConfig,
    apply_overrides,
    config_differences,
    load_config,
    load_yaml,
    parse_config,
    read_config_file,
)
from grokscope.errors import UserError

CONFIGS = Path(__file__).parents[2] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path, tmp_path):
    data = read_config_file(path)  # no duplicate keys in the shipped configs either
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


def one_line_error(call, *args: Any, **kwargs: Any) -> str:
    """The message of the UserError ``call`` raises; it must be a single line."""
    with pytest.raises(UserError) as err:
        call(*args, **kwargs)
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text, text
    return text


# --- duplicate keys -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("nested.yaml", "optim:\n  lr: 1.0e-3\n  weight_decay: 1\n  lr: 2.0e-3\n", "line 4: duplicate key 'lr'"),
        ("top.yaml", "seed: 1\ntask:\n  modulus: 7\nseed: 2\n", "line 4: duplicate key 'seed'"),
        ("section.yaml", "optim:\n  lr: 1.0e-3\ntask: {}\noptim:\n  lr: 2.0e-3\n", "line 4: duplicate key 'optim'"),
        ("flow.yaml", "optim: {lr: 1, lr: 2}\n", "line 1: duplicate key 'lr'"),
        ("deep.yaml", "train:\n  checkpoints:\n    every: 5\n    every: 6\n", "line 4: duplicate key 'every'"),
        ("key.toml", "[optim]\nlr = 1e-3\nlr = 2e-3\n", "line 3: duplicate key 'lr'"),
        ("quoted.toml", 'seed = 1\n"seed" = 2\n', "line 2: duplicate key 'seed'"),
        ("dotted.toml", "optim.lr = 1e-3\noptim.lr = 2e-3\n", "line 2: duplicate key 'optim.lr'"),
        ("inline.toml", "optim = {lr = 1e-3, lr = 2e-3}\n", "line 1: duplicate key 'lr'"),
        ("table.toml", "[optim]\nlr = 1e-3\n[optim]\nweight_decay = 1\n", "line 3: duplicate table [optim]"),
    ],
)
def test_duplicate_keys_are_rejected_with_their_line(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    assert one_line_error(load_config, path) == f"{path} {message}"


def test_yaml_stays_safe_and_merges_may_override(tmp_path):
    path = tmp_path / "tagged.yaml"
    path.write_text("seed: !!python/object/apply:os.getpid []\n")
    assert "line 1: not valid YAML: could not determine a constructor" in one_line_error(load_config, path)
    merged = load_yaml("base: &b {lr: 1, weight_decay: 0.5}\noptim:\n  <<: *b\n  lr: 2\n")
    assert merged["optim"] == {"lr": 2, "weight_decay": 0.5}  # a merged key is not a duplicate


def test_set_twice_last_wins_but_a_duplicate_inside_a_value_is_an_error():
    cfg = parse_config(apply_overrides({}, ["optim.lr=1e-3", "optim.lr=2e-3"]))
    assert cfg.optim.lr == 2e-3
    assert one_line_error(apply_overrides, {}, ["optim={lr: 1, lr: 2}"]) == "--set optim: duplicate key 'lr'"


# --- non-finite numbers ---------------------------------------------------------------------------------------


def _float_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, int | None]]:
    """Every float in the config models, as (dotted field, tuple position or None), through nested sections."""
    out: list[tuple[str, int | None]] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        ann = field.annotation
        args = (
            typing.get_args(ann)
            if isinstance(ann, types.UnionType) or typing.get_origin(ann) is typing.Union
            else (ann,)
        )
        for arg in args:
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                out += _float_fields(arg, f"{path}.")
            elif arg is float:
                out.append((path, None))
            elif typing.get_origin(arg) is tuple:
                out += [(path, i) for i, a in enumerate(typing.get_args(arg)) if a is float]
    return out


FLOAT_FIELDS = _float_fields(RunConfig)
NON_FINITE = [math.inf, -math.inf, math.nan, "inf", "-Infinity", "NaN", "1e999"]


def _set(path: str, position: int | None, value: Any) -> dict[str, Any]:
    if position is not None:
        pair = [0.5, 0.5]
        pair[position] = value
        value = pair
    data: dict[str, Any] = {}
    *parents, leaf = path.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return data


def test_the_float_walk_finds_every_float_field():
    found = {path for path, _ in FLOAT_FIELDS}
    assert {
        "task.train_fraction",
        "task.val_fraction",
        "model.init_perturbation",
        "optim.lr",
        "optim.weight_decay",
        "optim.betas",
        "optim.eps",
        "optim.grad_clip",
        "optim.grokfast.alpha",
        "optim.grokfast.lamb",
        "train.early_stop.threshold",
    } <= found
    assert ("optim.betas", 0) in FLOAT_FIELDS and ("optim.betas", 1) in FLOAT_FIELDS


@pytest.mark.parametrize(("path", "position"), FLOAT_FIELDS, ids=lambda x: str(x))
def test_every_float_field_rejects_inf_and_nan(path, position):
    parse_config(_set(path, position, 0.5))  # a finite value here is fine: what follows fails on the value alone
    named = path if position is None else f"{path}.{position}"
    for value in NON_FINITE:
        text = one_line_error(parse_config, _set(path, position, value), source="x.yaml")
        assert text.startswith(f"x.yaml: {named}: "), text
        if value not in (-math.inf, "-Infinity"):  # -inf may first break a lower bound; either way it is refused
            assert "finite number" in text, text


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=inf", "optim.lr: Input should be a finite number (got 'inf')"),
        ("optim.lr=.inf", "optim.lr: Input should be a finite number (got inf)"),
        ("optim.weight_decay=.inf", "optim.weight_decay: Input should be a finite number (got inf)"),
        ("optim.weight_decay=nan", "optim.weight_decay: Input should be a finite number (got 'nan')"),
        ("optim.betas=[0.9, .nan]", "optim.betas.1: Input should be a finite number (got nan)"),
        ("train.early_stop.threshold=.inf", "train.early_stop.threshold: Input should be a finite number (got inf)"),
    ],
)
def test_non_finite_numbers_from_files_and_set(tmp_path, override, message):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1.0e-3\n")
    assert one_line_error(load_config, path, [override]) == f"{path}: {message}"
    field, _, value = override.partition("=")
    *parents, leaf = field.split(".")
    path.write_text(
        "".join(f"{'  ' * i}{p}:\n" for i, p in enumerate(parents)) + f"{'  ' * len(parents)}{leaf}: {value}\n"
    )
    assert one_line_error(load_config, path) == f"{path}: {message}"


# --- seeds ----------------------------------------------------------------------------------------------------

SEED_FIELDS = ["seed", "task.split_seed", "model.perturbation_seed"]


@pytest.mark.parametrize("field", SEED_FIELDS)
def test_seeds_are_32_bit(field):
    top = 2**32 - 1
    cfg = parse_config(_set(field, None, top))
    assert cfg.seed == top or cfg.task.split_seed == top or cfg.model.perturbation_seed == top
    for bad in (2**32, -1, 2**64):
        text = one_line_error(parse_config, _set(field, None, bad), source="x.yaml")
        assert text.startswith(f"x.yaml: {field}: "), text


def test_with_seed_out_of_range_is_a_user_error():
    text = one_line_error(parse_config({"name": "r"}).with_seed, 2**32)
    assert text.startswith("r: seed: Input should be less than or equal to 4294967295")


def test_the_largest_seed_does_not_overflow_the_batch_generators():
    from grokscope.training.loop import batch_indices

    top = 2**32 - 1
    # batch_indices seeds each epoch's permutation with seed * 1_000_003 + epoch; manual_seed takes up to 2**64 - 1.
    headroom = 2**64 - 1 - top * 1_000_003
    assert headroom > 10**19  # epochs <= steps: no run comes close
    torch.Generator().manual_seed(top * 1_000_003 + headroom)
    torch.Generator().manual_seed(top * 1_000_003 + 10**12)
    with pytest.raises((RuntimeError, ValueError, OverflowError)):
        torch.Generator().manual_seed(2**64)  # the limit is real, so the check above is not vacuous
    index = batch_indices(step=10**12, n_train=100, batch_size=10, seed=top)
    assert index is not None and len(index) == 10
    torch.manual_seed(top)  # the model initialisation's seed


# --- freezing everything --------------------------------------------------------------------------------------

ALL_BUT_NORM = ["embed", "pos_embed", "attn", "mlp", "unembed"]


@pytest.mark.parametrize(
    ("model", "freeze"),
    [
        ({}, ALL_BUT_NORM),  # nanda: no normalization
        ({}, [*ALL_BUT_NORM, "norm"]),
        ({}, ["unembed", "mlp", "attn", "pos_embed", "embed", "embed"]),
        ({"normalization": "LNPre"}, ALL_BUT_NORM),  # the *Pre normalizations have no weights
        ({"normalization": "RMSPre"}, ALL_BUT_NORM),
        ({"preset": "power"}, [*ALL_BUT_NORM, "norm"]),  # LN
        ({"normalization": "RMS"}, [*ALL_BUT_NORM, "norm"]),
    ],
)
def test_freezing_every_component_is_rejected(model, freeze):
    task = {"format": "power"} if model.get("preset") == "power" else {}
    text = one_line_error(parse_config, {"task": task, "model": model, "optim": {"freeze": freeze}}, source="x.yaml")
    assert text.startswith("x.yaml: optim.freeze: freezes every component of this model (embed, pos_embed, attn,")
    assert text.endswith("; nothing would train")


@pytest.mark.parametrize("normalization", ["LN", "RMS"])
def test_freezing_all_but_a_normalization_still_trains(normalization):
    cfg = parse_config({"model": {"normalization": normalization}, "optim": {"freeze": ALL_BUT_NORM}})
    assert cfg.optim.freeze == ALL_BUT_NORM


@pytest.mark.parametrize("normalization", ["none", "LN", "LNPre", "RMS", "RMSPre"])
def test_model_components_match_the_real_parameters(normalization):
    from grokscope.models import COMPONENTS, build_model, component_parameters
    from grokscope.tasks import ModularTask

    model_data = {"normalization": normalization, "d_model": 8, "n_heads": 1, "d_head": 8, "d_mlp": 8}
    cfg = parse_config({"task": {"modulus": 7}, "model": model_data})
    names = [n for n, _ in build_model(cfg.model, ModularTask.from_config(cfg.task), seed=0).named_parameters()]
    assert set(names) == component_parameters(names, list(COMPONENTS))  # every parameter belongs to a component
    assert cfg.model.components() == [c for c in COMPONENTS if component_parameters(names, [c])]


# --- init_from ------------------------------------------------------------------------------------------------


def test_init_from_must_exist_when_a_config_is_loaded(tmp_path):
    path = tmp_path / "c.yaml"
    missing = tmp_path / "gone.safetensors"
    path.write_text(f"model:\n  init_from: {missing}\n")
    assert one_line_error(load_config, path) == f"{path}: model.init_from: no such file: {missing}"
    path.write_text("{}\n")
    assert one_line_error(load_config, path, [f"model.init_from={missing}"]).endswith(f"no such file: {missing}")
    assert one_line_error(load_config, path, [f"model.init_from={tmp_path}"]) == (
        f"{path}: model.init_from: is not a file: {tmp_path}"
    )
    missing.write_bytes(b"")  # existence is all load_config checks; reading the checkpoint is training's job
    assert load_config(path, [f"model.init_from={missing}"]).model.init_from == str(missing)


def test_init_from_of_a_finished_run_may_be_gone():
    # Configs re-read from run directories and checkpoint metadata go through parse_config, which does not look.
    cfg = parse_config({"model": {"init_from": "/nonexistent/step_100.safetensors"}}, source="run/config.yaml")
    assert cfg.model.init_from == "/nonexistent/step_100.safetensors"
