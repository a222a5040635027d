"""grokscope: train, analyze and compare grokking transformers on modular arithmetic.

The import is light on purpose (no torch, no TransformerLens) so that the command line answers at once;
import the submodules you need: ``grokscope.config``, ``grokscope.tasks``, ``grokscope.models``,
``grokscope.training``, ``grokscope.store``.
"""

__version__ = "0.1.0"
