"""Finnis–Sinclair (ndensity 2) fits of a subset of Zuo et al. (2020) Cu against the linear fit
they start from (docs/fitting.md, "Non-linear fits").

    python benchmarks/fit_fs.py [--every 13] [--n 20] [--max-iter 200] [--solvers lm lbfgs] [--data-dir DIR]

Training set: every ``--every``-th structure of ``Cu_train.xyz``, the first ``--n`` of them;
test set: all of ``Cu_test.xyz``.  Basis ``BasisSpec(["Cu"], 3, 8, rcut=5.0)``, energies and
forces, default weights, ``eref="average"``, algebraic prior, embedding
FinnisSinclairShiftedScaled with parameters [1, 1, 1, 0.5].  Prints one JSON line per fit:
wall time, train and test RMSE (E in meV/atom, F in eV/Å) and the solver state (loss at the
start and the end, iterations, evaluations, convergence).  Needs the shared data folder
(``../shared/data`` next to the repository, or ``--data-dir``).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--every", type=int, default=13)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--max-iter", type=int, default=200)
    ap.add_argument("--solvers", nargs="+", default=["lm", "lbfgs"], choices=["lm", "lbfgs"])
    ap.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    args = ap.parse_args()

    import ase.io

    import acegen

    warnings.simplefilter("ignore")
    folder = args.data_dir / "ZuoEtAl2020"
    train = ase.io.read(folder / "Cu_train.xyz", index=f"::{args.every}")[: args.n]
    spec = acegen.BasisSpec(["Cu"], 3, 8, rcut=5.0)
    kw = dict(energy_key="energy", force_key="force", progress=False, eref="average", test=folder / "Cu_test.xyz")

    def row(name: str, m, seconds: float) -> None:
        e = m.provenance["errors"]
        info = m.provenance["solver_state"]["info"]
        print(json.dumps({
            "fit": name, "seconds": round(seconds, 1), "n_structures": len(train),
            "n_atoms": sum(len(a) for a in train), "n_params_per_density": m.basis.n_params,
            "train_E_meV": 1e3 * e["train"]["set"]["E"]["rmse"], "train_F": e["train"]["set"]["F"]["rmse"],
            "test_E_meV": 1e3 * e["test"]["set"]["E"]["rmse"], "test_F": e["test"]["set"]["F"]["rmse"],
            **{k: info.get(k) for k in ("loss_initial", "loss", "iterations", "n_evaluations", "converged",
                                        "message")}}), flush=True)

    t = time.perf_counter()
    row("linear blr", acegen.fit(spec, train, **kw), time.perf_counter() - t)
    for solver in args.solvers:
        t = time.perf_counter()
        m = acegen.fit(spec, train, embedding="FinnisSinclairShiftedScaled", ndensity=2, solver=solver,
                       solver_options={"max_iter": args.max_iter}, **kw)
        row(f"fs {solver}", m, time.perf_counter() - t)


if __name__ == "__main__":
    main()
