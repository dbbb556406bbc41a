"""Cartesian bases (``BasisSpec.angular`` 'cartesian' / 'cace') through the compiled pipeline:
the fold into the ModelIR (monomial angular SLP, channels of width (l+1)(l+2)/2), the IR
interpreter, the C, LLVM and (emulated) CUDA kernels and the basis (design-matrix) kernel
against the NumPy evaluation of acegen.basis_eval, forces and stress against finite
differences, a linear fit, and the LAMMPS plugin against the calculator."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from ase.build import bulk

import acegen
from acegen.basis_eval import BasisEvaluator
from acegen.errors import AcegenError, InternalError, SpecError
from acegen.ir.interp import evaluate_ir
from acegen.ir.model import Channel, ModelIR, angular_offset, angular_width, n_angular
from acegen.runtime.neighbours import build_neighbours, scatter_forces_virial, species_indices
from acegen.spec import BasisSpec
from acegen.symbolic import cartesian

from .conftest import SHARED

# two elements, order 3, lmax 3 (degree-3 monomials: 10 against 7 harmonics)
SPEC2 = dict(elements=("Cu", "Ni"), order=3, totaldegree=8, wL=1.0, rcut=4.8, purification="none")
# one element, order 4, lmax 2
SPEC1 = dict(elements=("Cu",), order=4, totaldegree=7, wL=1.5, rcut=4.8, purification="none")


def _spec(kind: str, base=SPEC2) -> BasisSpec:
    return BasisSpec(**base, angular=kind)


def _structure(elements, seed: int = 2):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.12, seed=seed)
    if len(elements) > 1:
        symbols = np.array(atoms.get_chemical_symbols(), dtype=object)
        symbols[np.random.default_rng(seed).permutation(len(atoms))[: len(atoms) // 2]] = elements[1]
        atoms.set_chemical_symbols(list(symbols))
    return atoms


def _reference(model, atoms):
    """Energy, forces and virial (= −σΩ) from the NumPy basis derivatives."""
    e, f, v = BasisEvaluator(model.basis).basis_derivatives(atoms)
    th = model.coefficients
    return float(e @ th), f @ th, v @ th


def _close(a, b, rtol=1e-12):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    scale = max(1.0, float(np.abs(b).max(initial=0.0)))
    assert a.shape == b.shape
    err = float(np.abs(a - b).max(initial=0.0))
    assert err <= rtol * scale, f"max |diff| {err:.3e} > {rtol:g} * {scale:.3g}"


@pytest.fixture(scope="module", params=["cartesian", "cace"])
def model(request):
    return acegen.Model.random(_spec(request.param), seed=3)


# ------------------------------------------------------------------------- the IR
@pytest.mark.parametrize("lmax", [0, 1, 3, 4])
def test_monomial_slp_values_and_gradients(lmax):
    slp = cartesian.monomial_slp(lmax)
    n = cartesian.n_cartesian(lmax)
    assert len(slp.inputs) == 3 and len(slp.outputs) == 4 * n
    rng = np.random.default_rng(lmax)
    p = rng.normal(size=(7, 3))
    outs = slp.evaluate(x=p[:, 0], y=p[:, 1], z=p[:, 2])
    als = [a for l in range(lmax + 1) for a in cartesian.alphas(l)]
    for k, a in enumerate(als):
        assert k == cartesian.block_offset(sum(a)) + cartesian.alpha_index(a)
        np.testing.assert_allclose(outs[k], np.prod(p ** np.array(a), axis=1), rtol=1e-14)
        for c in range(3):
            lower = np.array(a) - np.eye(3, dtype=int)[c]
            want = a[c] * np.prod(p ** np.maximum(lower, 0), axis=1) if a[c] else np.zeros(len(p))
            np.testing.assert_allclose(outs[(c + 1) * n + k], want, rtol=1e-14, atol=1e-300)


def test_angular_layout_helpers():
    for l in range(6):
        assert angular_width("spherical", l) == 2 * l + 1 and angular_offset("spherical", l) == l * l
        assert angular_width("cartesian", l) == cartesian.n_alpha(l)
        assert angular_offset("cartesian", l) == cartesian.block_offset(l)
        assert n_angular("cartesian", l) == cartesian.n_cartesian(l) and n_angular("spherical", l) == (l + 1) ** 2


def test_fold_gives_cartesian_channels_and_the_monomial_slp(model):
    ir = model.ir()
    assert ir.angular_kind == "cartesian" and ir.lmax == model.basis.lmax == 3
    assert ir.angular.signature() == cartesian.monomial_slp(ir.lmax).signature()
    assert "angular=cartesian" in ir.to_text()
    spherical = acegen.Model.random(_spec("spherical"), seed=3).ir()
    assert ir.signature() != spherical.signature()
    for sp in ir.species:
        assert {ch.angular for ch in sp.channels} == {"cartesian"}
        assert sp.n_A == sum((ch.l + 1) * (ch.l + 2) // 2 for ch in sp.channels)
        assert any(ch.l >= 2 for ch in sp.channels)  # wider than the spherical channel


def test_channel_kind_must_match_the_model():
    ir = acegen.Model.random(_spec("cartesian", SPEC1), seed=0).ir()
    sp = ir.species[0]
    bad = tuple(Channel(ch.zj, ch.radial, ch.l, ch.offset) for ch in sp.channels)  # spherical channels
    with pytest.raises(InternalError, match="cartesian"):
        ModelIR(elements=ir.elements, lmax=ir.lmax, angular=ir.angular, radial=ir.radial,
                species=(type(sp)(zi=0, channels=bad, monomials=(), coeffs=np.zeros((0, 1))),),
                angular_kind="cartesian")


def test_interpreter_matches_numpy_reference(model):
    atoms = _structure(model.elements)
    ir = model.ir()
    Z = species_indices(atoms, ir.elements)
    nl = build_neighbours(atoms, ir.rcut_max)
    e, g = evaluate_ir(ir, Z, nl.offsets, Z[nl.j], nl.rij)
    F, W = scatter_forces_virial(nl, g)
    E_ref, F_ref, V_ref = _reference(model, atoms)
    _close(e.sum(), E_ref)
    _close(F, F_ref)
    _close(-W, V_ref)


# -------------------------------------------------------------------- compiled kernels
@pytest.mark.parametrize("target", ["c", "llvm"])
def test_kernels_match_numpy_reference(model, target):
    atoms = _structure(model.elements)
    atoms.calc = acegen.Calculator(model, target=target)
    E_ref, F_ref, V_ref = _reference(model, atoms)
    _close(atoms.get_potential_energy(), E_ref)
    _close(atoms.get_forces(), F_ref)
    _close(-atoms.get_stress(voigt=False) * atoms.get_volume(), V_ref)


def test_order4_kernel_matches_numpy_reference():
    m = acegen.Model.random(_spec("cartesian", SPEC1), seed=5)
    assert m.basis.orders.max() == 4
    atoms = _structure(m.elements, seed=4)
    atoms.calc = acegen.Calculator(m)
    E_ref, F_ref, V_ref = _reference(m, atoms)
    _close(atoms.get_potential_energy(), E_ref)
    _close(atoms.get_forces(), F_ref)
    _close(-atoms.get_stress(voigt=False) * atoms.get_volume(), V_ref)


def test_forces_and_stress_match_finite_differences(model):
    atoms = _structure(model.elements, seed=6)
    calc = acegen.Calculator(model)
    atoms.calc = calc
    F, S = atoms.get_forces(), atoms.get_stress(voigt=False)
    h = 1e-5

    def energy(a):
        a = a.copy()
        a.calc = calc
        return a.get_potential_energy()

    for a, x in itertools.product((0, 5), range(3)):
        p, m = atoms.copy(), atoms.copy()
        p.positions[a, x] += h
        m.positions[a, x] -= h
        assert abs(-(energy(p) - energy(m)) / (2 * h) - F[a, x]) < 1e-6 * max(1.0, np.abs(F).max())
    cell0 = atoms.get_cell().array
    for x, y in ((0, 0), (1, 2), (2, 1)):
        vals = []
        for sgn in (1, -1):
            eps = np.eye(3)
            eps[x, y] += sgn * h
            b = atoms.copy()
            b.set_cell(cell0 @ eps, scale_atoms=True)
            vals.append(energy(b))
        fd = (vals[0] - vals[1]) / (2 * h) / atoms.get_volume()
        assert abs(fd - S[x, y]) < 1e-6 * max(1.0, np.abs(S).max())


def test_cuda_emulation_matches_c(model):
    from acegen.backends.c import compile_c
    from acegen.backends.cuda import compile_cuda, emit_cuda

    from .c_backend_models import random_environment

    ir = model.ir()
    src = "".join(t for k, t in emit_cuda(ir).items() if isinstance(t, str))
    assert "Cartesian: (l+1)(l+2)/2 monomials" in src
    emu, ref = compile_cuda(ir, emulate=True), compile_c(ir)
    env = random_environment(1, n_centres=16, max_nb=30, radius=5.5, n_species=len(ir.elements))
    e1, d1 = emu.compute(*env)
    e2, d2 = ref.compute(*env)
    _close(e1, e2)
    _close(d1, d2)


def test_spherical_plan_has_no_cartesian_line():
    from acegen.backends.plan import build_plan

    sph = build_plan(acegen.Model.random(_spec("spherical"), seed=3).ir())
    cart = build_plan(acegen.Model.random(_spec("cartesian"), seed=3).ir())
    assert not sph.cartesian and "angular kind" not in sph.to_text()
    assert cart.cartesian and "angular kind cartesian" in cart.to_text()
    assert cart.n_y == cartesian.n_cartesian(3) and sph.n_y == (3 + 1) ** 2
    assert cart.ang_off == tuple(cartesian.block_offset(l) for l in range(5))
    assert cart.ang_width == tuple(cartesian.n_alpha(l) for l in range(4))
    assert sph.ang_off == tuple(l * l for l in range(5)) and sph.ang_width == tuple(2 * l + 1 for l in range(4))
    # the C kernel prints the Cartesian widths: degree-3 accumulation over 10 monomials
    from acegen.backends.c import emit_c

    src = "".join(t for t in emit_c(cart.ir).values() if isinstance(t, str))
    assert "Cartesian monomials of one block" in src and "accumulate_A_l3" in src
    assert "for (int mm = 0; mm < 10; ++mm)" in src


def test_projection_kernel_gives_the_basis_values(model):
    """The projection variant (extrapolation grade): per atom ρ, then every basis function."""
    atoms = _structure(model.elements, seed=10)
    kernel = model.projection_kernel("c")
    ir = model.projection_ir()
    Z = species_indices(atoms, ir.elements)
    nl = build_neighbours(atoms, ir.rcut_max)
    rows, _ = kernel.compute(Z, nl.offsets, Z[nl.j], nl.rij)
    rows = np.asarray(rows).reshape(len(atoms), -1)
    B, P = BasisEvaluator(model.basis).basis_values(atoms)
    for i, z in enumerate(Z):
        cols = model.basis.projection_params(int(z))
        want = np.concatenate([B[i], P[i]])[cols]
        _close(rows[i, 1 : 1 + len(cols)], want)


# ---------------------------------------------------------------------------- fitting
@pytest.mark.parametrize("kind", ["cartesian", "cace"])
def test_basis_kernel_rows_match_numpy(kind):
    from acegen.fit.assembly_kernel import KernelBasisEvaluator, compile_basis

    basis = acegen.lower(_spec(kind))
    atoms = _structure(basis.elements, seed=8)
    e, f, v = BasisEvaluator(basis).basis_derivatives(atoms)
    out = KernelBasisEvaluator(compile_basis(basis), basis.elements)(atoms)
    _close(out["energy"], e)
    _close(out["forces"], f)
    _close(out["virial"], v)


def test_fit_cartesian_equals_spherical_on_the_same_span():
    """Unregularised least squares on the same span: the fitted models agree (and the fit
    uses the compiled Cartesian basis kernel)."""
    data = SHARED / "data" / "Si_tiny.xyz"
    if not data.is_file():
        pytest.skip("needs ../shared/data/Si_tiny.xyz")
    base = dict(elements=("Si",), order=3, totaldegree=6, wL=1.0, rcut=5.0, purification="none")
    models = {}
    for kind in ("spherical", "cartesian"):
        models[kind] = acegen.fit(BasisSpec(**base, angular=kind), str(data), energy_key="dft_energy",
                                  force_key="dft_force", solver="qr", prior=None, progress=False, eref="zero")
    import ase.io

    frames = ase.io.read(data, ":")[:8]
    for atoms in frames:
        got = []
        for kind in ("spherical", "cartesian"):
            a = atoms.copy()
            a.calc = acegen.Calculator(models[kind])
            got.append((a.get_potential_energy(), a.get_forces()))
        assert abs(got[0][0] - got[1][0]) < 1e-6 * max(1.0, abs(got[0][0]))
        _close(got[1][1], got[0][1], rtol=1e-6)


# --------------------------------------------------------------------- purification, export
def test_canonical_purification_is_refused_with_the_reason():
    with pytest.raises(SpecError, match=r"BasisSpec\.angular.*not 'canonical'.*set partition"):
        BasisSpec(("Si",), 3, 8, angular="cartesian", purification="canonical")


@pytest.mark.parametrize("kind", ["cartesian", "cace"])
def test_pair_purified_functions_vanish_on_one_neighbour(kind):
    from ase import Atoms

    basis = acegen.lower(_spec(kind, SPEC1 | {"purification": "pair"}))
    raw = acegen.lower(_spec(kind, SPEC1))
    assert len(basis) == len(raw) and basis.nmax > raw.nmax
    assert any(len(f.corrections) for f in basis.functions)
    rng = np.random.default_rng(1)
    for _ in range(3):
        d = rng.normal(size=3)
        dimer = Atoms("Cu2", positions=[[0, 0, 0], d / np.linalg.norm(d) * rng.uniform(2.0, 4.5)])
        B, Braw = basis.evaluate(dimer), raw.evaluate(dimer)
        hi = basis.orders >= 2
        assert np.abs(B[:, hi]).max() < 1e-10 * np.abs(Braw[:, hi]).max()
        np.testing.assert_array_equal(B[:, ~hi], Braw[:, ~hi])


def test_pair_purified_cartesian_spans_pair_purified_spherical():
    from .test_cartesian import _clusters, _rank, _values

    base = dict(SPEC1, totaldegree=6, purification="pair")
    sph, cart = acegen.lower(_spec("spherical", base)), acegen.lower(_spec("cartesian", base))
    clusters = _clusters(("Cu",), 2 * len(sph) + 10, seed=3)
    Bs, Bc = _values(sph, clusters), _values(cart, clusters)
    assert _rank(Bc) == _rank(Bs) == _rank(Bc, Bs) == len(sph)


def test_pair_purified_kernel_matches_numpy_reference():
    m = acegen.Model.random(_spec("cartesian", SPEC1 | {"purification": "pair"}), seed=7)
    atoms = _structure(m.elements, seed=9)
    atoms.calc = acegen.Calculator(m)
    E_ref, F_ref, V_ref = _reference(m, atoms)
    _close(atoms.get_potential_energy(), E_ref)
    _close(atoms.get_forces(), F_ref)
    _close(-atoms.get_stress(voigt=False) * atoms.get_volume(), V_ref)


def test_pace_export_is_refused(tmp_path):
    m = acegen.Model.random(_spec("cartesian", SPEC1), seed=0)
    with pytest.raises(AcegenError, match="Cartesian monomials"):
        m.save(tmp_path / "m.yace")


# --------------------------------------------------------------------------- LAMMPS
def test_lammps_plugin_matches_calculator(tmp_path_factory, tmp_path):
    from .test_lammps import assert_matches, build_model_plugin, calculator_reference, fcc_cu, run_lammps

    m = acegen.Model.random(BasisSpec(elements=["Cu"], order=3, totaldegree=8, wL=1.0, rcut=5.0,
                                      purification="none", angular="cartesian"), seed=2, name="cart_cu")
    assert m.basis.lmax >= 2
    plugin = build_model_plugin(m, tmp_path_factory)
    atoms = fcc_cu(2, rattle=0.1, seed=4)
    res = run_lammps(tmp_path, plugin, atoms, newton="on")
    assert_matches(res, calculator_reference(acegen.Calculator(m), atoms))
