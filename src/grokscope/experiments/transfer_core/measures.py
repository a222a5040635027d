"""What each target run measured, and the agreement between conditions' final models.

Per target run (:func:`measure_run`): steps to 90/95/99/99.9% target test accuracy (a run that never gets there is
censored at its budget, never averaged in; steps are the budget's unit, epochs beside them are labelled:
steps / batches per epoch, equal to steps for full-batch training), the same on train accuracy (the speed-up of a
target whose test accuracy is chance by construction, such as a random table), test accuracy at an early epoch,
the study's early-versus-late gains (:func:`learning_pattern`), final test accuracy, source-task retention at every
target checkpoint, the target inputs scored against the source labels, relearning the source task afterwards, the
key frequencies of the transferred model against its source checkpoint, and on the final model frequency
specialization, attention and gradient flow. Across runs: prediction agreement on matched seeds.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Int
from torch import Tensor

from grokscope import stats
from grokscope.analysis import attention, gradients, neurons
from grokscope.analysis.common import answer_logits
from grokscope.analysis.fourier import jaccard, key_frequencies
from grokscope.experiments.transfer_core.config import THRESHOLDS, LearningPattern
from grokscope.store import Run
from grokscope.tasks import ModularTask

if TYPE_CHECKING:
    from grokscope.models import GrokTransformer

# The transfer study's specialization table (distinct frequencies, mean specialization, units above 50%), in the
# names of grokscope.analysis.neurons, whose residual-stream measure is the study's.
STUDY_SPECIALIZATION = (
    "residual_distinct_dominant_frequencies",
    "residual_mean_dominant_share",
    "residual_dims_specialized",
)
LEARNING_PATTERN = ("gain_early", "gain_late")  # see learning_pattern()


@dataclass
class TargetResult:
    """One target run: which condition and source checkpoint, and what it measured.

    ``steps_to`` / ``train_steps_to``: per threshold, the first logged step at or above it in test / train
    accuracy (None: not within the run); ``epochs_to`` the same crossing in epochs (labelled; steps / batches per
    epoch). ``learning`` (:func:`learning_pattern`) and the final model's ``specialization``, ``attention`` and
    ``gradients`` (:func:`final_model_measures`) are flat dicts of named numbers, None where not measurable."""

    condition: str
    seed: int
    source_step: int | None
    source_reason: str
    run_dir: str | None
    budget: int
    steps_to: dict[str, float | None] = field(default_factory=dict)
    epochs_to: dict[str, float | None] = field(default_factory=dict)
    train_steps_to: dict[str, float | None] = field(default_factory=dict)
    early_test_acc: float | None = None
    final_test_acc: float | None = None
    steps: list[int] = field(default_factory=list)
    source_retention: list[float] | None = None
    source_labels_on_target: list[float] | None = None
    key_frequencies: list[int] | None = None
    source_key_frequencies: list[int] | None = None
    key_frequency_jaccard: float | None = None
    relearn_steps_to: dict[str, float | None] | None = None
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
            "budget_steps": self.budget,
            **{f"steps_to_{t}": self.steps_to.get(str(t)) for t in THRESHOLDS},
            **{f"epochs_to_{t}": self.epochs_to.get(str(t)) for t in THRESHOLDS},
            **{f"train_steps_to_{t}": self.train_steps_to.get(str(t)) for t in THRESHOLDS},
            "early_test_acc": self.early_test_acc,
            "final_test_acc": self.final_test_acc,
            "final_source_retention": self.final_source_retention,
            "key_frequency_jaccard": self.key_frequency_jaccard,
            **{k: (self.learning or {}).get(k) for k in LEARNING_PATTERN},
            **{k: (self.specialization or {}).get(k) for k in STUDY_SPECIALIZATION},
            "run_dir": self.run_dir,
            "note": "" if self.run_dir else self.source_reason,
        }
        if self.relearn_steps_to is not None:
            out |= {f"relearn_steps_to_{t}": self.relearn_steps_to.get(str(t)) for t in THRESHOLDS}
        return out


def crossings(rows: list[dict[str, Any]], key: str = "test_acc", at: str = "step") -> dict[str, float | None]:
    """Per threshold of :data:`THRESHOLDS`, the first logged ``at`` (step or epoch) where ``key`` reached it."""
    found = stats.first_crossings([r[at] for r in rows], [r[key] for r in rows], THRESHOLDS)
    return {str(t): value for t, value in found.items()}


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


def measure_run(
    result: TargetResult,
    run: Run,
    source: Run,
    early_epoch: int,
    pattern: LearningPattern,
    relearned: Run | None = None,
) -> None:
    """Fill ``result`` with what the finished target ``run`` measured (see the module docstring)."""
    rows = run.metrics()
    result.steps_to = crossings(rows)
    result.epochs_to = crossings(rows, at="epoch")
    result.train_steps_to = crossings(rows, key="train_acc")
    result.early_test_acc = accuracy_at(rows, early_epoch)
    result.final_test_acc = rows[-1]["test_acc"] if rows else None
    result.test_acc_curve = [(r["epoch"], r["test_acc"]) for r in rows]
    result.learning = learning_pattern(rows, pattern.early, pattern.late)
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
        result.relearn_steps_to = crossings(relearn_rows)
        result.relearn_test_acc_curve = [(r["epoch"], r["test_acc"]) for r in relearn_rows]


def learning_pattern(rows: list[dict[str, Any]], early: int, late: int) -> dict[str, float | None]:
    """The transfer study's early-versus-late learning: ``gain_early``, test accuracy gained from epoch 0 to epoch
    ``early`` (the last row at or before it), and ``gain_late``, gained over the run's last ``late`` epochs (from
    the last row at or before ``last epoch - late``; a run shorter than that counts from its first row, and
    ``late_from_epoch`` says where the window began). A grokked init gains early and little late; a random init
    the reverse. None without logged rows."""
    if not rows:
        return {"gain_early": None, "gain_late": None, "late_from_epoch": None}

    def at(epoch: float) -> dict[str, Any]:
        return next((r for r in reversed(rows) if r["epoch"] <= epoch), rows[0])

    start, last = rows[0], rows[-1]
    late_start = at(last["epoch"] - late)
    return {
        "gain_early": at(early)["test_acc"] - start["test_acc"],
        "gain_late": last["test_acc"] - late_start["test_acc"],
        "late_from_epoch": late_start["epoch"],
    }


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
