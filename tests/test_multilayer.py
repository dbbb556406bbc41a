"""Multilayer ACE: the specification, the per-layer symbolic basis, the NumPy reference
(forces/stress by complex step, checked against finite differences; invariance; locality;
reduction to single-layer ACE) and the MultilayerModel kind."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from hypothesis import given, settings
from hypothesis import strategies as st

import acegen
from acegen.calculator import evaluate
from acegen.errors import AcegenError, ModelFileError, SpecError
from acegen.model import LinearModel, MultilayerModel
from acegen.multilayer import IndicatorLayerBasis, MultilayerBasis, MultilayerSpec
from acegen.ir.physics import embedding_slp
from acegen.jit.toolchain import find_c_compiler
from acegen.reference.multilayer_numpy import MultilayerReference, chebyshev, embed
from acegen.runtime.kernels import NumpyKernel
from acegen.symbolic.selection import select_multisets

RC = 4.0
S1 = acegen.BasisSpec(["Cu", "Ni"], 2, 5, rcut=RC, r0=2.5)
S2 = acegen.BasisSpec(["Cu", "Ni"], 2, 5, rcut=RC, r0=2.5, purification="none")
ML2 = MultilayerSpec(layers=[S1, S2], kmax=2, k0max=1)


@pytest.fixture(scope="module")
def model2():
    return acegen.Model.random(ML2, seed=3)


def _cluster(n=8, seed=0, spread=2.3):
    rng = np.random.default_rng(seed)
    pos = [np.zeros(3)]
    while len(pos) < n:  # a connected cluster without close contacts
        p = pos[rng.integers(len(pos))] + rng.normal(size=3) * spread / np.sqrt(3)
        if min(np.linalg.norm(p - q) for q in pos) > 1.9:
            pos.append(p)
    return Atoms(symbols=rng.choice(["Cu", "Ni"], size=n), positions=pos)


# ----------------------------------------------------------------------------- spec
def test_spec_round_trip_and_signature():
    s = MultilayerSpec(layers=[S1, S2, S2], kmax=3, wK=1.5)
    assert s.k0max == 3 and s.n_layers == 3 and s.elements == ("Cu", "Ni")
    assert MultilayerSpec.from_dict(json.loads(s.to_json())) == s
    assert MultilayerSpec.from_dict(s.to_dict()).signature() == s.signature()
    assert MultilayerSpec(layers=[S1, S2, S2], kmax=2, wK=1.5).signature() != s.signature()
    assert s.receptive_field == pytest.approx(3 * RC)
    hash(s)


@pytest.mark.parametrize("kwargs, field", [
    (dict(layers=[]), "layers"),
    (dict(layers=S1), "layers"),
    (dict(layers=[S1, "x"]), "layers[1]"),
    (dict(layers=[S1, acegen.BasisSpec(["Cu"], 2, 5, purification="none")]), "layers[1].elements"),
    (dict(layers=[S1, S1]), "layers[1].purification"),
    (dict(layers=[acegen.BasisSpec(["Cu", "Ni"], 2, 5, angular="cartesian"), S2]), "layers[0].angular"),
    (dict(layers=[acegen.BasisSpec(["Cu", "Ni"], 2, 5, Eref={"Cu": 1.0}), S2]), "layers[0].Eref"),
    (dict(layers=[S1], kmax=-1), "kmax"),
    (dict(layers=[S1], kmax=99), "kmax"),
    (dict(layers=[S1], kmax=True), "kmax"),
    (dict(layers=[S1], k0max=1.5), "k0max"),
    (dict(layers=[S1], wK=0), "wK"),
    (dict(layers=[S1], wK=float("nan")), "wK"),
    (dict(layers=[S1], indicator="relu"), "indicator"),
    (dict(layers=[S1], embedding="sqrt"), "embedding"),
    (dict(layers=[S1], embedding="linear", embedding_params=(1.0, 1.0, 1.0, 0.5)), "embedding_params"),
    (dict(layers=[S1], embedding="FinnisSinclair", embedding_params=(1.0,)), "embedding_params"),
    (dict(layers=[S1], embedding="FinnisSinclair", embedding_params=(1.0, -0.5)), "embedding_params"),
    (dict(layers=[S1], embedding="FinnisSinclair", embedding_params=(1.0, float("inf"))), "embedding_params"),
])
def test_spec_validation_names_the_field(kwargs, field):
    with pytest.raises(SpecError, match=f"MultilayerSpec.{field.replace('[', '.').replace(']', '.')}"):
        MultilayerSpec(**kwargs)


def test_spec_from_dict_errors():
    with pytest.raises(SpecError, match="MultilayerSpec.bogus"):
        MultilayerSpec.from_dict({**ML2.to_dict(), "bogus": 1})
    d = ML2.to_dict()
    d["layers"][1]["order"] = 0
    with pytest.raises(SpecError, match=r"layers\[1\].*order"):
        MultilayerSpec.from_dict(d)


# ----------------------------------------------------------------------------- selection / basis
def test_selection_with_k_extends_the_plain_selection():
    plain = select_multisets(S2)
    ext = select_multisets(S2, kmax=2, wK=1.5)
    assert all(len(f) == 4 for m in ext for f in m)
    # the k = 0 multisets are exactly the plain ones, in the same order
    assert [tuple(f[:3] for f in m) for m in ext if all(f[3] == 0 for f in m)] == plain
    assert any(f[3] == 2 for m in ext for f in m)
    w, wk = Fraction(3, 2), Fraction(3, 2)
    for m in ext:
        assert sum(f[1] + w * f[2] + wk * f[3] for f in m) <= S2.totaldegree[len(m) - 1]
        assert sum(f[2] for f in m) % 2 == 0
    # nothing admissible is missing: every (z, n, 0, k) with n + wK k <= D_1 is there
    ones = {m[0] for m in ext if len(m) == 1}
    assert ones == {(z, n, 0, k) for z in range(2) for k in range(3) for n in range(1, 6) if n + wk * k <= 5}
    with pytest.raises(SpecError, match="kmax"):
        select_multisets(S2, kmax=-1)


def test_lower_multilayer():
    b = acegen.lower(ML2)
    assert isinstance(b, MultilayerBasis) and b.n_layers == 2
    assert b.layers[0] is acegen.lower(S1) or b.layers[0].signature() == acegen.lower(S1).signature()
    lb = b.layers[1]
    assert isinstance(lb, IndicatorLayerBasis)
    assert len(b) == len(b.layers[0]) + len(lb) and len(b.orders) == len(b)
    plain = acegen.basis.lower(S2)
    wk = Fraction(1)
    for f in lb.functions:
        deg = sum(x[1] + Fraction(3, 2) * x[2] + wk * x[3] for x in f.factors) + wk * f.k0
        assert deg <= S2.totaldegree[f.order - 1] and 0 <= f.k0 <= 1
    # the k = k0 = 0 functions are the plain basis, coupling coefficients included
    k0 = [f for f in lb.functions if f.k0 == 0 and all(x[3] == 0 for x in f.factors)]
    assert len(k0) == len(plain)
    for f, g in zip(k0, plain.functions):
        assert (f.z0, tuple(x[:3] for x in f.factors), f.index) == (g.z0, g.factors, g.index)
        np.testing.assert_array_equal(f.mtuples, g.mtuples)
        np.testing.assert_array_equal(f.coeffs, g.coeffs)
    assert b.signature() != acegen.lower(MultilayerSpec(layers=[S1, S2], kmax=1, k0max=1)).signature()
    assert "T1(θi)" in lb.to_text()


@pytest.mark.parametrize("kind, params", [("FinnisSinclair", (1.0, 1.0, 0.7, 0.5)),
                                          ("FinnisSinclairShiftedScaled", (1.0, 1.0, 0.7, 0.5))])
def test_embedding_matches_pace_formulas_and_is_complex_step_safe(kind, params):
    slp = embedding_slp(kind, params, 2)
    rng = np.random.default_rng(0)
    rho = np.concatenate([rng.normal(scale=2.0, size=(6, 2)), [[1e-12, -3e-11], [0.0, 0.3]]])
    for r in rho:
        exp = float(slp.evaluate(rho_0=r[0], rho_1=r[1])[0])
        assert embed(kind, params, r[None, :])[0] == pytest.approx(exp, rel=1e-13, abs=1e-15)
        for p in range(2):  # the complex step gives dE/dρ_p (the SLP's second output)
            z = r.astype(complex)
            z[p] += 1e-30j
            d = embed(kind, params, z[None, :])[0].imag / 1e-30
            assert d == pytest.approx(float(slp.evaluate(rho_0=r[0], rho_1=r[1])[1 + p]), rel=1e-10, abs=1e-12)


def test_finnis_sinclair_output_layer(tmp_path):
    spec = MultilayerSpec(layers=[S1, S2], kmax=1, embedding="FinnisSinclairShiftedScaled",
                          embedding_params=(1.0, 1.0, 1.0, 0.5))
    assert spec.ndensity == 2 and MultilayerSpec.from_dict(spec.to_dict()) == spec
    m = acegen.Model.random(spec, seed=1)
    assert m.coefficients[0].ndim == 1 and m.coefficients[1].shape == (m.basis.layers[1].n_params, 2)
    ref = MultilayerReference.from_model(m)
    at = _cluster(6, seed=11)
    out = ref.compute(at)
    # the second density enters through sqrt-like F: zeroing it changes the energy
    c = [m.coefficients[0], m.coefficients[1].copy()]
    c[1][:, 1] = 0.0
    assert abs(MultilayerReference(m.basis, c).compute(at, forces=False)["energy"] - out["energy"]) > 1e-6
    h = 1e-5
    for a, k in [(0, 0), (3, 2)]:
        p_, m_ = at.copy(), at.copy()
        p_.positions[a, k] += h
        m_.positions[a, k] -= h
        fd = -(ref.compute(p_, forces=False)["energy"] - ref.compute(m_, forces=False)["energy"]) / (2 * h)
        assert abs(fd - out["forces"][a, k]) < 1e-7 * max(1.0, np.abs(out["forces"]).max())
    m.save(tmp_path / "fs.json")
    back = acegen.load(tmp_path / "fs.json")
    np.testing.assert_array_equal(back.coefficients[1], m.coefficients[1])
    with pytest.raises(SpecError, match="layer 2.*shape"):
        MultilayerModel(spec, [m.coefficients[0], m.coefficients[1][:, 0]])


def test_chebyshev():
    x = np.linspace(-1, 1, 7)
    T = chebyshev(x, 4)
    np.testing.assert_allclose(T, np.cos(np.arange(5)[None, :] * np.arccos(x)[:, None]), atol=1e-14)


# ----------------------------------------------------------------------------- reference
def test_forces_and_stress_match_finite_differences(model2):
    ref = MultilayerReference.from_model(model2)
    at = bulk("Cu", "fcc", a=3.6, cubic=True)
    at.symbols[[1, 2]] = "Ni"
    at.rattle(0.1, seed=2)
    out = ref.compute(at)
    assert out["indicators"].shape == (4, 1) and np.all(np.abs(out["indicators"]) < 1)
    h = 1e-5
    e = lambda a: ref.compute(a, forces=False, stress=False)["energy"]  # noqa: E731
    for a in range(len(at)):
        for c in range(3):
            p, m = at.copy(), at.copy()
            p.positions[a, c] += h
            m.positions[a, c] -= h
            fd = -(e(p) - e(m)) / (2 * h)
            assert abs(fd - out["forces"][a, c]) < 1e-7 * max(1.0, np.abs(out["forces"]).max())
    vol = at.get_volume()
    for v, (a, b) in enumerate([(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]):
        eps = np.zeros((3, 3))
        eps[a, b] = eps[b, a] = h / (1 if a == b else 2)
        ens = []
        for sgn in (1, -1):
            s = at.copy()
            s.set_cell(at.cell.array @ (np.eye(3) + sgn * eps), scale_atoms=True)
            ens.append(e(s))
        fd = (ens[0] - ens[1]) / (2 * h) / vol
        assert abs(fd - out["stress"][v]) < 1e-7 * max(1.0, np.abs(out["stress"]).max())
    assert abs(out["forces"].sum(axis=0)).max() < 1e-10


def test_complex_step_is_exact_to_round_off(model2):
    # a second, independent derivative: Richardson-extrapolated central differences agree to ~1e-10
    ref = MultilayerReference.from_model(model2)
    at = _cluster(6, seed=4)
    F = ref.compute(at)["forces"]
    e = lambda a: ref.compute(a, forces=False)["energy"]  # noqa: E731

    def cd(h):
        p, m = at.copy(), at.copy()
        p.positions[2, 1] += h
        m.positions[2, 1] -= h
        return -(e(p) - e(m)) / (2 * h)

    rich = (4 * cd(5e-4) - cd(1e-3)) / 3
    assert abs(rich - F[2, 1]) < 1e-8 * max(1.0, abs(F[2, 1]))


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), reflect=st.booleans())
def test_invariance_rotation_reflection_permutation(model2, seed, reflect):
    ref = MultilayerReference.from_model(model2)
    at = _cluster(7, seed=seed % 1000)
    E, ind = ref.energies(at)
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    if reflect != (np.linalg.det(Q) < 0):
        Q = -Q
    perm = rng.permutation(len(at))
    moved = Atoms(symbols=np.array(at.get_chemical_symbols())[perm], positions=(at.positions @ Q.T)[perm] + 1.7)
    E2, ind2 = ref.energies(moved)
    np.testing.assert_allclose(E2, E[perm], rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(ind2, ind[perm], rtol=1e-10, atol=1e-12)


def test_locality_receptive_field(model2):
    # atom 0 at the origin; atom 2 at 5 Å (rcut < d < 2 rcut), seen by atom 1 (2.5 Å from both);
    # atom 3 at 8.6 Å from atom 0 (> 2 rcut), seen by atom 2
    pos = [[0, 0, 0], [2.5, 0.3, 0], [5.0, 0, 0.2], [8.6, 0.4, 0], [0.2, 2.4, 0.1]]
    at = Atoms("CuNiCuNiCu", positions=pos)
    ref = MultilayerReference.from_model(model2)
    E = ref.energies(at)[0]

    def moved(a, dx):
        b = at.copy()
        b.positions[a] += dx
        return ref.energies(b)[0]

    d = np.array([0.05, -0.1, 0.07])
    assert abs(moved(2, d)[0] - E[0]) > 1e-8  # beyond rcut, within 2 rcut: felt through θ_1
    assert moved(3, d)[0] == E[0]  # beyond 2 rcut: not felt at all
    assert moved(3, d)[2] != E[2]
    one = acegen.Model.random(MultilayerSpec(layers=[S1]), seed=3)
    ref1 = MultilayerReference.from_model(one)
    E1 = ref1.energies(at)[0]
    b = at.copy()
    b.positions[2] += d
    assert ref1.energies(b)[0][0] == E1[0]  # one layer: beyond rcut is not felt


def _plain_coefficients(lb, plain, coeff):
    """Layer-2 coefficients of the k = k0 = 0 functions, mapped onto the plain basis."""
    idx = {(f.z0, f.factors, f.index): q for q, f in enumerate(plain.functions)}
    mb = np.zeros(len(plain))
    for q, f in enumerate(lb.functions):
        if f.k0 == 0 and all(x[3] == 0 for x in f.factors):
            mb[idx[(f.z0, tuple(x[:3] for x in f.factors), f.index)]] = coeff[q]
    return np.concatenate([mb, coeff[len(lb):]])


def test_reduction_to_single_layer(model2):
    lb = model2.basis.layers[1]
    c2 = model2.coefficients[1].copy()
    has_k = np.array([f.k0 > 0 or any(x[3] > 0 for x in f.factors) for f in lb.functions])
    assert has_k.any() and (~has_k).any()
    c2[: len(lb)][has_k] = 0.0
    ml = acegen.Model(ML2, [model2.coefficients[0], c2])
    assert isinstance(ml, MultilayerModel)
    lin = LinearModel(S2, _plain_coefficients(lb, acegen.basis.lower(S2), c2))
    at = _cluster(9, seed=7)
    out = MultilayerReference.from_model(ml).compute(at)
    exp = evaluate(NumpyKernel(lin.ir()), lin.elements, at, S2.rcut_max)
    np.testing.assert_allclose(out["energies"], exp["energies"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out["forces"], exp["forces"], rtol=1e-10, atol=1e-11)
    # and with the k > 0 terms kept, the model differs
    full = MultilayerReference.from_model(model2).energies(at)[0]
    assert np.abs(full - out["energies"]).max() > 1e-6


def test_one_layer_equals_linear_model():
    one = acegen.Model.random(MultilayerSpec(layers=[S1]), seed=5)
    lin = LinearModel(S1, one.coefficients[0])
    at = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    at.symbols[[0, 3, 6]] = "Ni"
    at.rattle(0.08, seed=1)
    out = MultilayerReference.from_model(one).compute(at)
    exp = evaluate(NumpyKernel(lin.ir()), lin.elements, at, S1.rcut_max)
    assert out["indicators"].shape == (len(at), 0)
    np.testing.assert_allclose(out["energies"], exp["energies"], rtol=1e-12, atol=1e-12)
    scale = np.abs(exp["forces"]).max()
    assert np.abs(out["forces"] - exp["forces"]).max() < 1e-12 * max(scale, 1.0) * 10
    assert np.abs(out["stress"] - exp["stress"]).max() < 1e-12 * max(np.abs(exp["stress"]).max(), 1.0) * 10
    if find_c_compiler(required=False) is not None:  # and the compiled C kernel
        cc = evaluate(lin.compile("c"), lin.elements, at, S1.rcut_max)
        np.testing.assert_allclose(out["energies"], cc["energies"], rtol=1e-12, atol=1e-12)
        assert np.abs(out["forces"] - cc["forces"]).max() < 1e-12 * max(scale, 1.0) * 10


def test_reference_rejects_bad_structures(model2):
    ref = MultilayerReference.from_model(model2)
    with pytest.raises(acegen.StructureError, match="atom 1 is Fe"):
        ref.compute(Atoms("CuFe", positions=[[0, 0, 0], [2, 0, 0]]))
    with pytest.raises(acegen.StructureError, match="coincide"):
        ref.compute(Atoms("CuNi", positions=[[0, 0, 0], [0, 0, 0]]))


# ----------------------------------------------------------------------------- model
def test_model_random_save_load(model2, tmp_path):
    assert isinstance(model2, MultilayerModel) and model2.kind == "multilayer"
    at = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    at.rattle(0.05, seed=0)
    E = MultilayerReference.from_model(model2).energies(at)[0]
    assert 1e-3 < np.sqrt(np.mean(E**2)) < 50.0  # O(eV)
    assert np.all(np.isfinite(E))
    assert acegen.Model.random(ML2, seed=3).coefficients[1].tolist() == model2.coefficients[1].tolist()
    path = tmp_path / "ml.json"
    model2.save(path)
    back = acegen.load(path)
    assert isinstance(back, MultilayerModel) and back.spec == ML2 and back.name == "ml"
    for a, b in zip(back.coefficients, model2.coefficients):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(MultilayerReference.from_model(back).energies(at)[0], E)


def test_model_file_errors(model2, tmp_path):
    d = model2.to_dict()
    d["coefficients"] = d["coefficients"][:1]
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(d))
    with pytest.raises(ModelFileError, match="coefficients"):
        acegen.load(p)
    d = model2.to_dict()
    d["coefficients"][1]["manybody"] = d["coefficients"][1]["manybody"][:-1]
    p.write_text(json.dumps(d))
    with pytest.raises(ModelFileError, match="layer 2"):
        acegen.load(p)
    d = model2.to_dict()
    d["spec"]["kmax"] = -3
    p.write_text(json.dumps(d))
    with pytest.raises(ModelFileError, match="kmax"):
        acegen.load(p)


def test_ir_per_layer_and_no_pace_form(model2, tmp_path):
    # compiled kernels: tests/test_multilayer_kernels.py
    irs = model2.ir()
    assert len(irs) == 2 and not irs[0].theta and irs[1].theta
    with pytest.raises(AcegenError, match="targets 'c', 'llvm' and 'cuda'"):
        model2.compile("numpy")
    with pytest.raises(AcegenError, match=r"\.yace"):
        model2.save(tmp_path / "x.yace")
