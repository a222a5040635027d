"""Neuron FVE: known answers on planted activation tables, the basis it rests on, and the hook plumbing."""

import json
import math

import numpy as np
import pytest
import torch

from conftest import assert_same_result, tiny_config
from grokscope.analysis import basis, neurons
from grokscope.errors import UserError
from grokscope.models import build_model
from grokscope.tasks import ModularTask
from grokscope.viz import neurons as viz


def grid(p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """a and b as [p, p] float64 tables indexed [a, b]."""
    x = torch.arange(p, dtype=torch.float64)
    return x[:, None].expand(p, p), x[None, :].expand(p, p)


def wave(k: int, p: int, x: torch.Tensor, phase: float = 0.0) -> torch.Tensor:
    return torch.cos(2 * math.pi * k * x / p + phase)


def model_and_task(**sections):
    cfg = tiny_config(**sections)
    task = ModularTask.from_config(cfg.task)
    return build_model(cfg.model, task, seed=0), task


@pytest.mark.parametrize("p", [13, 12])
def test_basis_is_orthonormal(p):
    fb = basis.fourier_basis(p)
    assert torch.allclose(fb @ fb.T, torch.eye(p, dtype=torch.float64), atol=1e-12)
    assert fb.shape == (p, p) and len(basis.basis_labels(p)) == p


@pytest.mark.parametrize("p", [13, 12])
def test_frequency_cells_are_disjoint_and_skip_the_constant(p):
    cells = basis.frequency_cells(p)
    assert cells.shape == (p // 2, p, p)
    assert cells.sum(0).max() == 1  # no cell belongs to two frequencies
    assert not cells[:, 0, 0].any()


@pytest.mark.parametrize("p", [13, 12])
def test_fve_of_pure_frequencies(p):
    a, b = grid(p)
    k = 3
    tables = torch.stack(
        [
            wave(k, p, a + b),  # the modular-addition neuron
            wave(k, p, a, phase=0.7),  # linear in a only
            wave(k, p, a) * wave(k, p, b, phase=0.3) + 5.0,  # quadratic, with an offset
            wave(p // 2, p, a + b),  # the highest frequency (only a cos row when p is even)
        ],
        dim=-1,
    )
    fve = neurons.fve_from_activations(tables)
    assert fve.shape == (p // 2, 4)
    expected = torch.zeros_like(fve)
    expected[k - 1, :3] = 1.0
    expected[p // 2 - 1, 3] = 1.0
    assert torch.allclose(fve, expected, atol=1e-9)


def test_fve_splits_between_two_frequencies_and_leaves_cross_terms_out():
    p = 17
    a, b = grid(p)
    tables = torch.stack(
        [
            wave(2, p, a + b) + wave(5, p, a + b, phase=1.0),  # equal variance at 2 and 5
            wave(2, p, a) * wave(5, p, b),  # a cross term of two frequencies: no frequency explains it
            torch.full((p, p), 3.0),  # constant: dead
            torch.zeros(p, p),  # dead
        ],
        dim=-1,
    )
    fve = neurons.fve_from_activations(tables)
    assert fve[1, 0] == pytest.approx(0.5, abs=1e-9) and fve[4, 0] == pytest.approx(0.5, abs=1e-9)
    assert fve[:, 0].sum() == pytest.approx(1.0, abs=1e-9)
    assert fve[:, 1:].abs().max() < 1e-9


def test_fve_of_random_tables_is_a_partial_share():
    acts = torch.randn(11, 11, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fve = neurons.fve_from_activations(acts)
    assert fve.dtype == torch.float64
    assert (fve >= 0).all() and (fve.sum(0) <= 1 + 1e-12).all()
    # Neurons are transformed independently: alone, in chunks, or from float32 tables, the FVE is the same.
    assert torch.allclose(neurons.fve_from_activations(acts[..., 7:8])[:, 0], fve[:, 7], atol=1e-12)
    assert torch.allclose(neurons.fve_from_activations(acts, chunk=3), fve, atol=1e-12)
    assert torch.allclose(neurons.fve_from_activations(acts.float()), fve, atol=1e-5)


@pytest.mark.parametrize(
    ("sections", "layer"),
    [
        ({}, None),
        ({"task": {"format": "power"}}, None),
        ({"model": {"n_layers": 2}}, 0),
        ({"model": {"n_layers": 2}}, 1),
    ],
)
def test_activations_match_a_full_forward_pass(sections, layer):
    model, task = model_and_task(**sections)
    acts = neurons.neuron_activations(model, task, layer=layer, chunk=50)
    assert not any(point._forward_hooks for point in model.hook_dict.values())  # the early stop left no hooks
    index = model.cfg.n_layers - 1 if layer is None else layer
    tokens = task.dataset().tokens
    _, cache = model.run_with_cache(tokens, names_filter=f"blocks.{index}.mlp.hook_post")
    full = cache[f"blocks.{index}.mlp.hook_post"][:, task.answer_position]
    p = task.modulus
    assert acts.shape == (p, p, model.cfg.d_mlp)
    assert torch.allclose(acts.reshape(p * p, -1), full, atol=1e-5)


def test_embed_unembed_product_of_planted_weights():
    model, task = model_and_task()
    p, d_model = task.modulus, model.cfg.d_model
    generator = torch.Generator().manual_seed(1)
    u, v = torch.randn(d_model, generator=generator), torch.randn(d_model, generator=generator)
    x = torch.arange(p, dtype=torch.float64)
    with torch.no_grad():
        model.W_E[:p] = (wave(4, p, x)[:, None] * u[None].double()).float()
        model.W_U[:, :p] = (v[:, None].double() * wave(4, p, x, phase=0.4)[None]).float()
    product = neurons.embed_unembed_spectrum(model, task)
    # |cos(w_k x + phase)| in the orthonormal basis is sqrt(p / 2).
    expected = torch.zeros(p // 2, dtype=torch.float64)
    expected[3] = p / 2 * (u.double().abs() * v.double().abs()).sum()
    assert torch.allclose(product, expected, rtol=1e-5, atol=1e-5)


def folded_fft_products(embed: np.ndarray, unembed: np.ndarray) -> np.ndarray:
    """|FFT(W_E[:p, d])| * |FFT(W_U[d, :p])| for k = 1..p//2, by numpy, conjugate pairs k and p-k folded into one
    magnitude sqrt(|X_k|^2 + |X_(p-k)|^2) (for even p, k = p/2 is its own partner and stays |X_k|)."""
    p = embed.shape[0]
    k = np.arange(1, p // 2 + 1)

    def folded(x: np.ndarray) -> np.ndarray:  # x: (p, d) -> (p // 2, d)
        power = np.abs(np.fft.fft(x, axis=0)) ** 2
        return np.sqrt(np.where((k == p - k)[:, None], power[k], power[k] + power[p - k]))

    return folded(embed) * folded(unembed.T)


def plant_residual(model, task, noise: float = 0.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Give residual dimension d the waves k1(d) and k2(d) != k1(d) in both W_E and W_U (plus a constant, which must
    not count); dimension 0 is constant over the numbers. Returns the planted dominant frequency and share."""
    p, d_model = task.modulus, model.cfg.d_model
    g = torch.Generator().manual_seed(seed)
    n = (p - 1) // 2  # frequencies with a conjugate pair (the Nyquist frequency of an even p is left out)
    d = torch.arange(d_model)
    k1, k2 = d % n + 1, (d + 1 + d % 3) % n + 1
    k2 = torch.where(k2 == k1, k1 % n + 1, k2)
    amp = 0.5 + torch.rand(4, d_model, generator=g, dtype=torch.float64)  # A, B (embed) and C, D (unembed)
    phase = 2 * math.pi * torch.rand(4, d_model, generator=g, dtype=torch.float64)
    x = torch.arange(p, dtype=torch.float64)[:, None]
    embed = amp[0] * wave(1, p, x * k1, phase[0]) + amp[1] * wave(1, p, x * k2, phase[1]) + 0.3
    unembed = amp[2] * wave(1, p, x * k1, phase[2]) + amp[3] * wave(1, p, x * k2, phase[3]) - 0.2
    embed = embed + noise * torch.randn(embed.shape, generator=g, dtype=torch.float64)
    unembed = unembed + noise * torch.randn(unembed.shape, generator=g, dtype=torch.float64)
    embed[:, 0] = 0.7
    with torch.no_grad():
        model.W_E[:p] = embed.to(model.W_E.dtype)
        model.W_U[:, :p] = unembed.T.to(model.W_U.dtype)
    # A pure wave of amplitude a has the same folded magnitude a * sqrt(p / 2) at every k below p/2.
    first, second = amp[0] * amp[2], amp[1] * amp[3]
    dominant = torch.where(first >= second, k1, k2)
    share = torch.maximum(first, second) / (first + second)
    dominant[0], share[0] = 0, 0.0
    return dominant, share


@pytest.mark.parametrize("p", [13, 12])
def test_residual_specialization_of_planted_frequencies(p):
    model, task = model_and_task(task={"modulus": p})
    dominant, share = plant_residual(model, task)
    result = neurons.compute(model, task)
    assert torch.equal(result.residual_dominant_frequency, dominant)
    assert torch.allclose(result.residual_dominant_share, share, atol=1e-6)
    specialized = share > 0.5
    assert result.residual_dims_specialized == int(specialized.sum()) > 0
    assert result.residual_mean_dominant_share == pytest.approx(float(share.mean()), abs=1e-6)
    # Over all dimensions with frequency content, specialized or not (dimension 0 has none).
    assert result.residual_distinct_dominant_frequencies == len(set(dominant[1:].tolist()))
    row = result.to_dict()
    json.dumps(row)
    assert row["residual_dominant_frequency"] == dominant.tolist()
    assert row["residual_dims_specialized"] == result.residual_dims_specialized
    assert row["residual_mean_dominant_share"] == result.residual_mean_dominant_share
    assert row["residual_distinct_dominant_frequencies"] == result.residual_distinct_dominant_frequencies


@pytest.mark.parametrize("p", [13, 12])
def test_residual_specialization_matches_numpy_fft(p):
    model, task = model_and_task(task={"modulus": p})
    plant_residual(model, task, noise=0.4, seed=p)
    embed, unembed = model.W_E[:p].detach().double().numpy(), model.W_U[:, :p].detach().double().numpy()
    products = folded_fft_products(embed, unembed)
    # Dimension 0 is constant over the numbers in W_E: no frequency content, share 0.
    expected_share = np.concatenate([[0.0], products[:, 1:].max(0) / products[:, 1:].sum(0)])
    frequency, share = neurons.residual_specialization(model, task)
    np.testing.assert_array_equal(frequency[1:].numpy(), products[:, 1:].argmax(0) + 1)
    assert frequency[0] == 0
    np.testing.assert_allclose(share.numpy(), expected_share, rtol=1e-9, atol=1e-12)
    if p % 2:  # odd p: no folding needed, the plain |FFT| over k = 1..(p-1)/2 gives the same shares
        k = slice(1, p // 2 + 1)
        plain = np.abs(np.fft.fft(embed, axis=0))[k] * np.abs(np.fft.fft(unembed.T, axis=0))[k]
        np.testing.assert_allclose(share[1:].numpy(), (plain.max(0) / plain.sum(0))[1:], rtol=1e-9)
    # Summed over dimensions they are the existing weights-only spectrum (basis norms are folded |FFT| / sqrt(p)).
    torch.testing.assert_close(neurons.embed_unembed_spectrum(model, task), torch.from_numpy(products.sum(1)) / p)


def test_compute_summary_tables_and_figures():
    model, task = model_and_task()
    result = neurons.compute(model, task)
    d_mlp, n_freq = model.cfg.d_mlp, task.modulus // 2
    summary = result.to_dict()
    json.dumps(summary)
    assert len(summary["cluster_sizes"]) == n_freq and len(summary["embed_unembed_product"]) == n_freq
    assert sum(summary["cluster_sizes"]) == summary["n_clustered"]
    assert sum(summary["dominant_counts"]) == d_mlp - summary["n_dead"]
    table = result.tables()["neurons"]
    assert [row["neuron"] for row in table] == list(range(d_mlp))
    live = ~result.dead
    assert torch.equal(result.max_fve[live], result.fve[:, live].max(0).values)
    assert (result.dominant_frequency[result.dead] == 0).all()
    assert result.clusters() == {} or all(result.max_fve[n] >= 0.85 for ns in result.clusters().values() for n in ns)

    rows = [{**summary, "step": 0}, {**summary, "step": 10}]
    metrics = [{"step": 0, "test_acc": 0.1}, {"step": 10, "test_acc": 0.2}]
    assert set(viz.figures(rows, metrics)) == {"neuron_frequencies", "neuron_specialization"}
    assert viz.figures([], metrics) == {}


def test_result_round_trips_through_its_row_and_arrays():
    model, task = model_and_task()
    result = neurons.compute(model, task)
    assert set(result.arrays()) == {"fve", "dominant_frequency", "max_fve", "dead"}
    row = json.loads(json.dumps(result.to_dict()))
    again = neurons.NeuronsResult.from_dict(row, result.arrays())
    assert_same_result(again, result)
    assert again.to_frame().loc[0, "n_dead"] == row["n_dead"]
    with pytest.raises(ValueError, match="fve, dominant_frequency, max_fve, dead live outside the JSON row"):
        neurons.NeuronsResult.from_dict(row)


def test_clusters_group_neurons_by_frequency():
    fve = torch.zeros(4, 5, dtype=torch.float64)
    fve[1, 0], fve[1, 1], fve[3, 2], fve[0, 3] = 0.9, 0.86, 0.95, 0.6
    result = neurons.NeuronsResult(
        layer=0,
        cluster_threshold=0.85,
        fve=fve,
        dominant_frequency=torch.tensor([2, 2, 4, 1, 0]),
        max_fve=fve.max(0).values,
        dead=torch.tensor([False, False, False, False, True]),
        embed_unembed_product=torch.zeros(4),
        residual_dominant_frequency=torch.tensor([3, 3, 0, 4]),
        residual_dominant_share=torch.tensor([0.9, 0.6, 0.0, 0.4], dtype=torch.float64),
    )
    assert result.clusters() == {2: [0, 1], 4: [2]}
    assert result.cluster_sizes.tolist() == [0, 2, 0, 1]
    summary = result.summary()
    assert summary["n_cluster_frequencies"] == 2 and summary["n_above_half"] == 4 and summary["n_dead"] == 1
    assert summary["fraction_clustered"] == pytest.approx(3 / 4)
    assert summary["mean_max_fve"] == pytest.approx((0.9 + 0.86 + 0.95 + 0.6) / 4)
    assert summary["residual_mean_dominant_share"] == pytest.approx((0.9 + 0.6 + 0.0 + 0.4) / 4)
    assert summary["residual_dims_specialized"] == 2
    assert summary["residual_distinct_dominant_frequencies"] == 2  # 3 and 4: every dimension with content counts


def test_user_errors():
    model, task = model_and_task()
    with pytest.raises(UserError, match="layer"):
        neurons.compute(model, task, layer=3)
    with pytest.raises(UserError, match="cluster_threshold"):
        neurons.compute(model, task, cluster_threshold=0.3)
    division = ModularTask.from_config(tiny_config(task={"operation": "div"}).task)
    with pytest.raises(UserError, match="neurons"):
        neurons.compute(model, division)
