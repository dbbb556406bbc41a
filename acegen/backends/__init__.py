"""Code-generating backends.

Each target lives in its own subpackage (``acegen.backends.c``, ``.cuda``, ``.llvm``, ...) with
a printer for :class:`~acegen.ir.slp.SLP` expressions and templates under ``templates/<target>/``;
:mod:`acegen.backends.common` holds what they share (ABI constants and status codes, the
Jinja2 environment, validated literal printers and the ModelIR lowering to kernel tables).

Target-independent entry points (used by the command line):

* :func:`emit` -- the generated files of a target, ``{file name: text}`` (``"c"``: the
  embeddable library folder of :mod:`acegen.backends.embed`; ``"cuda"``: the CUDA kernel,
  launcher and build files of :mod:`acegen.backends.cuda`);
* :func:`build_emitted` -- build a folder written by :func:`emit` (possibly hand-edited)
  into a shared library, outside the kernel cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import AcegenError
if TYPE_CHECKING:
    from ..ir.model import ModelIR

EMIT_TARGETS = ("c", "cuda", "lammps", "llvm")


def emit(ir: ModelIR, target: str = "c", *, model: object | None = None) -> dict[str, str | bytes]:
    """Generated files of ``ir`` for ``target`` (text, or bytes for binary tables).

    ``model`` (the high-level model object) is accepted so callers can pass it uniformly;
    the C target does not use it: everything it needs is in ``ir``.
    """
    if target == "c":
        from .embed import emit_embed

        return emit_embed(ir)
    if target == "cuda":
        from .cuda import emit_cuda

        return emit_cuda(ir)
    if target == "lammps":
        from .lammps import emit_lammps

        # the model (when given) also has the projection variant of a linear acegen model
        return emit_lammps(model if model is not None else ir)
    if target == "llvm":
        from .llvm import emit_llvm

        return emit_llvm(ir)
    raise AcegenError(f"target {target!r} cannot emit sources; choose one of {', '.join(EMIT_TARGETS)}")


def build_emitted(folder: Path, target: str = "c", *, portable: bool | None = None) -> Path:
    """Build the shared library of an emitted folder; returns its path.  ``portable``: the
    LAMMPS plugin is built for the compiler's default target instead of this CPU
    (:func:`acegen.backends.lammps.build_lammps`)."""
    if target == "c":
        from .embed import build_embed

        return build_embed(Path(folder))
    if target == "cuda":
        from .cuda import build_cuda

        return build_cuda(Path(folder))
    if target == "lammps":
        from .lammps import build_lammps

        return build_lammps(Path(folder), portable=portable)
    raise AcegenError(f"target {target!r} cannot build emitted sources; choose one of {', '.join(EMIT_TARGETS)}")
