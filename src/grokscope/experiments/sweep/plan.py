"""Planning a sweep: every (condition, seed) as a validated run config with a stable, readable folder name.

The grid's Cartesian product (last field fastest) or the ``runs`` list becomes one condition each; a condition's
folder name is ``alias=value`` per swept field (``loss_on=all_wd=1``) and each seed adds ``_seed<N>``. Every run
config is built and checked here, before anything trains, so a bad combination is a one-line
:class:`~grokscope.errors.UserError` naming the sweep file, the run and the field. Nothing here knows where the
sweep is written: a run's folder is its :attr:`PlannedRun.name` under the experiment's root.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import re
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from grokscope.config import RunConfig, parse_config, set_field
from grokscope.errors import UserError
from grokscope.experiments.runs import check_buildable, load_base
from grokscope.experiments.sweep.config import SweepConfig

# Short names of common swept fields in run names; any other field goes by the last part of its path.
ALIASES = {"weight_decay": "wd", "batch_size": "bs", "train_fraction": "frac", "n_layers": "layers"}
MAX_NAME = 120
_UNSAFE = re.compile(r"[^A-Za-z0-9._,+-]")


def expand(config: SweepConfig) -> list[dict[str, Any]]:
    """The override mappings, one per condition: the grid's Cartesian product (last field fastest), the ``runs``
    list as given, or the base alone."""
    if config.grid:
        keys = list(config.grid)
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*config.grid.values())]
    if config.runs:
        return [dict(point) for point in config.runs]
    return [{}]


def swept_fields(config: SweepConfig) -> list[str]:
    """The swept field paths: the grid's keys, or every key of the ``runs`` list in order of first appearance."""
    if config.grid:
        return list(config.grid)
    return list(dict.fromkeys(key for point in config.runs for key in point))


def field_aliases(fields: list[str]) -> dict[str, str]:
    """A short name per field (:data:`ALIASES`, else the last path component); fields whose short names would
    collide keep their full path."""
    short = {f: ALIASES.get(f.rsplit(".", 1)[-1], f.rsplit(".", 1)[-1]) for f in fields}
    counts = Counter(short.values())
    return {f: s if counts[s] == 1 else f for f, s in short.items()}


def _compact_float(x: float) -> str:
    if x != x or x in (float("inf"), float("-inf")):
        return str(x).lower()
    d = Decimal(repr(x)).normalize()
    sign, digits, exponent = d.as_tuple()
    mantissa = "".join(map(str, digits))
    scientific = (
        ("-" if sign else "")
        + mantissa[0]
        + ("." + mantissa[1:] if len(mantissa) > 1 else "")
        + f"e{exponent + len(mantissa) - 1}"
    )
    plain = format(d, "f")
    return scientific if len(scientific) < len(plain) else plain


def format_value(value: Any) -> str:
    """A value as it appears in a run name: compact (``1e-3``, ``0.3``, ``1``), ``none`` for None, lowercase
    booleans, lists joined by commas; characters outside ``[A-Za-z0-9._,+-]`` become ``-``."""
    if value is None:
        text = "none"
    elif isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        text = _compact_float(value)
    elif isinstance(value, list | tuple):
        text = ",".join(format_value(v) for v in value)
    elif isinstance(value, dict):
        text = ",".join(f"{k}-{format_value(v)}" for k, v in sorted(value.items()))
    else:
        text = str(value)
    return _UNSAFE.sub("-", text)


def condition_label(values: dict[str, Any], aliases: dict[str, str]) -> str:
    """``alias=value`` for each swept field, joined by ``_`` (empty when nothing is swept)."""
    label = "_".join(f"{aliases[f]}={format_value(v)}" for f, v in values.items())
    if len(label) > MAX_NAME:
        digest = hashlib.sha1(label.encode()).hexdigest()[:10]
        label = f"{label[: MAX_NAME - 11]}-{digest}"
    return label


def run_name(label: str, seed: int) -> str:
    """The run directory's name: the condition label and the seed, e.g. ``wd=1_loss_on=all_seed0``."""
    return f"{label}_seed{seed}" if label else f"seed{seed}"


def _config_name(label: str, fallback: str) -> str:
    # RunConfig names allow [A-Za-z0-9._-]; the seed is not part of it (train_many wants seeds to share a config).
    # Not starting with '-': a folder named so reads as a command-line option (RunConfig refuses such names).
    name = re.sub(r"[^A-Za-z0-9._-]", "-", label)[:MAX_NAME].lstrip("-")
    return name if name.strip(".") else fallback


def _lookup(data: dict[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


@dataclass(frozen=True)
class PlannedRun:
    """One (condition, seed) of a sweep, with its validated config; ``name`` is its folder under the sweep's root."""

    name: str
    condition: str
    values: dict[str, Any]
    seed: int
    config: RunConfig


@dataclass(frozen=True)
class SweepPlan:
    """The swept fields and every run of the sweep, conditions in order and each condition's seeds together."""

    fields: list[str]
    runs: list[PlannedRun]

    def conditions(self) -> dict[str, list[PlannedRun]]:
        """The runs of each condition (its seeds), in plan order: one training group each."""
        groups: dict[str, list[PlannedRun]] = {}
        for run in self.runs:
            groups.setdefault(run.condition, []).append(run)
        return groups


def plan(config: SweepConfig, config_path: Path) -> SweepPlan:
    """The swept fields and every run of the sweep, validated; raises :class:`UserError` before anything trains."""
    config_path = Path(config_path)
    data, base = load_base(config_path, config.base, config.set)
    fields = swept_fields(config)
    aliases = field_aliases(fields)
    planned: list[PlannedRun] = []
    for i, point in enumerate(expand(config)):
        where = f"{config_path}: run {i} ({condition_label(point, field_aliases(list(point))) or 'base'})"
        run_data = copy.deepcopy(data)
        for path, value in point.items():
            set_field(run_data, path, value, where=f"{where}: ")
        run_config = parse_config(run_data, source=where)
        resolved = run_config.to_dict()
        values = {f: _lookup(resolved, f) for f in fields}
        label = condition_label(values, aliases)
        run_config = parse_config({**resolved, "name": _config_name(label, base.name)}, source=where)
        check_buildable(run_config, where)
        for seed in config.seeds:
            planned.append(PlannedRun(run_name(label, seed), label, values, seed, run_config.with_seed(seed)))
    seen: dict[str, PlannedRun] = {}
    for run in planned:
        # Case-insensitive: two names differing in case are one folder on macOS and Windows.
        other = seen.setdefault(run.name.lower(), run)
        if other is not run:
            raise UserError(
                f"{config_path}: two runs would share the directory {run.name!r} "
                f"({other.values} and {run.values}); make the swept values distinct"
            )
    return SweepPlan(fields, planned)
