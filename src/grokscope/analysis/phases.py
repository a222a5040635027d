"""The three phases of grokking (Nanda et al. 2023, section 5.2), found by rules local in time.

The paper reads the phases off its progress measures: **memorization** (train loss and excluded loss fall together
while restricted and test loss stay high), **circuit formation** (excluded train loss rises, restricted loss falls,
train and test loss stay flat), **cleanup** (test loss drops suddenly, restricted loss keeps falling, weights
shrink). Each boundary here is what happens around it, never where the data ends, so that stopping a run later or
earlier, or analysing other checkpoints, does not move it:

* ``memorization_end``: the training set is memorized and the excluded train loss has stopped falling with the
  train loss (the paper's end of memorization: from there it rises as the circuit forms). The later of two steps:
  the first logged step with train accuracy >= :data:`MEMORIZED` (``summary.json``'s memorization step), and the
  excluded loss's floor on the progress rows (checkpoint resolution, the run's one reference key set): once the
  excluded train loss has risen to :data:`TURN_RISE` times its lowest value so far, the floor is that lowest value
  and its step the first checkpoint within :data:`FLOOR_TOLERANCE` of it (a flat floor's first step, not the noise
  minimum of a flat curve). None until the excluded loss has turned, or when the rows begin on the floor. Where the
  phases overlap (a large learning rate), the floor is shallow and the memorized step decides.
* ``circuit_formation_end`` (= cleanup start) and ``cleanup_end``: the sudden generalization, read from
  ``metrics.jsonl`` at its full resolution (every evaluation; checkpoint spacing plays no part). Rates are central
  differences over :data:`RATE_HALF_WIDTH` evaluations each side, and each edge is where a rate crosses
  :data:`HALF` of its peak (the full width at half maximum of a sudden change).

  - Cleanup starts when test accuracy starts its jump: the rise rate of test accuracy peaks between memorizing the
    training set (train accuracy >= 99%) and generalizing (test accuracy >= 99%, the step ``summary.json`` calls
    generalized); cleanup starts at the first step of the stretch before that peak where the rise is at least half
    of it.
  - Cleanup ends when the test loss's sudden drop ends: the fall rate of log test loss, ``-d ln(test loss) / d
    step``, peaks from the accuracy peak on (up to generalizing, or later while the fall keeps at least half that
    pace, as the last test inputs come right); cleanup ends at the first step after its peak where it is below half
    the peak. The slow fall weight decay keeps up afterwards is not part of it.

  None until the run has generalized (both), or until the drop has slowed within the logged steps (cleanup end).
  On a log axis the test loss falls fastest once accuracy is nearly whole, so the start is read from accuracy and
  the end from log loss: the paper's cleanup spans both (its test accuracy jumps early in cleanup, its log test
  loss keeps dropping sharply to the end).

A boundary reads only the data up to the end of cleanup (and :data:`RATE_HALF_WIDTH` evaluations past it), so
training longer never moves it and truncating a run after cleanup moves none; the memorization end moves with the
checkpoints analysed by at most their spacing. The thresholds are choices, stated in ``rule``; ``chance_loss`` is
ln p, the loss of a uniform guess.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from grokscope.analysis.spec import RowResult

TURN_RISE = 2.0  # the excluded train loss has turned once it doubles from its floor
FLOOR_TOLERANCE = 1.1  # a checkpoint within 10% of the floor is on it
MEMORIZED = 0.99  # train accuracy of a memorized training set (summary.json's memorization threshold)
GENERALIZED = 0.99  # test accuracy of a generalized run (summary.json's generalization threshold)
HALF = 0.5  # cleanup: the fall of log test loss at least half its peak rate
RATE_HALF_WIDTH = 2  # evaluations each side of a step in its fall rate
RULE = (
    f"memorization ends once train acc >= {MEMORIZED:.0%} and the excluded train loss is on its floor (within "
    f"{FLOOR_TOLERANCE - 1:.0%}) before rising to {TURN_RISE:g}x it; cleanup starts where the rise of test acc "
    f"first reaches {HALF:.0%} of its peak (between train acc >= {MEMORIZED:.0%} and test acc >= {GENERALIZED:.0%}) "
    f"and ends where the fall of log test loss drops below {HALF:.0%} of its peak after that (rates from "
    f"metrics.jsonl, central differences over {RATE_HALF_WIDTH} evaluations each side)"
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


def memorization_end(steps: Sequence[int], excluded_train_loss: Sequence[float]) -> int | None:
    """The end of memorization from the excluded train loss at ``steps`` (ascending), by the module's rule."""
    floor = math.inf
    for i, loss in enumerate(excluded_train_loss):
        if loss >= TURN_RISE * floor:
            first = next(j for j in range(i) if excluded_train_loss[j] <= FLOOR_TOLERANCE * floor)
            # Rows that begin on the floor do not show memorization ending: it may have ended before them.
            return steps[first] if first > 0 else None
        floor = min(floor, loss)
    return None


def fall_rates(steps: Sequence[int], log_loss: Sequence[float]) -> list[float | None]:
    """``-d log_loss / d step`` at each step: a central difference over :data:`RATE_HALF_WIDTH` points each side
    (None where the points do not reach)."""
    h = RATE_HALF_WIDTH
    return [
        (log_loss[i - h] - log_loss[i + h]) / (steps[i + h] - steps[i - h]) if h <= i < len(steps) - h else None
        for i in range(len(steps))
    ]


def cleanup_bounds(
    steps: Sequence[int], test_loss: Sequence[float], train_acc: Sequence[float], test_acc: Sequence[float]
) -> tuple[int | None, int | None]:
    """(circuit_formation_end, cleanup_end) from the logged curves (ascending steps), by the module's rule."""
    generalized = next((i for i, acc in enumerate(test_acc) if acc >= GENERALIZED), None)
    if generalized is None:
        return None, None
    # The jump is looked for once the training set is memorized, with rates that read no step before that (what
    # test accuracy does while the model memorizes is memorization's).
    memorized = next((i for i, acc in enumerate(train_acc) if acc >= MEMORIZED), 0)
    first = min(memorized + RATE_HALF_WIDTH, generalized)
    rise = fall_rates(steps, [-acc for acc in test_acc])
    fall = fall_rates(steps, [math.log(max(loss, 1e-300)) for loss in test_loss])
    jump = _peak(rise, first, generalized)
    if jump is None:
        return None, None
    start = jump
    while start > first and _at_least(rise[start - 1], HALF * rise[jump]):  # type: ignore[operator]
        start -= 1
    drop = _peak(fall, jump, generalized)
    if drop is None:
        return steps[start], None
    # Forward from the peak while the fall keeps at least half its pace (a steeper fall just after generalizing is
    # taken up); the first step below half ends cleanup. Only the data up to there (and RATE_HALF_WIDTH past) is read.
    end = None
    for i in range(drop + 1, len(steps)):
        if fall[i] is None:
            break
        if fall[i] < HALF * fall[drop]:  # type: ignore[operator]
            end = i
            break
        if fall[i] > fall[drop]:  # type: ignore[operator]
            drop = i
    return steps[start], (steps[end] if end is not None else None)


def _peak(rates: Sequence[float | None], first: int, last: int) -> int | None:
    """The index of the largest positive rate in ``first..last`` (None: no rate there is positive)."""
    known = [i for i in range(first, last + 1) if rates[i] is not None and rates[i] > 0]  # type: ignore[operator]
    return max(known, key=lambda i: rates[i]) if known else None  # type: ignore[arg-type,return-value]


def _at_least(rate: float | None, level: float) -> bool:
    return rate is not None and rate >= level


def detect_phases(rows: list[dict[str, Any]], metrics: list[dict[str, Any]] | None = None) -> Phases:
    """The phases of a run from its progress rows (``analysis/progress.json``, one reference key set) and its
    ``metrics.jsonl`` rows."""
    rows = sorted(rows, key=lambda r: r["step"])
    last = rows[-1]

    def excluded_of(r: dict[str, Any]) -> Any:
        return r["excluded"]["loss"].get("train", r["excluded"]["loss"]["all"])

    # A loss that overflowed is stored as null: such checkpoints tell nothing about the phases.
    finite_rows = [r for r in rows if _finite(excluded_of(r))]
    memorization = memorization_end([r["step"] for r in finite_rows], [excluded_of(r) for r in finite_rows])
    logged = sorted(
        (m for m in metrics or [] if all(_finite(m.get(k)) for k in ("test_loss", "train_acc", "test_acc"))),
        key=lambda m: m["step"],
    )
    memorized = next((m["step"] for m in logged if m["train_acc"] >= MEMORIZED), None)
    if memorization is not None and memorized is not None:
        memorization = max(memorization, memorized)
    start, end = cleanup_bounds(
        [m["step"] for m in logged],
        [m["test_loss"] for m in logged],
        [m["train_acc"] for m in logged],
        [m["test_acc"] for m in logged],
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
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
