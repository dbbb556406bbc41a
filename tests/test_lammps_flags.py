"""The LAMMPS plugin's kernel is built with the target flags of the cached C kernel
(-march=native when the compiler accepts it); PORTABLE=1 builds for the default target."""

from __future__ import annotations

import shutil
import subprocess

import pytest

import acegen
from acegen.backends.lammps import write_lammps
from acegen.jit.toolchain import detect


def _dry_run(folder, *args) -> list[str]:
    out = subprocess.run(["make", "-n", "-B", "-C", str(folder), "LAMMPS_INCLUDE=/nonexistent", "MPI_INCLUDE=",
                          *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if " -c -o " in line]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_plugin_kernel_flags_match_the_cached_kernel(tmp_path):
    toolchain = detect()
    if not toolchain.march_native:
        pytest.skip("the C compiler does not accept -march=native")
    spec = acegen.BasisSpec(elements=["Cu"], order=2, totaldegree=5, rcut=4.5)
    folder = write_lammps(acegen.Model.random(spec, seed=0, name="flags"), tmp_path / "plugin")
    kernel_flags = toolchain.flags(openmp=False, march_native=True)
    native = _dry_run(folder)
    kernel = [line for line in native if "acegen_flags.c" in line]
    assert kernel and all(f in kernel[0].split() for f in kernel_flags if f not in ("-shared",))
    assert all("-march=native" in line.split() for line in native)  # the pair style too
    portable = _dry_run(folder, "PORTABLE=1")
    assert portable and not any("-march=native" in line for line in portable)
    chosen = _dry_run(folder, "MARCH=-march=x86-64")
    assert all("-march=x86-64" in line.split() and "-march=native" not in line for line in chosen)


def test_build_lammps_rebuilds_when_the_target_changes(tmp_path, monkeypatch):
    """A folder built natively and then portably (ACEGEN_PORTABLE, or portable=True) is
    rebuilt from scratch: make alone would keep the native objects."""
    from acegen.backends.lammps import build_lammps, find_lammps
    from acegen.errors import CompileError

    if shutil.which("make") is None:
        pytest.skip("needs make")
    try:
        find_lammps()
    except CompileError as exc:
        pytest.skip(str(exc))
    spec = acegen.BasisSpec(elements=["Cu"], order=2, totaldegree=4, rcut=4.0)
    folder = write_lammps(acegen.Model.random(spec, seed=0, name="tgt"), tmp_path / "plugin")
    build_lammps(folder)
    obj = folder / "acegen_tgt.o"
    native = obj.read_bytes()
    assert (folder / ".acegen-build-target").read_text().strip() == "native"
    monkeypatch.setenv("ACEGEN_PORTABLE", "1")
    build_lammps(folder)
    assert (folder / ".acegen-build-target").read_text().strip() == "portable"
    portable = obj.read_bytes()
    monkeypatch.delenv("ACEGEN_PORTABLE")
    build_lammps(folder, portable=False)
    assert obj.read_bytes() == native
    if detect().march_native:
        assert native != portable  # the portable build did not reuse the native object


@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake")
def test_cmake_kernel_flags(tmp_path):
    """The CMake build adds -march=native like the Makefile; -DACEGEN_PORTABLE=ON does not."""
    import json
    import sys

    from acegen.backends.lammps import find_lammps
    from acegen.errors import CompileError

    try:
        find_lammps()
    except CompileError as exc:
        pytest.skip(str(exc))
    if not detect().march_native:
        pytest.skip("the C compiler does not accept -march=native")
    spec = acegen.BasisSpec(elements=["Cu"], order=2, totaldegree=4, rcut=4.0)
    folder = write_lammps(acegen.Model.random(spec, seed=0, name="cm"), tmp_path / "plugin")
    for portable in ("OFF", "ON"):
        build = tmp_path / f"build-{portable}"
        out = subprocess.run(["cmake", "-S", str(folder), "-B", str(build), f"-DPython3_EXECUTABLE={sys.executable}",
                              f"-DACEGEN_PORTABLE={portable}", "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON"],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        commands = json.loads((build / "compile_commands.json").read_text())
        kernel = [c["command"] for c in commands if c["file"].endswith("acegen_cm.c")]
        assert kernel, commands
        assert ("-march=native" in kernel[0].split()) == (portable == "OFF"), kernel[0]
