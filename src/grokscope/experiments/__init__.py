"""Experiments: orchestrate training and analysis over many runs, then summarize (``grokscope experiment CONFIG``).

An experiment config is YAML with a ``kind``; :func:`run` dispatches on it and returns one line per result.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from grokscope.config import first_error, read_config_file
from grokscope.errors import UserError

KINDS = ("perturbation",)


def run(path: Path, out: Path, *, device: str = "auto", progress: bool = True) -> list[str]:
    """Run the experiment described by the config at ``path`` into ``out``; one printable line per result."""
    data = read_config_file(path)
    kind = data.get("kind")
    if kind == "perturbation":
        from grokscope.experiments import perturbation

        try:
            config = perturbation.PerturbationConfig.model_validate(data)
        except ValidationError as err:
            raise UserError(f"{path}: {first_error(err)}") from None
        pairs = perturbation.run_experiment(config, path, out, device=device, progress=progress)
        return [perturbation.describe(pair) for pair in pairs]
    raise UserError(f"{path}: kind: unknown experiment kind {kind!r} (known: {', '.join(KINDS)})")
