"""ACEpotentials.jl ``.yace`` exports (radial basis ``ACE.jl.base``): the reader, the NumPy PACE
oracle and the compiled kernels against pyace's reference values."""

from __future__ import annotations

import copy
import json

import ase.io
import numpy as np
import pytest

import acegen
from acegen.calculator import evaluate
from acegen.errors import ModelFileError
from acegen.io.acejl import AceJlBond
from acegen.io.pace import read_pace
from acegen.io.pace.checks import _Ctx, _PaceYamlLoader
from acegen.io.pace.yace import _yace_from_dict
from acegen.reference.pace_numpy import PaceReference, radial_basis

NAME = "TiAl_ACEjl_tutorial_20230120"
_CACHE: dict = {}


def _pot(shared_dir):
    if "pot" not in _CACHE:
        _CACHE["pot"] = read_pace(shared_dir / "potentials" / f"{NAME}.yace")
    return _CACHE["pot"]


def _frames(shared_dir):
    if "frames" not in _CACHE:
        _CACHE["frames"] = ase.io.read(shared_dir / "reference" / "acejl" / f"{NAME}.extxyz", ":")
    return _CACHE["frames"]


def _raw(shared_dir):
    if "raw" not in _CACHE:
        text = (shared_dir / "potentials" / f"{NAME}.yace").read_text()
        _CACHE["raw"] = _PaceYamlLoader(text).get_single_data()
    return copy.deepcopy(_CACHE["raw"])


def _check(out, a, *, stress_tol=1e-7):
    tag = a.info["config_type"]
    assert abs(out["energy"] - a.info["ref_energy"]) / len(a) <= 1e-7, tag
    assert np.abs(out["energies"] - a.arrays["ref_energies"]).max() <= 1e-7, tag
    F = a.arrays["ref_forces"]
    assert np.all(np.abs(out["forces"] - F) <= 1e-6 + 1e-7 * np.abs(F)), tag
    if "ref_stress" in a.info:
        assert np.abs(out["stress"] - np.asarray(a.info["ref_stress"])).max() <= stress_tol, tag


def test_reader_builds_identity_radial_bonds(shared_dir):
    pot = _pot(shared_dir)
    meta = json.loads((shared_dir / "reference" / "acejl" / "MANIFEST.json").read_text())["files"][f"{NAME}.extxyz"]
    assert list(pot.elements) == meta["elements"] and pot.rcut_max == meta["cutoff"]
    raw = _raw(shared_dir)
    for key, b in pot.bonds.items():
        assert isinstance(b, AceJlBond) and b.radbasename == "ACE.jl.base"
        rb = raw["bonds"][key]
        assert b.nradbase == b.nradmax == rb["maxn"] and b.lmax == raw["lmax"] and b.rcut == rb["rcut"]
        assert list(b.ships.A) == rb["recursion_coefficients"]["A"] and b.ships.xl == rb["xl"]
        assert np.array_equal(b.crad, np.repeat(np.eye(b.nradmax)[:, None, :], b.lmax + 1, axis=1))
    assert sum(len(v) for v in pot.functions.values()) == 236
    assert read_pace(shared_dir / "potentials" / f"{NAME}.yace") == pot


def test_ships_radial_derivative_and_cutoff(shared_dir):
    bond = _pot(shared_dir).bonds[(0, 1)]
    r = np.linspace(1.0, 5.4, 57)
    g, dg = radial_basis(bond, r)
    h = 1e-6
    fd = (radial_basis(bond, r + h)[0] - radial_basis(bond, r - h)[0]) / (2 * h)
    assert np.allclose(dg, fd, atol=1e-6 * np.abs(g).max())
    s = bond.ships
    x = ((1 + s.r0) / (1 + r)) ** s.p
    inside = x <= s.xr  # x > xr (r below ~1.73 Å here) lies outside the polynomials' domain: 0
    assert inside.sum() > 40 and (~inside).sum() > 5
    assert np.allclose(g[:, 0], np.where(inside, s.A[0] * (x - s.xl) ** s.pl * (x - s.xr) ** s.pr, 0.0))
    assert np.allclose(g[:, 1], (s.A[1] * x + s.B[1]) * g[:, 0])
    assert np.allclose(g[:, 2], (s.A[2] * x + s.B[2]) * g[:, 1] + s.C[2] * g[:, 0])
    assert np.all(g[~inside] == 0.0) and np.abs(g[inside]).max() > 0.1
    # x(rcut) = xl: the envelope (x − xl)^2 takes every P_n to zero with zero slope at rcut
    g_end, dg_end = radial_basis(bond, np.array([bond.rcut - 1e-9, bond.rcut, bond.rcut + 0.1]))
    assert np.abs(g_end).max() < 1e-12 and np.abs(dg_end).max() < 1e-6


@pytest.mark.parametrize("radial", ["spline", "analytic"])
def test_reference_matches_pyace_on_every_frame(shared_dir, radial):
    ref = PaceReference(_pot(shared_dir), radial=radial)
    frames = _frames(shared_dir)
    assert len(frames) == 20
    for a in frames:
        _check(ref.compute(a), a, stress_tol=1e-7 if radial == "spline" else 1e-12)


@pytest.mark.parametrize("backend", ["c", "llvm"])
def test_compiled_kernels_match_pyace(shared_dir, backend):
    model = acegen.load(shared_dir / "potentials" / f"{NAME}.yace")
    kernel = model.compile(backend)
    for a in _frames(shared_dir):
        _check(evaluate(kernel, model.elements, a, model.ir().rcut_max), a)


def test_calculator_on_the_acejl_file(shared_dir):
    a = next(x for x in _frames(shared_dir) if x.info["config_type"] == "B2_2atom").copy()
    a.calc = acegen.Calculator(shared_dir / "potentials" / f"{NAME}.yace")
    assert abs(a.get_potential_energy() - a.info["ref_energy"]) <= 2e-7


def _edit(raw, fn):
    fn(raw)
    return raw


BAD = [
    (lambda d: d["bonds"][(0, 1)].update(xr=0.1), "bonds[0,1].xr"),
    (lambda d: d["bonds"][(0, 0)]["recursion_coefficients"].update(B=[0.0, 1.0]), "bonds[0,0].recursion_coefficients.B"),
    (lambda d: d["bonds"][(1, 0)]["recursion_coefficients"].pop("C"), "bonds[1,0].recursion_coefficients.C"),
    (lambda d: d["bonds"][(1, 1)].update(maxn=10**6), "bonds[1,1].maxn"),
    (lambda d: d["bonds"][(1, 1)].update(p=0), "bonds[1,1].p"),
    (lambda d: d["bonds"][(1, 1)].update(rcut=float("nan")), "bonds[1,1].rcut"),
    (lambda d: d.pop("lmax"), "lmax"),
    (lambda d: d.update(polypairpot={"coefficients": [1.0]}), "polypairpot"),
    (lambda d: d["functions"][0][30].update(ns=[1, 7]), "functions[0][30].ns[1]"),
]


@pytest.mark.parametrize("case", range(len(BAD)))
def test_malformed_acejl_fields(shared_dir, case):
    fn, field = BAD[case]
    raw = _raw(shared_dir)
    fn(raw)
    with pytest.raises(ModelFileError) as ei:
        _yace_from_dict(_Ctx("t.yace"), raw)
    assert ei.value.field == field


def test_write_yace_refuses_acejl_bonds(shared_dir, tmp_path):
    from acegen.errors import SpecError
    from acegen.io.pace import write_yace

    with pytest.raises(SpecError, match="ACE.jl.base"):
        write_yace(_pot(shared_dir), tmp_path / "out.yace")
    assert not (tmp_path / "out.yace").exists()
