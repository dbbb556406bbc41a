"""Multilayer ACE on self-consistent tight-binding data: 1 vs 2 vs 3 layers at similar
parameter counts, and the indicator along a linear chain (Bochkarev et al. 2022, Fig. 2).

Data: the LCN s-band tight-binding model of ``benchmarks/tb_data.py`` (random Cu–Ni clusters,
train/test split; linear Cu chains).  Every model is fitted with ``acegen.fit`` (one layer: the
linear BLR fit; several layers: Levenberg–Marquardt on all layers jointly from that start),
on energies and forces, and scored on the held-out clusters.  The chain plot shows the
indicators of the 2- and 3-layer models along a chain next to the TB on-site shifts λ_i.

    python benchmarks/ml_demo.py                      # table on stdout, docs/img/multilayer_chain.png
    python benchmarks/ml_demo.py --clusters 60 --max-iter 5   # a quick run
    python benchmarks/ml_demo.py --short-range --seeds 0 1 2  # first-neighbour TB on lattice walks

``--short-range``: the first-neighbour TB model (``tb_data.short_range_model``, cut off at
3.2 Å) on planar lattice-walk clusters of 15–25 atoms, rcut 3.2 Å for every layer, and the
"wide" models (a last layer of order 3: 1 layer order 3 / degree 7; 2 layers order 2 / degree 4,
then order 3 / degree 6 with kmax = k0max = 1, wK = 3).  ``--seeds``: one data draw per seed,
the table per seed and the mean.  ``--force-atoms K``: the multilayer fits use the forces of K
atoms per structure (``solver_options["force_atoms"]``), so larger training sets fit in
minutes; ``--big-single`` adds a single layer of four times the parameters (its floor).

    python benchmarks/ml_demo.py --short-range --seeds 0 1 2 --clusters 500 --max-iter 40 \
        --force-atoms 5 --big-single --plot docs/img/multilayer_chain_short.png
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


SHORT_RCUT = 3.2


def _layer(order: int, degree: int, first: bool, rcut: float = RCUT) -> acegen.BasisSpec:
    extra = {} if first else {"purification": "none"}
    return acegen.BasisSpec(ELEMENTS, order, degree, rcut=rcut, r0=2.5, **extra)


def models(rcut: float = RCUT, design: str = "small", big_single: bool = False) -> dict[str, MultilayerSpec]:
    """The models, ~310–360 parameters each.  ``small``: 1, 2 and 3 layers with order-2 layers
    after the first; ``wide``: 1 and 2 layers, the last layer of order 3 (its start, the
    linear fit of its plain functions, is then close to the single-layer model)."""
    L = lambda o, d, first: _layer(o, d, first, rcut)  # noqa: E731
    if design == "wide":
        out = {"1 layer": MultilayerSpec(layers=[L(3, 7, True)])}
        if big_single:  # the single-layer floor: 4x the parameters
            out["1 layer, order 4"] = MultilayerSpec(layers=[L(4, 9, True)])
        out["2 layers"] = MultilayerSpec(layers=[L(2, 4, True), L(3, 6, False)], kmax=1, k0max=1, wK=3.0)
        return out
    return {
        "1 layer": MultilayerSpec(layers=[L(3, 7, True)]),
        "2 layers": MultilayerSpec(layers=[L(2, 4, True), L(2, 5, False)], kmax=1, k0max=1),
        "3 layers": MultilayerSpec(layers=[L(2, 4, True), L(2, 4, False), L(2, 4, False)], kmax=1, k0max=1),
    }


def _data(args, seed: int, model_tb):
    rng = np.random.default_rng(seed)
    make = tb.KINDS[args.kind]
    clusters = [tb.labelled(make(rng, int(rng.integers(args.min_atoms, args.max_atoms + 1))), model_tb)
                for _ in range(args.clusters)]
    n_train = 3 * len(clusters) // 4
    return clusters[:n_train], clusters[n_train:]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clusters", type=int, default=160, help="clusters in all (3/4 train, 1/4 test)")
    ap.add_argument("--min-atoms", type=int, default=None, help="default 2 (15 with --short-range)")
    ap.add_argument("--max-atoms", type=int, default=None, help="default 14 (25 with --short-range)")
    ap.add_argument("--max-iter", type=int, default=80, help="LM evaluations")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="several data draws (overrides --seed)")
    ap.add_argument("--short-range", action="store_true",
                    help="first-neighbour TB on lattice walks, rcut 3.2 Å, the wide models")
    ap.add_argument("--force-atoms", type=int, default=None,
                    help="multilayer fits: the forces of at most this many atoms per structure (a cheaper "
                         "Jacobian; errors are still scored on every atom)")
    ap.add_argument("--big-single", action="store_true",
                    help="with --short-range: also a single layer of order 4, degree 9 (1322 parameters)")
    ap.add_argument("--chain", type=int, default=16, help="atoms of the chain of the plot")
    ap.add_argument("--plot", default=str(HERE.parent / "docs" / "img" / "multilayer_chain.png"),
                    help="the chain plot ('' for none)")
    args = ap.parse_args(argv)
    short = args.short_range
    args.kind = "walk" if short else "random"
    args.min_atoms = args.min_atoms or (15 if short else 2)
    args.max_atoms = args.max_atoms or (25 if short else 14)
    seeds = args.seeds if args.seeds is not None else [args.seed]
    model_tb = tb.short_range_model() if short else tb.TBModel()
    specs = models(SHORT_RCUT, "wide", args.big_single) if short else models()
    opts = {"max_iter": args.max_iter}
    if args.force_atoms is not None:
        opts["force_atoms"] = args.force_atoms

    t0 = time.perf_counter()
    chain = tb.labelled(tb.linear_chains([args.chain])[0], model_tb)
    rows, fitted = [], {}
    for seed in seeds:
        t = time.perf_counter()
        train, test = _data(args, seed, model_tb)
        print(f"seed {seed}: {len(train)} train / {len(test)} test {args.kind} clusters "
              f"({args.min_atoms}-{args.max_atoms} atoms), {time.perf_counter() - t:.1f} s", flush=True)
        for name, spec in specs.items():
            t = time.perf_counter()
            m = acegen.fit(spec, train, test=test, eref="zero", solver="lm",
                           solver_options=opts)
            dt = time.perf_counter() - t
            if seed == seeds[0]:
                fitted[name] = m
            te = m.provenance["errors"]["test"]["set"]
            tr = m.provenance["errors"]["train"]["set"]
            npar = sum(m.basis.n_params)
            rows.append((seed, name, npar, 1e3 * tr["E"]["mae"], tr["F"]["mae"], 1e3 * te["E"]["mae"],
                         te["F"]["mae"], dt))
            print(f"{name}: {npar} parameters, test MAE E {1e3 * te['E']['mae']:.2f} meV/atom, "
                  f"F {te['F']['mae']:.4f} eV/Å ({dt:.0f} s)", flush=True)

    multi = len(seeds) > 1
    print(("\n| seed " if multi else "\n") + "| model | parameters | train MAE E (meV/atom) | train MAE F (eV/Å) "
          "| test MAE E (meV/atom) | test MAE F (eV/Å) | fit time (s) |")
    print("|---" * (8 if multi else 7) + "|")
    for seed, name, npar, tre, trf, tee, tef, dt in rows:
        print((f"| {seed} " if multi else "") + f"| {name} | {npar} | {tre:.2f} | {trf:.4f} | {tee:.2f} | {tef:.4f} "
              f"| {dt:.0f} |")
    if multi:
        for name in specs:
            r = np.array([row[2:] for row in rows if row[1] == name], dtype=float).mean(axis=0)
            print(f"| mean | {name} | {r[0]:.0f} | {r[1]:.2f} | {r[2]:.4f} | {r[3]:.2f} | {r[4]:.4f} | {r[5]:.0f} |")
    one = {(row[0], row[1]): row for row in rows}
    for name in [k for k in specs if k != "1 layer"]:
        gains = [(1 - one[(sd, name)][5] / one[(sd, "1 layer")][5], 1 - one[(sd, name)][6] / one[(sd, "1 layer")][6])
                 for sd in seeds]
        print(f"{name} vs 1 layer, test MAE lower by (E, F) per seed: "
              + ", ".join(f"{100 * e:+.0f} % / {100 * f:+.0f} %" for e, f in gains))

    # indicators along the chain (2- and 3-layer models) vs the TB on-site shifts
    lam = chain.arrays["onsite_shift"]
    print(f"\nchain of {args.chain} Cu atoms, λ:", np.array2string(lam, precision=3, max_line_width=200))
    curves = []
    for name in [k for k in fitted if not k.startswith("1 layer")]:
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
