"""Saving models as pacemaker B-basis ``.yaml`` (acegen/io/pace_bbasis_export.py,
acegen/io/pace/bbasis_writer.py).

References: the original B-basis file read by acegen's reader (PACE round trip); for acegen's
own linear models, the C-tilde form of the ``.yace`` export (same radial fit, same PACE splines)
through acegen's compiled kernels — the B-basis file differs from it only by the solve for the
B-function coefficients, so they agree to round-off — and acegen's original model to the
export's accuracy; pyace 0.4.0rc1 in its own environment when ACEGEN_PYACE_PYTHON names it.
"""

from __future__ import annotations

import functools
import json
import subprocess

import ase.io
import numpy as np
import pytest

import acegen
from acegen.calculator import evaluate
from acegen.errors import AcegenError
from acegen.io.pace import bbasis_to_ctilde, read_bbasis_yaml
from acegen.io.pace_bbasis_export import admissible_lints
from acegen.io.pace_export import model_to_pace

from .models import random_structure
from .test_pace_export import PYACE_SCRIPT, pyace_python

PACE_YAMLS = ["Cu-I.yaml", "DFT10B-AgCu.yaml", "ZBL_rep.yaml", "Cu-III.yaml"]
CASES = {  # name -> (elements, order, totaldegree, purification)
    "Cu_o3_pair": (("Cu",), 3, 8, "pair"),
    "CuNi_o3_none": (("Cu", "Ni"), 3, 6, "none"),
    "Cu_o4_none": (("Cu",), 4, 7, "none"),
}


@functools.lru_cache(maxsize=None)
def case_model(name: str) -> acegen.Model:
    els, order, deg, pur = CASES[name]
    eref = {e: -1.25 * (k + 1) for k, e in enumerate(els)}
    spec = acegen.BasisSpec(elements=list(els), order=order, totaldegree=deg, rcut=5.0, purification=pur, Eref=eref)
    return acegen.Model.random(spec, seed=2, name=name)


@pytest.fixture(scope="module")
def yaml_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("bbasis")


@functools.lru_cache(maxsize=None)
def exported(name: str, directory) -> str:
    path = f"{directory}/{name}.yaml"
    case_model(name).save(path)
    return path


def _eval(model, atoms):
    return evaluate(model.compile("c"), model.elements, atoms, model.ir().rcut_max)


# ------------------------------------------------------------------ PACE models read from .yaml
@pytest.mark.parametrize("fname", PACE_YAMLS)
def test_pace_yaml_round_trip_is_exact(shared_dir, fname, tmp_path):
    """read → save('.yaml') → read: the same B-basis and C-tilde potential, the same numbers."""
    src = shared_dir / "potentials" / fname
    model = acegen.load(src)
    out = tmp_path / fname
    model.save(out)
    a, b = read_bbasis_yaml(src), read_bbasis_yaml(out)
    assert [x.name for x in a.blocks] == [x.name for x in b.blocks]
    for x, y in zip(a.blocks, b.blocks):
        assert x.functions == y.functions
        assert (x.ndensity, x.npoti, x.fs_parameters, x.core_repulsion) == (y.ndensity, y.npoti, y.fs_parameters,
                                                                            y.core_repulsion)
        assert (x.inner_cutoff_type, x.r_in, x.delta_in) == (y.inner_cutoff_type, y.r_in, y.delta_in)
        if x.radial is not None:
            assert np.array_equal(x.radial.radcoefficients, y.radial.radcoefficients)
            assert (x.radial.radbase, x.radial.radparameters, x.radial.rcut, x.radial.dcut) == (
                y.radial.radbase, y.radial.radparameters, y.radial.rcut, y.radial.dcut)
    assert a.metadata == b.metadata or {k: str(v) for k, v in a.metadata.items()} == b.metadata
    assert bbasis_to_ctilde(a) == bbasis_to_ctilde(b)
    loaded = acegen.load(out)
    atoms = random_structure(model.elements, "cluster", seed=1)
    r0, r1 = _eval(model, atoms), _eval(loaded, atoms)
    assert abs(r0["energy"] - r1["energy"]) <= 1e-12 * len(atoms)
    assert np.abs(r0["forces"] - r1["forces"]).max() <= 1e-12


def test_yace_models_are_refused(shared_dir, tmp_path):
    model = acegen.load(shared_dir / "potentials" / "Al-Ni_opt_all.yace")
    with pytest.raises(AcegenError, match="C-tilde"):
        model.save(tmp_path / "x.yaml")
    assert not (tmp_path / "x.yaml").exists()


def test_yaml_stores_no_name(tmp_path):
    with pytest.raises(AcegenError, match="no model name"):
        case_model("Cu_o3_pair").save(tmp_path / "x.yaml", name="foo")


# ------------------------------------------------------------------ coupling trees
def test_admissible_lints_follow_pace_rules():
    assert admissible_lints((1, 1)) == [()]
    assert admissible_lints((1, 2)) == []
    assert admissible_lints((1, 1, 2)) == [(2,)]
    # rank 4: (l1 l2)L (l3 l4)L, L in the intersection of both triangles
    assert admissible_lints((1, 2, 2, 3)) == [(1, 1), (2, 2), (3, 3)]
    assert admissible_lints((2, 2, 2, 2, 2)) == [(a, b, 2) for a in range(5) for b in range(5)
                                                 if abs(a - b) <= 2 <= a + b and b <= 4]


# ------------------------------------------------------------------ acegen's own models
@pytest.mark.parametrize("name", sorted(CASES))
def test_linear_model_round_trip(name, yaml_dir):
    """acegen → .yaml → acegen.load: the same energies and forces as the C-tilde (.yace) form of
    the model to round-off (1e-10), and as the original model to the radial fit's accuracy."""
    m = case_model(name)
    path = exported(name, yaml_dir)
    bb = read_bbasis_yaml(path)
    eref = dict(m.spec.Eref)
    assert json.loads(bb.metadata["reference_energy"]) == {e: eref[e] for e in sorted(m.elements)}
    for b in bb.blocks:  # rank-1 functions first, linear embedding
        ranks = [f.rank for f in b.functions]
        assert ranks == sorted(ranks, key=lambda r: r != 1)
        if b.ndensity is not None:
            assert (b.ndensity, b.npoti, b.fs_parameters) == (1, "FinnisSinclairShiftedScaled", (1.0, 1.0))
    loaded = acegen.load(path)
    assert loaded.kind == "pace"
    ctilde = acegen.Model.from_pace(model_to_pace(m))
    for seed, kind in enumerate(("bulk", "cluster", "slab")):
        atoms = random_structure(m.elements, kind, seed=seed)
        off = sum(eref[s] for s in atoms.get_chemical_symbols())
        got, want, orig = _eval(loaded, atoms), _eval(ctilde, atoms), _eval(m, atoms)
        assert np.abs(orig["forces"]).max() > 0.01  # a non-trivial model
        assert abs(got["energy"] + off - want["energy"]) <= 1e-10 * len(atoms)
        assert np.abs(got["forces"] - want["forces"]).max() <= 1e-10
        assert abs(got["energy"] + off - orig["energy"]) <= 1e-8
        assert np.abs(got["forces"] - orig["forces"]).max() <= 2e-8


def test_two_species_share_one_radial_basis_per_pair(yaml_dir):
    """A B-basis file needs identical radial bases in the blocks 'Cu Ni' and 'Ni Cu'."""
    bb = read_bbasis_yaml(exported("CuNi_o3_none", yaml_dir))
    blocks = {b.name: b for b in bb.blocks}
    assert set(blocks) == {"Cu", "Cu Ni", "Ni", "Ni Cu"}
    a, b = blocks["Cu Ni"].radial, blocks["Ni Cu"].radial
    assert np.array_equal(a.radcoefficients, b.radcoefficients) and a.nradmax == b.nradmax


def test_multilayer_models_are_refused(tmp_path):
    from acegen.io.pace_bbasis_export import model_to_bbasis

    class Other:
        kind = "multilayer"
        name = "x"

    with pytest.raises(AcegenError, match="only linear"):
        model_to_bbasis(Other())


# ------------------------------------------------------------------ pyace (a peer, if installed)
@pytest.mark.parametrize("name", ["Cu_o3_pair", "CuNi_o3_none", "Cu_o4_none", "Cu-I.yaml", "DFT10B-AgCu.yaml"])
def test_pyace_reads_the_yaml(name, yaml_dir, shared_dir, tmp_path):
    """pyace 0.4.0rc1 loads the B-basis file and agrees with acegen to 1e-9 (eV/atom, eV/Å);
    for a PACE .yaml saved by acegen, with pyace on the original file to 1e-12."""
    py = pyace_python()
    if py is None:
        pytest.skip("pyace is not installed (set ACEGEN_PYACE_PYTHON)")
    pace_file = name.endswith(".yaml")
    if pace_file:
        src = shared_dir / "potentials" / name
        m = acegen.load(src)
        path = tmp_path / name
        m.save(path)
        eref = {e: 0.0 for e in m.elements}
    else:
        m = case_model(name)
        path = exported(name, yaml_dir)
        eref = dict(m.spec.Eref)
    frames = [random_structure(m.elements, kind, seed=s) for s, kind in enumerate(("bulk", "cluster", "bulk"))]
    ase.io.write(tmp_path / "s.extxyz", frames)
    frames = ase.io.read(tmp_path / "s.extxyz", ":")
    subprocess.run([py, "-c", PYACE_SCRIPT, str(path), str(tmp_path / "s.extxyz"), str(tmp_path / "o.json")],
                   check=True, capture_output=True, timeout=600)
    got = json.loads((tmp_path / "o.json").read_text())
    if pace_file:
        subprocess.run([py, "-c", PYACE_SCRIPT, str(src), str(tmp_path / "s.extxyz"), str(tmp_path / "p.json")],
                       check=True, capture_output=True, timeout=600)
        orig = json.loads((tmp_path / "p.json").read_text())
        for g, o, atoms in zip(got, orig, frames):
            assert abs(g["energy"] - o["energy"]) / len(atoms) <= 1e-12
            assert np.abs(np.asarray(g["forces"]) - np.asarray(o["forces"])).max() <= 1e-12
    loaded = acegen.load(path)
    for atoms, g in zip(frames, got):
        off = sum(eref[s] for s in atoms.get_chemical_symbols())
        same, orig = _eval(loaded, atoms), _eval(m, atoms)  # acegen on the saved file; the original model
        dE = abs(g["energy"] - same["energy"]) / len(atoms)
        dF = np.abs(np.asarray(g["forces"]) - same["forces"]).max()
        dE0 = abs(g["energy"] + off - orig["energy"]) / len(atoms)
        dF0 = np.abs(np.asarray(g["forces"]) - orig["forces"]).max()
        print(f"{name}: pyace vs acegen (file) |dE|/atom {dE:.1e} eV, max|dF| {dF:.1e} eV/A; "
              f"vs original model {dE0:.1e}, {dF0:.1e}")
        assert dE <= 1e-9 and dF <= 1e-9
        assert dE0 <= 1e-9 and dF0 <= 2e-8  # + the radial fit and PACE's splines (as for .yace)


def test_non_invariant_products_are_refused():
    """A C-tilde group that is no combination of coupling-tree functions (here A_1 A_-1 alone
    for l = 1, 1, without its A_0 A_0 partner) cannot be written; the error names the multiset."""
    from acegen.io.pace import PaceFunction
    from acegen.io.pace_bbasis_export import _bfunctions_of_group

    def group(rows, cs):
        return PaceFunction(mu0=0, rank=2, mus=(0, 0), ns=(1, 1), ls=(1, 1), ms_combs=np.array(rows, dtype=np.int64),
                            ctildes=np.array([[c] for c in cs]))

    # the invariant itself (PACE's half basis of nl = [1, 1]) is accepted: one B function
    ((ns, ls, lint, c),) = _bfunctions_of_group(group([[0, 0], [1, -1]], [-0.5, 1.0]), ("Cu",), "test")
    assert (ns, ls, lint) == ((1, 1), (1, 1), ())
    with pytest.raises(AcegenError, match=r"ls=\[1, 1\].*residual"):
        _bfunctions_of_group(group([[1, -1]], [1.0]), ("Cu",), "test")
