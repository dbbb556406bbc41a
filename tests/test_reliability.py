"""Reliability and first-use defects: shared calculators, degenerate cells, CLI paths,
the cache command, progress feedback and the test-suite data note."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from ase.build import bulk

import acegen

from .models import model, random_structure


@pytest.fixture(scope="module")
def calc():
    return acegen.Calculator(model("CuNiAl_o3"), target="c")


def test_shared_calculator_threads_get_their_own_results(calc):
    """One Calculator used by several threads: each thread gets its own structure's results."""
    structures = [random_structure(["Cu", "Ni", "Al"], "bulk", seed=s) for s in range(4)]
    structures.append(bulk("Cu", "fcc", a=3.6, cubic=True).repeat((3, 3, 3)))
    expected = []
    for a in structures:
        b = a.copy()
        b.calc = calc
        expected.append((b.get_potential_energy(), b.get_forces().copy()))
    errors: list[str] = []
    barrier = threading.Barrier(len(structures))

    def work(k: int) -> None:
        atoms = structures[k].copy()
        barrier.wait()
        for _ in range(15):
            calc.reset()
            atoms.calc = calc
            e = atoms.get_potential_energy()
            f = atoms.get_forces()
            if not np.isclose(e, expected[k][0], rtol=0, atol=1e-9) or f.shape != expected[k][1].shape \
                    or not np.allclose(f, expected[k][1], rtol=0, atol=1e-9):
                errors.append(f"structure {k}: energy {e} instead of {expected[k][0]}")
                return

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(structures))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]


@pytest.mark.parametrize("axis", [0, 2])
def test_near_flat_cell_is_refused_fast(axis):
    """A periodic cell with one axis 1e-5 Å thick would need ~10^6 images per atom: refused
    before anything is allocated, naming the axis."""
    import time

    from acegen.runtime.neighbours import build_neighbours

    lengths = [3.0, 3.0, 3.0]
    lengths[axis] = 1e-5
    atoms = bulk("Cu", "sc", a=3.0)
    atoms.set_cell(np.diag(lengths))
    t0 = time.perf_counter()
    with pytest.raises(acegen.StructureError, match=f"cell axis {axis}.*periodic images"):
        build_neighbours(atoms, 5.5)
    assert time.perf_counter() - t0 < 2.0


def test_small_cell_with_many_images_still_evaluates():
    """The bound on images is far above what small but sane cells need."""
    from acegen.runtime.neighbours import build_neighbours

    atoms = bulk("Cu", "sc", a=1.0)  # an unphysical 1 Å cell: (2·6 + 1)^3 images within 5.5 Å
    nl = build_neighbours(atoms, 5.5)
    d = np.linalg.norm(nl.rij, axis=1)
    assert nl.n_pairs == sum(1 for x in range(-6, 7) for y in range(-6, 7) for z in range(-6, 7)
                             if 0 < x * x + y * y + z * z < 5.5**2)
    assert d.max() < 5.5


def test_missing_shared_data_says_how_to_point_at_it(tmp_path):
    """From a clone without ../shared the data-dependent tests skip with a reason naming
    ACEGEN_SHARED, and the run ends with a one-line note."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    env = dict(os.environ, ACEGEN_SHARED=str(tmp_path / "missing"))
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-p", "no:xdist",
         "tests/test_pace_io.py", "tests/test_fit_data.py"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=300,
    ).stdout
    skipped = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert skipped, out[-2000:]
    assert all("ACEGEN_SHARED=/path/to/shared" in line for line in skipped if "peer reference" in line)
    assert any("peer reference data not found" in line for line in skipped)
    assert any(line.startswith("note:") and "ACEGEN_SHARED" in line for line in out.splitlines()), out[-2000:]


class _FakeTTY:
    """A text stream that says it is a terminal."""

    def __init__(self):
        import io

        self.buf = io.StringIO()

    def write(self, s):
        return self.buf.write(s)

    def flush(self):
        pass

    def isatty(self):
        return True

    def getvalue(self):
        return self.buf.getvalue()


def test_progress_status_only_on_a_terminal(monkeypatch):
    import io

    from acegen import progress

    monkeypatch.delenv("ACEGEN_QUIET", raising=False)
    tty = _FakeTTY()
    with progress.status("lowering the basis", stream=tty):
        pass
    out = tty.getvalue()
    assert "acegen: lowering the basis …" in out and "done in" in out
    pipe = io.StringIO()
    with progress.status("lowering the basis", stream=pipe):
        pass
    assert pipe.getvalue() == ""
    assert list(progress.bar(range(3), desc="x", stream=pipe)) == [0, 1, 2] and pipe.getvalue() == ""
    assert list(progress.bar(range(3), desc="assembling", stream=tty)) == [0, 1, 2]
    assert "assembling" in tty.getvalue()
    # asked to be quiet: nothing, even on a terminal
    monkeypatch.setenv("ACEGEN_QUIET", "1")
    quiet = _FakeTTY()
    with progress.status("compiling", stream=quiet):
        pass
    assert quiet.getvalue() == ""
    monkeypatch.delenv("ACEGEN_QUIET")
    progress.set_quiet(True)
    try:
        with progress.status("compiling", stream=quiet):
            pass
    finally:
        progress.set_quiet(None)
    assert quiet.getvalue() == ""
    # a failure is reported as such and propagates
    tty = _FakeTTY()
    with pytest.raises(RuntimeError):
        with progress.status("solving", stream=tty):
            raise RuntimeError("boom")
    assert "solving: failed" in tty.getvalue()


def test_long_work_reports_on_a_terminal_only(monkeypatch, tmp_path):
    """Lowering a basis and compiling a kernel the first time say so on a terminal's stderr;
    nothing is written when stderr is not a terminal."""
    import io
    import sys

    from acegen.jit.cache import build_library
    from acegen.jit.toolchain import detect, find_c_compiler

    monkeypatch.delenv("ACEGEN_QUIET", raising=False)
    monkeypatch.setenv("ACEGEN_CACHE_DIR", str(tmp_path / "cache"))
    spec = acegen.BasisSpec(elements=["Cu"], order=2, totaldegree=4, rcut=4.0)
    tty = _FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    acegen.lower(spec, cache=False)
    assert "acegen: lowering the basis (Cu, order 2" in tty.getvalue() and "done in" in tty.getvalue()
    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stderr", pipe)
    acegen.lower(spec, cache=False)
    assert pipe.getvalue() == ""
    if find_c_compiler(required=False) is None:
        pytest.skip("no C compiler")
    tc = detect()
    src = {"tiny.c": "int acegen_tiny(void) { return 7; }\n"}
    monkeypatch.setattr(sys, "stderr", tty)
    build_library(src, tc, tc.flags(openmp=False))
    assert "acegen: compiling tiny.c" in tty.getvalue()
    before = tty.getvalue()
    build_library(src, tc, tc.flags(openmp=False))  # a cache hit: silent
    assert tty.getvalue() == before


def test_first_llvm_compile_reports_on_a_terminal(monkeypatch, tmp_path):
    """The LLVM target's first compile (an object-cache miss) says so; a cache hit is silent."""
    import sys

    monkeypatch.delenv("ACEGEN_QUIET", raising=False)
    monkeypatch.setenv("ACEGEN_CACHE_DIR", str(tmp_path / "cache"))
    model = acegen.Model.random(acegen.BasisSpec(elements=["Cu"], order=2, totaldegree=4, rcut=4.0), seed=2)
    ir = model.ir()
    from acegen.backends.llvm import compile_llvm

    tty = _FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    compile_llvm(ir)
    assert "(LLVM -O" in tty.getvalue() and "done in" in tty.getvalue(), tty.getvalue()
    before = tty.getvalue()
    compile_llvm(ir)  # from the object cache: silent
    assert tty.getvalue() == before


def test_fit_solve_reports_on_a_terminal(monkeypatch):
    import sys

    from acegen.fit import load_training_set
    from acegen.fit.driver import fit_linear

    from .fit_toy import PairToy, label, random_structures

    monkeypatch.delenv("ACEGEN_QUIET", raising=False)
    toy = PairToy(4)
    ts = load_training_set(label(random_structures(6), toy, np.ones(4)), virial_key="virial", eref="zero")
    tty = _FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    fit_linear(ts, toy)
    out = tty.getvalue()
    assert "acegen: solving the fit (" in out and "parameters, blr): done in" in out
    assert "assembling" in out
    monkeypatch.setenv("ACEGEN_QUIET", "1")
    quiet = _FakeTTY()
    monkeypatch.setattr(sys, "stderr", quiet)
    fit_linear(ts, toy)
    assert quiet.getvalue() == ""


def test_stale_build_folders_are_removed_at_the_next_build(monkeypatch, tmp_path):
    """A compile killed half-way leaves .build-* in the cache: the next build removes it when it
    is old and unlocked, and leaves fresh or locked ones alone."""
    import os
    import time

    import filelock

    from acegen.jit.cache import STALE_BUILD_S, build_library, kernels_dir
    from acegen.jit.toolchain import detect, find_c_compiler

    if find_c_compiler(required=False) is None:
        pytest.skip("no C compiler")
    monkeypatch.setenv("ACEGEN_CACHE_DIR", str(tmp_path / "cache"))
    folder = kernels_dir()
    old = time.time() - STALE_BUILD_S - 60
    stale = folder / ".build-0123456789abcdef-x1"
    fresh = folder / ".build-1123456789abcdef-x2"
    busy = folder / ".build-2123456789abcdef-x3"
    for d in (stale, fresh, busy):
        (d / "src").mkdir(parents=True)
        (d / "lib.so").write_bytes(b"\0" * 1000)
    for d in (stale, busy):
        os.utime(d, (old, old))
    held = filelock.FileLock(str(folder / ("2123456789abcdef" + "0" * 48 + ".lock")))
    held.acquire()
    try:
        tc = detect()
        build_library({"stale_probe.c": "int acegen_stale_probe(void) { return 1; }\n"}, tc, tc.flags(openmp=False))
    finally:
        held.release()
    assert not stale.exists()
    assert fresh.exists() and busy.exists()


def test_evaluation_with_vesin_equals_c(monkeypatch):
    """Without a C compiler the neighbour list is vesin's and the scatter NumPy's: the kernel
    results agree with the C neighbour list to round-off."""
    from acegen.calculator import evaluate
    from acegen.runtime import neighbours

    if neighbours._native() is None:
        pytest.skip("no C compiler")
    m = model("CuNiAl_o3")
    kernel = m.compile("c")
    atoms = random_structure(["Cu", "Ni", "Al"], "bulk", seed=5)
    rc = float(np.max(kernel.rcut))
    with_c = evaluate(kernel, m.elements, atoms, rc)
    monkeypatch.setattr(neighbours, "_native", lambda: None)
    assert neighbours.neighbour_backend() == "vesin"
    with_vesin = evaluate(kernel, m.elements, atoms, rc)
    assert with_vesin["energy"] == pytest.approx(with_c["energy"], rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(with_vesin["energies"], with_c["energies"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(with_vesin["forces"], with_c["forces"], rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(with_vesin["stress"], with_c["stress"], rtol=1e-10, atol=1e-13)


NO_CC_CHILD = """
import subprocess, sys
from acegen.jit.toolchain import find_c_compiler
assert find_c_compiler(required=False) is None, "a C compiler is still reachable"
from acegen.runtime.neighbours import neighbour_backend
print("backend:", neighbour_backend())
"""


def test_without_a_c_compiler(tmp_path):
    """No compiler on PATH: the neighbour list is vesin's; `acegen compile` says in one line that
    a shared library needs a C compiler; `acegen demo` names the LLVM kernel it really used."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python").symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if k not in ("CC", "PYTHONPATH")}
    env.update(PATH=str(bindir), PYTHONPATH=str(repo), ACEGEN_CACHE_DIR=str(tmp_path / "cache"),
               OPENBLAS_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", NO_CC_CHILD], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "backend: vesin" in r.stdout
    m = model("Cu_o1")
    path = tmp_path / "cu.json"
    path.write_text(json.dumps(m.to_dict()))
    r = subprocess.run([sys.executable, "-m", "acegen.cli", "compile", str(path), "-o", str(tmp_path / "lib.so")],
                       env=env, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "a shared library needs a C compiler" in lines[0], r.stderr
    assert not (tmp_path / "lib.so").exists()
    r = subprocess.run([sys.executable, "-m", "acegen.cli", "demo"], env=env, capture_output=True, text=True,
                       cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "compiled (llvm, asked for c; neighbour list: vesin)" in r.stdout, r.stdout


def test_cli_filesystem_errors_and_interrupts_are_clean(tmp_path, monkeypatch, capsys):
    from acegen import cli

    folder = tmp_path / "a_folder.json"
    folder.mkdir()
    assert cli.main(["info", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("acegen: error:") and "a_folder.json" in err

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_info", interrupted)
    assert cli.main(["info", "x.json"]) == 130
    assert "acegen: interrupted" in capsys.readouterr().err

    # an interrupt while the library is published leaves no temporary file
    src = tmp_path / "built.so"
    src.write_bytes(b"\x7fELF" + b"\0" * 4096)
    out = tmp_path / "out" / "lib.so"
    out.parent.mkdir()

    def boom(a, b):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        cli.publish_copy(src, out)
    assert list(out.parent.iterdir()) == []


def test_cache_clear_leaves_entries_being_built(monkeypatch, tmp_path):
    import filelock

    from acegen.jit import cache_admin

    root = tmp_path / "cache"
    kernels = root / "kernels"
    kernels.mkdir(parents=True)
    for key in ("a" * 64, "b" * 64):
        (kernels / f"{key}.so").write_bytes(b"lib")
        (kernels / f"{key}.so.sha256").write_text("x\n")
        (kernels / f"{key}.lock").touch()
    (root / "coupling").mkdir()
    (root / "coupling" / "c.json").write_text("{}")
    assert cache_admin.info(root).entries == 3
    held = filelock.FileLock(str(kernels / f"{'b' * 64}.lock"))
    with held:
        removed, busy = cache_admin.clear(root, lock_timeout_s=0.05)
    assert busy == ["b" * 64]
    assert not (kernels / f"{'a' * 64}.so").exists() and (kernels / f"{'b' * 64}.so").exists()
    assert (kernels / f"{'a' * 64}.lock").exists()  # lock files stay
    assert not (root / "coupling").exists()
    assert cache_admin.info(root).entries == 1
