"""Analyses of saved checkpoints through TransformerLens hooks, one module per analysis.

Each module has ``compute(model, task, *, split=None, ...) -> <Name>Result`` (a dataclass with ``to_dict()``);
:func:`grokscope.analysis.runner.analyze` runs them across a run's checkpoints with caching.
Modules: fourier, neurons, progress, attention, ablation, gradients, compare (two models); basis holds the Fourier
basis over Z_p that they share.
"""
