"""Reliability and first-use defects: shared calculators, degenerate cells, CLI paths,
the cache command, progress feedback and the test-suite data note."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from ase.build import bulk

import acegen

from .models import model, random_structure


@pytest.fixture(scope="module")
def calc():
    return acegen.Calculator(model("CuNiAl_o3"), target="c")


def test_shared_calculator_threads_get_their_own_results(calc):
    """One Calculator used by several threads: each thread gets its own structure's results."""
    structures = [random_structure(["Cu", "Ni", "Al"], "bulk", seed=s) for s in range(4)]
    structures.append(bulk("Cu", "fcc", a=3.6, cubic=True).repeat((3, 3, 3)))
    expected = []
    for a in structures:
        b = a.copy()
        b.calc = calc
        expected.append((b.get_potential_energy(), b.get_forces().copy()))
    errors: list[str] = []
    barrier = threading.Barrier(len(structures))

    def work(k: int) -> None:
        atoms = structures[k].copy()
        barrier.wait()
        for _ in range(15):
            calc.reset()
            atoms.calc = calc
            e = atoms.get_potential_energy()
            f = atoms.get_forces()
            if not np.isclose(e, expected[k][0], rtol=0, atol=1e-9) or f.shape != expected[k][1].shape \
                    or not np.allclose(f, expected[k][1], rtol=0, atol=1e-9):
                errors.append(f"structure {k}: energy {e} instead of {expected[k][0]}")
                return

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(structures))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
