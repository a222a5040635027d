import json
import math

import pytest
import torch

from conftest import tiny_config
from grokscope.analysis import progress
from grokscope.analysis.common import answer_activations, answer_grid, answer_loss
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


# The paper's measures built by brute force from the reference text (shared/reference/progress-measures.md), with
# explicit 1-D unit cos/sin vectors and outer products: no library code.
def unit_waves(p: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.arange(p, dtype=torch.float64)
    cos, sin = torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)
    return cos / cos.norm(), sin / sin.norm()


def directions(p: int, k: int, operation: str) -> list[torch.Tensor]:
    cos, sin = unit_waves(p, k)
    sign = 1 if operation == "add" else -1
    u_cos = (torch.outer(cos, cos) - sign * torch.outer(sin, sin)) / math.sqrt(2)
    u_sin = (torch.outer(sin, cos) + sign * torch.outer(cos, sin)) / math.sqrt(2)
    return [u_cos.flatten(), u_sin.flatten()]


def brute_trig(logits: torch.Tensor, keys: list[int], operation: str) -> torch.Tensor:
    p = math.isqrt(logits.shape[0])
    trig = torch.zeros_like(logits)
    for k in keys:
        for u in directions(p, k, operation):
            for c in range(logits.shape[1]):
                trig[:, c] += (u @ logits[:, c]) * u
    return trig


def brute_loss(logits: torch.Tensor, operation: str, rows=None) -> float:
    p = logits.shape[1]
    labels = torch.tensor([(a + b) % p if operation == "add" else (a - b) % p for a in range(p) for b in range(p)])
    losses = torch.logsumexp(logits, dim=1) - logits[torch.arange(p * p), labels]
    return float(losses.mean() if rows is None else losses[rows].mean())


def planted(p: int, k: int, alpha: float, operation: str) -> torch.Tensor:
    """``alpha * cos(w_k (t - c))`` as an [a * p + b, c] table."""
    t = answer_grid(p, operation).flatten().double()
    c = torch.arange(p, dtype=torch.float64)
    return alpha * torch.cos(2 * math.pi * k * (t[:, None] - c[None, :]) / p)


@pytest.mark.parametrize("operation", ["add", "sub"])
def test_planted_wave_has_the_closed_form_restricted_loss_and_uniform_excluded_logits(operation):
    p, k, alpha = 13, 4, 3.0
    logits = planted(p, k, alpha, operation)
    closed_form = -alpha + math.log(sum(math.exp(alpha * math.cos(2 * math.pi * k * j / p)) for j in range(p)))
    restricted = progress.restricted_logits(logits, [k], operation)
    assert brute_loss(restricted, operation) == pytest.approx(closed_form, rel=1e-9)
    excluded = progress.excluded_logits(logits, [k], operation)
    assert excluded.abs().max() < 1e-12
    assert brute_loss(excluded, operation) == pytest.approx(math.log(p), rel=1e-12)
    # Another frequency carries nothing of the wave.
    assert brute_loss(progress.restricted_logits(logits, [k + 1], operation), operation) == pytest.approx(math.log(p))


@pytest.mark.parametrize("operation", ["add", "sub"])
@pytest.mark.parametrize("p", [13, 12])
def test_noisy_logits_match_the_brute_force_definitions(operation, p):
    keys = [2, 5] if p == 13 else [2, 6]  # 6 = p/2: its sin vanishes
    generator = torch.Generator().manual_seed(0)
    logits = planted(p, 2, 2.0, operation) + planted(p, 5, 1.0, operation)
    logits = logits + torch.randn(p * p, p, dtype=torch.float64, generator=generator)
    trig = brute_trig(logits, keys, operation) if p % 2 else None
    if p % 2 == 0:  # for k = p/2 only cos(pi s) remains; build it by hand too
        trig = brute_trig(logits, [2], operation)
        s = answer_grid(p, operation).flatten().double()
        u = torch.cos(math.pi * s)
        u = u / u.norm()
        trig += torch.outer(u, u @ logits)
    restricted = trig + (logits - trig).mean(0)
    excluded = logits - trig
    assert torch.allclose(progress.restricted_logits(logits, keys, operation), restricted, rtol=1e-9, atol=1e-12)
    assert torch.allclose(progress.excluded_logits(logits, keys, operation), excluded, rtol=1e-9, atol=1e-12)


def test_logit_cos_coefficients_are_the_inner_products_over_the_cube():
    p = 11
    logits = planted(p, 3, 2.0, "add") + torch.randn(p * p, p, dtype=torch.float64)
    t = answer_grid(p, "add").flatten().double()
    c = torch.arange(p, dtype=torch.float64)
    for k in range(1, p // 2 + 1):
        wave = torch.cos(2 * math.pi * k * (t[:, None] - c[None, :]) / p)
        expected = float((logits * wave).sum() / wave.norm())
        assert progress.logit_cos_coefficients(logits, "add")[k - 1] == pytest.approx(expected, rel=1e-9)
    assert int(progress.logit_cos_coefficients(planted(p, 3, 2.0, "add"), "add").abs().argmax()) == 2


def test_answer_loss_is_cross_entropy_and_ties_are_wrong():
    logits = torch.tensor([[2.0, 0.5, -1.0], [1.0, 1.0, 0.0], [0.0, 3.0, 1.0]], dtype=torch.float64)
    answers = torch.tensor([0, 0, 2])
    loss, correct = answer_loss(logits, answers)
    expected = torch.nn.functional.cross_entropy(logits, answers, reduction="none")
    assert torch.allclose(loss, expected, atol=1e-15)
    assert correct.tolist() == [True, False, False]
    # The log1p branch keeps a tiny loss precise where logsumexp - logit would round it away.
    tiny_loss, _ = answer_loss(torch.tensor([[40.0, 0.0]], dtype=torch.float64), torch.tensor([0]))
    assert float(tiny_loss[0]) == pytest.approx(math.exp(-40.0), rel=1e-12)


def test_gini_known_values():
    assert progress.gini(torch.tensor([0.0, 0.0, 5.0, 0.0])) == pytest.approx(3 / 4, abs=1e-15)
    assert progress.gini(torch.full((6,), 2.5)) == pytest.approx(0.0, abs=1e-15)
    assert progress.gini(torch.tensor([1.0, 0.0, 1.0, 0.0])) == pytest.approx(0.5, abs=1e-15)
    assert progress.gini(torch.zeros(3)) == 0.0


def brute_model_measures(model, task, split, keys):
    """Every default measure of one checkpoint by brute force: a plain forward, ``run_with_cache`` for the neurons."""
    p, op = task.modulus, task.operation.name
    tokens = task.dataset().tokens
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
    logits = logits[:, task.answer_position, :p].double()
    post = cache["blocks.0.mlp.hook_post"][:, task.answer_position].double()
    w_l = (model.W_out[0] @ model.W_U[:, :p]).detach().double()
    trig = brute_trig(logits, keys, op)
    post_trig = brute_trig(post, keys, op)
    neuron_restricted = (post.mean(0) + post_trig) @ w_l
    neuron_restricted += logits.mean(0) - neuron_restricted.mean(0)
    variants = {
        "full": logits,
        "restricted": trig + (logits - trig).mean(0),
        "excluded": logits - trig,
        "neuron_restricted": neuron_restricted,
        "neuron_excluded": logits - post_trig @ w_l,
    }
    rows = {"train": split.train, "test": split.test, "all": None}
    return {name: {s: brute_loss(v, op, r) for s, r in rows.items()} for name, v in variants.items()}


@pytest.mark.parametrize("operation", ["add", "sub"])
def test_model_measures_match_brute_force(operation):
    model, task, split = tiny_model(operation=operation)
    keys = [2, 5]
    result = progress.compute(model, task, split=split, key_frequencies=keys)
    expected = brute_model_measures(model, task, split, keys)
    for name, losses in expected.items():
        for split_name, loss in losses.items():
            assert getattr(result, name).loss[split_name] == pytest.approx(loss, rel=1e-6), (name, split_name)
    assert result.key_frequencies == keys and result.key_reference == "given"


def test_excluding_nothing_reproduces_the_full_loss(tiny):
    model, task, split = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    none = progress.compute(model, task, split=split, key_frequencies=[], single_frequencies=False)
    for kept in ("excluded", "neuron_excluded"):
        score = getattr(none, kept)
        assert score.loss.keys() == {"train", "test", "all"}
        for split_name, loss in none.full.loss.items():
            assert score.loss[split_name] == pytest.approx(loss, abs=1e-9), kept
            assert score.acc[split_name] == none.full.acc[split_name]
    # With no key frequency the restricted logits are each output's mean, the same for every input: one answer
    # wins, and it is right for 1/p of the inputs.
    assert none.restricted.acc["all"] == pytest.approx(1 / 13)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    data = task.dataset()
    with torch.no_grad():
        logits = model(data.tokens)[:, task.answer_position]
    assert none.full.loss["all"] == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, data.answers)), abs=1e-12
    )
    assert none.full.acc["all"] == float((logits.argmax(-1) == data.answers).double().mean())


@pytest.mark.parametrize("operation", ["add", "sub"])
def test_answer_grid_is_the_tasks_answers_a_major(operation):
    task = ModularTask.from_config(tiny_config(task={"operation": operation}).task)
    assert torch.equal(answer_grid(13, operation).flatten(), task.dataset().answers)


@pytest.mark.parametrize("operation", ["add", "sub"])
@pytest.mark.parametrize("modulus", [13, 12, 31])
def test_the_factored_sweeps_equal_the_definition_at_every_frequency(modulus, operation):
    """Each frequency's restricted and excluded logits built as the paper defines them (a [p^2, p] table each),
    scored input by input, against the sweep that never builds them."""
    from grokscope.analysis.common import answer_loss

    torch.manual_seed(modulus)
    logits = torch.randn(modulus * modulus, modulus, dtype=torch.float64) * 4
    answers = answer_grid(modulus, operation).flatten()
    logits[torch.arange(modulus * modulus), answers] += 3  # answers often on top: both accuracies vary
    perm = torch.randperm(modulus * modulus)
    splits = {"train": perm[: modulus * 4], "test": perm[modulus * 4 :], "all": torch.arange(modulus * modulus)}
    restricted, excluded = progress.single_frequency_sweeps(logits, operation, splits)
    for k in range(1, modulus // 2 + 1):
        for sweep, variant in (
            (restricted, progress.restricted_logits(logits, [k], operation)),
            (excluded, progress.excluded_logits(logits, [k], operation)),
        ):
            loss, right = answer_loss(variant, answers)
            for name, rows in splits.items():
                assert sweep.loss[name][k - 1] == pytest.approx(loss[rows].mean().item(), abs=1e-9)
                assert sweep.acc[name][k - 1] == right[rows].double().mean().item()


@pytest.mark.parametrize("modulus", [13, 12])
def test_single_frequency_sweeps_match_the_key_set_measures(modulus):
    model, task, split = tiny_model(modulus=modulus)
    result = progress.compute(model, task, split=split, key_frequencies=[1])
    for k in (2, modulus // 2):
        alone = progress.compute(model, task, split=split, key_frequencies=[k], single_frequencies=False)
        for name in ("restricted", "excluded"):
            sweep = getattr(result, f"single_{name}")
            for split_name in ("train", "test", "all"):
                assert sweep.loss[split_name][k - 1] == pytest.approx(getattr(alone, name).loss[split_name], abs=1e-9)
                assert sweep.acc[split_name][k - 1] == getattr(alone, name).acc[split_name]


def test_result_round_trips_through_json_and_has_a_per_frequency_table(tiny):
    model, task, split = tiny
    result = progress.compute(model, task, split=split, key_frequencies=[1, 3])
    row = json.loads(json.dumps(result.to_dict()))
    again = progress.ProgressResult.from_dict(row)
    assert again == result
    assert row["single_excluded"]["loss"]["train"] == result.single_excluded.loss["train"]
    assert 0 <= row["gini_embed"] <= 5 / 6 and 0 <= row["gini_unembed"] <= 5 / 6
    weights = sum(float(w.detach().pow(2).sum()) for w in model.parameters())
    assert row["weight_norm_sq"] == pytest.approx(weights, rel=1e-12)
    assert row["param_norms"]["embed.W_E"] == pytest.approx(float(model.W_E.detach().norm()), rel=1e-12)
    (rows,) = result.tables().values()
    assert len(rows) == 6 and rows[0]["frequency"] == 1 and "excluded_loss_train" in rows[0]
    frame = result.to_frame()
    assert frame.loc[0, "excluded_loss_train"] == result.excluded.loss["train"]
    assert frame.loc[0, "key_reference"] == "given"


def test_without_given_keys_the_checkpoints_own_are_used(tiny):
    model, task, _ = tiny
    result = progress.compute(model, task, single_frequencies=False)
    assert result.key_reference == "own"
    assert result.full.loss.keys() == {"all"}


def test_deeper_models_have_no_neuron_level():
    cfg = tiny_config(model={"dtype": "float64", "n_layers": 2})
    task = ModularTask.from_config(cfg.task)
    result = progress.compute(build_model(cfg.model, task, seed=0), task, key_frequencies=[3])
    assert result.neuron_restricted is None and result.neuron_excluded is None
    assert result.single_excluded is not None


def test_a_final_layernorm_feeds_the_neuron_level_through_the_model():
    cfg = tiny_config(model={"dtype": "float64", "normalization": "LN"})
    task = ModularTask.from_config(cfg.task)
    model = build_model(cfg.model, task, seed=0)
    result = progress.compute(model, task, key_frequencies=[])
    assert result.neuron_excluded.loss["all"] == pytest.approx(result.full.loss["all"], abs=1e-9)


@pytest.mark.parametrize("operation", ["add", "sub"])
def test_without_normalization_the_linear_readout_is_the_forward_with_hooks(operation):
    # The closed form (mean(N) + A) W_out W_U and L - A W_out W_U against the general path, forced, which runs the
    # model with hook_post (and, for the restricted one, resid_mid) set: the same numbers for a model without LN.
    model, task, _ = tiny_model(operation=operation)
    acts = answer_activations(model, task)
    linear = progress.neuron_level_logits(model, task, acts, [2, 5], linear=True)
    general = progress.neuron_level_logits(model, task, acts, [2, 5], linear=False)
    for closed_form, forward in zip(linear, general, strict=True):
        assert torch.allclose(closed_form, forward, rtol=0, atol=1e-10)
    assert not torch.allclose(linear[1], acts.logits.double(), atol=1e-3)  # the key frequencies carried something


def layer_norm_by_hand(x: torch.Tensor, norm) -> torch.Tensor:
    centred = x - x.mean(-1, keepdim=True)
    return centred / (centred.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt() * norm.w + norm.b


def test_with_a_final_layernorm_the_neurons_are_read_out_through_it():
    # What the docstring says is read out, by hand: ln_final(resid_mid + hook_post W_out + b_out) W_U + b_U with
    # hook_post = N - A (excluded), and with hook_post = mean(N) + A, resid_mid at its mean (restricted, each
    # output's mean then restored). Not the linear formula: a LayerNorm sits between the neurons and the logits.
    cfg = tiny_config(model={"dtype": "float64", "normalization": "LN"})
    task = ModularTask.from_config(cfg.task)
    model = build_model(cfg.model, task, seed=0)
    with torch.no_grad():  # a LayerNorm that does something: weights and biases off their init of 1 and 0
        model.ln_final.w.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(2))
        model.ln_final.b.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(3))
    p, keys = task.modulus, [2, 5]
    with torch.no_grad():
        logits, cache = model.run_with_cache(task.dataset().tokens)
    pos = task.answer_position
    logits = logits[:, pos, :p]
    resid_mid, post = cache["blocks.0.hook_resid_mid"][:, pos], cache["blocks.0.mlp.hook_post"][:, pos]
    trig = brute_trig(post, keys, "add")

    def read_out(resid: torch.Tensor, neurons: torch.Tensor) -> torch.Tensor:
        stream = resid + neurons @ model.W_out[0] + model.b_out[0]
        return (layer_norm_by_hand(stream, model.ln_final) @ model.W_U + model.b_U)[:, :p].detach()

    excluded = read_out(resid_mid, post - trig)
    restricted = read_out(resid_mid.mean(0).expand_as(resid_mid), post.mean(0) + trig)
    restricted = restricted + (logits.mean(0) - restricted.mean(0))
    got_restricted, got_excluded = progress.neuron_level_logits(model, task, answer_activations(model, task), keys)
    assert torch.allclose(got_excluded, excluded, rtol=0, atol=1e-10)
    assert torch.allclose(got_restricted, restricted, rtol=0, atol=1e-10)
    w_l = (model.W_out[0] @ model.W_U[:, :p]).detach()
    assert not torch.allclose(got_excluded, logits - trig @ w_l, atol=1e-3)  # the linear formula would be wrong


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
    assert {"progress_measures", "gini_and_weight_norm"} <= set(figures)
    measures = figures["progress_measures"]
    assert measures.layout.yaxis.type == "log"
    names = {trace.name for trace in measures.data}
    assert {"train loss", "all restricted loss", "train excluded loss"} <= names
    assert (
        list(next(t for t in measures.data if t.name == "train excluded loss").y)
        == [row["excluded"]["loss"]["train"]] * 2
    )
    assert progress_figures([], metrics) == {}
