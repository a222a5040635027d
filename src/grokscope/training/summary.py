"""Grokking detection: turn a run's metric rows into the ``summary.json`` numbers.

Rules (all on the logged rows, so they are only as fine as ``train.eval_every``):

* ``steps_to_train_acc[t]`` / ``steps_to_test_acc[t]``: first logged step with accuracy >= t.
* memorization step M: first step with train accuracy >= ``memorize_at`` (0.99);
  generalization step G: first step with test accuracy >= ``generalize_at`` (0.99), provided the last logged test
  accuracy is at or above it too: a run that ends below the threshold did not generalize, however it got there (a
  test set of a few pairs can be right by chance, even at step 0 before any training: a modulus-2 ``div`` run has
  one test pair, scored 100% by the untrained model and 0% once the training pair is learnt).
* regime: ``grokked`` when G >= ``grok_ratio`` x M (default 2) — generalization came well after memorization;
  ``generalized_at_once`` when G came sooner; ``memorized_only`` when M exists but G does not;
  ``not_learned`` when neither does.
* sharpest test-loss drop: the logged step ending the interval with the steepest fall of ln(test loss) per step.

A multi-operation run also gets the same numbers per operation (``operations``), from its ``train_acc_add``, ...
columns.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, Literal

THRESHOLDS = (0.9, 0.95, 0.99, 0.999)
Regime = Literal["grokked", "generalized_at_once", "memorized_only", "not_learned"]


def first_step_at(rows: list[dict[str, Any]], key: str, threshold: float) -> int | None:
    """The first logged step at which ``row[key] >= threshold``, or ``None``."""
    return next((row["step"] for row in rows if row.get(key) is not None and row[key] >= threshold), None)


def generalization_step(rows: list[dict[str, Any]], threshold: float, key: str = "test_acc") -> int | None:
    """G: the first logged step at which ``row[key] >= threshold``, or ``None`` when there is none or when the last
    logged value is below ``threshold`` (the run did not end generalized; see the module docstring)."""
    values = [row[key] for row in rows if row.get(key) is not None]
    if not values or not values[-1] >= threshold:
        return None
    return first_step_at(rows, key, threshold)


def classify(memorization: int | None, generalization: int | None, grok_ratio: float = 2.0) -> Regime:
    if generalization is None:
        return "not_learned" if memorization is None else "memorized_only"
    if memorization is not None and generalization >= grok_ratio * max(memorization, 1):
        return "grokked"
    return "generalized_at_once"


def sharpest_test_loss_drop(rows: list[dict[str, Any]]) -> int | None:
    best_step, best_rate = None, 0.0
    for prev, row in itertools.pairwise(rows):
        lo, hi = prev.get("test_loss"), row.get("test_loss")
        if not lo or not hi or lo <= 0 or hi <= 0:
            continue
        rate = (math.log(lo) - math.log(hi)) / max(row["step"] - prev["step"], 1)
        if rate > best_rate:
            best_step, best_rate = row["step"], rate
    return best_step


def summarize(
    rows: list[dict[str, Any]],
    *,
    memorize_at: float = 0.99,
    generalize_at: float = 0.99,
    grok_ratio: float = 2.0,
    operations: Sequence[str] = (),
) -> dict[str, Any]:
    """The grokking summary of a run's metric rows (see the module docstring for the rules); ``operations``: the
    names whose per-operation columns get a summary each (without ``final``) under ``"operations"``."""
    memorization = first_step_at(rows, "train_acc", memorize_at)
    generalization = generalization_step(rows, generalize_at)
    ratio = generalization / memorization if memorization and generalization is not None else None
    rules = {"memorize_at": memorize_at, "generalize_at": generalize_at, "grok_ratio": grok_ratio}
    per_operation = {}
    for op in operations:
        renamed = [
            {"step": row["step"], **{k: row.get(f"{k}_{op}") for k in ("train_acc", "test_acc", "test_loss")}}
            for row in rows
        ]
        one = summarize(renamed, **rules)
        del one["final"], one["rules"]
        per_operation[op] = one
    return {
        "steps_to_train_acc": {str(t): first_step_at(rows, "train_acc", t) for t in THRESHOLDS},
        "steps_to_test_acc": {str(t): first_step_at(rows, "test_acc", t) for t in THRESHOLDS},
        "memorization_step": memorization,
        "generalization_step": generalization,
        "generalization_ratio": ratio,
        "regime": classify(memorization, generalization, grok_ratio),
        "rules": rules,
        "sharpest_test_loss_drop_step": sharpest_test_loss_drop(rows),
        "final": rows[-1] if rows else None,
        **({"operations": per_operation} if operations else {}),
    }


def describe_final(summary: dict[str, Any]) -> str:
    """The run's last metrics, wall time and device, as ``grokscope train`` prints them under :func:`describe`."""
    final = summary["final"]
    return (
        f"final step {final['step']}: train acc {final['train_acc']:.2%}, test acc {final['test_acc']:.2%}, "
        f"test loss {final['test_loss']:.3g} ({summary['wall_time_s']:.1f} s on {summary['device']})"
    )


def describe(summary: dict[str, Any]) -> str:
    """One human sentence: where the run memorized and where it generalized."""
    m, g, regime = summary["memorization_step"], summary["generalization_step"], summary["regime"]
    parts = [f"memorized (train acc >= 99%) at step {m}" if m is not None else "never memorized"]
    if g is not None:
        parts.append(f"generalized (test acc >= 99%) at step {g}")
    else:
        reached = summary.get("steps_to_test_acc", {}).get("0.99")
        final = (summary.get("final") or {}).get("test_acc")
        if reached is not None and final is not None:  # reached the threshold, and fell back
            parts.append(f"never generalized (test acc >= 99% at step {reached}, {final:.2%} at the end)")
        else:
            parts.append("never generalized")
    text = "; ".join(parts)
    if regime == "grokked":
        text += f" -> grokked ({summary['generalization_ratio']:.1f}x later)"
    else:
        text += f" -> {regime.replace('_', ' ')}"
    return text
