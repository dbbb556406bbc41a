"""Lower a GRACE-FS model (:class:`~acegen.io.gracefs.GraceFSPotential`) to acegen's ModelIR.

GRACE-FS has no element channels: A_{n,l,m} = nnorm · Σ_j Z[μ_j, n] R_nl(r_ij) Y^G_lm(r̂_ij)
sums over the neighbours of every species, each weighted by the element embedding Z.  In the
IR this is

* one :class:`~acegen.ir.model.SplineTable` of the R_nl (n-major, l-minor: function
  n·(lmax+1) + l), tabulated exactly as the GRACE-FS evaluator does (PACE's cubic Hermite
  splines on ``nlut = int(rcut / 0.001)`` bins, :class:`~acegen.io.pace_radial.PaceSpline`),
  shared by the radial blocks of every bond (μi, μj); the block of bond (μi, μj) carries the
  weights nnorm · √(4π) · Z[μj, n] of its functions;
* per central species, one channel of neighbour species :data:`~acegen.ir.model.ANY` per
  (n, l) some function uses;
* GRACE-FS's real harmonics are √(4π) times acegen's orthonormal real harmonics (both with
  the same m ordering and signs: Y^G_{l,±m} = √2 (−1)^m Re/Im Y^P_lm, Y^P = √(4π) Y^c and
  Y^c_{l,m} = (−1)^m (Y_{l,m} + i Y_{l,−m}) / √2), so the √(4π) goes into the weights and the
  products are acegen monomials of A as they stand: coefficient gen_cgs[s] · coeff[p] summed
  over equal monomials;
* E_i = scale Σ_p w_p F(ρ_p; m_p) + shift + E0[μ_i]: ``scale`` is folded into the w_p
  (F is linear in w), ``shift`` into E0.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import SpecError
from ..ir.model import ANY, Channel, Embedding, ModelIR, ProjectionRows, RadialBlock, SpeciesProgram, SplineTable
from .gracefs import GraceFSPotential
from .pace_radial import PaceSpline, _sbessel, combine_in_order

__all__ = ["gracefs_radial_table", "gracefs_to_ir"]

SQRT4PI = math.sqrt(4.0 * math.pi)


def gracefs_radial_table(pot: GraceFSPotential) -> SplineTable:
    """The R_nl of ``pot`` (function n·(lmax+1) + l) as the evaluator tabulates them."""
    c = pot.crad.reshape(-1, pot.n_rad_base)

    def funcs(r):
        g, dg = _sbessel(r, pot.rcut, pot.n_rad_base)
        return combine_in_order(g, c), combine_in_order(dg, c)

    spl = PaceSpline(funcs, pot.rcut, pot.delta_spline_bins)
    return SplineTable(rcut=pot.rcut, h=spl.h, coeffs=spl.ir_coeffs())


def _expand(funcs, base, nd):
    """Monomials of A and their coefficients (K, ncol): ``nd`` density columns (each
    function's gen_cgs · coeff, the energy) or, with ``nd=None``, one column per function
    (its gen_cgs alone: the projections b_f = Σ_s gen_cg_{f,s} Π_t A_{ns_f, l_t, m_{f,s,t}},
    in the file order of the functions, as GRACE-FS's active sets index them)."""
    ncol = len(funcs) if nd is None else nd
    acc: dict[tuple[int, ...], np.ndarray] = {}
    for fi, f in enumerate(funcs):
        b = np.array([base[(f.ns - 1, l)] for l in f.ls], dtype=np.int64)
        idx = np.sort(b[None, :] + f.ms_combs, axis=1)
        for row, cg in zip(idx, f.gen_cgs):
            key = tuple(int(a) for a in row)
            vec = acc.get(key)
            if vec is None:
                vec = acc[key] = np.zeros(ncol)
            if nd is None:
                vec[fi] += cg
            else:
                vec += cg * f.coeff
    monos = sorted((k for k, v in acc.items() if np.any(v != 0.0)), key=lambda m: (len(m), m))
    coeffs = np.array([acc[m] for m in monos], dtype=float).reshape(len(monos), ncol)
    return tuple(monos), coeffs


def gracefs_to_ir(pot: GraceFSPotential, *, name: str = "gracefs") -> ModelIR:
    """The ModelIR of a GRACE-FS model (see the module docstring)."""
    from ..symbolic.ylm import ylm_slp

    if pot.radbasename != "SBessel":
        raise SpecError(f"GRACE-FS radial basis {pot.radbasename!r} is not supported (SBessel only)")
    nel, L1 = pot.nelements, pot.lmax + 1
    table = gracefs_radial_table(pot)
    nfunc = table.nfunc
    n_of = np.arange(nfunc) // L1
    blocks = {}
    for mj in range(nel):
        w = pot.nnorm * SQRT4PI * pot.Z[mj, n_of]
        for mi in range(nel):
            blocks[(mi, mj)] = RadialBlock(zi=mi, zj=mj, rcut=pot.rcut, nfunc=nfunc, spline=table, weights=w)
    nd = pot.ndensity
    params = []
    for p in range(nd):
        params += [pot.scale * pot.fs_parameters[2 * p], pot.fs_parameters[2 * p + 1]]
    programs = []
    for mu0 in range(nel):
        funcs = pot.functions[mu0]
        labels = sorted({(f.ns - 1, l) for f in funcs for l in f.ls}, key=lambda t: (t[1], t[0]))
        chans, base = [], {}
        off = 0
        for n, l in labels:
            chans.append(Channel(zj=ANY, radial=n * L1 + l, l=l, offset=off))
            base[(n, l)] = off + l  # A index of m = 0
            off += 2 * l + 1
        monos, coeffs = _expand(funcs, base, nd)
        pm, pc = _expand(funcs, base, None)
        programs.append(SpeciesProgram(
            zi=mu0, channels=tuple(chans), monomials=monos, coeffs=coeffs,
            embedding=Embedding(pot.embedding, nd, tuple(float(x) for x in params)),
            E0=float(pot.E0[mu0] + pot.shift), projections=ProjectionRows(pm, pc),
        ))
    lmax = max([0] + [ch.l for p in programs for ch in p.channels])
    return ModelIR(
        elements=tuple(pot.elements), lmax=lmax, angular=ylm_slp(lmax), radial=blocks,
        species=tuple(programs), name=name,
    )
