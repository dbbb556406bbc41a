"""Fresh-process start-up of a model whose kernel is cached: CPU time to load the model and
get its kernel, for every model kind and target.

    python benchmarks/startup.py [--repeats 3] [--shared FOLDER] [--targets c llvm]

For each model (a spec-built ``Model.random(spec)``, the same model saved as fitted JSON, the
shipped YBCO ``.yace``, the npj Cu ``.ace``, a pacemaker B-basis ``.yaml`` and a GRACE-FS
``.yaml`` when found in ``--shared``/potentials) and target, a first process compiles it into
a fresh kernel cache (``ACEGEN_CACHE_DIR`` in a temporary folder), then ``--repeats`` fresh
processes load it again.  Each process reports the CPU time (its own and its children's,
``getrusage``) of ``acegen.load(...)``/``Model.random(...)`` + ``model.compile(target)`` and the
counters of ``acegen.jit.cache.events`` (``lower``, ``parse``, ``c_build``, ``llvm_compile``,
``index_hit``); the parent also reports the whole process's CPU (Python start, imports
included).  Medians of the repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SPEC = dict(elements=["Cu", "Ni"], order=3, totaldegree=[12, 10, 8], wL=1.5, rcut=5.5)

CHILD = """
import json, resource, sys, time
def cpu():
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime
import acegen
try:
    from acegen.jit.cache import events
except ImportError:  # an acegen without the counters (for before/after comparisons)
    events = {}
kind, arg, target = sys.argv[1:4]
c0, w0 = cpu(), time.perf_counter()
if kind == "random":
    model = acegen.Model.random(acegen.BasisSpec(**json.loads(arg)), seed=0)
else:
    model = acegen.load(arg)
kernel = model.compile(target)
print(json.dumps({"cpu": cpu() - c0, "wall": time.perf_counter() - w0, "events": dict(events)}))
"""


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(env: dict, kind: str, arg: str, target: str) -> dict:
    c0 = child_cpu()
    out = subprocess.run([sys.executable, "-c", CHILD, kind, arg, target], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{kind} {arg} {target} failed:\n{out.stderr[-3000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["process_cpu"] = child_cpu() - c0
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shared", default=os.environ.get("ACEGEN_SHARED", "../shared"),
                    help="folder with potentials/ (npj Cu .ace, YBCO_ACE.yaml, gracefs/)")
    ap.add_argument("--targets", nargs="+", default=["c", "llvm"])
    args = ap.parse_args(argv)

    import acegen
    from importlib.resources import files

    pots = Path(args.shared) / "potentials"
    with tempfile.TemporaryDirectory(prefix="acegen-startup-") as tmp:
        env = dict(os.environ, ACEGEN_CACHE_DIR=str(Path(tmp) / "cache"), ACEGEN_QUIET="1")
        fitted = Path(tmp) / "fitted.json"
        acegen.Model.random(acegen.BasisSpec(**SPEC), seed=0).save(fitted)
        cases = [("spec-built Model.random", "random", json.dumps(SPEC)), ("fitted JSON", "file", str(fitted)),
                 ("PACE .yace (YBCO)", "file", str(files("acegen") / "data" / "YBCO_ACE.yace"))]
        for label, name in (("PACE .ace (npj Cu)", "Cu-PBE-core-rep.ace"), ("B-basis .yaml (YBCO)", "YBCO_ACE.yaml"),
                            ("GRACE-FS .yaml (AlLi)", "gracefs/AlLi_distill_GRACE-FS_saved_model.yaml")):
            if (pots / name).is_file():
                cases.append((label, "file", str(pots / name)))
            else:
                print(f"({label}: {pots / name} not found, skipped)")
        print(f"{'model':<24} {'target':<6} {'first CPU s':>11} {'cached: load+compile CPU s':>27} "
              f"{'process CPU s':>14}  events of a cached start")
        for label, kind, arg in cases:
            for target in args.targets:
                first = run(env, kind, arg, target)
                again = [run(env, kind, arg, target) for _ in range(args.repeats)]
                cpu = float(np.median([r["cpu"] for r in again]))
                proc = float(np.median([r["process_cpu"] for r in again]))
                print(f"{label:<24} {target:<6} {first['cpu']:>11.2f} {cpu:>27.3f} {proc:>14.2f}  "
                      f"{json.dumps(again[-1]['events'], sort_keys=True)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
