"""GRACE-FS through the whole pipeline: lowering to the IR (channels over every neighbour
species, weighted radial blocks sharing one spline table), the IR interpreter against the
independent NumPy reference, the C and LLVM kernels against pyace's frames, the CUDA
emulation, acegen.load / save, the calculator and the CLI."""

from __future__ import annotations

import dataclasses
import json
import shutil

import ase.io
import numpy as np
import pytest

import acegen
from acegen.backends.c import compile_c
from acegen.backends.cuda import compile_cuda
from acegen.backends.plan import build_plan
from acegen.errors import AcegenError, InternalError
from acegen.io.gracefs import read_gracefs
from acegen.ir.interp import evaluate_ir
from acegen.ir.model import ANY, Channel, ModelIR, RadialBlock, SpeciesProgram
from acegen.model import GraceFSModel, PaceModel
from acegen.reference.gracefs_numpy import GraceFSReference

from .c_backend_models import random_environment

TEST_MODEL = "test_export_to_yaml"
FITTED_MODEL = "AlLi_distill_GRACE-FS_saved_model"
_CACHE: dict = {}


def _path(shared_dir, name):
    return shared_dir / "potentials" / "gracefs" / f"{name}.yaml"


def _model(shared_dir, name) -> GraceFSModel:
    if name not in _CACHE:
        _CACHE[name] = acegen.load(_path(shared_dir, name))
    return _CACHE[name]


def _frames(shared_dir, name):
    return ase.io.read(shared_dir / "reference" / "gracefs" / f"{name}.extxyz", ":")


def _close(a, b, rtol=1e-12):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    assert np.abs(a - b).max(initial=0.0) <= rtol * max(1.0, float(np.abs(b).max(initial=0.0)))


# ------------------------------------------------------------------------------ the IR
def test_lowering_shares_one_table_and_has_no_element_channels(shared_dir):
    m = _model(shared_dir, TEST_MODEL)
    ir = m.ir()
    pot = m.gracefs
    tables = {id(b.spline) for b in ir.radial.values()}
    assert len(tables) == 1 and len(ir.radial) == pot.nelements ** 2
    for sp in ir.species:
        assert sp.channels and all(ch.zj == ANY for ch in sp.channels)
    # the weights are the element embedding: proportional to Z[zj, n] for every function
    L1 = pot.lmax + 1
    for (zi, zj), b in ir.radial.items():
        n = np.arange(b.nfunc) // L1
        assert np.allclose(b.weights / pot.Z[zj, n], b.weights[0] / pot.Z[zj, 0])
    assert "weighted" in ir.to_text() and "every neighbour species" in ir.to_text()
    # the kernel plan keeps one copy of the table in each layout
    plan = build_plan(ir)
    one = ir.radial[(0, 0)].spline
    assert plan.function_doubles < 2 * one.coeffs.size
    assert plan.slot_doubles < 2 * one.nbins * 4 * max(b.nslot_pad for s in plan.species for b in s.bonds)
    assert "weights:" in plan.to_text()


def test_weights_enter_evaluation_text_and_signature(shared_dir):
    ir = _model(shared_dir, TEST_MODEL).ir()
    radial = dict(ir.radial)
    b = radial[(0, 1)]
    radial[(0, 1)] = dataclasses.replace(b, weights=2.0 * b.weights)
    ir2 = dataclasses.replace(ir, radial=radial)
    assert ir2.signature() != ir.signature()
    env = random_environment(3, n_centres=8, max_nb=20, radius=5.5, n_species=3)
    env = (np.zeros_like(env[0]),) + env[1:]  # centres of species 0
    e1, _ = evaluate_ir(ir, *env)
    e2, _ = evaluate_ir(ir2, *env)
    assert np.abs(e1 - e2).max() > 1e-6
    # weights are validated
    with pytest.raises(InternalError, match="weights"):
        dataclasses.replace(b, weights=b.weights[:-1])
    with pytest.raises(InternalError, match="every bond"):
        sp = ir.species[0]
        bad = Channel(zj=ANY, radial=b.nfunc, l=0, offset=0)
        ModelIR(ir.elements, ir.lmax, ir.angular, ir.radial,
                (SpeciesProgram(0, (bad,), ((0,),), np.ones((1, sp.embedding.ndensity)), sp.embedding),)
                + ir.species[1:])
    with pytest.raises(AcegenError):
        RadialBlock(0, 0, 5.0, b.nfunc, spline=b.spline, weights=np.full(b.nfunc, np.nan))


@pytest.mark.parametrize("name", [TEST_MODEL, FITTED_MODEL])
def test_interpreter_matches_the_reference(shared_dir, name):
    from ase.neighborlist import neighbor_list

    m = _model(shared_dir, name)
    ref = GraceFSReference(m.gracefs)
    for a in _frames(shared_dir, name)[:4]:
        i, j, D = neighbor_list("ijD", a, m.gracefs.rcut)
        sp = np.array([m.elements.index(s) for s in a.get_chemical_symbols()])
        e, _ = evaluate_ir(m.ir(), sp, np.searchsorted(i, np.arange(len(a) + 1)), sp[j], D)
        assert np.abs(e - ref.compute(a)["energies"]).max() <= 1e-10


# ------------------------------------------------------------------------------ kernels
@pytest.mark.parametrize("target", ["c", "llvm"])
@pytest.mark.parametrize("name", [TEST_MODEL, FITTED_MODEL])
def test_compiled_matches_pyace_on_every_frame(shared_dir, name, target):
    calc = acegen.Calculator(_model(shared_dir, name), target=target)
    frames = _frames(shared_dir, name)
    meta = json.loads((shared_dir / "reference" / "gracefs" / "MANIFEST.json").read_text())["files"]
    assert len(frames) == meta[f"{name}.extxyz"]["frames"]
    for a in frames:
        tag = a.info["config_type"]
        b = a.copy()
        b.calc = calc
        assert abs(b.get_potential_energy() - a.info["ref_energy"]) / len(a) <= 1e-7, tag
        assert np.abs(b.get_potential_energies() - a.arrays["ref_energies"]).max() <= 1e-7, tag
        F = a.arrays["ref_forces"]
        assert np.all(np.abs(b.get_forces() - F) <= 1e-6 + 1e-7 * np.abs(F)), tag
        if "ref_stress" in a.info:
            assert np.abs(b.get_stress() - a.info["ref_stress"]).max() <= 1e-7, tag


@pytest.mark.parametrize("name", [TEST_MODEL, FITTED_MODEL])
def test_compiled_and_cuda_emulation_match_the_interpreter(shared_dir, name):
    ir = _model(shared_dir, name).ir()
    kernels = [compile_c(ir), _model(shared_dir, name).compile("llvm"), compile_cuda(ir, emulate=True)]
    for seed in range(2):
        env = random_environment(seed, n_centres=12, max_nb=30, radius=5.5, n_species=len(ir.elements))
        e0, d0 = evaluate_ir(ir, *env)
        for k in kernels:
            e, d = k.compute(*env)
            _close(e, e0)
            _close(d, d0)


# ------------------------------------------------------------------------------ load / save / CLI
def test_load_detects_gracefs_by_content(shared_dir, tmp_path):
    src = _path(shared_dir, TEST_MODEL)
    odd = tmp_path / "potential.yml"
    shutil.copy(src, odd)
    m = acegen.load(odd)
    assert isinstance(m, GraceFSModel) and m.kind == "gracefs" and m.elements == ("Al", "Li", "H")
    assert not isinstance(acegen.load(shared_dir / "potentials" / "Cu-III.yaml"), GraceFSModel)
    assert isinstance(acegen.load(shared_dir / "potentials" / "Cu-III.yaml"), PaceModel)


def test_save_round_trip_and_refusals(shared_dir, tmp_path):
    m = _model(shared_dir, TEST_MODEL)
    out = tmp_path / "again.yaml"
    m.save(out)
    back = acegen.load(out)
    assert isinstance(back, GraceFSModel)
    assert back.gracefs == m.gracefs == read_gracefs(_path(shared_dir, TEST_MODEL))
    for bad in ("x.json", "x.yace"):
        with pytest.raises(AcegenError, match="GRACE-FS YAML"):
            m.save(tmp_path / bad)


def test_cli_info_and_compile(shared_dir, capsys):
    from acegen.cli import main

    path = str(_path(shared_dir, TEST_MODEL))
    assert main(["info", path]) == 0
    text = capsys.readouterr().out
    assert "GRACE-FS: element embedding Z (3 x 12)" in text and "shared by all bonds" in text
    assert main(["compile", path]) == 0


def test_c_plan_merges_the_bonds_of_a_shared_table(shared_dir):
    ir = _model(shared_dir, TEST_MODEL).ir()
    merged = build_plan(ir, merge_shared=True)
    plain = build_plan(ir)
    n = len(ir.elements)
    for s in merged.species:
        assert len(s.bonds) == 1 and s.bonds[0].members == tuple(range(n))
        assert s.bonds[0].weight_table.shape == (n, s.bonds[0].nslot)
    assert all(len(s.bonds) == n for s in plain.species)
    assert merged.slot_doubles == plain.slot_doubles  # one copy of the table either way
    assert "merged neighbour species" in merged.to_text() and "merged" not in plain.to_text()


# ------------------------------------------------------------------------------ LAMMPS
@pytest.fixture(scope="module")
def gracefs_plugin(shared_dir, tmp_path_factory):
    from .test_lammps import build_model_plugin

    model = _model(shared_dir, TEST_MODEL)
    return model, acegen.Calculator(model), build_model_plugin(model, tmp_path_factory)


def _three_element_cell():
    from ase.build import bulk

    atoms = bulk("Al", "fcc", a=4.05, cubic=True) * (2, 2, 2)
    rng = np.random.default_rng(5)
    atoms.symbols[rng.choice(len(atoms), 10, replace=False)] = ["Li"] * 6 + ["H"] * 4
    atoms.rattle(0.08, seed=4)
    return atoms


@pytest.mark.parametrize("nprocs", [1, 2])
def test_lammps_plugin_matches_calculator(gracefs_plugin, tmp_path, nprocs):
    from .test_lammps import _mpirun_works, assert_matches, calculator_reference, lammps_cell, run_lammps

    if nprocs > 1 and not _mpirun_works():
        pytest.skip("mpirun of the mpich package does not run here")
    model, calc, plugin = gracefs_plugin
    atoms = lammps_cell(_three_element_cell())
    elements = list(model.elements)
    types = np.array([elements.index(s) + 1 for s in atoms.get_chemical_symbols()])
    res = run_lammps(tmp_path, plugin, atoms, types=types, type_elements=elements, nprocs=nprocs,
                     newton="on" if nprocs == 1 else "off")
    assert_matches(res, calculator_reference(calc, atoms))


def test_lammps_plugin_gamma_matches_calculator(gracefs_plugin, tmp_path):
    """The GRACE-FS plugin holds the projection variant: with an active set in pair_coeff,
    ``fix pair … gamma 1`` gives the ASE calculator's γ for every atom of a three-element cell."""
    from .test_lammps import lammps_cell
    from .test_lammps_gamma import assert_gamma_matches_calculator

    model, _, plugin = gracefs_plugin
    assert_gamma_matches_calculator(model, plugin, lammps_cell(_three_element_cell()), list(model.elements),
                                    tmp_path / "run")


def test_source_index_finds_the_kernel_without_parsing(shared_dir, tmp_path):
    """Loaded again after a C kernel of exactly this file was compiled, the model is not parsed:
    the kernel cache's source index gives the kernel and the elements; changing the file's
    content misses the index."""
    path = tmp_path / "m.yaml"
    shutil.copy(_path(shared_dir, FITTED_MODEL), path)
    first = acegen.load(path)
    k1 = first.compile("c")
    again = acegen.load(path)
    assert isinstance(again, GraceFSModel) and again._pace is None and again._index_entry is not None
    assert again.elements == ("Al", "Li")
    k2 = again.compile("c")
    assert again._pace is None and k2.signature == k1.signature
    import re

    path.write_text(re.sub(r"(?m)^nnorm: .*$", "nnorm: 0.5", path.read_text(), count=1))
    changed = acegen.load(path)
    assert changed._index_entry is None and changed.gracefs.nnorm == 0.5


def test_bad_gracefs_content_names_the_field(shared_dir, tmp_path):
    from acegen.errors import ModelFileError

    path = tmp_path / "bad.yaml"
    text = _path(shared_dir, TEST_MODEL).read_text()
    path.write_text(text.replace("type: FinnisSinclairShiftedScaled", "type: Mystery", 1))
    with pytest.raises(ModelFileError, match="emb_spec.type"):
        acegen.Calculator(path)


def test_random_many_element_model_compiled_matches_the_reference():
    """A small random model of benchmarks/make_gracefs.py (6 elements, ranks up to 4, lmax 3,
    4 densities): the merged C kernel and the LLVM kernel equal the NumPy reference on a
    6-element crystal."""
    import importlib.util
    from pathlib import Path

    from ase.build import bulk

    from acegen.io.gracefs import gracefs_from_dict

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "make_gracefs.py"
    spec = importlib.util.spec_from_file_location("make_gracefs_pipeline", path)
    mg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mg)
    pot = gracefs_from_dict(mg.make_gracefs(seed=3, n_elements=6, n_functions=120, lmax=3))
    assert pot.rankmax == 4
    model = GraceFSModel(pot, name="random6")
    atoms = bulk("Cu", "fcc", a=3.96, cubic=True) * (2, 2, 2)
    atoms.set_chemical_symbols(list(np.random.default_rng(1).choice(list(pot.elements), len(atoms))))
    atoms.rattle(0.05, seed=2)
    ref = GraceFSReference(pot).compute(atoms)
    for target in ("c", "llvm"):
        a = atoms.copy()
        a.calc = acegen.Calculator(model, target=target)
        assert abs(a.get_potential_energy() - ref["energy"]) <= 1e-9 * max(1.0, abs(ref["energy"]))
        assert np.abs(a.get_potential_energies() - ref["energies"]).max() <= 1e-9
        assert np.abs(a.get_forces() - ref["forces"]).max() <= 1e-9
        assert np.abs(a.get_stress() - ref["stress"]).max() <= 1e-10


# ------------------------------------------------------------------------ extrapolation grade γ
def _proj_error(model, atoms, target):
    """Largest |compiled b_f − oracle b_f| relative to the size of the summed terms."""
    from acegen.active import atom_projections

    Z, rows = atom_projections(model, atoms, target=target)
    Z2, ref, mag = GraceFSReference(model.gracefs).projections(atoms)
    assert np.array_equal(Z, Z2)
    worst = 0.0
    for mu, b in enumerate(rows):
        n_f = len(model.gracefs.functions[mu])
        assert b.shape == (int(np.sum(Z == mu)), n_f) == ref[mu].shape
        if len(b):
            assert np.max(np.abs(ref[mu])) > 0 or len(atoms) < 4
            worst = max(worst, float(np.max(np.abs(b - ref[mu]) / mag[mu])))
    return worst


@pytest.mark.parametrize("target", ["c", "llvm"])
@pytest.mark.parametrize("name", [TEST_MODEL, FITTED_MODEL])
def test_compiled_projections_match_the_oracle(shared_dir, name, target):
    """b_f = Σ_s gen_cg_{f,s} Π_t A, one per function in file order; the C kernel merges the
    bonds (shared table) in the projection variant too."""
    model = _model(shared_dir, name)
    frames = _frames(shared_dir, name)
    for k in (0, 3, 4, 5):
        assert _proj_error(model, frames[k], target) < 1e-13


def test_projection_variant_keeps_the_merged_bonds(shared_dir):
    ir = _model(shared_dir, TEST_MODEL).projection_ir()
    assert ir.output == "projections"
    plan = build_plan(ir, merge_shared=True)
    assert all(len(s.bonds) == 1 and s.bonds[0].members == tuple(range(len(ir.elements))) for s in plan.species)
    assert plan.project and "merged neighbour species" in plan.to_text()


def test_interpreter_projections_sum_every_neighbour(shared_dir):
    from acegen.ir.interp import evaluate_projections
    from acegen.runtime.neighbours import build_neighbours, species_indices

    model = _model(shared_dir, TEST_MODEL)
    atoms = _frames(shared_dir, TEST_MODEL)[0]
    ir = model.ir()
    Z = species_indices(atoms, ir.elements)
    nl = build_neighbours(atoms, float(ir.rcut_max))
    out = evaluate_projections(ir, Z, nl.offsets, np.ascontiguousarray(Z[nl.j], dtype=np.int32), nl.rij)
    _, ref, mag = GraceFSReference(model.gracefs).projections(atoms)
    for mu, sp in enumerate(ir.species):
        nd = sp.embedding.ndensity
        b = out[Z == mu, nd:nd + sp.n_projections]
        assert np.max(np.abs(b - ref[mu]) / mag[mu]) < 1e-13


def _gracefs_training(shared_dir):
    base = _frames(shared_dir, TEST_MODEL)[3]  # 256 atoms, every species
    out = []
    for k in range(3):
        a = base.copy()
        a.rattle(0.05, seed=k)
        out.append(a)
    return out


def test_gracefs_active_set_and_gamma(shared_dir, tmp_path):
    from acegen.active import ActiveSet, atom_projections, build_active_set, select_structures

    model = _model(shared_dir, TEST_MODEL)
    frames = _frames(shared_dir, TEST_MODEL)
    train = _gracefs_training(shared_dir)
    act = build_active_set(model, train)
    n_f = [len(model.gracefs.functions[mu]) for mu in range(len(model.elements))]
    assert not act.full and [act.inverse[el].shape for el in model.elements] == [(n, n) for n in n_f]
    for atoms in train:
        Z, rows = atom_projections(model, atoms)
        assert np.max(act.gamma(model, Z, rows)) <= 1.01 * (1 + 1e-6)
    p = tmp_path / "gfs.asi"
    act.save(p)
    # the calculator: γ from the oracle's projections, energies unchanged
    atoms = frames[8].copy()  # 8 atoms, mostly H: unlike the training set
    atoms.calc = acegen.Calculator(model, active_set=p)
    e = atoms.get_potential_energy()
    g = atoms.calc.results["gamma"]
    Z, ref, _ = GraceFSReference(model.gracefs).projections(atoms)
    want = np.zeros(len(atoms))
    for mu, el in enumerate(model.elements):
        if len(ref[mu]):
            want[Z == mu] = np.max(np.abs(ref[mu] @ act.inverse[el]), axis=1)
    assert np.allclose(g, want, rtol=1e-7, atol=1e-9) and g.max() > 5
    assert e == pytest.approx(acegen.Calculator(model).get_potential_energy(atoms), rel=1e-14, abs=1e-12)
    cand = [frames[9], frames[8], frames[7]]
    order = select_structures(model, ActiveSet.load(p, model), cand, 3)
    assert sorted(order) == [0, 1, 2] and select_structures(model, act, cand, 1) == order[:1]


def test_gracefs_cli_activeset_and_select(shared_dir, tmp_path):
    import subprocess
    import sys

    from acegen.active import ActiveSet, atom_projections

    model = _model(shared_dir, TEST_MODEL)
    train = tmp_path / "train.extxyz"
    ase.io.write(train, _gracefs_training(shared_dir))
    asi = tmp_path / "gfs.asi"
    path = _path(shared_dir, TEST_MODEL)
    r = subprocess.run([sys.executable, "-m", "acegen.cli", "activeset", str(path), str(train), "-o", str(asi)],
                       capture_output=True, text=True, check=True)
    n = len(model.gracefs.functions[0])
    assert f"{n}x{n}" in r.stdout
    act = ActiveSet.load(asi, model)
    for atoms in ase.io.read(train, ":"):
        Z, rows = atom_projections(model, atoms)
        assert np.max(act.gamma(model, Z, rows)) <= 1.01 * (1 + 1e-6)
    cand = tmp_path / "cand.extxyz"
    frames = _frames(shared_dir, TEST_MODEL)
    ase.io.write(cand, [frames[k] for k in (8, 3, 1)])
    sel = tmp_path / "sel.extxyz"
    subprocess.run([sys.executable, "-m", "acegen.cli", "select", str(path), str(asi), str(cand), "-n", "1",
                    "-o", str(sel)], capture_output=True, text=True, check=True)
    assert len(ase.io.read(sel, ":")) == 1
