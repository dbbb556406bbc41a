"""Generated basis kernels: the design-matrix rows of a lowered basis, in C.

A *basis kernel* evaluates, for one structure, the derivatives of the total energy, forces
and virial with respect to every linear parameter θ_p of a
:class:`~acegen.basis.CoupledBasis` (many-body functions, then the pair basis, the order of
``CoupledBasis.split_params``)::

    energy[p]          = Σ_i B_p(i)                                  (Eref not included)
    forces[a, x, p]    = −∂ energy[p] / ∂r_a,x
    virial[x, y, p]    = −Σ_pairs ∂ energy[p] / ∂r_ij,x · r_ij,y     (not symmetrised)

so that E − ΣE0 = energy·θ, F = forces·θ and V = virial·θ = −σΩ (docs/fitting.md).

Pipeline: :func:`acegen.backends.common.lower_basis` (sparse tables: monomials, a
(monomial × parameter) coefficient CSR and the Jacobian pattern ∂B/∂A) → ``templates/c/
basis.c.j2`` → the kernel cache (:func:`acegen.jit.cache.build_library`) → :class:`BasisKernel`
(cffi).  :class:`KernelBasisEvaluator` wraps a kernel as the ``basis_evaluator(atoms)`` that
:func:`acegen.fit.data.assemble` takes.
"""

from __future__ import annotations

from pathlib import Path

import cffi
import numpy as np

from ..backends.c.printer import slp_body
from ..backends.common import R_MIN, STATUS_INDEX_KIND, BasisTables, Status, c_identifier, lower_basis, render
from ..errors import CompileError, StructureError
from ..jit.cache import build_library
from ..jit.load import index_array, raise_for_status
from ..jit.toolchain import detect

__all__ = ["BASIS_ABI_VERSION", "BasisKernel", "KernelBasisEvaluator", "basis_cdef", "compile_basis", "emit_basis_c"]

#: Version of the basis-kernel interface (``acegen_<name>_basis_compute`` / ``_basis_info``).
BASIS_ABI_VERSION = 1


def basis_cdef(name: str, api: str = "") -> str:
    """C declarations of the two exported functions of basis kernel ``name`` (``api`` is put
    in front of each: ``"ACEGEN_API "`` in the generated source, nothing for cffi)."""
    name = c_identifier(name)
    return (
        f"{api}int acegen_{name}_basis_compute(int64_t n_centres, const int32_t *species, const int64_t *offsets,\n"
        "    const int32_t *nb_species, const int64_t *nb_index, const double *rij, int64_t n_atoms, double *energy,\n"
        "    double *forces, double *virial, int nthreads, int64_t *err_index);\n"
        f"{api}int acegen_{name}_basis_info(int32_t *abi_version, int32_t *n_species, int64_t *n_params,\n"
        "    int32_t *openmp, const double **rcut, const char **signature);\n"
    )


def _context(t: BasisTables, name: str) -> dict:
    species = []
    used: set[tuple[int, int]] = set()
    for s in t.species:
        bonds = []
        for b in s.bonds:
            used.add((b.zi, b.zj))
            bonds.append({"zj": b.zj, "rcut": b.rcut, "nfunc": b.nfunc, "n_chan": b.n_channels, "channels": b.channels,
                          "n_rows": int(b.rows.size), "rows": b.rows, "row_ptr": b.row_ptr})
        orders = [{"order": o.order, "n_mono": o.n_monomials, "nnz": o.nnz, "monomials": o.monomials,
                   "coef_ptr": o.coef_ptr, "coef_row": o.coef_row, "coef_val": o.coef_val, "coef_slot": o.coef_slot}
                  for o in s.orders if o.n_monomials]
        species.append({"zi": s.zi, "n_A": s.n_A, "n_rows": s.n_rows, "n_slots": s.n_slots, "columns": s.columns,
                        "slot_col": s.slot_col, "bonds": bonds, "orders": orders})
    radials = []
    for zi, zj in sorted(used):
        blk = t.radial[(zi, zj)]
        radials.append({"zi": zi, "zj": zj, "nfunc": blk.nfunc, "body": slp_body(blk.slp, ["r"], "out")})
    return {
        "name": name,
        "signature": t.signature,
        "abi_version": BASIS_ABI_VERSION,
        "r_min": R_MIN,
        "status": [(s.name, int(s), STATUS_INDEX_KIND.get(s, "none")) for s in Status],
        "prototypes": basis_cdef(name, "ACEGEN_API "),
        "n_species": t.n_species,
        "n_params": t.n_params,
        "n_y": t.n_y,
        "nfunc_max": t.nfunc_max,
        "n_A_max": t.n_A_max,
        "n_rows_max": t.n_rows_max,
        "n_slots_max": t.n_slots_max,
        "rcut": t.rcut,
        "angular_body": slp_body(t.angular, ["x", "y", "z"], "out"),
        "cartesian": t.angular_kind == "cartesian",
        "radials": radials,
        "species": species,
    }


def emit_basis_c(tables: BasisTables, name: str = "ace") -> dict[str, str]:
    """The generated source ``{"acegen_<name>_basis.c": text}`` of a lowered basis."""
    name = c_identifier(name)
    return {f"acegen_{name}_basis.c": render("c/basis.c.j2", **_context(tables, name))}


class BasisKernel:
    """A loaded basis kernel (C interface: the header comment of ``templates/c/basis.c.j2``).

    The library must report the expected interface version, number of species and
    parameters, cutoffs and basis signature, else :class:`~acegen.errors.CompileError`.
    """

    target = "c"

    def __init__(self, path: Path, name: str, *, n_species: int, n_params: int, rcut: np.ndarray,
                 signature: str) -> None:
        self.path = Path(path)
        self.name = name
        self.ffi = cffi.FFI()
        self.ffi.cdef(basis_cdef(name))
        try:
            self.lib = self.ffi.dlopen(str(self.path))
            self._compute = getattr(self.lib, f"acegen_{name}_basis_compute")
            info = getattr(self.lib, f"acegen_{name}_basis_info")
        except (OSError, AttributeError) as exc:
            raise CompileError(f"cannot load basis kernel library {self.path}: {exc}") from exc
        abi, nsp, npar, omp = (self.ffi.new(t) for t in ("int32_t *", "int32_t *", "int64_t *", "int32_t *"))
        rc_ptr, sig_ptr = self.ffi.new("const double **"), self.ffi.new("const char **")
        info(abi, nsp, npar, omp, rc_ptr, sig_ptr)
        if abi[0] != BASIS_ABI_VERSION:
            raise CompileError(f"{self.path}: basis kernel interface version {abi[0]}, expected {BASIS_ABI_VERSION}")
        if nsp[0] != n_species or npar[0] != n_params:
            raise CompileError(f"{self.path}: basis kernel has {nsp[0]} species and {npar[0]} parameters, "
                               f"expected {n_species} and {n_params}")
        lib_rcut = np.frombuffer(self.ffi.buffer(rc_ptr[0], 8 * n_species * n_species), dtype=np.float64)
        if not np.array_equal(lib_rcut.reshape(n_species, n_species), np.asarray(rcut, dtype=float)):
            raise CompileError(f"{self.path}: basis kernel cutoffs do not match the basis")
        if self.ffi.string(sig_ptr[0]).decode("ascii") != signature:
            raise CompileError(f"{self.path}: basis kernel was generated from another basis (signature mismatch)")
        self.n_species = n_species
        self.n_params = n_params
        self.rcut = np.asarray(rcut, dtype=float).copy()
        self.signature = signature
        self.openmp = bool(omp[0])

    def __repr__(self) -> str:
        return (f"BasisKernel({self.name!r}, species={self.n_species}, params={self.n_params}, "
                f"openmp={self.openmp}, path={str(self.path)!r})")

    def compute(self, species, offsets, nb_species, nb_index, rij, n_atoms: int, *, forces: bool = True,
                virial: bool = True, nthreads: int = 1) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """``(energy (P,), forces (n_atoms, 3, P) or None, virial (3, 3, P) or None)`` for the
        neighbour CSR (``species``, ``offsets``, ``nb_species``, ``rij`` as for
        :meth:`acegen.jit.load.CompiledKernel.compute`; ``nb_index`` the atom index of each
        neighbour, in ``[0, n_atoms)``).  ``nthreads``: 1 serial, > 1 OpenMP threads, <= 0 the
        OpenMP default.  Raises StructureError naming the atom / pair."""
        species = index_array(species, np.int32, "species")
        offsets = index_array(offsets, np.int64, "offsets")
        nb_species = index_array(nb_species, np.int32, "nb_species")
        nb_index = index_array(nb_index, np.int64, "nb_index")
        rij = np.ascontiguousarray(rij, dtype=np.float64)
        n, n_pairs = species.shape[0], nb_species.shape[0]
        n_atoms = int(n_atoms)
        if rij.shape != (n_pairs, 3) or nb_index.shape != (n_pairs,):
            raise StructureError(f"rij must have shape ({n_pairs}, 3) and nb_index ({n_pairs},) to match nb_species, "
                                 f"got {rij.shape} and {nb_index.shape}")
        if offsets.shape != (n + 1,) or offsets[0] != 0 or offsets[-1] != n_pairs:
            raise StructureError(f"offsets must have n_centres + 1 = {n + 1} entries from 0 to n_pairs = {n_pairs}")
        if n_atoms < n:
            raise StructureError(f"n_atoms = {n_atoms} is smaller than the number of centres {n}")
        bad = np.flatnonzero((nb_index < 0) | (nb_index >= n_atoms))
        if bad.size:
            raise StructureError(f"pair {bad[0]}: neighbour index {nb_index[bad[0]]} outside [0, {n_atoms})")
        if isinstance(nthreads, bool) or not isinstance(nthreads, (int, np.integer)):
            raise TypeError("nthreads must be an integer")
        P = self.n_params
        e = np.empty(P)
        f = np.empty((n_atoms, 3, P)) if forces else None
        v = np.empty((3, 3, P)) if virial else None
        ffi = self.ffi
        err = ffi.new("int64_t *")
        out = lambda a: ffi.NULL if a is None else ffi.from_buffer("double[]", a, require_writable=True)  # noqa: E731
        rc = self._compute(
            n, ffi.from_buffer("int32_t[]", species), ffi.from_buffer("int64_t[]", offsets),
            ffi.from_buffer("int32_t[]", nb_species), ffi.from_buffer("int64_t[]", nb_index),
            ffi.from_buffer("double[]", rij), n_atoms, out(e), out(f), out(v), int(nthreads), err,
        )
        if rc != Status.OK:
            raise_for_status(f"basis {self.name}", self.n_species, rc, int(err[0]), species, offsets, nb_species, rij)
        return e, f, v


def compile_basis(basis, *, name: str = "ace", openmp: bool = True, march_native: bool = False) -> BasisKernel:
    """Lower, generate, compile (through the kernel cache) and load the basis kernel of a
    :class:`~acegen.basis.CoupledBasis`.  A cached library that fails to load or to verify is
    rebuilt once."""
    tables = lower_basis(basis)
    sources = emit_basis_c(tables, name)
    toolchain = detect()
    flags = toolchain.flags(openmp=openmp, march_native=march_native)
    meta = {"n_species": tables.n_species, "n_params": tables.n_params, "rcut": tables.rcut,
            "signature": tables.signature}
    path = build_library(sources, toolchain, flags)
    try:
        return BasisKernel(path, name, **meta)
    except CompileError:
        path = build_library(sources, toolchain, flags, force=True)
        return BasisKernel(path, name, **meta)


class KernelBasisEvaluator:
    """``evaluator(atoms) -> {"energy": (P,), "forces": (n, 3, P), "virial": (3, 3, P)}`` (the
    contract of :func:`acegen.fit.data.assemble`) from a :class:`BasisKernel`: species
    indices and the neighbour list (within the largest cutoff) of each structure, then one
    kernel call.  ``forces`` / ``virial`` select the outputs; ``nthreads`` goes to the kernel."""

    def __init__(self, kernel: BasisKernel, elements, *, forces: bool = True, virial: bool = True,
                 nthreads: int = 0) -> None:
        self.kernel = kernel
        self.elements = tuple(elements)
        self.forces = bool(forces)
        self.virial = bool(virial)
        self.nthreads = int(nthreads)
        self.rcut = float(np.max(kernel.rcut))

    def __call__(self, atoms) -> dict[str, np.ndarray]:
        from ..runtime.neighbours import build_neighbours, species_indices

        Z = species_indices(atoms, self.elements)
        nl = build_neighbours(atoms, self.rcut)
        e, f, v = self.kernel.compute(Z, nl.offsets, Z[nl.j], nl.j, nl.rij, len(atoms), forces=self.forces,
                                      virial=self.virial, nthreads=self.nthreads)
        out = {"energy": e}
        if f is not None:
            out["forces"] = f
        if v is not None:
            out["virial"] = v
        return out
