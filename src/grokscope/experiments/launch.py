"""Launchers: where an experiment's groups of runs train — in this process (``local``) or as Ray tasks (``ray``).

A group is runs that differ only in their seed, so the many-seeds trainer can pack them. Each group trains with
:func:`grokscope.experiments.runs.train_missing` semantics (finished runs reused, interrupted ones resumed); when a
group fails, its runs are retried one by one so that a failure is pinned on the run that caused it and the others
still finish. Every run comes back as a small :class:`Outcome`; the run data itself is written to its directory —
on a Ray cluster the output folder must therefore be on storage every node can write.

The Ray launcher (extra ``grokscope[ray]``) connects to ``address`` (``auto``, ``HOST:PORT``) or, with none, starts a
local Ray instance; each group is one task with ``gpus_per_task`` GPUs (fractions share a GPU) and
``max_retries`` retries when a worker dies.
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from grokscope.config import RunConfig
from grokscope.errors import UserError
from grokscope.store import Run

Launcher = Literal["local", "ray"]
LAUNCHERS: tuple[Launcher, ...] = ("local", "ray")


@dataclass(frozen=True)
class Outcome:
    """What came back from one run: where it is, whether it finished, the error if not, and its grokking summary."""

    run_dir: str
    ok: bool
    error: str | None = None
    traceback: str | None = None
    regime: str | None = None
    generalization_step: int | None = None
    final: dict[str, Any] | None = None


Group = tuple[Sequence[RunConfig], Sequence[Path]]


def run_groups(
    groups: Sequence[Group],
    *,
    launcher: Launcher = "local",
    address: str | None = None,
    device: str = "auto",
    progress: bool = True,
    gpus_per_task: float = 0.0,
    max_retries: int = 1,
    record: dict[str, Any] | None = None,
) -> list[list[Outcome]]:
    """Train every group (reusing finished runs); one list of outcomes per group, in order. ``record``: a
    :class:`~grokscope.recorders.RecordPlan` as a dict, the recorders every run trained gets."""
    payloads = [([c.to_dict() for c in configs], [str(d) for d in dirs]) for configs, dirs in groups]
    if launcher == "local":
        return [train_group(configs, dirs, device, progress, record) for configs, dirs in payloads]
    if launcher == "ray":
        return _on_ray(payloads, address, device, gpus_per_task, max_retries, record)
    raise UserError(f"--launcher {launcher}: expected local or ray")


def train_group(
    configs: list[dict[str, Any]], dirs: list[str], device: str, progress: bool, record: dict[str, Any] | None = None
) -> list[Outcome]:
    """Train one group (plain data in and out, so it can run in another process); never raises for a run's failure."""
    from grokscope.experiments.runs import train_missing
    from grokscope.recorders import RecordPlan

    parsed = [RunConfig.model_validate(c) for c in configs]
    paths = [Path(d) for d in dirs]
    plan = RecordPlan.from_dict(record) if record else None
    try:
        return [_outcome(run) for run in train_missing(parsed, paths, device=device, progress=progress, record=plan)]
    except KeyboardInterrupt:
        raise
    except Exception as err:  # pinned on the failing run below
        if len(parsed) == 1:
            return [_failure(dirs[0], err)]
    outcomes = []
    for config, path in zip(parsed, paths, strict=True):
        try:
            (run,) = train_missing([config], [path], device=device, progress=progress, record=plan)
            outcomes.append(_outcome(run))
        except KeyboardInterrupt:
            raise
        except Exception as err:  # one failing run must not stop the others
            outcomes.append(_failure(str(path), err))
    return outcomes


def _failure(run_dir: str, err: BaseException) -> Outcome:
    """A failed run: ``Type: first line of the message`` for results tables, and the full traceback."""
    lines = str(err).strip().splitlines()
    error = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    return Outcome(run_dir, ok=False, error=error, traceback="".join(traceback.format_exception(err)))


def _outcome(run: Run) -> Outcome:
    s = run.summary() or {}
    return Outcome(
        str(run.root),
        ok=True,
        regime=s.get("regime"),
        generalization_step=s.get("generalization_step"),
        final=s.get("final"),
    )


def _on_ray(
    payloads: list[tuple[list[dict], list[str]]],
    address: str | None,
    device: str,
    gpus_per_task: float,
    max_retries: int,
    record: dict[str, Any] | None = None,
) -> list[list[Outcome]]:
    try:
        import ray
    except ImportError:
        raise UserError("--launcher ray: Ray is not installed (pip install 'grokscope[ray]')") from None
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as err:
            raise UserError(f"--address {address}: cannot connect to Ray ({err})") from None
    try:
        task = ray.remote(train_group).options(num_gpus=gpus_per_task, max_retries=max_retries)
        return ray.get([task.remote(configs, dirs, device, False, record) for configs, dirs in payloads])
    finally:
        if started_here:
            ray.shutdown()
