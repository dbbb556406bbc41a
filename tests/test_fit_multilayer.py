"""Fitting multilayer ACE models (acegen.fit.multilayer): per-layer basis values, the exact
energy gradient and complex-step force Jacobian against the NumPy oracle and finite differences,
the joint fit through acegen.fit and the YAML config, and the fitted model against its compiled
kernels."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

import acegen
from acegen.errors import ConfigError, FitError
from acegen.fit.data import load_training_set
from acegen.fit.multilayer import MultilayerResidualModel, layer_prior
from acegen.model import MultilayerModel
from acegen.multilayer import MultilayerSpec, lower_multilayer
from acegen.reference.multilayer_numpy import MultilayerReference

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "tb_data.py"
_spec = importlib.util.spec_from_file_location("tb_data", _PATH)
tb = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("tb_data", tb)
_spec.loader.exec_module(tb)

RC = 4.0
S1 = acegen.BasisSpec(["Cu", "Ni"], 2, 4, rcut=RC, r0=2.5)
S2 = acegen.BasisSpec(["Cu", "Ni"], 2, 4, rcut=RC, r0=2.5, purification="none")
S3 = acegen.BasisSpec(["Cu", "Ni"], 3, 5, rcut=RC, r0=2.5)
ML2 = MultilayerSpec(layers=[S1, S2], kmax=1, k0max=1)
ML3 = MultilayerSpec(layers=[S3, S2, S2], kmax=2, k0max=1)


def _cluster(n, seed):
    rng = np.random.default_rng(seed)
    pos = [np.zeros(3)]
    while len(pos) < n:
        p = pos[rng.integers(len(pos))] + rng.normal(size=3) * 1.4
        if min(np.linalg.norm(p - q) for q in pos) > 1.9:
            pos.append(p)
    return Atoms(symbols=rng.choice(["Cu", "Ni"], size=n), positions=np.array(pos))


@pytest.fixture(scope="module")
def tb_clusters():
    clusters, _ = tb.generate(24, seed=3, sizes=(2, 7))
    return clusters


@pytest.mark.parametrize("spec, seed", [(ML2, 1), (ML3, 2)])
def test_values_and_forces_match_reference(spec, seed):
    model = MultilayerModel.random(spec, seed=seed, scale=0.7)
    rm = MultilayerResidualModel([], model.basis)
    at = _cluster(6, seed)
    ref = MultilayerReference.from_model(model).compute(at, stress=False)
    out = rm.compute(at, np.concatenate(model.coefficients))
    assert out["energy"] == pytest.approx(ref["energy"], abs=1e-12)
    np.testing.assert_allclose(out["energies"], ref["energies"], atol=1e-12)
    np.testing.assert_allclose(out["indicators"], ref["indicators"], atol=1e-12)
    assert np.abs(ref["indicators"]).max() > 0.05  # the indicators are not trivial
    np.testing.assert_allclose(out["forces"], ref["forces"], atol=1e-11)


def test_jacobian_against_full_finite_differences():
    """Every column (all layers) of the energy and force rows against central differences."""
    model = MultilayerModel.random(ML3, seed=4, scale=0.7)
    ts = load_training_set([_labelled(_cluster(5, 7), model), _labelled(_cluster(4, 8), model)],
                           elements=ML3.elements, eref="zero")
    rm = MultilayerResidualModel([ts.structures], model.basis)
    theta = np.concatenate(model.coefficients)
    theta = theta + np.random.default_rng(0).normal(size=theta.size) * 0.05 * (theta != 0)
    J = rm.evaluate(theta, 0, jacobian=True).J
    eps = 1e-6
    Jfd = np.empty_like(J)
    for k in range(theta.size):
        tp, tm = theta.copy(), theta.copy()
        tp[k] += eps
        tm[k] -= eps
        Jfd[:, k] = (rm.evaluate(tp, 0).r - rm.evaluate(tm, 0).r) / (2 * eps)
    scale = np.abs(Jfd).max()
    assert scale > 0
    np.testing.assert_allclose(J, Jfd, atol=1e-7 * scale)
    inner = slice(0, rm.sizes[0] + rm.sizes[1])
    assert np.abs(J[1:, inner]).max() > 1e-3 * scale  # force rows depend on the inner layers


def _labelled(atoms, model):
    from ase.calculators.singlepoint import SinglePointCalculator

    ref = MultilayerReference.from_model(model).compute(atoms, stress=False)
    a = atoms.copy()
    a.calc = SinglePointCalculator(a, energy=ref["energy"], forces=ref["forces"])
    return a


def test_layer_prior_grows_with_k():
    rm = MultilayerResidualModel([], lower_multilayer(ML2))
    lt = rm.layers[1]
    g = layer_prior(lt)
    k0 = np.array([f.k0 for f in lt.basis.functions] + [0] * len(lt.basis.pair))
    plain = lt.plain_mask()
    assert plain.sum() < len(plain)
    assert g[~plain].min() > 1.0 and g[k0 > 0].min() >= 2.0  # (wK k0)^4 added to the plain weight
    assert np.array_equal(layer_prior(lt, "none"), np.ones(lt.n_params))
    with pytest.raises(FitError, match="prior"):
        layer_prior(lt, "gaussian")


@pytest.mark.parametrize("solver", ["lm", "lbfgs"])
def test_fit_two_layers(tb_clusters, solver, tmp_path):
    train, test = tb_clusters[:18], tb_clusters[18:]
    model = acegen.fit(ML2, train, test=test, solver=solver, solver_options={"max_iter": 8}, eref="zero")
    assert isinstance(model, MultilayerModel)
    rep = model.fit_report
    info = rep.result.info
    assert info["loss"] <= info["loss_initial"]
    # the start is the single-layer fit: k > 0 / k0 > 0 coefficients zero there, so its errors
    # are those of the plain functions; the joint fit improves the training loss
    assert rep.errors["set"]["F"]["rmse"] <= rep.linear_errors["set"]["F"]["rmse"] * 1.0001
    assert "test" in model.provenance["errors"]
    # predictions of the fit = the compiled model (llvm: no C compiler needed) to round-off
    path = tmp_path / "ml.json"
    model.save(path)
    loaded = acegen.load(path)
    at = test[0].copy()
    at.calc = acegen.Calculator(loaded, target="llvm")
    out = rep.basis_evaluator.compute(test[0], rep.result.coefficients)
    assert at.get_potential_energy() == pytest.approx(out["energy"], abs=1e-10)
    np.testing.assert_allclose(at.get_forces(), out["forces"], atol=1e-10)
    k = test[0].get_chemical_symbols()
    np.testing.assert_allclose(at.calc.results["indicators"], out["indicators"], atol=1e-12)
    assert len(k) == len(at)


def test_start_is_the_single_layer_fit(tb_clusters):
    """With max_iter 1 the LM start is kept or improved; the start's non-plain coefficients are 0
    and its predictions equal a one-layer fit of the last layer's plain functions."""
    train = tb_clusters[:12]
    one = acegen.fit(MultilayerSpec(layers=[S2]), train, eref="zero")
    two = acegen.fit(ML2, train, eref="zero", solver_options={"max_iter": 1, "lam": 0.0})
    # the one-layer fit of S2 and the two-layer start agree on the training errors
    e1 = one.fit_report.errors["set"]
    e0 = two.fit_report.linear_errors["set"]
    assert e0["E"]["rmse"] == pytest.approx(e1["E"]["rmse"], rel=1e-8)
    assert e0["F"]["rmse"] == pytest.approx(e1["F"]["rmse"], rel=1e-8)


def test_fit_refusals(tb_clusters):
    fs = MultilayerSpec(layers=[S1, S2], kmax=1, embedding="FinnisSinclairShiftedScaled",
                        embedding_params=(1, 1, 1, 0.5))
    with pytest.raises(FitError, match="linear embedding"):
        acegen.fit(fs, tb_clusters[:3], eref="zero")
    with pytest.raises(FitError, match="lm"):
        acegen.fit(ML2, tb_clusters[:3], solver="qr", eref="zero")
    with pytest.raises(FitError, match="committee"):
        acegen.fit(ML2, tb_clusters[:3], committee={"size": 2}, eref="zero")
    with pytest.raises(FitError, match="theta_scale"):
        acegen.fit(ML2, tb_clusters[:3], solver_options={"theta_scale": -1}, eref="zero")
    with pytest.raises(FitError, match="unknown solver option"):
        acegen.fit(ML2, tb_clusters[:3], solver_options={"bogus": 1}, eref="zero")


def test_fit_from_yaml_config(tb_clusters, tmp_path):
    from ase.io import write

    from acegen.fit import fit_from_config

    write(tmp_path / "train.xyz", tb_clusters[:8], format="extxyz")
    layer = {"elements": ["Cu", "Ni"], "order": 2, "totaldegree": 4, "rcut": RC, "r0": 2.5}
    cfg = f"""
multilayer:
  layers: [{layer}, {dict(layer, purification="none")}]
  kmax: 1
  k0max: 1
data:
  train: train.xyz
  eref: zero
solver: {{name: lm, max_iter: 3}}
output:
  model: ml.json
"""
    (tmp_path / "fit.yaml").write_text(cfg)
    model = fit_from_config(tmp_path / "fit.yaml", verbose=False)
    assert isinstance(model, MultilayerModel)
    loaded = acegen.load(tmp_path / "ml.json")
    assert isinstance(loaded, MultilayerModel) and loaded.spec.kmax == 1
    (tmp_path / "bad.yaml").write_text(cfg + "basis: {elements: [Cu], order: 2, totaldegree: 4}\n")
    with pytest.raises(ConfigError, match="multilayer"):
        fit_from_config(tmp_path / "bad.yaml", verbose=False)


def test_replica_chunks_give_the_same_result(monkeypatch):
    import acegen.fit.multilayer as fm

    model = MultilayerModel.random(ML2, seed=5, scale=0.7)
    rm = MultilayerResidualModel([], model.basis)
    at = _cluster(6, 11)
    theta = np.concatenate(model.coefficients)
    whole = rm.compute(at, theta)
    monkeypatch.setattr(fm, "CHUNK_BYTES", 1)  # one replica per chunk
    chunked = rm.compute(at, theta)
    np.testing.assert_array_equal(whole["forces"], chunked["forces"])
    np.testing.assert_allclose(whole["dF"], chunked["dF"], rtol=1e-13, atol=1e-15)
    assert whole["energy"] == chunked["energy"]


def test_force_atoms_rows_are_the_full_rows_of_those_atoms(tb_clusters):
    """force_atoms: the residuals and Jacobian rows of the drawn atoms are exactly the full
    model's rows of those atoms (the same complex-step replicas, fewer of them); the fit's
    error tables still cover every atom."""
    train = tb_clusters[:10]
    ts = load_training_set(train, eref="zero", elements=("Cu", "Ni"), lazy=False)
    blocks = list(ts.iter_blocks(64, 0))
    basis = lower_multilayer(ML2)
    theta = np.concatenate(MultilayerModel.random(ML2, seed=4, scale=0.7).coefficients)
    full = MultilayerResidualModel(blocks, basis)
    sub = MultilayerResidualModel(blocks, basis, force_atoms=3, seed=7)
    assert sub.with_all_forces().force_atoms is None
    rf = full.evaluate(theta, 0, jacobian=True)
    rs = sub.evaluate(theta, 0, jacobian=True)
    n_big = sum(s.n_atoms > 3 for s in blocks[0])
    assert n_big > 0 and sub.n_rows(0) < full.n_rows(0)
    key = lambda m: list(zip(m.structure.tolist(), m.kind.tolist(), m.component.tolist()))  # noqa: E731
    index = {k: q for q, k in enumerate(key(rf.meta))}
    rows = np.array([index[k] for k in key(rs.meta)])
    np.testing.assert_array_equal(rs.pred, rf.pred[rows])
    np.testing.assert_array_equal(rs.y, rf.y[rows])
    # kept force rows weigh √(n/k) more (they stand for all n atoms); energy rows as before
    scale = np.where(rs.meta.kind == "F", np.sqrt(rs.meta.natoms / np.minimum(rs.meta.natoms, 3)), 1.0)
    np.testing.assert_allclose(rs.w, rf.w[rows] * scale, rtol=1e-15)
    np.testing.assert_allclose(rs.r, rf.r[rows] * scale, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(rs.J, rf.J[rows] * scale[:, None], rtol=1e-12, atol=1e-14)
    # another seed draws other atoms
    other = MultilayerResidualModel(blocks, basis, force_atoms=3, seed=8).evaluate(theta, 0)
    assert not np.array_equal(key(other.meta), key(rs.meta))
    model = acegen.fit(ML2, train, eref="zero", solver_options={"max_iter": 2, "force_atoms": 3})
    n_f = sum(3 * len(a) for a in train)
    assert model.fit_report.errors["set"]["F"]["n"] == n_f
    with pytest.raises(FitError, match="force_atoms"):
        acegen.fit(ML2, train[:2], eref="zero", solver_options={"force_atoms": 0})
