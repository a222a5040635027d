"""The compact training loop: AdamW on a modular-arithmetic task, with metrics, checkpoints, early stop and resume.

:func:`train` is one function you can read top to bottom; :mod:`grokscope.training.many` trains many seeds at once
with the same pieces (:class:`Objective`, :func:`evaluate`, :class:`RunLog`). Step ``s`` always means "after ``s``
optimizer updates": metrics and checkpoints at step 0 describe the initial model. Batch order is a pure function of
(seed, epoch), so a resumed run needs no RNG state and continues bit for bit; on the CPU a run is bitwise
reproducible for a seed, in any process with the same CPU kind, thread count and torch version (see
:func:`reproducible` and :func:`environment`, which the run records).
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from grokscope import forward
from grokscope.callbacks import Callback
from grokscope.config import EarlyStopConfig, OptimConfig, RunConfig
from grokscope.errors import UserError
from grokscope.losses import loss_function
from grokscope.memory import EVAL_ELEMENTS, check_training_fits
from grokscope.models import build_model, component_parameters, load_model, transplant
from grokscope.rundir import claim, will_resume
from grokscope.store import (
    SUMMARY_FILE,
    TRAINED_WITH,
    TRAINER_STATE_FILE,
    Run,
    load_checkpoint,
    read_checkpoint_header,
)
from grokscope.tasks import Dataset, ModularTask, Split
from grokscope.training.accelerators import (
    GradientFilter,
    GrokfastEMA,
    GrokfastMA,
    OrthoGrad,
    chain,
)
from grokscope.training.progress import TrainingProgress
from grokscope.training.stopping import StopSignals, non_finite_loss
from grokscope.training.summary import summarize

if TYPE_CHECKING:
    from grokscope.models import GrokTransformer

METRICS_FLUSH_SECONDS = 10.0  # metrics.jsonl is rewritten at checkpoints and at least this often


@dataclass
class TrainResult:
    run: Run
    model: GrokTransformer  # the final weights; for a diverged run, those of its last (finite) checkpoint
    summary: dict[str, Any]
    resumed_from: int | None = None  # the step a resumed run continued from; None when it started afresh

    @property
    def diverged(self) -> dict[str, Any] | None:
        """``{"step", "metric", "last_checkpoint"}`` when training stopped on a non-finite loss or weights."""
        return self.summary.get("diverged")


@contextmanager
def tf32_matmuls(enabled: bool) -> Iterator[None]:
    """TF32 tensor-core matmuls on CUDA while training (``train.tf32``), the caller's setting restored afterwards.

    Roughly 1e-3 relative precision in each product: faster on Ampere and later GPUs, and not bitwise comparable
    with float32 runs. No effect on the CPU.
    """
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled or before
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


@contextmanager
def reproducible(device: torch.device) -> Iterator[None]:
    """Deterministic kernels while training on the CPU, the caller's setting restored afterwards.

    TransformerLens embeds tokens by indexing ``W_E[tokens]``, whose backward accumulates rows in parallel: with
    two threads the gradient of W_E differed between processes in its last bits, so runs drifted apart. The
    deterministic kernel makes a seed give the same weights in every process. It does not make the digits
    independent of the thread count or the CPU's kernels: the quickstart ends at 100% test accuracy with one thread
    and 99.62% with two on the same CPU. CUDA needs more than this flag (a cuBLAS workspace setting), so GPU runs
    are left as they are.
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


@dataclass(frozen=True)
class Objective:
    """The training loss: cross-entropy (over softmax or StableMax, :mod:`grokscope.losses`) at the task's loss
    positions, in ``dtype``."""

    task: ModularTask
    dtype: torch.dtype = torch.float32
    loss_fn: str = "softmax"

    @classmethod
    def of(cls, config: RunConfig, task: ModularTask) -> Objective:
        return cls(task, getattr(torch, config.train.loss_dtype), config.train.loss_fn)

    @property
    def window(self) -> slice:
        """The loss positions, always contiguous: the only logits the forward has to compute."""
        positions = self.task.loss_positions
        return slice(positions[0], positions[-1] + 1)

    def row_losses(
        self, logits: Float[Tensor, "n batch q vocab"], labels: Int[Tensor, "n batch pos"]
    ) -> Float[Tensor, "n batch"]:
        """Each row's loss, averaged over its loss positions."""
        n, batch, q, _ = logits.shape
        # Never below the logits' own precision: a float64 model keeps a float64 loss.
        dtype = torch.promote_types(logits.dtype, self.dtype)
        flat_logits, flat_labels = logits.to(dtype).flatten(0, 2), labels[..., self.window].flatten()
        flat = loss_function(self.loss_fn)(flat_logits, flat_labels, reduction="none")
        return flat.view(n, batch, q).mean(-1)

    def loss(self, logits: Float[Tensor, "n batch q vocab"], labels: Int[Tensor, "n batch pos"]) -> Float[Tensor, " n"]:
        """Each model's mean loss on its batch."""
        return self.row_losses(logits, labels).mean(-1)


Forward = Callable[[Tensor], Tensor]  # tokens (n, batch, pos) -> logits (n, batch, q, vocab) at the loss window


def model_forward(model: GrokTransformer, objective: Objective) -> Forward:
    """The model's one forward (:mod:`grokscope.forward`) through its own parameters, at the loss window only,
    without hooks."""
    arch, window = model.cfg.architecture(), objective.window
    return lambda tokens: forward.logits(forward.parameter_views(model), tokens, arch, window)


@torch.no_grad()
def evaluate(
    model_logits: Forward, n_models: int, data: Dataset, splits: Sequence[Split], objective: Objective
) -> list[dict[str, float]]:
    """Loss (as trained) and answer accuracy of each model on its own train/test(/val) split of ``data``.

    Every input goes through every model once, in chunks that bound memory; the splits then pick rows.
    """
    task = objective.task
    answer = task.answer_position - objective.window.start
    chunk = max(1, EVAL_ELEMENTS // (n_models * task.d_vocab_out * len(task.loss_positions)))
    losses, hits = [], []
    for start in range(0, len(data), chunk):
        part = data.subset(slice(start, start + chunk))
        logits = model_logits(part.tokens.expand(n_models, -1, -1))
        losses.append(objective.row_losses(logits, part.labels.expand(n_models, -1, -1)))
        hits.append(logits[:, :, answer].argmax(-1) == part.answers)
    loss, hit = torch.cat(losses, dim=1), torch.cat(hits, dim=1)
    # A multi-operation task also reports each operation: train_acc_add, test_loss_sub, ...
    operations = list(enumerate(task.operation_names)) if task.is_multi else []
    rows = []
    for i, split in enumerate(splits):
        row = {}
        for name, index in (("train", split.train), ("test", split.test), ("val", split.val)):
            index = index.to(loss.device)
            # The whole part, then (several operations) each operation's rows of it: train_acc_add, test_loss_sub, ...
            parts = [("", index)] + [(f"_{op}", index[data.operation[index] == k]) for k, op in operations]
            for suffix, rows_of in parts:
                if len(rows_of):
                    row[f"{name}_loss{suffix}"] = loss[i, rows_of].double().mean().item()
                    row[f"{name}_acc{suffix}"] = hit[i, rows_of].sum().item() / len(rows_of)
        rows.append(row)
    return rows


def gradient_filter(optim: OptimConfig, model_axis: bool = False) -> GradientFilter | None:
    """The configured accelerators as one filter (⊥Grad first, then Grokfast), or None for plain AdamW."""
    filters: list[GradientFilter] = [OrthoGrad(model_axis=model_axis)] if optim.orthograd else []
    g = optim.grokfast
    if g is not None:
        filters.append(GrokfastEMA(g.alpha, g.lamb) if g.filter == "ema" else GrokfastMA(g.window, g.lamb))
    return None if not filters else filters[0] if len(filters) == 1 else chain(*filters)


def adamw(params: Iterable[Tensor], optim: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    # The fused kernel is one launch for all parameters on a GPU; the CPU keeps the default implementation.
    return torch.optim.AdamW(
        params,
        lr=optim.lr,
        betas=optim.betas,
        eps=optim.eps,
        weight_decay=optim.weight_decay,
        fused=True if device.type == "cuda" else None,
    )


def initial_model(config: RunConfig, task: ModularTask, device: torch.device | str = "cpu") -> GrokTransformer:
    """The model at step 0: the seeded initialisation, or the weights of ``model.init_from`` moved onto it."""
    model = build_model(config.model, task, seed=config.seed, device=device)
    if config.model.init_from is None:
        return model
    path = Path(config.model.init_from)
    if not path.is_file():
        raise UserError(f"model.init_from: {path}: no such checkpoint file")
    _, source = read_checkpoint_header(path)
    state = transplant(load_checkpoint(path), ModularTask.from_config(source.task), model.state_dict(), task)
    model.load_state_dict(state)
    if not all_finite(model.parameters()):
        raise UserError(f"model.init_from: {path}: the checkpoint has non-finite weights (NaN or inf)")
    return model


def trainable(params: dict[str, Tensor], optim: OptimConfig) -> list[Tensor]:
    """The parameters AdamW updates, in ``named_parameters`` order; those of ``optim.freeze`` stop needing grads."""
    frozen = component_parameters(list(params), optim.freeze)
    if len(frozen) == len(params):
        raise UserError(f"optim.freeze: {', '.join(optim.freeze)} freezes every parameter; nothing would train")
    for name, p in params.items():
        p.requires_grad_(name not in frozen)
    return [p for name, p in params.items() if name not in frozen]


@torch.no_grad()
def weight_norms(params: Sequence[Tensor], n_models: int | None = None) -> list[float]:
    """The L2 norm of the trained parameters (the ones AdamW decays), one per model: logged as ``weight_norm`` in
    every metrics row because weight decay's pull on it sets the pace of grokking (the forecast reads it). With
    ``n_models`` the parameters are stacked along a leading model axis."""
    if n_models is None:
        return [math.sqrt(sum(float(p.double().square().sum()) for p in params))]
    totals = sum(p.detach().double().square().reshape(n_models, -1).sum(1) for p in params)
    return [math.sqrt(float(t)) for t in totals]


def all_finite(tensors: Iterable[Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


def apply_update(
    optimizer: torch.optim.Optimizer,
    params: Sequence[Tensor],
    grad_filter: GradientFilter | None,
    clip: Callable[[], None] | None = None,
) -> None:
    """After ``backward()``: clip, filter (accelerators), the AdamW step, and clear the gradients."""
    if clip is not None:
        clip()
    if grad_filter is not None:
        grad_filter.apply(params)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def set_learning_rate(optimizer: torch.optim.Optimizer, optim: OptimConfig, step: int) -> None:
    """Linear warmup over ``warmup_steps``, then constant."""
    scale = min(1.0, (step + 1) / optim.warmup_steps) if optim.warmup_steps else 1.0
    for group in optimizer.param_groups:
        group["lr"] = optim.lr * scale


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


def early_stop_due(
    rows: list[dict[str, Any]], step: int, early: EarlyStopConfig | None, operations: Sequence[str] | None = None
) -> bool:
    """Whether the early-stop condition has held, without a break in the logged rows, for ``patience`` steps.

    ``operations``: the run's task's operations, which say where a per-operation metric is logged
    (:meth:`EarlyStopConfig.row_key`: ``test_acc_sub`` of a task of sub alone is its ``test_acc``); None reads
    ``early.metric`` as it is named. A row without the metric is a break."""
    if early is None:
        return False
    key = early.metric if operations is None else early.row_key(operations)
    since = None
    for row in rows:
        value = row.get(key)
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


# What, beside the config and the seed, decides a run's floating-point digits. On the CPU PyTorch picks kernels for
# the CPU's instruction set (its "capability": DEFAULT, AVX2, AVX512, ...) and splits reductions over its threads, so
# another CPU kind, thread count or torch version gives a run that groks alike but not with the same digits.
ENVIRONMENT_KEYS = ("device", "threads", "cpu_capability", "torch")


def environment(device: torch.device) -> dict[str, Any]:
    """This process's training environment: device type, torch's intra-op thread count, CPU capability, torch."""
    return {
        "device": device.type,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": str(torch.__version__),  # a plain str: the trainer state is read back with weights_only=True
    }


def same_environment(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a.get(key) == b.get(key) for key in ENVIRONMENT_KEYS)


def describe_environment(env: dict[str, Any]) -> str:
    """``2 threads on cpu AVX512, torch 2.13.0+cpu`` (a GPU's run: ``cuda, torch ...``; its threads do not matter)."""
    if env.get("device") != "cpu":
        return f"{env.get('device')}, torch {env.get('torch')}"
    threads = env.get("threads")
    return f"{threads} thread{'' if threads == 1 else 's'} on cpu {env.get('cpu_capability')}, torch {env.get('torch')}"


def recorded_environment(run_dir: Path) -> dict[str, Any] | None:
    """The environment that trained an unfinished ``run_dir`` last, from its resume state (None: none recorded, no
    state yet, a finished run, which trains no further, or a damaged state, which training refuses itself)."""
    if (run_dir / SUMMARY_FILE).is_file() or not (run_dir / TRAINER_STATE_FILE).is_file():
        return None
    try:
        state = Run.open(run_dir).load_trainer_state()
    except (UserError, OSError):
        return None
    recorded = (state or {}).get(TRAINED_WITH) or []
    return recorded[-1] if recorded else None


def resume_notes(run_dirs: Sequence[Path], device: torch.device) -> list[str]:
    """What ``--resume`` prints before continuing CPU runs trained in another environment than this process's: one
    line per environment they were trained in (seeds resumed together share theirs). Training goes on either way;
    the run is still valid, only no longer bitwise the uninterrupted one.

    A run from before the record gives no note: there is nothing to compare with, and a note on every such resume
    (most of them on the machine that started the run) would teach readers to skip it. GPU runs give none either:
    they are not bitwise reproducible in the first place."""
    if device.type != "cpu":
        return []
    now = environment(device)
    changed: dict[str, list[str]] = {}
    for run_dir in run_dirs:
        before = recorded_environment(run_dir)
        if before is not None and not same_environment(before, now):
            changed.setdefault(describe_environment(before), []).append(str(run_dir))
    return [
        f"note: {', '.join(dirs)} {'was' if len(dirs) == 1 else 'were'} trained with {before}; resuming with "
        f"{describe_environment(now)}: the rest of the run will not be bitwise the same as an uninterrupted one"
        for before, dirs in changed.items()
    ]


class RunLog:
    """One run's bookkeeping while it trains: metric rows, early stop, checkpoints, the resume state, the summary."""

    def __init__(self, run: Run, state: dict[str, Any] | None, device: torch.device) -> None:
        if state is not None and not {"step", "optimizer", "wall_time_s"} <= state.keys():
            raise UserError(f"{run.root / TRAINER_STATE_FILE}: not a grokscope trainer state (missing keys)")
        self.run, self.config = run, run.config
        self.operations = self.config.task.operations  # where a per-operation early-stop metric is logged
        self.start = 0 if state is None else int(state["step"])
        self.rows = [row for row in run.metrics() if row["step"] <= self.start] if state is not None else []
        self._wall_before = float(state["wall_time_s"]) if state is not None else 0.0
        self._t0 = self._last_flush = time.perf_counter()
        tc = self.config.train
        self.batches_per_epoch = 1 if tc.batch_size is None else -(-len(run.split().train) // tc.batch_size)
        # A resumed run may already be complete (it crashed after its last checkpoint, before the summary).
        last_logged = self.rows[-1]["step"] if self.rows else self.start
        self.finished_before = state is not None and (
            self.start >= tc.steps or early_stop_due(self.rows, last_logged, tc.early_stop, self.operations)
        )
        self.stopped = self.finished_before
        self.saved_step: int | None = self.start if state is not None else None  # the latest complete checkpoint
        self.diverged: dict[str, Any] | None = None
        self.stopped_by: str | None = None  # a callback's reason for stopping the run (the forecast's), if one did
        # The environments that trained the run, each from the step it took over at (in the resume state and the
        # summary). A run from before this record starts its list at the step it was resumed from.
        self.trained_with: list[dict[str, Any]] = list((state or {}).get(TRAINED_WITH) or [])
        now = environment(device)
        if not self.finished_before and not (self.trained_with and same_environment(self.trained_with[-1], now)):
            self.trained_with.append({"from_step": self.start, **now})

    def wall_time(self) -> float:
        return self._wall_before + time.perf_counter() - self._t0

    def eval_due(self, step: int, final: bool) -> bool:
        return step % self.config.train.eval_every == 0 or final

    def log(self, step: int, metrics: dict[str, float], lr: float) -> dict[str, Any]:
        """Append the metrics row of ``step``; sets :attr:`stopped` when early stopping is due."""
        row: dict[str, Any] = {"step": step, "epoch": step / self.batches_per_epoch, **metrics, "lr": lr}
        self.rows.append(row)
        self.stopped = self.stopped or early_stop_due(self.rows, step, self.config.train.early_stop, self.operations)
        bad = non_finite_loss(row)
        if bad is not None:
            self.diverge(step, bad)
        return row

    def diverge(self, step: int, what: str) -> None:
        """Stop: ``what`` (a loss, or the weights) is no longer finite at ``step``. Nothing more is saved, so the
        run keeps its last finite checkpoint and the resume state that goes with it."""
        self.diverged = {"step": step, "metric": what, "last_checkpoint": self.saved_step}
        self.stopped = True

    def checkpoint_due(self, step: int) -> bool:
        return self.config.train.checkpoints.due(step) or self.stopped

    def save(
        self, step: int, weights: dict[str, Tensor], state: dict[str, Any], written: Callable[[], None] = lambda: None
    ) -> None:
        """Checkpoint, metrics, then ``written()`` (recorders flush), and last the trainer state that marks all of
        them complete: a crash anywhere before it resumes from the previous checkpoint with nothing lost."""
        self.run.save_checkpoint(step, weights)
        self.run.write_metrics(self.rows)
        written()
        self.run.save_trainer_state(
            {"step": step, **state, "wall_time_s": self.wall_time(), TRAINED_WITH: self.trained_with}
        )
        self.saved_step = step
        self._last_flush = time.perf_counter()

    def flush_if_stale(self) -> None:
        if time.perf_counter() - self._last_flush > METRICS_FLUSH_SECONDS:
            self.run.write_metrics(self.rows)
            self._last_flush = time.perf_counter()

    def finish(self, device: torch.device, **extra: Any) -> dict[str, Any]:
        """Write and return the grokking summary."""
        rows, tc = self.rows, self.config.train
        if self.diverged is not None:
            self.run.write_metrics(rows)  # the row that shows the divergence (NaN written as null)
        task = self.run.task
        summary = summarize(rows, operations=task.operation_names if task.is_multi else ())
        summary.update(
            diverged=self.diverged,
            steps_trained=rows[-1]["step"] if rows else 0,
            stopped_early=bool(rows) and rows[-1]["step"] < tc.steps,
            wall_time_s=self._wall_before if self.finished_before else self.wall_time(),
            device=str(device),
            accelerators=self.config.optim.accelerators() + (["stablemax"] if tc.loss_fn == "stablemax" else []),
            **extra,
            **({"stopped_by": self.stopped_by} if self.stopped_by else {}),
            versions=_versions(),
            trained_with=self.trained_with,
        )
        self.run.write_summary(summary)
        return summary


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
    """Train one seed into ``run_dir`` and return the run, the final model and its grokking summary.

    ``resume`` continues a started run and starts one where there is none (see :func:`grokscope.rundir.claim`).
    The run directory is locked while training. A non-finite loss or weights stop training (``result.diverged``);
    SIGINT or SIGTERM saves a checkpoint and the resume state, then raises
    :class:`~grokscope.training.stopping.TrainingInterrupted`.
    """
    dev, run_dir = resolve_device(device), Path(run_dir)
    check_training_fits(config, dev)
    task = ModularTask.from_config(config.task)
    # Everything that can be refused is refused before the run directory is touched.
    fresh = None if will_resume(run_dir, resume) else initial_model(config, task, dev)
    if fresh is not None:
        trainable(dict(fresh.named_parameters()), config.optim)
    held = claim(config, run_dir, resume=resume, overwrite=overwrite)
    try:
        return _train_claimed(held.run, held.state, fresh, dev, callbacks, progress)
    finally:
        held.release()


def load_resume_state(
    run: Run, state: dict[str, Any], params: Sequence[Tensor], optimizer: torch.optim.Optimizer, grad_filter: Any
) -> None:
    """Load a trainer state's optimizer (and filter) state into a model's ``params``; a state that does not fit them
    (another model, a hand-edited file) is a one-line user error now rather than a traceback at the first step."""
    path = run.root / TRAINER_STATE_FILE
    if not all_finite(params):
        raise UserError(f"{run.checkpoint_dir}: the checkpoint to resume from has non-finite weights")
    try:
        optimizer.load_state_dict(state["optimizer"])
        if grad_filter is not None:
            grad_filter.load_state_dict(state["grad_filter"])
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError, AttributeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"{path}: resume state does not fit the model ({first})") from None
    fresh = adamw([torch.zeros(1)], run.config.optim, torch.device("cpu")).param_groups[0]
    for i, group in enumerate(optimizer.param_groups):
        for key in ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"):  # what the step computes with
            value, expected = group.get(key), fresh[key]
            if not _same_kind(value, expected):
                raise UserError(f"{path}: optimizer param group {i}: {key} is {value!r}, expected like {expected!r}")
    for i, p in enumerate(params):
        for key, t in optimizer.state.get(p, {}).items():
            if isinstance(t, Tensor) and t.dim() and t.shape != p.shape:
                raise UserError(
                    f"{path}: optimizer {key} of parameter {i} has shape {tuple(t.shape)}, not {tuple(p.shape)}"
                )
    if grad_filter is not None:
        _check_filter_shapes(grad_filter.state_dict(), params, path)


def _same_kind(value: Any, expected: Any) -> bool:
    """Whether a loaded hyperparameter has the type (and, for tuples, the length) of AdamW's own."""
    if isinstance(expected, bool) or expected is None:
        return value is expected or (isinstance(value, bool) and isinstance(expected, bool))
    if isinstance(expected, int | float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(expected, tuple | list):
        return (
            isinstance(value, tuple | list)
            and len(value) == len(expected)
            and all(_same_kind(v, e) for v, e in zip(value, expected, strict=True))
        )
    return isinstance(value, type(expected))


def _check_filter_shapes(state: Any, params: Sequence[Tensor], path: Path) -> None:
    """Every per-parameter tensor of a filter state (a dict keyed by parameter index) starts with that parameter's
    shape (a moving-average buffer adds a window axis after it)."""
    if isinstance(state, list):
        for s in state:
            _check_filter_shapes(s, params, path)
    if not isinstance(state, dict):
        return
    for key, value in state.items():
        if isinstance(key, int) and isinstance(value, Tensor):
            p = params[key] if 0 <= key < len(params) else None
            if p is None or tuple(value.shape[: p.dim()]) != tuple(p.shape):
                raise UserError(f"{path}: filter state of parameter {key} does not fit the model")
        else:
            _check_filter_shapes(value, params, path)


def _train_claimed(
    run: Run,
    state: dict[str, Any] | None,
    fresh: GrokTransformer | None,
    dev: torch.device,
    callbacks: Sequence[Callback],
    progress: bool,
) -> TrainResult:
    log = RunLog(run, state, dev)
    config = run.config
    task, tc, oc = run.task, config.train, config.optim
    if state is None:
        model = fresh if fresh is not None else initial_model(config, task, dev)
    else:
        model = run.load_model(log.start, device=dev)
    params = trainable(dict(model.named_parameters()), oc)
    optimizer, grad_filter = adamw(params, oc, dev), gradient_filter(oc)
    if state is not None:
        load_resume_state(run, state, params, optimizer, grad_filter)

    objective = Objective.of(config, task)
    model_logits = model_forward(model, objective)
    clip = None if oc.grad_clip is None else lambda: torch.nn.utils.clip_grad_norm_(params, oc.grad_clip)
    data, split = task.dataset().to(dev), run.split()
    train_set = data.subset(split.train.to(dev))

    def save(step: int) -> None:
        if not all_finite(model.parameters()):  # parameters only: TL's attention mask buffer is -inf by design
            log.diverge(step, "weights")
            return
        filter_state = {} if grad_filter is None else {"grad_filter": grad_filter.state_dict()}
        log.save(
            step,
            model.state_dict(),
            {"optimizer": optimizer.state_dict(), **filter_state},
            written=lambda: [cb.on_checkpoint(step, model) for cb in callbacks],
        )

    def record(step: int, final: bool) -> bool:
        """Log metrics and save checkpoints due at ``step``; return True when training should stop."""
        if log.eval_due(step, final):
            metrics = evaluate(model_logits, 1, data, [split], objective)[0]
            metrics["weight_norm"] = weight_norms(params)[0]
            row = log.log(step, metrics, optimizer.param_groups[0]["lr"])
            # The callbacks share a copy: one may add what the others log and the bar shows (the live forecast);
            # metrics.jsonl keeps the row as measured.
            shown = dict(row)
            for cb in callbacks:
                cb.on_eval(step, model, shown)
            bar.update(step, shown)
            asked = next((cb.stop_reason for cb in callbacks if cb.stop_reason), None)
            if asked is not None and not log.stopped:
                log.stopped, log.stopped_by = True, asked
        if log.diverged is not None:
            return True
        log.stopped = log.stopped or final
        if log.checkpoint_due(step):
            save(step)
        else:
            log.flush_if_stale()
        return log.stopped

    with (
        TrainingProgress(config.name, log.start, tc.steps, enabled=progress) as bar,
        reproducible(dev),
        tf32_matmuls(tc.tf32),
        StopSignals() as stop,
    ):
        for cb in callbacks:
            cb.on_train_begin(run, model, log.start)
        step = log.start
        stopped = record(0, final=False) if state is None else log.stopped
        while not stopped:
            index = batch_indices(step, len(train_set), tc.batch_size, config.seed)
            batch = train_set if index is None else train_set.subset(index.to(dev))
            set_learning_rate(optimizer, oc, step)
            objective.loss(model_logits(batch.tokens[None]), batch.labels[None]).sum().backward()
            for cb in callbacks:
                cb.on_after_backward(step, model)
            apply_update(optimizer, params, grad_filter, clip)
            step += 1
            for cb in callbacks:
                cb.on_step_end(step, model)
            stopped = record(step, final=step >= tc.steps)
            if stop.requested and not stopped:
                if log.saved_step != step:
                    save(step)
                if log.diverged is None:
                    raise stop.interrupted(step, [run.root])
                stopped = True

    summary = log.finish(dev)
    if log.diverged is not None and log.saved_step is not None:
        model = load_model(config.model, task, run.load_state_dict(log.saved_step), device=dev)
    for cb in callbacks:
        cb.on_train_end(run, model, step)
    return TrainResult(run=run, model=model, summary=summary, resumed_from=log.start if state is not None else None)
