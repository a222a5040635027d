"""``grokscope import SOURCE``: a model trained elsewhere, in TransformerLens state-dict form, as a grokscope run.

SOURCE is a ``torch.save`` file read with ``torch.load(..., weights_only=True)`` only: tensors and plain containers,
never arbitrary objects (a file that needs full unpickling is refused in one line saying how to re-save it). It
holds either one state dict under TransformerLens names, or a dict in the shape the TransformerLens grokking demo
saves: ``model`` (the final state dict), ``checkpoints`` (a list of state dicts) with ``checkpoint_epochs``, and
``train_indices`` / ``test_indices`` into its ``a * p + b`` dataset. The task and model come from a grokscope run
config (``--config``, ``--set``, and shortcuts such as ``--modulus``); every state dict is checked against the
model that config builds (a missing, unknown or misshapen key is one line naming it) before anything is written.

The run directory gets what training writes for analyses: ``config.yaml``, ``split.safetensors`` (the source's
indices when it has them, else the split the config implies, which the output says) and
``checkpoints/step_N.safetensors`` with grokscope's metadata, so that every analysis reads it like a trained run.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from grokscope.cli.common import complete_config, config_file
from grokscope.cli.guard import guard
from grokscope.errors import UserError

if TYPE_CHECKING:
    import torch

    from grokscope.config import RunConfig
    from grokscope.tasks import ModularTask, Split

# TransformerLens buffers that are not weights (attention masks): present in its state dicts, rebuilt by grokscope.
TL_BUFFERS = re.compile(r"^blocks\.\d+\.attn\.(mask|IGNORE)$")
# Keys of the grokking demo's saved dict that grokscope reads; anything else (losses) is left alone.
DEMO_MODEL, DEMO_CHECKPOINTS, DEMO_EPOCHS = "model", "checkpoints", "checkpoint_epochs"
DEMO_TRAIN, DEMO_TEST, DEMO_LOSSES = "train_indices", "test_indices", "train_losses"


def load_source(path: Path) -> Any:
    """``path`` through ``torch.load(weights_only=True)``; a missing file, a file that is not a torch save, or one
    that needs full unpickling is one line."""
    import torch

    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f" ({found.group(1)})" if found else ""
        raise UserError(
            f"{path}: holds Python objects{what} that grokscope does not unpickle (it loads with weights_only=True); "
            "re-save only tensors, lists and numbers, e.g. torch.save({k: v for k, v in data.items() if k != "
            "'config'}, 'plain.pth')"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: not a torch.save file of tensors ({first})") from None


def is_state_dict(value: Any) -> bool:
    import torch

    return isinstance(value, dict) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def state_dicts(data: Any, path: Path, step: int) -> dict[int, dict[str, torch.Tensor]]:
    """The state dicts of a source by step: one (at ``step``), or the demo's checkpoints at their epochs and its
    final ``model`` after the last epoch (when its epoch count is known and no checkpoint holds it already)."""
    if is_state_dict(data):
        return {step: data}
    if not isinstance(data, dict) or not (DEMO_MODEL in data or DEMO_CHECKPOINTS in data):
        raise UserError(
            f"{path}: neither a state dict nor a dict with {DEMO_MODEL!r} or {DEMO_CHECKPOINTS!r} (the grokking "
            "demo's layout)"
        )
    found: dict[int, dict[str, torch.Tensor]] = {}
    checkpoints = data.get(DEMO_CHECKPOINTS) or []
    if checkpoints:
        epochs = data.get(DEMO_EPOCHS)
        if not isinstance(epochs, list | tuple) or len(epochs) != len(checkpoints):
            raise UserError(f"{path}: {DEMO_CHECKPOINTS!r} needs {DEMO_EPOCHS!r}, one epoch per checkpoint")
        for epoch, state in zip(epochs, checkpoints, strict=True):
            if not is_state_dict(state) or not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
                raise UserError(f"{path}: checkpoint of epoch {epoch!r} is not a state dict at a step >= 0")
            found[epoch] = state
    final = data.get(DEMO_MODEL)
    if final is not None:
        if not is_state_dict(final):
            raise UserError(f"{path}: {DEMO_MODEL!r} is not a state dict")
        losses = data.get(DEMO_LOSSES)
        if not found:
            found[step] = final
        elif isinstance(losses, list | tuple) and losses and len(losses) - 1 not in found:
            found[len(losses) - 1] = final  # after the last epoch's update, numbered as the demo numbers epochs
    return dict(sorted(found.items()))


def checked_state(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], where: str) -> dict[str, Any]:
    """``state`` restricted to the model's keys, in its dtype; a missing, unknown or misshapen key is one line."""
    import torch

    # The attention buffers are the model's own whatever the source holds (an older TransformerLens has none).
    out = {key: tensor for key, tensor in expected.items() if TL_BUFFERS.match(key)}
    for key, tensor in state.items():
        if TL_BUFFERS.match(key):
            continue
        if key not in expected:
            raise UserError(f"{where}: unknown key {key} (not a parameter of the config's model)")
        want = expected[key]
        if tuple(tensor.shape) != tuple(want.shape):
            raise UserError(
                f"{where}: {key} has shape {list(tensor.shape)}, the config's model needs {list(want.shape)} "
                "(check --modulus and the model settings)"
            )
        if not tensor.is_floating_point() or not torch.isfinite(tensor).all():
            raise UserError(f"{where}: {key} is not a tensor of finite floats")
        out[key] = tensor.detach().to(want.dtype).contiguous()
    missing = [key for key in expected if key not in out]
    if missing:
        raise UserError(f"{where}: missing key {missing[0]}" + (f" and {len(missing) - 1} more" if missing[1:] else ""))
    return out


def source_split(data: Any, task: ModularTask, path: Path) -> Split | None:
    """The source's train/test indices (the demo's, into its ``a * p + b`` dataset) as a split of the task's
    dataset, or None when it has none."""
    import torch

    from grokscope.tasks import Split

    if not isinstance(data, dict) or DEMO_TRAIN not in data or DEMO_TEST not in data:
        return None
    if task.is_multi:
        raise UserError(f"{path}: train/test indices of a run of several operations cannot be imported")
    p = task.modulus
    rows = {(int(a), int(b)): i for i, (a, b) in enumerate(task.pairs().tolist())}
    parts = {}
    for name in (DEMO_TRAIN, DEMO_TEST):
        indices = torch.as_tensor(data[name])
        if indices.dtype.is_floating_point or indices.ndim != 1 or indices.numel() == 0:
            raise UserError(f"{path}: {name} must be a non-empty list of integer indices")
        if int(indices.min()) < 0 or int(indices.max()) >= p * p:
            raise UserError(f"{path}: {name} has indices outside 0..{p * p - 1} (the a * p + b inputs of p = {p})")
        try:
            parts[name] = torch.tensor([rows[(i // p, i % p)] for i in indices.tolist()], dtype=torch.int64)
        except KeyError as err:
            raise UserError(f"{path}: {name} holds the pair {err.args[0]}, which the task does not have") from None
    train, test = parts[DEMO_TRAIN], parts[DEMO_TEST]
    if len(set(train.tolist()) & set(test.tolist())) or len(set(train.tolist())) != len(train):
        raise UserError(f"{path}: {DEMO_TRAIN} and {DEMO_TEST} overlap or repeat inputs")
    return Split(train, test, torch.empty(0, dtype=torch.int64))


def run_config(config: Path, overrides: list[str], name: str | None) -> RunConfig:
    from grokscope.config import load_config, parse_config

    cfg = load_config(config_file(config, "train"), overrides)
    return parse_config({**cfg.to_dict(), "name": name}, source="--name") if name is not None else cfg


def import_run(
    source: Annotated[Path, typer.Argument(help="A torch.save file: a TransformerLens state dict, or a dict of them.")],
    config: Annotated[
        Path,
        typer.Option(
            help="The run config that describes the task and model (a file or a preset's name).",
            autocompletion=complete_config,
        ),
    ] = Path("nanda_p113"),
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config field: --set model.d_mlp=256 (repeatable).")
    ] = None,
    modulus: Annotated[int | None, typer.Option(metavar="P", help="The task's modulus (task.modulus).")] = None,
    operation: Annotated[str | None, typer.Option(help="The task's operation, e.g. add (task.operation).")] = None,
    train_fraction: Annotated[
        float | None, typer.Option(help="Fraction of inputs trained on (task.train_fraction), for the split.")
    ] = None,
    seed: Annotated[int | None, typer.Option(min=0, help="The run's seed (seed), which draws the split.")] = None,
    step: Annotated[int, typer.Option(min=0, help="The step of a single state dict.")] = 0,
    name: Annotated[str | None, typer.Option(help="Run name (default: the config's name).")] = None,
    out: Annotated[Path, typer.Option(help="Folder in which the run directory is created.")] = Path("runs"),
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing grokscope run directory of that name.")
    ] = False,
) -> None:
    """Import a model trained elsewhere (TransformerLens state dicts) as a run directory every analysis reads."""

    def work() -> None:
        from grokscope.models import build_model
        from grokscope.rundir import claim
        from grokscope.store import SPLIT_FILE, save_split
        from grokscope.tasks import ModularTask

        shortcuts = {
            "task.modulus": modulus,
            "task.operation": operation,
            "task.train_fraction": train_fraction,
            "seed": seed,
        }
        overrides = [*(set_ or []), *(f"{key}={value}" for key, value in shortcuts.items() if value is not None)]
        cfg = run_config(config, overrides, name)
        task = ModularTask.from_config(cfg.task)
        expected = build_model(cfg.model, task, seed=None).state_dict()
        data = load_source(source)
        by_step = {
            at: checked_state(state, expected, f"{source} (step {at})")
            for at, state in state_dicts(data, source, step).items()
        }
        split = source_split(data, task, source)
        run_dir = out / cfg.name
        held = claim(cfg, run_dir, overwrite=overwrite)  # writes the marker, config.yaml and the config's split
        try:
            if split is not None:
                save_split(held.run.root / SPLIT_FILE, split)
            for at, state in by_step.items():
                held.run.save_checkpoint(at, state)
        finally:
            held.release()
        steps = list(by_step)
        where = f"step {steps[0]}" if len(steps) == 1 else f"steps {steps[0]}..{steps[-1]}"
        typer.echo(f"{run_dir}: imported {len(steps)} checkpoint(s) ({where}) of {task.describe()}")
        if split is None:
            typer.echo(
                f"  split: {source} has no train/test indices; using the split the config implies "
                f"(train fraction {cfg.task.train_fraction}, seed {cfg.split_seed})"
            )
        else:
            typer.echo(f"  split: the source's train/test indices ({len(split.train)} train, {len(split.test)} test)")

    guard(work, "interrupted: rerun the same command with --overwrite")
