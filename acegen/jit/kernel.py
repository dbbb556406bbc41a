"""The interface every compiled kernel implements (C, LLVM, CUDA and the NumPy interpreter).

Callers (the ASE calculator, the CLI, :class:`acegen.Model`) use only these members; they do
not probe a kernel for optional attributes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Kernel(Protocol):
    """A loaded ACE kernel.

    ``target``: the backend (``"c"``, ``"llvm"``, ``"cuda"``, ``"numpy"``); ``name``: the model
    name; ``elements``: the model's element symbols; ``n_species``; ``rcut``: (n_species,
    n_species) cutoffs, 0 where no radial block; ``signature``: the ModelIR's sha256;
    ``library_path``: the shared library the kernel was loaded from, None for a kernel that
    lives only in memory; ``cdef``: the C declarations of that library's exported functions
    (None without a library), what :class:`acegen.jit.load.CompiledKernel` needs to load it
    again.  :meth:`compute` is the kernel contract (docs/architecture.md).

    A kernel with indicator inputs (a multilayer layer n > 1, ``ModelIR.theta``) has
    ``theta = True`` and also ``compute_theta(species, offsets, nb_species, rij, theta_c,
    theta_nb, nthreads=1) -> (energies, dEdr, dEdtheta_c, dEdtheta_nb)``: the centres'
    indicators θ_i (n_centres,) and the neighbours' θ_j per pair (n_pairs,) in, ∂E_i/∂θ_i and
    ∂E_i/∂θ_j per pair out besides the energies and dE_i/dr_ij (the C symbol
    ``acegen_<name>_compute_theta``, docs/multilayer.md); its ``compute`` evaluates at θ = 0.
    """

    target: str
    name: str
    elements: tuple[str, ...]
    n_species: int
    rcut: np.ndarray
    signature: str
    library_path: Path | None
    cdef: str | None

    def compute(
        self, species: np.ndarray, offsets: np.ndarray, nb_species: np.ndarray, rij: np.ndarray, nthreads: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-atom energies (n_centres,) and dE_i/dr_ij (n_pairs, 3)."""
        ...


__all__ = ["Kernel"]
