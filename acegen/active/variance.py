"""Bayesian predictive variance of fitted linear models, the statistical companion of γ.

A linear model's energy is E = Σ_i (E0 + θ · b_i) with b_i the basis functions of atom i
(the projections of :func:`~acegen.active.projections.atom_projections`); a Bayesian fit
(BLR, ARD: ``model.fit_report.result.covariance``) gives the posterior covariance Σ of θ.  The
predictive variance of atom i's energy is b_iᵀ Σ b_i, that of the total energy
(Σ_i b_i)ᵀ Σ (Σ_i b_i) (without the noise term).
"""

from __future__ import annotations

import numpy as np

from ..errors import FitError
from .projections import atom_projections


def predictive_variance(model, atoms, covariance=None, *, target: str = "c", kernel=None):
    """(per-atom variances (n_atoms,), variance of the total energy) of a linear model.
    ``covariance``: the (n_params, n_params) posterior covariance (default: the model's
    ``fit_report.result.covariance``)."""
    basis = getattr(model, "basis", None)
    if basis is None or not hasattr(basis, "projection_params"):
        raise FitError("predictive variance needs a linear acegen model")
    if covariance is None:
        report = getattr(model, "fit_report", None)
        covariance = None if report is None else report.result.covariance
        if covariance is None:
            raise FitError("predictive variance needs a posterior covariance: fit with solver 'blr' or 'ard', "
                           "or pass covariance=")
    cov = np.asarray(covariance, dtype=float)
    n = basis.n_params
    if cov.shape != (n, n) or not np.all(np.isfinite(cov)):
        raise FitError(f"covariance must be a finite ({n}, {n}) matrix, got shape {cov.shape}")
    Z, rows = atom_projections(model, atoms, target=target, kernel=kernel)
    per_atom = np.zeros(len(Z))
    total = np.zeros(n)
    for mu, b in enumerate(rows):
        idx = basis.projection_params(mu)
        sub = cov[np.ix_(idx, idx)]
        per_atom[np.flatnonzero(Z == mu)] = np.einsum("if,fg,ig->i", b, sub, b)
        total[idx] += b.sum(axis=0)
    return per_atom, float(total @ cov @ total)
