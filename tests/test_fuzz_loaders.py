"""Hypothesis fuzzing of every model loader (acegen JSON, PACE .yace, .ace, .yaml) through the
public `acegen.load` and the lowering that follows it: the only exception allowed is
acegen's own, and nothing hangs (every example has a deadline)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import acegen

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
