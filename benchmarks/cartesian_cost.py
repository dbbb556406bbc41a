"""Cost of Cartesian against spherical ACE kernels, and the Zuo et al. (2020) Cu fit with each.

    python benchmarks/cartesian_cost.py cost [--atoms N] [--repeats K] [--json PATH]
    python benchmarks/cartesian_cost.py fit  [--data-dir DIR] [--json PATH]

``cost``: for one element (Cu, fcc a = 3.6 Å rattled, ``acegen.bench.benchmark_structure``),
correlation orders 2-4 and several total degrees, the three angular kinds of the same spec
(``purification="none"``; ``spherical`` and ``cartesian`` span the same space, ``cace`` a
subspace): many-body functions, angular functions per neighbour (harmonics or monomials up
to lmax), one-particle functions A per atom (n_A), product monomials, product-DAG nodes,
estimated FLOPs per atom (:func:`acegen.bench.kernel_flops`) and the measured time per atom
of the C kernel (energy and dE/dr_ij; median of ``--repeats`` calls, wall and process CPU,
one thread), all kinds of one spec timed in the same run, interleaved.

``fit``: the Zuo Cu benchmark of ``benchmarks/configs/zuo_cu.yaml`` (order 3, totaldegree
[20, 16, 12], pair purification, BLR, algebraic prior p = 4, weights E 30 / F 1) with
``angular`` spherical, cartesian (the same span) and cace at the config's degrees and at
the total degree that gives about the spherical number of parameters; train and test MAE
of energies (meV/atom) and forces (eV/Å).  Needs the shared data folder (the config's data
directory, ``--data-dir`` or ``$ACEGEN_DATA``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

#: (order, totaldegree) of the cost table; wL 1.5 and the default cutoff of Cu (6.5 Å)
COST_SPECS = [(2, 10), (2, 16), (3, 10), (3, 14), (3, (20, 16, 12)), (4, 8), (4, 11), (4, 13)]
KINDS = ("spherical", "cartesian", "cace")


def _spec(order, deg, kind, purification="none"):
    import acegen

    return acegen.BasisSpec(elements=["Cu"], order=order, totaldegree=deg, angular=kind, purification=purification)


def cost(n_atoms: int, repeats: int) -> list[dict]:
    import acegen
    from acegen.backends.plan import build_plan
    from acegen.bench import benchmark_structure, kernel_flops
    from acegen.ir.model import n_angular
    from acegen.runtime.neighbours import build_neighbours, species_indices

    atoms = benchmark_structure(("Cu",), n_atoms)
    n = len(atoms)
    rows = []
    for order, deg in COST_SPECS:
        entries = []
        for kind in KINDS:
            model = acegen.Model.random(_spec(order, deg, kind), seed=1)
            ir = model.ir()
            plan = build_plan(ir)
            sp = plan.species[0]
            t0 = time.perf_counter()
            kernel = model.compile("c")
            t_compile = time.perf_counter() - t0
            Z = species_indices(atoms, ir.elements)
            nl = build_neighbours(atoms, ir.rcut_max)
            nbs = np.ascontiguousarray(Z[nl.j], dtype=np.int32)
            fl = kernel_flops(ir, Z, nl)
            entries.append(dict(
                order=order, totaldegree=deg, kind=kind, lmax=int(ir.lmax), functions=len(model.basis),
                angular=n_angular(ir.angular_kind, ir.lmax), n_A=int(ir.species[0].n_A),
                monomials=len(ir.species[0].monomials), dag_nodes=int(sp.n_nodes), dag_products=int(sp.n_products),
                flops_per_atom=fl["total"] / n, flops_split={k: v / n for k, v in fl.items()},
                neighbours_per_atom=nl.n_pairs / n, compile_s=t_compile,
                _call=(lambda kernel=kernel, Z=Z, nl=nl, nbs=nbs: kernel.compute(Z, nl.offsets, nbs, nl.rij,
                                                                                   nthreads=1)),
                wall=[], cpu=[]))
        for e in entries:  # warm-up
            e["_call"]()
        for _ in range(repeats):  # interleaved, so load changes hit every kind alike
            for e in entries:
                c0, t0 = time.process_time(), time.perf_counter()
                e["_call"]()
                e["wall"].append(time.perf_counter() - t0)
                e["cpu"].append(time.process_time() - c0)
        for e in entries:
            e.pop("_call")
            e["us_per_atom_wall"] = 1e6 * float(np.median(e.pop("wall"))) / n
            e["us_per_atom_cpu"] = 1e6 * float(np.median(e.pop("cpu"))) / n
            e["atoms"] = n
            rows.append(e)
            print(f"order {order} deg {deg} {e['kind']:9s}: {e['functions']:4d} functions, lmax {e['lmax']}, "
                  f"{e['angular']:3d} angular, n_A {e['n_A']:4d}, {e['dag_products']:6d} products, "
                  f"{e['flops_per_atom'] / 1e3:8.1f} kFLOP/atom, {e['us_per_atom_cpu']:8.2f} µs/atom (CPU), "
                  f"{e['us_per_atom_wall']:8.2f} (wall)", flush=True)
    return rows


def cost_table(rows: list[dict]) -> str:
    out = ["| order, degree | kind | lmax | functions | angular | n_A | DAG products | kFLOP/atom | µs/atom CPU (wall) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        deg = r["totaldegree"] if isinstance(r["totaldegree"], int) else list(r["totaldegree"])
        out.append(f"| {r['order']}, {deg} | {r['kind']} | {r['lmax']} | {r['functions']} | {r['angular']} | "
                   f"{r['n_A']} | {r['dag_products']} | {r['flops_per_atom'] / 1e3:.1f} | "
                   f"{r['us_per_atom_cpu']:.1f} ({r['us_per_atom_wall']:.1f}) |")
    return "\n".join(out)


def _cace_degree_for(n_target: int, base) -> tuple:
    """The smallest uniform shift of the config's total degrees whose cace basis has at least
    ``n_target`` parameters."""
    import acegen

    for shift in range(0, 40):
        deg = tuple(d + shift for d in base)
        b = acegen.lower(_spec(3, deg, "cace", "pair"))
        if b.n_params >= n_target:
            return deg
    raise RuntimeError("no cace degree reaches the parameter count")


def fit(data_dir: Path | None) -> list[dict]:
    import acegen
    from acegen.fit.config import load_config

    cfg = load_config(HERE / "configs" / "zuo_cu.yaml", data_dir=data_dir)
    base = tuple(cfg.basis["totaldegree"])
    runs = [("spherical", base), ("cartesian", base), ("cace", base)]
    n_sph = acegen.lower(acegen.BasisSpec(**cfg.basis)).n_params
    runs.append(("cace", _cace_degree_for(n_sph, base)))
    out = []
    for kind, deg in runs:
        spec = acegen.BasisSpec(**{**cfg.basis, "angular": kind, "totaldegree": list(deg)})
        t0, c0 = time.perf_counter(), time.process_time()
        model = acegen.fit(spec, cfg.train, energy_key=cfg.energy_key, force_key=cfg.force_key,
                           virial_key=cfg.virial_key, weights=cfg.weights, solver=cfg.solver,
                           solver_options=cfg.solver_options, prior=cfg.prior, eref=cfg.eref, test=cfg.test,
                           progress=False)
        rep = model.fit_report
        rec = dict(kind=kind, totaldegree=list(deg), purification=spec.purification, n_params=int(rep.n_params),
                   train={q: {k: rep.errors["set"][q][k] for k in ("mae", "rmse")} for q in ("E", "F")},
                   test={q: {k: rep.test_errors["set"][q][k] for k in ("mae", "rmse")} for q in ("E", "F")},
                   wall_s=time.perf_counter() - t0, cpu_s=time.process_time() - c0)
        out.append(rec)
        print(f"{kind:9s} {deg}: {rec['n_params']} params, test MAE E {1e3 * rec['test']['E']['mae']:.3f} meV/atom, "
              f"F {rec['test']['F']['mae']:.4f} eV/Å; train {1e3 * rec['train']['E']['mae']:.3f} / "
              f"{rec['train']['F']['mae']:.4f} ({rec['wall_s']:.0f} s)", flush=True)
    return out


def fit_table(rows: list[dict]) -> str:
    out = ["| angular | totaldegree | parameters | test MAE E (meV/atom) | test MAE F (eV/Å) | train MAE E / F |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['kind']} | {r['totaldegree']} | {r['n_params']} | {1e3 * r['test']['E']['mae']:.3f} | "
                   f"{r['test']['F']['mae']:.4f} | {1e3 * r['train']['E']['mae']:.3f} / {r['train']['F']['mae']:.4f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["cost", "fit"])
    ap.add_argument("--atoms", type=int, default=500, help="atoms of the timed crystal (cost)")
    ap.add_argument("--repeats", type=int, default=7, help="timed kernel calls per model (cost)")
    ap.add_argument("--data-dir", type=Path, default=None, help="the shared data folder (fit)")
    ap.add_argument("--json", type=Path, default=None, help="also write the records as JSON")
    args = ap.parse_args(argv)
    if args.what == "cost":
        rows = cost(args.atoms, args.repeats)
        table = cost_table(rows)
    else:
        rows = fit(args.data_dir)
        table = fit_table(rows)
    print()
    print(table)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1, default=list) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
