"""Experiments: orchestrate training and analysis over many runs, then summarize (``grokscope experiment CONFIG``).

An experiment config is YAML with a ``kind``, naming a module here that provides ``CONFIG`` (its pydantic config),
``run_experiment(config, config_path, out, device=, progress=)`` and ``summary_lines(result)``; a module that can
run on Ray also lists ``LAUNCHERS`` and takes ``launcher=`` and ``address=``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from grokscope.config import apply_overrides, first_error, read_config_file
from grokscope.errors import UserError
from grokscope.experiments.runs import RecordedExperiment, attached_recorders

KINDS = ("perturbation", "transfer", "similarity", "sweep", "curriculum", "finetune")


def run(
    path: Path,
    out: Path,
    *,
    device: str = "auto",
    progress: bool = True,
    launcher: str = "local",
    address: str | None = None,
    log: Sequence[str] = (),
    overrides: Sequence[str] = (),
) -> list[str]:
    """Run the experiment described by the config at ``path`` into ``out``; the printable summary lines.

    ``launcher``/``address`` (Ray) apply to the kinds whose module lists them in ``LAUNCHERS`` (sweeps). ``log``
    (``--log``) adds loggers to the config's ``log:`` for every run the experiment trains. ``overrides``
    (``--set key=value``) change fields of the experiment config itself, e.g. ``budgets.grokked=100``.
    """
    data = apply_overrides(read_config_file(path), list(overrides))
    kind = data.get("kind")
    if kind not in KINDS:
        raise UserError(f"{path}: kind: unknown experiment kind {kind!r} (known: {', '.join(KINDS)})")
    module = importlib.import_module(f"grokscope.experiments.{kind}")
    options = launch_options(kind, getattr(module, "LAUNCHERS", ("local",)), launcher, address)
    try:
        config = module.CONFIG.model_validate(data)
    except ValidationError as err:
        raise UserError(f"{path}: {first_error(err)}") from None
    if log:
        if not isinstance(config, RecordedExperiment):
            raise UserError(f"--log: {kind} experiments do not log their runs (transfer, sweeps and chains do)")
        config = config.model_copy(update={"log": list(dict.fromkeys([*config.log, *log]))})
    plan = config.record_plan() if isinstance(config, RecordedExperiment) else None
    with attached_recorders(plan):  # `record:` in the config: every run the experiment trains gets recorders
        result = module.run_experiment(config, path, out, device=device, progress=progress, **options)
    return module.summary_lines(result)


def launch_options(kind: str, launchers: tuple[str, ...], launcher: str, address: str | None) -> dict[str, Any]:
    """The ``launcher``/``address`` keywords for the kind's ``run_experiment`` (none for a local-only kind), or a
    one-line error: an unknown launcher, one the kind cannot use, or ``--address`` without ``--launcher ray``."""
    if launcher not in launchers:
        if launchers == ("local",):
            raise UserError(f"--launcher {launcher}: {kind} experiments run with the local launcher only")
        raise UserError(f"--launcher {launcher}: expected {' or '.join(launchers)}")
    if address is not None:
        if "ray" not in launchers:
            raise UserError(
                f"--address {address}: {kind} experiments run with the local launcher only "
                "(--address is for sweeps with --launcher ray)"
            )
        if launcher != "ray":
            raise UserError(f"--address {address}: a Ray address needs --launcher ray")
    return {} if launchers == ("local",) else {"launcher": launcher, "address": address}
