"""acegen: a symbolic code-generation compiler for Atomic Cluster Expansion potentials.

Public API: :class:`BasisSpec`, :class:`MultilayerSpec`, :func:`lower`, :class:`Model`, :func:`load`,
:class:`FSModel` (Finnis–Sinclair embeddings), :class:`Calculator`, :func:`fit`, :class:`AcegenError`.
"""

from __future__ import annotations

from .errors import AcegenError, CompileError, ModelFileError, SpecError, StructureError

from ._version import __version__

__all__ = [
    "AcegenError", "BasisSpec", "Calculator", "CompileError", "FSModel", "Model", "ModelFileError", "MultilayerSpec",
    "SpecError", "StructureError", "fit", "load", "lower", "__version__",
]


def __getattr__(name):  # lazy imports keep `import acegen` fast
    if name == "BasisSpec":
        from .spec import BasisSpec

        return BasisSpec
    if name == "MultilayerSpec":
        from .multilayer.spec import MultilayerSpec

        return MultilayerSpec
    if name == "lower":  # BasisSpec -> CoupledBasis, MultilayerSpec -> MultilayerBasis
        from .multilayer.basis import lower

        return lower
    if name in ("Model", "FSModel", "load"):
        from . import model

        return getattr(model, name)
    if name == "Calculator":
        from .calculator import Calculator

        return Calculator
    if name == "fit":
        from .fit import fit

        return fit
    raise AttributeError(f"module 'acegen' has no attribute {name!r}")
