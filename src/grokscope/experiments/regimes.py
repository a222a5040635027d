"""Training regimes of a run, from its logged metric rows, and the loss bounds of all-position training.

Regimes
-------
Let M be the memorization step (first logged step with train accuracy >= ``memorize_at``) and G the generalization
step (first logged step with test accuracy >= ``generalize_at``, when the last logged test accuracy is at or above it
too: a run that ends below the threshold did not generalize), exactly as in :mod:`grokscope.training.summary`.
Accuracy is always *answer* accuracy (the metrics measure it at the answer position whatever ``task.loss_on`` is), so
all-position runs are judged by whether they get the answer right, not by their loss. The rules, applied in this order:

* ``not_learned``: neither M nor G exists.
* ``unstable``: the run learned something but did not stay put. Either (a) an accuracy collapse: after the first row
  with test accuracy >= ``generalize_at``, some later row has test accuracy < ``collapse_below``; or (b) a loss spike:
  among the rows from M on, a row whose *excess* train loss (train loss minus ``loss_floor``, the smallest loss the
  objective allows on the training set; 0 for answer-only runs) exceeds both ``spike_min`` and ``spike_factor`` x
  the smallest excess logged since M before it. The regime the run would have had without this rule is kept as
  ``underlying``, so a grokking run with a slingshot spike reads ``unstable`` (underlying ``grokking``).
* ``grokking``: G >= ``grok_ratio`` x M: test accuracy came well after the training set was fit.
* ``instant_generalization``: G exists and came sooner (also when G exists without M).
* ``memorization_only``: M exists, G does not.

The rules see only logged rows, so they are as fine as ``train.eval_every``; a collapse or spike between two
evaluations is invisible.

Loss bounds for all-position training (power format)
----------------------------------------------------
With ``loss_on: all`` the 8-token sequence ``[BOS, a, OP, b, EQ, c, EOS, EOS]`` carries loss at the 7 positions that
predict tokens 1..7, and the logged loss is the mean over those 7 positions (and over rows). Five targets are
determined by the prefix (OP, EQ, c = a op b, EOS, EOS) and can cost nothing. The two operands cannot be predicted
from what precedes them; write r_a and r_b for the number of values they take (r = ``input_range`` or the modulus;
r_b = r - 1 for operations that exclude b = 0).

* Generalization bound ``(ln r_a + ln r_b) / 7``: the loss of the population-optimal predictor, uniform over the
  operands and exact elsewhere. It pays this on every row, so it is its loss on the training and the test set
  alike; a model that generalizes (and knows nothing of the split) cannot beat it on the test set in expectation.
* Memorization floor ``H(a, b) / 7`` with H the entropy of the empirical distribution of the training pairs: the
  lowest loss *any* model can reach on the training set. The model predicts a from BOS alone and b from the prefix
  ``BOS, a, OP``, i.e. a joint distribution q(a) q(b | a) over pairs, and the mean operand cross-entropy over the
  training rows is at least the entropy of their empirical distribution (Gibbs' inequality), reached by
  q(a) = n_a / N and q(b | a) = 1 / n_a (n_a: training pairs starting with a, N: training pairs). The per-row
  operand loss is then ``ln(N / n_a) + ln n_a = ln N``, so, the pairs being distinct, the floor is ``ln N / 7``:
  below the generalization bound by ``ln(1 / train_fraction) / 7``. It is computed from the actual training pairs
  (as ``H(a) + H(b | a)``), so it stays right for any split.
  A memorizer that instead guessed a uniformly among the d distinct first operands of the training set would pay
  ``ln d + mean over rows of ln n_a``, which is >= ``ln N`` with equality only when every a has the same count.

A training loss below the generalization bound therefore shows that the model has learned *which* pairs are in the
training set (memorization); a test loss near the bound is what generalization looks like in the loss.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Literal

from torch import Tensor

from grokscope.tasks import ModularTask
from grokscope.training.summary import classify, first_step_at, generalization_step

Regime = Literal["instant_generalization", "grokking", "memorization_only", "unstable", "not_learned"]
REGIMES: tuple[Regime, ...] = ("instant_generalization", "grokking", "memorization_only", "unstable", "not_learned")
SHORT: dict[str, str] = {
    "instant_generalization": "instant",
    "grokking": "grok",
    "memorization_only": "memo",
    "unstable": "unstable",
    "not_learned": "none",
}
_FROM_SUMMARY: dict[str, Regime] = {
    "grokked": "grokking",
    "generalized_at_once": "instant_generalization",
    "memorized_only": "memorization_only",
    "not_learned": "not_learned",
}


@dataclass(frozen=True)
class RegimeRules:
    """The thresholds of the regime rules (see the module docstring)."""

    memorize_at: float = 0.99
    generalize_at: float = 0.99
    grok_ratio: float = 2.0
    collapse_below: float = 0.9
    spike_factor: float = 10.0
    spike_min: float = 0.01

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not math.isfinite(value):
                raise ValueError(f"{name}: must be a finite number, got {value}")
        for name in ("memorize_at", "generalize_at", "collapse_below"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ValueError(f"{name}: must be in (0, 1], got {value}")
        if self.collapse_below > self.generalize_at:
            raise ValueError(f"collapse_below: must not exceed generalize_at ({self.generalize_at})")
        if self.grok_ratio < 1:
            raise ValueError(f"grok_ratio: must be at least 1, got {self.grok_ratio}")
        if self.spike_factor <= 1:
            raise ValueError(f"spike_factor: must be above 1, got {self.spike_factor}")
        if self.spike_min < 0:
            raise ValueError(f"spike_min: must be >= 0, got {self.spike_min}")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class RegimeResult:
    """A run's regime and the steps it was decided from (None: never happened)."""

    regime: Regime
    underlying: Regime
    memorization_step: int | None
    generalization_step: int | None
    generalization_ratio: float | None
    collapse_step: int | None
    spike_step: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def collapse_step(rows: list[dict[str, Any]], rules: RegimeRules) -> int | None:
    """The first logged step, after test accuracy first reached ``generalize_at``, at which it is below
    ``collapse_below``; None when it never falls that far."""
    reached = False
    for row in rows:
        acc = row.get("test_acc")
        if acc is None:
            continue
        if reached and acc < rules.collapse_below:
            return row["step"]
        reached = reached or acc >= rules.generalize_at
    return None


def spike_step(
    rows: list[dict[str, Any]], memorization: int | None, rules: RegimeRules, loss_floor: float = 0.0
) -> int | None:
    """The first logged step from ``memorization`` on whose excess train loss (over ``loss_floor``) exceeds
    ``spike_min`` and ``spike_factor`` x the smallest excess logged since ``memorization``; None if none does."""
    if memorization is None:
        return None
    best: float | None = None
    for row in rows:
        loss = row.get("train_loss")
        if row["step"] < memorization or loss is None or not math.isfinite(loss):
            continue
        excess = max(loss - loss_floor, 0.0)
        if best is not None and excess > rules.spike_min and excess > rules.spike_factor * best:
            return row["step"]
        best = excess if best is None else min(best, excess)
    return None


def classify_run(
    rows: list[dict[str, Any]], rules: RegimeRules = RegimeRules(), loss_floor: float = 0.0
) -> RegimeResult:
    """The regime of a run from its metric rows (dicts with step, train_loss, train_acc, test_loss, test_acc).

    ``loss_floor`` is the lowest train loss the objective allows (:attr:`LossBounds.memorization_floor` for
    all-position runs); loss spikes are measured above it.
    """
    memorization = first_step_at(rows, "train_acc", rules.memorize_at)
    generalization = generalization_step(rows, rules.generalize_at)
    underlying = _FROM_SUMMARY[classify(memorization, generalization, rules.grok_ratio)]
    collapse = collapse_step(rows, rules)
    spike = spike_step(rows, memorization, rules, loss_floor)
    learned = underlying != "not_learned"
    regime: Regime = "unstable" if learned and (collapse is not None or spike is not None) else underlying
    ratio = generalization / memorization if memorization and generalization is not None else None
    return RegimeResult(regime, underlying, memorization, generalization, ratio, collapse, spike)


@dataclass(frozen=True)
class LossBounds:
    """Mean loss per position of all-position training (see the module docstring): what a generalizing model
    pays on any row (``generalization``) and the least any model can pay on the training set
    (``memorization_floor``)."""

    generalization: float
    memorization_floor: float
    n_positions: int
    r_a: int
    r_b: int
    n_train: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def empirical_pair_entropy(pairs: Tensor) -> float:
    """Entropy (nats) of the empirical distribution of the rows of ``pairs`` (n, 2), as H(a) + H(b | a)."""
    n = len(pairs)
    joint = Counter(map(tuple, pairs.tolist()))
    first = Counter(a for a, _ in joint.elements())
    h_a = -sum(c / n * math.log(c / n) for c in first.values())
    h_b_given_a = -sum(c / n * math.log(c / first[a]) for (a, _), c in joint.items())
    return h_a + h_b_given_a


def loss_bounds(task: ModularTask, train_pairs: Tensor) -> LossBounds | None:
    """The loss bounds of all-position training on ``task`` with these training pairs (n, 2); None when the loss is
    on the answer only (its irreducible loss is 0)."""
    if task.loss_on != "all" or len(train_pairs) == 0:
        return None
    r_a = task.input_range or task.modulus
    r_b = r_a - 1 if task.operation.b_nonzero else r_a
    k = len(task.loss_positions)
    return LossBounds(
        generalization=(math.log(r_a) + math.log(r_b)) / k,
        memorization_floor=empirical_pair_entropy(train_pairs) / k,
        n_positions=k,
        r_a=r_a,
        r_b=r_b,
        n_train=len(train_pairs),
    )
