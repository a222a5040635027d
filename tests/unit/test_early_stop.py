"""Early stop on a run-wide or a per-operation metric: the config's checks and ``early_stop_due`` on known rows."""

import pytest

from conftest import tiny_config
from grokscope.config import EarlyStopConfig, parse_config, split_metric
from grokscope.errors import UserError
from grokscope.training.loop import early_stop_due


def _rows(test_acc: list[float], test_acc_sub: list[float] | None = None, every: int = 10) -> list[dict]:
    rows = [{"step": i * every, "test_acc": v} for i, v in enumerate(test_acc)]
    for row, v in zip(rows, test_acc_sub or [], strict=False):
        row["test_acc_sub"] = v
    return rows


def test_split_metric_names_the_operation():
    assert split_metric("test_acc") == ("test_acc", None)
    assert split_metric("test_acc_sub") == ("test_acc", "sub")
    assert split_metric("val_loss_add") == ("val_loss", "add")
    with pytest.raises(ValueError, match="unknown metric 'test_acc_pow'"):
        split_metric("test_acc_pow")
    with pytest.raises(ValueError, match="unknown metric 'accuracy'"):
        split_metric("accuracy")


def test_a_per_operation_metric_stops_where_the_run_wide_one_never_would():
    # A replay twin: the held-out add pairs keep test_acc under 0.999 for good; sub's own rows reach it at step 30.
    test_acc = [0.1, 0.5, 0.8, 0.9, 0.92, 0.93, 0.93, 0.93]
    test_acc_sub = [0.1, 0.6, 0.95, 1.0, 1.0, 1.0, 1.0, 1.0]
    rows = _rows(test_acc, test_acc_sub)
    per_op = EarlyStopConfig(metric="test_acc_sub", threshold=0.999, patience=20)
    run_wide = EarlyStopConfig(metric="test_acc", threshold=0.999, patience=20)
    ops = ["add", "sub"]
    # Met from step 30: due once 20 steps have passed with it met, i.e. at step 50 and not before.
    due = [row["step"] for i, row in enumerate(rows) if early_stop_due(rows[: i + 1], row["step"], per_op, ops)]
    assert due[0] == 50
    assert not any(early_stop_due(rows[: i + 1], row["step"], run_wide, ops) for i, row in enumerate(rows))


def test_a_single_operation_task_reads_its_operation_metric_from_the_run_wide_column():
    # A task of sub alone logs test_acc only (no test_acc_sub column): the same rule stops it at the same step.
    rows = _rows([0.1, 0.6, 0.95, 1.0, 1.0, 1.0, 1.0])
    early = EarlyStopConfig(metric="test_acc_sub", threshold=0.999, patience=20)
    assert early.row_key(["sub"]) == "test_acc" and early.row_key(["add", "sub"]) == "test_acc_sub"
    due = [row["step"] for i, row in enumerate(rows) if early_stop_due(rows[: i + 1], row["step"], early, ["sub"])]
    assert due[0] == 50
    # Without the task's operations the metric is read as named: no such column, never due.
    assert not early_stop_due(rows, 60, early)


def test_a_row_without_the_metric_breaks_the_run_of_met_rows():
    rows = _rows([0.0] * 6, [1.0, 1.0, 1.0])  # test_acc_sub logged up to step 20 only
    rows.append({"step": 60, "test_acc": 0.0, "test_acc_sub": 1.0})
    early = EarlyStopConfig(metric="test_acc_sub", threshold=0.999, patience=10)
    assert early_stop_due(rows[:3], 20, early, ["add", "sub"])
    assert not early_stop_due(rows[:6], 50, early, ["add", "sub"])
    assert early_stop_due(rows, 70, early, ["add", "sub"]) and not early_stop_due(rows, 69, early, ["add", "sub"])


def test_a_per_operation_loss_stops_at_or_below_its_threshold():
    early = EarlyStopConfig(metric="train_loss_add", threshold=0.01, patience=0)
    assert early.met(0.01) and early.met(0.001) and not early.met(0.02)
    assert EarlyStopConfig(metric="train_acc_add", threshold=0.9).met(0.95)


@pytest.mark.parametrize(
    ("task", "metric", "message"),
    [
        (
            {"operation": ["add", "sub"]},
            "test_acc_mul",
            "train.early_stop.metric: test_acc_mul is measured on operation mul, which this task does not train "
            "(its operations: add, sub)",
        ),
        ({"operation": "sub"}, "test_acc_add", "(its operations: sub)"),
        ({"operation": ["add", "sub"]}, "test_acc_pow", "train.early_stop.metric: unknown metric 'test_acc_pow'"),
        ({"operation": ["add", "sub"]}, "val_acc_sub", "train.early_stop.metric: a val_* metric needs"),
    ],
)
def test_config_refuses_a_metric_the_task_does_not_log(task, metric, message):
    data = tiny_config(task=task).to_dict()
    data["train"]["early_stop"] = {"metric": metric, "threshold": 0.99, "patience": 0}
    with pytest.raises(UserError) as err:
        parse_config(data, source="x.yaml")
    text = str(err.value)
    assert text.startswith("x.yaml: ") and message in text and "\n" not in text, text


@pytest.mark.parametrize(
    ("task", "metric"),
    [({"operation": ["add", "sub"]}, "test_acc_sub"), ({"operation": "sub"}, "test_acc_sub"), ({}, "train_loss")],
)
def test_config_accepts_metrics_the_task_logs(task, metric):
    data = tiny_config(task=task).to_dict()
    data["train"]["early_stop"] = {"metric": metric, "threshold": 0.99, "patience": 0}
    assert parse_config(data).train.early_stop.metric == metric
    # The resolved config.yaml round-trips.
    assert parse_config(parse_config(data).to_dict()).train.early_stop.metric == metric
