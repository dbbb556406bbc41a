"""Code-generating backends.

Each target lives in its own subpackage (``acegen.backends.c`` now; CUDA and LLVM later) with
a printer for :class:`~acegen.ir.slp.SLP` expressions and templates under ``templates/<target>/``;
:mod:`acegen.backends.common` holds what they share (ABI constants and status codes, the
Jinja2 environment, validated literal printers and the ModelIR lowering to kernel tables).

Target-independent entry points (used by the command line):

* :func:`emit` -- the generated files of a target, ``{file name: text}``;
* :func:`build_emitted` -- build a folder written by :func:`emit` (possibly hand-edited)
  into a shared library, outside the kernel cache.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import AcegenError
from ..ir.model import ModelIR

EMIT_TARGETS = ("c", "lammps")


def emit(ir: ModelIR, target: str = "c", *, model: object | None = None) -> dict[str, str | bytes]:
    """Generated files of ``ir`` for ``target`` (text, or bytes for binary tables).

    ``model`` (the high-level model object) is accepted so callers can pass it uniformly;
    the C target does not use it: everything it needs is in ``ir``.
    """
    if target == "c":
        from .c import emit_c

        return emit_c(ir)
    if target == "lammps":
        from .lammps import emit_files

        return emit_files(ir)
    raise AcegenError(f"target {target!r} cannot emit sources; choose one of {', '.join(EMIT_TARGETS)}")


def build_emitted(folder: Path, target: str = "c") -> Path:
    """Build the shared library of an emitted folder; returns its path."""
    if target == "c":
        from .c import build_emitted_c

        return build_emitted_c(Path(folder))
    if target == "lammps":
        from .lammps import build_lammps_plugin

        return build_lammps_plugin(Path(folder))
    raise AcegenError(f"target {target!r} cannot build emitted sources; choose one of {', '.join(EMIT_TARGETS)}")
