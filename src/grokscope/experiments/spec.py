"""What an experiment kind declares, so that one engine can run every kind without knowing any by name.

Each kind is a module of :mod:`grokscope.experiments` that ends with ``SPEC = ExperimentSpec(...)``:

- ``config``: its pydantic config model (``kind: Literal[...]`` names the kind in YAML);
- ``plan(config, config_path)``: every run config the experiment will train, built and checked before anything
  trains, so that a mistake is one line naming the file and field and nothing is written;
- ``execute(config, plan, engine)``: trains through the :class:`~grokscope.experiments.engine.Engine` (which
  launches, resumes, records and logs) and measures each run; returns the per-run measures;
- ``summarize(config, plan, measures, root)``: the statistics over runs (:mod:`grokscope.stats`), written under
  ``root``; returns the result as plain JSON data (what ``results.json`` holds);
- ``describe(result)``: the printed summary, from that plain data (text lives in :mod:`grokscope.viz`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from grokscope.experiments.engine import Engine


@dataclass(frozen=True)
class ExperimentSpec:
    """One experiment kind, as the engine sees it (see the module docstring for each step's contract)."""

    kind: str
    config: type[BaseModel]
    plan: Callable[[Any, Path], Any]
    execute: Callable[[Any, Any, Engine], Any]
    summarize: Callable[[Any, Any, Any, Path], dict[str, Any]]
    describe: Callable[[dict[str, Any]], list[str]]
