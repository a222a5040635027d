"""The reference key set: the one set of key frequencies that the measures of a whole run are taken against.

Nanda et al. (2023) track their progress measures against the key frequencies of the **final** checkpoint, held fixed
for every checkpoint; that is the default here, and it does not depend on which checkpoints are analysed: it is the
run's final checkpoint on disk (:func:`final_step`). Another step's key set (``key_from=STEP``), given frequencies,
or each checkpoint's own (``key_from="each"``) are variants, and their results live in a subfolder of the analysis
folder of their own (:func:`variant_folder`), so that they never overwrite or mix with the default's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from grokscope.errors import UserError
from grokscope.store import Run, non_finite


@dataclass(frozen=True)
class KeyReference:
    """The key set fed to every checkpoint (``frequencies`` None: each checkpoint's own) and where it came from."""

    frequencies: list[int] | None
    label: str  # "final:<step>", "step:<step>", "given" or "each"


def parse_key_from(text: str | int) -> str | int:
    """``final``, ``each`` or a checkpoint step."""
    if isinstance(text, int) or str(text).isdigit():
        return int(text)
    if text not in ("final", "each"):
        raise UserError(f"--key-from {text!r}: expected final, each or a checkpoint step")
    return str(text)


def variant_folder(key_frequencies: Sequence[int] | None = None, key_from: str | int = "final") -> str | None:
    """The subfolder of ``analysis/`` that holds the results of a non-default reference key set (None: the default,
    the final checkpoint's, whose results are the folder itself)."""
    if key_frequencies is not None:
        return "key_frequencies_" + "_".join(str(k) for k in sorted(set(key_frequencies)))
    key_from = parse_key_from(key_from)
    if key_from == "final":
        return None
    return "key_from_each" if key_from == "each" else f"key_from_step_{key_from}"


def final_step(run: Run) -> int:
    """The run's final checkpoint on disk with finite weights: the default reference key set's step, whatever
    subset of steps is analysed (a run that diverged keeps its finite checkpoints; the last of them is its end)."""
    steps = run.steps()
    if not steps:
        raise UserError(f"{run.checkpoint_dir}: no checkpoints to analyse")
    # The weights are the model's parameters (its buffers may be infinite by design).
    weights = {name for name, _ in run.load_model(steps[-1]).named_parameters()}
    for step in reversed(steps):
        if non_finite({k: v for k, v in run.load_state_dict(step).items() if k in weights}) is None:
            return step
    raise UserError(f"{run.checkpoint_dir}: every checkpoint has non-finite weights; nothing to analyse")


def key_reference(
    run: Run, given: Sequence[int] | None, key_from: str | int, keys_of: Callable[[int], list[int]]
) -> KeyReference:
    """The reference key set of ``run``: the ``given`` frequencies, each checkpoint's own, or those that
    ``keys_of(step)`` finds at the final checkpoint (``key_from="final"``) or at the step ``key_from``."""
    if given is not None:
        return KeyReference(sorted(set(given)), "given")
    key_from = parse_key_from(key_from)
    if key_from == "each":
        return KeyReference(None, "each")
    step = final_step(run) if key_from == "final" else int(key_from)
    if step not in run.steps():
        raise UserError(f"--key-from {step}: no checkpoint at that step")
    label = f"final:{step}" if key_from == "final" else f"step:{step}"
    return KeyReference(keys_of(step), label)
