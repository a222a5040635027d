"""What a run had logged by a step: the metric rows up to it and the settings the forecast reads.

:func:`read_trajectory` is the only place the forecast touches a run directory, and it drops every row past the
step asked for, so nothing later than ``--at`` can reach a prediction. Steps follow ``summary.json``: memorization
is the first logged step with train accuracy >= 99%, generalization the first with test accuracy >= 99%.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grokscope.errors import UserError
from grokscope.store import METRICS_FILE, Run, is_number
from grokscope.training.summary import first_step_at

MEMORIZE_AT = 0.99
GENERALIZE_AT = 0.99
# Columns every row the forecast reads must hold (``weight_norm`` is logged since the forecast was added).
COLUMNS = ("train_acc", "test_acc", "test_loss", "weight_norm")


@dataclass(frozen=True)
class Trajectory:
    """A run's rows with step <= :attr:`at` and its settings (what the predictor's domain is checked against)."""

    name: str
    rows: list[dict[str, Any]]
    at: int
    budget: int
    settings: dict[str, Any]

    @property
    def eval_every(self) -> int:
        return int(self.settings["train.eval_every"])

    @property
    def memorization_step(self) -> int | None:
        return first_step_at(self.rows, "train_acc", MEMORIZE_AT)

    @property
    def generalization_step(self) -> int | None:
        """The first logged step (at or before :attr:`at`) with test accuracy >= 99%."""
        return first_step_at(self.rows, "test_acc", GENERALIZE_AT)

    def until(self, step: int) -> Trajectory:
        """The same run as it stood at ``step`` (rows past it dropped)."""
        rows = [row for row in self.rows if row["step"] <= step]
        return Trajectory(self.name, rows, rows[-1]["step"] if rows else 0, self.budget, self.settings)


# Config fields that cannot change how a run learns (names, seeds, saving, stopping) or whose change the forecast
# reads from the run itself (the budget): left out of the settings the predictor's domain is checked against.
IGNORED = (
    "name",
    "seed",
    "task.split_seed",
    "model.perturbation_seed",
    "train.steps",
    "train.checkpoints",
    "train.early_stop",
    "train.log",
    "train.tf32",
)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{path}."))
        else:
            out[path] = list(value) if isinstance(value, tuple) else value
    return out


def settings_of(run: Run) -> dict[str, Any]:
    """The config fields a forecast depends on, by dotted path (``optim.lr``, ``task.modulus``, ...)."""
    flat = flatten(run.config.model_dump(mode="json"))
    return {k: v for k, v in flat.items() if not any(k == i or k.startswith(f"{i}.") for i in IGNORED)}


def read_trajectory(path: Path | str, at: int | None = None) -> Trajectory:
    """The run at ``path`` as it stood at step ``at`` (default: its last logged step); one-line errors for a run
    that is not one, has no metrics, or whose rows lack the columns the forecast reads."""
    path = Path(path)
    run = Run.open(path)
    if not (run.root / METRICS_FILE).is_file():
        raise UserError(f"{path}: no {METRICS_FILE}; nothing to forecast from")
    if at is not None and at < 0:
        raise UserError(f"--at {at}: a step is 0 or more")
    rows = [row for row in run.metrics() if at is None or row["step"] <= at]
    if not rows:
        raise UserError(f"{path}: no metrics row at or before step {at}")
    for row in rows:
        for column in COLUMNS:
            if not is_number(row.get(column)):
                hint = (
                    " (logged since grokscope's forecast was added; retrain the run)" if column == "weight_norm" else ""
                )
                raise UserError(f"{path / METRICS_FILE}: step {row['step']} has no number in {column!r}{hint}")
    return Trajectory(run.root.name, rows, rows[-1]["step"], run.config.train.steps, settings_of(run))
