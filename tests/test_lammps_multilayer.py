"""Multilayer ACE in the LAMMPS plugin: one C kernel per layer, θ forwarded to the ghosts after
every inner layer and its adjoint ∂E/∂θ reverse-communicated before every backward step.

Random 1- and 2-element models with 1, 2 and 3 layers (layers with different cutoffs, so each
kernel's own cutoff filtering is exercised) are compared with ``acegen.Calculator`` (the
compiled C kernels driven by ``acegen.runtime.multilayer``): energy, per-atom energies,
forces and stress to 1e-10 on 1, 2 and 4 MPI ranks, on a box smaller than the cutoff with
ranks that own no atom, for newton on and off; the per-atom indicators through ``fix pair``;
and the NVE energy drift of a 2-layer model against a 1-layer one (fitted to ASE's EMT).  LAMMPS runs as in
tests/test_lammps.py (a subprocess, serial or under MPICH's ``mpirun``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import acegen
from acegen.backends.lammps import MANIFEST, KernelSource, emit_lammps, lammps_environment
from acegen.errors import CompileError
from acegen.multilayer import MultilayerSpec

from .test_lammps import (
    HAVE_LAMMPS,
    MASSES,
    _mpirun_works,
    assert_matches,
    build_model_plugin,
    calculator_reference,
    fcc_cu,
    half_filled_small_box,
    needs_lammps,
    run_lammps,
    two_element_triclinic,
    write_data,
)

CU1 = acegen.BasisSpec(["Cu"], 2, 6, rcut=4.5, r0=2.5)
CU2 = acegen.BasisSpec(["Cu"], 2, 5, rcut=4.0, r0=2.5, purification="none")
CA1 = acegen.BasisSpec(["Cu", "Ag"], 2, 5, rcut=4.4, r0=2.5)
CA2 = acegen.BasisSpec(["Cu", "Ag"], 2, 4, rcut=4.6, r0=2.5, purification="none")

SPECS = {
    "cu2": MultilayerSpec(layers=[CU1, CU2], kmax=2, k0max=1, embedding="FinnisSinclairShiftedScaled",
                          embedding_params=(1, 1, 1, 0.5)),
    "cuag2": MultilayerSpec(layers=[CA1, CA2], kmax=1, k0max=1, embedding="FinnisSinclairShiftedScaled",
                            embedding_params=(1, 1, 0.8, 0.5)),
    "cu3": MultilayerSpec(layers=[CU1, CU2, CU2], kmax=1, k0max=1),
}

_MODELS: dict = {}


def _model(key):
    if key not in _MODELS:
        _MODELS[key] = acegen.Model.random(SPECS[key], seed=5, name=f"ml_{key}")
    return _MODELS[key]


@pytest.fixture(scope="module")
def plugins(tmp_path_factory):
    """key -> (model, calculator, plugin), built once per module on first use."""
    built: dict = {}

    def get(key):
        if key not in built:
            model = _model(key)
            built[key] = (model, acegen.Calculator(model), build_model_plugin(model, tmp_path_factory))
        return built[key]

    return get


def cuag_cell(seed: int = 4):
    """108 atoms of rattled fcc Cu (3×3×3 cubic cells) with a third of them Ag (types 1 and 2)."""
    atoms = fcc_cu(3, rattle=0.1, seed=seed)
    rng = np.random.default_rng(seed)
    ag = rng.choice(len(atoms), size=len(atoms) // 3, replace=False)
    atoms.symbols[ag] = "Ag"
    types = np.array([2 if s == "Ag" else 1 for s in atoms.get_chemical_symbols()])
    return atoms, types


def _mpi(nprocs):
    if nprocs > 1 and not _mpirun_works():
        pytest.skip("mpirun of the mpich package does not run here")


# ------------------------------------------------------------------------------------------
# emission (no LAMMPS needed)
# ------------------------------------------------------------------------------------------
def test_emitted_plugin_has_one_kernel_per_layer():
    model = _model("cu3")
    files = emit_lammps(model)
    names = [ir.name for ir in model.ir()]
    assert names == ["ml_cu3_l1", "ml_cu3_l2", "ml_cu3_l3"]
    for name in names:
        assert f"acegen_{name}.h" in files and f"acegen_{name}.c" in files
    src = files["pair_acegen.cpp"]
    assert "acegen_ml_cu3_l1_compute(" in src and "acegen_ml_cu3_l1_compute_theta(" not in src
    assert "acegen_ml_cu3_l2_compute_theta(" in src and "acegen_ml_cu3_l3_compute_theta(" in src
    assert "comm->forward_comm(this, 1)" in src and "comm->reverse_comm(this, 1)" in src
    manifest = json.loads(files[MANIFEST])
    assert manifest["model"] == "ml_cu3" and manifest["layers"] == names and manifest["gamma"] is None
    assert np.allclose(manifest["rcut"], [[4.5]])  # the largest cutoff of the layers
    assert "acegen_ml_cu3_l1.h" in files["Makefile"] and "acegen_ml_cu3_l3.h" in files["Makefile"]
    # a single-layer model's plugin has no layer loop and no forward communication
    single = emit_lammps(acegen.Model.random(CU1, seed=1, name="plain"))["pair_acegen.cpp"]
    assert "compute_layers" not in single and "forward_comm" not in single
    # one layer n > 1 alone is no plugin: it needs the layers below it
    with pytest.raises(CompileError, match="indicator inputs"):
        emit_lammps(model.ir()[1])


def test_multilayer_kernel_source_is_validated():
    files = {"acegen_a_l1.h": "", "acegen_a_l1.c": "", "acegen_a_l2.h": "", "acegen_a_l2.c": ""}
    ks = KernelSource("a", ("Cu",), np.array([[4.0]]), files, None, ("a_l1", "a_l2"))
    assert ks.headers == ["acegen_a_l1.h", "acegen_a_l2.h"]
    with pytest.raises(CompileError, match="acegen_a_l3.h"):
        KernelSource("a", ("Cu",), np.array([[4.0]]), files, None, ("a_l1", "a_l3"))
    with pytest.raises(CompileError, match="must differ"):
        KernelSource("a", ("Cu",), np.array([[4.0]]), files, None, ("a_l1", "a_l1"))


def test_cli_emits_a_multilayer_plugin(tmp_path):
    """``acegen emit M.json --target lammps [--build]`` on a multilayer model: the plugin folder
    with a kernel per layer; with --build (when LAMMPS is installed) the printed input lines,
    pasted as printed, run and equal the calculator."""
    model = _model("cu2")
    path = tmp_path / "ml.json"
    model.save(path)
    out = tmp_path / "plugin"
    cmd = [sys.executable, "-m", "acegen.cli", "emit", str(path), "--target", "lammps", "-o", str(out)]
    r = subprocess.run(cmd + (["--build"] if HAVE_LAMMPS else []), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["layers"] == ["ml_cu2_l1", "ml_cu2_l2"] and (out / "acegen_ml_cu2_l2.h").is_file()
    # the single-library targets still refuse a multilayer model, saying what works
    r2 = subprocess.run([sys.executable, "-m", "acegen.cli", "emit", str(path), "--target", "c", "-o",
                         str(tmp_path / "c")], capture_output=True, text=True)
    assert r2.returncode != 0 and "--target lammps" in r2.stderr
    if not HAVE_LAMMPS:
        return
    lines = r.stdout.strip().splitlines()
    assert Path(lines[-1]).is_file() and "fix theta all pair 10 acegen theta2 0" in r.stdout
    pair_lines = [ln.strip() for ln in lines if ln.strip().startswith(("plugin load", "pair_style", "pair_coeff"))]
    assert len(pair_lines) == 3 and pair_lines[2] == f"pair_coeff * * {path} Cu"
    atoms = fcc_cu(2, rattle=0.1, seed=6)
    res = run_lammps(tmp_path / "run", None, atoms, pair_lines=pair_lines, type_elements=["Cu"], timeout=300)
    assert_matches(res, calculator_reference(acegen.Calculator(model), atoms))


# ------------------------------------------------------------------------------------------
# LAMMPS against acegen.Calculator
# ------------------------------------------------------------------------------------------
@needs_lammps
@pytest.mark.parametrize("nprocs", [1, 2, 4])
@pytest.mark.parametrize("key", ["cu2", "cuag2", "cu3"])
def test_matches_calculator_on_1_2_4_ranks(plugins, tmp_path, key, nprocs):
    """108-atom periodic cells, newton on: LAMMPS on 1, 2 and 4 ranks equals the calculator
    to 1e-10 (energy, per-atom energies, forces, stress)."""
    _mpi(nprocs)
    model, calc, plugin = plugins(key)
    if key == "cuag2":
        atoms, types = cuag_cell()
        kw = {"types": types, "type_elements": ["Cu", "Ag"]}
    else:
        atoms, kw = fcc_cu(3, rattle=0.1, seed=3), {}
    ref = calculator_reference(calc, atoms)
    ind = _indicators(calc, atoms)
    assert np.abs(ind).max() > 0.1  # the indicators matter: the test would see a missing θ
    res = run_lammps(tmp_path, plugin, atoms, nprocs=nprocs, newton="on", timeout=300, **kw)
    assert_matches(res, ref)
    assert len(res["nlocal"]) == nprocs and sum(res["nlocal"]) == len(atoms)


@needs_lammps
@pytest.mark.parametrize("nprocs", [1, 2])
def test_two_elements_three_types_triclinic_newton_off(plugins, tmp_path, nprocs):
    """A skewed 64-atom cell, Cu on types 1 and 2, Ag on type 3, newton off (ghost forces and
    ∂E/∂θ both go through the style's own reverse communication)."""
    _mpi(nprocs)
    _, calc, plugin = plugins("cuag2")
    atoms, types = two_element_triclinic()
    res = run_lammps(tmp_path, plugin, atoms, types=types, type_elements=["Cu", "Cu", "Ag"], newton="off",
                     nprocs=nprocs, timeout=300)
    assert_matches(res, calculator_reference(calc, atoms))


@needs_lammps
@pytest.mark.parametrize("newton", ["on", "off"])
@pytest.mark.parametrize("nprocs", [1, 2, 4])
def test_small_box_and_ranks_without_atoms(plugins, tmp_path, nprocs, newton):
    """8 atoms in a 4.6 Å box (the 4.5 Å cutoff is more than half of it: an atom sees several
    images of itself and of each other) in its lower x half: with 2 and 4 ranks half of them
    own no atom, yet take part in every communication; θ of images comes from the forward
    communication of their owners.  Equals the calculator to 1e-10."""
    _mpi(nprocs)
    _, calc, plugin = plugins("cu3")
    atoms = half_filled_small_box()
    grid = {1: "1 1 1", 2: "2 1 1", 4: "2 2 1"}[nprocs]
    res = run_lammps(tmp_path, plugin, atoms, newton=newton, nprocs=nprocs, pre_commands=[f"processors {grid}"],
                     timeout=300)
    assert_matches(res, calculator_reference(calc, atoms))
    assert len(res["nlocal"]) == nprocs and sum(res["nlocal"]) == len(atoms)
    if nprocs > 1:
        assert res["nlocal"].count(0) == nprocs // 2, res["nlocal"]


def _indicators(calc, atoms):
    a = atoms.copy()
    a.calc = calc
    a.get_potential_energy()
    return np.asarray(a.calc.results["indicators"])


THETA_DRIVER = textwrap.dedent(
    """\
    import json, sys
    import numpy as np
    from lammps import lammps

    cfg = json.load(open(sys.argv[1]))
    lmp = lammps(cmdargs=["-nocite", "-log", cfg["log"], "-screen", "none"])
    out = {}
    try:
        lmp.commands_list(cfg["commands"])
        lmp.command("run 0")
        n = lmp.get_natoms()
        out["theta"] = np.array(lmp.gather("f_theta", 1, cfg["ncol"])[: cfg["ncol"] * n]).reshape(n, cfg["ncol"])
    except Exception as e:
        out = {"error": np.array(str(e))}
    if lmp.extract_setting("world_rank") == 0:
        np.savez(cfg["output"], **out)
    lmp.close()
    lmp.finalize()
    """
)


@needs_lammps
def test_fix_pair_gives_the_indicators(plugins, tmp_path):
    """``fix pair 1 acegen theta2 0 theta3 0`` on 2 ranks: the per-atom θ^(2), θ^(3) equal the
    calculator's indicators to 1e-10."""
    _mpi(2)
    _, calc, plugin = plugins("cu3")
    atoms = fcc_cu(3, rattle=0.1, seed=8)
    ref = _indicators(calc, atoms)
    assert ref.shape == (len(atoms), 2)
    write_data(tmp_path / "structure.data", atoms, np.ones(len(atoms), dtype=int), 1, [MASSES["Cu"]])
    commands = ["units metal", "atom_style atomic", "atom_modify map array", "boundary p p p", "newton on",
                f"read_data {tmp_path / 'structure.data'}", f"plugin load {plugin}", "pair_style acegen",
                "pair_coeff * * ml_cu3 Cu", "neighbor 1.0 bin", "fix theta all pair 1 acegen theta2 0 theta3 0"]
    cfg = {"commands": commands, "ncol": 2, "output": str(tmp_path / "theta.npz"), "log": str(tmp_path / "log")}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    (tmp_path / "driver.py").write_text(THETA_DRIVER)
    from acegen.backends.lammps import find_lammps

    cmd = [str(find_lammps().mpirun), "-np", "2", sys.executable, str(tmp_path / "driver.py"),
           str(tmp_path / "cfg.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=lammps_environment(), timeout=300)
    assert (tmp_path / "theta.npz").exists(), proc.stderr[-3000:]
    with np.load(tmp_path / "theta.npz") as data:
        assert "error" not in data.files, str(data["error"])
        theta = data["theta"]
    assert np.abs(theta - ref).max() <= 1e-10 * np.abs(ref).max()


def nve_models():
    """A 1-layer and a 2-layer model that are stable in MD: a linear ACE model on ``CU2``
    fitted (acegen.fit) to ASE's EMT Cu, as a 1-layer multilayer model; and a 2-layer model
    whose layer 1 is random (indicators up to ~0.7) and whose layer 2 has the fitted
    coefficients on its k = k0 = 0 functions (the plain basis of ``CU2``, docs/multilayer.md)
    and 0.3 × random ones on the functions with k > 0 or k0 > 0."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    from acegen.basis import lower
    from acegen.model import MultilayerModel

    frames = []
    for s in range(8):
        a = bulk("Cu", "fcc", a=3.6 * (0.97 + 0.01 * s), cubic=True).repeat(2)
        a.rattle(0.15, seed=s)
        a.calc = EMT()
        e, f = a.get_potential_energy(), a.get_forces()
        a.calc = SinglePointCalculator(a, energy=e, forces=f)
        frames.append(a)
    fitted = np.asarray(acegen.fit(CU2, frames, eref={"Cu": 0.0}, progress=False).coefficients, dtype=float)
    spec2 = MultilayerSpec(layers=[CU1, CU2], kmax=1, k0max=1)
    rnd = acegen.Model.random(spec2, seed=5)
    layer2, plain = rnd.basis.layers[1], lower(CU2)
    index = {(f.z0, f.factors, f.index): q for q, f in enumerate(plain.functions)}
    c2 = 0.3 * np.asarray(rnd.coefficients[1], dtype=float)
    for p, fn in enumerate(layer2.functions):
        if fn.k0 == 0 and all(f[3] == 0 for f in fn.factors):
            c2[p] = fitted[index[(fn.z0, tuple(sorted(f[:3] for f in fn.factors)), fn.index)]]
    c2[len(layer2):] = fitted[len(plain):]  # the pair basis of a layer is plain
    one = MultilayerModel(MultilayerSpec(layers=[CU2]), [fitted], name="nve_1layer")
    two = MultilayerModel(spec2, [rnd.coefficients[0], c2], name="nve_2layer")
    return one, two


@needs_lammps
def test_nve_drift_two_layers_like_one_layer(tmp_path_factory, tmp_path):
    """NVE, 108 atoms of fcc Cu from 300 K, 200 steps of 1 fs, on 2 ranks: the largest
    |E_tot(t) − E_tot(0)| per atom of the 2-layer model is below 1e-4 eV/atom and of the order
    of that of the 1-layer model (at most 10 times it)."""
    _mpi(2)
    drift = {}
    for model in nve_models():
        plugin = build_model_plugin(model, tmp_path_factory)
        atoms = fcc_cu(3, rattle=0.0)
        res = run_lammps(tmp_path / model.name, plugin, atoms, md_steps=200, md_every=10, nprocs=2, timeout=600)
        assert "error" not in res, res.get("error")
        assert_matches(res, calculator_reference(acegen.Calculator(model), atoms), require_forces=False)
        etot = res["etotal"]
        assert len(etot) == 21 and np.isfinite(etot).all()
        drift[model.name] = float(np.abs(etot - etot[0]).max() / 108)
    print(f"NVE drift (eV/atom, 200 fs): {drift}")
    assert drift["nve_2layer"] < 1e-4, drift
    assert drift["nve_2layer"] < 10 * max(drift["nve_1layer"], 1e-7), drift
