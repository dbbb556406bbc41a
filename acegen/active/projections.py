"""Per-atom projection vectors b_i (the rows the active set is chosen from)."""

from __future__ import annotations

import numpy as np

from ..errors import StructureError
from ..runtime.neighbours import build_neighbours, compute_on, species_indices


def projection_sizes(model) -> list[tuple[int, int]]:
    """(N_μ, ndensity_μ) per species of ``model`` (N_μ: number of basis functions)."""
    ir = model.projection_ir()
    return [(sp.n_projections, sp.embedding.ndensity) for sp in ir.species]


def atom_projections(model, atoms, *, full: bool = False, target: str = "c", nthreads: int = 1, kernel=None,
                     nl=None):
    """Species indices (n_atoms,) and per-atom projections of ``atoms``.

    Returns ``(Z, rows)`` with ``rows[μ]`` the (n_μ, width) matrix of the atoms of species μ
    (in atom order; their indices are ``np.flatnonzero(Z == μ)``): width N_μ ("linear": the
    B-basis values b_f) or, with ``full``, N_μ·ndensity (∂E_i/∂c_{f,p} = F'_p(ρ_p) b_f at
    index p·N_μ + f, as pyace's non-linear active sets).  ``kernel``: a prebuilt
    ``model.projection_kernel(target)``; ``nl``: a neighbour list of ``atoms`` with at least
    the model's cutoff (e.g. the one the energy was computed with).
    """
    ir = model.projection_ir()
    kernel = model.projection_kernel(target) if kernel is None else kernel
    Z = species_indices(atoms, model.elements)
    if len(atoms) == 0:
        raise StructureError("empty structure")
    if nl is None:
        nl = build_neighbours(atoms, float(np.max(kernel.rcut)))
    out, _ = compute_on(kernel, Z, nl, nthreads)
    out = np.asarray(out).reshape(len(atoms), -1)
    rows = []
    for mu, sp in enumerate(ir.species):
        sel = np.flatnonzero(Z == mu)
        nd, N = sp.embedding.ndensity, sp.n_projections
        b = out[sel, nd : nd + N]
        if full:
            # F'_p(ρ_p): written by the projection kernel after b (the embedding it compiles)
            dF = out[sel, nd + N : 2 * nd + N]
            b = (dF[:, :, None] * b[:, None, :]).reshape(len(sel), nd * N)
        if not np.all(np.isfinite(b)):
            bad = int(sel[np.flatnonzero(~np.isfinite(b).all(axis=1))[0]])
            raise StructureError(f"atom {bad}: non-finite projections")
        rows.append(np.ascontiguousarray(b))
    return Z, rows
