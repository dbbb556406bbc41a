"""Neighbour lists: ASE ``Atoms`` → the CSR pair arrays every kernel takes.

The pair arrays are (centre i, neighbour j, r_ij = r_j − r_i + shift) for every j within
``cutoff`` of i, periodic images included, sorted by i.  Building is linear in the number
of atoms (ASE's binned ``neighbor_list``), handles open, periodic and mixed boundary
conditions, cells smaller than the cutoff and skewed cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import StructureError


@dataclass(frozen=True)
class NeighbourList:
    """CSR neighbour list.  ``offsets[i]:offsets[i+1]`` are the pairs of centre i."""

    n_atoms: int
    offsets: np.ndarray  # int64 (n_atoms + 1,)
    i: np.ndarray  # int64 (n_pairs,)
    j: np.ndarray  # int64 (n_pairs,)
    rij: np.ndarray  # float64 (n_pairs, 3)

    @property
    def n_pairs(self) -> int:
        return len(self.j)


def species_indices(atoms, elements) -> np.ndarray:
    """Map chemical symbols to the model's species indices; unknown elements are an error
    naming the first offending atom."""
    index = {e: k for k, e in enumerate(elements)}
    syms = atoms.get_chemical_symbols()
    out = np.empty(len(syms), dtype=np.int32)
    for a, s in enumerate(syms):
        k = index.get(s)
        if k is None:
            raise StructureError(
                f"atom {a} is {s}, which this model does not describe (model elements: {', '.join(elements)})"
            )
        out[a] = k
    return out


def check_structure(atoms) -> None:
    """Reject structures no kernel should see, naming the atom or the problem."""
    pos = np.asarray(atoms.positions, dtype=float)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise StructureError("positions must have shape (n_atoms, 3)")
    bad = ~np.isfinite(pos).all(axis=1)
    if bad.any():
        a = int(np.flatnonzero(bad)[0])
        raise StructureError(f"atom {a} has a non-finite position {pos[a].tolist()}")
    cell = np.asarray(atoms.cell.array, dtype=float)
    if not np.isfinite(cell).all():
        raise StructureError("the cell has non-finite entries")
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if pbc.any():
        sub = cell[pbc]
        if np.linalg.matrix_rank(sub) < pbc.sum() or np.any(np.linalg.norm(sub, axis=1) < 1e-8):
            raise StructureError("periodic directions need non-zero, linearly independent cell vectors")
        if pbc.all() and abs(np.linalg.det(cell)) < 1e-8:
            raise StructureError("the periodic cell has zero volume")


def build_neighbours(atoms, cutoff: float) -> NeighbourList:
    """All pairs within ``cutoff`` (Å), sorted by centre."""
    from ase.neighborlist import neighbor_list

    check_structure(atoms)
    n = len(atoms)
    if n == 0:
        z = np.zeros(0, dtype=np.int64)
        return NeighbourList(0, np.zeros(1, dtype=np.int64), z, z, np.zeros((0, 3)))
    i, j, D = neighbor_list("ijD", atoms, float(cutoff), self_interaction=False)
    order = np.argsort(i, kind="stable")
    i = np.ascontiguousarray(i[order], dtype=np.int64)
    j = np.ascontiguousarray(j[order], dtype=np.int64)
    D = np.ascontiguousarray(D[order], dtype=np.float64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(i, minlength=n), out=offsets[1:])
    r = np.sqrt(np.einsum("ij,ij->i", D, D))
    if len(r) and r.min() < 1e-8:
        k = int(np.argmin(r))
        raise StructureError(f"atoms {int(i[k])} and {int(j[k])} overlap (distance {r[k]:.3g} Å)")
    return NeighbourList(n, offsets, i, j, D)


def scatter_forces_virial(nl: NeighbourList, dEdr: np.ndarray):
    """Forces F_k = −∂E/∂r_k and the virial derivative W_ab = Σ_pairs dE/dr_ij,a · r_ij,b."""
    n = nl.n_atoms
    F = np.zeros((n, 3))
    for c in range(3):
        F[:, c] = np.bincount(nl.i, weights=dEdr[:, c], minlength=n) - np.bincount(
            nl.j, weights=dEdr[:, c], minlength=n
        )
    W = dEdr.T @ nl.rij
    return F, W
