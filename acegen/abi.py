"""The kernel ABI shared by the code generators (:mod:`acegen.backends`) and the loaders
(:mod:`acegen.jit`): the interface version, the minimum pair distance and the status codes.

Kernels with indicator inputs (multilayer ACE, layers n > 1; C, LLVM and CUDA) also export
``acegen_<name>_compute_theta`` (the arguments of ``compute`` plus ``theta_c``, ``theta_nb``
in and ``dEdtheta_c``, ``dEdtheta_nb`` out; docs/multilayer.md) with the same status codes: a
non-finite θ_j is ``NONFINITE`` (pair index), a non-finite θ_i ``BAD_ARGUMENT`` (atom index).

It sits in the bottom layer (next to :mod:`acegen.errors`) so that the loaders can check a
library without importing a code generator.
"""

from __future__ import annotations

import enum

#: Version of the exported kernel interface (function names, argument lists, status codes,
#: ``info`` outputs).  Bump on any change; the loader refuses a library with another version.
ABI_VERSION = 1

#: Pairs closer than this (Å) are rejected as overlapping atoms (Status.OVERLAP).
R_MIN = 1e-12


class Status(enum.IntEnum):
    """Return codes of ``acegen_<name>_compute``; the comment says what ``*err_index`` holds."""

    OK = 0
    BAD_CENTRE_SPECIES = 1  # atom index: species[i] outside [0, n_species)
    BAD_NEIGHBOUR_SPECIES = 2  # pair index: nb_species[k] outside [0, n_species)
    OVERLAP = 3  # pair index: |r_ij| < R_MIN
    NONFINITE = 4  # pair index: a component of r_ij is NaN or infinite
    BAD_OFFSETS = 5  # atom index: offsets[i] < 0 or offsets[i+1] < offsets[i]
    NO_MEMORY = 6  # atom index: workspace allocation failed
    BAD_ARGUMENT = 7  # -1: negative n_centres or a NULL pointer
    DEVICE_ERROR = 8  # the cudaError_t value: a CUDA runtime call failed (CUDA target only)
    BAD_NEIGHBOUR_INDEX = 9  # pair index: neighbours[k] outside [0, n_atoms) (embeddable library only)


#: Which index ``*err_index`` names for each failing status.
STATUS_INDEX_KIND: dict[Status, str] = {
    Status.BAD_CENTRE_SPECIES: "atom",
    Status.BAD_NEIGHBOUR_SPECIES: "pair",
    Status.OVERLAP: "pair",
    Status.NONFINITE: "pair",
    Status.BAD_OFFSETS: "atom",
    Status.NO_MEMORY: "atom",
    Status.BAD_ARGUMENT: "none",
    Status.DEVICE_ERROR: "cuda_error",
    Status.BAD_NEIGHBOUR_INDEX: "pair",
}
