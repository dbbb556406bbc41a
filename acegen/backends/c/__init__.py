"""The C backend: ModelIR -> C source (Jinja2 templates) -> shared library -> CompiledKernel.

* :func:`emit_c` renders the kernel source and header (``acegen_<name>.c``/``.h``);
* :func:`compile_c` compiles them with the system C compiler through the kernel cache and
  loads the library (:class:`~acegen.jit.load.CompiledKernel`).

The generated kernel, its ABI and design are described in ``docs/architecture-backend.md``
and in the header comment of ``templates/c/kernel.h.j2``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import CompileError
from ...ir.dag import group_schedule
from ...ir.model import ModelIR, SpeciesProgram
from ...jit.cache import build_library
from ...jit.load import CompiledKernel
from ...jit.toolchain import detect
from ..common import BondTable, ModelTables, abi_context, kernel_meta, lower_model, render
from .printer import slp_body



#: Spline tables go into a little-endian float64 file linked with the assembler's ``.incbin``
#: (PACE-style tables reach millions of numbers; as C initialisers they would take minutes to
#: compile).  Each table starts on a multiple of this many doubles (64 bytes).
BLOB_ALIGN = 8

#: Table padding (doubles): radial slots and DAG nodes are padded to a multiple of this, the
#: largest SIMD width the kernel uses (``LANES`` in kernel.c.j2: 8 with AVX-512, 4 with AVX,
#: 2 otherwise, chosen by the C compiler's target).
SIMD_PAD = 8


def _pad(n: int, to: int) -> int:
    return -(-n // to) * to


def _bond_layout(prog: SpeciesProgram, b: BondTable) -> dict[str, Any]:
    """Radial slots and channel rows of one bond, as the kernel evaluates them.

    Slots are the radial functions the kernel evaluates for this bond, in the order of first
    use by the channels sorted by (l, channel order), then the core-repulsion function.
    Functions no channel uses are never evaluated.  ``rows`` are (slot, offset) of every
    channel, grouped by l; ``groups`` are (l, first row, end row).
    """
    chans = sorted(range(b.n_channels), key=lambda c: (int(b.channels[c, 2]), c))
    slot_of: dict[int, int] = {}
    rows: list[tuple[int, int]] = []
    groups: list[dict[str, int]] = []
    for c in chans:
        off, rad, l = (int(v) for v in b.channels[c])
        if rad not in slot_of:
            slot_of[rad] = len(slot_of)
        if not groups or groups[-1]["l"] != l:
            groups.append({"l": l, "r0": len(rows), "r1": len(rows)})
        rows.append((slot_of[rad], off))
        groups[-1]["r1"] = len(rows)
    core = b.block.core if prog.core.kind != "none" else None
    if core is not None and core not in slot_of:
        slot_of[core] = len(slot_of)
    slots = sorted(slot_of, key=slot_of.__getitem__)
    return {
        "slots": slots,
        "nslot": len(slots),
        "nslot_pad": _pad(max(len(slots), 1), SIMD_PAD),
        "rows": np.asarray(rows, dtype=np.int32).reshape(-1, 2),
        "groups": groups,
        "lmax": max((g["l"] for g in groups), default=0),
        "core_slot": None if core is None else slot_of[core],
    }


def _radial_context(b: BondTable, lay: dict[str, Any], blob: list[np.ndarray]) -> dict[str, Any]:
    """Template context of one bond's radial slots; spline tables are appended to ``blob``.

    Spline tables are re-laid out for the kernel as ``[bin][c0..c3][slot]`` (the slots of one
    bin and coefficient contiguous, padded to ``nslot_pad``), so one neighbour's lookup reads a
    single contiguous row and vectorises over the slots.
    """
    blk = b.block
    base = {"zi": b.zi, "zj": b.zj, "nfunc": blk.nfunc, "slots": lay["slots"], "nslot": lay["nslot"]}
    if blk.slp is not None:
        if len(blk.slp.inputs) != 1:
            raise CompileError(f"radial SLP of bond ({b.zi}, {b.zj}) must have the single input r")
        return {**base, "kind": "slp", "body": slp_body(blk.slp, ["r"], "out", indent="        ")}
    spl = blk.spline
    offset = sum(a.size for a in blob)
    npad = lay["nslot_pad"]
    table = np.zeros((spl.nbins, 4, npad), dtype="<f8")
    if lay["slots"]:
        table[:, :, : lay["nslot"]] = np.transpose(spl.coeffs[:, lay["slots"], :], (0, 2, 1))
    flat = table.ravel()
    pad = (-flat.size) % BLOB_ALIGN
    blob.append(np.concatenate([flat, np.zeros(pad, dtype="<f8")]) if pad else flat)
    return {**base, "kind": "spline", "nslot_pad": npad, "nbins": spl.nbins, "h": spl.h, "inv_h": 1.0 / spl.h,
            "rcut": spl.rcut, "offset": offset}


def _context(t: ModelTables) -> tuple[dict[str, Any], bytes]:
    """Template context and the spline-table blob (empty if the model has no spline)."""
    ir = t.ir
    species = []
    kinds: set[str] = set()
    blob: list[np.ndarray] = []
    rec_max = 1
    for st, prog in zip(t.species, ir.species):
        emb = prog.embedding
        kinds.add(emb.kind)
        params = [float(p) for p in emb.params]
        sched = group_schedule(st.dag)
        bonds = []
        for b in st.bonds:
            lay = _bond_layout(prog, b)
            rec = 4 + 2 * lay["nslot"] + (4 * t.n_y if b.n_channels else 0)
            rec_max = max(rec_max, rec)
            bonds.append(
                {
                    **lay,
                    "zj": b.zj,
                    "rcut": b.rcut,
                    "n_chan": b.n_channels,
                    "ny": (lay["lmax"] + 1) ** 2,
                    "rec": rec,
                    "r_in": float(b.block.r_in),
                    "delta_in": float(b.block.delta_in),
                    "radial": _radial_context(b, lay, blob),
                }
            )
        n_nodes = sched.n_nodes
        n_nodes_pad = _pad(n_nodes, SIMD_PAD)
        coef = np.zeros((emb.ndensity, n_nodes_pad))
        coef[:, :n_nodes] = sched.coeffs
        species.append(
            {
                "zi": prog.zi,
                "n_A": st.n_A,
                "n_nodes": n_nodes,
                "n_products": sched.n_products,
                "n_groups": sched.n_groups,
                "key": sched.key,
                "group_ptr": sched.group_ptr,
                "other": sched.other,
                "n_out": int(st.dag.out_nodes.size),
                "n_nodes_pad": n_nodes_pad,
                "coef": coef,
                "ndensity": emb.ndensity,
                "embedding_kind": emb.kind,
                "embedding_params": list(zip(params[0::2], params[1::2])),
                "E0": float(prog.E0),
                "core_kind": prog.core.kind,
                "rho_core_cut": float(prog.core.rho_core_cut),
                "drho_core_cut": float(prog.core.drho_core_cut),
                "bonds": bonds,
            }
        )
    data = np.concatenate(blob).astype("<f8").tobytes() if blob else b""
    lmax_used = max([b["lmax"] for s in species for b in s["bonds"] if b["n_chan"]], default=0)
    ctx = {
        **abi_context(t),
        "blob_file": blob_name(ir.name) if data else None,
        "blob_doubles": len(data) // 8,
        "lmax": ir.lmax,
        "lmax_used": lmax_used,
        "nodes_max": _pad(t.nodes_max, SIMD_PAD),
        "ndens_max": t.ndensity_max,
        "nbonds_max": max([len(s["bonds"]) for s in species] + [1]),
        "rec_max": rec_max,
        "rcut": t.rcut,
        "angular_body": slp_body(ir.angular, ["x", "y", "z"], "out", indent="        ", rows=True),
        "embedding_kinds": sorted(kinds),
        "core_kinds": sorted({p.core.kind for p in ir.species}),
        "species": species,
    }
    return ctx, data


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


def emit_c(ir: ModelIR) -> dict[str, str | bytes]:
    """The generated files of ``ir``: ``acegen_<name>.c`` and ``.h`` (text) and, if the model
    has spline tables, ``acegen_<name>.bin`` (bytes; the .c includes it with ``.incbin``, so
    it must sit in the compiler's working directory)."""
    ctx, data = _context(lower_model(ir))
    src, hdr = source_names(ir.name)
    files: dict[str, str | bytes] = {
        src: _tidy(render("c/kernel.c.j2", **ctx)),
        hdr: _tidy(render("c/kernel.h.j2", **ctx)),
    }
    if data:
        files[blob_name(ir.name)] = data
    return files


def cdef(name: str) -> str:
    """cffi declarations of the two exported functions of model ``name``."""
    return render("c/cdef.j2", name=name)


def compile_c(ir: ModelIR, *, openmp: bool = True, march_native: bool = True) -> CompiledKernel:
    """Generate, compile (cached) and load the C kernel of ``ir``.

    ``openmp``: build with ``-fopenmp`` if the compiler supports it (``kernel.openmp`` says
    whether it did); ``march_native`` (default on): add ``-march=native`` when the compiler
    accepts it, so the neighbour-batch loops use the CPU's widest SIMD (AVX2/AVX-512: about
    1.7x faster than the SSE2 baseline on the npj Cu potential, docs/performance.md).  The
    library is then tied to this CPU; the kernel cache key includes the expanded target, so
    another CPU model gets its own library.
    A cached library that fails to load or to verify is rebuilt once.
    """
    sources = emit_c(ir)
    toolchain = detect()
    flags = toolchain.flags(openmp=openmp, march_native=march_native)
    meta = kernel_meta(ir)
    decl = cdef(ir.name)
    path = build_library(sources, toolchain, flags)
    try:
        return CompiledKernel(path, ir.name, decl, **meta)
    except CompileError:
        path = build_library(sources, toolchain, flags, force=True)
        return CompiledKernel(path, ir.name, decl, **meta)


def build_emitted_c(folder: Path, *, openmp: bool = True, march_native: bool = True) -> Path:
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


__all__ = ["blob_name", "build_emitted_c", "cdef", "compile_c", "emit_c", "source_names"]
