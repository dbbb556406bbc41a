"""Robustness: bad structures, bad and malicious model files, large systems, threads.

Every bad input must give the right answer or an acegen error naming the atom or the
problem — never a crash in C, a NaN or a silent wrong number."""

from __future__ import annotations

import json
import threading
import tracemalloc

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import acegen
from acegen.calculator import evaluate

from .models import model, random_structure


@pytest.fixture(scope="module")
def calc():
    return acegen.Calculator(model("CuNiAl_o3"), target="c")


def energy_forces(calc, atoms):
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms.get_potential_energy(), atoms.get_forces()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_positions(calc, bad):
    atoms = random_structure(["Cu", "Ni", "Al"], "bulk", seed=1)
    atoms.positions[5, 2] = bad
    with pytest.raises(acegen.StructureError, match="atom 5"):
        energy_forces(calc, atoms)


def test_overlapping_atoms(calc):
    atoms = random_structure(["Cu", "Ni", "Al"], "bulk", seed=1)
    atoms.positions[7] = atoms.positions[2]
    with pytest.raises(acegen.StructureError, match="atoms (2 and 7|7 and 2)"):
        energy_forces(calc, atoms)


def test_overlap_through_periodic_image(calc):
    atoms = Atoms("Cu2", cell=[3.0, 3.0, 3.0], pbc=True, positions=[[0, 0, 0], [3.0, 0, 0]])
    with pytest.raises(acegen.StructureError, match="overlap"):
        energy_forces(calc, atoms)


def test_empty_atoms(calc):
    e, f = energy_forces(calc, Atoms(cell=[5, 5, 5], pbc=True))
    assert e == 0.0 and f.shape == (0, 3)


def test_unknown_element_named(calc):
    atoms = random_structure(["Cu", "Ni", "Al"], "bulk", seed=1)
    atoms[4].symbol = "Fe"
    with pytest.raises(acegen.StructureError, match="atom 4 is Fe"):
        energy_forces(calc, atoms)


def test_isolated_atom_and_far_apart_atoms(calc):
    e1, f1 = energy_forces(calc, Atoms("Cu", positions=[[0, 0, 0]]))
    e2, f2 = energy_forces(calc, Atoms("Cu2", positions=[[0, 0, 0], [50.0, 0, 0]]))
    assert np.isfinite(e1) and e2 == pytest.approx(2 * e1, rel=1e-14, abs=1e-14)
    assert np.all(f2 == 0.0)


def test_atoms_far_outside_the_cell(calc):
    atoms = random_structure(["Cu", "Ni", "Al"], "bulk", seed=2)
    e0, f0 = energy_forces(calc, atoms)
    far = atoms.copy()
    far.positions += np.array([3, -7, 11]) @ far.cell.array
    far.positions[0] += 40 * far.cell.array[1]
    e1, f1 = energy_forces(calc, far)
    assert e1 == pytest.approx(e0, rel=1e-12)
    np.testing.assert_allclose(f1, f0, atol=1e-11)


def test_very_skewed_cell_equals_reduced_cell(calc):
    atoms = Atoms("CuNiAl", cell=[[3.1, 0, 0], [0.3, 3.2, 0], [0.2, 0.4, 3.0]], pbc=True,
                  scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.1], [0.2, 0.6, 0.55]])
    e0, f0 = energy_forces(calc, atoms)
    skew = atoms.copy()
    U = np.array([[1, 7, 0], [0, 1, 0], [-5, 3, 1]])  # unimodular: same lattice
    assert round(abs(np.linalg.det(U))) == 1
    skew.set_cell(U @ atoms.cell.array, scale_atoms=False)
    e1, f1 = energy_forces(calc, skew)
    assert e1 == pytest.approx(e0, rel=1e-12)
    np.testing.assert_allclose(f1, f0, atol=1e-10)


def test_cell_much_smaller_than_cutoff(calc):
    atoms = bulk("Cu", "fcc", a=3.6)  # one atom, ~2.5 Å cell, cutoff 5 Å
    e, f = energy_forces(calc, atoms)
    big = atoms.repeat((3, 2, 4))
    e2, f2 = energy_forces(calc, big)
    assert e2 == pytest.approx(24 * e, rel=1e-12)
    np.testing.assert_allclose(f2, 0.0, atol=1e-10)


def test_kernel_rejects_bad_arrays_without_crashing():
    m = model("Cu_o2")
    k = m.compile("c")
    species = np.zeros(2, dtype=np.int32)
    offsets = np.array([0, 1, 2], dtype=np.int64)
    nbs = np.zeros(2, dtype=np.int32)
    rij = np.array([[1.0, 0, 0], [-1.0, 0, 0]])
    k.compute(species, offsets, nbs, rij)  # fine
    with pytest.raises(acegen.StructureError):
        k.compute(np.array([0, 5], dtype=np.int32), offsets, nbs, rij)  # unknown species
    with pytest.raises(acegen.StructureError):
        k.compute(species, offsets, np.array([0, -1], dtype=np.int32), rij)
    with pytest.raises(acegen.StructureError):
        k.compute(species, offsets, nbs, np.array([[np.nan, 0, 0], [1.0, 0, 0]]))
    with pytest.raises(acegen.StructureError):
        k.compute(species, np.array([0, 3, 2], dtype=np.int64), nbs, rij)  # offsets beyond pairs
    with pytest.raises((acegen.AcegenError, ValueError, TypeError)):
        k.compute(species, offsets, nbs, rij[:1])  # wrong shape


def test_large_system_memory_is_linear():
    """100 000 atoms: evaluates, and peak memory per atom does not grow with size."""
    spec = acegen.BasisSpec(["Cu"], 2, 4, rcut=3.0)
    m = acegen.Model.random(spec, name="tiny")
    calc = acegen.Calculator(m)
    peaks = {}
    energies = {}
    for reps in [(10, 10, 25), (20, 20, 63)]:  # 10 000 and 100 800 atoms
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(reps)
        tracemalloc.start()
        atoms.calc = calc
        e = atoms.get_potential_energy()
        atoms.get_forces()
        peaks[len(atoms)] = tracemalloc.get_traced_memory()[1] / len(atoms)
        tracemalloc.stop()
        energies[len(atoms)] = e / len(atoms)
    (n1, p1), (n2, p2) = sorted(peaks.items())
    assert n2 >= 100_000
    assert p2 < 1.3 * p1, peaks
    assert energies[n2] == pytest.approx(energies[n1], rel=1e-10)


def test_kernel_from_threads_equals_serial():
    m = model("CuNiAl_o3")
    k = m.compile("c")
    structures = [random_structure(m.elements, kind, seed=s) for s in range(3) for kind in ("bulk", "cluster")]
    serial = [evaluate(k, m.elements, a, m.ir().rcut_max) for a in structures]
    out = [None] * len(structures)

    def work(i):
        out[i] = evaluate(k, m.elements, structures[i], m.ir().rcut_max)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(structures))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(serial, out):
        assert a["energy"] == b["energy"]
        np.testing.assert_array_equal(a["forces"], b["forces"])


# ---------------------------------------------------------------------------- model files
INJECTIONS = [
    "Cu */ int x; /*",
    "#include <stdlib.h>",
    "{{ 7*7 }}",
    "{% raw %}",
    'Cu"; system("rm -rf /"); "',
    "Cu\n#define X",
]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_injection_in_json_model_is_refused(tmp_path, payload):
    d = model("Cu_o2").to_dict()
    for field, mutate in [("spec", lambda d: d["spec"].update(elements=[payload])),
                          ("name", lambda d: d.update(name=payload))]:
        dd = json.loads(json.dumps(d))
        mutate(dd)
        p = tmp_path / "evil.json"
        p.write_text(json.dumps(dd))
        with pytest.raises(acegen.ModelFileError, match=field):
            acegen.load(p)


@pytest.mark.parametrize("payload", INJECTIONS)
def test_injection_in_pace_file_is_refused(tmp_path, payload, shared_dir):
    src = (shared_dir / "potentials" / "Al-Ni_opt_all.yace").read_text()
    evil = src.replace("elements: [Al, Ni]", "elements: [Al, " + json.dumps(payload) + "]", 1)
    assert evil != src
    p = tmp_path / "evil.yace"
    p.write_text(evil)
    with pytest.raises(acegen.ModelFileError, match="element"):
        acegen.load(p)


def test_injection_in_file_name_never_reaches_source(tmp_path, shared_dir):
    from acegen.backends import emit

    src = (shared_dir / "potentials" / "Al-Ni_opt_all.yace").read_text()
    p = tmp_path / "x{{7*7}}*#include.yace"
    p.write_text(src)
    m = acegen.load(p)
    files = emit(m.ir(), "c")
    text = "".join(v for v in files.values() if isinstance(v, str))
    for bad in ("{{", "*#include", "7*7"):
        assert bad not in text
    assert m.name.isidentifier()


def test_python_model_name_is_validated():
    spec = acegen.BasisSpec(["Cu"], 2, 4, rcut=4.0)
    with pytest.raises(acegen.SpecError, match="model name"):
        acegen.Model(spec, np.zeros(acegen.lower(spec).n_params), name="a*/b")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.lists(st.sampled_from(["spec", "coefficients", "elements", "order", "totaldegree", "wL", "rcut",
                                      "manybody", "pair", "version", "format", "kind", "name", 0, 1]),
                     min_size=1, max_size=3),
       value=json_values)
def test_fuzz_json_loader_only_raises_acegen_errors(tmp_path, path, value):
    d = model("Cu_o2").to_dict()
    node = d
    for key in path[:-1]:
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            break
    last = path[-1]
    if isinstance(node, dict):
        node[str(last)] = value
    elif isinstance(node, list) and isinstance(last, int) and last < len(node):
        node[last] = value
    p = tmp_path / "fuzz.json"
    p.write_text(json.dumps(d))
    try:
        m = acegen.load(p)
    except acegen.AcegenError:
        return
    assert np.isfinite(m.coefficients).all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 10_000), junk=st.binary(max_size=16))
def test_fuzz_truncated_and_corrupted_json(tmp_path, cut, junk):
    text = json.dumps(model("Cu_o2").to_dict()).encode()
    p = tmp_path / "fuzz.json"
    p.write_bytes(text[: cut % (len(text) + 1)] + junk)
    try:
        acegen.load(p)
    except acegen.AcegenError:
        pass
