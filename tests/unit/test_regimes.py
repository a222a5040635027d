"""Regime rules on synthetic metric histories, and the all-position loss bounds against brute force."""

import math

import pytest
import torch

from grokscope.config import TaskConfig
from grokscope.experiments.regimes import (
    RegimeRules,
    classify_run,
    empirical_pair_entropy,
    loss_bounds,
)
from grokscope.tasks import ModularTask, make_split


def history(train_acc, test_acc, train_loss=None, every=10):
    train_loss = train_loss or [1.0 - 0.999 * a for a in train_acc]
    return [
        {"step": i * every, "train_acc": a, "test_acc": b, "train_loss": loss, "test_loss": 1.0 - 0.9 * b}
        for i, (a, b, loss) in enumerate(zip(train_acc, test_acc, train_loss, strict=True))
    ]


def test_instant_generalization():
    r = classify_run(history([0.1, 0.6, 1.0, 1.0], [0.0, 0.5, 0.995, 1.0]))
    assert r.regime == r.underlying == "instant_generalization"
    assert (r.memorization_step, r.generalization_step) == (20, 20)


def test_grokking():
    r = classify_run(history([0.2, 1.0, 1.0, 1.0, 1.0, 1.0], [0.0, 0.05, 0.05, 0.3, 0.9, 1.0]))
    assert r.regime == "grokking"
    assert (r.memorization_step, r.generalization_step, r.generalization_ratio) == (10, 50, 5.0)


def test_grok_ratio_is_a_parameter():
    rows = history([0.2, 1.0, 1.0, 1.0, 1.0, 1.0], [0.0, 0.05, 0.05, 0.3, 0.9, 1.0])
    assert classify_run(rows, RegimeRules(grok_ratio=6.0)).regime == "instant_generalization"


def test_memorization_only():
    r = classify_run(history([0.3, 1.0, 1.0, 1.0], [0.0, 0.04, 0.05, 0.05]))
    assert r.regime == "memorization_only"
    assert r.generalization_step is None and r.spike_step is None and r.collapse_step is None


def test_not_learned():
    r = classify_run(history([0.1, 0.3, 0.5], [0.0, 0.1, 0.2]))
    assert r.regime == "not_learned"
    assert classify_run([]).regime == "not_learned"


def test_unstable_by_accuracy_collapse():
    r = classify_run(history([0.5, 1.0, 1.0, 1.0, 1.0], [0.2, 1.0, 0.995, 0.6, 1.0]))
    assert r.regime == "unstable" and r.underlying == "instant_generalization"
    assert r.collapse_step == 30
    # A dip that stays above collapse_below is not a collapse.
    assert classify_run(history([0.5, 1.0, 1.0, 1.0], [0.2, 1.0, 0.95, 1.0])).regime == "instant_generalization"
    # Low test accuracy before generalizing is not a collapse either.
    assert classify_run(history([1.0, 1.0, 1.0], [0.5, 0.1, 1.0])).collapse_step is None


def test_unstable_by_loss_spike():
    acc = [0.5, 1.0, 1.0, 1.0, 1.0]
    r = classify_run(history(acc, [0.0, 0.05, 0.05, 0.05, 0.05], train_loss=[2.0, 1e-2, 1e-3, 0.5, 1e-3]))
    assert r.regime == "unstable" and r.underlying == "memorization_only"
    assert r.spike_step == 30
    # The spike must exceed spike_factor x the running minimum ...
    calm = classify_run(history(acc, [0.0] * 5, train_loss=[2.0, 0.1, 0.02, 0.15, 0.02]))
    assert calm.regime == "memorization_only"
    # ... and spike_min: float noise on a tiny loss is no spike.
    noise = classify_run(history(acc, [0.0] * 5, train_loss=[2.0, 1e-6, 1e-7, 5e-5, 1e-7]))
    assert noise.spike_step is None
    # Before memorization a rising loss is not counted.
    early = classify_run(history([0.1, 0.2, 1.0, 1.0], [0.0] * 4, train_loss=[0.01, 2.0, 0.1, 0.05]))
    assert early.spike_step is None


def test_loss_spike_is_measured_above_the_floor():
    acc = [0.5, 1.0, 1.0, 1.0]
    losses = [2.0, 0.801, 0.800, 0.85]  # +0.05 over a floor of 0.8 is 50x the smallest excess
    assert classify_run(history(acc, [0.0] * 4, train_loss=losses)).spike_step is None
    assert classify_run(history(acc, [0.0] * 4, train_loss=losses), loss_floor=0.799).spike_step == 30


@pytest.mark.parametrize(
    "kwargs",
    [{"memorize_at": 0}, {"generalize_at": 1.5}, {"collapse_below": 0.995}, {"grok_ratio": 0.5}, {"spike_factor": 1}],
)
def test_rules_reject_nonsense(kwargs):
    with pytest.raises(ValueError):
        RegimeRules(**kwargs)


# Loss bounds -------------------------------------------------------------------------------------------------------
NEG = -1e9  # a logit whose probability is exactly 0 in float64


def operand_logits(task, pairs, p_a, p_b_given_a):
    """Logits of a model that predicts a with ``p_a[a]``, b with ``p_b_given_a[a][b]`` and every other token
    exactly: (n, 8, d_vocab_out), float64."""
    data = task.dataset()
    logits = torch.full((len(pairs), task.n_ctx, task.d_vocab_out), NEG, dtype=torch.float64)
    index = {tuple(p): i for i, p in enumerate(data.pairs.tolist())}
    for row, (a, b) in enumerate(pairs.tolist()):
        tokens = data.tokens[index[(a, b)]]
        for pos in range(task.n_ctx - 1):
            logits[row, pos, tokens[pos + 1]] = 0.0
        logits[row, 0, :] = NEG
        for x, p in p_a.items():
            logits[row, 0, x] = math.log(p)
        logits[row, 2, :] = NEG
        for y, p in p_b_given_a[a].items():
            logits[row, 2, y] = math.log(p)
    return logits


def mean_loss(task, pairs, logits):
    data = task.dataset()
    index = {tuple(p): i for i, p in enumerate(data.pairs.tolist())}
    rows = torch.tensor([index[tuple(p)] for p in pairs.tolist()])
    return task.loss(logits, data.labels[rows], dtype=torch.float64).item()


@pytest.mark.parametrize(
    "task_cfg",
    [
        {"operation": "add", "modulus": 5},
        {"operation": "div", "modulus": 7},
        {"operation": "mul", "modulus": 7, "input_range": 4},
    ],
)
def test_loss_bounds_match_brute_force(task_cfg):
    cfg = TaskConfig(format="power", loss_on="all", train_fraction=0.4, **task_cfg)
    task = ModularTask.from_config(cfg)
    split = make_split(task.n_pairs, cfg.train_fraction, seed=3)
    pairs = task.pairs()
    train, test = pairs[split.train], pairs[split.test]
    bounds = loss_bounds(task, train)

    r = cfg.input_range or cfg.modulus
    a_values = list(range(r))
    b_values = [b for b in range(r) if not (task.operation.b_nonzero and b == 0)]
    assert (bounds.r_a, bounds.r_b, bounds.n_positions, bounds.n_train) == (r, len(b_values), 7, len(train))

    # Generalizing: uniform operands, exact elsewhere; the same loss on the test and the training set.
    uniform_b = {a: {b: 1 / len(b_values) for b in b_values} for a in a_values}
    uniform = {a: 1 / r for a in a_values}
    for split_pairs in (test, train):
        loss = mean_loss(task, split_pairs, operand_logits(task, split_pairs, uniform, uniform_b))
        assert loss == pytest.approx(bounds.generalization, abs=1e-12)
    assert bounds.generalization == pytest.approx((math.log(r) + math.log(len(b_values))) / 7)

    # Memorizing: the empirical distribution of the training pairs reaches the floor, which is ln N / 7.
    counts = {a: sum(1 for x, _ in train.tolist() if x == a) for a in a_values}
    n = len(train)
    p_a = {a: c / n for a, c in counts.items() if c}
    p_b = {a: {b: 1 / counts[a] for x, b in train.tolist() if x == a} for a in p_a}
    memorized = mean_loss(task, train, operand_logits(task, train, p_a, p_b))
    assert memorized == pytest.approx(bounds.memorization_floor, abs=1e-12)
    assert bounds.memorization_floor == pytest.approx(math.log(n) / 7)
    assert bounds.memorization_floor < bounds.generalization

    # Guessing a uniformly among the seen first operands is worse (Gibbs), unless every a has the same count.
    seen = {a: 1 / len(p_a) for a in p_a}
    uniform_seen = mean_loss(task, train, operand_logits(task, train, seen, p_b))
    by_formula = (math.log(len(p_a)) + sum(math.log(counts[a]) for a, _ in train.tolist()) / n) / 7
    assert uniform_seen == pytest.approx(by_formula, abs=1e-12)
    assert uniform_seen >= bounds.memorization_floor - 1e-12


def test_answer_only_has_no_bounds():
    task = ModularTask.from_config(TaskConfig(format="power", loss_on="answer", modulus=5))
    assert loss_bounds(task, task.pairs()) is None


def test_empirical_entropy_of_repeated_pairs():
    # With repeats the floor is the entropy of the empirical distribution, not ln N.
    pairs = torch.tensor([[0, 1], [0, 1], [1, 2], [2, 0]])
    assert empirical_pair_entropy(pairs) == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))


def test_a_run_that_ends_below_the_threshold_is_never_instant_generalization():
    # The modulus-2 div run: a chance 100% on its one test pair at step 0, 0% once it has learnt its training pair.
    r = classify_run(history([0.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]))
    assert r.generalization_step is None and r.generalization_ratio is None
    assert r.underlying == "memorization_only"
    assert r.regime != "instant_generalization"
    # Ending generalized after a collapse on the way is still unstable generalization.
    assert classify_run(history([0.5, 1.0, 1.0, 1.0], [0.2, 1.0, 0.6, 1.0])).underlying == "instant_generalization"
