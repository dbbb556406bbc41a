"""Every model reader is bounded: absurd sizes and extreme values in a model file (PACE
``.yace``, ``.ace``, ``.yaml``, ACE.jl ``.yace``, GRACE-FS, acegen JSON) or in a
:class:`acegen.BasisSpec` give a ModelFileError / SpecError naming the field, quickly and
without allocating anything large.

The file cases run ``acegen.load(path).ir()`` in a subprocess under a 2 GB address-space
limit and a 20 s timeout, so a reader that spins, allocates gigabytes or raises a foreign
exception fails the test instead of taking the test run down."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml

import acegen
from acegen.errors import ModelFileError, SpecError

BIG = "10000000000000"  # 10^13
HUGE = "1000000000000000000000000000000"  # 10^30

_RUNNER = r"""
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
import acegen
path, reader = sys.argv[1], sys.argv[2]
try:
    if reader == "gracefs":
        from acegen.io.gracefs import read_gracefs
        read_gracefs(path)
    else:
        acegen.load(path).ir()
    out = {"kind": "ok"}
except acegen.AcegenError as e:
    out = {"kind": type(e).__name__, "field": getattr(e, "field", None), "msg": str(e)}
print("RESULT " + json.dumps(out))
"""


def run_bounded(path: Path, reader: str = "load", timeout: float = 20.0) -> dict:
    """Load ``path`` in a subprocess (2 GB address space, ``timeout`` seconds); the result
    line, or a test failure naming what went wrong (timeout, foreign exception)."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    try:
        r = subprocess.run([sys.executable, "-c", _RUNNER, str(path), reader], capture_output=True, text=True,
                           timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"reading {path.name} did not finish within {timeout} s")
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        pytest.fail(f"reading {path.name} crashed: {r.stderr.strip().splitlines()[-1:] or r.returncode}")
    return json.loads(lines[-1][len("RESULT "):])


def crafted(shared_dir, tmp_path, name, pattern, repl, suffix=None) -> Path:
    text = (shared_dir / "potentials" / name).read_text()
    new, n = re.subn(pattern, repl, text, count=1, flags=re.M)
    assert n == 1, f"pattern {pattern!r} not in {name}"
    p = tmp_path / ("crafted" + (suffix or Path(name).suffix))
    p.write_text(new)
    return p


ACE = "Al.pbe.rhocore.ace"
YACE = "Al-Ni_opt_all.yace"
YAML = "Cu-III.yaml"
ACEJL = "TiAl_ACEjl_tutorial_20230120.yace"

# (file, pattern, replacement, field the error must name)
FILE_CASES = {
    # .ace: nradmax 0 made the crad loop spin over a huge nradbase without reading anything
    "ace-spin": (ACE, r"nradbase=12\nnradmax=4", f"nradbase={BIG}\nnradmax=0", "nradbase"),
    "ace-lmax": (ACE, r"^lmax=5", f"lmax={HUGE}", "lmax"),
    "ace-nradmax": (ACE, r"nradmax=4", f"nradmax={BIG}", "nradmax"),
    "ace-nelements": (ACE, r"nelements=1", f"nelements={BIG}", "nelements"),
    "ace-nfs": (ACE, r"^4 FS", f"{BIG} FS", "FS parameters"),
    "ace-nfunctions": (ACE, r"total_basis_size_rank1: \d+", f"total_basis_size_rank1: {BIG}", "total_basis_size_rank1"),
    "ace-num-ms": (ACE, r"num_ms=1", f"num_ms={BIG}", "total_basis_size_rank1[0].function[0].num_ms"),
    "ace-rankmax": (ACE, r"rankmax=5", f"rankmax={BIG}", "rankmax"),
    "ace-rcut": (ACE, r"^cutoff= \S+", "cutoff= 1e308", "cutoff[0,0]"),
    "ace-delta": (ACE, r"deltaSplineBins=\S+", "deltaSplineBins=1e-12", "deltaSplineBins"),
    "ace-radparameter": (ACE, r"radparameter= \S+", "radparameter= -1e300", "radparameter[0,0]"),
    "ace-lambdahc": (ACE, r"^core repulsion parameters: (\S+) \S+", r"core repulsion parameters: \1 -1e300",
                     "core repulsion parameters[0,0].lambdahc"),
    "ace-fs-exponent": (ACE, r"FS parameters:  1.000000 1.000000", "FS parameters:  1.000000 1e300", "FS parameters[1]"),
    "yace-lmax": (YACE, r"lmax: \d+", f"lmax: {HUGE}", "bonds[0,0].lmax"),
    "yace-nradmax": (YACE, r"nradmax: \d+", f"nradmax: {BIG}", "bonds[0,0].nradmax"),
    "yace-nradbase": (YACE, r"nradbasemax: \d+", f"nradbasemax: {BIG}", "bonds[0,0].nradbasemax"),
    "yace-rcut": (YACE, r"rcut: [^,}]+", "rcut: 1e308", "bonds[0,0].rcut"),
    "yace-delta": (YACE, r"deltaSplineBins: \S+", "deltaSplineBins: 1e-12", "deltaSplineBins"),
    "yace-radparameters": (YACE, r"radparameters: \[[^\]]*\]", "radparameters: [-1e300]", "bonds[0,0].radparameters[0]"),
    "yace-lambdahc": (YACE, r"lambdahc: [^,}]+", "lambdahc: -1e300", "bonds[0,0].lambdahc"),
    "yace-ndensity": (YACE, r"ndensity: 1, FS_parameters", f"ndensity: {BIG}, FS_parameters", "embeddings[0].ndensity"),
    "yace-rank": (YACE, r"rank: 1, ndensity", f"rank: {BIG}, ndensity", "functions[0][0].rank"),
    "yace-num-ms": (YACE, r"num_ms_combs: 1,", f"num_ms_combs: {BIG},", "functions[0][0].num_ms_combs"),
    "yace-prehc-int": (YACE, r"prehc: [^,}]+", "prehc: " + "9" * 400, "bonds[0,0].prehc"),
    # a finite c-tilde whose real expansion (times sqrt(4 pi)) overflows
    "yace-ctilde-overflow": (YACE, r"ctildes: \[-1.5158666430168033\]", "ctildes: [1.7e+308]", "functions[0]"),
    # an m beyond int64 made the function's integer array overflow
    "yace-ms-int64": (YACE, r"ms_combs: \[0\]", "ms_combs: [9223372036854775808]", "functions[0][0].ms_combs[0]"),
    "ace-ms-int64": (ACE, r"^< 0 >:", "< 9223372036854775808 >:", "total_basis_size_rank1[0].function[0].ms_combs[0]"),
    "yaml-lmax": (YAML, r"lmaxi: \d+", f"lmaxi: {HUGE}", "species[0].lmaxi"),
    "yaml-nradmax": (YAML, r"nradmaxi: \d+", f"nradmaxi: {BIG}", "species[0].nradmaxi"),
    "yaml-rcut": (YAML, r"rcutij: \S+", "rcutij: 1e308", "species[0].rcutij"),
    "yaml-delta": (YAML, r"DeltaSplineBins: \S+", "DeltaSplineBins: 1e-12", "global.DeltaSplineBins"),
    "yaml-radparameters": (YAML, r"radparameters: \[[^\]]*\]", "radparameters: [-1e300]", "species[0].radparameters[0]"),
    "yaml-ndensity": (YAML, r"ndensityi: 2", f"ndensityi: {BIG}", "species[0].ndensityi"),
    "acejl-r0": (ACEJL, r"^    r0: \S+", "    r0: 1.0e+300", "bonds[0,0].r0"),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_crafted_file_is_refused_quickly(shared_dir, tmp_path, case):
    name, pattern, repl, field = FILE_CASES[case]
    p = crafted(shared_dir, tmp_path, name, pattern, repl)
    t0 = time.perf_counter()
    res = run_bounded(p)
    assert res["kind"] == "ModelFileError", res
    assert res["field"] == field, res
    assert str(p) in res["msg"]
    assert time.perf_counter() - t0 < 20


def test_overflowing_radial_functions_are_a_model_file_error(shared_dir):
    """A potential built in memory (no reader limits) whose radial basis overflows on the
    spline knots: lowering names the bond instead of raising OverflowError."""
    import dataclasses

    from acegen.io.pace import PacePotential, read_pace

    pot = read_pace(shared_dir / "potentials" / YACE)
    bonds = dict(pot.bonds)
    bonds[(0, 0)] = dataclasses.replace(bonds[(0, 0)], radparameters=(-1e300,))
    bad = PacePotential(elements=pot.elements, E0=pot.E0, delta_spline_bins=pot.delta_spline_bins,
                        embeddings=pot.embeddings, bonds=bonds, functions=pot.functions, source="crafted.yace")
    with deadline(20), pytest.raises(ModelFileError, match="not finite") as ei:
        acegen.Model.from_pace(bad).ir()
    assert ei.value.field == "bonds[0,0]" and ei.value.path == "crafted.yace"


def test_bbasis_function_spanning_too_many_m_combinations(shared_dir, tmp_path):
    """A rank-4 B function with l = 20 spans 41^4 m-combinations: refused before they are
    enumerated (it took minutes)."""
    data = yaml.safe_load((shared_dir / "potentials" / YAML).read_text())
    blk = data["species"][0]
    nmax, nbase = blk["nradmaxi"], blk["nradbaseij"]
    blk["lmaxi"] = 20
    blk["radcoefficients"] = np.zeros((nmax, 21, nbase)).tolist()
    blk["nbody"].append({"type": "Cu Cu Cu Cu Cu", "nr": [1, 1, 1, 1], "nl": [20, 20, 20, 20], "lint": [20, 20],
                         "c": [1.0, 1.0]})
    p = tmp_path / "big_l.yaml"
    p.write_text(yaml.safe_dump(data))
    res = run_bounded(p)
    assert res["kind"] == "ModelFileError", res
    assert res["field"] == f"species[0].nbody[{len(blk['nbody']) - 1}].nl", res


@pytest.mark.parametrize("case, old, new, field", [
    ("nnorm-int", "nnorm: 1.0", "nnorm: " + "9" * 400, "nnorm"),
    ("fs-exponent", "params: [1.0, 1.0,", "params: [1.0, 1.0e+300,", "emb_spec.params[1]"),
    ("cutoff", "cutoff: ", "cutoff: 1.0e+308, _x: ", "radial_basis.cutoff"),
    ("ms-int64", "ms_combs: [0", "ms_combs: [9223372036854775808", "functions[0][0].ms_combs[0]"),
], ids=["nnorm-int", "fs-exponent", "cutoff", "ms-int64"])
def test_crafted_gracefs_is_refused(shared_dir, tmp_path, case, old, new, field):
    text = (shared_dir / "potentials" / "gracefs" / "test_export_to_yaml.yaml").read_text()
    assert old in text
    p = tmp_path / "g.yaml"
    p.write_text(text.replace(old, new, 1))
    res = run_bounded(p, reader="gracefs")
    assert res["kind"] == "ModelFileError", res
    assert res["field"] == field, res


# ------------------------------------------------------------------------------ JSON models
def _json_model() -> dict:
    spec = acegen.BasisSpec(["Cu"], 2, 4, rcut=4.0)
    m = acegen.Model(spec, np.linspace(-1, 1, acegen.lower(spec).n_params), name="fz")
    return m.to_dict()


def _coef_int(d):
    d["coefficients"]["manybody"][0] = 10**400


def _spec(key, value):
    def f(d):
        d["spec"][key] = value
    return f


@pytest.mark.parametrize("case, edit, field", [
    ("coefficient-int", _coef_int, "coefficients.manybody"),
    ("totaldegree", _spec("totaldegree", [10**9, 10**9]), "spec"),
    ("totaldegree-int", _spec("totaldegree", [10**400, 10**400]), "spec"),
    ("rcut", _spec("rcut", 1e308), "spec"),
    ("order", _spec("order", 10**6), "spec"),
    ("wL", _spec("wL", 1e-9), "spec"),
    ("pair_degree", _spec("pair_degree", 10**9), "spec"),
    ("envelope", _spec("envelope", ["x", 2, 10**9]), "spec"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_crafted_json_is_refused(tmp_path, case, edit, field):
    d = _json_model()
    edit(d)
    p = tmp_path / "m.json"
    p.write_text(json.dumps(d))
    res = run_bounded(p)
    assert res["kind"] == "ModelFileError", res
    assert res["field"] == field, res


def test_json_with_a_5000_digit_number(tmp_path):
    p = tmp_path / "m.json"
    p.write_text(json.dumps(_json_model()).replace('"order": 2', '"order": ' + "1" * 5000))
    with pytest.raises(ModelFileError, match="not valid JSON"):
        acegen.load(p)


# ------------------------------------------------------------------------------ BasisSpec
@contextmanager
def deadline(seconds: int):
    def on_alarm(signum, frame):
        raise TimeoutError(f"did not finish within {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("args, kwargs, field", [
    ((3, 10**9), {}, "totaldegree"),
    ((3, 10**400), {}, "totaldegree"),
    ((10**6, 10**6), {}, "order"),
    ((2, 6), {"rcut": 1e308}, "rcut"),
    ((2, 6), {"r0": 1e308}, "r0"),
    ((2, 6), {"r0": 60.0}, "rcut"),  # the default cutoff 2.5 r0 exceeds the limit
    ((2, 6), {"rcut": 1e-300}, "rcut"),  # a found example: the radial transform divided by zero
    ((2, 6), {"r0": 1e-300, "rcut": 5.0}, "r0"),
    ((2, 6), {"pair_rcut": 1e-300}, "pair_rcut"),
    ((2, 10), {"wL": 1e-9}, "wL"),
    ((2, 6), {"pair_degree": 10**9}, "pair_degree"),
    ((2, 6), {"transform": ("agnesi", 1, 10**9)}, "transform"),
    ((2, 6), {"envelope": ("x", 10**9, 2)}, "envelope"),
    ((2, 6), {"pair_envelope": ("r", 10**9)}, "pair_envelope"),
])
def test_absurd_spec_is_refused_at_construction(args, kwargs, field):
    with deadline(5), pytest.raises(SpecError, match=rf"BasisSpec\.{field}\b"):
        acegen.BasisSpec(["Cu"], *args, **kwargs)


def test_spec_selecting_too_many_functions_is_refused_quickly():
    """Within every single limit, but the total-degree selection would produce billions of
    product functions: refused after MAX_BASIS of them, in seconds."""
    from acegen.spec import MAX_BASIS

    spec = acegen.BasisSpec(["Cu", "Ni"], 8, 40)
    t0 = time.perf_counter()
    with deadline(30), pytest.raises(SpecError, match=f"more than {MAX_BASIS}"):
        acegen.lower(spec)
    assert time.perf_counter() - t0 < 30


def test_limits_admit_the_shared_potentials(shared_dir):
    """The limits are far from what real potentials use: every shared PACE file still loads."""
    from acegen.io.pace import read_pace

    for name in (ACE, YACE, YAML, ACEJL, "Cu-PBE-core-rep.ace", "YBCO_ACE.yace", "DFT10B-AgCu.yaml"):
        read_pace(shared_dir / "potentials" / name)
