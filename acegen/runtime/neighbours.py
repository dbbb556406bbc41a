"""Neighbour lists: ASE ``Atoms`` → the CSR pair arrays every kernel takes.

The pair arrays are (centre i, neighbour j, r_ij = r_j − r_i + n·cell) for every j within
``cutoff`` of i, periodic images included (n integer, non-zero only along periodic
directions; an atom is not its own neighbour at n = 0), sorted by i.  Open, periodic and mixed
boundary conditions, cells smaller than the cutoff and skewed cells are handled.

Implementation: a cell list in C, compiled once through the kernel cache
(:func:`acegen.jit.cache.build_library`) and loaded with cffi.  Atoms are wrapped into the
cell along periodic directions; periodic images ("ghosts") are generated for every integer
shift n with |n_d| ≤ ceil(cutoff / h_d) (h_d the distance between the cell faces normal to
direction d) whose position lies within ``cutoff`` of the wrapped cell (a slab test in
fractional coordinates); atoms and ghosts are binned on a Cartesian grid of bins at least
``cutoff / 2`` wide and every atom scans the 5 × 5 × 5 bins around its own.  The cost is linear in the
number of atoms.  Each pair vector is computed as ``(r_j − r_i) + n·cell`` from the original
positions.  The centre-sorted output lists, per centre, its neighbours in bin order.
Without a C compiler, ASE's ``neighbor_list`` is used instead (same pairs, other order).

:func:`scatter_forces_virial` turns dE_i/dr_ij into forces and the virial with the same
compiled library (NumPy ``bincount`` without a compiler).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..errors import StructureError

_C_SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NL_API __attribute__((visibility("default")))

/* Cell list over n atoms (positions pos, wrap shifts T so that pos - T cell lies in the cell
   along periodic directions) and their periodic images with shifts S in [-nimg, nimg]^3
   (nimg[d] = 0 along open directions) that pass the fractional slab test
   -slab[d] <= f_d + S_d < 1 + slab[d] (periodic d).  Pairs (i, j, n = S - T_j + T_i) with
   |pos_j - pos_i + n cell| < rc, excluding i == j at n = 0, in centre order.
   count[i] (n entries) receives the number of pairs of centre i.  If the total is at most
   capacity, iout/jout/rij are filled and closest[0] = the smallest |r_ij|^2, closest[1] =
   its pair index (-1 without pairs).  Returns the total number of pairs, or -1 on allocation
   failure.  inv: inverse cell (rows), for fractional coordinates f = x inv. */
NL_API int64_t acegen_cell_list(int64_t n, const double *pos, const int64_t *T, const double *cell,
                                const double *inv, const int32_t *pbc, const int64_t *nimg,
                                const double *slab, double rc, int64_t capacity, int64_t *count,
                                int64_t *iout, int64_t *jout, double *rij, double *closest)
{
    closest[0] = INFINITY;
    closest[1] = -1.0;
    int64_t nshift = (2 * nimg[0] + 1) * (2 * nimg[1] + 1) * (2 * nimg[2] + 1);
    /* points: wrapped atoms and their images */
    int64_t cap_pts = n > 0 ? n * 2 + 64 : 64, npts = 0;
    double *P = (double *)malloc((size_t)cap_pts * 3 * sizeof(double));
    int64_t *src = (int64_t *)malloc((size_t)cap_pts * 4 * sizeof(int64_t)); /* atom, S0, S1, S2 */
    int64_t total = -1;
    int64_t *bin_start = NULL, *order = NULL, *pbin = NULL;
    if (P == NULL || src == NULL)
        goto done;
    for (int64_t a = 0; a < n; ++a) {
        double w[3], f[3];
        for (int c = 0; c < 3; ++c)
            w[c] = pos[3 * a + c] - (T[3 * a] * cell[c] + T[3 * a + 1] * cell[3 + c] + T[3 * a + 2] * cell[6 + c]);
        for (int d = 0; d < 3; ++d)
            f[d] = w[0] * inv[d] + w[1] * inv[3 + d] + w[2] * inv[6 + d];
        for (int64_t s = 0; s < nshift; ++s) {
            int64_t S[3];
            S[0] = s % (2 * nimg[0] + 1) - nimg[0];
            S[1] = (s / (2 * nimg[0] + 1)) % (2 * nimg[1] + 1) - nimg[1];
            S[2] = s / ((2 * nimg[0] + 1) * (2 * nimg[1] + 1)) - nimg[2];
            int keep = 1;
            for (int d = 0; d < 3 && keep; ++d)
                if (pbc[d] && S[d] != 0) {
                    const double g = f[d] + (double)S[d];
                    keep = g >= -slab[d] && g < 1.0 + slab[d];
                }
            if (!keep)
                continue;
            if (npts == cap_pts) {
                cap_pts *= 2;
                double *P2 = (double *)realloc(P, (size_t)cap_pts * 3 * sizeof(double));
                if (P2 == NULL)
                    goto done;
                P = P2;
                int64_t *s2 = (int64_t *)realloc(src, (size_t)cap_pts * 4 * sizeof(int64_t));
                if (s2 == NULL)
                    goto done;
                src = s2;
            }
            for (int c = 0; c < 3; ++c)
                P[3 * npts + c] = w[c] + S[0] * cell[c] + S[1] * cell[3 + c] + S[2] * cell[6 + c];
            src[4 * npts] = a;
            src[4 * npts + 1] = S[0];
            src[4 * npts + 2] = S[1];
            src[4 * npts + 3] = S[2];
            ++npts;
        }
    }
    /* Cartesian bins at least rc / 2 wide over the bounding box of all points */
    double lo[3] = {0.0, 0.0, 0.0}, hi[3] = {0.0, 0.0, 0.0}, width[3];
    int64_t nb[3];
    for (int c = 0; c < 3; ++c) {
        lo[c] = npts ? P[c] : 0.0;
        hi[c] = lo[c];
    }
    for (int64_t p = 0; p < npts; ++p)
        for (int c = 0; c < 3; ++c) {
            if (P[3 * p + c] < lo[c])
                lo[c] = P[3 * p + c];
            if (P[3 * p + c] > hi[c])
                hi[c] = P[3 * p + c];
        }
    for (int c = 0; c < 3; ++c) {
        const double nbc = floor(2.0 * (hi[c] - lo[c]) / rc);
        nb[c] = nbc < 1.0 ? 1 : (nbc > 1e6 ? 1000000 : (int64_t)nbc);
    }
    /* at most about 4 bins per point (sparse clusters): coarsen the finest direction */
    while (nb[0] * nb[1] * nb[2] > 4 * npts + 64) {
        int c = nb[0] >= nb[1] && nb[0] >= nb[2] ? 0 : (nb[1] >= nb[2] ? 1 : 2);
        nb[c] = (nb[c] + 1) / 2;
    }
    for (int c = 0; c < 3; ++c) {
        const double span = hi[c] - lo[c];
        width[c] = span > 0.0 ? span / (double)nb[c] : 1.0;
    }
    const int64_t nbins = nb[0] * nb[1] * nb[2];
    bin_start = (int64_t *)calloc((size_t)nbins + 1, sizeof(int64_t));
    order = (int64_t *)malloc((size_t)(npts > 0 ? npts : 1) * sizeof(int64_t));
    pbin = (int64_t *)malloc((size_t)(npts > 0 ? npts : 1) * sizeof(int64_t));
    if (bin_start == NULL || order == NULL || pbin == NULL)
        goto done;
    for (int64_t p = 0; p < npts; ++p) {
        int64_t b[3];
        for (int c = 0; c < 3; ++c) {
            b[c] = (int64_t)((P[3 * p + c] - lo[c]) / width[c]);
            if (b[c] < 0)
                b[c] = 0;
            if (b[c] >= nb[c])
                b[c] = nb[c] - 1;
        }
        pbin[p] = (b[2] * nb[1] + b[1]) * nb[0] + b[0];
        bin_start[pbin[p] + 1]++;
    }
    for (int64_t b = 0; b < nbins; ++b)
        bin_start[b + 1] += bin_start[b];
    {
        int64_t *fill = (int64_t *)calloc((size_t)nbins, sizeof(int64_t));
        if (fill == NULL)
            goto done;
        for (int64_t p = 0; p < npts; ++p)
            order[bin_start[pbin[p]] + fill[pbin[p]]++] = p;
        free(fill);
    }
    /* points and their sources in bin order (contiguous scans) */
    {
        double *Ps = (double *)malloc((size_t)(npts > 0 ? npts : 1) * 3 * sizeof(double));
        int64_t *ss = (int64_t *)malloc((size_t)(npts > 0 ? npts : 1) * 4 * sizeof(int64_t));
        if (Ps == NULL || ss == NULL) {
            free(Ps);
            free(ss);
            goto done;
        }
        for (int64_t e = 0; e < npts; ++e) {
            const int64_t p = order[e];
            for (int c = 0; c < 3; ++c)
                Ps[3 * e + c] = P[3 * p + c];
            for (int c = 0; c < 4; ++c)
                ss[4 * e + c] = src[4 * p + c];
            order[e] = pbin[p]; /* order now holds the bin of sorted point e */
        }
        free(P);
        free(src);
        P = Ps;
        src = ss;
        int64_t *tmp = pbin;
        pbin = order;
        order = tmp;
    }
    /* the unshifted copy of every atom, in atom order */
    {
        int64_t *home = (int64_t *)malloc((size_t)(n > 0 ? n : 1) * sizeof(int64_t));
        if (home == NULL)
            goto done;
        for (int64_t p = 0; p < npts; ++p)
            if (src[4 * p + 1] == 0 && src[4 * p + 2] == 0 && src[4 * p + 3] == 0)
                home[src[4 * p]] = p;
        const double rc2 = rc * rc;
        int64_t k = 0;
        for (int64_t i = 0; i < n; ++i) {
            const int64_t pi = home[i];
            const int64_t b0 = pbin[pi] % nb[0], b1 = (pbin[pi] / nb[0]) % nb[1], b2 = pbin[pi] / (nb[0] * nb[1]);
            int64_t ci = 0;
            for (int64_t z = b2 - 2; z <= b2 + 2; ++z) {
                if (z < 0 || z >= nb[2])
                    continue;
                for (int64_t y = b1 - 2; y <= b1 + 2; ++y) {
                    if (y < 0 || y >= nb[1])
                        continue;
                    for (int64_t x = b0 - 2; x <= b0 + 2; ++x) {
                        if (x < 0 || x >= nb[0])
                            continue;
                        const int64_t b = (z * nb[1] + y) * nb[0] + x;
                        for (int64_t pj = bin_start[b]; pj < bin_start[b + 1]; ++pj) {
                            if (pj == pi)
                                continue;
                            const double dx = P[3 * pj] - P[3 * pi], dy = P[3 * pj + 1] - P[3 * pi + 1],
                                         dz = P[3 * pj + 2] - P[3 * pi + 2];
                            if (dx * dx + dy * dy + dz * dz >= rc2)
                                continue;
                            const int64_t j = src[4 * pj];
                            int64_t m[3];
                            for (int d = 0; d < 3; ++d)
                                m[d] = src[4 * pj + 1 + d] - T[3 * j + d] + T[3 * i + d];
                            double v[3];
                            for (int c = 0; c < 3; ++c)
                                v[c] = (pos[3 * j + c] - pos[3 * i + c]) +
                                       (m[0] * cell[c] + m[1] * cell[3 + c] + m[2] * cell[6 + c]);
                            const double r2 = v[0] * v[0] + v[1] * v[1] + v[2] * v[2];
                            if (!(r2 < rc2))
                                continue;
                            if (k < capacity) {
                                if (r2 < closest[0]) {
                                    closest[0] = r2;
                                    closest[1] = (double)k;
                                }
                                iout[k] = i;
                                jout[k] = j;
                                rij[3 * k] = v[0];
                                rij[3 * k + 1] = v[1];
                                rij[3 * k + 2] = v[2];
                            }
                            ++k;
                            ++ci;
                        }
                    }
                }
            }
            count[i] = ci;
        }
        free(home);
        total = k;
    }
done:
    free(P);
    free(src);
    free(bin_start);
    free(order);
    free(pbin);
    return total;
}

/* F[i] += g_k, F[j] -= g_k per pair (g = dE/dr_ij, so F = -dE/dr_a); W[a][b] = sum_k g_k,a r_k,b */
NL_API void acegen_scatter(int64_t n_pairs, const int64_t *ci, const int64_t *cj, const double *g,
                           const double *rij, double *F, double *W)
{
    for (int c = 0; c < 9; ++c)
        W[c] = 0.0;
    for (int64_t k = 0; k < n_pairs; ++k) {
        const double *gk = g + 3 * k, *rk = rij + 3 * k;
        for (int a = 0; a < 3; ++a) {
            F[3 * ci[k] + a] += gk[a];
            F[3 * cj[k] + a] -= gk[a];
            for (int b = 0; b < 3; ++b)
                W[3 * a + b] += gk[a] * rk[b];
        }
    }
}
"""

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
        path = build_library({"acegen_neighbours.c": _C_SOURCE}, toolchain, toolchain.flags(openmp=False))
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


def build_neighbours(atoms, cutoff: float) -> NeighbourList:
    """All pairs within ``cutoff`` (Å), sorted by centre."""
    check_structure(atoms)
    check_images(atoms, cutoff)
    n = len(atoms)
    if n == 0:
        z = np.zeros(0, dtype=np.int64)
        return NeighbourList(0, np.zeros(1, dtype=np.int64), z, z, np.zeros((0, 3)))
    nat = _native()
    offsets = np.zeros(n + 1, dtype=np.int64)
    if nat is not None:
        count, i, j, D, (r2min, kmin) = _native_pairs(nat, atoms, cutoff)
        np.cumsum(count, out=offsets[1:])
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
