"""Neighbour lists: ASE ``Atoms`` → the CSR pair arrays every kernel takes.

The pair arrays are (centre i, neighbour j, r_ij = r_j − r_i + n·cell) for every j within
``cutoff`` of i, periodic images included (n integer, non-zero only along periodic
directions; an atom is not its own neighbour at n = 0), sorted by i.  Open, periodic and mixed
boundary conditions, cells smaller than the cutoff and skewed cells are handled.

Implementations (``build_neighbours(..., backend=...)``; :func:`neighbour_backend` says which
one runs by default):

* ``"c"`` (the default when a C compiler is available): a cell list in C (``neighbours.c``,
  shipped next to this module), compiled once through the kernel cache
  (:func:`acegen.jit.cache.build_library`) and loaded with cffi;
* ``"vesin"`` (the default without a C compiler): the compiled cell list of the ``vesin``
  package (a wheel: nothing is compiled at run time).  Measured
  against ``"c"`` (``benchmarks/neighbours.py``) it is 3–5× slower on 4000 fcc Cu atoms
  with a 5.5 Å cutoff and somewhat faster on one-atom cells, so it is the fallback;
* ``"ase"``: ASE's ``neighbor_list`` (pure Python and NumPy), used only when neither is
  available.

All give the same pairs and the same vectors (up to the order of neighbours within a centre).

The C cell list: atoms are wrapped into the
cell along periodic directions; periodic images ("ghosts") are generated for every integer
shift n with |n_d| ≤ ceil(cutoff / h_d) (h_d the distance between the cell faces normal to
direction d) whose position lies within ``cutoff`` of the wrapped cell (a slab test in
fractional coordinates); atoms and ghosts are binned on a Cartesian grid of bins at least
``cutoff / 2`` wide and every atom scans the 5 × 5 × 5 bins around its own.  The cost is linear in the
number of atoms.  Each pair vector is computed as ``(r_j − r_i) + n·cell`` from the original
positions.  The centre-sorted output lists, per centre, its neighbours in bin order.

:func:`scatter_forces_virial` turns dE_i/dr_ij into forces and the virial with the same
compiled library (NumPy ``bincount`` without a compiler).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.resources import files

import numpy as np

from ..errors import StructureError

_CDEF = """
int64_t acegen_cell_list(int64_t n, const double *pos, const int64_t *T, const double *cell,
                         const double *inv, const int32_t *pbc, const int64_t *nimg,
                         const double *slab, double rc, int64_t capacity, int64_t *count,
                         int64_t *iout, int64_t *jout, double *rij, double *closest);
void acegen_scatter(int64_t n_pairs, const int64_t *ci, const int64_t *cj, const double *g,
                    const double *rij, double *F, double *W);
"""


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
    """Map chemical symbols to the model's species indices (a table lookup on the atomic
    numbers, called every step); unknown elements are an error naming the first offending atom."""
    from ase.data import atomic_numbers, chemical_symbols

    table = np.full(len(chemical_symbols), -1, dtype=np.int32)
    for k, e in enumerate(elements):
        table[atomic_numbers[e]] = k
    out = table[np.asarray(atoms.numbers, dtype=np.int64)]
    bad = np.flatnonzero(out < 0)
    if len(bad):
        a = int(bad[0])
        raise StructureError(
            f"atom {a} is {chemical_symbols[atoms.numbers[a]]}, which this model does not describe "
            f"(model elements: {', '.join(elements)})"
        )
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


class _Native:
    """The compiled cell list and scatter (cffi over a library from the kernel cache)."""

    def __init__(self) -> None:
        import cffi

        from ..jit.cache import build_library
        from ..jit.toolchain import detect

        toolchain = detect()
        source = files(__package__).joinpath("neighbours.c").read_text(encoding="utf-8")
        path = build_library({"acegen_neighbours.c": source}, toolchain, toolchain.flags(openmp=False))
        self.ffi = cffi.FFI()
        self.ffi.cdef(_CDEF)
        self.lib = self.ffi.dlopen(str(path))

    def ptr(self, ctype: str, a: np.ndarray):
        return self.ffi.from_buffer(ctype, a, require_writable=a.flags.writeable)


@functools.lru_cache(maxsize=1)
def _native() -> _Native | None:
    """The compiled helpers, or None without a working C compiler (then NumPy/ASE are used)."""
    from ..errors import CompileError
    from ..jit.toolchain import find_c_compiler

    if find_c_compiler(required=False) is None:
        return None
    try:
        return _Native()
    except (CompileError, OSError):
        return None


def _full_cell(atoms) -> tuple[np.ndarray, np.ndarray]:
    """(cell, pbc) with the rows of open directions replaced by an orthonormal basis of the
    complement of the periodic rows, so the matrix is invertible.  Open directions are never
    wrapped or shifted; any invertible completion gives correct image counts and slab tests."""
    cell = np.array(atoms.cell.array, dtype=float)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if not pbc.all():
        periodic = cell[pbc]
        if len(periodic):
            q = np.linalg.qr(periodic.T, mode="complete")[0]
            complement = q[:, len(periodic):].T
        else:
            complement = np.eye(3)
        cell[~pbc] = complement
    return cell, pbc


MAX_IMAGES_PER_ATOM = 100_000
"""At most this many periodic copies of each atom (∏_d (2·ceil(cutoff / h_d) + 1)).  A cubic
cell of 1 Å with a 5.5 Å cutoff needs 13³ = 2197; beyond the limit the cell is degenerate
for the cutoff (a near-flat cell) and listing its images would take minutes and gigabytes."""


def periodic_images(cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """(nimg, slab) per direction: the image range ``|n_d| ≤ nimg[d]`` and the fractional slab
    half-width ``cutoff / h_d`` (h_d the distance between the cell faces normal to d; zero along
    open directions).  ``cell`` must be invertible (see :func:`_full_cell`).  Raises
    :class:`StructureError` naming the thinnest axis when the cell needs more than
    :data:`MAX_IMAGES_PER_ATOM` images per atom; nothing is allocated before the check."""
    nimg = np.zeros(3, dtype=np.int64)
    slab = np.zeros(3)
    heights = np.full(3, np.inf)
    vol = abs(np.linalg.det(cell))
    for d in range(3):
        if pbc[d]:
            heights[d] = vol / np.linalg.norm(np.cross(cell[(d + 1) % 3], cell[(d + 2) % 3]))
            slab[d] = cutoff / heights[d] + 1e-9
    # in floating point: a near-flat cell would overflow an integer image count
    images = float(np.prod(2.0 * np.ceil(slab) + 1.0))
    if not images <= MAX_IMAGES_PER_ATOM:
        d = int(np.argmin(heights))
        raise StructureError(
            f"cell axis {d} ({'abc'[d]}) is only {heights[d]:.3g} Å from face to face: a cutoff of "
            f"{cutoff:g} Å needs {images:.3g} periodic images per atom (at most {MAX_IMAGES_PER_ATOM}); "
            "the periodic cell is degenerate for this cutoff"
        )
    nimg[:] = np.ceil(slab).astype(np.int64)
    return nimg, slab


def check_images(atoms, cutoff: float) -> None:
    """Refuse cells that need too many periodic images (see :func:`periodic_images`)."""
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if pbc.any():
        cell, pbc = _full_cell(atoms)
        periodic_images(cell, pbc, cutoff)


def _native_pairs(nat: _Native, atoms, cutoff: float):
    """(count per centre, i, j, rij, (min r², its pair)) from the compiled cell list."""
    pos = np.ascontiguousarray(atoms.positions, dtype=np.float64)
    n = len(pos)
    cell, pbc = _full_cell(atoms)
    inv = np.ascontiguousarray(np.linalg.inv(cell))
    T = np.ascontiguousarray(np.where(pbc[None, :], np.floor(pos @ inv), 0.0).astype(np.int64))
    nimg, slab = periodic_images(cell, pbc, cutoff)
    vol = abs(np.linalg.det(cell))
    pbc32 = pbc.astype(np.int32)
    count = np.zeros(n, dtype=np.int64)
    closest = np.zeros(2)
    density = n / vol if pbc.all() else 0.0
    capacity = max(int(1.2 * n * 4.19 * cutoff**3 * density) + 64 if density else 64 * n, 64)
    cellc = np.ascontiguousarray(cell)
    p = nat.ptr
    for _ in range(2):
        i = np.empty(capacity, dtype=np.int64)
        j = np.empty(capacity, dtype=np.int64)
        rij = np.empty((capacity, 3), dtype=np.float64)
        total = nat.lib.acegen_cell_list(
            n, p("double[]", pos), p("int64_t[]", T), p("double[]", cellc), p("double[]", inv),
            p("int32_t[]", pbc32), p("int64_t[]", nimg), p("double[]", slab), float(cutoff), capacity,
            p("int64_t[]", count), p("int64_t[]", i), p("int64_t[]", j), p("double[]", rij), p("double[]", closest),
        )
        if total < 0:
            raise MemoryError("neighbour list: allocation failed")
        if total <= capacity:
            return count, i[:total], j[:total], rij[:total], (float(closest[0]), int(closest[1]))
        capacity = int(total)
    raise AssertionError("neighbour list: capacity retry failed")  # pragma: no cover


@functools.lru_cache(maxsize=1)
def _have_vesin() -> bool:
    try:
        import vesin  # noqa: F401
    except ImportError:
        return False
    return True


BACKENDS = ("c", "vesin", "ase")


def neighbour_backend() -> str:
    """The neighbour list :func:`build_neighbours` uses by default: ``"c"`` with a working C
    compiler, else ``"vesin"``, else ``"ase"``."""
    if _native() is not None:
        return "c"
    return "vesin" if _have_vesin() else "ase"


def _vesin_pairs(atoms, cutoff: float):
    """(i, j, rij) from vesin's cell list (in vesin's order; the caller sorts by centre)."""
    from vesin import NeighborList as VesinList

    cell, pbc = _full_cell(atoms)
    pos = np.ascontiguousarray(atoms.positions, dtype=np.float64)
    i, j, D = VesinList(cutoff=float(cutoff), full_list=True, sorted=False, n_threads=1).compute(
        points=pos, box=cell, periodic=pbc, quantities="ijD"
    )
    return i, j, D


def build_neighbours(atoms, cutoff: float, backend: str | None = None) -> NeighbourList:
    """All pairs within ``cutoff`` (Å), sorted by centre.  ``backend``: ``"c"``, ``"vesin"``
    or ``"ase"`` (None: :func:`neighbour_backend`)."""
    check_structure(atoms)
    check_images(atoms, cutoff)
    if backend is None:
        backend = neighbour_backend()
    elif backend not in BACKENDS:
        raise ValueError(f"unknown neighbour-list backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    n = len(atoms)
    if n == 0:
        z = np.zeros(0, dtype=np.int64)
        return NeighbourList(0, np.zeros(1, dtype=np.int64), z, z, np.zeros((0, 3)))
    offsets = np.zeros(n + 1, dtype=np.int64)
    if backend == "c":
        nat = _native()
        if nat is None:
            from ..errors import CompileError

            raise CompileError("the C neighbour list needs a C compiler; none was found (use backend='vesin')")
        count, i, j, D, (r2min, kmin) = _native_pairs(nat, atoms, cutoff)
        np.cumsum(count, out=offsets[1:])
    else:
        if backend == "vesin":
            i, j, D = _vesin_pairs(atoms, cutoff)
        else:
            from ase.neighborlist import neighbor_list

            i, j, D = neighbor_list("ijD", atoms, float(cutoff), self_interaction=False)
        order = np.argsort(i, kind="stable")
        i = np.ascontiguousarray(i[order], dtype=np.int64)
        j = np.ascontiguousarray(j[order], dtype=np.int64)
        D = np.ascontiguousarray(D[order], dtype=np.float64).reshape(-1, 3)
        np.cumsum(np.bincount(i, minlength=n), out=offsets[1:])
        r2 = np.einsum("ij,ij->i", D, D)
        kmin = int(np.argmin(r2)) if len(r2) else -1
        r2min = float(r2[kmin]) if len(r2) else np.inf
    if kmin >= 0 and r2min < 1e-16:
        raise StructureError(f"atoms {int(i[kmin])} and {int(j[kmin])} overlap (distance {np.sqrt(r2min):.3g} Å)")
    return NeighbourList(n, offsets, i, j, D)


def scatter_forces_virial(nl: NeighbourList, dEdr: np.ndarray):
    """Forces F_k = −∂E/∂r_k and the virial derivative W_ab = Σ_pairs dE/dr_ij,a · r_ij,b."""
    n = nl.n_atoms
    dEdr = np.ascontiguousarray(dEdr, dtype=np.float64).reshape(-1, 3)
    nat = _native()
    if nat is not None and n:
        F = np.zeros((n, 3))
        W = np.zeros((3, 3))
        nat.lib.acegen_scatter(
            nl.n_pairs, nat.ptr("int64_t[]", nl.i), nat.ptr("int64_t[]", nl.j), nat.ptr("double[]", dEdr),
            nat.ptr("double[]", np.ascontiguousarray(nl.rij)), nat.ptr("double[]", F), nat.ptr("double[]", W),
        )
        return F, W
    F = np.zeros((n, 3))
    for c in range(3):
        F[:, c] = np.bincount(nl.i, weights=dEdr[:, c], minlength=n) - np.bincount(
            nl.j, weights=dEdr[:, c], minlength=n
        )
    W = dEdr.T @ nl.rij
    return F, W


def pair_results(atoms, nl: NeighbourList, energies: np.ndarray, dEdr: np.ndarray) -> dict:
    """The calculator results from per-atom energies and per-pair dE_i/dr_ij on ``nl``:
    energy, energies, forces and, for a cell with a volume, stress (ASE's Voigt order);
    a StructureError for a non-finite energy or force."""
    from ..errors import StructureError

    F, W = scatter_forces_virial(nl, dEdr)
    out = {"energy": float(np.sum(energies)), "energies": np.asarray(energies), "forces": F}
    vol = abs(np.linalg.det(atoms.cell.array)) if atoms.cell.rank == 3 else 0.0
    if vol > 1e-10:
        s = 0.5 * (W + W.T) / vol
        out["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
    if not np.isfinite(out["energy"]) or not np.isfinite(F).all():
        raise StructureError("the model produced a non-finite energy or force for this structure")
    return out


def compute_on(kernel, species: np.ndarray, nl: NeighbourList, nthreads: int = 1):
    """``kernel.compute`` on the neighbour list ``nl`` of atoms of species indices ``species``;
    a StructureError naming a pair also names its two atoms."""
    from ..errors import StructureError

    nbs = np.ascontiguousarray(species[nl.j], dtype=np.int32)
    try:
        return kernel.compute(species, nl.offsets, nbs, nl.rij, nthreads=nthreads)
    except StructureError as e:
        if e.pair is None or not 0 <= e.pair < nl.n_pairs:
            raise
        p = e.pair
        raise StructureError(f"{e} (atoms {int(nl.i[p])} and {int(nl.j[p])})", pair=p) from None
