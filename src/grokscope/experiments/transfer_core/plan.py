"""Every run config a transfer trains — sources, targets per condition, relearning — built and checked up front.

Conditions compared with each other differ only in what the study varies (where the target run starts, and replay):
each target condition copies one target config, with its own budget, and every target run stops by one early-stop
rule read on the target operation (``test_acc_<op>``): a replay twin, whose run-wide ``test_acc`` also counts the
replayed source pairs, stops when its plain twin would.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from grokscope.config import RunConfig, parse_config
from grokscope.errors import UserError
from grokscope.experiments.runs import apply_set, check_buildable, checked, load_base
from grokscope.experiments.transfer_core.config import RANDOM, TransferSettings
from grokscope.store import Run
from grokscope.tasks import ModularTask

ARCHITECTURE = ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "normalization")


@dataclass
class Plan:
    """Every config a transfer experiment trains, validated before anything trains."""

    source: RunConfig  # seed 0's; each seed's is source.with_seed(seed)
    targets: dict[str, RunConfig]  # per condition, with its budget; init_from is filled in per seed
    relearn: RunConfig | None  # the source task for relearn_steps; init_from is filled in per target run


def plan(
    config: TransferSettings, config_path: Path, name: str, target_set: list[str], field: str = "target_set"
) -> Plan:
    """Build and check the source, target (per condition) and relearn configs of the target that ``target_set``
    makes of the source; one-line errors name the field (``field``: where ``target_set`` was given)."""
    source_data, source = load_base(config_path, config.source, config.source_set, field="source_set")
    check_buildable(source, f"{config_path}: source {config.source}")
    target_data = apply_set(copy.deepcopy(source_data), target_set, config_path, field)
    target_data["name"] = f"{name}_target"
    target = checked(target_data, f"{config_path}: {field}")
    data = target.to_dict()
    data["optim"]["freeze"] = list(config.freeze)
    target = parse_config(data, source=f"{config_path}: freeze")
    conditions = config.planned_conditions()
    if any(c.init != RANDOM for c in conditions) or config.relearn_steps:
        _check_transferable(source, target, config_path)
    if config.replay is not None:
        _check_replayable(source, target, config_path)
    targets = {}
    stop = on_target_operation(target)
    for condition in conditions:
        data = target.to_dict()
        data["train"]["steps"] = condition.budget if condition.budget is not None else target.train.steps
        data["train"]["early_stop"] = stop
        if condition.replay is not None:
            data["task"]["operation"] = [source.task.operation, target.task.operation]
            data["task"]["replay"] = condition.replay
        where = f"{config_path}: {'replay' if condition.replay is not None else 'budget'} of {condition.name}"
        targets[condition.name] = checked(data, where)
    relearn = None
    if config.relearn_steps:
        data = source.to_dict()
        data["name"] = f"{name}_relearn"
        data["train"]["steps"] = config.relearn_steps
        relearn = parse_config(data, source=f"{config_path}: relearn_steps")
    return Plan(source, targets, relearn)


def on_target_operation(target: RunConfig) -> dict | None:
    """The target's early-stop rule read on its own operation: ``test_acc`` becomes ``test_acc_<op>``, which a
    single-operation run logs as its ``test_acc`` and a replay run (source and target operations) for the target's
    examples only. None without early stop."""
    early = target.train.early_stop
    if early is None:
        return None
    rule = early.model_dump()
    operation = target.task.operations[-1]
    if not rule["metric"].endswith(f"_{operation}"):
        rule["metric"] = f"{rule['metric']}_{operation}"
    return rule


def _check_transferable(source: RunConfig, target: RunConfig, config_path: Path) -> None:
    """Checkpoints move between the source and target models: same architecture and sequence format."""
    for name in ARCHITECTURE:
        a, b = getattr(source.model, name), getattr(target.model, name)
        if a != b:
            raise UserError(
                f"{config_path}: target_set: model.{name} is {b!r} in the target but {a!r} in the source; "
                "a checkpoint carries over only to the same architecture (the task's vocabulary may differ)"
            )
    try:
        ModularTask.from_config(target.task).shared_tokens(ModularTask.from_config(source.task))
    except UserError as err:
        raise UserError(f"{config_path}: target_set: {err}") from None


def _check_replayable(source: RunConfig, target: RunConfig, config_path: Path) -> None:
    """Replay trains both tasks in one model, told apart by the operation token: they may differ only there."""
    s, t = source.task, target.task
    if isinstance(s.operation, list) or isinstance(t.operation, list) or s.operation == t.operation:
        raise UserError(
            f"{config_path}: replay: needs one source and one other target operation, got {s.operation} -> "
            f"{t.operation}"
        )
    for name in ("modulus", "format", "input_range"):
        if getattr(s, name) != getattr(t, name):
            raise UserError(
                f"{config_path}: replay: task.{name} is {getattr(t, name)!r} in the target but "
                f"{getattr(s, name)!r} in the source; replayed examples need the same inputs"
            )


def target_view(run: Run) -> Run:
    """A target run seen through its own task: a replay run (several operations) through its last, the target's."""
    names = run.full_task.operation_names
    return run.for_operation(names[-1]) if len(names) > 1 else run


def with_init(config: RunConfig, seed: int, init_from: str | None) -> RunConfig:
    """``config`` for ``seed``, starting from the checkpoint ``init_from`` (None: as configured)."""
    if init_from is None:
        return config.with_seed(seed)
    data = config.with_seed(seed).to_dict()
    data["model"]["init_from"] = init_from
    return parse_config(data, source=config.name)
