"""Quantile fingerprints: the distribution of a per-example observable on a fixed probe set, as a short vector.

A fingerprint at one step is, for each observable, the empirical quantiles (default 0.05, 0.10, ..., 0.95) over a
fixed probe set (default 100 examples drawn with a seed from every input of the task; ``probe_from`` draws them from
the run's training or test set instead) of

* ``log_prob``: the log-probability of the correct answer,
* ``margin``: the correct answer's logit minus the largest other logit,
* ``entropy``: the entropy of the output distribution,

read at the answer position (or ``token_index``). :class:`FingerprintRecorder` records one every ``every`` training
steps into ``recordings/fingerprints.safetensors`` (steps, one [T, quantiles] table per observable, the probe rows,
the spec in the metadata); :func:`compute` gives the same vector for a saved checkpoint. DMD
(:mod:`grokscope.analysis.dmd`) reads these sequences.

The probe is drawn from a random stream of its own (:func:`probe_generator_seed`), never the split's: the two used
to share ``torch.randperm`` under the same seed, so a seed-0 run's default probe was 100 training pairs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import torch
from jaxtyping import Float, Int
from pydantic import Field
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from grokscope.analysis.common import jsonable, model_device
from grokscope.analysis.options import AnalysisOptions, Flag
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
ProbeFrom = Literal["all", "train", "test"]
PROBE_FROM: tuple[str, ...] = get_args(ProbeFrom)
PROBE_STREAM = "grokscope.fingerprint.probe"
"""The domain tag hashed with ``probe_seed`` into the probe's generator seed (:func:`probe_generator_seed`)."""
MAX_RUN_SEED = 2**32 - 1
"""The largest seed a run config accepts (``seed``, ``task.split_seed``): a split's generator is seeded at or below
it, the probe's above it."""


def default_quantiles() -> tuple[float, ...]:
    return tuple(round(0.05 * i, 2) for i in range(1, 20))


def probe_generator_seed(probe_seed: int) -> int:
    """The seed of the probe's ``torch.Generator``: SHA-256 of ``"grokscope.fingerprint.probe:<probe_seed>"``, its
    first 8 bytes read little-endian, mapped into ``[2**32, 2**63)``.

    Splits (:func:`grokscope.tasks.make_split` and the task's nested split) seed their generator with the run's split
    seed itself, which a config keeps in ``[0, 2**32 - 1]``; the probe's generator seed is always above that range,
    so the probe's permutation is never the split's, for any pair of seeds. Hashing with a domain tag (rather than
    adding a constant) also keeps neighbouring probe seeds from giving neighbouring generator seeds.
    """
    digest = hashlib.sha256(f"{PROBE_STREAM}:{int(probe_seed)}".encode()).digest()
    return MAX_RUN_SEED + 1 + int.from_bytes(digest[:8], "little") % (2**63 - MAX_RUN_SEED - 1)


@dataclass(frozen=True)
class FingerprintSpec:
    """Which probe set, quantiles and position a fingerprint uses.

    ``probe_from``: ``all`` draws the probe from every input of the task (the default: a fingerprint describes the
    model on the task's whole input distribution, training and unseen pairs in the split's proportion, so one vector
    shows memorization in its upper quantiles and generalization in its lower ones, as the fingerprint study draws
    it); ``train`` or ``test`` draw it from the run's training or test set only (to follow one of them alone).
    """

    probe_size: int = 100
    probe_seed: int = 0
    quantiles: tuple[float, ...] = field(default_factory=default_quantiles)
    token_index: int | None = None  # None: the task's answer position
    probe_from: ProbeFrom = "all"

    def __post_init__(self) -> None:
        if self.probe_size < 1:
            raise UserError(f"{NAME}: probe_size must be at least 1, got {self.probe_size}")
        if not 0 <= self.probe_seed <= MAX_RUN_SEED:
            raise UserError(f"{NAME}: probe_seed must be in 0..{MAX_RUN_SEED}, got {self.probe_seed}")
        if not self.quantiles or not all(0 <= q <= 1 for q in self.quantiles):
            raise UserError(f"{NAME}: quantiles must be in [0, 1], got {list(self.quantiles)}")
        if self.probe_from not in PROBE_FROM:
            raise UserError(f"{NAME}: probe_from must be one of {', '.join(PROBE_FROM)}, got {self.probe_from!r}")

    def pool(self, task: ModularTask, split: Split | None = None) -> Int[Tensor, " pool"]:
        """The rows the probe is drawn from, ascending: every row of ``task.dataset()``, or the split's train or test
        rows (``probe_from``)."""
        if self.probe_from == "all":
            return torch.arange(task.n_pairs)
        if split is None:
            raise UserError(f"{NAME}: probe_from={self.probe_from} needs the run's train/test split")
        return getattr(split, self.probe_from).sort().values

    def probe_rows(self, task: ModularTask, split: Split | None = None) -> Int[Tensor, " probe"]:
        """Rows of ``task.dataset()`` in the probe set, ascending: ``probe_size`` rows of :meth:`pool` drawn without
        replacement by a permutation from the probe's own stream (:func:`probe_generator_seed`), all if fewer."""
        pool = self.pool(task, split)
        generator = torch.Generator().manual_seed(probe_generator_seed(self.probe_seed))
        order = torch.randperm(len(pool), generator=generator)
        return pool[order[: min(self.probe_size, len(pool))]].sort().values

    def position(self, task: ModularTask) -> int:
        if self.token_index is None:
            return task.answer_position
        if not -task.n_ctx <= self.token_index < task.n_ctx:
            raise UserError(
                f"{NAME}: token_index {self.token_index} is outside the task's {task.n_ctx} positions "
                f"(0..{task.n_ctx - 1}, or negative from the end)"
            )
        return self.token_index


class ProbeOptions(AnalysisOptions):
    """The probe settings ``grokscope analyze`` takes (:class:`FingerprintSpec` fields): they choose the probe of
    ``--fingerprint``, and with ``--dmd`` they are checked against the recording's."""

    probe_seed: Annotated[
        int, Flag("Fingerprint probe seed (--fingerprint; --dmd checks the recording's).", metavar="N")
    ] = Field(0, ge=0, le=MAX_RUN_SEED)
    probe_from: Annotated[
        ProbeFrom, Flag("Draw the fingerprint probe from all inputs, the train set or the test set.", default="all")
    ] = "all"
    probe_size: Annotated[int, Flag("Fingerprint probe size.", default="100", metavar="N")] = Field(100, ge=1)
    token_index: Annotated[int | None, Flag("Fingerprint token position.", default="the answer position")] = None

    def check_run(self, run: Run) -> None:
        """A probe larger than the inputs it is drawn from is refused rather than silently cut to their number (the
        recorded options would otherwise name a probe that was never used)."""
        if "probe_size" not in self.model_fields_set:
            return
        split = run.split() if self.probe_from != "all" else None
        spec = FingerprintSpec(probe_size=1, probe_from=self.probe_from)
        available = len(spec.pool(run.task, split))
        if self.probe_size > available:
            raise UserError(
                f"{self.flag('probe_size')} {self.probe_size}: the probe is drawn from {available:,} inputs "
                f"({self.flag('probe_from')} {self.probe_from}); give at most {available}"
            )


def legacy_probe_rows(spec: FingerprintSpec, task: ModularTask) -> Int[Tensor, " probe"]:
    """The probe that recordings without saved probe rows used: the first ``probe_size`` rows of
    ``torch.randperm(n_pairs)`` seeded with ``probe_seed`` itself, i.e. the split's stream (on a run whose split seed
    equals ``probe_seed`` these are training rows only). Kept so that those recordings can still say which rows
    they watched, and resume with the same rows."""
    order = torch.randperm(task.n_pairs, generator=torch.Generator().manual_seed(spec.probe_seed))
    return order[: min(spec.probe_size, task.n_pairs)].sort().values


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
    """One checkpoint's fingerprint: quantiles per observable, and the probe rows (into ``task.dataset()``) it used.

    ``probe_rows`` is None in rows cached before the rows were recorded."""

    quantiles: tuple[float, ...]
    values: dict[str, list[float]]
    probe_rows: list[int] | None = None

    def to_dict(self) -> dict[str, Any]:
        # Each observable's quantiles at the top level (what figures read), its median as a scalar for tables.
        medians = {name: _middle(self.quantiles, row) for name, row in self.values.items()}
        return jsonable(
            {
                "quantiles": self.quantiles,
                "values": self.values,
                **self.values,
                "median": medians,
                "probe_rows": self.probe_rows,
            }
        )


def _middle(quantiles: tuple[float, ...], values: list[float]) -> float | None:
    """The value at the quantile closest to 0.5."""
    if not values:
        return None
    i = min(range(len(quantiles)), key=lambda j: abs(quantiles[j] - 0.5))
    return values[i]


def compute(model: GrokTransformer, task: ModularTask, *, split: Split | None = None, **spec: Any) -> FingerprintResult:
    """The fingerprint of a saved checkpoint (the same vector the recorder takes during training); ``spec``: the
    :class:`FingerprintSpec` fields (``probe_from`` train or test needs ``split``)."""
    spec_ = FingerprintSpec(**{**spec, "quantiles": tuple(spec.get("quantiles", default_quantiles()))})
    rows = spec_.probe_rows(task, split)
    probe = task.dataset().subset(rows).to(model_device(model))
    table = fingerprint(model, task, probe, spec_).cpu()
    return FingerprintResult(
        spec_.quantiles, {name: row.tolist() for name, row in zip(OBSERVABLES, table, strict=True)}, rows.tolist()
    )


@dataclass
class Recording:
    """Fingerprints recorded during training: ``values[name]`` is [T, n_quantiles] at ``steps``.

    ``probe_rows``: the rows of ``task.dataset()`` the fingerprints were taken on. Recordings written before grokscope
    saved them hold none; for those ``probe_rows_saved`` is False and the rows are re-derived exactly by the draw
    those versions made (:func:`legacy_probe_rows`, the split's random stream, so on a run whose split seed equals
    ``spec.probe_seed`` they are all training rows). Use ``probe_rows`` rather than ``spec.probe_rows(...)``, which
    gives the current draw.
    """

    steps: Int[Tensor, " T"]
    values: dict[str, Float[Tensor, "T n_quantiles"]]
    spec: FingerprintSpec
    every: int
    probe_rows: Int[Tensor, " probe"]
    probe_rows_saved: bool = True

    def snapshots(self, observable: str = "log_prob") -> Float[Tensor, "T n_quantiles"]:
        if observable not in self.values:
            raise UserError(f"{NAME}: unknown observable {observable!r} (known: {', '.join(OBSERVABLES)})")
        return self.values[observable]


def recording_path(run: Run) -> Path:
    return run.root / RECORDINGS_DIR / RECORDING_FILE


def _spec_from_json(text: str) -> FingerprintSpec:
    fields = json.loads(text)
    # Recordings from before probe_from drew from every input, which is what the default says.
    return FingerprintSpec(**{**fields, "quantiles": tuple(fields["quantiles"])})


def load_recording(run: Run) -> Recording:
    """The run's recorded fingerprints; a one-line error when the run has none or it is damaged."""
    path = recording_path(run)
    if not path.is_file():
        raise UserError(f"{path}: no fingerprint recording (train with --record fingerprint)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
        spec = _spec_from_json(meta["spec"])
        every = int(meta["every"])
        steps, values = tensors["steps"], {k: tensors[k] for k in OBSERVABLES}
    except (SafetensorError, OSError, KeyError, ValueError, TypeError, UserError) as err:
        raise UserError(f"{path}: corrupt fingerprint recording ({err})") from None
    if "probe_rows" in tensors:
        return Recording(steps, values, spec, every, tensors["probe_rows"])
    return Recording(steps, values, spec, every, legacy_probe_rows(spec, run.task), probe_rows_saved=False)


class FingerprintRecorder(Callback):
    """Record a fingerprint every ``every`` steps (and at the first step) into ``recordings/fingerprints.safetensors``.

    Fingerprints stay on the device until a checkpoint writes them, so recording adds no host sync per step. On
    resume, rows past the resumed step are dropped and the recording continues on the probe rows it was started
    with (also a recording from before probe rows were saved): exactly as if never interrupted. Resuming with
    another probe, quantiles, position or interval is refused, since one recording must be one sequence.
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
        self._rows: Tensor | None = None
        self._task: ModularTask | None = None

    def _record(self, step: int, model: GrokTransformer) -> None:
        self._steps.append(step)
        self._values.append(fingerprint(model, self._task, self._probe, self.spec))

    def on_train_begin(self, run: Run, model: GrokTransformer, step: int) -> None:
        self._run, self._task = run, run.task
        self.spec.position(self._task)  # a bad token_index fails before the first step, not at the first record
        self._steps, self._values = [], []
        rows = None
        if step > 0 and recording_path(run).is_file():
            earlier = load_recording(run)
            self._check_continues(earlier)
            keep = earlier.steps <= step
            self._steps = earlier.steps[keep].tolist()
            self._values = list(torch.stack([earlier.values[k][keep] for k in OBSERVABLES], dim=1).unbind(0))
            rows = earlier.probe_rows
        if rows is None:
            rows = self.spec.probe_rows(self._task, run.split() if self.spec.probe_from != "all" else None)
        self._rows = rows.to(torch.long)
        self._probe = self._task.dataset().subset(self._rows).to(model_device(model))
        if step == 0:
            self._record(0, model)

    def _check_continues(self, earlier: Recording) -> None:
        if earlier.spec != self.spec or earlier.every != self.every:
            raise UserError(
                f"{recording_path(self._run)}: recorded every {earlier.every} steps with {asdict(earlier.spec)}; "
                f"resuming with every {self.every} and {asdict(self.spec)} would mix two probes in one recording "
                "(resume with the same recorder settings, or move the recording aside)"
            )

    def on_step_end(self, step: int, model: GrokTransformer) -> None:
        if step % self.every == 0:
            self._record(step, model)

    def _flush(self) -> None:
        if self._run is None or not self._steps:
            return
        table = torch.stack([v.cpu() for v in self._values])  # [T, n_observables, n_quantiles]
        tensors = {"steps": torch.tensor(self._steps, dtype=torch.long), "probe_rows": self._rows.cpu().contiguous()}
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


SPEC = AnalysisSpec(
    name=NAME, compute=compute, result=FingerprintResult, inputs=frozenset({"split"}), options=(ProbeOptions,)
)
