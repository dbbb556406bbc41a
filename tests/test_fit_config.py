"""YAML fit configuration: parsing, defaults, and errors that name the field."""

from __future__ import annotations

import textwrap

import pytest

from acegen.fit import ConfigError
from acegen.fit.config import load_config

BASE = """
basis: {elements: [Si], order: 2, totaldegree: 6}
data:
  train: train.xyz
"""


def _write(tmp_path, text, files=("train.xyz",)):
    for f in files:
        (tmp_path / f).write_text("")
    p = tmp_path / "fit.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def test_defaults_and_relative_paths(tmp_path):
    cfg = load_config(_write(tmp_path, BASE))
    assert cfg.basis == {"elements": ["Si"], "order": 2, "totaldegree": 6}
    assert cfg.train == [tmp_path / "train.xyz"] and cfg.test == []
    assert (cfg.energy_key, cfg.force_key, cfg.virial_key) == ("energy", "forces", None)
    assert cfg.solver == "blr" and cfg.solver_options == {} and cfg.prior == "algebraic"
    assert cfg.model_path == tmp_path / "model.json"
    assert cfg.error_paths == [tmp_path / "errors.json", tmp_path / "errors.csv"]
    assert cfg.committee is None and cfg.plots is False


def test_full_config(tmp_path):
    text = """
    basis: {elements: [Si], order: 2, totaldegree: 6}
    data:
      train: train.xyz
      test: [test.xyz]
      energy_key: dft_energy
      force_key: dft_force
      virial_key: dft_virial
      eref: {Si: -158.5}
    weights:
      default: {E: 10}
      liq: {F: 0.5}
    solver: {name: qr, lam: 0.001}
    prior: {kind: gaussian, sigma_l: 1.0}
    committee: {size: 4, seed: 3}
    output: {directory: out, yace: m.yace, errors: e.csv, plots: true}
    """
    cfg = load_config(_write(tmp_path, text, files=("train.xyz", "test.xyz")))
    assert cfg.test == [tmp_path / "test.xyz"]
    assert (cfg.energy_key, cfg.force_key, cfg.virial_key) == ("dft_energy", "dft_force", "dft_virial")
    assert cfg.eref == {"Si": -158.5}
    assert cfg.weights == {"default": {"E": 10}, "liq": {"F": 0.5}}
    assert cfg.solver == "qr" and cfg.solver_options == {"lam": 0.001}
    assert cfg.prior == {"kind": "gaussian", "sigma_l": 1.0}
    assert cfg.committee == {"size": 4, "seed": 3}
    assert cfg.output_dir == tmp_path / "out"
    assert cfg.yace_path == tmp_path / "out" / "m.yace" and cfg.error_paths == [tmp_path / "out" / "e.csv"]
    assert cfg.plots is True


@pytest.mark.parametrize("text, field, message", [
    ("data: {train: train.xyz}\n", "basis", "missing"),
    ("basis: {elements: [Si]}\n", "data", "missing"),
    (BASE + "solvers: blr\n", "solvers", "unknown field"),
    (BASE + "  energy: E\n", "data.energy", "unknown field"),
    ("basis: {elements: [Si]}\ndata: {train: nope.xyz}\n", "data.train", "no such file"),
    ("basis: {elements: [Si]}\ndata: {test: train.xyz}\n", "data.train", "missing"),
    (BASE + "  force_key: 3\n", "data.force_key", "string or null"),
    (BASE + "  eref: guess\n", "data.eref", "isolated, average or zero"),
    (BASE + "  missing: ignore\n", "data.missing", "error or skip"),
    (BASE + "weights: {liq: {E: -1}}\n", "weights.liq.E", ">= 0"),
    (BASE + "weights: {liq: {S: 1}}\n", "weights.liq.S", "unknown observation"),
    (BASE + "weights: [1, 2]\n", "weights", "expected a mapping"),
    (BASE + "solver: svd\n", "solver", "unknown solver 'svd'"),
    (BASE + "solver: {lam: 1}\n", "solver.name", "missing"),
    (BASE + "solver: {name: cg}\n", "solver.name", "unknown solver"),
    (BASE + "prior: cubic\n", "prior", "unknown prior"),
    (BASE + "prior: {kind: cubic}\n", "prior.kind", "unknown prior"),
    (BASE + "prior: {kind: algebraic, sigma: 1}\n", "prior.sigma", "unknown field"),
    (BASE + "prior: {kind: algebraic, p: four}\n", "prior.p", "expected a number"),
    (BASE + "committee: {size: 0}\n", "committee.size", "integer >= 1"),
    (BASE + "output: {errors: e.txt}\n", "output.errors", ".json or .csv"),
    (BASE + "output: {plots: yes please}\n", "output.plots", "true or false"),
    (BASE + "progress: 3\n", "progress", "true, false or null"),
])
def test_errors_name_the_field(tmp_path, text, field, message):
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert e.value.field == field
    assert e.value.path == str(p)
    assert message in str(e.value)
    assert f"field '{field}'" in str(e.value)


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "none.yaml")
    p = tmp_path / "bad.yaml"
    p.write_text("basis: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
