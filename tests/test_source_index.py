"""The kernel cache's source index for every model kind and target: a model whose kernel was
compiled before (same content, target and options) is loaded in a fresh process without
parsing, lowering or compiling; a changed coefficient or file never reaches the old kernel;
a damaged cached artefact is rebuilt.  What a process did is read from
``acegen.jit.cache.events`` (counters), never from timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import acegen
from acegen.jit.cache import events
from acegen.spec import split_coefficients
from .c_backend_models import random_environment

SPEC = dict(elements=["Cu", "Ni"], order=2, totaldegree=5, rcut=4.5)

_PROBE = """
import json, sys
import numpy as np
import acegen
from acegen.jit.cache import events
kind, arg, target = sys.argv[1:4]
if kind == "random":
    spec = acegen.BasisSpec(elements=["Cu", "Ni"], order=2, totaldegree=5, rcut=4.5)
    model = acegen.Model.random(spec, seed=int(arg))
else:
    model = acegen.load(arg)
kernel = model.compile(target)
rng = np.random.default_rng(0)
n, nn = 3, 4
rij = rng.normal(size=(n * nn, 3)) + 2.0
e, d = kernel.compute(np.array([0, 1, 0], dtype=np.int32), np.arange(0, (n + 1) * nn, nn, dtype=np.int64),
                      np.array([0, 1] * (n * nn // 2), dtype=np.int32), rij)
print(json.dumps({"events": dict(events), "e": e.tolist(), "d": d.tolist(), "sympy": "sympy" in sys.modules}))
"""


def _probe(env: dict, kind: str, arg: str, target: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE, kind, arg, target], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("ACEGEN_CACHE_DIR", str(tmp_path / "cache"))
    return dict(os.environ, ACEGEN_CACHE_DIR=str(tmp_path / "cache"))


@pytest.mark.parametrize("target", ["c", "llvm"])
def test_fresh_process_uses_no_compilation(tmp_path, cache_env, target):
    """Spec-built (random), fitted JSON and PACE .yace models, C and LLVM: the second fresh
    process neither parses, lowers nor compiles, nor imports SymPy (the code generator's
    import, a quarter of a second), and computes the same numbers."""
    model = acegen.Model.random(acegen.BasisSpec(**SPEC), seed=1)
    model.save(tmp_path / "fit.json")
    model.save(tmp_path / "fit.yace")
    compiled = "c_build" if target == "c" else "llvm_compile"
    for kind, arg in (("random", "1"), ("file", str(tmp_path / "fit.json")), ("file", str(tmp_path / "fit.yace"))):
        first = _probe(cache_env, kind, arg, target)
        assert first["events"].get("lower", 0) == 1, (kind, first["events"])
        second = _probe(cache_env, kind, arg, target)
        ev = second["events"]
        assert ev.get("index_hit", 0) >= 1, (kind, ev)
        for what in ("lower", "parse", "c_build", "llvm_compile"):
            assert ev.get(what, 0) == 0, (kind, what, ev)
        assert first["sympy"] and not second["sympy"], kind
        assert second["e"] == first["e"] and second["d"] == first["d"]
    # the first JSON/yace probes found the C or LLVM library built for the random model
    # (same coefficients) in the content-addressed cache: at most one real compilation
    # per distinct kernel source, never one in the second processes (checked above)
    assert compiled


_ENV = random_environment(4, n_centres=6, max_nb=10, radius=4.5, n_species=2)


def _energies(kernel):
    return kernel.compute(*_ENV)


@pytest.mark.parametrize("target", ["c", "llvm"])
def test_changed_coefficient_never_hits_the_old_kernel(cache_env, target):
    spec = acegen.BasisSpec(**SPEC)
    base = acegen.Model.random(spec, seed=2)
    coef = base.coefficients.copy()
    k1 = acegen.Model(spec, coef, name="m").compile(target)
    again = acegen.Model(spec, coef.copy(), name="m")
    lowered = events["lower"]
    k_again = again.compile(target)
    assert events["lower"] == lowered  # found through the index
    for a, b in zip(_energies(k1), _energies(k_again)):
        np.testing.assert_array_equal(a, b)
    changed = coef.copy()
    k = next(i for i, f in enumerate(acegen.lower(spec).functions) if f.z0 == 1)
    assert (_ENV[0] == 1).any()
    changed[k] += 0.25  # a function of a species present in the environment
    m2 = acegen.Model(spec, changed, name="m")
    k2 = m2.compile(target)
    assert events["lower"] == lowered + 1  # a miss: lowered and compiled
    e1, e2 = _energies(k1)[0], _energies(k2)[0]
    assert not np.array_equal(e1, e2)
    np.testing.assert_allclose(e2, _energies(m2.compile("numpy"))[0], rtol=1e-10, atol=1e-12)
    # another seed, another name: other kernels too
    lowered = events["lower"]
    acegen.Model.random(spec, seed=3, name="m").compile(target)
    acegen.Model(spec, coef, name="other").compile(target)
    assert events["lower"] == lowered + 2


def test_changed_file_never_hits_the_old_kernel(tmp_path, cache_env):
    spec = acegen.BasisSpec(**SPEC)
    path = tmp_path / "pot.yace"
    acegen.Model.random(spec, seed=4).save(path)
    k1 = acegen.load(path).compile("llvm")
    m = acegen.load(path)
    assert m._pace is None  # indexed: not parsed
    acegen.Model.random(spec, seed=5).save(path)
    m2 = acegen.load(path)
    assert m2._pace is not None  # another content: parsed
    k2 = m2.compile("llvm")
    assert not np.array_equal(_energies(k1)[0], _energies(k2)[0])


def test_damaged_llvm_object_or_tables_are_rebuilt(tmp_path, cache_env):
    """Bytes of the cached object or of the tables file changed while size and modification
    time are kept: the index entry is not used, the kernel is recompiled, results unchanged."""
    path = tmp_path / "dmg.yace"
    acegen.Model.random(acegen.BasisSpec(**SPEC), seed=6).save(path)
    good = _energies(acegen.load(path).compile("llvm"))
    key = acegen.load(path)._source_index_key("llvm", {})
    entry = json.loads((acegen.jit.cache.kernels_dir() / "index" / f"{key}.json").read_text())
    assert entry["kind"] == "llvm" and entry["tables_doubles"] > 0
    for damaged in (Path(entry["library"]), Path(entry["files"][0]["path"])):
        st = os.stat(damaged)
        data = bytearray(damaged.read_bytes())
        data[len(data) // 2] ^= 0xFF
        damaged.write_bytes(bytes(data))
        os.utime(damaged, ns=(st.st_atime_ns, st.st_mtime_ns))
        lowered, compiled = events["lower"], events["llvm_compile"]
        kernel = acegen.load(path).compile("llvm")
        assert events["lower"] == lowered + 1, damaged
        if damaged.suffix == ".o":  # the object cache verifies the object too: recompiled
            assert events["llvm_compile"] == compiled + 1
        for a, b in zip(good, _energies(kernel)):
            np.testing.assert_array_equal(a, b)
        # the recompiled kernel was recorded again: the next load is found through the index
        lowered = events["lower"]
        acegen.load(path).compile("llvm")
        assert events["lower"] == lowered


def test_projection_kernel_through_the_index(cache_env):
    spec = acegen.BasisSpec(**SPEC)
    k1 = acegen.Model.random(spec, seed=7).projection_kernel("c")
    lowered = events["lower"]
    m = acegen.Model.random(spec, seed=7)
    k2 = m.projection_kernel("c")
    assert events["lower"] == lowered and m._coefficients is None
    for a, b in zip(_energies(k1), _energies(k2)):
        np.testing.assert_array_equal(a, b)


def test_recorded_basis_sizes_still_validate_coefficients(cache_env):
    """A JSON model of a specification lowered before is validated against the recorded basis
    sizes (no lowering): wrong lengths and non-finite values are still refused."""
    spec = acegen.BasisSpec(**SPEC)
    basis = acegen.lower(spec)
    good = np.zeros(basis.n_params)
    acegen.Model(spec, good)  # records the sizes
    with pytest.raises(acegen.errors.SpecError, match="expected"):
        acegen.Model(spec, np.zeros(basis.n_params + 1))
    with pytest.raises(acegen.errors.SpecError, match="pair"):
        acegen.Model(spec, {"manybody": np.zeros(len(basis)), "pair": np.zeros(len(basis.pair) + 2)})
    bad = good.copy()
    bad[0] = np.nan
    with pytest.raises(acegen.errors.SpecError, match="non-finite"):
        acegen.Model(spec, bad)
    mb, pr = split_coefficients(good, len(basis), len(basis.pair))
    assert (len(mb), len(pr)) == (len(basis), len(basis.pair))


def test_random_coefficients_are_drawn_on_demand_and_unchanged(cache_env):
    """Model.random draws lazily; the drawn vector equals the eager definition."""
    from acegen.model import _random_coefficients

    spec = acegen.BasisSpec(**SPEC)
    m = acegen.Model.random(spec, seed=8, scale=0.5)
    assert m._coefficients is None
    np.testing.assert_array_equal(m.coefficients, _random_coefficients(spec, acegen.lower(spec), 8, 0.5))


def test_damaged_basis_size_record_is_caught(cache_env):
    """A record of the basis sizes that was changed (total kept) lets a split through at
    construction, but the model refuses to fold its coefficients once the basis is lowered,
    and the record is rewritten."""
    from acegen.jit.cache import write_record
    from acegen.model import _basis_record_name, _recorded_basis_sizes

    spec = acegen.BasisSpec(**SPEC)
    basis = acegen.lower(spec)
    n_mb, n_pair = len(basis), len(basis.pair)
    acegen.Model(spec, np.zeros(n_mb + n_pair))  # records the sizes
    assert _recorded_basis_sizes(spec) == (n_mb, n_pair)
    write_record(_basis_record_name(spec), {"manybody": n_mb - 1, "pair": n_pair + 1})
    m = acegen.Model(spec, {"manybody": np.zeros(n_mb - 1), "pair": np.zeros(n_pair + 1)}, name="stale")
    with pytest.raises(acegen.errors.SpecError, match="stale record"):
        m.compile("c")
    assert _recorded_basis_sizes(spec) == (n_mb, n_pair)
    with pytest.raises(acegen.errors.SpecError, match="expected"):
        acegen.Model(spec, {"manybody": np.zeros(n_mb - 1), "pair": np.zeros(n_pair + 1)})
