"""``grokscope compare RUN_A RUN_B``: how alike the circuits of two runs of one task are.

Wires :func:`grokscope.analysis.compare.compare` to two run directories (or checkpoint folders): shared key
frequencies, prediction agreement and the angles between the embeddings' principal subspaces, one line each, or
``--json`` for a machine. Comparing runs of different tasks (another modulus, operation or sequence format) is
meaningless and refused in one line; runs that differ only in their split or training compare as asked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from grokscope.cli.guard import guard
from grokscope.errors import UserError

if TYPE_CHECKING:
    from grokscope.store import Run
    from grokscope.tasks import ModularTask


def task_identity(task: ModularTask) -> dict[str, Any]:
    """What makes two tasks the same question: the operations, the modulus, the inputs and the sequence format."""
    return {
        "operation": ",".join(task.operation_names),
        "modulus": task.modulus,
        "input_range": task.input_range,
        "format": task.format,
    }


def comparable(run_a: Run, run_b: Run, names: tuple[str, str]) -> None:
    """Refuse, in one line naming the first difference, two runs whose tasks differ."""
    a, b = task_identity(run_a.full_task), task_identity(run_b.full_task)
    for key, value in a.items():
        if b[key] != value:
            raise UserError(
                f"{names[0]} and {names[1]}: different tasks ({key} {value} vs {b[key]}); circuits compare only on "
                "the same task"
            )
    if run_a.full_task.is_multi:
        raise UserError(f"{names[0]}: a run of several operations; compare runs of one operation")


def pick_step(run: Run, step: int | None, flag: str) -> int:
    """The checkpoint to compare: ``step`` if the run has it, else its last one."""
    steps = run.steps()
    if not steps:
        raise UserError(f"{run.root}: no checkpoints")
    if step is None:
        return steps[-1]
    if step not in steps:
        raise UserError(f"{flag} {step}: {run.root} has no checkpoint at that step (it has {steps[0]}..{steps[-1]})")
    return step


def compare(
    run_a: Annotated[Path, typer.Argument(help="A run directory or a bare checkpoints/ folder.")],
    run_b: Annotated[Path, typer.Argument(help="Another run (or checkpoints/ folder) of the same task.")],
    step_a: Annotated[
        int | None, typer.Option(min=0, metavar="STEP", help="RUN_A's checkpoint (default: its last).")
    ] = None,
    step_b: Annotated[
        int | None, typer.Option(min=0, metavar="STEP", help="RUN_B's checkpoint (default: its last).")
    ] = None,
    k: Annotated[
        int, typer.Option(min=1, metavar="K", help="Principal embedding directions whose angles are compared.")
    ] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as one JSON object.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Compare the circuits of two runs of one task: shared key frequencies, prediction agreement, embedding angles."""

    def work() -> None:
        from grokscope.analysis.compare import compare as compare_models
        from grokscope.store import Run
        from grokscope.training.loop import resolve_device

        names = (str(run_a), str(run_b))
        first, second = Run.open(run_a), Run.open(run_b)
        comparable(first, second, names)
        steps = pick_step(first, step_a, "--step-a"), pick_step(second, step_b, "--step-b")
        where = resolve_device(device)
        models = first.load_model(steps[0], device=where), second.load_model(steps[1], device=where)
        split = first.split() if (first.root / "split.safetensors").is_file() else None
        result = compare_models(*models, first.task, split=split, k=k)
        row = result.to_dict()
        if as_json:
            typer.echo(
                json.dumps({"run_a": names[0], "step_a": steps[0], "run_b": names[1], "step_b": steps[1], **row})
            )
            return
        typer.echo(f"comparing {names[0]} (step {steps[0]}) with {names[1]} (step {steps[1]})")
        shared = sorted(set(row["key_frequencies_a"]) & set(row["key_frequencies_b"]))
        typer.echo(
            f"key frequencies: {row['key_frequencies_a']} vs {row['key_frequencies_b']}; shared {shared} "
            f"(Jaccard {row['key_frequency_jaccard']:.2f})"
        )
        held_out = "" if row["test_agreement"] is None else f", {row['test_agreement']:.1%} on RUN_A's test set"
        typer.echo(
            f"predictions: agree on {row['agreement']:.1%} of inputs{held_out} (accuracy {row['accuracy_a']:.1%} "
            f"vs {row['accuracy_b']:.1%})"
        )
        degrees = ", ".join(f"{d:.1f}" for d in row["principal_angles_degrees"])
        typer.echo(
            f"embeddings: principal angles of the top {row['k']} directions [{degrees}] degrees; "
            f"overlap {row['subspace_overlap']:.2f} (1 = the same subspace)"
        )

    guard(work, "interrupted: nothing was written")
