"""Attention patterns and score Fourier shares on tiny models with planted query/key weights."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import assert_same_result, tiny_config
from grokscope.analysis import attention, basis
from grokscope.errors import UserError
from grokscope.models import build_model
from grokscope.tasks import ModularTask
from grokscope.viz import attention as attention_viz


def tiny_model(**task):
    cfg = tiny_config(model={"dtype": "float64"}, task=task)
    task_ = ModularTask.from_config(cfg.task)
    return build_model(cfg.model, task_, seed=0), task_


def blind_head(model, head: int) -> None:
    """Zero query and key weights: every score is 0, so the head attends uniformly."""
    attn = model.blocks[0].attn  # model.W_Q and friends are stacked copies; write to the block's own weights
    with torch.no_grad():
        for weight in (attn.W_Q, attn.W_K, attn.b_Q, attn.b_K):
            weight[head] = 0.0


def test_patterns_are_distributions_over_earlier_positions():
    model, task = tiny_model()
    result = attention.compute(model, task)
    p = task.modulus
    assert result.pattern.shape == (1, 2, p, p, 3)
    assert result.positions == ("a", "b", "=")
    assert torch.allclose(result.pattern.sum(-1), torch.ones(1, 2, p, p, dtype=torch.float64), atol=1e-12)
    assert (result.pattern >= 0).all()


def test_blind_head_attends_uniformly_and_its_scores_have_no_frequency():
    model, task = tiny_model()
    blind_head(model, 0)
    result = attention.compute(model, task)
    assert torch.allclose(result.pattern[0, 0], torch.full_like(result.pattern[0, 0], 1 / 3), atol=1e-12)
    assert torch.equal(result.score_fve[0, 0], torch.zeros(task.modulus // 2, dtype=torch.float64))
    head = result.to_dict()["heads"][0]
    assert head["attention_a_variance"] == pytest.approx(0.0, abs=1e-20)
    assert all(value == pytest.approx(1 / 3) for value in head["mean_attention"].values())
    assert not any(math.isnan(v) for v in head["score_fve"])


def test_planted_score_frequency_explains_all_score_variance():
    # Score from '=' to a of head 1 is cos(3 w a) / sqrt(d_head): one frequency, linear in a.
    model, task = tiny_model()
    p, k = task.modulus, 3
    with torch.no_grad():
        model.W_pos.zero_()
        model.W_E.zero_()
        model.W_E[:p, 0] = torch.cos(2 * math.pi * k * torch.arange(p, dtype=torch.float64) / p)
        model.W_E[p, 1] = 1.0
        attn = model.blocks[0].attn
        for weight in (attn.W_Q, attn.W_K, attn.b_Q, attn.b_K):
            weight.zero_()
        attn.W_Q[1, 1, 0] = 1.0
        attn.W_K[1, 0, 0] = 1.0
    result = attention.compute(model, task)
    expected = torch.zeros(p // 2, dtype=torch.float64)
    expected[k - 1] = 1.0
    assert torch.allclose(result.score_fve[0, 1], expected, atol=1e-10)
    assert torch.equal(result.score_fve[0, 0], torch.zeros(p // 2, dtype=torch.float64))
    assert result.to_dict()["heads"][1]["score_top_frequency"] == k


def test_score_fve_counts_cross_terms_in_no_frequency():
    p = 13
    fourier = basis.fourier_basis(p)
    # Row 5 is cos 3 (a), row 9 is cos 5 (b): their product is a cross term, cos 3 alone is linear in a.
    table = fourier[5][:, None] * fourier[9][None, :] + fourier[5][:, None] * fourier[0][None, :] * 2.0
    shares = attention.score_fve(table)
    assert shares[2].item() == pytest.approx(4 / 5)
    assert shares.sum().item() == pytest.approx(4 / 5)


def test_heatmaps_only_when_asked_and_json_ready():
    model, task = tiny_model()
    result = attention.compute(model, task, include_heatmaps=True)
    data = result.to_dict()
    table = data["heatmaps"]["L0H1"]["a"]
    assert len(table) == task.modulus and len(table[0]) == task.modulus
    assert table[2][5] == pytest.approx(result.pattern[0, 1, 2, 5, 0].item(), abs=1e-4)
    json.dumps(data, allow_nan=False)
    assert "heatmaps" not in attention.compute(model, task).to_dict()


def test_needs_the_full_grid():
    model, task = tiny_model(operation="div")
    with pytest.raises(UserError, match="attention"):
        attention.compute(model, task)


def test_figures_from_rows():
    model, task = tiny_model()
    rows = [
        attention.compute(model, task).to_dict() | {"step": 0},
        attention.compute(model, task, include_heatmaps=True).to_dict() | {"step": 10},
    ]
    metrics = [{"step": 0, "test_acc": 0.1}, {"step": 10, "test_acc": 0.2}]
    figures = attention_viz.figures(rows, metrics)
    assert set(figures) == {"attention_heatmaps", "attention_fourier", "attention_over_training"}
    assert len(figures["attention_heatmaps"].data) == 2
    assert "attention_heatmaps" not in attention_viz.figures(rows[:1], metrics)


def test_html_is_self_contained():
    pytest.importorskip("circuitsvis")
    model, task = tiny_model()
    html = attention.attention_html(model, task, [(1, 2), (3, 4)])
    assert '<script src="http' not in html
    assert "unpkg.com" not in html
    assert "a=3 b=4 L0H1" in html
    with pytest.raises(UserError, match="not an input"):
        attention.attention_html(model, task, [(1, task.modulus)])


@pytest.mark.parametrize("include_heatmaps", [False, True])
def test_result_round_trips_through_its_row_and_arrays(include_heatmaps):
    model, task = tiny_model()
    result = attention.compute(model, task, include_heatmaps=include_heatmaps)
    assert set(result.arrays()) == {"pattern", "scores"}
    row = json.loads(json.dumps(result.to_dict()))
    again = attention.AttentionResult.from_dict(row, result.arrays())
    assert_same_result(again, result)  # score_fve from the row's heads, exactly
    assert again.to_frame().loc[0, "heads_L0H1_score_top_frequency"] == row["heads"][1]["score_top_frequency"]
