"""Transfer: does what a model found by grokking one task help it learn another, and what does it forget?

For each seed a source run trains the source task. Checkpoints are then chosen by criteria, never by hand
(:func:`choose_checkpoints`): ``grokked`` is the first checkpoint with source test accuracy >= 0.999; ``memorized``
the last (or first) checkpoint with train accuracy >= 0.99 and test accuracy <= 0.5; ``partial`` levels pick the
first checkpoint at a test accuracy or a step. Target runs start from each chosen checkpoint (``model.init_from``,
with the shared-token rule of :func:`grokscope.models.transplant` across moduli) or from a random init; everything
else is identical: architecture, optimizer, target split, seeds, per-condition budgets, frozen components. A
condition may set its own ``seeds`` and ``budget`` (e.g. a 30k-step random baseline on 3 seeds beside 5k-step
conditions on 5); otherwise it takes the experiment's. With ``replay: {fraction: f}`` each condition that starts
from a source checkpoint gets a twin, ``<name>_replay``, whose runs train the source and target operations in one
model (``task.operation: [source, target]``, each with its own token) with a seeded sample of the source's training
pairs making the share ``f`` of the training set (``task.replay``); their target measures read the target operation's
examples only, and retention asks the source task with the source's own token, so retention with and without
replay sit side by side.

Measures per target run (:func:`measure_run`): epochs to 90/95/99/99.9% target test accuracy (a run that never gets
there is censored at its budget, never averaged in), test accuracy at an early epoch and at fractions of the budget
(the early-versus-late pattern), final test accuracy, source-task retention at every target checkpoint, the target
inputs scored against the source labels (does the model still answer the old task?), relearning the source task
afterwards, the key frequencies of the transferred model against its source checkpoint, and on the final model the
frequency specialization (:mod:`grokscope.analysis.neurons`), attention (:mod:`grokscope.analysis.attention`) and
gradient flow (:mod:`grokscope.analysis.gradients`). Across runs: prediction agreement between conditions on matched
seeds (:func:`prediction_agreement`). :func:`summarize` turns them into ``stats.json`` with :mod:`grokscope.stats`.
"""

from __future__ import annotations

import copy
import csv
import io
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import torch
from jaxtyping import Int
from pydantic import Field, field_serializer, field_validator, model_validator
from torch import Tensor

from grokscope import stats
from grokscope.analysis import attention, gradients, neurons
from grokscope.analysis.common import answer_logits, jsonable
from grokscope.analysis.fourier import jaccard, key_frequencies
from grokscope.config import Component, RunConfig, parse_config
from grokscope.errors import UserError
from grokscope.experiments.runs import (
    ExperimentModel,
    Name,
    RecordedExperiment,
    Seed,
    apply_set,
    check_buildable,
    check_run_count,
    check_seeds,
    checked,
    load_base,
    train_missing,
)
from grokscope.store import Run, atomic_write_text, write_json
from grokscope.tasks import ModularTask
from grokscope.viz.transfer import figures
from grokscope.viz.write import write_figures

if TYPE_CHECKING:
    from grokscope.models import GrokTransformer

THRESHOLDS = (0.9, 0.95, 0.99, 0.999)
RANDOM = "random"
INITS = ("grokked", "memorized", RANDOM)
SCRATCH = "from scratch"  # the source runs as the relearning reference; a space keeps it apart from condition names
MIN_GAIN = 0.05  # below this accuracy gained by the late point, the early share of the gain is noise: not reported
# The transfer study's specialization table (distinct frequencies, mean specialization, units above 50%), in the
# names of grokscope.analysis.neurons, whose residual-stream measure is the study's.
STUDY_SPECIALIZATION = (
    "residual_distinct_dominant_frequencies",
    "residual_mean_dominant_share",
    "residual_dims_specialized",
)
LEARNING_PATTERN = ("acc_start", "acc_early", "acc_late", "early_share")  # see learning_pattern()
ConditionName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$", max_length=100)]


class Criteria(ExperimentModel):
    """How source checkpoints are chosen."""

    grokked_test_acc: float = Field(0.999, gt=0, le=1)
    memorized_train_acc: float = Field(0.99, gt=0, le=1)
    memorized_test_acc: float = Field(0.5, ge=0, le=1)
    memorized_pick: Literal["first", "last"] = "last"


class _OwnRuns(ExperimentModel):
    """A condition's own seeds and budget; None takes the experiment's ``seeds`` and ``budgets`` (or the target's
    ``train.steps``)."""

    seeds: list[Seed] | None = Field(None, min_length=1)
    budget: int | None = Field(None, ge=1, description="target steps of this condition's runs")

    @model_validator(mode="after")
    def _seeds_once(self) -> _OwnRuns:
        if self.seeds is not None:
            check_seeds(self.seeds)  # its message names the field: conditions.<i>.seeds: ...
        return self


class ConditionSpec(_OwnRuns):
    """A target condition: where its runs start (``init``: grokked, memorized or random; default its name), and
    optionally its own ``seeds`` and ``budget``. A bare name in ``conditions`` is this with defaults."""

    name: ConditionName
    init: Literal["grokked", "memorized", "random"] | None = None

    @model_validator(mode="after")
    def _init(self) -> ConditionSpec:
        if self.init is None:
            if self.name not in INITS:
                raise ValueError(f"init: condition {self.name!r} needs init: grokked, memorized or random")
            self.init = self.name
        elif self.name in INITS and self.init != self.name:
            raise ValueError(f"init: the condition named {self.name!r} starts from {self.name}; rename it")
        return self

    @property
    def plain(self) -> bool:
        """Only a name: written back as the bare name."""
        return self.init == self.name and self.seeds is None and self.budget is None


class PartialCondition(_OwnRuns):
    """A partially grokked source: the first checkpoint at ``test_acc`` or at ``step`` (give one)."""

    name: ConditionName
    test_acc: float | None = Field(None, gt=0, le=1)
    step: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _one(self) -> PartialCondition:
        if (self.test_acc is None) == (self.step is None):
            raise ValueError(f"partial {self.name}: give exactly one of test_acc and step")
        return self


class LearningPattern(ExperimentModel):
    """Where in its budget a target run learns: test accuracy at ``early`` and ``late`` fractions of the budget."""

    early: float = Field(0.1, gt=0, le=1)
    late: float = Field(1.0, gt=0, le=1)

    @model_validator(mode="after")
    def _order(self) -> LearningPattern:
        if self.early >= self.late:
            raise ValueError(f"early: must be below late ({self.late}), got {self.early}")
        return self


class Replay(ExperimentModel):
    """Replay of the source task while the target trains (the transfer study's proposed fix for forgetting)."""

    fraction: float = Field(gt=0, lt=1, description="share of the target's training set drawn from the source's")


@dataclass(frozen=True)
class Condition:
    """A condition as planned: its name, where its runs start (grokked, memorized, random or a partial's name: the
    source checkpoint chosen under that name), its seeds and its budget (None: the target's ``train.steps``), and
    the share of replayed source examples (None: no replay)."""

    name: str
    init: str
    seeds: list[int]
    budget: int | None
    replay: float | None = None


REPLAY_SUFFIX = "_replay"


class TransferConfig(RecordedExperiment):  # record: recorders on every run (runs.attached_recorders)
    """``grokscope experiment`` config of kind ``transfer`` (``source`` is a run config, relative to this file)."""

    kind: Literal["transfer"]
    name: Name = "transfer"
    source: str
    source_set: list[str] = Field(default_factory=list, description="--set overrides for the source runs")
    target_set: list[str] = Field(min_length=1, description="--set overrides that turn the source into the target")
    seeds: list[Seed] = Field(default_factory=lambda: [0, 1, 2, 3, 4], min_length=1)
    conditions: list[ConditionSpec] = Field(
        default_factory=lambda: [ConditionSpec(name=c) for c in INITS],
        min_length=1,
        description="names (grokked, memorized, random) or {name, init, seeds, budget}",
    )
    partial: list[PartialCondition] = Field(default_factory=list)
    criteria: Criteria = Field(default_factory=Criteria)
    budgets: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict, description="target steps per condition"
    )
    freeze: list[Component] = Field(default_factory=list)
    early_epoch: int = Field(100, ge=0)
    relearn_steps: int = Field(0, ge=0, description="retrain the source task from each final target model")
    baseline: ConditionName | None = Field(
        None, description="the condition others are compared with and sped up against (default: random, if run)"
    )
    outlier_z: float = Field(2.0, gt=0, description="flag seeds whose epochs to 99.9% have |z| above this")
    replay: Replay | None = Field(
        None,
        description="add, beside each condition that starts from a source checkpoint, <name>_replay: the same runs "
        "with the source task's examples replayed (task.operation [source, target], task.replay)",
    )
    learning_pattern: LearningPattern = Field(default_factory=LearningPattern)

    @field_validator("conditions", mode="before")
    @classmethod
    def _bare_names(cls, value: Any) -> Any:
        return [{"name": v} if isinstance(v, str) else v for v in value] if isinstance(value, list) else value

    @field_serializer("conditions")
    def _as_written(self, conditions: list[ConditionSpec]) -> list[Any]:
        return [c.name if c.plain else c.model_dump(exclude_none=True) for c in conditions]

    def planned_conditions(self) -> list[Condition]:
        """Every condition in run order (from source checkpoints, partial levels, random inits), with its seeds and
        budget resolved: its own, else ``budgets[name]`` and the experiment's ``seeds``."""
        own = [c for c in self.conditions if c.init != RANDOM]
        randoms = [c for c in self.conditions if c.init == RANDOM]

        def planned(name: str, init: str, spec: _OwnRuns) -> Condition:
            budget = spec.budget if spec.budget is not None else self.budgets.get(name)
            return Condition(name, init, list(spec.seeds or self.seeds), budget)

        from_source = [planned(c.name, c.init, c) for c in own] + [planned(p.name, p.name, p) for p in self.partial]
        if self.replay is not None:  # each source-initialised condition, and right after it its replay twin
            from_source = [
                x
                for c in from_source
                for x in (c, replace(c, name=c.name + REPLAY_SUFFIX, replay=self.replay.fraction))
            ]
        return from_source + [planned(c.name, RANDOM, c) for c in randoms]

    @property
    def condition_names(self) -> list[str]:
        return [c.name for c in self.planned_conditions()]

    @property
    def all_seeds(self) -> list[int]:
        """Every seed any condition runs: the experiment's first, then others as conditions name them. Each gets a
        source run (random-init conditions score retention on that seed's source split)."""
        return list(dict.fromkeys([*self.seeds, *(s for c in self.planned_conditions() for s in c.seeds)]))

    @model_validator(mode="after")
    def _check(self) -> TransferConfig:
        unknown = set(self.budgets) - set(self.condition_names)
        if unknown:
            raise ValueError(f"budgets: unknown condition {sorted(unknown)[0]!r}")
        names = self.condition_names
        twice = next((n for n in names if names.count(n) > 1), None)
        if twice is not None:
            raise ValueError(f"conditions: names must differ from each other and from partial's, got {twice!r} twice")
        for spec in [*self.conditions, *self.partial]:
            if spec.budget is not None and spec.name in self.budgets:
                raise ValueError(f"budgets: {spec.name!r} sets its own budget; give it in one place")
        if self.baseline is not None and self.baseline not in names:
            raise ValueError(f"baseline: {self.baseline!r} is not one of the conditions {names}")
        check_seeds(self.seeds)
        planned = self.planned_conditions()
        target_runs = sum(len(c.seeds) for c in planned)
        n = len(self.all_seeds) + target_runs * (2 if self.relearn_steps else 1)
        check_run_count(n, "seeds", f"{len(self.all_seeds)} source runs and {target_runs} target runs")
        return self

    @property
    def reference(self) -> str | None:
        """The baseline: as given, else random when it is a condition (else None: every pair is compared)."""
        if self.baseline is not None:
            return self.baseline
        return RANDOM if RANDOM in self.condition_names else None


@dataclass(frozen=True)
class Choice:
    """A chosen source checkpoint and why."""

    step: int | None
    reason: str
    train_acc: float | None = None
    test_acc: float | None = None


def choose_checkpoints(
    rows: list[dict[str, Any]], steps: list[int], criteria: Criteria, partial: list[PartialCondition] = ()
) -> dict[str, Choice]:
    """The source checkpoint for each condition, from the run's metric rows at its checkpoint steps.

    A condition the run does not satisfy gets ``step=None`` and the reason.
    """
    logged = {row["step"]: row for row in rows}
    candidates = [logged[s] for s in sorted(steps) if s in logged]

    def chosen(row: dict[str, Any] | None, why: str, missing: str) -> Choice:
        if row is None:
            return Choice(None, missing)
        return Choice(row["step"], why, row["train_acc"], row["test_acc"])

    c = criteria
    grokked = next((r for r in candidates if r["test_acc"] >= c.grokked_test_acc), None)
    memorized = [
        r for r in candidates if r["train_acc"] >= c.memorized_train_acc and r["test_acc"] <= c.memorized_test_acc
    ]
    out = {
        "grokked": chosen(
            grokked,
            f"first checkpoint with test acc >= {c.grokked_test_acc}",
            f"no checkpoint reached test acc {c.grokked_test_acc}",
        ),
        "memorized": chosen(
            (memorized[0] if c.memorized_pick == "first" else memorized[-1]) if memorized else None,
            f"{c.memorized_pick} checkpoint with train acc >= {c.memorized_train_acc} and test acc <= "
            f"{c.memorized_test_acc}",
            f"no checkpoint had train acc >= {c.memorized_train_acc} with test acc <= {c.memorized_test_acc}",
        ),
    }
    for p in partial:
        if p.test_acc is not None:
            row = next((r for r in candidates if r["test_acc"] >= p.test_acc), None)
            out[p.name] = chosen(row, f"first checkpoint with test acc >= {p.test_acc}", f"none at {p.test_acc}")
        else:
            row = logged.get(p.step) if p.step in steps else None
            out[p.name] = chosen(row, f"checkpoint at step {p.step}", f"no logged checkpoint at step {p.step}")
    return out


@dataclass
class TargetResult:
    """One target run: which condition and source checkpoint, and what it measured.

    ``learning`` (:func:`learning_pattern`) and the final model's ``specialization``, ``attention`` and
    ``gradients`` (:func:`final_model_measures`) are flat dicts of named numbers, None where not measurable."""

    condition: str
    seed: int
    source_step: int | None
    source_reason: str
    run_dir: str | None
    budget: int
    epochs_to: dict[str, float | None] = field(default_factory=dict)
    early_test_acc: float | None = None
    final_test_acc: float | None = None
    steps: list[int] = field(default_factory=list)
    source_retention: list[float] | None = None
    source_labels_on_target: list[float] | None = None
    key_frequencies: list[int] | None = None
    source_key_frequencies: list[int] | None = None
    key_frequency_jaccard: float | None = None
    relearn_epochs_to: dict[str, float | None] | None = None
    relearn_test_acc_curve: list[tuple[float, float]] | None = None
    test_acc_curve: list[tuple[float, float]] = field(default_factory=list)
    learning: dict[str, float | None] | None = None
    specialization: dict[str, float] | None = None
    attention: dict[str, float] | None = None
    gradients: dict[str, float | None] | None = None

    @property
    def final_source_retention(self) -> float | None:
        return self.source_retention[-1] if self.source_retention else None

    def row(self) -> dict[str, Any]:
        """The flat results-table row."""
        out = {
            "condition": self.condition,
            "seed": self.seed,
            "source_step": self.source_step,
            "budget": self.budget,
            **{f"epochs_to_{t}": self.epochs_to.get(str(t)) for t in THRESHOLDS},
            "early_test_acc": self.early_test_acc,
            "final_test_acc": self.final_test_acc,
            "final_source_retention": self.final_source_retention,
            "key_frequency_jaccard": self.key_frequency_jaccard,
            **{k: (self.learning or {}).get(k) for k in LEARNING_PATTERN},
            **{k: (self.specialization or {}).get(k) for k in STUDY_SPECIALIZATION},
            "run_dir": self.run_dir,
            "note": "" if self.run_dir else self.source_reason,
        }
        if self.relearn_epochs_to is not None:
            out |= {f"relearn_epochs_to_{t}": self.relearn_epochs_to.get(str(t)) for t in THRESHOLDS}
        return out


@dataclass
class TransferResult:
    conditions: list[str]
    sources: dict[int, dict[str, Choice]]
    source_generalization_epochs: list[float | None]  # per seed of source_seeds
    targets: list[TargetResult]
    statistics: dict[str, Any]
    source_seeds: list[int] = field(default_factory=list)
    source_test_acc_curves: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    relearn_budget: int = 0


def epochs_to(rows: list[dict[str, Any]], key: str = "test_acc") -> dict[str, float | None]:
    crossings = stats.first_crossings([r["epoch"] for r in rows], [r[key] for r in rows], THRESHOLDS)
    return {str(t): epoch for t, epoch in crossings.items()}


def accuracy_at(rows: list[dict[str, Any]], epoch: float) -> float | None:
    """Test accuracy at the last logged row at or before ``epoch``."""
    before = [r for r in rows if r["epoch"] <= epoch]
    return before[-1]["test_acc"] if before else None


@torch.no_grad()
def source_scores(target: Run, source: Run) -> tuple[list[int], list[float] | None, list[float] | None]:
    """At every target checkpoint: accuracy on the source task's test split (retention) and on the target's test
    inputs scored against the source labels. None where the two tasks do not share their inputs."""
    t_task, s_task = target.task, source.task
    steps = target.steps()
    # A replay run (several operations, seen through the target's) asks for the source task with its own token.
    names = target.full_task.operation_names
    on_source = target if len(names) == 1 else None
    if on_source is None and not s_task.is_multi and s_task.operation.name in names:
        on_source = target.for_operation(s_task.operation.name)
    same = ("modulus", "format", "input_range")
    if (
        on_source is None
        or any(getattr(t_task, k) != getattr(s_task, k) for k in same)
        or t_task.operation.b_nonzero != s_task.operation.b_nonzero
    ):
        return steps, None, None  # other inputs (another modulus, format or pair set): no common grid to score
    data, s_data = t_task.dataset(), on_source.task.dataset()
    source_answers, s_answers = s_task.answers(data.pairs), s_task.answers(s_data.pairs)
    s_test, t_test = source.split().test, target.split().test
    retention, sanity = [], []
    for step in steps:
        model = target.load_model(step)
        predictions = answer_logits(model, t_task, data).argmax(-1)
        asked = predictions if on_source is target else answer_logits(model, on_source.task, s_data).argmax(-1)
        retention.append(float((asked == s_answers)[s_test].double().mean()))
        sanity.append(float((predictions == source_answers)[t_test].double().mean()))
    return steps, retention, sanity


# Shape-deciding model fields: a checkpoint moves between tasks (any vocabulary) only when these agree.
ARCHITECTURE = ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "normalization")


@dataclass
class Plan:
    """Every config a transfer experiment trains, validated before anything trains."""

    source: RunConfig  # seed 0's; each seed's is source.with_seed(seed)
    targets: dict[str, RunConfig]  # per condition, with its budget; init_from is filled in per seed
    relearn: RunConfig | None  # the source task for relearn_steps; init_from is filled in per target run


def plan(config: TransferConfig, config_path: Path) -> Plan:
    """Build and check the source, target (per condition) and relearn configs; one-line errors name the field."""
    source_data, source = load_base(config_path, config.source, config.source_set, field="source_set")
    check_buildable(source, f"{config_path}: source {config.source}")
    target_data = apply_set(copy.deepcopy(source_data), config.target_set, config_path, "target_set")
    target_data["name"] = f"{config.name}_target"
    target = checked(target_data, f"{config_path}: target_set")
    data = target.to_dict()
    data["optim"]["freeze"] = list(config.freeze)
    target = parse_config(data, source=f"{config_path}: freeze")
    conditions = config.planned_conditions()
    if any(c.init != RANDOM for c in conditions) or config.relearn_steps:
        _check_transferable(source, target, config_path)
    if config.replay is not None:
        _check_replayable(source, target, config_path)
    targets = {}
    for condition in conditions:
        data = target.to_dict()
        data["train"]["steps"] = condition.budget if condition.budget is not None else target.train.steps
        if condition.replay is not None:
            data["task"]["operation"] = [source.task.operation, target.task.operation]
            data["task"]["replay"] = condition.replay
        where = f"{config_path}: {'replay' if condition.replay is not None else 'budget'} of {condition.name}"
        targets[condition.name] = checked(data, where)
    relearn = None
    if config.relearn_steps:
        data = source.to_dict()
        data["name"] = f"{config.name}_relearn"
        data["train"]["steps"] = config.relearn_steps
        relearn = parse_config(data, source=f"{config_path}: relearn_steps")
    return Plan(source, targets, relearn)


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


def _with(config: RunConfig, seed: int, init_from: str | None) -> RunConfig:
    """``config`` for ``seed``, starting from the checkpoint ``init_from`` (None: as configured)."""
    if init_from is None:
        return config.with_seed(seed)
    data = config.with_seed(seed).to_dict()
    data["model"]["init_from"] = init_from
    return parse_config(data, source=config.name)


def run_experiment(
    config: TransferConfig,
    config_path: Path,
    out: Path,
    *,
    device: str = "auto",
    progress: bool = True,
    source_root: Path | None = None,
) -> TransferResult:
    """Train sources and targets (reusing finished runs), measure every target run and write the results.

    ``source_root``: where the source runs live (default ``<out>/<name>/source``); experiments that transfer one
    source to several targets share them (:mod:`grokscope.experiments.similarity`)."""
    planned = plan(config, config_path)
    root = out / config.name
    source_root = root / "source" if source_root is None else source_root
    seeds = config.all_seeds
    sources = dict(
        zip(
            seeds,
            train_missing(
                [planned.source.with_seed(s) for s in seeds],
                [source_root / f"seed{s}" for s in seeds],
                device=device,
                progress=progress,
            ),
            strict=True,
        )
    )
    choices = {
        s: choose_checkpoints(r.metrics(), r.steps(), config.criteria, config.partial) for s, r in sources.items()
    }

    targets: list[TargetResult] = []
    for condition in config.planned_conditions():
        target_config = planned.targets[condition.name]
        budget = target_config.train.steps
        jobs = []
        for seed in condition.seeds:
            choice = Choice(None, "random init") if condition.init == RANDOM else choices[seed][condition.init]
            result = TargetResult(condition.name, seed, choice.step, choice.reason, None, budget)
            targets.append(result)
            if condition.init != RANDOM and choice.step is None:
                continue  # the source never satisfied the criterion: reported, not trained
            init_from = None if choice.step is None else str(sources[seed].checkpoint_path(choice.step))
            result.run_dir = str(root / condition.name / f"seed{seed}")
            jobs.append((_with(target_config, seed, init_from), Path(result.run_dir)))
        train_missing([c for c, _ in jobs], [d for _, d in jobs], device=device, progress=progress)

    runs = {(t.condition, t.seed): target_view(Run.open(t.run_dir)) for t in targets if t.run_dir is not None}
    relearned = _relearn(runs, planned.relearn, root, device, progress)
    predictions: dict[tuple[str, int], Tensor] = {}
    test_sets: dict[tuple[str, int], Tensor] = {}
    for result in targets:
        key = (result.condition, result.seed)
        if key in runs:
            measure_run(result, runs[key], sources[result.seed], config, relearned.get(key))
            if runs[key].steps():
                predictions[key] = final_predictions(runs[key])
                test_sets[key] = runs[key].split().test

    source_metrics = {s: r.metrics() for s, r in sources.items()}
    statistics = summarize(
        targets,
        config.condition_names,
        baseline=config.reference,
        outlier_z=config.outlier_z,
        chance=1 / planned.source.task.modulus,
        relearn_budget=config.relearn_steps or None,
        scratch=[epochs_to(rows) for rows in source_metrics.values()],
        agreement=prediction_agreement(predictions, test_sets, config.condition_names),
    )
    statistics["settings"] = {
        "baseline": config.reference,
        "outlier_z": config.outlier_z,
        "normality_alpha": stats.NORMALITY_ALPHA,
        "chance": 1 / planned.source.task.modulus,
        "learning_pattern": config.learning_pattern.model_dump(),
        "seeds": {c.name: c.seeds for c in config.planned_conditions()},
        "budgets": {name: c.train.steps for name, c in planned.targets.items()},
    }
    generalization = [
        stats.epochs_to_threshold([r["epoch"] for r in rows], [r["test_acc"] for r in rows], 0.99)
        for rows in source_metrics.values()
    ]
    result = TransferResult(
        config.condition_names,
        choices,
        generalization,
        targets,
        statistics,
        source_seeds=seeds,
        source_test_acc_curves={s: [(r["epoch"], r["test_acc"]) for r in rows] for s, rows in source_metrics.items()},
        relearn_budget=config.relearn_steps,
    )
    _write(result, config, root)
    return result


def _relearn(
    runs: Mapping[tuple[str, int], Run], relearn: RunConfig | None, root: Path, device: str, progress: bool
) -> dict[tuple[str, int], Run]:
    """Retrain the source task from each target run's final checkpoint (one batch: the configs differ only in seed
    and ``init_from``); the relearn runs by (condition, seed)."""
    if relearn is None:
        return {}
    keys = [key for key, run in runs.items() if run.steps()]
    configs = [
        _with(relearn, seed, str(runs[(c, seed)].checkpoint_path(runs[(c, seed)].steps()[-1]))) for c, seed in keys
    ]
    dirs = [root / c / f"seed{seed}_relearn" for c, seed in keys]
    return dict(zip(keys, train_missing(configs, dirs, device=device, progress=progress), strict=True))


# --- per-run measures -------------------------------------------------------------------------------------------


def measure_run(
    result: TargetResult, run: Run, source: Run, config: TransferConfig, relearned: Run | None = None
) -> None:
    """Fill ``result`` with what the finished target ``run`` measured (see the module docstring)."""
    rows = run.metrics()
    result.epochs_to = epochs_to(rows)
    result.early_test_acc = accuracy_at(rows, config.early_epoch)
    result.final_test_acc = rows[-1]["test_acc"] if rows else None
    result.test_acc_curve = [(r["epoch"], r["test_acc"]) for r in rows]
    pattern = config.learning_pattern
    result.learning = learning_pattern(rows, result.budget, pattern.early, pattern.late)
    result.steps, result.source_retention, result.source_labels_on_target = source_scores(run, source)
    task = run.task
    if run.steps() and task.input_range is None and not task.operation.b_nonzero:  # Fourier needs the full grid
        result.key_frequencies = key_frequencies(run.load_model(), task)
        if result.source_step is not None:
            result.source_key_frequencies = key_frequencies(source.load_model(result.source_step), source.task)
            result.key_frequency_jaccard = jaccard(result.key_frequencies, result.source_key_frequencies)
    if run.steps():
        result.specialization, result.attention, result.gradients = final_model_measures(run)
        if result.specialization is not None and result.key_frequencies is not None:
            result.specialization["n_key_frequencies"] = len(result.key_frequencies)
    if relearned is not None:
        relearn_rows = relearned.metrics()
        result.relearn_epochs_to = epochs_to(relearn_rows)
        result.relearn_test_acc_curve = [(r["epoch"], r["test_acc"]) for r in relearn_rows]


def accuracy_at_step(rows: list[dict[str, Any]], step: float) -> float | None:
    """Test accuracy at the last logged row at or before ``step``; a run that stopped earlier (early stop) keeps its
    last logged accuracy."""
    before = [r for r in rows if r["step"] <= step]
    return before[-1]["test_acc"] if before else None


def learning_pattern(rows: list[dict[str, Any]], budget: int, early: float, late: float) -> dict[str, float | None]:
    """Early versus late learning: test accuracy at the start (first logged row), at ``early`` and at ``late`` times
    the budget (in steps; :func:`accuracy_at_step`), and ``early_share``, the part of the accuracy gained by the late
    point that was already gained by the early one: ``(acc_early - acc_start) / (acc_late - acc_start)``. Near 1 a
    run learned early (a head start); near 0 it learned late (grokking). None when the gain is below
    :data:`MIN_GAIN` (nothing learned to share out); it may leave [0, 1] when accuracy rose and fell."""
    start = rows[0]["test_acc"] if rows else None
    acc_early, acc_late = accuracy_at_step(rows, early * budget), accuracy_at_step(rows, late * budget)
    share = None
    if start is not None and acc_early is not None and acc_late is not None and acc_late - start >= MIN_GAIN:
        share = (acc_early - start) / (acc_late - start)
    return {"acc_start": start, "acc_early": acc_early, "acc_late": acc_late, "early_share": share}


@torch.no_grad()
def specialization_summary(model: GrokTransformer, task: ModularTask) -> dict[str, float]:
    """The final model's frequency specialization, from :func:`grokscope.analysis.neurons.compute`.

    The transfer study's table (:data:`STUDY_SPECIALIZATION`): distinct dominant frequencies, mean specialization
    and dimensions above 50%, of the residual stream's embed x unembed spectrum
    (:func:`~grokscope.analysis.neurons.residual_specialization`); beside them the MLP neurons' measure (fraction
    of variance explained by their top frequency): its mean, neurons above 0.5, and frequencies with a cluster."""
    summary = neurons.compute(model, task).summary()
    keep = (*STUDY_SPECIALIZATION, "mean_max_fve", "n_above_half", "n_cluster_frequencies")
    return {k: summary[k] for k in keep}


def _position(name: str) -> str:
    return {"=": "eq"}.get(name, name.lower())


@torch.no_grad()
def attention_summary(model: GrokTransformer, task: ModularTask) -> dict[str, float]:
    """A few numbers from :func:`grokscope.analysis.attention.compute`, each the mean over every head of every
    layer: attention from the answer position to each position (``attention_to_a``, ``_b``, ``_eq``, ...), the
    variance of the attention to ``a`` over the inputs, and the share of the score to ``a`` in its top frequency."""
    result = attention.compute(model, task)
    mean = result.mean_attention
    out = {f"attention_to_{_position(name)}": float(mean[..., k].mean()) for k, name in enumerate(result.positions)}
    out["attention_a_variance"] = float(result.attention_a_variance.mean())
    out["score_top_fve"] = float(result.score_fve.max(-1).values.mean())
    return out


def gradient_summary(run: Run) -> dict[str, float | None]:
    """Gradient flow at the final checkpoint, from :func:`grokscope.analysis.gradients.compute` over the target's
    training split under the run's loss: ``train_loss``, ``grad_norm`` and its part per component
    (``grad_norm.embed``, ``grad_norm.blocks.0.mlp``, ...); with an earlier checkpoint, the movement per step
    (``update_ratio_total_per_step``) and the gradient cosine (``grad_cosine_previous``) since the one before."""
    steps = run.steps()
    kwargs: dict[str, Any] = {}
    if len(steps) >= 2:
        kwargs = {"previous": run.load_model(steps[-2]), "previous_step": steps[-2], "step": steps[-1]}
    result = gradients.compute(
        run.load_model(steps[-1]), run.task, split=run.split(), loss_fn=run.config.train.loss_fn, **kwargs
    )
    out: dict[str, float | None] = {"train_loss": result.loss, "grad_norm": result.grad_norm}
    out |= {f"grad_norm.{name}": value for name, value in result.grad_norm_by_component.items()}
    out["update_ratio_total_per_step"] = result.update_ratio_total_per_step
    out["grad_cosine_previous"] = result.grad_cosine_previous
    return out


def final_model_measures(
    run: Run,
) -> tuple[dict[str, float] | None, dict[str, float] | None, dict[str, float | None]]:
    """Specialization, attention and gradient summaries of the run's final checkpoint; the first two need the full
    (a, b) grid (and specialization an MLP), else None."""
    model, task = run.load_model(), run.task
    grid = task.input_range is None and not task.operation.b_nonzero
    specialization = specialization_summary(model, task) if grid and not model.cfg.attn_only else None
    return specialization, attention_summary(model, task) if grid else None, gradient_summary(run)


@torch.no_grad()
def final_predictions(run: Run) -> Int[Tensor, " n"]:
    """The final model's argmax answer on every input of the run's task (``task.dataset()`` order)."""
    task = run.task
    return answer_logits(run.load_model(), task, task.dataset()).argmax(-1)


def prediction_agreement(
    predictions: Mapping[tuple[str, int], Int[Tensor, " n"]],
    test_sets: Mapping[tuple[str, int], Int[Tensor, " n_test"]],
    conditions: Sequence[str],
) -> list[dict[str, Any]]:
    """Per pair of conditions, how often their final models give the same answer, on matched seeds.

    For each seed that both conditions trained (the common seeds; a seed only one of them ran is left out, and
    the seeds used are listed), the agreement is the fraction of that seed's target test inputs on which the two
    final models' argmax predictions are equal. Matched seeds share the target split (it follows the seed) and, for
    two source-initialised conditions, the source run. ``predictions`` and ``test_sets`` are keyed by
    (condition, seed); a test input counts when it is in both runs' test sets. Rows give the per-seed values and
    their mean ± sd over seeds. Two models each right on a fraction acc_a and acc_b of the inputs agree on at
    least acc_a + acc_b - 1 of them, so agreement says most between models that are not both near perfect."""
    rows = []
    for a, b in itertools.combinations(conditions, 2):
        common = sorted(s for c, s in predictions if c == a and (b, s) in predictions)
        per_seed = {}
        for seed in common:
            test = test_sets[(a, seed)]
            test = test[torch.isin(test, test_sets[(b, seed)])]
            same = predictions[(a, seed)][test] == predictions[(b, seed)][test]
            per_seed[seed] = float(same.double().mean()) if len(test) else None
        spread = stats.spread(list(per_seed.values())).to_dict()
        rows.append({"a": a, "b": b, "matched_seeds": common, **spread, "per_seed": per_seed})
    return rows


# --- statistics over conditions ---------------------------------------------------------------------------------


def _sample(values: Sequence[float | None], budget: int) -> stats.Sample:
    """Values reached within ``budget`` (in epochs, as budgets are in steps and full-batch epochs are steps); the
    rest censored at it."""
    return stats.Sample.from_values([v if v is not None and v <= budget else None for v in values], budget=budget)


def _per_condition(
    by_condition: Mapping[str, list[TargetResult]], measures: Callable[[TargetResult], Mapping[str, Any] | None]
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{condition: {measure: mean ± sd over its runs}}`` for the named numbers ``measures`` gives per run."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for condition, runs in by_condition.items():
        per_run = [m for t in runs if (m := measures(t))]
        names = list(dict.fromkeys(k for m in per_run for k in m))
        if names:
            out[condition] = {k: stats.spread([m.get(k) for m in per_run]).to_dict() for k in names}
    return out


def _speedups(samples: Mapping[str, stats.Sample], reference: str | None) -> list[dict[str, Any]]:
    if reference is None or reference not in samples:
        return []
    return [
        stats.speedup(samples[reference], s, names=(c, reference)).to_dict()
        for c, s in samples.items()
        if c != reference
    ]


def _relearn_statistics(
    by_condition: Mapping[str, list[TargetResult]], budget: int, scratch: Sequence[dict[str, float | None]]
) -> dict[str, Any]:
    """Relearning the source after the target, per condition, against learning it from scratch (the source runs
    themselves, from random init, censored at the same budget)."""
    out: dict[str, Any] = {"budget": budget, "reference": SCRATCH, "describe": {}, "compare": {}, "speedup": {}}
    for threshold in map(str, THRESHOLDS):
        samples = {
            c: _sample([t.relearn_epochs_to[threshold] for t in runs if t.relearn_epochs_to is not None], budget)
            for c, runs in by_condition.items()
        }
        samples = {c: s for c, s in samples.items() if s.n}
        samples[SCRATCH] = _sample([e[threshold] for e in scratch], budget)
        out["describe"][threshold] = {c: stats.describe(s).to_dict() for c, s in samples.items()}
        if len(samples) > 1:
            out["compare"][threshold] = [p.to_dict() for p in stats.compare_all(samples, reference=SCRATCH)]
            out["speedup"][threshold] = _speedups(samples, SCRATCH)
    return out


def _normality(by_condition: Mapping[str, list[TargetResult]]) -> list[dict[str, Any]]:
    """Shapiro–Wilk per condition and per-run metric: the values the t-tests and t-intervals use."""
    metrics: dict[str, Callable[[TargetResult], float | None]] = {
        **{f"epochs_to_{t}": (lambda r, t=str(t): r.epochs_to.get(t)) for t in THRESHOLDS},
        "early_test_acc": lambda r: r.early_test_acc,
        "final_test_acc": lambda r: r.final_test_acc,
        "final_source_retention": lambda r: r.final_source_retention,
    }
    return [
        {"metric": metric, "condition": c, **stats.shapiro([get(t) for t in runs]).to_dict()}
        for metric, get in metrics.items()
        for c, runs in by_condition.items()
    ]


def summarize(
    targets: list[TargetResult],
    conditions: list[str],
    *,
    baseline: str | None = None,
    outlier_z: float = 2.0,
    chance: float | None = None,
    relearn_budget: int | None = None,
    scratch: Sequence[dict[str, float | None]] = (),
    agreement: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``stats.json``: per condition and threshold a description of epochs-to-threshold (censored runs counted, not
    averaged), and every condition against ``baseline`` (default random init, else all pairs), Holm-corrected per
    threshold, each with Shapiro–Wilk flags; speed-ups over the baseline with bootstrap intervals; normality per
    condition and metric; retention against ``chance`` (one-sided one-sample t-test over seeds, Wilcoxon beside);
    outliers at |z| > ``outlier_z``; relearning against the source runs (``scratch``: their epochs-to-threshold) at
    ``relearn_budget``; ``agreement`` (from :func:`prediction_agreement`); and per-condition mean ± sd of the final
    accuracy, the learning pattern, specialization, attention and gradient summaries."""
    out: dict[str, Any] = {"describe": {}, "compare": {}, "spearman_early_acc_vs_epochs_to_0.999": None, "outliers": {}}
    trained = [t for t in targets if t.run_dir is not None]
    by_condition = {c: [t for t in trained if t.condition == c] for c in conditions}
    by_condition = {c: runs for c, runs in by_condition.items() if runs}
    # Comparisons censor every condition at the smallest budget, so that "not reached" means the same everywhere.
    common = min((t.budget for runs in by_condition.values() for t in runs), default=0)
    if baseline is None and RANDOM in by_condition:
        baseline = RANDOM
    reference = baseline if baseline in by_condition else None

    def sample(runs: list[TargetResult], threshold: str, budget: int | None = None) -> stats.Sample:
        cap = budget if budget is not None else max(t.budget for t in runs)
        return _sample([t.epochs_to[threshold] for t in runs], cap)

    out["speedup"] = {}
    for threshold in map(str, THRESHOLDS):
        own = {c: sample(runs, threshold) for c, runs in by_condition.items()}
        out["describe"][threshold] = {c: stats.describe(s).to_dict() for c, s in own.items()}
        if len(by_condition) > 1:
            samples = {c: sample(runs, threshold, common) for c, runs in by_condition.items()}
            pairs = stats.compare_all(samples, reference=reference, method="holm")
            out["compare"][threshold] = [p.to_dict() for p in pairs]
        # Speed-ups use each condition's own budget: a longer baseline is what makes its mean known.
        out["speedup"][threshold] = _speedups(own, reference)
    out["compare_budget"] = common
    rho = stats.spearman([t.early_test_acc for t in trained], [t.epochs_to["0.999"] for t in trained])
    out["spearman_early_acc_vs_epochs_to_0.999"] = None if rho is None else {"rho": rho[0], "p": rho[1]}
    out["outlier_rule"] = []
    for condition in conditions:
        runs = [t for t in trained if t.condition == condition and t.epochs_to["0.999"] is not None]
        flagged = stats.zscore_outliers([t.epochs_to["0.999"] for t in runs], threshold=outlier_z)
        out["outliers"][condition] = [runs[i].seed for i in flagged]
        bound = stats.max_abs_z(len(runs))
        out["outlier_rule"].append(
            {
                "condition": condition,
                "metric": "epochs_to_0.999",
                "z": outlier_z,
                "n": len(runs),
                "max_possible_abs_z": bound,
                # zscore_outliers needs 3 values, and no |z| can pass a threshold at or above the bound.
                "can_flag": bound is not None and len(runs) >= 3 and bound > outlier_z,
                "flagged_seeds": out["outliers"][condition],
            }
        )
    out["normality"] = _normality(by_condition)
    if chance is not None:
        out["retention_vs_chance"] = [
            {"condition": c, "chance": chance, **stats.one_sample(kept, chance, "greater").to_dict()}
            for c, runs in by_condition.items()
            if (kept := [t.final_source_retention for t in runs if t.final_source_retention is not None])
        ]
    out["agreement"] = agreement or []
    out["final"] = _per_condition(
        by_condition, lambda t: {"test_acc": t.final_test_acc, "source_retention": t.final_source_retention}
    )
    out["learning_pattern"] = _per_condition(by_condition, lambda t: t.learning)
    out["specialization"] = _per_condition(by_condition, lambda t: t.specialization)
    out["attention"] = _per_condition(by_condition, lambda t: t.attention)
    out["gradients"] = _per_condition(by_condition, lambda t: t.gradients)
    if relearn_budget:
        out["relearn"] = _relearn_statistics(by_condition, relearn_budget, scratch)
    return out


# --- outputs ----------------------------------------------------------------------------------------------------


def _write(result: TransferResult, config: TransferConfig, root: Path) -> None:
    rows = [t.row() for t in result.targets]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    atomic_write_text(root / "results.csv", buffer.getvalue())
    write_json(root / "results.json", jsonable({"config": config.model_dump(), **vars(result)}))
    write_json(root / "stats.json", jsonable(result.statistics))
    write_figures(figures(jsonable(vars(result))), root / "figures")


def _num(value: float | None, form: str = ".0f") -> str:
    return "—" if value is None else format(value, form)


def _mean_sd(d: Mapping[str, Any] | None, form: str = ".3g") -> str:
    if not d or d.get("mean") is None:
        return "—"
    return _num(d["mean"], form) + ("" if d.get("sd") is None else f" ± {_num(d['sd'], form)}")


def describe(result: TransferResult) -> list[str]:
    """The printed summary: per condition, epochs to 99.9% target test accuracy and what was kept of the source;
    the comparisons and speed-ups; then, when measured, retention against chance, relearning, agreement, the
    learning pattern, specialization, attention and gradient summaries, outliers and normality flags."""
    lines = ["condition | runs | reached 99.9% | epochs to 99.9% (mean ± sd) | 95% CI | acc@early | source retention"]
    statistics = result.statistics
    described = statistics["describe"]["0.999"]
    for condition in result.conditions:
        runs = [t for t in result.targets if t.condition == condition]
        trained = [t for t in runs if t.run_dir is not None]
        d = described.get(condition)
        if d is None or not trained:
            lines.append(f"{condition} | 0/{len(runs)} trained ({runs[0].source_reason if runs else ''})")
            continue
        mean = "—" if d["mean"] is None else f"{d['mean']:.0f}" + ("" if d["sd"] is None else f" ± {d['sd']:.0f}")
        ci = "—" if d["ci_low"] is None else f"[{d['ci_low']:.0f}, {d['ci_high']:.0f}]"
        early = [t.early_test_acc for t in trained if t.early_test_acc is not None]
        kept = [t.source_retention[-1] for t in trained if t.source_retention]
        lines.append(
            f"{condition} | {len(trained)}/{len(runs)} | {d['n_reached']}/{d['n']} | {mean} | {ci} | "
            f"{_mean(early)} | {_mean(kept)}"
        )
    for pair in statistics["compare"].get("0.999", []):
        p, welch = pair["mann_whitney_p_adjusted"], pair["welch_p_adjusted"]
        flag = " (normality rejected: read Mann–Whitney)" if pair.get("normality_rejected") else ""
        lines.append(
            f"{pair['a']} vs {pair['b']}: Mann–Whitney p (Holm) = {_num(p, '.3g')}; "
            f"Welch p (Holm) = {_num(welch, '.3g')}{flag}"
        )
    return lines + _more_lines(result)


def _more_lines(result: TransferResult) -> list[str]:
    statistics, lines = result.statistics, []
    for s in statistics.get("speedup", {}).get("0.999", []):
        ci = "" if s["ci_low"] is None else f" [{s['ci_low']:.2f}, {s['ci_high']:.2f}]"
        ratio = "—" if s["ratio"] is None else f"{s['ratio']:.2f}x"
        lines.append(
            f"speed-up to 99.9% of {s['name']} over {s['reference']}: {ratio}{ci} "
            f"(reached {s['n_reached']}/{s['n_reached'] + s['n_censored']} and "
            f"{s['reference_n_reached']}/{s['reference_n_reached'] + s['reference_n_censored']})"
            + (f"; {s['note']}" if s["note"] else "")
        )
    final = statistics.get("final", {})
    if final:
        lines.append(
            "final test acc: " + "; ".join(f"{c} {_mean_sd(m.get('test_acc'), '.1%')}" for c, m in final.items())
        )
    for r in statistics.get("retention_vs_chance", []):
        flag = " (normality rejected: read Wilcoxon)" if r["normality_rejected"] else ""
        lines.append(
            f"retention of {r['condition']}: {_num(r['mean'], '.1%')} vs chance {r['chance']:.1%} (n={r['n']}): "
            f"one-sided t = {_num(r['t'], '.3g')}, p = {_num(r['p'], '.3g')}; "
            f"Wilcoxon W+ = {_num(r['wilcoxon_w'], 'g')}, p = {_num(r['wilcoxon_p'], '.3g')}{flag}"
        )
    relearn = statistics.get("relearn")
    if relearn:
        parts = []
        for c, d in relearn["describe"].get("0.99", {}).items():
            parts.append(f"{c} {_num(d['mean'])} ({d['n_reached']}/{d['n']} reached)")
        lines.append(f"relearn the source, epochs to 99% within {relearn['budget']}: " + "; ".join(parts))
    for a in statistics.get("agreement", []):
        lines.append(
            f"agreement {a['a']} vs {a['b']} (test inputs, seeds {a['matched_seeds']}): "
            f"{_mean_sd(a, '.1%') if a['n'] else '— (no common seed)'}"
        )
    pattern = statistics.get("learning_pattern", {})
    if pattern:
        lines.append(
            "learning pattern (acc at early / late fraction of the budget, share of the gain by early): "
            + "; ".join(
                f"{c} {_mean_sd(m.get('acc_early'), '.1%')} / {_mean_sd(m.get('acc_late'), '.1%')}, "
                f"{_mean_sd(m.get('early_share'), '.2f')}"
                for c, m in pattern.items()
            )
        )
    for title, key, measures in (
        ("specialization", "specialization", (*STUDY_SPECIALIZATION, "mean_max_fve", "n_above_half")),
        ("attention", "attention", ("attention_to_a", "attention_to_b", "attention_a_variance", "score_top_fve")),
        ("gradients", "gradients", ("grad_norm", "update_ratio_total_per_step", "grad_cosine_previous")),
    ):
        table = statistics.get(key, {})
        if table:
            lines.append(f"{title}: condition | " + " | ".join(measures))
            lines += [f"  {c} | " + " | ".join(_mean_sd(m.get(k)) for k in measures) for c, m in table.items()]
    rule = statistics.get("outlier_rule")
    if rule:
        blind = [r["condition"] for r in rule if r["n"] and not r["can_flag"]]
        text = ", ".join(f"{r['condition']} seeds {r['flagged_seeds']}" for r in rule if r["flagged_seeds"]) or "none"
        lines.append(
            f"outliers (|z| > {rule[0]['z']:g} in epochs to 99.9%): {text}"
            + (f"; cannot flag any with so few runs: {', '.join(blind)}" if blind else "")
        )
    rejected = [f"{r['condition']} {r['metric']}" for r in statistics.get("normality", []) if r["rejected"]]
    if statistics.get("normality"):
        lines.append("normality (Shapiro–Wilk) rejected for: " + (", ".join(rejected) if rejected else "none"))
    return lines


def _mean(values: list[float]) -> str:
    return f"{sum(values) / len(values):.1%}" if values else "—"


CONFIG = TransferConfig
summary_lines = describe
