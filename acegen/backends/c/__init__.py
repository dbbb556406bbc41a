"""The C backend: ModelIR -> C source (Jinja2 templates) -> shared library -> CompiledKernel.

* :func:`emit_c` renders the kernel source and header (``acegen_<name>.c``/``.h``);
* :func:`compile_c` compiles them with the system C compiler through the kernel cache and
  loads the library (:class:`~acegen.jit.load.CompiledKernel`).

The generated kernel, its ABI and design are described in ``docs/architecture-backend.md``
and in the header comment of ``templates/c/kernel.h.j2``.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from ..._fs import write_atomic
from ...errors import CompileError
from ...ir.model import ModelIR
from ...jit.cache import build_library, remember_digest
from ...jit.load import CompiledKernel
from ...jit.toolchain import detect
from ..common import c_identifier, kernel_meta, render
from ..plan import KernelPlan, build_plan
from .printer import slp_body



#: Spline tables go into a little-endian float64 file linked with the assembler's ``.incbin``
#: (PACE-style tables reach millions of numbers; as C initialisers they would take minutes to
#: compile), in the plan's "slots" layout (:mod:`acegen.backends.plan`).
TABLE_LAYOUT = "slots"


#: Per-species output coefficient arrays of at least this many doubles go into the spline-table
#: blob instead of C initialisers: GCC parses long double initialisers slowly (npj Cu, 32 048
#: coefficients: 0.1 s of its 1.2 s).  Smaller arrays stay in C, where they sit next to the
#: species' other tables: in the blob, YBCO's 3 400 per species measured 2 % slower kernels.
COEF_IN_BLOB = 8192


def source_names(name: str) -> tuple[str, str]:
    """File names of the generated source and header for model ``name``."""
    return f"acegen_{name}.c", f"acegen_{name}.h"


def blob_name(name: str) -> str:
    """File name of the spline-table blob of model ``name`` (little-endian float64)."""
    return f"acegen_{name}.bin"


def _tidy(text: str) -> str:
    """Drop the blank lines that empty template hooks leave (before a closing brace, or doubled)."""
    text = re.sub(r"\n[ \t]*\n(?=[ \t]*\})", "\n", text)
    return re.sub(r"\n(?:[ \t]*\n){2,}", "\n\n", text)


def radial_functions(plan: KernelPlan) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The C radial function of every bond (key ``"zi_zj"``), and the bonds of each function.

    A bond's radial step is a function of its spline table's "slots" copy, its slots and its
    record size only, unless weights (a table shared by weighted bonds) or indicator inputs
    enter: bonds equal in all of that (bonds of a PACE file with equal parameters, which share
    one table: :mod:`acegen.io.pace_radial`) share one function, named after the first of them,
    so a many-element model has one radial function per distinct table instead of one per bond.
    """
    names: dict[str, str] = {}
    users: dict[str, list[str]] = {}
    first: dict[tuple, str] = {}
    for s in plan.species:
        for b in s.bonds:
            rb = b.radial
            own = f"radial_{rb.zi}_{rb.zj}"
            if rb.kind == "spline" and b.weight_table is None and b.slot_weights is None and not b.theta:
                key = (b.slot_offset, b.slots, b.nslot_pad, b.rec, rb.rcut, rb.h, rb.nbins)
                fn = first.setdefault(key, own)
            else:
                fn = own
            names[f"{b.zi}_{b.zj}"] = fn
            users.setdefault(fn, []).append(f"({b.zi}, {b.zj})")
    return names, users


#: A centre species with more bonds (neighbour species) than this gets one loop over its bonds,
#: with the per-bond data (cutoff, record layout, radial function, channel rows and groups) in
#: static tables, instead of code unrolled per bond: 100 elements unrolled are ~780 k lines of C
#: that GCC does not compile in minutes.  The looping phases (front_loop_<core>, back_loop_<core>)
#: are one copy for all such species.  Models with few elements keep the unrolled code.
BOND_LOOP_MIN = 8


def bond_loop_species(plan: KernelPlan) -> frozenset[int]:
    """The species whose bonds the C kernel visits in a loop (see :data:`BOND_LOOP_MIN`): more
    than that many bonds, and none of the per-bond variants the loop does not take (neighbour
    weights on a shared table, indicator inputs, the ZBL core's nearest-pair switch)."""
    if plan.theta:
        return frozenset()
    return frozenset(
        s.zi
        for s in plan.species
        if len(s.bonds) > BOND_LOOP_MIN
        and s.core_kind != "zbl"
        and not any(b.theta or b.weight_table is not None for b in s.bonds)
    )


def emit_c(ir: ModelIR) -> dict[str, str | bytes]:
    """The generated files of ``ir``: ``acegen_<name>.c`` and ``.h`` (text) and, if the model
    has spline tables, ``acegen_<name>.bin`` (bytes; the .c includes it with ``.incbin``, so
    it must sit in the compiler's working directory).

    A model with spline tables also keeps large per-species output coefficient arrays
    (``coef_<zi>`` of at least :data:`COEF_IN_BLOB` doubles) in the ``.bin``, after the tables
    (offsets in ``coef_offset``, multiples of :data:`~acegen.backends.plan.TABLE_ALIGN`)."""
    plan = build_plan(ir, merge_shared=True)
    tables = plan.tables(TABLE_LAYOUT)
    parts = [tables]
    coef_offset: dict[int, int] = {}
    if tables.size:
        at = tables.size  # a multiple of TABLE_ALIGN, as is every coef block (n_nodes_pad columns)
        for s in plan.species:
            if s.n_out and s.coef.size >= COEF_IN_BLOB:
                coef_offset[s.zi] = at
                parts.append(np.ascontiguousarray(s.coef, dtype="<f8"))
                at += s.coef.size
    data = b"".join(memoryview(a).cast("B") for a in parts)
    radial_fn, radial_users = radial_functions(plan)
    loop = bond_loop_species(plan)
    # species whose DAG, embedding and force phases are shared routines too (atom_loop_<core>,
    # group_loop_<core>); projections and species without A or outputs keep their own
    atom_loop = frozenset(
        s.zi for s in plan.species if s.zi in loop and not plan.project and s.n_A and s.n_out
    )
    bond_of = {}
    for s in plan.species:
        if s.zi in loop:
            bond_of[s.zi] = [-1] * plan.n_species
            for bi, b in enumerate(s.bonds):
                for zj in b.members:
                    bond_of[s.zi][zj] = bi
    ctx = {**plan.context(), "slp": slp_body, "blob_file": blob_name(ir.name) if data else None,
           "blob_doubles": len(data) // 8, "radial_fn": radial_fn, "radial_users": radial_users,
           "coef_offset": coef_offset, "bond_loop": loop, "bond_of": bond_of,
           "bond_loop_rep": list({s.core_kind: s for s in plan.species if s.zi in loop}.values()),
           "atom_loop": atom_loop, "atom_loop_kinds": {s.core_kind for s in plan.species if s.zi in atom_loop}}
    src, hdr = source_names(ir.name)
    files: dict[str, str | bytes] = {
        src: _tidy(render("c/kernel.c.j2", **ctx)),
        hdr: _tidy(render("c/kernel.h.j2", **ctx)),
    }
    if data:
        files[blob_name(ir.name)] = data
    return files


#: Defined for the kernel cache's builds of models with spline tables: the library reserves
#: the tables' space and ``acegen_<name>_load_tables`` fills it when it is loaded, instead of
#: the assembler embedding the table file (templates/c/kernel.c.j2).
TABLES_AT_LOAD = "-DACEGEN_TABLES_AT_LOAD"


def cdef(name: str, theta: bool = False, tables: bool = False) -> str:
    """cffi declarations of the exported functions of model ``name`` (``theta``: also
    ``acegen_<name>_compute_theta``, kernels with indicator inputs; ``tables``: also
    ``acegen_<name>_load_tables``, libraries built with :data:`TABLES_AT_LOAD`)."""
    text = render("c/cdef.j2", name=name, theta=theta)
    if tables:
        text += f"\nint acegen_{c_identifier(name)}_load_tables(const double *src, int64_t n);\n"
    return text


def _cached_tables(path: Path, data: bytes) -> Path | None:
    """The kernel cache's copy of a library's table file (``<key>.src/<blob>``, what the source
    index records for the library), made equal to ``data`` (the generated bytes) if it is not:
    the source index trusts what it records.  None if it cannot be written.  The digest of the
    bytes is remembered, so that recording the file does not read it once more."""
    try:
        same = path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        same = False
    if not same and not write_atomic(path, lambda fh: fh.write(data), binary=True):
        return None
    remember_digest(path, hashlib.sha256(data).hexdigest())
    return path


def compile_c(
    ir: ModelIR, *, openmp: bool = True, march_native: bool = True, tables_at_load: bool = True
) -> CompiledKernel:
    """Generate, compile (cached) and load the C kernel of ``ir``.

    ``openmp``: build with ``-fopenmp`` if the compiler supports it (``kernel.openmp`` says
    whether it did); ``march_native`` (default on): add ``-march=native`` when the compiler
    accepts it, so the neighbour-batch loops use the CPU's widest SIMD (AVX2/AVX-512: about
    1.7x faster than the SSE2 baseline on the npj Cu potential, docs/performance.md).  The
    library is then tied to this CPU; the kernel cache key includes the expanded target, so
    another CPU model gets its own library.
    ``tables_at_load`` (default on): a model's spline tables are copied into the library when
    it is loaded (:data:`TABLES_AT_LOAD`), from the bytes generated here or, through the source
    index, from the cache's verified copy; off: embedded in the library by the assembler, which
    then stands alone (``acegen compile -o``).
    A cached library that fails to load or to verify is rebuilt once.
    """
    sources = emit_c(ir)
    toolchain = detect()
    flags = toolchain.flags(openmp=openmp, march_native=march_native)
    meta = kernel_meta(ir)
    if ir.output == "projections":
        meta["out_width"] = ir.projection_width
    blob = blob_name(ir.name)
    tables = None
    if tables_at_load and blob in sources:
        # the tables are copied into the library when it is loaded, from the bytes generated here
        # (a cached library's copy of the file, <key>.src/<blob>, serves the source index)
        flags = (*flags, TABLES_AT_LOAD)
        tables = np.frombuffer(sources[blob], dtype="<f8")
    decl = cdef(ir.name, theta=ir.theta, tables=tables is not None)

    def load(path: Path) -> CompiledKernel:
        kernel = CompiledKernel(path, ir.name, decl, tables=tables, **meta)
        if tables is not None:
            kernel.tables_path = _cached_tables(path.with_suffix(".src") / blob, sources[blob])
        return kernel

    path = build_library(sources, toolchain, flags)
    try:
        return load(path)
    except CompileError:
        path = build_library(sources, toolchain, flags, force=True)
        return load(path)


def build_c(folder: Path, *, openmp: bool = True, march_native: bool = True) -> Path:
    """Compile the C files of an emitted (possibly hand-edited) folder, outside the cache
    (same flags as :func:`compile_c`, so the two libraries compute identical numbers).

    Every ``acegen_<name>.c`` in ``folder`` is built into ``folder/libacegen_<name>.so``;
    returns the path of the (single) library.
    """
    folder = Path(folder)
    sources = sorted(folder.glob("acegen_*.c"))
    if len(sources) != 1:
        raise CompileError(f"{folder}: expected exactly one acegen_<name>.c, found {len(sources)}")
    toolchain = detect()
    out = folder / f"lib{sources[0].stem}.so"
    toolchain.compile_shared(sources, out, toolchain.flags(openmp=openmp, march_native=march_native))
    return out


__all__ = ["blob_name", "build_c", "cdef", "compile_c", "emit_c", "radial_functions", "source_names"]
