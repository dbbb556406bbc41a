"""Multilayer ACE on self-consistent tight-binding data: 1 vs 2 vs 3 layers at similar
parameter counts, and the indicator along a linear chain (Bochkarev et al. 2022, Fig. 2).

Data: the LCN s-band tight-binding model of ``benchmarks/tb_data.py`` (random Cu–Ni clusters,
train/test split; linear Cu chains).  Every model is fitted with ``acegen.fit`` (one layer: the
linear BLR fit; several layers: Levenberg–Marquardt on all layers jointly from that start),
on energies and forces, and scored on the held-out clusters.  The chain plot shows the
indicators of the 2- and 3-layer models along a chain next to the TB on-site shifts λ_i.

    python benchmarks/ml_demo.py                      # table on stdout, docs/img/multilayer_chain.png
    python benchmarks/ml_demo.py --clusters 60 --max-iter 5   # a quick run
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

import acegen
from acegen.multilayer import MultilayerSpec

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("tb_data", HERE / "tb_data.py")
tb = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("tb_data", tb)
_spec.loader.exec_module(tb)

ELEMENTS = ["Cu", "Ni"]
RCUT = 5.0


def _layer(order: int, degree: int, first: bool) -> acegen.BasisSpec:
    extra = {} if first else {"purification": "none"}
    return acegen.BasisSpec(ELEMENTS, order, degree, rcut=RCUT, r0=2.5, **extra)


def models() -> dict[str, MultilayerSpec]:
    """The three models, ~310–350 parameters each."""
    return {
        "1 layer": MultilayerSpec(layers=[_layer(3, 7, True)]),
        "2 layers": MultilayerSpec(layers=[_layer(2, 4, True), _layer(2, 5, False)], kmax=1, k0max=1),
        "3 layers": MultilayerSpec(layers=[_layer(2, 4, True), _layer(2, 4, False), _layer(2, 4, False)],
                                   kmax=1, k0max=1),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clusters", type=int, default=160, help="clusters in all (3/4 train, 1/4 test)")
    ap.add_argument("--max-atoms", type=int, default=14)
    ap.add_argument("--max-iter", type=int, default=80, help="LM evaluations")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chain", type=int, default=16, help="atoms of the chain of the plot")
    ap.add_argument("--plot", default=str(HERE.parent / "docs" / "img" / "multilayer_chain.png"))
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    model_tb = tb.TBModel()
    rng = np.random.default_rng(args.seed)
    clusters = [tb.labelled(tb.random_cluster(rng, int(rng.integers(2, args.max_atoms + 1))), model_tb)
                for _ in range(args.clusters)]
    n_train = 3 * len(clusters) // 4
    train, test = clusters[:n_train], clusters[n_train:]
    chain = tb.labelled(tb.linear_chains([args.chain])[0], model_tb)
    print(f"data: {len(train)} train / {len(test)} test clusters (2-{args.max_atoms} atoms), "
          f"{time.perf_counter() - t0:.1f} s")

    rows, fitted = [], {}
    for name, spec in models().items():
        t = time.perf_counter()
        m = acegen.fit(spec, train, test=test, eref="zero", solver="lm",
                       solver_options={"max_iter": args.max_iter})
        dt = time.perf_counter() - t
        fitted[name] = m
        te = m.provenance["errors"]["test"]["set"]
        tr = m.provenance["errors"]["train"]["set"]
        npar = sum(m.basis.n_params)
        rows.append((name, npar, 1e3 * tr["E"]["mae"], tr["F"]["mae"], 1e3 * te["E"]["mae"], te["F"]["mae"], dt))
        print(f"{name}: {npar} parameters, test MAE E {1e3 * te['E']['mae']:.2f} meV/atom, "
              f"F {te['F']['mae']:.4f} eV/Å ({dt:.0f} s)", flush=True)

    print("\n| model | parameters | train MAE E (meV/atom) | train MAE F (eV/Å) | test MAE E (meV/atom) "
          "| test MAE F (eV/Å) | fit time (s) |")
    print("|---|---|---|---|---|---|---|")
    for name, npar, tre, trf, tee, tef, dt in rows:
        print(f"| {name} | {npar} | {tre:.2f} | {trf:.4f} | {tee:.2f} | {tef:.4f} | {dt:.0f} |")

    # indicators along the chain (2- and 3-layer models) vs the TB on-site shifts
    lam = chain.arrays["onsite_shift"]
    print(f"\nchain of {args.chain} Cu atoms, λ:", np.array2string(lam, precision=3, max_line_width=200))
    curves = []
    for name in ("2 layers", "3 layers"):
        at = chain.copy()
        at.calc = acegen.Calculator(fitted[name], target="llvm")
        at.get_potential_energy()
        ind = at.calc.results["indicators"]
        for q in range(ind.shape[1]):
            th = ind[:, q]
            corr = float(np.corrcoef(th, lam)[0, 1]) if np.std(th) > 1e-12 else float("nan")
            label = f"θ^({q + 2}), {name}"
            curves.append((label, th))
            print(f"{label}: corr with λ {corr:.3f}:", np.array2string(th, precision=3, max_line_width=200))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.5, 3.4), dpi=100)
        x = np.arange(1, args.chain + 1)
        for q, (label, th) in enumerate(curves):
            ax.plot(x, th, "o-", color=f"C{q}", ms=4, label=label.replace("θ^", "θ"))
        ax.set_xlabel("atom along the chain")
        ax.set_ylabel("indicator θ")
        ax.set_xticks(x[::max(1, len(x) // 8)])
        ax2 = ax.twinx()
        ax2.plot(x, lam, "s--", color="k", ms=4, label="TB on-site shift λ")
        ax2.set_ylabel("λ (eV)")
        fig.legend(loc="upper center", fontsize=7, ncol=2, frameon=False)
        fig.tight_layout(rect=(0, 0, 1, 0.86))
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot)
        print(f"wrote {args.plot}")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
