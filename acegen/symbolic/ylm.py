"""Real spherical harmonics: exact polynomials, an SLP lowering and a numpy evaluator.

Convention (fixed throughout acegen; see ``docs/conventions-angular.md``)
-------------------------------------------------------------------------
Orthonormal real spherical harmonics on the unit sphere, built from the complex
``Y^c_{lm}`` *with* the Condon–Shortley phase as::

    Y_{l,m}  = sqrt(2) (-1)^m Re Y^c_{l,|m|}   (m > 0)
    Y_{l,0}  = Y^c_{l,0}
    Y_{l,m}  = sqrt(2) (-1)^m Im Y^c_{l,|m|}   (m < 0)

The ``(-1)^m`` cancels the Condon–Shortley phase, so every ``Y_{l,m}`` is a *positive*
constant times ``Q_l^{|m|}(z, r^2)`` times ``Re (x + i y)^m`` (m >= 0) or
``Im (x + i y)^{|m|}`` (m < 0).  In particular::

    Y_{0,0} = 1 / (2 sqrt(pi))
    Y_{1,-1} = sqrt(3/(4 pi)) y,   Y_{1,0} = sqrt(3/(4 pi)) z,   Y_{1,1} = sqrt(3/(4 pi)) x

(the sphericart order).  ``∫ Y_{lm} Y_{l'm'} dΩ = δ_{ll'} δ_{mm'}``.  The flat index is
``lm_index(l, m) = l*l + l + m``.

Every ``Y_{l,m}`` is represented by the *homogeneous* polynomial ``P_lm(x, y, z)`` of degree
``l`` that equals it on the unit sphere (``r^2 = x^2 + y^2 + z^2`` is kept symbolic, not
replaced by 1).  Gradients returned here are gradients of that polynomial; for a unit
vector the kernel obtains the gradient of ``Y(r/|r|)`` by the projection
``(I - r̂ r̂^T) ∇P / |r|``.

Recursion (sphericart style): ``C_m + i S_m = (x + i y)^m`` by complex multiplication and
``Q_l^m`` (``= r^{l-m} d^m P_l/dx^m (z/r)``, ``P_l`` Legendre) by the three-term recursion
``(l-m) Q_l^m = (2l-1) z Q_{l-1}^m - (l+m-1) r^2 Q_{l-2}^m`` started from
``Q_m^m = (2m-1)!!``.  The normalisation is folded into the recursion coefficients.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import sympy as sp

from acegen.errors import SpecError
from acegen.ir.slp import SLP, SLPBuilder

__all__ = ["lm_index", "n_lm", "real_ylm_polynomials", "ylm_slp", "ylm_numpy"]

X, Y, Z = sp.symbols("x y z", real=True)


def lm_index(l: int, m: int) -> int:
    """Flat index of ``(l, m)``: ``l*l + l + m``."""
    return l * l + l + m


def n_lm(lmax: int) -> int:
    """Number of ``(l, m)`` pairs with ``l <= lmax``: ``(lmax + 1)**2``."""
    return (lmax + 1) ** 2


def _check_lmax(lmax: int) -> int:
    if not isinstance(lmax, (int, np.integer)) or isinstance(lmax, bool) or lmax < 0:
        raise SpecError(f"lmax must be a non-negative integer, got {lmax!r}")
    return int(lmax)


# ---------------------------------------------------------------------------------------
# exact normalisation constants (squares, as rationals; the 1/pi is kept apart)
# ---------------------------------------------------------------------------------------


def _norm2_over_pi(l: int, m: int) -> sp.Rational:
    """``K_lm**2 * pi`` with ``Y_lm = K_lm Q_l^|m| (C_m | 1 | S_|m|)``."""
    am = abs(m)
    k2 = sp.Rational(2 * l + 1, 4) * sp.Rational(math.factorial(l - am), math.factorial(l + am))
    return 2 * k2 if m != 0 else k2


def _alpha2(l: int, m: int) -> sp.Rational:
    """Square of the ``z``-coefficient in ``Qh_l^m = a z Qh_{l-1}^m - b r^2 Qh_{l-2}^m``."""
    return sp.Rational((2 * l + 1) * (2 * l - 1), (l - m) * (l + m))


def _beta2(l: int, m: int) -> sp.Rational:
    """Square of the ``r^2``-coefficient of the normalised recursion (``l >= m + 2``)."""
    return sp.Rational((2 * l + 1) * (l + m - 1) * (l - m - 1), (2 * l - 3) * (l - m) * (l + m))


def _start2_over_pi(m: int) -> sp.Rational:
    """``pi * Qh_m^m**2`` where ``Qh_m^m = K_mm (2m-1)!!`` (sqrt(2) included for m > 0)."""
    dfact = sp.factorial2(2 * m - 1) if m > 0 else sp.Integer(1)
    return _norm2_over_pi(m, m) * dfact**2


def _exact(sq: sp.Rational, over_pi: bool) -> sp.Expr:
    """``sqrt(sq)`` or ``sqrt(sq/pi)`` as an exact sympy number."""
    return sp.sqrt(sq) / sp.sqrt(sp.pi) if over_pi else sp.sqrt(sq)


def _dbl(expr: sp.Expr) -> float:
    """Correctly rounded double of an exact positive constant."""
    return float(sp.N(expr, 40))


# ---------------------------------------------------------------------------------------
# exact polynomials
# ---------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def real_ylm_polynomials(lmax: int) -> dict[tuple[int, int], sp.Expr]:
    """Exact homogeneous polynomials ``P_lm(x, y, z)`` with ``Y_lm(r̂) = P_lm(r̂)`` on ``|r̂| = 1``.

    Keys ``(l, m)`` for ``0 <= l <= lmax``, ``-l <= m <= l``; polynomials in the sympy
    symbols ``x, y, z`` (``real=True``), expanded, with coefficients
    ``Rational * sqrt(Rational) / sqrt(pi)``.  The returned dict is cached: do not mutate.
    """
    lmax = _check_lmax(lmax)
    r2 = X**2 + Y**2 + Z**2
    cs: list[tuple[sp.Expr, sp.Expr]] = [(sp.Integer(1), sp.Integer(0))]
    for m in range(1, lmax + 1):
        c, s = cs[-1]
        cs.append((sp.expand(X * c - Y * s), sp.expand(X * s + Y * c)))
    out: dict[tuple[int, int], sp.Expr] = {}
    for m in range(lmax + 1):
        q: dict[int, sp.Expr] = {m: sp.factorial2(2 * m - 1) if m > 0 else sp.Integer(1)}
        for l in range(m + 1, lmax + 1):
            prev2 = q.get(l - 2, sp.Integer(0)) if l - 2 >= m else sp.Integer(0)
            q[l] = sp.expand(((2 * l - 1) * Z * q[l - 1] - (l + m - 1) * r2 * prev2) / (l - m))
        for l in range(m, lmax + 1):
            for sign in (1, -1) if m > 0 else (1,):
                mm = sign * m
                k = _exact(_norm2_over_pi(l, mm), True)
                ang = cs[m][0] if sign > 0 else cs[m][1]
                out[(l, mm)] = sp.expand(k * q[l] * ang)
    return dict(sorted(out.items(), key=lambda kv: lm_index(*kv[0])))


# ---------------------------------------------------------------------------------------
# SLP lowering
# ---------------------------------------------------------------------------------------


def _const(value: float) -> sp.Float:
    """A double constant as a sympy Float printed with 17 significant digits (round-trips)."""
    return sp.Float(value, 17)


@lru_cache(maxsize=None)
def ylm_slp(lmax: int, prefix: str = "ylm") -> SLP:
    """An SLP computing all real ``Y_lm`` (``l <= lmax``) and their polynomial gradients.

    Inputs ``("x", "y", "z")`` (a unit vector; derivatives are w.r.t. all three).  Outputs,
    in this order: ``Y`` at every ``lm_index``, then ``∂/∂x`` of each, then ``∂/∂y``, then
    ``∂/∂z`` — ``4 * n_lm(lmax)`` outputs named ``{prefix}_Y{i}``, ``{prefix}_dx{i}``,
    ``{prefix}_dy{i}``, ``{prefix}_dz{i}``.  Derivatives are those of the homogeneous
    polynomial ``P_lm`` (``r^2`` is computed, not assumed 1).  Intermediates are named
    ``{prefix}_t<k>`` (and ``d{prefix}_t<k>_<x>``).

    The program has O(lmax^2) assignments: ``(x+iy)^m`` by complex multiplication and
    the normalised ``z``-factor by a three-term recursion in ``l``.  Constants are sympy
    Floats holding the correctly rounded double of the exact value, printed with 17
    significant digits.
    """
    lmax = _check_lmax(lmax)
    b = SLPBuilder(inputs=("x", "y", "z"), wrt=("x", "y", "z"), prefix=f"{prefix}_t")
    x, y, z = b.input("x"), b.input("y"), b.input("z")
    r2 = b.assign(x * x + y * y + z * z) if lmax >= 2 else None
    cs: list[tuple[sp.Expr, sp.Expr]] = [(sp.Integer(1), sp.Integer(0))]
    if lmax >= 1:
        cs.append((x, y))
    for m in range(2, lmax + 1):
        c, s = cs[-1]
        cs.append((b.assign(x * c - y * s), b.assign(x * s + y * c)))
    ys: dict[int, sp.Expr] = {}
    for m in range(lmax + 1):
        qh: dict[int, sp.Expr] = {m: _const(_dbl(_exact(_start2_over_pi(m), True)))}
        for l in range(m + 1, lmax + 1):
            if l == m + 1:  # constant * z: fold the two constants exactly
                a2 = _alpha2(l, m) * _start2_over_pi(m)
                qh[l] = b.assign(_const(_dbl(_exact(a2, True))) * z)
                continue
            b2 = _beta2(l, m)
            # Qh_{l-2}^m is the constant Qh_m^m when l == m + 2: fold it exactly
            rterm = _const(_dbl(_exact(b2 * _start2_over_pi(m), True))) if l == m + 2 else (
                _const(_dbl(sp.sqrt(b2))) * qh[l - 2]
            )
            qh[l] = b.assign(_const(_dbl(sp.sqrt(_alpha2(l, m)))) * z * qh[l - 1] - rterm * r2)
        for l in range(m, lmax + 1):
            if m == 0:
                ys[lm_index(l, 0)] = qh[l]
            else:
                ys[lm_index(l, m)] = b.assign(qh[l] * cs[m][0])
                ys[lm_index(l, -m)] = b.assign(qh[l] * cs[m][1])
    n = n_lm(lmax)
    vals = [ys[i] for i in range(n)]
    b.output(vals, [f"{prefix}_Y{i}" for i in range(n)])
    for w in ("x", "y", "z"):
        b.output([b.deriv(v, w) for v in vals], [f"{prefix}_d{w}{i}" for i in range(n)])
    return b.build()


# ---------------------------------------------------------------------------------------
# numpy evaluator
# ---------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _numeric_coeffs(lmax: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Double constants: start values ``Qh_m^m``, alpha[l, m], beta[l, m]."""
    start = np.array([_dbl(_exact(_start2_over_pi(m), True)) for m in range(lmax + 1)])
    alpha = np.zeros((lmax + 1, lmax + 1))
    beta = np.zeros((lmax + 1, lmax + 1))
    for m in range(lmax + 1):
        for l in range(m + 1, lmax + 1):
            alpha[l, m] = _dbl(sp.sqrt(_alpha2(l, m)))
            if l - 2 >= m:
                beta[l, m] = _dbl(sp.sqrt(_beta2(l, m)))
    return start, alpha, beta


def ylm_numpy(lmax: int, xyz, grad: bool = False):
    """Evaluate all real ``Y_lm`` (``l <= lmax``) at the rows of ``xyz`` (shape ``(N, 3)``).

    Returns ``Y`` of shape ``(N, n_lm(lmax))`` in ``lm_index`` order, and if ``grad`` also
    the polynomial gradients ``dY`` of shape ``(N, n_lm(lmax), 3)`` (see module docstring).
    Inputs are expected to be unit vectors; the homogeneous polynomials are evaluated as
    they are (no normalisation is applied).
    """
    lmax = _check_lmax(lmax)
    xyz = np.asarray(xyz, dtype=float)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise SpecError(f"xyz must have shape (N, 3), got {xyz.shape}")
    npts = xyz.shape[0]
    x, y, z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    r2 = x * x + y * y + z * z
    start, alpha, beta = _numeric_coeffs(lmax)
    n = n_lm(lmax)
    out = np.empty((npts, n))
    dout = np.empty((npts, n, 3)) if grad else None
    zero = np.zeros(npts)
    one = np.ones(npts)
    # (x + i y)^m and its gradient (d/dz = 0)
    c_m, s_m = [one], [zero]
    dc_m, ds_m = [(zero, zero)], [(zero, zero)]
    for m in range(1, lmax + 1):
        c, s = c_m[-1], s_m[-1]
        c_m.append(x * c - y * s)
        s_m.append(x * s + y * c)
        dc_m.append((m * c, -m * s))
        ds_m.append((m * s, m * c))
    dr2 = 2.0 * xyz  # gradient of r^2
    ez = np.zeros((npts, 3))
    ez[:, 2] = 1.0
    for m in range(lmax + 1):
        q_prev2, dq_prev2 = None, None
        q = np.full(npts, start[m])
        dq = np.zeros((npts, 3))
        for l in range(m, lmax + 1):
            if l > m:
                qn = alpha[l, m] * z * q
                dqn = alpha[l, m] * (ez * q[:, None] + z[:, None] * dq)
                if q_prev2 is not None:
                    qn = qn - beta[l, m] * r2 * q_prev2
                    dqn = dqn - beta[l, m] * (dr2 * q_prev2[:, None] + r2[:, None] * dq_prev2)
                q_prev2, dq_prev2 = q, dq
                q, dq = qn, dqn
            if m == 0:
                out[:, lm_index(l, 0)] = q
                if grad:
                    dout[:, lm_index(l, 0), :] = dq
                continue
            for mm, ang, dang in ((m, c_m[m], dc_m[m]), (-m, s_m[m], ds_m[m])):
                i = lm_index(l, mm)
                out[:, i] = q * ang
                if grad:
                    g = dq * ang[:, None]
                    g[:, 0] += q * dang[0]
                    g[:, 1] += q * dang[1]
                    dout[:, i, :] = g
    return (out, dout) if grad else out
