"""Training: the compact loop (:func:`train`), callbacks for recorders, and grokking detection (:func:`summarize`)."""

from grokscope.callbacks import Callback
from grokscope.training.loop import TrainResult, train
from grokscope.training.summary import describe, describe_final, summarize

__all__ = ["Callback", "TrainResult", "describe", "describe_final", "summarize", "train"]
