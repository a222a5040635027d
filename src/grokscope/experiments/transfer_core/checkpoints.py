"""Which source checkpoint each condition starts from, chosen by criteria, never by hand.

``grokked``: the first checkpoint with source test accuracy at or above ``criteria.grokked_test_acc``.
``memorized``: by default the checkpoint at the end of the source's memorization phase (Nanda et al. 2023, §5.2, as
:func:`grokscope.analysis.phases.detect_phases` finds it over the run's own progress measures): the latest
checkpoint at or before that step with train accuracy at or above ``criteria.memorized_train_acc`` — trained to
memorize, before circuit formation. A test-accuracy ceiling (``memorized_pick: first|last``) is a variant: the last
checkpoint below 50% test accuracy can lie at the end of circuit formation, where the Fourier circuit is mostly built.
Partial levels pick the first checkpoint at a test accuracy or a given step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from grokscope.experiments.transfer_core.config import Criteria, PartialCondition


@dataclass(frozen=True)
class Choice:
    """A chosen source checkpoint and why (``step`` None: none qualified, ``reason`` says why)."""

    step: int | None
    reason: str
    train_acc: float | None = None
    test_acc: float | None = None


def choose_checkpoints(
    rows: list[dict[str, Any]],
    steps: list[int],
    criteria: Criteria,
    partial: Sequence[PartialCondition] = (),
    memorization_end: int | None = None,
) -> dict[str, Choice]:
    """The source checkpoint for each condition, from the run's metric rows at its checkpoint steps.

    ``memorization_end``: the step where the run's memorization phase ends (needed by ``memorized_pick: phase``;
    None: no memorization phase was found). A condition the run does not satisfy gets ``step=None`` and the reason.
    """
    logged = {row["step"]: row for row in rows}
    candidates = [logged[s] for s in sorted(steps) if s in logged]

    def chosen(row: dict[str, Any] | None, why: str, missing: str) -> Choice:
        if row is None:
            return Choice(None, missing)
        return Choice(row["step"], why, row["train_acc"], row["test_acc"])

    c = criteria
    grokked = next((r for r in candidates if r["test_acc"] >= c.grokked_test_acc), None)
    out = {
        "grokked": chosen(
            grokked,
            f"first checkpoint with test acc >= {c.grokked_test_acc}",
            f"no checkpoint reached test acc {c.grokked_test_acc}",
        ),
        "memorized": _memorized(candidates, c, memorization_end, chosen),
    }
    for p in partial:
        if p.test_acc is not None:
            row = next((r for r in candidates if r["test_acc"] >= p.test_acc), None)
            out[p.name] = chosen(row, f"first checkpoint with test acc >= {p.test_acc}", f"none at {p.test_acc}")
        else:
            row = logged.get(p.step) if p.step in steps else None
            out[p.name] = chosen(row, f"checkpoint at step {p.step}", f"no logged checkpoint at step {p.step}")
    return out


def _memorized(candidates: list[dict[str, Any]], c: Criteria, memorization_end: int | None, chosen: Any) -> Choice:
    if c.memorized_pick == "phase":
        inside = [
            r
            for r in candidates
            if memorization_end is not None
            and r["step"] <= memorization_end
            and r["train_acc"] >= c.memorized_train_acc
        ]
        missing = (
            "no memorization phase found in the source's progress measures"
            if memorization_end is None
            else f"no checkpoint with train acc >= {c.memorized_train_acc} by the memorization end ({memorization_end})"
        )
        return chosen(
            inside[-1] if inside else None,
            f"end of the memorization phase (step {memorization_end}; train acc >= {c.memorized_train_acc})",
            missing,
        )
    ceiling = [
        r for r in candidates if r["train_acc"] >= c.memorized_train_acc and r["test_acc"] <= c.memorized_test_acc
    ]
    return chosen(
        (ceiling[0] if c.memorized_pick == "first" else ceiling[-1]) if ceiling else None,
        f"{c.memorized_pick} checkpoint with train acc >= {c.memorized_train_acc} and test acc <= "
        f"{c.memorized_test_acc} (an accuracy-ceiling variant, not the memorization phase)",
        f"no checkpoint had train acc >= {c.memorized_train_acc} with test acc <= {c.memorized_test_acc}",
    )
