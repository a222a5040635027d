"""The run directory on disk (DESIGN.md's contract): atomic writes, safetensors checkpoints, metrics, resume state.

::

    runs/<name>/
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

import json
import math
import os
import re
import tempfile
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from grokscope.config import RunConfig, parse_config
from grokscope.errors import UserError
from grokscope.tasks import Dataset, ModularTask, Split, make_split

if TYPE_CHECKING:
    import pandas as pd
    from transformer_lens import HookedTransformer

CONFIG_FILE = "config.yaml"
SPLIT_FILE = "split.safetensors"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CHECKPOINT_DIR = "checkpoints"
TRAINER_STATE_FILE = "trainer_state.pt"
RECORDINGS_DIR = "recordings"
ANALYSIS_DIR = "analysis"
CHECKPOINT_FORMAT = "grokscope-checkpoint/1"
_CHECKPOINT_RE = re.compile(r"^step_(\d+)\.safetensors$")


def checkpoint_name(step: int) -> str:
    return f"step_{step:07d}.safetensors"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; run files are meant to be shared and read
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with suppress(FileNotFoundError):
            tmp.unlink()


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


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None


def _plain_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors wants contiguous CPU tensors that share no storage.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}


def save_checkpoint(path: Path, state_dict: dict[str, torch.Tensor], step: int, config: RunConfig) -> None:
    """Write a TL state dict with the step and the resolved config in the safetensors metadata."""
    metadata = {"format": CHECKPOINT_FORMAT, "step": str(step), "config": json.dumps(config.to_dict())}
    tensors = _plain_state(state_dict)
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


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
    except (KeyError, ValueError) as err:
        raise UserError(f"{path}: not a grokscope checkpoint (step/config metadata: {err})") from None
    return step, parse_config(data, source=f"{path} metadata")


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
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))


def load_split(path: Path) -> Split:
    try:
        data = load_file(str(path))
        return Split(train=data["train"], test=data["test"], val=data["val"])
    except (SafetensorError, OSError, KeyError) as err:
        raise UserError(f"{path}: corrupt split file ({err})") from None


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(finite(row), allow_nan=False) + "\n" for row in rows))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise UserError(f"{path}: line {lineno} is not valid JSON") from None
    return rows


@dataclass
class Run:
    """A run directory (or a bare checkpoints folder), for writing during training and reading afterwards."""

    root: Path
    config: RunConfig

    # Opening -----------------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, root: Path | str, config: RunConfig, split: Split) -> Run:
        """Start a new run directory: write the resolved config and the split."""
        root = Path(root)
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
        if (path / CONFIG_FILE).is_file():
            try:
                data = yaml.safe_load((path / CONFIG_FILE).read_text(encoding="utf-8"))
            except (yaml.YAMLError, UnicodeDecodeError):
                raise UserError(f"{path / CONFIG_FILE}: not valid YAML") from None
            return cls(path, parse_config(data or {}, source=str(path / CONFIG_FILE)))
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

    @property
    def task(self) -> ModularTask:
        return ModularTask.from_config(self.config.task)

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
        atomic_write(self.root / TRAINER_STATE_FILE, lambda tmp: torch.save(state, tmp))

    # Reading -----------------------------------------------------------------------------------------------------
    def load_trainer_state(self) -> dict[str, Any] | None:
        path = self.root / TRAINER_STATE_FILE
        if not path.is_file():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for a damaged or foreign file
            raise UserError(f"{path}: corrupt trainer state ({type(err).__name__})") from None

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

    def load_model(self, step: int | None = None, device: torch.device | str = "cpu") -> HookedTransformer:
        """A ``HookedTransformer`` with the weights at ``step`` (default: the latest checkpoint)."""
        from grokscope.models import load_model

        state = self.load_state_dict(step)
        try:
            return load_model(self.config.model, self.task, state, device=device)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[-1].strip()
            raise UserError(
                f"{self.checkpoint_dir}: checkpoint does not fit the run's model config ({first})"
            ) from None

    def split(self) -> Split:
        """The saved split; for a bare checkpoints folder, the split regenerated from the config's seed."""
        path = self.root / SPLIT_FILE
        if path.is_file():
            return load_split(path)
        task = self.config.task
        return make_split(self.task.n_pairs, task.train_fraction, task.val_fraction, self.config.split_seed)

    def dataset(self) -> Dataset:
        return self.task.dataset()

    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.root / METRICS_FILE)

    def summary(self) -> dict[str, Any] | None:
        path = self.root / SUMMARY_FILE
        return read_json(path) if path.is_file() else None

    def analysis(self, name: str) -> pd.DataFrame:
        """What ``grokscope analyze`` cached for analysis ``name``: a row per checkpoint (indexed by step), a column
        per scalar field (nested fields joined with ``_``, e.g. ``excluded_loss_train``)."""
        from grokscope.analysis.runner import analysis_frame

        return analysis_frame(self, name)

    def analysis_summary(self, name: str) -> dict[str, Any] | None:
        """What analysis ``name``'s rows add up to (``analysis/progress.summary.json``: the phases), or None."""
        from grokscope.analysis.runner import analysis_summary

        return analysis_summary(self, name)
