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


@pytest.mark.parametrize("axis", [0, 2])
def test_near_flat_cell_is_refused_fast(axis):
    """A periodic cell with one axis 1e-5 Å thick would need ~10^6 images per atom: refused
    before anything is allocated, naming the axis."""
    import time

    from acegen.runtime.neighbours import build_neighbours

    lengths = [3.0, 3.0, 3.0]
    lengths[axis] = 1e-5
    atoms = bulk("Cu", "sc", a=3.0)
    atoms.set_cell(np.diag(lengths))
    t0 = time.perf_counter()
    with pytest.raises(acegen.StructureError, match=f"cell axis {axis}.*periodic images"):
        build_neighbours(atoms, 5.5)
    assert time.perf_counter() - t0 < 2.0


def test_small_cell_with_many_images_still_evaluates():
    """The bound on images is far above what small but sane cells need."""
    from acegen.runtime.neighbours import build_neighbours

    atoms = bulk("Cu", "sc", a=1.0)  # an unphysical 1 Å cell: (2·6 + 1)^3 images within 5.5 Å
    nl = build_neighbours(atoms, 5.5)
    d = np.linalg.norm(nl.rij, axis=1)
    assert nl.n_pairs == sum(1 for x in range(-6, 7) for y in range(-6, 7) for z in range(-6, 7)
                             if 0 < x * x + y * y + z * z < 5.5**2)
    assert d.max() < 5.5


def test_missing_shared_data_says_how_to_point_at_it(tmp_path):
    """From a clone without ../shared the data-dependent tests skip with a reason naming
    ACEGEN_SHARED, and the run ends with a one-line note."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    env = dict(os.environ, ACEGEN_SHARED=str(tmp_path / "missing"))
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-p", "no:xdist",
         "tests/test_pace_io.py", "tests/test_fit_data.py"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=300,
    ).stdout
    skipped = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert skipped, out[-2000:]
    assert all("ACEGEN_SHARED=/path/to/shared" in line for line in skipped if "peer reference" in line)
    assert any("peer reference data not found" in line for line in skipped)
    assert any(line.startswith("note:") and "ACEGEN_SHARED" in line for line in out.splitlines()), out[-2000:]
