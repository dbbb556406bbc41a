"""The embedding functions of a non-linear (Finnis–Sinclair) fit in NumPy, with their first
and second derivatives.

They are derived from the one definition the compiled kernels print,
:func:`acegen.ir.physics.embedding_slp`: the straight-line program of one density (w = 1,
m = m_p) is substituted into one sympy expression F(ρ), differentiated twice with sympy and
turned into NumPy functions (``sympy.lambdify``), so a fit and the fitted model's kernel
evaluate the same F (including PACE's small-ρ branches).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["Embedding", "embedding_functions"]


@lru_cache(maxsize=64)
def _one_density(kind: str, m: float):
    import sympy as sp

    from ..ir.physics import embedding_slp

    slp = embedding_slp(kind, (1.0, float(m)), 1)
    env: dict = {}
    for name, expr in slp.assignments:
        env[sp.Symbol(name, real=True)] = sp.sympify(expr).xreplace(env)
    rho = sp.Symbol("rho_0", real=True)
    F = env.get(sp.Symbol("E", real=True), rho)
    dF = sp.diff(F, rho)
    d2F = sp.diff(dF, rho)
    fns = [sp.lambdify(rho, e, modules="numpy") for e in (F, dF, d2F)]

    def evaluate(x: np.ndarray):
        with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
            return tuple(np.broadcast_to(np.asarray(f(x), dtype=float), x.shape).copy() for f in fns)

    return evaluate


class Embedding:
    """E = Σ_p w_p F(ρ_p; m_p) of one kind with parameters (w_0, m_0, w_1, m_1, …)."""

    def __init__(self, kind: str, params) -> None:
        self.kind = kind
        self.params = tuple(float(x) for x in params)
        self.w = np.asarray(self.params[0::2])
        self.m = np.asarray(self.params[1::2])
        self._fns = [_one_density(kind, float(m)) for m in self.m]

    @property
    def ndensity(self) -> int:
        return len(self._fns)

    def __call__(self, rho: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``rho`` (n, P) → (E (n,), w_p F'(ρ_p) (n, P), w_p F''(ρ_p) (n, P))."""
        rho = np.asarray(rho, dtype=float)
        F = np.empty_like(rho)
        d1 = np.empty_like(rho)
        d2 = np.empty_like(rho)
        for p, f in enumerate(self._fns):
            F[:, p], d1[:, p], d2[:, p] = f(rho[:, p])
        return F @ self.w, d1 * self.w, d2 * self.w


def embedding_functions(kind: str, params) -> Embedding:
    """The :class:`Embedding` of ``kind`` (``FinnisSinclair``, ``FinnisSinclairShiftedScaled``
    or ``linear``) with parameters ``params``."""
    return Embedding(kind, params)
