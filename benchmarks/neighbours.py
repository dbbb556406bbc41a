"""Neighbour lists: acegen's C cell list against vesin's (and ASE's), same run, alternating.

    python benchmarks/neighbours.py [--repeats 7]

Cases: 4000 Cu atoms (fcc 10×10×10 cubic cells, rattled) with a 5.5 Å cutoff; a one-atom fcc
cell with a 5.5 Å cutoff (every neighbour is a periodic image); an 8-atom cell with an 8 Å
cutoff.  Each repeat times every backend once, in turn; the best of the repeats is printed
(ms per neighbour list, pairs included).  The pairs and vectors of every backend are checked
equal (up to the order of neighbours within a centre) before timing.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from ase.build import bulk

from acegen.runtime.neighbours import _native, build_neighbours


def cases():
    big = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((10, 10, 10))
    big.rattle(0.01, seed=1)
    one = bulk("Cu", "fcc", a=3.61)
    small = bulk("Cu", "fcc", a=3.61).repeat((2, 2, 2))
    small.rattle(0.05, seed=2)
    return [("Cu fcc, 4000 atoms, rcut 5.5", big, 5.5), ("Cu fcc, 1 atom, rcut 5.5", one, 5.5),
            ("Cu fcc, 8 atoms, rcut 8.0", small, 8.0)]


def canonical(nl):
    o = np.lexsort((nl.rij[:, 2], nl.rij[:, 1], nl.rij[:, 0], nl.j, nl.i))
    return nl.i[o], nl.j[o], nl.rij[o]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--ase", action="store_true", help="also time ASE's neighbor_list")
    args = ap.parse_args()
    backends = (["c"] if _native() is not None else []) + ["vesin"] + (["ase"] if args.ase else [])
    print(f"{'case':32s} {'pairs':>8s} " + " ".join(f"{b + ' (ms)':>12s}" for b in backends))
    for name, atoms, rc in cases():
        ref = canonical(build_neighbours(atoms, rc, backend="vesin"))
        for b in backends:
            got = canonical(build_neighbours(atoms, rc, backend=b))
            assert all(np.array_equal(x, y) for x, y in zip(got[:2], ref[:2])), b
            assert np.abs(got[2] - ref[2]).max(initial=0.0) < 1e-12, b
        best = {b: np.inf for b in backends}
        for _ in range(args.repeats):
            for b in backends:
                t0 = time.perf_counter()
                build_neighbours(atoms, rc, backend=b)
                best[b] = min(best[b], time.perf_counter() - t0)
        print(f"{name:32s} {len(ref[0]):8d} " + " ".join(f"{best[b] * 1e3:12.3f}" for b in backends))


if __name__ == "__main__":
    main()
