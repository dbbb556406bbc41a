"""Hypothesis property tests: invariance of energies (and covariance of forces) under
rotations, reflections, permutations of like atoms, translations and the choice of
periodic image, to 1e-10 relative."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from acegen.calculator import evaluate

from .models import model

TARGET = "c"
SETTINGS = dict(max_examples=25, deadline=None)


def results(m, atoms):
    return evaluate(m.compile(TARGET), m.elements, atoms, m.ir().rcut_max)


@st.composite
def clusters(draw, elements=("Cu", "Ni", "Al")):
    n = draw(st.integers(2, 7))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    pos = []
    while len(pos) < n:
        p = rng.uniform(-2.5, 2.5, 3)
        if all(np.linalg.norm(p - q) > 1.6 for q in pos):
            pos.append(p)
    syms = list(rng.choice(list(elements), size=n))
    return Atoms(syms, positions=pos)


def close(a, b, rtol=1e-10):
    a, b = np.asarray(a), np.asarray(b)
    return np.abs(a - b).max() <= rtol * max(np.abs(b).max(), 1e-12)


@settings(**SETTINGS)
@given(atoms=clusters(), rot_seed=st.integers(0, 2**31 - 1), reflect=st.booleans(),
       shift=st.tuples(*[st.floats(-10, 10)] * 3))
def test_rotation_reflection_translation(atoms, rot_seed, reflect, shift):
    m = model("CuNiAl_o3")
    r0 = results(m, atoms)
    Q = Rotation.random(random_state=rot_seed).as_matrix()
    if reflect:
        Q = Q @ np.diag([1.0, 1.0, -1.0])
    moved = atoms.copy()
    moved.positions = atoms.positions @ Q.T + np.array(shift)
    r1 = results(m, moved)
    assert close(r1["energies"], r0["energies"])
    assert close(r1["forces"], r0["forces"] @ Q.T)


@settings(**SETTINGS)
@given(atoms=clusters(), perm_seed=st.integers(0, 2**31 - 1))
def test_permutation_of_atoms(atoms, perm_seed):
    m = model("CuNiAl_o3")
    r0 = results(m, atoms)
    perm = np.random.default_rng(perm_seed).permutation(len(atoms))
    r1 = results(m, atoms[perm])
    assert close(r1["energies"], r0["energies"][perm])
    assert close(r1["forces"], r0["forces"][perm])


@settings(**SETTINGS)
@given(seed=st.integers(0, 2**31 - 1), rot_seed=st.integers(0, 2**31 - 1))
def test_periodic_rotation_and_image_choice(seed, rot_seed):
    """Rotating cell and atoms together, wrapping atoms into other images and choosing an
    equivalent (unimodular) cell leave energies, forces and stress (rotated) unchanged."""
    m = model("Cu_o3")
    rng = np.random.default_rng(seed)
    cell = np.diag([3.6, 3.7, 3.5]) + rng.uniform(-0.3, 0.3, (3, 3))
    atoms = Atoms("Cu4", cell=cell, pbc=True,
                  scaled_positions=[[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    atoms.rattle(0.1, seed=seed % 1000)
    r0 = results(m, atoms)
    # image choice: shift atoms by lattice vectors, change the cell by a unimodular matrix
    moved = atoms.copy()
    moved.positions += rng.integers(-2, 3, (4, 3)) @ cell
    U = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1]])
    moved.set_cell(U @ cell, scale_atoms=False)
    r1 = results(m, moved)
    assert close(r1["energies"], r0["energies"])
    assert close(r1["forces"], r0["forces"])
    assert close(r1["stress"], r0["stress"])
    Q = Rotation.random(random_state=rot_seed).as_matrix()
    rot = atoms.copy()
    rot.set_cell(cell @ Q.T, scale_atoms=False)
    rot.positions = atoms.positions @ Q.T
    r2 = results(m, rot)
    assert close(r2["energies"], r0["energies"])
    assert close(r2["forces"], r0["forces"] @ Q.T)
    voigt = lambda s: np.array([[s[0], s[5], s[4]], [s[5], s[1], s[3]], [s[4], s[3], s[2]]])  # noqa: E731
    assert close(voigt(r2["stress"]), Q @ voigt(r0["stress"]) @ Q.T)
