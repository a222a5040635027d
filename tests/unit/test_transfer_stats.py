"""The transfer experiment's statistics and per-run measures, each against a brute-force recomputation written here:
normality, the one-sample test against chance, the outlier bound, speed-ups, spreads, prediction agreement, the
learning pattern, the final-model summaries, per-condition seeds and budgets, and the stats.json sections."""

import itertools
import math

import numpy as np
import pytest
import scipy.stats as sps
import torch
import yaml

from conftest import tiny_config
from grokscope.analysis import neurons
from grokscope.analysis.common import jsonable
from grokscope.errors import UserError
from grokscope.experiments import run as run_experiment
from grokscope.experiments.transfer import TransferConfig
from grokscope.experiments.transfer_core.measures import (
    TargetResult,
    attention_summary,
    gradient_summary,
    learning_pattern,
    prediction_agreement,
    specialization_summary,
)
from grokscope.experiments.transfer_core.statistics import summarize
from grokscope.stats import (
    Sample,
    compare,
    fieller_interval,
    max_abs_z,
    normality_rejected,
    one_sample,
    shapiro,
    speedup,
    spread,
    zscore_outliers,
)
from grokscope.store import Run
from grokscope.training import train
from grokscope.viz import transfer as transfer_figures
from grokscope.viz.similarity import describe as similarity_describe
from grokscope.viz.similarity import figures as similarity_figures
from grokscope.viz.transfer_text import describe

# --- normality ----------------------------------------------------------------------------------------------------


def test_shapiro_matches_scipy_and_says_when_it_cannot_test():
    values = [5545.0, 6102.0, 5321.0, 5790.0, 9800.0]
    check = shapiro(values)
    reference = sps.shapiro(values)
    assert check.testable and check.n == 5
    assert check.statistic == pytest.approx(reference.statistic) and check.p == pytest.approx(reference.pvalue)
    assert check.rejected == (reference.pvalue < 0.05)
    # None and NaN are left out, not counted.
    assert shapiro([*values, None, math.nan]).p == pytest.approx(reference.pvalue)
    two = shapiro([1.0, 2.0])
    assert (two.testable, two.p, two.rejected) == (False, None, None) and "n = 2 < 3" in two.note
    flat = shapiro([3.0, 3.0, 3.0, 3.0])
    assert not flat.testable and flat.rejected is None and "equal" in flat.note


def test_normality_flag_combines_groups():
    normal = shapiro([1.0, 2.0, 3.1, 3.9, 5.2])
    skewed = shapiro([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 50.0])
    untestable = shapiro([1.0, 2.0])
    assert skewed.rejected and not normal.rejected
    assert normality_rejected(normal, skewed) is True
    assert normality_rejected(normal, normal) is False
    assert normality_rejected(normal, untestable) is None
    assert normality_rejected(skewed, untestable) is True


def test_welch_comparisons_carry_shapiro_on_the_values_they_use():
    a = Sample.from_values([10, 12, 11, 13, None], budget=100)
    b = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 50.0]
    c = compare(a, Sample.from_values(b, budget=100))
    assert c.shapiro_p_a == pytest.approx(sps.shapiro([10, 12, 11, 13]).pvalue)
    assert c.shapiro_p_b == pytest.approx(sps.shapiro(b).pvalue)
    assert c.normality_rejected is True and c.to_dict()["normality_rejected"] is True
    assert compare([1.0, 2.0], [3.0, 4.0]).normality_rejected is None  # too few to test


# --- one-sample test against chance -------------------------------------------------------------------------------


def wilcoxon_exact_greater(x: list[float], mu: float) -> tuple[float, float]:
    """W+ and P(W+ >= observed) over all 2^n sign patterns of the ranks of |x - mu| (no ties, no zeros)."""
    d = [v - mu for v in x]
    order = sorted(range(len(d)), key=lambda i: abs(d[i]))
    rank = {i: r + 1 for r, i in enumerate(order)}
    observed = sum(rank[i] for i in range(len(d)) if d[i] > 0)
    patterns = list(itertools.product([0, 1], repeat=len(d)))
    at_least = sum(sum(r + 1 for r, s in zip(range(len(d)), signs, strict=True) if s) >= observed for signs in patterns)
    return observed, at_least / len(patterns)


def test_one_sample_t_and_wilcoxon_by_hand():
    retention = [0.031, 0.012, 0.027, 0.044, 0.019, 0.008]
    chance = 1 / 59
    result = one_sample(retention, chance, "greater")
    x = np.array(retention)
    t = (x.mean() - chance) / (x.std(ddof=1) / math.sqrt(len(x)))
    assert result.t == pytest.approx(t) and result.p == pytest.approx(sps.t.sf(t, len(x) - 1))
    assert (result.n, result.mu) == (6, chance) and result.mean == pytest.approx(x.mean())
    w, p = wilcoxon_exact_greater(retention, chance)
    assert result.wilcoxon_w == w and result.wilcoxon_p == pytest.approx(p)
    assert result.normality.p == pytest.approx(sps.shapiro(retention).pvalue)
    # Two-sided: twice the smaller tail of the t distribution.
    both = one_sample(retention, chance, "two-sided")
    assert both.p == pytest.approx(2 * sps.t.sf(abs(t), len(x) - 1))
    row = result.to_dict()
    assert row["shapiro_p"] == pytest.approx(result.normality.p) and row["alternative"] == "greater"


def test_one_sample_degenerate_cases():
    # Complete forgetting on every seed: no spread, so no t (scipy would report t of about 1e16); Wilcoxon still
    # ranks: every value is below chance, W+ = 0 and the one-sided p is 1.
    flat = one_sample([0.0, 0.0, 0.0, 0.0, 0.0], 1 / 59)
    assert flat.t is None and flat.p is None and flat.sd == 0
    assert flat.wilcoxon_w == 0 and flat.wilcoxon_p == pytest.approx(1.0)
    # A value exactly at mu is dropped by Wilcoxon (its convention) but kept by the t-test.
    at_mu = one_sample([0.5, 0.6, 0.7, 0.9], 0.5)
    w, p = wilcoxon_exact_greater([0.6, 0.7, 0.9], 0.5)
    assert at_mu.wilcoxon_w == w and at_mu.wilcoxon_p == pytest.approx(p) and at_mu.n == 4
    one = one_sample([0.3], 0.1)
    assert one.t is None and one.sd is None and one.mean == 0.3
    with pytest.raises(ValueError, match="alternative"):
        one_sample([0.1, 0.2], 0.1, "bigger")  # type: ignore[arg-type]


# --- outliers -----------------------------------------------------------------------------------------------------


def largest_z(values: list[float]) -> float:
    x = np.asarray(values, dtype=float)
    return float(np.max(np.abs(x - x.mean()) / x.std(ddof=1)))


@pytest.mark.parametrize("n", [3, 5, 6, 10, 11])
def test_max_abs_z_is_attained_and_never_exceeded(n):
    bound = max_abs_z(n)
    assert largest_z([0.0] * (n - 1) + [1.0]) == pytest.approx(bound)
    rng = np.random.default_rng(n)
    for _ in range(2000):
        assert largest_z(list(rng.standard_cauchy(n))) <= bound + 1e-12


def test_the_studys_z_of_2_needs_six_seeds():
    assert max_abs_z(5) == pytest.approx(4 / math.sqrt(5)) and max_abs_z(5) < 2 < max_abs_z(6)
    assert max_abs_z(10) < 3 < max_abs_z(11) and max_abs_z(1) is None
    assert zscore_outliers([5545.0, 5545.0, 5545.0, 5545.0, 1e9], threshold=2) == []  # 5 seeds: never
    assert zscore_outliers([5545.0] * 5 + [1e9], threshold=2) == [5]  # 6 seeds: the extreme one


# --- spreads and speed-ups ----------------------------------------------------------------------------------------


def test_spread_by_hand():
    s = spread([2.0, None, 4.0, 9.0, math.nan])
    assert (s.n, s.mean, s.min, s.max) == (3, 5.0, 2.0, 9.0)
    assert s.sd == pytest.approx(math.sqrt(((2 - 5) ** 2 + (4 - 5) ** 2 + (9 - 5) ** 2) / 2))
    assert spread([7.0]).to_dict() == {"n": 1, "mean": 7.0, "sd": None, "min": 7.0, "max": 7.0}
    assert spread([]).n == 0


def test_speedup_ratio_and_bootstrap_by_hand():
    random_init = Sample.from_values([26000, 24500, None, 28900], budget=30000)
    grokked = Sample.from_values([5545, 5800, 5300, 5100, 5900], budget=30000)
    # With 5 and 3 reached runs the default gives no bootstrap interval (stats.MIN_BOOTSTRAP_N); the mechanics are
    # checked with the minimum lowered explicitly.
    assert speedup(random_init, grokked).ci_low is None
    s = speedup(random_init, grokked, names=("grokked", "random"), n_boot=2000, seed=3, min_boot_n=2)
    ref, x = np.array([26000, 24500, 28900.0]), np.array([5545, 5800, 5300, 5100, 5900.0])
    assert s.ratio == pytest.approx(ref.mean() / x.mean())
    assert (s.n_reached, s.n_censored, s.reference_n_reached, s.reference_n_censored) == (5, 0, 3, 1)
    # The bootstrap: 2000 resamples of the reference, then 2000 of the condition, each mean in a loop.
    rng = np.random.default_rng(3)
    ref_draws = rng.integers(0, 3, size=(2000, 3))
    draws = rng.integers(0, 5, size=(2000, 5))
    ratios = [sum(ref[j] for j in r) / 3 / (sum(x[j] for j in d) / 5) for r, d in zip(ref_draws, draws, strict=True)]
    assert (s.ci_low, s.ci_high) == (
        pytest.approx(np.percentile(ratios, 2.5)),
        pytest.approx(np.percentile(ratios, 97.5)),
    )
    assert s.ci_low < s.ratio < s.ci_high
    # Nothing reached on one side, at the threshold from the start, or one reached run only: no ratio, or no
    # interval, and the note says why.
    none = speedup(Sample.from_values([None, None], budget=10), grokked, names=("grokked", "random"))
    assert none.ratio is None and none.note == "no run of random reached the threshold"
    at_start = speedup([100.0, 120.0], [0.0, 0.0])
    assert at_start.ratio is None and "from the start" in at_start.note
    single = speedup([100.0], [10.0, 20.0])
    assert single.ratio == pytest.approx(100 / 15) and single.ci_low is None and "no interval" in single.note


# --- prediction agreement -----------------------------------------------------------------------------------------


def test_prediction_agreement_matches_a_loop_on_common_seeds():
    gen = torch.Generator().manual_seed(0)
    n, p = 60, 7
    seeds = {"grokked": [0, 1, 2, 3, 4], "random": [0, 1, 2, 3, 4], "random_long": [0, 1, 2]}
    predictions, test_sets = {}, {}
    for condition, condition_seeds in seeds.items():
        for seed in condition_seeds:
            predictions[(condition, seed)] = torch.randint(0, p, (n,), generator=gen)
            # Matched seeds share their split; one odd test set shows that only common test inputs count.
            test = torch.arange(seed, n, 3)
            test_sets[(condition, seed)] = test[:-2] if (condition, seed) == ("random_long", 2) else test
    rows = prediction_agreement(predictions, test_sets, list(seeds))
    assert [(r["a"], r["b"]) for r in rows] == [
        ("grokked", "random"),
        ("grokked", "random_long"),
        ("random", "random_long"),
    ]
    for row in rows:
        expected = {}
        for seed in range(5):
            if (row["a"], seed) not in predictions or (row["b"], seed) not in predictions:
                continue
            inputs = [i for i in range(n) if i in test_sets[(row["a"], seed)] and i in test_sets[(row["b"], seed)]]
            same = sum(int(predictions[(row["a"], seed)][i] == predictions[(row["b"], seed)][i]) for i in inputs)
            expected[seed] = same / len(inputs)
        assert row["matched_seeds"] == sorted(expected)
        assert row["per_seed"] == pytest.approx(expected)
        assert row["n"] == len(expected) and row["mean"] == pytest.approx(np.mean(list(expected.values())))
        assert row["sd"] == pytest.approx(np.std(list(expected.values()), ddof=1))
    assert rows[1]["matched_seeds"] == [0, 1, 2]  # random_long ran 3 of the 5 seeds
    assert prediction_agreement(predictions, test_sets, ["grokked", "nothing"])[0]["n"] == 0


# --- learning pattern ---------------------------------------------------------------------------------------------


def curve(points: dict[float, float], steps_per_epoch: int = 4) -> list[dict]:
    """Metric rows at the given epochs (several steps per epoch, so that reading steps instead would show)."""
    return [{"step": int(e * steps_per_epoch), "epoch": e, "test_acc": a} for e, a in points.items()]


def test_learning_pattern_gains_over_the_first_and_last_epochs_by_hand():
    # A head start: 0.05 at epoch 0, 0.55 by epoch 100, then slowly to 0.97 at epoch 3000.
    rows = curve({0: 0.05, 50: 0.3, 100: 0.55, 150: 0.6, 1500: 0.8, 2000: 0.9, 2500: 0.95, 3000: 0.97})
    pattern = learning_pattern(rows, early=100, late=1000)
    assert pattern["gain_early"] == pytest.approx(0.55 - 0.05)  # epochs 0-100
    assert pattern["gain_late"] == pytest.approx(0.97 - 0.9)  # epochs 2000-3000
    assert pattern["late_from_epoch"] == 2000
    # Between logged rows the last row at or before the epoch counts: epoch 100 reads 75's, 3100 - 1000 reads 2000's.
    sparse = curve({0: 0.0, 75: 0.2, 130: 0.4, 2000: 0.5, 2200: 0.9, 3100: 1.0})
    got = learning_pattern(sparse, early=100, late=1000)
    assert (got["gain_early"], got["gain_late"], got["late_from_epoch"]) == (0.2, 0.5, 2000)
    # Grokking from a random init: nothing early, most of it late.
    grokking = learning_pattern(curve({0: 0.1, 100: 0.1, 1200: 0.2, 1800: 0.99, 2200: 1.0}), 100, 1000)
    assert grokking["gain_early"] == 0.0 and grokking["gain_late"] == pytest.approx(1.0 - 0.2)


def test_a_run_shorter_than_the_late_window_counts_from_its_first_row():
    rows = curve({0: 0.1, 100: 0.4, 400: 0.9})  # stopped early at epoch 400 < late = 1000
    pattern = learning_pattern(rows, early=100, late=1000)
    assert pattern["gain_late"] == pytest.approx(0.9 - 0.1) and pattern["late_from_epoch"] == 0
    assert pattern["gain_early"] == pytest.approx(0.4 - 0.1)
    # Exactly one window long: the window starts at the first row too.
    assert learning_pattern(curve({0: 0.2, 1000: 0.7}), 100, 1000)["gain_late"] == pytest.approx(0.5)
    assert learning_pattern([], 100, 1000) == {"gain_early": None, "gain_late": None, "late_from_epoch": None}


# --- final-model summaries ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run") / "tiny"
    train(tiny_config(train={"steps": 40, "checkpoints": {"every": 20}}), root, device="cpu", progress=False)
    return Run.open(root)


def test_specialization_is_the_neurons_analysis(tiny_run):
    model, task = tiny_run.load_model(), tiny_run.task
    summary = specialization_summary(model, task)
    full = neurons.compute(model, task).summary()
    assert summary == {k: full[k] for k in summary}
    assert {
        "residual_distinct_dominant_frequencies",
        "residual_mean_dominant_share",
        "residual_dims_specialized",
        "mean_max_fve",
        "n_above_half",
    } <= set(summary)


def test_attention_summary_by_hand(tiny_run):
    model, task = tiny_run.load_model(), tiny_run.task
    summary = attention_summary(model, task)
    _, cache = model.run_with_cache(task.dataset().tokens)
    pattern = cache["blocks.0.attn.hook_pattern"][:, :, task.answer_position].double()  # [input, head, key]
    for k, name in enumerate(["a", "b", "eq"]):
        assert summary[f"attention_to_{name}"] == pytest.approx(float(pattern[..., k].mean()), abs=1e-6)
    # Variance of the attention to a over the inputs, per head, then averaged over heads.
    to_a = pattern[..., 0]
    assert summary["attention_a_variance"] == pytest.approx(float(to_a.var(dim=0, correction=0).mean()), abs=1e-6)
    assert 0 < summary["score_top_fve"] <= 1


def test_gradient_summary_by_hand(tiny_run):
    model, task = tiny_run.load_model(), tiny_run.task
    train_rows = tiny_run.split().train
    data = task.dataset()
    tokens, answers = data.tokens[train_rows], data.answers[train_rows]
    logits = model(tokens)[:, task.answer_position].double()
    loss = torch.nn.functional.cross_entropy(logits, answers)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    norm = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))
    summary = gradient_summary(tiny_run)
    assert summary["train_loss"] == pytest.approx(loss.item(), rel=1e-5)
    assert summary["grad_norm"] == pytest.approx(norm, rel=1e-4)
    mlp = [g for (name, _), g in zip(model.named_parameters(), grads, strict=True) if name.startswith("blocks.0.mlp")]
    assert summary["grad_norm.blocks.0.mlp"] == pytest.approx(
        math.sqrt(sum(float(g.double().pow(2).sum()) for g in mlp)), rel=1e-4
    )
    # Movement per step between the last two checkpoints (20 and 40).
    before = {k: v.detach() for k, v in tiny_run.load_model(20).named_parameters()}
    after = {k: v.detach() for k, v in tiny_run.load_model(40).named_parameters()}
    moved = math.sqrt(sum(float((after[k] - before[k]).double().pow(2).sum()) for k in after))
    size = math.sqrt(sum(float(before[k].double().pow(2).sum()) for k in before))
    assert summary["update_ratio_total_per_step"] == pytest.approx(moved / size / 20, rel=1e-6)
    assert -1 <= summary["grad_cosine_previous"] <= 1


# --- per-condition seeds and budgets ------------------------------------------------------------------------------

PLAN = {
    "kind": "transfer",
    "source": "source.yaml",
    "target_set": ["task.operation=sub"],
    "seeds": [0, 1, 2, 3, 4],
    "conditions": [
        "grokked",
        {"name": "random", "budget": 5000},
        {"name": "random_30k", "init": "random", "budget": 30000, "seeds": [0, 1, 2]},
    ],
    "budgets": {"grokked": 5000},
}


def test_conditions_inherit_or_set_their_seeds_and_budget():
    config = TransferConfig.model_validate(PLAN)
    planned = {c.name: c for c in config.planned_conditions()}
    assert [c.name for c in config.planned_conditions()] == ["grokked", "random", "random_30k"]
    assert (planned["grokked"].seeds, planned["grokked"].budget, planned["grokked"].init) == (
        [0, 1, 2, 3, 4],
        5000,
        "grokked",
    )
    assert (planned["random"].seeds, planned["random"].budget) == ([0, 1, 2, 3, 4], 5000)
    assert (planned["random_30k"].seeds, planned["random_30k"].budget, planned["random_30k"].init) == (
        [0, 1, 2],
        30000,
        "random",
    )
    assert config.reference == "random" and config.all_seeds == [0, 1, 2, 3, 4]
    # Bare names are written back as bare names, and the dump validates to the same config.
    dumped = config.model_dump()
    assert dumped["conditions"][0] == "grokked" and dumped["conditions"][2]["seeds"] == [0, 1, 2]
    assert TransferConfig.model_validate(dumped) == config
    # Seeds no other condition runs still get a source run.
    extra = TransferConfig.model_validate({**PLAN, "conditions": [{"name": "random", "seeds": [7, 3]}], "budgets": {}})
    assert extra.all_seeds == [0, 1, 2, 3, 4, 7]
    # A partial level takes its own seeds and budget too.
    partial = TransferConfig.model_validate({**PLAN, "partial": [{"name": "half", "test_acc": 0.5, "seeds": [1]}]})
    assert [(c.name, c.init, c.seeds) for c in partial.planned_conditions()][1] == ("half", "half", [1])


BAD_PLANS = {
    "seeds twice": (
        {"conditions": [{"name": "random", "seeds": [0, 0]}]},
        "conditions.0.seeds: each seed once, got [0, 0]",
    ),
    "no init": (
        {"conditions": ["grok"]},
        "conditions.0.init: condition 'grok' needs init: grokked, memorized or random",
    ),
    "renamed init": (
        {"conditions": [{"name": "random", "init": "grokked"}]},
        "conditions.0.init: the condition named 'random' starts from random; rename it",
    ),
    "budget twice": (
        {"conditions": [{"name": "random", "budget": 10}], "budgets": {"random": 20}},
        "budgets: 'random' sets its own budget; give it in one place",
    ),
    "budget 0": (
        {"conditions": [{"name": "random", "budget": 0}]},
        "conditions.0.budget: Input should be greater than or equal to 1 (got 0)",
    ),
    "empty seeds": (
        {"conditions": [{"name": "random", "seeds": []}]},
        "conditions.0.seeds: List should have at least 1",
    ),
    "same name": (
        {"conditions": ["random", {"name": "random", "budget": 4}]},
        "conditions: names must differ from each other and from partial's, got 'random' twice",
    ),
    "baseline": ({"baseline": "nope"}, "baseline: 'nope' is not one of the conditions"),
    "outlier_z": ({"outlier_z": 0}, "outlier_z: Input should be greater than 0 (got 0)"),
    "pattern early": (
        {"learning_pattern": {"early": 0, "late": 1000}},
        "learning_pattern.early: Input should be greater than or equal to 1 (got 0)",
    ),
    "pattern late": (
        {"learning_pattern": {"early": 100, "late": 0.5}},
        "learning_pattern.late: Input should be a valid integer",
    ),
}


@pytest.mark.parametrize("case", list(BAD_PLANS))
def test_bad_condition_settings_are_one_line(tmp_path, case):
    changes, expected = BAD_PLANS[case]
    path = tmp_path / "transfer.yaml"
    path.write_text(yaml.safe_dump({**PLAN, "budgets": {}, **changes}))
    with pytest.raises(UserError) as err:
        run_experiment(path, tmp_path / "out", device="cpu", progress=False)
    message = str(err.value)
    assert message.startswith(f"{path}: {expected}") and "\n" not in message


# --- stats.json sections from per-run results ---------------------------------------------------------------------


def target(condition: str, seed: int, budget: int, steps: float | None, retention: float, **more) -> TargetResult:
    result = TargetResult(condition, seed, None, "", f"/runs/{condition}/{seed}", budget)
    result.steps_to = {"0.9": steps, "0.95": steps, "0.99": steps, "0.999": steps}
    result.source_retention = [0.9, retention]
    result.final_test_acc = 1.0 if steps is not None else 0.4
    for key, value in more.items():
        setattr(result, key, value)
    return result


def test_summarize_on_differing_seeds_and_budgets():
    grokked = [
        target("grokked", s, 5000, e, r)
        for s, e, r in zip(range(5), [4100, 4300, 3900, 4600, None], [0.01, 0.02, 0.0, 0.03, 0.01], strict=True)
    ]
    random_short = [target("random", s, 5000, None, 0.02) for s in range(5)]
    random_long = [
        target("random_30k", s, 30000, e, 0.01) for s, e in zip(range(3), [26000, 24500, 28900], strict=True)
    ]
    targets = grokked + random_short + random_long
    out = summarize(targets, ["grokked", "random", "random_30k"], baseline="random_30k", outlier_z=2.0, chance=1 / 113)
    # Speed-ups use each condition's own budget; comparisons censor everything at the smallest one.
    speed = {r["name"]: r for r in out["speedup"]["0.999"]}
    assert speed["grokked"]["ratio"] == pytest.approx(
        np.mean([26000, 24500, 28900]) / np.mean([4100, 4300, 3900, 4600])
    )
    assert speed["grokked"]["n_censored"] == 1 and speed["random"]["ratio"] is None
    assert out["compare_budget"] == 5000
    vs = {r["a"]: r for r in out["compare"]["0.999"]}
    assert set(vs) == {"grokked", "random"} and vs["grokked"]["n_censored_b"] == 3
    # Retention against chance: the one-sample test over each condition's seeds.
    kept = {r["condition"]: r for r in out["retention_vs_chance"]}
    expected = one_sample([0.01, 0.02, 0.0, 0.03, 0.01], 1 / 113, "greater")
    assert kept["grokked"]["t"] == pytest.approx(expected.t) and kept["grokked"]["p"] == pytest.approx(expected.p)
    assert kept["random"]["t"] is None and kept["random_30k"]["n"] == 3  # no spread: no t
    # The outlier rule says where it cannot fire: 4 and 3 reached runs.
    rule = {r["condition"]: r for r in out["outlier_rule"]}
    assert rule["grokked"]["max_possible_abs_z"] == pytest.approx(3 / 2) and not rule["grokked"]["can_flag"]
    assert (rule["random"]["n"], rule["random"]["max_possible_abs_z"], rule["random"]["can_flag"]) == (0, None, False)
    # With 6 reached runs a z of 2 can fire, and here it does: one run far from the others.
    six = [target("grokked", s, 5000, e, 0.01) for s, e in enumerate([4100, 4200, 4150, 4120, 4180, 4990])]
    flagged = summarize(six, ["grokked"], outlier_z=2.0)["outlier_rule"][0]
    x = np.array([4100, 4200, 4150, 4120, 4180, 4990.0])
    assert flagged["can_flag"] and flagged["flagged_seeds"] == [
        int(i) for i in np.flatnonzero(np.abs(x - x.mean()) / x.std(ddof=1) > 2)
    ]
    assert flagged["flagged_seeds"] == [5]
    # Normality rows per condition and metric, Shapiro–Wilk on the reached values.
    row = next(r for r in out["normality"] if r["condition"] == "grokked" and r["metric"] == "steps_to_0.999")
    assert row["shapiro_p"] == pytest.approx(sps.shapiro([4100, 4300, 3900, 4600]).pvalue)
    assert out["final"]["random_30k"]["test_acc"]["n"] == 3
    assert out["final"]["grokked"]["source_retention"]["mean"] == pytest.approx(0.014)


# --- censoring in steps, and what the text prints for two seeds ---------------------------------------------------


def test_censoring_is_in_steps_a_run_past_its_budget_is_censored():
    # 600 steps per run; one run "reached" 99.9% at step 650 (past its budget: e.g. logged by a longer config).
    runs = [target("random", 0, 600, 400, 0.1), target("random", 1, 600, 500, 0.1), target("random", 2, 600, 650, 0.1)]
    out = summarize(runs, ["random"])
    described = out["describe"]["0.999"]["random"]
    assert (described["n"], described["n_reached"], described["n_censored"]) == (3, 2, 1)
    result = jsonable({"conditions": ["random"], "targets": runs, "statistics": out})
    (box,) = transfer_figures.steps_boxes(result).data
    assert list(box.y) == [400, 500] and box.name == "random (1 never reached)"
    assert described["mean"] == pytest.approx(450)  # the censored run is counted, not averaged in
    # Comparisons censor at the smallest budget, in steps: 26000 steps is not reached within 5000.
    long = [target("random_30k", s, 30000, e, 0.1) for s, e in enumerate([4000, 26000])]
    short = [target("grokked", s, 5000, e, 0.1) for s, e in enumerate([1000, 1200])]
    out = summarize(short + long, ["grokked", "random_30k"], baseline="random_30k")
    assert out["unit"] == "steps" and out["compare_budget"] == 5000
    pair = out["compare"]["0.999"][0]
    assert (pair["a"], pair["b"], pair["n_censored_b"], pair["n_censored_a"]) == ("grokked", "random_30k", 1, 0)
    # The speed-up uses each condition's own budget: the long baseline's 26000 is reached within its 30000.
    speed = out["speedup"]["0.999"][0]
    assert speed["ratio"] == pytest.approx(np.mean([4000, 26000]) / np.mean([1000, 1200]))


def test_train_accuracy_speed_reads_train_steps_to():
    runs = []
    for condition, test, train_steps in (("grokked", None, [100, 140]), ("random", None, [300, 340])):
        for seed, t in enumerate(train_steps):
            r = target(condition, seed, 1000, test, 0.1)
            r.train_steps_to = {"0.9": t, "0.95": t, "0.99": t, "0.999": t}
            runs.append(r)
    on_test = summarize(runs, ["grokked", "random"])
    assert on_test["speed_on"] == "test_acc" and on_test["speedup"]["0.999"][0]["ratio"] is None
    on_train = summarize(runs, ["grokked", "random"], speed_on="train_acc")
    assert on_train["speed_on"] == "train_acc"
    assert on_train["speedup"]["0.999"][0]["ratio"] == pytest.approx(320 / 120)
    assert on_train["outlier_rule"][0]["metric"] == "steps_to_0.999 (train_acc)"
    # Normality is tested on the values the tests use: train steps here.
    row = next(r for r in on_train["normality"] if r["condition"] == "random" and r["metric"] == "train_steps_to_0.9")
    assert row["n"] == 2 and not row["testable"]
    assert not any(r["metric"].startswith("steps_to") for r in on_train["normality"])
    # The box plot reads them too.
    result = jsonable({"conditions": ["grokked", "random"], "targets": runs, "statistics": on_train})
    boxes = {trace.name: list(trace.y) for trace in transfer_figures.steps_boxes(result).data}
    assert boxes == {"grokked": [100, 140], "random": [300, 340]}


def _described(targets: list[TargetResult], conditions: list[str], **kwargs) -> tuple[dict, list[str]]:
    statistics = summarize(targets, conditions, **kwargs)
    statistics["settings"] = {"learning_pattern": {"early": 100, "late": 1000}}
    result = jsonable({"conditions": conditions, "targets": targets, "statistics": statistics})
    return statistics, describe(result)


def test_two_seeds_print_no_bootstrap_interval_and_state_n_per_group():
    grokked = [target("grokked", s, 5000, e, 0.02) for s, e in enumerate([1000, 1300])]
    random_init = [target("random", s, 5000, e, 0.05) for s, e in enumerate([4000, 4600])]
    statistics, lines = _described(grokked + random_init, ["grokked", "random"], chance=1 / 113)
    speed = statistics["speedup"]["0.999"][0]
    assert speed["ci_low"] is None and speed["ci_high"] is None  # no bootstrap on 2 runs per group
    by_hand = fieller_interval([4000, 4600], [1000, 1300])
    assert (speed["fieller_low"], speed["fieller_high"]) == (pytest.approx(by_hand.low), pytest.approx(by_hand.high))
    line = next(x for x in lines if x.startswith("speed-up to 99.9% test acc of grokked over random"))
    assert "(bootstrap)" not in line and "(Fieller)" in line
    assert f"{4300 / 1150:.2f}x" in line and "(n = 2 and 2; reached 2 and 2)" in line
    compare = next(x for x in lines if x.startswith("grokked (n=2) vs random (n=2)"))
    assert "censored at 5000 steps" in compare
    # The condition table: runs and reached per condition.
    row = next(x for x in lines if x.startswith("grokked |"))
    assert row.startswith("grokked | 2/2 | 2/2 |")
    # The speed-up figure draws the Fieller interval the text names (not a zero-width bar marked "no interval").
    result = jsonable({"conditions": ["grokked", "random"], "targets": grokked + random_init, "statistics": statistics})
    bar = next(t for t in transfer_figures.speedup(result).data if t.name == "to 99.9%")
    assert list(bar.error_y.arrayminus) == [pytest.approx(speed["ratio"] - by_hand.low)]
    assert list(bar.error_y.array) == [pytest.approx(by_hand.high - speed["ratio"])]
    assert list(bar.marker.pattern.shape) == [""]


def test_fifteen_reached_runs_per_group_print_the_bootstrap_interval():
    grokked = [target("grokked", s, 5000, 1000 + 20 * s, 0.02) for s in range(15)]
    random_init = [target("random", s, 5000, 4000 + 35 * s, 0.05) for s in range(15)]
    statistics, lines = _described(grokked + random_init, ["grokked", "random"])
    speed = statistics["speedup"]["0.999"][0]
    assert speed["ci_low"] is not None and speed["ci_low"] < speed["ratio"] < speed["ci_high"]
    line = next(x for x in lines if x.startswith("speed-up to 99.9% test acc of grokked"))
    assert "(bootstrap)" in line and "(n = 15 and 15; reached 15 and 15)" in line


def test_a_failed_target_run_is_reported_in_its_row_and_the_rest_is_summarized():
    ok = [target("random", s, 5000, e, 0.05) for s, e in enumerate([4000, 4600])]
    failed = TargetResult("grokked", 0, 90, "failed: RuntimeError: boom", None, 5000)
    statistics, lines = _described([failed, *ok], ["grokked", "random"])
    assert "grokked" not in statistics["describe"]["0.999"] and statistics["describe"]["0.999"]["random"]["n"] == 2
    assert failed.row()["run_dir"] is None and failed.row()["note"] == "failed: RuntimeError: boom"
    assert "grokked | 0/1 trained (failed: RuntimeError: boom)" in lines


def test_similarity_figure_draws_the_interval_the_text_names_and_says_what_speed_is_read_on():
    fast = speedup(Sample.from_values([4000, 4600]), Sample.from_values([1000, 1300]), names=("grokked", "random"))
    target = {"baseline": "random", "threshold": "0.999", "retention": {}, "final_test_acc": {}, "chance": 1 / 13}
    result = {
        "conditions": ["grokked", "random"],
        "targets": [
            {**target, "target": "sub", "speed_on": "test_acc", "speedup": {"grokked": fast.to_dict()}},
            {**target, "target": "random", "speed_on": "train_acc", "speedup": {}},
        ],
    }
    figure = similarity_figures(result)["similarity"]
    trace = next(t for t in figure.data if t.name == "grokked" and t.xaxis == "x")
    assert trace.error_y.arrayminus[0] == pytest.approx(fast.ratio - fast.fieller_low)
    assert trace.error_y.array[0] == pytest.approx(fast.fieller_high - fast.ratio)
    assert "train acc for random" in figure.layout.annotations[0].text
    line = next(x for x in similarity_describe(result) if x.startswith("sub | grokked"))
    assert "(Fieller)" in line and "(bootstrap)" not in line and "(n = 2 vs 2)" in line
