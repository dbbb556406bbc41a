"""Cost of a compiled 2-layer ACE model against its first layer alone (docs/multilayer.md,
"Cost"): energy, forces and stress of the same crystal through ``acegen.Calculator``, one
thread, neighbour list included.  The two calculators alternate in the same run, each
repetition a fresh calculation; the medians of the process CPU time (robust on a shared
machine) and of the wall time are reported in µs per atom.

    python benchmarks/bench_multilayer.py                      # Cu, 864 atoms, target c
    python benchmarks/bench_multilayer.py --atoms 2048 --target llvm --repeats 9
"""

from __future__ import annotations

import argparse
import statistics
import time

import acegen
from acegen.bench import benchmark_structure, machine_description
from acegen.model import LinearModel
from acegen.multilayer import MultilayerSpec


def models(rcut: float):
    """The 2-layer model (layer 1: order 3, degree 10; layer 2: order 2, degree 6, kmax = k0max = 1)
    and its first layer alone (the same layer-1 coefficients as a single-layer model)."""
    l1 = acegen.BasisSpec(["Cu"], order=3, totaldegree=10, rcut=rcut)
    l2 = acegen.BasisSpec(["Cu"], order=2, totaldegree=6, rcut=rcut, purification="none")
    spec = MultilayerSpec(layers=[l1, l2], kmax=1, k0max=1)
    two = acegen.Model.random(spec, seed=1, name="bench_two_layers")
    one = LinearModel(l1, two.coefficients[0], name="bench_first_layer")
    return two, one


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--atoms", type=int, default=864)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--target", default="c", choices=["c", "llvm"])
    ap.add_argument("--rcut", type=float, default=5.0)
    args = ap.parse_args(argv)
    two, one = models(args.rcut)
    atoms = benchmark_structure(["Cu"], args.atoms)
    calcs = {"2 layers": acegen.Calculator(two, target=args.target),
             "layer 1 alone": acegen.Calculator(one, target=args.target)}
    times: dict = {k: ([], []) for k in calcs}
    for calc in calcs.values():  # warm-up (and the compilation, outside the timing)
        calc.calculate(atoms, ["energy", "forces", "stress"])
    for _ in range(args.repeats):
        for key, calc in calcs.items():
            c0, t0 = time.process_time(), time.perf_counter()
            calc.calculate(atoms, ["energy", "forces", "stress"])
            times[key][0].append(time.perf_counter() - t0)
            times[key][1].append(time.process_time() - c0)
    n = len(atoms)
    print(f"machine: {machine_description()}")
    print(f"{n} atoms (fcc Cu, rattled), rcut {args.rcut} Å, target {args.target}, 1 thread, "
          f"{args.repeats} alternating repetitions, medians")
    print(f"basis functions: layer 1 {len(two.basis.layers[0])}, layer 2 {len(two.basis.layers[1])}")
    med = {}
    for key, (wall, cpu) in times.items():
        med[key] = statistics.median(cpu)
        print(f"  {key:14s} {1e6 * med[key] / n:8.2f} µs/atom CPU   "
              f"{1e6 * statistics.median(wall) / n:8.2f} µs/atom wall")
    print(f"ratio (CPU): {med['2 layers'] / med['layer 1 alone']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
