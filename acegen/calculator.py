"""ASE calculator: energy, forces, stress and per-atom energies from a compiled kernel."""

from __future__ import annotations

import threading

import numpy as np
from ase.calculators.calculator import Calculator as _ASECalculator
from ase.calculators.calculator import PropertyNotImplementedError, all_changes

from .errors import StructureError
from .runtime.neighbours import build_neighbours, scatter_forces_virial, species_indices


class Calculator(_ASECalculator):
    """``acegen.Calculator(model_or_path, target="c", nthreads=1)``.

    ``model_or_path`` is an :class:`acegen.Model` or a path readable by :func:`acegen.load`
    (acegen JSON, PACE ``.yace`` / ``.ace`` / ``.yaml``).  Results: ``energy``,
    ``free_energy``, ``forces``, ``energies`` (per atom) and, for cells with a volume,
    ``stress`` (ASE Voigt order xx yy zz yz xz xy, eV/Å³).

    ``active_set``: a pyace/pacemaker active-set file (``.asi``, linear or full, detected from
    its shapes) or an :class:`acegen.active.ActiveSet`; then ``gamma`` (the per-atom
    extrapolation grade γ_i = max_k |(b_i · ASI)_k|) is added to the results of every
    calculation, from a separately compiled projection kernel (the energy kernel and the
    other results do not change).  Needs a model with B-basis projections (PACE ``.yaml``).

    Threads: one calculator may be shared by several threads.  Its state (the current
    structure and results) is guarded by a lock held from the start of a property request
    to its return, so each thread gets the results of its own structure; requests on one
    calculator are therefore serialised.  For parallel evaluation give each thread its own
    ``Calculator`` on the same model (the compiled kernel is shared and reentrant).
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress", "gamma"]
    nolabel = True

    def __init__(self, model_or_path, target: str = "c", nthreads: int = 1, active_set=None, **kwargs):
        super().__init__(**kwargs)
        from .model import Model, load

        self.model = model_or_path if isinstance(model_or_path, Model) else load(model_or_path)
        self.target = target
        self.nthreads = int(nthreads)
        self.kernel = self.model.compile(target)
        self._rcut = float(np.max(self.kernel.rcut))
        self._lock = threading.RLock()
        self.active_set = None
        self._proj_kernel = None
        if active_set is not None:
            from .active import ActiveSet

            self.active_set = active_set if isinstance(active_set, ActiveSet) else ActiveSet.load(active_set, self.model)
            self._proj_kernel = self.model.projection_kernel(target)

    def get_property(self, name, atoms=None, allow_calculation=True):
        # ASE's get_property checks the state, calls calculate and reads self.results: the
        # whole sequence must see one structure
        with self._lock:
            return super().get_property(name, atoms, allow_calculation)

    def reset(self):
        lock = getattr(self, "_lock", None)  # ASE calls reset from __init__, before the lock exists
        if lock is None:
            return super().reset()
        with lock:
            return super().reset()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        with self._lock:
            self._calculate(atoms, properties, system_changes)

    def _calculate(self, atoms, properties, system_changes):
        super().calculate(atoms, properties, system_changes)
        nl = build_neighbours(self.atoms, self._rcut) if self.active_set is not None else None
        res = evaluate(self.kernel, self.model.elements, self.atoms, self._rcut, self.nthreads, nl=nl)
        self.results["energy"] = res["energy"]
        self.results["free_energy"] = res["energy"]
        self.results["energies"] = res["energies"]
        self.results["forces"] = res["forces"]
        if "stress" in res:
            self.results["stress"] = res["stress"]
        elif "stress" in properties:
            raise PropertyNotImplementedError("stress needs a cell with a non-zero volume")
        if self.active_set is not None:
            from .active import atom_projections

            Z, rows = atom_projections(self.model, self.atoms, full=self.active_set.full, kernel=self._proj_kernel,
                                       nthreads=self.nthreads, nl=nl)
            self.results["gamma"] = self.active_set.gamma(self.model, Z, rows)
        elif "gamma" in properties:
            raise PropertyNotImplementedError("gamma needs an active set: Calculator(model, active_set='pot.asi')")


def evaluate(kernel, elements, atoms, rcut: float, nthreads: int = 1, nl=None) -> dict:
    """Energy, per-atom energies, forces (and stress for cells with a volume).  ``nl``: a
    neighbour list of ``atoms`` built with ``rcut`` (built here if None)."""
    Z = species_indices(atoms, elements)
    if nl is None:
        nl = build_neighbours(atoms, rcut)
    nbs = np.ascontiguousarray(Z[nl.j], dtype=np.int32)
    try:
        energies, dEdr = kernel.compute(Z, nl.offsets, nbs, nl.rij, nthreads=nthreads)
    except StructureError as e:
        if e.pair is None or not 0 <= e.pair < nl.n_pairs:
            raise
        p = e.pair
        raise StructureError(f"{e} (atoms {int(nl.i[p])} and {int(nl.j[p])})", pair=p) from None
    F, W = scatter_forces_virial(nl, dEdr)
    out = {"energy": float(np.sum(energies)), "energies": np.asarray(energies), "forces": F}
    vol = abs(np.linalg.det(atoms.cell.array)) if atoms.cell.rank == 3 else 0.0
    if vol > 1e-10:
        s = 0.5 * (W + W.T) / vol
        out["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
    if not np.isfinite(out["energy"]) or not np.isfinite(F).all():
        raise StructureError("the model produced a non-finite energy or force for this structure")
    return out
