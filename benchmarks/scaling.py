#!/usr/bin/env python
"""Per-atom cost against system size and thread count (acegen only).

    python benchmarks/scaling.py POTENTIAL [--sizes 500 2000 4000 8000 16000 32000]
        [--threads 1 2] [--repeats 5]

For each size (``acegen.bench.benchmark_structure``) and thread count, the median of
``repeats`` full steps -- neighbour list (``build_neighbours``) + kernel + forces and virial
(``scatter_forces_virial``) -- and of the kernel alone, as wall time and process CPU time per
atom.  The neighbour list is always single-threaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import acegen  # noqa: E402
from acegen.bench import benchmark_structure, machine_description, median_time  # noqa: E402
from acegen.runtime.neighbours import build_neighbours, scatter_forces_virial, species_indices  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("potential")
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 2000, 4000, 8000, 16000, 32000])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    model = acegen.load(args.potential)
    kernel = model.compile("c")
    rc = model.ir().rcut_max
    print(f"potential: {args.potential}")
    print(f"machine: {machine_description()}")
    print("µs/atom, median of %d (wall | process CPU)" % args.repeats)
    print(f"{'atoms':>7} {'threads':>7} {'pairs/atom':>10} {'step wall':>10} {'step CPU':>10} {'kernel wall':>11} "
          f"{'kernel CPU':>10} {'nlist wall':>10}")
    for size in args.sizes:
        atoms = benchmark_structure(model.elements, size)
        n = len(atoms)
        Z = species_indices(atoms, model.elements)
        nl = build_neighbours(atoms, rc)
        nbs = np.ascontiguousarray(Z[nl.j], dtype=np.int32)
        t_nl, _ = median_time(lambda: build_neighbours(atoms, rc), args.repeats)
        for nt in args.threads:
            def step(nt=nt):
                nl2 = build_neighbours(atoms, rc)
                _, g = kernel.compute(Z, nl2.offsets, np.ascontiguousarray(Z[nl2.j], dtype=np.int32), nl2.rij,
                                      nthreads=nt)
                return scatter_forces_virial(nl2, g)

            ts, cs = median_time(step, args.repeats)
            tk, ck = median_time(lambda nt=nt: kernel.compute(Z, nl.offsets, nbs, nl.rij, nthreads=nt), args.repeats)
            us = 1e6 / n
            print(f"{n:7d} {nt:7d} {nl.n_pairs / n:10.1f} {ts * us:10.2f} {cs * us:10.2f} {tk * us:11.2f} "
                  f"{ck * us:10.2f} {t_nl * us:10.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
