"""What every experiment shares: config validation up front, and training the runs it needs.

Validation: an experiment builds and checks every run config it will train (:func:`load_base`, :func:`checked`)
before anything trains, so that a mistake is a one-line :class:`~grokscope.errors.UserError` naming the experiment
file and its field, and nothing is written. Experiment config models derive from :class:`ExperimentModel` (unknown
keys and inf/nan refused) and use :data:`Seed`, :data:`Name` and :func:`check_seeds`.

Training: :func:`train_missing` trains one group of configs that differ only in their seed (and
``model.init_from``), reusing finished runs and resuming interrupted ones; the launchers
(:mod:`grokscope.experiments.launch`) call it for the :class:`~grokscope.experiments.engine.Engine`, through which
every kind trains.

Recorders: an experiment config derived from :class:`RecordedExperiment` takes ``record: [fingerprint, gradients]``,
``record_every``, ``fingerprint`` (probe settings) and ``log``; its :meth:`RecordedExperiment.record_plan` is what the
engine gives every run it trains (fresh recorders per run; runs with recorders train one after another).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from grokscope.config import (
    RunConfig,
    apply_overrides,
    boolean_for_number,
    not_an_option,
    parse_config,
    read_config_file,
)
from grokscope.errors import UserError
from grokscope.memory import check_dataset_fits
from grokscope.presets import resolve_base
from grokscope.recorders import RecordPlan
from grokscope.rundir import check_claimable
from grokscope.store import SUMMARY_FILE, Run
from grokscope.tasks import task_split
from grokscope.training import train
from grokscope.training.many import train_many

MAX_RUNS = 10_000
"""The most runs one experiment may plan (a typo in a grid must not plan a million runs)."""

Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$", max_length=100), AfterValidator(not_an_option)]


class ExperimentModel(BaseModel):
    """Base of experiment config models: unknown keys are refused, and so are inf and nan in every float field."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_boolean_numbers(cls, data: Any) -> Any:
        problem = boolean_for_number(cls, data)  # pydantic reads true as 1: "seeds: [true]" would be seed 1
        if problem is not None:
            raise ValueError(problem)
        return data


class FingerprintOptions(ExperimentModel):
    """The fingerprint recorder's probe (:class:`~grokscope.analysis.fingerprint.FingerprintSpec` fields)."""

    probe_size: int = Field(100, ge=1)
    probe_seed: Seed = 0
    probe_from: Literal["all", "train", "test"] = "all"
    token_index: int | None = None
    quantiles: list[Annotated[float, Field(ge=0, le=1)]] | None = Field(None, min_length=1)


class RecordedExperiment(ExperimentModel):
    """Base of experiment configs whose runs can carry recorders: ``record``, ``record_every``, ``fingerprint``."""

    record: list[Literal["fingerprint", "gradients"]] = Field(
        default_factory=list, description="recorders attached to every run the experiment trains"
    )
    record_every: int = Field(10, ge=1, description="record every N steps")
    fingerprint: FingerprintOptions | None = Field(None, description="the fingerprint recorder's probe")
    log: list[Literal["tensorboard", "wandb"]] = Field(
        default_factory=list, description="log every run's metrics to TensorBoard or W&B (grokscope.loggers)"
    )

    @model_validator(mode="after")
    def _fingerprint_needs_its_recorder(self) -> RecordedExperiment:
        if self.fingerprint is not None and "fingerprint" not in self.record:
            raise ValueError("fingerprint: probe settings need record: [fingerprint]")
        return self

    def record_plan(self) -> RecordPlan | None:
        """The recorders (and loggers) every run gets, or None when ``record`` and ``log`` are empty."""
        if not (self.record or self.log):
            return None
        probe = self.fingerprint.model_dump(exclude_none=True) if self.fingerprint else {}
        names, loggers = tuple(dict.fromkeys(self.record)), tuple(dict.fromkeys(self.log))
        return RecordPlan(names, self.record_every, probe, where="record", loggers=loggers)


def check_seeds(seeds: Sequence[int]) -> None:
    """Each seed once: two runs of one seed would share a run directory."""
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: each seed once, got {list(seeds)}")


def check_run_count(n: int, field: str, how: str) -> None:
    """At most :data:`MAX_RUNS` runs, counted before any is planned (``how``: where the count comes from)."""
    if n > MAX_RUNS:
        raise ValueError(f"{field}: {n:,} runs ({how}); an experiment plans at most {MAX_RUNS:,}")


def load_base(
    config_path: Path, base: str, overrides: Sequence[str] = (), field: str = "set"
) -> tuple[dict[str, Any], RunConfig]:
    """The run config ``base`` (relative to the experiment file) with the experiment's ``overrides`` applied.

    Returns the raw data (overrides applied) and the validated config. Mistakes name the base file when the base
    alone is wrong, else the experiment file and ``field`` (``set.1: ...`` for a malformed entry).
    """
    path = resolve_base(config_path, base)  # beside the experiment file, else a preset of that name
    original = read_config_file(path)
    original.setdefault("name", path.stem)
    data = apply_set(copy.deepcopy(original), overrides, config_path, field)
    try:
        config = parse_config(data, source=f"{config_path}: {field}" if overrides else str(path))
    except UserError:
        parse_config(original, source=str(path))  # a mistake in the base file itself is named there
        raise
    init_from = config.model.init_from
    if init_from is not None and not Path(init_from).is_file():
        model = original.get("model")
        given = model.get("init_from") if isinstance(model, dict) else None
        where = str(path) if given == init_from else f"{config_path}: {field}"
        what = "is not a file" if Path(init_from).exists() else "no such file"
        raise UserError(f"{where}: model.init_from: {what}: {init_from}")
    return data, config


def apply_set(data: dict[str, Any], overrides: Sequence[str], config_path: Path, field: str) -> dict[str, Any]:
    """Apply an experiment's ``key=value`` overrides to raw config data (in place, and returned); a malformed entry
    is an error naming the experiment file and the entry (``set.1: ...``)."""
    for i, item in enumerate(overrides):
        try:
            apply_overrides(data, [item])
        except UserError as err:
            raise UserError(f"{config_path}: {field}.{i}: {str(err).removeprefix('--set ')}") from None
    return data


def check_buildable(config: RunConfig, where: str) -> None:
    """What pydantic cannot see: the task and its split (cheap; no model is built), once its dataset is known to fit
    in memory (a modulus of 100003 is ten billion pairs: building its split would try to allocate 80 GB)."""
    try:
        check_dataset_fits(config)
        task_split(config.task, 0)
    except UserError as err:
        raise UserError(f"{where}: {err}") from None


def checked(data: dict[str, Any], where: str) -> RunConfig:
    """A run config from raw data, validated and buildable; mistakes are one-line errors starting with ``where``."""
    config = parse_config(data, source=where)
    check_buildable(config, where)
    return config


def with_seeds(config: RunConfig, seeds: Sequence[int]) -> list[RunConfig]:
    """``config`` once per seed (the seeds are checked by the experiment config)."""
    return [config.with_seed(seed) for seed in seeds]


def train_missing(
    configs: Sequence[RunConfig],
    run_dirs: Sequence[Path],
    *,
    device: str = "auto",
    progress: bool = True,
    record: RecordPlan | None = None,
) -> list[Run]:
    """The finished run in each directory, training (or resuming) those that are not finished yet.

    ``resume=True`` continues the started runs and starts the others (also those killed while being created).
    ``record``: recorders (and loggers) for every run trained here; recorders watch one model each, so those runs
    train one after another instead of stacked. A finished run is reused as it is, with or without recordings.
    """
    plan = record
    todo = [(c, d) for c, d in zip(configs, run_dirs, strict=True) if not (d / SUMMARY_FILE).is_file()]
    if todo and plan is not None and plan.attaches:
        check_claimable([d for _, d in todo], resume=True, overwrite=False)  # the whole list, before any trains
        for config, run_dir in todo:
            train(config, run_dir, device=device, resume=True, progress=progress, callbacks=plan.recorders())
    elif todo:
        train_many([c for c, _ in todo], [d for _, d in todo], device=device, resume=True, progress=progress)
    return [Run.open(d) for d in run_dirs]
