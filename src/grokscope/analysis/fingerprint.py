"""Quantile fingerprints: the distribution of a per-example observable on a fixed probe set, as a short vector.

A fingerprint at one step is, for each observable, the empirical quantiles (default 0.05, 0.10, ..., 0.95) over a
fixed probe set (default 100 examples drawn with a seed from every input of the task) of

* ``log_prob``: the log-probability of the correct answer,
* ``margin``: the correct answer's logit minus the largest other logit,
* ``entropy``: the entropy of the output distribution,

read at the answer position (or ``token_index``). :class:`FingerprintRecorder` records one every ``every`` training
steps into ``recordings/fingerprints.safetensors`` (steps, one [T, quantiles] table per observable, the spec in the
metadata); :func:`compute` gives the same vector for a saved checkpoint. DMD (:mod:`grokscope.analysis.dmd`) reads
these sequences.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from grokscope.analysis.common import jsonable, model_device
from grokscope.analysis.spec import AnalysisSpec, RowResult
from grokscope.callbacks import Callback
from grokscope.errors import UserError
from grokscope.store import RECORDINGS_DIR, atomic_write
from grokscope.tasks import Dataset, ModularTask, Split

if TYPE_CHECKING:
    from pathlib import Path

    from grokscope.models import GrokTransformer
    from grokscope.store import Run

NAME = "fingerprint"
RECORDING_FILE = "fingerprints.safetensors"
OBSERVABLES = ("log_prob", "margin", "entropy")


def default_quantiles() -> tuple[float, ...]:
    return tuple(round(0.05 * i, 2) for i in range(1, 20))


@dataclass(frozen=True)
class FingerprintSpec:
    """Which probe set, quantiles and position a fingerprint uses."""

    probe_size: int = 100
    probe_seed: int = 0
    quantiles: tuple[float, ...] = field(default_factory=default_quantiles)
    token_index: int | None = None  # None: the task's answer position

    def __post_init__(self) -> None:
        if self.probe_size < 1:
            raise UserError(f"{NAME}: probe_size must be at least 1, got {self.probe_size}")
        if not self.quantiles or not all(0 <= q <= 1 for q in self.quantiles):
            raise UserError(f"{NAME}: quantiles must be in [0, 1], got {list(self.quantiles)}")

    def probe_rows(self, task: ModularTask) -> Int[Tensor, " probe"]:
        """Rows of ``task.dataset()`` in the probe set: a seeded draw without replacement (all rows if fewer)."""
        n = task.n_pairs
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.probe_seed))
        return order[: min(self.probe_size, n)].sort().values

    def position(self, task: ModularTask) -> int:
        return task.answer_position if self.token_index is None else self.token_index


@torch.no_grad()
def fingerprint(
    model: GrokTransformer, task: ModularTask, probe: Dataset, spec: FingerprintSpec
) -> Float[Tensor, "n_observables n_quantiles"]:
    """Quantiles of each observable (rows in :data:`OBSERVABLES` order) on the probe set, in float64, on-device."""
    logits = model(probe.tokens)[:, spec.position(task)].double()
    log_probs = logits.log_softmax(-1)
    answers = probe.answers[:, None]
    correct_logit = logits.gather(-1, answers).squeeze(-1)
    others = logits.scatter(-1, answers, -torch.inf)
    values = torch.stack(
        [
            log_probs.gather(-1, answers).squeeze(-1),
            correct_logit - others.amax(-1),
            -(log_probs.exp() * log_probs).sum(-1),
        ]
    )
    levels = torch.tensor(spec.quantiles, dtype=torch.float64, device=values.device)
    return torch.quantile(values, levels, dim=1).T


@dataclass
class FingerprintResult(RowResult):
    """One checkpoint's fingerprint: quantiles per observable."""

    quantiles: tuple[float, ...]
    values: dict[str, list[float]]

    def to_dict(self) -> dict[str, Any]:
        # Each observable's quantiles at the top level (what figures read), its median as a scalar for tables.
        medians = {name: _middle(self.quantiles, row) for name, row in self.values.items()}
        return jsonable({"quantiles": self.quantiles, "values": self.values, **self.values, "median": medians})


def _middle(quantiles: tuple[float, ...], values: list[float]) -> float | None:
    """The value at the quantile closest to 0.5."""
    if not values:
        return None
    i = min(range(len(quantiles)), key=lambda j: abs(quantiles[j] - 0.5))
    return values[i]


def compute(model: GrokTransformer, task: ModularTask, *, split: Split | None = None, **spec: Any) -> FingerprintResult:
    """The fingerprint of a saved checkpoint (the same vector the recorder takes during training)."""
    spec_ = FingerprintSpec(**spec)
    probe = task.dataset().subset(spec_.probe_rows(task)).to(model_device(model))
    table = fingerprint(model, task, probe, spec_).cpu()
    return FingerprintResult(
        spec_.quantiles, {name: row.tolist() for name, row in zip(OBSERVABLES, table, strict=True)}
    )


@dataclass
class Recording:
    """Fingerprints recorded during training: ``values[name]`` is [T, n_quantiles] at ``steps``."""

    steps: Int[Tensor, " T"]
    values: dict[str, Float[Tensor, "T n_quantiles"]]
    spec: FingerprintSpec
    every: int

    def snapshots(self, observable: str = "log_prob") -> Float[Tensor, "T n_quantiles"]:
        if observable not in self.values:
            raise UserError(f"{NAME}: unknown observable {observable!r} (known: {', '.join(OBSERVABLES)})")
        return self.values[observable]


def recording_path(run: Run) -> Path:
    return run.root / RECORDINGS_DIR / RECORDING_FILE


def load_recording(run: Run) -> Recording:
    """The run's recorded fingerprints; a one-line error when the run has none."""
    path = recording_path(run)
    if not path.is_file():
        raise UserError(f"{path}: no fingerprint recording (train with --record fingerprint)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
        spec = FingerprintSpec(
            **{**json.loads(meta["spec"]), "quantiles": tuple(json.loads(meta["spec"])["quantiles"])}
        )
        every = int(meta["every"])
    except (SafetensorError, OSError, KeyError, ValueError) as err:
        raise UserError(f"{path}: corrupt fingerprint recording ({err})") from None
    return Recording(tensors["steps"], {k: tensors[k] for k in OBSERVABLES}, spec, every)


class FingerprintRecorder(Callback):
    """Record a fingerprint every ``every`` steps (and at the first step) into ``recordings/fingerprints.safetensors``.

    Fingerprints stay on the device until a checkpoint writes them, so recording adds no host sync per step. On
    resume, rows past the resumed step are dropped: the recording continues exactly as if never interrupted.
    """

    def __init__(self, every: int = 2, spec: FingerprintSpec | None = None) -> None:
        if every < 1:
            raise UserError(f"--record-every: must be at least 1, got {every}")
        self.every = every
        self.spec = spec or FingerprintSpec()
        self._steps: list[int] = []
        self._values: list[Tensor] = []
        self._run: Run | None = None
        self._probe: Dataset | None = None
        self._task: ModularTask | None = None

    def _record(self, step: int, model: GrokTransformer) -> None:
        self._steps.append(step)
        self._values.append(fingerprint(model, self._task, self._probe, self.spec))

    def on_train_begin(self, run: Run, model: GrokTransformer, step: int) -> None:
        self._run, self._task = run, run.task
        self._probe = self._task.dataset().subset(self.spec.probe_rows(self._task)).to(model_device(model))
        self._steps, self._values = [], []
        if step > 0 and recording_path(run).is_file():
            earlier = load_recording(run)
            keep = earlier.steps <= step
            self._steps = earlier.steps[keep].tolist()
            self._values = list(torch.stack([earlier.values[k][keep] for k in OBSERVABLES], dim=1).unbind(0))
        if step == 0:
            self._record(0, model)

    def on_step_end(self, step: int, model: GrokTransformer) -> None:
        if step % self.every == 0:
            self._record(step, model)

    def _flush(self) -> None:
        if self._run is None or not self._steps:
            return
        table = torch.stack([v.cpu() for v in self._values])  # [T, n_observables, n_quantiles]
        tensors = {"steps": torch.tensor(self._steps, dtype=torch.long)}
        tensors |= {name: table[:, i].contiguous() for i, name in enumerate(OBSERVABLES)}
        metadata = {
            "spec": json.dumps(asdict(self.spec)),
            "every": str(self.every),
            "observables": ",".join(OBSERVABLES),
        }
        atomic_write(recording_path(self._run), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))

    def on_checkpoint(self, step: int, model: GrokTransformer) -> None:
        self._flush()

    def on_train_end(self, run: Run, model: GrokTransformer, step: int) -> None:
        self._flush()


SPEC = AnalysisSpec(name=NAME, compute=compute, result=FingerprintResult, inputs=frozenset({"split"}))
