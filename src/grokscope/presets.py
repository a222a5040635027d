"""Presets: the configs that ship inside the package, usable by name from any folder.

``grokscope train quickstart`` and ``grokscope experiment transfer_quick`` find them here, ``grokscope configs`` lists
them. They are the repository's ``configs/*.yaml`` (``grokscope/configs`` links there in a checkout and holds copies
in an installed wheel). A path that exists always wins over a preset of the same name. Experiment presets name their
base configs by relative path (``base: quickstart.yaml``), which resolves beside them inside the package as in a
checkout; a copy of an experiment preset in another folder still finds a base that is a preset (:func:`resolve_base`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from grokscope.config import read_config_file
from grokscope.errors import UserError

PRESETS_DIR = Path(__file__).parent / "configs"
SUFFIXES = (".yaml", ".yml", ".toml")
RUN = "run"  # the kind of a plain run config (experiment configs name theirs in `kind:`)


@dataclass(frozen=True)
class Preset:
    """A shipped config: its name (the file's stem), file, first comment line and kind (``run`` or the experiment
    kind)."""

    name: str
    path: Path
    description: str
    kind: str


def _description(text: str) -> str:
    """The first comment line of a config file, without the ``#``."""
    for line in text.splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.strip():
            break
    return ""


def available() -> list[Preset]:
    """Every shipped config, run configs first, then experiments by kind, each group by name."""
    found = []
    for path in sorted(PRESETS_DIR.iterdir()) if PRESETS_DIR.is_dir() else []:
        if path.suffix not in SUFFIXES or not path.is_file():
            continue
        kind = read_config_file(path).get("kind")
        text = path.read_text(encoding="utf-8")
        found.append(Preset(path.stem, path, _description(text), RUN if kind is None else str(kind)))
    return sorted(found, key=lambda p: (p.kind != RUN, p.kind, p.name))


def names() -> list[str]:
    return [p.name for p in available()]


def find(name: str) -> Preset:
    """The preset called ``name`` (``quickstart`` or ``quickstart.yaml``), or a one-line error listing them."""
    stem = Path(name).stem if Path(name).suffix in SUFFIXES else name
    for preset in available():
        if preset.name == stem:
            return preset
    raise UserError(f"{name}: no such preset; {_known(stem)}")


def path(name: str) -> Path:
    """The file of the preset called ``name``: ``load_config(presets.path("quickstart"))`` works from any folder."""
    return find(name).path


def _known(name: str) -> str:
    known = names()
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return f"{hint}presets: {', '.join(known)} (grokscope configs lists them)"


def is_bare_name(text: str) -> bool:
    """Whether ``text`` could name a preset: one path component, not a path into a folder."""
    return bool(text) and Path(text).name == text and text not in (".", "..")


def resolve(config: str | Path) -> Path:
    """The file a command's CONFIG argument means: the path when it exists, else the preset of that name.

    A missing path with a folder in it (``configs/nope.yaml``) is returned as it is, for the loader's own
    "no such config file"; a bare name that is neither a file nor a preset is a one-line error listing the presets.
    """
    path = Path(config)
    if path.exists() or not is_bare_name(str(config)):
        return path
    stem = path.stem if path.suffix in SUFFIXES else str(config)
    for preset in available():
        if preset.name == stem:
            return preset.path
    raise UserError(f"{config}: no such config file or preset; {_known(stem)}")


def resolve_base(config_path: Path, base: str) -> Path:
    """An experiment's ``base``/``source`` file: relative to the experiment file, or, where no such file is there
    and ``base`` is a bare name, the preset of that name (an experiment preset copied out of the package)."""
    path = Path(config_path).parent / base
    if path.exists() or not is_bare_name(base):
        return path
    stem = Path(base).stem if Path(base).suffix in SUFFIXES else base
    return next((p.path for p in available() if p.name == stem and p.kind == RUN), path)


def config_kind(path: Path) -> str:
    """``run`` for a run config, else the experiment ``kind`` it names (read without validating the rest)."""
    kind = read_config_file(path).get("kind")
    return RUN if kind is None else str(kind)
