"""PACE (ML-PACE / pyace 0.4.0rc1) evaluated in plain NumPy: the independent reference.

Implements FORMATS.md §1 and §5–8 the way ``ACECTildeEvaluator::compute_atom`` does:

* radial basis g_k (ChebExpCos, ChebPow, ChebLinear, SBessel, ACEpotentials.jl's ACE.jl.base),
  R_nl = Σ_k crad[n,l,k] g_k and
  the core repulsion φ (exp-type for inner cutoff ``density``/``distance``, ZBL for ``zbl``);
* complex Y_lm normalised to Y_00 = 1 with the Condon–Shortley phase; only m ≥ 0 is
  accumulated, A_{l,−m} = (−1)^m conj(A_{lm});
* rank 1 on g_k, rank > 1 on Re(c̃ Π A) over PACE's half basis;
* FinnisSinclair / FinnisSinclairShiftedScaled embeddings with any ndensity, ``E0``, and the
  three inner cutoffs (ρ_core energy switch, distance, ZBL switched on the nearest neighbour).

Forces and stress are analytic: the pair force f_ij = ∂E_i/∂r_ij (r_ij = r_j − r_i) is added to
atom i and subtracted from atom j; the stress is (1/V) Σ_pairs f_ij ⊗ r_ij (ASE sign and Voigt
order xx yy zz yz xz xy).

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
import scipy.sparse as sps
from ase.data import atomic_numbers
from ase.neighborlist import neighbor_list

from ..errors import SpecError, StructureError
from ..io.pace import PaceBond, PacePotential
from ..ir.model import RadialBlock, SplineTable

__all__ = [
    "cutoff_func_poly",
    "radial_basis",
    "ships_radial",
    "core_repulsion",
    "bond_functions",
    "PaceSpline",
    "PaceSplineMeta",
    "pace_spline_tables",
    "pace_radial_block",
    "ylm_pace",
    "embedding",
    "PaceReference",
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


def bond_functions(pot: PacePotential, mu_i: int, mu_j: int, r):
    """All radial functions of a bond in the IR layout: [g_0..g_{K−1}, R_{n,l} (index
    K + n(lmax+1) + l), φ_core]; returns (values, derivatives), shape (len(r), nfunc)."""
    bond = pot.bonds[(mu_i, mu_j)]
    g, dg = radial_basis(bond, r)
    c = bond.crad.reshape(-1, bond.nradbase)  # (N*(L+1), K)
    R, dR = g @ c.T, dg @ c.T
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
    bond = pot.bonds[(mu_i, mu_j)]
    return PaceSpline(lambda r: bond_functions(pot, mu_i, mu_j, r), bond.rcut, pot.delta_spline_bins)


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


def pace_radial_block(pot: PacePotential, mu_i: int, mu_j: int, mode: str = "spline") -> RadialBlock:
    """The bond's radial functions as an IR :class:`RadialBlock` (PACE's spline tables)."""
    if mode != "spline":
        raise SpecError(
            f"pace_radial_block: mode {mode!r} is not available; PACE's radial functions are piecewise "
            "(cos tapers, inner-cutoff switches) and PACE itself evaluates them from splines - use mode='spline'"
        )
    table, meta = pace_spline_tables(pot, mu_i, mu_j)
    return RadialBlock(
        zi=mu_i, zj=mu_j, rcut=meta.rcut, nfunc=table.nfunc, spline=table, core=meta.core,
        r_in=meta.rcut_in, delta_in=meta.dcut_in,
    )


# ======================================================================= spherical harmonics
def _lm_pos(L: int):
    """Index arrays of the m ≥ 0 layout k = l(l+1)/2 + m."""
    ls, ms = [], []
    for l in range(L + 1):
        for m in range(l + 1):
            ls.append(l)
            ms.append(m)
    return np.array(ls), np.array(ms)


def ylm_pace(rhat, L: int):
    """PACE's complex Y_lm (Y_00 = 1, Condon–Shortley) for m ≥ 0 and their tangential gradients.

    Y_lm(r̂) = √((2l+1)(l−m)!/(l+m)!) Q_lm(z) (x + iy)^m with Q_lm = (−1)^m d^m P_l/dz^m.
    Returns Y (n, nlm) and DY (n, nlm, 3) with DY = (I − r̂r̂ᵀ)∇Y, so that
    ∂Y(r̂_ij)/∂r_ij = DY / r.  Layout k = l(l+1)/2 + m."""
    rhat = np.asarray(rhat, dtype=float)
    x, y, z = rhat[:, 0], rhat[:, 1], rhat[:, 2]
    n = len(z)
    Q = np.zeros((L + 2, L + 2, n))  # Q[l, m]
    for m in range(L + 1):
        Q[m, m] = (-1.0) ** m * _double_factorial(2 * m - 1)
        if m + 1 <= L:
            Q[m + 1, m] = (2 * m + 1) * z * Q[m, m]
        for l in range(m + 2, L + 1):
            Q[l, m] = ((2 * l - 1) * z * Q[l - 1, m] - (l + m - 1) * Q[l - 2, m]) / (l - m)
    w = x + 1j * y
    wpow = [np.ones(n, dtype=complex)]
    for m in range(1, L + 1):
        wpow.append(wpow[-1] * w)
    ls, ms = _lm_pos(L)
    Y = np.empty((n, len(ls)), dtype=complex)
    G = np.empty((n, len(ls), 3), dtype=complex)
    for k, (l, m) in enumerate(zip(ls, ms)):
        norm = math.sqrt((2 * l + 1) * math.factorial(l - m) / math.factorial(l + m))
        q, dq = Q[l, m], -Q[l, m + 1]  # dQ_lm/dz = −Q_{l,m+1}
        Y[:, k] = norm * q * wpow[m]
        dw = m * wpow[m - 1] if m > 0 else np.zeros(n, dtype=complex)
        G[:, k, 0] = norm * q * dw
        G[:, k, 1] = norm * q * dw * 1j
        G[:, k, 2] = norm * dq * wpow[m]
    radial = np.einsum("nkc,nc->nk", G, rhat)
    DY = G - radial[:, :, None] * rhat[:, None, :]
    return Y, DY


def _double_factorial(k: int) -> float:
    out = 1.0
    while k > 1:
        out *= k
        k -= 2
    return out


# ================================================================================ embedding
def embedding(npoti: str, fs_parameters, rho):
    """E = Σ_p w_p F(ρ_p; m_p) and ∂E/∂ρ_p for rho of shape (n, ndensity)."""
    rho = np.asarray(rho, dtype=float)
    E = np.zeros(rho.shape[0])
    dE = np.zeros_like(rho)
    for p in range(rho.shape[1]):
        w, m = fs_parameters[2 * p], fs_parameters[2 * p + 1]
        x = rho[:, p]
        if npoti == "FinnisSinclair":
            F, DF = _fexp(x, m)
        elif npoti == "FinnisSinclairShiftedScaled":
            F, DF = _fexp_shifted_scaled(x, m)
        else:  # pragma: no cover - rejected by the readers
            raise SpecError(f"unknown embedding {npoti!r}")
        E += F * w
        dE[:, p] = DF * w
    return E, dE


def _fexp(x, m):
    wexp = 1.0e6
    lam = math.pow(1.0 / wexp, m - 1.0)
    a = np.abs(x)
    big = a > 1e-10
    asafe = np.where(big, a, 1.0)
    am = np.power(asafe, m)
    w3x3 = np.power(wexp * asafe, 3)
    g = np.where(w3x3 > 30.0, 0.0, np.exp(-np.minimum(w3x3, 30.0)))
    sign = np.where(np.signbit(x), -1.0, 1.0)
    omg = 1.0 - g
    F = sign * (omg * am + lam * g * asafe)
    dg = -3.0 * wexp**3 * asafe * asafe * g
    DF = m * np.power(asafe, m - 1.0) * omg - am * dg + lam * dg * asafe + lam * g
    return np.where(big, F, lam * x), np.where(big, DF, lam)


def _fexp_shifted_scaled(rho, mexp):
    if abs(mexp - 1.0) < 1e-10:
        return rho.copy(), np.ones_like(rho)
    a = np.abs(rho)
    exprho = np.exp(-a)
    nx = 1.0 / mexp
    xoff = math.pow(nx, nx / (1.0 - nx)) * exprho
    yoff = math.pow(nx, 1.0 / (1.0 - nx)) * exprho
    sign = np.where(np.signbit(rho), -1.0, 1.0)
    F = sign * (np.power(xoff + a, mexp) - yoff)
    DF = yoff + mexp * (-xoff + 1.0) * np.power(xoff + a, mexp - 1.0)
    return F, DF


# ============================================================================ the evaluator
@dataclass
class _RankGroup:
    idx: np.ndarray  # (M, rank) indices into the flattened A (m from −l..l)
    c: np.ndarray  # (M, ndensity)
    scatter: sps.csr_matrix  # (M*rank, nA): row t*M + k -> idx[k, t]


@dataclass
class _SpeciesProg:
    r1_col: np.ndarray  # (n1,) column index mu*K + k into A1
    r1_c: np.ndarray  # (n1, nd)
    r1_scatter: sps.csr_matrix  # (n1, nel*K) one-hot of r1_col
    groups: list
    emb: object


class PaceReference:
    """PACE's energy, per-atom energies, forces and stress, in NumPy.

    ``radial="spline"`` (default) uses PACE's spline tables, ``"analytic"`` evaluates the radial
    functions directly.  ``compute(atoms)`` returns ``energy``, ``energies``, ``forces`` and,
    for cells periodic in all three directions, ``stress`` (ASE Voigt order, eV/Å³).
    """

    def __init__(self, potential: PacePotential, radial: str = "spline", *, chunk: int = 4096):
        if radial not in ("spline", "analytic"):
            raise SpecError(f"radial must be 'spline' or 'analytic', got {radial!r}")
        pot = potential
        self.pot = pot
        self.radial = radial
        self.chunk = int(chunk)
        self.nel = len(pot.elements)
        self.L = pot.lmax
        self.N = pot.nradmax
        self.K = pot.nradbase
        self.LL = (self.L + 1) ** 2
        self.lpos, self.mpos = _lm_pos(self.L)
        self.nlm = len(self.lpos)
        self.nA = self.nel * self.N * self.LL
        self.rcut = np.array([[pot.bonds[(a, b)].rcut for b in range(self.nel)] for a in range(self.nel)])
        self.rcut_max = float(self.rcut.max())
        self.r_in = np.array([[pot.bonds[(a, b)].rcut_in for b in range(self.nel)] for a in range(self.nel)])
        self.d_in = np.array([[pot.bonds[(a, b)].dcut_in for b in range(self.nel)] for a in range(self.nel)])
        self.ict = pot.inner_cutoff_type
        self.E0 = np.asarray(pot.E0, dtype=float)
        self.splines = {}
        if radial == "spline":
            for key in pot.bonds:
                self.splines[key] = _bond_spline(pot, *key)
        self.progs = [self._program(mu) for mu in range(self.nel)]

    # ------------------------------------------------------------------ set-up
    def _aindex(self, mu, n, l, m):
        return (mu * self.N + n) * self.LL + l * l + l + m

    def _program(self, mu0: int) -> _SpeciesProg:
        emb = self.pot.embeddings[mu0]
        nd = emb.ndensity
        r1_col, r1_c = [], []
        by_rank: dict[int, tuple[list, list]] = {}
        for f in self.pot.functions.get(mu0, []):
            if f.rank == 1:
                r1_col.append(f.mus[0] * self.K + f.ns[0] - 1)
                r1_c.append(f.ctildes[0])
                continue
            base = np.array([self._aindex(mu, n - 1, l, 0) for mu, n, l in zip(f.mus, f.ns, f.ls)])
            lst = by_rank.setdefault(f.rank, ([], []))
            lst[0].append(base[None, :] + f.ms_combs)
            lst[1].append(f.ctildes)
        groups = []
        for rank in sorted(by_rank):
            idx = np.concatenate(by_rank[rank][0]).astype(np.int64)
            c = np.concatenate(by_rank[rank][1])
            M = idx.shape[0]
            rows = np.arange(M * rank)
            cols = idx.T.ravel()
            scatter = sps.csr_matrix((np.ones(M * rank), (rows, cols)), shape=(M * rank, self.nA))
            groups.append(_RankGroup(idx=idx, c=c, scatter=scatter))
        r1_col = np.asarray(r1_col, dtype=np.int64)
        r1_scatter = sps.csr_matrix(
            (np.ones(len(r1_col)), (np.arange(len(r1_col)), r1_col)), shape=(len(r1_col), self.nel * self.K)
        )
        return _SpeciesProg(
            r1_col=r1_col, r1_c=np.asarray(r1_c, dtype=float).reshape(-1, nd), r1_scatter=r1_scatter,
            groups=groups, emb=emb,
        )

    # ------------------------------------------------------------------ radial
    def _radial(self, mi: int, mj: int, r):
        """g (n,K), dg, R (n,N,L+1), dR, φ (n,), dφ, padded to the global sizes."""
        bond = self.pot.bonds[(mi, mj)]
        if self.radial == "spline":
            vals, ders = self.splines[(mi, mj)].evaluate(r)
        else:
            vals, ders = bond_functions(self.pot, mi, mj, r)
        K, N, L1 = bond.nradbase, bond.nradmax, bond.lmax + 1
        n = len(r)
        g = np.zeros((n, self.K))
        dg = np.zeros((n, self.K))
        R = np.zeros((n, self.N, self.L + 1))
        dR = np.zeros((n, self.N, self.L + 1))
        g[:, :K], dg[:, :K] = vals[:, :K], ders[:, :K]
        R[:, :N, :L1] = vals[:, K : K + N * L1].reshape(n, N, L1)
        dR[:, :N, :L1] = ders[:, K : K + N * L1].reshape(n, N, L1)
        return g, dg, R, dR, vals[:, -1], ders[:, -1]

    # ------------------------------------------------------------------ compute
    def compute(self, atoms) -> dict:
        pot, nel = self.pot, self.nel
        nat = len(atoms)
        index = {e: k for k, e in enumerate(pot.elements)}
        spec = np.empty(nat, dtype=np.int64)
        for a, s in enumerate(atoms.get_chemical_symbols()):
            if s not in index:
                raise StructureError(f"atom {a}: element {s} is not in the potential ({', '.join(pot.elements)})")
            spec[a] = index[s]
        if nat == 0:
            raise StructureError("empty structure")
        ii, jj, D = neighbor_list("ijD", atoms, self.rcut_max)
        r = np.sqrt(D[:, 0] * D[:, 0] + D[:, 1] * D[:, 1] + D[:, 2] * D[:, 2])
        keep = r < self.rcut[spec[ii], spec[jj]]
        ii, jj, D, r = ii[keep], jj[keep], D[keep], r[keep]
        P = len(r)
        mui, muj = spec[ii], spec[jj]
        if self.radial == "spline":
            rscale = np.array([[self.splines[(a, b)].rscale for b in range(nel)] for a in range(nel)])
            bad = np.nonzero(r * rscale[mui, muj] < 1.0)[0]
            if len(bad):
                p = bad[0]
                raise StructureError(
                    f"atoms {ii[p]} and {jj[p]} are {r[p]:.3g} Å apart, closer than the first spline knot "
                    f"(PACE: 'Encountered very small distance')"
                )
        inv_r = 1.0 / r
        rhat = D * inv_r[:, None]

        # radial functions per bond
        g = np.zeros((P, self.K))
        dg = np.zeros((P, self.K))
        R = np.zeros((P, self.N, self.L + 1))
        dR = np.zeros((P, self.N, self.L + 1))
        phi = np.zeros(P)
        dphi = np.zeros(P)
        for a in range(nel):
            for b in range(nel):
                sel = np.nonzero((mui == a) & (muj == b))[0]
                if len(sel):
                    g[sel], dg[sel], R[sel], dR[sel], phi[sel], dphi[sel] = self._radial(a, b, r[sel])
        Y, DY = ylm_pace(rhat, self.L)

        # atomic base: rows (i, mu_j)
        rows = ii * nel + muj
        S = sps.csr_matrix((np.ones(P), (rows, np.arange(P))), shape=(nat * nel, P))
        A1 = (S @ g).reshape(nat, nel * self.K)
        Apos = np.zeros((nat * nel, self.N, self.nlm), dtype=complex)
        for s0 in range(0, P, self.chunk):
            sl = slice(s0, s0 + self.chunk)
            contrib = R[sl][:, :, self.lpos] * Y[sl][:, None, :]
            Apos += (S[:, sl] @ contrib.reshape(contrib.shape[0], -1)).reshape(nat * nel, self.N, self.nlm)
        Afull = self._expand_full(Apos.reshape(nat, nel, self.N, self.nlm))
        rho_core = np.bincount(ii, weights=phi, minlength=nat)

        # ZBL: ACE is switched off by the nearest neighbour, the smallest d = r − (r_in − δ_in)
        # (first in list order, and only if d < rcut_max, as in PACE); coordinate t = δ_in − d
        zbl = self.ict == "zbl"
        jmin = np.full(nat, -1)
        near_t = np.full(nat, np.nan)
        near_d = np.ones(nat)
        if zbl and P:
            d = r - (self.r_in[mui, muj] - self.d_in[mui, muj])
            order = np.lexsort((np.arange(P), d, ii))
            first = np.ones(P, dtype=bool)
            first[1:] = ii[order][1:] != ii[order][:-1]
            cand = order[first]
            cand = cand[d[cand] < self.rcut_max]
            jmin[ii[cand]] = cand
            near_d[ii[cand]] = self.d_in[mui[cand], muj[cand]]
            near_t[ii[cand]] = near_d[ii[cand]] - d[cand]

        energies = np.zeros(nat)
        Wpos = np.zeros((nat, nel, self.N, self.nlm), dtype=complex)
        W1 = np.zeros((nat, nel * self.K))
        dE_drho_core = np.zeros(nat)
        dE_dfcut = np.zeros(nat)
        for mu0, prog in enumerate(self.progs):
            idx = np.nonzero(spec == mu0)[0]
            for a0 in range(0, len(idx), 32):  # blocks of atoms bound the product-pass memory
                at = idx[a0 : a0 + 32]
                out = self._atoms(prog, Afull[at], A1[at], rho_core[at], near_t[at], near_d[at])
                energies[at] = out[0] + self.E0[mu0]
                W1[at], Wpos[at], dE_drho_core[at], dE_dfcut[at] = out[1:]

        # pair forces f_ij = dE_i / dr_ij
        f = np.zeros((P, 3))
        Wrow = Wpos.reshape(nat * nel, self.N, self.nlm)
        W1row = W1.reshape(nat * nel, self.K)
        for s0 in range(0, P, self.chunk):
            sl = slice(s0, s0 + self.chunk)
            Wp = Wrow[rows[sl]]
            U = np.einsum("pnk,pnk->pk", Wp, dR[sl][:, :, self.lpos])
            V = np.einsum("pnk,pnk->pk", Wp, R[sl][:, :, self.lpos])
            t1 = np.einsum("pk,pk->p", U, Y[sl]).real
            t2 = np.einsum("pk,pkc->pc", V, DY[sl]).real
            t1 += np.einsum("pk,pk->p", W1row[rows[sl]], dg[sl])
            t1 += dE_drho_core[ii[sl]] * dphi[sl]
            f[sl] = t1[:, None] * rhat[sl] + t2 * inv_r[sl][:, None]
        if zbl:
            has = np.nonzero(jmin >= 0)[0]
            f[jmin[has]] += dE_dfcut[has][:, None] * rhat[jmin[has]]  # ∂d_min/∂r_ij = r̂ (nearest j)
        forces = np.zeros((nat, 3))
        for c in range(3):
            forces[:, c] = np.bincount(ii, weights=f[:, c], minlength=nat) - np.bincount(jj, weights=f[:, c], minlength=nat)
        out = {"energy": float(energies.sum()), "energies": energies, "forces": forces}
        if np.all(atoms.pbc):
            vol = atoms.get_volume()
            sig = (f.T @ D) / vol
            sig = 0.5 * (sig + sig.T)
            out["stress"] = np.array([sig[0, 0], sig[1, 1], sig[2, 2], sig[1, 2], sig[0, 2], sig[0, 1]])
        return out

    # ------------------------------------------------------------------ per atom
    def _atoms(self, prog: _SpeciesProg, A, A1, rc, near_t, near_d):
        """Energy and adjoints of a block of atoms of one species.

        A: (n, nA) complex atomic base (all m), A1: (n, nel*K) rank-1 base, rc: ρ_core,
        near_t/near_d: ZBL switch coordinate δ_in − d_min and δ_in (NaN: no neighbour).
        Returns E (without E0), ∂E/∂A1, ∂E/∂A (m ≥ 0 layout), ∂E/∂ρ_core, ∂E/∂d_min."""
        n, nd = A.shape[0], prog.emb.ndensity
        rho = np.zeros((n, nd))
        if len(prog.r1_col):
            rho += A1[:, prog.r1_col] @ prog.r1_c
        saved = []
        for grp in prog.groups:
            fac = A[:, grp.idx]  # (n, M, rank)
            rank = fac.shape[2]
            pre = np.ones(fac.shape[:2] + (rank + 1,), dtype=complex)
            suf = np.ones_like(pre)
            for t in range(rank):
                pre[:, :, t + 1] = pre[:, :, t] * fac[:, :, t]
            for t in range(rank - 1, -1, -1):
                suf[:, :, t] = suf[:, :, t + 1] * fac[:, :, t]
            rho += pre[:, :, rank].real @ grp.c
            saved.append(pre[:, :, :rank] * suf[:, :, 1:])  # dB_t = Π_{s≠t} A_s
        F, dF = embedding(prog.emb.npoti, prog.emb.fs_parameters, rho)
        dE_dfcut = np.zeros(n)
        if self.ict == "zbl":
            fcut, dfcut = np.ones(n), np.zeros(n)
            has = ~np.isnan(near_t)
            if np.any(has):
                fc, dfc = cutoff_func_poly(near_t[has], near_d[has], near_d[has])
                fcut[has], dfcut[has] = fc, -dfc  # d/d(d_min) = −d/dt
            E = F * fcut + rc * (1.0 - fcut)
            dE_drho = 1.0 - fcut
            dE_dfcut = (F - rc) * dfcut
        else:
            fcut, dfcut = _inner_cutoff(rc, prog.emb.rho_core_cut, prog.emb.drho_core_cut)
            E = F * fcut + rc
            dE_drho = F * dfcut + 1.0
        dF = dF * fcut[:, None]
        W1 = np.zeros((n, A1.shape[1]))
        if len(prog.r1_col):
            W1 = (prog.r1_scatter.T @ (dF @ prog.r1_c.T).T).T
        # adjoint: W[a] = Σ θ dB_t over all (m-combination, t) whose factor t is A[a]
        Wfull = np.zeros((n, self.nA), dtype=complex)
        for grp, dB in zip(prog.groups, saved):
            theta = dF @ grp.c.T  # (n, M)
            G = (theta[:, :, None] * dB).transpose(0, 2, 1).reshape(n, -1)  # (n, rank*M)
            Wfull += (grp.scatter.T @ G.T).T
        Wpos = self._fold_pos(Wfull.reshape(n, self.nel, self.N, self.LL))
        return E, W1, Wpos, dE_drho, dE_dfcut

    # ------------------------------------------------------------------ helpers
    def _expand_full(self, Apos):
        """(..., N, nlm≥0) → (..., nA) with A_{l,−m} = (−1)^m conj(A_{lm})."""
        shp = Apos.shape[:-1]
        full = np.zeros(shp + (self.LL,), dtype=complex)
        for k, (l, m) in enumerate(zip(self.lpos, self.mpos)):
            full[..., l * l + l + m] = Apos[..., k]
            if m > 0:
                full[..., l * l + l - m] = (-1.0) ** m * np.conj(Apos[..., k])
        return full.reshape(Apos.shape[0], -1)

    def _fold_pos(self, W):
        """dE/dA over all m → weights of A_{lm}, m ≥ 0: W_{l,m} + (−1)^m conj(W_{l,−m})."""
        out = np.zeros(W.shape[:-1] + (self.nlm,), dtype=complex)
        for k, (l, m) in enumerate(zip(self.lpos, self.mpos)):
            out[..., k] = W[..., l * l + l + m]
            if m > 0:
                out[..., k] += (-1.0) ** m * np.conj(W[..., l * l + l - m])
        return out


def _inner_cutoff(rho_core, rho_cut, drho_cut):
    """ρ_core energy switch of the ``density`` inner cutoff: (fcut, dfcut/dρ_core)."""
    fcut = np.where(rho_core >= rho_cut, 0.0, 1.0)
    dfcut = np.zeros_like(rho_core)
    mid = (rho_core < rho_cut) & (rho_core > rho_cut - drho_cut)
    if np.any(mid):
        fc, dfc = cutoff_func_poly(rho_core[mid], rho_cut, drho_cut)
        fcut[mid], dfcut[mid] = fc, dfc
    return fcut, dfcut
