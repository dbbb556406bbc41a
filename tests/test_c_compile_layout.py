"""The C kernel's layout for fast cold compiles of large PACE models:

* many-element files whose bonds share spline tables (benchmarks/make_pace100.py: N elements
  from the YBCO template, the N² bonds on at most 16 distinct tables): one radial function per
  distinct table, and the kernel still evaluates equal to the IR interpreter;
* large per-species output coefficient arrays (npj Cu) live in the spline-table blob, not in
  C initialisers, and the kernel still matches pyace's reference values."""

from __future__ import annotations

import importlib.util
import re
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest

import acegen
from acegen.backends.c import COEF_IN_BLOB, blob_name, compile_c, emit_c, radial_functions
from acegen.backends.plan import build_plan
from acegen.io.pace import read_pace, write_yace
from acegen.ir.interp import evaluate_ir

from .c_backend_models import random_environment

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "make_pace100.py"
_spec = importlib.util.spec_from_file_location("make_pace100", _PATH)
mp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mp)

N_ELEMENTS = 6


@pytest.fixture(scope="module")
def ir(tmp_path_factory):
    template = read_pace(Path(str(files("acegen") / "data" / "YBCO_ACE.yace")))
    pot = mp.make(template, N_ELEMENTS, 12, seed=3)
    path = tmp_path_factory.mktemp("many") / "pace6.yace"
    write_yace(pot, path)
    return acegen.load(path).ir()


def test_bonds_on_one_table_share_one_radial_function(ir):
    plan = build_plan(ir, merge_shared=True)
    names, users = radial_functions(plan)
    bonds = [b for s in plan.species for b in s.bonds]
    assert len(names) == len(bonds) == N_ELEMENTS**2
    # every function serves bonds with one "slots" table copy and equal records
    for fn, members in users.items():
        sel = [b for b in bonds if names[f"{b.zi}_{b.zj}"] == fn]
        assert len(sel) == len(members)
        assert len({(b.slot_offset, b.slots, b.rec) for b in sel}) == 1
    shared = [fn for fn, members in users.items() if len(members) > 1]
    assert shared, "the model must have bonds that share a table"
    assert len(users) < len(bonds)
    src = next(v for k, v in emit_c(ir).items() if k.endswith(".c"))
    defined = re.findall(r"^static void (radial_\d+_\d+)\(", src, flags=re.M)
    assert sorted(defined) == sorted(users)
    for s in plan.species:
        for b in s.bonds:
            assert re.search(rf"\b{names[f'{b.zi}_{b.zj}']}\(cnt_, rb, rec{s.bonds.index(b)}\b", src)


@pytest.mark.parametrize("seed", range(2))
def test_compiled_kernel_matches_the_interpreter(ir, seed):
    k = compile_c(ir)
    env = random_environment(seed, n_centres=10, max_nb=24, radius=5.5, n_species=N_ELEMENTS)
    E, G = k.compute(*env)
    Er, Gr = evaluate_ir(ir, *env)
    for a, b in ((E, Er), (G, Gr)):
        scale = float(np.max(np.abs(b)))
        assert scale > 0
        assert float(np.max(np.abs(a - b))) <= 1e-12 * scale


def test_large_coefficient_arrays_live_in_the_table_blob(shared_dir):
    ir = acegen.load(shared_dir / "potentials" / "Cu-PBE-core-rep.ace").ir()
    plan = build_plan(ir, merge_shared=True)
    files = emit_c(ir)
    src = files[f"acegen_{ir.name}.c"]
    blob = np.frombuffer(files[blob_name(ir.name)], dtype="<f8")
    tables = plan.tables("slots")
    (s,) = plan.species
    assert s.coef.size >= COEF_IN_BLOB
    m = re.search(rf"static const double \*const coef_0 = acegen_{ir.name}_tables \+ (\d+);", src)
    assert m, "coef_0 must point into the blob"
    off = int(m.group(1))
    assert off == tables.size and off % 8 == 0
    np.testing.assert_array_equal(blob[:off], tables)
    np.testing.assert_array_equal(blob[off : off + s.coef.size], s.coef.ravel())
    assert blob.size == off + s.coef.size
    assert not re.search(r"static const double coef_0\[", src)


def test_small_coefficient_arrays_stay_in_c(ir):
    plan = build_plan(ir, merge_shared=True)
    src = next(v for k, v in emit_c(ir).items() if k.endswith(".c"))
    for s in plan.species:
        assert s.coef.size < COEF_IN_BLOB
        assert f"static const double coef_{s.zi}[" in src
