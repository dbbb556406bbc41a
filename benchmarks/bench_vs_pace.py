#!/usr/bin/env python
"""acegen vs PACE (pyace) side by side, alternating, in one run.

    python benchmarks/bench_vs_pace.py POTENTIAL [--atoms 4000] [--repeats 7]
        [--pyace-python PYTHON] [--no-product] [--threads 1] [--targets c llvm]

pyace is a peer, never a dependency: it runs in its own virtual environment as a worker
subprocess (``--pyace-python``), fed the same structure (``acegen.bench.benchmark_structure``:
fcc Cu a = 3.6 Å or a YBa2Cu3O7 supercell, rattled 0.05 Å) through a temporary .npz file.

What is timed, per repeat, in turn (acegen, PACE recursive, PACE product):

* acegen: ``kernel.compute`` (per-atom energies and dE_i/dr_ij) + ``scatter_forces_virial``
  (forces and the virial) on a neighbour list built once before the loop;
* PACE: ``ACECalculator.compute(atomic_environment, compute_projections=False)`` (energies,
  forces and virial in C++) on an ``ACEAtomicEnvironment`` built once before the loop
  (``aseatoms_to_atomicenvironment``), with ``ACERecursiveEvaluator`` (recursive mode, the
  LAMMPS default) and ``ACECTildeEvaluator`` (the "product" evaluator).

``--targets``: the acegen kernel targets timed, each in turn in every repeat (default ``c``;
``c llvm`` also times the LLVM kernel and prints the LLVM / C ratio of the same run).

So both sides exclude the neighbour list and include energy + forces + virial.  Each figure is
measured as wall time and as process CPU time (``time.process_time``, in the process that ran
it); on a shared machine the CPU time is the robust one.  Medians over the repeats and the
ratios acegen / PACE are printed, with the energies of both as a consistency check.
Single thread: OMP_NUM_THREADS=1 for the worker, ``nthreads`` for acegen.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import acegen  # noqa: E402
from acegen.bench import benchmark_structure, machine_description  # noqa: E402
from acegen.runtime.neighbours import build_neighbours, scatter_forces_virial, species_indices  # noqa: E402

WORKER = r"""
import json, sys, time
import numpy as np
from ase import Atoms
from pyace.basis import ACEBBasisSet, ACECTildeBasisSet
from pyace.evaluator import ACEBEvaluator, ACECTildeEvaluator, ACERecursiveEvaluator
from pyace.calculator import ACECalculator
from pyace.atomicenvironment import aseatoms_to_atomicenvironment

path, structure = sys.argv[1], sys.argv[2]
d = np.load(structure)
atoms = Atoms(numbers=d["numbers"], positions=d["positions"], cell=d["cell"], pbc=d["pbc"])
basis = ACEBBasisSet(path).to_ACECTildeBasisSet() if path.endswith((".yaml", ".yml")) else ACECTildeBasisSet(path)
emap = {el: i for i, el in enumerate(np.array(basis.elements_name).astype("S2"))}
ae = aseatoms_to_atomicenvironment(atoms, cutoff=basis.cutoffmax, elements_mapper_dict=emap)
calcs = {}
rec = ACERecursiveEvaluator(basis)
rec.set_recursive(True)
calcs["recursive"] = rec
calcs["product"] = ACECTildeEvaluator(basis)
runners = {}
for name, ev in calcs.items():
    c = ACECalculator()
    c.set_evaluator(ev)
    runners[name] = c
print(json.dumps({"ready": True, "n_atoms": len(atoms)}), flush=True)
for line in sys.stdin:
    name = line.strip()
    if not name:
        break
    c = runners[name]
    c0, t0 = time.process_time(), time.perf_counter()
    c.compute(ae, compute_projections=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"wall": wall, "cpu": cpu, "energy": float(c.energy)}), flush=True)
"""


class PaceWorker:
    """The pyace worker subprocess (one structure, both evaluators)."""

    def __init__(self, python: str, potential: str, structure: Path) -> None:
        self.script = Path(tempfile.mkdtemp(prefix="bench-pace-")) / "worker.py"
        self.script.write_text(WORKER)
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONPATH="")
        self.proc = subprocess.Popen(
            [python, str(self.script), potential, str(structure)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )
        hello = json.loads(self._readline())
        self.n_atoms = int(hello["n_atoms"])

    def _readline(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the pyace worker exited (is pyace installed in --pyace-python?)")
        return line

    def run(self, name: str) -> dict:
        self.proc.stdin.write(name + "\n")
        self.proc.stdin.flush()
        return json.loads(self._readline())

    def close(self) -> None:
        try:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
        except OSError:
            pass
        self.proc.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("potential")
    ap.add_argument("--atoms", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pyace-python", default=os.environ.get("ACEGEN_PYACE_PYTHON", "python"),
                    help="the Python of a virtual environment with pyace (default: $ACEGEN_PYACE_PYTHON)")
    ap.add_argument("--no-product", action="store_true", help="skip PACE's product evaluator (slow)")
    ap.add_argument("--targets", nargs="+", default=["c"], choices=["c", "llvm"],
                    help="acegen kernel targets to time in turn (default: c)")
    args = ap.parse_args(argv)

    model = acegen.load(args.potential)
    kernels, t_compile = {}, {}
    for target in dict.fromkeys(args.targets):
        t0 = time.perf_counter()
        kernels[target] = model.compile(target)
        t_compile[target] = time.perf_counter() - t0
    tags = {t: "acegen" if t == "c" else f"acegen-{t}" for t in kernels}
    atoms = benchmark_structure(model.elements, args.atoms)
    n = len(atoms)
    rc = model.ir().rcut_max
    Z = species_indices(atoms, model.elements)
    nl = build_neighbours(atoms, rc)
    nbs = np.ascontiguousarray(Z[nl.j], dtype=np.int32)

    def acegen_step(target):
        e, g = kernels[target].compute(Z, nl.offsets, nbs, nl.rij, nthreads=args.threads)
        scatter_forces_virial(nl, g)
        return float(np.sum(e))

    with tempfile.TemporaryDirectory(prefix="bench-vs-pace-") as tmp:
        structure = Path(tmp) / "structure.npz"
        np.savez(structure, numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell.array, pbc=atoms.pbc)
        worker = PaceWorker(args.pyace_python, args.potential, structure)
        names = ["recursive"] + ([] if args.no_product else ["product"])
        res: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": []} for k in [*tags.values(), *names]}
        energies = {tags[t]: acegen_step(t) for t in kernels}
        for name in names:  # warm-up
            energies[name] = worker.run(name)["energy"]
        for _ in range(args.repeats):
            for target, tag in tags.items():
                c0, w0 = time.process_time(), time.perf_counter()
                acegen_step(target)
                res[tag]["wall"].append(time.perf_counter() - w0)
                res[tag]["cpu"].append(time.process_time() - c0)
            for name in names:
                r = worker.run(name)
                res[name]["wall"].append(r["wall"])
                res[name]["cpu"].append(r["cpu"])
        worker.close()

    med = {k: {m: statistics.median(v[m]) * 1e6 / n for m in ("wall", "cpu")} for k, v in res.items()}
    print(f"potential: {args.potential}")
    print(f"machine: {machine_description()}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"structure: {n} atoms ({atoms.get_chemical_formula()}), {nl.n_pairs / n:.1f} neighbours/atom, "
          f"rcut {rc:g} Å; {args.repeats} alternating repeats, {args.threads} acegen thread(s)")
    print("acegen compile: " + ", ".join(f"{t} {v:.2f} s" for t, v in t_compile.items()))
    print("energy + forces + virial, neighbour list excluded; median µs/atom (wall | CPU):")
    for k in res:
        print(f"  {k:12s} {med[k]['wall']:9.1f} | {med[k]['cpu']:9.1f}   E = {energies[k]:.10f} eV")
    for tag in tags.values():
        for name in names:
            print(f"  ratio {tag} / PACE {name}: {med[tag]['wall'] / med[name]['wall']:.3f} (wall) | "
                  f"{med[tag]['cpu'] / med[name]['cpu']:.3f} (CPU)")
    if "c" in tags and len(tags) > 1:
        for target, tag in tags.items():
            if target != "c":
                print(f"  ratio {tag} / acegen (C): {med[tag]['wall'] / med['acegen']['wall']:.3f} (wall) | "
                      f"{med[tag]['cpu'] / med['acegen']['cpu']:.3f} (CPU)")
    de = max(abs(energies[tag] - energies[k]) for tag in tags.values() for k in names) / n
    print(f"  max |E_acegen - E_PACE| / atom: {de:.2e} eV")
    return 0


if __name__ == "__main__":
    sys.exit(main())
