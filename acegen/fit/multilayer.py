"""Fitting multilayer ACE models: every layer's coefficients jointly, on energies and forces.

The model (docs/multilayer.md) is linear in the last layer's coefficients at fixed indicators
and non-linear (through θ = tanh φ) in those of the inner layers.  This module provides the
:class:`~acegen.fit.nonlinear.ResidualModel` of such a fit, :class:`MultilayerResidualModel`,
used by the fit itself, :func:`acegen.fit.driver.fit_multilayer` (what ``acegen.fit(mlspec, ...)``
runs).

**Basis values per layer.**  A layer's basis is folded like the layer's energy kernel, with the
identity as coefficients (:func:`acegen.multilayer.ir.unit_layer_ir`): per centre species the
one-particle channels, the monomials of A and a (monomial × parameter·(k0max + 1)) weight
matrix, so that

    B_v(i) = Σ_k0 T_k0(θ_i) Σ_m W[m, v, k0] Π_t A_i[m_t],   A_i[a] = Σ_j R_c(a)(r_ij) Y_a(r̂_ij) T_k(a)(θ_j).

The radial functions, spherical harmonics and their gradients are evaluated once per
structure (the positions do not change during a fit); everything that depends on the
coefficients is NumPy array work per evaluation.

**Derivatives.**  Energy rows, exact: ∂E/∂c^(n) = Σ_i w_i^(n) B^(n)(i) with the adjoints of the
reverse mode across layers, w^(last) = 1, w_a^(n−1) = (1 − θ_a²)[w_a ∂φ_a/∂θ_a + Σ_(i, j=a)
w_i ∂φ_i/∂θ_j] (∂φ/∂θ from the monomials' leave-one-out products and T'_k).  Force rows: the
complex-step derivative (Squire and Trapp 1998) of that exact (E, ∂E/∂c) with respect to every
atomic coordinate — the pair vectors r_ij perturbed by i·h·(δ_ja − δ_ia)·e_x, h = 1e-30, the
one-particle functions entering through their values and exact gradients, all later steps in
complex arithmetic — gives F = −∂E/∂r and ∂F/∂c = −∂²E/∂r∂c, every layer included, exact to
round-off (no step to choose: there is no subtractive cancellation).  One evaluation covers
the 3·n_atoms coordinates of a structure as a batch of "replicas", so the Jacobian of a
structure costs about 3·n_atoms times its energy.

**Start.**  Every layer's *plain* functions (all k = 0 and k0 = 0: the single-layer basis of its
spec, independent of the indicators) are fitted linearly on their own (BLR by default).
Inner layers take that fit scaled by α_n = ``theta_scale`` / max_i |φ_i^(n)| over the training
atoms (θ = tanh φ stays in ±tanh(theta_scale), not saturated); the last layer takes it as is;
all functions with k > 0 or k0 > 0 start at zero.  So the model starts as the single-layer
linear fit of the last layer's spec, and the non-linear solver (LM or L-BFGS,
:mod:`acegen.fit.nonlinear`) descends from there with the smoothness prior of every layer as
Tikhonov block (λ of the last layer's linear start by default).

Only the linear embedding (one density) of the last layer is fitted, and no virials yet.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import FitError
from .data import RowMeta, _n_rows
from .nonlinear import Residuals

__all__ = ["MULTILAYER_OPTIONS", "LayerTables", "MultilayerResidualModel", "layer_prior"]

#: complex step (the pair vectors are perturbed by i·H)
H = 1e-30


def _cheb(x: np.ndarray, kmax: int) -> tuple[np.ndarray, np.ndarray]:
    """T_k(x) and T'_k(x), k = 0..kmax, stacked on a new last axis."""
    T = [np.ones_like(x), x]
    dT = [np.zeros_like(x), np.ones_like(x)]
    for k in range(2, kmax + 1):
        T.append(2 * x * T[k - 1] - T[k - 2])
        dT.append(2 * T[k - 1] + 2 * x * dT[k - 1] - dT[k - 2])
    return np.stack(T[:kmax + 1], axis=-1), np.stack(dT[:kmax + 1], axis=-1)


@dataclass
class _SpeciesTable:
    """One centre species of one layer: channels flattened to A slots, monomials, weights."""

    z0: int
    slot_zj: np.ndarray      # (nA,) neighbour species of the slot's channel (ANY = -1)
    slot_c: np.ndarray       # (nA,) plain radial function index
    slot_k: np.ndarray       # (nA,) Chebyshev degree of the neighbour's indicator
    slot_y: np.ndarray       # (nA,) spherical-harmonic index l² + l + m
    orders: list             # [(idx (M, ν), first monomial row)]
    coef: np.ndarray         # (n_mono, P·nk0) weights of the identity fold
    term_mono: np.ndarray    # (n_terms,) monomial of each (monomial, factor) term
    term_slot: np.ndarray    # (n_terms,) A slot of each term

    def __post_init__(self):
        import scipy.sparse as sps

        self.coefT = sps.csr_matrix(self.coef.T)  # sparse: a monomial enters few functions

    @property
    def WT(self):
        """(nA, n_terms) sparse: 1 where term t's factor is slot a."""
        import scipy.sparse as sps

        w = self.__dict__.get("_WT")
        if w is None:
            nt = len(self.term_slot)
            w = sps.csr_matrix((np.ones(nt), (self.term_slot, np.arange(nt))), shape=(self.n_slots, nt))
            self.__dict__["_WT"] = w
        return w

    @property
    def n_slots(self) -> int:
        return len(self.slot_c)


class LayerTables:
    """The fold of one layer with identity coefficients (module docstring)."""

    def __init__(self, layer_basis, first: bool):
        from ..basis import spec_radial_blocks
        from ..multilayer.ir import unit_layer_fold

        self.first = bool(first)
        self.basis = layer_basis
        self.n_params = len(layer_basis.functions) + len(layer_basis.pair)
        self.kmax = 0 if first else int(layer_basis.kmax)
        self.nk0 = 1 if first else int(layer_basis.k0max) + 1
        if getattr(layer_basis, "ir_angular", "spherical") != "spherical":
            raise FitError("multilayer fits support spherical-harmonic bases only")
        if first:
            self.radial = layer_basis.radial_blocks()
            nf = None
        else:
            self.radial = spec_radial_blocks(layer_basis.spec, layer_basis.nmax)
            nf = layer_basis.nmax + layer_basis.npair
        for blk in self.radial.values():
            if blk.slp is None:
                raise FitError("multilayer fits need analytic radial functions (no spline tables)")
        self.nfunc = {key: blk.nfunc for key, blk in self.radial.items()}
        self.lmax = max(int(layer_basis.lmax), 0)
        self.species = []
        for z0, chans, monos, coef in unit_layer_fold(layer_basis, first):
            zj, cs, ks, ys = [], [], [], []
            for ch in chans:
                k, c = (0, ch.radial) if nf is None else divmod(ch.radial, nf)
                for q in range(ch.size):
                    zj.append(ch.zj)
                    cs.append(c)
                    ks.append(k)
                    ys.append(ch.l * ch.l + q)
            orders, tm, ts = [], [], []
            start = 0
            while start < len(monos):
                nu = len(monos[start])
                stop = start
                while stop < len(monos) and len(monos[stop]) == nu:
                    stop += 1
                idx = np.array(monos[start:stop], dtype=np.int64).reshape(stop - start, nu)
                orders.append((idx, start))
                for t in range(nu):
                    tm.append(np.arange(start, stop))
                    ts.append(idx[:, t])
                start = stop
            self.species.append(_SpeciesTable(
                z0, np.array(zj, dtype=np.int64), np.array(cs, dtype=np.int64), np.array(ks, dtype=np.int64),
                np.array(ys, dtype=np.int64), orders, coef,
                np.concatenate(tm) if tm else np.zeros(0, dtype=np.int64),
                np.concatenate(ts) if ts else np.zeros(0, dtype=np.int64)))
        self.rcut = max(float(b.rcut) for b in self.radial.values())

    def plain_mask(self) -> np.ndarray:
        """True for the parameters whose functions do not depend on the indicators (all k = 0,
        k0 = 0; every function of layer 1 and every pair function)."""
        if self.first:
            return np.ones(self.n_params, dtype=bool)
        mb = [f.k0 == 0 and all(fc[3] == 0 for fc in f.factors) for f in self.basis.functions]
        return np.array(mb + [True] * len(self.basis.pair), dtype=bool)


@dataclass
class _Group:
    """Position-dependent data of one layer and one centre species in one structure."""

    cen: np.ndarray      # (n_c,) centre atoms
    pairs: np.ndarray    # (n_p,) pair indices (centre of this species, within the bond's cutoff)
    loc: np.ndarray      # (n_p,) local centre index of each pair
    M: np.ndarray        # (n_c, n_p) 1 where pair p belongs to centre c
    Phi0: np.ndarray     # (n_p, nA) R Y (0 where the neighbour's species does not match)
    dPhi: np.ndarray     # (3, n_p, nA) ∂(R Y)/∂r_ij

    def __post_init__(self):
        self.Mc = self.M.astype(complex)  # numpy's matmul takes BLAS only without casting


class _Structure:
    """Neighbour list and per-layer one-particle data of one structure."""

    def __init__(self, layers, elements, atoms, angular):
        from ..runtime.neighbours import build_neighbours, species_indices

        self.Z = species_indices(atoms, tuple(elements)).astype(np.int64)
        self.n = len(atoms)
        rc = max(lt.rcut for lt in layers)
        nl = build_neighbours(atoms, rc)
        self.i = np.asarray(nl.i, dtype=np.int64)
        self.j = np.asarray(nl.j, dtype=np.int64)
        rij = np.asarray(nl.rij, dtype=float)
        self.n_pairs = len(self.i)
        r = np.linalg.norm(rij, axis=1)
        self.r = r
        u = rij / np.where(r > 0, r, 1.0)[:, None]
        ny = max((lt.lmax + 1) ** 2 for lt in layers)
        out = angular[max(lt.lmax for lt in layers)].evaluate(x=u[:, 0], y=u[:, 1], z=u[:, 2]) if self.n_pairs \
            else [np.zeros(0)] * (4 * ny)
        Y = np.stack(out[:ny], axis=1) if self.n_pairs else np.zeros((0, ny))
        dP = np.stack([np.stack(out[(k + 1) * ny:(k + 2) * ny], axis=1) for k in range(3)]) if self.n_pairs \
            else np.zeros((3, 0, ny))
        # gradient of Y(r/|r|) with respect to r: (∇P − u (u·∇P)) / r
        udp = np.einsum("pk,kpy->py", u, dP)
        gY = (dP - u.T[:, :, None] * udp[None]) / np.where(r > 0, r, 1.0)[None, :, None]
        self.groups = []
        self.jmat = np.zeros((self.n, self.n_pairs))
        self.jmat[self.j, np.arange(self.n_pairs)] = 1.0
        self.jmat_c = np.ascontiguousarray(self.jmat.T, dtype=complex)  # complex: BLAS matmul
        for lt in layers:
            per = {}
            # radial values and derivatives of every pair with its bond's block
            for st in lt.species:
                z0 = st.z0
                cen = np.flatnonzero(self.Z == z0)
                if not len(cen) or not st.n_slots:
                    continue
                sel = np.flatnonzero(self.Z[self.i] == z0)
                rcs = np.array([lt.radial[(z0, zj)].rcut if (z0, zj) in lt.radial else 0.0
                                for zj in range(len(elements))])
                pairs = sel[(r[sel] > 0) & (r[sel] < rcs[self.Z[self.j[sel]]])].astype(np.int64)
                nfmax = max(lt.nfunc.values())
                R = np.zeros((len(pairs), nfmax))
                dR = np.zeros((len(pairs), nfmax))
                zjs = self.Z[self.j[pairs]]
                for zj in np.unique(zjs):
                    blk = lt.radial[(z0, int(zj))]
                    m = zjs == zj
                    vals = blk.slp.evaluate(r=r[pairs[m]])
                    nf = blk.nfunc
                    R[m, :nf] = np.stack(vals[:nf], axis=1)
                    dR[m, :nf] = np.stack(vals[nf:2 * nf], axis=1)
                match = ((st.slot_zj[None, :] == zjs[:, None]) | (st.slot_zj[None, :] == -1)).astype(float)
                Rs, dRs = R[:, st.slot_c] * match, dR[:, st.slot_c] * match
                Ys, gYs = Y[pairs][:, st.slot_y], gY[:, pairs][:, :, st.slot_y]
                Phi0 = Rs * Ys
                dPhi = dRs[None] * Ys[None] * u[pairs].T[:, :, None] + Rs[None] * gYs
                loc = np.searchsorted(cen, self.i[pairs])
                M = np.zeros((len(cen), len(pairs)))
                M[loc, np.arange(len(pairs))] = 1.0
                per[z0] = _Group(cen, pairs, loc, M, Phi0, dPhi)
            self.groups.append(per)

    def perturbation(self, forces: bool, atoms=None):
        """(D, coordinate of each replica, s (D, n_pairs)): s = δ_ja − δ_ia for the replica's atom a;
        the replicas are the 3 coordinates of every atom, or of ``atoms`` (indices) only."""
        if not forces:
            return 1, np.zeros(1, dtype=np.int64), np.zeros((1, self.n_pairs))
        sel = np.arange(self.n) if atoms is None else np.asarray(atoms, dtype=np.int64)
        D = 3 * len(sel)
        atom = sel[np.arange(D) // 3]
        s = (self.j[None, :] == atom[:, None]).astype(float) - (self.i[None, :] == atom[:, None])
        return D, np.arange(D) % 3, s


def _layer_forward(lt: LayerTables, st: _Structure, layer: int, c: np.ndarray, theta, D, xs, s, derivs: bool,
                   basis: bool = True):
    """One layer on D replicas: B (D, n, P), φ (D, n), ∂φ_i/∂θ_i (D, n), ∂φ_i/∂θ_j per pair (D, n_pairs).
    ``basis`` False: φ only, from the folded weights (B, ∂φ/∂θ are None)."""
    n, P, nk0 = st.n, lt.n_params, lt.nk0
    if not basis:
        phi = np.zeros((D, n), dtype=complex)
    B = np.zeros((D, n, P), dtype=complex) if basis else None
    dc = np.zeros((D, n), dtype=complex)
    dn = np.zeros((D, st.n_pairs), dtype=complex)
    for tab in lt.species:
        g = st.groups[layer].get(tab.z0)
        if g is None or not len(g.pairs):
            continue
        Phi = g.Phi0[None] + 1j * H * s[:, g.pairs, None] * g.dPhi[xs]
        if not lt.first:
            Tj, dTj = _cheb(theta[:, st.j[g.pairs]], lt.kmax)
            TA = Phi * Tj[:, :, tab.slot_k]
        else:
            TA = Phi
        A = np.matmul(g.Mc, TA)                                          # (D, n_c, nA)
        n_mono = tab.coef.shape[0]
        Pm = np.empty(A.shape[:2] + (n_mono,), dtype=complex)
        for idx, start in tab.orders:
            Pm[:, :, start:start + len(idx)] = np.prod(A[:, :, idx], axis=-1)
        if not basis:
            cf = np.einsum("mpk,p->mk", tab.coef.reshape(n_mono, P, nk0), c)  # (n_mono, nk0)
            psic = Pm @ cf.astype(complex)
            if lt.first:
                phi[:, g.cen] = psic[..., 0]
            else:
                phi[:, g.cen] = np.einsum("dck,dck->dc", psic, _cheb(theta[:, g.cen], nk0 - 1)[0])
            continue
        psi = (tab.coefT @ Pm.reshape(-1, n_mono).T).T.reshape(D, len(g.cen), P, nk0)
        if lt.first:
            B[:, g.cen] = psi[..., 0]
            continue
        T0, dT0 = _cheb(theta[:, g.cen], nk0 - 1)                       # (D, n_c, nk0)
        B[:, g.cen] = np.einsum("dcpk,dck->dcp", psi, T0)
        if not derivs:
            continue
        cf = np.einsum("mpk,p->mk", tab.coef.reshape(n_mono, P, nk0), c)  # (n_mono, nk0)
        psic = Pm @ cf.astype(complex)
        dc[:, g.cen] = np.einsum("dck,dck->dc", psic, dT0)
        # ∂φ_i/∂A_a = Σ_k0 T_k0(θ_i) Σ_(m, t): m_t = a  cf[m, k0] Π_{s≠t} A[m_s]
        loo = []
        for idx, start in tab.orders:
            nu = idx.shape[1]
            for t in range(nu):
                others = [q for q in range(nu) if q != t]
                loo.append(np.prod(A[:, :, idx[:, others]], axis=-1) if others
                           else np.ones(A.shape[:2] + (len(idx),), dtype=complex))
        L = np.concatenate(loo, axis=-1)                                # (D, n_c, n_terms)
        X = L * np.einsum("dck,tk->dct", T0, cf[tab.term_mono])
        nt = X.shape[-1]
        gA = (tab.WT @ X.reshape(-1, nt).T).T.reshape(A.shape)        # Σ over the terms of slot a
        dn[:, g.pairs] = np.einsum("dpa,dpa->dp", gA[:, g.loc], Phi * dTj[:, :, tab.slot_k])
    if not basis:
        return None, phi, None, None
    phi = B @ c.astype(complex)
    return B, phi, dc, dn


#: bytes of the largest per-replica-batch complex array (the replicas are processed in chunks)
CHUNK_BYTES = 1 << 27


def forward(layers, st: _Structure, coeffs, *, forces: bool, gradient: bool = True, atoms=None):
    """Energies and parameter gradients of one structure on its replicas: (E (D,), per-atom
    energies (n,), indicators (n, n_layers − 1), ∂E/∂c (D, n_params), or None without
    ``gradient``); with ``forces`` the replicas are the 3n coordinates (complex step; those of
    ``atoms`` only when given), else one real evaluation.  The replicas go in chunks of at most
    :data:`CHUNK_BYTES` per array."""
    D, xs, s = st.perturbation(forces, atoms)
    width = max([st.n_pairs * max((t.n_slots for t in lt.species), default=1) for lt in layers]
                + [st.n * lt.n_params for lt in layers] + [1])
    step = max(1, int(CHUNK_BYTES // (16 * width)))
    if D <= step:
        return _forward(layers, st, coeffs, D, xs, s, gradient)
    parts = [_forward(layers, st, coeffs, min(step, D - a), xs[a:a + step], s[a:a + step], gradient)
             for a in range(0, D, step)]
    E = np.concatenate([p[0] for p in parts])
    g = np.concatenate([p[3] for p in parts]) if gradient else None
    return E, parts[0][1], parts[0][2], g


def _forward(layers, st: _Structure, coeffs, D, xs, s, gradient: bool):
    theta = None
    kept, thetas = [], []
    last = len(layers) - 1
    for n, (lt, c) in enumerate(zip(layers, coeffs)):
        B, phi, dc, dn = _layer_forward(lt, st, n, c, theta, D, xs, s, derivs=n > 0, basis=gradient)
        kept.append((B, dc, dn, theta))
        if n < last:
            if not np.isfinite(phi).all():
                raise FitError(f"layer {n + 1} gave a non-finite indicator argument")
            theta = np.tanh(phi)
            thetas.append(theta[0].real)
    ind = np.stack(thetas, axis=1) if thetas else np.zeros((st.n, 0))
    if not gradient:
        return phi.sum(axis=1), phi[0].real, ind, None
    w = np.ones((D, st.n), dtype=complex)
    grads = [None] * len(layers)
    for n in range(last, -1, -1):
        B, dc, dn, th = kept[n]
        grads[n] = np.einsum("di,dip->dp", w, B)
        if n == 0:
            break
        G = w * dc + (w[:, st.i] * dn) @ st.jmat_c
        w = G * (1.0 - th * th)
    return phi.sum(axis=1), phi[0].real, ind, np.concatenate(grads, axis=1)


def layer_prior(lt: LayerTables, kind: str = "algebraic") -> np.ndarray:
    """γ of one layer: the algebraic smoothness prior of the functions' (z, n, l) factors
    (:func:`acegen.symbolic.selection.smoothness_prior`, p = 4, constant 1), plus
    Σ_t (wK k_t)⁴ + (wK k0)⁴ for a layer n > 1; ``kind`` ``"none"`` gives ones."""
    from ..symbolic.selection import smoothness_prior

    if kind == "none":
        return np.ones(lt.n_params)
    if kind != "algebraic":
        raise FitError(f"multilayer fits take the prior 'algebraic' or 'none', got {kind!r}")
    b = lt.basis
    gam = np.asarray(smoothness_prior(b.spec, [tuple(f[:3] for f in fn.factors) for fn in b.functions],
                                      kind="algebraic", p=4, constant=1.0), dtype=float)
    gp = np.asarray(smoothness_prior(b.spec, [((p.zj, p.n, 0),) for p in b.pair], kind="algebraic", p=4,
                                     constant=1.0), dtype=float)
    if not lt.first:
        wK = float(b.wK)
        gam = gam + np.array([sum((wK * f[3]) ** 4 for f in fn.factors) + (wK * fn.k0) ** 4 for fn in b.functions])
    return np.concatenate([gam, gp])


class MultilayerResidualModel:
    """The :class:`~acegen.fit.nonlinear.ResidualModel` of a multilayer fit (module docstring):
    ``blocks`` lists of :class:`~acegen.fit.data.StructureData`, ``basis`` a
    :class:`~acegen.multilayer.basis.MultilayerBasis`.  Parameters: the layers' coefficient
    vectors (many-body then pair each) concatenated, layer 1 first.

    ``force_atoms``: fit the forces of at most that many atoms per structure (drawn once, seeded
    by ``seed`` and the structure's index), so a structure's Jacobian costs 3·force_atoms
    replicas instead of 3·n_atoms, its force rows weighted by √(n_atoms / force_atoms) so that
    they keep their share of the loss (an unbiased estimate of the full force term); None: every
    atom.  :meth:`with_all_forces` gives the same model (sharing the structures' tables) with
    every force row, for error tables."""

    def __init__(self, blocks, basis, *, cache: bool = True, force_atoms: int | None = None, seed: int = 0):
        from ..symbolic.ylm import ylm_slp

        spec = basis.spec
        if spec.embedding != "linear" or spec.ndensity != 1:
            raise FitError(f"multilayer fits support the linear embedding (one density) of the last layer, "
                           f"got {spec.embedding!r} with {spec.ndensity} densities")
        self.basis = basis
        self.elements = tuple(spec.elements)
        self.layers = [LayerTables(lb, n == 0) for n, lb in enumerate(basis.layers)]
        self.sizes = [lt.n_params for lt in self.layers]
        self.n_params = int(sum(self.sizes))
        self._angular = {lmax: ylm_slp(lmax) for lmax in {max(lt.lmax for lt in self.layers)}}
        self.blocks = [list(b) for b in blocks]
        for b in self.blocks:
            for s in b:
                if s.virial is not None:
                    raise FitError(f"structure {s.index}: multilayer fits do not fit virials/stresses yet "
                                   "(pass virial_key=None and stress_key=None)")
        self.force_atoms, self.seed = force_atoms, int(seed)
        self._sel = [[self._force_selection(s) for s in b] for b in self.blocks]
        self._rows = [sum(_n_rows(s) if sel is None else int(s.energy is not None) + 3 * len(sel)
                          for s, sel in zip(b, sels)) for b, sels in zip(self.blocks, self._sel)]
        self.cache = cache
        self._st: dict = {}

    def _force_selection(self, s):
        """The atoms whose forces are fitted (sorted indices), or None for all of them."""
        k = self.force_atoms
        if k is None or s.forces is None or s.n_atoms <= k:
            return None
        rng = np.random.default_rng([self.seed, int(s.index)])
        return np.sort(rng.choice(s.n_atoms, size=k, replace=False))

    def with_all_forces(self) -> "MultilayerResidualModel":
        """This model with the force rows of every atom (the structure tables shared)."""
        if self.force_atoms is None:
            return self
        out = MultilayerResidualModel(self.blocks, self.basis, cache=self.cache)
        out._st = self._st
        return out

    # -------------------------------------------------------------- parameters
    def split(self, theta) -> list[np.ndarray]:
        """θ → one coefficient vector per layer."""
        theta = np.asarray(theta, dtype=float).ravel()
        if theta.shape != (self.n_params,):
            raise FitError(f"multilayer fit: {theta.size} parameters, expected {self.n_params}")
        return np.split(theta, np.cumsum(self.sizes)[:-1])

    def structure(self, atoms):
        """The position-dependent tables of ``atoms`` (kept by the fit for its structures)."""
        return _Structure(self.layers, self.elements, atoms, self._angular)

    def _structure(self, b: int, k: int, s) -> _Structure:
        st = self._st.get((b, k))
        if st is None:
            st = self.structure(s.atoms)
            if self.cache:
                self._st[(b, k)] = st
        return st

    def compute(self, atoms, theta, *, forces: bool = True) -> dict:
        """energy (without Eref), energies, indicators, forces and, as ``jacobian``, ∂E/∂θ and
        ∂F/∂θ ((3n, n_params), rows atom-major) of ``atoms``."""
        st = self.structure(atoms)
        E, Ei, ind, g = forward(self.layers, st, self.split(theta), forces=forces)
        out = {"energy": float(E[0].real), "energies": Ei, "indicators": ind, "dE": g[0].real}
        if forces:
            out["forces"] = (-E.imag / H).reshape(st.n, 3)
            out["dF"] = -g.imag / H
        return out

    # -------------------------------------------------------------- protocol
    @property
    def n_batches(self) -> int:
        return len(self.blocks)

    def n_rows(self, batch: int) -> int:
        return self._rows[batch]

    def evaluate(self, theta: np.ndarray, batch: int, *, jacobian: bool = False) -> Residuals:
        coeffs = self.split(theta)
        nrow = self._rows[batch]
        pred, y, w = np.empty(nrow), np.empty(nrow), np.empty(nrow)
        J = np.empty((nrow, self.n_params)) if jacobian else None
        st_ = np.empty(nrow, dtype=np.int64)
        kind = np.empty(nrow, dtype="<U1")
        comp = np.empty(nrow, dtype=np.int64)
        nat = np.empty(nrow, dtype=np.int64)
        ctype = np.empty(nrow, dtype=object)
        row = 0
        for k, s in enumerate(self.blocks[batch]):
            if not _n_rows(s):
                continue
            st = self._structure(batch, k, s)
            sel = self._sel[batch][k]
            E, _, _, g = forward(self.layers, st, coeffs, forces=s.forces is not None, gradient=jacobian, atoms=sel)
            r0 = row
            if s.energy is not None:
                pred[row], y[row], w[row], kind[row], comp[row] = E[0].real, s.energy_target, s.weights["E"], "E", 0
                if jacobian:
                    J[row] = g[0].real
                row += 1
            if s.forces is not None:
                cols = np.arange(3 * s.n_atoms) if sel is None else (3 * sel[:, None] + np.arange(3)).ravel()
                m = len(cols)
                pred[row:row + m] = -E.imag / H
                y[row:row + m] = np.asarray(s.forces, dtype=float).ravel()[cols]
                # a subset of k of n atoms stands for all of them: weight √(n/k), so the force
                # rows keep their share of the loss against the energy rows
                w[row:row + m] = s.weights["F"] * (1.0 if sel is None else np.sqrt(s.n_atoms / len(sel)))
                kind[row:row + m] = "F"
                comp[row:row + m] = cols
                if jacobian:
                    J[row:row + m] = -g.imag / H
                row += m
            st_[r0:row], nat[r0:row], ctype[r0:row] = k, s.n_atoms, s.config_type
        r = w * (pred - y)
        if jacobian:
            J *= w[:, None]
        if not np.isfinite(r).all():
            bad = int(st_[np.flatnonzero(~np.isfinite(r))[0]])
            raise FitError(f"structure {self.blocks[batch][bad].index}: non-finite prediction of the multilayer model")
        return Residuals(r, pred, y, w, RowMeta(st_, kind, comp, nat, ctype), J)

    def layer_design(self, layer: int, batch: int):
        """The linear design of ``layer`` alone (its functions at θ = 0, the sum over centres;
        exact for the plain functions, which do not depend on θ): (rows × P_layer, y, w, per-atom
        basis values of the batch (n_atoms_total, P_layer))."""
        lt = self.layers[layer]
        rows, ys, ws, Bs = [], [], [], []
        for k, s in enumerate(self.blocks[batch]):
            if not _n_rows(s):
                continue
            st = self._structure(batch, k, s)
            D, xs, sp_ = st.perturbation(s.forces is not None)
            theta = None if lt.first else np.zeros((D, st.n), dtype=complex)
            B, _, _, _ = _layer_forward(lt, st, layer, np.zeros(lt.n_params), theta, D, xs, sp_, derivs=False)
            g = B.sum(axis=1)
            Bs.append(B[0].real)
            if s.energy is not None:
                rows.append(g[:1].real)
                ys.append([s.energy_target])
                ws.append([s.weights["E"]])
            if s.forces is not None:
                rows.append(-g.imag / H)
                ys.append(np.asarray(s.forces, dtype=float).ravel())
                ws.append(np.full(3 * s.n_atoms, s.weights["F"]))
        P = lt.n_params
        cat = lambda a, shape: np.concatenate(a) if a else np.zeros(shape)  # noqa: E731
        return cat(rows, (0, P)), cat(ys, (0,)), cat(ws, (0,)), cat(Bs, (0, P))


# ---------------------------------------------------------------------------- the fit
#: ``solver_options`` of a multilayer fit
MULTILAYER_OPTIONS = ("max_iter", "tol", "lam", "init_solver", "init_options", "max_jacobian_gib", "theta_scale",
                      "force_atoms", "seed")


def _predictions(model: MultilayerResidualModel, theta: np.ndarray, block_size: int):
    from .fs import predictions

    return predictions(model, theta, block_size)
