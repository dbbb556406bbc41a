"""Active learning for PACE potentials: the extrapolation grade γ (D-optimality) of
Lysogorskiy, Bochkarev, Mrovec and Drautz (2023), as pyace and LAMMPS ML-PACE compute it.

* :mod:`.projections` — per-atom projection vectors b_i from a model's projection kernel
  (``Model.projection_kernel``): "linear" (the B-basis functions) or "full" (∂E_i/∂c_{f,p} =
  F'_p(ρ_p) b_f, index p·N_μ + f);
* :mod:`.maxvol` — MaxVol (Goreinov, Oseledets, Savostyanov, Tyrtyshnikov, Zamarashkin and
  Zamarashkin 2010) in NumPy: square selection and batched selection over many rows;
* :mod:`.activeset` — the active-set inverse (``.asi``, a NumPy ``.npz`` with one array per
  element), γ_i = max_k |(b_i · ASI_μ)_k|, building an active set from structures, and the
  D-optimal selection of candidate structures;
* :mod:`.variance` — the Bayesian predictive variance bᵀΣb of fitted linear models.
"""

from .activeset import ActiveSet, build_active_set, select_structures
from .maxvol import maxvol, maxvol_batched
from .projections import atom_projections
from .variance import predictive_variance

__all__ = ["ActiveSet", "atom_projections", "build_active_set", "maxvol", "maxvol_batched", "predictive_variance",
           "select_structures"]
