"""GRACE-FS: the reader's validation and content detection, and the NumPy reference evaluator
against pyace's values, finite differences and scipy's spherical harmonics."""

from __future__ import annotations

import copy
import json
import math

import ase.io
import numpy as np
import pytest
import scipy.special as ss
import yaml
from ase import Atoms
from ase.build import bulk

from acegen.errors import ModelFileError, StructureError
from acegen.io.gracefs import GraceFSPotential, gracefs_from_dict, is_gracefs, read_gracefs
from acegen.reference.gracefs_numpy import GraceFSReference, real_ylm

TEST_MODEL = "test_export_to_yaml.yaml"
FITTED_MODEL = "AlLi_distill_GRACE-FS_saved_model.yaml"
_CACHE: dict = {}


def _manifest(shared_dir):
    return json.loads((shared_dir / "reference" / "gracefs" / "MANIFEST.json").read_text())["files"]


def _path(shared_dir, name):
    return shared_dir / "potentials" / "gracefs" / name


def _pot(shared_dir, name) -> GraceFSPotential:
    if name not in _CACHE:
        _CACHE[name] = read_gracefs(_path(shared_dir, name))
    return _CACHE[name]


def _raw(shared_dir, name) -> dict:
    key = ("raw", name)
    if key not in _CACHE:
        _CACHE[key] = yaml.safe_load(_path(shared_dir, name).read_text())
    return copy.deepcopy(_CACHE[key])


# ----------------------------------------------------------------- against pyace references
@pytest.mark.parametrize("fname", ["test_export_to_yaml.extxyz", "AlLi_distill_GRACE-FS_saved_model.extxyz"])
def test_reference_matches_pyace_on_every_frame(shared_dir, fname):
    meta = _manifest(shared_dir)[fname]
    pot = _pot(shared_dir, meta["potential"])
    assert list(pot.elements) == meta["elements"] and pot.rcut == meta["cutoff"]
    assert [len(pot.functions[mu]) for mu in range(pot.nelements)] == meta["n_functions_per_element"]
    ref = GraceFSReference(pot)
    frames = ase.io.read(shared_dir / "reference" / "gracefs" / fname, ":")
    assert len(frames) == meta["frames"]
    for a in frames:
        out = ref.compute(a)
        tag = a.info["config_type"]
        assert abs(out["energy"] - a.info["ref_energy"]) / len(a) <= 1e-7, tag
        assert np.abs(out["energies"] - a.arrays["ref_energies"]).max() <= 1e-7, tag
        F = a.arrays["ref_forces"]
        assert np.all(np.abs(out["forces"] - F) <= 1e-6 + 1e-7 * np.abs(F)), tag
        if "ref_stress" in a.info:
            assert np.abs(out["stress"] - a.info["ref_stress"]).max() <= 1e-7, tag
        else:
            assert "stress" not in out
        if tag == "isolated_atoms":  # no neighbours: E = scale F(0) + shift + E0
            assert np.allclose(out["energies"], [pot.shift + pot.E0[pot.elements.index(s)] for s in a.symbols])


def test_analytic_radial_is_close_to_the_spline(shared_dir):
    pot = _pot(shared_dir, FITTED_MODEL)
    a = bulk("Al", "fcc", a=4.05, cubic=True) * (2, 1, 1)
    a.symbols[[1, 4]] = "Li"
    a.rattle(0.05, seed=3)
    s, an = GraceFSReference(pot).compute(a), GraceFSReference(pot, radial="analytic").compute(a)
    assert abs(s["energy"] - an["energy"]) / len(a) < 1e-6
    assert np.abs(s["forces"] - an["forces"]).max() < 1e-4
    assert s["energy"] != an["energy"]  # really two evaluations


@pytest.mark.parametrize("name", [TEST_MODEL, FITTED_MODEL])
def test_forces_and_stress_by_finite_differences(shared_dir, name):
    pot = _pot(shared_dir, name)
    ref = GraceFSReference(pot, radial="analytic")
    a = bulk("Al", "fcc", a=3.9) * (2, 2, 1)
    a.symbols[1] = pot.elements[1]
    a.symbols[2] = pot.elements[-1]
    a.rattle(0.1, seed=7)
    out = ref.compute(a)
    h = 1e-5
    for i, c in [(0, 0), (1, 2), (2, 1), (3, 0)]:
        b = a.copy()
        b.positions[i, c] += h
        ep = ref.compute(b)["energy"]
        b.positions[i, c] -= 2 * h
        em = ref.compute(b)["energy"]
        assert out["forces"][i, c] == pytest.approx(-(ep - em) / (2 * h), abs=1e-6, rel=1e-6)
    vol = a.get_volume()
    for k, (p, q) in enumerate([(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]):
        es = []
        for sgn in (1, -1):
            eps = np.eye(3)
            eps[p, q] += sgn * h / 2
            eps[q, p] += sgn * h / 2
            b = a.copy()
            b.set_cell(a.cell @ eps, scale_atoms=True)
            es.append(ref.compute(b)["energy"])
        assert out["stress"][k] == pytest.approx((es[0] - es[1]) / (2 * h) / vol, abs=1e-7)


def test_energy_is_rotation_invariant(shared_dir):
    pot = _pot(shared_dir, FITTED_MODEL)
    ref = GraceFSReference(pot)
    a = Atoms("Al3Li2", positions=[[0, 0, 0], [2.5, 0.3, 0], [0.4, 2.6, 0.2], [1.1, 1.0, 2.2], [2.2, 2.4, 1.9]])
    b = a.copy()
    b.rotate(37, (1, 2, 3), center=(0, 0, 0))
    ea, eb = ref.compute(a), ref.compute(b)
    assert ea["energy"] == pytest.approx(eb["energy"], abs=1e-9)
    Rm = b.positions[1:] - b.positions[0]
    Am = a.positions[1:] - a.positions[0]
    rot, *_ = np.linalg.lstsq(Am, Rm, rcond=None)
    assert np.allclose(ea["forces"] @ rot, eb["forces"], atol=1e-8)


def test_real_ylm_is_sqrt4pi_times_scipy_real_harmonics():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(20, 3))
    v /= np.linalg.norm(v, axis=1)[:, None]
    L = 5
    Y, _ = real_ylm(v, L)
    theta, phi = np.arccos(v[:, 2]), np.arctan2(v[:, 1], v[:, 0])
    for l in range(L + 1):
        for m in range(-l, l + 1):
            c = ss.sph_harm_y(l, abs(m), theta, phi)  # Condon-Shortley, orthonormal
            if m == 0:
                want = c.real
            elif m > 0:
                want = math.sqrt(2) * (-1) ** m * c.real
            else:
                want = math.sqrt(2) * (-1) ** m * c.imag
            assert np.allclose(Y[:, l * l + l + m], math.sqrt(4 * math.pi) * want, atol=1e-12), (l, m)


def test_real_ylm_gradients_by_finite_differences():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(5, 3))
    r = np.linalg.norm(v, axis=1)
    _, DY = real_ylm(v / r[:, None], 4)
    h = 1e-6
    for c in range(3):
        vp, vm = v.copy(), v.copy()
        vp[:, c] += h
        vm[:, c] -= h
        fd = (real_ylm(vp / np.linalg.norm(vp, axis=1)[:, None], 4)[0]
              - real_ylm(vm / np.linalg.norm(vm, axis=1)[:, None], 4)[0]) / (2 * h)
        assert np.allclose(DY[:, :, c] / r[:, None], fd, atol=1e-7)


def test_too_close_and_unknown_element_are_structure_errors(shared_dir):
    ref = GraceFSReference(_pot(shared_dir, FITTED_MODEL))
    with pytest.raises(StructureError, match="Cu"):
        ref.compute(Atoms("AlCu", positions=[[0, 0, 0], [2.5, 0, 0]]))
    with pytest.raises(StructureError, match="very small distance"):
        ref.compute(Atoms("Al2", positions=[[0, 0, 0], [0.0005, 0, 0]]))


# --------------------------------------------------------------------------------- reader
def test_reader_fields_and_shapes(shared_dir):
    pot = _pot(shared_dir, TEST_MODEL)
    raw = _raw(shared_dir, TEST_MODEL)
    rb = raw["radial_basis"]
    assert pot.elements == ("Al", "Li", "H")
    assert pot.crad.shape == tuple(rb["crad_shape"]) and pot.Z.shape == tuple(rb["Z_shape"])
    assert pot.crad[1, 2, 3] == rb["crad"][(1 * rb["crad_shape"][1] + 2) * rb["crad_shape"][2] + 3]
    assert pot.Z[2, 5] == rb["Z"][2 * rb["Z_shape"][1] + 5]
    assert pot.ndensity == 4 and pot.embedding == "FinnisSinclairShiftedScaled"
    assert pot.E0 == (0.0, 0.0, 0.0) and pot.scale == 1.0 and pot.nnorm == 1.0
    f = pot.functions[0][50]
    rf = raw["functions"][0][50]
    assert f.ns == rf["ns"] and list(f.ls) == rf["ls"] and f.ms_combs.shape == (len(rf["gen_cgs"]), rf["rank"])
    assert f.ms_combs.ravel().tolist() == rf["ms_combs"] and f.coeff.tolist() == rf["coeff"]
    with pytest.raises(ValueError):
        pot.crad[0, 0, 0] = 1.0  # frozen arrays
    fitted = _pot(shared_dir, FITTED_MODEL)
    assert fitted.lmax == 5 and fitted.rankmax == 4 and fitted.scale == pytest.approx(13.159888102913484)


def test_reader_accepts_text_and_signature_tracks_content(shared_dir):
    text = _path(shared_dir, TEST_MODEL).read_text()
    a = read_gracefs(text)
    b = _pot(shared_dir, TEST_MODEL)
    assert a == b and a.signature() == b.signature() and a.source == "<text>"
    raw = _raw(shared_dir, TEST_MODEL)
    raw["functions"][1][7]["coeff"][2] += 1e-12
    c = gracefs_from_dict(raw)
    assert c.signature() != b.signature() and c != b
    raw = _raw(shared_dir, TEST_MODEL)
    raw["radial_basis"]["Z"][0] = np.nextafter(raw["radial_basis"]["Z"][0], 10.0)
    assert gracefs_from_dict(raw).signature() != b.signature()


def test_format_detection_is_by_content(shared_dir, tmp_path):
    assert is_gracefs(_raw(shared_dir, TEST_MODEL))
    pace_yaml = yaml.safe_load((shared_dir / "potentials" / "Cu-III.yaml").read_text())
    assert not is_gracefs(pace_yaml) and not is_gracefs([1, 2]) and not is_gracefs({"emb_spec": {}})
    p = tmp_path / "model.yace"  # a GRACE-FS model under a misleading name
    p.write_text(_path(shared_dir, TEST_MODEL).read_text())
    assert read_gracefs(p) == _pot(shared_dir, TEST_MODEL)
    with pytest.raises(ModelFileError, match="PACE"):
        read_gracefs(shared_dir / "potentials" / "Cu-III.yaml")


def _set(path, value):
    def edit(d):
        *head, last = path
        for k in head:
            d = d[k]
        if value is _DEL:
            del d[last]
        else:
            d[last] = value(d[last]) if callable(value) else value
    return edit


_DEL = object()
BAD = [
    (_set(("elements",), ["Al", "Li", "Xx"]), "elements[2]"),
    (_set(("elements",), ["Al", "Li", "Al"]), "elements"),
    (_set(("nnorm",), float("nan")), "nnorm"),
    (_set(("scale",), "big"), "scale"),
    (_set(("E0",), [0.0, 1.0]), "E0"),
    (_set(("emb_spec", "type"), "Tanh"), "emb_spec.type"),
    (_set(("emb_spec", "params"), [1.0, 1.0, 0.5]), "emb_spec.params"),
    (_set(("emb_spec", "params"), []), "emb_spec.params"),
    (_set(("radial_basis", "radbasename"), "ChebExpCos"), "radial_basis.radbasename"),
    (_set(("radial_basis", "cutoff"), -1.0), "radial_basis.cutoff"),
    (_set(("radial_basis", "cutoff"), 1e9), "radial_basis.cutoff"),
    (_set(("radial_basis", "crad"), lambda v: v[:-1]), "radial_basis.crad"),
    (_set(("radial_basis", "crad"), lambda v: v[:5] + [float("inf")] + v[6:]), "radial_basis.crad[5]"),
    (_set(("radial_basis", "crad_shape"), [12, 3, 5]), "radial_basis.crad_shape"),
    (_set(("radial_basis", "crad_shape"), [12, 100000, 4]), "radial_basis.crad_shape"),
    (_set(("radial_basis", "nradmax"), 10**9), "radial_basis.nradmax"),
    (_set(("radial_basis", "Z_shape"), [2, 12]), "radial_basis.Z_shape"),
    (_set(("radial_basis", "Z"), lambda v: v + [1.0]), "radial_basis.Z"),
    (_set(("radial_basis", "Z"), _DEL), "radial_basis.Z"),
    (_set(("functions",), lambda v: {**v, 3: []}), "functions[3]"),
    (_set(("functions", 0, 3, "mu0"), 1), "functions[0][3].mu0"),
    (_set(("functions", 0, 3, "ns"), 0), "functions[0][3].ns"),
    (_set(("functions", 0, 3, "ns"), 13), "functions[0][3].ns"),
    (_set(("functions", 1, 60, "ls"), lambda v: [3] + v[1:]), "functions[1][60].ls[0]"),
    (_set(("functions", 1, 60, "ls"), lambda v: v[1:]), "functions[1][60].ls"),
    (_set(("functions", 1, 60, "ms_combs"), lambda v: v[:-1]), "functions[1][60].ms_combs"),
    (_set(("functions", 2, 80, "gen_cgs"), lambda v: v + [0.1]), "functions[2][80].ms_combs"),
    (_set(("functions", 2, 80, "ndensity"), 3), "functions[2][80].ndensity"),
    (_set(("functions", 2, 80, "coeff"), lambda v: v[:3]), "functions[2][80].coeff"),
    (_set(("functions", 2, 80, "rank"), 0), "functions[2][80].rank"),
    (_set(("functions", 2, 80, "rank"), True), "functions[2][80].rank"),
]


@pytest.mark.parametrize("case", range(len(BAD)))
def test_malformed_fields_name_the_field(shared_dir, case):
    edit, field = BAD[case]
    raw = _raw(shared_dir, TEST_MODEL)
    edit(raw)
    with pytest.raises(ModelFileError) as ei:
        gracefs_from_dict(raw, source="m.yaml")
    assert ei.value.field == field and "m.yaml" in str(ei.value)


def test_ms_beyond_l_is_rejected(shared_dir):
    raw = _raw(shared_dir, TEST_MODEL)
    f = next(f for f in raw["functions"][0] if f["rank"] == 2 and f["ls"][0] == 1)
    f["ms_combs"][0] = 2
    with pytest.raises(ModelFileError, match=r"\|m\| > l"):
        gracefs_from_dict(raw)


def test_unreadable_inputs(tmp_path):
    with pytest.raises(ModelFileError, match="cannot read"):
        read_gracefs(tmp_path / "missing.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ModelFileError, match="not a text file"):
        read_gracefs(tmp_path / "bin.yaml")
    with pytest.raises(ModelFileError, match="invalid YAML"):
        read_gracefs("a: [1,\nb: 2\n")
    with pytest.raises(ModelFileError, match="duplicate key"):
        read_gracefs("elements: [Al]\nelements: [Al]\n")
    with pytest.raises(ModelFileError, match="top level"):
        read_gracefs("- 1\n- 2\n")
