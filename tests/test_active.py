"""Extrapolation grade γ (PACE active learning): B-basis projections from the kernels, the
active-set file, γ against pyace's reference values, MaxVol, active-set building, selection
and the command-line verbs."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError

import acegen
from acegen.active import ActiveSet, atom_projections, build_active_set, maxvol, maxvol_batched, select_structures
from acegen.active.maxvol import MaxVolError
from acegen.errors import AcegenError, ModelFileError, SpecError
from acegen.io.pace import bbasis_to_ctilde, read_bbasis_yaml
from acegen.io.pace_lower import pace_to_ir
from acegen.ir.interp import evaluate_ir, evaluate_projections
from acegen.reference.pace_numpy import PaceReference
from acegen.runtime.kernels import compile_ir
from acegen.runtime.neighbours import build_neighbours, species_indices

from .conftest import SHARED, SHARED_MISSING


def _shared():
    if not SHARED.is_dir():
        pytest.skip(SHARED_MISSING)
    return SHARED


def _paths():
    s = _shared()
    return s / "potentials" / "Cu-I.yaml", s / "potentials" / "Cu-I.asi", s / "reference" / "gamma" / "Cu-I_gamma.extxyz"


@pytest.fixture(scope="module")
def cu():
    yaml, asi, ref = _paths()
    bb = read_bbasis_yaml(yaml)
    pot = bbasis_to_ctilde(bb)
    return {"bb": bb, "pot": pot, "ir": pace_to_ir(pot, name="cu_gamma"), "frames": ase.io.read(ref, ":"),
            "yaml": yaml, "asi": asi, "model": acegen.load(yaml)}


def _inputs(ir, atoms):
    Z = species_indices(atoms, ir.elements)
    nl = build_neighbours(atoms, float(ir.rcut_max))
    return Z, nl.offsets, np.ascontiguousarray(Z[nl.j], dtype=np.int32), nl.rij


def _savez(path, **arrays):
    with open(path, "wb") as fh:  # np.savez(path) would append ".npz" to the name
        np.savez(fh, **arrays)


def _close(got, ref, rel=1e-5, floor=1e-3, atol=1e-8):
    """γ agreement: `rel` relative, `atol` absolute below `floor`."""
    got, ref = np.asarray(got), np.asarray(ref)
    return np.all(np.abs(got - ref) <= np.where(np.abs(ref) < floor, atol, rel * np.abs(ref)))


# ------------------------------------------------------------------------------- projections
def test_b_basis_count_differs_from_ctilde(cu):
    sp = cu["ir"].species[0]
    assert sp.n_projections == 82 and len(cu["pot"].functions[0]) == 81
    assert cu["ir"].projection_width == 2 * sp.embedding.ndensity + 82  # ρ, b, F'(ρ)


@pytest.mark.parametrize("frame", [0, 2, 7, 12, 17])
def test_interpreter_projections_match_the_b_basis_oracle(cu, frame):
    atoms = cu["frames"][frame]
    ref, mag = PaceReference(cu["pot"]).projections(atoms, cu["bb"], magnitudes=True)
    out = evaluate_projections(cu["ir"], *_inputs(cu["ir"], atoms))
    nd = cu["ir"].species[0].embedding.ndensity
    b = out[:, nd : nd + 82]
    # relative to the size of the summed terms (some functions vanish by symmetry)
    assert np.max(np.abs(b - ref) / mag) < 1e-13
    big = np.abs(ref) > 1e-3 * mag
    assert np.max(np.abs(b - ref)[big] / np.abs(ref[big])) < 1e-12
    # the densities of the projection output are the energy's: same energies through F
    e_ir, _ = evaluate_ir(cu["ir"], *_inputs(cu["ir"], atoms))
    from acegen.ir.interp import embedding

    sp = cu["ir"].species[0]
    e_rho = np.array([embedding(sp, row[:nd])[0] for row in out])
    assert np.allclose(e_rho + sp.E0, e_ir, rtol=1e-13, atol=1e-12) or sp.core.kind != "none"


@pytest.mark.parametrize("target", ["c", "llvm"])
def test_compiled_projection_kernels_match_the_interpreter(cu, target):
    k = compile_ir(cu["ir"].projection_ir(), target)
    assert k.out_width == cu["ir"].projection_width
    nd = cu["ir"].species[0].embedding.ndensity
    ref = PaceReference(cu["pot"])
    for frame in (0, 7, 14):
        atoms = cu["frames"][frame]
        args = _inputs(cu["ir"], atoms)
        want = evaluate_projections(cu["ir"], *args)
        got, dEdr = k.compute(*args, nthreads=2)
        assert got.shape == want.shape and not np.any(dEdr)
        rho = want[:, :nd]
        assert np.allclose(got[:, :nd], rho, rtol=1e-12, atol=1e-12 * np.abs(rho).max())
        b_ref, mag = ref.projections(atoms, cu["bb"], magnitudes=True)
        assert np.max(np.abs(got[:, nd : nd + 82] - b_ref) / mag) < 1e-13
        # F'_p(ρ_p) after b: the compiled embedding's derivatives = the interpreter's
        dF = want[:, nd + 82 :]
        assert dF.shape[1] == nd and np.all(np.abs(dF) > 0)
        assert np.allclose(got[:, nd + 82 :], dF, rtol=1e-12, atol=0)


def test_energy_model_ignores_projections(cu):
    """The energy IR, its plan and its C source do not depend on the projections (plain MD
    pays nothing); the projection variant is a different model."""
    from acegen.backends.c import emit_c

    plain = pace_to_ir(replace(cu["pot"], bfunctions=None), name="cu_gamma")
    assert not plain.has_projections
    assert plain.signature() == cu["ir"].signature()
    assert emit_c(plain) == emit_c(cu["ir"])
    proj = cu["ir"].projection_ir()
    assert proj.output == "projections" and proj.signature() != cu["ir"].signature()
    with pytest.raises(SpecError, match="no projection functions"):
        plain.projection_ir()


def test_targets_without_a_projection_variant_refuse_it(cu):
    from acegen.backends.embed import emit_embed
    from acegen.backends.lammps import kernel_source

    proj = cu["ir"].projection_ir()
    with pytest.raises(AcegenError, match="projection"):
        compile_ir(proj, "cuda")
    with pytest.raises(AcegenError, match="projection"):
        emit_embed(proj)
    with pytest.raises(AcegenError, match="projection"):
        kernel_source(proj)


def test_full_projections_are_energy_derivatives_wrt_coefficients(cu):
    """∂E_i/∂c_{f,p} by central differences on the B-basis coefficients = full projection
    at index p·N + f (B order: rank 1 first, then file order)."""
    bb = cu["bb"]
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.05, seed=3)
    model = cu["model"]
    Z, rows = atom_projections(model, atoms, full=True, target="llvm")
    N = cu["ir"].species[0].n_projections
    blk = bb.blocks[0]
    order = [i for i, f in enumerate(blk.functions) if f.rank == 1] + [i for i, f in enumerate(blk.functions) if f.rank != 1]
    for f_pos in (0, 9, 40, 81):
        fi = order[f_pos]
        for p in range(blk.ndensity):
            h = 1e-4 * max(1.0, abs(blk.functions[fi].c[p]))
            es = []
            for sgn in (1, -1):
                c = list(blk.functions[fi].c)
                c[p] += sgn * h
                funcs = list(blk.functions)
                funcs[fi] = replace(funcs[fi], c=tuple(c))
                bb2 = replace(bb, blocks=(replace(blk, functions=tuple(funcs)),) + bb.blocks[1:])
                ir2 = pace_to_ir(bbasis_to_ctilde(bb2), name="cu_fd")
                es.append(evaluate_ir(ir2, *_inputs(ir2, atoms))[0])
            fd = (es[0] - es[1]) / (2 * h)
            an = rows[0][:, p * N + f_pos]
            assert np.allclose(an, fd, rtol=1e-6, atol=1e-9 * np.max(np.abs(an)) + 1e-12)


# ------------------------------------------------------------------------ γ against pyace
@pytest.mark.parametrize("target", ["c", "llvm"])
def test_calculator_gamma_matches_pyace_on_every_frame(cu, target):
    calc = acegen.Calculator(cu["model"], target=target, active_set=cu["asi"])
    plain = acegen.Calculator(cu["model"], target=target)
    for atoms in cu["frames"]:
        ref = atoms.arrays["ref_gamma"]
        a = atoms.copy()
        a.calc = calc
        e = a.get_potential_energy()
        g = calc.results["gamma"]
        assert g.shape == (len(atoms),)
        assert _close(g, ref), (atoms.info.get("config_type"), np.max(np.abs(g - ref) / np.abs(ref)))
        b = atoms.copy()
        b.calc = plain
        assert b.get_potential_energy() == e
        assert np.array_equal(b.get_forces(), a.get_forces())
        assert "gamma" not in plain.results


def test_gamma_needs_an_active_set(cu):
    atoms = cu["frames"][1].copy()
    atoms.calc = acegen.Calculator(cu["model"])
    with pytest.raises(PropertyNotImplementedError, match="active set"):
        atoms.calc.get_property("gamma", atoms)


def test_active_set_file_errors(cu, tmp_path):
    model = cu["model"]
    N, nd = 82, cu["ir"].species[0].embedding.ndensity
    full = tmp_path / "full.asi"
    _savez(full, Cu=np.eye(N * nd))
    assert ActiveSet.load(full, model).full
    assert not ActiveSet.load(cu["asi"], model).full
    cases = {
        "shape": {"Cu": np.eye(N + 1)},
        "square": {"Cu": np.zeros((N, N * nd))},
        "Cu": {"Ag": np.eye(N)},
    }
    for what, arrays in cases.items():
        p = tmp_path / f"{what}.asi"
        _savez(p, **arrays)
        with pytest.raises(ModelFileError, match=what):
            ActiveSet.load(p, model)
    nan = tmp_path / "nan.asi"
    a = np.eye(N)
    a[3, 4] = np.nan
    _savez(nan, Cu=a)
    with pytest.raises(ModelFileError, match="non-finite"):
        ActiveSet.load(nan, model)
    junk = tmp_path / "junk.asi"
    junk.write_text("not an npz")
    with pytest.raises(ModelFileError, match="npz"):
        ActiveSet.load(junk, model)
    with pytest.raises(ModelFileError, match="no such"):
        ActiveSet.load(tmp_path / "missing.asi", model)


def test_mixed_active_sets_are_refused(tmp_path):
    yaml = _shared() / "potentials" / "DFT10B-AgCu.yaml"
    model = acegen.load(yaml)
    ir = model.ir()
    sizes = {el: (sp.n_projections, sp.embedding.ndensity) for el, sp in zip(model.elements, ir.species)}
    arrays = {}
    for k, (el, (N, nd)) in enumerate(sizes.items()):
        arrays[el] = np.eye(N if k == 0 else N * nd)
    p = tmp_path / "mixed.asi"
    _savez(p, **arrays)
    if all(nd == 1 for _, nd in sizes.values()):
        pytest.skip("ndensity 1: linear and full shapes coincide")
    with pytest.raises(ModelFileError, match="mixes"):
        ActiveSet.load(p, model)


# --------------------------------------------------------------------------------- MaxVol
def test_maxvol_square_selection():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(400, 12)) * rng.uniform(0.1, 3.0, size=(400, 1))
    I = maxvol(A, tol=1.01)
    assert len(set(I)) == 12
    B = A @ np.linalg.inv(A[I])
    assert np.max(np.abs(B)) <= 1.01 + 1e-10
    # larger volume than the LU start and than random picks
    from acegen.active.maxvol import _initial_rows

    vol = abs(np.linalg.det(A[I]))
    assert vol >= abs(np.linalg.det(A[_initial_rows(A)])) * (1 - 1e-12)
    for _ in range(20):
        assert vol >= abs(np.linalg.det(A[rng.choice(400, 12, replace=False)]))


def test_maxvol_rejects_bad_input():
    with pytest.raises(MaxVolError, match="at least as many rows"):
        maxvol(np.ones((3, 5)))
    with pytest.raises(MaxVolError, match="non-finite"):
        maxvol(np.full((6, 2), np.nan))
    with pytest.raises(MaxVolError, match="tolerance"):
        maxvol(np.eye(3), tol=0.5)


def test_maxvol_batched_bounds_every_row():
    rng = np.random.default_rng(1)
    A = rng.normal(size=(3000, 15)) * np.exp(rng.normal(size=(3000, 1)))
    sel, origin = maxvol_batched(lambda: (A[k : k + 250] for k in range(0, len(A), 250)), 15, tol=1.01)
    assert sel.shape == (15, 15)
    for (b, k), row in zip(origin, sel):
        assert np.array_equal(A[250 * b + k], row)
    g = np.max(np.abs(A @ np.linalg.pinv(sel)), axis=1)
    assert g.max() <= 1.01 + 1e-9
    with pytest.raises(MaxVolError, match="at least 15"):
        maxvol_batched(lambda: [A[:10]], 15)


def _ill_conditioned(n=5000, r=60, cond=1e12, seed=0):
    """n × r rows with geometrically decaying singular values (condition number ``cond``)."""
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.normal(size=(n, r)))
    V, _ = np.linalg.qr(rng.normal(size=(r, r)))
    return (U * np.geomspace(1.0, 1.0 / cond, r)) @ V.T


def test_maxvol_batched_converges_on_an_ill_conditioned_set():
    A = _ill_conditioned()
    assert np.linalg.cond(A) > 1e11
    sel, origin = maxvol_batched(lambda: (A[k : k + 250] for k in range(0, len(A), 250)), 60, tol=1.01)
    for (b, k), row in zip(origin, sel):
        assert np.array_equal(A[250 * b + k], row)
    # γ exactly as the active-set inverse computes it, over every row
    g = np.max(np.abs(A @ np.linalg.pinv(sel)), axis=1)
    assert g.max() <= 1.01 * (1 + 1e-9)


def test_maxvol_batched_warns_when_not_converged():
    from acegen.active.maxvol import MaxVolWarning

    A = _ill_conditioned()
    with pytest.warns(MaxVolWarning, match="not converged after 1 pass"):
        maxvol_batched(lambda: (A[k : k + 250] for k in range(0, len(A), 250)), 60, tol=1.01, max_passes=1)


# --------------------------------------------------------------------- building and selecting
TRAIN = (6, 7, 14, 15, 16)


@pytest.mark.parametrize("full", [False, True])
def test_built_active_set_bounds_the_training_set(cu, tmp_path, full):
    model, frames = cu["model"], cu["frames"]
    train = [frames[k] for k in TRAIN]
    act = build_active_set(model, train, full=full, batch_size=100)
    nd = cu["ir"].species[0].embedding.ndensity
    assert act.inverse["Cu"].shape == ((82 * nd,) * 2 if full else (82, 82))
    p = tmp_path / "pot.asi"
    act.save(p)
    back = ActiveSet.load(p, model)
    assert back.full == full and np.array_equal(back.inverse["Cu"], act.inverse["Cu"])
    for atoms in train:
        Z, rows = atom_projections(model, atoms, full=full)
        assert np.max(back.gamma(model, Z, rows)) <= 1.01 * (1 + 1e-6)
    # an environment unlike the training set extrapolates
    Z, rows = atom_projections(model, frames[11], full=full)
    assert np.max(back.gamma(model, Z, rows)) > 5


def test_too_few_environments(cu):
    with pytest.raises(AcegenError, match="at least 82"):
        build_active_set(cu["model"], [cu["frames"][7]])


def test_select_prefers_extrapolative_structures(cu):
    frames = cu["frames"]
    act = ActiveSet.load(cu["asi"], cu["model"])
    cand = [frames[k] for k in (0, 1, 4, 5, 8, 17, 13)]  # ideal crystals, then a cluster and a slab
    chosen = select_structures(cu["model"], act, cand, 2)
    assert sorted(chosen) == [5, 6]
    assert len(select_structures(cu["model"], act, cand, 10)) == len(cand)


# --------------------------------------------------------------------------------- CLI
def run(*args, check=True):
    return subprocess.run([sys.executable, "-m", "acegen.cli", *map(str, args)], capture_output=True, text=True,
                          check=check)


def test_cli_activeset_and_select(cu, tmp_path):
    frames = cu["frames"]
    train = tmp_path / "train.extxyz"
    ase.io.write(train, [frames[k] for k in TRAIN])
    cand = tmp_path / "cand.extxyz"
    ase.io.write(cand, [frames[k] for k in (0, 13, 1, 17)])
    asi = tmp_path / "pot.asi"
    out = run("activeset", cu["yaml"], train, "-o", asi).stdout
    assert "82x82" in out and asi.is_file()
    act = ActiveSet.load(asi, cu["model"])
    Z, rows = atom_projections(cu["model"], frames[TRAIN[0]])
    assert np.max(act.gamma(cu["model"], Z, rows)) <= 1.01 * (1 + 1e-6)
    sel = tmp_path / "sel.extxyz"
    run("select", cu["yaml"], asi, cand, "-n", "2", "-o", sel)
    picked = ase.io.read(sel, ":")
    assert sorted(a.info["config_type"] for a in picked) == sorted(frames[k].info["config_type"] for k in (13, 17))
    full = tmp_path / "pot.asi.nonlinear"
    out = run("activeset", cu["yaml"], train, "-o", full, "--full").stdout
    nd = cu["ir"].species[0].embedding.ndensity
    assert f"{82 * nd}x{82 * nd}" in out and ActiveSet.load(full, cu["model"]).full
    r = run("select", cu["yaml"], train, cand, "-n", "2", "-o", sel, check=False)
    assert r.returncode == 2 and "npz" in r.stderr and "Traceback" not in r.stderr


# ----------------------------------------------------------------- linear acegen models
def test_linear_model_projections_are_its_basis_functions():
    """For a linear acegen model the projections are its basis functions: θ · b_i + E0 = E_i
    (many-body then pair functions of the species, in parameter order); the energy IR keeps
    its signature."""
    from .models import model

    m = model("CuNi_pair_rcut")
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.symbols[::3] = "Ni"
    atoms.rattle(0.1, seed=1)
    atoms.calc = acegen.Calculator(m)
    e = atoms.get_potential_energies()
    for target in ("c", "llvm"):
        Z, rows = atom_projections(m, atoms, target=target)
        mb, pr = m.basis.split_params(m.coefficients)
        for mu in range(len(m.elements)):
            sel = np.flatnonzero(Z == mu)
            ks = [k for k, f in enumerate(m.basis.functions) if f.z0 == mu]
            ps = [k for k, p in enumerate(m.basis.pair) if p.z0 == mu]
            theta = np.concatenate([mb[ks], pr[ps]])
            assert rows[mu].shape == (len(sel), len(theta))
            assert np.allclose(rows[mu] @ theta + m.ir().species[mu].E0, e[sel], rtol=1e-12, atol=1e-12)
    assert m.basis.fold(m.coefficients, name=m.name, projections=True).signature() == m.ir().signature()
    # an active set of the linear model bounds its own training environments
    train = []
    for seed in range(12):
        a = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
        a.symbols[seed % 4 :: 4] = "Ni"
        a.rattle(0.15, seed=seed)
        train.append(a)
    act = build_active_set(m, train)
    for a in train:
        assert np.max(act.gamma(m, *atom_projections(m, a))) <= 1.01 * (1 + 1e-6)


def test_predictive_variance_of_a_linear_model():
    """b-based variances = e_rowᵀ Σ e_row with the fit's own basis evaluator (energy row)."""
    from acegen.active import predictive_variance
    from acegen.errors import FitError
    from acegen.fit.driver import make_basis_evaluator

    from .models import model

    m = model("CuNi_pair_rcut")
    n = m.basis.n_params
    rng = np.random.default_rng(4)
    L = rng.normal(size=(n, n)) / n
    cov = L @ L.T
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.symbols[1::3] = "Ni"
    atoms.rattle(0.1, seed=2)
    per_atom, total = predictive_variance(m, atoms, cov)
    ev = make_basis_evaluator(m.basis, forces=False, virial=False, target="numpy")
    row = np.asarray(ev(atoms)["energy"], dtype=float)
    assert np.isclose(total, row @ cov @ row, rtol=1e-10)
    assert per_atom.shape == (len(atoms),) and np.all(per_atom > 0)
    # one atom alone in a box of vacuum: its variance is the total's
    single = atoms[:1]
    single.center(vacuum=10.0)
    pa, tot = predictive_variance(m, single, cov)
    assert np.isclose(pa[0], tot, rtol=1e-12)
    with pytest.raises(FitError, match="posterior covariance"):
        predictive_variance(m, atoms)
    with pytest.raises(FitError, match="covariance must be"):
        predictive_variance(m, atoms, np.eye(3))
