"""Compare acegen with pyace (PACE) on any potential and structures, side by side.

pyace is a peer, never a dependency (non-commercial licence): install it in its own
environment (`python -m venv /path/pyace-venv && /path/pyace-venv/bin/pip install --pre
python-ace==0.4.0rc1`) and point --pyace-python at that interpreter.

    python benchmarks/compare_pyace.py POTENTIAL STRUCTURES.extxyz [--pyace-python PY]

Prints, per structure, the energy/atom, max force and max stress differences.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

import ase.io
import numpy as np

import acegen

PYACE_SCRIPT = r"""
import json, sys, numpy as np, ase.io
from pyace import PyACECalculator
calc = PyACECalculator(sys.argv[1])
out = []
for a in ase.io.read(sys.argv[2], ":"):
    a.calc = calc
    r = {"energy": a.get_potential_energy(), "forces": a.get_forces().tolist()}
    if a.pbc.all():
        r["stress"] = a.get_stress().tolist()
    out.append(r)
json.dump(out, open(sys.argv[3], "w"))
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("potential")
    p.add_argument("structures")
    p.add_argument("--pyace-python", default="python")
    p.add_argument("--target", default="c")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/pyace.json"
        subprocess.run([a.pyace_python, "-c", PYACE_SCRIPT, a.potential, a.structures, out], check=True)
        ref = json.load(open(out))
    calc = acegen.Calculator(a.potential, target=a.target)
    worst = np.zeros(3)
    for k, (atoms, r) in enumerate(zip(ase.io.read(a.structures, ":"), ref)):
        atoms.calc = calc
        dE = abs(atoms.get_potential_energy() - r["energy"]) / len(atoms)
        dF = np.abs(atoms.get_forces() - np.array(r["forces"])).max() if len(atoms) else 0.0
        dS = np.abs(atoms.get_stress() - np.array(r["stress"])).max() if "stress" in r else 0.0
        worst = np.maximum(worst, [dE, dF, dS])
        print(f"{k:4d} {atoms.get_chemical_formula():>12s} dE/atom {dE:.2e} eV  dF {dF:.2e} eV/Å  dS {dS:.2e} eV/Å³")
    print(f"worst: dE/atom {worst[0]:.2e} eV, dF {worst[1]:.2e} eV/Å, dS {worst[2]:.2e} eV/Å³")
    return 0


if __name__ == "__main__":
    sys.exit(main())
