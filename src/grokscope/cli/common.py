"""Argument helpers shared by several commands: CONFIG files and presets, their shell completion, step lists."""

from __future__ import annotations

import glob
from pathlib import Path

from grokscope.errors import UserError


def config_file(config: Path, command: str) -> Path:
    """The file a CONFIG argument names (a path that exists, else a preset), checked to be the kind ``command``
    runs: ``train`` a run config, ``experiment`` one with a ``kind``."""
    from grokscope.presets import RUN, config_kind, resolve

    path = resolve(config)
    kind = config_kind(path)
    if command == "train" and kind != RUN:
        raise UserError(f"{config}: an experiment config (kind: {kind}); run it with grokscope experiment {config}")
    if command == "experiment" and kind == RUN:
        raise UserError(f"{config}: a run config (it has no kind:); train it with grokscope train {config}")
    return path


def complete_config(incomplete: str) -> list[str]:
    """Shell completion of CONFIG: the presets starting with what was typed, and the config files and folders here
    that do. Nothing once a folder is typed, so that the shell completes the path itself."""
    if "/" in incomplete or "\\" in incomplete:
        return []
    from grokscope.presets import SUFFIXES, names

    here = sorted(
        p.name + ("/" if p.is_dir() else "")
        for p in Path.cwd().glob(f"{glob.escape(incomplete)}*")
        if p.is_dir() or p.suffix in SUFFIXES
    )
    return [n for n in names() if n.startswith(incomplete)] + here


def complete_preset(incomplete: str) -> list[str]:
    """Shell completion of a preset's name."""
    from grokscope.presets import names

    return [n for n in names() if n.startswith(incomplete)]
