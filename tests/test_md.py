"""Short NVE run: total energy is conserved (the long run lives in benchmarks/md_drift.py)."""

from __future__ import annotations

import numpy as np
from ase import units
from ase.build import bulk
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.md.verlet import VelocityVerlet

import acegen


def test_nve_energy_drift(shared_dir):
    calc = acegen.Calculator(shared_dir / "potentials" / "Cu-III.yaml")
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(3)  # 108 atoms
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    Stationary(atoms)
    atoms.calc = calc
    dyn = VelocityVerlet(atoms, 1.0 * units.fs)
    etot = []
    for _ in range(10):
        dyn.run(10)
        etot.append(atoms.get_potential_energy() + atoms.get_kinetic_energy())
    drift = (max(etot) - min(etot)) / len(atoms)
    assert drift < 1e-4, f"total energy drift {drift:.2e} eV/atom over 100 fs"
    assert atoms.get_temperature() > 50  # it actually moved
