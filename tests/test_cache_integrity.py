"""A cached kernel is verified before use: a library whose bytes changed while its size and
modification time were kept (bit rot, zero-filled blocks after a crash, a restored backup)
must never be loaded through the kernel cache's source index."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import acegen
from acegen.jit.cache import file_sha256, lookup_source


_PROBE = """
import json, sys
import numpy as np
from ase.build import bulk
import acegen
model = acegen.load(sys.argv[1])
atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
atoms.rattle(0.05, seed=1)
atoms.calc = acegen.Calculator(model)
print(json.dumps({"e": atoms.get_potential_energy(), "f": atoms.get_forces().tolist(),
                  "lib": str(model.compile("c").library_path)}))
"""


def _probe(path: Path, env: dict) -> dict:
    """Energy and forces from a fresh process (a library is mapped once per process, so the
    damaged file must be loaded by a process that never saw the good one)."""
    out = subprocess.run([sys.executable, "-c", _PROBE, str(path)], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _damage_keeping_size_and_mtime(lib: Path, blob: bytes) -> None:
    """Zero a block of the library's embedded radial table (the model's data, so the library
    still loads and runs) in a new file put in place, with the old size and mtime."""
    st = os.stat(lib)
    data = bytearray(lib.read_bytes())
    at = data.find(blob[:256])
    assert at >= 0, "the radial table was not found in the library"
    n = min(len(blob), 1 << 14)
    data[at : at + n] = bytes(n)
    tmp = lib.with_name(lib.name + ".damaged")
    tmp.write_bytes(bytes(data))
    os.replace(tmp, lib)
    os.utime(lib, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(lib).st_size == st.st_size and os.stat(lib).st_mtime_ns == st.st_mtime_ns


def test_damaged_library_behind_the_source_index_is_rebuilt(tmp_path):
    env = dict(os.environ, ACEGEN_CACHE_DIR=str(tmp_path / "cache"))
    spec = acegen.BasisSpec(elements=["Cu"], order=2, totaldegree=6, rcut=4.5)
    path = tmp_path / "cu.yace"
    acegen.Model.random(spec, seed=3).save(path)

    good = _probe(path, env)  # compiles and records the source index
    lib = Path(good["lib"])
    blobs = sorted((lib.parent / (lib.stem + ".src")).glob("*.bin"), key=lambda p: p.stat().st_size)
    assert blobs, "kernel carries no binary table to damage"
    _damage_keeping_size_and_mtime(lib, blobs[-1].read_bytes())

    again = _probe(path, env)  # a fresh process: the model file goes through the source index
    assert again["e"] == pytest.approx(good["e"], rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(again["f"], good["f"], rtol=1e-12, atol=1e-12)
    sidecar = lib.with_name(lib.name + ".sha256")
    assert sidecar.read_text().strip() == file_sha256(lib)  # replaced by a verified build


def test_index_entry_without_digest_is_a_miss(tmp_path, monkeypatch):
    """Index entries written without a digest (older acegen) are not trusted."""
    import json

    from acegen.jit import cache

    monkeypatch.setenv("ACEGEN_CACHE_DIR", str(tmp_path / "cache"))
    lib = cache.kernels_dir() / "x.so"
    lib.write_bytes(b"\0" * 64)
    cache.record_source("k" * 64, lib, name="x")
    assert lookup_source("k" * 64) is not None
    entry_path = cache.kernels_dir() / "index" / ("k" * 64 + ".json")
    entry = json.loads(entry_path.read_text())
    entry.pop("sha256")
    entry_path.write_text(json.dumps(entry))
    assert lookup_source("k" * 64) is None
