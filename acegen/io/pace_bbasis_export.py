"""Export acegen models to pacemaker's B-basis ``.yaml`` (``model.save("x.yaml")``).

* PACE models read from a B-basis ``.yaml`` keep that B-basis (:attr:`PacePotential.bbasis`)
  and write it back unchanged (floats round-trip exactly).  PACE models read from ``.yace`` /
  ``.ace`` carry only C-tilde coefficients; they are refused (:class:`~acegen.errors.AcegenError`).
* acegen's own linear models go through their C-tilde form (:func:`acegen.io.pace_export.model_to_pace`:
  radial functions fitted in PACE's ``ChebPow`` basis with λ = 1, complex products of A's,
  linear embedding, no core repulsion) and then, per multiset (μ0, μ's, n's, l's), the C-tilde
  coefficients are expressed in PACE's B functions of that multiset: the coupling-tree
  functions (generalised Clebsch–Gordan coefficients, :func:`acegen.symbolic.clebsch_gordan.ms_cg_list`)
  for every admissible set of intermediate L's.  Both span the rotation-invariant (and, with
  Σl even, reflection-invariant) part of the same product space, so the linear map is solved
  exactly (to round-off): a column-pivoted QR picks linearly independent B functions, least
  squares gives their coefficients, and the residual is checked (relative 1e-10), otherwise
  :class:`~acegen.errors.AcegenError`.

  Each C-tilde row (ms) stands for Re(c̃ Π A_m) and, c̃ being real, equals the row with all m
  negated; the comparison is made on rows reduced to one representative of each conjugate
  pair and summed, with the factors of equal (μ, n, l) sorted, so that PACE's half basis,
  its doubled coefficients and its permutation compression all map to the same vector.

  Radial functions: the bond (A, B) and its dual (B, A) must be identical in a B-basis file,
  so one radial basis per unordered pair holds the many-body R's of both directions (those of
  centre A first); K is the larger of the two fits, padded with zeros (exact: the ChebPow
  basis depends on rcut and k only).  Rank-1 functions (order-1 terms and pair basis, fitted
  as in the ``.yace`` export) are written first.  The embedding is linear (ndensity 1,
  ``FinnisSinclairShiftedScaled`` with parameters [1, 1]); ``Eref`` is written as pacemaker's
  ``metadata.reference_energy`` (B-basis evaluators, pyace's and acegen's, do not add it).
"""

from __future__ import annotations

import json
from itertools import product

import numpy as np
from scipy.linalg import qr

from ..errors import AcegenError
from ..symbolic.clebsch_gordan import coupling_tree, ms_cg_list
from .pace.bbasis import _compress
from .pace.model import BBasisPotential, BFunctionSpec, BRadialSpec, BSpeciesBlock
from .pace_export import DEFAULT_TOL, model_to_pace

__all__ = ["model_to_bbasis", "admissible_lints", "SOLVE_TOL"]

#: relative residual above which a C-tilde group is "not expressible" in B functions
SOLVE_TOL = 1e-10
_PIVOT_TOL = 1e-11


def admissible_lints(ls) -> list[tuple[int, ...]]:
    """All intermediate-L tuples of PACE's coupling tree for ``ls`` (triangle conditions at
    every node, final L = 0, and PACE's ``validate_ls_LS`` relations)."""
    rank = len(ls)
    if rank <= 2:
        return [()] if (rank < 2 or ls[0] == ls[1]) else []
    tree = coupling_tree(rank)
    nint = rank - 2
    lmax = sum(ls)
    out = []
    for lint in product(range(lmax + 1), repeat=nint):
        lsLS = list(ls) + list(lint) + [0]
        if all(abs(lsLS[a] - lsLS[b]) <= lsLS[c] <= lsLS[a] + lsLS[b] for a, b, c in tree):
            if rank in (3, 5) and lint[-1] != ls[-1]:
                continue
            if (rank == 4 or rank >= 6) and lint[-1] != lint[-2]:
                continue
            out.append(tuple(lint))
    return out


def _canonical_rows(keys, ms_rows, coeffs):
    """{representative monomial: summed coefficient}: factors (key, m) sorted, a row and its
    conjugate (all m negated) mapped to the smaller of the two."""
    acc: dict = {}
    for ms, c in zip(ms_rows, coeffs):
        a = tuple(sorted(zip(keys, (int(m) for m in ms))))
        b = tuple(sorted(zip(keys, (-int(m) for m in ms))))
        k = min(a, b)
        acc[k] = acc.get(k, 0.0) + float(c)
    return acc


def _bfunctions_of_group(fn, names, where):
    """B functions (nr, nl, lint, c) reproducing the rank ≥ 2 C-tilde function ``fn``."""
    keys = list(zip(fn.mus, fn.ns, fn.ls))
    target = _canonical_rows(keys, fn.ms_combs, fn.ctildes[:, 0])
    scale = max((abs(v) for v in target.values()), default=0.0)
    if scale == 0.0:
        return []
    cands, cols = [], []
    if sum(fn.ls) % 2 == 0:
        for lint in admissible_lints(fn.ls):
            mus2, ns2, ls2, ms_cgs = _compress(fn.mus, fn.ns, fn.ls, ms_cg_list(fn.ls, lint))
            if not ms_cgs:
                continue
            col = _canonical_rows(list(zip(mus2, ns2, ls2)), [ms for ms, _ in ms_cgs], [g for _, g in ms_cgs])
            if max(abs(v) for v in col.values()) == 0.0:
                continue
            cands.append(lint)
            cols.append(col)
    rows = sorted(set(target) | {k for c in cols for k in c})
    index = {k: i for i, k in enumerate(rows)}
    t = np.zeros(len(rows))
    for k, v in target.items():
        t[index[k]] = v
    x = np.zeros(0)
    chosen: list = []
    if cols:
        M = np.zeros((len(rows), len(cols)))
        for j, col in enumerate(cols):
            for k, v in col.items():
                M[index[k], j] = v
        _, R, piv = qr(M, mode="economic", pivoting=True)
        d = np.abs(np.diag(R))
        rank = int(np.sum(d > _PIVOT_TOL * d[0])) if d.size and d[0] > 0 else 0
        chosen = sorted(piv[:rank].tolist())
        if chosen:
            x, *_ = np.linalg.lstsq(M[:, chosen], t, rcond=None)
            res = np.abs(M[:, chosen] @ x - t).max()
        else:
            res = np.abs(t).max()
    else:
        res = np.abs(t).max()
    if res > SOLVE_TOL * scale:
        raise AcegenError(
            f"cannot express {where} (mus={[names[m] for m in fn.mus]}, ns={list(fn.ns)}, ls={list(fn.ls)}) in "
            f"PACE's B functions: relative residual {res / scale:.1e} (the model is not rotation and reflection "
            "invariant in this multiset)")
    return [(tuple(fn.ns), tuple(fn.ls), cands[j], float(c)) for j, c in zip(chosen, x) if c != 0.0]


def model_to_bbasis(model, *, tol: float = DEFAULT_TOL, r_min: float | None = None,
                    delta_spline_bins: float = 0.001) -> BBasisPotential:
    """The B-basis potential of ``model``: a PACE model read from a B-basis ``.yaml`` returns
    its B-basis; an acegen linear model is converted (module docstring; ``tol``, ``r_min`` and
    ``delta_spline_bins`` as in :func:`acegen.io.pace_export.model_to_pace`)."""
    kind = getattr(model, "kind", None)
    if kind == "pace":
        bb = getattr(model.pace, "bbasis", None)
        if bb is None:
            raise AcegenError(
                f"model {model.name!r}: a PACE potential read from .yace/.ace holds only C-tilde coefficients, "
                "which do not determine a B-basis; save it as .yace (or load the B-basis .yaml it came from)")
        return bb
    if kind != "linear":
        raise AcegenError(f"model {getattr(model, 'name', '?')!r}: only linear acegen models and PACE models read "
                          "from a B-basis .yaml can be saved as B-basis .yaml")
    pot = model_to_pace(model, tol=tol, r_min=r_min, delta_spline_bins=delta_spline_bins)
    names = pot.elements
    nel = len(names)

    # one radial basis per unordered pair: R's of centre a, then of centre b; ns offset per direction
    offset: dict[tuple[int, int], int] = {}
    radial: dict[tuple[int, int], BRadialSpec] = {}
    for a in range(nel):
        for b in range(a, nel):
            bonds = [pot.bonds[(a, b)]] if a == b else [pot.bonds[(a, b)], pot.bonds[(b, a)]]
            if len({bd.rcut for bd in bonds}) > 1:
                raise AcegenError(f"bond {names[a]}-{names[b]}: cutoffs {bonds[0].rcut} and {bonds[1].rcut} of the two "
                                  "directions differ; a B-basis file has one radial basis per pair")
            K = max(bd.nradbase for bd in bonds)
            lmax = max(bd.lmax for bd in bonds)
            crad = np.zeros((sum(bd.nradmax for bd in bonds), lmax + 1, K))
            row = 0
            for (c, n), bd in zip(((a, b), (b, a)), bonds):
                offset[(c, n)] = row
                crad[row:row + bd.nradmax, : bd.lmax + 1, : bd.nradbase] = bd.crad
                row += bd.nradmax
            spec = BRadialSpec(radbase="ChebPow", radparameters=(1.0,), nradbase=K, nradmax=crad.shape[0], lmax=lmax,
                               radcoefficients=crad, rcut=bonds[0].rcut, dcut=bonds[0].dcut)
            radial[(a, b)] = radial[(b, a)] = spec

    blocks = []
    for a in range(nel):
        per_block: dict[tuple[int, ...], list[BFunctionSpec]] = {}

        def add(mus, nr, nl, lint, c, a=a):
            others = tuple(sorted({m for m in mus if m != a}, key=lambda m: names[m]))
            els = (names[a],) + tuple(names[m] for m in mus)
            per_block.setdefault(others, []).append(
                BFunctionSpec(elements=els, nr=tuple(int(v) for v in nr), nl=tuple(int(v) for v in nl),
                              lint=tuple(int(v) for v in lint), c=(float(c),)))

        funcs = pot.functions.get(a, [])
        for fn in funcs:  # rank 1 first (pot's functions are sorted by rank)
            if fn.rank == 1:
                add(fn.mus, fn.ns, (0,), (), fn.ctildes[0, 0])
        for fn in funcs:
            if fn.rank == 1:
                continue
            for ns, ls, lint, c in _bfunctions_of_group(fn, names, f"a product of species {names[a]}"):
                nr = [n + offset[(a, m)] for n, m in zip(ns, fn.mus)]
                add(fn.mus, nr, ls, lint, c)
        keys = [()] + [(b,) for b in sorted(range(nel), key=lambda m: names[m]) if b != a]
        keys += sorted((k for k in per_block if len(k) > 1), key=lambda k: [names[m] for m in k])
        for k in keys:
            els = (names[a],) + tuple(names[m] for m in k)
            one = len(k) == 0
            blocks.append(BSpeciesBlock(
                name=" ".join(els), elements=els, ndensity=1 if one else None,
                npoti="FinnisSinclairShiftedScaled" if one else None, fs_parameters=(1.0, 1.0) if one else None,
                rho_core_cut=100000.0 if one else None, drho_core_cut=250.0 if one else None,
                radial=radial[(a, k[0] if k else a)] if len(k) <= 1 else None,
                core_repulsion=(0.0, 1.0) if len(k) <= 1 else None, inner_cutoff_type="density", r_in=0.0,
                delta_in=0.0, functions=tuple(per_block.get(k, [])),
            ))
    meta = {"reference_energy": json.dumps({e: float(E) for e, E in zip(names, pot.E0)}),
            "acegen_model": str(model.name)}
    return BBasisPotential(delta_spline_bins=float(pot.delta_spline_bins), blocks=tuple(blocks), metadata=meta,
                           source=f"acegen:{model.name}")
