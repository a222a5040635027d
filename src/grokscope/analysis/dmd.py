"""Dynamic mode decomposition of recorded fingerprints over a Hankel (time-delay) embedding, by two estimators.

A fingerprint sequence ``X`` (``T`` snapshots of ``D`` features, ascending training steps) is centred, stacked into
``n_delays``-deep delay vectors, and a linear map ``A`` with ``h_{t+1} ≈ A h_t`` is fitted:

* ``rrr`` (:func:`dmd_rrr`): the rank-constrained least-squares (reduced-rank regression) estimator of Izenman
  (1975), "Reduced-rank regression for the multivariate linear model", J. Multivariate Anal. 5; in the Koopman/DMD
  setting the RRR estimator of Kostic et al. (2022), "Learning dynamical systems via Koopman operator regression in
  reproducing kernel Hilbert spaces", NeurIPS.
* ``projected`` (:func:`dmd_projected`): plain DMD projected on the leading POD modes of the inputs (Schmid 2010;
  Tu et al. 2014), with time-mean centering by default: the pipeline the fingerprint study published (its
  "dmd_rrr" is this estimator, not reduced-rank regression), so its spectra can be reproduced.

:func:`windowed_dmd` repeats a fit in sliding windows as an early-warning score for generalization.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Literal, get_args

import numpy as np
from jaxtyping import Complex, Float
from numpy.lib.stride_tricks import sliding_window_view

from grokscope.analysis.common import jsonable
from grokscope.errors import UserError

NAME = "dmd"
Centering = Literal["per_snapshot_mean", "time_mean", "relative_to_t0", "none"]
Method = Literal["rrr", "projected"]
METHODS: tuple[str, ...] = get_args(Method)


def complex_dict(values: np.ndarray) -> dict[str, Any]:
    """Complex array -> ``{"re": ..., "im": ...}``, two nested lists of the array's shape (non-finite -> None)."""
    return {"re": jsonable(np.real(values)), "im": jsonable(np.imag(values))}


def center_snapshots(snapshots: Float[np.ndarray, "T D"], center: Centering) -> Float[np.ndarray, "T D"]:
    """Centre the snapshots before the embedding.

    ``per_snapshot_mean``: ``x_t - mean_d(x_t[d])``, each snapshot minus its own mean over the ``D`` features (removes
    any per-snapshot constant ``c_t`` added to every feature, i.e. projects out the all-ones direction).
    ``time_mean``: ``x_t - mean_t(x_t)``, each feature minus its mean over the ``T`` snapshots (the usual centering of
    POD/DMD; a linear system's trajectory minus its mean follows an affine map, which adds an eigenvalue 1 for the
    constant term unless the data already had one).
    ``relative_to_t0``: ``x_t - x_0``, so the first snapshot is zero (removes any constant vector offset; the
    dynamics gain an eigenvalue 1 for the constant ``-x_0`` unless the data already had one).
    ``none``: the snapshots as given.
    """
    if center == "per_snapshot_mean":
        return snapshots - snapshots.mean(axis=1, keepdims=True)
    if center == "time_mean":
        return snapshots - snapshots.mean(axis=0, keepdims=True)
    if center == "relative_to_t0":
        return snapshots - snapshots[:1]
    if center == "none":
        return snapshots
    raise UserError(f"center: must be one of {', '.join(get_args(Centering))}, got {center!r}")


def hankel(snapshots: Float[np.ndarray, "T D"], n_delays: int) -> Float[np.ndarray, "N M"]:
    """Delay embedding: column ``t`` stacks ``x_t, x_{t+1}, ..., x_{t+n_delays-1}`` (``N = D * n_delays`` rows,
    ``M = T - n_delays + 1`` columns)."""
    windows = sliding_window_view(snapshots, n_delays, axis=0)  # [M, D, n_delays]: windows[t, d, j] = x_{t+j}[d]
    return windows.transpose(0, 2, 1).reshape(windows.shape[0], -1).T


@dataclass
class DMDResult:
    """A rank-``r`` fit of ``h_{t+1} ≈ A h_t`` on the delay-embedded, centred snapshots (``method``: ``rrr`` or
    ``projected``).

    Both estimators have the form ``A = basis @ operator @ basis.T`` and ``A`` is never formed: its nonzero eigenvalues
    are those of the ``r x r`` ``operator``, and ``modes = basis @ w`` (``w`` the eigenvectors of ``operator``) are
    its eigenvectors, because ``A`` maps everything into the span of ``basis``. For ``rrr``, ``basis`` spans the
    top-``r`` directions of the fitted values and ``operator = basis.T @ A_ridge @ basis``; for ``projected``,
    ``basis`` holds the top-``r`` POD modes of the inputs ``Y0`` and ``operator = basis.T @ Y1 @ pinv_r(Y0) @ basis``.
    """

    eigenvalues: Complex[np.ndarray, " r"]  # discrete time (per snapshot), sorted by modulus, descending
    continuous_eigenvalues: Complex[np.ndarray, " r"]  # log(eigenvalues) / dt
    modes: Complex[np.ndarray, "N r"]  # eigenvectors in the delay space; the first D rows are the feature-space modes
    amplitudes: Complex[np.ndarray, " r"]  # least-squares fit of modes @ amplitudes to the first Hankel column
    operator: Float[np.ndarray, "r r"]  # the r x r operator of A in ``basis`` (see above)
    basis: Float[np.ndarray, "N r"]  # U_r: top-r left singular vectors of the fitted values (rrr) or of Y0 (projected)
    # Their singular values: of the fitted values (of the ridge-augmented fit when ridge > 0) for rrr, of Y0 (the POD
    # energies) for projected.
    fitted_singular_values: Float[np.ndarray, " r"]
    reconstruction_error: float  # ||A Y0 - Y1||_F / ||Y1||_F, one-step prediction over all snapshot pairs
    free_run_error: float  # ||X_hat - X||_F / ||X||_F, X_hat_t = (modes @ diag(eigenvalues^t) @ amplitudes)[:D]
    rank: int  # rank fitted: the one asked for, or less when the centred data have lower numerical rank
    n_delays: int
    n_features: int
    n_snapshots: int
    center: str
    dt: float
    ridge: float
    method: str = "rrr"

    @property
    def feature_modes(self) -> Complex[np.ndarray, "D r"]:
        """The modes restricted to the first delay block: their shape in the original feature space."""
        return self.modes[: self.n_features]

    @property
    def spectral_radius(self) -> float:
        return float(np.abs(self.eigenvalues[0]))

    def to_dict(self) -> dict[str, Any]:
        """Small and JSON-ready; complex arrays as ``{"re": [...], "im": [...]}`` (non-finite values as None).

        Leaves out the delay-space ``modes`` and ``basis`` (``D * n_delays x r`` each) and keeps ``feature_modes``.
        """
        return {
            "eigenvalues": complex_dict(self.eigenvalues),
            "continuous_eigenvalues": complex_dict(self.continuous_eigenvalues),
            "moduli": jsonable(np.abs(self.eigenvalues)),
            "spectral_radius": self.spectral_radius,
            "amplitudes": complex_dict(self.amplitudes),
            "feature_modes": complex_dict(self.feature_modes),
            "operator": jsonable(self.operator),
            "fitted_singular_values": jsonable(self.fitted_singular_values),
            "reconstruction_error": jsonable(self.reconstruction_error),
            "free_run_error": jsonable(self.free_run_error),
            "rank": self.rank,
            "n_delays": self.n_delays,
            "n_features": self.n_features,
            "n_snapshots": self.n_snapshots,
            "center": self.center,
            "dt": self.dt,
            "ridge": self.ridge,
            "method": self.method,
        }


def _shifted_svd(
    x: np.ndarray, n_delays: int, center: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The centred snapshots, their delay embedding ``H`` with ``Y1`` (``H`` shifted by one), and the thin SVD
    ``U, s, W^T`` of ``Y0`` (``H`` but its last column) cut to its numerical rank (as a pseudo-inverse would be)."""
    centred = center_snapshots(x, center)
    h = hankel(centred, n_delays)
    y0, y1 = h[:, :-1], h[:, 1:]
    u, s, wt = np.linalg.svd(y0, full_matrices=False)
    keep = s > s[0] * max(y0.shape) * np.finfo(np.float64).eps
    if not keep.any():
        raise UserError(f"snapshots: all zero after centering with center={center!r}; nothing to fit")
    return centred, h, y1, u[:, keep], s[keep], wt[keep]


def _check(snapshots: Any, n_delays: int, rank: int, dt: float, ridge: float) -> Float[np.ndarray, "T D"]:
    x = np.asarray(snapshots, dtype=np.float64)
    if x.ndim != 2 or 0 in x.shape:
        raise UserError(f"snapshots: must be a non-empty T x D array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise UserError(f"snapshots: {int((~np.isfinite(x)).sum())} values are NaN or infinite")
    if n_delays < 1:
        raise UserError(f"n_delays: must be >= 1, got {n_delays}")
    if rank < 1:
        raise UserError(f"rank: must be >= 1, got {rank}")
    if not (dt > 0 and np.isfinite(dt)):
        raise UserError(f"dt: must be a positive number, got {dt}")
    if not (ridge >= 0 and np.isfinite(ridge)):
        raise UserError(f"ridge: must be a number >= 0, got {ridge}")
    n_snapshots, n_features = x.shape
    if rank > n_features * n_delays:
        raise UserError(f"rank: must be <= D * n_delays = {n_features * n_delays} (D={n_features}), got {rank}")
    # Y0 has m = T - n_delays columns, and a rank-r fit needs m >= r.
    if n_snapshots < n_delays + rank:
        raise UserError(
            f"snapshots: need T >= n_delays + rank = {n_delays + rank} (n_delays={n_delays}, rank={rank}), "
            f"got T={n_snapshots}"
        )
    return x


def _relative_error(estimate: np.ndarray, target: np.ndarray) -> float:
    """``||estimate - target||_F / ||target||_F``; inf when the estimate overflowed or the target is zero and it
    is not."""
    error, size = np.linalg.norm(estimate - target), np.linalg.norm(target)
    if not np.isfinite(error):
        return float("inf")
    return float(error / size) if size > 0 else (0.0 if error == 0 else float("inf"))


def dmd_rrr(
    snapshots: Float[np.ndarray, "T D"],
    n_delays: int = 32,
    rank: int = 10,
    center: Centering = "per_snapshot_mean",
    dt: float = 1.0,
    ridge: float = 0.0,
) -> DMDResult:
    """Hankel DMD by reduced-rank regression (Izenman 1975; Kostic et al. 2022).

    Centring (``center``, see :func:`center_snapshots`): ``per_snapshot_mean`` subtracts from each snapshot its own
    mean over the ``D`` features; ``time_mean`` subtracts each feature's mean over time; ``relative_to_t0`` subtracts
    the first snapshot from every snapshot; ``none`` leaves them. With ``H`` the delay embedding of the centred
    snapshots (column ``t`` stacks ``x_t, ..., x_{t+n_delays-1}``),
    ``Y0 = H[:, :m]`` and ``Y1 = H[:, 1:]`` (``m = T - n_delays``), the estimate is::

        A = argmin_{rank(A) <= r} ||Y1 - A Y0||_F^2 + ridge * ||A||_F^2  =  P_r A_ridge
        A_ridge = Y1 Y0^T (Y0 Y0^T + ridge I)^-1        (ridge = 0: A_ols = Y1 Y0^+, minimum norm)

    where ``P_r = U_r U_r^T`` projects onto the top-``r`` left singular vectors of the fitted values ``A_ols Y0``
    (for ``ridge > 0``, the top-``r`` eigenvectors of ``Y1 Y0^T (Y0 Y0^T + ridge I)^-1 Y0 Y1^T``; this is the exact
    minimiser because the ridge problem is plain RRR of ``[Y1, 0]`` on ``[Y0, sqrt(ridge) I]``). This differs from
    exact/projected DMD (:func:`dmd_projected`), which truncates the SVD of the inputs ``Y0``: RRR keeps the ``r``
    directions that best predict the next step, not those where ``Y0`` has the most energy. The two coincide when
    ``r`` is the full rank of noise-free data.

    Everything is computed from the thin SVD of ``Y0`` (``N x k``, ``k`` its numerical rank) and ``r x r`` matrices;
    no ``N x N`` matrix is formed. If the centred data have numerical rank below ``rank``, the fit uses that lower rank
    (``result.rank``). ``dt`` is the spacing between snapshots (e.g. in training steps), the unit of the continuous
    eigenvalues.
    """
    centred, h, y1, v, s, wt = _shifted_svd(_check(snapshots, n_delays, rank, dt, ridge), n_delays, center)
    w = wt.T
    # With Y0 = V diag(s) W^T: A_ridge = Y1 W diag(s / (s^2 + ridge)) V^T, and the fitted values of the augmented
    # problem have Gram matrix Y1 W diag(gain) W^T Y1^T, so U_r are the left singular vectors of Y1 W diag(sqrt(gain)).
    y1w = y1 @ w
    gain = s**2 / (s**2 + ridge)
    u, fitted_s, _ = np.linalg.svd(y1w * np.sqrt(gain), full_matrices=False)
    r = min(rank, len(s))
    u_r, fitted_s = u[:, :r], fitted_s[:r]

    head = u_r.T @ y1w  # [r, k] = U_r^T Y1 W
    operator = (head * (s / (s**2 + ridge))) @ (v.T @ u_r)
    prediction = u_r @ ((head * gain) @ w.T)  # A Y0 = U_r U_r^T A_ridge Y0
    return _decompose(operator, u_r, fitted_s, prediction, h, centred, n_delays, center, dt, ridge, "rrr")


def dmd_projected(
    snapshots: Float[np.ndarray, "T D"],
    n_delays: int = 32,
    rank: int = 10,
    center: Centering = "time_mean",
    dt: float = 1.0,
) -> DMDResult:
    """Hankel DMD projected on the leading POD modes of the inputs: exact/projected DMD (Schmid 2010; Tu et al. 2014).

    Schmid, P. J. (2010), "Dynamic mode decomposition of numerical and experimental data", J. Fluid Mech. 656, §2;
    Tu, J. H. et al. (2014), "On dynamic mode decomposition: theory and applications", J. Comput. Dyn. 1, Algorithm 2.
    With ``H`` the delay embedding of the centred snapshots (default ``time_mean``: each feature minus its mean over
    time, as the fingerprint study's pipeline centres), ``Y0 = H[:, :m]``, ``Y1 = H[:, 1:]`` and the truncated SVD
    ``Y0 ≈ U_r S_r W_r^T`` (the top-``r`` POD modes ``U_r``)::

        A_tilde = U_r^T Y1 W_r S_r^-1          (r x r: the least-squares map Y1 Y0^+ projected on span U_r)
        A_tilde w = λ w,    projected modes U_r w  (Schmid 2010)

    Tu et al.'s exact modes ``Y1 W_r S_r^-1 w / λ`` have the same eigenvalues; ``modes`` holds the projected ones,
    which are eigenvectors of ``A = U_r A_tilde U_r^T``. Unlike :func:`dmd_rrr`, the ``r`` directions kept are those
    where the *inputs* have the most energy, not those that best predict the next step: the two estimators agree for
    noise-free data of rank ``r`` and differ when the energetic directions are not the predictable ones. If the
    centred data have numerical rank below ``rank``, the fit uses that lower rank (``result.rank``).
    """
    centred, h, y1, u, s, wt = _shifted_svd(_check(snapshots, n_delays, rank, dt, 0.0), n_delays, center)
    r = min(rank, len(s))
    u_r, s_r, w_r = u[:, :r], s[:r], wt[:r].T
    operator = (u_r.T @ y1 @ w_r) / s_r  # U_r^T Y1 W_r S_r^-1 (columns divided by s_r)
    prediction = u_r @ ((operator * s_r) @ w_r.T)  # A Y0 = U_r A_tilde U_r^T U_r S_r W_r^T
    return _decompose(operator, u_r, s_r, prediction, h, centred, n_delays, center, dt, 0.0, "projected")


def _decompose(
    operator: np.ndarray,
    basis: np.ndarray,
    singular_values: np.ndarray,
    prediction: np.ndarray,
    h: np.ndarray,
    centred: np.ndarray,
    n_delays: int,
    center: str,
    dt: float,
    ridge: float,
    method: str,
) -> DMDResult:
    """Eigenvalues, modes, amplitudes and errors of ``A = basis @ operator @ basis.T`` fitted to the Hankel ``h``."""
    n_snapshots, n_features = centred.shape
    eigenvalues, vectors = np.linalg.eig(operator)
    eigenvalues, vectors = eigenvalues.astype(np.complex128), vectors.astype(np.complex128)
    order = np.lexsort((-eigenvalues.imag, -np.abs(eigenvalues)))
    eigenvalues, vectors = eigenvalues[order], vectors[:, order]
    modes = basis @ vectors
    amplitudes = np.linalg.lstsq(modes, h[:, 0], rcond=None)[0]
    with np.errstate(all="ignore"):  # unstable modes may overflow over a long free run (error inf); log(0) = -inf
        powers = eigenvalues[None, :] ** np.arange(n_snapshots)[:, None]  # [T, r]
        free_run = (powers * amplitudes) @ modes[:n_features].T
        free_run_error = _relative_error(free_run, centred)
        continuous = np.log(eigenvalues) / dt
    return DMDResult(
        eigenvalues=eigenvalues,
        continuous_eigenvalues=continuous,
        modes=modes,
        amplitudes=amplitudes,
        operator=operator,
        basis=basis,
        fitted_singular_values=singular_values,
        reconstruction_error=_relative_error(prediction, h[:, 1:]),
        free_run_error=free_run_error,
        rank=len(eigenvalues),
        n_delays=n_delays,
        n_features=n_features,
        n_snapshots=n_snapshots,
        center=center,
        dt=float(dt),
        ridge=float(ridge),
        method=method,
    )


FITS: dict[str, Callable[..., DMDResult]] = {"rrr": dmd_rrr, "projected": dmd_projected}
"""The estimators by ``method`` name."""


def fit_dmd(snapshots: Float[np.ndarray, "T D"], method: Method = "rrr", **settings: Any) -> DMDResult:
    """:func:`dmd_rrr` (``method="rrr"``) or :func:`dmd_projected` (``"projected"``) with ``settings`` (``n_delays``,
    ``rank``, ``center``, ``dt``; ``ridge`` for ``rrr`` only). ``center=None`` means the method's default."""
    return method_fit(method)(snapshots, **method_settings(method, settings))


def method_settings(method: str, settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` as the method's estimator takes them: ``center=None`` dropped (the method's default), and
    ``ridge`` dropped for ``projected`` when 0 (any other ridge is refused: projected DMD has none)."""
    out = {k: v for k, v in settings.items() if not (k == "center" and v is None)}
    if method != "rrr" and out.pop("ridge", 0.0):
        raise UserError(f"ridge: only the rrr method takes a ridge, got ridge={settings['ridge']} with {method}")
    return out


def method_fit(method: str) -> Callable[..., DMDResult]:
    if method not in FITS:
        raise UserError(f"method: must be one of {', '.join(METHODS)}, got {method!r}")
    return FITS[method]


def method_defaults(method: str) -> dict[str, Any]:
    """The keyword defaults of the method's estimator (e.g. its centering)."""
    fit = method_fit(method)
    return {k: p.default for k, p in inspect.signature(fit).parameters.items() if p.default is not p.empty}


@dataclass
class WindowedDMD:
    """A DMD fit (:func:`dmd_rrr` or :func:`dmd_projected`) in sliding windows; one row per window, in order of
    training step.

    The early-warning signal is a change in the local linear dynamics: a rising one-step residual (the linear model
    stops fitting) and eigenvalues leaving the unit circle (``spectral_radius > 1``: a growing mode). ``score`` is the
    one scalar per window: the relative one-step residual ``||A Y0 - Y1||_F / ||Y1||_F`` of that window's fit.
    """

    start_step: list[int]  # step of the window's first snapshot
    step: list[int]  # step of the window's last snapshot: the score at ``step`` uses no later data
    moduli: Float[np.ndarray, "W r"]  # eigenvalue moduli, descending; NaN where a window's fit has lower rank
    spectral_radius: Float[np.ndarray, " W"]
    residual: Float[np.ndarray, " W"]
    window: int
    stride: int
    settings: dict[str, Any]  # the estimator's keyword arguments used
    method: str = "rrr"

    @property
    def score(self) -> Float[np.ndarray, " W"]:
        return self.residual

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; ``moduli`` as a list per window, NaN padding as None."""
        return {
            "start_step": self.start_step,
            "step": self.step,
            "moduli": jsonable(self.moduli),
            "spectral_radius": jsonable(self.spectral_radius),
            "residual": jsonable(self.residual),
            "score": jsonable(self.score),
            "window": self.window,
            "stride": self.stride,
            "settings": jsonable(self.settings),
            "method": self.method,
        }


def windowed_dmd(
    snapshots: Float[np.ndarray, "T D"],
    steps: Sequence[int],
    window: int,
    stride: int,
    method: Method = "rrr",
    **dmd_kwargs: Any,
) -> WindowedDMD:
    """Fit the ``method``'s estimator (:data:`FITS`) to snapshots ``[i, i + window)`` for ``i = 0, stride, 2 * stride,
    ...`` (whole windows only).

    ``steps[t]`` is the training step of snapshot ``t``; ``dmd_kwargs`` go to every fit (``n_delays``, ``rank``, ...).
    """
    x = np.asarray(snapshots, dtype=np.float64)
    steps = [int(s) for s in steps]
    if x.ndim != 2 or len(steps) != len(x):
        raise UserError(f"steps: need one step per snapshot, got {len(steps)} steps for snapshots of shape {x.shape}")
    if any(b <= a for a, b in pairwise(steps)):
        raise UserError("steps: must be strictly increasing")
    if stride < 1:
        raise UserError(f"stride: must be >= 1, got {stride}")
    if not 1 <= window <= len(x):
        raise UserError(f"window: must be between 1 and the number of snapshots {len(x)}, got {window}")
    fit_window = method_fit(method)
    settings = {**method_defaults(method), **method_settings(method, dmd_kwargs)}
    if window < settings["n_delays"] + settings["rank"]:
        raise UserError(f"window: must be >= n_delays + rank = {settings['n_delays'] + settings['rank']}, got {window}")
    starts = range(0, len(x) - window + 1, stride)
    moduli = np.full((len(starts), settings["rank"]), np.nan)
    radius, residual = np.empty(len(starts)), np.empty(len(starts))
    for i, start in enumerate(starts):
        fit = fit_window(x[start : start + window], **settings)
        moduli[i, : fit.rank] = np.abs(fit.eigenvalues)
        radius[i], residual[i] = fit.spectral_radius, fit.reconstruction_error
    return WindowedDMD(
        start_step=[steps[s] for s in starts],
        step=[steps[s + window - 1] for s in starts],
        moduli=moduli,
        spectral_radius=radius,
        residual=residual,
        window=window,
        stride=stride,
        settings=settings,
        method=method,
    )
