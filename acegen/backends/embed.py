"""The embeddable C library: a self-contained folder that builds without Python.

``acegen emit MODEL --target c -o DIR`` writes (:func:`emit_embed`):

* ``acegen_<name>.h`` -- the public header: whole-structure interface (create / evaluate /
  destroy a model handle, or ``acegen_<name>_forces`` in one call: energy, per-atom energies,
  forces and virial from positions and a CSR neighbour list with integer cell images or
  Cartesian shifts), element lookup, cutoff, status strings; it includes
* ``acegen_<name>_kernel.h`` -- the C backend's kernel header (``acegen_<name>_compute`` and
  ``_info``, the ``ACEGEN_*`` status codes: the acegen kernel ABI);
* ``acegen_<name>.c`` (+ ``acegen_<name>.bin`` spline tables, if any) -- the C backend's kernel,
  unchanged; ``acegen_<name>_lib.c`` -- the whole-structure interface;
* ``Makefile`` and ``CMakeLists.txt`` -- shared and static library and the examples;
* ``example.c`` (C; a built-in periodic structure or one read from a text file),
  ``example.cpp`` (C++) and ``acegen_<name>.f90`` + ``example.f90`` (Fortran module with
  ``iso_c_binding`` interfaces, and an example using it).

:func:`build_embed` compiles the library's C files with the toolchain acegen itself uses (no
``make`` needed); :func:`cdef` gives cffi declarations of the whole interface.
Reference for users: ``docs/backend-c.md``.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import CompileError
from ..ir.model import ELEMENT_RE, ModelIR
from ..jit.toolchain import detect
from .common import ABI_VERSION, STATUS_INDEX_KIND, Status, c_identifier, render

#: One-line description of every status code (``acegen_<name>_status_string``).
STATUS_TEXT: dict[Status, str] = {
    Status.OK: "success",
    Status.BAD_CENTRE_SPECIES: "species index of a centre outside [0, n_species)",
    Status.BAD_NEIGHBOUR_SPECIES: "species index of a neighbour outside [0, n_species)",
    Status.OVERLAP: "two atoms closer than 1e-12 Angstrom",
    Status.NONFINITE: "a pair vector is NaN or infinite",
    Status.BAD_OFFSETS: "neighbour-list offsets negative or decreasing",
    Status.NO_MEMORY: "memory allocation failed",
    Status.BAD_ARGUMENT: "invalid argument (NULL pointer, negative count, or both images and shifts given)",
    Status.DEVICE_ERROR: "a CUDA runtime call failed",
    Status.BAD_NEIGHBOUR_INDEX: "neighbour index outside [0, n_atoms)",
}

#: Fortran identifiers have at most 63 characters: the module is ``acegen_<name>`` when that
#: fits, else ``acegen_model``.
FORTRAN_NAME_MAX = 63


def file_names(name: str) -> dict[str, str]:
    """The emitted folder's own files (besides the kernel's ``.c``/``.bin``) for model ``name``."""
    c_identifier(name)
    return {
        "header": f"acegen_{name}.h",
        "kernel_header": f"acegen_{name}_kernel.h",
        "library": f"acegen_{name}_lib.c",
        "fortran": f"acegen_{name}.f90",
    }


def fortran_module_name(name: str) -> str:
    """Name of the Fortran module for model ``name``."""
    module = f"acegen_{name}"
    return module if len(module) <= FORTRAN_NAME_MAX else "acegen_model"


def emit_embed(ir: ModelIR) -> dict[str, str | bytes]:
    """All files of the embeddable library folder of ``ir`` (file name -> text, or bytes for
    the spline tables)."""
    from .common import refuse_indicator_inputs

    refuse_indicator_inputs(ir, "embeddable-library")
    from .c import emit_c, source_names

    if ir.output != "energy":
        raise CompileError("the embeddable library has no projection variant (extrapolation grade); use the ASE calculator")
    kernel = emit_c(ir)
    names = file_names(ir.name)
    _, c_header = source_names(ir.name)
    if c_header not in kernel:
        raise CompileError(f"the C backend did not emit {c_header}")
    for e in ir.elements:
        if not ELEMENT_RE.match(e):
            raise CompileError(f"invalid element symbol {e!r}")
    for text in STATUS_TEXT.values():
        if any(ch in text for ch in '"\\\n'):
            raise CompileError(f"status text must not contain quotes, backslashes or newlines: {text!r}")
    files: dict[str, str | bytes] = {}
    for fname, data in kernel.items():
        files[names["kernel_header"] if fname == c_header else fname] = data
    sources = sorted(f for f in files if f.endswith(".c")) + [names["library"]]
    n = len(ir.elements)
    ctx = {
        "name": ir.name,
        "elements": list(ir.elements),
        "n_species": n,
        "rcut_max": float(max(ir.rcut(a, b) for a in range(n) for b in range(n))),
        "abi_version": ABI_VERSION,
        "status": [(s.name, int(s), STATUS_INDEX_KIND.get(s, "none")) for s in Status],
        "status_text": [(s.name, int(s), STATUS_INDEX_KIND.get(s, "none"), STATUS_TEXT[s]) for s in Status],
        "sources": sources,
        "headers": [names["header"], names["kernel_header"]],
        "data_files": sorted(f for f, d in files.items() if isinstance(d, bytes)),
        "fortran_module": names["fortran"],
        "module": fortran_module_name(ir.name),
    }
    files[names["header"]] = render("embed/header.h.j2", **ctx)
    files[names["library"]] = render("embed/library.c.j2", **ctx)
    files["Makefile"] = render("embed/Makefile.j2", **ctx)
    files["CMakeLists.txt"] = render("embed/CMakeLists.txt.j2", **ctx)
    files["example.c"] = render("embed/example.c.j2", **ctx)
    files["example.cpp"] = render("embed/example.cpp.j2", **ctx)
    files[names["fortran"]] = render("embed/fortran.f90.j2", **ctx)
    files["example.f90"] = render("embed/example.f90.j2", **ctx)
    return files


def cdef(name: str) -> str:
    """cffi declarations of the embeddable library of model ``name`` (kernel + library API)."""
    return render("embed/cdef.j2", name=name)


def build_embed(folder: Path, *, openmp: bool = True, march_native: bool = False) -> Path:
    """Compile an emitted (possibly hand-edited) library folder into
    ``folder/libacegen_<name>.so`` with acegen's C toolchain; returns its path.

    The folder must hold exactly one public header ``acegen_<name>.h`` with its
    ``acegen_<name>_kernel.h``; every ``acegen_<name>*.c`` is compiled.
    """
    folder = Path(folder).resolve()
    kernel_headers = sorted(folder.glob("acegen_*_kernel.h"))
    if len(kernel_headers) != 1:
        raise CompileError(f"{folder}: expected one acegen_<name>_kernel.h (an emitted --target c folder), "
                           f"found {len(kernel_headers)}")
    name = kernel_headers[0].name[len("acegen_"):-len("_kernel.h")]
    sources = sorted(p for p in folder.glob(f"acegen_{name}*.c"))
    if not sources:
        raise CompileError(f"{folder}: no acegen_{name}*.c sources")
    toolchain = detect()
    out = folder / f"libacegen_{name}.so"
    toolchain.compile_shared(sources, out, toolchain.flags(openmp=openmp, march_native=march_native))
    return out


__all__ = ["STATUS_TEXT", "build_embed", "cdef", "emit_embed", "file_names", "fortran_module_name"]
