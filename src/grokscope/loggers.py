"""Experiment logging: training callbacks that send every evaluation's metrics to TensorBoard or Weights & Biases.

``grokscope train CONFIG --log tensorboard`` writes event files into ``<run>/tensorboard/`` (``tensorboard --logdir
runs`` shows every run side by side); ``--log wandb`` writes a W&B run into ``<run>/wandb/``, offline unless
``WANDB_MODE`` says otherwise (``wandb sync`` uploads it later). Both are optional extras (``grokscope[tensorboard]``,
``grokscope[wandb]``); the run directory's own ``metrics.jsonl`` is written either way and stays the record.

Each metrics row becomes scalars named by :func:`metric_tag`: ``loss/train``, ``acc/test``, per operation
``acc/test/sub``, and ``lr``, ``epoch``. A logger is a :class:`~grokscope.callbacks.Callback`, so it attaches where
recorders do: ``train(config, run_dir, callbacks=make_loggers(["tensorboard"]))``.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grokscope.callbacks import Callback
from grokscope.errors import UserError

if TYPE_CHECKING:
    from grokscope.models import GrokTransformer
    from grokscope.store import Run

LOGGERS = ("tensorboard", "wandb")
TENSORBOARD_DIR = "tensorboard"  # in the run directory
WANDB_DIR = "wandb"  # what wandb creates in the folder it is given (the run directory)
WANDB_ID_FILE = "id"  # in WANDB_DIR: the W&B run id, so that a resumed run logs under the same id
WANDB_PROJECT = "grokscope"

# What pip installs for each logger, and the module that tells whether it is there.
_PACKAGES = {"tensorboard": ("tensorboard", "grokscope[tensorboard]"), "wandb": ("wandb", "grokscope[wandb]")}
_SPLIT_METRIC = re.compile(r"(train|test|val)_(loss|acc)(?:_(.+))?")


def metric_tag(key: str) -> str:
    """The name a metrics-row column is logged under: ``{loss|acc}/{split}[/{operation}]`` for losses and
    accuracies, so that a dashboard groups train, test and every operation of a quantity in one section; any other
    column (``lr``, ``epoch``) by its own name."""
    m = _SPLIT_METRIC.fullmatch(key)
    if m is None:
        return key
    split, metric, operation = m.groups()
    return f"{metric}/{split}" + (f"/{operation}" if operation else "")


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """A metrics row's numbers by :func:`metric_tag` (``step`` is the x axis, not a scalar; a missing value is
    skipped, a non-finite loss is kept: a diverging run should show as one)."""
    return {
        metric_tag(key): float(value)
        for key, value in row.items()
        if key != "step" and isinstance(value, int | float) and not isinstance(value, bool)
    }


def _summary_numbers(summary: dict[str, Any] | None) -> dict[str, Any]:
    """What a dashboard's run table wants from ``summary.json``: the regime and the steps where it happened."""
    if not summary:
        return {}
    keys = ("regime", "memorization_step", "generalization_step", "generalization_ratio", "steps_trained")
    out = {k: summary[k] for k in keys if summary.get(k) is not None}
    final = summary.get("final") or {}
    out.update({f"final/{metric_tag(k)}": v for k, v in final.items() if k != "step" and isinstance(v, int | float)})
    return {k: v for k, v in out.items() if not (isinstance(v, float) and not math.isfinite(v))}


def check_writable_folder(folder: Path, what: str) -> None:
    """Make ``folder`` (its parent exists) unless it is there, and write and remove a file in it; a one-line
    :class:`UserError` naming it when that fails. A logger's writer runs on a thread of its own, which would report
    the failure as a traceback (and name the file as ``b'...'``) beside the error the training loop raises."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder}: is not a folder, so {what} cannot be written there")
    probe = folder / f".grokscope-write-test-{uuid.uuid4().hex[:12]}"
    try:
        folder.mkdir(exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        reason = (err.strerror or type(err).__name__).lower()
        raise UserError(f"{folder}: cannot write {what} there ({reason})") from None


class TensorBoardLogger(Callback):
    """Writes each evaluation's metrics as TensorBoard scalars into ``<run>/tensorboard/``; the config and the
    grokking summary as text.

    A fresh start (step 0: a new run, ``--overwrite``) first removes the event files an earlier start of this run left
    there; a resumed run appends, and marks the resume step so that TensorBoard drops what the interrupted process
    logged after its last checkpoint (``purge_step``: those steps are trained and logged again).
    """

    def __init__(self, folder: str = TENSORBOARD_DIR) -> None:
        self.folder = folder
        self._writer: Any = None

    def on_train_begin(self, run: Run, model: GrokTransformer, step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        log_dir = run.root / self.folder
        check_writable_folder(log_dir, "TensorBoard's event files")  # before its writer thread fails on its own
        if step == 0 and log_dir.is_dir():
            for stale in log_dir.glob("events.out.tfevents.*"):
                stale.unlink()
        self._writer = SummaryWriter(log_dir=str(log_dir), purge_step=step + 1 if step > 0 else None)
        if step == 0:
            config = "\n".join(f"    {line}" for line in run.config.to_yaml().splitlines())  # markdown code block
            self._writer.add_text("config", config, global_step=0)

    def on_eval(self, step: int, model: GrokTransformer, metrics: dict[str, Any]) -> None:
        for tag, value in scalars(metrics).items():
            self._writer.add_scalar(tag, value, global_step=step)

    def on_checkpoint(self, step: int, model: GrokTransformer) -> None:
        self._writer.flush()  # what a checkpoint keeps, the events keep: a killed run resumes from here

    def on_train_end(self, run: Run, model: GrokTransformer, step: int) -> None:
        summary = run.summary()
        if summary:
            from grokscope.training.summary import describe

            self._writer.add_text("summary", describe(summary), global_step=step)
        self._writer.close()
        self._writer = None


class WandbLogger(Callback):
    """Logs each evaluation's metrics to a Weights & Biases run in ``<run>/wandb/`` (project ``grokscope``, named
    after the run directory, the resolved config as the run's config, the grokking summary in its summary).

    ``mode`` is W&B's: ``offline`` (the default unless ``WANDB_MODE`` is set) writes files only, for ``wandb sync``;
    ``online`` streams. The run id is kept in ``<run>/wandb/id``, so a resumed run logs under the same id.
    """

    def __init__(self, project: str = WANDB_PROJECT, mode: str | None = None) -> None:
        self.project = project
        self.mode = mode or os.environ.get("WANDB_MODE") or "offline"
        self._run: Any = None

    def on_train_begin(self, run: Run, model: GrokTransformer, step: int) -> None:
        import wandb

        folder = run.root / WANDB_DIR
        folder.mkdir(exist_ok=True)
        id_file = folder / WANDB_ID_FILE
        if step > 0 and id_file.is_file():
            run_id = id_file.read_text(encoding="utf-8").strip()
        else:
            run_id = uuid.uuid4().hex[:12]
            id_file.write_text(run_id + "\n", encoding="utf-8")
        self._run = wandb.init(
            project=self.project,
            name=run.root.name,
            id=run_id,
            resume="allow",
            dir=str(run.root),
            config=run.config.to_dict(),
            mode=self.mode,
            # console="off": wandb must not wrap stdout/stderr (the progress bar and the CLI's lines are ours)
            settings=wandb.Settings(silent=True, console="off"),
        )

    def on_eval(self, step: int, model: GrokTransformer, metrics: dict[str, Any]) -> None:
        self._run.log(scalars(metrics), step=step)

    def on_train_end(self, run: Run, model: GrokTransformer, step: int) -> None:
        import wandb

        self._run.summary.update(_summary_numbers(run.summary()))
        self._run.finish()
        self._run = None
        # finish() can return before W&B's service process has written the run's file: wait for it, so that the run
        # is on disk when training returns (the next run starts a new service).
        wandb.teardown()


def check_available(names: Sequence[str], where: str = "--log") -> None:
    """A one-line error for an unknown logger, or one whose package is not installed (before any run starts)."""
    for name in names:
        if name not in LOGGERS:
            raise UserError(f"{where} {name}: unknown logger (known: {', '.join(LOGGERS)})")
        module, extra = _PACKAGES[name]
        if importlib.util.find_spec(module) is None:
            raise UserError(f"{where} {name}: needs the {module} package (pip install '{extra}')")


def make_loggers(names: Sequence[str], where: str = "--log") -> list[Callback]:
    """Fresh logger callbacks for one run, by name (``tensorboard``, ``wandb``), each once."""
    check_available(names, where)
    return [TensorBoardLogger() if name == "tensorboard" else WandbLogger() for name in dict.fromkeys(names)]
