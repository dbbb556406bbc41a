"""A toy linear model for the fitting tests: E = Σ_k θ_k Σ_{i<j} φ_k(r_ij), with analytic
forces and virials, plus helpers that make synthetic training structures from known θ.

φ_k(r) = exp(−((r − c_k)/s)²)·(1 − r/rc)² for r < rc (0 beyond), centres c_k spread over
[1.2, rc − 0.6]: smooth, distinct, not collinear.  Conventions as acegen.fit.data: forces
F = −∂E/∂r, virial V = −Σ_pairs (∂E/∂r_ij) ⊗ r_ij.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.neighborlist import neighbor_list


class PairToy:
    def __init__(self, n_funcs: int = 5, rcut: float = 4.0, width: float = 0.6):
        self.K = n_funcs
        self.rc = rcut
        self.s = width
        self.centres = np.linspace(1.2, rcut - 0.6, n_funcs)

    def phi(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = r[:, None]
        g = np.exp(-(((r - self.centres) / self.s) ** 2))
        dg = g * (-2.0 * (r - self.centres) / self.s**2)
        f = (1.0 - r / self.rc) ** 2
        df = -2.0 * (1.0 - r / self.rc) / self.rc
        inside = r < self.rc
        return np.where(inside, g * f, 0.0), np.where(inside, dg * f + g * df, 0.0)

    def __call__(self, atoms) -> dict[str, np.ndarray]:
        n = len(atoms)
        if n < 2 and not atoms.pbc.any():
            return {"energy": np.zeros(self.K), "forces": np.zeros((n, 3, self.K)),
                    "virial": np.zeros((3, 3, self.K))}
        i, j, d, D = neighbor_list("ijdD", atoms, self.rc)
        phi, dphi = self.phi(d)
        energy = 0.5 * phi.sum(axis=0)  # every pair appears as (i, j) and (j, i)
        g = 0.5 * dphi[:, None, :] * (D / d[:, None])[:, :, None]  # ∂E/∂D_p, D = r_j − r_i
        forces = np.zeros((n, 3, self.K))
        np.add.at(forces, i, g)
        np.add.at(forces, j, -g)
        virial = -np.einsum("pak,pb->abk", g, D)
        return {"energy": energy, "forces": forces, "virial": virial}


def random_structures(n: int, seed: int = 0, elements=("Si",), sizes=(2, 6), cell=(4.5, 6.0)):
    """Random periodic cells with a minimum distance of 1 Å between atoms."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        nat = int(rng.integers(sizes[0], sizes[1] + 1))
        a = rng.uniform(*cell)
        c = np.diag([a, a * rng.uniform(0.9, 1.1), a * rng.uniform(0.9, 1.1)]) + rng.normal(0, 0.2, (3, 3))
        atoms = Atoms(list(rng.choice(elements, nat)), cell=c, pbc=True)
        atoms.set_scaled_positions(rng.uniform(0, 1, (nat, 3)))
        if nat > 1 and neighbor_list("d", atoms, 1.0).size:
            continue
        out.append(atoms)
    return out


def label(structures, model: PairToy, theta, *, e0=None, noise=0.0, seed=1, config_types=None,
          energy_key="energy", force_key="forces", virial_key="virial", use_calc=False):
    """Store E = θ·energy + Σ E0, F, V on each structure, plus Gaussian noise matching the
    default weights (w·noise has standard deviation ``noise`` on every row: the energy noise
    is noise·√N/30, the force noise noise, the virial noise noise·√N)."""
    rng = np.random.default_rng(seed)
    e0 = e0 or {}
    for k, atoms in enumerate(structures):
        ev = model(atoms)
        E = float(ev["energy"] @ theta) + sum(e0.get(s, 0.0) for s in atoms.get_chemical_symbols())
        F = ev["forces"] @ theta
        V = ev["virial"] @ theta
        if noise:
            sq = np.sqrt(len(atoms))
            E += noise * sq / 30.0 * rng.standard_normal()
            F = F + noise * rng.standard_normal(F.shape)
            V = V + noise * sq * rng.standard_normal(V.shape)
        if use_calc:
            atoms.calc = SinglePointCalculator(atoms, energy=E, forces=F)
        else:
            atoms.info[energy_key] = E
            atoms.arrays[force_key] = F
        atoms.info[virial_key] = V
        if config_types is not None:
            atoms.info["config_type"] = config_types[k % len(config_types)]
    return structures
