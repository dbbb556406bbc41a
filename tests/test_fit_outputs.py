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
