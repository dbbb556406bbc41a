"""Write a random GRACE-FS model of the "many-element foundation model" shape.

Default: 25 elements, ≈5000 functions (200 per central element, ranks 1–4), lmax 5,
4 densities with FinnisSinclairShiftedScaled, nradmax = n_rad_base = 12, cutoff 6 Å.
The m-couplings are exact rotation invariants of the real harmonics (real Gaunt
coefficients, computed by Gauss quadrature on the sphere; rank 4 couples two pairs through
an intermediate L), so the energy is rotation invariant like a trained model's; the weights
are random with scales that give energies of a few eV per atom.

    python benchmarks/make_gracefs.py -o FS_model.yaml --seed 1
    python benchmarks/make_gracefs.py -o small.yaml --elements 3 --functions 60 --lmax 3
"""

from __future__ import annotations

import argparse
import itertools
import math
from functools import lru_cache

import numpy as np
import yaml

from acegen.reference.gracefs_numpy import real_ylm

ELEMENTS_25 = (
    "H", "Li", "Be", "B", "C", "N", "O", "F", "Na", "Mg", "Al", "Si", "P", "S", "Cl",
    "K", "Ca", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu",
)
SUM_L = {3: 8, 4: 6}  # fitted models keep the higher ranks at low l
FS_PARAMS = (1.0, 1.0, 1.0, 0.5, 1.0, 2.0, 1.0, 0.75)  # (w, m) pairs as in the exported models


@lru_cache(maxsize=None)
def _sphere(L: int):
    """Quadrature exact for polynomials of degree ≤ 3L+1 on the sphere (any product of three
    harmonics with l ≤ L), and the real Y_lm, l ≤ L, at its nodes."""
    nt = (3 * L) // 2 + 1
    z, wz = np.polynomial.legendre.leggauss(nt)
    nphi = 3 * L + 2
    phi = 2 * math.pi * np.arange(nphi) / nphi
    zz, pp = np.meshgrid(z, phi, indexing="ij")
    s = np.sqrt(1 - zz**2)
    v = np.stack([s * np.cos(pp), s * np.sin(pp), zz], axis=-1).reshape(-1, 3)
    w = (wz[:, None] * np.full(nphi, 2 * math.pi / nphi)[None, :]).ravel()
    Y, _ = real_ylm(v, L)
    return Y, w


def _block(Y, l):
    return Y[:, l * l:(l + 1) ** 2]


@lru_cache(maxsize=None)
def gaunt(l1: int, l2: int, l3: int, L: int) -> np.ndarray:
    """Real Gaunt tensor ∫ Y_l1 Y_l2 Y_l3 dΩ (shape (2l1+1, 2l2+1, 2l3+1)); L ≥ max(l1, l2, l3)."""
    Y, w = _sphere(L)
    return np.einsum("q,qa,qb,qc->abc", w, _block(Y, l1), _block(Y, l2), _block(Y, l3))


def coupling(ls, L=None, lmax=5):
    """(ms_combs (M, rank), gen_cgs (M,)) of a rotation-invariant real coupling of ``ls``
    (rank 4: through intermediate L), normalised to unit length; None if it vanishes."""
    rank = len(ls)
    qL = lmax
    if rank == 1:
        T = np.ones((1,))
    elif rank == 2:
        T = np.eye(2 * ls[0] + 1)
    elif rank == 3:
        T = gaunt(*ls, qL)
    else:
        T = np.einsum("abM,cdM->abcd", gaunt(ls[0], ls[1], L, qL), gaunt(ls[2], ls[3], L, qL))
    T = np.where(np.abs(T) > 1e-12 * max(np.abs(T).max(), 1e-300), T, 0.0)
    idx = np.argwhere(T != 0.0)
    if len(idx) == 0:
        return None
    # all factors share one radial index, so the product is symmetric under exchanging factors
    # of equal l: merge such permutations (canonical: m sorted within each group of equal l)
    merged: dict[tuple[int, ...], float] = {}
    for row, c in zip(idx - np.asarray(ls)[None, :], T[tuple(idx.T)]):
        key = tuple(int(m) for _, m in sorted(zip(ls, row)))
        merged[key] = merged.get(key, 0.0) + float(c)
    keys = [k for k, c in merged.items() if abs(c) > 1e-12]
    if not keys:
        return None
    ms = np.array(keys, dtype=np.int64).reshape(len(keys), rank)
    cg = np.array([merged[k] for k in keys])
    return ms, cg / np.linalg.norm(cg)


def _candidates(rank, lmax):
    """Admissible (ls, L) of a rank: parity-even, triangle conditions."""
    out = []
    if rank == 1:
        return [((0,), None)]
    if rank == 2:
        return [((l, l), None) for l in range(lmax + 1)]
    if rank == 3:
        for ls in itertools.combinations_with_replacement(range(lmax + 1), 3):
            a, b, c = ls
            if (a + b + c) % 2 == 0 and c <= a + b and a + b + c <= SUM_L[3]:
                out.append((ls, None))
        return out
    for l1, l2, l3, l4 in itertools.combinations_with_replacement(range(lmax + 1), 4):
        if l1 + l2 + l3 + l4 > SUM_L[4]:
            continue
        for L in range(abs(l1 - l2), l1 + l2 + 1):
            if (l1 + l2 + L) % 2 == 0 and abs(l3 - l4) <= L <= l3 + l4 and (l3 + l4 + L) % 2 == 0 and L <= lmax:
                out.append(((l1, l2, l3, l4), L))
    return out


def make_gracefs(seed: int = 0, *, n_elements: int = 25, n_functions: int = 5000, rankmax: int = 4, lmax: int = 5,
                 ndensity: int = 4, nradmax: int = 12, n_rad_base: int = 12, rcut: float = 6.0) -> dict:
    """A random GRACE-FS model as the YAML document (a dict); ``n_functions`` is split evenly
    over the central elements."""
    if not 1 <= n_elements <= len(ELEMENTS_25):
        raise ValueError(f"n_elements must be in 1..{len(ELEMENTS_25)}")
    if not 1 <= ndensity <= len(FS_PARAMS) // 2:
        raise ValueError("ndensity must be in 1..4")
    rng = np.random.default_rng(seed)
    elements = list(ELEMENTS_25[:n_elements])
    per = max(1, n_functions // n_elements)
    crad = 6.0 * rng.normal(size=(nradmax, lmax + 1, n_rad_base)) / math.sqrt(n_rad_base)
    Z = 2.0 * rng.normal(size=(n_elements, nradmax))
    # the mix of ranks: every rank-1 and rank-2 function, the rest split between ranks 3 and 4
    cands = {r: _candidates(r, lmax) for r in range(1, rankmax + 1)}
    rank_w = {1: 0.05, 2: 0.15, 3: 0.35, 4: 0.45}
    rank_scale = {1: 2.0, 2: 2.0, 3: 2.0, 4: 2.0}  # with A = O(0.5): every rank adds O(1) to ρ
    functions = {}
    for mu in range(n_elements):
        lst = []
        ranks = rng.choice(np.arange(1, rankmax + 1), size=per,
                           p=np.array([rank_w[r] for r in range(1, rankmax + 1)]) / sum(rank_w[r] for r in range(1, rankmax + 1)))
        for rank in ranks:
            while True:
                ls, L = cands[int(rank)][rng.integers(len(cands[int(rank)]))]
                c = coupling(ls, L, lmax)
                if c is not None:
                    break
            ms, cg = c
            coeff = rng.normal(size=ndensity) * rank_scale[int(rank)] / math.sqrt(per)
            lst.append({
                "mu0": mu, "rank": int(rank), "ns": int(rng.integers(1, nradmax + 1)), "ls": [int(x) for x in ls],
                "ms_combs": [int(x) for x in ms.ravel()], "gen_cgs": [float(x) for x in cg],
                "ndensity": ndensity, "coeff": [float(x) for x in coeff],
            })
        functions[mu] = lst
    return {
        "elements": elements,
        "nnorm": 1.0 / 40.0,
        "emb_spec": {"type": "FinnisSinclairShiftedScaled", "params": list(FS_PARAMS[: 2 * ndensity])},
        "radial_basis": {
            "radbasename": "SBessel", "cutoff": float(rcut), "nradmax": nradmax, "n_rad_base": n_rad_base,
            "crad_shape": [nradmax, lmax + 1, n_rad_base], "crad": [float(x) for x in crad.ravel()],
            "Z_shape": [n_elements, nradmax], "Z": [float(x) for x in Z.ravel()],
        },
        "functions": functions,
        "E0": [float(x) for x in -rng.uniform(1.0, 5.0, size=n_elements)],
        "shift": 0.0,
        "scale": 1.0,
    }


def write_gracefs(path, **kw) -> None:
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    with open(path, "w", encoding="utf-8") as fh:
        yaml.dump(make_gracefs(**kw), fh, Dumper=dumper, default_flow_style=None, sort_keys=False, width=120)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--elements", type=int, default=25)
    ap.add_argument("--functions", type=int, default=5000)
    ap.add_argument("--rankmax", type=int, default=4)
    ap.add_argument("--lmax", type=int, default=5)
    ap.add_argument("--ndensity", type=int, default=4)
    ap.add_argument("--nradmax", type=int, default=12)
    ap.add_argument("--n-rad-base", type=int, default=12)
    ap.add_argument("--cutoff", type=float, default=6.0)
    a = ap.parse_args(argv)
    write_gracefs(a.output, seed=a.seed, n_elements=a.elements, n_functions=a.functions, rankmax=a.rankmax,
                  lmax=a.lmax, ndensity=a.ndensity, nradmax=a.nradmax, n_rad_base=a.n_rad_base, rcut=a.cutoff)


if __name__ == "__main__":
    main()
