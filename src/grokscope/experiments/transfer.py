"""Transfer: does what a model found by grokking one task help it learn another, and what does it forget?

For each seed a source run trains the source task. Checkpoints are then chosen by criteria, never by hand
(:func:`choose_checkpoints`): ``grokked`` is the first checkpoint with source test accuracy >= 0.999; ``memorized``
the last (or first) checkpoint with train accuracy >= 0.99 and test accuracy <= 0.5; ``partial`` levels pick the
first checkpoint at a test accuracy or a step. Target runs start from each chosen checkpoint (``model.init_from``,
with the shared-token rule of :func:`grokscope.models.transplant` across moduli) or from a random init; everything
else is identical: architecture, optimizer, target split, seeds, per-condition budgets, frozen components.

Measures per target run: epochs to 90/95/99/99.9% target test accuracy (a run that never gets there is censored at
its budget, never averaged in), test accuracy at an early epoch, source-task retention at every target checkpoint,
the target inputs scored against the source labels (does the model still answer the old task?), relearning the
source task afterwards, and the key frequencies of the transferred model against its source checkpoint.
:mod:`grokscope.stats` summarizes each condition and compares each with the random init (Holm-corrected).
"""

from __future__ import annotations

import copy
import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, model_validator

from grokscope import stats
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

THRESHOLDS = (0.9, 0.95, 0.99, 0.999)
RANDOM = "random"


class Criteria(ExperimentModel):
    """How source checkpoints are chosen."""

    grokked_test_acc: float = Field(0.999, gt=0, le=1)
    memorized_train_acc: float = Field(0.99, gt=0, le=1)
    memorized_test_acc: float = Field(0.5, ge=0, le=1)
    memorized_pick: Literal["first", "last"] = "last"


class PartialCondition(ExperimentModel):
    """A partially grokked source: the first checkpoint at ``test_acc`` or at ``step`` (give one)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    test_acc: float | None = Field(None, gt=0, le=1)
    step: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _one(self) -> PartialCondition:
        if (self.test_acc is None) == (self.step is None):
            raise ValueError(f"partial {self.name}: give exactly one of test_acc and step")
        return self


class TransferConfig(RecordedExperiment):  # record: recorders on every run (runs.attached_recorders)
    """``grokscope experiment`` config of kind ``transfer`` (``source`` is a run config, relative to this file)."""

    kind: Literal["transfer"]
    name: Name = "transfer"
    source: str
    source_set: list[str] = Field(default_factory=list, description="--set overrides for the source runs")
    target_set: list[str] = Field(min_length=1, description="--set overrides that turn the source into the target")
    seeds: list[Seed] = Field(default_factory=lambda: [0, 1, 2, 3, 4], min_length=1)
    conditions: list[Literal["grokked", "memorized", "random"]] = Field(
        default_factory=lambda: ["grokked", "memorized", "random"], min_length=1
    )
    partial: list[PartialCondition] = Field(default_factory=list)
    criteria: Criteria = Field(default_factory=Criteria)
    budgets: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict, description="target steps per condition"
    )
    freeze: list[Component] = Field(default_factory=list)
    early_epoch: int = Field(100, ge=0)
    relearn_steps: int = Field(0, ge=0, description="retrain the source task from each final target model")

    @property
    def condition_names(self) -> list[str]:
        return (
            [c for c in self.conditions if c != RANDOM]
            + [p.name for p in self.partial]
            + ([RANDOM] if RANDOM in self.conditions else [])
        )

    @model_validator(mode="after")
    def _check(self) -> TransferConfig:
        unknown = set(self.budgets) - set(self.condition_names)
        if unknown:
            raise ValueError(f"budgets: unknown condition {sorted(unknown)[0]!r}")
        if len(set(self.condition_names)) != len(self.condition_names):
            raise ValueError("partial: names must differ from each other and from the conditions")
        check_seeds(self.seeds)
        n = len(self.seeds) * (1 + len(self.condition_names) * (2 if self.relearn_steps else 1))
        check_run_count(n, "seeds", f"{len(self.seeds)} seeds x the source and {len(self.condition_names)} conditions")
        return self


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
    """One target run: which condition and source checkpoint, and what it measured."""

    condition: str
    seed: int
    source_step: int | None
    source_reason: str
    run_dir: str | None
    budget: int
    epochs_to: dict[str, float | None] = field(default_factory=dict)
    early_test_acc: float | None = None
    steps: list[int] = field(default_factory=list)
    source_retention: list[float] | None = None
    source_labels_on_target: list[float] | None = None
    key_frequencies: list[int] | None = None
    source_key_frequencies: list[int] | None = None
    key_frequency_jaccard: float | None = None
    relearn_epochs_to: dict[str, float | None] | None = None
    test_acc_curve: list[tuple[float, float]] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        """The flat results-table row."""
        out = {
            "condition": self.condition,
            "seed": self.seed,
            "source_step": self.source_step,
            "budget": self.budget,
            **{f"epochs_to_{t}": self.epochs_to.get(str(t)) for t in THRESHOLDS},
            "early_test_acc": self.early_test_acc,
            "final_source_retention": self.source_retention[-1] if self.source_retention else None,
            "key_frequency_jaccard": self.key_frequency_jaccard,
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
    source_generalization_epochs: list[float | None]
    targets: list[TargetResult]
    statistics: dict[str, Any]


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
    if (t_task.d_vocab, t_task.format, t_task.input_range) != (s_task.d_vocab, s_task.format, s_task.input_range) or (
        t_task.operation.b_nonzero != s_task.operation.b_nonzero
    ):
        return steps, None, None  # other inputs (another modulus, format or pair set): no common grid to score
    data = t_task.dataset()
    source_answers = s_task.answers(data.pairs)
    s_test, t_test = source.split().test, target.split().test
    retention, sanity = [], []
    for step in steps:
        predictions = answer_logits(target.load_model(step), t_task, data).argmax(-1)
        correct = predictions == source_answers
        retention.append(float(correct[s_test].double().mean()))
        sanity.append(float(correct[t_test].double().mean()))
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
    if set(config.condition_names) != {RANDOM} or config.relearn_steps:
        _check_transferable(source, target, config_path)
    targets = {}
    for condition in config.condition_names:
        data = target.to_dict()
        data["train"]["steps"] = config.budgets.get(condition, target.train.steps)
        targets[condition] = parse_config(data, source=f"{config_path}: budgets.{condition}")
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


def _with(config: RunConfig, seed: int, init_from: str | None) -> RunConfig:
    """``config`` for ``seed``, starting from the checkpoint ``init_from`` (None: as configured)."""
    if init_from is None:
        return config.with_seed(seed)
    data = config.with_seed(seed).to_dict()
    data["model"]["init_from"] = init_from
    return parse_config(data, source=config.name)


def run_experiment(
    config: TransferConfig, config_path: Path, out: Path, *, device: str = "auto", progress: bool = True
) -> TransferResult:
    """Train sources and targets (reusing finished runs), measure every target run and write the results."""
    planned = plan(config, config_path)
    source_config = planned.source
    root = out / config.name
    sources = train_missing(
        [source_config.with_seed(s) for s in config.seeds],
        [root / "source" / f"seed{s}" for s in config.seeds],
        device=device,
        progress=progress,
    )
    choices = {
        s: choose_checkpoints(r.metrics(), r.steps(), config.criteria, config.partial)
        for s, r in zip(config.seeds, sources, strict=True)
    }

    targets: list[TargetResult] = []
    for condition in config.condition_names:
        target_config = planned.targets[condition]
        budget = target_config.train.steps
        jobs = []
        for seed, source in zip(config.seeds, sources, strict=True):
            choice = Choice(None, "random init") if condition == RANDOM else choices[seed][condition]
            result = TargetResult(condition, seed, choice.step, choice.reason, None, budget)
            targets.append(result)
            if condition != RANDOM and choice.step is None:
                continue  # the source never satisfied the criterion: reported, not trained
            init_from = None if choice.step is None else str(source.checkpoint_path(choice.step))
            result.run_dir = str(root / condition / f"seed{seed}")
            jobs.append((_with(target_config, seed, init_from), Path(result.run_dir)))
        train_missing([c for c, _ in jobs], [d for _, d in jobs], device=device, progress=progress)

    for result in targets:
        if result.run_dir is not None:
            _measure(
                result,
                Run.open(result.run_dir),
                sources[config.seeds.index(result.seed)],
                config,
                planned.relearn,
                root,
                device,
                progress,
            )
    statistics = summarize(targets, config.condition_names)
    generalization = [
        stats.epochs_to_threshold([r["epoch"] for r in s.metrics()], [r["test_acc"] for r in s.metrics()], 0.99)
        for s in sources
    ]
    result = TransferResult(config.condition_names, choices, generalization, targets, statistics)
    _write(result, config, root)
    return result


def _measure(
    result: TargetResult,
    run: Run,
    source: Run,
    config: TransferConfig,
    relearn: RunConfig | None,
    root: Path,
    device: str,
    progress: bool,
) -> None:
    rows = run.metrics()
    result.epochs_to = epochs_to(rows)
    result.early_test_acc = accuracy_at(rows, config.early_epoch)
    result.test_acc_curve = [(r["epoch"], r["test_acc"]) for r in rows]
    result.steps, result.source_retention, result.source_labels_on_target = source_scores(run, source)
    task = run.task
    if run.steps() and task.input_range is None and not task.operation.b_nonzero:  # Fourier needs the full grid
        result.key_frequencies = key_frequencies(run.load_model(), task)
        if result.source_step is not None:
            result.source_key_frequencies = key_frequencies(source.load_model(result.source_step), source.task)
            result.key_frequency_jaccard = jaccard(result.key_frequencies, result.source_key_frequencies)
    if relearn is not None and run.steps():
        relearn_config = _with(relearn, source.config.seed, str(run.checkpoint_path(run.steps()[-1])))
        relearn_dir = root / result.condition / f"seed{result.seed}_relearn"
        (relearned,) = train_missing([relearn_config], [relearn_dir], device=device, progress=progress)
        result.relearn_epochs_to = epochs_to(relearned.metrics())


def summarize(targets: list[TargetResult], conditions: list[str]) -> dict[str, Any]:
    """Per condition and threshold: a description of epochs-to-threshold (censored runs counted, not averaged), and
    every condition against the random init (or all pairs without one), Holm-corrected per threshold."""
    out: dict[str, Any] = {"describe": {}, "compare": {}, "spearman_early_acc_vs_epochs_to_0.999": None, "outliers": {}}
    trained = [t for t in targets if t.run_dir is not None]
    by_condition = {c: [t for t in trained if t.condition == c] for c in conditions}
    by_condition = {c: runs for c, runs in by_condition.items() if runs}
    # Comparisons censor every condition at the smallest budget, so that "not reached" means the same everywhere.
    common = min((t.budget for runs in by_condition.values() for t in runs), default=0)

    def sample(runs: list[TargetResult], threshold: str, budget: int | None = None) -> stats.Sample:
        cap = budget if budget is not None else max(t.budget for t in runs)
        values = [t.epochs_to[threshold] for t in runs]
        return stats.Sample.from_values([v if v is not None and v <= cap else None for v in values], budget=cap)

    for threshold in map(str, THRESHOLDS):
        out["describe"][threshold] = {
            c: stats.describe(sample(runs, threshold)).to_dict() for c, runs in by_condition.items()
        }
        if len(by_condition) > 1:
            reference = RANDOM if RANDOM in by_condition else None
            samples = {c: sample(runs, threshold, common) for c, runs in by_condition.items()}
            pairs = stats.compare_all(samples, reference=reference, method="holm")
            out["compare"][threshold] = [p.to_dict() for p in pairs]
    out["compare_budget"] = common
    rho = stats.spearman([t.early_test_acc for t in trained], [t.epochs_to["0.999"] for t in trained])
    out["spearman_early_acc_vs_epochs_to_0.999"] = None if rho is None else {"rho": rho[0], "p": rho[1]}
    for condition in conditions:
        runs = [t for t in trained if t.condition == condition and t.epochs_to["0.999"] is not None]
        flagged = stats.zscore_outliers([t.epochs_to["0.999"] for t in runs])
        out["outliers"][condition] = [runs[i].seed for i in flagged]
    return out


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


def describe(result: TransferResult) -> list[str]:
    """The summary table: per condition, epochs to 99.9% target test accuracy and what was kept of the source."""
    lines = ["condition | runs | reached 99.9% | epochs to 99.9% (mean ± sd) | 95% CI | acc@early | source retention"]
    described = result.statistics["describe"]["0.999"]
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
    for pair in result.statistics["compare"].get("0.999", []):
        p = pair["mann_whitney_p_adjusted"]
        lines.append(f"{pair['a']} vs {pair['b']}: Mann–Whitney p (Holm) = {'—' if p is None else f'{p:.3g}'}")
    return lines


def _mean(values: list[float]) -> str:
    return f"{sum(values) / len(values):.1%}" if values else "—"


CONFIG = TransferConfig
summary_lines = describe
