"""The core pipeline: BasisSpec → lower → fold → kernel, against the NumPy reference.

The reference (acegen.reference.ace_numpy) evaluates B = C·A from the coupling coefficients
and θ·B directly; the kernels evaluate the folded product DAG.  They share only the radial
and angular conventions (each of which has its own tests against independent formulas)."""

from __future__ import annotations

import numpy as np
import pytest

import acegen
from acegen.calculator import evaluate
from acegen.reference.ace_numpy import ACEReference

from .models import SPECS, model, random_structure, spec

TARGETS = ["numpy", "c"]


def kernel_results(m, atoms, target):
    k = m.compile(target)
    return evaluate(k, m.elements, atoms, m.ir().rcut_max)


def assert_close(a, b, rtol=1e-12, what=""):
    a, b = np.asarray(a), np.asarray(b)
    scale = max(np.abs(b).max(), 1e-300)
    err = np.abs(a - b).max()
    assert err <= rtol * scale, f"{what}: max error {err:.3e} vs scale {scale:.3e}"


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", sorted(SPECS))
@pytest.mark.parametrize("kind", ["bulk", "skewed", "cluster", "slab"])
def test_kernel_matches_reference(name, kind, target):
    m = model(name)
    atoms = random_structure(m.elements, kind, seed=3)
    ref = ACEReference(m.basis, m.coefficients).compute(atoms)
    got = kernel_results(m, atoms, target)
    assert_close(got["energies"], ref["energies"], what="energies")
    assert_close(got["energy"], ref["energy"], what="energy")
    assert_close(got["forces"], ref["forces"], what="forces")
    if "stress" in ref:
        assert_close(got["stress"], ref["stress"], what="stress")


@pytest.mark.parametrize("name", ["Cu_o3", "CuNiAl_o3"])
def test_forces_and_stress_are_finite_differences(name):
    m = model(name)
    atoms = random_structure(m.elements, "bulk", seed=5)
    atoms.calc = acegen.Calculator(m, target="c")
    F = atoms.get_forces()
    S = atoms.get_stress()
    h = 1e-4
    pos0 = atoms.positions.copy()
    for a, c in [(0, 0), (3, 1), (6, 2)]:
        e = []
        for s in (+1, -1):
            atoms.positions = pos0
            atoms.positions[a, c] += s * h
            e.append(atoms.get_potential_energy())
        fd = -(e[0] - e[1]) / (2 * h)
        assert abs(fd - F[a, c]) <= 1e-6 * max(1.0, abs(F[a, c])) + 1e-7
    atoms.positions = pos0
    cell0 = atoms.cell.array.copy()
    V = atoms.get_volume()
    for (i, j), voigt in [((0, 0), 0), ((1, 2), 3), ((0, 1), 5)]:
        e = []
        for s in (+1, -1):
            eps = np.eye(3)
            eps[i, j] += s * h / 2
            eps[j, i] += s * h / 2
            atoms.set_cell(cell0 @ eps, scale_atoms=True)
            e.append(atoms.get_potential_energy())
        atoms.set_cell(cell0, scale_atoms=True)
        fd = (e[0] - e[1]) / (2 * h) / V
        assert abs(fd - S[voigt]) <= 1e-6 * max(1e-3, abs(S[voigt])) + 1e-9


@pytest.mark.parametrize("name", ["Cu_o3", "Cu_o4", "CuNiAl_o3"])
def test_linear_independence(name):
    """The numerical rank of the basis-value matrix equals len(basis)."""
    basis = acegen.lower(spec(name))
    ref = ACEReference(basis)
    rows = []
    seed = 0
    while sum(r.shape[0] for r in rows) < 3 * len(basis):
        atoms = random_structure(basis.elements, "cluster", seed=seed)
        B, _ = ref.basis_values(atoms)
        rows.append(B)
        seed += 1
    M = np.vstack(rows)
    # columns are per central species: check each species block separately
    for z0 in range(len(basis.elements)):
        cols = np.flatnonzero(basis.species == z0)
        sub = M[:, cols]
        sub = sub[np.abs(sub).sum(axis=1) > 0]
        sub = sub / np.linalg.norm(sub, axis=0)
        s = np.linalg.svd(sub, compute_uv=False)
        rank = int(np.sum(s > s[0] * 1e-10))
        assert rank == len(cols), f"species {z0}: rank {rank} < {len(cols)}"


@pytest.mark.parametrize("order,degree,count", [(2, 8, 31), (3, 10, 110), (3, 12, 211), (4, 10, 156)])
def test_counts_match_acepotentials(order, degree, count):
    """ACEpotentials' ace1_model sizes for Cu, wL = 1.5 (ν = 1 included, pair basis apart)."""
    basis = acegen.lower(acegen.BasisSpec(["Cu"], order, degree))
    assert len(basis) == count
    assert set(basis.orders.tolist()) == set(range(1, order + 1))


def test_basis_evaluate_shape_and_orders():
    basis = acegen.lower(spec("Cu_o3"))
    atoms = random_structure(basis.elements, "bulk", seed=1)
    B = basis.evaluate(atoms)
    assert B.shape == (len(atoms), len(basis))
    assert len(basis.orders) == len(basis)
    # ν = 1 functions are Σ_j R_n(r_ij) Y_00: positive on a compact cluster for R_1 > 0 region
    assert np.isfinite(B).all()
