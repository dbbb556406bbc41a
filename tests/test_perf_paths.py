"""Correctness of the performance code paths (issue 7); no timings are asserted here.

* the C kernel's structure-of-arrays neighbour blocks, radial slots, grouped product DAG and
  force pass against the IR interpreter (``acegen.ir.interp.evaluate_ir``), on a model built
  to hit the corner cases: radial functions shared between channels of different l, unused
  radial functions, a core-only bond (no channels), a species without channels, neighbour
  counts around the block width, SLP and spline radials;
* libraries built for different SIMD targets (SSE2 baseline vs -march=native) give bitwise
  identical numbers (fixed 8-way partial sums);
* the grouped DAG schedule against the DAG's own reverse sweep and direct products;
* the C cell list against a brute-force image sum and ASE, and the compiled force/virial
  scatter against NumPy;
* the kernel cache's source index (load a PACE file a second time without parsing it).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from acegen.backends.c import cdef, compile_c, emit_c
from acegen.errors import CompileError, StructureError
from acegen.ir.dag import build_dag, group_schedule
from acegen.ir.interp import evaluate_ir
from acegen.ir.model import Channel, CoreRepulsion, Embedding, ModelIR, RadialBlock, SpeciesProgram
from acegen.jit.load import CompiledKernel
from acegen.jit.toolchain import detect
from acegen.runtime import neighbours as nbmod
from acegen.runtime.neighbours import build_neighbours, scatter_forces_virial

from .conftest import SHARED, SHARED_MISSING
from .c_backend_models import hermite_spline, radial_slp, random_environment, random_monomials
from .test_dag import direct_grad, direct_rho, random_program


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| relative to max |b| (sums cancel: compare on the array's scale)."""
    return float(np.max(np.abs(a - b), initial=0.0) / max(float(np.max(np.abs(b), initial=0.0)), 1e-300))


# -- a model that exercises every kernel path ------------------------------------------------
def corner_model(seed: int = 0, lmax: int = 3) -> ModelIR:
    """Three species.

    Bonds: (0,0) spline, 4 functions, function 3 = core, function 2 unused; (0,1) SLP, 2
    functions; (0,2) spline with only a core function (species 0 has no channel towards 2: a
    core-only bond); (1,0) SLP; species 2 has no bond and no channel (E = E0).
    Species 0: radial function 0 of (0,0) serves channels with l = 0, 1 and 3; core "density".
    """
    from acegen.symbolic.ylm import ylm_slp

    rng = np.random.default_rng(seed)
    radial = {
        (0, 0): RadialBlock(0, 0, rcut=4.6, nfunc=4, spline=hermite_spline(4.6, 4, 0.02, seed + 1), core=3),
        (0, 1): RadialBlock(0, 1, rcut=4.1, nfunc=2, slp=radial_slp(4.1, 2, seed + 2)),
        (0, 2): RadialBlock(0, 2, rcut=3.9, nfunc=1, spline=hermite_spline(3.9, 1, 0.05, seed + 3), core=0),
        (1, 0): RadialBlock(1, 0, rcut=3.8, nfunc=2, slp=radial_slp(3.8, 2, seed + 4)),
    }
    rows0 = [(0, 0, 0), (0, 0, 1), (0, 1, 1), (0, 0, 3), (1, 1, 2), (1, 0, 0), (0, 1, 2)]
    rows1 = [(0, 1, 1), (0, 0, 0), (0, 1, 3)]
    programs = []
    for zi, rows, emb, core in (
        (0, rows0, Embedding("FinnisSinclairShiftedScaled", 2, (1.0, 1.0, 0.7, 0.5)), CoreRepulsion("density", 3.0, 1.5)),
        (1, rows1, Embedding("linear", 1, (1.0, 1.0)), CoreRepulsion("none")),
    ):
        chans, off = [], 0
        for zj, rad, l in rows:
            chans.append(Channel(zj=zj, radial=rad, l=min(l, lmax), offset=off))
            off += chans[-1].size
        monos = random_monomials(rng, off, 60, 4)
        coeffs = np.array([rng.normal(size=emb.ndensity) * 0.4 ** len(m) for m in monos])
        programs.append(SpeciesProgram(zi=zi, channels=tuple(chans), monomials=tuple(monos), coeffs=coeffs,
                                       embedding=emb, E0=float(rng.normal()), core=core))
    programs.append(SpeciesProgram(zi=2, channels=(), monomials=(), coeffs=np.zeros((0, 1)), E0=-1.25))
    return ModelIR(elements=("Cu", "Ni", "Al"), lmax=lmax, angular=ylm_slp(lmax), radial=radial,
                   species=tuple(programs), name=f"corner{seed}")


@pytest.fixture(scope="module")
def corner():
    ir = corner_model()
    return ir, compile_c(ir)


@pytest.mark.parametrize("max_nb", [0, 1, 7, 8, 9, 17, 40])
def test_kernel_blocks_match_interpreter(corner, max_nb):
    ir, k = corner
    env = random_environment(100 + max_nb, n_centres=30, max_nb=max_nb, radius=5.0, n_species=3)
    E, G = k.compute(*env)
    Er, Gr = evaluate_ir(ir, *env)
    assert rel_err(E, Er) < 1e-12
    assert rel_err(G, Gr) < 1e-12


def test_kernel_threads_bitwise(corner):
    ir, k = corner
    env = random_environment(7, n_centres=200, max_nb=30, n_species=3)
    E1, G1 = k.compute(*env, nthreads=1)
    E2, G2 = k.compute(*env, nthreads=2)
    np.testing.assert_array_equal(E1, E2)
    np.testing.assert_array_equal(G1, G2)


def test_simd_targets_give_identical_numbers(corner, tmp_path):
    """Baseline (SSE2, 2 lanes) and -march=native builds: same partial-sum order, same bits."""
    ir, k = corner
    tc = detect()
    if not tc.march_native:
        pytest.skip("compiler without -march=native")
    files = emit_c(ir)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data if isinstance(data, bytes) else data.encode())
    src = tmp_path / f"acegen_{ir.name}.c"
    n = len(ir.elements)
    rcut = np.array([[ir.rcut(a, b) for b in range(n)] for a in range(n)])
    env = random_environment(11, n_centres=40, max_nb=35, n_species=3)
    results = []
    for tag, native in (("base", False), ("native", True)):
        lib = tmp_path / f"lib_{tag}.so"
        tc.compile_shared([src], lib, tc.flags(openmp=False, march_native=native))
        kk = CompiledKernel(lib, ir.name, cdef(ir.name), n_species=n, rcut=rcut, signature=ir.signature())
        results.append(kk.compute(*env))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)



def _build_groups(ir, tmp_path, groups):
    """The C kernel of ``ir`` built with -DACEGEN_ATOM_GROUP=g for each g (same other flags as compile_c)."""
    tc = detect()
    for name, data in emit_c(ir).items():
        (tmp_path / name).write_bytes(data if isinstance(data, bytes) else data.encode())
    src = tmp_path / f"acegen_{ir.name}.c"
    n = len(ir.elements)
    rcut = np.array([[ir.rcut(a, b) for b in range(n)] for a in range(n)])
    kernels = {}
    for g in groups:
        lib = tmp_path / f"lib_g{g}.so"
        tc.compile_shared([src], lib, tc.flags(openmp=True, march_native=True) + (f"-DACEGEN_ATOM_GROUP={g}",))
        kernels[g] = CompiledKernel(lib, ir.name, cdef(ir.name), n_species=n, rcut=rcut, signature=ir.signature())
    return kernels


def test_atom_groups_give_identical_numbers(tmp_path):
    """Centres of one species taken through the product DAG together (ACEGEN_ATOM_GROUP = 2, 4, 8,
    node values interleaved) give the bits of the one-centre-at-a-time build (1), with and
    without threads, for full groups, incomplete ones and mixed species; the density core and,
    in the second model, the zbl core (per-centre state handed between the phases)."""
    from .c_backend_models import make_model

    for ir, n_species in ((corner_model(), 3), (make_model(seed=5, cores=(CoreRepulsion("zbl"), CoreRepulsion("density", 0.5, 0.3)),
                                                         name="groups_zbl", n_monomials=30), 2)):
        (tmp_path / ir.name).mkdir()
        kernels = _build_groups(ir, tmp_path / ir.name, (1, 2, 4, 8))
        for n_centres, max_nb in ((1, 9), (7, 17), (150, 30)):
            env = random_environment(21 + n_centres, n_centres=n_centres, max_nb=max_nb, radius=4.8, n_species=n_species)
            E1, G1 = kernels[1].compute(*env, nthreads=1)
            Er, Gr = evaluate_ir(ir, *env)
            assert rel_err(E1, Er) < 1e-12 and rel_err(G1, Gr) < 1e-12
            for g in (2, 4, 8):
                for nthreads in (1, 2):
                    E, G = kernels[g].compute(*env, nthreads=nthreads)
                    np.testing.assert_array_equal(E, E1)
                    np.testing.assert_array_equal(G, G1)


@pytest.mark.parametrize("target", ["c", "llvm"])
def test_atom_groups_report_errors_like_single_centres(tmp_path, target):
    """A bad pair inside a group: the grouped build (C: ACEGEN_ATOM_GROUP=4; LLVM: atom_group=4)
    names the same (lowest) centre and pair as the one-centre build."""
    ir = corner_model()
    if target == "c":
        kernels = _build_groups(ir, tmp_path, (1, 4))
    else:
        from acegen.backends.llvm import compile_llvm

        kernels = {g: compile_llvm(ir, cache=False, atom_group=g) for g in (1, 4)}
    species, offsets, nb, rij = random_environment(5, n_centres=120, max_nb=12, n_species=3)
    species[:] = 0  # one species: every full group of 4 goes through group_0
    firsts = [int(offsets[i]) + 1 for i in (90, 37, 66) if offsets[i + 1] - offsets[i] > 1]
    bad = rij.copy()
    for p in firsts:
        bad[p] = [np.nan, 0.0, 1.0]
    nb_bad = nb.copy()
    nb_bad[firsts[1]] = 9
    for arrays, what in (((species, offsets, nb, bad), "non-finite"), ((species, offsets, nb_bad, rij), "neighbour species index 9")):
        messages = []
        for g in (1, 4):
            for nthreads in (1, 2):
                with pytest.raises(StructureError, match=what) as exc:
                    kernels[g].compute(*arrays, nthreads=nthreads)
                messages.append(str(exc.value))
        assert len(set(messages)) == 1, messages


def test_llvm_atom_groups_give_identical_numbers():
    """The LLVM kernel's groups of centres (atom_group=4: the product DAG of 4 centres of one
    species on <4 x double> rows) give the bits of its one-centre build (atom_group=1), with and
    without threads, for full groups, incomplete ones, mixed species and a species without A (no
    group routine); the density core and, in the second model, the zbl core (per-centre state
    handed between front, mid and back); the interpreter's and the C kernel's numbers to 1e-12."""
    from acegen.backends.llvm import compile_llvm, emit_llvm

    from .c_backend_models import make_model

    for ir, n_species in ((corner_model(), 3), (make_model(seed=5, cores=(CoreRepulsion("zbl"), CoreRepulsion("density", 0.5, 0.3)),
                                                         name="llgroups_zbl", n_monomials=30), 2)):
        text1 = next(iter(emit_llvm(ir, atom_group=1).values()))
        text4 = next(iter(emit_llvm(ir, atom_group=4).values()))
        assert "@group_0(" in text4 and "@group_" not in text1
        for bad in (0, 2, 3, 8, True, 4.0):
            with pytest.raises(CompileError, match="atom_group"):
                emit_llvm(ir, atom_group=bad)
        k1, k4 = compile_llvm(ir, cache=False, atom_group=1), compile_llvm(ir, cache=False, atom_group=4)
        kc = compile_c(ir)
        for n_centres, max_nb in ((1, 9), (7, 17), (150, 30)):
            env = random_environment(21 + n_centres, n_centres=n_centres, max_nb=max_nb, radius=4.8, n_species=n_species)
            E1, G1 = k1.compute(*env, nthreads=1)
            Er, Gr = evaluate_ir(ir, *env)
            Ec, Gc = kc.compute(*env)
            assert rel_err(E1, Er) < 1e-12 and rel_err(G1, Gr) < 1e-12
            assert rel_err(E1, Ec) < 1e-12 and rel_err(G1, Gc) < 1e-12
            for nthreads in (1, 2):
                E, G = k4.compute(*env, nthreads=nthreads)
                np.testing.assert_array_equal(E, E1)
                np.testing.assert_array_equal(G, G1)


def test_llvm_lane_widths_give_identical_numbers():
    """The LLVM kernel built for blocks of 4 and of 8 neighbours (``lanes``; 8 is what an AVX-512
    host gets) gives the same bits, one centre at a time and in groups: the sums over neighbours
    and DAG nodes keep 8 partial sums and a reverse run 4 for either width.  Degrees up to 5
    (9 and 11 m per degree: the A accumulation in chunks of m), spline and SLP radials, a
    core-only bond, the density and zbl cores; the interpreter's numbers to 1e-12."""
    from acegen.backends.llvm import compile_llvm, emit_llvm

    from .c_backend_models import make_model

    ir = corner_model(seed=3, lmax=5)
    with pytest.raises(CompileError, match="lanes"):
        emit_llvm(ir, lanes=2)
    text8 = next(iter(emit_llvm(ir, lanes=8).values()))
    assert "<8 x double>" in text8 and "<8 x double>" not in next(iter(emit_llvm(ir, lanes=4).values()))
    for ir, n_species in ((ir, 3), (make_model(seed=6, cores=(CoreRepulsion("zbl"), CoreRepulsion("density", 0.5, 0.3)),
                                               name="lanes_zbl", n_monomials=30), 2)):
        kernels = {(lanes, g): compile_llvm(ir, cache=False, lanes=lanes, atom_group=g) for lanes in (4, 8) for g in (1, 4)}
        for n_centres, max_nb in ((3, 9), (40, 23), (90, 35)):
            env = random_environment(31 + n_centres, n_centres=n_centres, max_nb=max_nb, radius=4.8, n_species=n_species)
            E4, G4 = kernels[(4, 1)].compute(*env)
            Er, Gr = evaluate_ir(ir, *env)
            assert rel_err(E4, Er) < 1e-12 and rel_err(G4, Gr) < 1e-12
            for key, k in kernels.items():
                E, G = k.compute(*env, nthreads=2 if key[1] == 4 else 1)
                np.testing.assert_array_equal(E, E4, err_msg=str(key))
                np.testing.assert_array_equal(G, G4, err_msg=str(key))


# -- grouped DAG schedule ----------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_grouped_schedule_matches_products(seed):
    prog = random_program(seed, n_A=10, count=80, max_order=5)
    dag = build_dag(prog)
    s = group_schedule(dag)
    assert s.n_products == dag.n_products and s.n_leaves == dag.n_leaves
    # runs: operands earlier than the product, one key per run
    for g in range(s.n_groups):
        for p in range(int(s.group_ptr[g]), int(s.group_ptr[g + 1])):
            assert s.key[g] < s.n_leaves + p and s.other[p] < s.n_leaves + p
    rng = np.random.default_rng(seed)
    A = rng.normal(size=dag.n_leaves)
    g = rng.normal(size=dag.ndensity)
    rho = s.coeffs @ s.forward(A)
    np.testing.assert_allclose(rho, direct_rho(prog, A), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(s.backward(A, g), direct_grad(prog, A, g), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(s.backward(A, g), dag.backward(A, g), rtol=1e-12, atol=1e-14)


# -- neighbour lists ---------------------------------------------------------------------------
def brute_pairs(atoms, rc):
    """All (i, j, r_j - r_i + n cell) within rc, over enough images n for atoms anywhere."""
    cell = atoms.cell.array
    reps = []
    for k in range(3):
        if not atoms.pbc[k]:
            reps.append(range(1))
            continue
        nrm = np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3])
        h = abs(np.dot(cell[k], nrm)) / np.linalg.norm(nrm)
        # fractional spread of the (unwrapped) atoms along k, measured across the lattice planes
        f = atoms.positions @ nrm / np.dot(cell[k], nrm)
        n = int(np.ceil(rc / h)) + 1 + int(np.ceil(f.max() - f.min()))
        reps.append(range(-n, n + 1))
    shifts = np.array(list(itertools.product(*reps))) @ cell
    pos = atoms.positions
    out = set()
    for i in range(len(atoms)):
        d = pos[None, :, None, :] - pos[i][None, None, None, :] + shifts[None, None, :, :]
        r = np.linalg.norm(d, axis=-1)[0]
        for j, s in zip(*np.nonzero((r < rc) & (r > 1e-9))):
            out.add((i, int(j), *np.round(d[0, j, s], 7)))
    return out


def as_set(nl):
    return {(int(i), int(j), *np.round(d, 7)) for i, j, d in zip(nl.i, nl.j, nl.rij)}


def skewed_cell(seed):
    rng = np.random.default_rng(seed)
    cell = np.array([[4.1, 0, 0], [3.2, 3.0, 0], [-1.9, 1.4, 3.3]])
    return Atoms("Cu7", positions=rng.uniform(-2.0, 6.0, (7, 3)), cell=cell, pbc=True)


NL_CASES = {
    "skewed_small_cell": (lambda: skewed_cell(0), 6.1),
    "skewed_mixed_pbc": (lambda: Atoms("Cu5", positions=np.random.default_rng(2).uniform(-3, 7, (5, 3)),
                                       cell=[[3.5, 0.2, 0], [1.7, 3.1, 0.0], [0.9, -0.4, 9.0]],
                                       pbc=[True, False, True]), 5.3),
    "wire": (lambda: Atoms("Cu3", positions=[[-7.0, 0.3, 0.1], [1.2, 3.0, 0.0], [0.4, 0.2, 2.0]],
                           cell=[[2.7, 0.3, 0.0], [0, 5, 0], [0, 0, 5]], pbc=[True, False, False]), 5.0),
    "sparse_cluster": (lambda: Atoms("Cu4", positions=[[0, 0, 0], [1e4, 0, 0], [1e4, 2.0, 0], [0, 0, -3e3]]), 4.0),
    "one_atom_cell": (lambda: bulk("Cu", "fcc", a=3.6), 7.4),
}


@pytest.mark.parametrize("name", sorted(NL_CASES))
def test_cell_list_against_brute_force(name):
    make, rc = NL_CASES[name]
    atoms = make()
    nl = build_neighbours(atoms, rc)
    assert np.all(np.diff(nl.i) >= 0)
    np.testing.assert_array_equal(nl.offsets, np.r_[0, np.cumsum(np.bincount(nl.i, minlength=len(atoms)))])
    got = as_set(nl)
    assert len(got) == nl.n_pairs
    assert got == brute_pairs(atoms, rc)


def test_cell_list_against_ase_and_fallback(monkeypatch):
    from ase.neighborlist import neighbor_list

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((4, 3, 5))
    atoms.rattle(0.1, seed=3)
    atoms.set_cell(atoms.cell.array + [[0, 0.4, 0], [0.3, 0, 0], [0, 0.5, 0]], scale_atoms=True)
    nl = build_neighbours(atoms, 5.7)
    i, j, D = neighbor_list("ijD", atoms, 5.7, self_interaction=False)
    assert as_set(nl) == {(int(a), int(b), *np.round(d, 7)) for a, b, d in zip(i, j, D)}
    monkeypatch.setattr(nbmod, "_native", lambda: None)
    nl2 = build_neighbours(atoms, 5.7)
    assert as_set(nl2) == as_set(nl)
    g = np.random.default_rng(0).normal(size=(nl2.n_pairs, 3))
    F2, W2 = scatter_forces_virial(nl2, g)
    monkeypatch.undo()
    F, W = scatter_forces_virial(nl2, g)
    np.testing.assert_allclose(F, F2, rtol=1e-12, atol=1e-11)
    np.testing.assert_allclose(W, W2, rtol=1e-12, atol=1e-10)


# -- kernel cache source index ------------------------------------------------------------------
def test_second_load_skips_parsing(tmp_path, monkeypatch):
    import shutil

    import acegen

    shared = SHARED / "potentials" / "Al-Ni_opt_all.yace"
    if not shared.is_file():
        pytest.skip(SHARED_MISSING)
    monkeypatch.setenv("ACEGEN_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "AlNi.yace"
    shutil.copyfile(shared, src)
    m1 = acegen.load(src)
    assert m1._pace is not None
    k1 = m1.compile("c")
    m2 = acegen.load(src)
    assert m2._pace is None and m2.elements == m1.elements  # not parsed
    k2 = m2.compile("c")
    assert m2._pace is None and k2.library_path == k1.library_path
    env = random_environment(5, n_centres=8, max_nb=20, radius=5.5, n_species=len(m1.elements))
    for a, b in zip(k1.compute(*env), k2.compute(*env)):
        np.testing.assert_array_equal(a, b)
    assert m2.ir().signature() == m1.ir().signature()  # parsed on demand
    # another file content: no index hit
    src.write_text(src.read_text().replace("\n", "\n\n", 1))
    m3 = acegen.load(src)
    assert m3._pace is not None
