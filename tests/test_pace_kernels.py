"""Real PACE potentials through acegen's compiled C kernels, against pyace's reference values
(../shared/reference, computed by pyace 0.4.0rc1) with the tolerances of issue 3."""

from __future__ import annotations

import json
import subprocess
import sys

import ase.io
import numpy as np
import pytest

import acegen
from acegen.backends.c import cdef
from acegen.calculator import evaluate
from acegen.jit.load import CompiledKernel


def manifest(shared):
    return json.loads((shared / "reference" / "MANIFEST.json").read_text())["files"]


FILES = [
    "Cu-PBE-core-rep.extxyz", "YBCO_ACE.extxyz", "Cu-III.extxyz", "Cu-I.extxyz", "DFT10B-AgCu.extxyz",
    "Al.pbe.13.2.extxyz", "Al.pbe.rhocore.extxyz", "Al-Ni_opt_all.extxyz", "ethanol.extxyz", "ZBL_rep.extxyz",
]


def check_frame(r, a):
    n = len(a)
    assert abs(r["energy"] - a.info["ref_energy"]) / n <= 1e-7
    assert np.abs(r["energies"] - a.arrays["ref_energies"]).max() <= 1e-7
    Fr = a.arrays["ref_forces"]
    assert np.all(np.abs(r["forces"] - Fr) <= 1e-6 + 1e-7 * np.abs(Fr))
    if "ref_stress" in a.info:
        assert np.abs(r["stress"] - np.asarray(a.info["ref_stress"])).max() <= 1e-7


@pytest.mark.parametrize("fname", FILES)
def test_compiled_kernel_matches_pyace(shared_dir, fname):
    info = manifest(shared_dir)[fname]
    model = acegen.load(shared_dir / "potentials" / info["potential"])
    kernel = model.compile("c")
    frames = ase.io.read(shared_dir / "reference" / fname, ":")
    assert len(frames) == info["frames"]
    kinds = set()
    for a in frames:
        r = evaluate(kernel, model.elements, a, model.ir().rcut_max)
        check_frame(r, a)
        kinds.add(a.info["config_type"].split("_")[0])
    assert {"dimer", "cluster"} <= kinds


def test_calculator_and_compiled_library_agree(shared_dir, tmp_path):
    """acegen.Calculator(path) and `acegen compile` + the library it writes give the same numbers."""
    path = shared_dir / "potentials" / "Al-Ni_opt_all.yace"
    lib = tmp_path / "libalni.so"
    out = subprocess.run([sys.executable, "-m", "acegen.cli", "compile", str(path), "-o", str(lib)],
                         capture_output=True, text=True, check=True)
    assert lib.exists(), out.stdout + out.stderr
    model = acegen.load(path)
    ir = model.ir()
    nsp = len(ir.elements)
    rcut = np.array([[ir.rcut(a, b) for b in range(nsp)] for a in range(nsp)])
    k_lib = CompiledKernel(lib, ir.name, cdef(ir.name), n_species=nsp, rcut=rcut,
                           signature=ir.signature(), elements=ir.elements)
    calc = acegen.Calculator(path)
    for a in ase.io.read(shared_dir / "reference" / "Al-Ni_opt_all.extxyz", ":12"):
        r1 = evaluate(k_lib, model.elements, a, ir.rcut_max)
        a.calc = calc
        assert r1["energy"] == a.get_potential_energy()
        np.testing.assert_array_equal(r1["forces"], a.get_forces())


def test_yaml_to_yace_round_trip_evaluates_identically(shared_dir, tmp_path):
    m = acegen.load(shared_dir / "potentials" / "Cu-III.yaml")
    out = tmp_path / "cu3.yace"
    m.save(out)
    m2 = acegen.load(out)
    for a in ase.io.read(shared_dir / "reference" / "Cu-III.extxyz", ":6"):
        r1 = evaluate(m.compile("c"), m.elements, a, m.ir().rcut_max)
        r2 = evaluate(m2.compile("c"), m2.elements, a, m2.ir().rcut_max)
        assert abs(r1["energy"] - r2["energy"]) <= 1e-12 * max(1.0, abs(r1["energy"]))


def test_info_describes_every_format(shared_dir):
    for name in ["Cu-PBE-core-rep.ace", "YBCO_ACE.yace", "Cu-III.yaml"]:
        out = subprocess.run([sys.executable, "-m", "acegen.cli", "info", str(shared_dir / "potentials" / name)],
                             capture_output=True, text=True, check=True).stdout
        assert "elements:" in out and "cutoff" in out and "FLOPs" in out
