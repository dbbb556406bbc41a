"""PACE's radial functions and the spline tables PACE evaluates them from (production code
of the PACE import; :func:`pace_radial_block` gives the IR's :class:`RadialBlock`).

* radial basis g_k (ChebExpCos, ChebPow, ChebLinear, SBessel), R_nl = Σ_k crad[n,l,k] g_k and
  the core repulsion φ (exp-type for inner cutoff ``density``/``distance``, ZBL for ``zbl``),
  as ML-PACE's ``ace_radial.cpp`` defines them (Lysogorskiy et al. 2021).

**Splines** (``radial="spline"``, the default, = what PACE does).  For every bond PACE tabulates
g_k, R_nl and φ on ``nlut = int(rcut / deltaSplineBins)`` bins of width ``h = rcut / nlut``
(*not* exactly deltaSplineBins), knots r_n = n·h for n = 1..nlut.  Bin n (n = 1..nlut−1)
holds the cubic Hermite polynomial in t = r/h − n through (f(r_n), h f'(r_n)) and
(f(r_{n+1}), h f'(r_{n+1})), i.e. c0 = f_n, c1 = h f'_n, c2 = 3(f_{n+1}−f_n) − h f'_{n+1} − 2h f'_n,
c3 = −2(f_{n+1}−f_n) + h f'_{n+1} + h f'_n; f(r) = c0 + c1 t + c2 t² + c3 t³,
f'(r) = (c1 + 2c2 t + 3c3 t²)/h.  The knot r_nlut ≈ rcut holds the function's own value there
(≈ 0), the right end of the last used bin.  r ≥ nlut·h gives 0; r < h (bin 0) makes PACE stop
("Encountered very small distance"), so does this reference (StructureError).
``radial="analytic"`` evaluates the same functions directly instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from ase.data import atomic_numbers

from ..errors import ModelFileError, SpecError
from ..ir.model import RadialBlock, SplineTable
from .pace import PaceBond, PacePotential

__all__ = [
    "cutoff_func_poly",
    "radial_basis",
    "core_repulsion",
    "bond_functions",
    "PaceSpline",
    "PaceSplineMeta",
    "pace_spline_tables",
    "pace_radial_block",
]

ZBL_K = 14.399645351950543  # e²/(4πε0) in eV·Å, as in ace_radial.cpp
_ZBL_C = (0.18175, 0.50986, 0.28022, 0.02817)
_ZBL_E = (-3.19980, -0.94229, -0.40290, -0.20162)


# ============================================================================ radial pieces
def cutoff_func_poly(r, r_in, delta):
    """PACE's polynomial switch: 1 for r ≤ r_in − δ, 0 for r ≥ r_in, quintic in between.
    Returns (f, df/dr)."""
    r, r_in, delta = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (r, r_in, delta)))
    lo = r <= r_in - delta
    hi = (~lo) & (r >= r_in)
    mid = ~(lo | hi)
    fc = np.where(lo, 1.0, 0.0)
    dfc = np.zeros(r.shape)
    if np.any(mid):
        d = delta[mid]
        x = 1.0 - 2.0 * (1.0 + (r[mid] - r_in[mid]) / d)
        fc[mid] = 0.5 + 7.5 / 2.0 * (x / 4.0 - x**3 / 6.0 + x**5 / 20.0)
        dfc[mid] = -7.5 / d * (0.25 - x * x / 2.0 + x**4 / 4.0)
    return fc, dfc


def _cheb(n: int, x):
    """T_0..T_n(x) and their derivatives (via U_{m-1}), shapes (len(x), n+1)."""
    x = np.asarray(x, dtype=float)
    T = np.empty(x.shape + (n + 1,))
    U = np.empty(x.shape + (n + 1,))
    dT = np.zeros(x.shape + (n + 1,))
    T[..., 0] = 1.0
    U[..., 0] = 1.0
    if n >= 1:
        T[..., 1] = x
        U[..., 1] = 2.0 * x
    for m in range(1, n):
        T[..., m + 1] = 2.0 * x * T[..., m] - T[..., m - 1]
        U[..., m + 1] = 2.0 * x * U[..., m] - U[..., m - 1]
    for m in range(1, n + 1):
        dT[..., m] = m * U[..., m - 1]
    return T, dT


def _sinc(x):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(x != 0.0, np.sin(x) / np.where(x != 0.0, x, 1.0), 1.0)


def _dsinc(x):
    with np.errstate(invalid="ignore", divide="ignore"):
        xs = np.where(x != 0.0, x, 1.0)
        return np.where(x != 0.0, (np.cos(x) * x - np.sin(x)) / (xs * xs), 0.0)


def _sbessel(r, rc, K):
    g = np.zeros(r.shape + (K,))
    dg = np.zeros(r.shape + (K,))
    if K == 0:
        return g, dg

    def fn(n):
        pref = (-1.0) ** n * math.sqrt(2.0) * math.pi / rc**1.5 * (n + 1) * (n + 2) / math.sqrt((n + 1) ** 2 + (n + 2) ** 2)
        a, b = (n + 1) * math.pi / rc, (n + 2) * math.pi / rc
        return pref * (_sinc(r * a) + _sinc(r * b)), pref * (_dsinc(r * a) * a + _dsinc(r * b) * b)

    g[:, 0], dg[:, 0] = fn(0)
    d_prev = 1.0
    for n in range(1, K):
        en = n * n * (n + 2) ** 2 / (4.0 * (n + 1) ** 4 + 1.0)
        dn = 1.0 - en / d_prev
        f, df = fn(n)
        g[:, n] = 1.0 / math.sqrt(dn) * (f + math.sqrt(en / d_prev) * g[:, n - 1])
        dg[:, n] = 1.0 / math.sqrt(dn) * (df + math.sqrt(en / d_prev) * dg[:, n - 1])
        d_prev = dn
    inside = (r < rc)[:, None]
    return np.where(inside, g, 0.0), np.where(inside, dg, 0.0)


def radial_basis(bond: PaceBond, r, K: int | None = None):
    """g_k(r), g_k'(r) for k < K (default: the bond's nradbase), shapes (len(r), K).

    Follows ``ACERadialFunctions::radbase``: zero for r ≤ r_in − δ_in or r ≥ rcut; for inner
    cutoff ``distance`` multiplied by 1 − f_in(r); for ``zbl`` PACE resets the inner cutoff
    (r_in := [δ_in == 0], i.e. no damping unless δ_in == 0)."""
    r = np.atleast_1d(np.asarray(r, dtype=float))
    K = bond.nradbase if K is None else K
    if bond.radbasename == "ACE.jl.base":
        return ships_radial(bond, r, K)
    cut, dcut, lam = bond.rcut, bond.dcut, bond.radparameters[0]
    cut_in, dcut_in = bond.rcut_in, bond.dcut_in
    if bond.inner_cutoff_type == "zbl":
        cut_in = 1.0 if dcut_in == 0 else 0.0
    zero = (r <= cut_in - dcut_in) | (r >= cut)
    rs = np.where(zero, 0.5 * cut, r)
    g = np.zeros(r.shape + (K,))
    dg = np.zeros(r.shape + (K,))
    name = bond.radbasename
    if K == 0:
        return g, dg
    if name == "ChebExpCos":
        y1 = np.exp(-lam * rs / cut)
        y2 = math.exp(-lam)
        x = 1.0 - 2.0 * ((y1 - y2) / (1.0 - y2))
        dx = 2.0 * (lam / cut) * (y1 / (1.0 - y2))
        T, dT = _cheb(K, x)
        g[:, 0] = T[:, 0]
        dg[:, 0] = dT[:, 0] * dx
        for n in range(2, K + 1):
            g[:, n - 1] = 0.5 - 0.5 * T[:, n - 1]
            dg[:, n - 1] = -0.5 * dT[:, n - 1] * dx
        env = 0.5 * (1.0 + np.cos(math.pi * rs / cut))
        denv = -0.5 * np.sin(math.pi * rs / cut) * math.pi / cut
        dg = g * denv[:, None] + dg * env[:, None]
        g = g * env[:, None]
        x0 = cut - dcut
        tail = rs > x0
        if np.any(tail):
            fcut = 0.5 * (1.0 + np.cos(math.pi * (rs[tail] - x0) / dcut))
            dfcut = -0.5 * np.sin(math.pi * (rs[tail] - x0) / dcut) * math.pi / dcut
            dg[tail] = g[tail] * dfcut[:, None] + dg[tail] * fcut[:, None]
            g[tail] = g[tail] * fcut[:, None]
    elif name in ("ChebPow", "ChebLinear"):
        if name == "ChebPow":
            y = 1.0 - rs / cut
            dy = np.power(y, lam - 1.0)
            y = dy * y
            dy = -lam / cut * dy
            x = 2.0 * (1.0 - y) - 1.0
            dx = -2.0 * dy
        else:
            x = 1.0 - rs / cut
            dx = np.full_like(rs, -1.0 / cut)
        T, dT = _cheb(K, x)
        g = 0.5 - 0.5 * T[:, 1:]
        dg = -0.5 * dT[:, 1:] * dx[:, None]
    elif name == "SBessel":
        g, dg = _sbessel(rs, cut, K)
    else:  # pragma: no cover - rejected by the readers
        raise SpecError(f"unknown radial basis {name!r}")
    if bond.inner_cutoff_type in ("distance", "zbl"):
        fc, dfc = cutoff_func_poly(rs, cut_in, dcut_in)
        fc, dfc = 1.0 - fc, -dfc
        dg = dg * fc[:, None] + g * dfc[:, None]
        g = g * fc[:, None]
    g[zero] = 0.0
    dg[zero] = 0.0
    return g, dg


def ships_radial(bond, r, K: int):
    """ACEpotentials.jl's ``ACE.jl.base`` basis (PACE's ``SHIPsRadPolyBasis::calcP``), written
    here from the definition: x = ((1+r0)/(1+r))^p, envelope (x−xl)^pl (x−xr)^pr on
    [xl, xr] (0 outside), P_0 = A_0 f, P_1 = (A_1 x + B_1) P_0,
    P_n = (A_n x + B_n) P_{n−1} + C_n P_{n−2}; zero for r ≥ rcut.  g_k = P_k."""
    s = bond.ships
    r = np.atleast_1d(np.asarray(r, dtype=float))
    x = ((1.0 + s.r0) / (1.0 + r)) ** s.p
    dx = -s.p * (1.0 + s.r0) ** s.p / (1.0 + r) ** (s.p + 1)
    inside = (x >= s.xl) & (x <= s.xr) & (r < bond.rcut)
    a, b = x - s.xl, x - s.xr
    f = a**s.pl * b**s.pr
    df = (s.pl * a ** max(s.pl - 1, 0) * b**s.pr if s.pl else 0.0) + (s.pr * a**s.pl * b ** max(s.pr - 1, 0) if s.pr else 0.0)
    f, df = np.where(inside, f, 0.0), np.where(inside, df * dx, 0.0)
    g = np.zeros(r.shape + (K,))
    dg = np.zeros(r.shape + (K,))
    if K == 0:
        return g, dg
    g[:, 0], dg[:, 0] = s.A[0] * f, s.A[0] * df
    for n in range(1, K):
        c2 = s.C[n] if n >= 2 else 0.0
        gm2 = g[:, n - 2] if n >= 2 else 0.0
        dgm2 = dg[:, n - 2] if n >= 2 else 0.0
        lin = s.A[n] * x + s.B[n]
        g[:, n] = lin * g[:, n - 1] + c2 * gm2
        dg[:, n] = s.A[n] * dx * g[:, n - 1] + lin * dg[:, n - 1] + c2 * dgm2
    return g, dg


def _zbl_pair(r, Zi, Zj, a):
    """E_ij = φ(r/a)/r and its first two derivatives."""
    phi = np.zeros_like(r)
    dphi = np.zeros_like(r)
    d2phi = np.zeros_like(r)
    x = r / a
    for c, e in zip(_ZBL_C, _ZBL_E):
        t = c * np.exp(e * x)
        phi += t
        t = t * e
        dphi += t
        t = t * e
        d2phi += t
    E = 1.0 / r * phi
    dE = (-1.0 / (r * r)) * phi + 1.0 / r * dphi / a
    d2E = (2.0 / (r * r * r)) * phi + 2.0 * (-1.0 / (r * r)) * dphi / a + (1.0 / r) * d2phi / (a * a)
    return E, dE, d2E


def core_repulsion(bond: PaceBond, r, Zi: int = 0, Zj: int = 0):
    """φ_core(r), φ_core'(r) of the bond (``radcore`` or ``ZBL`` of ace_radial.cpp)."""
    r = np.atleast_1d(np.asarray(r, dtype=float))
    if bond.inner_cutoff_type == "zbl":
        cut_out = bond.rcut
        cut_in = bond.rcut - bond.dcut
        rs = np.where(r >= cut_out, 0.5 * cut_out, r)
        a = 0.46850 / (Zi**0.23 + Zj**0.23)
        E, dE, _ = _zbl_pair(rs, Zi, Zj, a)
        Ec, dEc, d2Ec = (float(v[0]) for v in _zbl_pair(np.array([cut_out]), Zi, Zj, a))
        drcut = cut_out - cut_in
        A = (-3 * dEc + drcut * d2Ec) / (drcut * drcut)
        B = (2 * dEc - drcut * d2Ec) / (drcut * drcut * drcut)
        C = -Ec + 1.0 / 2 * drcut * dEc - 1.0 / 12 * (drcut * drcut) * d2Ec
        d = rs - cut_in
        mid = (rs > cut_in) & (rs < cut_out)
        S = np.where(rs <= cut_in, C, np.where(rs >= cut_out, 0.0, A / 3 * d**3 + B / 4 * d**4 + C))
        dS = np.where(mid, A * d**2 + B * d**3, 0.0)
        pre = bond.prehc * ZBL_K / 2 * Zi * Zj
        cr = pre * (E + S)
        dcr = pre * (dE + dS)
        fc, dfc = cutoff_func_poly(rs, cut_out, cut_out - cut_in)
        cr, dcr = cr * fc, dcr * fc + cr * dfc
        out = r >= cut_out
        return np.where(out, 0.0, cr), np.where(out, 0.0, dcr)
    pre, lam = abs(bond.prehc), abs(bond.lambdahc)
    lr2 = lam * r * r
    ok = lr2 < 50.0
    y = np.exp(-np.where(ok, lr2, 0.0))
    cr = pre * y / r
    dcr = -pre * y * (2.0 * lr2 + 1.0) / (r * r)
    env = 0.5 * (1.0 + np.cos(math.pi * r / bond.rcut))
    denv = -0.5 * np.sin(math.pi * r / bond.rcut) * math.pi / bond.rcut
    dcr = cr * denv + dcr * env
    cr = cr * env
    cr, dcr = np.where(ok, cr, 0.0), np.where(ok, dcr, 0.0)
    if bond.inner_cutoff_type == "distance":
        fc, dfc = cutoff_func_poly(r, bond.rcut_in, bond.dcut_in)
        cr, dcr = cr * fc, dcr * fc + cr * dfc
    return cr, dcr


def _atomic_number(el: str) -> int:
    return int(atomic_numbers[el])


def combine_in_order(g: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``g @ c.T`` (R_c(r) = Σ_k c_ck g_k(r)) summed in k order, PACE's order, without BLAS: a
    threaded GEMM rounds differently with the number of threads, and the spline tables built
    from these values (hence a model's signature and its kernel cache key) must not depend on
    ``OMP_NUM_THREADS``."""
    out = np.zeros((g.shape[0], c.shape[0]))
    for k in range(c.shape[1]):
        out += g[:, k, None] * c[None, :, k]
    return out


def bond_functions(pot: PacePotential, mu_i: int, mu_j: int, r):
    """All radial functions of a bond in the IR layout: [g_0..g_{K−1}, R_{n,l} (index
    K + n(lmax+1) + l), φ_core]; returns (values, derivatives), shape (len(r), nfunc)."""
    bond = pot.bonds[(mu_i, mu_j)]
    g, dg = radial_basis(bond, r)
    c = bond.crad.reshape(-1, bond.nradbase)  # (N*(L+1), K)
    R, dR = combine_in_order(g, c), combine_in_order(dg, c)
    Zi, Zj = _atomic_number(pot.elements[mu_i]), _atomic_number(pot.elements[mu_j])
    phi, dphi = core_repulsion(bond, r, Zi, Zj)
    return np.concatenate([g, R, phi[:, None]], axis=1), np.concatenate([dg, dR, dphi[:, None]], axis=1)


# ================================================================================== splines
class PaceSpline:
    """PACE's ``SplineInterpolator`` for a set of functions f(r) (see the module docstring)."""

    def __init__(self, func, rcut: float, delta: float):
        if not delta > 0:
            raise SpecError("deltaSplineBins must be positive")
        self.rcut = float(rcut)
        self.nlut = int(rcut / delta)
        if self.nlut < 2:
            raise SpecError(f"rcut={rcut} is shorter than two spline bins of {delta}")
        self.rscale = float(self.nlut) / self.rcut
        self.h = 1.0 / self.rscale
        n = np.arange(1, self.nlut + 1, dtype=float)
        knots = self.h * n
        f, df = func(knots)  # (nlut, nfunc)
        f0 = f
        f0d1 = df * self.h
        f1 = np.concatenate([f[1:], np.zeros_like(f[:1])])
        f1d1 = np.concatenate([f0d1[1:], np.zeros_like(f0d1[:1])])
        c = np.empty((self.nlut + 1, f.shape[1], 4))
        c[0] = 0.0
        c[1:, :, 0] = f0
        c[1:, :, 1] = f0d1
        c[1:, :, 2] = 3.0 * (f1 - f0) - f1d1 - 2.0 * f0d1
        c[1:, :, 3] = -2.0 * (f1 - f0) + f1d1 + f0d1
        self.table = c  # entry n covers [n h, (n+1) h); entries 0 and nlut are never used

    @property
    def nfunc(self) -> int:
        return self.table.shape[1]

    def evaluate(self, r):
        """Values and derivatives (len(r), nfunc) exactly as ``SplineInterpolator::calcSplines``;
        raises ValueError for r < h ("very small distance")."""
        r = np.asarray(r, dtype=float)
        x = r * self.rscale
        nl = np.floor(x).astype(np.int64)
        if np.any(nl <= 0):
            raise ValueError("Encountered very small distance")
        inside = nl < self.nlut
        nlc = np.minimum(nl, self.nlut - 1)
        wl = (x - nl)[:, None]
        wl2 = wl * wl
        wl3 = wl2 * wl
        c = self.table[nlc]
        val = c[..., 0] + c[..., 1] * wl + c[..., 2] * wl2 + c[..., 3] * wl3
        der = (c[..., 1] + c[..., 2] * (2.0 * wl) + c[..., 3] * (3.0 * wl2)) * self.rscale
        m = inside[:, None]
        return np.where(m, val, 0.0), np.where(m, der, 0.0)

    def ir_coeffs(self) -> np.ndarray:
        """Table in ``SplineTable`` layout (nlut, nfunc, 4): bin b ≥ 1 is PACE's entry b; bin 0
        (where PACE stops) continues bin 1's cubic to t ∈ [−1, 0)."""
        c = self.table[: self.nlut].copy()
        c1 = self.table[1]
        c[0, :, 0] = c1[:, 0] - c1[:, 1] + c1[:, 2] - c1[:, 3]
        c[0, :, 1] = c1[:, 1] - 2.0 * c1[:, 2] + 3.0 * c1[:, 3]
        c[0, :, 2] = c1[:, 2] - 3.0 * c1[:, 3]
        c[0, :, 3] = c1[:, 3]
        return c


@dataclass(frozen=True)
class PaceSplineMeta:
    """Layout and provenance of a bond's spline table (see :func:`pace_spline_tables`).

    Functions: ``g`` = slice of g_0..g_{K−1}; ``R`` = slice of R_{n,l} at
    ``R.start + n (lmax+1) + l``; ``core`` = index of φ_core.  ``h = rcut / nlut`` with
    ``nlut = int(rcut / deltaSplineBins)``; PACE refuses r < ``r_min`` (= h).
    """

    mu_i: int
    mu_j: int
    nradbase: int
    nradmax: int
    lmax: int
    rcut: float
    h: float
    nlut: int
    delta_spline_bins: float
    r_min: float
    g: slice
    R: slice
    core: int
    inner_cutoff_type: str
    rcut_in: float
    dcut_in: float


def _bond_spline(pot: PacePotential, mu_i: int, mu_j: int) -> PaceSpline:
    """The bond's spline table; radial functions or a core repulsion that overflow on the knots
    (parameters within the readers' limits can still combine badly) are a ModelFileError."""
    bond = pot.bonds[(mu_i, mu_j)]
    fld = f"bonds[{mu_i},{mu_j}]"
    why = "the radial functions or the core repulsion are not finite on the spline knots (0, rcut]"
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        try:
            sp = PaceSpline(lambda r: bond_functions(pot, mu_i, mu_j, r), bond.rcut, pot.delta_spline_bins)
        except (OverflowError, ZeroDivisionError, FloatingPointError) as exc:
            raise ModelFileError(pot.source or None, fld, f"{why} ({exc})") from None
    if not np.isfinite(sp.table).all():
        raise ModelFileError(pot.source or None, fld, why)
    return sp


def pace_spline_tables(pot: PacePotential, mu_i: int, mu_j: int, *, _spline: PaceSpline | None = None):
    """PACE's splines of bond (μi, μj) as an IR :class:`SplineTable` plus :class:`PaceSplineMeta`.

    Functions in order [g_0..g_{K−1}, R_{n,l} (n-major, l-minor), φ_core]; ``coeffs[b, f, :]``
    are PACE's Hermite coefficients of bin b in t = r/h − b (no conversion needed: PACE's
    table is already in local monomials); bin 0 is PACE's bin 1 continued (PACE itself
    refuses r < h)."""
    bond = pot.bonds[(mu_i, mu_j)]
    sp = _spline if _spline is not None else _bond_spline(pot, mu_i, mu_j)
    K, N, L1 = bond.nradbase, bond.nradmax, bond.lmax + 1
    table = SplineTable(rcut=bond.rcut, h=sp.h, coeffs=sp.ir_coeffs())
    meta = PaceSplineMeta(
        mu_i=mu_i, mu_j=mu_j, nradbase=K, nradmax=N, lmax=bond.lmax, rcut=bond.rcut, h=sp.h, nlut=sp.nlut,
        delta_spline_bins=pot.delta_spline_bins, r_min=sp.h, g=slice(0, K), R=slice(K, K + N * L1), core=K + N * L1,
        inner_cutoff_type=bond.inner_cutoff_type, rcut_in=bond.rcut_in, dcut_in=bond.dcut_in,
    )
    return table, meta


def _bond_table_key(pot: PacePotential, mu_i: int, mu_j: int) -> tuple:
    """What a bond's spline table depends on: the bond's parameters, the spline step and, for
    a ZBL core, the two atomic numbers."""
    bond = pot.bonds[(mu_i, mu_j)]
    z = ((_atomic_number(pot.elements[mu_i]), _atomic_number(pot.elements[mu_j]))
         if bond.inner_cutoff_type == "zbl" else None)
    return (bond._scalars(), bond.crad.tobytes(), float(pot.delta_spline_bins), z)


def pace_radial_block(pot: PacePotential, mu_i: int, mu_j: int, mode: str = "spline", *,
                      tables: dict | None = None) -> RadialBlock:
    """The bond's radial functions as an IR :class:`RadialBlock` (PACE's spline tables).

    ``tables``: a dict shared by the bonds of one potential; bonds with equal parameters (the
    two orders of a pair, or many pairs of a many-element file) then get the same
    :class:`SplineTable` object, computed once (the kernels also store it once)."""
    if mode != "spline":
        raise SpecError(
            f"pace_radial_block: mode {mode!r} is not available; PACE's radial functions are piecewise "
            "(cos tapers, inner-cutoff switches) and PACE itself evaluates them from splines - use mode='spline'"
        )
    if tables is None:
        table, meta = pace_spline_tables(pot, mu_i, mu_j)
    else:
        key = _bond_table_key(pot, mu_i, mu_j)
        if key not in tables:
            tables[key] = pace_spline_tables(pot, mu_i, mu_j)
        table, meta = tables[key]
    return RadialBlock(
        zi=mu_i, zj=mu_j, rcut=meta.rcut, nfunc=table.nfunc, spline=table, core=meta.core,
        r_in=meta.rcut_in, delta_in=meta.dcut_in,
    )
