"""A plain NumPy interpreter of :class:`~acegen.ir.model.ModelIR`.

This is the executable definition of the IR's semantics: every backend (C, LLVM, CUDA) is
tested against it.  It is written for clarity, not speed (a Python loop over atoms, numpy
over neighbours and monomials).

Per central atom i of species zi, over neighbours j with r_ij < rcut(zi, zj):

    A[ch.offset + l + m] = Σ_j R_ch(r_ij) Y_lm(r̂_ij)          (channels of neighbour species zj;
                                                                 zj == ANY: every neighbour, with
                                                                 its own bond's (weighted) R;
                                                                 Cartesian models: r̂_ij^α)
    ρ_p  = Σ_k coeffs[k, p] Π_{a ∈ monomial k} A[a]
    E_i  = E0 + Σ_p F_p(ρ_p)                                     (core kind "none")
    E_i  = E0 + fcut(ρ_core) Σ_p F_p(ρ_p) + ρ_core               (core kind "density")
    E_i  = E0 + Σ_p F_p(ρ_p) + ρ_core                            (core kind "distance")
    E_i  = E0 + f_in(d) Σ_p F_p(ρ_p) + (1 − f_in(d)) ρ_core      (core kind "zbl")

with ρ_core = Σ_j φ_core(r_ij) (the block's ``core`` radial function) and, for zbl, the
nearest-neighbour switch f_in(d) on d = min_j (r_ij − (r_in − δ_in)).  F_p, the switches fcut
and f_in (PACE's ``cutoff_func_poly``) and the composition are the straight-line programs of
:mod:`acegen.ir.physics`, the same ones every backend prints.
"""

from __future__ import annotations

import numpy as np

from ..errors import StructureError
from .model import ANY, ModelIR, SpeciesProgram, angular_offset, angular_width, n_angular
from .physics import core_slp, embedding_slp

def _run(slp, **inputs) -> list[float]:
    """Evaluate a scalar SLP (a Piecewise computes every branch: an unused one may overflow)."""
    with np.errstate(all="ignore"):
        return [float(v) for v in slp.evaluate(**inputs)]


def embedding(prog: SpeciesProgram, rho, slp=None):
    """Return (Σ_p F_p(ρ_p), dF/dρ_p) for one atom of ``prog``'s species; ``rho`` has shape
    (ndensity,).  The formulas are :func:`acegen.ir.physics.embedding_slp` (``slp``: a
    prebuilt one)."""
    emb = prog.embedding
    slp = embedding_slp(emb.kind, emb.params, emb.ndensity) if slp is None else slp
    out = _run(slp, **{f"rho_{p}": float(r) for p, r in enumerate(np.asarray(rho, dtype=float))})
    return out[0], np.asarray(out[1:])


def _monomial_products(A, monos_by_order):
    """For each order group: (indices (K,ν), products (K,), leave-one-out products (K,ν))."""
    out = []
    for idx in monos_by_order:
        vals = A[idx]  # (K, ν)
        nu = idx.shape[1]
        prefix = np.ones_like(vals)
        suffix = np.ones_like(vals)
        for t in range(1, nu):
            prefix[:, t] = prefix[:, t - 1] * vals[:, t - 1]
        for t in range(nu - 2, -1, -1):
            suffix[:, t] = suffix[:, t + 1] * vals[:, t + 1]
        prod = prefix[:, -1] * vals[:, -1]
        out.append((prod, prefix * suffix))
    return out


def _monomial_groups(monomials) -> list[tuple[np.ndarray, np.ndarray]]:
    """The monomials grouped by order: (indices, factor index array) per order."""
    groups = []
    for nu in sorted({len(m) for m in monomials}):
        ks = np.array([k for k, m in enumerate(monomials) if len(m) == nu], dtype=np.int64)
        groups.append((ks, np.array([monomials[k] for k in ks], dtype=np.int64)))
    return groups


def _checked_inputs(species, offsets, nb_species, rij):
    """The neighbour CSR as arrays; a non-finite r_ij is a StructureError naming its pair."""
    species = np.asarray(species, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    nb_species = np.asarray(nb_species, dtype=np.int64)
    rij = np.asarray(rij, dtype=float).reshape(-1, 3)
    if not np.all(np.isfinite(rij)):
        bad = int(np.flatnonzero(~np.isfinite(rij).all(axis=1))[0])
        raise StructureError(f"non-finite neighbour vector at pair {bad}", pair=bad)
    return species, offsets, nb_species, rij


def _bonds(ir: ModelIR, zi: int, nb_species, rij, lo: int, hi: int):
    """The pairs lo..hi-1 of a centre of species ``zi`` inside their bond's cutoff, by neighbour
    species: (zj, radial block, pair indices, r_ij, |r_ij|); a StructureError for a zero distance."""
    for zj in range(len(ir.elements)):
        sel = np.flatnonzero(nb_species[lo:hi] == zj) + lo
        blk = ir.radial.get((zi, zj))
        if blk is None or len(sel) == 0:
            continue
        v = rij[sel]
        r = np.linalg.norm(v, axis=1)
        keep = r < blk.rcut
        sel, v, r = sel[keep], v[keep], r[keep]
        if len(sel) == 0:
            continue
        if np.any(r < 1e-12):
            bad = int(sel[np.argmin(r)])
            raise StructureError(f"overlapping atoms: pair {bad} has zero distance", pair=bad)
        yield zj, blk, sel, v, r


class _Prepared:
    def __init__(self, sp: SpeciesProgram):
        self.sp = sp
        self.embedding = embedding_slp(sp.embedding.kind, sp.embedding.params, sp.embedding.ndensity)
        self.core = core_slp(sp.core.kind, sp.E0, sp.core.rho_core_cut, sp.core.drho_core_cut)
        self.groups = _monomial_groups(sp.monomials)


def evaluate_ir(ir: ModelIR, species, offsets, nb_species, rij):
    """Energies per centre and dE_i/dr_ij per pair (see module docstring)."""
    if ir.theta:
        from ..errors import AcegenError

        raise AcegenError(f"model {ir.name!r} takes indicator inputs (a multilayer layer): the interpreter does not "
                          "evaluate it; use target 'c' or 'llvm'")
    species, offsets, nb_species, rij = _checked_inputs(species, offsets, nb_species, rij)
    nsp = len(ir.elements)
    prepared = [_Prepared(sp) for sp in ir.species]
    n = len(species)
    energies = np.zeros(n)
    dEdr = np.zeros_like(rij)
    lmax = ir.lmax
    kind = ir.angular_kind
    nlm = n_angular(kind, lmax)
    # the degree of every angular function (its polynomial is homogeneous of that degree)
    ls = np.array([l for l in range(lmax + 1) for _ in range(angular_width(kind, l))])
    for i in range(n):
        zi = int(species[i])
        if not 0 <= zi < nsp:
            raise StructureError(f"atom {i}: species index {zi} not in model")
        prep = prepared[zi]
        sp = prep.sp
        lo, hi = int(offsets[i]), int(offsets[i + 1])
        A = np.zeros(sp.n_A)
        nb = []  # (pair index array, zj, R, dR, Y, gradY(r), u, r)
        rho_core = 0.0
        core_pairs = []
        for zj, blk, sel, v, r in _bonds(ir, zi, nb_species, rij, lo, hi):
            u = v / r[:, None]
            R, dR = blk.evaluate(r)
            outs = ir.angular.evaluate(x=u[:, 0], y=u[:, 1], z=u[:, 2])
            Y = np.stack(outs[:nlm], axis=1)
            G = np.stack(
                [np.stack(outs[nlm * (1 + c) : nlm * (2 + c)], axis=1) for c in range(3)], axis=2
            )  # (npair, nlm, 3)
            gradY = (G - ls[None, :, None] * Y[:, :, None] * u[:, None, :]) / r[:, None, None]
            for ch in sp.channels:
                if ch.zj != zj and ch.zj != ANY:
                    continue
                s = slice(angular_offset(kind, ch.l), angular_offset(kind, ch.l + 1))
                A[ch.offset : ch.offset + ch.size] += R[:, ch.radial] @ Y[:, s]
            if blk.core is not None and sp.core.kind != "none":
                rho_core += float(np.sum(R[:, blk.core]))
                core_pairs.append((sel, blk, r, u, dR[:, blk.core]))
            nb.append((sel, zj, R, dR, Y, gradY, u, r))
        # products
        nd = sp.embedding.ndensity
        rho = np.zeros(nd)
        prods = _monomial_products(A, [idx for _, idx in prep.groups])
        for (ks, idx), (prod, _) in zip(prep.groups, prods):
            rho += prod @ sp.coeffs[ks]
        F, dF = embedding(sp, rho, prep.embedding)
        # core repulsion / inner cutoff
        best = None  # zbl: (d, pair, u, delta) of the nearest neighbour
        if sp.core.kind == "zbl":
            for sel, zj, R, dR, Y, gradY, u, r in nb:
                blk = ir.radial[(zi, zj)]
                d = r - (blk.r_in - blk.delta_in)
                k = int(np.argmin(d))
                if best is None or d[k] < best[0]:
                    best = (float(d[k]), int(sel[k]), u[k], blk.delta_in)
        d, delta = (np.inf, 0.0) if best is None else (best[0], float(best[3]))
        E, scaleF, dE_drhocore, dE_dd = _run(prep.core, e_ace=F, rho_core=rho_core, d=d, delta=delta)
        dscale_pair = (best[1], dE_dd * best[2]) if best is not None and dE_dd != 0.0 else None
        energies[i] = E
        # adjoint: dE/dA
        w = np.zeros(sp.n_A)
        g = scaleF * dF  # dE/dρ_p
        for (ks, idx), (_, loo) in zip(prep.groups, prods):
            cw = sp.coeffs[ks] @ g  # (K,)
            np.add.at(w, idx, cw[:, None] * loo)
        for sel, zj, R, dR, Y, gradY, u, r in nb:
            f = np.zeros((len(sel), 3))
            for ch in sp.channels:
                if ch.zj != zj and ch.zj != ANY:
                    continue
                s = slice(angular_offset(kind, ch.l), angular_offset(kind, ch.l + 1))
                wc = w[ch.offset : ch.offset + ch.size]
                f += (dR[:, ch.radial] * (Y[:, s] @ wc))[:, None] * u
                f += R[:, ch.radial][:, None] * np.einsum("pmx,m->px", gradY[:, s, :], wc)
            dEdr[sel] += f
        for sel, blk, r, u, dphi in core_pairs:
            dEdr[sel] += (dE_drhocore * dphi)[:, None] * u
        if dscale_pair is not None:
            dEdr[dscale_pair[0]] += dscale_pair[1]
    return energies, dEdr


def evaluate_projections(ir: ModelIR, species, offsets, nb_species, rij):
    """The projection output (``ModelIR.projection_ir``): per centre i of species zi, row i of
    an (n, ir.projection_width) array holds ρ_0 … ρ_{nd−1}, b_f = Σ_k P[k, f] Π A (the
    species's :class:`~acegen.ir.model.ProjectionRows`), then F'_p(ρ_p) (the embedding's
    derivatives), zero-padded.  A is computed as in
    :func:`evaluate_ir` (same neighbours, radial functions and harmonics)."""
    ir = ir.projection_ir()
    species, offsets, nb_species, rij = _checked_inputs(species, offsets, nb_species, rij)
    nsp = len(ir.elements)
    kind = ir.angular_kind
    nlm = n_angular(kind, ir.lmax)
    groups = [_monomial_groups(sp.monomials) for sp in ir.species]
    slps = [embedding_slp(sp.embedding.kind, sp.embedding.params, sp.embedding.ndensity) for sp in ir.species]
    out = np.zeros((len(species), ir.projection_width))
    for i in range(len(species)):
        zi = int(species[i])
        if not 0 <= zi < nsp:
            raise StructureError(f"atom {i}: species index {zi} not in model")
        sp = ir.species[zi]
        lo, hi = int(offsets[i]), int(offsets[i + 1])
        A = np.zeros(sp.n_A)
        for zj, blk, _sel, v, r in _bonds(ir, zi, nb_species, rij, lo, hi):
            u = v / r[:, None]
            R, _ = blk.evaluate(r)
            outs = ir.angular.evaluate(x=u[:, 0], y=u[:, 1], z=u[:, 2])
            Y = np.stack(outs[:nlm], axis=1)
            for ch in sp.channels:
                if ch.zj == zj or ch.zj == ANY:
                    s = slice(angular_offset(kind, ch.l), angular_offset(kind, ch.l + 1))
                    A[ch.offset : ch.offset + ch.size] += R[:, ch.radial] @ Y[:, s]
        nd = sp.embedding.ndensity
        cols = np.hstack([sp.coeffs, sp.projections.coeffs])
        vals = np.zeros(cols.shape[1])
        for prod, (ks, _) in zip(_monomial_products(A, [idx for _, idx in groups[zi]]), groups[zi]):
            vals += prod[0] @ cols[ks]
        out[i, : nd + sp.n_projections] = vals
        out[i, nd + sp.n_projections : 2 * nd + sp.n_projections] = embedding(sp, vals[:nd], slps[zi])[1]
    return out
