"""Training data extraction, reference energies, weights and design-matrix assembly."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from acegen.errors import AcegenError
from acegen.fit import FitError, TargetError, assemble, load_training_set, read_structures, resolve_weights
from acegen.fit.data import to_virial

from .fit_toy import PairToy, label, random_structures


def _headers(path):
    """(n_atoms, header line) of every frame, parsed from the text (independent of ase)."""
    lines = path.read_text().splitlines()
    out, k = [], 0
    while k < len(lines):
        n = int(lines[k])
        out.append((n, lines[k + 1]))
        k += n + 2
    return out


def _header_value(header, key):
    m = re.search(rf'(?:^|\s){key}=("([^"]*)"|(\S+))', header)
    return None if m is None else (m.group(2) if m.group(2) is not None else m.group(3))


# ---------------------------------------------------------------------------- real data
def test_tial_tiny_keys_and_values(shared_dir):
    path = shared_dir / "data" / "TiAl_tiny.xyz"
    heads = _headers(path)
    ts = load_training_set(path, energy_key="energy", force_key="force", virial_key="virial", eref="zero")
    assert len(ts) == len(heads) == 33
    assert sum(s.n_atoms for s in ts.structures) == 192
    cts = [s.config_type for s in ts.structures]
    assert cts.count("FLD_TiAl") == 32 and cts.count("TiAl_T5000") == 1
    for s, (n, h) in zip(ts.structures, heads):
        assert s.n_atoms == n
        assert s.energy == float(_header_value(h, "energy"))  # ase moved it to atoms.calc.results
        vir = np.array(_header_value(h, "virial").split(), dtype=float).reshape(3, 3)
        np.testing.assert_array_equal(s.virial, vir)
        assert s.forces.shape == (n, 3)
        assert s.e0 == 0.0
    # the first atom's force, straight from the text (columns: species, pos x3, force x3, tags)
    first_atom = path.read_text().splitlines()[2].split()
    np.testing.assert_array_equal(ts.structures[0].forces[0], np.array(first_atom[4:7], dtype=float))
    # default weights: E 30/√N, F 1, V 1/√N
    s = ts.structures[0]
    assert s.weights == pytest.approx({"E": 30 / math.sqrt(s.n_atoms), "F": 1.0, "V": 1 / math.sqrt(s.n_atoms)})


def test_tial_tiny_eref_and_per_type_weights(shared_dir):
    eref = {"Ti": -1586.0195, "Al": -105.5954}
    weights = {"default": {"E": 15.0}, "TiAl_T5000": {"E": 5.0, "V": 0.0}}
    ts = load_training_set(shared_dir / "data" / "TiAl_tiny.xyz", energy_key="energy", force_key="force",
                           virial_key="virial", eref=eref, weights=weights)
    for s in ts.structures:
        syms = s.atoms.get_chemical_symbols()
        assert s.e0 == pytest.approx(syms.count("Ti") * eref["Ti"] + syms.count("Al") * eref["Al"])
        assert s.energy_target == pytest.approx(s.energy - s.e0)
        n = s.n_atoms
        if s.config_type == "TiAl_T5000":
            assert s.weights == pytest.approx({"E": 5 / math.sqrt(n), "F": 1.0, "V": 0.0})
        else:
            assert s.weights == pytest.approx({"E": 15 / math.sqrt(n), "F": 1.0, "V": 1 / math.sqrt(n)})
    # the energy per atom above Eref is O(eV), not O(100 eV)
    assert max(abs(s.energy_target / s.n_atoms) for s in ts.structures) < 10


def test_si_tiny_isolated_atom_sets_eref(shared_dir):
    path = shared_dir / "data" / "Si_tiny.xyz"
    heads = _headers(path)
    iso = [k for k, (n, h) in enumerate(heads) if _header_value(h, "config_type") == "isolated_atom"]
    assert len(iso) == 1
    e_iso = float(_header_value(heads[iso[0]][1], "dft_energy"))
    ts = load_training_set(path, energy_key="dft_energy", force_key="dft_force", virial_key="dft_virial")
    assert ts.eref == {"Si": e_iso}
    assert ts.isolated == iso
    assert len(ts) == len(heads) - 1
    for s in ts.structures:
        assert s.e0 == pytest.approx(s.n_atoms * e_iso)
        h = heads[s.index][1]
        vir = np.array(_header_value(h, "dft_virial").split(), dtype=float).reshape(3, 3)
        np.testing.assert_array_equal(s.virial, vir)


def test_missing_key_names_structure_and_key(shared_dir):
    path = shared_dir / "data" / "TiAl_tiny.xyz"
    with pytest.raises(TargetError) as e:
        load_training_set(path, energy_key="energy", force_key="forces", eref="zero")
    assert e.value.index == 0 and e.value.key == "forces"
    assert "structure 0" in str(e.value) and "'force'" in str(e.value)  # lists what is there
    assert isinstance(e.value, AcegenError)
    with pytest.raises(TargetError, match="structure 0: key 'dft_energy'"):
        load_training_set(path, energy_key="dft_energy", force_key=None, eref="zero")


# ---------------------------------------------------------------------------- synthetic
def _atoms(n=3, seed=0):
    return random_structures(1, seed=seed, sizes=(n, n))[0]


def test_non_finite_and_misshaped_targets():
    st = [_atoms(), _atoms(seed=1)]
    for a in st:
        a.info["energy"] = -1.0
        a.arrays["forces"] = np.zeros((len(a), 3))
    st[1].arrays["forces"][2, 1] = np.nan
    with pytest.raises(TargetError, match="structure 1: key 'forces': non-finite"):
        load_training_set(st, eref="zero")
    st[1].arrays["forces"][2, 1] = 0.0
    st[0].info["virial"] = np.eye(3)
    st[1].info["virial"] = [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(TargetError, match="structure 1: key 'virial'.*6 \\(Voigt\\)"):
        load_training_set(st, virial_key="virial", eref="zero")
    st[0].info["energy"] = float("inf")
    with pytest.raises(TargetError, match="structure 0: key 'energy': non-finite"):
        load_training_set(st, eref="zero")


def test_missing_skip_drops_only_that_observation():
    st = [_atoms(), _atoms(seed=1)]
    for a in st:
        a.info["energy"] = -1.0
        a.arrays["forces"] = np.zeros((len(a), 3))
    st[0].info["virial"] = np.eye(3)
    ts = load_training_set(st, virial_key="virial", eref="zero", missing="skip")
    assert ts.structures[0].virial is not None and ts.structures[1].virial is None
    with pytest.raises(TargetError, match="structure 1: key 'virial'"):
        load_training_set(st, virial_key="virial", eref="zero")


def test_virial_forms_and_stress_conversion():
    v = np.array([[1.0, 6.0, 5.0], [6.0, 2.0, 4.0], [5.0, 4.0, 3.0]])
    np.testing.assert_array_equal(to_virial(v), v)
    np.testing.assert_array_equal(to_virial(v.ravel()), v)
    np.testing.assert_array_equal(to_virial([1, 2, 3, 4, 5, 6]), v)  # xx yy zz yz xz xy
    a = _atoms()
    stress = np.array([0.1, 0.2, 0.3, 0.04, 0.05, 0.06])  # ase Voigt order, eV/Å³
    a.calc = SinglePointCalculator(a, energy=-2.0, forces=np.zeros((len(a), 3)), stress=stress)
    ts = load_training_set([a], stress_key="stress", eref="zero")
    s = ts.structures[0]
    assert s.energy == -2.0  # from the calculator
    full = np.array([[0.1, 0.06, 0.05], [0.06, 0.2, 0.04], [0.05, 0.04, 0.3]])
    np.testing.assert_allclose(s.virial, -full * a.get_volume())
    with pytest.raises(FitError, match="not both"):
        load_training_set([a], stress_key="stress", virial_key="virial")


def test_eref_average_recovers_per_element_energies():
    e0 = {"Si": -3.0, "C": -7.5}
    st = random_structures(6, seed=2, elements=("Si", "C"))
    for a in st:
        a.info["energy"] = sum(e0[s] for s in a.get_chemical_symbols())
    ts = load_training_set(st, force_key=None, eref="average")
    assert ts.eref == pytest.approx(e0)
    assert all(abs(s.energy_target) < 1e-10 for s in ts.structures)


def test_eref_defaults_to_zero_with_a_warning():
    a = _atoms()
    a.info["energy"] = 1.0
    with pytest.warns(UserWarning, match="no Eref given"):
        ts = load_training_set([a], force_key=None)
    assert ts.eref == {}


def test_conflicting_isolated_atoms_and_unknown_elements():
    iso = [Atoms("Si", cell=[10] * 3), Atoms("Si", cell=[10] * 3)]
    for a, e in zip(iso, (-1.0, -2.0)):
        a.info.update(energy=e, config_type="IsolatedAtom")
    bulk = _atoms()
    bulk.info["energy"] = -5.0
    with pytest.raises(FitError, match="structure 1: isolated Si energy"):
        load_training_set(iso + [bulk], force_key=None)
    with pytest.raises(FitError, match="structure 0: element Si is not one of"):
        load_training_set([bulk], force_key=None, eref="zero", elements=["C"])
    with pytest.raises(FitError, match="eref: 'Ge' is not one of the elements"):
        load_training_set([bulk], force_key=None, eref={"Si": 0.0, "Ge": 1.0}, elements=["Si"])


def test_resolve_weights_validation():
    w = resolve_weights({"liquid": {"F": 0.5}})
    assert w["default"] == {"E": 30.0, "F": 1.0, "V": 1.0}
    assert w["liquid"] == {"E": 30.0, "F": 0.5, "V": 1.0}
    with pytest.raises(FitError, match=r"weights\['liquid'\]: unknown observation 'S'"):
        resolve_weights({"liquid": {"S": 1.0}})
    with pytest.raises(FitError, match=r"weights\['liquid'\]\['E'\]: must be a finite number >= 0"):
        resolve_weights({"liquid": {"E": -1.0}})


def test_read_structures_missing_file(tmp_path):
    with pytest.raises(FitError, match="no such structure file"):
        read_structures(tmp_path / "nope.xyz")


# ---------------------------------------------------------------------------- assembly
def test_assemble_rows_targets_weights():
    model = PairToy(4)
    theta = np.array([0.5, -1.0, 2.0, 0.3])
    st = label(random_structures(3, seed=4), model, theta, e0={"Si": -2.0}, config_types=["a", "b"])
    ts = load_training_set(st, virial_key="virial", eref={"Si": -2.0})
    A, y, w, meta = assemble(model, ts, progress=False)
    n_rows = sum(1 + 3 * len(a) + 6 for a in st)
    assert A.shape == (n_rows, 4) and y.shape == w.shape == (n_rows,)
    np.testing.assert_allclose(A @ theta, y, atol=1e-12)  # exact labels
    row = 0
    for p, a in enumerate(st):
        n = len(a)
        ev = model(a)
        assert meta.kind[row] == "E" and meta.structure[row] == p and meta.natoms[row] == n
        assert y[row] == pytest.approx(a.info["energy"] + 2.0 * n)
        assert w[row] == pytest.approx(30 / math.sqrt(n))
        np.testing.assert_array_equal(A[row], ev["energy"])
        f = slice(row + 1, row + 1 + 3 * n)
        assert (meta.kind[f] == "F").all() and (w[f] == 1.0).all()
        np.testing.assert_array_equal(y[f], a.arrays["forces"].ravel())
        np.testing.assert_array_equal(A[f], ev["forces"].reshape(3 * n, -1))
        v = slice(row + 1 + 3 * n, row + 7 + 3 * n)
        vir = a.info["virial"]
        np.testing.assert_allclose(y[v], [vir[0, 0], vir[1, 1], vir[2, 2], vir[1, 2], vir[0, 2], vir[0, 1]])
        assert (w[v] == pytest.approx(1 / math.sqrt(n)))
        assert (meta.config_type[row:v.stop] == ["a", "b"][p % 2]).all()
        row = v.stop
    assert row == n_rows


def test_assemble_evaluator_errors_name_the_structure():
    model = PairToy(3)
    st = label(random_structures(2, seed=4), model, np.ones(3))
    ts = load_training_set(st, virial_key="virial", eref="zero")

    def no_virial(atoms):
        ev = model(atoms)
        return {"energy": ev["energy"], "forces": ev["forces"]}

    with pytest.raises(FitError, match="structure 0: the basis evaluator returned no 'virial'"):
        assemble(no_virial, ts, progress=False)

    def bad_shape(atoms):
        ev = dict(model(atoms))
        if len(atoms) != len(st[0]) or atoms is st[1]:
            ev["forces"] = ev["forces"][:, :2]
        return ev

    with pytest.raises(FitError, match="structure 1: basis evaluator 'forces' has shape"):
        assemble(bad_shape, ts, progress=False)
