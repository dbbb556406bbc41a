"""Non-linear fits: the residual-model protocol and its solvers, the Finnis–Sinclair model
(FSModel), per-atom basis data from the basis kernel, the exact Jacobian against finite
differences, and a Finnis–Sinclair fit of a subset of Zuo et al.'s Cu data."""

from __future__ import annotations

import json
from types import SimpleNamespace

import ase
import ase.io
import numpy as np
import pytest
from ase.build import bulk

import acegen
from acegen.errors import ModelFileError, SpecError
from acegen.fit import FitError, fit_from_config
from acegen.fit.data import RowMeta, StructureData, voigt
from acegen.fit.embedding import Embedding
from acegen.fit.nonlinear import ResidualModel, Residuals, fit_nonlinear

SPEC = acegen.BasisSpec(["Cu"], 2, 8, rcut=4.5)


# ---------------------------------------------------------------------------- protocol and solvers
class ExpCurve:
    """y = a exp(b x) + c on two batches: a ResidualModel that is not an ACE model."""

    n_params = 3

    def __init__(self, theta, noise=0.0, seed=0):
        rng = np.random.default_rng(seed)
        self.x = [np.linspace(0, 1, 30), np.linspace(1, 2, 25)]
        self.y = [self.f(theta, x) + noise * rng.standard_normal(x.size) for x in self.x]

    @staticmethod
    def f(t, x):
        return t[0] * np.exp(t[1] * x) + t[2]

    @property
    def n_batches(self):
        return 2

    def n_rows(self, batch):
        return self.x[batch].size

    def evaluate(self, theta, batch, *, jacobian=False):
        x, y = self.x[batch], self.y[batch]
        p = self.f(theta, x)
        J = None
        if jacobian:
            e = np.exp(theta[1] * x)
            J = np.column_stack([e, theta[0] * x * e, np.ones_like(x)])
        i = np.zeros(x.size, dtype=np.int64)
        meta = RowMeta(i, np.full(x.size, "E"), i, i + 1, np.full(x.size, "x", dtype=object))
        return Residuals(p - y, p, y, np.ones_like(x), meta, J)


@pytest.mark.parametrize("solver", ["lm", "lbfgs"])
def test_fit_nonlinear_recovers_a_nonlinear_curve(solver):
    truth = np.array([0.7, -1.3, 0.25])
    model = ExpCurve(truth)
    assert isinstance(model, ResidualModel)
    res = fit_nonlinear(model, np.array([1.0, -0.5, 0.0]), solver=solver, max_iter=500, tol=1e-14)
    assert res.loss < 1e-12 * res.loss_initial
    np.testing.assert_allclose(res.theta, truth, rtol=1e-5, atol=1e-6)
    assert res.history[0] == pytest.approx(res.loss_initial)


def test_fit_nonlinear_tikhonov_block_is_the_ridge():
    """With λ > 0 the minimiser satisfies the normal equations Jᵀr + λΓ²θ = 0."""
    model = ExpCurve(np.array([0.7, -1.3, 0.25]), noise=0.01)
    gamma = np.array([1.0, 2.0, 3.0])
    res = fit_nonlinear(model, np.array([1.0, -0.5, 0.0]), solver="lm", gamma=gamma, lam=0.05, max_iter=500,
                        tol=1e-15)
    g = 0.05 * gamma**2 * res.theta
    for b in range(2):
        r = model.evaluate(res.theta, b, jacobian=True)
        g = g + r.J.T @ r.r
    assert np.abs(g).max() < 1e-7
    assert res.loss == pytest.approx(sum(float(model.evaluate(res.theta, b).r @ model.evaluate(res.theta, b).r)
                                         for b in range(2)) + 0.05 * float(np.sum((gamma * res.theta) ** 2)))


@pytest.mark.parametrize("solver", ["lm", "lbfgs"])
def test_fit_nonlinear_progress_bar_on_request(solver, capsys):
    model = ExpCurve(np.array([0.7, -1.3, 0.25]))
    fit_nonlinear(model, np.array([1.0, -0.5, 0.0]), solver=solver, max_iter=20, progress=True)
    err = capsys.readouterr().err
    assert f"non-linear fit ({solver})" in err and "loss/initial" in err
    fit_nonlinear(model, np.array([1.0, -0.5, 0.0]), solver=solver, max_iter=20, progress=False)
    assert capsys.readouterr().err == ""


def test_fit_nonlinear_refuses_bad_arguments_and_too_large_jacobians():
    model = ExpCurve(np.array([0.7, -1.3, 0.25]))
    with pytest.raises(FitError, match="solver"):
        fit_nonlinear(model, np.zeros(3), solver="newton")
    with pytest.raises(FitError, match="theta0"):
        fit_nonlinear(model, np.zeros(4))
    with pytest.raises(FitError, match="non-finite"):
        fit_nonlinear(model, np.array([np.nan, 0.0, 0.0]))
    with pytest.raises(FitError, match="max_iter"):
        fit_nonlinear(model, np.zeros(3), max_iter=0)
    with pytest.raises(FitError, match="lbfgs"):
        fit_nonlinear(model, np.zeros(3), solver="lm", max_jacobian_gib=1e-9)


# ---------------------------------------------------------------------------- embedding
@pytest.mark.parametrize("kind,params", [("FinnisSinclairShiftedScaled", (1.0, 1.0, 0.7, 0.5, -0.4, 1.5)),
                                         ("FinnisSinclair", (1.0, 0.5, 2.0, 1.5, 0.3, 0.8))])
def test_embedding_derivatives_match_finite_differences(kind, params):
    emb = Embedding(kind, params)
    rho = np.random.default_rng(3).uniform(-3, 3, (20, 3))
    E, d1, d2 = emb(rho)
    h = 1e-6
    for p in range(3):
        up, dn = rho.copy(), rho.copy()
        up[:, p] += h
        dn[:, p] -= h
        (Eu, d1u, _), (Ed, d1d, _) = emb(up), emb(dn)
        np.testing.assert_allclose((Eu - Ed) / (2 * h), d1[:, p], rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose((d1u[:, p] - d1d[:, p]) / (2 * h), d2[:, p], rtol=1e-5, atol=1e-7)
    # the embedding SLP the kernels print (interpreted) gives the same E and dE
    from acegen.ir.interp import embedding as slp_embedding
    from acegen.ir.model import Embedding as IREmbedding

    prog = SimpleNamespace(embedding=IREmbedding(kind, 3, params))
    for i in range(len(rho)):
        E_ir, dE_ir = slp_embedding(prog, rho[i])
        assert E[i] == pytest.approx(E_ir, rel=1e-12, abs=1e-12)
        np.testing.assert_allclose(d1[i], dE_ir, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------- FSModel
def _coefficients(spec, seed=1):
    lin = acegen.Model.random(spec, seed=seed)
    return np.stack([lin.coefficients, 0.3 * np.roll(lin.coefficients, 3)], axis=1)


def _rattled(seed=2):
    at = bulk("Cu", cubic=True) * (2, 1, 1)
    at.rattle(0.1, seed=seed)
    at.set_cell(at.cell + np.array([[0.0, 0.3, 0.0], [0.0, 0.0, 0.0], [0.1, 0.0, 0.0]]), scale_atoms=False)
    return at


def test_fs_model_compiles_saves_and_loads(tmp_path):
    from acegen.basis_eval import BasisEvaluator

    C = _coefficients(SPEC)
    m = acegen.FSModel(SPEC, C, embedding_params=(1.0, 1.0, 0.7, 0.5), name="cu_fs")
    at = _rattled()
    at.calc = acegen.Calculator(m)
    B, Pv = BasisEvaluator(m.basis).basis_values(at)
    E_ref = Embedding("FinnisSinclairShiftedScaled", (1.0, 1.0, 0.7, 0.5))(np.hstack([B, Pv]) @ C)[0].sum()
    assert at.get_potential_energy() == pytest.approx(E_ref, rel=1e-12, abs=1e-12)
    m.save(tmp_path / "m.json")
    m2 = acegen.load(tmp_path / "m.json")
    assert isinstance(m2, acegen.FSModel) and m2.embedding == m.embedding
    np.testing.assert_array_equal(m2.coefficients, C)
    at2 = at.copy()
    at2.calc = acegen.Calculator(m2)
    assert at2.get_potential_energy() == at.get_potential_energy()
    # a linear model's fold is unchanged by the (n_params, P) path
    lin = acegen.Model(SPEC, C[:, 0])
    assert lin.ir().signature() == m.basis.fold(C[:, 0], name="model").signature()


@pytest.mark.parametrize("kind,params", [("FinnisSinclairShiftedScaled", (1.0, 1.0, 0.7, 0.5)),
                                         ("FinnisSinclair", (1.0, 0.8, 0.5, 1.5))])
def test_fs_model_exports_to_yace(tmp_path, kind, params):
    """.yace keeps the embedding and one c̃ per density: PACE's evaluation of the file (NumPy
    reference, analytic radial functions; acegen's compiled PACE kernel, splines) equals the
    compiled FSModel."""
    from acegen.io.pace import read_yace
    from acegen.reference.pace_numpy import PaceReference

    from .models import random_structure

    spec = acegen.BasisSpec(["Cu"], 3, 8, rcut=5.0, Eref={"Cu": -1.5})
    m = acegen.FSModel(spec, _coefficients(spec), embedding=kind, embedding_params=params, name="cu_fs")
    m.save(tmp_path / "m.yace")
    pot = read_yace(tmp_path / "m.yace")
    emb = pot.embeddings[0]
    assert (emb.ndensity, emb.npoti, tuple(emb.fs_parameters)) == (2, kind, params)
    assert all(np.asarray(f.ctildes).shape[1] == 2 for f in pot.functions[0])
    ref = PaceReference(pot, radial="analytic")
    loaded = acegen.load(tmp_path / "m.yace")
    for seed, what in enumerate(("bulk", "cluster")):
        at = random_structure(("Cu",), what, seed=seed)
        at.calc = acegen.Calculator(m)
        E, F = at.get_potential_energy(), at.get_forces()
        got = ref.compute(at)
        assert abs(E - (-1.5 * len(at))) > 0.05 and np.abs(F).max() > 0.05  # a non-trivial model
        assert got["energy"] == pytest.approx(E, abs=1e-9)
        np.testing.assert_allclose(got["forces"], F, atol=2e-9)
        at.calc = acegen.Calculator(loaded)
        assert at.get_potential_energy() == pytest.approx(E, abs=1e-8)
        np.testing.assert_allclose(at.get_forces(), F, atol=5e-8)


def test_cli_info_describes_an_fs_model(tmp_path):
    from acegen.cli import describe

    m = acegen.FSModel(SPEC, _coefficients(SPEC), embedding_params=(1.0, 1.0, 0.7, 0.5), name="cu_fs")
    text = describe(m)
    assert "embedding: FinnisSinclairShiftedScaled, 2 densities, parameters [1.0, 1.0, 0.7, 0.5]" in text
    assert "pair" in text and "elements: Cu" in text


def test_fs_model_rejects_bad_input(tmp_path):
    C = _coefficients(SPEC)
    with pytest.raises(SpecError, match="shape"):
        acegen.FSModel(SPEC, C[:, :1], embedding_params=(1.0, 1.0, 0.7, 0.5))
    with pytest.raises(SpecError, match="embedding"):
        acegen.FSModel(SPEC, C, embedding="tanh")
    with pytest.raises(SpecError, match="m_p > 0"):
        acegen.FSModel(SPEC, C, embedding_params=(1.0, 1.0, 1.0, -0.5))
    bad = np.array(C)
    bad[0, 1] = np.nan
    with pytest.raises(SpecError, match="non-finite"):
        acegen.FSModel(SPEC, bad)
    d = acegen.FSModel(SPEC, C).to_dict()
    d["embedding"] = {"kind": "FinnisSinclair", "params": [1.0]}
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(ModelFileError, match="embedding"):
        acegen.load(tmp_path / "bad.json")
    d = acegen.FSModel(SPEC, C).to_dict()
    d["coefficients"]["pair"] = [[1.0]] * 3
    (tmp_path / "bad2.json").write_text(json.dumps(d))
    with pytest.raises(ModelFileError, match="coefficients.pair"):
        acegen.load(tmp_path / "bad2.json")


# ---------------------------------------------------------------------------- per-atom data, Jacobian
@pytest.fixture(scope="module")
def kernel():
    from acegen.fit.assembly_kernel import compile_basis

    return compile_basis(acegen.lower(SPEC))


def test_atom_basis_adds_up_to_the_basis_kernel_and_matches_numpy(kernel):
    from acegen.basis_eval import BasisEvaluator
    from acegen.fit.fs import atom_basis
    from acegen.runtime.neighbours import build_neighbours, species_indices

    at = _rattled()
    ab = atom_basis(kernel, ("Cu",), at, virial=True)
    Z = species_indices(at, ("Cu",))
    nl = build_neighbours(at, float(np.max(kernel.rcut)))
    e, f, v = kernel.compute(Z, nl.offsets, Z[nl.j], nl.j, nl.rij, len(at))
    np.testing.assert_allclose(ab.B.sum(axis=0), e, rtol=1e-12, atol=1e-12)
    forces = (ab.scatter @ ab.G.reshape(len(ab.atom), -1)).reshape(f.shape)
    np.testing.assert_allclose(forces, f, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ab.V.sum(axis=0), v, rtol=1e-10, atol=1e-9)
    B, Pv = BasisEvaluator(acegen.lower(SPEC)).basis_values(at)
    np.testing.assert_allclose(ab.B, np.hstack([B, Pv]), rtol=1e-10, atol=1e-10)
    # a slot's derivative is that of its centre's basis values only: move one atom
    h, a = 1e-5, 3
    up, dn = at.copy(), at.copy()
    up.positions[a, 1] += h
    dn.positions[a, 1] -= h
    dB = (atom_basis(kernel, ("Cu",), up).B - atom_basis(kernel, ("Cu",), dn).B) / (2 * h)
    G = np.zeros((len(at), len(at), 3, ab.B.shape[1]))
    np.add.at(G, (ab.centre, ab.atom), ab.G)
    np.testing.assert_allclose(-G[:, a, 1, :], dB, rtol=1e-6, atol=1e-6)


def test_atom_basis_names_the_centre_of_a_failing_kernel_call(kernel):
    from acegen.errors import StructureError
    from acegen.fit.fs import atom_basis

    class Failing:
        rcut, n_params = kernel.rcut, kernel.n_params

        def compute(self, species, offsets, nb_species, nb_index, rij, n_atoms, **kw):
            d = np.linalg.norm(rij, axis=1)
            if d.min() < 2.0 and d.max() > 3.0:  # centre 2's call
                raise StructureError("pair 0: atoms overlap")
            return kernel.compute(species, offsets, nb_species, nb_index, rij, n_atoms, **kw)

    at = ase.Atoms("Cu3", positions=[[0, 0, 0], [0, 0, 2.5], [0, 1.8, 2.5]], cell=[20, 20, 20], pbc=False)
    with pytest.raises(StructureError, match=r"centre atom 2 \(neighbours \[[01], [01]\].*pair 0: atoms overlap"):
        atom_basis(Failing(), ("Cu",), at)


@pytest.mark.parametrize("kind,params", [("FinnisSinclairShiftedScaled", (1.0, 1.0, 0.7, 0.5)),
                                         ("FinnisSinclair", (1.0, 0.8, 0.5, 1.5))])
def test_fs_jacobian_matches_finite_differences(kernel, kind, params):
    from acegen.fit.fs import FSResidualModel

    at = _rattled()
    s = StructureData(0, at, "x", 1.0, np.zeros((len(at), 3)), np.zeros((3, 3)), 0.0, {"E": 2.0, "F": 1.0, "V": 0.5})
    rm = FSResidualModel([[s]], kernel, ("Cu",), Embedding(kind, params))
    C = _coefficients(SPEC)
    theta = rm.theta_of(C)
    res = rm.evaluate(theta, 0, jacobian=True)
    assert res.J.shape == (1 + 3 * len(at) + 6, 2 * rm.n_basis)
    assert np.abs(res.J[:, rm.n_basis:]).max() > 0  # the second density has a Jacobian
    h = 1e-6
    for j in np.random.default_rng(0).choice(theta.size, 12, replace=False):
        up, dn = theta.copy(), theta.copy()
        up[j] += h
        dn[j] -= h
        fd = (rm.evaluate(up, 0).r - rm.evaluate(dn, 0).r) / (2 * h)
        scale = np.abs(res.J[:, j]).max()
        np.testing.assert_allclose(fd, res.J[:, j], rtol=0, atol=2e-6 * scale)
    # predictions are those of the compiled FSModel (E, forces, virial)
    m = acegen.FSModel(SPEC, C, embedding=kind, embedding_params=params)
    at.calc = acegen.Calculator(m)
    n = len(at)
    assert res.pred[0] == pytest.approx(at.get_potential_energy(), rel=1e-12)
    np.testing.assert_allclose(res.pred[1:1 + 3 * n], at.get_forces().ravel(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(res.pred[-6:], voigt(-at.get_stress(voigt=False) * at.get_volume()), rtol=1e-9,
                               atol=1e-9)


# ---------------------------------------------------------------------------- fits on Zuo et al.'s Cu
def _cu(shared_dir, tmp_path, n=8):
    frames = ase.io.read(shared_dir / "data" / "ZuoEtAl2020" / "Cu_train.xyz", index=":")
    small = [a for a in frames if len(a) <= 30][:n]
    assert len(small) == n
    ase.io.write(tmp_path / "cu.xyz", small)
    test = ase.io.read(shared_dir / "data" / "ZuoEtAl2020" / "Cu_test.xyz", index=":")
    test = [a for a in test if len(a) <= 30][:3]
    assert len(test) >= 2
    ase.io.write(tmp_path / "cu_test.xyz", test)
    return tmp_path / "cu.xyz", tmp_path / "cu_test.xyz"


def test_fs_fit_of_zuo_cu_from_config(shared_dir, tmp_path):
    """ndensity = 2, Levenberg–Marquardt: the loss decreases from the linear fit's, the
    training errors reach at least the linear fit's, and the saved model reproduces the fit's
    predictions through its compiled kernel."""
    train, test = _cu(shared_dir, tmp_path)
    (tmp_path / "fit.yaml").write_text(
        "basis: {elements: [Cu], order: 2, totaldegree: 8, rcut: 4.5}\n"
        f"data: {{train: {train.name}, test: {test.name}, energy_key: energy, force_key: force, eref: average}}\n"
        "embedding: FinnisSinclairShiftedScaled\n"
        "ndensity: 2\n"
        "solver: {name: lm, max_iter: 300}\n"
        "output: {directory: out, yace: model.yace}\n"
        "progress: false\n")
    m = fit_from_config(tmp_path / "fit.yaml", verbose=False)
    assert isinstance(m, acegen.FSModel) and m.embedding.params == (1.0, 1.0, 1.0, 0.5)
    rep = m.fit_report
    info = m.provenance["solver_state"]["info"]
    assert info["solver"] == "lm" and info["iterations"] >= 1 and info["converged"], info["message"]
    assert info["loss"] < 0.99 * info["loss_initial"]
    assert m.provenance["settings"]["embedding"] == {"kind": "FinnisSinclairShiftedScaled",
                                                     "params": [1.0, 1.0, 1.0, 0.5]}
    lin, nl = rep.linear_errors["set"], rep.errors["set"]
    assert nl["F"]["rmse"] <= lin["F"]["rmse"]
    assert nl["E"]["rmse"] <= lin["E"]["rmse"]
    assert np.abs(m.coefficients[:, 1]).max() > 0
    # the saved model is a normal model: its compiled energies are the fit's predictions
    saved = acegen.load(tmp_path / "out" / "model.json")
    assert isinstance(saved, acegen.FSModel)
    np.testing.assert_array_equal(saved.coefficients, m.coefficients)
    assert saved.provenance["errors"]["train (linear start)"]["set"]["F"]["rmse"] == lin["F"]["rmse"]
    structs = rep.training_set.structures
    calc = acegen.Calculator(saved)
    e_rows = np.flatnonzero(rep.meta.kind == "E")
    for k in (0, 3, 7):
        at = structs[k].atoms.copy()
        at.calc = calc
        row = e_rows[rep.meta.structure[e_rows] == k][0]
        assert at.get_potential_energy() == pytest.approx(rep.predictions[row] + structs[k].e0, rel=1e-11)
    assert rep.test_errors["set"]["n_structures"] == len(ase.io.read(test, index=":"))
    assert rep.test_errors["set"]["F"]["rmse"] < 0.5
    yace = acegen.load(tmp_path / "out" / "model.yace")  # PACE's form of the same model
    at = structs[3].atoms.copy()
    at.calc = acegen.Calculator(yace)
    assert at.get_potential_energy() == pytest.approx(rep.predictions[e_rows[3]] + structs[3].e0, abs=1e-7)
    log = (tmp_path / "out" / "model.log").read_text()
    assert "embedding: FinnisSinclairShiftedScaled" in log and "train (linear start) errors" in log
    assert "loss_initial" in log and "linear_start" in log and "nonlinear" in log


def test_fs_fit_lbfgs_and_argument_errors(shared_dir, tmp_path):
    train, _ = _cu(shared_dir, tmp_path, n=4)
    kw = dict(energy_key="energy", force_key="force", eref="average", progress=False)
    m = acegen.fit(SPEC, train, embedding="FinnisSinclairShiftedScaled", embedding_params=(1.0, 1.0, 0.5, 0.75),
                   solver="lbfgs", solver_options={"max_iter": 15}, **kw)
    info = m.provenance["solver_state"]["info"]
    assert info["solver"] == "lbfgs" and info["loss"] < info["loss_initial"]
    assert m.fit_report.errors["set"]["F"]["rmse"] <= m.fit_report.linear_errors["set"]["F"]["rmse"]
    with pytest.raises(FitError, match="needs solver 'lm' or 'lbfgs'"):
        acegen.fit(SPEC, train, embedding="FinnisSinclair", ndensity=2, **kw)
    with pytest.raises(FitError, match="fits non-linear models"):
        acegen.fit(SPEC, train, solver="lm", **kw)
    with pytest.raises(FitError, match="ndensity"):
        acegen.fit(SPEC, train, embedding="FinnisSinclair", ndensity=3, embedding_params=(1, 1, 1, 0.5),
                   solver="lm", **kw)
    with pytest.raises(FitError, match="unknown solver option"):
        acegen.fit(SPEC, train, embedding="FinnisSinclair", solver="lm", solver_options={"damping": 1}, **kw)
    with pytest.raises(FitError, match="committee"):
        acegen.fit(SPEC, train, embedding="FinnisSinclair", solver="lm", committee={"size": 2}, **kw)
    with pytest.raises(FitError, match="max_jacobian_gib"):
        acegen.fit(SPEC, train, embedding="FinnisSinclair", solver="lm", solver_options={"max_jacobian_gib": 1e-6},
                   **kw)


@pytest.mark.parametrize("text,field", [
    ("embedding: tanh\nsolver: lm\n", "embedding"),
    ("embedding: FinnisSinclair\nsolver: blr\n", "solver"),
    ("solver: lm\n", "solver"),
    ("ndensity: 2\n", "ndensity"),
    ("embedding: FinnisSinclair\nsolver: lm\nndensity: 3\nembedding_params: [1, 1, 1, 0.5]\n", "embedding_params"),
])
def test_config_embedding_errors_name_the_field(tmp_path, text, field):
    from acegen.fit import ConfigError
    from acegen.fit.config import load_config

    (tmp_path / "t.xyz").write_text("")
    (tmp_path / "c.yaml").write_text("basis: {elements: [Cu], order: 2, totaldegree: 6}\ndata: {train: t.xyz}\n" + text)
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "c.yaml")
    assert field in str(e.value)
