"""Training the runs an experiment needs: finished runs are reused, interrupted ones resumed, the rest trained together.

An experiment calls :func:`train_missing` with configs that differ only in their seed (and ``model.init_from``);
rerunning an experiment therefore trains only what is missing, and an interrupted one picks up where it stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from grokscope.config import RunConfig
from grokscope.store import SUMMARY_FILE, Run
from grokscope.training.many import train_many


def train_missing(
    configs: Sequence[RunConfig], run_dirs: Sequence[Path], *, device: str = "auto", progress: bool = True
) -> list[Run]:
    """The finished run in each directory, training (or resuming) those that are not finished yet.

    ``resume=True`` continues the started runs and starts the others (also those killed while being created).
    """
    todo = [(c, d) for c, d in zip(configs, run_dirs, strict=True) if not (d / SUMMARY_FILE).is_file()]
    if todo:
        train_many([c for c, _ in todo], [d for _, d in todo], device=device, resume=True, progress=progress)
    return [Run.open(d) for d in run_dirs]


def train_chain(
    stages: Sequence[Sequence[RunConfig]], stage_dirs: Sequence[Sequence[Path]], *, device: str, progress: bool
) -> list[list[Run]]:
    """Train stage after stage; each seed's stage k starts from its stage k-1 final checkpoint (``init_from``).

    ``stages[k][i]`` is seed i's config of stage k (its ``init_from`` is filled in here); all seeds of a stage
    train together. Returns the runs as ``[stage][seed]``.
    """
    done: list[list[Run]] = []
    for k, (configs, dirs) in enumerate(zip(stages, stage_dirs, strict=True)):
        if k:
            configs = [_starting_from(c, previous) for c, previous in zip(configs, done[-1], strict=True)]
        done.append(train_missing(configs, dirs, device=device, progress=progress))
    return done


def _starting_from(config: RunConfig, previous: Run) -> RunConfig:
    data = config.to_dict()
    data["model"]["init_from"] = str(previous.checkpoint_path(previous.steps()[-1]))
    return RunConfig.model_validate(data)
