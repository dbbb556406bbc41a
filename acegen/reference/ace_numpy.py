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

from ..basis_eval import BasisEvaluator


class ACEReference(BasisEvaluator):
    """The linear model θ on a basis: :meth:`compute` gives energy, forces and stress by the
    analytic chain rule (dE/dA, then dA/dr_ij); the basis values and per-parameter rows come
    from :class:`acegen.basis_eval.BasisEvaluator`."""

    def __init__(self, basis, coefficients=None):
        super().__init__(basis)
        if coefficients is None:
            coefficients = np.zeros(basis.n_params)
        self.theta, self.theta_pair = basis.split_params(coefficients)

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

