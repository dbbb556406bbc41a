"""The basis evaluator a fit assembles its design matrix with: the generated C basis kernel
(:mod:`acegen.fit.assembly_kernel`) or, without a C compiler, the NumPy evaluator of the
package (:mod:`acegen.basis_eval`).  Contract: ``evaluator(atoms)`` returns a mapping with the
basis values of the structure (and, when asked for, their force and virial derivatives) —
see :mod:`acegen.fit.driver`."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..errors import FitError

BasisEvaluator = Callable[[Any], Mapping[str, np.ndarray]]


def make_basis_evaluator(basis, *, forces: bool = True, virial: bool = True, target: str = "auto",
                         nthreads: int = 0) -> BasisEvaluator:
    """Basis evaluator of a lowered basis (contract: module docstring).

    ``target="c"``: the generated basis kernel (:mod:`acegen.fit.assembly_kernel`: per atom the
    sparse Jacobian ∂B/∂A of the product basis, contracted per neighbour with ∂A/∂r_ij and
    scattered to force and virial rows), compiled through the kernel cache; ``nthreads`` goes
    to the kernel (1 serial, <= 0 the OpenMP default).  ``target="numpy"``: the NumPy
    evaluator, :meth:`acegen.basis_eval.BasisEvaluator.basis_derivatives` (``basis_values`` when neither forces
    nor virials are asked for); slow, for small data and checks.  ``"auto"``: C when a C
    compiler is found and the kernel builds, else NumPy (with a warning).  ``forces`` /
    ``virial`` select the returned blocks.
    """
    from ..errors import CompileError
    from ..jit.toolchain import find_c_compiler

    if target not in ("auto", "c", "numpy"):
        raise FitError(f"make_basis_evaluator: target must be 'auto', 'c' or 'numpy', got {target!r}")
    if target in ("auto", "c"):
        from .assembly_kernel import KernelBasisEvaluator, compile_basis

        if target == "c" or find_c_compiler(required=False) is not None:
            try:
                kernel = compile_basis(basis)
            except CompileError as e:
                if target == "c":
                    raise
                warnings.warn(f"basis kernel failed to build ({e}); using the slow NumPy reference evaluator",
                              RuntimeWarning, stacklevel=2)
            else:
                return KernelBasisEvaluator(kernel, basis.elements, forces=forces, virial=virial, nthreads=nthreads)
        else:
            warnings.warn("no C compiler found: using the slow NumPy reference basis evaluator", RuntimeWarning,
                          stacklevel=2)
    from ..basis_eval import BasisEvaluator

    ref = BasisEvaluator(basis)

    def evaluate(atoms) -> dict[str, np.ndarray]:
        if not (forces or virial):
            B, P = ref.basis_values(atoms)
            return {"energy": np.concatenate([B.sum(axis=0), P.sum(axis=0)])}
        e, f, v = ref.basis_derivatives(atoms)
        out = {"energy": e}
        if forces:
            out["forces"] = f
        if virial:
            out["virial"] = v
        return out

    return evaluate
