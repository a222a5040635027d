"""Training callbacks: the hook points through which recorders (fingerprints, gradient norms) watch a run.

This module stands apart from ``training`` and ``analysis`` so that recorders defined in ``analysis`` can subclass
:class:`Callback` while neither package imports the other. The CLI or an experiment passes recorders to the trainer.
Every method is optional; ``step`` counts the optimizer updates done so far.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from grokscope.models import GrokTransformer
    from grokscope.store import Run


class Callback:
    """Base class with no-op hooks; override the ones you need. A callback that sets :attr:`stop_reason` (in
    ``on_eval``) stops the run at that evaluation, as early stopping would; the reason goes into the summary."""

    stop_reason: str | None = None

    def on_train_begin(self, run: Run, model: GrokTransformer, step: int) -> None:
        """Before the first update (``step`` > 0 when resuming)."""

    def on_after_backward(self, step: int, model: GrokTransformer) -> None:
        """Gradients of the update that takes the model from ``step`` to ``step + 1`` are in ``.grad``."""

    def on_step_end(self, step: int, model: GrokTransformer) -> None:
        """After the update that brought the model to ``step``."""

    def on_eval(self, step: int, model: GrokTransformer, metrics: dict[str, Any]) -> None:
        """After the metrics at ``step`` were computed. ``metrics`` is a copy of the row shared by the callbacks in
        order: one may add entries that later callbacks log and the progress line shows (the live forecast's
        ``forecast_*``); ``metrics.jsonl`` keeps the row as measured."""

    def on_checkpoint(self, step: int, model: GrokTransformer) -> None:
        """After the checkpoint and metrics at ``step`` were written, before the resume state that marks them
        complete: flush recordings here."""

    def on_train_end(self, run: Run, model: GrokTransformer, step: int) -> None:
        """After the last update and the final checkpoint."""
