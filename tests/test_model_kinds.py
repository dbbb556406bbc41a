"""One model class per kind behind ``acegen.Model``; one ``Kernel`` interface for every
compiled kernel; the package's NumPy basis evaluator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

import acegen
from acegen.calculator import evaluate
from acegen.errors import AcegenError, CompileError
from acegen.jit.kernel import Kernel
from acegen.jit.load import CompiledKernel
from acegen.model import LinearModel, PaceModel
from acegen.reference.ace_numpy import ACEReference
from acegen.symbolic.selection import smoothness_prior

from .models import random_structure, spec

YBCO = Path(acegen.__file__).resolve().parent / "data" / "YBCO_ACE.yace"


def test_every_kind_is_an_acegen_model(tmp_path):
    lin = acegen.Model(spec("Cu_o2"), np.zeros(acegen.lower(spec("Cu_o2")).n_params), name="lin")
    assert type(lin) is LinearModel and isinstance(lin, acegen.Model) and lin.kind == "linear"
    rnd = acegen.Model.random(spec("Cu_o2"), seed=1)
    assert type(rnd) is LinearModel and isinstance(rnd, acegen.Model)
    pace = acegen.load(YBCO)
    assert type(pace) is PaceModel and isinstance(pace, acegen.Model) and pace.kind == "pace"
    assert acegen.Model.from_pace(pace.pace, name="again").elements == pace.elements
    with pytest.raises(AcegenError, match="no acegen basis"):
        pace.basis
    with pytest.raises(AcegenError, match=".yace"):
        pace.to_dict()
    lin.save(tmp_path / "lin.json")
    back = acegen.load(tmp_path / "lin.json")
    assert type(back) is LinearModel and back.name == "lin"
    np.testing.assert_array_equal(back.coefficients, lin.coefficients)


def test_random_model_keeps_its_scaling():
    """θ_k = ξ_k / (γ_k b_k), b_k the RMS of function k on the rattled reference crystal,
    recomputed here with the reference evaluator's basis values."""
    s = spec("CuNi_pair_rcut")
    m = acegen.Model.random(s, seed=3, scale=0.5)
    basis = m.basis
    rng = np.random.default_rng(3)
    gam = np.asarray(smoothness_prior(s, [f.factors for f in basis.functions], kind="algebraic", p=4, constant=1.0))
    gp = np.asarray(smoothness_prior(s, [((p.zj, p.n, 0),) for p in basis.pair], kind="algebraic", p=4,
                                     constant=1.0))
    r0 = float(np.mean([s.r0_pair(a, b) for a in range(2) for b in range(2)]))
    atoms = bulk("X", "fcc", a=r0 * np.sqrt(2.0), cubic=True).repeat(2)
    atoms.rattle(0.05 * r0, seed=3)
    atoms.set_chemical_symbols(list(rng.choice(list(s.elements), size=len(atoms))))
    B, P = ACEReference(basis).basis_values(atoms)
    Z = np.array([s.elements.index(x) for x in atoms.get_chemical_symbols()])
    bk = np.array([np.sqrt(np.mean(B[Z == f.z0, k] ** 2)) for k, f in enumerate(basis.functions)])
    pk = np.sqrt(np.mean(P**2, axis=0))
    bk, pk = np.where(bk > 1e-12, bk, 1.0), np.where(pk > 1e-12, pk, 1.0)
    theta = rng.standard_normal(len(basis)) * 0.5 / (gam * bk)
    theta_p = rng.standard_normal(len(basis.pair)) * 0.5 / (gp * pk)
    np.testing.assert_allclose(m.coefficients, np.concatenate([theta, theta_p]), rtol=1e-10)


def test_basis_evaluate_reproduces_the_model_energies():
    """Σ_k θ_k B_k(i) + Σ θ^pair P(i) from CoupledBasis.evaluate / evaluate_pair equals the IR
    interpreter's site energies of the folded model."""
    m = acegen.Model.random(spec("CuNi_pair_rcut"), seed=2)
    basis = m.basis
    atoms = random_structure(basis.elements, "bulk", seed=4)
    mb, pr = basis.split_params(m.coefficients)
    site = basis.evaluate(atoms) @ mb + basis.evaluate_pair(atoms) @ pr
    rcut = max(max(m.ir().rcut(a, b) for a in range(2) for b in range(2)), 0.0)
    out = evaluate(m.compile("numpy"), m.elements, atoms, rcut)
    np.testing.assert_allclose(site, out["energies"], rtol=1e-10, atol=1e-12)


def test_basis_evaluate_names_an_unknown_atom():
    basis = acegen.lower(spec("Cu_o2"))
    atoms = random_structure(("Cu",), "bulk", seed=0)
    atoms[3].symbol = "Zr"
    with pytest.raises(acegen.StructureError, match="atom 3 is Zr"):
        basis.evaluate(atoms)


def _kernels(model):
    yield model.compile("numpy")
    for target in ("c", "llvm"):
        try:
            yield model.compile(target)
        except CompileError:
            pass


def test_every_kernel_implements_the_kernel_interface():
    m = acegen.Model.random(spec("Cu_o2"), seed=0)
    targets = set()
    for k in _kernels(m):
        assert isinstance(k, Kernel)
        targets.add(k.target)
        assert k.name == m.name and tuple(k.elements) == m.elements and k.n_species == 1
        assert k.signature == m.ir().signature()
        assert np.asarray(k.rcut).shape == (1, 1)
        if k.library_path is None:
            assert k.cdef is None
        else:  # a shared library: loadable again from what the kernel reports
            again = CompiledKernel(k.library_path, k.name, k.cdef, n_species=k.n_species, rcut=k.rcut,
                                   signature=k.signature, elements=k.elements)
            atoms = random_structure(("Cu",), "bulk", seed=1)
            a = evaluate(k, m.elements, atoms, float(np.max(k.rcut)))
            b = evaluate(again, m.elements, atoms, float(np.max(k.rcut)))
            np.testing.assert_array_equal(a["energies"], b["energies"])
    assert "numpy" in targets
