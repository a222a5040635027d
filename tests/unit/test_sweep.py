"""Sweep specs without training: grid expansion, run naming, validation, the regime grid and the results table."""

import csv
import io
import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from grokscope.config import first_error
from grokscope.errors import UserError
from grokscope.experiments.sweep import (
    RunResult,
    SweepConfig,
    condition_label,
    expand,
    field_aliases,
    format_value,
    plan,
    regime_summary,
    regime_table,
    results_csv,
    run_name,
    swept_fields,
)

BASE = {
    "name": "tinypower",
    "task": {"operation": "add", "modulus": 7, "format": "power", "train_fraction": 0.5},
    "model": {"preset": "power", "n_layers": 1, "d_model": 16, "n_heads": 2, "d_head": 8, "d_mlp": 32},
    "train": {"steps": 20, "eval_every": 5},
}
SAFE = re.compile(r"^[A-Za-z0-9._,+=-]+$")


def sweep(**fields):
    return SweepConfig.model_validate({"kind": "sweep", "base": "base.yaml", **fields})


@pytest.fixture
def sweep_file(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    return tmp_path / "sweep.yaml"


def test_grid_is_the_cartesian_product_last_field_fastest():
    config = sweep(
        grid={"task.loss_on": ["answer", "all"], "optim.weight_decay": [0, 1], "train.batch_size": [None, 8, 16]}
    )
    points = expand(config)
    assert len(points) == 12
    assert points[0] == {"task.loss_on": "answer", "optim.weight_decay": 0, "train.batch_size": None}
    assert points[1] == {"task.loss_on": "answer", "optim.weight_decay": 0, "train.batch_size": 8}
    assert points[3] == {"task.loss_on": "answer", "optim.weight_decay": 1, "train.batch_size": None}
    assert points[-1] == {"task.loss_on": "all", "optim.weight_decay": 1, "train.batch_size": 16}
    assert swept_fields(config) == ["task.loss_on", "optim.weight_decay", "train.batch_size"]


def test_explicit_runs_and_no_sweep():
    config = sweep(runs=[{"optim.weight_decay": 0}, {"optim.weight_decay": 1, "train.batch_size": 8}, {}])
    assert expand(config) == [{"optim.weight_decay": 0}, {"optim.weight_decay": 1, "train.batch_size": 8}, {}]
    assert swept_fields(config) == ["optim.weight_decay", "train.batch_size"]
    assert expand(sweep()) == [{}] and swept_fields(sweep()) == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"grid": {"optim.lr": [1]}, "runs": [{"optim.lr": 1}]}, "grid, runs"),
        ({"grid": {"optim.lr": []}}, "grid.optim.lr"),
        ({"grid": {"seed": [0, 1]}}, "seeds"),
        ({"runs": [{"name": "x"}]}, "runs.0.name"),
        ({"grid": {"optim..lr": [1]}}, "not a field path"),
        ({"grid": {"optim.lr": 1}}, "grid.optim.lr"),
        ({"seeds": [0, 0]}, "seeds"),
        ({"seeds": [-1]}, "seeds"),
        ({"rules": {"grok_ratio": 0.5}}, "grok_ratio"),
        ({"rules": {"nope": 1}}, "rules.nope"),
        ({"epochs": 3}, "epochs"),
    ],
)
def test_bad_sweep_specs_are_rejected(fields, message):
    with pytest.raises(ValidationError) as err:
        sweep(**fields)
    assert message in first_error(err.value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.001, "1e-3"),
        (1e-3, "1e-3"),
        (0.0003, "3e-4"),
        (1.0, "1"),
        (0, "0"),
        (0.0, "0"),
        (0.3, "0.3"),
        (2.5, "2.5"),
        (1e-5, "1e-5"),
        (1000.0, "1e3"),
        (512, "512"),
        (None, "none"),
        (True, "true"),
        ("answer", "answer"),
        ("a/b c", "a-b-c"),
        ([0.9, 0.98], "0.9,0.98"),
    ],
)
def test_values_are_formatted_compactly(value, text):
    assert format_value(value) == text


def test_aliases_are_short_unless_they_collide():
    assert field_aliases(["optim.weight_decay", "train.batch_size", "task.loss_on", "model.n_layers"]) == {
        "optim.weight_decay": "wd",
        "train.batch_size": "bs",
        "task.loss_on": "loss_on",
        "model.n_layers": "layers",
    }
    assert field_aliases(["optim.grokfast.alpha", "x.alpha", "optim.lr"]) == {
        "optim.grokfast.alpha": "optim.grokfast.alpha",
        "x.alpha": "x.alpha",
        "optim.lr": "lr",
    }


def test_names_are_stable_safe_and_compact():
    aliases = field_aliases(["optim.weight_decay", "task.loss_on", "train.batch_size"])
    label = condition_label({"optim.weight_decay": 1.0, "task.loss_on": "all", "train.batch_size": 512}, aliases)
    assert run_name(label, 0) == "wd=1_loss_on=all_bs=512_seed0"
    assert run_name(condition_label({}, {}), 3) == "seed3"
    long = condition_label({"optim.lr": "x" * 500}, {"optim.lr": "lr"})
    assert len(long) <= 120 and SAFE.match(long)
    assert long != condition_label({"optim.lr": "x" * 499}, {"optim.lr": "lr"})


def test_planned_runs_are_unique_safe_and_resolved(sweep_file, tmp_path):
    config = sweep(
        grid={
            "optim.weight_decay": [0, 1e-3, 1],
            "task.loss_on": ["answer", "all"],
            "train.batch_size": [None, 8],
            "task.train_fraction": [0.3, 0.5],
        },
        seeds=[0, 1],
    )
    planned_sweep = plan(config, sweep_file)
    fields, planned = planned_sweep.fields, planned_sweep.runs
    assert fields == ["optim.weight_decay", "task.loss_on", "train.batch_size", "task.train_fraction"]
    names = [p.name for p in planned]
    assert len(planned) == 3 * 2 * 2 * 2 * 2 and len(set(names)) == len(names)
    assert all(SAFE.match(n) for n in names)
    assert names[0] == "wd=0_loss_on=answer_bs=none_frac=0.3_seed0"
    assert names[1] == "wd=0_loss_on=answer_bs=none_frac=0.3_seed1"
    first = planned[0]
    assert first.config.seed == 0 and planned[1].config.seed == 1
    assert first.config.optim.weight_decay == 0 and first.config.task.train_fraction == 0.3
    assert planned[-1].config.task.loss_on == "all" and planned[-1].config.train.batch_size == 8
    # The seeds of a condition share their config but for the seed (train_many trains them together).
    assert first.config.with_seed(0) == planned[1].config.with_seed(0)
    # Planning twice gives the same names.
    assert [p.name for p in plan(config, sweep_file).runs] == names


def test_set_applies_to_every_run_and_runs_fill_in_base_values(sweep_file, tmp_path):
    config = sweep(set=["train.steps=7"], runs=[{"optim.weight_decay": 0}, {"train.batch_size": 4}])
    planned = plan(config, sweep_file).runs
    assert [p.config.train.steps for p in planned] == [7, 7]
    # A field one run leaves alone takes the base value, and it is still part of the name.
    assert [p.name for p in planned] == ["wd=0_bs=none_seed0", "wd=1_bs=4_seed0"]


@pytest.mark.parametrize(
    ("grid", "field"),
    [
        ({"optim.weight_decay": [1, -1]}, "optim.weight_decay"),
        ({"optim.wd": [1]}, "optim.wd: unknown key"),
        ({"train.batch_size": ["big"]}, "train.batch_size"),
        ({"task.format": ["power", "nanda"], "task.loss_on": ["all"]}, "task.loss_on"),
        ({"task.train_fraction": [0.999]}, "task.train_fraction"),
        ({"task.modulus.x": [1]}, "modulus is not a section"),
    ],
)
def test_invalid_overrides_name_the_run_and_the_field(sweep_file, tmp_path, grid, field):
    with pytest.raises(UserError) as err:
        plan(sweep(grid=grid), sweep_file)
    message = str(err.value)
    assert "\n" not in message and str(sweep_file) in message and "run " in message and field in message


def test_bad_set_and_base_are_user_errors(sweep_file, tmp_path):
    with pytest.raises(UserError, match="set"):
        plan(sweep(set=["nonsense"]), sweep_file)
    with pytest.raises(UserError, match="no such config file"):
        plan(sweep(base="missing.yaml"), sweep_file)


def test_duplicate_names_are_refused(sweep_file, tmp_path):
    with pytest.raises(UserError, match="share the directory"):
        plan(sweep(grid={"optim.weight_decay": [1, 1.0]}), sweep_file)


def result(condition, values, seed, regime, g=None, status="ok"):
    return RunResult(
        name=f"{condition}_seed{seed}",
        condition=condition,
        values=values,
        seed=seed,
        status=status,
        regime=regime if status == "ok" else None,
        generalization_step=g,
        steps_trained=1000,
        error=None if status == "ok" else "RuntimeError: boom",
    )


def test_regime_grid_and_table():
    fields = ["task.loss_on", "optim.weight_decay"]
    runs = []
    for loss_on in ("answer", "all"):
        for wd in (0, 1):
            for seed in (0, 1):
                values = {"task.loss_on": loss_on, "optim.weight_decay": wd}
                cond = f"loss_on={loss_on}_wd={wd}"
                if loss_on == "all" and wd == 0:
                    runs.append(result(cond, values, seed, "memorization_only"))
                else:
                    runs.append(result(cond, values, seed, "instant_generalization", g=100 + 100 * seed))
    runs[0] = result(runs[0].condition, runs[0].values, 0, None, status="failed")
    grid = regime_summary(runs, fields)
    table = grid["table"]
    assert table["row_labels"] == ["loss_on=answer", "loss_on=all"]
    assert table["column_labels"] == ["wd=0", "wd=1"]
    assert table["counts"] == [
        [{"instant_generalization": 1, "failed": 1}, {"instant_generalization": 2}],
        [{"memorization_only": 2}, {"instant_generalization": 2}],
    ]
    assert table["median_generalization_step"] == [[200.0, 100.0], [None, 100.0]]
    assert table["generalized"] == [[1, 2], [0, 2]]
    assert [c["condition"] for c in grid["by_condition"]] == [
        "loss_on=answer_wd=0",
        "loss_on=answer_wd=1",
        "loss_on=all_wd=0",
        "loss_on=all_wd=1",
    ]
    assert grid["by_field"]["optim.weight_decay"][0] == {
        "value": 0,
        "regimes": {"instant_generalization": 1, "memorization_only": 2, "failed": 1},
    }
    lines = regime_table(table)
    assert lines[0].split() == ["wd=0", "wd=1"]
    assert lines[2].split() == ["loss_on=all", "2", "memo", "2", "instant"]


def test_results_csv_has_one_row_per_run_and_a_column_per_field():
    runs = [
        result("wd=0", {"optim.weight_decay": 0}, 0, "grokking", g=300),
        result("wd=1", {}, 0, None, status="failed"),
    ]
    runs[1].values = {"optim.weight_decay": 1}
    rows = list(csv.DictReader(io.StringIO(results_csv(runs, ["optim.weight_decay"]))))
    assert [r["name"] for r in rows] == ["wd=0_seed0", "wd=1_seed0"]
    assert rows[0]["optim.weight_decay"] == "0" and rows[0]["regime"] == "grokking"
    assert rows[0]["generalization_step"] == "300" and rows[0]["status"] == "ok"
    assert rows[1]["status"] == "failed" and rows[1]["error"] == "RuntimeError: boom" and rows[1]["regime"] == ""
    for column in ("memorization_step", "steps_to_99_test", "final_test_acc", "loss_bound", "loss_floor"):
        assert column in rows[0]


@pytest.mark.parametrize(("name", "n_runs"), [("conditions_sweep", 24), ("conditions_sweep_quick", 8)])
def test_shipped_sweep_configs_plan(name, n_runs, tmp_path):
    path = Path(__file__).parents[2] / "configs" / f"{name}.yaml"
    config = SweepConfig.model_validate(yaml.safe_load(path.read_text()))
    planned_sweep = plan(config, path)
    fields, planned = planned_sweep.fields, planned_sweep.runs
    assert fields == ["task.loss_on", "optim.weight_decay", "train.batch_size"]
    assert len(planned) == n_runs
    assert {p.config.task.format for p in planned} == {"power"}


def test_bad_sweep_file_is_a_one_line_user_error_through_the_dispatch(sweep_file, tmp_path):
    from grokscope.experiments import run

    sweep_file.write_text(yaml.safe_dump({"kind": "sweep", "base": "base.yaml", "grid": {"optim.lr": 1e-3}}))
    with pytest.raises(UserError) as err:
        run(sweep_file, tmp_path / "out")
    assert str(err.value) == f"{sweep_file}: grid.optim.lr: Input should be a valid list (got 0.001)"
    sweep_file.write_text(yaml.safe_dump({"kind": "sweep", "base": "base.yaml", "grid": {"optim.lr": [-1]}}))
    with pytest.raises(UserError, match=r"run 0 \(lr=-1\): optim.lr"):
        run(sweep_file, tmp_path / "out")
    assert not (tmp_path / "out" / "sweep").exists()
