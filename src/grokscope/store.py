"""The run directory on disk (DESIGN.md's contract): atomic writes, safetensors checkpoints, metrics, resume state.

::

    runs/<name>/
      .grokscope-run       marker: written first; only marked folders are ever cleared (--overwrite)
      .grokscope.lock      the lock of the process that holds the run (rundir.py)
      config.yaml          fully resolved config
      split.safetensors    train/test/val indices into the task's dataset
      metrics.jsonl        one JSON object per logged step
      summary.json         grokking summary
      checkpoints/step_0001234.safetensors   TL state dict; metadata holds the step and the config (JSON)
      trainer_state.pt     optimizer state for --resume (loaded with weights_only=True)
      recordings/  analysis/

Every file is written to a temporary name and renamed into place, so a crash leaves each file whole or absent.
:class:`Run` opens a run directory or a bare ``checkpoints/`` folder (its checkpoints carry the config).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from grokscope.config import RunConfig, parse_config
from grokscope.errors import UserError
from grokscope.tasks import Dataset, ModularTask, Split, task_split

if TYPE_CHECKING:
    from grokscope.models import GrokTransformer

CONFIG_FILE = "config.yaml"
SPLIT_FILE = "split.safetensors"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CHECKPOINT_DIR = "checkpoints"
TRAINER_STATE_FILE = "trainer_state.pt"
# In the trainer state and the summary: the environments (device, threads, CPU capability, torch) that trained the
# run, each from the step it took over at; a run from before this record has none.
TRAINED_WITH = "trained_with"
RECORDINGS_DIR = "recordings"
ANALYSIS_DIR = "analysis"
_METRIC_COLUMN = re.compile(r"(train|test|val)_(acc|loss)(_.+)?$")  # overall or per-operation split metrics
CHECKPOINT_FORMAT = "grokscope-checkpoint/1"
# Written first into every run directory grokscope creates: only marked folders are ever cleared (rundir.py).
MARKER_FILE = ".grokscope-run"
MARKER_FORMAT = "grokscope-run/1"
_CHECKPOINT_RE = re.compile(r"^step_(\d+)\.safetensors$")


def checkpoint_name(step: int) -> str:
    return f"step_{step:07d}.safetensors"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``.

    A failed write (a full disk, a read-only folder, a path through a file) leaves ``path`` as it was, removes the
    temporary file and becomes a one-line :class:`UserError` naming ``path``.
    """
    if path.exists() and not path.is_file():  # never replace a folder, a device or a pipe with a file
        raise UserError(f"{path}: exists and is not a regular file; refusing to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise UserError(f"{path}: cannot write ({_reason(err)})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; run files are meant to be shared and read
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise UserError(f"{path}: cannot write ({_reason(err)})") from None
    except SafetensorError as err:
        if "os error" not in str(err):  # safetensors reports I/O failures as its own error type
            raise
        raise UserError(f"{path}: cannot write ({str(err).rsplit(': ', 1)[-1]})") from None
    finally:
        with suppress(OSError):
            tmp.unlink()


def _reason(err: OSError) -> str:
    return err.strerror or type(err).__name__


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None, so files stay strict JSON (a diverged run logs NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(finite(data), indent=2, allow_nan=False) + "\n")


def read_text(path: Path) -> str:
    """The UTF-8 text of ``path``; an unreadable or binary file is a one-line :class:`UserError`."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read ({_reason(err)})") from None


def read_json(path: Path) -> Any:
    """The JSON value in ``path`` (any type: callers check what they expect)."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except RecursionError:
        raise UserError(f"{path}: not valid JSON (nested too deeply)") from None


def show(value: Any) -> str:
    """``value`` in a few characters on one line, for error messages (a file's content may be anything)."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    text = " ".join(text.split())
    return text if len(text) <= 40 else text[:39] + "…"


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_count(value: Any) -> bool:
    """A non-negative integer (a step, a count); JSON's true/false are not."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _metrics_row_problem(row: Any) -> str | None:
    """What is wrong with one metrics row (None: nothing): an object, an integer step, numbers or null."""
    if not isinstance(row, dict):
        return f"expected a JSON object, got {show(row)}"
    if "step" not in row:
        return 'no "step"'
    if not is_count(row["step"]):
        return f'"step" must be a non-negative integer, got {show(row["step"])}'
    for key, value in row.items():
        if value is not None and not is_number(value):
            return f"{json.dumps(key)} must be a number or null, got {show(value)}"
    return None


# What summary.json's fields must hold where present (readers format and index them), as (test, what it must be).
_SUMMARY_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    **dict.fromkeys(
        ("memorization_step", "generalization_step", "sharpest_test_loss_drop_step", "steps_trained"),
        (lambda v: v is None or is_count(v), "a non-negative integer or null"),
    ),
    **dict.fromkeys(("generalization_ratio", "wall_time_s"), (lambda v: v is None or is_number(v), "a number or null")),
    **dict.fromkeys(("regime", "device"), (lambda v: isinstance(v, str), "a string")),
    **dict.fromkeys(
        ("steps_to_train_acc", "steps_to_test_acc", "rules", "versions"),
        (lambda v: isinstance(v, dict), "an object"),
    ),
    "final": (lambda v: v is None or _metrics_row_problem(v) is None, "a metrics row (step and numbers) or null"),
    "accelerators": (lambda v: isinstance(v, list) and all(isinstance(a, str) for a in v), "a list of strings"),
    "stopped_early": (lambda v: isinstance(v, bool), "true or false"),
    TRAINED_WITH: (lambda v: _trained_with_problem(v) is None, "a list of objects with a from_step"),
}


def _trained_with_problem(value: Any) -> str | None:
    """What is wrong with a ``trained_with`` record: a list of objects, each with the step it took over at."""
    if not isinstance(value, list) or not all(isinstance(e, dict) and is_count(e.get("from_step")) for e in value):
        return f"must be a list of objects with a from_step, got {show(value)}"
    return None


def read_summary(path: Path) -> dict[str, Any]:
    """A run's ``summary.json``: an object whose known fields have their types (any may be missing)."""
    summary = read_json(path)
    if not isinstance(summary, dict):
        raise UserError(f"{path}: expected a JSON object (the run's summary), got {show(summary)}")
    for key, (fits, what) in _SUMMARY_FIELDS.items():
        if key in summary and not fits(summary[key]):
            raise UserError(f"{path}: {json.dumps(key)} must be {what}, got {show(summary[key])}")
    return summary


def write_marker(root: Path) -> None:
    """Mark ``root`` as a run directory grokscope created (the first file it writes there)."""
    from grokscope import __version__

    root.mkdir(parents=True, exist_ok=True)
    created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    marker = {"format": MARKER_FORMAT, "created": created, "grokscope": __version__}
    atomic_write_text(root / MARKER_FILE, json.dumps(marker) + "\n")


def _plain_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors wants contiguous CPU tensors that share no storage.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}


def save_checkpoint(path: Path, state_dict: dict[str, torch.Tensor], step: int, config: RunConfig) -> None:
    """Write a TL state dict with the step and the resolved config in the safetensors metadata."""
    metadata = {"format": CHECKPOINT_FORMAT, "step": str(step), "config": json.dumps(config.to_dict())}
    tensors = _plain_state(state_dict)
    # Serialised in memory, then written as plain bytes: a full disk is then an OSError, never a library's own error.
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def read_checkpoint_header(path: Path) -> tuple[int, RunConfig]:
    """The step and config of a checkpoint, reading only its header."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise UserError(f"{path}: corrupt or truncated checkpoint ({err})") from None
    try:
        if metadata.get("format") != CHECKPOINT_FORMAT:
            raise ValueError("no grokscope format tag")
        step, data = int(metadata["step"]), json.loads(metadata["config"])
        if step < 0:
            raise ValueError(f"negative step {step}")
        if not isinstance(data, dict):
            raise ValueError(f"the config is {show(data)}, not an object")
    except (KeyError, ValueError, RecursionError) as err:
        raise UserError(f"{path}: not a grokscope checkpoint (step/config metadata: {err})") from None
    return step, parse_config(data, source=f"{path} metadata")


def non_finite(weights: dict[str, torch.Tensor]) -> str | None:
    """Where ``weights`` hold NaN or infinities, in a few words (``NaN in blocks.0.mlp.W_in``), or None.

    Pass parameters only: some buffers of a TransformerLens state dict are infinite by design (``attn.IGNORE``).
    """
    bad = [name for name, t in weights.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if not bad:
        return None
    kind = "NaN" if bool(weights[bad[0]].isnan().any()) else "inf"
    return f"{kind} in {bad[0]}" + (f" and {len(bad) - 1} more tensor(s)" if len(bad) > 1 else "")


def load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a checkpoint file; a truncated or corrupt file is a one-line :class:`UserError`."""
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise UserError(f"{path}: corrupt or truncated checkpoint ({err})") from None


def save_split(path: Path, split: Split) -> None:
    tensors = {k: v.to(torch.long).contiguous() for k, v in split.as_dict().items()}
    atomic_write_bytes(path, save(tensors))


_INDEX_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def load_split(path: Path, n_pairs: int | None = None) -> Split:
    """The split saved at ``path``: train, test and val indices into the task's ``n_pairs`` examples (when given,
    every index must be below it). Indices must be 1-D integers, distinct, and no example may be in two parts;
    anything else is a one-line :class:`UserError` naming the file."""
    try:
        data = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise UserError(f"{path}: corrupt split file ({err})") from None
    parts: dict[str, torch.Tensor] = {}
    for name in ("train", "test", "val"):
        if name not in data:
            raise UserError(f'{path}: no "{name}" indices (a split holds train, test and val)')
        t = data[name]
        if t.dtype not in _INDEX_DTYPES:
            raise UserError(f'{path}: "{name}" indices are {str(t.dtype).removeprefix("torch.")}, expected integers')
        if t.dim() != 1:
            raise UserError(f'{path}: "{name}" indices have shape {tuple(t.shape)}, expected one dimension')
        if name != "val" and t.numel() == 0:
            raise UserError(f'{path}: no "{name}" examples (the split is empty)')
        t = t.to(torch.long)
        if t.numel() and int(t.min()) < 0:
            raise UserError(f'{path}: "{name}" index {int(t.min())} is negative')
        if n_pairs is not None and t.numel() and int(t.max()) >= n_pairs:
            raise UserError(f'{path}: "{name}" index {int(t.max())} is outside the task\'s {n_pairs} examples')
        values, counts = t.unique(return_counts=True)
        if bool((counts > 1).any()):
            raise UserError(f'{path}: "{name}" repeats index {int(values[counts > 1][0])}')
        parts[name] = t
    for a, b in (("train", "test"), ("train", "val"), ("test", "val")):
        shared = parts[a][torch.isin(parts[a], parts[b])]
        if shared.numel():
            raise UserError(f'{path}: index {int(shared[0])} is in both "{a}" and "{b}"')
    return Split(**parts)


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(finite(row), allow_nan=False) + "\n" for row in rows))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines metrics file (none when it is absent). Each line must be a JSON object with a
    non-negative integer ``step`` and numbers or null for the rest; anything else is a one-line :class:`UserError`
    naming the file and the line, since every reader indexes ``row["step"]`` and does arithmetic on the values."""
    if not path.is_file():
        return []
    rows = []
    for lineno, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            raise UserError(f"{path}: line {lineno}: not valid JSON") from None
        problem = _metrics_row_problem(row)
        if problem is not None:
            raise UserError(f"{path}: line {lineno}: {problem}")
        rows.append(row)
    return rows


def trainer_state_problem(state: Any, config: RunConfig) -> str | None:
    """What keeps ``state`` (a loaded ``trainer_state.pt``) from resuming a run of ``config`` (None: nothing seen).

    Checks the structure that training saves: the step, the wall time, AdamW's ``state_dict`` (parameter groups of
    indices, per-parameter tensors) and the accelerators' filter state for the accelerators ``config`` turns on.
    Whether the optimizer state fits the model's parameters (their number and shapes) needs the model: training
    checks that when it loads the state.
    """
    if not isinstance(state, dict):
        return f"expected a dict, got {show(state)}"
    for key in ("step", "optimizer", "wall_time_s"):
        if key not in state:
            return f'no "{key}"'
    if not is_count(state["step"]):
        return f'"step" must be a non-negative integer, got {show(state["step"])}'
    wall = state["wall_time_s"]
    if not is_number(wall) or not math.isfinite(wall) or wall < 0:
        return f'"wall_time_s" must be a non-negative number of seconds, got {show(wall)}'
    problem = _optimizer_problem(state["optimizer"])
    if problem is not None:
        return f'"optimizer": {problem}'
    if TRAINED_WITH in state:  # absent in a run from before the record
        problem = _trained_with_problem(state[TRAINED_WITH])
        if problem is not None:
            return f'"{TRAINED_WITH}": {problem}'
    filters = (["orthograd"] if config.optim.orthograd else []) + (
        [config.optim.grokfast.filter] if config.optim.grokfast is not None else []
    )
    if filters:  # without accelerators training ignores any filter state
        if "grad_filter" not in state:
            return f'no "grad_filter" for the accelerators of the config ({", ".join(filters)})'
        problem = _filter_problem(state["grad_filter"], filters, config)
        if problem is not None:
            return f'"grad_filter": {problem}'
    return None


def _tensor_map_problem(value: Any, what: str) -> str | None:
    """A filter's per-parameter tensors: ``{parameter index: tensor}``."""
    if not isinstance(value, dict):
        return f"{what} must be a dict of tensors by parameter index, got {show(value)}"
    for key, tensor in value.items():
        if not is_count(key) or not isinstance(tensor, torch.Tensor):
            return f"{what} must be a dict of tensors by parameter index, got {show(key)}: {show(tensor)}"
    return None


def _optimizer_problem(optimizer: Any) -> str | None:
    """What is wrong with an AdamW ``state_dict()``: ``param_groups`` (dicts whose ``params`` are distinct
    parameter indices) and ``state`` (per index, a dict of tensors; ``exp_avg`` and ``exp_avg_sq`` of one shape)."""
    if not isinstance(optimizer, dict) or not {"state", "param_groups"} <= optimizer.keys():
        return f'expected a dict with "state" and "param_groups", got {show(optimizer)}'
    groups, per_param = optimizer["param_groups"], optimizer["state"]
    if not isinstance(groups, list) or not groups or not all(isinstance(g, dict) for g in groups):
        return f'"param_groups" must be a non-empty list of dicts, got {show(groups)}'
    indices: list[int] = []
    for i, group in enumerate(groups):
        params = group.get("params")
        if not isinstance(params, list) or not all(is_count(p) for p in params):
            return f'param group {i}: "params" must be a list of parameter indices, got {show(params)}'
        if "lr" in group and not is_number(group["lr"]):
            return f'param group {i}: "lr" must be a number, got {show(group["lr"])}'
        indices += params
    if len(set(indices)) != len(indices):
        return "a parameter index is listed twice in param_groups"
    if not isinstance(per_param, dict):
        return f'"state" must be a dict by parameter index, got {show(per_param)}'
    for index, entry in per_param.items():
        if not is_count(index) or index not in indices:
            return f"state of parameter {show(index)}, which no param group lists"
        if not isinstance(entry, dict) or not all(isinstance(v, torch.Tensor) for v in entry.values()):
            return f"state of parameter {index} must be a dict of tensors, got {show(entry)}"
        avg, avg_sq = entry.get("exp_avg"), entry.get("exp_avg_sq")
        if avg is not None and avg_sq is not None and avg.shape != avg_sq.shape:
            return f"state of parameter {index}: exp_avg and exp_avg_sq differ in shape"
    return None


def _filter_problem(state: Any, filters: list[str], config: RunConfig) -> str | None:
    """What is wrong with the saved state of the gradient filter that ``filters`` (in the order training chains
    them: ``orthograd``, then ``ema`` or ``ma``) make, as the filters' ``state_dict`` lays it out."""
    if len(filters) > 1:
        if not isinstance(state, dict) or not isinstance(state.get("filters"), list):
            return f'expected a dict with the list "filters" of {len(filters)} states, got {show(state)}'
        if len(state["filters"]) != len(filters):
            return f"holds {len(state['filters'])} filter states; the config has {len(filters)} ({', '.join(filters)})"
        for name, inner in zip(filters, state["filters"], strict=True):
            problem = _filter_problem(inner, [name], config)
            if problem is not None:
                return f"{name}: {problem}"
        return None
    (name,) = filters
    if not isinstance(state, dict):
        return f"expected a dict, got {show(state)}"
    if name == "orthograd":
        return None if not state else f"orthograd keeps no state, got keys {sorted(map(str, state))}"
    if name == "ema":
        return _tensor_map_problem(state.get("mu"), '"mu"')
    window = config.optim.grokfast.window if config.optim.grokfast is not None else None
    if not is_count(state.get("window")) or state["window"] != window:
        return f'"window" is {show(state.get("window"))}; the config has {window}'
    for key in ("buffer", "total"):
        problem = _tensor_map_problem(state.get(key), f'"{key}"')
        if problem is not None:
            return problem
    count = state.get("count")
    if not isinstance(count, dict) or not all(is_count(k) and is_count(v) for k, v in count.items()):
        return f'"count" must be a dict of counts by parameter index, got {show(count)}'
    return None


@dataclass
class Run:
    """A run directory (or a bare checkpoints folder), for writing during training and reading afterwards."""

    root: Path
    config: RunConfig
    operation: str | None = None  # a multi-operation run seen through one operation (for its analyses)

    # Opening -----------------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, root: Path | str, config: RunConfig, split: Split) -> Run:
        """Start a new run directory: write the resolved config and the split."""
        root = Path(root)
        write_marker(root)
        (root / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
        atomic_write_text(root / CONFIG_FILE, config.to_yaml())
        save_split(root / SPLIT_FILE, split)
        return cls(root, config)

    @classmethod
    def open(cls, path: Path | str) -> Run:
        """Open a run directory, or a ``checkpoints/`` folder on its own (the config then comes from a checkpoint)."""
        path = Path(path)
        if not path.exists():
            raise UserError(f"{path}: no such run directory")
        config_path = path / CONFIG_FILE
        if config_path.is_file():
            try:
                data = yaml.safe_load(read_text(config_path))
            except (yaml.YAMLError, RecursionError):
                raise UserError(f"{config_path}: not valid YAML") from None
            if not isinstance(data, dict):
                # A run's config is every field written out; an empty file or a bare value is damage, not defaults.
                raise UserError(f"{config_path}: expected a mapping of config fields, got {show(data)}")
            return cls(path, parse_config(data, source=str(config_path)))
        checkpoints = sorted(path.glob("step_*.safetensors"))
        if not checkpoints:
            raise UserError(f"{path}: neither a run directory (no {CONFIG_FILE}) nor a folder of checkpoints")
        _, config = read_checkpoint_header(checkpoints[-1])
        # A bare checkpoints/ folder: treat its parent as the run root so split/metrics are found if present.
        return cls(path.parent if path.name == CHECKPOINT_DIR else path, config)

    # Layout ------------------------------------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        own = self.root / CHECKPOINT_DIR
        return own if own.is_dir() or (self.root / CONFIG_FILE).is_file() else self.root

    def for_operation(self, name: str | None) -> Run:
        """This run seen through one of its operations: :attr:`task` and :meth:`split` hold only that operation's
        examples, and analyses go to ``analysis/<name>/`` (``None``: the whole run)."""
        if name is not None and name not in self.full_task.operation_names:
            known = ", ".join(self.full_task.operation_names)
            raise UserError(f"--operation {name}: {self.root} trains {known}")
        return Run(self.root, self.config, name)

    @property
    def full_task(self) -> ModularTask:
        """The task of every example the run trained on, whatever operation it is seen through."""
        return ModularTask.from_config(self.config.task)

    @property
    def task(self) -> ModularTask:
        task = self.full_task
        return task if self.operation is None else task.view_of(self.operation)

    @property
    def analysis_dir(self) -> Path:
        """Where ``grokscope analyze`` writes by default: ``analysis/``, or ``analysis/<operation>/``."""
        return self.root / ANALYSIS_DIR / (self.operation or "")

    def steps(self) -> list[int]:
        """Steps with a checkpoint on disk, ascending."""
        if not self.checkpoint_dir.is_dir():
            return []
        found = (_CHECKPOINT_RE.match(p.name) for p in self.checkpoint_dir.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoint_dir / checkpoint_name(step)

    # Writing -----------------------------------------------------------------------------------------------------
    def save_checkpoint(self, step: int, state_dict: dict[str, torch.Tensor]) -> None:
        save_checkpoint(self.checkpoint_path(step), state_dict, step, self.config)

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        write_metrics(self.root / METRICS_FILE, rows)

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json(self.root / SUMMARY_FILE, summary)

    def save_trainer_state(self, state: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(self.root / TRAINER_STATE_FILE, buffer.getvalue())

    # Reading -----------------------------------------------------------------------------------------------------
    def load_trainer_state(self) -> dict[str, Any] | None:
        path = self.root / TRAINER_STATE_FILE
        if not path.is_file():
            return None
        try:
            with warnings.catch_warnings():  # torch warns about some foreign files it then refuses anyway
                warnings.simplefilter("ignore")
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for a damaged or foreign file
            raise UserError(f"{path}: corrupt trainer state ({type(err).__name__})") from None
        problem = trainer_state_problem(state, self.config)
        if problem is not None:
            raise UserError(f"{path}: not a grokscope trainer state ({problem})")
        return state

    def load_state_dict(self, step: int | None = None) -> dict[str, torch.Tensor]:
        """The weights at ``step`` (default: the latest checkpoint)."""
        steps = self.steps()
        if not steps:
            raise UserError(f"{self.checkpoint_dir}: no checkpoints")
        if step is None:
            step = steps[-1]
        elif step not in steps:
            raise UserError(f"{self.checkpoint_dir}: no checkpoint at step {step} (have {steps[0]}..{steps[-1]})")
        return load_checkpoint(self.checkpoint_path(step))

    def load_model(self, step: int | None = None, device: torch.device | str = "cpu") -> GrokTransformer:
        """A :class:`~grokscope.models.GrokTransformer` with the weights at ``step`` (default: the latest
        checkpoint)."""
        from grokscope.models import load_model

        state = self.load_state_dict(step)
        try:
            return load_model(self.config.model, self.task, state, device=device)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[-1].strip()
            where = self.checkpoint_path(step) if step is not None else self.checkpoint_dir
            raise UserError(f"{where}: checkpoint does not fit the run's model config ({first})") from None

    def split(self) -> Split:
        """The saved split; for a bare checkpoints folder, the split regenerated from the config's seed."""
        path = self.root / SPLIT_FILE
        if path.is_file():
            split = load_split(path, self.full_task.n_pairs)
        else:
            split = task_split(self.config.task, self.config.split_seed)
        return split if self.operation is None else self.full_task.restrict_split(split, self.operation)

    def dataset(self) -> Dataset:
        return self.task.dataset()

    def metrics(self) -> list[dict[str, Any]]:
        """The metric rows; seen through one operation, its own columns (``train_acc_add``, ...) are the rows'
        ``train_acc``, ... (the run-wide values are dropped)."""
        rows = read_metrics(self.root / METRICS_FILE)
        if self.operation is None:
            return rows
        suffix = f"_{self.operation}"

        def seen(row: dict[str, Any]) -> dict[str, Any]:
            out = {k: v for k, v in row.items() if not _METRIC_COLUMN.match(k)}  # step, epoch, lr, ...
            out.update({k.removesuffix(suffix): v for k, v in row.items() if k.endswith(suffix)})
            return out

        return [seen(row) for row in rows]

    def summary(self) -> dict[str, Any] | None:
        path = self.root / SUMMARY_FILE
        return read_summary(path) if path.is_file() else None
