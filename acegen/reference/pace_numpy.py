"""PACE (ML-PACE / pyace 0.4.0rc1) evaluated in plain NumPy: the independent reference.

Implements PACE's radial basis, spherical harmonics, embeddings and inner cutoffs the way ``ACECTildeEvaluator::compute_atom`` does:

* radial basis g_k (ChebExpCos, ChebPow, ChebLinear, SBessel, ACEpotentials.jl's ACE.jl.base),
  R_nl = Σ_k crad[n,l,k] g_k and
  the core repulsion φ (exp-type for inner cutoff ``density``/``distance``, ZBL for ``zbl``);
* complex Y_lm normalised to Y_00 = 1 with the Condon–Shortley phase; only m ≥ 0 is
  accumulated, A_{l,−m} = (−1)^m conj(A_{lm});
* rank 1 on g_k, rank > 1 on Re(c̃ Π A) over PACE's half basis;
* FinnisSinclair / FinnisSinclairShiftedScaled embeddings with any ndensity, ``E0``, and the
  three inner cutoffs (ρ_core energy switch, distance, ZBL switched on the nearest neighbour).

Forces and stress are analytic: the pair force f_ij = ∂E_i/∂r_ij (r_ij = r_j − r_i) is added to
atom i and subtracted from atom j; the stress is (1/V) Σ_pairs f_ij ⊗ r_ij (ASE sign and Voigt
order xx yy zz yz xz xy).

The radial functions and PACE's spline tables are the package's own
(:mod:`acegen.io.pace_radial`, re-exported here); everything else - PACE's complex Y_lm,
the half basis, the embeddings and the evaluation loop - is written here independently of
the IR, the DAG and the templates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sps
from ase.neighborlist import neighbor_list

from ..errors import SpecError, StructureError
from ..io.pace import PacePotential
from ..io.pace_radial import (  # noqa: F401  (re-exported)
    PaceSpline,
    PaceSplineMeta,
    _bond_spline,
    bond_functions,
    core_repulsion,
    cutoff_func_poly,
    pace_radial_block,
    pace_spline_tables,
    radial_basis,
    ships_radial,
)

__all__ = [
    "cutoff_func_poly",
    "radial_basis",
    "ships_radial",
    "core_repulsion",
    "bond_functions",
    "PaceSpline",
    "PaceSplineMeta",
    "pace_spline_tables",
    "pace_radial_block",
    "ylm_pace",
    "embedding",
    "PaceReference",
]




# ======================================================================= spherical harmonics
def _lm_pos(L: int):
    """Index arrays of the m ≥ 0 layout k = l(l+1)/2 + m."""
    ls, ms = [], []
    for l in range(L + 1):
        for m in range(l + 1):
            ls.append(l)
            ms.append(m)
    return np.array(ls), np.array(ms)


def ylm_pace(rhat, L: int):
    """PACE's complex Y_lm (Y_00 = 1, Condon–Shortley) for m ≥ 0 and their tangential gradients.

    Y_lm(r̂) = √((2l+1)(l−m)!/(l+m)!) Q_lm(z) (x + iy)^m with Q_lm = (−1)^m d^m P_l/dz^m.
    Returns Y (n, nlm) and DY (n, nlm, 3) with DY = (I − r̂r̂ᵀ)∇Y, so that
    ∂Y(r̂_ij)/∂r_ij = DY / r.  Layout k = l(l+1)/2 + m."""
    rhat = np.asarray(rhat, dtype=float)
    x, y, z = rhat[:, 0], rhat[:, 1], rhat[:, 2]
    n = len(z)
    Q = np.zeros((L + 2, L + 2, n))  # Q[l, m]
    for m in range(L + 1):
        Q[m, m] = (-1.0) ** m * _double_factorial(2 * m - 1)
        if m + 1 <= L:
            Q[m + 1, m] = (2 * m + 1) * z * Q[m, m]
        for l in range(m + 2, L + 1):
            Q[l, m] = ((2 * l - 1) * z * Q[l - 1, m] - (l + m - 1) * Q[l - 2, m]) / (l - m)
    w = x + 1j * y
    wpow = [np.ones(n, dtype=complex)]
    for m in range(1, L + 1):
        wpow.append(wpow[-1] * w)
    ls, ms = _lm_pos(L)
    Y = np.empty((n, len(ls)), dtype=complex)
    G = np.empty((n, len(ls), 3), dtype=complex)
    for k, (l, m) in enumerate(zip(ls, ms)):
        norm = math.sqrt((2 * l + 1) * math.factorial(l - m) / math.factorial(l + m))
        q, dq = Q[l, m], -Q[l, m + 1]  # dQ_lm/dz = −Q_{l,m+1}
        Y[:, k] = norm * q * wpow[m]
        dw = m * wpow[m - 1] if m > 0 else np.zeros(n, dtype=complex)
        G[:, k, 0] = norm * q * dw
        G[:, k, 1] = norm * q * dw * 1j
        G[:, k, 2] = norm * dq * wpow[m]
    radial = np.einsum("nkc,nc->nk", G, rhat)
    DY = G - radial[:, :, None] * rhat[:, None, :]
    return Y, DY


def _double_factorial(k: int) -> float:
    out = 1.0
    while k > 1:
        out *= k
        k -= 2
    return out


# ================================================================================ embedding
def embedding(npoti: str, fs_parameters, rho):
    """E = Σ_p w_p F(ρ_p; m_p) and ∂E/∂ρ_p for rho of shape (n, ndensity)."""
    rho = np.asarray(rho, dtype=float)
    E = np.zeros(rho.shape[0])
    dE = np.zeros_like(rho)
    for p in range(rho.shape[1]):
        w, m = fs_parameters[2 * p], fs_parameters[2 * p + 1]
        x = rho[:, p]
        if npoti == "FinnisSinclair":
            F, DF = _fexp(x, m)
        elif npoti == "FinnisSinclairShiftedScaled":
            F, DF = _fexp_shifted_scaled(x, m)
        else:  # pragma: no cover - rejected by the readers
            raise SpecError(f"unknown embedding {npoti!r}")
        E += F * w
        dE[:, p] = DF * w
    return E, dE


def _fexp(x, m):
    wexp = 1.0e6
    lam = math.pow(1.0 / wexp, m - 1.0)
    a = np.abs(x)
    big = a > 1e-10
    asafe = np.where(big, a, 1.0)
    am = np.power(asafe, m)
    w3x3 = np.power(wexp * asafe, 3)
    g = np.where(w3x3 > 30.0, 0.0, np.exp(-np.minimum(w3x3, 30.0)))
    sign = np.where(np.signbit(x), -1.0, 1.0)
    omg = 1.0 - g
    F = sign * (omg * am + lam * g * asafe)
    dg = -3.0 * wexp**3 * asafe * asafe * g
    DF = m * np.power(asafe, m - 1.0) * omg - am * dg + lam * dg * asafe + lam * g
    return np.where(big, F, lam * x), np.where(big, DF, lam)


def _fexp_shifted_scaled(rho, mexp):
    if abs(mexp - 1.0) < 1e-10:
        return rho.copy(), np.ones_like(rho)
    a = np.abs(rho)
    exprho = np.exp(-a)
    nx = 1.0 / mexp
    xoff = math.pow(nx, nx / (1.0 - nx)) * exprho
    yoff = math.pow(nx, 1.0 / (1.0 - nx)) * exprho
    sign = np.where(np.signbit(rho), -1.0, 1.0)
    F = sign * (np.power(xoff + a, mexp) - yoff)
    DF = yoff + mexp * (-xoff + 1.0) * np.power(xoff + a, mexp - 1.0)
    return F, DF


# ============================================================================ the evaluator
@dataclass
class _RankGroup:
    idx: np.ndarray  # (M, rank) indices into the flattened A (m from −l..l)
    c: np.ndarray  # (M, ndensity)
    scatter: sps.csr_matrix  # (M*rank, nA): row t*M + k -> idx[k, t]


@dataclass
class _SpeciesProg:
    r1_col: np.ndarray  # (n1,) column index mu*K + k into A1
    r1_c: np.ndarray  # (n1, nd)
    r1_scatter: sps.csr_matrix  # (n1, nel*K) one-hot of r1_col
    groups: list
    emb: object


class PaceReference:
    """PACE's energy, per-atom energies, forces and stress, in NumPy.

    ``radial="spline"`` (default) uses PACE's spline tables, ``"analytic"`` evaluates the radial
    functions directly.  ``compute(atoms)`` returns ``energy``, ``energies``, ``forces`` and,
    for cells periodic in all three directions, ``stress`` (ASE Voigt order, eV/Å³).
    """

    def __init__(self, potential: PacePotential, radial: str = "spline", *, chunk: int = 4096):
        if radial not in ("spline", "analytic"):
            raise SpecError(f"radial must be 'spline' or 'analytic', got {radial!r}")
        pot = potential
        self.pot = pot
        self.radial = radial
        self.chunk = int(chunk)
        self.nel = len(pot.elements)
        self.L = pot.lmax
        self.N = pot.nradmax
        self.K = pot.nradbase
        self.LL = (self.L + 1) ** 2
        self.lpos, self.mpos = _lm_pos(self.L)
        self.nlm = len(self.lpos)
        self.nA = self.nel * self.N * self.LL
        self.rcut = np.array([[pot.bonds[(a, b)].rcut for b in range(self.nel)] for a in range(self.nel)])
        self.rcut_max = float(self.rcut.max())
        self.r_in = np.array([[pot.bonds[(a, b)].rcut_in for b in range(self.nel)] for a in range(self.nel)])
        self.d_in = np.array([[pot.bonds[(a, b)].dcut_in for b in range(self.nel)] for a in range(self.nel)])
        self.ict = pot.inner_cutoff_type
        self.E0 = np.asarray(pot.E0, dtype=float)
        self.splines = {}
        if radial == "spline":
            for key in pot.bonds:
                self.splines[key] = _bond_spline(pot, *key)
        self.progs = [self._program(mu) for mu in range(self.nel)]

    # ------------------------------------------------------------------ set-up
    def _aindex(self, mu, n, l, m):
        return (mu * self.N + n) * self.LL + l * l + l + m

    def _program(self, mu0: int) -> _SpeciesProg:
        emb = self.pot.embeddings[mu0]
        nd = emb.ndensity
        r1_col, r1_c = [], []
        by_rank: dict[int, tuple[list, list]] = {}
        for f in self.pot.functions.get(mu0, []):
            if f.rank == 1:
                r1_col.append(f.mus[0] * self.K + f.ns[0] - 1)
                r1_c.append(f.ctildes[0])
                continue
            base = np.array([self._aindex(mu, n - 1, l, 0) for mu, n, l in zip(f.mus, f.ns, f.ls)])
            lst = by_rank.setdefault(f.rank, ([], []))
            lst[0].append(base[None, :] + f.ms_combs)
            lst[1].append(f.ctildes)
        groups = []
        for rank in sorted(by_rank):
            idx = np.concatenate(by_rank[rank][0]).astype(np.int64)
            c = np.concatenate(by_rank[rank][1])
            M = idx.shape[0]
            rows = np.arange(M * rank)
            cols = idx.T.ravel()
            scatter = sps.csr_matrix((np.ones(M * rank), (rows, cols)), shape=(M * rank, self.nA))
            groups.append(_RankGroup(idx=idx, c=c, scatter=scatter))
        r1_col = np.asarray(r1_col, dtype=np.int64)
        r1_scatter = sps.csr_matrix(
            (np.ones(len(r1_col)), (np.arange(len(r1_col)), r1_col)), shape=(len(r1_col), self.nel * self.K)
        )
        return _SpeciesProg(
            r1_col=r1_col, r1_c=np.asarray(r1_c, dtype=float).reshape(-1, nd), r1_scatter=r1_scatter,
            groups=groups, emb=emb,
        )

    # ------------------------------------------------------------------ radial
    def _radial(self, mi: int, mj: int, r):
        """g (n,K), dg, R (n,N,L+1), dR, φ (n,), dφ, padded to the global sizes."""
        bond = self.pot.bonds[(mi, mj)]
        if self.radial == "spline":
            vals, ders = self.splines[(mi, mj)].evaluate(r)
        else:
            vals, ders = bond_functions(self.pot, mi, mj, r)
        K, N, L1 = bond.nradbase, bond.nradmax, bond.lmax + 1
        n = len(r)
        g = np.zeros((n, self.K))
        dg = np.zeros((n, self.K))
        R = np.zeros((n, self.N, self.L + 1))
        dR = np.zeros((n, self.N, self.L + 1))
        g[:, :K], dg[:, :K] = vals[:, :K], ders[:, :K]
        R[:, :N, :L1] = vals[:, K : K + N * L1].reshape(n, N, L1)
        dR[:, :N, :L1] = ders[:, K : K + N * L1].reshape(n, N, L1)
        return g, dg, R, dR, vals[:, -1], ders[:, -1]

    # ------------------------------------------------------------------ compute
    def compute(self, atoms) -> dict:
        pot, nel = self.pot, self.nel
        nat = len(atoms)
        index = {e: k for k, e in enumerate(pot.elements)}
        spec = np.empty(nat, dtype=np.int64)
        for a, s in enumerate(atoms.get_chemical_symbols()):
            if s not in index:
                raise StructureError(f"atom {a}: element {s} is not in the potential ({', '.join(pot.elements)})")
            spec[a] = index[s]
        if nat == 0:
            raise StructureError("empty structure")
        ii, jj, D = neighbor_list("ijD", atoms, self.rcut_max)
        r = np.sqrt(D[:, 0] * D[:, 0] + D[:, 1] * D[:, 1] + D[:, 2] * D[:, 2])
        keep = r < self.rcut[spec[ii], spec[jj]]
        ii, jj, D, r = ii[keep], jj[keep], D[keep], r[keep]
        P = len(r)
        mui, muj = spec[ii], spec[jj]
        if self.radial == "spline":
            rscale = np.array([[self.splines[(a, b)].rscale for b in range(nel)] for a in range(nel)])
            bad = np.nonzero(r * rscale[mui, muj] < 1.0)[0]
            if len(bad):
                p = bad[0]
                raise StructureError(
                    f"atoms {ii[p]} and {jj[p]} are {r[p]:.3g} Å apart, closer than the first spline knot "
                    f"(PACE: 'Encountered very small distance')"
                )
        inv_r = 1.0 / r
        rhat = D * inv_r[:, None]

        # radial functions per bond
        g = np.zeros((P, self.K))
        dg = np.zeros((P, self.K))
        R = np.zeros((P, self.N, self.L + 1))
        dR = np.zeros((P, self.N, self.L + 1))
        phi = np.zeros(P)
        dphi = np.zeros(P)
        for a in range(nel):
            for b in range(nel):
                sel = np.nonzero((mui == a) & (muj == b))[0]
                if len(sel):
                    g[sel], dg[sel], R[sel], dR[sel], phi[sel], dphi[sel] = self._radial(a, b, r[sel])
        Y, DY = ylm_pace(rhat, self.L)

        # atomic base: rows (i, mu_j)
        rows = ii * nel + muj
        S = sps.csr_matrix((np.ones(P), (rows, np.arange(P))), shape=(nat * nel, P))
        A1 = (S @ g).reshape(nat, nel * self.K)
        Apos = np.zeros((nat * nel, self.N, self.nlm), dtype=complex)
        for s0 in range(0, P, self.chunk):
            sl = slice(s0, s0 + self.chunk)
            contrib = R[sl][:, :, self.lpos] * Y[sl][:, None, :]
            Apos += (S[:, sl] @ contrib.reshape(contrib.shape[0], -1)).reshape(nat * nel, self.N, self.nlm)
        Afull = self._expand_full(Apos.reshape(nat, nel, self.N, self.nlm))
        rho_core = np.bincount(ii, weights=phi, minlength=nat)

        # ZBL: ACE is switched off by the nearest neighbour, the smallest d = r − (r_in − δ_in)
        # (first in list order, and only if d < rcut_max, as in PACE); coordinate t = δ_in − d
        zbl = self.ict == "zbl"
        jmin = np.full(nat, -1)
        near_t = np.full(nat, np.nan)
        near_d = np.ones(nat)
        if zbl and P:
            d = r - (self.r_in[mui, muj] - self.d_in[mui, muj])
            order = np.lexsort((np.arange(P), d, ii))
            first = np.ones(P, dtype=bool)
            first[1:] = ii[order][1:] != ii[order][:-1]
            cand = order[first]
            cand = cand[d[cand] < self.rcut_max]
            jmin[ii[cand]] = cand
            near_d[ii[cand]] = self.d_in[mui[cand], muj[cand]]
            near_t[ii[cand]] = near_d[ii[cand]] - d[cand]

        energies = np.zeros(nat)
        Wpos = np.zeros((nat, nel, self.N, self.nlm), dtype=complex)
        W1 = np.zeros((nat, nel * self.K))
        dE_drho_core = np.zeros(nat)
        dE_dfcut = np.zeros(nat)
        for mu0, prog in enumerate(self.progs):
            idx = np.nonzero(spec == mu0)[0]
            for a0 in range(0, len(idx), 32):  # blocks of atoms bound the product-pass memory
                at = idx[a0 : a0 + 32]
                out = self._atoms(prog, Afull[at], A1[at], rho_core[at], near_t[at], near_d[at])
                energies[at] = out[0] + self.E0[mu0]
                W1[at], Wpos[at], dE_drho_core[at], dE_dfcut[at] = out[1:]

        # pair forces f_ij = dE_i / dr_ij
        f = np.zeros((P, 3))
        Wrow = Wpos.reshape(nat * nel, self.N, self.nlm)
        W1row = W1.reshape(nat * nel, self.K)
        for s0 in range(0, P, self.chunk):
            sl = slice(s0, s0 + self.chunk)
            Wp = Wrow[rows[sl]]
            U = np.einsum("pnk,pnk->pk", Wp, dR[sl][:, :, self.lpos])
            V = np.einsum("pnk,pnk->pk", Wp, R[sl][:, :, self.lpos])
            t1 = np.einsum("pk,pk->p", U, Y[sl]).real
            t2 = np.einsum("pk,pkc->pc", V, DY[sl]).real
            t1 += np.einsum("pk,pk->p", W1row[rows[sl]], dg[sl])
            t1 += dE_drho_core[ii[sl]] * dphi[sl]
            f[sl] = t1[:, None] * rhat[sl] + t2 * inv_r[sl][:, None]
        if zbl:
            has = np.nonzero(jmin >= 0)[0]
            f[jmin[has]] += dE_dfcut[has][:, None] * rhat[jmin[has]]  # ∂d_min/∂r_ij = r̂ (nearest j)
        forces = np.zeros((nat, 3))
        for c in range(3):
            forces[:, c] = np.bincount(ii, weights=f[:, c], minlength=nat) - np.bincount(jj, weights=f[:, c], minlength=nat)
        out = {"energy": float(energies.sum()), "energies": energies, "forces": forces}
        if np.all(atoms.pbc):
            vol = atoms.get_volume()
            sig = (f.T @ D) / vol
            sig = 0.5 * (sig + sig.T)
            out["stress"] = np.array([sig[0, 0], sig[1, 1], sig[2, 2], sig[1, 2], sig[0, 2], sig[0, 1]])
        return out

    # ------------------------------------------------------------------ B-basis projections
    def projections(self, atoms, bbasis, *, magnitudes: bool = False):
        """PACE's "linear" projections (the extrapolation grade's b_i): for every atom, the
        values of its species's B functions of the B-basis potential ``bbasis``
        (:class:`~acegen.io.pace.BBasisPotential`, the file this reference's C-tilde potential was
        converted from): rank 1 first (Σ_j g_k(r_ij)), then rank > 1 in file order
        (Σ_ms gen_cg Re Π_t A_{μ_t n_t l_t m_t}, half basis, PACE's complex A).  Shape
        (n_atoms, max N_μ), zero-padded.  ``magnitudes``: also return Σ_ms |gen_cg| Π_t Σ_j |R Y|
        (Σ_j |g_k| for rank 1), the size of the terms each value sums over neighbours and
        m-combinations: the scale of its round-off (some functions vanish by symmetry)."""
        from ..symbolic.clebsch_gordan import ms_cg_list

        pot, nel = self.pot, self.nel
        nat = len(atoms)
        index = {e: k for k, e in enumerate(pot.elements)}
        spec = np.array([index[s] for s in atoms.get_chemical_symbols()], dtype=np.int64)
        ii, jj, D = neighbor_list("ijD", atoms, self.rcut_max)
        r = np.sqrt(np.sum(D * D, axis=1))
        keep = r < self.rcut[spec[ii], spec[jj]]
        ii, jj, D, r = ii[keep], jj[keep], D[keep], r[keep]
        P = len(r)
        mui, muj = spec[ii], spec[jj]
        g = np.zeros((P, self.K))
        R = np.zeros((P, self.N, self.L + 1))
        for a in range(nel):
            for b in range(nel):
                sel = np.nonzero((mui == a) & (muj == b))[0]
                if len(sel):
                    g[sel], _, R[sel], _, _, _ = self._radial(a, b, r[sel])
        Y, _ = ylm_pace(D / r[:, None], self.L)
        rows = ii * nel + muj
        S = sps.csr_matrix((np.ones(P), (rows, np.arange(P))), shape=(nat * nel, P))
        A1 = (S @ g).reshape(nat, nel, self.K)
        Apos = (S @ (R[:, :, self.lpos] * Y[:, None, :]).reshape(P, -1)).reshape(nat, nel, self.N, self.nlm)
        Afull = self._expand_full(Apos).reshape(nat, nel, self.N, self.LL)
        # Σ_j |R Y| and Σ_j |g|: the scale of A's round-off, for the magnitudes
        A1abs = (S @ np.abs(g)).reshape(nat, nel, self.K)
        Aabs = np.abs(self._expand_full(
            (S @ np.abs(R[:, :, self.lpos] * Y[:, None, :]).reshape(P, -1)).reshape(nat, nel, self.N, self.nlm)
        )).reshape(nat, nel, self.N, self.LL)
        funcs: dict[int, list] = {mu: [] for mu in range(nel)}
        for blk in bbasis.blocks:
            mu0 = index[blk.elements[0]]
            for fs in blk.functions:
                if not fs.skip:
                    funcs[mu0].append(fs)
        out = np.zeros((nat, max(len(v) for v in funcs.values())))
        mag = np.zeros_like(out)
        for mu0, lst in funcs.items():
            at = np.nonzero(spec == mu0)[0]
            lst = [f for f in lst if f.rank == 1] + [f for f in lst if f.rank != 1]
            for col, fs in enumerate(lst):
                mus = [index[e] for e in fs.elements[1:]]
                if fs.rank == 1:
                    out[at, col] = A1[at, mus[0], fs.nr[0] - 1]
                    mag[at, col] = A1abs[at, mus[0], fs.nr[0] - 1]
                    continue
                val = np.zeros(len(at))
                size = np.zeros(len(at))
                for ms, cg in ms_cg_list(fs.nl, fs.lint):
                    prod = np.ones(len(at), dtype=complex)
                    pabs = np.ones(len(at))
                    for mu, n, l, m in zip(mus, fs.nr, fs.nl, ms):
                        prod = prod * Afull[at, mu, n - 1, l * l + l + m]
                        pabs = pabs * Aabs[at, mu, n - 1, l * l + l + m]
                    val += cg * prod.real
                    size += abs(cg) * pabs
                out[at, col] = val
                mag[at, col] = size
        return (out, mag) if magnitudes else out

    # ------------------------------------------------------------------ per atom
    def _atoms(self, prog: _SpeciesProg, A, A1, rc, near_t, near_d):
        """Energy and adjoints of a block of atoms of one species.

        A: (n, nA) complex atomic base (all m), A1: (n, nel*K) rank-1 base, rc: ρ_core,
        near_t/near_d: ZBL switch coordinate δ_in − d_min and δ_in (NaN: no neighbour).
        Returns E (without E0), ∂E/∂A1, ∂E/∂A (m ≥ 0 layout), ∂E/∂ρ_core, ∂E/∂d_min."""
        n, nd = A.shape[0], prog.emb.ndensity
        rho = np.zeros((n, nd))
        if len(prog.r1_col):
            rho += A1[:, prog.r1_col] @ prog.r1_c
        saved = []
        for grp in prog.groups:
            fac = A[:, grp.idx]  # (n, M, rank)
            rank = fac.shape[2]
            pre = np.ones(fac.shape[:2] + (rank + 1,), dtype=complex)
            suf = np.ones_like(pre)
            for t in range(rank):
                pre[:, :, t + 1] = pre[:, :, t] * fac[:, :, t]
            for t in range(rank - 1, -1, -1):
                suf[:, :, t] = suf[:, :, t + 1] * fac[:, :, t]
            rho += pre[:, :, rank].real @ grp.c
            saved.append(pre[:, :, :rank] * suf[:, :, 1:])  # dB_t = Π_{s≠t} A_s
        F, dF = embedding(prog.emb.npoti, prog.emb.fs_parameters, rho)
        dE_dfcut = np.zeros(n)
        if self.ict == "zbl":
            fcut, dfcut = np.ones(n), np.zeros(n)
            has = ~np.isnan(near_t)
            if np.any(has):
                fc, dfc = cutoff_func_poly(near_t[has], near_d[has], near_d[has])
                fcut[has], dfcut[has] = fc, -dfc  # d/d(d_min) = −d/dt
            E = F * fcut + rc * (1.0 - fcut)
            dE_drho = 1.0 - fcut
            dE_dfcut = (F - rc) * dfcut
        else:
            fcut, dfcut = _inner_cutoff(rc, prog.emb.rho_core_cut, prog.emb.drho_core_cut)
            E = F * fcut + rc
            dE_drho = F * dfcut + 1.0
        dF = dF * fcut[:, None]
        W1 = np.zeros((n, A1.shape[1]))
        if len(prog.r1_col):
            W1 = (prog.r1_scatter.T @ (dF @ prog.r1_c.T).T).T
        # adjoint: W[a] = Σ θ dB_t over all (m-combination, t) whose factor t is A[a]
        Wfull = np.zeros((n, self.nA), dtype=complex)
        for grp, dB in zip(prog.groups, saved):
            theta = dF @ grp.c.T  # (n, M)
            G = (theta[:, :, None] * dB).transpose(0, 2, 1).reshape(n, -1)  # (n, rank*M)
            Wfull += (grp.scatter.T @ G.T).T
        Wpos = self._fold_pos(Wfull.reshape(n, self.nel, self.N, self.LL))
        return E, W1, Wpos, dE_drho, dE_dfcut

    # ------------------------------------------------------------------ helpers
    def _expand_full(self, Apos):
        """(..., N, nlm≥0) → (..., nA) with A_{l,−m} = (−1)^m conj(A_{lm})."""
        shp = Apos.shape[:-1]
        full = np.zeros(shp + (self.LL,), dtype=complex)
        for k, (l, m) in enumerate(zip(self.lpos, self.mpos)):
            full[..., l * l + l + m] = Apos[..., k]
            if m > 0:
                full[..., l * l + l - m] = (-1.0) ** m * np.conj(Apos[..., k])
        return full.reshape(Apos.shape[0], -1)

    def _fold_pos(self, W):
        """dE/dA over all m → weights of A_{lm}, m ≥ 0: W_{l,m} + (−1)^m conj(W_{l,−m})."""
        out = np.zeros(W.shape[:-1] + (self.nlm,), dtype=complex)
        for k, (l, m) in enumerate(zip(self.lpos, self.mpos)):
            out[..., k] = W[..., l * l + l + m]
            if m > 0:
                out[..., k] += (-1.0) ** m * np.conj(W[..., l * l + l - m])
        return out


def _inner_cutoff(rho_core, rho_cut, drho_cut):
    """ρ_core energy switch of the ``density`` inner cutoff: (fcut, dfcut/dρ_core)."""
    fcut = np.where(rho_core >= rho_cut, 0.0, 1.0)
    dfcut = np.zeros_like(rho_core)
    mid = (rho_core < rho_cut) & (rho_core > rho_cut - drho_cut)
    if np.any(mid):
        fc, dfc = cutoff_func_poly(rho_core[mid], rho_cut, drho_cut)
        fcut[mid], dfcut[mid] = fc, dfc
    return fcut, dfcut
