"""The compact training loop: AdamW on a modular-arithmetic task, with metrics, checkpoints, early stop and resume.

:func:`train` is one function you can read top to bottom. Step ``s`` always means "after ``s`` optimizer updates":
metrics and checkpoints at step 0 describe the initial model. Batch order is a pure function of (seed, epoch), so a
resumed run needs no RNG state and continues bit for bit; on the CPU a run is bitwise reproducible for a seed,
in any process (see :func:`reproducible`).
"""

from __future__ import annotations

import platform
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from grokscope.callbacks import Callback
from grokscope.config import EarlyStopConfig, RunConfig, config_differences
from grokscope.errors import UserError
from grokscope.models import build_model, load_model
from grokscope.store import CONFIG_FILE, TRAINER_STATE_FILE, Run
from grokscope.tasks import Dataset, ModularTask, make_split
from grokscope.training.progress import TrainingProgress
from grokscope.training.summary import summarize

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

EVAL_CHUNK = 16_384  # rows per forward pass when evaluating; bounds memory for large moduli
METRICS_FLUSH_SECONDS = 10.0  # metrics.jsonl is rewritten at checkpoints and at least this often


@dataclass
class TrainResult:
    run: Run
    model: HookedTransformer
    summary: dict[str, Any]


@contextmanager
def reproducible(device: torch.device) -> Iterator[None]:
    """Deterministic kernels while training on the CPU, the caller's setting restored afterwards.

    TransformerLens embeds tokens by indexing ``W_E[tokens]``, whose backward accumulates rows in parallel: with
    two threads the gradient of W_E differed between processes in its last bits, so runs drifted apart. The
    deterministic kernel makes a seed give the same weights in every process. CUDA needs more than this flag
    (a cuBLAS workspace setting), so GPU runs are left as they are.
    """
    before, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device is available (use cpu or auto)")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise UserError(f"--device {device}: expected auto, cpu or cuda")
    return torch.device(device)


@torch.no_grad()
def evaluate(
    model: HookedTransformer, data: Dataset, task: ModularTask, loss_dtype: torch.dtype
) -> tuple[float, float]:
    """Mean loss (as trained) and answer accuracy of ``model`` on ``data``."""
    total_loss, correct = 0.0, 0
    for start in range(0, len(data), EVAL_CHUNK):
        chunk = data.subset(slice(start, start + EVAL_CHUNK))
        logits = model(chunk.tokens)
        total_loss += task.loss(logits, chunk.labels, loss_dtype, reduction="sum").item()
        correct += (logits[:, task.answer_position].argmax(-1) == chunk.answers).sum().item()
    return total_loss / (len(data) * len(task.loss_positions)), correct / len(data)


def train_step(
    model: HookedTransformer,
    optimizer: torch.optim.Optimizer,
    batch: Dataset,
    task: ModularTask,
    loss_dtype: torch.dtype,
    grad_clip: float | None = None,
    step: int = 0,
    callbacks: Sequence[Callback] = (),
) -> Tensor:
    """One optimizer update on ``batch``; returns the loss before the update (no host sync)."""
    loss = task.loss(model(batch.tokens), batch.labels, loss_dtype)
    loss.backward()
    for cb in callbacks:
        cb.on_after_backward(step, model)
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def batch_indices(step: int, n_train: int, batch_size: int | None, seed: int) -> Tensor | None:
    """Training-set indices of the minibatch for the update at ``step`` (``None``: full batch).

    Each epoch is a fresh permutation seeded by (seed, epoch): stateless, so resume needs no RNG state.
    """
    if batch_size is None or batch_size >= n_train:
        return None
    per_epoch = -(-n_train // batch_size)
    epoch, i = divmod(step, per_epoch)
    order = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return order[i * batch_size : (i + 1) * batch_size]


def early_stop_due(rows: list[dict[str, Any]], step: int, early: EarlyStopConfig | None) -> bool:
    """Whether the early-stop condition has held, without a break in the logged rows, for ``patience`` steps."""
    if early is None:
        return False
    since = None
    for row in rows:
        value = row.get(early.metric)
        met = value is not None and early.met(value)
        since = (row["step"] if since is None else since) if met else None
    return since is not None and step - since >= early.patience


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in ("grokscope", "torch", "transformer-lens"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "unknown"
    return out


def _start_run(config: RunConfig, run_dir: Path, resume: bool, overwrite: bool) -> tuple[Run, dict | None]:
    """Create the run directory, or reopen it for ``--resume``. Returns the run and its trainer state, if any."""
    if resume:
        if not (run_dir / CONFIG_FILE).is_file():
            raise UserError(f"--resume: {run_dir} holds no run to resume (no {CONFIG_FILE})")
        run = Run.open(run_dir)
        diffs = config_differences(run.config, config)
        if diffs:
            more = f" and {len(diffs) - 1} more" if len(diffs) > 1 else ""
            raise UserError(f"--resume: {run_dir} was made with another config ({diffs[0]}{more})")
        return run, run.load_trainer_state()
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir}: exists and is not a directory")
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise UserError(f"{run_dir}: already exists; pass --resume to continue it or --overwrite to start over")
        if not (run_dir / CONFIG_FILE).is_file():
            # --overwrite only ever deletes a run directory, never an arbitrary folder that happens to be there.
            raise UserError(f"--overwrite: {run_dir} is not a run directory (no {CONFIG_FILE}); refusing to delete it")
        shutil.rmtree(run_dir)
    task = ModularTask.from_config(config.task)
    t = config.task
    split = make_split(task.n_pairs, t.train_fraction, t.val_fraction, config.split_seed)
    return Run.create(run_dir, config, split), None


def train(
    config: RunConfig,
    run_dir: Path | str,
    *,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
) -> TrainResult:
    """Train one seed into ``run_dir`` and return the run, the final model and its grokking summary."""
    run_dir = Path(run_dir)
    dev = resolve_device(device)
    run, state = _start_run(config, run_dir, resume, overwrite)
    task = run.task
    tc, oc = config.train, config.optim
    loss_dtype = getattr(torch, tc.loss_dtype)

    data = task.dataset().to(dev)
    split = run.split()
    train_set, test_set = data.subset(split.train.to(dev)), data.subset(split.test.to(dev))
    val_set = data.subset(split.val.to(dev)) if len(split.val) else None

    # Resume from the trainer state's step, whose checkpoint was written just before it.
    if state is not None and not {"step", "optimizer", "wall_time_s"} <= state.keys():
        raise UserError(f"{run.root / TRAINER_STATE_FILE}: not a grokscope trainer state (missing keys)")
    start = 0 if state is None else int(state["step"])
    if state is None:
        model = build_model(config.model, task, seed=config.seed, device=dev)
    else:
        model = load_model(config.model, task, run.load_state_dict(start), device=dev)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=oc.lr, betas=oc.betas, eps=oc.eps, weight_decay=oc.weight_decay
    )
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    rows = [row for row in run.metrics() if row["step"] <= start] if state is not None else []
    wall_before = float(state["wall_time_s"]) if state is not None else 0.0
    early = tc.early_stop
    n_train = len(train_set)
    batches_per_epoch = 1 if tc.batch_size is None else -(-n_train // tc.batch_size)

    t0 = time.perf_counter()
    last_flush = t0

    def wall_time() -> float:
        return wall_before + time.perf_counter() - t0

    def record(step: int, final: bool) -> bool:
        """Log metrics and save checkpoints due at ``step``; return True when training should stop."""
        nonlocal last_flush
        stop = final
        if step % tc.eval_every == 0 or final:
            row: dict[str, Any] = {"step": step, "epoch": step / batches_per_epoch}
            row["train_loss"], row["train_acc"] = evaluate(model, train_set, task, loss_dtype)
            row["test_loss"], row["test_acc"] = evaluate(model, test_set, task, loss_dtype)
            if val_set is not None:
                row["val_loss"], row["val_acc"] = evaluate(model, val_set, task, loss_dtype)
            row["lr"] = optimizer.param_groups[0]["lr"]
            rows.append(row)
            bar.update(step, row)
            for cb in callbacks:
                cb.on_eval(step, model, row)
            stop = stop or early_stop_due(rows, step, early)
        if tc.checkpoints.due(step) or stop:
            # The trainer state is written last: it marks the checkpoint, metrics and recordings of this step as
            # complete, so a crash anywhere before it resumes from the previous checkpoint with nothing lost.
            run.save_checkpoint(step, model.state_dict())
            run.write_metrics(rows)
            for cb in callbacks:
                cb.on_checkpoint(step, model)
            run.save_trainer_state({"step": step, "optimizer": optimizer.state_dict(), "wall_time_s": wall_time()})
            last_flush = time.perf_counter()
        elif time.perf_counter() - last_flush > METRICS_FLUSH_SECONDS:
            run.write_metrics(rows)
            last_flush = time.perf_counter()
        return stop

    # A resumed run may already be complete (it crashed after its last checkpoint, before the summary).
    last_logged = rows[-1]["step"] if rows else start
    finished = state is not None and (start >= tc.steps or early_stop_due(rows, last_logged, early))
    with TrainingProgress(config.name, start, tc.steps, enabled=progress) as bar, reproducible(dev):
        for cb in callbacks:
            cb.on_train_begin(run, model, start)
        step = start
        stopped = record(0, final=False) if state is None else finished
        while not stopped:
            index = batch_indices(step, n_train, tc.batch_size, config.seed)
            batch = train_set if index is None else train_set.subset(index.to(dev))
            for group in optimizer.param_groups:
                group["lr"] = oc.lr * (min(1.0, (step + 1) / oc.warmup_steps) if oc.warmup_steps else 1.0)
            train_step(model, optimizer, batch, task, loss_dtype, oc.grad_clip, step, callbacks)
            step += 1
            for cb in callbacks:
                cb.on_step_end(step, model)
            stopped = record(step, final=step >= tc.steps)

    summary = summarize(rows)
    summary.update(
        steps_trained=rows[-1]["step"] if rows else 0,
        stopped_early=bool(rows) and rows[-1]["step"] < tc.steps,
        wall_time_s=wall_time() if not finished else wall_before,
        device=str(dev),
        versions=_versions(),
    )
    run.write_summary(summary)
    for cb in callbacks:
        cb.on_train_end(run, model, step)
    return TrainResult(run=run, model=model, summary=summary)
