"""acegen.fit / fit_from_config end to end: the toy evaluator injected, and an energy-only fit
of TiAl_tiny on a real lowered basis checked against the NumPy reference evaluator."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import ase.io
import numpy as np
import pytest
from ase import Atoms

import acegen
import acegen.model
from acegen.fit import FitError, fit_from_config
from acegen.fit.priors import smoothness_prior

from .fit_toy import PairToy, label, random_structures

THETA = np.array([0.8, -1.5, 2.0, 0.4, -0.6])
E_SI = -158.5


class StubModel:
    """Stands in for acegen.Model when the basis is the toy one (no lowered ACE basis)."""

    def __init__(self, spec, coefficients, *, name="model"):
        self.spec, self.coefficients, self.name = spec, np.asarray(coefficients), name

    def save(self, path):
        Path(path).write_text(json.dumps({"Eref": dict(self.spec.Eref), "c": self.coefficients.tolist()}))


@pytest.fixture()
def toy(monkeypatch):
    monkeypatch.setattr(acegen.model, "Model", StubModel)
    model = PairToy(len(THETA))
    basis = SimpleNamespace(spec=acegen.BasisSpec(["Si"], 2, 6), functions=[],
                            pair=[SimpleNamespace(z0=0, zj=0, n=k + 1) for k in range(len(THETA))],
                            n_params=len(THETA))
    return model, basis


def _data(model, n=20, seed=0, noise=0.0):
    st = label(random_structures(n, seed=seed), model, THETA, e0={"Si": E_SI}, noise=noise,
               config_types=["bulk", "rattled"])
    iso = Atoms("Si", cell=[20.0] * 3, pbc=False)
    iso.info.update(energy=E_SI, config_type="isolated_atom")
    return [iso] + st


def test_acegen_fit_is_the_function_and_the_package():
    import acegen.fit.solvers as solvers

    assert acegen.fit.solvers is solvers
    assert callable(acegen.fit)
    with pytest.raises(FitError, match="spec must be an acegen.BasisSpec"):
        acegen.fit("not a spec", [])
    with pytest.raises(FitError, match="spec must be an acegen.BasisSpec"):  # twice: still callable
        acegen.fit(None, [])


def test_fit_recovers_toy_coefficients_with_isolated_atom_eref(toy):
    model, basis = toy
    spec = acegen.BasisSpec(["Si"], 2, 6)
    m = acegen.fit(spec, _data(model), virial_key="virial", basis=basis, basis_evaluator=model,
                   committee={"size": 8, "seed": 0}, progress=False)
    assert isinstance(m, StubModel)
    assert dict(m.spec.Eref) == {"Si": E_SI}  # from the isolated atom
    np.testing.assert_allclose(m.coefficients, THETA, rtol=1e-7)
    rep = m.fit_report
    assert rep.training_set.isolated == [0] and len(rep.training_set) == 20
    np.testing.assert_allclose(rep.gamma, smoothness_prior(basis, "algebraic"))  # default prior
    assert rep.errors["set"]["E"]["rmse"] < 1e-9 and rep.errors["set"]["F"]["rmse"] < 1e-9
    assert set(rep.errors["config_types"]) == {"bulk", "rattled"}
    assert rep.committee.members.shape == (8, len(THETA))
    assert rep.result.info["solver"] == "blr"


def test_fit_spec_eref_and_explicit_eref(toy):
    model, basis = toy
    data = _data(model)[1:]  # no isolated atom
    spec = acegen.BasisSpec(["Si"], 2, 6, Eref={"Si": E_SI})
    m = acegen.fit(spec, data, virial_key="virial", basis=basis, basis_evaluator=model, solver="qr",
                   prior=None, progress=False)
    assert m.spec is spec
    np.testing.assert_allclose(m.coefficients, THETA, rtol=1e-8)
    # a wrong explicit Eref overrides the spec's; the energy rows then cannot be fitted exactly
    m2 = acegen.fit(spec, data, virial_key="virial", basis=basis, basis_evaluator=model, solver="qr",
                    prior=None, eref={"Si": E_SI + 0.1}, progress=False)
    assert dict(m2.spec.Eref) == {"Si": E_SI + 0.1}
    assert m2.fit_report.errors["set"]["E"]["rmse"] > 1e-3


def test_fit_from_config_writes_outputs(toy, tmp_path):
    model, basis = toy
    data = _data(model, n=16, noise=1e-3)
    ase.io.write(tmp_path / "train.xyz", data[:12])
    ase.io.write(tmp_path / "test.xyz", data[12:])
    (tmp_path / "fit.yaml").write_text(
        "basis: {elements: [Si], order: 2, totaldegree: 6}\n"
        "data: {train: train.xyz, test: test.xyz, virial_key: virial}\n"
        "weights: {rattled: {E: 10}}\n"
        "solver: {name: blr, tol: 1.0e-8}\n"
        "committee: {size: 4}\n"
        "output: {directory: out, plots: true}\n"
        "progress: false\n")
    m = fit_from_config(tmp_path / "fit.yaml", basis=basis, basis_evaluator=model, verbose=False)
    out = tmp_path / "out"
    saved = json.loads((out / "model.json").read_text())
    assert saved["Eref"] == {"Si": E_SI}
    np.testing.assert_allclose(saved["c"], THETA, atol=5e-3)
    errs = json.loads((out / "errors.json").read_text())
    assert set(errs) == {"train", "test"}
    assert errs["train"]["config_types"]["bulk"]["n_structures"] + \
        errs["train"]["config_types"]["rattled"]["n_structures"] == 11
    assert errs["test"]["set"]["n_structures"] == 5
    assert errs["test"]["set"]["F"]["rmse"] < 5e-3
    assert (out / "errors.csv").read_text().startswith("dataset,config_type,quantity")
    # per-config-type weights reached the training set
    ws = {s.config_type: s.weights["E"] * math.sqrt(s.n_atoms) for s in m.fit_report.training_set.structures}
    assert ws == pytest.approx({"bulk": 30.0, "rattled": 10.0})
    pytest.importorskip("matplotlib")
    for png in ("parity_train.png", "parity_test.png", "dimers.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_energy_only_fit_of_tial_tiny_on_the_real_basis(shared_dir):
    """A real lowered basis, energies from ACEReference.basis_values; the fitted Model evaluated by
    the NumPy reference reproduces the fitted energies (coefficient order and Eref consistent)."""
    from acegen.reference.ace_numpy import ACEReference

    spec = acegen.BasisSpec(["Ti", "Al"], 2, 6, rcut=5.5, purification="none")
    path = shared_dir / "data" / "TiAl_tiny.xyz"
    eref = {"Ti": -1586.0195, "Al": -105.5954}
    m = acegen.fit(spec, path, force_key=None, virial_key=None, eref=eref, progress=False)
    assert isinstance(m, acegen.Model)
    assert dict(m.spec.Eref) == eref
    rep = m.fit_report
    assert rep.n_params == m.basis.n_params
    ref = ACEReference(m.basis, m.coefficients)
    frames = ase.io.read(path, ":")
    for s, pred in zip(rep.training_set.structures[:6], rep.predictions):
        e_model = ref.compute(frames[s.index])["energy"]
        assert e_model == pytest.approx(pred + s.e0, abs=1e-8)
    # energies per atom above Eref span about 1 eV/atom; the fit is far better than that
    assert rep.errors["set"]["E"]["rmse"] < 0.02


def test_fit_from_config_names_the_model_after_its_model_file(toy, tmp_path):
    """A config zuo_cu.yaml writing fit_cu/Cu.json gives a model named Cu (not zuo_cu), so
    fits of different configs do not collide as LAMMPS plugins or C symbols."""
    model, basis = toy
    ase.io.write(tmp_path / "train.xyz", _data(model, n=6))
    (tmp_path / "zuo_cu.yaml").write_text(
        "basis: {elements: [Si], order: 2, totaldegree: 6}\n"
        "data: {train: train.xyz}\n"
        "output: {directory: fit_cu, model: Cu.json}\n"
        "progress: false\n")
    m = fit_from_config(tmp_path / "zuo_cu.yaml", basis=basis, basis_evaluator=model, verbose=False)
    assert (tmp_path / "fit_cu" / "Cu.json").exists()
    assert m.name == "Cu"
