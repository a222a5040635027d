"""Model comparison: a model against itself, known principal angles, and invariance to the residual basis."""

import json
import math

import pytest
import torch

from conftest import tiny_config
from grokscope.analysis import compare
from grokscope.errors import UserError
from grokscope.models import build_model
from grokscope.tasks import ModularTask, make_split


def model_and_task(seed: int = 0, **sections):
    cfg = tiny_config(**sections)
    task = ModularTask.from_config(cfg.task)
    return build_model(cfg.model, task, seed=seed), task


def test_a_model_compared_with_itself():
    model, task = model_and_task(model={"dtype": "float64"})
    split = make_split(task.n_pairs, 0.5, seed=0)
    result = compare.compare(model, model, task, split=split)
    assert result.key_frequency_jaccard == 1.0
    assert result.agreement == 1.0 and result.test_agreement == 1.0
    assert result.accuracy_a == result.accuracy_b
    assert result.k == compare.EMBEDDING_DIRECTIONS
    assert result.principal_angles.abs().max() < 1e-6
    assert result.subspace_overlap == pytest.approx(1.0, abs=1e-9)
    json.dumps(result.to_dict())


def test_two_different_models():
    model_a, task = model_and_task(seed=0)
    model_b, _ = model_and_task(seed=1)
    result = compare.compare(model_a, model_b, task)
    assert result.test_agreement is None
    assert 0.0 <= result.agreement < 1.0
    assert result.principal_angles.max() > 0.1
    assert (result.principal_angles.diff() >= -1e-12).all()  # ascending


def test_principal_angles_of_known_planes():
    theta = 0.3
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, 0.0], [0.0, math.cos(theta)], [0.0, math.sin(theta)]], dtype=torch.float64)
    assert torch.allclose(compare.principal_angles(a, b), torch.tensor([0.0, theta], dtype=torch.float64), atol=1e-12)
    orthogonal = torch.tensor([[0.0], [0.0], [1.0]], dtype=torch.float64)
    assert compare.principal_angles(a[:, :1], orthogonal).item() == pytest.approx(math.pi / 2, abs=1e-12)


def test_embedding_subspace_ignores_the_residual_basis():
    generator = torch.Generator().manual_seed(0)
    embedding = torch.randn(13, 32, generator=generator, dtype=torch.float64)
    rotation = torch.linalg.qr(torch.randn(32, 32, generator=generator, dtype=torch.float64))[0]
    shifted = embedding @ rotation + 3.0  # another residual basis, and an offset the centring removes
    angles = compare.principal_angles(compare.principal_subspace(embedding, 5), compare.principal_subspace(shifted, 5))
    assert angles.max() < 1e-6


def test_k_is_capped_and_checked():
    model, task = model_and_task(task={"modulus": 7})
    assert compare.compare(model, model, task, k=100).k == 6  # p - 1 after centring
    with pytest.raises(UserError, match="k must"):
        compare.compare(model, model, task, k=0)
    other, _ = model_and_task(task={"modulus": 11})
    with pytest.raises(UserError, match="vocabulary"):
        compare.compare(model, other, task)
