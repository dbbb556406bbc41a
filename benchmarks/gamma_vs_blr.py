"""Extrapolation grade γ against the BLR predictive variance on the Zuo et al. (2020) Cu test set.

    python benchmarks/gamma_vs_blr.py [--data-dir DIR] [--nthreads N] [--summary PATH]

1. fits the linear model of ``benchmarks/configs/zuo_cu.yaml`` (BLR: the posterior
   covariance Σ is the fit's ``fit_report.result.covariance``), as ``acegen fit`` does;
2. builds the linear active set from the training structures (as ``acegen activeset``:
   MaxVol, tolerance 1.01) and checks that every training environment has γ ≤ 1.01;
3. on each test structure computes max_i γ_i and the predictive variances of
   :func:`acegen.active.predictive_variance`: per atom b_iᵀΣb_i (the structure's maximum and
   mean) and of the total energy (Σ_i b_i)ᵀΣ(Σ_i b_i) (also per atom²);
4. prints and saves (``--summary``, default ``tmp/gamma_vs_blr.json`` in the repository) the
   Spearman rank correlations (``scipy.stats.spearmanr``) of max γ with each variance.

The data folder: ``--data-dir``, else ``$ACEGEN_DATA``, else the config's (the shared data
next to the repository).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CONFIG = HERE / "configs" / "zuo_cu.yaml"


def run(data_dir: Path | None, nthreads: int) -> dict:
    import ase.io
    from scipy.stats import spearmanr

    import acegen
    from acegen.active import atom_projections, build_active_set, predictive_variance
    from acegen.fit import fit_from_config, make_basis_evaluator
    from acegen.fit.config import load_config

    cfg = load_config(CONFIG, data_dir=data_dir)
    t0 = time.perf_counter()
    basis = acegen.lower(acegen.BasisSpec(**cfg.basis))
    evaluator = make_basis_evaluator(basis, forces=True, virial=False, nthreads=nthreads)
    model = fit_from_config(CONFIG, basis=basis, basis_evaluator=evaluator, data_dir=data_dir)
    t_fit = time.perf_counter() - t0
    train = [a for p in cfg.train for a in ase.io.read(p, ":")]
    test = [a for p in cfg.test for a in ase.io.read(p, ":")]

    t0 = time.perf_counter()
    active = build_active_set(model, train)
    t_active = time.perf_counter() - t0
    kernel = model.projection_kernel("c")
    g_train = max(float(np.max(active.gamma(model, *atom_projections(model, a, kernel=kernel)))) for a in train)

    rows = []
    for k, atoms in enumerate(test):
        Z, proj = atom_projections(model, atoms, kernel=kernel)
        gamma = active.gamma(model, Z, proj)
        per_atom, total = predictive_variance(model, atoms, kernel=kernel)
        rows.append({"index": k, "n_atoms": len(atoms), "gamma_max": float(gamma.max()),
                     "var_atom_max": float(per_atom.max()), "var_atom_mean": float(per_atom.mean()),
                     "var_total": float(total), "var_total_per_atom2": float(total) / len(atoms) ** 2})
    g = np.array([r["gamma_max"] for r in rows])
    corr = {}
    for key in ("var_atom_max", "var_atom_mean", "var_total", "var_total_per_atom2"):
        res = spearmanr(g, [r[key] for r in rows])
        corr[key] = {"rho": float(res.statistic), "p": float(res.pvalue)}
    return {
        "config": str(CONFIG.relative_to(REPO)),
        "n_params": int(basis.n_params),
        "train_structures": len(train), "test_structures": len(test),
        "train_environments": int(sum(len(a) for a in train)),
        "max_train_gamma": g_train,
        "test_gamma_max_range": [float(g.min()), float(g.max())],
        "test_structures_gamma_above_1": int(np.sum(g > 1.0)),
        "spearman_gamma_max_vs": corr,
        "timings_s": {"fit": t_fit, "active_set": t_active},
        "structures": rows,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--nthreads", type=int, default=1)
    ap.add_argument("--summary", type=Path, default=REPO / "tmp" / "gamma_vs_blr.json")
    args = ap.parse_args(argv)
    out = run(args.data_dir, args.nthreads)
    brief = {k: v for k, v in out.items() if k != "structures"}
    print(json.dumps(brief, indent=2))
    args.summary.parent.mkdir(parents=True, exist_ok=True)
    args.summary.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
