"""Fitting linear ACE models (Witt et al. 2023, §II D–F): data, design matrix, priors, solvers.

Layers, each usable on its own:

* :mod:`acegen.fit.data` — read extxyz structures, extract energies / forces / virials by
  key, reference energies (Eref), per-``config_type`` weights → :class:`TrainingSet`;
  :func:`assemble` builds the design matrix ``(A, y, w, row_meta)`` from a
  ``basis_evaluator(atoms)`` (the only interface to the basis).
* :mod:`acegen.fit.priors` — smoothness priors Γ (algebraic, exponential, Gaussian).
* :mod:`acegen.fit.solvers` — QR, LSQR, RRQR, BLR (evidence maximisation), ARD and
  posterior committees.
* :mod:`acegen.fit.errors_table`, :mod:`acegen.fit.plots` — RMSE/MAE tables, parity plots,
  dimer curves.
* :mod:`acegen.fit.stream` — streaming assembly: blocks of structures folded into the
  triangular factor of the weighted system (memory O(M² + one block)), in worker processes
  or on Dask, with resumable checkpoints.
* :mod:`acegen.fit.config`, :mod:`acegen.fit.driver` — the YAML config and
  :func:`fit` / :func:`fit_from_config`.
* :mod:`acegen.fit.nonlinear` — non-linear least squares over a :class:`ResidualModel`
  (Levenberg–Marquardt, L-BFGS); :mod:`acegen.fit.fs` — Finnis–Sinclair fits
  (``acegen.fit(..., embedding=..., ndensity=..., solver="lm")`` → :class:`acegen.FSModel`).

``acegen.fit`` is both this package and the function :func:`acegen.fit.driver.fit`:
calling the module, ``acegen.fit(spec, structures, ...)``, calls the function (the module's
class is a callable ``ModuleType`` subclass), so ``acegen.fit.solvers`` and
``acegen.fit(...)`` both work whichever is touched first.
"""

from __future__ import annotations

import sys
import types

from ..errors import ConfigError, FitError, TargetError
from .data import (
    LazyTrainingSet,
    RowMeta,
    StructureData,
    TrainingSet,
    assemble,
    load_training_set,
    read_pacemaker,
    read_structures,
    resolve_weights,
)
from .driver import FitReport, fit, fit_from_config, fit_linear, make_basis_evaluator
from .errors_table import error_table, format_error_table, save_error_table
from .nonlinear import ResidualModel, Residuals, fit_nonlinear
from .priors import smoothness_prior
from .solvers import Committee, FitResult, solve, solve_compressed

__all__ = [
    "Committee", "ConfigError", "FitError", "FitReport", "FitResult", "LazyTrainingSet", "RowMeta", "StructureData",
    "ResidualModel", "Residuals", "TargetError", "TrainingSet", "assemble", "error_table", "fit", "fit_from_config",
    "fit_linear", "fit_nonlinear", "format_error_table", "load_training_set", "make_basis_evaluator",
    "read_pacemaker", "read_structures", "resolve_weights", "save_error_table", "smoothness_prior", "solve",
    "solve_compressed",
]


class _CallableModule(types.ModuleType):
    """Module type whose instances forward calls to :func:`acegen.fit.driver.fit`."""

    def __call__(self, *args, **kwargs):
        return fit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
