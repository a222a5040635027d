"""The printed summary of a perturbation experiment, from ``perturbation.json``'s data: one line per pair."""

from __future__ import annotations

from typing import Any

from grokscope.viz.text import number, percent


def pair_line(pair: dict[str, Any]) -> str:
    """One pair: how far the parameters drifted, the final disagreement, when each run generalized (steps); robust to
    runs that diverged (no common checkpoints; non-finite distances, null in JSON, print as —) and failed pairs."""
    head = f"seed {pair['seed']}, eps {pair['epsilon']:g}: "
    if pair.get("status", "ok") != "ok":
        return head + f"failed: {pair.get('error') or 'did not finish'}"
    distances = pair["parameter_distance"]
    parts = [
        f"parameter distance {number(distances[0], '.2g')} -> {number(distances[-1], '.2g')}"
        if distances
        else "no common checkpoints"
    ]
    disagreement = pair["prediction_disagreement"][-1] if pair["prediction_disagreement"] else None
    if disagreement is not None and disagreement == disagreement:  # null (nan) when a run's weights were not finite
        parts.append(f"final disagreement {percent(disagreement, 1)}")
    base, perturbed = pair["base_generalization_step"], pair["perturbed_generalization_step"]
    parts.append(f"generalized at step {number(base, 'd')} vs {number(perturbed, 'd')}")
    for who in ("base", "perturbed"):
        step = pair.get(f"{who}_diverged_step")
        if step is not None:
            parts.append(f"{who} run diverged at step {step}")
    return head + ", ".join(parts)


def describe(result: dict[str, Any]) -> list[str]:
    """One line per (seed, epsilon) pair."""
    return [pair_line(pair) for pair in result["pairs"]]
