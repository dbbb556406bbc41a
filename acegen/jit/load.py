"""Load a compiled kernel library with cffi (ABI mode) and call it on NumPy arrays.

:class:`CompiledKernel` dlopens the library, checks that it is the expected one (ABI version,
number of species, cutoffs and ModelIR signature, read back through ``acegen_<name>_info``)
and exposes :meth:`CompiledKernel.compute`.  cffi releases the GIL for the duration of the C
call; the kernels are reentrant, so one kernel may be used from several Python threads.
"""

from __future__ import annotations

from pathlib import Path

import cffi
import numpy as np

from ..abi import ABI_VERSION, R_MIN, Status
from ..errors import AcegenError, CompileError, StructureError


def index_array(a: object, dtype: type, what: str) -> np.ndarray:
    """1-D C-contiguous integer array of ``dtype``; values must fit (no silent wrap-around)."""
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise StructureError(f"{what} must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=dtype)
    if arr.dtype.kind not in "iu":
        raise StructureError(f"{what} must be an integer array, got dtype {arr.dtype}")
    info = np.iinfo(dtype)
    if arr.min() < info.min or arr.max() > info.max:
        raise StructureError(f"{what}: values do not fit in {np.dtype(dtype).name}")
    return np.ascontiguousarray(arr, dtype=dtype)


def validate_inputs(
    species: object, offsets: object, nb_species: object, rij: object, nthreads: object
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Check and convert the arguments of a kernel's ``compute`` (shared by every backend).

    Returns (species int32, offsets int64, nb_species int32, rij float64 (n_pairs, 3)), all
    C-contiguous.  Raises StructureError for inconsistent shapes or values and TypeError for a
    non-integer ``nthreads``.
    """
    species = index_array(species, np.int32, "species")
    offsets = index_array(offsets, np.int64, "offsets")
    nb_species = index_array(nb_species, np.int32, "nb_species")
    rij = np.asarray(rij)
    if rij.dtype.kind not in "fiu":
        raise StructureError(f"rij must be a real array, got dtype {rij.dtype}")
    rij = np.ascontiguousarray(rij, dtype=np.float64)
    n = species.shape[0]
    n_pairs = nb_species.shape[0]
    if rij.shape != (n_pairs, 3):
        raise StructureError(f"rij must have shape ({n_pairs}, 3) to match nb_species, got {rij.shape}")
    if offsets.shape != (n + 1,):
        raise StructureError(f"offsets must have n_centres + 1 = {n + 1} entries, got {offsets.shape[0]}")
    if offsets[0] != 0 or offsets[-1] != n_pairs:
        raise StructureError(f"offsets must start at 0 and end at n_pairs = {n_pairs}")
    bad = np.flatnonzero(np.diff(offsets) < 0)
    if bad.size:
        raise StructureError(f"atom {bad[0]}: offsets decrease ({offsets[bad[0]]} -> {offsets[bad[0] + 1]})")
    if isinstance(nthreads, bool) or not isinstance(nthreads, (int, np.integer)):
        raise TypeError("nthreads must be an integer")
    return species, offsets, nb_species, rij


def raise_for_status(
    name: str,
    n_species: int,
    rc: int,
    index: int,
    species: np.ndarray,
    offsets: np.ndarray,
    nb_species: np.ndarray,
    rij: np.ndarray,
) -> None:
    """Raise the Python error for a failing kernel status ``rc`` (see ``Status``).

    ``index`` is the kernel's ``*err_index`` (an atom or a pair, ``STATUS_INDEX_KIND``):
    codes 1-5 become StructureError naming the atom/pair, 6 MemoryError, others AcegenError.
    """
    try:
        status = Status(rc)
    except ValueError:
        raise AcegenError(f"kernel {name} returned unknown status {rc}") from None
    if status in (Status.BAD_NEIGHBOUR_SPECIES, Status.OVERLAP, Status.NONFINITE):
        atom = int(np.searchsorted(offsets, index, side="right") - 1)
        where = f"atom {atom}, pair {index}"
        if status == Status.BAD_NEIGHBOUR_SPECIES:
            msg = f"neighbour species index {nb_species[index]} outside [0, {n_species})"
        elif status == Status.OVERLAP:
            msg = f"overlapping atoms: |r_ij| = {np.linalg.norm(rij[index]):.3g} < {R_MIN:g}"
        else:
            msg = f"non-finite r_ij = {rij[index].tolist()}"
        raise StructureError(f"{where}: {msg}", pair=index)
    if status == Status.BAD_CENTRE_SPECIES:
        raise StructureError(f"atom {index}: species index {species[index]} outside [0, {n_species})")
    if status == Status.BAD_OFFSETS:
        raise StructureError(f"atom {index}: invalid pair offsets")
    if status == Status.NO_MEMORY:
        raise MemoryError(f"kernel {name}: workspace allocation failed at atom {index}")
    raise AcegenError(f"kernel {name} rejected its arguments (status {status.name})")


def check_theta(theta_c: object, theta_nb: object, n: int, n_pairs: int, offsets: np.ndarray):
    """The indicator inputs of ``compute_theta`` as contiguous float64 arrays of n and n_pairs
    values; StructureError for a wrong shape or a non-finite value (naming the atom or pair)."""
    tc = np.ascontiguousarray(np.asarray(theta_c, dtype=np.float64).reshape(-1))
    tn = np.ascontiguousarray(np.asarray(theta_nb, dtype=np.float64).reshape(-1))
    if tc.shape != (n,):
        raise StructureError(f"theta_c must have n_centres = {n} values, got {tc.shape[0]}")
    if tn.shape != (n_pairs,):
        raise StructureError(f"theta_nb must have n_pairs = {n_pairs} values, got {tn.shape[0]}")
    bad = np.flatnonzero(~np.isfinite(tc))
    if bad.size:
        raise StructureError(f"atom {int(bad[0])}: non-finite indicator theta = {tc[bad[0]]}")
    bad = np.flatnonzero(~np.isfinite(tn))
    if bad.size:
        k = int(bad[0])
        atom = int(np.searchsorted(offsets, k, side="right") - 1)
        raise StructureError(f"atom {atom}, pair {k}: non-finite neighbour indicator theta = {tn[k]}", pair=k)
    return tc, tn


def verify_kernel_info(ffi, info, what: str, *, n_species: int, rcut, signature: str):
    """Call a kernel's ``acegen_<name>_info`` and check it describes the expected model
    (ABI version, species count, cutoffs, ModelIR signature).  Returns (rcut, signature,
    openmp); raises CompileError naming ``what`` on any mismatch."""
    abi = ffi.new("int32_t *")
    nsp = ffi.new("int32_t *")
    omp = ffi.new("int32_t *")
    rc_ptr = ffi.new("const double **")
    sig_ptr = ffi.new("const char **")
    info(abi, nsp, omp, rc_ptr, sig_ptr)
    if abi[0] != ABI_VERSION:
        raise CompileError(f"{what}: kernel ABI version {abi[0]}, expected {ABI_VERSION}")
    if nsp[0] != n_species:
        raise CompileError(f"{what}: kernel has {nsp[0]} species, expected {n_species}")
    k_rcut = np.frombuffer(ffi.buffer(rc_ptr[0], 8 * n_species * n_species), dtype=np.float64)
    k_rcut = k_rcut.reshape(n_species, n_species).copy()
    if not np.array_equal(k_rcut, np.asarray(rcut, dtype=float)):
        raise CompileError(f"{what}: kernel cutoffs do not match the model")
    sig = ffi.string(sig_ptr[0]).decode("ascii")
    if sig != signature:
        raise CompileError(f"{what}: kernel was generated from another model (signature mismatch)")
    return k_rcut, sig, bool(omp[0])


class CompiledKernel:
    """A loaded ACE kernel (see ``templates/c/kernel.h.j2`` for the C interface).

    ``name``: the model name (the exported symbols are ``acegen_<name>_compute`` and
    ``acegen_<name>_info``); ``cdef``: their C declarations; ``n_species``, ``rcut``
    ((n_species, n_species), 0 where no radial block) and ``signature`` (ModelIR sha256) are
    what the library must report, else :class:`~acegen.errors.CompileError`.  ``elements``
    (the model's element symbols) is kept for callers (ASE calculator); it never reaches C.
    """

    target = "c"

    def __init__(
        self,
        path: Path,
        name: str,
        cdef: str,
        *,
        n_species: int,
        rcut: np.ndarray,
        signature: str,
        elements: tuple[str, ...] = (),
        out_width: int = 1,
        tables: np.ndarray | Path | None = None,
    ) -> None:
        self.path = Path(path)
        #: the spline-table file a library built to load its tables reads them from, when it
        #: is a file in the kernel cache (recorded by the source index); None otherwise
        self.tables_path: Path | None = None
        #: doubles per centre in the first output: 1 (energies) or, for a projection
        #: variant (ModelIR.projection_ir), the projection row width
        self.out_width = int(out_width)
        self.name = name
        self.cdef = cdef
        self.elements = tuple(elements)
        self.ffi = cffi.FFI()
        self.ffi.cdef(cdef)
        try:
            self.lib = self.ffi.dlopen(str(self.path))
            self._compute = getattr(self.lib, f"acegen_{name}_compute")
            info = getattr(self.lib, f"acegen_{name}_info")
        except (OSError, AttributeError) as exc:
            raise CompileError(f"cannot load kernel library {self.path}: {exc}") from exc
        self.rcut, self.signature, self.openmp = verify_kernel_info(
            self.ffi, info, str(self.path), n_species=n_species, rcut=rcut, signature=signature
        )
        #: a library built with ACEGEN_TABLES_AT_LOAD (its spline tables copied in here)
        self.loads_tables = f"acegen_{name}_load_tables" in cdef
        if self.loads_tables:
            self._load_tables(name, tables)
        self.n_species = n_species
        #: the library exports ``acegen_<name>_compute_theta`` (a kernel with indicator inputs)
        self.theta = f"acegen_{name}_compute_theta" in cdef
        self._compute_theta = getattr(self.lib, f"acegen_{name}_compute_theta") if self.theta else None

    def _load_tables(self, name: str, tables: np.ndarray | Path | None) -> None:
        """Copy the spline tables into a library built with ACEGEN_TABLES_AT_LOAD (from an
        array, or from a file that the caller has verified); CompileError if they are missing,
        unreadable or of the wrong size."""
        if isinstance(tables, (str, Path)):
            self.tables_path = Path(tables)
            try:
                tables = np.fromfile(self.tables_path, dtype="<f8")
            except (OSError, ValueError) as exc:
                raise CompileError(f"cannot read the spline tables {self.tables_path}: {exc}") from exc
        if tables is None:
            raise CompileError(f"kernel library {self.path} loads its spline tables, but none were given")
        data = np.ascontiguousarray(tables, dtype=np.float64)
        rc = getattr(self.lib, f"acegen_{name}_load_tables")(
            self.ffi.cast("const double *", data.ctypes.data), data.size
        )
        if rc != 0:
            raise CompileError(f"kernel library {self.path} rejected its spline tables ({data.size} doubles)")

    @property
    def library_path(self) -> Path:
        """The loaded shared library (in the kernel cache; do not modify it in place)."""
        return self.path

    def __repr__(self) -> str:
        return f"CompiledKernel({self.name!r}, species={self.n_species}, openmp={self.openmp}, path={str(self.path)!r})"

    def compute(
        self,
        species: np.ndarray,
        offsets: np.ndarray,
        nb_species: np.ndarray,
        rij: np.ndarray,
        nthreads: int = 1,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-atom energies (n_centres,) and dE_i/dr_ij (n_pairs, 3); for a projection
        variant (``out_width > 1``) the first output is the (n_centres, out_width) projection
        rows and the second is zero.

        species (n_centres,) and nb_species (n_pairs,): species indices; offsets
        (n_centres + 1,): CSR offsets into the pairs (offsets[0] = 0, non-decreasing,
        offsets[-1] = n_pairs); rij (n_pairs, 3): r_j - r_i.  Integer inputs are converted to
        int32/int64 (values must fit), rij to contiguous float64.  nthreads: 1 serial, > 1
        OpenMP threads, <= 0 the OpenMP default.  Raises StructureError naming the atom/pair.
        """
        species, offsets, nb_species, rij = validate_inputs(species, offsets, nb_species, rij, nthreads)
        n = species.shape[0]
        n_pairs = nb_species.shape[0]
        energies = np.empty(n if self.out_width == 1 else (n, self.out_width), dtype=np.float64)
        dEdr = (np.empty if self.out_width == 1 else np.zeros)((n_pairs, 3), dtype=np.float64)
        err = self.ffi.new("int64_t *")
        ffi = self.ffi
        rc = self._compute(
            n,
            ffi.from_buffer("int32_t[]", species),
            ffi.from_buffer("int64_t[]", offsets),
            ffi.from_buffer("int32_t[]", nb_species),
            ffi.from_buffer("double[]", rij),
            ffi.from_buffer("double[]", energies, require_writable=True),
            ffi.from_buffer("double[]", dEdr, require_writable=True),
            int(nthreads),
            err,
        )
        if rc != Status.OK:
            self._raise(rc, int(err[0]), species, offsets, nb_species, rij)
        return energies, dEdr

    def compute_theta(self, species, offsets, nb_species, rij, theta_c, theta_nb, nthreads: int = 1):
        """A kernel with indicator inputs (a multilayer layer n > 1): per-atom energies
        (n_centres,), dE_i/dr_ij (n_pairs, 3), dE_i/dθ_i (n_centres,) and dE_i/dθ_j (n_pairs,)
        given the centres' indicators ``theta_c`` (n_centres,) and the neighbours' ``theta_nb``
        (n_pairs,), which must be finite (StructureError naming the atom or pair)."""
        if not self.theta:
            raise AcegenError(f"kernel {self.name} takes no indicator inputs (it has no compute_theta)")
        species, offsets, nb_species, rij = validate_inputs(species, offsets, nb_species, rij, nthreads)
        theta_c, theta_nb = check_theta(theta_c, theta_nb, species.shape[0], nb_species.shape[0], offsets)
        n, n_pairs = species.shape[0], nb_species.shape[0]
        energies = np.empty(n, dtype=np.float64)
        dEdr = np.empty((n_pairs, 3), dtype=np.float64)
        dc = np.empty(n, dtype=np.float64)
        dn = np.empty(n_pairs, dtype=np.float64)
        err = self.ffi.new("int64_t *")
        ffi = self.ffi
        rc = self._compute_theta(
            n, ffi.from_buffer("int32_t[]", species), ffi.from_buffer("int64_t[]", offsets),
            ffi.from_buffer("int32_t[]", nb_species), ffi.from_buffer("double[]", rij),
            ffi.from_buffer("double[]", theta_c), ffi.from_buffer("double[]", theta_nb),
            ffi.from_buffer("double[]", energies, require_writable=True),
            ffi.from_buffer("double[]", dEdr, require_writable=True),
            ffi.from_buffer("double[]", dc, require_writable=True),
            ffi.from_buffer("double[]", dn, require_writable=True), int(nthreads), err,
        )
        if rc != Status.OK:
            self._raise(rc, int(err[0]), species, offsets, nb_species, rij)
        return energies, dEdr, dc, dn

    def _raise(
        self, rc: int, index: int, species: np.ndarray, offsets: np.ndarray, nb_species: np.ndarray, rij: np.ndarray
    ) -> None:
        raise_for_status(self.name, self.n_species, rc, index, species, offsets, nb_species, rij)
