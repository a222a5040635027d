"""Experiments: orchestrate training and analysis over many runs, then summarize (``grokscope experiment CONFIG``).

An experiment config is YAML with a ``kind``. Each kind is a module here that declares one
:class:`~grokscope.experiments.spec.ExperimentSpec` as ``SPEC``; :func:`registry` finds them, so adding a kind is
adding a module. :func:`run` validates the config, has the kind plan every run up front, runs it on one
:class:`~grokscope.experiments.engine.Engine` (local or Ray, resumable, with the config's recorders and loggers),
and returns the printed summary and the runs that failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from grokscope.config import apply_overrides, first_error, read_config_file
from grokscope.errors import UserError
from grokscope.experiments.engine import Engine, Failure
from grokscope.experiments.launch import LAUNCHERS
from grokscope.experiments.runs import RecordedExperiment
from grokscope.experiments.spec import ExperimentSpec
from grokscope.specs import declared_specs
from grokscope.store import write_json

FAILURES_FILE = "failures.json"


def registry() -> dict[str, ExperimentSpec]:
    """Every experiment kind: the ``SPEC`` of each module of ``grokscope.experiments`` that declares one."""
    return {spec.kind: spec for spec in declared_specs("grokscope.experiments", ExperimentSpec)}


@dataclass(frozen=True)
class Report:
    """What an experiment printed, and the runs that failed (the command exits non-zero when there are any)."""

    lines: list[str]
    failures: list[Failure] = field(default_factory=list)


def run(
    path: Path,
    out: Path,
    *,
    device: str = "auto",
    progress: bool = True,
    launcher: str = "local",
    address: str | None = None,
    log: Sequence[str] = (),
    overrides: Sequence[str] = (),
) -> Report:
    """Run the experiment described by the config at ``path`` into ``out``; its printed summary and failed runs.

    ``launcher``/``address``: where runs train (``ray`` needs the extra ``grokscope[ray]``). ``log`` (``--log``)
    adds loggers to the config's ``log:`` for every run the experiment trains. ``overrides`` (``--set key=value``)
    change fields of the experiment config itself, e.g. ``budgets.grokked=100``.
    """
    data = apply_overrides(read_config_file(path), list(overrides))
    kinds = registry()
    kind = data.get("kind")
    if kind not in kinds:
        raise UserError(f"{path}: kind: unknown experiment kind {kind!r} (known: {', '.join(sorted(kinds))})")
    check_launcher(launcher, address)
    spec = kinds[kind]
    try:
        config = spec.config.model_validate(data)
    except ValidationError as err:
        raise UserError(f"{path}: {first_error(err)}") from None
    if log:
        if not isinstance(config, RecordedExperiment):
            raise UserError(f"--log: {kind} experiments do not log their runs")
        config = config.model_copy(update={"log": list(dict.fromkeys([*config.log, *log]))})
    plan = spec.plan(config, path)  # every run config checked before anything trains
    record = config.record_plan() if isinstance(config, RecordedExperiment) else None
    root = Path(out) / config.name
    engine = Engine(root, device=device, progress=progress, launcher=launcher, address=address, record=record)
    measures = spec.execute(config, plan, engine)
    result = spec.summarize(config, plan, measures, root)
    if engine.failures or (root / FAILURES_FILE).is_file():
        write_json(root / FAILURES_FILE, [vars(f) for f in engine.failures])
    return Report(spec.describe(result), list(engine.failures))


def check_launcher(launcher: str, address: str | None) -> None:
    """A known launcher, and ``--address`` only with Ray; one-line errors otherwise."""
    if launcher not in LAUNCHERS:
        raise UserError(f"--launcher {launcher}: expected {' or '.join(LAUNCHERS)}")
    if address is not None and launcher != "ray":
        raise UserError(f"--address {address}: a Ray address needs --launcher ray")
