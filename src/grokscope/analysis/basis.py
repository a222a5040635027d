"""The Fourier numerics every analysis shares: the real basis over Z_p, the 2-D transform of tables over the (a, b)
grid and which of its cells belong to each frequency, and the directions ``cos(w_k (a +- b))``, ``sin(w_k (a +- b))``
over the grid that the progress measures and the neuron-frequency ablation project onto.

Ordering (cos first; some codebases put sin first): row 0 is the constant 1/sqrt(p); then for k = 1, 2, ...
``cos(w_k x)`` and ``sin(w_k x)`` with ``w_k = 2 pi k / p``. For odd p the frequencies are 1..(p-1)/2 and every
one has a cos and a sin row. For even p frequency p/2 has only its cos row, ``(-1)^x`` (its sin is identically zero).
Every row has unit norm and the rows are orthonormal, so ``B @ x`` gives coefficients and ``B.T @ c`` inverts them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor


def n_frequencies(p: int) -> int:
    """Number of non-constant frequencies: (p-1)/2 for odd p, p/2 for even p."""
    return p // 2


def fourier_basis(p: int, dtype: torch.dtype = torch.float64) -> Float[Tensor, "p p"]:
    """Orthonormal real Fourier basis over Z_p, one basis vector per row (order in the module docstring)."""
    x = torch.arange(p, dtype=torch.float64)
    k = torch.arange(1, n_frequencies(p) + 1, dtype=torch.float64)
    angles = 2 * math.pi * k[:, None] * x[None, :] / p
    waves = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1).reshape(-1, p)  # cos 1, sin 1, cos 2, ...
    if p % 2 == 0:
        waves = waves[:-1]  # sin(pi x) vanishes on the integers
    basis = torch.cat([torch.ones(1, p, dtype=torch.float64), waves])
    return (basis / basis.norm(dim=1, keepdim=True)).to(dtype)


def basis_frequencies(p: int) -> Int[Tensor, " p"]:
    """Frequency of each basis row: 0 for the constant, k for ``cos k`` and ``sin k``."""
    freqs = [0]
    for k in range(1, n_frequencies(p) + 1):
        freqs += [k] if 2 * k == p else [k, k]
    return torch.tensor(freqs)


def basis_labels(p: int) -> list[str]:
    labels = ["const"]
    for k in range(1, n_frequencies(p) + 1):
        labels += [f"cos {k}"] if 2 * k == p else [f"cos {k}", f"sin {k}"]
    return labels


def frequency_membership(p: int, dtype: torch.dtype = torch.float64) -> Float[Tensor, "n_freq p"]:
    """``M[k-1, i] = 1`` when basis row ``i`` has frequency ``k``: ``M @ c**2`` sums squares per frequency."""
    freqs = basis_frequencies(p)
    ks = torch.arange(1, n_frequencies(p) + 1)
    return (freqs[None, :] == ks[:, None]).to(dtype)


def frequency_norms(coefficients: Float[Tensor, "p ..."]) -> Float[Tensor, "n_freq ..."]:
    """Norm per frequency of Fourier coefficients along dim 0: sqrt(cos_k^2 + sin_k^2), constant excluded."""
    p = coefficients.shape[0]
    membership = frequency_membership(p, coefficients.dtype).to(coefficients.device)
    squares = coefficients.pow(2).reshape(p, -1)
    return (membership @ squares).sqrt().reshape(membership.shape[0], *coefficients.shape[1:])


def spectrum(functions: Float[Tensor, "p ..."]) -> Float[Tensor, "n_freq ..."]:
    """Norm per frequency of each function on Z_p stacked along dim 0 (transformed in the functions' dtype)."""
    fb = fourier_basis(functions.shape[0], functions.dtype).to(functions.device)
    return frequency_norms(torch.tensordot(fb, functions, dims=1))


def matrix_spectrum(functions: Float[Tensor, "p n"]) -> Float[Tensor, " n_freq"]:
    """Norm per frequency of a whole matrix of functions on Z_p (its columns): one spectrum for the matrix."""
    return spectrum(functions).norm(dim=1)


def frequency_cells(p: int) -> Bool[Tensor, "n_freq p p"]:
    """Cells of a 2-D Fourier transform (rows: basis over a, columns: basis over b) that belong to frequency k.

    Frequency k owns its linear terms in a (``(k_a, const)``), in b (``(const, k_b)``) and its quadratic terms
    (both indices of frequency k, e.g. ``cos k a * sin k b``). Cross terms of two different frequencies and the
    constant cell belong to no frequency.
    """
    freqs = basis_frequencies(p)
    ks = torch.arange(1, n_frequencies(p) + 1)[:, None, None]
    fa, fb = freqs[None, :, None], freqs[None, None, :]
    linear_a = (fa == ks) & (fb == 0)
    linear_b = (fa == 0) & (fb == ks)
    quadratic = (fa == ks) & (fb == ks)
    return linear_a | linear_b | quadratic


def cell_frequencies(p: int) -> Int[Tensor, " p_sq"]:
    """The frequency that owns each cell of a 2-D transform (:func:`frequency_cells`), 0 where none does; row-major
    over (basis row over a, basis row over b), as ``fourier_2d(t).reshape(p * p, ...)`` lays the cells out."""
    cells = frequency_cells(p)
    return (cells * torch.arange(1, cells.shape[0] + 1)[:, None, None]).sum(0).flatten()


def _both_axes(matrix: Float[Tensor, "p p"], tables: Float[Tensor, "p p ..."]) -> Float[Tensor, "p p ..."]:
    """``M T M^T`` for every table ``T`` over the two leading axes, in the tables' dtype."""
    p = tables.shape[0]
    matrix = matrix.to(tables)
    # Two plain matmuls, over a and then over b, run faster than a three-operand einsum.
    over_a = (matrix @ tables.reshape(p, -1)).reshape(p, p, -1)
    over_b = matrix @ over_a.transpose(0, 1).reshape(p, -1)
    return over_b.reshape(p, p, -1).transpose(0, 1).reshape(tables.shape)


def fourier_2d(tables: Float[Tensor, "p p ..."]) -> Float[Tensor, "p p ..."]:
    """The 2-D transform of tables indexed ``[a, b, ...]``: ``F[i, j] = (B T B^T)[i, j]``, basis row i over a and
    basis row j over b. The basis is orthonormal, so the transform keeps the energy and
    :func:`inverse_fourier_2d` undoes it."""
    return _both_axes(fourier_basis(tables.shape[0]), tables)


def inverse_fourier_2d(coefficients: Float[Tensor, "p p ..."]) -> Float[Tensor, "p p ..."]:
    """The tables ``B^T F B`` whose :func:`fourier_2d` is ``coefficients``."""
    return _both_axes(fourier_basis(coefficients.shape[0]).T, coefficients)


# Tables whose non-constant energy is below this fraction of their total energy are constant over the grid: their
# round-off has no frequency to share out.
CONSTANT_TOLERANCE = 1e-12


def frequency_shares(
    tables: Float[Tensor, "p p ..."],
) -> tuple[Float[Tensor, "n_freq ..."], Bool[Tensor, "..."]]:
    """Each table's share of non-constant energy in each frequency's cells, and whether the table varies at all.

    The denominator is every cell's energy but the constant cell (0, 0), so cross terms of two frequencies belong
    to none and a table's shares sum to at most 1. Tables constant over the grid (:data:`CONSTANT_TOLERANCE`) get
    zeros. Computed in the tables' dtype.
    """
    p, rest = tables.shape[0], tables.shape[2:]
    energy = fourier_2d(tables).pow(2).reshape(p * p, -1)
    # The cells are disjoint: index_add sums each frequency's energy in one pass (row 0 collects the cells of none).
    per_frequency = energy.new_zeros(n_frequencies(p) + 1, energy.shape[1])
    per_frequency.index_add_(0, cell_frequencies(p).to(energy.device), energy)
    total = energy.sum(0)
    variance = total - energy[0]  # row 0 is the constant cell (0, 0)
    live = variance > CONSTANT_TOLERANCE * total
    shares = torch.where(live, per_frequency[1:] / variance.where(live, 1.0), 0.0)
    return shares.reshape(-1, *rest), live.reshape(rest)


def trig_directions(
    p: int, operation: str, frequencies: Sequence[int], dtype: torch.dtype = torch.float64
) -> Float[Tensor, "n_dir p_sq"]:
    """Unit vectors ``cos(w_k s)``, ``sin(w_k s)`` over the grid (rows ``a * p + b``), ``s = a + b`` (add) or
    ``a - b`` (sub), for each k in order (cos k, sin k, ...); an identically zero sin (k = p/2) is left out.

    Orthonormal; each sums to zero over the grid, so a projection onto them never moves a column's mean. These are
    the u_cos,k and u_sin,k of Nanda et al. (2023) (``shared/reference/progress-measures.md``).
    """
    x = torch.arange(p, dtype=torch.float64)
    s = (x[:, None] + {"add": 1, "sub": -1}[operation] * x[None, :]).flatten()
    ks = torch.tensor(list(frequencies), dtype=torch.float64)
    angles = 2 * math.pi * ks[:, None] * s[None, :] / p
    waves = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1).reshape(-1, p * p)
    norms = waves.norm(dim=1, keepdim=True)
    keep = norms.squeeze(1) > 1e-6 * p
    return (waves[keep] / norms[keep]).to(dtype)


def trig_part(x: Float[Tensor, "p_sq n"], directions: Float[Tensor, "n_dir p_sq"]) -> Float[Tensor, "p_sq n"]:
    """The projection of each column of ``x`` onto the span of the (orthonormal) ``directions``: ``sum_u u u^T x``."""
    directions = directions.to(x)
    return directions.T @ (directions @ x)
