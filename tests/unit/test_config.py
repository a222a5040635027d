import importlib
import math
import os
import threading
import time
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import BaseModel, ValidationError

from grokscope.config import (
    FLOAT32_SAFE,
    MAX_LR,
    MAX_MODULUS,
    MAX_VALUES,
    RECURSIVE,
    TOO_BIG,
    TOO_DEEP,
    RunConfig,
    apply_overrides,
    config_differences,
    first_error,
    load_config,
    load_yaml,
    nesting_problem,
    parse_config,
    read_config_file,
    show,
)
from grokscope.errors import UserError

CONFIGS = Path(__file__).parents[2] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path, tmp_path):
    data = read_config_file(path)  # no duplicate keys in the shipped configs either
    if "kind" in data:  # an experiment config: the run configs it will train must load too
        module = importlib.import_module(f"grokscope.experiments.{data['kind']}")
        spec = getattr(module, "SPEC", None)
        if spec is not None:  # a kind on the experiment spec plans (and so checks) every run config
            assert spec.plan(spec.config.model_validate(data), path) is not None
            return
        experiment = module.CONFIG.model_validate(data)
        if data["kind"] == "transfer":
            module.plan(experiment, path)  # source and target (transfer.plan, formerly _configs)
        elif data["kind"] == "similarity":
            for target in experiment.targets:
                importlib.import_module("grokscope.experiments.transfer").plan(experiment.transfer_config(target), path)
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


def _float_fields(model: type[BaseModel], prefix: str = "", kind: type = float) -> list[tuple[str, int | None]]:
    """Every ``kind`` (float) in the config models, as (dotted field, tuple position or None), through nested
    sections."""
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
                out += _float_fields(arg, f"{path}.", kind)
            elif arg is kind:
                out.append((path, None))
            elif typing.get_origin(arg) is tuple:
                out += [(path, i) for i, a in enumerate(typing.get_args(arg)) if a is kind]
    return out


FLOAT_FIELDS = _float_fields(RunConfig)
NON_FINITE = [math.inf, -math.inf, math.nan, "inf", "-Infinity", "NaN", "1e999"]


# What a field needs beside it to be valid at all (a replay fraction needs operations to replay).
NEEDS: dict[str, dict[str, Any]] = {"task.replay": {"operation": ["add", "sub"]}}


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
    node.update(NEEDS.get(path, {}))
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


# --- hostile inputs: nesting, alias bombs, huge numbers, odd paths ---------------------------------------------


def finishes(call, *args: Any, limit: float = 10.0) -> str:
    """``one_line_error(call, *args)``, run in a thread that must finish within ``limit`` seconds (not hang)."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["text"] = one_line_error(call, *args)
        except BaseException as err:  # reported below, in the test's own thread
            out["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), f"{call.__name__} did not finish within {limit} s"
    if "error" in out:
        raise out["error"]
    return out["text"]


LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(8)
)  # i: 10**9 x's, in 90 nodes


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("list.yaml", "seed: " + "[" * 100_000 + "]" * 100_000 + "\n", TOO_DEEP),  # audit 116
        ("map.yaml", "seed: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n", TOO_DEEP),  # audit 117
        ("block.yaml", "".join(f"{'  ' * i}a:\n" for i in range(150)) + "  " * 150 + "b: 1\n", TOO_DEEP),
        ("list.toml", "seed = " + "[" * 100_000 + "]" * 100_000 + "\n", TOO_DEEP),
        ("shallow.toml", "seed = " + "[" * 150 + "]" * 150 + "\n", TOO_DEEP),  # under the recursion limit
        # 150 anchors each one level deep: only the expansion is too deep
        ("chain.yaml", "".join(f"k{i}: &k{i} [{f'*k{i - 1}' if i else 1}]\n" for i in range(150)), TOO_DEEP),
        ("laughs.yaml", LAUGHS.replace("i: &i", "seed: &i"), TOO_BIG),  # audit 114
        ("unknown.yaml", LAUGHS + "seed: 0\n", TOO_BIG),
        ("recursive.yaml", "seed: &a [1, *a]\n", RECURSIVE),
    ],
)
def test_too_deep_or_too_big_files_are_one_line(tmp_path, name, text, problem):
    path = tmp_path / name
    path.write_text(text)
    assert finishes(load_config, path) == f"{path}: {problem}"


def test_too_deep_or_too_big_set_values_are_one_line():
    deep = "seed=" + "[" * 50_000 + "]" * 50_000  # audit 173
    assert finishes(apply_overrides, {}, [deep]) == f"--set seed: {TOO_DEEP}"
    bomb = "seed={" + LAUGHS.replace("\n", ", ") + "}"
    assert finishes(apply_overrides, {}, [bomb]) == f"--set seed: {TOO_BIG}"


def _shared(levels: int) -> list[Any]:
    value: list[Any] = [0]
    for _ in range(levels):
        value = [value] * 10  # 10**levels leaves, in `levels` lists
    return value


def test_parse_config_bounds_what_it_is_given():
    # Configs re-read from run directories and checkpoints do not come through load_yaml: parse_config checks too.
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    assert finishes(parse_config, {"seed": deep}) == f"config: {TOO_DEEP}"
    assert finishes(parse_config, {"optim": {"freeze": _shared(9)}}) == f"config: {TOO_BIG}"
    loop: list[Any] = [1]
    loop.append(loop)
    assert finishes(parse_config, {"seed": loop}) == f"config: {RECURSIVE}"
    assert nesting_problem(parse_config({}).to_dict()) is None
    assert nesting_problem([[1] * 3] * (MAX_VALUES // 5)) is None  # big and shared, but within the limits


def test_error_messages_show_a_bounded_repr_of_the_input():
    # audit 114: first_error used to repr() the whole input, here 10**9 values behind 9 shared lists.
    with pytest.raises(ValidationError) as err:
        RunConfig.model_validate({"seed": _shared(9)})  # straight to pydantic, past parse_config's walk
    started = time.perf_counter()
    text = first_error(err.value)
    assert time.perf_counter() - started < 1
    assert text.startswith("seed: Input should be a valid integer (got [[[...") and len(text) < 120, text
    loop: list[Any] = []
    loop.append(loop)
    for value, shown in [
        (16**5000, "an integer of 20,001 bits"),  # str() of it fails past 4300 digits
        ("x\ny" * 10_000, "'x\\nyx\\nyx"),
        (b"\0" * 10**6, "b'\\x00\\x00"),
        (loop, "[[[...]]]"),
        (_shared(9), "[[[...], [...], [...], [...], ...], "),
    ]:
        text = show(value)
        assert text.startswith(shown) and len(text) <= 80 and "\n" not in text, text


def test_unknown_keys_are_shown_on_one_line():
    assert one_line_error(parse_config, {"a\nb": 1}, source="x.yaml") == "x.yaml: 'a\\nb': unknown key"
    text = one_line_error(parse_config, {"task": {"k" * 10**6: 1}}, source="x.yaml")
    assert text.startswith("x.yaml: task.'kkk") and text.endswith(": unknown key") and len(text) < 120
    text = one_line_error(parse_config, {"task": {"operation": "op\n" * 10**5}}, source="x.yaml")
    assert text.startswith("x.yaml: task.operation: unknown operation 'op\\nop") and len(text) < 250, text


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "date.yaml",
            "seed: 2001-13-45\n",
            " line 1: not valid YAML: cannot read '2001-13-45': month must be in 1..12",
        ),
        ("digits.yaml", "task:\n  modulus: " + "9" * 5000 + "\n", " line 2: not valid YAML: cannot read '99999"),
        ("digits.toml", "seed = " + "9" * 5000 + "\n", ": not valid TOML: Exceeds the limit (4300 digits)"),
    ],
)
def test_scalars_python_refuses_are_one_line(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    assert finishes(load_config, path).startswith(f"{path}{message}")


def test_config_paths_that_are_not_files(tmp_path):
    folder = tmp_path / "dir.yaml"
    folder.mkdir()
    assert one_line_error(load_config, folder) == f"{folder}: is a directory, not a config file"
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # opening it would block until a writer comes: it must not be opened
    assert finishes(load_config, fifo) == f"{fifo}: not a regular file (a config must be a YAML or TOML file)"
    assert (
        one_line_error(load_config, "/dev/null")
        == "/dev/null: not a regular file (a config must be a YAML or TOML file)"
    )
    loop = tmp_path / "loop.yaml"
    loop.symlink_to(loop)
    assert (
        one_line_error(load_config, loop) == f"{loop}: cannot read the config file (too many levels of symbolic links)"
    )
    broken = tmp_path / "broken.yaml"
    broken.symlink_to(tmp_path / "gone.yaml")
    assert one_line_error(load_config, broken) == f"{broken}: no such config file"
    assert one_line_error(load_config, folder / "x" / "c.yaml") == f"{folder / 'x' / 'c.yaml'}: no such config file"
    link = tmp_path / "link.yaml"
    link.symlink_to(tmp_path / "real.yaml")
    (tmp_path / "real.yaml").write_text("seed: 3\n")
    assert load_config(link).seed == 3  # a link to a file is fine


def test_name_errors_separate_field_and_message():
    assert one_line_error(parse_config, {"name": "."}, source="x.yaml") == "x.yaml: name: must name a folder, not '.'"
    assert one_line_error(parse_config, {"name": ".."}, source="x.yaml") == "x.yaml: name: must name a folder, not '..'"
    text = one_line_error(parse_config, {"task": {"train_fraction": 0.8, "val_fraction": 0.3}}, source="x.yaml")
    assert text == "x.yaml: task: train_fraction + val_fraction must leave a test set (sum < 1)"


# --- bounds on sizes and optimizer scalars -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "field"),
    [
        ({"operation": "div", "modulus": 2**61 - 1}, "modulus"),  # a prime: trial division would take hours
        ({"operation": "div", "modulus": MAX_MODULUS + 1}, "modulus"),
        ({"modulus": 10**30}, "modulus"),
        ({"input_range": 2**40}, "input_range"),
    ],
)
def test_the_modulus_is_bounded_before_the_primality_test(monkeypatch, task, field):
    def no_primality_test(n: int) -> bool:
        raise AssertionError(f"is_prime({n}) ran before the bound was checked")

    monkeypatch.setattr("grokscope.config.is_prime", no_primality_test)
    text = finishes(parse_config, {"task": task}, "x.yaml")
    assert text.startswith(f"x.yaml: task.{field}: Input should be less than or equal to {MAX_MODULUS} (got ")
    assert len(text) < 150, text  # no 100-digit memory estimate either


def test_the_largest_modulus_is_accepted_and_quick_to_test():
    largest_prime = 2**24 - 3
    started = time.perf_counter()
    assert parse_config({"task": {"operation": "div", "modulus": largest_prime}}).task.modulus == largest_prime
    assert time.perf_counter() - started < 1
    assert one_line_error(parse_config, {"task": {"operation": "div", "modulus": MAX_MODULUS}}).startswith(
        "config: task.modulus: div needs a prime modulus"
    )


@pytest.mark.parametrize(
    ("field", "value", "bound"),
    [
        ("optim.lr", 1e308, "1e+20"),  # audit 136: torch failed mid-step, converting it to float32
        ("optim.lr", 1e21, "1e+20"),
        ("optim.weight_decay", 1e31, "1e+30"),
        ("optim.eps", 1e39, "1e+30"),
        ("optim.grad_clip", 1e300, "1e+30"),
        ("optim.grokfast.lamb", 1e39, "1e+30"),
    ],
)
def test_optimizer_scalars_are_bounded_to_float32(field, value, bound):
    text = one_line_error(parse_config, _set(field, None, value), source="x.yaml")
    assert text == f"x.yaml: {field}: Input should be less than or equal to {bound} (got {value!r})"


def test_optimizer_bounds_keep_torch_within_float32():
    # At the bounds, with the betas that magnify Adam's first step most, no scalar overflows float32 (it diverges).
    betas = (math.nextafter(1.0, 0.0), math.nextafter(1.0, 0.0))
    cfg = parse_config(
        {"optim": {"lr": MAX_LR, "weight_decay": FLOAT32_SAFE, "eps": FLOAT32_SAFE, "betas": list(betas)}}
    )
    for foreach in (False, True):
        param = torch.nn.Parameter(torch.randn(4, 4))
        opt = torch.optim.AdamW(
            [param],
            lr=cfg.optim.lr,
            betas=betas,
            eps=cfg.optim.eps,
            weight_decay=cfg.optim.weight_decay,
            foreach=foreach,
        )
        for _ in range(2):
            param.grad = torch.randn(4, 4)
            opt.step()
    grad = torch.randn(4)
    grad.add_(torch.randn(4), alpha=FLOAT32_SAFE)  # Grokfast's lamb
    with pytest.raises(RuntimeError, match="overflow"):  # the failure the bounds keep away is real
        grad.add_(torch.randn(4), alpha=1e39)


INT_FIELDS = _float_fields(RunConfig, kind=int)


def test_the_int_walk_finds_the_int_fields():
    found = {path for path, _ in INT_FIELDS}
    assert {
        "seed",
        "task.modulus",
        "model.d_model",
        "optim.grokfast.window",
        "train.steps",
        "train.batch_size",
    } <= found
    assert {"train.checkpoints.every", "train.early_stop.patience", "optim.warmup_steps"} <= found


@pytest.mark.parametrize(("path", "position"), INT_FIELDS, ids=lambda x: str(x))
def test_every_int_field_is_bounded(path, position):
    # An int past float range broke the memory estimates (OverflowError); every count must fit int64 at least.
    text = finishes(parse_config, _set(path, position, 16**300), "x.yaml")
    assert text.startswith(f"x.yaml: {path}: Input should be less than or equal to "), text
    assert text.endswith("(got an integer of 1,201 bits)"), text


def test_odd_file_names_and_set_keys_stay_on_one_line(tmp_path):
    odd = tmp_path / "a\nb.yaml"
    assert one_line_error(load_config, odd) == f"{tmp_path}/a\\nb.yaml: no such config file"
    odd.write_text("name: ok\nseed: -1\n")
    assert one_line_error(load_config, odd).startswith(f"{tmp_path}/a\\nb.yaml: seed: Input should be greater")
    assert one_line_error(load_config, "a\0b.yaml") == "a\\x00b.yaml: no such config file"
    assert one_line_error(apply_overrides, {}, ["x\ny=[1"]) == "--set 'x\\ny': cannot parse value '[1'"
    assert one_line_error(apply_overrides, {"seed": 1}, ["seed.x\ny=1"]) == "--set 'seed.x\\ny': seed is not a section"
    text = one_line_error(apply_overrides, {}, ["seed=[" + "1, " * 10**5])
    assert text.startswith("--set seed: cannot parse value '[1, 1, ") and len(text) < 120, text
