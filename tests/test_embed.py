"""The embeddable C library folder (``acegen emit MODEL --target c``): it builds with make and
with CMake, its example programs (C, C++, Fortran) print the energy, forces and virial that
acegen's Python calculator computes for the same structure, and the whole-structure interface
(images, Cartesian shifts, ghost atoms, errors) is checked through cffi."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import cffi
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

import acegen
from acegen.backends import build_emitted, emit
from acegen.backends.c import emit_c
from acegen.backends.common import Status
from acegen.backends.embed import STATUS_TEXT, cdef, file_names
from acegen.cli import main as cli_main
from acegen.runtime.neighbours import build_neighbours

from . import models as tm
from .conftest import SHARED

MAKE = shutil.which("make")
CMAKE = shutil.which("cmake")
CC = shutil.which("cc") or shutil.which("gcc")
needs_make = pytest.mark.skipif(MAKE is None or CC is None, reason="make and a C compiler are needed")

_CALC: dict[str, acegen.Calculator] = {}


def calculator(model: acegen.Model) -> acegen.Calculator:
    if model.name not in _CALC:
        _CALC[model.name] = acegen.Calculator(model)
    return _CALC[model.name]


def _write(files: dict[str, str | bytes], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data if isinstance(data, bytes) else data.encode())
    return folder


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def parse_output(text: str) -> dict:
    """The structure and results an example program prints."""
    out: dict = {"symbols": [], "positions": [], "energies": [], "forces": []}
    for line in text.splitlines():
        key, *vals = line.split()
        if key == "cell":
            out["cell"] = np.array(vals, dtype=float).reshape(3, 3)
        elif key == "pbc":
            out["pbc"] = [v == "1" for v in vals]
        elif key == "atom":
            out["symbols"].append(vals[0])
            out["positions"].append([float(v) for v in vals[1:]])
        elif key == "energy":
            out["energy"] = float(vals[0])
        elif key == "energy_atom":
            out["energies"].append(float(vals[1]))
        elif key == "force":
            out["forces"].append([float(v) for v in vals[1:]])
        elif key == "virial":
            out["virial"] = np.array(vals, dtype=float).reshape(3, 3)
    out["atoms"] = Atoms(out["symbols"], positions=out["positions"], cell=out["cell"], pbc=out["pbc"])
    return out


def check_against_calculator(model: acegen.Model, out: dict, rtol: float = 1e-10) -> None:
    """Energy, per-atom energies, forces (and the stress from the virial) of a program's output
    against acegen.Calculator on the structure the program printed."""
    atoms = out["atoms"]
    atoms.calc = calculator(model)
    e = atoms.get_potential_energy()
    assert abs(out["energy"] - e) <= rtol * max(1.0, abs(e))
    np.testing.assert_allclose(out["energies"], atoms.get_potential_energies(), rtol=0, atol=rtol * max(1.0, abs(e)))
    F = atoms.get_forces()
    scale = max(1.0, float(np.abs(F).max()))
    np.testing.assert_allclose(np.array(out["forces"]), F, rtol=0, atol=rtol * scale)
    v = out["virial"]
    assert np.abs(v - v.T).max() <= 1e-9 * max(1.0, float(np.abs(v).max()))
    if all(atoms.pbc):
        s = -0.5 * (v + v.T) / atoms.get_volume()
        voigt = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
        np.testing.assert_allclose(voigt, atoms.get_stress(), rtol=0, atol=rtol * max(1.0, float(np.abs(voigt).max())))


def structure_file(atoms: Atoms, path: Path) -> Path:
    lines = ["# written by tests/test_embed.py",
             "cell " + " ".join(repr(float(x)) for x in atoms.cell.array.ravel()),
             "pbc " + " ".join(str(int(p)) for p in atoms.pbc)]
    for s, p in zip(atoms.get_chemical_symbols(), atoms.positions):
        lines.append(f"atom {s} " + " ".join(repr(float(x)) for x in p))
    path.write_text("\n".join(lines) + "\n")
    return path


def structures(elements: list[str]) -> list[Atoms]:
    """A skewed periodic cell, a slab (mixed boundary conditions) and a cluster."""
    rng = np.random.default_rng(3)
    skewed = bulk("Cu", "fcc", a=3.6).repeat((2, 2, 2))
    skewed.set_cell(skewed.cell.array + [[0.0, 0.2, 0.1], [0.3, 0.0, 0.0], [0.0, 0.1, 0.0]], scale_atoms=True)
    skewed.rattle(0.1, seed=1)
    slab = tm.random_structure(elements, "slab", seed=2)
    cluster = tm.random_structure(elements, "cluster", seed=3)
    for a in (skewed,):
        a.set_chemical_symbols(list(rng.choice(elements, size=len(a))))
    return [skewed, slab, cluster]


# ------------------------------------------------------------------------------- the folder
def test_emitted_folder_contents():
    ir = tm.model("CuNiAl_o3").ir()
    files = emit(ir, "c")
    names = file_names(ir.name)
    kernel = emit_c(ir)
    expected = {names["header"], names["kernel_header"], names["library"], names["fortran"], "Makefile",
                "CMakeLists.txt", "example.c", "example.cpp", "example.f90"} | (set(kernel) - {f"acegen_{ir.name}.h"})
    assert set(files) == expected
    assert files == emit(ir, "c")
    # the kernel is the C backend's, unchanged; its header is included by the public one
    assert files[f"acegen_{ir.name}.c"] == kernel[f"acegen_{ir.name}.c"]
    assert files[names["kernel_header"]] == kernel[f"acegen_{ir.name}.h"]
    assert f'#include "{names["kernel_header"]}"' in files[names["header"]]
    for fname, text in files.items():
        if isinstance(text, str) and fname not in (names["kernel_header"], f"acegen_{ir.name}.c"):
            assert "autogenerated by acegen from template embed/" in text.splitlines()[0], fname


def test_status_strings_cover_every_code():
    assert set(STATUS_TEXT) == set(Status)


# ------------------------------------------------------------------------------- make builds
@needs_make
@pytest.mark.parametrize("which", ["CuNiAl_o3", "Cu-III"])
def test_make_build_and_c_example(which, tmp_path, shared_dir):
    """make builds the shared and static library and the example; the example's built-in
    structure and structures read from files match the Python calculator."""
    model = acegen.load(SHARED / "potentials" / "Cu-III.yaml") if which == "Cu-III" else tm.model(which)
    folder = _write(emit(model.ir(), "c"), tmp_path / "lib")
    _run([MAKE, "-C", str(folder), "-j2"])
    name = model.ir().name
    assert (folder / f"libacegen_{name}.so").is_file() and (folder / f"libacegen_{name}.a").is_file()
    check_against_calculator(model, parse_output(_run([str(folder / "example")])))
    if which == "CuNiAl_o3":
        for k, atoms in enumerate(structures(list(model.elements))):
            path = structure_file(atoms, tmp_path / f"s{k}.txt")
            out = parse_output(_run([str(folder / "example"), str(path)]))
            np.testing.assert_array_equal(out["atoms"].positions, atoms.positions)
            check_against_calculator(model, out)
        # a bad input file is reported, not crashed on
        bad = tmp_path / "bad.txt"
        bad.write_text("cell 1 0 0 0 1 0 0 0 1\npbc 0 0 0\natom Xx 0 0 0\n")
        proc = subprocess.run([str(folder / "example"), str(bad)], capture_output=True, text=True)
        assert proc.returncode == 1 and "Xx is not in the model" in proc.stderr


@needs_make
def test_cpp_and_fortran_examples(tmp_path):
    model = tm.model("CuNiAl_o3")
    folder = _write(emit(model.ir(), "c"), tmp_path / "lib")
    if shutil.which("c++") or shutil.which("g++"):
        _run([MAKE, "-C", str(folder), "example_cpp"])
        out = parse_output(_run([str(folder / "example_cpp")]))
        assert len(out["atoms"]) == 5
        check_against_calculator(model, out)
    if shutil.which("gfortran") is None:
        pytest.skip("gfortran not found (the Fortran module is not compiled)")
    _run([MAKE, "-C", str(folder), "example_f"])
    out = parse_output(_run([str(folder / "example_f")]))
    assert len(out["atoms"]) == 4 and out["atoms"].get_chemical_symbols() == ["Cu", "Ni", "Al", "Cu"]
    check_against_calculator(model, out)


@pytest.mark.skipif(CMAKE is None or CC is None, reason="cmake and a C compiler are needed")
def test_cmake_build(tmp_path, shared_dir):
    model = acegen.load(SHARED / "potentials" / "Cu-III.yaml")  # with a .bin spline table
    name = model.ir().name
    folder = _write(emit(model.ir(), "c"), tmp_path / "lib")
    build = tmp_path / "build"
    _run([CMAKE, "-S", str(folder), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"])
    _run([CMAKE, "--build", str(build), "-j2"])
    assert (build / f"libacegen_{name}.so").is_file() and (build / f"libacegen_{name}.a").is_file()
    check_against_calculator(model, parse_output(_run([str(build / "example")])))


# --------------------------------------------------------------------- the interface (cffi)
@pytest.fixture(scope="module")
def library(tmp_path_factory):
    model = tm.model("CuNiAl_o3")
    folder = _write(emit(model.ir(), "c"), tmp_path_factory.mktemp("embed") / "lib")
    path = build_emitted(folder, "c")
    ffi = cffi.FFI()
    ffi.cdef(cdef(model.ir().name))
    lib = ffi.dlopen(str(path))
    return model, ffi, lib, model.ir().name


def _call(library, atoms: Atoms, n_centres: int, offsets, neighbours, *, cell=None, images=None, shifts=None,
          species=None, nthreads: int = 1):
    model, ffi, lib, name = library
    n_atoms = len(atoms)
    if species is None:
        index = {e: k for k, e in enumerate(model.elements)}
        species = np.array([index[s] for s in atoms.get_chemical_symbols()], dtype=np.int32)
    pos = np.ascontiguousarray(atoms.positions, dtype=float)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    neighbours = np.ascontiguousarray(neighbours, dtype=np.int64)
    buf = lambda t, a: ffi.NULL if a is None else ffi.from_buffer(t, a)  # noqa: E731
    energy = ffi.new("double *")
    energies = np.zeros(n_centres)
    forces = np.zeros((n_atoms, 3))
    virial = np.zeros((3, 3))
    err = ffi.new("int64_t *")
    rc = getattr(lib, f"acegen_{name}_forces")(
        n_centres, n_atoms, buf("int32_t[]", species), buf("double[]", pos), buf("int64_t[]", offsets),
        buf("int64_t[]", neighbours), buf("double[]", None if cell is None else np.ascontiguousarray(cell, dtype=float)),
        buf("int32_t[]", None if images is None else np.ascontiguousarray(images, dtype=np.int32)),
        buf("double[]", None if shifts is None else np.ascontiguousarray(shifts, dtype=float)), nthreads,
        energy, ffi.from_buffer("double[]", energies), ffi.from_buffer("double[]", forces),
        ffi.from_buffer("double[]", virial), err)
    return rc, int(err[0]), {"energy": energy[0], "energies": energies, "forces": forces, "virial": virial}


def _neighbours(atoms: Atoms, rcut: float):
    from ase.neighborlist import neighbor_list

    i, j, S = neighbor_list("ijS", atoms, rcut)
    order = np.argsort(i, kind="stable")
    i, j, S = i[order], j[order], S[order]
    offsets = np.concatenate([[0], np.cumsum(np.bincount(i, minlength=len(atoms)))])
    return offsets, j, S


def test_forces_with_images_shifts_and_ghosts(library):
    model, ffi, lib, name = library
    atoms = structures(list(model.elements))[0]
    rc_max = getattr(lib, f"acegen_{name}_cutoff")()
    assert rc_max == model.ir().rcut_max
    offsets, j, S = _neighbours(atoms, rc_max)
    atoms.calc = calculator(model)
    e_ref, f_ref = atoms.get_potential_energy(), atoms.get_forces()
    stress_ref = atoms.get_stress(voigt=False)
    results = []
    rc, _, r = _call(library, atoms, len(atoms), offsets, j, cell=atoms.cell.array, images=S, nthreads=2)
    assert rc == Status.OK
    results.append(r)
    rc, _, r = _call(library, atoms, len(atoms), offsets, j, shifts=S @ atoms.cell.array)
    assert rc == Status.OK
    results.append(r)
    for r in results:
        assert abs(r["energy"] - e_ref) <= 1e-10 * abs(e_ref)
        np.testing.assert_allclose(r["energies"], atoms.get_potential_energies(), rtol=0, atol=1e-10)
        np.testing.assert_allclose(r["forces"], f_ref, rtol=0, atol=1e-10)
        np.testing.assert_allclose(-r["virial"].T / atoms.get_volume(), stress_ref, rtol=0, atol=1e-10)

    # ghost atoms: every periodic image becomes an atom of its own, no shifts
    ghosts: dict[tuple[int, int, int, int], int] = {}
    positions = list(atoms.positions)
    symbols = atoms.get_chemical_symbols()
    ghost_of = []
    nbr = []
    for jj, s in zip(j, S):
        if not s.any():
            nbr.append(int(jj))
            continue
        key = (int(jj), *map(int, s))
        if key not in ghosts:
            ghosts[key] = len(positions)
            positions.append(atoms.positions[jj] + s @ atoms.cell.array)
            symbols.append(symbols[jj])
            ghost_of.append(int(jj))
        nbr.append(ghosts[key])
    big = Atoms(symbols, positions=positions)
    rc, _, r = _call(library, big, len(atoms), offsets, nbr)
    assert rc == Status.OK
    forces = r["forces"][: len(atoms)].copy()
    np.add.at(forces, ghost_of, r["forces"][len(atoms):])
    assert abs(r["energy"] - e_ref) <= 1e-10 * abs(e_ref)
    np.testing.assert_allclose(forces, f_ref, rtol=0, atol=1e-10)


def test_errors_and_lookups(library):
    model, ffi, lib, name = library
    fn = lambda suffix: getattr(lib, f"acegen_{name}_{suffix}")  # noqa: E731
    assert fn("n_species")() == 3
    assert [ffi.string(fn("element")(z)).decode() for z in range(3)] == list(model.elements)
    assert fn("element")(3) == ffi.NULL and fn("element")(-1) == ffi.NULL
    assert fn("species_index")(b"Ni") == 1 and fn("species_index")(b"Zn") == -1
    for status, text in STATUS_TEXT.items():
        assert ffi.string(fn("status_string")(int(status))).decode() == f"{status.name}: {text}"

    atoms = tm.random_structure(list(model.elements), "cluster", seed=5)
    nl = build_neighbours(atoms, model.ir().rcut_max)
    offsets, j = nl.offsets, nl.j
    rc, err, r = _call(library, atoms, len(atoms), offsets, j)
    assert rc == Status.OK and err == -1

    bad = j.copy()
    k = int(offsets[4]) + 1
    bad[k] = len(atoms)
    assert _call(library, atoms, len(atoms), offsets, bad)[:2] == (Status.BAD_NEIGHBOUR_INDEX, k)
    # a lower centre's kernel error wins over a higher centre's bad neighbour index
    close = atoms.copy()
    close.positions[int(j[0])] = close.positions[0]
    assert _call(library, close, len(atoms), offsets, bad)[:2] == (Status.OVERLAP, 0)
    bad_off = offsets.copy()
    bad_off[3] = -1
    assert _call(library, atoms, len(atoms), bad_off, j)[:2] == (Status.BAD_OFFSETS, 2)
    species = np.zeros(len(atoms), dtype=np.int32)
    species[5] = 3
    rc, err, _ = _call(library, atoms, len(atoms), offsets, j, species=species)
    first_pair = int(np.flatnonzero(j == 5)[0])  # the lowest centre failing: a neighbour of atom 5, or 5
    if nl.i[first_pair] < 5:
        assert (rc, err) == (Status.BAD_NEIGHBOUR_SPECIES, first_pair)
    else:
        assert (rc, err) == (Status.BAD_CENTRE_SPECIES, 5)
    n_pairs = int(offsets[-1])
    rc, err, _ = _call(library, atoms, len(atoms), offsets, j, cell=np.eye(3), images=np.zeros((n_pairs, 3)),
                       shifts=np.zeros((n_pairs, 3)))
    assert (rc, err) == (Status.BAD_ARGUMENT, -1)
    assert _call(library, atoms, len(atoms), offsets, j, images=np.zeros((n_pairs, 3)))[0] == Status.BAD_ARGUMENT
    # no centres, or only ghosts: zero energy and forces
    rc, _, r = _call(library, atoms, 0, offsets[:1], j[:0])
    assert rc == Status.OK and r["energy"] == 0.0 and not r["forces"].any()


def test_cli_emit_target_c(tmp_path, capsys):
    path = tmp_path / "cu.json"
    tm.model("Cu_o2").save(path)
    out = tmp_path / "out"
    assert cli_main(["emit", str(path), "--target", "c", "-o", str(out), "--build"]) == 0
    name = acegen.load(path).ir().name
    for f in file_names(name).values():
        assert (out / f).is_file()
    assert (out / "Makefile").is_file() and (out / "CMakeLists.txt").is_file() and (out / "example.c").is_file()
    assert (out / f"libacegen_{name}.so").is_file()
