"""Long NVE run (issue 9): 500 Cu atoms at 300 K, 2000 steps of 1 fs with ASE's Velocity
Verlet on the npj Cu potential; prints the total-energy drift per atom.

    python benchmarks/md_drift.py [--potential PATH] [--steps 2000] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from ase import units
from ase.build import bulk
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.md.verlet import VelocityVerlet

import acegen

HERE = Path(__file__).resolve().parent


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--potential", default=str(HERE.parent.parent / "shared/potentials/Cu-PBE-core-rep.ace"))
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((5, 5, 5))[:500]
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    Stationary(atoms)
    atoms.calc = acegen.Calculator(a.potential, nthreads=a.threads)
    dyn = VelocityVerlet(atoms, 1.0 * units.fs)
    e0 = atoms.get_potential_energy() + atoms.get_kinetic_energy()
    etot = [e0]
    t0 = time.perf_counter()
    for _ in range(a.steps // 10):
        dyn.run(10)
        etot.append(atoms.get_potential_energy() + atoms.get_kinetic_energy())
    dt = time.perf_counter() - t0
    etot = np.array(etot)
    print(f"atoms {len(atoms)}, steps {a.steps}, wall {dt:.1f} s ({dt / a.steps * 1e3:.1f} ms/step)")
    print(f"T_final {atoms.get_temperature():.1f} K")
    print(f"max |E_tot - E_tot(0)| per atom: {np.abs(etot - e0).max() / len(atoms):.3e} eV/atom")
    print(f"drift (linear fit over the run) per atom: {np.polyfit(np.arange(len(etot)), etot, 1)[0] * len(etot) / len(atoms):.3e} eV/atom")


if __name__ == "__main__":
    main()
