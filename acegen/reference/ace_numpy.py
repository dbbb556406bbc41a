"""Plain NumPy reference evaluator of linear ACE models built from a BasisSpec.

Written from the formulas, independent of the IR, the DAG and the templates:

    A_i[z, n, l, m] = Σ_{j: Z_j = z} R_n(r_ij) Y_lm(r̂_ij)
    B_k(i)          = Σ_M C_{k,M} Π_t A_i[factor_t, M_t]        (coupling coefficients C)
    P_i[z, n]       = Σ_{j: Z_j = z} P_n(r_ij)                   (pair basis)
    E_i             = Eref[Z_i] + Σ_k θ_k B_k(i) + Σ θ^pair P_i

Radial functions come from the independent NumPy formulas of ``acegen.symbolic.radial``,
spherical harmonics from ``acegen.symbolic.ylm.ylm_numpy``.  Forces and stress come from
the analytic chain rule (dE/dA, then dA/dr_ij); :meth:`ACEReference.basis_derivatives` gives
the same per linear parameter (the design-matrix rows of a fit).
"""

from __future__ import annotations

import numpy as np

from ..runtime.neighbours import build_neighbours, species_indices


class ACEReference:
    def __init__(self, basis, coefficients=None):
        self.basis = basis
        self.spec = basis.spec
        self.nel = len(basis.elements)
        self.L = basis.lmax
        self.nlm = (self.L + 1) ** 2
        self.nmax = basis.nmax
        self.npair = basis.npair
        if coefficients is None:
            coefficients = np.zeros(basis.n_params)
        self.theta, self.theta_pair = basis.split_params(coefficients)
        # flatten coupling terms by order: A index = ((z * nmax) + n-1) * nlm + l*l + l + m
        groups = {}
        for k, f in enumerate(basis.functions):
            lm_base = [((z * self.nmax) + n - 1) * self.nlm + l * l + l for z, n, l in f.factors]
            idx = np.asarray(lm_base)[None, :] + np.asarray(f.mtuples)
            g = groups.setdefault((f.z0, f.order), ([], [], []))
            g[0].append(idx)
            g[1].append(np.asarray(f.coeffs, dtype=float))
            g[2].append(np.full(len(f.coeffs), k))
            # purified bases: lower-order product terms (factors may use extended radial n)
            for factors, mtuples, coeffs in getattr(f, "corrections", ()) or ():
                base = [((z * self.nmax) + n - 1) * self.nlm + l * l + l for z, n, l in factors]
                g = groups.setdefault((f.z0, len(factors)), ([], [], []))
                g[0].append(np.asarray(base)[None, :] + np.asarray(mtuples))
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
        from ..symbolic import radial
        from ..symbolic.ylm import ylm_numpy

        Z = species_indices(atoms, self.basis.elements)
        nl = build_neighbours(atoms, self.rcut_max)
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

    def compute(self, atoms):
        """energy, energies, forces, stress (periodic cells) of the linear model."""
        Z, nl, r, u, R, dR, P, dP, Y, gY = self._pairs(atoms)
        A, Ap = self._A(Z, nl, R, Y, P)
        n = len(Z)
        E = np.zeros(n)
        W = np.zeros_like(A)
        for (z0, nu), (idx, c, fid) in self.groups.items():
            rows = np.flatnonzero(Z == z0)
            if len(rows) == 0:
                continue
            th = self.theta[fid] * c  # (T,)
            vals = A[rows][:, idx]  # (rows, T, ν)
            E[rows] += np.prod(vals, axis=2) @ th
            for t in range(nu):
                loo = np.prod(np.delete(vals, t, axis=2), axis=2)  # (rows, T)
                contrib = loo * th[None, :]
                for q, i in enumerate(rows):
                    W[i] += np.bincount(idx[:, t], weights=contrib[q], minlength=A.shape[1])
        Wp = np.zeros_like(Ap)
        for (z0, zj, nn), k in self.pair_index.items():
            rows = Z == z0
            E[rows] += self.theta_pair[k] * Ap[rows, zj, nn - 1]
            Wp[rows, zj, nn - 1] += self.theta_pair[k]
        if self.spec.Eref:
            eref = dict(self.spec.Eref)
            E += np.array([float(eref.get(self.basis.elements[z], 0.0)) for z in Z])
        # dE/dr_ij
        W = W.reshape(n, self.nel, self.nmax, self.nlm)
        zj = Z[nl.j]
        w = W[nl.i, zj]  # (pairs, nmax, nlm)
        wY = np.einsum("pnm,pm->pn", w, Y)
        dEdr = np.einsum("pn,pn->p", wY, dR)[:, None] * u
        dEdr += np.einsum("pnm,pn,pmx->px", w, R, gY)
        dEdr += np.einsum("pn,pn->p", Wp[nl.i, zj], dP)[:, None] * u
        F = np.zeros((n, 3))
        for c in range(3):
            F[:, c] = np.bincount(nl.i, weights=dEdr[:, c], minlength=n) - np.bincount(
                nl.j, weights=dEdr[:, c], minlength=n
            )
        out = {"energy": float(E.sum()), "energies": E, "forces": F}
        if atoms.pbc.all():
            vir = dEdr.T @ nl.rij
            vir = 0.5 * (vir + vir.T)
            s = vir / atoms.get_volume()
            out["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
        return out

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
