"""Radial bases of ACEpotentials.jl-style models, lowered to straight-line programs.

Conventions (ACE1 / ACE1x, which ACEpotentials.jl v0.6 uses; docs/conventions-radial.md):

Distance transform ('agnesi', p, q) of a bond with bond length r0 and cutoff rcut::

    s = r / r0,   x(r) = 1 / (1 + a s^q / (1 + s^(q-p))),
    a = 2 (2pq - p - q) / (p^2 + p + q^2 + q)      (makes |dx/dr| stationary at r = r0)

    y(r) = -1 + 2 (1 - x(r)) / (1 - x(rcut))       (affine: y(0) = -1, y(rcut) = +1)

Many-body basis (envelope ('x', pin, pcut))::

    f(y)   = (1 + y)^pin (1 - y)^pcut
    R_n(r) = f(y) p_{n-1}(y),   n = 1..nmax,

with p_k of degree k orthonormal *including the envelope*:
(1/2) int_{-1}^{1} f(y)^2 p_j(y) p_k(y) dy = delta_jk, i.e. Jacobi polynomials
P_k^{(2 pcut, 2 pin)} (Legendre measure in y, as ACE1's ``transformed_jacobi`` with
``pcut, pin``), so the R_n are orthonormal in L^2([-1, 1], dy/2).  ACE1 builds the same family
by Gram-Schmidt on a 1000-point midpoint rule; acegen uses the exact measure (same span,
differences of order 1e-5 in the individual functions).

Pair basis (transform ('agnesi', 1, 3) by default, envelope ('r', p))::

    f(r)   = s^-p - sc^-p + p sc^(-p-1) (s - sc),      s = r / r0, sc = rcut / r0
    R_n(r) = f(r) p_{n-1}(u),   u = -y(r),   n = 1..pair_degree,

with p_k the Legendre polynomials orthonormal for du/2 on [-1, 1] (the envelope is *not* in
the inner product, as ACE1's ``transformed_jacobi_env``); the variable u = -y runs from +1 at
r = 0 to -1 at the cutoff, which is the orientation of ACE1's raw Agnesi coordinate, so signs
agree with ACE1x.  With a pair envelope ('x', pin, pcut) the pair basis is built like the
many-body one but in the variable u.

All functions are zero for r >= rcut; the SLPs are the polynomial formulas (no branch) and
rely on the caller (RadialBlock / kernels) to skip neighbours at or beyond the cutoff.  At
r = rcut the value and the derivative vanish exactly for pcut >= 2 (many-body) and for the
('r', p) envelope.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import mpmath
import numpy as np
import sympy as sp
from scipy.special import eval_jacobi, eval_legendre, gammaln

from ..errors import SpecError
from ..ir.model import RadialBlock
from ..ir.slp import SLP, SLPBuilder
from ..spec import BasisSpec

__all__ = [
    "agnesi_a",
    "agnesi_x",
    "agnesi_dx",
    "TransformParams",
    "transform_params",
    "normalized_y",
    "RadialPolynomialForm",
    "radial_polynomial_form",
    "manybody_radial_slp",
    "pair_radial_slp",
    "manybody_radial_block",
    "pair_radial_block",
    "manybody_radial_numpy",
    "pair_radial_numpy",
]

_DPS = 40  # working precision for float constants derived from exact rationals


# ----------------------------------------------------------------------------- transform
def agnesi_a(p: int, q: int) -> sp.Rational:
    """The Agnesi parameter a that makes |dx/dr| stationary (maximal) at r = r0.

    With g(s) = s^q / (1 + s^(q-p)) and x = 1/(1 + a g), x'' = 0 at s = 1 gives
    a = g''(1) / (2 g'(1)^2 - g(1) g''(1)) = 2 (2pq - p - q) / (p^2 + p + q^2 + q).
    """
    return sp.Rational(2 * (2 * p * q - p - q), p * p + p + q * q + q)


def agnesi_x(r, r0: float, p: int, q: int, a: float | None = None):
    """Raw Agnesi transform x(r) = 1 / (1 + a s^q / (1 + s^(q-p))), s = r / r0 (numpy)."""
    a = float(agnesi_a(p, q)) if a is None else a
    s = np.asarray(r, dtype=float) / r0
    return 1.0 / (1.0 + a * s**q / (1.0 + s ** (q - p)))


def agnesi_dx(r, r0: float, p: int, q: int, a: float | None = None):
    """dx/dr of :func:`agnesi_x` (closed form, numpy)."""
    a = float(agnesi_a(p, q)) if a is None else a
    s = np.asarray(r, dtype=float) / r0
    den = 1.0 + s ** (q - p)
    g = s**q / den
    dg = (q * s ** (q - 1) * den - (q - p) * s ** (2 * q - p - 1)) / den**2
    return -a * dg / (r0 * (1.0 + a * g) ** 2)


@dataclass(frozen=True)
class TransformParams:
    """Resolved transform of one bond: y(r) = y0 + y1 * x(r) with x the raw Agnesi map."""

    r0: float
    rcut: float
    p: int
    q: int
    a: float
    x_cut: float
    y0: float
    y1: float


def transform_params(spec: BasisSpec, zi: int, zj: int, kind: str = "manybody") -> TransformParams:
    """Transform constants of bond (zi, zj) for ``kind`` 'manybody' or 'pair'."""
    if kind == "manybody":
        _, p, q = spec.transform
        rcut = spec.rcut_pair(zi, zj)
    elif kind == "pair":
        _, p, q = spec.pair_transform
        rcut = spec.pair_rcut_pair(zi, zj)
    else:
        raise SpecError(f"radial kind must be 'manybody' or 'pair', got {kind!r}")
    r0 = spec.r0_pair(zi, zj)
    a_exact = agnesi_a(p, q)
    with mpmath.workdps(_DPS):
        a = mpmath.mpf(a_exact.p) / a_exact.q
        sc = mpmath.mpf(rcut) / mpmath.mpf(r0)
        xc = 1 / (1 + a * sc**q / (1 + sc ** (q - p)))
        y1 = -2 / (1 - xc)
        y0 = -1 - y1
        return TransformParams(r0=r0, rcut=rcut, p=p, q=q, a=float(a), x_cut=float(xc),
                               y0=float(y0), y1=float(y1))


def normalized_y(tp: TransformParams, r):
    """y(r) in [-1, 1] for r in [0, rcut] (numpy)."""
    return tp.y0 + tp.y1 * agnesi_x(r, tp.r0, tp.p, tp.q, tp.a)


# ----------------------------------------------------------------------------- polynomials
def _binomial_poly(pin: int, pcut: int) -> tuple[sp.Rational, ...]:
    """Coefficients (ascending) of (1 + y)^pin (1 - y)^pcut."""
    y = sp.Symbol("y")
    poly = sp.Poly(sp.expand((1 + y) ** pin * (1 - y) ** pcut), y)
    return tuple(sp.Rational(c) for c in reversed(poly.all_coeffs()))


@lru_cache(maxsize=None)
def _stieltjes(wpin: int, wpcut: int, nfunc: int):
    """Exact monic orthogonal polynomials for the weight (1+v)^wpin (1-v)^wpcut dv/2 on [-1,1].

    Returns (monic, alpha, norm2): monic[k] are the ascending Rational coefficients of pi_k,
    pi_{k+1} = (v - alpha_k) pi_k - beta_k pi_{k-1}, and norm2[k] = <pi_k, pi_k>
    (beta_k = norm2[k] / norm2[k-1]).
    """
    w = [sp.Rational(c) for c in _binomial_poly(wpin, wpcut)]
    nmom = 2 * nfunc + 1
    # mu_m = (1/2) int_{-1}^{1} v^m w(v) dv = (1/2) sum_i w_i int v^{m+i} = sum_i w_i [m+i even]/(m+i+1)
    mu = [sum((wi / (m + i + 1) for i, wi in enumerate(w) if (m + i) % 2 == 0), sp.Rational(0))
          for m in range(nmom + len(w))]

    def inner(a, b, shift=0):
        tot = sp.Rational(0)
        for i, ai in enumerate(a):
            if ai == 0:
                continue
            for j, bj in enumerate(b):
                if bj != 0:
                    tot += ai * bj * mu[i + j + shift]
        return tot

    monic = [(sp.Rational(1),)]
    norm2 = [inner(monic[0], monic[0])]
    alpha = []
    for k in range(nfunc - 1):
        pk = monic[k]
        alpha_k = inner(pk, pk, 1) / norm2[k]
        alpha.append(alpha_k)
        nxt = [sp.Rational(0)] * (k + 2)
        for i, c in enumerate(pk):  # v * pi_k
            nxt[i + 1] += c
        for i, c in enumerate(pk):
            nxt[i] -= alpha_k * c
        if k >= 1:
            beta_k = norm2[k] / norm2[k - 1]
            for i, c in enumerate(monic[k - 1]):
                nxt[i] -= beta_k * c
        monic.append(tuple(nxt))
        norm2.append(inner(nxt, nxt))
    return tuple(monic), tuple(alpha), tuple(norm2)


@dataclass(frozen=True)
class RadialPolynomialForm:
    """Exact description of a radial basis as (envelope) x (polynomial in y).

    R_n(r) = env(r) * pi_{n-1}(v) / sqrt(norm2[n-1]),   n = 1..nfunc,

    with v = y (many-body) or v = -y (pair) and pi_k monic in v with Rational coefficients.
    :meth:`coefficients` returns the exact coefficients of
    R_n / env as a polynomial in y (sympy numbers, possibly with square roots);
    :meth:`rational_coefficients` the Rational coefficients in y of pi_{n-1}(v) together with
    the Rational norm2 (R_n / env = sum_k c_k y^k / sqrt(norm2)).

    ``polynomial_envelope`` is True when env is a polynomial in y (envelope ('x', pin, pcut));
    then ``envelope_coeffs`` are its ascending Rational coefficients in y and
    ``envelope_degree`` = pin + pcut.  For the ('r', p) pair envelope both are None.
    ``variable_sign`` is +1 (v = y) or -1 (v = -y).
    """

    kind: str
    envelope: tuple
    nfunc: int
    variable_sign: int
    polynomial_envelope: bool
    envelope_degree: int | None
    envelope_coeffs: tuple[sp.Rational, ...] | None
    monic: tuple[tuple[sp.Rational, ...], ...]
    alpha: tuple[sp.Rational, ...]
    norm2: tuple[sp.Rational, ...]

    def rational_coefficients(self, n: int) -> tuple[tuple[sp.Rational, ...], sp.Rational]:
        """(coefficients in y of pi_{n-1}(v), norm2) with R_n = env * poly(y) / sqrt(norm2)."""
        if not 1 <= n <= self.nfunc:
            raise SpecError(f"radial index must be in 1..{self.nfunc}, got {n}")
        c = self.monic[n - 1]
        if self.variable_sign < 0:
            c = tuple(ck if k % 2 == 0 else -ck for k, ck in enumerate(c))
        return c, self.norm2[n - 1]

    def coefficients(self, n: int) -> tuple[sp.Expr, ...]:
        """Exact coefficients (ascending powers of y) of R_n / env."""
        c, h = self.rational_coefficients(n)
        s = 1 / sp.sqrt(h)
        return tuple(ck * s for ck in c)

    def recurrence(self) -> list[tuple[float, float, float]]:
        """Float (A, B, C) with P_1 = A_1 env, P_2 = (A_2 v + B_2) P_1,
        P_n = (A_n v + B_n) P_{n-1} + C_n P_{n-2} (v the polynomial variable)."""
        out = []
        with mpmath.workdps(_DPS):
            h = [mpmath.mpf(x.p) / x.q for x in self.norm2]
            al = [mpmath.mpf(x.p) / x.q for x in self.alpha]
            out.append((float(1 / mpmath.sqrt(h[0])), 0.0, 0.0))
            for n in range(1, self.nfunc):  # build p_n from p_{n-1}, p_{n-2}
                sb = mpmath.sqrt(h[n] / h[n - 1])  # sqrt(beta_n)
                A = 1 / sb
                B = -al[n - 1] / sb
                C = -mpmath.sqrt(h[n - 1] / h[n - 2]) / sb if n >= 2 else mpmath.mpf(0)
                out.append((float(A), float(B), float(C)))
        return out


def _default_nfunc(spec: BasisSpec, kind: str) -> int:
    return spec.nmax if kind == "manybody" else spec.pair_degree


def radial_polynomial_form(spec: BasisSpec, zi: int, zj: int, kind: str = "manybody",
                           nfunc: int | None = None) -> RadialPolynomialForm:
    """Exact polynomial description of the many-body or pair radial basis of bond (zi, zj).

    ``nfunc`` defaults to spec.nmax (many-body) or spec.pair_degree (pair); purification
    may ask for more (ACE1x uses nmax + envelope_degree * (order - 1)).
    """
    transform_params(spec, zi, zj, kind)  # validates kind and species indices
    nfunc = _default_nfunc(spec, kind) if nfunc is None else nfunc
    if not (isinstance(nfunc, int) and nfunc >= 1):
        raise SpecError(f"nfunc must be an integer >= 1, got {nfunc!r}")
    env = spec.envelope if kind == "manybody" else spec.pair_envelope
    sign = 1 if kind == "manybody" else -1
    if env[0] == "x":
        pin, pcut = env[1], env[2]
        # weight f(y)^2 = (1+y)^(2 pin) (1-y)^(2 pcut); in v = -y the exponents swap
        wpin, wpcut = (2 * pin, 2 * pcut) if sign > 0 else (2 * pcut, 2 * pin)
        env_coeffs = _binomial_poly(pin, pcut)
        poly_env, env_deg = True, pin + pcut
    else:
        wpin = wpcut = 0
        env_coeffs, poly_env, env_deg = None, False, None
    monic, alpha, norm2 = _stieltjes(wpin, wpcut, nfunc)
    return RadialPolynomialForm(kind=kind, envelope=env, nfunc=nfunc, variable_sign=sign,
                                polynomial_envelope=poly_env, envelope_degree=env_deg,
                                envelope_coeffs=env_coeffs, monic=monic, alpha=alpha, norm2=norm2)


# ----------------------------------------------------------------------------- SLPs
def _f(x: float) -> sp.Float:
    """A float constant that prints with all 17 significant digits."""
    return sp.Float(float(x), 17)


def _radial_slp(spec: BasisSpec, zi: int, zj: int, kind: str, nfunc: int | None,
                prefix: str) -> tuple[SLP, int]:
    tp = transform_params(spec, zi, zj, kind)
    form = radial_polynomial_form(spec, zi, zj, kind, nfunc)
    rec = form.recurrence()
    b = SLPBuilder(inputs=("r",), wrt=("r",), prefix=prefix)
    r = b.input("r")
    s = b.assign(r * _f(1.0 / tp.r0))
    sp_ = b.assign(s**tp.p)
    if tp.q > tp.p:
        sd = sp_ if tp.q == 2 * tp.p else b.assign(s ** (tp.q - tp.p))
        g = b.assign(sp_ * sd / (1 + sd))  # s^q / (1 + s^(q-p))
        x = b.assign(1 / (1 + _f(tp.a) * g))
    else:
        x = b.assign(1 / (1 + _f(tp.a / 2) * sp_))
    # polynomial variable v = sign * y = sign * (y0 + y1 x)
    sg = form.variable_sign
    v = b.assign(_f(sg * tp.y0) + _f(sg * tp.y1) * x)
    env_spec = form.envelope
    if env_spec[0] == "x":
        pin, pcut = env_spec[1], env_spec[2]
        # f = (1 + y)^pin (1 - y)^pcut with y = sg * v
        env = b.assign((1 + sg * v) ** pin * (1 - sg * v) ** pcut)
    else:
        pe = env_spec[1]
        sc = tp.rcut / tp.r0
        env = b.assign(s ** (-pe) + _f(-sc ** (-pe) - pe * sc ** (-pe)) + _f(pe * sc ** (-pe - 1)) * s)
    vals = []
    for n, (A, B, C) in enumerate(rec, start=1):
        if n == 1:
            vals.append(env if A == 1.0 else b.assign(_f(A) * env))
        elif n == 2:
            vals.append(b.assign((_f(A) * v + _f(B)) * vals[0]))
        else:
            vals.append(b.assign((_f(A) * v + _f(B)) * vals[-1] + _f(C) * vals[-2]))
    nf = len(vals)
    b.output(vals, [f"R_{n}" for n in range(1, nf + 1)])
    b.output([b.deriv(vv, "r") for vv in vals], [f"dR_{n}" for n in range(1, nf + 1)])
    return b.build(), nf


def manybody_radial_slp(spec: BasisSpec, zi: int, zj: int, nfunc: int | None = None,
                        prefix: str = "t") -> tuple[SLP, int]:
    """SLP r -> (R_1..R_nfunc, dR_1..dR_nfunc) of the many-body radial basis of bond (zi, zj)."""
    return _radial_slp(spec, zi, zj, "manybody", nfunc, prefix)


def pair_radial_slp(spec: BasisSpec, zi: int, zj: int, nfunc: int | None = None,
                    prefix: str = "t") -> tuple[SLP, int]:
    """SLP r -> (R_1..R_nfunc, dR_1..dR_nfunc) of the pair radial basis of bond (zi, zj)."""
    return _radial_slp(spec, zi, zj, "pair", nfunc, prefix)


def manybody_radial_block(spec: BasisSpec, zi: int, zj: int, nfunc: int | None = None) -> RadialBlock:
    """:class:`RadialBlock` (analytic SLP) of the many-body radial basis of bond (zi, zj)."""
    slp, nf = manybody_radial_slp(spec, zi, zj, nfunc)
    return RadialBlock(zi=zi, zj=zj, rcut=spec.rcut_pair(zi, zj), nfunc=nf, slp=slp)


def pair_radial_block(spec: BasisSpec, zi: int, zj: int, nfunc: int | None = None) -> RadialBlock:
    """:class:`RadialBlock` (analytic SLP) of the pair radial basis of bond (zi, zj)."""
    slp, nf = pair_radial_slp(spec, zi, zj, nfunc)
    return RadialBlock(zi=zi, zj=zj, rcut=spec.pair_rcut_pair(zi, zj), nfunc=nf, slp=slp)


# ----------------------------------------------------------------------------- numpy reference
def _jacobi_orthonormal(k: int, alpha: int, beta: int, v):
    """Jacobi P_k^{(alpha, beta)}(v) (weight (1-v)^alpha (1+v)^beta) orthonormal for dv/2,
    and its derivative.  Closed-form norms; scipy's eval_jacobi for the values."""
    logh = ((alpha + beta + 1) * np.log(2.0) - np.log(2 * k + alpha + beta + 1)
            + gammaln(k + alpha + 1) + gammaln(k + beta + 1) - gammaln(k + alpha + beta + 1)
            - gammaln(k + 1))
    scale = np.exp(-0.5 * (logh - np.log(2.0)))  # normalise w.r.t. dv/2
    val = eval_jacobi(k, alpha, beta, v) * scale
    if k == 0:
        der = np.zeros_like(v)
    else:
        der = 0.5 * (k + alpha + beta + 1) * eval_jacobi(k - 1, alpha + 1, beta + 1, v) * scale
    return val, der


def _radial_numpy(spec: BasisSpec, zi: int, zj: int, r, kind: str, nfunc: int | None):
    tp = transform_params(spec, zi, zj, kind)
    nf = _default_nfunc(spec, kind) if nfunc is None else nfunc
    r = np.asarray(r, dtype=float)
    x = agnesi_x(r, tp.r0, tp.p, tp.q, tp.a)
    y = tp.y0 + tp.y1 * x
    dy = tp.y1 * agnesi_dx(r, tp.r0, tp.p, tp.q, tp.a)
    env = spec.envelope if kind == "manybody" else spec.pair_envelope
    sg = 1 if kind == "manybody" else -1
    v = sg * y
    if env[0] == "x":
        pin, pcut = env[1], env[2]
        f = (1 + y) ** pin * (1 - y) ** pcut
        dfdy = pin * (1 + y) ** max(pin - 1, 0) * (1 - y) ** pcut - pcut * (1 + y) ** pin * (1 - y) ** max(pcut - 1, 0)
        df = dfdy * dy
        # weight in v: (1+y)^(2pin)(1-y)^(2pcut); scipy's (alpha, beta) multiply (1-v), (1+v)
        alpha, beta = (2 * pcut, 2 * pin) if sg > 0 else (2 * pin, 2 * pcut)
    else:
        pe = env[1]
        s, sc = r / tp.r0, tp.rcut / tp.r0
        f = s ** (-pe) - sc ** (-pe) + pe * sc ** (-pe - 1) * (s - sc)
        df = (-pe * s ** (-pe - 1) + pe * sc ** (-pe - 1)) / tp.r0
        alpha = beta = 0
    R = np.empty(r.shape + (nf,))
    dR = np.empty(r.shape + (nf,))
    for n in range(1, nf + 1):
        if alpha == 0 and beta == 0:
            k = n - 1
            P = np.sqrt(2 * k + 1) * eval_legendre(k, v)
            dP = (np.sqrt(2 * k + 1) * 0.5 * (k + 1) * eval_jacobi(k - 1, 1, 1, v)) if k > 0 else np.zeros_like(v)
        else:
            P, dP = _jacobi_orthonormal(n - 1, alpha, beta, v)
        R[..., n - 1] = f * P
        dR[..., n - 1] = df * P + f * dP * sg * dy
    inside = (r < tp.rcut)[..., None]
    return np.where(inside, R, 0.0), np.where(inside, dR, 0.0)


def manybody_radial_numpy(spec: BasisSpec, zi: int, zj: int, r, nfunc: int | None = None):
    """Reference values and r-derivatives of the many-body radial basis, shape r.shape + (nfunc,).

    Independent of the SLP: closed-form transform and envelope, scipy Jacobi polynomials
    with closed-form norms.  Zero for r >= rcut.
    """
    return _radial_numpy(spec, zi, zj, r, "manybody", nfunc)


def pair_radial_numpy(spec: BasisSpec, zi: int, zj: int, r, nfunc: int | None = None):
    """Reference values and r-derivatives of the pair radial basis, shape r.shape + (nfunc,)."""
    return _radial_numpy(spec, zi, zj, r, "pair", nfunc)
