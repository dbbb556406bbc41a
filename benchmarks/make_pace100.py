"""Write a synthetic many-element PACE potential (.yace), default 100 elements.

No public PACE file with 100 elements exists, so this builds one from a template potential
(default: the YBCO potential shipped with acegen, 4 elements, 696 functions per element):

* elements: the first N of the periodic table (H, He, ...);
* functions of element e: the template functions of template element e mod T (T template
  elements; the first ``--functions`` of them, rank 1 first as PACE stores them), with the
  neighbour species mapped through a random injective map of the template species onto the
  N elements that sends the template centre to e.  Equal species stay equal and distinct stay
  distinct, so PACE's symmetrised m-combinations and C-tilde coefficients stay the rotation
  invariants they were; the coefficients are scaled by a random factor in [0.5, 1.5];
* bonds: every ordered pair (i, j) gets the template bond (i mod T, j mod T) with the core
  repulsion of the "distance" kind (prehc 400, lambdahc 7, as the npj Cu potential's; it does
  not depend on the atomic numbers), so the N² bonds use at most T² distinct radial tables.
  A ZBL core depends on both atomic numbers: every one of the N² bonds would need its own
  spline table (about 2.3 MB each for this radial basis at delta_spline_bins 0.001, 23 GB for
  100 elements), and so would a fitted file with N² independent radial coefficient sets;
* embeddings and E0: those of the template element e mod T.

    python benchmarks/make_pace100.py -o pace100.yace
    python benchmarks/make_pace100.py -o pace20.yace --elements 20 --functions 40
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
from ase.data import chemical_symbols

from acegen.io.pace import read_pace, write_yace
from acegen.io.pace.model import PaceFunction, PacePotential


def make(template: PacePotential, n_elements: int, n_functions: int, seed: int) -> PacePotential:
    T = len(template.elements)
    if n_elements < T:
        raise SystemExit(f"--elements must be >= the template's {T} elements")
    rng = np.random.default_rng(seed)
    elements = tuple(chemical_symbols[1 : n_elements + 1])
    functions = {}
    for e in range(n_elements):
        t = e % T
        out = []
        for f in list(template.functions[t])[:n_functions]:
            others = [z for z in range(n_elements) if z != e]
            picks = rng.choice(others, size=T - 1, replace=False)
            image = {t: e}
            image.update({s: int(p) for s, p in zip([s for s in range(T) if s != t], picks)})
            scale = rng.uniform(0.5, 1.5)
            out.append(PaceFunction(mu0=e, rank=f.rank, mus=tuple(image[m] for m in f.mus), ns=f.ns, ls=f.ls,
                                    ms_combs=f.ms_combs, ctildes=f.ctildes * scale))
        functions[e] = out
    core = {tb: replace(b, inner_cutoff_type="distance", prehc=400.0, lambdahc=7.0) for tb, b in template.bonds.items()}
    bonds = {(i, j): core[(i % T, j % T)] for i in range(n_elements) for j in range(n_elements)}
    return PacePotential(
        elements=elements,
        E0=tuple(template.E0[e % T] for e in range(n_elements)),
        delta_spline_bins=template.delta_spline_bins,
        embeddings={e: template.embeddings[e % T] for e in range(n_elements)},
        bonds=bonds,
        functions=functions,
    )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-o", "--output", default="pace100.yace")
    p.add_argument("--elements", type=int, default=100)
    p.add_argument("--functions", type=int, default=60, help="functions per element (default 60)")
    p.add_argument("--template", default=None, help="template .yace (default: the shipped YBCO potential)")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    if a.template is None:
        from importlib.resources import files

        template = read_pace(Path(str(files("acegen") / "data" / "YBCO_ACE.yace")))
    else:
        template = read_pace(Path(a.template))
    pot = make(template, a.elements, a.functions, a.seed)
    write_yace(pot, a.output)
    n = sum(len(v) for v in pot.functions.values())
    print(f"wrote {a.output}: {a.elements} elements, {n} functions, {len(pot.bonds)} bonds")


if __name__ == "__main__":
    main()
