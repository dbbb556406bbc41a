"""Kernel selection: one interface over every backend.

Every kernel implements :class:`acegen.jit.kernel.Kernel`: ``compute(species, offsets,
nb_species, rij, nthreads=1) -> (energies, dEdr)`` (see :mod:`acegen.ir.interp` for the
semantics), ``elements``, ``rcut``, ``signature``, ``library_path`` ...
"""

from __future__ import annotations

import numpy as np

from ..errors import AcegenError
from ..ir.interp import evaluate_ir, evaluate_projections
from ..ir.model import ModelIR

TARGETS = ("c", "llvm", "cuda", "numpy")


class NumpyKernel:
    """The IR interpreter as a kernel (slow; for debugging and tests)."""

    target = "numpy"
    library_path = None
    cdef = None

    def __init__(self, ir: ModelIR):
        self.ir = ir
        self.name = ir.name
        self.elements = ir.elements
        n = len(ir.elements)
        self.n_species = n
        self.signature = ir.signature()
        self.rcut = np.array([[ir.rcut(zi, zj) for zj in range(n)] for zi in range(n)], dtype=float)
        self.out_width = ir.projection_width if ir.output == "projections" else 1

    def compute(self, species, offsets, nb_species, rij, nthreads: int = 1):
        if self.ir.output == "projections":
            out = evaluate_projections(self.ir, species, offsets, nb_species, rij)
            return out, np.zeros((len(np.asarray(nb_species)), 3))
        return evaluate_ir(self.ir, species, offsets, nb_species, rij)


def compile_ir(ir: ModelIR, target: str = "c", **options):
    """Compile a ModelIR for ``target`` ('c', 'llvm', 'cuda' (needs a GPU) or 'numpy')."""
    if target not in TARGETS:
        raise AcegenError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    if target == "numpy":
        return NumpyKernel(ir)
    if target == "cuda":
        if ir.output != "energy":
            raise AcegenError("the CUDA target has no projection variant (extrapolation grade); use target 'c' or 'llvm'")
        from ..backends.cuda import compile_cuda

        return compile_cuda(ir, **options)
    if target == "c":
        from ..backends.c import compile_c
        from ..jit.toolchain import find_c_compiler

        if find_c_compiler(required=False) is None:
            import warnings

            warnings.warn("no C compiler found; using the LLVM backend instead", stacklevel=2)
            target = "llvm"
        else:
            return compile_c(ir, **options)
    if target == "llvm":
        from ..backends.llvm import compile_llvm

        return compile_llvm(ir, **options)
    raise AssertionError(target)
