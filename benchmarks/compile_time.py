"""Cold compile time: CPU seconds from a model file to a loaded kernel, in a fresh process with
an empty kernel cache, split into stages.

    python benchmarks/compile_time.py [MODEL ...] [--repeats 3] [--target c] [--profile]

Default models: the npj Cu potential (``--shared``/potentials/Cu-PBE-core-rep.ace) and the
YBCO potential shipped with acegen.  Each repeat runs every model once, in turn, in a fresh
process with a fresh ``ACEGEN_CACHE_DIR`` (the symbolic caches of acegen live there too, so
nothing is reused).  The process reports CPU time (``getrusage``, its own and its children's:
the C compiler runs as a child) of the stages

* ``load``: ``acegen.load`` (parsing the file);
* ``lower``: ``model.ir()`` (PACE import to the ModelIR: splines, expansion, DAG inputs);
* ``compile``: ``model.compile(target)`` (kernel plan, product DAG, template rendering, the
  C compiler or LLVM, loading), of which ``cc`` is the compiler's own CPU time;

and the medians are printed.  ``--profile`` prints cProfile's top functions of one more run
per model (by own time).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from importlib.resources import files
from pathlib import Path

import numpy as np

CHILD = """
import cProfile, json, pstats, resource, sys
def cpu():
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime, b.ru_utime + b.ru_stime
path, target, profile = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
import acegen
prof = cProfile.Profile() if profile else None
if prof: prof.enable()
c0, _ = cpu()
model = acegen.load(path)
c1, _ = cpu()
model.ir()
c2, k0 = cpu()
model.compile(target)
c3, k1 = cpu()
if prof:
    prof.disable()
    pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)
print(json.dumps({"load": c1 - c0, "lower": c2 - c1, "compile": c3 - c2, "cc": k1 - k0, "total": c3 - c0}))
"""


def run(path: Path, target: str, profile: bool = False) -> dict:
    with tempfile.TemporaryDirectory(prefix="acegen-compile-time-") as tmp:
        env = dict(os.environ, ACEGEN_CACHE_DIR=tmp, ACEGEN_QUIET="1")
        out = subprocess.run([sys.executable, "-c", CHILD, str(path), target, "1" if profile else "0"], env=env,
                             capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{path} failed:\n{out.stderr[-3000:]}")
    if profile:
        print(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*")
    ap.add_argument("--shared", default=os.environ.get("ACEGEN_SHARED", "../shared"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--target", default="c", choices=["c", "llvm"])
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)
    models = [Path(m) for m in args.models]
    if not models:
        cu = Path(args.shared) / "potentials" / "Cu-PBE-core-rep.ace"
        models = ([cu] if cu.is_file() else []) + [Path(str(files("acegen") / "data" / "YBCO_ACE.yace"))]
    res: dict[Path, list[dict]] = {m: [] for m in models}
    for _ in range(args.repeats):
        for m in models:
            res[m].append(run(m, args.target))
    print(f"target {args.target}, load average {os.getloadavg()[0]:.2f}; CPU seconds, medians of {args.repeats}")
    keys = ("load", "lower", "compile", "cc", "total")
    print(f"{'model':<28}" + "".join(f"{k:>9}" for k in keys) + "   totals")
    for m, rows in res.items():
        med = {k: float(np.median([r[k] for r in rows])) for k in keys}
        print(f"{m.name:<28}" + "".join(f"{med[k]:>9.2f}" for k in keys) + "   "
              + " ".join(f"{r['total']:.2f}" for r in rows))
    if args.profile:
        for m in models:
            print(f"--- cProfile, {m.name} (own time)")
            run(m, args.target, profile=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
