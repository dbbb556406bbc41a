"""What a fit leaves behind: the committee in the model file and its spread in the calculator,
provenance and the fit log, test errors from Python, and the data folder of fit configs."""

from __future__ import annotations

import json

import numpy as np
import pytest

import acegen
from acegen.model import FORMAT_MINOR_VERSION, FORMAT_VERSION

from .models import random_structure


def _committee_model(K=3, seed=0):
    spec = acegen.BasisSpec(["Cu", "Ni"], 2, 5, rcut=4.5)
    m = acegen.Model.random(spec, seed=seed, name="com")
    rng = np.random.default_rng(seed + 1)
    m.set_committee(m.coefficients[None, :] * (1.0 + 0.05 * rng.standard_normal((K, len(m.coefficients)))))
    return m


# ------------------------------------------------------------------------ committee
def test_committee_round_trips_through_json(tmp_path):
    m = _committee_model()
    p = tmp_path / "com.json"
    m.save(p)
    d = json.loads(p.read_text())
    assert d["version"] == FORMAT_VERSION and d["minor_version"] == FORMAT_MINOR_VERSION >= 1
    m2 = acegen.load(p)
    np.testing.assert_array_equal(m2.committee, m.committee)
    # a file without the new keys (minor version 0) still loads, without a committee
    for k in ("committee", "minor_version", "provenance"):
        d.pop(k, None)
    p.write_text(json.dumps(d))
    m3 = acegen.load(p)
    assert m3.committee is None and m3.provenance is None


@pytest.mark.parametrize("mutate", [
    lambda d: d["committee"].update(members=[[1.0, 2.0]]),
    lambda d: d["committee"].update(members=[]),
    lambda d: d["committee"]["members"][0].__setitem__(0, "x"),
    lambda d: d.update(committee=[1, 2]),
])
def test_bad_committee_in_file_is_named(tmp_path, mutate):
    m = _committee_model()
    d = m.to_dict()
    mutate(d)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(d))
    with pytest.raises(acegen.ModelFileError, match="committee.members"):
        acegen.load(p)


def test_calculator_committee_spread_matches_member_models():
    """energy_std / forces_std / stress_std from one basis-kernel call and a matrix product
    equal the spread of the member models evaluated one by one."""
    m = _committee_model(K=3)
    atoms = random_structure(m.elements, "bulk", seed=3)
    calc = acegen.Calculator(m, committee=True)
    atoms.calc = calc
    e = atoms.get_potential_energy()
    res = dict(calc.results)
    es, fs, ss = [], [], []
    for k, theta in enumerate(m.committee):
        a = atoms.copy()
        a.calc = acegen.Calculator(acegen.Model(m.spec, theta, name=f"member{k}"))
        es.append(a.get_potential_energy())
        fs.append(a.get_forces())
        ss.append(a.get_stress())
    es, fs, ss = np.array(es), np.array(fs), np.array(ss)
    np.testing.assert_allclose(res["energy_committee"], es, rtol=0, atol=1e-10)
    assert res["energy_std"] == pytest.approx(np.sqrt(np.mean((es - e) ** 2)), abs=1e-10)
    np.testing.assert_allclose(res["forces_std"], np.sqrt(np.mean((fs - res["forces"]) ** 2, axis=0)), atol=1e-10)
    np.testing.assert_allclose(res["stress_std"], np.sqrt(np.mean((ss - res["stress"]) ** 2, axis=0)), atol=1e-10)
    assert res["energy_std"] > 1e-6 and res["forces_std"].shape == (len(atoms), 3)


def test_calculator_committee_is_off_by_default_and_needs_a_committee():
    m = _committee_model()
    atoms = random_structure(m.elements, "bulk", seed=1)
    atoms.calc = acegen.Calculator(m)
    atoms.get_potential_energy()
    assert "energy_std" not in atoms.calc.results
    plain = acegen.Model(m.spec, m.coefficients, name="plain")
    with pytest.raises(acegen.AcegenError, match="has no committee"):
        acegen.Calculator(plain, committee=True)


# ------------------------------------------------------------------------ provenance, log, test errors
def _toy_fit_setup(monkeypatch):
    from .test_fit_driver import THETA, StubModel, _data

    import acegen.model
    from types import SimpleNamespace

    from .fit_toy import PairToy

    monkeypatch.setattr(acegen.model, "Model", StubModel)
    toy = PairToy(len(THETA))
    basis = SimpleNamespace(spec=acegen.BasisSpec(["Si"], 2, 6), functions=[],
                            pair=[SimpleNamespace(z0=0, zj=0, n=k + 1) for k in range(len(THETA))],
                            n_params=len(THETA))
    return toy, basis, _data(toy, n=16, noise=1e-3)


def test_python_fit_reports_test_errors_and_provenance(monkeypatch, tmp_path, capsys):
    import datetime
    import hashlib

    import ase.io

    toy, basis, data = _toy_fit_setup(monkeypatch)
    ase.io.write(tmp_path / "train.xyz", data[:12])
    ase.io.write(tmp_path / "test.xyz", data[12:])
    m = acegen.fit(acegen.BasisSpec(["Si"], 2, 6), tmp_path / "train.xyz", virial_key="virial",
                   test=[tmp_path / "test.xyz"], basis=basis, basis_evaluator=toy, committee={"size": 4, "seed": 1},
                   weights={"rattled": {"E": 10}}, progress=False, verbose=True)
    prov = m.provenance
    test = prov["errors"]["test"]
    assert test["set"]["n_structures"] == 5 and 0 < test["set"]["F"]["rmse"] < 5e-3
    assert m.fit_report.test_errors["set"]["F"]["rmse"] == test["set"]["F"]["rmse"]
    # data files and their hashes, counts, keys, weights
    d = prov["data"]
    assert d["train"] == [{"path": str(tmp_path / "train.xyz"),
                           "sha256": hashlib.sha256((tmp_path / "train.xyz").read_bytes()).hexdigest()}]
    assert d["test"][0]["sha256"] == hashlib.sha256((tmp_path / "test.xyz").read_bytes()).hexdigest()
    assert d["train_counts"] == {"n_structures": 11, "n_atoms": sum(len(a) for a in data[1:12]),
                                 "n_isolated_atoms": 1}
    assert d["energy_key"] == "energy" and d["virial_key"] == "virial" and d["weights"]["rattled"]["E"] == 10
    # settings and solver state (BLR alpha, beta)
    assert prov["settings"]["solver"] == "blr" and prov["settings"]["committee"] == {"size": 4, "seed": 1}
    hyper = m.fit_report.result.hyperparameters
    assert prov["solver_state"]["hyperparameters"]["alpha"] == hyper["alpha"] > 0
    assert prov["solver_state"]["hyperparameters"]["beta"] == hyper["beta"] > 0
    assert prov["acegen_version"] == acegen.__version__
    date = datetime.datetime.fromisoformat(prov["date"])
    assert date.utcoffset() == datetime.timedelta(0)
    json.dumps(prov, allow_nan=False)  # plain JSON
    np.testing.assert_array_equal(m.committee, m.fit_report.committee.members)
    out = capsys.readouterr().out
    assert "test errors" in out and "train errors" in out and d["train"][0]["sha256"] in out


def test_config_and_python_paths_give_the_same_test_errors_and_write_a_log(monkeypatch, tmp_path):
    import ase.io

    from acegen.fit import fit_from_config

    toy, basis, data = _toy_fit_setup(monkeypatch)
    ase.io.write(tmp_path / "train.xyz", data[:12])
    ase.io.write(tmp_path / "test.xyz", data[12:])
    (tmp_path / "fit.yaml").write_text(
        "basis: {elements: [Si], order: 2, totaldegree: 6}\n"
        "data: {train: train.xyz, test: test.xyz, virial_key: virial}\n"
        "output: {directory: out, model: Si.json}\n"
        "progress: false\n")
    m = fit_from_config(tmp_path / "fit.yaml", basis=basis, basis_evaluator=toy, verbose=False)
    p = acegen.fit(acegen.BasisSpec(["Si"], 2, 6), tmp_path / "train.xyz", virial_key="virial",
                   test=tmp_path / "test.xyz", basis=basis, basis_evaluator=toy, progress=False)
    assert m.provenance["errors"] == p.provenance["errors"]
    saved = json.loads((tmp_path / "out" / "errors.json").read_text())
    assert saved["test"] == p.provenance["errors"]["test"]
    log = (tmp_path / "out" / "Si.log").read_text()
    assert "test errors" in log and m.provenance["data"]["train"][0]["sha256"] in log
    assert f"alpha {m.fit_report.result.hyperparameters['alpha']:.6g}" in log
    assert m.provenance["config"] == str(tmp_path / "fit.yaml")


def test_fitted_model_saves_committee_and_provenance(shared_dir, tmp_path):
    """A real basis (energy-only TiAl_tiny): committee and provenance survive save / load and
    ``acegen info`` prints the provenance and the signature."""
    from acegen.cli import main

    spec = acegen.BasisSpec(["Ti", "Al"], 2, 5, rcut=5.0, purification="none")
    path = shared_dir / "data" / "TiAl_tiny.xyz"
    m = acegen.fit(spec, path, force_key=None, virial_key=None, eref={"Ti": -1586.0195, "Al": -105.5954},
                   committee={"size": 5, "seed": 3}, progress=False)
    assert m.committee.shape == (5, len(m.coefficients))
    m.save(tmp_path / "TiAl.json")
    m2 = acegen.load(tmp_path / "TiAl.json")
    np.testing.assert_array_equal(m2.committee, m.committee)
    assert m2.provenance == json.loads(json.dumps(m.provenance))
    assert m2.provenance["data"]["train"][0]["path"] == str(path)
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["info", str(tmp_path / "TiAl.json")]) == 0
    out = buf.getvalue()
    assert f"signature: {m2.ir().signature()}" in out
    assert "committee: 5 members" in out and m.provenance["data"]["train"][0]["sha256"] in out
    assert "train errors" in out and "solver state: alpha" in out


# ------------------------------------------------------------------------ the data folder
_CFG = ("basis: {elements: [Si], order: 2, totaldegree: 6}\n"
        "data: {train: sub/train.xyz, energy_key: energy}\n")


def _data_layout(tmp_path):
    (tmp_path / "data" / "sub").mkdir(parents=True)
    (tmp_path / "data" / "sub" / "train.xyz").write_text("x")
    (tmp_path / "configs").mkdir()
    cfg = tmp_path / "configs" / "fit.yaml"
    cfg.write_text(_CFG)
    return cfg


def test_data_paths_are_found_in_the_data_folder(tmp_path, monkeypatch):
    from acegen.fit.config import load_config

    cfg = _data_layout(tmp_path)
    monkeypatch.delenv("ACEGEN_DATA", raising=False)
    with pytest.raises(acegen.fit.ConfigError, match="data.train.*ACEGEN_DATA"):
        load_config(cfg)
    want = tmp_path / "data" / "sub" / "train.xyz"
    assert load_config(cfg, data_dir=tmp_path / "data").train == [want]
    monkeypatch.setenv("ACEGEN_DATA", str(tmp_path / "data"))
    assert load_config(cfg).train == [want]
    # the option wins over the variable
    monkeypatch.setenv("ACEGEN_DATA", str(tmp_path / "nowhere"))
    assert load_config(cfg, data_dir=tmp_path / "data").train == [want]
    with pytest.raises(acegen.fit.ConfigError, match="ACEGEN_DATA.*not a folder"):
        load_config(cfg)
    monkeypatch.delenv("ACEGEN_DATA")
    # data.directory in the config, relative to the config's folder
    cfg.write_text(_CFG.replace("data: {", "data: {directory: ../data, "))
    assert load_config(cfg).train == [want]
    # relative to the config's folder still works (also with a data folder that lacks the file)
    (tmp_path / "configs" / "sub").mkdir()
    (tmp_path / "configs" / "sub" / "train.xyz").write_text("y")
    cfg.write_text(_CFG)
    assert load_config(cfg).train == [tmp_path / "configs" / "sub" / "train.xyz"]
    (tmp_path / "other").mkdir()
    assert load_config(cfg, data_dir=tmp_path / "other").train == [tmp_path / "configs" / "sub" / "train.xyz"]


def test_cli_fit_takes_data_dir(tmp_path, monkeypatch, capsys):
    from acegen.cli import main

    cfg = _data_layout(tmp_path)  # the data file holds "x": found, then unreadable
    monkeypatch.delenv("ACEGEN_DATA", raising=False)
    assert main(["fit", str(cfg)]) != 0
    assert "no such file" in capsys.readouterr().err
    assert main(["fit", str(cfg), "--data-dir", str(tmp_path / "data")]) != 0
    err = capsys.readouterr().err
    assert "no such file" not in err and "sub/train.xyz" in err


@pytest.mark.parametrize("element", ["cu", "si"])
def test_benchmark_configs_find_the_shared_data(shared_dir, element, monkeypatch):
    from pathlib import Path

    from acegen.fit.config import load_config

    config = Path(__file__).resolve().parent.parent / "benchmarks" / "configs" / f"zuo_{element}.yaml"
    monkeypatch.setenv("ACEGEN_DATA", str(shared_dir / "data"))
    cfg = load_config(config)
    assert [p.name for p in cfg.train + cfg.test] == [f"{element.capitalize()}_train.xyz",
                                                      f"{element.capitalize()}_test.xyz"]
    assert all(p.is_file() and p.parent.parent == shared_dir / "data" for p in cfg.train + cfg.test)


def test_ard_solver_state_is_plain_json(monkeypatch):
    """ARD's per-parameter α (infinite where pruned) and NumPy values become JSON numbers / null."""
    from acegen.fit.provenance import jsonable

    assert jsonable({"a": np.array([1.0, np.inf]), "b": np.int64(3), "c": (np.float32(0.5), np.nan),
                     "d": np.bool_(True)}) == {"a": [1.0, None], "b": 3, "c": [0.5, None], "d": True}
    toy, basis, data = _toy_fit_setup(monkeypatch)
    m = acegen.fit(acegen.BasisSpec(["Si"], 2, 6), data, virial_key="virial", basis=basis, basis_evaluator=toy,
                   solver="ard", progress=False)
    alpha = m.provenance["solver_state"]["hyperparameters"]["alpha"]
    want = m.fit_report.result.hyperparameters["alpha"]
    assert alpha == [float(a) if np.isfinite(a) else None for a in want]
    assert m.provenance["data"]["train"] == [{"path": None, "n_frames": len(data)}]
    json.dumps(m.provenance, allow_nan=False)
