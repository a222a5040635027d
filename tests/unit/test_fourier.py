"""Fourier spectra and key frequencies: planted frequencies come back exactly, flat spectra give none."""

import json
import math

import pytest
import torch

from conftest import tiny_config
from grokscope.analysis import basis, fourier
from grokscope.errors import UserError
from grokscope.models import build_model
from grokscope.tasks import ModularTask
from grokscope.viz import fourier as viz


def model_and_task(**sections):
    cfg = tiny_config(**sections)
    task = ModularTask.from_config(cfg.task)
    return build_model(cfg.model, task, seed=0), task


def planted(p: int, frequencies: list[int], width: int, seed: int) -> torch.Tensor:
    """[p, width]: cos and sin of each frequency along orthonormal directions, so every frequency has equal norm."""
    directions = torch.linalg.qr(
        torch.randn(width, 2 * len(frequencies), generator=torch.Generator().manual_seed(seed))
    )
    directions = directions[0].double().T
    x = torch.arange(p, dtype=torch.float64)
    waves = torch.cat(
        [torch.stack([torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)]) for k in frequencies]
    )
    return waves.T @ directions


def plant(model, task, frequencies: list[int]) -> None:
    """Embedding and unembedding built from ``frequencies`` alone (float64 model, so leaks stay ~1e-15)."""
    p, d_model = task.modulus, model.cfg.d_model
    with torch.no_grad():
        model.W_E[:p] = planted(p, frequencies, d_model, seed=1)
        model.W_U[:, :p] = planted(p, frequencies, d_model, seed=2).T


@pytest.mark.parametrize(("p", "frequencies"), [(17, [3, 7]), (16, [3, 7]), (16, [3, 8])])
def test_planted_embedding_frequencies_are_recovered_exactly(p, frequencies):
    model, task = model_and_task(task={"modulus": p}, model={"dtype": "float64"})
    plant(model, task, frequencies)
    result = fourier.compute(model, task)
    others = [k - 1 for k in range(1, p // 2 + 1) if k not in frequencies]
    for norms in (result.embedding_norms, result.unembedding_norms, result.logit_norms, result.mlp_input_norms):
        assert norms.shape == (p // 2,)
        assert norms[others].max() < 1e-9
        assert norms[[k - 1 for k in frequencies]].min() > 1e-3
    for per_head in (result.query_norms, result.key_norms, result.value_norms):
        assert per_head.shape == (model.cfg.n_heads, p // 2)
        assert per_head[:, others].max() < 1e-9
    assert result.rules["embedding"] == frequencies
    assert result.rules["logits"] == frequencies
    assert result.key_frequencies == frequencies
    assert fourier.key_frequencies(model, task) == frequencies
    # Basis-vector norms: only cos/sin rows of the planted frequencies carry the embedding.
    labels = basis.basis_labels(p)
    carried = {label for label, norm in zip(labels, result.embedding_basis_norms.tolist(), strict=True) if norm > 1e-9}
    assert carried <= {f"{kind} {k}" for k in frequencies for kind in ("cos", "sin")}


def test_to_dict_reports_rules_agreement_and_key_frequencies():
    model, task = model_and_task(task={"modulus": 17}, model={"dtype": "float64"})
    plant(model, task, [3, 7])
    out = fourier.compute(model, task).to_dict()
    json.dumps(out)
    assert out["key_frequencies"] == [3, 7] and all(isinstance(k, int) for k in out["key_frequencies"])
    assert out["rules"]["embedding"] == [3, 7]
    assert out["rule_jaccard"]["logits/embedding"] == 1.0
    assert set(out["found_by_all"]) <= {3, 7}
    assert len(out["embedding_basis_norms"]) == len(out["basis_labels"]) == 17
    assert out["parameters"]["logit_spectrum"] == "W_L"

    rows = [{**out, "step": 0}, {**out, "step": 5}]
    figures = viz.figures(rows, [{"step": 0, "test_acc": 0.0}])
    assert set(figures) == {"fourier_embedding_spectrum", "fourier_key_frequencies"}
    assert viz.figures([], []) == {}


def test_random_init_has_no_key_frequencies():
    model, task = model_and_task(task={"modulus": 23}, model={"d_model": 64, "d_mlp": 128})
    result = fourier.compute(model, task)
    assert result.rules == {"neurons": [], "logits": [], "embedding": []}
    assert result.key_frequencies == []


def test_spectral_rule_needs_contrast():
    flat = torch.tensor([0.9, 1.0, 0.95, 0.85])
    assert fourier.spectral_rule(flat, 0.5, 1.5) == []  # everything passes the relative threshold
    assert fourier.spectral_rule(torch.tensor([0.1, 1.0, 0.05, 0.6]), 0.5, 1.5) == [2, 4]
    assert fourier.spectral_rule(torch.tensor([0.45, 1.0, 0.05, 0.55]), 0.5, 1.5) == []  # 0.55 vs 0.45: ambiguous
    assert fourier.spectral_rule(torch.zeros(4), 0.5, 1.5) == []


def test_consensus_needs_two_rules():
    result = fourier.FourierResult(
        modulus=11,
        embedding_coefficients=torch.zeros(11, 4),
        embedding_norms=torch.zeros(5),
        unembedding_norms=torch.zeros(5),
        logit_norms=None,
        query_norms=torch.zeros(2, 5),
        key_norms=torch.zeros(2, 5),
        value_norms=torch.zeros(2, 5),
        mlp_input_norms=None,
        neuron_cluster_sizes=torch.zeros(5, dtype=torch.long),
        rules={"neurons": [1, 2, 3], "logits": [2, 3], "embedding": [3, 5]},
    )
    assert result.key_frequencies == [2, 3]
    assert result.found_by_all == [3]
    assert result.rule_jaccard == {
        "neurons/logits": pytest.approx(2 / 3),
        "neurons/embedding": pytest.approx(1 / 4),
        "logits/embedding": pytest.approx(1 / 3),
    }
    assert fourier.jaccard([], []) == 1.0


def test_multi_layer_models_read_logit_frequencies_from_the_unembedding():
    model, task = model_and_task(task={"modulus": 17}, model={"n_layers": 2, "dtype": "float64"})
    plant(model, task, [2, 5])
    result = fourier.compute(model, task)
    assert result.logit_norms is None
    assert result.rules["logits"] == [2, 5] and result.key_frequencies == [2, 5]
    assert result.to_dict()["parameters"]["logit_spectrum"] == "W_U"


@pytest.mark.parametrize(
    "params", [{"logit_threshold": 0.0}, {"embed_threshold": 1.5}, {"min_gap": 0.5}, {"min_cluster_size": 0}]
)
def test_user_errors(params):
    model, task = model_and_task()
    with pytest.raises(UserError, match="fourier"):
        fourier.compute(model, task, **params)
