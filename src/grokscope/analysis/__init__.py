"""Analyses of saved checkpoints through TransformerLens hooks, one module per analysis.

Each analysis module declares a ``SPEC`` (:class:`~grokscope.analysis.spec.AnalysisSpec`) around
``compute(model, task, *, split=None, ...) -> <Name>Result``; :func:`grokscope.analysis.runner.analyze` runs them
across a run's checkpoints with caching, and :func:`over_checkpoints` gives the typed results of one analysis.
Modules: fourier, neurons, progress (with phases), attention, ablation, gradients, fingerprint, llc; compare (two
models) and dynamics (DMD of recorded fingerprints); basis and common hold the numeric core they share.
"""

from __future__ import annotations

from typing import Any


def over_checkpoints(run: Any, name: str, steps: Any = None, **options: Any) -> list[Any]:
    """One typed result per checkpoint of ``run`` (a :class:`~grokscope.store.Run` or its path), cached exactly
    like ``grokscope analyze``; see :func:`grokscope.analysis.runner.over_checkpoints`."""
    from grokscope.analysis.runner import over_checkpoints as run_over_checkpoints

    return run_over_checkpoints(run, name, steps, **options)
