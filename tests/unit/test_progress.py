import json
import math

import pytest
import torch

from conftest import tiny_config
from grokscope.analysis import progress
from grokscope.analysis.basis import frequency_cells
from grokscope.errors import UserError
from grokscope.models import build_model
from grokscope.tasks import ModularTask, make_split
from grokscope.viz.progress import figures as progress_figures


def tiny_model(**task_options):
    """A float64 one-layer model (untrained), its task and a half split."""
    cfg = tiny_config(task=task_options, model={"dtype": "float64"})
    task = ModularTask.from_config(cfg.task)
    return build_model(cfg.model, task, seed=0), task, make_split(task.n_pairs, 0.5)


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


def waves(p: int, frequencies: list[int], operation: str, scale: float = 3.0) -> torch.Tensor:
    """``scale * sum_k cos(w_k (t - c))``: logits made of nothing but the given frequencies."""
    s = progress.shift_index(p, operation).double()
    return scale * sum(torch.cos(2 * math.pi * k * s / p) for k in frequencies)


def mean_loss(logits: torch.Tensor, operation: str) -> float:
    p = logits.shape[0]
    loss, _ = progress.answer_loss(logits.reshape(p * p, p), progress.answer_grid(p, operation).flatten())
    return float(loss.mean())


@pytest.mark.parametrize("operation", ["add", "sub"])
def test_excluding_the_frequencies_of_pure_waves_leaves_uniform_logits(operation):
    p, keys = 11, [2, 5]
    logits = waves(p, keys, operation)
    excluded = progress.excluded_logits(logits, keys, operation)
    assert excluded.abs().max() < 1e-12
    assert mean_loss(excluded, operation) == pytest.approx(math.log(p), abs=1e-9)
    # The answer sits at t - c = 0, where every wave peaks: restricting to K changes nothing.
    restricted = progress.restricted_logits(logits, keys)
    assert torch.allclose(restricted, logits, atol=1e-12)
    assert mean_loss(restricted, operation) == pytest.approx(mean_loss(logits, operation), abs=1e-9)
    assert mean_loss(logits, operation) < 0.5 < math.log(p)


def test_excluded_logits_match_the_projection_over_the_whole_grid():
    p, keys = 7, [1, 3]
    logits = torch.randn(p, p, p, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    s = progress.shift_index(p, "sub").double()
    expected = logits.clone()
    for k in keys:
        for u in (torch.cos(2 * math.pi * k * s / p), torch.sin(2 * math.pi * k * s / p)):
            expected -= (logits * u).sum() / (u * u).sum() * u
    assert torch.allclose(progress.excluded_logits(logits, keys, "sub"), expected, atol=1e-12)


@pytest.mark.parametrize("p", [7, 8])
def test_restricting_to_every_frequency_is_the_identity(p):
    logits = torch.randn(p, p, p, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(progress.restricted_logits(logits, list(range(1, p // 2 + 1))), logits, atol=1e-12)
    assert torch.allclose(progress.excluded_logits(logits, []), logits)


def test_key_cells_of_one_frequency_are_its_frequency_cells_and_of_all_every_cell():
    p = 12
    cells = frequency_cells(p)
    for k in range(1, p // 2 + 1):
        assert torch.equal(progress.key_cells(p, [k]), cells[k - 1])
    every = progress.key_cells(p, list(range(1, p // 2 + 1)), constant=True)
    assert bool(every.all())
    assert not bool(progress.key_cells(p, [1, 2])[0, 0])


def test_answer_loss_is_cross_entropy_and_ties_are_wrong():
    logits = torch.tensor([[2.0, 0.5, -1.0], [1.0, 1.0, 0.0], [0.0, 3.0, 1.0]], dtype=torch.float64)
    answers = torch.tensor([0, 0, 2])
    loss, correct = progress.answer_loss(logits, answers)
    expected = torch.nn.functional.cross_entropy(logits, answers, reduction="none")
    assert torch.allclose(loss, expected, atol=1e-15)
    assert correct.tolist() == [True, False, False]
    # The log1p branch keeps a tiny loss precise where logsumexp - logit would round it away.
    tiny_loss, _ = progress.answer_loss(torch.tensor([[40.0, 0.0]], dtype=torch.float64), torch.tensor([0]))
    assert float(tiny_loss[0]) == pytest.approx(math.exp(-40.0), rel=1e-12)


def test_gini_known_values():
    assert progress.gini(torch.tensor([0.0, 0.0, 5.0, 0.0])) == pytest.approx(3 / 4, abs=1e-15)
    assert progress.gini(torch.full((6,), 2.5)) == pytest.approx(0.0, abs=1e-15)
    assert progress.gini(torch.tensor([1.0, 0.0, 1.0, 0.0])) == pytest.approx(0.5, abs=1e-15)
    assert progress.gini(torch.zeros(3)) == 0.0


def test_nothing_removed_reproduces_the_full_loss(tiny):
    model, task, split = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    every = progress.compute(model, task, split=split, key_frequencies=list(range(1, 7)), single_frequencies=False)
    none = progress.compute(model, task, split=split, key_frequencies=[], single_frequencies=False)
    for result, kept in (
        (every, "restricted"),
        (every, "neuron_restricted"),
        (none, "excluded"),
        (none, "neuron_excluded"),
    ):
        score = getattr(result, kept)
        assert score.loss.keys() == {"train", "test", "all"}
        for split_name, loss in result.full.loss.items():
            assert score.loss[split_name] == pytest.approx(loss, abs=1e-9), kept
            assert score.acc[split_name] == result.full.acc[split_name]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    data = task.dataset()
    with torch.no_grad():
        logits = model(data.tokens)[:, task.answer_position]
    assert every.full.loss["all"] == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, data.answers)), abs=1e-12
    )
    assert every.full.acc["all"] == float((logits.argmax(-1) == data.answers).double().mean())


@pytest.mark.parametrize("operation", ["add", "sub"])
def test_answer_grid_is_the_tasks_answers_a_major(operation):
    task = ModularTask.from_config(tiny_config(task={"operation": operation}).task)
    assert torch.equal(progress.answer_grid(13, operation).flatten(), task.dataset().answers)


@pytest.mark.parametrize("modulus", [13, 12])
def test_single_frequency_sweeps_match_the_key_set_measures(modulus):
    # The sweeps take shortcuts (batched 3x3 cell blocks, linear read-out of the neurons) that must agree with the
    # plain key-set path, which feeds the activations back through the model; 12 has no sin for frequency 6.
    model, task, split = tiny_model(modulus=modulus)
    result = progress.compute(model, task, split=split, key_frequencies=[1])
    assert set(result.single) == {"restricted", "excluded", "neuron_restricted", "neuron_excluded"}
    for k in (2, modulus // 2):
        alone = progress.compute(model, task, split=split, key_frequencies=[k], single_frequencies=False)
        for name, sweep in result.single.items():
            for split_name in ("train", "test", "all"):
                assert sweep.loss[split_name][k - 1] == pytest.approx(getattr(alone, name).loss[split_name], abs=1e-9)
                assert sweep.acc[split_name][k - 1] == getattr(alone, name).acc[split_name]


def test_result_is_small_json_with_a_per_frequency_table(tiny):
    model, task, split = tiny
    result = progress.compute(model, task, split=split)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["key_frequencies_source"] == "fallback" and data["key_frequencies"]
    assert data["single_frequency"]["frequency"] == list(range(1, 7))
    best = data["best_single_restricted"]
    assert best["loss"]["all"] == min(data["single_frequency"]["restricted_loss"]["all"])
    assert data["worst_single_excluded"]["loss"]["all"] == max(data["single_frequency"]["excluded_loss"]["all"])
    assert 0 <= data["gini_embed"] <= 5 / 6 and 0 <= data["gini_unembed"] <= 5 / 6
    weights = sum(float(w.detach().pow(2).sum()) for w in model.parameters())
    assert data["weight_norm_sq"] == pytest.approx(weights, rel=1e-12)
    assert data["param_norms"]["embed.W_E"] == pytest.approx(float(model.W_E.detach().norm()), rel=1e-12)
    (rows,) = result.tables().values()
    assert len(rows) == 6 and rows[0]["frequency"] == 1 and "neuron_excluded_acc_test" in rows[0]


def test_without_a_split_only_all_inputs_are_scored(tiny):
    model, task, _ = tiny
    result = progress.compute(model, task, key_frequencies=[1, 2])
    assert result.full.loss.keys() == {"all"}
    assert result.single["excluded"].loss.keys() == {"all"}


def test_deeper_models_have_no_neuron_level():
    cfg = tiny_config(model={"dtype": "float64", "n_layers": 2})
    task = ModularTask.from_config(cfg.task)
    result = progress.compute(build_model(cfg.model, task, seed=0), task, key_frequencies=[3])
    assert result.neuron_restricted is None and result.neuron_excluded is None
    assert set(result.single) == {"restricted", "excluded"}
    assert result.to_dict()["neuron_best_single_restricted"] is None


def test_a_final_layernorm_keeps_the_hooked_neuron_level_but_not_its_linear_sweep():
    cfg = tiny_config(model={"dtype": "float64", "normalization": "LN"})
    task = ModularTask.from_config(cfg.task)
    result = progress.compute(build_model(cfg.model, task, seed=0), task, key_frequencies=list(range(1, 7)))
    assert result.neuron_restricted.loss["all"] == pytest.approx(result.full.loss["all"], abs=1e-9)
    assert set(result.single) == {"restricted", "excluded"}


def test_user_errors(tiny):
    model, task, _ = tiny
    with pytest.raises(UserError, match="key_frequencies"):
        progress.compute(model, task, key_frequencies=[0, 7])
    mul = ModularTask.from_config(tiny_config(task={"operation": "mul"}).task)
    with pytest.raises(UserError, match="mul"):
        progress.compute(model, mul)


def test_figures_plot_the_measures_beside_the_training_loss(tiny):
    model, task, split = tiny
    row = progress.compute(model, task, split=split, key_frequencies=[1], single_frequencies=False).to_dict()
    rows = [row | {"step": 0}, row | {"step": 10}]
    metrics = [{"step": s, "train_loss": 2.0, "test_loss": 3.0, "train_acc": 0.1, "test_acc": 0.1} for s in (0, 10)]
    figures = progress_figures(rows, metrics)
    assert set(figures) == {"progress_measures", "gini_and_weight_norm"}
    measures = figures["progress_measures"]
    assert measures.layout.yaxis.type == "log"
    names = {trace.name for trace in measures.data}
    assert {"train loss", "test restricted loss", "train excluded loss"} <= names
    assert (
        list(next(t for t in measures.data if t.name == "test excluded loss").y) == [row["excluded_loss"]["test"]] * 2
    )
    assert len(figures["gini_and_weight_norm"].data) == 3
    assert progress_figures([], metrics) == {}
