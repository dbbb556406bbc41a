"""Check that an active set written by ``acegen activeset`` loads in pyace and gives pyace's γ.

pyace is a peer, never a dependency: run it in its own environment and point --pyace-python
at that interpreter (see benchmarks/compare_pyace.py).

    python benchmarks/gamma_pyace.py MODEL.yaml TRAIN.extxyz TEST.extxyz [--full] [--pyace-python PY]

Builds the active set with acegen from TRAIN, writes it, lets pyace
(``PyACECalculator(model).set_active_set(asi)``) compute γ on TEST, and prints per structure
the largest γ of both codes and their largest relative difference (absolute below γ = 1e-3).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import ase.io
import numpy as np

import acegen
from acegen.active import build_active_set

PYACE_SCRIPT = r"""
import json, sys, ase.io
from pyace import PyACECalculator
calc = PyACECalculator(sys.argv[1])
calc.set_active_set(sys.argv[2])
out = []
for a in ase.io.read(sys.argv[3], ":"):
    a.calc = calc
    a.get_potential_energy()
    out.append([float(g) for g in calc.results["gamma"]])
json.dump(out, open(sys.argv[4], "w"))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("train")
    ap.add_argument("test")
    ap.add_argument("--full", action="store_true", help="non-linear (full) active set")
    ap.add_argument("--pyace-python", default="python", help="interpreter with pyace installed")
    ap.add_argument("--target", default="c", choices=["c", "llvm"])
    args = ap.parse_args()
    model = acegen.load(args.model)
    train = ase.io.read(args.train, ":")
    test = ase.io.read(args.test, ":")
    active = build_active_set(model, train, full=args.full, target=args.target)
    with tempfile.TemporaryDirectory() as tmp:
        asi = Path(tmp) / ("pot.asi.nonlinear" if args.full else "pot.asi")
        active.save(asi)
        out = Path(tmp) / "gamma.json"
        script = Path(tmp) / "run_pyace.py"
        script.write_text(PYACE_SCRIPT)
        subprocess.run([args.pyace_python, str(script), args.model, str(asi), args.test, str(out)], check=True)
        ref = json.loads(out.read_text())
    calc = acegen.Calculator(model, target=args.target, active_set=active)
    worst = 0.0
    print(f"{'structure':>9} {'atoms':>6} {'gamma pyace':>14} {'gamma acegen':>14} {'max rel diff':>13}")
    for k, (atoms, g_ref) in enumerate(zip(test, ref)):
        atoms.calc = calc
        atoms.get_potential_energy()
        g = np.asarray(calc.results["gamma"])
        g_ref = np.asarray(g_ref)
        diff = float(np.max(np.abs(g - g_ref) / np.maximum(np.abs(g_ref), 1e-3)))
        worst = max(worst, diff)
        print(f"{k:>9} {len(atoms):>6} {g_ref.max():>14.6g} {g.max():>14.6g} {diff:>13.2e}")
    print(f"largest relative difference: {worst:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
