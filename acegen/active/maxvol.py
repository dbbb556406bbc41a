"""MaxVol: rows of a tall matrix whose square submatrix has (locally) maximal |det|.

Goreinov, Oseledets, Savostyanov, Tyrtyshnikov, Zamarashkin and Zamarashkin (2010), "How to
find a good submatrix".  For A (n × r), n ≥ r, and a nonsingular r × r submatrix A[I], the
coefficients B = A A[I]⁻¹ express every row through the selected ones (B[I] = 1).  If some
|B[i, j]| > tol, replacing row I[j] by row i multiplies |det A[I]| by |B[i, j]|; B is updated
by a rank-1 correction.  At convergence every row has max_j |B[i, j]| ≤ tol — for PACE's
active sets this is the extrapolation grade γ ≤ tol of every row.

:func:`maxvol` works on the whole matrix; :func:`maxvol_batched` streams the rows in batches
(memory O((r + batch) · r)), keeping the current r rows and re-running MaxVol on them plus
each batch, with further passes until no batch changes the selection (as pacemaker's
``pace_activeset`` does for large data sets), then verification passes that compute every
row's grade with the pseudo-inverse of the selection — exactly as the active-set inverse is
used — and swap in any row above ``tol``, until a whole pass finds none.

The rank-1 updates of B accumulate round-off when the selection is ill-conditioned, so
:func:`maxvol` recomputes B from A by LU after every ``refresh`` swaps and stops only when
the recomputed coefficients are all within ``tol``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

import numpy as np
import scipy.linalg

from ..errors import AcegenError


class MaxVolError(AcegenError, ValueError):
    """The rows cannot give a nonsingular square submatrix (too few rows, or rank-deficient)."""


class MaxVolWarning(UserWarning):
    """MaxVol stopped at its iteration limit before every row's grade was within the tolerance."""


_REFRESH = 32  # swaps between exact recomputations of the coefficients


def _iterate(B: np.ndarray, I: np.ndarray, tol: float, max_iters: int) -> int:
    """MaxVol swaps on B (n × r, B[I] = identity), in place; returns the number of swaps."""
    swaps = 0
    for _ in range(max_iters):
        flat = int(np.argmax(np.abs(B)))
        i, j = divmod(flat, B.shape[1])
        piv = B[i, j]
        if abs(piv) <= tol:
            break
        row = B[i].copy()
        row[j] -= 1.0
        col = B[:, j].copy()
        B -= np.outer(col / piv, row)
        I[j] = i
        swaps += 1
    return swaps


def _initial_rows(A: np.ndarray) -> np.ndarray:
    """r rows of A (n × r) by LU with partial pivoting (a good, nonsingular start)."""
    n, r = A.shape
    p, _, _ = scipy.linalg.lu(A, permute_l=False)
    # p is (n × n): A = p @ L @ U; row k of (L U) is row perm[k] of A
    perm = np.argmax(p, axis=0)
    return np.ascontiguousarray(perm[:r])


def _coefficients(A: np.ndarray, I: np.ndarray) -> np.ndarray:
    """B = A A[I]⁻¹ (least squares when A[I] is numerically singular)."""
    sub = A[I]
    try:
        with np.errstate(all="raise"):
            lu = scipy.linalg.lu_factor(sub.T, check_finite=True)
            B = scipy.linalg.lu_solve(lu, A.T).T
        if np.all(np.isfinite(B)):
            return B
    except (FloatingPointError, np.linalg.LinAlgError, ValueError):
        pass
    return A @ np.linalg.pinv(sub)


def maxvol(A, tol: float = 1.01, max_iters: int = 300, start=None) -> np.ndarray:
    """Indices of r rows of ``A`` (n × r, n ≥ r) with locally maximal |det| (every row's
    coefficients through them ≤ ``tol`` in modulus, unless ``max_iters`` swaps ran out).
    ``start``: initial rows (default: LU pivots)."""
    A = np.asarray(A, dtype=float)
    if A.ndim != 2:
        raise MaxVolError(f"maxvol needs a matrix, got shape {A.shape}")
    n, r = A.shape
    if n < r:
        raise MaxVolError(f"maxvol needs at least as many rows as columns: {n} rows, {r} columns")
    if not np.all(np.isfinite(A)):
        raise MaxVolError("maxvol: the matrix has non-finite entries")
    if tol < 1.0:
        raise MaxVolError(f"maxvol: tolerance must be >= 1, got {tol}")
    I = _initial_rows(A) if start is None else np.array(start, dtype=np.int64)
    left = max_iters
    while True:
        # exact coefficients (LU), then at most _REFRESH rank-1 swaps before recomputing
        B = _coefficients(A, I)
        B[I] = np.eye(r)
        swaps = _iterate(B, I, tol, min(left, _REFRESH))
        left -= swaps
        if swaps == 0 or left <= 0:
            break
    return np.sort(I)


def maxvol_batched(
    batches: Callable[[], Iterable[np.ndarray]],
    r: int,
    tol: float = 1.01,
    max_iters: int = 300,
    max_passes: int = 50,
    active=None,
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """MaxVol over rows streamed in batches.

    ``batches()`` returns a fresh iterable of (m_k × r) arrays (called once per pass);
    ``active``: optional initial r × r active rows (e.g. an existing active set), then the
    selection starts from it.  Returns ``(rows, origin)``: the selected r × r matrix and, per
    row, (batch index, row in batch), or (-1, k) for a row of ``active`` still selected.

    Passes repeat until one changes nothing and every row's grade max_k |(x · pinv(rows))_k|
    — computed as the active-set inverse computes it — is ≤ ``tol``; after ``max_passes``
    passes a :class:`MaxVolWarning` says how far from converged the selection is.
    """
    cur = None if active is None else np.array(active, dtype=float)
    origin: list[tuple[int, int]] = [] if cur is None else [(-1, k) for k in range(r)]
    converged = False
    worst = np.inf
    for _ in range(max(1, max_passes)):
        changed = False
        worst = 0.0
        inv = None
        for b, X in enumerate(batches()):
            X = np.asarray(X, dtype=float).reshape(-1, r)
            if len(X) == 0:
                continue
            stack = X if cur is None else np.vstack([cur, X])
            org = origin + [(b, k) for k in range(len(X))]
            if len(stack) < r:
                cur, origin = stack, org  # keep collecting
                continue
            if cur is None or len(cur) < r:
                I = maxvol(stack, tol, max_iters)
                changed = True
            else:
                # verification with the pseudo-inverse, as the active-set inverse is used
                if inv is None:
                    inv = np.linalg.pinv(cur)
                g = float(np.max(np.abs(X @ inv)))
                if g <= tol:
                    worst = max(worst, g)
                    continue
                I0 = np.arange(r)
                I = maxvol(stack, tol, max_iters, start=I0)
                if np.array_equal(I, I0):
                    # the LU coefficients are within tol, the pseudo-inverse's are not
                    # (round-off of an ill-conditioned selection): swap in the worst row
                    i, j = divmod(int(np.argmax(np.abs(X @ inv))), r)
                    I = I0.copy()
                    I[j] = r + i
                changed = True
            cur = stack[I]
            origin = [org[i] for i in I]
            inv = None
        if cur is None or len(cur) < r:
            break  # fewer rows than columns in all the batches
        if not changed and worst <= tol:
            converged = True
            break
    if cur is None or len(cur) < r:
        have = 0 if cur is None else len(cur)
        raise MaxVolError(f"active set needs at least {r} environments, got {have}")
    if not converged:
        warnings.warn(f"maxvol: not converged after {max_passes} pass(es) over the batches "
                      f"(largest grade in the last pass {worst:.4g} > tolerance {tol}); "
                      f"raise max_passes or max_iters", MaxVolWarning, stacklevel=2)
    return cur, origin
