"""The top singular value (spectral norm) of weight matrices and of their updates, fast
enough to take at every step of a width-1024 model: exact for small matrices, Lanczos on the
smaller Gram matrix for large ones, warm-started from the previous step's vector."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["as_matrix", "sigma_max", "top_singular", "EXACT_SIDE", "KRYLOV_MAX", "KRYLOV_TOL"]

EXACT_SIDE = 128  # matrices with a side this short get an exact norm (matrix_norm, ord=2)
KRYLOV_MAX = 80  # Lanczos steps at most, for larger ones
KRYLOV_TOL = 1e-7  # stop when sigma_max^2 rose less than this (relative) over 4 steps


def as_matrix(tensor: torch.Tensor, fan_out: Sequence[int] = (0,)) -> torch.Tensor:
    """``tensor`` as a float64 (fan_out, fan_in) matrix: its ``fan_out`` axes first, then the
    others in order (a conv kernel (out, in, k, k) -> (out, in*k*k))."""
    rest = [a for a in range(tensor.ndim) if a not in fan_out]
    rows = math.prod(tensor.shape[a] for a in fan_out)
    return tensor.detach().permute(*fan_out, *rest).reshape(rows, -1).double()


def sigma_max(matrix: torch.Tensor) -> float:
    """The largest singular value (spectral norm) of a 2-D tensor, in float64; inf if an
    entry is not finite. See ``top_singular``."""
    return top_singular(matrix)[0]


def top_singular(matrix: torch.Tensor,
                 start: torch.Tensor | None = None) -> tuple[float, torch.Tensor | None]:
    """sigma_max of ``matrix`` in float64, and (for a large one) its top singular vector
    on the shorter side, the ``start`` of the next call on a nearby matrix (the same weight
    a step later).

    A matrix with a side of at most ``EXACT_SIDE`` gets ``torch.linalg.matrix_norm(A, 2)``.
    A larger one gets Lanczos on its smaller Gram matrix (``A^T A`` or ``A A^T``):
    fully reorthogonalised, from ``start`` plus a little of a fixed random vector (so no
    direction is missed), the largest eigenvalue of the tridiagonal matrix at each step (a
    lower bound that rises to sigma_max^2), stopped when it rose less than ``KRYLOV_TOL``
    (relative) over the last 4 steps, or after ``KRYLOV_MAX`` steps. Measured against
    svdvals on Gaussian matrices (the hardest case: no gap at the top of the spectrum), 300
    x 300 to 4096 x 1024: relative error below 1e-7 (~50 steps from a cold start); trained
    weights and Adam's near-low-rank updates converge in fewer. At 1024 x 1024, 35 ms
    against svdvals' 250 ms (one CPU thread).
    """
    a = matrix.detach().double()
    scale = float(torch.linalg.vector_norm(a)) ** 2  # ||A||_F^2 >= sigma_max^2
    if not math.isfinite(scale):
        return math.inf, None
    side = min(a.shape)
    if side <= EXACT_SIDE:
        return (float(torch.linalg.matrix_norm(a, ord=2)) if a.numel() else 0.0), None
    wide = a.shape[0] < a.shape[1]  # then A A^T, the smaller Gram matrix
    v = torch.randn(side, dtype=a.dtype, generator=torch.Generator().manual_seed(0))
    if start is not None and start.shape == v.shape:
        v = start + 1e-2 * v / v.norm()
    basis = torch.empty(side, KRYLOV_MAX, dtype=a.dtype)
    basis[:, 0] = v / v.norm()
    tri = torch.zeros(KRYLOV_MAX, KRYLOV_MAX, dtype=a.dtype)
    history: list[float] = []
    for k in range(KRYLOV_MAX):
        w = a @ (a.T @ basis[:, k]) if wide else a.T @ (a @ basis[:, k])
        tri[k, k] = basis[:, k] @ w
        for _ in range(2):  # twice is enough (Kahan)
            w -= basis[:, :k + 1] @ (basis[:, :k + 1].T @ w)
        values, vectors = torch.linalg.eigh(tri[:k + 1, :k + 1])
        history.append(float(values[-1]))
        beta = float(w.norm())
        if (len(history) > 4 and history[-1] - history[-5] <= KRYLOV_TOL * history[-1]
                or beta <= 1e-14 * scale or k == KRYLOV_MAX - 1):  # last: invariant subspace
            return math.sqrt(max(history[-1], 0.0)), basis[:, :k + 1] @ vectors[:, -1]
        tri[k, k + 1] = tri[k + 1, k] = beta
        basis[:, k + 1] = w / beta
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns at its end
