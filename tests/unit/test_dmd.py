import json

import numpy as np
import pytest
from scipy.linalg import block_diag
from scipy.optimize import linear_sum_assignment

from grokscope.analysis.dmd import center_snapshots, dmd_projected, dmd_rrr, fit_dmd, hankel, windowed_dmd
from grokscope.errors import UserError
from grokscope.viz.dmd import figures

# A 6-dim latent system: two damped rotations (complex-conjugate pairs) and two real modes.
TRUE_EIGENVALUES = np.array(
    [0.95 * np.exp(0.3j), 0.95 * np.exp(-0.3j), 0.9 * np.exp(1.1j), 0.9 * np.exp(-1.1j), 0.99, 0.7]
)


def rotation(radius: float, angle: float) -> np.ndarray:
    return radius * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def simulate(matrix: np.ndarray, observe: np.ndarray, state: np.ndarray, n_snapshots: int) -> np.ndarray:
    rows = []
    for _ in range(n_snapshots):
        rows.append(observe @ state)
        state = matrix @ state
    return np.array(rows)


def linear_system(n_snapshots: int = 200, n_features: int = 19, seed: int = 0) -> np.ndarray:
    """x_t = C z_t with z_{t+1} = M z_t, M real with eigenvalues TRUE_EIGENVALUES; [T, D]."""
    rng = np.random.default_rng(seed)
    matrix = block_diag(rotation(0.95, 0.3), rotation(0.9, 1.1), [[0.99]], [[0.7]])
    return simulate(matrix, rng.normal(size=(n_features, 6)), rng.normal(size=6), n_snapshots)


def eigenvalue_error(expected: np.ndarray, found: np.ndarray) -> float:
    """Largest distance after matching each expected eigenvalue to a distinct found one."""
    assert len(expected) == len(found)
    cost = np.abs(np.asarray(expected)[:, None] - np.asarray(found)[None, :])
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].max())


def rrr_by_hand(y0: np.ndarray, y1: np.ndarray, rank: int, ridge: float = 0.0) -> np.ndarray:
    """The textbook dense RRR estimator P_r A_ridge, forming the N x N matrices dmd_rrr avoids."""
    gram = y0 @ y0.T + ridge * np.eye(len(y0))
    a_full = y1 @ np.linalg.pinv(y0) if ridge == 0 else y1 @ y0.T @ np.linalg.inv(gram)
    vectors = np.linalg.eigh(a_full @ gram @ a_full.T)[1][:, ::-1][:, :rank]
    return vectors @ vectors.T @ a_full


def test_hankel_stacks_delays_feature_blocks():
    x = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])
    np.testing.assert_array_equal(hankel(x, 2), [[1, 2], [10, 20], [2, 3], [20, 30]])
    np.testing.assert_array_equal(hankel(x, 1), x.T)


@pytest.mark.parametrize("n_delays", [1, 4, 32])
def test_noise_free_linear_system_eigenvalues_are_recovered(n_delays):
    result = dmd_rrr(linear_system(), n_delays=n_delays, rank=6, center="none")
    assert eigenvalue_error(TRUE_EIGENVALUES, result.eigenvalues) < 1e-8
    assert np.all(np.diff(np.abs(result.eigenvalues)) <= 1e-12)  # sorted by modulus, descending
    np.testing.assert_allclose(result.continuous_eigenvalues, np.log(result.eigenvalues))
    assert result.reconstruction_error < 1e-10
    assert result.free_run_error < 1e-8  # modes, eigenvalues and amplitudes regenerate every snapshot
    assert result.modes.shape == (19 * n_delays, 6)
    assert result.feature_modes.shape == (19, 6)


def test_a_scalar_observable_needs_the_delays():
    scalar = linear_system()[:, :1]
    assert eigenvalue_error(TRUE_EIGENVALUES, dmd_rrr(scalar, n_delays=8, rank=6, center="none").eigenvalues) < 1e-8
    with pytest.raises(UserError, match=r"^rank:"):
        dmd_rrr(scalar, n_delays=1, rank=6, center="none")


def test_rank_above_the_data_rank_fits_the_data_rank():
    result = dmd_rrr(linear_system(), n_delays=4, rank=10, center="none")
    assert result.rank == 6
    assert eigenvalue_error(TRUE_EIGENVALUES, result.eigenvalues) < 1e-8


def test_noisy_eigenvalues_within_tolerance():
    # Gaussian observation noise, sd 0.01 (signal entries are O(1) at the start, O(0.1) at the end).
    noisy = linear_system() + 0.01 * np.random.default_rng(1).normal(size=(200, 19))
    result = dmd_rrr(noisy, n_delays=16, rank=6, center="none")
    assert eigenvalue_error(TRUE_EIGENVALUES, result.eigenvalues) < 5e-3


@pytest.mark.filterwarnings("ignore:Input data condition number")
@pytest.mark.parametrize(("noise", "n_delays", "rank"), [(0.0, 4, 6), (0.0, 8, 6), (0.01, 2, 38)])
def test_full_rank_rrr_agrees_with_pydmd_hankel_dmd(noise, n_delays, rank):
    """At the full rank of the data, RRR and exact Hankel DMD are both the least-squares operator."""
    pydmd = pytest.importorskip("pydmd")
    x = linear_system() + noise * np.random.default_rng(2).normal(size=(200, 19))
    reference = pydmd.HankelDMD(svd_rank=rank, d=n_delays, exact=True).fit(x.T)  # pydmd: snapshots as columns
    result = dmd_rrr(x, n_delays=n_delays, rank=rank, center="none")
    assert eigenvalue_error(reference.eigs, result.eigenvalues) < 1e-8


def test_reduced_operator_matches_the_dense_rank_r_estimator():
    x = linear_system(n_features=5) + 0.05 * np.random.default_rng(3).normal(size=(200, 5))
    h = hankel(x, 3)
    y0, y1 = h[:, :-1], h[:, 1:]
    for ridge in (0.0, 2.0):
        result = dmd_rrr(x, n_delays=3, rank=3, center="none", ridge=ridge)
        dense = rrr_by_hand(y0, y1, rank=3, ridge=ridge)
        assert np.linalg.matrix_rank(dense) == 3
        nonzero = np.linalg.eigvals(dense)
        nonzero = nonzero[np.argsort(-np.abs(nonzero))][:3]
        assert eigenvalue_error(nonzero, result.eigenvalues) < 1e-10
        # The fitted operator basis @ (basis.T A) has rank <= r, and basis spans the same subspace as the dense P_r.
        projector = result.basis @ result.basis.T
        np.testing.assert_allclose(projector @ dense, dense, atol=1e-10)
        for mode, value in zip(result.modes.T, result.eigenvalues, strict=True):
            np.testing.assert_allclose(dense @ mode, value * mode, atol=1e-10)  # modes are its exact eigenvectors
        residual = np.linalg.norm(dense @ y0 - y1) / np.linalg.norm(y1)
        assert result.reconstruction_error == pytest.approx(residual, rel=1e-10)


def test_rrr_keeps_the_predictive_direction_where_truncated_svd_dmd_keeps_the_energetic_one():
    """Feature 0: loud white noise (no dynamics); feature 1: a quiet decaying mode 0.99^t. Rank 1."""
    rng = np.random.default_rng(4)
    t = np.arange(300)
    x = np.stack([20 * rng.normal(size=300), 20 * 0.99**t], axis=1)
    result = dmd_rrr(x, n_delays=1, rank=1, center="none")
    assert abs(result.eigenvalues[0] - 0.99) < 0.01
    y0, y1 = x[:-1].T, x[1:].T
    u, s, vt = np.linalg.svd(y0)
    truncated = u[:, :1].T @ y1 @ vt[:1].T / s[0]  # exact/projected DMD at rank 1: the noise direction
    assert abs(truncated[0, 0]) < 0.5
    # RRR is the rank-1 least-squares minimiser, so it also predicts better than the truncated-SVD operator.
    a_svd = u[:, :1] @ truncated @ u[:, :1].T
    assert result.reconstruction_error < np.linalg.norm(a_svd @ y0 - y1) / np.linalg.norm(y1)


def test_relative_to_t0_zeroes_the_first_snapshot_and_adds_the_eigenvalue_one():
    x = linear_system()
    offset = np.random.default_rng(5).normal(size=19)
    assert not np.any(center_snapshots(x, "relative_to_t0")[0])
    # x_t - x_0 = C (z_t - z_0): the constant -z_0 is one more mode, with eigenvalue 1; any constant offset cancels.
    shifted = dmd_rrr(x + offset, n_delays=4, rank=7, center="relative_to_t0")
    plain = dmd_rrr(x, n_delays=4, rank=7, center="relative_to_t0")
    expected = np.append(TRUE_EIGENVALUES, 1.0)
    assert eigenvalue_error(expected, shifted.eigenvalues) < 1e-8
    assert eigenvalue_error(plain.eigenvalues, shifted.eigenvalues) < 1e-10


def test_uncentred_constant_offset_is_an_eigenvalue_one():
    offset = np.random.default_rng(5).normal(size=19)
    result = dmd_rrr(linear_system() + offset, n_delays=4, rank=7, center="none")
    assert eigenvalue_error(np.append(TRUE_EIGENVALUES, 1.0), result.eigenvalues) < 1e-8


def test_per_snapshot_mean_removes_any_per_snapshot_constant():
    """Adding c_t to every feature of snapshot t (arbitrary c_t, not a linear dynamics) changes nothing after centring:
    the centred snapshots are (I - 11^T/D) x_t, and (I - 11^T/D) C z_t still has the latent eigenvalues."""
    x = linear_system()
    jitter = x + np.random.default_rng(6).normal(size=(200, 1))
    np.testing.assert_allclose(center_snapshots(jitter, "per_snapshot_mean"), center_snapshots(x, "per_snapshot_mean"))
    np.testing.assert_allclose(center_snapshots(jitter, "per_snapshot_mean").mean(axis=1), 0, atol=1e-12)
    result = dmd_rrr(jitter, n_delays=4, rank=6, center="per_snapshot_mean")
    assert eigenvalue_error(TRUE_EIGENVALUES, result.eigenvalues) < 1e-8
    assert dmd_rrr(jitter, n_delays=4, rank=6, center="none").reconstruction_error > 0.1  # the jitter is not dynamics


@pytest.mark.parametrize("method", ["rrr", "projected"])
def test_windowed_spectral_radius_crosses_one_when_the_dynamics_switch(method):
    """A damped rotation (|λ| = 0.95) for 100 snapshots, then a growing one (|λ| = 1.05) from where it left off."""
    rng = np.random.default_rng(7)
    observe = rng.normal(size=(19, 2))
    damped = simulate(rotation(0.95, 0.4), np.eye(2), np.array([1.0, 0.0]), 100)
    growing = simulate(rotation(1.05, 0.4), np.eye(2), rotation(0.95, 0.4) @ damped[-1], 100)
    x = np.concatenate([damped, growing]) @ observe.T
    steps = list(range(0, 2000, 10))
    result = windowed_dmd(x, steps, window=40, stride=5, method=method, n_delays=2, rank=2, center="none")
    assert result.method == method and result.settings["center"] == "none"
    before = np.array(result.step) <= steps[99]  # windows that end before the switch
    after = np.array(result.start_step) >= steps[100]  # windows that start after it
    np.testing.assert_allclose(result.spectral_radius[before], 0.95, atol=1e-8)
    np.testing.assert_allclose(result.spectral_radius[after], 1.05, atol=1e-8)
    assert result.spectral_radius[-1] > 1 > result.spectral_radius[0]
    straddling = ~before & ~after
    assert result.score[straddling].min() > 1e3 * max(result.score[before].max(), result.score[after].max())
    assert result.step[0] == steps[39] and result.start_step[1] == steps[5]
    payload = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert len(payload["moduli"]) == len(result.step) and len(payload["moduli"][0]) == 2


def test_to_dict_is_json_ready_and_figures_build():
    x = linear_system(n_snapshots=120)
    result = dmd_rrr(x, n_delays=4, rank=8, center="none")  # fits rank 6: the padding below becomes None
    payload = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    np.testing.assert_allclose(
        np.array(payload["eigenvalues"]["re"]) + 1j * np.array(payload["eigenvalues"]["im"]), result.eigenvalues
    )
    assert np.array(payload["feature_modes"]["re"]).shape == (19, 6)
    windows = windowed_dmd(x, range(0, 1200, 10), window=60, stride=20, n_delays=4, rank=8, center="none")
    windows_payload = json.loads(json.dumps(windows.to_dict(), allow_nan=False))
    assert windows_payload["moduli"][0][-1] is None
    metrics = [{"step": s, "test_acc": s / 1200} for s in range(0, 1200, 50)]
    built = figures(payload, windows_payload, metrics)
    assert set(built) == {"dmd_spectrum", "dmd_windows"}
    assert built["dmd_spectrum"].layout.yaxis.scaleanchor == "x"
    assert set(figures(payload, None, [])) == {"dmd_spectrum"}


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"snapshots": np.ones((40, 3)), "n_delays": 32, "rank": 10}, "snapshots"),
        ({"snapshots": np.ones((100, 3)), "n_delays": 2, "rank": 7}, "rank"),
        ({"snapshots": np.ones((100, 3)), "n_delays": 2, "rank": 0}, "rank"),
        ({"snapshots": np.ones((100, 3)), "n_delays": 0, "rank": 2}, "n_delays"),
        ({"snapshots": np.full((100, 3), np.nan), "n_delays": 2, "rank": 2}, "snapshots"),
        ({"snapshots": np.ones((100, 3)), "n_delays": 2, "rank": 2, "center": "median"}, "center"),
        ({"snapshots": np.ones((100, 3)), "n_delays": 2, "rank": 2}, "snapshots"),  # all zero once centred
    ],
)
def test_bad_input_raises_one_line_user_error(kwargs, parameter):
    with pytest.raises(UserError) as error:
        dmd_rrr(**kwargs)
    message = str(error.value)
    assert message.startswith(f"{parameter}:") and "\n" not in message


def test_too_few_snapshots_says_how_many_are_needed():
    with pytest.raises(UserError, match=r"need T >= n_delays \+ rank = 42 .* got T=40"):
        dmd_rrr(np.ones((40, 3)), n_delays=32, rank=10)
    with pytest.raises(UserError, match=r"^window:"):
        windowed_dmd(np.random.default_rng(0).normal(size=(100, 3)), range(100), window=20, stride=5)


def projected_by_hand(y0: np.ndarray, y1: np.ndarray, rank: int) -> np.ndarray:
    """The dense projected-DMD operator: least squares from the inputs to the outputs, both projected on the top-r
    POD modes of the inputs, A = P Y1 pinv(P Y0) P with P = U_r U_r^T (Schmid 2010), forming the N x N matrices."""
    u = np.linalg.svd(y0)[0][:, :rank]
    projector = u @ u.T
    return projector @ y1 @ np.linalg.pinv(projector @ y0) @ projector


@pytest.mark.parametrize("n_delays", [1, 4, 32])
def test_projected_dmd_recovers_a_noise_free_linear_system(n_delays):
    result = dmd_projected(linear_system(), n_delays=n_delays, rank=6, center="none")
    assert result.method == "projected" and result.rank == 6
    assert eigenvalue_error(TRUE_EIGENVALUES, result.eigenvalues) < 1e-8
    assert result.reconstruction_error < 1e-8 and result.free_run_error < 1e-6


def test_time_mean_centering_is_the_projected_default_and_adds_the_eigenvalue_one():
    """x_t - mean_t x_t = C (z_t - z̄) follows z_{t+1} - z̄ = M (z_t - z̄) + (M - I) z̄: an affine map, whose constant
    term is one more mode with eigenvalue 1. Any constant offset of the data cancels."""
    x = linear_system()
    offset = np.random.default_rng(8).normal(size=19)
    np.testing.assert_allclose(center_snapshots(x + offset, "time_mean").mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(center_snapshots(x + offset, "time_mean"), center_snapshots(x, "time_mean"), atol=1e-12)
    result = dmd_projected(x + offset, n_delays=4, rank=7)
    assert result.center == "time_mean"
    assert eigenvalue_error(np.append(TRUE_EIGENVALUES, 1.0), result.eigenvalues) < 1e-8


def test_projected_operator_matches_the_dense_estimator_by_hand():
    x = linear_system(n_features=5) + 0.05 * np.random.default_rng(3).normal(size=(200, 5))
    h = hankel(x, 3)
    y0, y1 = h[:, :-1], h[:, 1:]
    result = dmd_projected(x, n_delays=3, rank=3, center="none")
    dense = projected_by_hand(y0, y1, rank=3)
    assert np.linalg.matrix_rank(dense) == 3
    nonzero = np.linalg.eigvals(dense)
    nonzero = nonzero[np.argsort(-np.abs(nonzero))][:3]
    assert eigenvalue_error(nonzero, result.eigenvalues) < 1e-10
    for mode, value in zip(result.modes.T, result.eigenvalues, strict=True):
        np.testing.assert_allclose(dense @ mode, value * mode, atol=1e-10)  # projected modes: its eigenvectors
    residual = np.linalg.norm(dense @ y0 - y1) / np.linalg.norm(y1)
    assert result.reconstruction_error == pytest.approx(residual, rel=1e-10)
    np.testing.assert_allclose(result.fitted_singular_values, np.linalg.svd(y0, compute_uv=False)[:3], rtol=1e-12)


@pytest.mark.filterwarnings("ignore:Input data condition number")
@pytest.mark.parametrize(("n_delays", "rank"), [(3, 3), (8, 5), (2, 12)])
def test_projected_agrees_with_pydmd_at_reduced_rank_where_rrr_does_not(n_delays, rank):
    """Noisy data, truncated below the data's rank: pydmd's projected Hankel DMD is the same estimator; RRR is not."""
    pydmd = pytest.importorskip("pydmd")
    x = linear_system() + 0.05 * np.random.default_rng(2).normal(size=(200, 19))
    reference = pydmd.HankelDMD(svd_rank=rank, d=n_delays, exact=False).fit(x.T)
    result = dmd_projected(x, n_delays=n_delays, rank=rank, center="none")
    assert eigenvalue_error(reference.eigs, result.eigenvalues) < 1e-10
    rrr = dmd_rrr(x, n_delays=n_delays, rank=rank, center="none")
    assert eigenvalue_error(rrr.eigenvalues, result.eigenvalues) > 1e-3
    assert rrr.reconstruction_error < result.reconstruction_error  # RRR is the rank-r least-squares minimiser


def test_projected_and_rrr_differ_where_the_energetic_direction_is_not_the_predictable_one():
    """Feature 0: loud white noise (no dynamics); feature 1: a quiet decaying mode 0.99^t. At rank 1 projected DMD
    keeps the noise (|λ| near 0), RRR the decay; at the full rank of noise-free data the two are the same fit."""
    rng = np.random.default_rng(4)
    t = np.arange(300)
    x = np.stack([20 * rng.normal(size=300), 20 * 0.99**t], axis=1)
    projected = dmd_projected(x, n_delays=1, rank=1, center="none")
    rrr = dmd_rrr(x, n_delays=1, rank=1, center="none")
    assert abs(projected.eigenvalues[0]) < 0.5 and abs(rrr.eigenvalues[0] - 0.99) < 0.01
    y0, y1 = x[:-1].T, x[1:].T
    u, s, vt = np.linalg.svd(y0)
    np.testing.assert_allclose(projected.operator, u[:, :1].T @ y1 @ vt[:1].T / s[0], rtol=1e-12)
    full_projected = dmd_projected(linear_system(), n_delays=4, rank=6, center="none")
    full_rrr = dmd_rrr(linear_system(), n_delays=4, rank=6, center="none")
    assert eigenvalue_error(full_rrr.eigenvalues, full_projected.eigenvalues) < 1e-8


def test_fit_dmd_by_method_name():
    x = linear_system()
    assert fit_dmd(x, "projected", n_delays=4, rank=7, center=None).center == "time_mean"  # None: the default
    assert fit_dmd(x, "rrr", n_delays=4, rank=7, center=None).center == "per_snapshot_mean"
    assert fit_dmd(x, "projected", n_delays=4, rank=6, ridge=0.0).method == "projected"
    with pytest.raises(UserError, match=r"^ridge: only the rrr method"):
        fit_dmd(x, "projected", n_delays=4, rank=6, ridge=1.0)
    with pytest.raises(UserError, match=r"^method: must be one of rrr, projected, got 'exact'"):
        fit_dmd(x, "exact", n_delays=4, rank=6)
    payload = dmd_projected(x, n_delays=4, rank=6).to_dict()
    assert payload["method"] == "projected"
    assert "POD-projected" in figures(payload, None, [])["dmd_spectrum"].layout.title.text
