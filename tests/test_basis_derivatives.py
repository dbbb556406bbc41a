"""ACEReference.basis_derivatives: the analytic per-parameter energy, force and virial rows,
checked against central finite differences of the basis values (positions and homogeneous
strain) and against the model's own forces and stress (Σ_k θ_k · row_k)."""

from __future__ import annotations

import numpy as np
import pytest

import acegen
from acegen.reference.ace_numpy import ACEReference

from .models import random_structure, spec

CASES = [("Cu_o3", "cluster"), ("Cu_o4", "skewed"), ("CuNiAl_o3", "skewed"), ("CuNiAl_o3", "slab")]


def total_values(ref: ACEReference, atoms) -> np.ndarray:
    """Σ_i of every basis function (many-body, then pair) from ``basis_values``."""
    B, P = ref.basis_values(atoms)
    return np.concatenate([B.sum(axis=0), P.sum(axis=0)])


def assert_columns_close(a: np.ndarray, b: np.ndarray, rtol: float, floor: float = 1e-6) -> None:
    """|a − b| <= rtol · scale per parameter column (last axis); scale = the column's largest
    |b|, but at least ``floor`` times the largest |b| of the whole block (columns that vanish
    by symmetry hold only rounding noise)."""
    a2 = a.reshape(-1, a.shape[-1])
    b2 = b.reshape(-1, b.shape[-1])
    scale = np.maximum(np.abs(b2).max(axis=0), floor * np.abs(b2).max())
    err = np.abs(a2 - b2).max(axis=0) / scale
    assert err.max() <= rtol, f"column {int(err.argmax())}: relative error {err.max():.3g}"


@pytest.fixture(scope="module", params=CASES, ids=[f"{m}-{k}" for m, k in CASES])
def case(request):
    name, kind = request.param
    basis = acegen.lower(spec(name))
    atoms = random_structure(spec(name).elements, kind, seed=3)
    ref = ACEReference(basis)
    return basis, ref, atoms, ref.basis_derivatives(atoms)


def test_energy_row_is_the_sum_of_basis_values(case):
    basis, ref, atoms, (energy, forces, virial) = case
    assert energy.shape == (basis.n_params,)
    assert forces.shape == (len(atoms), 3, basis.n_params)
    assert virial.shape == (3, 3, basis.n_params)
    np.testing.assert_allclose(energy, total_values(ref, atoms), rtol=1e-12, atol=1e-12 * np.abs(energy).max())


def test_force_rows_by_finite_differences(case):
    basis, ref, atoms, (_, forces, _) = case
    h = 1e-5
    fd = np.zeros_like(forces)
    for a in range(len(atoms)):
        for x in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[a, x] += h
            minus.positions[a, x] -= h
            fd[a, x] = -(total_values(ref, plus) - total_values(ref, minus)) / (2 * h)
    assert_columns_close(forces, fd, rtol=1e-6)


def test_virial_rows_by_finite_strain(case):
    """V_ab = −∂E/∂ε_ab for positions and cell deformed by (I + ε) (periodic directions)."""
    basis, ref, atoms, (_, _, virial) = case
    if not atoms.pbc.all():
        pytest.skip("the strain derivative equals the pair-sum virial only for fully periodic cells")
    h = 1e-6
    fd = np.zeros_like(virial)
    for a in range(3):
        for b in range(3):
            vals = []
            for s in (h, -h):
                eps = np.eye(3)
                eps[a, b] += s
                strained = atoms.copy()
                strained.set_cell(atoms.cell.array @ eps.T, scale_atoms=False)
                strained.positions = atoms.positions @ eps.T
                vals.append(total_values(ref, strained))
            fd[a, b] = -(vals[0] - vals[1]) / (2 * h)
    assert_columns_close(virial, fd, rtol=1e-5)


@pytest.mark.parametrize("name,kind", [("Cu_o4", "bulk"), ("CuNiAl_o3", "bulk"), ("CuNiAl_o3", "cluster")])
def test_theta_contraction_equals_model_forces_and_stress(name, kind):
    sp_ = spec(name)
    basis = acegen.lower(sp_)
    theta = np.random.default_rng(7).normal(size=basis.n_params)
    atoms = random_structure(sp_.elements, kind, seed=5)
    energy, forces, virial = ACEReference(basis).basis_derivatives(atoms)
    out = ACEReference(basis, theta).compute(atoms)
    scale_f = np.abs(out["forces"]).max()
    assert energy @ theta == pytest.approx(out["energy"], rel=1e-12, abs=1e-12 * np.abs(energy * theta).sum())
    np.testing.assert_allclose(forces @ theta, out["forces"], rtol=0, atol=1e-11 * scale_f)
    if "stress" in out:
        v = virial @ theta
        s = -0.5 * (v + v.T) / atoms.get_volume()
        voigt = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
        np.testing.assert_allclose(voigt, out["stress"], rtol=0, atol=1e-11 * np.abs(out["stress"]).max())


def test_isolated_atom_rows_vanish():
    from ase import Atoms

    basis = acegen.lower(spec("Cu_o3"))
    e, f, v = ACEReference(basis).basis_derivatives(Atoms("Cu", positions=[[0.0, 0.0, 0.0]]))
    assert not e.any() and not f.any() and not v.any()
