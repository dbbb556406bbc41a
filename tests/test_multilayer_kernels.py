"""Compiled multilayer ACE: one kernel per layer (the same plan and templates as single-layer
models; layers n > 1 with indicator inputs, ``compute_theta``), forces and stress by reverse
mode across the layers, ``acegen.Calculator`` with per-atom indicators.  Checked against the
NumPy reference (complex-step forces), finite differences, symmetry, locality and the
reduction to single-layer ACE."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import acegen
from acegen.errors import AcegenError, CompileError, StructureError
from acegen.jit.toolchain import find_c_compiler
from acegen.model import LinearModel
from acegen.multilayer import MultilayerSpec
from acegen.reference.multilayer_numpy import MultilayerReference
from acegen.runtime.neighbours import build_neighbours, species_indices

RC = 4.0
S1 = acegen.BasisSpec(["Cu", "Ni"], 2, 5, rcut=RC, r0=2.5)
S2 = acegen.BasisSpec(["Cu", "Ni"], 2, 5, rcut=RC, r0=2.5, purification="none")
C1 = acegen.BasisSpec(["Cu"], 3, 6, rcut=RC, r0=2.5)
C2 = acegen.BasisSpec(["Cu"], 2, 5, rcut=RC, r0=2.5, purification="none")

SPECS = {
    "1layer-2el": MultilayerSpec(layers=[S1], embedding="FinnisSinclairShiftedScaled", embedding_params=(1, 1, 1, 0.5)),
    "2layer-2el": MultilayerSpec(layers=[S1, S2], kmax=2, k0max=1, embedding="FinnisSinclairShiftedScaled",
                                 embedding_params=(1, 1, 0.8, 0.5)),
    "3layer-1el": MultilayerSpec(layers=[C1, C2, C2], kmax=1, k0max=2),
    "2layer-1el-fs": MultilayerSpec(layers=[C1, C2], kmax=2, k0max=0, embedding="FinnisSinclair",
                                    embedding_params=(1, 0.5)),
}
TARGETS = ["c", "llvm"] if find_c_compiler(required=False) is not None else ["llvm"]

_MODELS: dict = {}


def _model(key):
    if key not in _MODELS:
        _MODELS[key] = acegen.Model.random(SPECS[key], seed=11, name="m_" + key.replace("-", "_"))
    return _MODELS[key]


def _cluster(n=8, seed=0, spread=2.3, symbols=("Cu", "Ni")):
    rng = np.random.default_rng(seed)
    pos = [np.zeros(3)]
    while len(pos) < n:
        p = pos[rng.integers(len(pos))] + rng.normal(size=3) * spread / np.sqrt(3)
        if min(np.linalg.norm(p - q) for q in pos) > 1.9:
            pos.append(p)
    return Atoms(symbols=rng.choice(list(symbols), size=n), positions=pos)


def _crystal(symbols=("Cu", "Ni")):
    at = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    if "Ni" in symbols:
        at.symbols[[0, 3, 6]] = "Ni"
    at.rattle(0.08, seed=1)
    return at


def _results(model, atoms, target="c"):
    a = atoms.copy()
    a.calc = acegen.Calculator(model, target=target)
    out = {"energy": a.get_potential_energy(), "energies": a.get_potential_energies(), "forces": a.get_forces(),
           "indicators": a.calc.results["indicators"]}
    if a.cell.rank == 3:
        out["stress"] = a.get_stress()
    return out


def _close(a, b, rtol=1e-12):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape
    scale = max(np.abs(b).max(initial=0.0), 1e-300)
    assert np.abs(a - b).max(initial=0.0) <= rtol * scale, (np.abs(a - b).max(), scale)


# ----------------------------------------------------------------------------- against the reference
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("key", list(SPECS))
def test_compiled_equals_reference(key, target):
    model = _model(key)
    els = model.spec.elements
    ref = MultilayerReference.from_model(model)
    for atoms in (_cluster(8, seed=1, symbols=els), _crystal(els)):
        got = _results(model, atoms, target)
        exp = ref.compute(atoms)
        assert got["indicators"].shape == (len(atoms), model.spec.n_layers - 1)
        if model.spec.n_layers > 1:
            assert np.ptp(got["indicators"]) > 1e-3  # the indicators vary from atom to atom
        _close(got["energy"], exp["energy"])
        for k in ("energies", "indicators", "forces"):
            _close(got[k], exp[k])
        if "stress" in exp:
            _close(got["stress"], exp["stress"])


def test_targets_agree_and_threads_do_not_matter():
    model = _model("2layer-2el")
    atoms = _crystal().repeat((1, 2, 1))
    base = _results(model, atoms, TARGETS[0])
    for target in TARGETS:
        a = atoms.copy()
        a.calc = acegen.Calculator(model, target=target, nthreads=3)
        _close(a.get_forces(), base["forces"])
        _close(a.get_potential_energies(), base["energies"])


# ----------------------------------------------------------------------------- derivatives
def test_forces_and_stress_are_finite_differences():
    model = _model("3layer-1el")
    atoms = _crystal(("Cu",))
    got = _results(model, atoms)
    calc = acegen.Calculator(model)
    h = 1e-5

    def energy(a):
        a = a.copy()
        a.calc = calc
        return a.get_potential_energy()

    fd = np.zeros((len(atoms), 3))
    for i in range(len(atoms)):
        for c in range(3):
            p, m = atoms.copy(), atoms.copy()
            p.positions[i, c] += h
            m.positions[i, c] -= h
            fd[i, c] = -(energy(p) - energy(m)) / (2 * h)
    assert np.abs(fd - got["forces"]).max() < 1e-6 * max(1.0, np.abs(fd).max())
    vol = atoms.get_volume()
    fds = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            eps = np.zeros((3, 3))
            eps[a, b] = h
            p, m = atoms.copy(), atoms.copy()
            p.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
            m.set_cell(atoms.cell.array @ (np.eye(3) - eps), scale_atoms=True)
            fds[a, b] = (energy(p) - energy(m)) / (2 * h) / vol
    fds = 0.5 * (fds + fds.T)
    voigt = np.array([fds[0, 0], fds[1, 1], fds[2, 2], fds[1, 2], fds[0, 2], fds[0, 1]])
    assert np.abs(voigt - got["stress"]).max() < 1e-6 * max(1.0, np.abs(voigt).max())


# ----------------------------------------------------------------------------- symmetry
def _rotation(q):
    q = np.asarray(q, dtype=float)
    q = q / np.linalg.norm(q)
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(q=st.lists(st.floats(-1, 1), min_size=4, max_size=4).filter(lambda v: np.linalg.norm(v) > 0.1),
       reflect=st.booleans(), seed=st.integers(0, 1000))
def test_invariance_under_rotations_reflections_permutations(q, reflect, seed):
    model = _model("2layer-2el")
    atoms = _cluster(7, seed=seed % 50)
    base = _results(model, atoms)
    R = _rotation(q) @ (np.diag([-1.0, 1.0, 1.0]) if reflect else np.eye(3))
    perm = np.random.default_rng(seed).permutation(len(atoms))
    moved = Atoms(symbols=np.array(atoms.get_chemical_symbols())[perm],
                  positions=(atoms.positions @ R.T)[perm] + np.array([0.3, -1.2, 2.0]))
    got = _results(model, moved)
    assert abs(got["energy"] - base["energy"]) <= 1e-12 * max(1.0, abs(base["energy"])) * 10
    _close(got["energies"], base["energies"][perm], 1e-11)
    _close(got["indicators"], base["indicators"][perm], 1e-11)
    _close(got["forces"], (base["forces"] @ R.T)[perm], 1e-11)


# ----------------------------------------------------------------------------- locality
def _chain(xs, symbol="Cu"):
    return Atoms(symbols=[symbol] * len(xs), positions=[[x, 0.1 * (k % 2), 0.0] for k, x in enumerate(xs)])


def test_receptive_field_is_n_layers_times_rcut():
    two = _model("2layer-1el-fs")
    one = acegen.Model.random(MultilayerSpec(layers=[C1], embedding="FinnisSinclair", embedding_params=(1, 0.5)),
                              seed=2)
    # atom 0; atom 1 at 0.7 rcut; atom 2 at 1.4 rcut (within rcut of atom 1 only); atom 3 at 2.3 rcut
    xs = [0.0, 0.7 * RC, 1.4 * RC, 2.3 * RC]
    atoms = _chain(xs)
    E2 = _results(two, atoms)["energies"]
    E1 = _results(one, atoms)["energies"]
    near = atoms.copy()
    near.positions[2] += [0.25, 0.2, -0.1]  # still 1.4 rcut from atom 0: felt through θ of atom 1
    assert np.linalg.norm(near.positions[2] - near.positions[0]) > RC
    assert abs(_results(two, near)["energies"][0] - E2[0]) > 1e-8
    assert _results(one, near)["energies"][0] == pytest.approx(E1[0], abs=1e-14)  # one layer: not felt
    far = atoms.copy()
    far.positions[3] += [0.3, -0.2, 0.2]  # beyond 2 rcut of atom 0
    assert np.linalg.norm(far.positions[3] - far.positions[0]) > 2 * RC
    got = _results(two, far)["energies"]
    assert got[0] == pytest.approx(E2[0], abs=1e-14)
    assert abs(got[2] - E2[2]) > 1e-8  # ... while its neighbour feels it


# ----------------------------------------------------------------------------- reduction
def _plain_coefficients(lb, plain, coeff):
    """Layer-2 coefficients of the k = k0 = 0 functions, mapped onto the plain basis."""
    idx = {(f.z0, f.factors, f.index): q for q, f in enumerate(plain.functions)}
    mb = np.zeros(len(plain))
    for q, f in enumerate(lb.functions):
        if f.k0 == 0 and all(x[3] == 0 for x in f.factors):
            mb[idx[(f.z0, tuple(x[:3] for x in f.factors), f.index)]] = coeff[q]
    return np.concatenate([mb, coeff[len(lb):]])


@pytest.mark.parametrize("target", TARGETS)
def test_zero_indicator_terms_give_the_single_layer_model(target):
    spec = MultilayerSpec(layers=[S1, S2], kmax=2, k0max=1)
    model = acegen.Model.random(spec, seed=4)
    lb = model.basis.layers[1]
    c2 = model.coefficients[1].copy()
    has_k = np.array([f.k0 > 0 or any(x[3] > 0 for x in f.factors) for f in lb.functions])
    assert has_k.any() and (~has_k).any()
    c2[: len(lb)][has_k] = 0.0
    ml = acegen.Model(spec, [model.coefficients[0], c2], name="reduced")
    lin = LinearModel(S2, _plain_coefficients(lb, acegen.basis.lower(S2), c2), name="plain")
    atoms = _crystal()
    got = _results(ml, atoms, target)
    a = atoms.copy()
    a.calc = acegen.Calculator(lin, target=target)
    _close(got["energies"], a.get_potential_energies())
    _close(got["forces"], a.get_forces())
    _close(got["stress"], a.get_stress())
    full = _results(model, atoms, target)["energies"]  # with the k > 0 terms the model differs
    assert np.abs(full - got["energies"]).max() > 1e-6


# ----------------------------------------------------------------------------- files and interface
def test_save_load_gives_the_same_results(tmp_path):
    model = _model("2layer-2el")
    atoms = _crystal()
    model.save(tmp_path / "ml.json")
    again = acegen.load(tmp_path / "ml.json")
    a, b = _results(model, atoms), _results(again, atoms)
    for k in ("energies", "forces", "stress", "indicators"):
        np.testing.assert_array_equal(a[k], b[k])
    calc = acegen.Calculator(str(tmp_path / "ml.json"))
    c = atoms.copy()
    c.calc = calc
    np.testing.assert_array_equal(c.get_forces(), a["forces"])


def test_one_kernel_per_layer_and_the_theta_entry_point():
    model = _model("3layer-1el")
    irs = model.ir()
    assert [ir.theta for ir in irs] == [False, True, True]
    assert [ir.name for ir in irs] == ["m_3layer_1el_l1", "m_3layer_1el_l2", "m_3layer_1el_l3"]
    kernel = model.compile("c" if "c" in TARGETS else "llvm")
    assert kernel.n_layers == 3 and kernel.kernels[1].theta
    atoms = _crystal(("Cu",))
    nl = build_neighbours(atoms, float(np.max(kernel.rcut)))
    Z = np.zeros(len(atoms), dtype=np.int32)
    nbs = Z[nl.j]
    rng = np.random.default_rng(0)
    th = rng.uniform(-0.9, 0.9, len(atoms))
    k2 = kernel.kernels[1]
    E, g, dc, dn = k2.compute_theta(Z, nl.offsets, nbs, nl.rij, th, th[nl.j])
    # dE/dθ against a central difference in θ of one atom (its own and its neighbours' slots)
    h = 1e-6
    a = 3
    tp, tm = th.copy(), th.copy()
    tp[a] += h
    tm[a] -= h
    Ep = k2.compute_theta(Z, nl.offsets, nbs, nl.rij, tp, tp[nl.j])[0]
    Em = k2.compute_theta(Z, nl.offsets, nbs, nl.rij, tm, tm[nl.j])[0]
    fd = (Ep.sum() - Em.sum()) / (2 * h)
    an = dc[a] + dn[nl.j == a].sum()
    assert abs(fd - an) < 1e-6 * max(1.0, abs(an)) and abs(an) > 1e-6
    # the plain entry point evaluates the layer at θ = 0
    E0, g0 = k2.compute(Z, nl.offsets, nbs, nl.rij)
    Ez = k2.compute_theta(Z, nl.offsets, nbs, nl.rij, np.zeros(len(atoms)), np.zeros(nl.n_pairs))
    np.testing.assert_array_equal(E0, Ez[0])
    np.testing.assert_array_equal(g0, Ez[1])
    # non-finite indicators are refused, naming the atom or the pair
    bad = th.copy()
    bad[2] = np.nan
    with pytest.raises(StructureError, match="atom 2: non-finite indicator"):
        k2.compute_theta(Z, nl.offsets, nbs, nl.rij, bad, th[nl.j])
    badn = th[nl.j].copy()
    badn[5] = np.inf
    with pytest.raises(StructureError, match="pair 5: non-finite neighbour indicator"):
        k2.compute_theta(Z, nl.offsets, nbs, nl.rij, th, badn)
    with pytest.raises(StructureError, match="theta_nb must have"):
        k2.compute_theta(Z, nl.offsets, nbs, nl.rij, th, th)


def test_unsupported_targets_and_uses_are_clear_errors():
    model = _model("2layer-2el")
    with pytest.raises(AcegenError, match="targets 'c', 'llvm' and 'cuda'"):
        model.compile("numpy")
    from acegen.backends import emit
    from acegen.backends.embed import emit_embed

    with pytest.raises(CompileError, match="indicator inputs"):
        emit(model.ir()[1], "lammps")
    with pytest.raises(CompileError, match="indicator inputs"):
        emit_embed(model.ir()[1])
    with pytest.raises(AcegenError, match="no committee or active set"):
        acegen.Calculator(model, committee=True)
    with pytest.raises(StructureError, match="atom 1 is Fe"):
        a = Atoms("CuFe", positions=[[0, 0, 0], [2, 0, 0]])
        a.calc = acegen.Calculator(model)
        a.get_potential_energy()


# ----------------------------------------------------------------------------- CUDA
def test_cuda_source_emulated_on_the_cpu_equals_c():
    """The CUDA source of every layer, built for the CPU (acegen_cuda_emulate.h), gives the C
    kernels' per-atom energies, indicators and pair gradients."""
    from acegen.backends.cuda import find_cxx

    if find_cxx(required=False) is None or "c" not in TARGETS:
        pytest.skip("needs a C and a C++ compiler")
    model = _model("2layer-2el")
    emulated = model.compile("cuda", emulate=True)
    assert emulated.kernels[1].theta and emulated.kernels[1].emulated
    atoms = _crystal()
    nl = build_neighbours(atoms, float(np.max(emulated.rcut)))
    Z = species_indices(atoms, model.elements)
    for got, exp in zip(emulated.compute_layers(Z, nl), model.compile("c").compute_layers(Z, nl)):
        _close(got, exp)


def test_cuda_source_with_indicator_inputs_compiles_with_nvcc(tmp_path):
    from acegen.backends import emit
    from acegen.backends.cuda import build_cuda, find_nvcc

    if find_nvcc(required=False) is None:
        pytest.skip("nvcc (CUDA toolkit) not found")
    ir = _model("2layer-1el-fs").ir()[1]
    folder = tmp_path / "cuda"
    folder.mkdir()
    for name, text in emit(ir, "cuda").items():
        (folder / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    header = (folder / f"acegen_{ir.name}.h").read_text()
    assert f"acegen_{ir.name}_compute_theta(" in header and f"acegen_{ir.name}_cuda_compute_theta(" in header
    assert build_cuda(folder, archs=("sm_90",)).is_file()


def test_cli_info_and_the_one_kernel_commands(tmp_path, capsys):
    from acegen.cli import main

    model = _model("2layer-1el-fs")
    path = tmp_path / "ml.json"
    model.save(path)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    for ir in model.ir():
        assert f"layer {ir.name}: signature {ir.signature()}" in out
    for cmd in (["compile", str(path), "-o", str(tmp_path / "lib.so")], ["emit", str(path), "--target", "c"]):
        assert main(cmd) != 0
        assert "a multilayer model compiles to one kernel per layer" in capsys.readouterr().err
