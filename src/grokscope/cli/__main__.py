"""``python -m grokscope.cli``: the same app as the ``grokscope`` command."""

from grokscope.cli import app

app(prog_name="grokscope")
