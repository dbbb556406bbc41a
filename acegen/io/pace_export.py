"""Export acegen's own linear ACE models to PACE's C-tilde form (``.yace``).

``model.save("x.yace")`` calls :func:`model_to_pace` and writes the result with
:func:`acegen.io.pace.write_yace`; pyace 0.4.0rc1 and LAMMPS ``pair_style pace`` load the file.

**Radial functions.**  Stock ML-PACE (ace-evaluator 2024.7.4, the library inside pyace
0.4.0rc1 and LAMMPS) reads no tabulated radial functions: ``ChebExpCos``, ``ChebPow``,
``ChebLinear`` and ``SBessel`` are analytic families, and the ``ACE.jl*`` names select
ACE1.jl's old analytic "SHIPs" basis (transform ((1+r0)/(1+r))^p, three-term recursion),
which cannot express acegen's Agnesi-transformed radial basis either.  (The spline tables
``splinenodalvals``/``splinenodalderivs`` that ACEpotentials v0.6 wrote are only understood by
an unmerged fork of ML-PACE.)  So every radial function f of a bond (μi, μj) with cutoff rc is
*fitted* in the ``ChebPow`` basis with λ = 1,

    g_k(r) = (1 − T_{k+1}(x)) / 2,   x = 2 r / rc − 1,   k = 0..K−1,

whose span is the polynomials of degree ≤ K in r that vanish at rc.  acegen's radial
functions are smooth (rational in r through the Agnesi map) and vanish at rc, so Chebyshev
least squares on Chebyshev points converges geometrically; K is increased until the fit error
of every function, checked on a dense grid, is at most ``tol`` · max|f| for values and
``100 tol`` · max|f'| for derivatives (default tol = 1e-12, typically K = 50..100).  A model
whose radial functions are not smooth on [0, rc] (pair cutoff ≠ many-body cutoff: functions
that end with a kink inside the bond) cannot reach that and raises
:class:`~acegen.errors.AcegenError`.

* Many-body R_n (used in products of ≥ 2 A's) become PACE's R_nl = Σ_k crad[n, l, k] g_k with
  the same coefficients for every l; only the R_n a bond actually uses are kept.
* Order-1 terms (ν = 1 functions and the pair basis) of central species μi and neighbour
  species μj add up to one radial function V(r) = Σ c · R_c(r) Y_00; it is fitted in the same
  g_k and written as PACE's rank-1 functions, c̃_k = coefficient of g_k.  With the default
  pair envelope ('r', p) V is singular at r = 0 and is fitted on [r_min, rc] only (default
  r_min = 0.2 r0(μi, μj)); below r_min the exported pair energy is the polynomial's
  continuation, not acegen's.

PACE then tabulates g_k and R_nl in cubic Hermite splines (``deltaSplineBins``, 0.001 Å), so
pyace / LAMMPS differ from acegen's analytic radial functions by PACE's spline error plus the
fit error above (together ~1e-10 relative on forces, ~1e-12 eV/atom; docs/pace.md).

**Angular part.**  acegen's ModelIR holds, per central species, real monomials Π_t A[a_t] in
orthonormal real harmonics (docs/conventions-angular.md).  With PACE's Y^P = √(4π) Y^c
(Condon–Shortley phase, Y_00 = 1) and, for m > 0,

    Y_{l,m}  = ((−1)^m Y^c_{l,m} + Y^c_{l,−m}) / √2,
    Y_{l,−m} = i (Y^c_{l,−m} − (−1)^m Y^c_{l,m}) / √2,      Y_{l,0} = Y^c_{l,0}

(the inverse of :mod:`acegen.io.pace_lower`), every real monomial expands into complex
monomials in A^P.  Monomials with Σm ≠ 0 cancel (rotation invariance), and since
Π A^P_{−m} = conj(Π A^P_m), each complex monomial is merged with its conjugate into
Re(c̃ Π A^P) with real c̃ (the model is real and reflection invariant, so the imaginary parts
vanish; both facts are checked).  Of each conjugate pair the m-combination whose first
non-zero m is positive is kept (PACE's half basis; PACE evaluates
Σ Re(c̃ Π A) over the stored combinations, so no further doubling is needed).  Factors are
sorted by (μ, n, l) and equal factors by decreasing m.

**Embedding, E0.**  ``FinnisSinclairShiftedScaled`` with ndensity 1 and FS_parameters [1, 1]
is exactly F(ρ) = ρ; E0 = the model's Eref; no core repulsion (inner cutoff type "density",
prehc = 0).  A Finnis–Sinclair :class:`acegen.FSModel` keeps its embedding (``npoti``,
``FS_parameters``, ``ndensity`` P): every c̃ is then a row of P values, one per density, and
the order-1/pair functions of each density are fitted as P functions of the same ChebPow
basis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.linalg import qr, solve_triangular

from ..errors import AcegenError
from .pace import PaceBond, PaceEmbedding, PaceFunction, PacePotential

__all__ = ["RadialFit", "chebpow_basis", "fit_radials", "model_to_pace", "DEFAULT_TOL", "R_MIN_FRACTION", "K_LADDER"]

SQRT4PI = math.sqrt(4.0 * math.pi)
ISQ2 = 1.0 / math.sqrt(2.0)

#: default fit tolerance (values, relative to max|f| on the fit interval; derivatives 100×)
DEFAULT_TOL = 1e-12
#: default lower end of the fit interval of radial functions singular at r = 0, in units of r0
R_MIN_FRACTION = 0.2
#: numbers of ChebPow functions tried, smallest first
K_LADDER = (8, 12, 16, 20, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96, 104, 112, 128, 144, 160, 192, 224, 256)
_N_FIT = 768  # Chebyshev points of the fit (≥ 3 K for every K in K_LADDER)
_N_CHECK = 8192  # uniform check points
_DERIV_FACTOR = 100.0
_DROP = 1e-14  # c̃ below this fraction of the largest |c̃| of a species are rounding noise
_IMAG_TOL = 1e-10  # |Im c̃| / max|c̃| above this means the model is not real/invariant


# ===================================================================== ChebPow (λ = 1) basis
def chebpow_basis(r, rcut: float, K: int):
    """PACE's ``ChebPow`` radial basis with λ = 1: g_k(r) = (1 − T_{k+1}(2r/rc − 1)) / 2 and
    g_k'(r), k = 0..K−1, each of shape (len(r), K)."""
    x = 2.0 * np.asarray(r, dtype=float) / rcut - 1.0
    T = np.empty(x.shape + (K + 1,))
    U = np.empty(x.shape + (K + 1,))  # Chebyshev of the second kind, dT_n/dx = n U_{n-1}
    T[..., 0] = 1.0
    U[..., 0] = 1.0
    if K >= 1:
        T[..., 1] = x
        U[..., 1] = 2.0 * x
    for n in range(1, K):
        T[..., n + 1] = 2.0 * x * T[..., n] - T[..., n - 1]
        U[..., n + 1] = 2.0 * x * U[..., n] - U[..., n - 1]
    n = np.arange(1, K + 1)
    g = 0.5 - 0.5 * T[..., 1:]
    dg = -0.5 * n * U[..., :K] * (2.0 / rcut)
    return g, dg


@dataclass(frozen=True)
class RadialFit:
    """ChebPow fit of the radial functions of one bond.

    ``coeffs[f, k]`` is the coefficient of g_k in function f (f = the many-body R's in
    ``radial`` order, then the order-1 function V if ``has_v``); ``r_lo`` the lower end of the
    interval checked for each function; ``err``/``derr`` the achieved max errors of values and
    derivatives, relative to max|f| and max|f'| on [r_lo, rc]."""

    rcut: float
    K: int
    radial: tuple[int, ...]
    has_v: bool
    coeffs: np.ndarray
    r_lo: np.ndarray
    err: np.ndarray
    derr: np.ndarray


class _Grid:
    """Fit and check points of an interval [a, rc] with the ChebPow basis (K_LADDER[-1]
    functions) on them, and the Householder QR of the fit matrix: its leading columns give
    the QR of every smaller basis (the bases are nested)."""

    def __init__(self, a: float, rcut: float):
        t = np.cos(np.pi * (np.arange(_N_FIT) + 0.5) / _N_FIT)
        self.r_fit = a + (rcut - a) * 0.5 * (t + 1.0)
        self.r_chk = np.concatenate([np.linspace(a, rcut, _N_CHECK, endpoint=False), self.r_fit])
        G_fit, _ = chebpow_basis(self.r_fit, rcut, K_LADDER[-1])
        self.G_chk, self.dG_chk = chebpow_basis(self.r_chk, rcut, K_LADDER[-1])
        # plain Householder QR: on a sub-interval of [0, rc] the basis is ill-conditioned and a
        # truncated-SVD least squares (np.linalg.lstsq) would stop at ~1e-10 in derivatives
        self.Q, self.R = qr(G_fit, mode="economic")


def _fit_group(fun, grid: _Grid, tol: float):
    """Smallest K of K_LADDER whose least-squares fit of ``fun`` (r -> values, derivatives of
    some functions) on the grid meets the tolerance; (K, coeffs (nf, K), err, derr) — those of
    the last K tried if none does."""
    with np.errstate(divide="ignore", invalid="ignore"):  # unused singular outputs at r = 0
        F, _ = fun(grid.r_fit)
        V, D = fun(grid.r_chk)
    scale = np.abs(V).max(axis=0)
    dscale = np.abs(D).max(axis=0)
    scale = np.where(scale > 0.0, scale, 1.0)
    dscale = np.where(dscale > 0.0, dscale, 1.0)
    QtF = grid.Q.T @ F
    best = None
    for K in K_LADDER:
        c = solve_triangular(grid.R[:K, :K], QtF[:K])
        err = np.abs(grid.G_chk[:, :K] @ c - V).max(axis=0) / scale
        derr = np.abs(grid.dG_chk[:, :K] @ c - D).max(axis=0) / dscale
        best = (K, c.T, err, derr)
        if np.all(err <= tol) and np.all(derr <= _DERIV_FACTOR * tol):
            break
    return best


def _order1_terms(prog, z_neighbour: int):
    """{radial index: coefficients (one per density) of R_c Y_00} of the order-1 monomials of
    ``prog`` on neighbours of species ``z_neighbour``."""
    by_offset = {ch.offset: ch for ch in prog.channels}
    out: dict[int, np.ndarray] = {}
    for mono, c in zip(prog.monomials, np.asarray(prog.coeffs, dtype=float)):
        if len(mono) != 1:
            continue
        a = mono[0]
        ch = by_offset.get(a)
        if ch is None or ch.l != 0:
            raise AcegenError(f"species {prog.zi}: order-1 monomial A[{a}] has l > 0 (not rotation invariant)")
        if ch.zj == z_neighbour:
            out[ch.radial] = out.get(ch.radial, 0.0) + c / SQRT4PI
    return out


def _is_singular_at_zero(model, radial: int) -> bool:
    """Pair functions with the ('r', p) envelope diverge like r^-p at r = 0."""
    return radial >= model.basis.nmax and model.spec.pair_envelope[0] == "r"


def fit_radials(model, *, tol: float = DEFAULT_TOL, r_min: float | None = None) -> dict:
    """Fit the radial functions every bond of ``model`` (an acegen linear Model) needs in
    PACE's ChebPow (λ = 1) basis; returns ``{(zi, zj): RadialFit}``.

    ``r_min`` (Å): lower end of the interval on which functions singular at r = 0 (pair basis
    with the ('r', p) envelope) are fitted; default R_MIN_FRACTION · r0(zi, zj).  Raises
    AcegenError if a bond's functions cannot be fitted to ``tol`` with up to K_LADDER[-1]
    functions."""
    ir = model.ir()
    nel = len(ir.elements)
    out = {}
    grids: dict[tuple[float, float], _Grid] = {}

    def grid(a: float, rc: float) -> _Grid:
        if (a, rc) not in grids:
            grids[(a, rc)] = _Grid(a, rc)
        return grids[(a, rc)]

    for zi in range(nel):
        prog = ir.species[zi]
        in_products = {a for mono in prog.monomials if len(mono) >= 2 for a in mono}
        for zj in range(nel):
            blk = ir.radial[(zi, zj)]
            rc = float(blk.rcut)
            used = sorted({ch.radial for ch in prog.channels
                           if ch.zj == zj and any(ch.offset + i in in_products for i in range(ch.size))})
            v_terms = _order1_terms(prog, zj)
            v_terms = {c: w for c, w in v_terms.items() if np.any(w != 0.0)}
            has_v = bool(v_terms)
            singular = [c for c in used if _is_singular_at_zero(model, c)]
            if singular:
                raise AcegenError(f"bond {zi},{zj}: pair radial functions {singular} appear in products of A's")
            lo_v = 0.0
            if any(_is_singular_at_zero(model, c) for c in v_terms):
                lo_v = float(r_min) if r_min is not None else R_MIN_FRACTION * float(model.spec.r0_pair(zi, zj))
                if not 0.0 < lo_v < rc:
                    raise AcegenError(f"r_min={lo_v} must lie in (0, rcut={rc}) for bond {zi},{zj}")
            cols = np.array(used, dtype=np.int64)
            vcols = np.array(sorted(v_terms), dtype=np.int64)
            vw = np.array([v_terms[c] for c in sorted(v_terms)]).reshape(len(vcols), -1)  # (functions, densities)

            def f_many(r, cols=cols, blk=blk):
                v, d = blk.evaluate(r)
                return v[:, cols], d[:, cols]

            def f_v(r, vcols=vcols, vw=vw, blk=blk):
                v, d = blk.evaluate(r)
                return v[:, vcols] @ vw, d[:, vcols] @ vw

            parts = []
            if len(cols):
                parts.append((_fit_group(f_many, grid(0.0, rc), tol), 0.0))
            if has_v:
                parts.append((_fit_group(f_v, grid(lo_v, rc), tol), lo_v))
            K = max((p[0][0] for p in parts), default=1)
            coeffs = np.zeros((sum(p[0][1].shape[0] for p in parts), K))
            err, derr, r_lo = [], [], []
            row = 0
            for (k, c, e, de), lo in parts:
                coeffs[row : row + c.shape[0], :k] = c
                row += c.shape[0]
                err += list(e)
                derr += list(de)
                r_lo += [lo] * c.shape[0]
            fit = RadialFit(rcut=rc, K=K, radial=tuple(int(c) for c in cols), has_v=has_v, coeffs=coeffs,
                            r_lo=np.array(r_lo), err=np.array(err), derr=np.array(derr))
            bad = (fit.err > tol) | (fit.derr > _DERIV_FACTOR * tol)
            if np.any(bad):
                f = int(np.nonzero(bad)[0][0])
                what = "the order-1/pair function" if (has_v and f >= len(cols)) else f"R_{cols[f] + 1}"
                raise AcegenError(
                    f"cannot export to .yace: {what} of bond {ir.elements[zi]}-{ir.elements[zj]} is not "
                    f"represented by {K} ChebPow functions to tol={tol:g} (value error {fit.err[f]:.1e}, "
                    f"derivative error {fit.derr[f]:.1e}, relative). PACE needs radial functions that are "
                    "smooth on [0, rcut] and vanish at rcut: use pair_rcut == rcut and an envelope with a "
                    "zero at the cutoff, or a larger tol / r_min"
                )
            out[(zi, zj)] = fit
    return out


# ===================================================================== angular conversion
def _real_to_complex(m: int):
    """Orthonormal real Y_{l,m} = Σ (coef, m') Y^c_{l,m'} (Condon–Shortley complex harmonics)."""
    if m == 0:
        return ((1.0 + 0j, 0),)
    mu = abs(m)
    s = (-1.0) ** mu
    if m > 0:
        return ((s * ISQ2 + 0j, mu), (ISQ2 + 0j, -mu))
    return ((-1j * s * ISQ2, mu), (1j * ISQ2, -mu))


def _canonical(key):
    """Factors sorted by (channel key, decreasing m)."""
    return tuple(sorted(key, key=lambda t: (t[0], -t[1])))


def _representative(key):
    """Of a complex monomial and its conjugate (all m negated), the one whose first non-zero m
    is positive (the larger m-row if both qualify, as with repeated factors)."""
    conj = _canonical(tuple((c, -m) for c, m in key))
    row, crow = [m for _, m in key], [m for _, m in conj]
    first = next((m for m in row if m != 0), 0)
    cfirst = next((m for m in crow if m != 0), 0)
    if (first > 0) != (cfirst > 0):
        return (key, False) if first > 0 else (conj, True)
    return (key, False) if row >= crow else (conj, True)


def _complex_products(prog, chan_key):
    """{(canonical complex monomial): complex coefficient of Π_t A^P} of the rank ≥ 2 monomials
    of ``prog``; ``chan_key[offset]`` = (zj, PACE n (0-based), l) of the channel at that offset."""
    lookup = {}
    for ch in prog.channels:
        for m in range(-ch.l, ch.l + 1):
            lookup[ch.offset + ch.l + m] = (chan_key.get(ch.offset), m)
    acc: dict = {}
    for mono, c in zip(prog.monomials, np.asarray(prog.coeffs, dtype=float)):
        if len(mono) < 2 or not np.any(c != 0.0):
            continue
        facs = [lookup[a] for a in mono]
        pref = c.astype(complex) / SQRT4PI ** len(mono)  # one coefficient per density
        terms = [(pref, ())]
        for ck, m in facs:
            terms = [(w * cw, key + ((ck, mc),)) for w, key in terms for cw, mc in _real_to_complex(m)]
        for w, key in terms:
            k = _canonical(key)
            acc[k] = acc.get(k, 0.0) + w
    return acc


def _pace_functions(prog, chan_key, elements):
    """Rank ≥ 2 PaceFunctions of one central species (half basis, real c̃)."""
    acc = _complex_products(prog, chan_key)
    scale = max((float(np.abs(v).max()) for v in acc.values()), default=0.0)
    half: dict = {}
    for key, d in acc.items():
        if sum(m for _, m in key) != 0:
            if np.abs(d).max() > _IMAG_TOL * scale:
                raise AcegenError(f"species {elements[prog.zi]}: model is not rotation invariant "
                                  f"(coefficient {np.abs(d).max():.2e} on a product with Σm ≠ 0)")
            continue
        rep, flipped = _representative(key)
        half[rep] = half.get(rep, 0.0) + (d.conjugate() if flipped else d)
    groups: dict = {}
    for key, d in half.items():
        if np.abs(d.imag).max() > _IMAG_TOL * scale:
            raise AcegenError(f"species {elements[prog.zi]}: complex c̃ {d[np.argmax(np.abs(d.imag))]:.3e} (the "
                              "model is not real and reflection invariant)")
        if np.abs(d.real).max() <= _DROP * scale:
            continue
        chans = tuple(ck for ck, _ in key)
        groups.setdefault(chans, []).append(([m for _, m in key], d.real))
    funcs = []
    for chans, rows in groups.items():
        rows.sort(key=lambda t: t[0])
        funcs.append(PaceFunction(
            mu0=prog.zi, rank=len(chans), mus=tuple(int(c[0]) for c in chans), ns=tuple(int(c[1]) + 1 for c in chans),
            ls=tuple(int(c[2]) for c in chans), ms_combs=np.array([r for r, _ in rows], dtype=np.int64),
            ctildes=np.array([c for _, c in rows]),
        ))
    return funcs


def _sort_key(f: PaceFunction):
    return (f.rank, f.mu0, f.mus, f.ns, f.ls, f.num_ms_combs, tuple(f.ms_combs.ravel().tolist()))


# ===================================================================== the potential
def model_to_pace(model, *, tol: float = DEFAULT_TOL, r_min: float | None = None,
                  delta_spline_bins: float = 0.001) -> PacePotential:
    """The PACE C-tilde potential of ``model`` (see the module docstring for the construction
    and its accuracy).  PACE-derived models return their own potential unchanged.

    ``tol``: radial fit tolerance; ``r_min``: lower end (Å) of the fit interval of order-1/pair
    functions singular at r = 0 (default R_MIN_FRACTION · r0 per bond); ``delta_spline_bins``:
    PACE's spline knot spacing written to the file."""
    if getattr(model, "kind", None) == "pace":
        return model.pace
    if getattr(model, "kind", None) not in ("linear", "fs"):
        raise AcegenError("model_to_pace: expected an acegen.Model")
    ir = model.ir()
    elements = tuple(ir.elements)
    nel = len(elements)
    if ir.angular_kind != "spherical":
        raise AcegenError(f"model {model.name!r}: PACE files hold spherical-harmonic models; this one has "
                          f"angular={model.spec.angular!r} (Cartesian monomials), which PACE cannot evaluate")
    for prog in ir.species:
        if prog.embedding != ir.species[0].embedding or prog.core.kind != "none":
            raise AcegenError(f"species {elements[prog.zi]}: only models with one embedding for all species and "
                              "without core repulsion are exported")
    emb = ir.species[0].embedding
    nd = emb.ndensity
    fits = fit_radials(model, tol=tol, r_min=r_min)

    bonds = {}
    for (zi, zj), fit in fits.items():
        ls = [ch.l for ch in ir.species[zi].channels if ch.zj == zj and ch.radial in fit.radial]
        lmax = max(ls, default=0)
        N = max(len(fit.radial), 1)
        crad = np.zeros((N, lmax + 1, fit.K))
        for n in range(len(fit.radial)):
            crad[n, :, :] = fit.coeffs[n][None, :]
        bonds[(zi, zj)] = PaceBond(
            radbasename="ChebPow", radparameters=(1.0,), nradbase=fit.K, nradmax=N, lmax=lmax, crad=crad,
            rcut=fit.rcut, dcut=0.01, prehc=0.0, lambdahc=1.0, rcut_in=0.0, dcut_in=0.0, inner_cutoff_type="density",
        )

    functions = {}
    for zi in range(nel):
        prog = ir.species[zi]
        funcs = []
        for zj in range(nel):
            fit = fits[(zi, zj)]
            if fit.has_v:
                for k, c in enumerate(fit.coeffs[len(fit.radial):].T):  # one row per density
                    if np.any(c != 0.0):
                        funcs.append(PaceFunction(mu0=zi, rank=1, mus=(zj,), ns=(k + 1,), ls=(0,),
                                                  ms_combs=np.zeros((1, 1), dtype=np.int64),
                                                  ctildes=np.array([c], dtype=float)))
        chan_key = {}
        for ch in prog.channels:
            fit = fits[(zi, ch.zj)]
            if ch.radial in fit.radial:
                chan_key[ch.offset] = (ch.zj, fit.radial.index(ch.radial), ch.l)
        funcs += _pace_functions(prog, chan_key, elements)
        funcs.sort(key=_sort_key)
        functions[zi] = funcs

    # linear: FinnisSinclairShiftedScaled with (1, 1) is F(ρ) = ρ
    kind, params = ("FinnisSinclairShiftedScaled", (1.0, 1.0)) if emb.kind == "linear" else (emb.kind, emb.params)
    embeddings = {
        zi: PaceEmbedding(ndensity=nd, fs_parameters=tuple(float(x) for x in params), npoti=kind,
                          rho_core_cut=100000.0, drho_core_cut=250.0)
        for zi in range(nel)
    }
    return PacePotential(
        elements=elements, E0=tuple(float(p.E0) for p in ir.species), delta_spline_bins=float(delta_spline_bins),
        embeddings=embeddings, bonds=bonds, functions=functions, source=f"acegen:{model.name}",
    )
