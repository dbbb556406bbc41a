"""Model save / load (acegen JSON), the public names, and clear errors for bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest

import acegen
from acegen.calculator import evaluate

from .models import model, random_structure


def test_public_names():
    for name in ["BasisSpec", "lower", "Model", "load", "Calculator", "fit", "AcegenError"]:
        assert hasattr(acegen, name), name
    assert issubclass(acegen.ModelFileError, acegen.AcegenError)
    assert issubclass(acegen.StructureError, acegen.AcegenError)


def test_json_round_trip(tmp_path):
    m = model("CuNiAl_o3")
    p = tmp_path / "m.json"
    m.save(p)
    m2 = acegen.load(p)
    assert m2.spec == m.spec
    np.testing.assert_array_equal(m2.coefficients, m.coefficients)
    assert m2.ir().signature() == m.ir().signature()
    atoms = random_structure(m.elements, "bulk", seed=2)
    a = evaluate(m.compile("numpy"), m.elements, atoms, m.ir().rcut_max)
    b = evaluate(m2.compile("numpy"), m2.elements, atoms, m2.ir().rcut_max)
    assert a["energy"] == b["energy"]


@pytest.mark.parametrize(
    "mutate,field",
    [
        (lambda d: d.pop("format"), "format"),
        (lambda d: d.update(version=99), "version"),
        (lambda d: d["coefficients"]["manybody"].pop(), "coefficients"),
        (lambda d: d["coefficients"].update(pair="x"), "coefficients.pair"),
        (lambda d: d["spec"].update(elements=["Cu", "Cu"]), "spec"),
        (lambda d: d["spec"].update(order=-1), "spec"),
        (lambda d: d["spec"].update(rcut=-2.0), "spec"),
        (lambda d: d.update(name=3), "name"),
    ],
)
def test_bad_json_named(tmp_path, mutate, field):
    m = model("Cu_o2")
    d = m.to_dict()
    mutate(d)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(d))
    with pytest.raises(acegen.ModelFileError) as e:
        acegen.load(p)
    assert "bad.json" in str(e.value) and field in str(e.value)


def test_truncated_json(tmp_path):
    m = model("Cu_o2")
    text = json.dumps(m.to_dict())
    p = tmp_path / "trunc.json"
    p.write_text(text[: len(text) // 2])
    with pytest.raises(acegen.ModelFileError, match="trunc.json"):
        acegen.load(p)


def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(acegen.ModelFileError, match="no such file"):
        acegen.load(tmp_path / "nope.json")
    p = tmp_path / "model.txt"
    p.write_text("x")
    with pytest.raises(acegen.ModelFileError, match="unknown model format"):
        acegen.load(p)


def test_wrong_coefficient_count():
    spec = acegen.BasisSpec(["Cu"], 2, 6, rcut=5.0)
    with pytest.raises(acegen.SpecError, match="coefficients"):
        acegen.Model(spec, np.zeros(3))
