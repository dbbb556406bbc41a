"""Training data for multilayer ACE: an orthogonal s-band tight-binding model with on-site
levels made self-consistent by local charge neutrality (LCN), on small clusters.

The model (one s orbital per atom, spin degenerate, Fermi–Dirac occupations at kT):

    H_ij = h(r_ij) = -t0 exp(-q (r_ij / r0 - 1)) fc(r_ij)          (i != j)
    H_ii = eps(Z_i) + λ_i
    fc(r) = 1 below rc - w, ½ (1 + cos(π (r - rc + w) / w)) on [rc - w, rc], 0 beyond
    E_rep = ½ Σ_{i != j} A exp(-p (r_ij / r0 - 1)) fc(r_ij)

The shifts λ are chosen so every atom carries its neutral charge n0(Z_i) (LCN, the classic
self-consistency of tight-binding for metals, and the non-local physics ml-ACE's indicators
are meant to carry: an atom's level depends on the whole cluster through λ):

    n_i(λ) = ρ_ii = n0(Z_i),   ρ = 2 Σ_n f_n c_n c_nᵀ,  Σ_n 2 f_n = Σ_i n0(Z_i).

The energy is the Mermin free energy of the band with the shifts' double counting removed,

    E = Σ_n 2 f_n ε_n + 2 kT Σ_n [f_n ln f_n + (1 - f_n) ln(1 - f_n)] - Σ_i λ_i n0(Z_i) + E_rep,

stationary in λ at LCN (∂E/∂λ_i = ρ_ii - n0_i = 0), so the forces are Hellmann–Feynman
forces of the off-diagonal Hamiltonian and the repulsion, exact for this model:

    F_a = -Σ_{j != a} (2 ρ_aj h'(r_aj) + φ'(r_aj)) (R_a - R_j) / r_aj.

LCN is solved by Newton's method with the exact charge susceptibility
χ = ∂n/∂λ (Fermi level adjusted at fixed electron count) to |n - n0| < 1e-12.

    python benchmarks/tb_data.py -o tb_data --clusters 200 --seed 0

writes ``tb_clusters.extxyz`` (random 2–25-atom clusters; ``--kind walk --short-range``: planar
lattice walks, chains with bends and branches, for the first-neighbour model) and ``tb_chains.extxyz`` (linear
chains, the configurations of the indicator plot of Bochkarev et al. 2022, Fig. 2), with
energy, forces and per-atom arrays ``onsite_shift`` (λ) and ``charge`` (ρ_ii).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import brentq


@dataclass(frozen=True)
class TBModel:
    """Parameters of the s-band LCN tight-binding model (energies in eV, lengths in Å)."""

    t0: float = 1.0
    q: float = 3.0
    r0: float = 2.5
    A: float = 0.35
    p: float = 8.0
    rc: float = 5.0
    w: float = 1.0
    kT: float = 0.1
    onsite: dict = field(default_factory=lambda: {"Cu": 0.0, "Ni": -0.5})
    n0: dict = field(default_factory=lambda: {"Cu": 0.8, "Ni": 0.5})

    # -------------------------------------------------------------- pair functions
    def _fc(self, r):
        x = np.clip((r - (self.rc - self.w)) / self.w, 0.0, 1.0)
        f = 0.5 * (1.0 + np.cos(np.pi * x))
        df = np.where((x > 0) & (x < 1), -0.5 * np.pi / self.w * np.sin(np.pi * x), 0.0)
        return f, df

    def hopping(self, r):
        """h(r) and h'(r)."""
        fc, dfc = self._fc(r)
        e = -self.t0 * np.exp(-self.q * (r / self.r0 - 1.0))
        return e * fc, e * (dfc - self.q / self.r0 * fc)

    def repulsion(self, r):
        """φ(r) and φ'(r)."""
        fc, dfc = self._fc(r)
        e = self.A * np.exp(-self.p * (r / self.r0 - 1.0))
        return e * fc, e * (dfc - self.p / self.r0 * fc)

    # -------------------------------------------------------------- electronic structure
    def _occupations(self, eps, n_el):
        kT = self.kT

        def fermi(mu):
            return 0.5 * (1.0 - np.tanh((eps - mu) / (2 * kT)))  # 1/(1+exp((ε-μ)/kT)), overflow-free

        lo, hi = eps.min() - 40 * kT, eps.max() + 40 * kT
        mu = brentq(lambda m: 2.0 * fermi(m).sum() - n_el, lo, hi, xtol=1e-15, rtol=1e-15, maxiter=500)
        return fermi(mu), mu

    def _state(self, H0, lam, n0):
        eps, C = np.linalg.eigh(H0 + np.diag(lam))
        f, _ = self._occupations(eps, float(n0.sum()))
        return eps, C, f, 2.0 * (C**2) @ f - n0

    def _solve(self, H0, n0):
        """λ with ρ_ii = n0_i (Newton with backtracking); returns λ, eigenvalues, eigenvectors,
        occupations."""
        lam = np.zeros(len(n0))
        kT = self.kT
        eps, C, f, res = self._state(H0, lam, n0)
        for _ in range(200):
            if np.abs(res).max() < 1e-12:
                return lam, eps, C, f
            # χ_ij = ∂ρ_ii/∂λ_j = 2 Σ_mn K_mn C_im C_in C_jm C_jn, minus the Fermi-level shift
            de = eps[:, None] - eps[None, :]
            fp = -f * (1.0 - f) / kT
            K = np.where(np.abs(de) > 1e-9, (f[:, None] - f[None, :]) / np.where(np.abs(de) > 1e-9, de, 1.0),
                         0.5 * (fp[:, None] + fp[None, :]))
            X = C[:, :, None] * C[:, None, :]  # (i, m, n)
            chi = 2.0 * np.einsum("imn,mn,jmn->ij", X, K, X)
            if fp.sum() < -1e-300:
                g = 2.0 * (C**2) @ fp  # ∂ρ_ii/∂μ
                chi -= np.outer(g, (C**2) @ fp) / fp.sum()
            step = np.linalg.lstsq(chi, -res, rcond=1e-10)[0]
            step -= step.mean()  # a uniform shift only moves the Fermi level
            big = np.abs(step).max()
            if big > 1.0:
                step *= 1.0 / big
            norm = np.linalg.norm(res)
            for _ in range(40):  # backtrack until the residual decreases
                trial = self._state(H0, lam + step, n0)
                if np.linalg.norm(trial[3]) < norm:
                    break
                step *= 0.5
            lam = lam + step
            eps, C, f, res = trial
        raise RuntimeError(f"local charge neutrality did not converge (residual {np.abs(res).max():.2e})")

    def compute(self, atoms) -> dict:
        """energy, forces, onsite_shift (λ), charge (ρ_ii) of a cluster (no periodicity)."""
        if atoms.pbc.any():
            raise ValueError("tb_data: only clusters (pbc = False) are supported")
        symbols = atoms.get_chemical_symbols()
        for a, s in enumerate(symbols):
            if s not in self.onsite or s not in self.n0:
                raise ValueError(f"tb_data: atom {a} is {s}, which the TB model does not parametrise")
        R = atoms.positions
        n = len(atoms)
        D = R[None, :, :] - R[:, None, :]  # D[i, j] = R_j - R_i
        r = np.linalg.norm(D, axis=2)
        off = ~np.eye(n, dtype=bool)
        if n > 1 and r[off].min() < 0.5:
            raise ValueError("tb_data: atoms closer than 0.5 Å")
        rs = np.where(off, r, 1.0)
        h, dh = self.hopping(rs)
        phi, dphi = self.repulsion(rs)
        h, dh, phi, dphi = (np.where(off, x, 0.0) for x in (h, dh, phi, dphi))
        H0 = h + np.diag([self.onsite[s] for s in symbols])
        n0 = np.array([self.n0[s] for s in symbols], dtype=float)
        lam, eps, C, f = self._solve(H0, n0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ent = np.where((f > 0) & (f < 1), f * np.log(f) + (1 - f) * np.log(1 - f), 0.0)
        E = 2.0 * f @ eps + 2.0 * self.kT * ent.sum() - lam @ n0 + 0.5 * phi.sum()
        rho = 2.0 * (C * f[None, :]) @ C.T
        # dE/dR_a = Σ_j (2 ρ_aj h'(r_aj) + φ'(r_aj)) (R_a - R_j) / r_aj
        w = 2.0 * rho * dh + dphi
        U = -D / rs[:, :, None]  # (R_i - R_j)/r_ij
        F = -np.einsum("ij,ijx->ix", w, U)
        return {"energy": float(E), "forces": F, "onsite_shift": lam, "charge": np.diag(rho).copy()}


# ------------------------------------------------------------------ configurations
def random_cluster(rng, n_atoms: int, *, elements=("Cu", "Ni"), dmin: float = 2.1, dmax: float = 3.0):
    """A connected random cluster: each new atom at dmin..dmax from a random earlier one and
    at least dmin from all."""
    from ase import Atoms

    pos = [np.zeros(3)]
    while len(pos) < n_atoms:
        v = rng.normal(size=3)
        p = pos[rng.integers(len(pos))] + v / np.linalg.norm(v) * rng.uniform(dmin, dmax)
        if min(np.linalg.norm(p - x) for x in pos) >= dmin:
            pos.append(p)
    return Atoms(symbols=list(rng.choice(list(elements), size=n_atoms)), positions=np.array(pos))


def lattice_walk(rng, n_atoms: int, *, elements=("Cu", "Ni"), spacing: float = 2.5, rattle: float = 0.1,
                 branch: float = 0.2):
    """An elongated planar cluster: a self-avoiding walk on a square lattice of ``spacing``
    (grown from its tip, from a random earlier site with probability ``branch``: chains with
    bends and side branches, much longer than one short cutoff), every atom displaced by a
    Gaussian of standard deviation ``rattle`` in all three directions, random species."""
    from ase import Atoms

    steps = ((1, 0), (-1, 0), (0, 1), (0, -1))
    sites, occupied = [(0, 0)], {(0, 0)}
    while len(sites) < n_atoms:
        base = sites[-1] if rng.random() >= branch else sites[int(rng.integers(len(sites)))]
        free = [(base[0] + dx, base[1] + dy) for dx, dy in steps if (base[0] + dx, base[1] + dy) not in occupied]
        if not free:  # a dead end: try again (a branch from a random site comes with probability branch)
            continue
        site = free[int(rng.integers(len(free)))]
        sites.append(site)
        occupied.add(site)
    pos = np.zeros((n_atoms, 3))
    pos[:, :2] = spacing * np.array(sites, dtype=float)
    pos += rng.normal(scale=rattle, size=pos.shape)
    return Atoms(symbols=list(rng.choice(list(elements), size=n_atoms)), positions=pos)


def linear_chains(lengths=range(2, 26), spacing: float = 2.5, element: str = "Cu"):
    """Linear chains of ``lengths`` atoms along x (Bochkarev et al. 2022, Fig. 2)."""
    from ase import Atoms

    return [Atoms(element * n, positions=[[spacing * k, 0.0, 0.0] for k in range(n)]) for n in lengths]


def labelled(atoms, model: TBModel):
    """A copy of ``atoms`` with the TB energy/forces attached (extxyz-ready)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    out = model.compute(atoms)
    a = atoms.copy()
    a.set_array("onsite_shift", out["onsite_shift"])
    a.set_array("charge", out["charge"])
    a.calc = SinglePointCalculator(a, energy=out["energy"], forces=out["forces"])
    return a


#: the cluster generators of :func:`generate`
KINDS = {"random": random_cluster, "walk": lattice_walk}


def short_range_model() -> TBModel:
    """The TB model with first-neighbour hopping and repulsion only (cut off between 2.7 and
    3.2 Å: the 2.5 Å bonds of :func:`lattice_walk` clusters, not their 3.5 Å diagonals)."""
    return TBModel(rc=3.2, w=0.5)


def generate(n_clusters: int = 200, seed: int = 0, *, sizes=(2, 25), model: TBModel | None = None,
             kind: str = "random"):
    """(clusters, chains): seeded lists of labelled Atoms; ``kind`` a key of :data:`KINDS`."""
    if kind not in KINDS:
        raise ValueError(f"tb_data: unknown cluster kind {kind!r} (expected one of {sorted(KINDS)})")
    model = model or TBModel()
    rng = np.random.default_rng(seed)
    make = KINDS[kind]
    clusters = [labelled(make(rng, int(rng.integers(sizes[0], sizes[1] + 1))), model)
                for _ in range(n_clusters)]
    chains = [labelled(c, model) for c in linear_chains()]
    return clusters, chains


def main(argv=None) -> None:
    from ase.io import write

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", default="tb_data", help="output folder")
    ap.add_argument("--clusters", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kind", choices=sorted(KINDS), default="random",
                    help="random 3D clusters, or planar lattice walks (with --short-range)")
    ap.add_argument("--short-range", action="store_true", help="first-neighbour TB (cut off at 3.2 Å)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clusters, chains = generate(args.clusters, args.seed, kind=args.kind,
                                model=short_range_model() if args.short_range else None)
    write(out / "tb_clusters.extxyz", clusters, format="extxyz")
    write(out / "tb_chains.extxyz", chains, format="extxyz")
    print(f"wrote {len(clusters)} clusters and {len(chains)} chains to {out}")


if __name__ == "__main__":
    main()
