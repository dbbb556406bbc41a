"""Time acegen on a GRACE-FS model (energy + forces + virial, one thread), and pyace's
``PyGRACEFSCalculator`` on the same structure in the same run when a pyace interpreter is
given: the two alternate, each repetition timed on a fresh calculation (neighbour list
included), and the medians are reported.

pyace is a peer, never a dependency: install it in its own environment and pass its
interpreter with --pyace-python.

    python benchmarks/bench_gracefs.py                       # random 25-element model (make_gracefs.py)
    python benchmarks/bench_gracefs.py --model FS_model.yaml --atoms 2000 --pyace-python /path/venv/bin/python
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from ase.build import bulk

PYACE_WORKER = r"""
import sys, time, ase.io
from pyace.asecalc import PyGRACEFSCalculator
atoms = ase.io.read(sys.argv[2])
calc = PyGRACEFSCalculator(sys.argv[1])
atoms.calc = calc
print("ready", atoms.get_potential_energy(), flush=True)
for line in sys.stdin:
    t = time.perf_counter()
    calc.calculate(atoms, ["energy", "forces", "stress"])
    dt = time.perf_counter() - t
    print(dt, calc.results["energy"], flush=True)
"""


def structure(elements, n_atoms: int, seed: int = 0):
    """A rattled fcc crystal (nearest neighbours 2.8 Å) of about ``n_atoms`` atoms, each of a
    random element of ``elements``."""
    rng = np.random.default_rng(seed)
    k = max(1, round((n_atoms / 4) ** (1 / 3)))
    atoms = bulk("Cu", "fcc", a=2.8 * np.sqrt(2.0), cubic=True).repeat(k)
    atoms.set_chemical_symbols(list(rng.choice(list(elements), size=len(atoms))))
    atoms.rattle(0.05, seed=seed)
    return atoms


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="GRACE-FS YAML (default: make_gracefs.py --seed 1, 25 elements)")
    ap.add_argument("--atoms", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--target", default="c", choices=["c", "llvm"])
    ap.add_argument("--pyace-python", help="interpreter of an environment with pyace")
    a = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import ase.io

    import acegen

    with tempfile.TemporaryDirectory() as tmp:
        model_path = a.model
        if model_path is None:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from make_gracefs import write_gracefs

            model_path = f"{tmp}/FS_random25.yaml"
            write_gracefs(model_path, seed=1)
        t0 = time.perf_counter()
        model = acegen.load(model_path)
        calc = acegen.Calculator(model, target=a.target, nthreads=1)
        atoms = structure(model.elements, a.atoms)
        atoms.calc = calc
        e_acegen = atoms.get_potential_energy()
        t_load = time.perf_counter() - t0
        n = len(atoms)
        print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs (shared: other jobs may run)")
        print(f"model: {model_path}: {len(model.elements)} elements, "
              f"{sum(len(s.monomials) for s in model.ir().species)} monomials; load + compile {t_load:.1f} s")
        print(f"structure: {n} atoms, {len(set(atoms.get_chemical_symbols()))} elements")
        worker = None
        if a.pyace_python:
            xyz = f"{tmp}/structure.extxyz"
            ase.io.write(xyz, atoms)
            env = dict(os.environ, OMP_NUM_THREADS="1")
            worker = subprocess.Popen([a.pyace_python, "-c", PYACE_WORKER, model_path, xyz], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True, env=env)
            ready = worker.stdout.readline().split()
            if not ready or ready[0] != "ready":
                raise SystemExit("pyace worker failed to start")
            e_pyace = float(ready[1])
            print(f"energy: acegen {e_acegen:.10f} eV, pyace {e_pyace:.10f} eV, |ΔE|/atom {abs(e_acegen - e_pyace) / n:.2e}")
        t_ac, t_py = [], []
        for _ in range(a.repeats):
            t = time.perf_counter()
            calc.calculate(atoms, ["energy", "forces", "stress"])
            t_ac.append(time.perf_counter() - t)
            if worker is not None:
                worker.stdin.write("go\n")
                worker.stdin.flush()
                t_py.append(float(worker.stdout.readline().split()[0]))
        if worker is not None:
            worker.stdin.close()
            worker.wait()
        us = 1e6 / n
        print(f"acegen ({a.target}, 1 thread), E+F+virial: median {statistics.median(t_ac) * us:.1f} µs/atom "
              f"(all: {' '.join(f'{x * us:.1f}' for x in t_ac)})")
        if t_py:
            print(f"pyace PyGRACEFSCalculator (1 thread):  median {statistics.median(t_py) * us:.1f} µs/atom "
                  f"(all: {' '.join(f'{x * us:.1f}' for x in t_py)})")
            print(f"ratio acegen / pyace: {statistics.median(t_ac) / statistics.median(t_py):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
