"""JIT toolchain, kernel cache (key, lock, verification, fallback) and the emitted-folder build."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from acegen.backends import build_emitted, emit
from acegen.backends.c import TABLES_AT_LOAD, blob_name, cdef, compile_c, emit_c
from acegen.backends.common import template_root
from acegen.errors import CompileError
from acegen.jit import CompiledKernel
from acegen.jit.cache import build_library, cache_key, file_sha256
from acegen.jit.toolchain import BASE_FLAGS, Toolchain, detect, find_c_compiler

from .c_backend_models import make_model, random_environment


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("ACEGEN_CACHE_DIR", str(d))
    return d / "kernels"


def test_cache_key_covers_sources_flags_and_compiler():
    tc = detect()
    flags = tc.flags()
    src = {"a.c": "int x;", "t.bin": b"\x00\x01"}
    key = cache_key(src, tc, flags)
    assert key == cache_key(dict(reversed(list(src.items()))), tc, flags)
    assert key != cache_key({"a.c": "int y;", "t.bin": b"\x00\x01"}, tc, flags)
    assert key != cache_key({"a.c": "int x;", "t.bin": b"\x00\x02"}, tc, flags)
    assert key != cache_key({"b.c": "int x;", "t.bin": b"\x00\x01"}, tc, flags)
    assert key != cache_key(src, tc, flags + ("-g",))
    other = Toolchain(tc.command, tc.version + " patched", tc.family, tc.openmp, tc.native_target)
    assert key != cache_key(src, other, flags)


def test_flags_are_ieee_safe():
    tc = detect()
    flags = tc.flags(openmp=True, march_native=True)
    assert not any("fast-math" in f or f == "-Ofast" for f in flags)
    assert "-ffp-contract=off" in flags and "-O3" in flags and "-fPIC" in flags
    assert ("-fopenmp" in flags) == tc.openmp
    assert ("-march=native" in flags) == tc.march_native
    assert "-fopenmp" not in tc.flags(openmp=False)
    assert "-march=native" not in tc.flags()


def _concurrent_child(cache_root: str, barrier, queue) -> None:
    os.environ["ACEGEN_CACHE_DIR"] = cache_root
    from tests.c_backend_models import make_model as mk
    from tests.c_backend_models import random_environment as env_of

    ir = mk(seed=21, name="concurrent", n_monomials=20)
    barrier.wait()
    k = compile_c(ir)
    E, G = k.compute(*env_of(1))
    queue.put((str(k.path), os.stat(k.path).st_ino, E.tolist(), G.tolist()))


def test_two_processes_compiling_at_once_build_one_library(cache_dir, tmp_path, monkeypatch):
    """Both processes get the same library; the compiler ran on the kernel exactly once."""
    real = find_c_compiler()
    log = tmp_path / "cc.log"
    wrapper = tmp_path / "cc-wrapper.sh"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\nexec {" ".join(real)} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("CC", str(wrapper))
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    queue = ctx.Queue()
    procs = [ctx.Process(target=_concurrent_child, args=(str(cache_dir.parent), barrier, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert results[0] == results[1]
    libs = sorted(cache_dir.glob("*.so"))
    assert [str(p) for p in libs] == [results[0][0]]
    assert os.stat(libs[0]).st_ino == results[0][1]
    assert (cache_dir / (libs[0].name + ".sha256")).read_text().strip() == file_sha256(libs[0])
    assert not list(cache_dir.glob(".build-*"))
    kernel_builds = [line for line in log.read_text().splitlines() if "acegen_concurrent.c" in line]
    assert len(kernel_builds) == 1, kernel_builds


def _entry(ir):
    tc = detect()
    flags = tc.flags(march_native=True)  # compile_c's default
    sources = emit_c(ir)
    if blob_name(ir.name) in sources:
        flags = (*flags, TABLES_AT_LOAD)  # compile_c's default for a model with spline tables
    return sources, tc, flags


def test_corrupted_library_is_rebuilt(cache_dir):
    ir = make_model(seed=22, name="corrupt_sidecar", n_monomials=15)
    path = build_library(*_entry(ir))
    good = file_sha256(path)
    path.write_bytes(b"not a shared library")
    k = compile_c(ir)  # sidecar no longer matches: rebuilt before loading
    assert k.path == path and file_sha256(path) == good
    k.compute(*random_environment(0))


def test_library_that_fails_to_load_is_rebuilt(cache_dir):
    ir = make_model(seed=23, name="corrupt_load", n_monomials=15)
    path = build_library(*_entry(ir))
    good = file_sha256(path)
    path.write_bytes(b"garbage with a matching sidecar")
    (path.parent / (path.name + ".sha256")).write_text(file_sha256(path) + "\n")
    k = compile_c(ir)  # verification passes, dlopen fails: forced rebuild
    assert file_sha256(k.path) == good
    k.compute(*random_environment(0))


def test_unwritable_cache_dir_falls_back_with_warning(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("ACEGEN_CACHE_DIR", str(blocker / "cache"))
    ir = make_model(seed=24, name="fallback", n_monomials=15)
    with pytest.warns(RuntimeWarning, match="not writable"):
        k = compile_c(ir)
    assert blocker not in k.path.parents and k.path.is_file()
    k.compute(*random_environment(0))


def test_compile_error_carries_compiler_message(tmp_path):
    src = tmp_path / "bad.c"
    src.write_text("int f(void) { return undeclared_thing; }\n")
    with pytest.raises(CompileError, match="undeclared_thing"):
        detect().compile_shared([src], tmp_path / "bad.so", BASE_FLAGS)


def test_missing_compiler(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(CompileError, match="does not run"):
        detect()
    monkeypatch.delenv("CC")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_c_compiler(required=False) is None
    with pytest.raises(CompileError, match="no C compiler"):
        find_c_compiler()


def test_emitted_folder_builds_outside_the_cache(cache_dir, tmp_path):
    """``acegen emit`` output (sources + blob) builds by itself and computes the same numbers."""
    ir = make_model(seed=25, name="emitted", n_monomials=15)
    files = emit(ir, "c")
    out = tmp_path / "emitted"
    out.mkdir()
    for name, data in files.items():
        (out / name).write_bytes(data if isinstance(data, bytes) else data.encode())
    lib = build_emitted(out, "c")
    n = len(ir.elements)
    rcut = np.array([[ir.rcut(a, b) for b in range(n)] for a in range(n)])
    k1 = CompiledKernel(lib, ir.name, cdef(ir.name), n_species=n, rcut=rcut, signature=ir.signature())
    k2 = compile_c(ir)
    env = random_environment(3)
    for a, b in zip(k1.compute(*env), k2.compute(*env)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(CompileError, match="signature"):
        CompiledKernel(lib, ir.name, cdef(ir.name), n_species=n, rcut=rcut, signature="0" * 64)


def test_templates_found_and_marked():
    root = template_root()
    for name in ("kernel.c.j2", "kernel.h.j2", "cdef.j2"):
        first = (root / "c" / name).read_text().splitlines()[0]
        assert first == "/* {{ preamble }} */", name
