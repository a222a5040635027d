"""The real Fourier basis over Z_p, and which basis vectors and 2-D cells belong to each frequency.

Ordering (cos first; some codebases put sin first): row 0 is the constant 1/sqrt(p); then for k = 1, 2, ...
``cos(w_k x)`` and ``sin(w_k x)`` with ``w_k = 2 pi k / p``. For odd p the frequencies are 1..(p-1)/2 and every
one has a cos and a sin row. For even p frequency p/2 has only its cos row, ``(-1)^x`` (its sin is identically zero).
Every row has unit norm and the rows are orthonormal, so ``B @ x`` gives coefficients and ``B.T @ c`` inverts them.
"""

from __future__ import annotations

import math

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
