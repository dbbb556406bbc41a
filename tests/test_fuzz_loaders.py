"""Hypothesis fuzzing of every model loader (acegen JSON, PACE .yace, .ace, .yaml, ACE.jl,
GRACE-FS) through the public `acegen.load` and the lowering that follows it: the only exception
allowed is acegen's own, and nothing hangs (every example has a deadline).  The extreme-value
fuzzing also runs under a memory budget."""

from __future__ import annotations

import re
import resource
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import acegen
from acegen.errors import ModelFileError, SpecError

FILES = ["Al-Ni_opt_all.yace", "Al.pbe.rhocore.ace", "ZBL_rep.yaml", "Cu-III.yaml"]
ALPHABET = b"0123456789-+.eE[]{}:, \nabcxyz#&*!|>'\"\t\x00\xff"

mutations = st.lists(
    st.tuples(st.floats(0, 1, exclude_max=True), st.sampled_from(["replace", "delete", "insert", "dup"]),
              st.binary(min_size=1, max_size=6), st.integers(1, 40)),
    min_size=1, max_size=5,
)


def mutate(data: bytes, muts) -> bytes:
    b = bytearray(data)
    for frac, op, payload, n in muts:
        pos = int(frac * max(len(b), 1))
        if op == "replace":
            b[pos:pos + len(payload)] = payload
        elif op == "delete":
            del b[pos:pos + n]
        elif op == "insert":
            b[pos:pos] = payload
        else:
            b[pos:pos] = b[pos:pos + n]
    return bytes(b)


def load_and_lower(path: Path):
    try:
        m = acegen.load(path)
        ir = m.ir()
    except acegen.AcegenError:
        return
    for sp in ir.species:
        assert np.isfinite(sp.coeffs).all()


@pytest.mark.parametrize("name", FILES)
@settings(max_examples=40, deadline=timedelta(seconds=20),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(muts=mutations, alphabet_bytes=st.lists(st.sampled_from(list(ALPHABET)), min_size=1, max_size=4))
def test_fuzz_pace_loaders(tmp_path, shared_dir, name, muts, alphabet_bytes):
    data = (shared_dir / "potentials" / name).read_bytes()
    muts = [(f, op, bytes(alphabet_bytes) if op == "replace" else p, n) for f, op, p, n in muts]
    p = tmp_path / ("fuzz" + Path(name).suffix)
    p.write_bytes(mutate(data, muts))
    load_and_lower(p)


@settings(max_examples=60, deadline=timedelta(seconds=20),
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(muts=mutations)
def test_fuzz_json_loader_bytes(tmp_path, muts):
    import json

    spec = acegen.BasisSpec(["Cu"], 2, 4, rcut=4.0)
    m = acegen.Model(spec, np.linspace(-1, 1, acegen.lower(spec).n_params), name="fz")
    p = tmp_path / "fuzz.json"
    p.write_bytes(mutate(json.dumps(m.to_dict()).encode(), muts))
    load_and_lower(p)


@settings(max_examples=40, deadline=timedelta(seconds=20),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(muts=mutations, alphabet_bytes=st.lists(st.sampled_from(list(ALPHABET)), min_size=1, max_size=4))
def test_fuzz_gracefs_reader(tmp_path, shared_dir, muts, alphabet_bytes):
    """Mutated GRACE-FS files: a validated, finite model with consistent shapes, or ModelFileError."""
    from acegen.errors import ModelFileError
    from acegen.io.gracefs import read_gracefs

    data = (shared_dir / "potentials" / "gracefs" / "test_export_to_yaml.yaml").read_bytes()
    muts = [(f, op, bytes(alphabet_bytes) if op == "replace" else p, n) for f, op, p, n in muts]
    p = tmp_path / "fuzz.yaml"
    p.write_bytes(mutate(data, muts))
    try:
        pot = read_gracefs(p)
    except ModelFileError:
        return
    assert np.isfinite(pot.crad).all() and np.isfinite(pot.Z).all()
    assert pot.Z.shape == (pot.nelements, pot.nradmax)
    for mu, funcs in pot.functions.items():
        for f in funcs:
            assert f.mu0 == mu and 1 <= f.ns <= pot.nradmax and f.ms_combs.shape == (len(f.gen_cgs), f.rank)
            assert np.all(np.abs(f.ms_combs) <= np.asarray(f.ls)) and max(f.ls) <= pot.lmax
            assert f.coeff.shape == (pot.ndensity,) and np.isfinite(f.coeff).all() and np.isfinite(f.gen_cgs).all()


@settings(max_examples=40, deadline=timedelta(seconds=20),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(muts=mutations, alphabet_bytes=st.lists(st.sampled_from(list(ALPHABET)), min_size=1, max_size=4))
def test_fuzz_acejl_yace_reader(tmp_path, shared_dir, muts, alphabet_bytes):
    """Mutated ACEpotentials.jl .yace files (ACE.jl.base radial): a model with finite radial
    functions, or ModelFileError (the reader only: lowering this file takes seconds)."""
    from acegen.errors import ModelFileError
    from acegen.io.pace import read_pace
    from acegen.reference.pace_numpy import radial_basis

    data = (shared_dir / "potentials" / "TiAl_ACEjl_tutorial_20230120.yace").read_bytes()
    muts = [(f, op, bytes(alphabet_bytes) if op == "replace" else p, n) for f, op, p, n in muts]
    p = tmp_path / "fuzz.yace"
    p.write_bytes(mutate(data, muts))
    try:
        pot = read_pace(p)
    except ModelFileError:
        return
    r = np.linspace(0.5, pot.rcut_max + 0.5, 50)
    for bond in pot.bonds.values():
        with np.errstate(over="ignore", invalid="ignore"):
            g, dg = radial_basis(bond, r)
        assert g.shape == (50, bond.nradbase)


# ------------------------------------------------------------------ extreme numbers and sizes
# Replace numbers of a real file by extreme values (sizes of 10^13 and 10^30, 1e308, -1e300,
# 1e-12, integers of 400 digits, ...): the readers must refuse them with ModelFileError or
# SpecError, within the deadline and a memory budget (nothing large is allocated first).
EXTREMES = ["0", "-1", "1e-12", "1.0e-12", "1e308", "1.0e+308", "-1e300", "-1.0e+300", "1e-300", "10000000000000",
            "1000000000000000000000000000000", "9" * 400, "2147483648", "9223372036854775808", "-0", "0.5",
            "1000", "100.5", "nan", ".inf"]
_NUM_RE = re.compile(rb"(?<![\w.])[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?(?![\w.])")

extreme_edits = st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.sampled_from(EXTREMES), st.booleans()),
                         min_size=1, max_size=3)


def with_extremes(data: bytes, edits) -> bytes:
    """Replace numbers of ``data`` (edits: (position in [0, 1), value, biased)); biased
    positions favour the start of the file, where the sizes, cutoffs and radial parameters are."""
    spans = [m.span() for m in _NUM_RE.finditer(data)]
    chosen = {int((frac**3 if biased else frac) * len(spans)): v for frac, v, biased in edits}
    for idx in sorted(chosen, reverse=True):
        a, b = spans[idx]
        data = data[:a] + chosen[idx].encode() + data[b:]
    return data


@contextmanager
def memory_budget(nbytes: int = 2 << 30):
    """Cap this process's address space at its current size + ``nbytes`` (soft limit, restored)."""
    with open("/proc/self/statm") as f:
        current = int(f.read().split()[0]) * resource.getpagesize()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = current + nbytes
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def load_and_lower_strict(path: Path):
    """Only ModelFileError / SpecError may escape; a lowered model has finite coefficients."""
    try:
        with memory_budget():
            m = acegen.load(path)
            ir = m.ir()
    except (ModelFileError, SpecError):
        return
    for sp in ir.species:
        assert np.isfinite(sp.coeffs).all()


@pytest.mark.parametrize("name", FILES)
@settings(max_examples=20, deadline=timedelta(seconds=20),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(edits=extreme_edits)
def test_fuzz_pace_extremes(tmp_path, shared_dir, name, edits):
    p = tmp_path / ("extreme" + Path(name).suffix)
    p.write_bytes(with_extremes((shared_dir / "potentials" / name).read_bytes(), edits))
    load_and_lower_strict(p)


@settings(max_examples=20, deadline=timedelta(seconds=20),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(edits=extreme_edits)
def test_fuzz_acejl_extremes(tmp_path, shared_dir, edits):
    """ACE.jl exports (reader only: lowering this file takes seconds)."""
    from acegen.io.pace import read_pace

    p = tmp_path / "extreme.yace"
    p.write_bytes(with_extremes((shared_dir / "potentials" / "TiAl_ACEjl_tutorial_20230120.yace").read_bytes(), edits))
    try:
        with memory_budget():
            pot = read_pace(p)
    except ModelFileError:
        return
    assert pot.rcut_max <= 100.0


@settings(max_examples=30, deadline=timedelta(seconds=20),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(edits=extreme_edits)
def test_fuzz_gracefs_extremes(tmp_path, shared_dir, edits):
    from acegen.io.gracefs import read_gracefs

    p = tmp_path / "extreme.yaml"
    p.write_bytes(with_extremes((shared_dir / "potentials" / "gracefs" / "test_export_to_yaml.yaml").read_bytes(), edits))
    try:
        with memory_budget():
            pot = read_gracefs(p)
    except ModelFileError:
        return
    assert np.isfinite(pot.crad).all() and np.isfinite(pot.Z).all() and 0 < pot.rcut <= 100.0


@settings(max_examples=30, deadline=timedelta(seconds=20),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(edits=extreme_edits)
def test_fuzz_json_extremes(tmp_path, edits):
    import json

    spec = acegen.BasisSpec(["Cu"], 2, 4, rcut=4.0)
    m = acegen.Model(spec, np.linspace(-1, 1, acegen.lower(spec).n_params), name="fz")
    p = tmp_path / "extreme.json"
    # the spec first (sizes, cutoffs, exponents), then the coefficients
    d = m.to_dict()
    text = json.dumps({"spec": d["spec"], **{k: v for k, v in d.items() if k != "spec"}})
    p.write_bytes(with_extremes(text.encode(), edits))
    load_and_lower_strict(p)


def test_bbasis_function_whose_coupling_vanishes(tmp_path, shared_dir):
    """A found example: an edit of a B-basis .yaml that leaves a B function without any
    m-combination (its coupling vanishes) loads; such a function contributes nothing."""
    p = tmp_path / "extreme.yaml"
    p.write_bytes(with_extremes((shared_dir / "potentials" / "Cu-III.yaml").read_bytes(), [(0.72265625, "0", False)]))
    load_and_lower_strict(p)
