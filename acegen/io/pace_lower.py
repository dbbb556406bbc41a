"""Lower a PACE C-tilde potential to acegen's real-arithmetic ModelIR.

PACE evaluates Re(c̃ Π_t A^P_{n_t l_t m_t}) with complex spherical harmonics normalised so
that Y_00 = 1 (Condon–Shortley phase) and a *half* basis of m-combinations.  acegen's IR uses
orthonormal real harmonics (docs/conventions.md).  With

    Y^P_{lm} = √(4π) Y^c_{lm},   Y^c_{l,m} = (−1)^m (Y_{l,m} + i Y_{l,−m}) / √2   (m > 0),
    Y^c_{l,−m} = (Y_{l,m} − i Y_{l,−m}) / √2,   Y^c_{l,0} = Y_{l,0},

every complex product expands into real monomials; Re(·) keeps the terms with an even number
of imaginary factors.  Equal real monomials are summed, so the IR is an exact
re-expression of the same model (up to floating-point rounding of the expansion).
Rank-1 functions act on g_k directly (no Y): A1 = √(4π) Σ_j g_k Y_00.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from ..errors import ModelFileError
from ..ir.model import Channel, CoreRepulsion, Embedding, ModelIR, ProjectionRows, SpeciesProgram

SQRT4PI = math.sqrt(4.0 * math.pi)
ISQ2 = 1.0 / math.sqrt(2.0)


def complex_to_real_terms(m: int):
    """Y^c_{l,m} = Σ (coef, m_real) Y_{l,m_real}, coef complex."""
    if m == 0:
        return [(1.0 + 0j, 0)]
    if m > 0:
        s = (-1.0) ** m
        return [(s * ISQ2 + 0j, m), (1j * s * ISQ2, -m)]
    mu = -m
    return [(ISQ2 + 0j, mu), (-1j * ISQ2, -mu)]


def expand_product(ms):
    """Real expansion of Π_t Y^c_{m_t}: list of (real coefficient of Re, tuple of real m)."""
    out = {}
    for choice in itertools.product(*[complex_to_real_terms(int(m)) for m in ms]):
        c = 1.0 + 0j
        for coef, _ in choice:
            c *= coef
        if abs(c.real) < 1e-300:
            continue
        key = tuple(mr for _, mr in choice)
        out[key] = out.get(key, 0.0) + c.real
    return out


def _block_layout(bond):
    K = bond.nradbase
    L1 = bond.lmax + 1
    return K, L1, K + bond.nradmax * L1  # rank-1 g_k first, then R_nl, then φ_core


def _expand(funcs, lookup, nd):
    """Real-monomial expansion of PACE functions: (monomials, coefficients (K, ncol)).
    ``nd``: fold every function's ``ctildes`` into nd density columns (the energy); None:
    one column per function (its one ``ctildes`` column, e.g. the B-basis projections)."""
    ncol = len(funcs) if nd is None else nd
    acc: dict[tuple[int, ...], np.ndarray] = {}
    expansions: dict[tuple[int, ...], tuple] = {}

    def add(key, col, vec):
        row = acc.get(key)
        if row is None:
            row = acc[key] = np.zeros(ncol)
        if col is None:
            row += vec
        else:
            row[col] += vec[0]

    for fi, f in enumerate(funcs):
        col = None if nd is not None else fi
        ct = np.asarray(f.ctildes, dtype=float).reshape(-1, nd if nd is not None else 1)
        if f.rank == 1:
            ch = lookup[("g", int(f.mus[0]), int(f.ns[0]) - 1, 0)]
            add((ch.offset,), col, ct[0] * SQRT4PI)
            continue
        bases = [lookup[("R", int(mu), int(n) - 1, int(l))].offset + int(l) for mu, n, l in zip(f.mus, f.ns, f.ls)]
        pref = SQRT4PI ** f.rank
        for ms, c in zip(np.asarray(f.ms_combs).reshape(-1, f.rank).tolist(), ct):
            terms = expansions.get(tuple(ms))
            if terms is None:  # the same m-combination recurs in many functions
                terms = expansions[tuple(ms)] = tuple(expand_product(ms).items())
            for mr, coef in terms:
                key = tuple(sorted(b + m for b, m in zip(bases, mr)))
                add(key, col, (pref * coef) * c)
    monos = sorted((k for k in acc if np.any(acc[k] != 0.0)), key=lambda m: (len(m), m))
    coeffs = np.array([acc[m] for m in monos], dtype=float).reshape(len(monos), ncol)
    return tuple(monos), coeffs


def pace_to_ir(pot, *, name: str = "pace", radial: str = "spline") -> ModelIR:
    from .pace_radial import pace_radial_block
    from ..symbolic.ylm import ylm_slp

    nel = len(pot.elements)
    blocks = {}
    tables: dict = {}  # bonds with equal parameters share one spline table
    for (mi, mj), bond in pot.bonds.items():
        blocks[(mi, mj)] = pace_radial_block(pot, mi, mj, mode=radial, tables=tables)
    lmax = max(b.lmax for b in pot.bonds.values())
    programs = []
    for mu0 in range(nel):
        emb = pot.embeddings[mu0]
        nd = emb.ndensity
        labels = {}
        funcs = pot.functions.get(mu0, [])
        bfuncs = [] if pot.bfunctions is None else pot.bfunctions.get(mu0, [])
        # collect channels
        for f in list(funcs) + list(bfuncs):
            if f.rank == 1:
                labels[("g", int(f.mus[0]), int(f.ns[0]) - 1, 0)] = None
            else:
                for mu, n, l in zip(f.mus, f.ns, f.ls):
                    labels[("R", int(mu), int(n) - 1, int(l))] = None
        chans, lookup, off = [], {}, 0
        for lab in sorted(labels, key=lambda t: (t[1], t[0] != "g", t[2], t[3])):
            kind, mu, n, l = lab
            K, L1, _ = _block_layout(pot.bonds[(mu0, mu)])
            rad = n if kind == "g" else K + n * L1 + l
            ch = Channel(zj=mu, radial=rad, l=l, offset=off)
            chans.append(ch)
            lookup[lab] = ch
            off += ch.size
        with np.errstate(over="ignore", invalid="ignore"):
            monos, coeffs = _expand(funcs, lookup, nd)
        if not np.all(np.isfinite(coeffs)):
            raise ModelFileError(pot.source or None, f"functions[{mu0}]",
                                 "the c-tilde coefficients overflow a double when expanded into real monomials")
        projections = None
        if pot.bfunctions is not None:
            with np.errstate(over="ignore", invalid="ignore"):
                pm, pc = _expand(pot.bfunctions.get(mu0, []), lookup, None)
            if not np.all(np.isfinite(pc)):
                raise ModelFileError(pot.source or None, f"functions[{mu0}]",
                                     "the B-basis coefficients overflow a double when expanded into real monomials")
            projections = ProjectionRows(pm, pc)
        kind = emb.npoti
        core_kind = "none"
        bonds_mu0 = [b for (a, _), b in pot.bonds.items() if a == mu0]
        ict = bonds_mu0[0].inner_cutoff_type if bonds_mu0 else "density"
        has_core = any(
            (b.prehc != 0.0) if ict in ("density", "distance") else True for b in bonds_mu0
        )
        if has_core or ict == "zbl":
            core_kind = ict
        core = CoreRepulsion(core_kind, float(emb.rho_core_cut), float(emb.drho_core_cut))
        programs.append(
            SpeciesProgram(
                zi=mu0, channels=tuple(chans), monomials=tuple(monos), coeffs=coeffs,
                embedding=Embedding(kind, nd, tuple(float(x) for x in emb.fs_parameters)),
                E0=float(pot.E0[mu0]), core=core, projections=projections,
            )
        )
    return ModelIR(
        elements=tuple(pot.elements), lmax=lmax, angular=ylm_slp(lmax), radial=blocks,
        species=tuple(programs), name=name,
    )
