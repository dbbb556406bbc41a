"""NumPy evaluation of a :class:`~acegen.basis.CoupledBasis` on a structure: the basis
values (descriptors, :meth:`CoupledBasis.evaluate`) and the per-parameter energy, force and
virial rows of a linear fit (the fallback when no C compiler builds the basis kernel).

    A_i[z, n, l, m] = Σ_{j: Z_j = z} R_n(r_ij) Y_lm(r̂_ij)
                      (Cartesian bases: r̂_ij^α, |α| = l, in place of Y_lm; docs/cartesian.md)
    B_k(i)          = Σ_M C_{k,M} Π_t A_i[factor_t, M_t]        (coupling coefficients C)
    P_i[z, n]       = Σ_{j: Z_j = z} P_n(r_ij)                   (pair basis)

Radial functions come from the NumPy formulas of :mod:`acegen.symbolic.radial`, spherical
harmonics from :func:`acegen.symbolic.ylm.ylm_numpy`, neighbours from ASE's
``neighbor_list``.  It sits between the symbolic stages and :mod:`acegen.basis` (it needs
neither the IR nor a compiler).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import StructureError


@dataclass(frozen=True)
class _Pairs:
    """Pairs sorted by centre (CSR): ``offsets[i]:offsets[i+1]`` are the pairs of centre i."""

    i: np.ndarray
    j: np.ndarray
    rij: np.ndarray
    offsets: np.ndarray


def _species(atoms, elements) -> np.ndarray:
    """The model species index of every atom; an unknown element names the atom."""
    symbols = atoms.get_chemical_symbols()
    index = {e: k for k, e in enumerate(elements)}
    out = np.empty(len(symbols), dtype=np.int64)
    for a, s in enumerate(symbols):
        if s not in index:
            raise StructureError(f"atom {a} is {s}, which this basis does not describe "
                                 f"(basis elements: {', '.join(elements)})")
        out[a] = index[s]
    return out


def _neighbours(atoms, cutoff: float) -> _Pairs:
    from ase.neighborlist import neighbor_list

    i, j, D = neighbor_list("ijD", atoms, cutoff)
    order = np.argsort(i, kind="stable")
    i, j, D = i[order], j[order], D[order]
    offsets = np.zeros(len(atoms) + 1, dtype=np.int64)
    np.cumsum(np.bincount(i, minlength=len(atoms)), out=offsets[1:])
    return _Pairs(i.astype(np.int64), j.astype(np.int64), np.asarray(D, dtype=float), offsets)


def _monomials(lmax: int, u: np.ndarray):
    """Cartesian monomials u^α (|α| <= lmax, acegen.symbolic.cartesian order), their
    Euclidean gradients α_b u^(α - e_b) and degrees: (P, K), (P, K, 3), (K,)."""
    from .symbolic.cartesian import alphas

    al = np.array([a for l in range(lmax + 1) for a in alphas(l)], dtype=np.int64).reshape(-1, 3)
    pw = np.ones((lmax + 1,) + u.shape)
    for e in range(1, lmax + 1):
        pw[e] = pw[e - 1] * u
    cols = np.arange(3)
    Y = np.prod(pw[al, :, cols].transpose(2, 0, 1), axis=2)  # (P, K)
    G = np.zeros(Y.shape + (3,))
    for b in range(3):
        lower = al.copy()
        lower[:, b] = np.maximum(lower[:, b] - 1, 0)
        G[:, :, b] = al[:, b] * np.prod(pw[lower, :, cols].transpose(2, 0, 1), axis=2)
    return Y, G, al.sum(axis=1)


class BasisEvaluator:
    """Evaluates one :class:`~acegen.basis.CoupledBasis` on ASE ``Atoms``."""

    def __init__(self, basis):
        self.basis = basis
        self.spec = basis.spec
        self.nel = len(basis.elements)
        self.L = basis.lmax
        # angular one-particle functions: Y_lm (index l*l + l + m) or Cartesian monomials
        # r̂^α (index l(l+1)(l+2)/6 + position of α in its degree block)
        self.cartesian = getattr(basis, "angular", "spherical") != "spherical"
        if self.cartesian:
            self.nlm = (self.L + 1) * (self.L + 2) * (self.L + 3) // 6
            base = lambda l: l * (l + 1) * (l + 2) // 6  # noqa: E731
        else:
            self.nlm = (self.L + 1) ** 2
            base = lambda l: l * l + l  # noqa: E731
        self.nmax = basis.nmax
        self.npair = basis.npair
        # flatten coupling terms by order: A index = ((z * nmax) + n-1) * nlm + l*l + l + m
        groups = {}
        for k, f in enumerate(basis.functions):
            lm_base = [((z * self.nmax) + n - 1) * self.nlm + base(l) for z, n, l in f.factors]
            idx = np.asarray(lm_base)[None, :] + np.asarray(f.mtuples)
            g = groups.setdefault((f.z0, f.order), ([], [], []))
            g[0].append(idx)
            g[1].append(np.asarray(f.coeffs, dtype=float))
            g[2].append(np.full(len(f.coeffs), k))
            # purified bases: lower-order product terms (factors may use extended radial n)
            for factors, mtuples, coeffs in getattr(f, "corrections", ()) or ():
                cbase = [((z * self.nmax) + n - 1) * self.nlm + base(l) for z, n, l in factors]
                g = groups.setdefault((f.z0, len(factors)), ([], [], []))
                g[0].append(np.asarray(cbase)[None, :] + np.asarray(mtuples))
                g[1].append(np.asarray(coeffs, dtype=float))
                g[2].append(np.full(len(coeffs), k))
        self.groups = {
            key: (np.concatenate(a), np.concatenate(b), np.concatenate(c)) for key, (a, b, c) in groups.items()
        }
        self.pair_index = {(p.z0, p.zj, p.n): k for k, p in enumerate(basis.pair)}
        self.rcut_max = max(
            max(self.spec.rcut_pair(a, b), self.spec.pair_rcut_pair(a, b))
            for a in range(self.nel)
            for b in range(self.nel)
        )

    # ---------------------------------------------------------------- one-particle basis
    def _pairs(self, atoms):
        from .symbolic import radial
        from .symbolic.ylm import ylm_numpy

        Z = _species(atoms, self.basis.elements)
        nl = _neighbours(atoms, self.rcut_max)
        r = np.linalg.norm(nl.rij, axis=1)
        u = nl.rij / np.where(r > 0, r, 1.0)[:, None]
        zi, zj = Z[nl.i], Z[nl.j]
        R = np.zeros((len(r), self.nmax))
        dR = np.zeros_like(R)
        P = np.zeros((len(r), self.npair))
        dP = np.zeros_like(P)
        for a in range(self.nel):
            for b in range(self.nel):
                s = (zi == a) & (zj == b)
                if not s.any():
                    continue
                rc = self.spec.rcut_pair(a, b)
                m = s & (r < rc)
                if m.any():
                    v, d = radial.manybody_radial_numpy(self.spec, a, b, r[m], nfunc=self.nmax)
                    R[m], dR[m] = v, d
                rp = self.spec.pair_rcut_pair(a, b)
                m = s & (r < rp)
                if m.any():
                    v, d = radial.pair_radial_numpy(self.spec, a, b, r[m])
                    P[m], dP[m] = v, d
        if self.cartesian:
            Y, G, ls = _monomials(self.L, u)
        else:
            Y, G = ylm_numpy(self.L, u, grad=True)
            ls = np.array([l for l in range(self.L + 1) for _ in range(2 * l + 1)])
        gY = (G - ls[None, :, None] * Y[:, :, None] * u[:, None, :]) / np.where(r > 0, r, 1.0)[:, None, None]
        return Z, nl, r, u, R, dR, P, dP, Y, gY

    def _A(self, Z, nl, R, Y, P):
        n = len(Z)
        zj = Z[nl.j]
        A = np.zeros((n, self.nel, self.nmax, self.nlm))
        Ap = np.zeros((n, self.nel, self.npair))
        np.add.at(A, (nl.i, zj), R[:, :, None] * Y[:, None, :])
        np.add.at(Ap, (nl.i, zj), P)
        return A.reshape(n, -1), Ap

    # ---------------------------------------------------------------- public API
    def basis_values(self, atoms):
        """(B, P): many-body values (n_atoms, len(basis)) and pair values (n_atoms, len(pair))."""
        Z, nl, r, u, R, dR, P, dP, Y, gY = self._pairs(atoms)
        A, Ap = self._A(Z, nl, R, Y, P)
        n = len(Z)
        B = np.zeros((n, len(self.basis)))
        for (z0, nu), (idx, c, fid) in self.groups.items():
            rows = np.flatnonzero(Z == z0)
            if len(rows) == 0:
                continue
            vals = np.prod(A[rows][:, idx], axis=2) * c[None, :]  # (rows, T)
            for q, i in enumerate(rows):
                B[i] += np.bincount(fid, weights=vals[q], minlength=len(self.basis))
        Pv = np.zeros((n, len(self.basis.pair)))
        for (z0, zj, nn), k in self.pair_index.items():
            rows = Z == z0
            Pv[rows, k] = Ap[rows, zj, nn - 1]
        return B, Pv

    def basis_derivatives(self, atoms):
        """Derivatives of the total energy, forces and virial with respect to every linear
        parameter (many-body functions, then the pair basis; ``CoupledBasis.split_params``
        order), by the analytic chain rule:

            ∂B_k(i)/∂A_i[a] = Σ_M C_{k,M} Σ_{t: M_t = a} Π_{s≠t} A_i[M_s]
            ∂A_i[z,n,l,m]/∂r_ij = δ(Z_j, z) (R_n'(r) Y_lm(r̂) r̂ + R_n(r) ∇Y_lm(r̂))
            ∂P_i[z,n]/∂r_ij = δ(Z_j, z) P_n'(r) r̂

        Returns ``(energy (P,), forces (n_atoms, 3, P), virial (3, 3, P))`` with
        energy = Σ_i basis values (Eref excluded), forces = −∂energy/∂positions and
        virial[a, b] = −Σ_pairs ∂energy/∂r_ij[a] · r_ij[b] (not symmetrised), so that for
        coefficients θ: E − ΣEref = energy·θ, F = forces·θ, V = virial·θ = −σΩ.
        """
        Z, nl, r, u, R, dR, P, dP, Y, gY = self._pairs(atoms)
        A, Ap = self._A(Z, nl, R, Y, P)
        n, nA = A.shape
        K = len(self.basis)
        npar = self.basis.n_params
        energy = np.zeros(npar)
        J = np.zeros((n, K, nA))  # J[i, k, a] = ∂B_k(i)/∂A_i[a]
        for (z0, nu), (idx, c, fid) in self.groups.items():
            rows = np.flatnonzero(Z == z0)
            if len(rows) == 0:
                continue
            vals = A[rows][:, idx]  # (rows, T, ν)
            energy[:K] += np.bincount(fid, weights=(np.prod(vals, axis=2) * c[None, :]).sum(axis=0), minlength=K)
            for t in range(nu):
                loo = np.prod(np.delete(vals, t, axis=2), axis=2) * c[None, :]  # (rows, T)
                for q, i in enumerate(rows):
                    np.add.at(J[i], (fid, idx[:, t]), loo[q])
        J = J.reshape(n, K, self.nel, self.nmax, self.nlm)
        zj = Z[nl.j]
        dBdr = np.zeros((len(r), 3, npar))  # ∂(Σ_i B(i))/∂r_ij per pair
        for i in range(n):
            lo, hi = int(nl.offsets[i]), int(nl.offsets[i + 1])
            for zb in np.unique(zj[lo:hi]):
                sel = lo + np.flatnonzero(zj[lo:hi] == zb)
                Ji = J[i, :, zb]  # (K, nmax, nlm)
                radial = np.einsum("knm,pn,pm->pk", Ji, dR[sel], Y[sel])
                angular = np.einsum("knm,pn,pmx->pxk", Ji, R[sel], gY[sel])
                dBdr[sel, :, :K] = radial[:, None, :] * u[sel][:, :, None] + angular
        zi = Z[nl.i]
        for (z0, zb, nn), k in self.pair_index.items():
            energy[K + k] = Ap[Z == z0, zb, nn - 1].sum()
            m = (zi == z0) & (zj == zb)
            dBdr[m, :, K + k] = dP[m, nn - 1][:, None] * u[m]
        forces = np.zeros((n, 3, npar))
        np.add.at(forces, nl.i, dBdr)
        np.subtract.at(forces, nl.j, dBdr)
        virial = -np.einsum("pak,pb->abk", dBdr, nl.rij)
        return energy, forces, virial
