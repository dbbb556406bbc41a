"""Neighbour lists against a brute-force sum over periodic images."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from acegen.errors import StructureError
from acegen.runtime.neighbours import build_neighbours, scatter_forces_virial, species_indices


def brute_force_pairs(atoms, rc):
    cell = atoms.cell.array
    pbc = atoms.pbc
    # enough images to cover rc in every periodic direction
    reps = []
    for k in range(3):
        if not pbc[k]:
            reps.append(range(1))
            continue
        # distance between the planes spanned by the other two vectors
        other = [cell[(k + 1) % 3], cell[(k + 2) % 3]]
        nrm = np.cross(other[0], other[1])
        h = abs(np.dot(cell[k], nrm)) / np.linalg.norm(nrm)
        n = int(np.ceil(rc / h)) + 1
        reps.append(range(-n, n + 1))
    out = set()
    pos = atoms.positions
    for i in range(len(atoms)):
        for j in range(len(atoms)):
            for s in itertools.product(*reps):
                shift = np.array(s) @ cell
                d = pos[j] + shift - pos[i]
                r = np.linalg.norm(d)
                if 1e-9 < r < rc:
                    out.add((i, j, *np.round(d, 8)))
    return out


def as_set(nl):
    return {(int(i), int(j), *np.round(d, 8)) for i, j, d in zip(nl.i, nl.j, nl.rij)}


CASES = {
    "fcc_small_cell": lambda: bulk("Cu", "fcc", a=3.6),  # 1 atom, cell << cutoff
    "skewed": lambda: Atoms("CuCu", positions=[[0, 0, 0], [1.1, 0.4, 0.3]],
                            cell=[[2.5, 0, 0], [2.3, 2.0, 0], [0.7, 0.9, 2.2]], pbc=True),
    "slab": lambda: Atoms("Cu3", positions=[[0, 0, 0], [1.3, 1.2, 0.8], [0.2, 2.1, 1.9]],
                          cell=[3.0, 3.2, 20.0], pbc=[True, True, False]),
    "cluster": lambda: Atoms("Cu4", positions=[[0, 0, 0], [2.0, 0, 0], [0, 2.3, 0], [1, 1, 1.7]]),
    "wire_outside_cell": lambda: Atoms("Cu2", positions=[[-7.0, 0.3, 0.1], [1.2, 12.0, 0.0]],
                                       cell=[2.7, 5.0, 5.0], pbc=[True, False, False]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_brute_force(name):
    atoms = CASES[name]()
    rc = 5.1
    nl = build_neighbours(atoms, rc)
    assert np.all(np.diff(nl.i) >= 0)
    assert nl.offsets[-1] == nl.n_pairs
    for a in range(len(atoms)):
        assert np.all(nl.i[nl.offsets[a]:nl.offsets[a + 1]] == a)
    assert as_set(nl) == brute_force_pairs(atoms, rc)


def test_linear_scaling_pair_count():
    a1 = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((3, 3, 3))
    a2 = a1.repeat((2, 1, 1))
    n1 = build_neighbours(a1, 5.0).n_pairs
    n2 = build_neighbours(a2, 5.0).n_pairs
    assert n2 == 2 * n1


def test_bad_structures_named():
    atoms = bulk("Cu", "fcc", a=3.6).repeat(2)
    atoms.positions[3, 1] = np.nan
    with pytest.raises(StructureError, match="atom 3"):
        build_neighbours(atoms, 4.0)
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 0]])
    with pytest.raises(StructureError, match="atoms 0 and 1 overlap"):
        build_neighbours(atoms, 4.0)
    with pytest.raises(StructureError, match="atom 1 is Ni"):
        species_indices(Atoms("CuNi", positions=[[0, 0, 0], [2, 0, 0]]), ("Cu",))
    empty = build_neighbours(Atoms(), 4.0)
    assert empty.n_pairs == 0 and empty.offsets.tolist() == [0]


def test_scatter_is_newton_third_law():
    atoms = bulk("Cu", "fcc", a=3.6).repeat(2)
    atoms.rattle(0.1, seed=0)
    nl = build_neighbours(atoms, 4.5)
    rng = np.random.default_rng(0)
    dEdr = rng.standard_normal((nl.n_pairs, 3))
    F, W = scatter_forces_virial(nl, dEdr)
    np.testing.assert_allclose(F.sum(axis=0), 0.0, atol=1e-10)
    np.testing.assert_allclose(W, np.einsum("pa,pb->ab", dEdr, nl.rij), rtol=1e-12)


def _canonical(nl):
    o = np.lexsort((nl.rij[:, 2], nl.rij[:, 1], nl.rij[:, 0], nl.j, nl.i))
    return nl.i[o], nl.j[o], nl.rij[o]


@pytest.mark.parametrize("name", sorted(CASES) + ["fcc_4000", "rattled_small_cell_rc8"])
def test_backends_agree(name):
    """The C cell list, vesin and ASE list the same pairs with the same vectors (the order of
    neighbours within a centre may differ)."""
    from acegen.runtime.neighbours import _native

    if name == "fcc_4000":
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((10, 10, 10))
        atoms.rattle(0.01, seed=3)
    elif name == "rattled_small_cell_rc8":
        atoms = bulk("Cu", "fcc", a=3.61).repeat((2, 2, 2))
        atoms.rattle(0.05, seed=4)
    else:
        atoms = CASES[name]()
    rc = 8.0 if name == "rattled_small_cell_rc8" else 5.5
    backends = ["vesin"] + (["c"] if _native() is not None else []) + ([] if name == "fcc_4000" else ["ase"])
    lists = {b: build_neighbours(atoms, rc, backend=b) for b in backends}
    ref_i, ref_j, ref_d = _canonical(lists["vesin"])
    assert len(ref_i) > 0
    for b, nl in lists.items():
        assert np.all(np.diff(nl.i) >= 0), b  # sorted by centre
        assert np.array_equal(nl.offsets, lists["vesin"].offsets), b
        i, j, d = _canonical(nl)
        assert np.array_equal(i, ref_i) and np.array_equal(j, ref_j), b
        np.testing.assert_allclose(d, ref_d, rtol=0, atol=1e-12, err_msg=b)


@pytest.mark.parametrize("backend", ["c", "vesin", "ase"])
def test_overlap_found_by_every_backend(backend):
    from acegen.runtime.neighbours import _native

    if backend == "c" and _native() is None:
        pytest.skip("no C compiler")
    atoms = Atoms("Cu3", positions=[[0, 0, 0], [1.5, 0, 0], [1.5, 0, 0]], cell=[6, 6, 6], pbc=True)
    with pytest.raises(StructureError, match="atoms (1 and 2|2 and 1) overlap"):
        build_neighbours(atoms, 4.0, backend=backend)
    image = Atoms("Cu2", cell=[3.0, 3.0, 3.0], pbc=True, positions=[[0, 0, 0], [3.0, 0, 0]])
    with pytest.raises(StructureError, match="overlap"):
        build_neighbours(image, 4.0, backend=backend)
