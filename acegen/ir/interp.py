"""A plain NumPy interpreter of :class:`~acegen.ir.model.ModelIR`.

This is the executable definition of the IR's semantics: every backend (C, LLVM, CUDA) is
tested against it.  It is written for clarity, not speed (a Python loop over atoms, numpy
over neighbours and monomials).

Per central atom i of species zi, over neighbours j with r_ij < rcut(zi, zj):

    A[ch.offset + l + m] = Σ_j R_ch(r_ij) Y_lm(r̂_ij)          (channels of neighbour species zj)
    ρ_p  = Σ_k coeffs[k, p] Π_{a ∈ monomial k} A[a]
    E_i  = E0 + Σ_p F_p(ρ_p)                                     (core kind "none")
    E_i  = E0 + fcut(ρ_core) Σ_p F_p(ρ_p) + ρ_core               (core kind "density")
    E_i  = E0 + Σ_p F_p(ρ_p) + ρ_core                            (core kind "distance")
    E_i  = E0 + f_in(d) Σ_p F_p(ρ_p) + (1 − f_in(d)) ρ_core      (core kind "zbl")

with ρ_core = Σ_j φ_core(r_ij) (the block's ``core`` radial function) and, for zbl, the
nearest-neighbour switch f_in(d) on d = min_j (r_ij − (r_in − δ_in)) (see :func:`zbl_switch`).
"""

from __future__ import annotations

import numpy as np

from ..errors import InternalError, StructureError
from .model import ModelIR, SpeciesProgram

FS_W = 1.0e6


def embedding(kind: str, params, rho):
    """Return (Σ_p F_p(ρ_p), dF/dρ_p) for one atom; ``rho`` has shape (ndensity,)."""
    rho = np.asarray(rho, dtype=float)
    if kind == "linear":
        return float(rho[0]), np.ones(1)
    E = 0.0
    dE = np.zeros_like(rho)
    for p, r in enumerate(rho):
        w, m = float(params[2 * p]), float(params[2 * p + 1])
        f, df = fs_single(kind, r, m)
        E += w * f
        dE[p] = w * df
    return E, dE


def fs_single(kind: str, rho: float, m: float):
    """One Finnis–Sinclair term F(ρ; m) and its derivative, as PACE defines them."""
    if kind == "FinnisSinclair":
        if abs(rho) > 1e-10:
            s = np.sign(rho)
            a = abs(rho)
            e = np.exp(-((FS_W * a) ** 3))
            c = FS_W ** (1.0 - m)
            f = s * ((1.0 - e) * a**m + c * e * a)
            df = 3.0 * FS_W**3 * a**2 * e * a**m + (1.0 - e) * m * a ** (m - 1.0) + c * (e - 3.0 * FS_W**3 * a**3 * e)
            return f, df
        c = FS_W ** (1.0 - m)
        return c * rho, c
    if kind == "FinnisSinclairShiftedScaled":
        if abs(m - 1.0) < 1e-10:
            return rho, 1.0
        a = abs(rho)
        s = 1.0 if rho >= 0 else -1.0
        nu = 1.0 / m
        ea = np.exp(-a)
        x_off = nu ** (nu / (1.0 - nu)) * ea
        y_off = nu ** (1.0 / (1.0 - nu)) * ea
        f = s * ((x_off + a) ** m - y_off)
        df = y_off + m * (1.0 - x_off) * (x_off + a) ** (m - 1.0)
        return f, df
    raise InternalError(f"unknown embedding kind {kind!r}")


def poly_switch(x: float, xc: float, dx: float):
    """PACE's ``cutoff_func_poly``: 1 below xc − dx, 0 above xc, a quintic in between.
    Returns (f, df/dx)."""
    if x >= xc:
        return 0.0, 0.0
    if x <= xc - dx:
        return 1.0, 0.0
    t = 1.0 - 2.0 * (1.0 + (x - xc) / dx)
    f = 0.5 + 7.5 / 2.0 * (t / 4.0 - t**3 / 6.0 + t**5 / 20.0)
    df = -7.5 / dx * (0.25 - t**2 / 2.0 + t**4 / 4.0)
    return f, df


def zbl_switch(d: float, delta: float):
    """The ZBL nearest-neighbour switch of PACE: f = poly_switch(δ − d, δ, δ)."""
    f, df = poly_switch(delta - d, delta, delta)
    return f, -df


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


class _Prepared:
    def __init__(self, sp: SpeciesProgram):
        self.sp = sp
        orders = sorted({len(m) for m in sp.monomials})
        self.groups = []
        for nu in orders:
            ks = [k for k, m in enumerate(sp.monomials) if len(m) == nu]
            self.groups.append((np.array(ks, dtype=np.int64), np.array([sp.monomials[k] for k in ks], dtype=np.int64)))


def evaluate_ir(ir: ModelIR, species, offsets, nb_species, rij):
    """Energies per centre and dE_i/dr_ij per pair (see module docstring)."""
    species = np.asarray(species, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    nb_species = np.asarray(nb_species, dtype=np.int64)
    rij = np.asarray(rij, dtype=float).reshape(-1, 3)
    nsp = len(ir.elements)
    if not np.all(np.isfinite(rij)):
        bad = int(np.flatnonzero(~np.isfinite(rij).all(axis=1))[0])
        raise StructureError(f"non-finite neighbour vector at pair {bad}", pair=bad)
    prepared = [_Prepared(sp) for sp in ir.species]
    n = len(species)
    energies = np.zeros(n)
    dEdr = np.zeros_like(rij)
    lmax = ir.lmax
    nlm = (lmax + 1) ** 2
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
        for zj in range(nsp):
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
            u = v / r[:, None]
            R, dR = blk.evaluate(r)
            outs = ir.angular.evaluate(x=u[:, 0], y=u[:, 1], z=u[:, 2])
            Y = np.stack(outs[:nlm], axis=1)
            G = np.stack(
                [np.stack(outs[nlm * (1 + c) : nlm * (2 + c)], axis=1) for c in range(3)], axis=2
            )  # (npair, nlm, 3)
            ls = np.array([l for l in range(lmax + 1) for _ in range(2 * l + 1)])
            gradY = (G - ls[None, :, None] * Y[:, :, None] * u[:, None, :]) / r[:, None, None]
            for ch in sp.channels:
                if ch.zj != zj:
                    continue
                s = slice(ch.l * ch.l, (ch.l + 1) ** 2)
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
        F, dF = embedding(sp.embedding.kind, sp.embedding.params, rho)
        # core repulsion / inner cutoff
        scaleF, dscale_pair = 1.0, None
        E = sp.E0
        if sp.core.kind == "none":
            E += F
        elif sp.core.kind == "density":
            fc, dfc = poly_switch(rho_core, sp.core.rho_core_cut, sp.core.drho_core_cut)
            E += F * fc + rho_core
            scaleF = fc
            dE_drhocore = F * dfc + 1.0
        elif sp.core.kind == "distance":
            E += F + rho_core
            dE_drhocore = 1.0
        elif sp.core.kind == "zbl":
            # nearest-neighbour switch over all neighbours within the cutoff
            best = None
            for sel, zj, R, dR, Y, gradY, u, r in nb:
                blk = ir.radial[(zi, zj)]
                d = r - (blk.r_in - blk.delta_in)
                k = int(np.argmin(d))
                if best is None or d[k] < best[0]:
                    best = (float(d[k]), int(sel[k]), u[k], blk.delta_in)
            if best is None:
                fc, dfc_dd = 1.0, 0.0
            else:
                fc, dfc_dd = zbl_switch(best[0], best[3])
            E += F * fc + rho_core * (1.0 - fc)
            scaleF = fc
            dE_drhocore = 1.0 - fc
            if best is not None and dfc_dd != 0.0:
                dscale_pair = (best[1], (F - rho_core) * dfc_dd * best[2])
        else:  # pragma: no cover - validated in the IR
            raise InternalError(f"unknown core repulsion kind {sp.core.kind!r}")
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
                if ch.zj != zj:
                    continue
                s = slice(ch.l * ch.l, (ch.l + 1) ** 2)
                wc = w[ch.offset : ch.offset + ch.size]
                f += (dR[:, ch.radial] * (Y[:, s] @ wc))[:, None] * u
                f += R[:, ch.radial][:, None] * np.einsum("pmx,m->px", gradY[:, s, :], wc)
            dEdr[sel] += f
        for sel, blk, r, u, dphi in core_pairs:
            dEdr[sel] += (dE_drhocore * dphi)[:, None] * u
        if dscale_pair is not None:
            dEdr[dscale_pair[0]] += dscale_pair[1]
    return energies, dEdr
