"""The generated basis (design-matrix) kernel: against the NumPy reference rows
(ACEReference.basis_derivatives), against the compiled model's energies / forces / stress
(A·θ = Calculator), threads, errors, the evaluator factory, and a small force + virial fit of
TiAl_tiny whose saved model reloads with identical predictions."""

from __future__ import annotations

import warnings

import ase.io
import numpy as np
import pytest
from ase import Atoms

import acegen
from acegen.errors import CompileError, StructureError
from acegen.fit import FitError, make_basis_evaluator
from acegen.fit.assembly_kernel import BasisKernel, KernelBasisEvaluator, compile_basis
from acegen.reference.ace_numpy import ACEReference
from acegen.runtime.neighbours import build_neighbours, species_indices

from .models import random_structure, spec

try:
    from acegen.jit.toolchain import detect

    detect()
except CompileError:  # no usable C compiler (the NumPy rows are tested in test_basis_derivatives.py)
    pytest.skip("no C compiler", allow_module_level=True)

NAMES = ["Cu_o1", "Cu_o2", "Cu_o3", "Cu_o4", "CuNiAl_o3"]
KINDS = ["bulk", "cluster", "slab", "skewed"]


def assert_columns_close(a: np.ndarray, b: np.ndarray, rtol: float = 1e-12, floor: float = 1e-3) -> None:
    """|a − b| <= rtol · scale per parameter column (last axis); scale = the column's largest
    |b|, floored at ``floor`` × the block's largest |b|.  The floor is needed because the
    reference computes the radial functions from independent formulas (equal to ~1 ulp), and
    columns that are small through cancellation (A sums of radial functions of both signs, or
    columns that vanish by symmetry) keep that absolute rounding, not a relative one."""
    a2 = a.reshape(-1, a.shape[-1])
    b2 = b.reshape(-1, b.shape[-1])
    scale = np.maximum(np.abs(b2).max(axis=0), floor * max(np.abs(b2).max(), 1e-300))
    err = np.abs(a2 - b2).max(axis=0) / scale
    assert err.max() <= rtol, f"column {int(err.argmax())}: relative error {err.max():.3g}"


@pytest.fixture(scope="module", params=NAMES)
def lowered(request):
    basis = acegen.lower(spec(request.param))
    return request.param, basis, compile_basis(basis)


def test_kernel_reports_its_basis(lowered):
    _, basis, kernel = lowered
    assert isinstance(kernel, BasisKernel)
    assert kernel.n_params == basis.n_params and kernel.signature == basis.signature()
    assert kernel.rcut.max() == pytest.approx(max(b.rcut for b in basis.radial_blocks().values()))


@pytest.mark.parametrize("kind", KINDS)
def test_kernel_matches_numpy_reference(lowered, kind):
    name, basis, kernel = lowered
    ev = KernelBasisEvaluator(kernel, basis.elements, nthreads=1)
    ref = ACEReference(basis)
    for seed in (11, 12):
        atoms = random_structure(spec(name).elements, kind, seed=seed)
        e, f, v = ref.basis_derivatives(atoms)
        out = ev(atoms)
        assert_columns_close(out["energy"], e)
        assert_columns_close(out["forces"], f)
        assert_columns_close(out["virial"], v)


@pytest.mark.parametrize("name", ["Cu_o4", "CuNiAl_o3"])
def test_design_rows_times_theta_equal_the_compiled_model(name):
    sp_ = spec(name)
    basis = acegen.lower(sp_)
    theta = np.random.default_rng(3).normal(size=basis.n_params)
    calc = acegen.Calculator(acegen.Model(sp_, theta))
    ev = make_basis_evaluator(basis, target="c", nthreads=1)
    for kind in ("bulk", "skewed", "cluster"):
        atoms = random_structure(sp_.elements, kind, seed=21)
        rows = ev(atoms)
        atoms.calc = calc
        e_model = atoms.get_potential_energy()
        f_model = atoms.get_forces()
        assert rows["energy"] @ theta == pytest.approx(e_model, rel=1e-11, abs=1e-11 * np.abs(rows["energy"] * theta).sum())
        np.testing.assert_allclose(rows["forces"] @ theta, f_model, rtol=0, atol=1e-11 * np.abs(f_model).max())
        if atoms.pbc.all():
            v = rows["virial"] @ theta
            stress = atoms.get_stress()
            s = -0.5 * (v + v.T) / atoms.get_volume()
            voigt = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
            np.testing.assert_allclose(voigt, stress, rtol=0, atol=1e-11 * np.abs(stress).max())


def test_threads_and_optional_outputs(lowered):
    name, basis, kernel = lowered
    atoms = random_structure(spec(name).elements, "bulk", seed=4).repeat((2, 1, 1))
    Z = species_indices(atoms, basis.elements)
    nl = build_neighbours(atoms, kernel.rcut.max())
    args = (Z, nl.offsets, Z[nl.j], nl.j, nl.rij, len(atoms))
    e1, f1, v1 = kernel.compute(*args, nthreads=1)
    e3, f3, v3 = kernel.compute(*args, nthreads=3)
    assert_columns_close(e3, e1, rtol=1e-13)
    assert_columns_close(f3, f1, rtol=1e-13)
    assert_columns_close(v3, v1, rtol=1e-13)
    e0, f0, v0 = kernel.compute(*args, forces=False, virial=False)
    assert f0 is None and v0 is None
    np.testing.assert_array_equal(e0, e1)
    _, f_only, v_none = kernel.compute(*args, virial=False)
    np.testing.assert_array_equal(f_only, f1)
    assert v_none is None


def test_isolated_atom_and_empty_structure_give_zero_rows():
    basis = acegen.lower(spec("Cu_o3"))
    ev = make_basis_evaluator(basis, target="c")
    out = ev(Atoms("Cu", positions=[[0.0, 0.0, 0.0]]))
    assert not out["energy"].any() and not out["forces"].any() and not out["virial"].any()
    kernel = ev.kernel
    e, f, v = kernel.compute(np.zeros(0, np.int32), np.zeros(1, np.int64), np.zeros(0, np.int32),
                             np.zeros(0, np.int64), np.zeros((0, 3)), 0)
    assert e.shape == (basis.n_params,) and f.shape == (0, 3, basis.n_params) and not v.any()


def test_errors_name_atom_and_pair():
    basis = acegen.lower(spec("CuNiAl_o3"))
    kernel = compile_basis(basis)
    sp = np.array([0, 1], dtype=np.int32)
    offs = np.array([0, 1, 2])
    rij = np.array([[1.0, 0.5, 0.2], [-1.0, -0.5, -0.2]])
    nbi = np.array([1, 0])
    with pytest.raises(StructureError, match="atom 1, pair 1: neighbour species index 7"):
        kernel.compute(sp, offs, np.array([1, 7], dtype=np.int32), nbi, rij, 2)
    with pytest.raises(StructureError, match="atom 1: species index 5"):
        kernel.compute(np.array([0, 5], dtype=np.int32), offs, sp[::-1], nbi, rij, 2)
    with pytest.raises(StructureError, match="pair 0: neighbour index 2"):
        kernel.compute(sp, offs, sp[::-1], np.array([2, 0]), rij, 2)
    bad = rij.copy()
    bad[0, 1] = np.nan
    with pytest.raises(StructureError, match="atom 0, pair 0: non-finite"):
        kernel.compute(sp, offs, sp[::-1], nbi, bad, 2)
    with pytest.raises(StructureError, match="overlapping"):
        kernel.compute(sp, offs, sp[::-1], nbi, np.zeros((2, 3)), 2)


def test_evaluator_factory_targets(monkeypatch):
    basis = acegen.lower(spec("Cu_o2"))
    atoms = random_structure(["Cu"], "skewed", seed=8)
    c_rows = make_basis_evaluator(basis, virial=False)(atoms)
    assert set(c_rows) == {"energy", "forces"}
    np_rows = make_basis_evaluator(basis, target="numpy")(atoms)
    assert_columns_close(c_rows["forces"], np_rows["forces"])
    energy_only = make_basis_evaluator(basis, forces=False, virial=False, target="numpy")(atoms)
    assert set(energy_only) == {"energy"}
    assert_columns_close(energy_only["energy"], np_rows["energy"])
    with pytest.raises(FitError, match="target"):
        make_basis_evaluator(basis, target="cuda")
    import acegen.jit.toolchain as toolchain

    monkeypatch.setattr(toolchain, "find_c_compiler", lambda required=True: None)
    with pytest.warns(RuntimeWarning, match="no C compiler"):
        fallback = make_basis_evaluator(basis)
    assert not isinstance(fallback, KernelBasisEvaluator)
    assert_columns_close(fallback(atoms)["forces"], np_rows["forces"])


def test_tial_tiny_fit_with_forces_and_virials_round_trips(shared_dir, tmp_path):
    """Forces and virials fitted through the kernel evaluator; the design-matrix predictions
    equal the compiled model's; the saved JSON model reloads with identical predictions."""
    path = shared_dir / "data" / "TiAl_tiny.xyz"
    eref = {"Ti": -1586.0195, "Al": -105.5954}
    sp_ = acegen.BasisSpec(["Ti", "Al"], 3, [10, 8, 6], rcut=5.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no silent NumPy fallback
        model = acegen.fit(sp_, path, energy_key="energy", force_key="force", virial_key="virial", eref=eref,
                           progress=False)
    rep = model.fit_report
    assert rep.n_params == model.basis.n_params > 300
    errs = rep.errors["set"]
    # E per atom above Eref spans ~1 eV/atom and forces reach several eV/Å: a real fit does far better
    assert errs["E"]["rmse"] < 0.01 and errs["F"]["rmse"] < 0.3 and errs["V"]["rmse"] < 0.1
    frames = ase.io.read(path, ":")
    out = tmp_path / "TiAl.json"
    model.save(out)
    reloaded = acegen.load(out)
    np.testing.assert_array_equal(reloaded.coefficients, model.coefficients)
    assert dict(reloaded.spec.Eref) == eref
    c1, c2 = acegen.Calculator(model), acegen.Calculator(reloaded)
    meta = rep.meta
    for p, s in enumerate(rep.training_set.structures[:8]):
        a1, a2 = frames[s.index].copy(), frames[s.index].copy()
        a1.calc, a2.calc = c1, c2
        e1, e2 = a1.get_potential_energy(), a2.get_potential_energy()
        f1, f2 = a1.get_forces(), a2.get_forces()
        assert e1 == e2 and np.array_equal(f1, f2)
        rows = meta.structure == p
        pred_e = rep.predictions[rows & (meta.kind == "E")][0]
        pred_f = rep.predictions[rows & (meta.kind == "F")].reshape(-1, 3)
        assert e1 == pytest.approx(pred_e + s.e0, abs=1e-8 * abs(s.e0))
        np.testing.assert_allclose(f1, pred_f, rtol=0, atol=1e-9)
