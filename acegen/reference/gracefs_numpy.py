"""GRACE-FS evaluated in plain NumPy: the independent reference (tests and benchmarks only).

Written from the model's equations (``docs/gracefs.md``):

* R_nl(r) = Σ_k crad[n, l, k] g_k(r), g_k = PACE's ``SBessel``; tabulated exactly as PACE does
  (:class:`~acegen.reference.pace_numpy.PaceSpline`: cubic Hermite on nlut = int(rcut / 0.001)
  bins of width rcut / nlut) or, with ``radial="analytic"``, evaluated directly;
* real harmonics from PACE's complex ones (normalised Y_00 = 1):
  Y_l0 = Re Y_l0, Y_{l,m>0} = √2 (−1)^m Re Y_lm, Y_{l,−m} = √2 (−1)^m Im Y_lm;
* A_{i,n,lm} = nnorm Σ_j Z[μ_j, n] R_nl(r_ij) Y_lm(r̂_ij);
* ρ_p = Σ_f coeff[f, p] Σ_s gen_cgs[f, s] Π_t A_{ns_f−1, l_t, m_{s,t}} (all real);
* E_i = scale Σ_p w_p F(ρ_p; m_p) + shift + E0[μ_i].

Forces are analytic (adjoint of the products, then the pair sweep), the stress is
(1/V) Σ_pairs f_ij ⊗ r_ij in ASE's Voigt order, as in :mod:`acegen.reference.pace_numpy`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sps
from ase.neighborlist import neighbor_list

from ..errors import SpecError, StructureError
from ..io.gracefs import GraceFSPotential
from ..io.pace_radial import _sbessel
from .pace_numpy import PaceSpline, embedding, ylm_pace

__all__ = ["real_ylm", "gracefs_radial", "GraceFSReference"]

SQRT2 = math.sqrt(2.0)


def real_ylm(rhat, L: int):
    """Real Y_lm (layout l² + l + m, m = −l..l) and their tangential gradients DY (n, (L+1)², 3)
    from PACE's complex harmonics, with GRACE-FS's convention (see the module docstring)."""
    Yc, DYc = ylm_pace(rhat, L)
    n = Yc.shape[0]
    Y = np.zeros((n, (L + 1) ** 2))
    DY = np.zeros((n, (L + 1) ** 2, 3))
    k = 0
    for l in range(L + 1):
        for m in range(l + 1):
            c = l * l + l
            if m == 0:
                Y[:, c] = Yc[:, k].real
                DY[:, c] = DYc[:, k].real
            else:
                s = SQRT2 * (-1.0) ** m
                Y[:, c + m] = s * Yc[:, k].real
                DY[:, c + m] = s * DYc[:, k].real
                Y[:, c - m] = s * Yc[:, k].imag
                DY[:, c - m] = s * DYc[:, k].imag
            k += 1
    return Y, DY


def gracefs_radial(pot: GraceFSPotential, r):
    """Analytic R_nl(r), R_nl'(r), flattened to (len(r), nradmax·(lmax+1)) (n-major)."""
    r = np.atleast_1d(np.asarray(r, dtype=float))
    g, dg = _sbessel(r, pot.rcut, pot.n_rad_base)
    c = pot.crad.reshape(-1, pot.n_rad_base)
    return g @ c.T, dg @ c.T


@dataclass
class _Group:
    idx: np.ndarray  # (M, rank) indices into the flat A (n·(L+1)² + l² + l + m)
    c: np.ndarray  # (M, ndensity) = gen_cg · coeff
    scatter: sps.csr_matrix  # (rank·M, nA)


class GraceFSReference:
    """Energy, per-atom energies, forces and (periodic cells) stress of a GRACE-FS model.

    ``radial="spline"`` (default) reproduces PACE's tabulation of R_nl; ``"analytic"``
    evaluates R_nl directly."""

    def __init__(self, pot: GraceFSPotential, radial: str = "spline", *, chunk: int = 4096):
        if radial not in ("spline", "analytic"):
            raise SpecError(f"radial must be 'spline' or 'analytic', got {radial!r}")
        self.pot, self.radial, self.chunk = pot, radial, int(chunk)
        self.N, self.L = pot.nradmax, pot.lmax
        self.LL = (self.L + 1) ** 2
        self.nA = self.N * self.LL
        self.spline = None
        if radial == "spline":
            self.spline = PaceSpline(lambda r: gracefs_radial(pot, r), pot.rcut, pot.delta_spline_bins)
        self.groups = [self._program(mu) for mu in range(pot.nelements)]

    def _program(self, mu):
        by_rank: dict[int, tuple[list, list]] = {}
        for f in self.pot.functions[mu]:
            base = np.array([(f.ns - 1) * self.LL + l * l + l for l in f.ls], dtype=np.int64)
            lst = by_rank.setdefault(f.rank, ([], []))
            lst[0].append(base[None, :] + f.ms_combs)
            lst[1].append(f.gen_cgs[:, None] * f.coeff[None, :])
        out = []
        for rank in sorted(by_rank):
            idx = np.concatenate(by_rank[rank][0])
            c = np.concatenate(by_rank[rank][1])
            M = idx.shape[0]
            scatter = sps.csr_matrix((np.ones(M * rank), (np.arange(M * rank), idx.T.ravel())), shape=(M * rank, self.nA))
            out.append(_Group(idx=idx, c=c, scatter=scatter))
        return out

    def _radial(self, r):
        if self.spline is not None:
            v, d = self.spline.evaluate(r)
        else:
            v, d = gracefs_radial(self.pot, r)
        shp = (len(r), self.N, self.L + 1)
        return v.reshape(shp), d.reshape(shp)

    def _densities(self, atoms, magnitudes: bool = False):
        """Species, pair data and the A_{i,n,lm} (nat, N·(L+1)²) of ``atoms`` (with
        ``magnitudes`` also Σ_j |nnorm Z R Y|, the size of the terms summed into A)."""
        pot = self.pot
        nat = len(atoms)
        if nat == 0:
            raise StructureError("empty structure")
        index = {e: k for k, e in enumerate(pot.elements)}
        spec = np.empty(nat, dtype=np.int64)
        for a, s in enumerate(atoms.get_chemical_symbols()):
            if s not in index:
                raise StructureError(f"atom {a}: element {s} is not in the potential ({', '.join(pot.elements)})")
            spec[a] = index[s]
        ii, jj, D = neighbor_list("ijD", atoms, pot.rcut)
        r = np.sqrt(np.einsum("pc,pc->p", D, D))
        keep = r < pot.rcut
        ii, jj, D, r = ii[keep], jj[keep], D[keep], r[keep]
        if self.spline is not None:
            bad = np.nonzero(r * self.spline.rscale < 1.0)[0]
            if len(bad):
                p = bad[0]
                raise StructureError(
                    f"atoms {ii[p]} and {jj[p]} are {r[p]:.3g} Å apart, closer than the first spline knot "
                    f"(the GRACE-FS evaluator stops there: 'very small distance')", pair=int(p))
        P = len(r)
        inv_r = 1.0 / r
        rhat = D * inv_r[:, None]
        R, dR = self._radial(r)  # (P, N, L+1)
        zn = pot.nnorm * pot.Z[spec[jj]]  # (P, N)
        R, dR = R * zn[:, :, None], dR * zn[:, :, None]
        Y, DY = real_ylm(rhat, self.L)
        lidx = np.repeat(np.arange(self.L + 1), 2 * np.arange(self.L + 1) + 1)  # l of each lm
        S = sps.csr_matrix((np.ones(P), (ii, np.arange(P))), shape=(nat, P))
        A = np.zeros((nat, self.nA))
        Amag = np.zeros((nat, self.nA)) if magnitudes else None
        for s0 in range(0, P, self.chunk):
            sl = slice(s0, s0 + self.chunk)
            contrib = (R[sl][:, :, lidx] * Y[sl][:, None, :]).reshape(len(r[sl]), -1)
            A += S[:, sl] @ contrib
            if magnitudes:
                Amag += S[:, sl] @ np.abs(contrib)
        if magnitudes:
            return spec, A, Amag
        return spec, (ii, jj, D, r, inv_r, rhat, R, dR, Y, DY, lidx), A

    def projections(self, atoms):
        """Species indices (nat,) and, per species μ, the (atoms of μ, N_μ) projections
        b_f = Σ_s gen_cgs[f, s] Π_t A_{ns_f−1, l_t, m_{s,t}} (f in the file order of
        ``functions[μ]``) and, per species, the size of the summed terms
        Σ_s |gen_cgs[f, s]| Π_t Σ_j |A-terms| (same shape), the scale of their rounding."""
        spec, A, Amag = self._densities(atoms, magnitudes=True)
        rows, scales = [], []
        for mu in range(self.pot.nelements):
            At, Mt = A[spec == mu], Amag[spec == mu]
            funcs = self.pot.functions[mu]
            b = np.zeros((len(At), len(funcs)))
            sc = np.zeros_like(b)
            for k, f in enumerate(funcs):
                base = np.array([(f.ns - 1) * self.LL + l * l + l for l in f.ls], dtype=np.int64)
                idx = base[None, :] + f.ms_combs  # (M, rank)
                b[:, k] = np.prod(At[:, idx], axis=2) @ f.gen_cgs
                sc[:, k] = np.prod(Mt[:, idx], axis=2) @ np.abs(f.gen_cgs)
            rows.append(b)
            scales.append(sc)
        return spec, rows, scales

    def compute(self, atoms) -> dict:
        pot = self.pot
        nat = len(atoms)
        spec, (ii, jj, D, r, inv_r, rhat, R, dR, Y, DY, lidx), A = self._densities(atoms)
        P = len(r)

        energies = np.zeros(nat)
        W = np.zeros((nat, self.nA))
        for mu, groups in enumerate(self.groups):
            at = np.nonzero(spec == mu)[0]
            for a0 in range(0, len(at), 64):
                blk = at[a0:a0 + 64]
                e, w = self._atoms(groups, A[blk])
                energies[blk] = e + pot.E0[mu]
                W[blk] = w

        f = np.zeros((P, 3))
        Wn = W.reshape(nat, self.N, self.LL)
        for s0 in range(0, P, self.chunk):
            sl = slice(s0, s0 + self.chunk)
            Wp = Wn[ii[sl]]  # (p, N, LL)
            U = np.einsum("pnk,pnk->pk", Wp, dR[sl][:, :, lidx])
            V = np.einsum("pnk,pnk->pk", Wp, R[sl][:, :, lidx])
            t1 = np.einsum("pk,pk->p", U, Y[sl])
            t2 = np.einsum("pk,pkc->pc", V, DY[sl])
            f[sl] = t1[:, None] * rhat[sl] + t2 * inv_r[sl][:, None]
        forces = np.zeros((nat, 3))
        for c in range(3):
            forces[:, c] = np.bincount(ii, weights=f[:, c], minlength=nat) - np.bincount(jj, weights=f[:, c], minlength=nat)
        out = {"energy": float(energies.sum()), "energies": energies, "forces": forces}
        if np.all(atoms.pbc):
            sig = (f.T @ D) / atoms.get_volume()
            sig = 0.5 * (sig + sig.T)
            out["stress"] = np.array([sig[0, 0], sig[1, 1], sig[2, 2], sig[1, 2], sig[0, 2], sig[0, 1]])
        return out

    def _atoms(self, groups, A):
        """Energies (without E0) and ∂E/∂A of a block of atoms of one species."""
        pot = self.pot
        n, nd = A.shape[0], pot.ndensity
        rho = np.zeros((n, nd))
        saved = []
        for g in groups:
            fac = A[:, g.idx]  # (n, M, rank)
            rank = fac.shape[2]
            pre = np.ones(fac.shape[:2] + (rank + 1,))
            suf = np.ones_like(pre)
            for t in range(rank):
                pre[:, :, t + 1] = pre[:, :, t] * fac[:, :, t]
            for t in range(rank - 1, -1, -1):
                suf[:, :, t] = suf[:, :, t + 1] * fac[:, :, t]
            rho += pre[:, :, rank] @ g.c
            saved.append(pre[:, :, :rank] * suf[:, :, 1:])
        F, dF = embedding(pot.embedding, pot.fs_parameters, rho)
        E = pot.scale * F + pot.shift
        dF = pot.scale * dF
        W = np.zeros((n, self.nA))
        for g, dB in zip(groups, saved):
            theta = dF @ g.c.T  # (n, M)
            G = (theta[:, :, None] * dB).transpose(0, 2, 1).reshape(n, -1)
            W += (g.scatter.T @ G.T).T
        return E, W
