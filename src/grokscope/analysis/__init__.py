"""Analyses of saved checkpoints through TransformerLens hooks, one module per analysis.

Each analysis module declares a ``SPEC`` (:class:`~grokscope.analysis.spec.AnalysisSpec`) around
``compute(model, task, *, split=None, ...) -> <Name>Result``; :func:`grokscope.analysis.runner.analyze` runs them
across a run's checkpoints with caching, and :func:`over_checkpoints` gives the typed results of one analysis.
Modules: fourier, neurons, progress (with phases), attention, ablation, gradients, fingerprint, llc; compare (two
models) and dynamics (DMD of recorded fingerprints); basis and common hold the numeric core they share.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def over_checkpoints(run: Any, name: str, steps: Any = None, **options: Any) -> list[Any]:
    """One typed result per checkpoint of ``run`` (a :class:`~grokscope.store.Run` or its path), cached exactly
    like ``grokscope analyze``; see :func:`grokscope.analysis.runner.over_checkpoints`."""
    from grokscope.analysis.runner import over_checkpoints as run_over_checkpoints

    return run_over_checkpoints(run, name, steps, **options)


def analysis_frame(
    run: Any, name: str, *, key_frequencies: Sequence[int] | None = None, key_from: str | int = "final"
) -> Any:
    """What ``grokscope analyze`` cached for analysis ``name`` of ``run`` (a :class:`~grokscope.store.Run`) as a
    pandas DataFrame: a row per checkpoint (indexed by step), a column per scalar field (nested fields joined with
    ``_``, e.g. ``excluded_loss_train``). Measures that use key frequencies come against one reference key set,
    named in ``frame.attrs["key_reference"]``: the run's final checkpoint's, or the variant ``key_from`` /
    ``key_frequencies`` names (as ``grokscope analyze`` takes them); see
    :func:`grokscope.analysis.runner.analysis_frame`."""
    from grokscope.analysis.runner import analysis_frame as frame

    return frame(run, name, key_frequencies=key_frequencies, key_from=key_from)


def analysis_summary(run: Any, name: str) -> dict[str, Any] | None:
    """What analysis ``name``'s rows of ``run`` add up to (``analysis/progress.summary.json``: the phases), or
    None; see :func:`grokscope.analysis.runner.analysis_summary`."""
    from grokscope.analysis.runner import analysis_summary as summary

    return summary(run, name)
