"""Shared small models and structures for the pipeline tests (built once per process)."""

from __future__ import annotations

import functools

import numpy as np
from ase import Atoms
from ase.build import bulk

import acegen

SPECS = {
    "Cu_o1": dict(elements=["Cu"], order=1, totaldegree=6, rcut=5.0),
    "Cu_o2": dict(elements=["Cu"], order=2, totaldegree=8, rcut=5.0),
    "Cu_o3": dict(elements=["Cu"], order=3, totaldegree=8, rcut=5.0),
    "Cu_o4": dict(elements=["Cu"], order=4, totaldegree=7, rcut=4.6),
    "CuNi_pair_rcut": dict(elements=["Cu", "Ni"], order=2, totaldegree=6, rcut=4.5, pair_rcut=5.5),
    "CuNiAl_o3": dict(elements=["Cu", "Ni", "Al"], order=3, totaldegree=6,
                      rcut={("Cu", "Cu"): 4.8, ("Cu", "Ni"): 4.6, ("Cu", "Al"): 5.0,
                            ("Ni", "Ni"): 4.4, ("Ni", "Al"): 4.7, ("Al", "Al"): 5.1}),
}


@functools.lru_cache(maxsize=None)
def spec(name: str) -> acegen.BasisSpec:
    return acegen.BasisSpec(**SPECS[name])


@functools.lru_cache(maxsize=None)
def model(name: str, seed: int = 0) -> acegen.Model:
    return acegen.Model.random(spec(name), seed=seed, name=name)


def random_structure(elements, kind: str = "bulk", seed: int = 0) -> Atoms:
    rng = np.random.default_rng(seed)
    if kind == "bulk":
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 1))
        atoms.rattle(0.15, seed=seed)
    elif kind == "skewed":
        atoms = Atoms("Cu3", cell=[[3.1, 0, 0], [1.4, 2.9, 0], [0.6, 1.1, 3.3]], pbc=True,
                      scaled_positions=rng.random((3, 3)))
        # keep atoms apart
        atoms.positions += 0.0
    elif kind == "cluster":
        pos = []
        while len(pos) < 7:
            p = rng.uniform(-3, 3, 3)
            if all(np.linalg.norm(p - q) > 1.9 for q in pos):
                pos.append(p)
        atoms = Atoms("Cu7", positions=pos)
    elif kind == "slab":
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 2))
        atoms.center(vacuum=4.0, axis=2)
        atoms.pbc = [True, True, False]
        atoms.rattle(0.1, seed=seed)
    else:
        raise ValueError(kind)
    atoms.set_chemical_symbols(list(rng.choice(list(elements), size=len(atoms))))
    return atoms
