"""ASE calculator: energy, forces, stress and per-atom energies from a compiled kernel."""

from __future__ import annotations

import threading

import numpy as np
from ase.calculators.calculator import Calculator as _ASECalculator
from ase.calculators.calculator import PropertyNotImplementedError, all_changes

from .errors import AcegenError
from .runtime.neighbours import build_neighbours, compute_on, pair_results, species_indices


class Calculator(_ASECalculator):
    """``acegen.Calculator(model_or_path, target="c", nthreads=1, committee=False)``.

    ``model_or_path`` is an :class:`acegen.Model` or a path readable by :func:`acegen.load`
    (acegen JSON, PACE ``.yace`` / ``.ace`` / ``.yaml``).  Results: ``energy``,
    ``free_energy``, ``forces``, ``energies`` (per atom) and, for cells with a volume,
    ``stress`` (ASE Voigt order xx yy zz yz xz xy, eV/Å³).

    ``committee=True`` (a linear model with a committee, e.g. fitted with
    ``committee={"size": K}``) adds the committee spread: ``energy_std`` (eV),
    ``forces_std`` (n, 3) per force component (eV/Å), ``stress_std`` (6,) for cells with a
    volume, and ``energy_committee`` (K,) the member energies.  Each spread is
    sqrt(mean_k (X_k − X)²) over the members θ_k around the model's own prediction X.  The
    model is linear in θ, so one call of the generated basis kernel gives the rows B = ∂E/∂θ
    (and ∂F/∂θ, ∂V/∂θ) of the structure and all members follow from one matrix product
    (B·(θ_k − θ)); per-atom spreads are not computed (the kernel sums over atoms).  Off by
    default: plain evaluation pays nothing.
    ``active_set``: a pyace/pacemaker active-set file (``.asi``, linear or full, detected from
    its shapes) or an :class:`acegen.active.ActiveSet`; then ``gamma`` (the per-atom
    extrapolation grade γ_i = max_k |(b_i · ASI)_k|) is added to the results of every
    calculation, from a separately compiled projection kernel (the energy kernel and the
    other results do not change).  Needs a model with projections (PACE B-basis or GRACE-FS
    ``.yaml``, linear acegen model).

    A multilayer model (docs/multilayer.md) runs one kernel per layer with forces by reverse
    mode across the layers, and adds ``indicators``: the per-atom indicators θ^(2..n_layers),
    shape (n_atoms, n_layers − 1).

    Threads: one calculator may be shared by several threads.  Its state (the current
    structure and results) is guarded by a lock held from the start of a property request
    to its return, so each thread gets the results of its own structure; requests on one
    calculator are therefore serialised.  For parallel evaluation give each thread its own
    ``Calculator`` on the same model (the compiled kernel is shared and reentrant).
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress", "energy_std",
                              "energy_committee", "forces_std", "stress_std", "gamma", "indicators"]
    nolabel = True

    def __init__(self, model_or_path, target: str = "c", nthreads: int = 1, committee: bool = False,
                 active_set=None, **kwargs):
        super().__init__(**kwargs)
        from .model import Model, load

        self.model = model_or_path if isinstance(model_or_path, Model) else load(model_or_path)
        self.target = target
        self.nthreads = int(nthreads)
        self.kernel = self.model.compile(target)
        self._rcut = float(np.max(self.kernel.rcut))
        self._multilayer = getattr(self.model, "kind", "") == "multilayer"
        if self._multilayer and (committee or active_set is not None):
            raise AcegenError("a multilayer model has no committee or active set (extrapolation grade) yet")
        self._lock = threading.RLock()
        self._committee = None
        if committee:
            members = getattr(self.model, "committee", None)
            if members is None:
                raise AcegenError(f"model {self.model.name!r} has no committee (fit it with committee={{'size': K}} "
                                  "and a blr or ard solver)")
            from .fit.driver import make_basis_evaluator

            evaluator = make_basis_evaluator(self.model.basis, forces=True, virial=True, nthreads=self.nthreads)
            # deviations θ_k − θ: the spread is measured around the model's own prediction
            self._committee = (evaluator, np.asarray(members, dtype=float) - self.model.coefficients[None, :])
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
        if self._multilayer:
            from .runtime.multilayer import evaluate_multilayer

            res = evaluate_multilayer(self.kernel, self.model.elements, self.atoms, self.nthreads)
            for key in ("energy", "energies", "forces", "indicators"):
                self.results[key] = res[key]
            self.results["free_energy"] = res["energy"]
            if "stress" in res:
                self.results["stress"] = res["stress"]
            elif "stress" in properties:
                raise PropertyNotImplementedError("stress needs a cell with a non-zero volume")
            return
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
        if self._committee is not None:
            self.results.update(committee_spread(*self._committee, self.atoms, res["energy"]))
        if self.active_set is not None:
            from .active import atom_projections

            Z, rows = atom_projections(self.model, self.atoms, full=self.active_set.full, kernel=self._proj_kernel,
                                       nthreads=self.nthreads, nl=nl)
            self.results["gamma"] = self.active_set.gamma(self.model, Z, rows)
        elif "gamma" in properties:
            raise PropertyNotImplementedError("gamma needs an active set: Calculator(model, active_set='pot.asi')")


def committee_spread(evaluator, deviations: np.ndarray, atoms, energy: float) -> dict:
    """``energy_std``, ``energy_committee``, ``forces_std`` and (cells with a volume)
    ``stress_std`` of the committee θ_k = θ + ``deviations[k]`` from one call of the basis
    evaluator (rows ∂E/∂θ, ∂F/∂θ, ∂V/∂θ; see :class:`Calculator`)."""
    ev = evaluator(atoms)
    de = deviations @ np.asarray(ev["energy"], dtype=float)  # (K,)
    out = {"energy_std": float(np.sqrt(np.mean(de**2))), "energy_committee": energy + de}
    df = np.asarray(ev["forces"], dtype=float) @ deviations.T  # (n, 3, K)
    out["forces_std"] = np.sqrt(np.mean(df**2, axis=-1))
    vol = abs(np.linalg.det(atoms.cell.array)) if atoms.cell.rank == 3 else 0.0
    if vol > 1e-10 and "virial" in ev:
        dv = np.asarray(ev["virial"], dtype=float) @ deviations.T  # (3, 3, K)
        ds = 0.5 * (dv + dv.transpose(1, 0, 2)) / vol  # stress = −sym(V)/Ω; the sign drops out of the spread
        voigt = np.stack([ds[0, 0], ds[1, 1], ds[2, 2], ds[1, 2], ds[0, 2], ds[0, 1]])
        out["stress_std"] = np.sqrt(np.mean(voigt**2, axis=-1))
    return out


def evaluate(kernel, elements, atoms, rcut: float, nthreads: int = 1, nl=None) -> dict:
    """Energy, per-atom energies, forces (and stress for cells with a volume).  ``nl``: a
    neighbour list of ``atoms`` built with ``rcut`` (built here if None)."""
    Z = species_indices(atoms, elements)
    if nl is None:
        nl = build_neighbours(atoms, rcut)
    energies, dEdr = compute_on(kernel, Z, nl, nthreads)
    return pair_results(atoms, nl, energies, dEdr)
