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
from ...ir.model import ModelIR
from ...jit.cache import build_library
from ...jit.load import CompiledKernel
from ...jit.toolchain import detect
from ..common import ABI_VERSION, R_MIN, STATUS_INDEX_KIND, ModelTables, Status, lower_model, render
from .printer import slp_body

#: Core-repulsion kinds the C templates implement (templates/c/core.c.j2).
SUPPORTED_CORE_KINDS = ("none", "density", "distance", "zbl")


#: Spline tables go into a little-endian float64 file linked with the assembler's ``.incbin``
#: (PACE-style tables reach millions of numbers; as C initialisers they would take minutes to
#: compile).  Each table starts on a multiple of this many doubles (64 bytes).
BLOB_ALIGN = 8


def _radial_context(zi: int, zj: int, t: ModelTables, blob: list[np.ndarray]) -> dict[str, Any]:
    """Template context of one bond's radial functions; spline tables are appended to ``blob``."""
    blk = t.ir.radial[(zi, zj)]
    if blk.slp is not None:
        if len(blk.slp.inputs) != 1:
            raise CompileError(f"radial SLP of bond ({zi}, {zj}) must have the single input r")
        return {"zi": zi, "zj": zj, "kind": "slp", "nfunc": blk.nfunc, "body": slp_body(blk.slp, ["r"], "out")}
    spl = blk.spline
    offset = sum(a.size for a in blob)
    table = np.ascontiguousarray(spl.coeffs, dtype="<f8").ravel()
    pad = (-table.size) % BLOB_ALIGN
    blob.append(np.concatenate([table, np.zeros(pad, dtype="<f8")]) if pad else table)
    return {
        "zi": zi,
        "zj": zj,
        "kind": "spline",
        "nfunc": blk.nfunc,
        "nbins": spl.nbins,
        "h": spl.h,
        "rcut": spl.rcut,
        "offset": offset,
    }


def _context(t: ModelTables) -> tuple[dict[str, Any], bytes]:
    """Template context and the spline-table blob (empty if the model has no spline)."""
    ir = t.ir
    species = []
    used_bonds: list[tuple[int, int]] = []
    kinds: set[str] = set()
    for st, prog in zip(t.species, ir.species):
        if prog.core.kind not in SUPPORTED_CORE_KINDS:
            raise CompileError(
                f"species {prog.zi}: core repulsion {prog.core.kind!r} is not implemented by the C backend yet "
                f"(supported: {', '.join(SUPPORTED_CORE_KINDS)})"
            )
        emb = prog.embedding
        kinds.add(emb.kind)
        params = [float(p) for p in emb.params]
        dag = st.dag
        bonds = []
        for b in st.bonds:
            used_bonds.append((b.zi, b.zj))
            bonds.append(
                {
                    "zj": b.zj,
                    "rcut": b.rcut,
                    "nfunc": b.nfunc,
                    "n_chan": b.n_channels,
                    "channels": b.channels,
                    "core": b.block.core,
                    "r_in": float(b.block.r_in),
                    "delta_in": float(b.block.delta_in),
                }
            )
        species.append(
            {
                "zi": prog.zi,
                "n_A": st.n_A,
                "n_nodes": dag.n_nodes,
                "n_products": dag.n_products,
                "left": dag.left,
                "right": dag.right,
                "n_out": int(dag.out_nodes.size),
                "out_node": dag.out_nodes,
                "out_coef": dag.out_coeffs,
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
    blob: list[np.ndarray] = []
    radials = [_radial_context(zi, zj, t, blob) for zi, zj in sorted(set(used_bonds))]
    data = np.concatenate(blob).astype("<f8").tobytes() if blob else b""
    ctx = {
        "name": ir.name,
        "blob_file": blob_name(ir.name) if data else None,
        "blob_doubles": len(data) // 8,
        "abi_version": ABI_VERSION,
        "r_min": R_MIN,
        "status": [(s.name, int(s), STATUS_INDEX_KIND.get(s, "none")) for s in Status],
        "signature": t.signature,
        "n_species": t.n_species,
        "n_y": t.n_y,
        "nfunc_max": t.nfunc_max,
        "nodes_max": t.nodes_max,
        "ndens_max": t.ndensity_max,
        "rcut": t.rcut,
        "angular_body": slp_body(ir.angular, ["x", "y", "z"], "out"),
        "radials": radials,
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


def compile_c(ir: ModelIR, *, openmp: bool = True, march_native: bool = False) -> CompiledKernel:
    """Generate, compile (cached) and load the C kernel of ``ir``.

    ``openmp``: build with ``-fopenmp`` if the compiler supports it (``kernel.openmp`` says
    whether it did); ``march_native``: add ``-march=native`` (library tied to this CPU).
    A cached library that fails to load or to verify is rebuilt once.
    """
    sources = emit_c(ir)
    toolchain = detect()
    flags = toolchain.flags(openmp=openmp, march_native=march_native)
    n = len(ir.elements)
    rcut = np.array([[ir.rcut(zi, zj) for zj in range(n)] for zi in range(n)], dtype=float)
    meta = {"n_species": n, "rcut": rcut, "signature": ir.signature(), "elements": ir.elements}
    decl = cdef(ir.name)
    path = build_library(sources, toolchain, flags)
    try:
        return CompiledKernel(path, ir.name, decl, **meta)
    except CompileError:
        path = build_library(sources, toolchain, flags, force=True)
        return CompiledKernel(path, ir.name, decl, **meta)


def build_emitted_c(folder: Path, *, openmp: bool = True, march_native: bool = False) -> Path:
    """Compile the C files of an emitted (possibly hand-edited) folder, outside the cache.

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


__all__ = ["SUPPORTED_CORE_KINDS", "blob_name", "build_emitted_c", "cdef", "compile_c", "emit_c", "source_names"]
