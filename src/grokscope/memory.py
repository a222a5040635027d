"""Will a training job fit? Generous estimates of its memory, checked against the machine before anything is allocated.

A modulus of 100000 is ten billion pairs: building its dataset would try to allocate hundreds of GB and die with a
traceback (or take the machine down). :func:`check_training_fits` refuses such a job with one line naming the config
field that makes it too big. The estimates err high (every part counted at its peak, at once), so a job refused here
would not have run; the margin is :data:`USABLE_FRACTION` of what is available.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from grokscope.config import RunConfig
from grokscope.errors import UserError
from grokscope.tasks import ModularTask

GIB = 1 << 30
USABLE_FRACTION = 0.9  # of the available memory a job may plan to use
EVAL_ELEMENTS = 1 << 24  # logits per evaluation chunk (training/loop.py): bounds evaluation memory


@dataclass(frozen=True)
class Part:
    """One part of a job's memory: what it is, its size, and the config field that sizes it."""

    what: str
    bytes: int
    field: str


def n_parameters(config: RunConfig) -> int:
    task = ModularTask.from_config(config.task)
    m = config.model
    attention = 4 * m.d_model * m.n_heads * m.d_head
    return (task.d_vocab + task.d_vocab_out + task.n_ctx) * m.d_model + m.n_layers * (
        attention + 2 * m.d_model * m.d_mlp
    )


def model_bytes(config: RunConfig) -> int:
    """One model while it trains: weights, gradient, two Adam moments, and the Grokfast filter's state."""
    grokfast = config.optim.grokfast
    copies = 4 + (0 if grokfast is None else (1 if grokfast.filter == "ema" else grokfast.window + 1))
    itemsize = 8 if config.model.dtype == "float64" else 4
    return copies * n_parameters(config) * itemsize


def activation_bytes(config: RunConfig) -> int:
    """The activations of one model's forward and backward on a training batch (the whole training set when full
    batch)."""
    task = ModularTask.from_config(config.task)
    m = config.model
    batch = config.train.batch_size or round(task.n_pairs * config.task.train_fraction)
    per_row = task.n_ctx * m.n_layers * (8 * m.d_model + 3 * m.d_mlp + 2 * m.n_heads * task.n_ctx) + task.d_vocab_out
    itemsize = 8 if m.dtype == "float64" else 4
    return 2 * batch * per_row * itemsize


def bytes_per_model(config: RunConfig) -> int:
    """What each extra model in a stack of seeds adds (training/many.py packs seeds by this)."""
    return model_bytes(config) + activation_bytes(config)


def training_parts(config: RunConfig, n_models: int = 1) -> list[Part]:
    """The memory of training ``n_models`` seeds of ``config`` at once, part by part."""
    task = ModularTask.from_config(config.task)
    # Tokens and labels (int64) of every pair, the answers, the pair grid, and the split's permutation and indices.
    dataset = task.n_pairs * (8 * (2 * task.n_ctx + 3) + 8 * 3)
    data = f"the dataset of {task.n_pairs:,} pairs"
    if config.task.split == "nested":  # a priority per pair of the whole modulus grid, whatever the input range
        dataset += 3 * 8 * task.modulus**2  # the priorities, their permutation and an arange (int64 each)
        data += f" and its nested split over all {task.modulus**2:,} pairs of the modulus"
    evaluation = 3 * 4 * min(EVAL_ELEMENTS, n_models * task.n_pairs * task.d_vocab_out * len(task.loss_positions))
    batch_field = "train.batch_size" if config.train.batch_size else "train.batch_size (null: the whole training set)"
    return [
        Part(data, dataset, "task.modulus"),
        Part(f"{n_models} model(s) of {n_parameters(config):,} parameters", n_models * model_bytes(config), "model"),
        Part("the activations of a training batch", n_models * activation_bytes(config), batch_field),
        Part("evaluation", evaluation, "task.modulus"),
    ]


def available_bytes(device: torch.device) -> int | None:
    """Memory this process can still take on ``device``: free device memory on CUDA, available RAM on the CPU
    (``MemAvailable`` on Linux); None when the system does not say."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_training_fits(config: RunConfig, device: torch.device, n_models: int = 1) -> None:
    """Raise a one-line :class:`UserError` naming the field to change when training cannot fit in memory."""
    parts = training_parts(config, n_models)
    need = sum(p.bytes for p in parts)
    have = available_bytes(device)
    if have is None or need <= USABLE_FRACTION * have:
        return
    _refuse(parts, device, have)


def check_dataset_fits(config: RunConfig) -> None:
    """Raise :func:`check_training_fits`'s one-line :class:`UserError` when the task's dataset alone (built in this
    machine's memory, whatever the device trains) cannot fit: what a plan checks before it builds a split, when the
    device its runs will train on is not known yet (training checks everything again, on its device)."""
    parts = training_parts(config)
    have = available_bytes(torch.device("cpu"))
    if have is not None and parts[0].bytes > USABLE_FRACTION * have:
        _refuse(parts, torch.device("cpu"), have)


def _refuse(parts: list[Part], device: torch.device, have: int) -> None:
    need = sum(p.bytes for p in parts)
    # Blame the part that first overflows, in the order the job allocates them: a dataset that cannot fit is the
    # modulus's fault even when its full-batch activations would be bigger still.
    total, culprit = 0, parts[-1]
    for part in parts:
        total += part.bytes
        if total > USABLE_FRACTION * have:
            culprit = part
            break
    where = "this machine" if device.type == "cpu" else str(device)
    raise UserError(
        f"{culprit.field}: training would need about {_gib(need)} ({culprit.what}: {_gib(culprit.bytes)}), "
        f"but {where} has {_gib(have)} available"
    )


def _gib(n: int) -> str:
    if n >= 1e6 * GIB:
        return f"{n / GIB:.3g} GiB"
    return f"{n / GIB:,.1f} GiB" if n >= GIB / 10 else f"{n / (1 << 20):,.0f} MiB"
