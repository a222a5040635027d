"""Ablations with known answers: empty and inert ablations change nothing, planted frequencies vanish when ablated,
the neurons' frequency directions by brute force."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import assert_same_result, tiny_config
from grokscope.analysis import ablation, basis
from grokscope.analysis.ablation import Ablation
from grokscope.analysis.common import answer_logits, grid_inputs
from grokscope.errors import UserError
from grokscope.models import build_model
from grokscope.store import finite
from grokscope.tasks import ModularTask, make_split
from grokscope.viz import ablation as ablation_viz
from grokscope.viz.describe import describe_row


def tiny_model(**task):
    cfg = tiny_config(model={"dtype": "float64"}, task=task)
    task_ = ModularTask.from_config(cfg.task)
    return build_model(cfg.model, task_, seed=0), task_


def clean_logits(model, task):
    return answer_logits(model, task, grid_inputs(task))


def plant_embedding(model, task, strengths: dict[int, float]) -> None:
    """Number-token embeddings made of the given frequencies only, each with random directions of that norm scale."""
    p = task.modulus
    fourier = basis.fourier_basis(p)
    coefficients = torch.zeros(p, model.cfg.d_model, dtype=torch.float64)
    generator = torch.Generator().manual_seed(1)
    for k, strength in strengths.items():
        rows = basis.basis_frequencies(p) == k
        coefficients[rows] = strength * torch.randn(int(rows.sum()), model.cfg.d_model, generator=generator).double()
    with torch.no_grad():
        model.W_E[:p] = fourier.T @ coefficients


# Specs -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("head:0.1:mean", Ablation("head", (1,), "mean", layer=0)),
        ("head:1:zero", Ablation("head", (1,), "zero")),
        ("neurons:0.0-3,9:resample:7", Ablation("neurons", (0, 1, 2, 3, 9), "resample", seed=7)),
        ("embed_frequencies:3,7:zero", Ablation("embed_frequencies", (3, 7), "zero")),
        ("embed_frequencies::zero", Ablation("embed_frequencies", (), "zero")),
        ("neuron_frequency_cells:0.3,5:zero", Ablation("neuron_frequency_cells", (3, 5), "zero")),
        ("position:2:mean", Ablation("position", (2,), "mean")),
    ],
)
def test_parse_and_label_round_trip(text, spec):
    assert Ablation.parse(text) == spec
    assert Ablation.parse(spec.label) == spec


@pytest.mark.parametrize(
    "text",
    [
        "head:0.1",
        "heads:0.1:mean",
        "head:0.x:mean",
        "head:0.1:average",
        "head:5-3:zero",
        "position:1.2:zero",
        "a:b:c:d:e",
    ],
)
def test_bad_specs_raise_one_line(text):
    with pytest.raises(UserError) as error:
        Ablation.parse(text)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "spec",
    [
        Ablation("head", (2,), "zero"),
        Ablation("head", (0,), "zero", layer=1),
        Ablation("neurons", (64,), "zero"),
        Ablation("embed_frequencies", (0,), "zero"),
        Ablation("embed_frequencies", (7,), "zero"),
        Ablation("position", (3,), "zero"),
    ],
)
def test_targets_outside_the_model_are_user_errors(spec):
    model, task = tiny_model()
    with pytest.raises(UserError, match="out of range"):
        ablation.ablated_logits(model, task, spec)


@pytest.mark.parametrize("component", ["neuron_frequencies", "neuron_frequency_cells"])
def test_neuron_frequencies_need_the_full_grid(component):
    model, task = tiny_model(operation="div")
    with pytest.raises(UserError, match="every"):
        ablation.ablated_logits(model, task, Ablation(component, (1,), "zero"))


def test_neuron_frequency_directions_need_a_sum_or_difference():
    model, task = tiny_model(operation="mul")
    with pytest.raises(UserError, match="neuron_frequency_cells"):
        ablation.ablated_logits(model, task, Ablation("neuron_frequencies", (1,), "zero"))
    # The defaults fall back to the cells there, under their own name.
    specs = ablation.default_specs(model, task, key_frequencies=[2], single_frequencies=False)
    assert {s.component for s in specs} == {"head", "embed_frequencies", "neuron_frequency_cells"}


# Known answers -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec",
    [
        Ablation("neurons", (), "mean"),
        Ablation("neurons", (), "resample"),
        Ablation("head", (), "zero"),
        Ablation("embed_frequencies", (), "zero"),
        Ablation("embed_frequencies", (), "resample"),
        Ablation("neuron_frequencies", (), "zero"),
        Ablation("neuron_frequencies", (), "resample"),
        Ablation("neuron_frequency_cells", (), "zero"),
        Ablation("position", (), "zero"),
    ],
)
def test_ablating_nothing_changes_nothing(spec):
    model, task = tiny_model()
    assert torch.allclose(ablation.ablated_logits(model, task, spec), clean_logits(model, task), rtol=0, atol=1e-12)


def test_ablating_nothing_leaves_the_scores():
    model, task = tiny_model()
    split = make_split(task.n_pairs, 0.5)
    specs = [Ablation("neurons", (), "zero"), Ablation("neuron_frequencies", (), "zero")]
    result = ablation.compute(model, task, split=split, specs=specs).to_dict()
    for row in result["ablations"]:
        assert row["delta_train_loss"] == pytest.approx(0.0, abs=1e-12)
        assert row["delta_test_loss"] == pytest.approx(0.0, abs=1e-12)


def test_head_without_output_is_inert_and_a_live_head_is_not():
    model, task = tiny_model()
    with torch.no_grad():
        model.blocks[0].attn.W_O[0] = 0.0  # model.W_O is a stacked copy
    clean = clean_logits(model, task)
    for method in ("zero", "mean", "resample"):
        ablated = ablation.ablated_logits(model, task, Ablation("head", (0,), method))
        assert torch.allclose(ablated, clean, rtol=0, atol=1e-12)
    result = ablation.compute(model, task, split=make_split(task.n_pairs, 0.5), specs=[Ablation("head", (1,), "zero")])
    assert abs(result.to_dict()["ablations"][0]["delta_test_loss"]) > 1e-6


def test_ablating_the_planted_frequencies_erases_the_operands():
    model, task = tiny_model(modulus=17)
    plant_embedding(model, task, {3: 1.0, 7: 0.5})
    p = task.modulus
    remaining = model.W_E[:p].double() - ablation.embedding_frequency_part(model.W_E[:p], (3, 7))
    assert torch.allclose(remaining, remaining[:1].expand_as(remaining), atol=1e-12)

    erased = ablation.ablated_logits(model, task, Ablation("embed_frequencies", (3, 7), "zero"))
    assert torch.allclose(erased, erased[:1].expand_as(erased), atol=1e-10)
    # Over the full grid a Fourier component averages to zero: the mean ablation is the zero ablation.
    averaged = ablation.ablated_logits(model, task, Ablation("embed_frequencies", (3, 7), "mean"))
    assert torch.allclose(averaged, erased, atol=1e-10)
    assert not torch.allclose(erased, clean_logits(model, task), atol=1e-3)

    untouched = ablation.ablated_logits(model, task, Ablation("embed_frequencies", (5,), "zero"))
    assert torch.allclose(untouched, clean_logits(model, task), rtol=0, atol=1e-12)


def test_frequency_cell_part_picks_its_cells():
    p = 13
    w = 2 * math.pi * torch.arange(p, dtype=torch.float64) / p
    a, b = w[:, None], w[None, :]
    linear_3, product_5 = torch.cos(3 * a).expand(p, p), torch.cos(5 * (a + b))
    tables = torch.stack([linear_3 + product_5, product_5 + 2.0], dim=-1)
    assert torch.allclose(ablation.frequency_cell_part(tables, (3,))[..., 0], linear_3, atol=1e-12)
    assert torch.allclose(ablation.frequency_cell_part(tables, (5,))[..., 1], product_5, atol=1e-12)
    assert torch.allclose(ablation.frequency_cell_part(tables, (4,)), torch.zeros(p, p, 2, dtype=torch.float64))


# The neurons' frequency directions, built by brute force: explicit unit cos/sin vectors over the grid, no library code.
def unit_directions(p: int, k: int, operation: str) -> list[torch.Tensor]:
    """cos(w_k s) and sin(w_k s) over rows a * p + b, s = a + b (add) or a - b (sub), each of unit norm."""
    sign = 1 if operation == "add" else -1
    s = torch.tensor([a + sign * b for a in range(p) for b in range(p)], dtype=torch.float64)
    waves = [torch.cos(2 * math.pi * k * s / p), torch.sin(2 * math.pi * k * s / p)]
    return [wave / wave.norm() for wave in waves]


def brute_direction_part(tables: torch.Tensor, keys, operation: str) -> torch.Tensor:
    """sum_u u u^T N over the directions of every key frequency."""
    p = math.isqrt(tables.shape[0])
    return sum(torch.outer(u, u @ tables) for k in keys for u in unit_directions(p, k, operation))


@pytest.mark.parametrize("operation", ["add", "sub"])
def test_ablating_neuron_frequencies_removes_their_directions(operation):
    model, task = tiny_model(operation=operation)
    keys = (2, 5)
    with torch.no_grad():
        logits, cache = model.run_with_cache(task.dataset().tokens)
    post = cache["blocks.0.mlp.hook_post"][:, task.answer_position]
    # No normalization: a change of the answer position's neurons changes its logits by change @ W_out @ W_U.
    expected = (
        logits[:, task.answer_position]
        - brute_direction_part(post, keys, operation) @ (model.W_out[0] @ model.W_U).detach()
    )
    spec = Ablation("neuron_frequencies", keys, "zero")
    assert torch.allclose(ablation.ablated_logits(model, task, spec), expected, rtol=0, atol=1e-10)
    # The directions sum to zero over the grid: the mean ablation is the zero ablation.
    averaged = ablation.ablated_logits(model, task, Ablation("neuron_frequencies", keys, "mean"))
    assert torch.allclose(averaged, expected, rtol=0, atol=1e-10)


def test_neuron_frequencies_remove_the_answer_waves_and_cells_remove_more():
    p, k = 13, 3
    w = 2 * math.pi * torch.arange(p, dtype=torch.float64) / p
    a, b = w[:, None], w[None, :]
    answer_wave = torch.sin(k * (a + b)) + 0.5 * torch.cos(k * (a + b))  # what excluded loss removes for add
    one_operand, difference = torch.cos(k * a).expand(p, p), torch.cos(k * (a - b))  # in k's cells, not its directions
    tables = torch.stack([answer_wave + one_operand + difference + 2.0, torch.cos((k + 1) * (a + b))], dim=-1)
    _, task = tiny_model()
    flat = tables.reshape(p * p, -1)
    directions = ablation.neuron_frequency_part(flat, Ablation("neuron_frequencies", (k,), "zero"), task)
    assert torch.allclose(directions, brute_direction_part(flat, [k], "add"), atol=1e-12)
    assert torch.allclose(directions[:, 0], answer_wave.flatten(), atol=1e-12)
    assert directions[:, 1].abs().max() < 1e-12  # another frequency keeps its wave
    cells = ablation.neuron_frequency_part(flat, Ablation("neuron_frequency_cells", (k,), "zero"), task)
    assert torch.allclose(cells[:, 0], (answer_wave + one_operand + difference).flatten(), atol=1e-12)


def test_ties_score_as_wrong():
    # Every logit equal: no answer wins, so the accuracy is 0 (an argmax would call output 0 right for 1/p of inputs).
    model, task = tiny_model()
    with torch.no_grad():
        model.unembed.W_U.zero_()
        model.unembed.b_U.zero_()
    clean = ablation.compute(model, task, specs=[]).clean
    assert clean.test_acc == 0.0
    assert clean.test_loss == pytest.approx(math.log(task.d_vocab_out), abs=1e-12)


def test_an_input_independent_position_is_unchanged_by_mean_and_resample():
    # '=' is the same token at the same position in every input: its mean and any resample equal it.
    model, task = tiny_model()
    for method in ("mean", "resample"):
        ablated = ablation.ablated_logits(model, task, Ablation("position", (2,), method))
        assert torch.allclose(ablated, clean_logits(model, task), rtol=0, atol=1e-12)


def test_resample_is_seeded_and_leaves_the_global_rng_alone():
    model, task = tiny_model()
    state = torch.get_rng_state()
    first = ablation.ablated_logits(model, task, Ablation("neurons", (0, 5, 9), "resample", seed=3))
    again = ablation.ablated_logits(model, task, Ablation("neurons", (0, 5, 9), "resample", seed=3))
    other = ablation.ablated_logits(model, task, Ablation("neurons", (0, 5, 9), "resample", seed=4))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


# Defaults, key vs control, figures -----------------------------------------------------------------------------------
def test_default_specs_compare_key_frequencies_with_the_strongest_others():
    model, task = tiny_model()
    plant_embedding(model, task, {3: 1.0, 6: 0.5, 2: 0.01})
    split = make_split(task.n_pairs, 0.5)
    result = ablation.compute(model, task, split=split, key_frequencies=[3])
    assert result.control_frequencies == (6,)
    data = result.to_dict()
    n_heads, n_freq = model.cfg.n_heads, task.modulus // 2
    assert len(data["ablations"]) == n_heads + n_freq + 2  # the embed ablations of {3} and {6} are shared
    roles = {(row["component"], row["role"]): row["target"] for row in data["ablations"] if row["role"]}
    assert roles == {
        ("embed_frequencies", "key"): [3],
        ("embed_frequencies", "control"): [6],
        ("neuron_frequencies", "key"): [3],
        ("neuron_frequencies", "control"): [6],
    }
    assert data["clean"]["test_acc"] == pytest.approx(
        data["ablations"][0]["test_acc"] - data["ablations"][0]["delta_test_acc"]
    )

    figures = ablation_viz.figures([data | {"step": 0}, data | {"step": 10}], [])
    assert set(figures) == {"ablation_bars", "ablation_key_vs_other"}
    # The summary line names where each key set was ablated: the embedding first, then the neurons' directions.
    acc = {(row["component"], row["role"]): f"{row['test_acc']:.1%}" for row in data["ablations"] if row["role"]}
    assert describe_row("ablation", data).endswith(
        f"key frequencies ablated {acc['embed_frequencies', 'key']}, as many others "
        f"{acc['embed_frequencies', 'control']} (embedding); {acc['neuron_frequencies', 'key']} and "
        f"{acc['neuron_frequencies', 'control']} (neurons)"
    )


def test_key_frequencies_must_exist():
    model, task = tiny_model()
    with pytest.raises(UserError, match="key frequencies"):
        ablation.compute(model, task, key_frequencies=[0])


def json_trip(row):
    """A row as it comes back from the JSON cache file (non-finite numbers as null)."""
    return json.loads(json.dumps(finite(row), allow_nan=False))


def test_result_round_trips_through_its_json_row():
    nan = float("nan")
    result = ablation.AblationResult(
        clean=ablation.Scores(nan, nan, 0.25, 0.5),  # no split: no train scores
        outcomes=[
            ablation.AblationOutcome(Ablation("head", (1,), "mean"), ablation.Scores(nan, nan, 1.5, 0.125)),
            ablation.AblationOutcome(
                Ablation("neuron_frequencies", (3, 4, 5, 9), "resample", layer=1, seed=7),
                ablation.Scores(0.5, 1.0, 2.0, 0.0),
                "key",
            ),
            ablation.AblationOutcome(
                Ablation("embed_frequencies", (2, 6), "zero"), ablation.Scores(1, 0, 1, 0), "control"
            ),
        ],
        key_frequencies=(3, 4, 5, 9),
        control_frequencies=(2, 6, 7, 8),
        single_frequency_sweep=True,
    )
    again = ablation.AblationResult.from_dict(json_trip(result.to_dict()))
    assert_same_result(again, result)
    assert again.to_dict() == result.to_dict()
    assert again.outcomes[1].spec.label == "neuron_frequencies:1.3-5,9:resample:7"


@pytest.mark.parametrize("with_split", [False, True])
def test_computed_result_round_trips_and_is_a_frame(with_split):
    model, task = tiny_model()
    split = make_split(task.n_pairs, 0.5) if with_split else None
    result = ablation.compute(model, task, split=split, key_frequencies=[3, 5])
    again = ablation.AblationResult.from_dict(json_trip(result.to_dict()))
    assert_same_result(again, result)
    frame = again.to_frame()
    assert frame.shape[0] == 1 and "ablations_head:0.1:mean_test_loss" in frame.columns
