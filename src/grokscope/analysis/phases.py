"""The three phases of grokking (Nanda et al. 2023, section 5.2), found in a run's progress measures and losses.

The paper reads them off its progress measures: **memorization** (train loss and excluded loss fall together,
restricted and test loss stay high), **circuit formation** (excluded train loss rises, restricted loss falls, train
and test loss stay flat), **cleanup** (test loss drops suddenly, restricted loss keeps falling, weights shrink). The
rule here, on the analysed checkpoints (with the full key set of the progress rows, which share one reference):

* ``circuit_formation_end`` (= cleanup start): the first step after the test loss's peak at which its logarithm
  has fallen :data:`CLEANUP_START` of the way from the peak to its lowest value after it. None when the test loss
  never falls by at least :data:`MIN_DROP` nats of log loss (the run has not generalized).
* ``cleanup_end``: the first step after that at which the logarithm has fallen :data:`CLEANUP_END` of the way.
* ``memorization_end``: the step of the lowest excluded train loss before the cleanup start (the paper's turning
  point: excluded loss falls with the training loss while the model memorizes, then rises as the circuit forms).

The fractions describe the sudden drop of the test loss, so they depend on where it ends; a run stopped early in
cleanup has its cleanup end at the last checkpoint (or None). ``chance_loss`` is ln p, the loss of a uniform guess.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from grokscope.analysis.spec import RowResult

CLEANUP_START = 0.1
CLEANUP_END = 0.9
MIN_DROP = math.log(10.0)  # one decade of test loss
RULE = (
    f"cleanup starts when log test loss has fallen {CLEANUP_START:.0%} of the way from its peak to its later "
    f"minimum and ends at {CLEANUP_END:.0%}; memorization ends at the lowest excluded train loss before cleanup"
)


@dataclass
class Phases(RowResult):
    """Phase boundaries (steps; None when the run has not reached them) and the rule that found them."""

    memorization_end: int | None
    circuit_formation_end: int | None
    cleanup_end: int | None
    chance_loss: float
    key_frequencies: list[int]
    key_reference: str | None
    rule: str = RULE


def _split_of(row: dict[str, Any]) -> str:
    return "test" if "test" in row["full"]["loss"] else "all"


def find_phases(
    steps: list[int], test_loss: list[float], excluded_train_loss: list[float]
) -> tuple[int | None, int | None, int | None]:
    """(memorization_end, circuit_formation_end, cleanup_end) by the rule of the module docstring."""
    logs = [math.log(max(loss, 1e-300)) for loss in test_loss]
    peak = max(range(len(logs)), key=lambda i: logs[i])
    after = logs[peak:]
    floor = min(after)
    start = end = None
    if logs[peak] - floor >= MIN_DROP:
        start = next(i for i in range(peak, len(logs)) if logs[peak] - logs[i] >= CLEANUP_START * (logs[peak] - floor))
        end = next(i for i in range(start, len(logs)) if logs[peak] - logs[i] >= CLEANUP_END * (logs[peak] - floor))
    before = range(0, start + 1) if start is not None else range(len(steps))
    memorization = min(before, key=lambda i: excluded_train_loss[i]) if before else None
    as_step = lambda i: steps[i] if i is not None else None  # noqa: E731
    return as_step(memorization), as_step(start), as_step(end)


def detect_phases(rows: list[dict[str, Any]], metrics: list[dict[str, Any]] | None = None) -> Phases:
    """The phases of a run from its progress rows (``analysis/progress.json``, ascending steps)."""
    rows = sorted(rows, key=lambda r: r["step"])
    last, split = rows[-1], _split_of(rows[-1])

    def excluded_of(r: dict[str, Any]) -> Any:
        return r["excluded"]["loss"].get("train", r["excluded"]["loss"]["all"])

    # A loss that overflowed is stored as null: such checkpoints tell nothing about the phases.
    rows = [r for r in rows if _finite(r["full"]["loss"].get(split)) and _finite(excluded_of(r))]
    memorization = start = end = None
    if rows:
        memorization, start, end = find_phases(
            [r["step"] for r in rows], [r["full"]["loss"][split] for r in rows], [excluded_of(r) for r in rows]
        )
    return Phases(
        memorization_end=memorization,
        circuit_formation_end=start,
        cleanup_end=end,
        chance_loss=math.log(last["modulus"]),
        key_frequencies=list(last["key_frequencies"]),
        key_reference=last.get("key_reference"),
    )


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
