"""The LLVM backend: ModelIR -> LLVM IR (Jinja2 templates) -> llvmlite MCJIT, in process.

* :func:`emit_llvm` renders ``acegen_<name>.ll`` (plus ``acegen_<name>.bin``, the spline
  tables as little-endian float64, when the model has any);
* :func:`compile_llvm` parses, optimises (new pass manager, O3) and JIT-compiles that IR for
  the host CPU with llvmlite, through an object cache (:mod:`acegen.jit.llvm_cache`), and
  returns an :class:`LLVMKernel` with the interface of
  :class:`~acegen.jit.load.CompiledKernel`.

No C compiler is involved: this is the target ``compile_ir(ir, "c")`` falls back to when none
is found.  The generated IR exports the C kernel's ABI (``templates/c/kernel.h.j2``) and
computes the semantics of :func:`acegen.ir.interp.evaluate_ir`: neighbours in blocks of
:data:`LANES` (4, or 8 on AVX-512 hosts) as explicit vectors, the product DAG in operand-sharing runs,
every sum in a fixed order, no fast-math flags by default -- so results are deterministic
(independent of the CPU's vector width and of the thread count) and agree with the C backend
and the interpreter to round-off.  Design, flags, cache, numbers and limitations:
``docs/backend-llvm.md``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cffi
import numpy as np

from ..._fs import write_atomic
from ...errors import AcegenError, CompileError
from ...jit.cache import events, kernels_dir
from ...jit.llvm_cache import ObjectCache, llvm_cache_key
from ...jit.load import check_theta, raise_for_status, validate_inputs, verify_kernel_info
from ...progress import status
from ..common import STATUS_INDEX_KIND, Status, render

# The code generator (plan, printer, and through them the IR and SymPy) is imported where it
# is used, so that loading a cached kernel (kernel_from_index) imports none of it.
if TYPE_CHECKING:
    from ...ir.model import ModelIR
    from ...ir.slp import SLP
    from ..plan import BondPlan


#: Neighbours evaluated together by default (the width of the explicit ``<LANES x double>``
#: vectors of the generated IR): what :func:`emit_llvm` writes.  :func:`compile_llvm` takes the
#: host's width (:func:`host_lanes`: 8 with AVX-512, else 4).  The arithmetic does not depend on
#: it: sums over neighbours and DAG nodes keep 8 partial sums (item q to sum q mod 8) and a
#: reverse run 4, for either width, so the results are the same bits.
LANES = 4
LANE_WIDTHS = (4, 8)

#: Centres of one species taken through the product DAG together (node values interleaved
#: ``<ATOM_GROUP x double>``, bitwise equal to one centre at a time); 1 disables the grouping.
ATOM_GROUP = 4

#: Centres per chunk below which a multi-threaded call runs serially (thread start-up costs
#: more than it saves).
MIN_CENTRES_PER_THREAD = 16

_COMPUTE_TYPE = (
    "int (*)(int64_t, const int32_t *, const int64_t *, const int32_t *, const double *, double *, double *,"
    " int, int64_t *)"
)
_COMPUTE_THETA_TYPE = (
    "int (*)(int64_t, const int32_t *, const int64_t *, const int32_t *, const double *, const double *, "
    "const double *, double *, double *, double *, double *, int, int64_t *)"
)
_INFO_TYPE = "int (*)(int32_t *, int32_t *, int32_t *, const double **, const char **)"

#: llvmlite's global context is not thread-safe: one parse/optimise/JIT at a time.
_LLVM_LOCK = threading.Lock()


def ll_name(name: str) -> str:
    """File name of the generated LLVM IR of model ``name``."""
    return f"acegen_{name}.ll"


def blob_name(name: str) -> str:
    """File name of the spline-table buffer of model ``name`` (little-endian float64)."""
    return f"acegen_{name}.bin"


def tables_symbol(name: str) -> str:
    """The external global the IR reads spline tables from."""
    return f"acegen_{name}_tables"


def _fastmath(flags: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    if flags is None:
        return ()
    from .printer import ALLOWED_FLAGS

    if isinstance(flags, str):
        flags = tuple(f for f in flags.replace(",", " ").split() if f)
    out = tuple(sorted(set(flags)))
    bad = [f for f in out if f not in ALLOWED_FLAGS]
    if bad:
        raise CompileError(
            f"fast-math flag(s) {', '.join(bad)} not allowed for the LLVM kernels (allowed: {', '.join(ALLOWED_FLAGS)})"
        )
    return out


#: The LLVM kernel reads spline tables in the plan's "slots" layout ([bin][c0..c3][slot] per bond,
#: over the radial functions the bond's channels and core use): the C kernel's table.
TABLE_LAYOUT = "slots"


def slot_stride(b: BondPlan) -> int:
    """Rows per radial quantity (R, dR/dr, dR/dθ_j) of bond ``b`` in the LLVM record: its padded
    slot count for a spline (the radial routine writes whole groups of 4 slots), its slot count
    for an SLP."""
    return b.nslot_pad if b.radial.kind == "spline" else b.nslot


def slot_slp(b: BondPlan) -> SLP:
    """The radial SLP of bond ``b`` reduced to its slots: outputs R_s, then dR_s/dr (then dR_s/dθ_j),
    s over ``b.slots`` (the outputs no slot uses are dead code for the optimiser)."""
    from ...ir.slp import SLP

    slp, nf = b.radial.slp, b.nfunc
    kinds = len(slp.outputs) // nf
    return SLP(slp.inputs, slp.assignments, tuple(slp.outputs[k * nf + f] for k in range(kinds) for f in b.slots))


def _atom_group(g: int) -> int:
    if isinstance(g, bool) or not isinstance(g, int) or g not in (1, ATOM_GROUP):
        raise CompileError(f"atom_group must be 1 or {ATOM_GROUP}, got {g!r}")
    return g


def host_lanes() -> int:
    """The neighbour-block width for this CPU: 8 where LLVM reports AVX-512F, else 4."""
    import llvmlite.binding as llvm

    _initialise()
    return 8 if "+avx512f" in llvm.get_host_cpu_features().flatten().split(",") else 4


def _lanes(lanes: int | None) -> int:
    if lanes is None:
        return host_lanes()
    if isinstance(lanes, bool) or lanes not in LANE_WIDTHS:
        raise CompileError(f"lanes must be one of {LANE_WIDTHS} (or None: the host's), got {lanes!r}")
    return int(lanes)


def _render(
    ir: ModelIR, flags: tuple[str, ...], atom_group: int = ATOM_GROUP, lanes: int = LANES
) -> tuple[str, np.ndarray]:
    """The LLVM IR text of ``ir`` (from its :class:`~acegen.backends.plan.KernelPlan`) and the
    spline-table buffer (empty if the model has no spline)."""
    from ..plan import build_plan
    from .printer import slp_function, slp_instructions

    plan = build_plan(ir)
    tables = plan.tables(TABLE_LAYOUT)
    md, k = {}, 0  # loop metadata ids: three per species with product runs
    for s in plan.species:
        md[s.zi] = 3 * k
        k += 1 if s.n_groups else 0
    # record rows: u (3), r, per bond R, dR (and dR/dtheta_j with indicator inputs) over its slots
    # (slot_stride rows each), then Y and grad P (NY each) from a row common to every bond
    rad_rows = max([1] + [(3 if b.theta else 2) * slot_stride(b) for s in plan.species for b in s.bonds])
    row_y = 4 + rad_rows
    # per bond, the channels with their radial slot instead of the radial function: (offset, slot, l)
    chan_slots = {}
    for s in plan.species:
        for b in s.bonds:
            slot_of = {f: k for k, f in enumerate(b.slots)}
            chan_slots[(s.zi, b.zj)] = np.asarray([(int(o), slot_of[int(f)], int(l)) for o, f, l in b.channels],
                                                  dtype=np.int32).reshape(-1)
    ctx = {
        **plan.context(),
        "status": {s.name: int(s) for s in Status},  # the LLVM templates look codes up by name
        "blob_file": blob_name(ir.name),
        "blob_doubles": int(tables.size),
        "lanes": lanes,
        "atom_group": _atom_group(atom_group),
        "row_r": 4,
        "row_y": row_y,
        "rec_rows": row_y + 4 * plan.n_y,
        "fm": "".join(f + " " for f in flags),
        "md": md,
        "chan_slots": chan_slots,
        "slot_stride": slot_stride,
        "slot_slp": slot_slp,
        "slp_function": functools.partial(slp_function, flags=flags, width=lanes),
        "slp_scalar": lambda slp, inputs, out, prefix: "\n".join(slp_instructions(slp, inputs, out, prefix=prefix)),
    }
    return render("llvm/kernel.ll.j2", **ctx), tables


def emit_llvm(
    ir: ModelIR,
    *,
    fastmath: str | tuple[str, ...] | None = None,
    atom_group: int = ATOM_GROUP,
    lanes: int = LANES,
) -> dict[str, str | bytes]:
    """The generated files of ``ir``: ``acegen_<name>.ll`` (LLVM IR text, no target triple) and,
    if the model has spline tables, ``acegen_<name>.bin`` (little-endian float64 bytes: the
    contents of the IR's ``external constant @acegen_<name>_tables``).

    ``fastmath``: flags for the per-neighbour pointwise arithmetic (see ``ALLOWED_FLAGS``).
    ``atom_group``: :data:`ATOM_GROUP` (centres of one species through the product DAG together)
    or 1 (one centre at a time; the same results, bit for bit).  ``lanes``: the neighbour-block
    width, 4 (default, runs well on any x86-64 CPU) or 8 (AVX-512); the same results, bit for bit.
    """
    text, tables = _render(ir, _fastmath(fastmath), atom_group, _lanes(lanes))
    files: dict[str, str | bytes] = {ll_name(ir.name): text}
    if tables.size:
        files[blob_name(ir.name)] = tables.tobytes()
    return files


# -- JIT ------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _initialise() -> None:
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()


def _target_machine(opt_level: int) -> Any:
    """A fresh TargetMachine for the host CPU (an ExecutionEngine takes ownership of its own)."""
    import llvmlite.binding as llvm

    _initialise()
    target = llvm.Target.from_triple(llvm.get_process_triple())
    return target.create_target_machine(
        cpu=llvm.get_host_cpu_name(),
        features=llvm.get_host_cpu_features().flatten(),
        opt=opt_level,
        jit=True,
    )


def _parse(text: str, tm: Any) -> Any:
    import llvmlite.binding as llvm

    try:
        mod = llvm.parse_assembly(text)
        mod.triple = tm.triple
        mod.data_layout = str(tm.target_data)
        mod.verify()
    except RuntimeError as exc:
        raise CompileError(f"generated LLVM IR does not parse or verify: {exc}") from exc
    return mod


def _optimise(mod: Any, opt_level: int, tm: Any = None) -> None:
    """The standard module pipeline at ``opt_level`` (new pass manager), vectorisers on, for
    the target machine ``tm`` (default: a fresh one for the host)."""
    import llvmlite.binding as llvm

    tm = _target_machine(opt_level) if tm is None else tm
    pto = llvm.create_pipeline_tuning_options(speed_level=opt_level)
    pto.loop_vectorization = opt_level >= 2
    pto.slp_vectorization = opt_level >= 2
    pto.loop_unrolling = opt_level >= 2
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)


def _jit(text: str, name: str, tables: np.ndarray, opt_level: int, cached: bytes | None) -> tuple[Any, bytes | None]:
    """An MCJIT engine for ``text``: compiled (optimised first) when ``cached`` is None, else
    loaded from the ``cached`` object.  Returns (engine, the freshly compiled object or None)."""
    import llvmlite.binding as llvm

    tm = _target_machine(opt_level)
    mod = _parse(text, tm)
    if cached is None:
        _optimise(mod, opt_level)
    engine = llvm.create_mcjit_compiler(mod, tm)
    compiled: list[bytes] = []

    def notify(module: Any, buffer: bytes) -> None:
        compiled.append(bytes(buffer))

    def getbuffer(module: Any) -> bytes | None:
        return cached

    engine.set_object_cache(notify, getbuffer)
    if tables.size:
        engine.add_global_mapping(mod.get_global_variable(tables_symbol(name)), tables.ctypes.data)
    engine.finalize_object()
    return engine, (compiled[0] if compiled else None)


def object_file(
    ir: ModelIR,
    *,
    fastmath: str | tuple[str, ...] | None = None,
    opt_level: int = 3,
    cpu: str | None = None,
    features: str | None = None,
) -> bytes:
    """The kernel of ``ir`` as a relocatable, position-independent ELF object (bytes), for
    linking into a shared library outside acegen (see docs/backend-llvm.md).

    ``cpu``/``features``: the target CPU (default: the host's; ``cpu="x86-64", features=""``
    gives a portable object).  The object references the external symbol
    ``acegen_<name>_tables`` (the ``.bin`` of :func:`emit_llvm`, 64-byte aligned) when the model
    has spline tables, and ``posix_memalign``/``realloc``/``free`` and libm.
    """
    import llvmlite.binding as llvm

    text, _ = _render(ir, _fastmath(fastmath))
    _initialise()
    target = llvm.Target.from_triple(llvm.get_process_triple())
    with _LLVM_LOCK:
        tm = target.create_target_machine(
            cpu=llvm.get_host_cpu_name() if cpu is None else cpu,
            features=llvm.get_host_cpu_features().flatten() if features is None else features,
            opt=opt_level,
            reloc="pic",
            codemodel="default",
        )
        mod = _parse(text, tm)
        _optimise(mod, opt_level, tm)
        return bytes(tm.emit_object(mod))


def _aligned_copy(values: np.ndarray, align: int = 64) -> np.ndarray:
    """A read-only float64 copy of ``values`` whose data starts on an ``align``-byte boundary
    (the IR declares the table global ``align 64``)."""
    raw = np.empty(values.size * 8 + align, dtype=np.uint8)
    start = (-raw.ctypes.data) % align
    out = raw[start : start + values.size * 8].view(np.float64)
    out[:] = values
    out.flags.writeable = False
    return out


class LLVMKernel:
    """A JIT-compiled ACE kernel with the Python interface of
    :class:`~acegen.jit.load.CompiledKernel` (``compute``, ``elements``, ``rcut``,
    ``signature``, ``n_species``, ``name``).

    It owns the MCJIT engine (the machine code) and the spline-table buffer the code reads;
    both live as long as this object.  ``openmp`` is False: ``nthreads`` other than 1 splits
    the centres over a Python thread pool (the JIT'd function is serial and reentrant; cffi
    releases the GIL during each call).  ``from_cache`` says whether the object came from
    the object cache; ``cache_key`` names the entry.
    """

    target = "llvm"
    openmp = False
    library_path = None  # lives in the JIT engine's memory (acegen.jit.kernel.Kernel)
    cdef = None

    def __init__(
        self,
        engine: Any,
        tables: np.ndarray,
        name: str,
        *,
        n_species: int,
        rcut: np.ndarray,
        signature: str,
        elements: tuple[str, ...] = (),
        cache_key: str = "",
        from_cache: bool = False,
        out_width: int = 1,
    ) -> None:
        self._engine = engine
        #: doubles per centre in the first output (1, or a projection variant's row width)
        self.out_width = int(out_width)
        self._tables = tables
        self.name = name
        self.elements = tuple(elements)
        self.n_species = n_species
        self.cache_key = cache_key
        self.from_cache = from_cache
        self.ffi = cffi.FFI()
        compute_addr = engine.get_function_address(f"acegen_{name}_compute")
        theta_addr = 0 if compute_addr else engine.get_function_address(f"acegen_{name}_compute_theta")
        info_addr = engine.get_function_address(f"acegen_{name}_info")
        if not (compute_addr or theta_addr) or not info_addr:
            raise CompileError(f"JIT-compiled kernel {name} does not export acegen_{name}_compute/_info")
        #: a kernel with indicator inputs (a multilayer layer n > 1): only ``compute_theta``
        self.theta = bool(theta_addr)
        self._compute = self.ffi.cast(_COMPUTE_TYPE, compute_addr) if compute_addr else None
        self._compute_theta = self.ffi.cast(_COMPUTE_THETA_TYPE, theta_addr) if theta_addr else None
        info = self.ffi.cast(_INFO_TYPE, info_addr)
        self.rcut, self.signature, _ = verify_kernel_info(
            self.ffi, info, f"JIT kernel {name}", n_species=n_species, rcut=rcut, signature=signature
        )

    def __repr__(self) -> str:
        return f"LLVMKernel({self.name!r}, species={self.n_species}, from_cache={self.from_cache})"

    def compute(
        self,
        species: np.ndarray,
        offsets: np.ndarray,
        nb_species: np.ndarray,
        rij: np.ndarray,
        nthreads: int = 1,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-atom energies (n_centres,) and dE_i/dr_ij (n_pairs, 3); arguments and errors as
        :meth:`acegen.jit.load.CompiledKernel.compute`.  nthreads: 1 serial, > 1 that many
        Python threads, <= 0 ``os.cpu_count()``; results do not depend on it (bit for bit)."""
        if self.theta:  # the layer at θ = 0
            n, n_pairs = np.asarray(species).shape[0], np.asarray(nb_species).shape[0]
            return self.compute_theta(species, offsets, nb_species, rij, np.zeros(n), np.zeros(n_pairs),
                                      nthreads=nthreads)[:2]
        species, offsets, nb_species, rij = validate_inputs(species, offsets, nb_species, rij, nthreads)
        n = species.shape[0]
        w = self.out_width
        energies = np.empty(n if w == 1 else (n, w), dtype=np.float64)
        dEdr = (np.empty if w == 1 else np.zeros)((nb_species.shape[0], 3), dtype=np.float64)
        ffi = self.ffi
        ptrs = (
            ffi.from_buffer("int32_t[]", species),
            ffi.from_buffer("int64_t[]", offsets),
            ffi.from_buffer("int32_t[]", nb_species),
            ffi.from_buffer("double[]", rij),
            ffi.from_buffer("double[]", energies, require_writable=True),
            ffi.from_buffer("double[]", dEdr, require_writable=True),
        )
        nt = int(nthreads) if int(nthreads) > 0 else (os.cpu_count() or 1)
        chunks = self._chunks(offsets, nt)
        if len(chunks) == 1:
            results = [self._run_chunk(ptrs, 0, n)]
        else:
            with ThreadPoolExecutor(max_workers=min(nt, len(chunks))) as pool:
                results = list(pool.map(lambda c: self._run_chunk(ptrs, *c), chunks))
        for (begin, _), (rc, index) in zip(chunks, results):
            if rc != Status.OK:
                if rc in {int(s) for s, kind in STATUS_INDEX_KIND.items() if kind == "atom"}:
                    index += begin  # atom indices are relative to the chunk, pair indices are not
                raise_for_status(self.name, self.n_species, rc, index, species, offsets, nb_species, rij)
        return energies, dEdr

    def compute_theta(self, species, offsets, nb_species, rij, theta_c, theta_nb, nthreads: int = 1):
        """A kernel with indicator inputs: energies, dE_i/dr_ij, dE_i/dθ_i and dE_i/dθ_j, as
        :meth:`acegen.jit.load.CompiledKernel.compute_theta`."""
        if not self.theta:
            raise AcegenError(f"kernel {self.name} takes no indicator inputs (it has no compute_theta)")
        species, offsets, nb_species, rij = validate_inputs(species, offsets, nb_species, rij, nthreads)
        n, n_pairs = species.shape[0], nb_species.shape[0]
        theta_c, theta_nb = check_theta(theta_c, theta_nb, n, n_pairs, offsets)
        energies = np.empty(n, dtype=np.float64)
        dEdr = np.empty((n_pairs, 3), dtype=np.float64)
        dc = np.empty(n, dtype=np.float64)
        dn = np.empty(n_pairs, dtype=np.float64)
        ffi = self.ffi
        ptrs = tuple(ffi.from_buffer(t, a, require_writable=wr) for t, a, wr in (
            ("int32_t[]", species, False), ("int64_t[]", offsets, False), ("int32_t[]", nb_species, False),
            ("double[]", rij, False), ("double[]", theta_c, False), ("double[]", theta_nb, False),
            ("double[]", energies, True), ("double[]", dEdr, True), ("double[]", dc, True), ("double[]", dn, True)))

        def run(begin: int, end: int) -> tuple[int, int]:
            sp_, of, nb, rj, tc, tn, en, de, dcp, dnp = ptrs
            err = ffi.new("int64_t *")
            rc = self._compute_theta(end - begin, sp_ + begin, of + begin, nb, rj, tc + begin, tn, en + begin, de,
                                     dcp + begin, dnp, 1, err)
            return int(rc), int(err[0])

        nt = int(nthreads) if int(nthreads) > 0 else (os.cpu_count() or 1)
        chunks = self._chunks(offsets, nt)
        if len(chunks) == 1:
            results = [run(0, n)]
        else:
            with ThreadPoolExecutor(max_workers=min(nt, len(chunks))) as pool:
                results = list(pool.map(lambda c: run(*c), chunks))
        for (begin, _), (rc, index) in zip(chunks, results):
            if rc != Status.OK:
                if rc in {int(s) for s, kind in STATUS_INDEX_KIND.items() if kind == "atom"}:
                    index += begin
                raise_for_status(self.name, self.n_species, rc, index, species, offsets, nb_species, rij)
        return energies, dEdr, dc, dn

    @staticmethod
    def _chunks(offsets: np.ndarray, nthreads: int) -> list[tuple[int, int]]:
        """Contiguous centre ranges [begin, end) with about equal pair counts (4 per thread,
        for load balance); one range when serial or small."""
        n = offsets.shape[0] - 1
        if nthreads <= 1 or n < 2 * MIN_CENTRES_PER_THREAD:
            return [(0, n)]
        n_chunks = min(4 * nthreads, n // MIN_CENTRES_PER_THREAD)
        # balance on pairs + centres (an atom without neighbours still costs something)
        work = offsets + np.arange(n + 1)
        targets = work[-1] * np.arange(1, n_chunks) / n_chunks
        cuts = np.unique(np.concatenate([[0], np.searchsorted(work, targets), [n]]))
        return [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]

    def _run_chunk(self, ptrs: tuple[Any, ...], begin: int, end: int) -> tuple[int, int]:
        species, offsets, nb_species, rij, energies, dEdr = ptrs
        err = self.ffi.new("int64_t *")
        rc = self._compute(end - begin, species + begin, offsets + begin, nb_species, rij, energies + begin * self.out_width, dEdr, 1, err)
        return int(rc), int(err[0])


def compile_llvm(
    ir: ModelIR,
    *,
    fastmath: str | tuple[str, ...] | None = None,
    opt_level: int = 3,
    cache: bool = True,
    openmp: bool = True,
    march_native: bool = False,
    atom_group: int = ATOM_GROUP,
    lanes: int | None = None,
    tables_at_load: bool = True,
) -> LLVMKernel:
    """Generate, JIT-compile (through the object cache) and load the LLVM kernel of ``ir``.

    ``fastmath``: fast-math flags for the per-neighbour pointwise arithmetic (``"contract"``
    allows FMA; default none: the C backend's IEEE semantics).  ``opt_level``: 0-3 (the
    pipeline and the code generator).  ``cache``: use the object cache (a cached object is
    loaded without optimising or code generation; a cached object that fails to load is
    recompiled once).  ``openmp``/``march_native``/``tables_at_load`` are accepted for
    compatibility with :func:`acegen.backends.c.compile_c` (so ``compile_ir(ir, "c", ...)`` can
    fall back here) and have no effect: the code always targets the host CPU, threads are Python
    threads and the tables are a buffer of the process.
    ``atom_group``: see :func:`emit_llvm`.  ``lanes``: the neighbour-block width (4 or 8; default
    None: :func:`host_lanes`, 8 on an AVX-512 CPU); the results do not depend on it.
    """
    from ..common import kernel_meta

    del openmp, march_native, tables_at_load  # see docstring
    if opt_level not in (0, 1, 2, 3):
        raise CompileError(f"opt_level must be 0..3, got {opt_level!r}")
    flags = _fastmath(fastmath)
    text, raw_tables = _render(ir, flags, atom_group, _lanes(lanes))
    tables = _aligned_copy(raw_tables) if raw_tables.size else raw_tables
    meta = kernel_meta(ir)
    if ir.output == "projections":
        meta["out_width"] = ir.projection_width
    key = llvm_cache_key(text, {"opt_level": opt_level, "engine": "mcjit"})
    if not cache:
        with _LLVM_LOCK:
            engine, _ = _jit(text, ir.name, tables, opt_level, None)
        events["llvm_compile"] += 1
        return LLVMKernel(engine, tables, ir.name, cache_key=key, **meta)
    entry = ObjectCache(key)
    with entry.locked():
        cached = entry.load()
        if cached is not None:
            try:
                with _LLVM_LOCK:
                    engine, _ = _jit(text, ir.name, tables, opt_level, cached)
                return LLVMKernel(engine, tables, ir.name, cache_key=key, from_cache=True, **meta)
            except (CompileError, RuntimeError):
                entry.invalidate()
        with _LLVM_LOCK, status(f"compiling acegen_{ir.name} (LLVM -O{opt_level})"):
            engine, obj = _jit(text, ir.name, tables, opt_level, None)
        events["llvm_compile"] += 1
        if obj is not None:
            entry.store(obj, text)
        return LLVMKernel(engine, tables, ir.name, cache_key=key, **meta)


# -- the kernel cache's source index (acegen.jit.cache.lookup_source) ------------------------
def index_record(kernel: LLVMKernel) -> tuple[Path, tuple[Path, ...], dict] | None:
    """What the source index records for ``kernel`` (compiled through the object cache):
    the object file, the files it needs besides (its spline tables, written here to
    ``tables-<sha256>.bin`` in the kernel cache folder) and the loader's metadata; None when
    the kernel has no cached object."""
    obj = ObjectCache(kernel.cache_key)
    if not kernel.cache_key or not obj.object_path.is_file():
        return None
    files: tuple[Path, ...] = ()
    if kernel._tables.size:
        data = np.ascontiguousarray(kernel._tables, dtype="<f8").tobytes()
        path = kernels_dir() / f"tables-{hashlib.sha256(data).hexdigest()}.bin"
        try:
            intact = path.read_bytes() == data  # a damaged file of this name is replaced
        except OSError:
            intact = False
        if not intact and not write_atomic(path, lambda fh: fh.write(data), binary=True):
            return None
        files = (path,)
    meta = {"name": kernel.name, "n_species": int(kernel.n_species), "rcut": np.asarray(kernel.rcut).tolist(),
            "signature": kernel.signature, "elements": list(kernel.elements), "out_width": kernel.out_width,
            "object_key": kernel.cache_key, "tables_doubles": int(kernel._tables.size)}
    return obj.object_path, files, meta


def kernel_from_index(entry: dict) -> LLVMKernel | None:
    """The kernel of a source-index entry written from :func:`index_record`, loaded from the
    cached object without the IR (an engine over a stub module that only declares the tables
    global, mapped to the tables read back); None when a file does not match its recorded
    sha256 or the object does not load."""
    import llvmlite.binding as llvm

    try:
        data = Path(entry["library"]).read_bytes()
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            return None
        name, n_doubles = entry["name"], int(entry["tables_doubles"])
        tables = np.empty(0)
        if n_doubles:
            (rec,) = entry["files"]
            raw = Path(rec["path"]).read_bytes()
            if hashlib.sha256(raw).hexdigest() != rec["sha256"] or len(raw) != 8 * n_doubles:
                return None
            tables = _aligned_copy(np.frombuffer(raw, dtype="<f8"))
        meta = dict(n_species=int(entry["n_species"]), rcut=np.asarray(entry["rcut"], dtype=float),
                    signature=entry["signature"], elements=tuple(entry["elements"]), out_width=int(entry["out_width"]))
        with _LLVM_LOCK:
            tm = _target_machine(3)
            decl = f"@{tables_symbol(name)} = external constant [{n_doubles} x double], align 64\n" if n_doubles else ""
            stub = _parse(decl, tm)
            engine = llvm.create_mcjit_compiler(stub, tm)
            if n_doubles:
                engine.add_global_mapping(stub.get_global_variable(tables_symbol(name)), tables.ctypes.data)
            engine.add_object_file(llvm.ObjectFileRef.from_data(data))
            engine.finalize_object()
        return LLVMKernel(engine, tables, name, cache_key=entry["object_key"], from_cache=True, **meta)
    except (OSError, KeyError, TypeError, ValueError, RuntimeError, CompileError):
        return None


__all__ = [
    "LLVMKernel",
    "index_record",
    "kernel_from_index",
    "blob_name",
    "compile_llvm",
    "emit_llvm",
    "ll_name",
    "object_file",
    "tables_symbol",
]


def __getattr__(name: str):
    if name == "ALLOWED_FLAGS":  # re-exported from the printer, imported on demand
        from .printer import ALLOWED_FLAGS

        return ALLOWED_FLAGS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
