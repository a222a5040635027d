"""The settings every transfer-shaped experiment shares: conditions (where target runs start), their seeds and
budgets, how source checkpoints are chosen, replay, relearning and the measures' windows.

:class:`TransferSettings` holds them without a ``kind``; the transfer and similarity kinds each derive their own
config from it. :meth:`TransferSettings.planned_conditions` resolves every condition's seeds and budget.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

from pydantic import Field, field_serializer, field_validator, model_validator

from grokscope.config import Component
from grokscope.experiments.runs import ExperimentModel, RecordedExperiment, Seed, check_seeds

THRESHOLDS = (0.9, 0.95, 0.99, 0.999)
RANDOM = "random"
INITS = ("grokked", "memorized", RANDOM)
SCRATCH = "from scratch"  # the source runs as the relearning reference; a space keeps it apart from condition names
# The transfer study's specialization table (distinct frequencies, mean specialization, units above 50%), in the
# names of grokscope.analysis.neurons, whose residual-stream measure is the study's.
STUDY_SPECIALIZATION = (
    "residual_distinct_dominant_frequencies",
    "residual_mean_dominant_share",
    "residual_dims_specialized",
)
ConditionName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$", max_length=100)]


class Criteria(ExperimentModel):
    """How source checkpoints are chosen. ``memorized_pick: phase`` (the default) takes the memorization phase of
    Nanda et al. (2023, §5.2) as :mod:`grokscope.analysis.phases` finds it; ``first``/``last`` pick by the
    train/test accuracy ceilings instead, which can land at the end of circuit formation (test accuracy already
    rising), where the model transfers like a grokked one."""

    grokked_test_acc: float = Field(0.999, gt=0, le=1)
    memorized_train_acc: float = Field(0.99, gt=0, le=1)
    memorized_test_acc: float = Field(0.5, ge=0, le=1)
    memorized_pick: Literal["phase", "first", "last"] = Field(
        "phase",
        description="phase: the checkpoint at the end of the source's memorization phase (before circuit "
        "formation; grokscope.analysis.phases); first/last: by the accuracy ceilings above, a variant",
    )


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
    """The transfer study's early-versus-late learning: test accuracy gained over the first ``early`` epochs
    (0 to ``early``) and over the last ``late`` epochs of each target run."""

    early: int = Field(100, ge=1, description="epochs from the start")
    late: int = Field(1000, ge=1, description="epochs before the run's end")


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


class TransferSettings(RecordedExperiment):  # record: recorders on every run the engine trains
    """What a transfer-shaped experiment config holds besides its kind, name and targets (``source`` is a run
    config, relative to the experiment file)."""

    source: str
    source_set: list[str] = Field(default_factory=list, description="--set overrides for the source runs")
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
    outlier_z: float = Field(2.0, gt=0, description="flag seeds whose steps to 99.9% have |z| above this")
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
    def _check(self) -> TransferSettings:
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
        return self

    @property
    def runs_per_target(self) -> int:
        """Target runs (and their relearning runs) one target trains."""
        return sum(len(c.seeds) for c in self.planned_conditions()) * (2 if self.relearn_steps else 1)

    @property
    def reference(self) -> str | None:
        """The baseline: as given, else random when it is a condition (else None: every pair is compared)."""
        if self.baseline is not None:
            return self.baseline
        return RANDOM if RANDOM in self.condition_names else None
