"""Smoothness priors Γ = diag(γ_k) for the fit (Witt et al. 2023, §II C, eq. 10 and its variants).

Every linear parameter is labelled by the multiset of its one-particle factors
(z_t, n_t, l_t), t = 1..ν (a pair-basis function P_n is the single factor (z_j, n, 0), as in
ACEpotentials).  The weights are those of :func:`acegen.symbolic.selection.smoothness_prior`:

    algebraic    γ = c + Σ_t (n_t^p + wL · l_t^p)                       p = 4, wL = 1
    exponential  γ = c + exp(al · Σ_t l_t + an · Σ_t n_t)               al = an = 1
    gaussian     γ = c + exp(sigma_l · Σ_t l_t² + sigma_n · Σ_t n_t²)   sigma_l = sigma_n = 2

(c = ``constant``, default 0; ACE1x adds 1).  The prior enters the fit as the Tikhonov
operator of eq. (12), λ‖Γc‖², or as the prior covariance Σ₀ = α⁻¹Γ⁻² of eqs. (14)–(15).

ACEpotentials ≥ 0.8 writes the algebraic prior as Σ_t (n_t/wn)^p + (l_t/wl)^p (p = 4,
wl = 2/3, wn = 1); that is this one times wn^-p with wL = (wn/wl)^p (≈ 5.06 for its defaults),
and a global factor of Γ only rescales λ (absorbed by the BLR hyperparameter α).  Its
exponential prior exp(Σ l/wl + n/wn) is al = 1/wl, an = 1/wn; its Gaussian prior
exp(Σ (l/wl)² + (n/wn)²) is sigma_l = 1/wl², sigma_n = 1/wn².
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import FitError

__all__ = ["PRIOR_KINDS", "PRIOR_PARAMS", "basis_labels", "smoothness_prior", "prior_gamma"]

PRIOR_KINDS = ("algebraic", "exponential", "gaussian", "none")
PRIOR_PARAMS: dict[str, tuple[str, ...]] = {
    "algebraic": ("p", "wL", "constant"),
    "exponential": ("al", "an", "constant"),
    "gaussian": ("sigma_l", "sigma_n", "constant"),
    "none": (),
}


def basis_labels(basis) -> list[tuple[tuple[int, int, int], ...]]:
    """One factor multiset per linear parameter of a lowered basis, in parameter order
    (many-body functions, then the pair basis)."""
    labels = [tuple(f.factors) for f in basis.functions]
    labels += [((p.zj, p.n, 0),) for p in basis.pair]
    return labels


def smoothness_prior(basis, kind: str = "algebraic", **params: float) -> np.ndarray:
    """γ (one weight per linear parameter of ``basis``) for the given prior kind; ``'none'``
    gives ones (Γ = I).  Parameters: see the module docstring."""
    if kind not in PRIOR_KINDS:
        raise FitError(f"prior: kind must be one of {list(PRIOR_KINDS)}, got {kind!r}")
    unknown = sorted(set(params) - set(PRIOR_PARAMS[kind]))
    if unknown:
        raise FitError(f"prior {kind!r}: unknown parameter {unknown[0]!r} (allowed: {list(PRIOR_PARAMS[kind])})")
    if kind == "none":
        return np.ones(basis.n_params)
    from ..errors import SpecError
    from ..symbolic.selection import smoothness_prior as _gamma

    try:
        gamma = np.asarray(_gamma(basis.spec, basis_labels(basis), kind, **params), dtype=float)
    except SpecError as e:
        raise FitError(f"prior {kind!r}: {e}") from None
    return gamma


def prior_gamma(prior: Any, basis=None, n_params: int | None = None) -> np.ndarray | None:
    """Resolve a user prior into γ (or None for Γ = I).

    ``prior`` may be None / ``'none'``, a kind name (``'algebraic'``, ...), a mapping
    ``{"kind": ..., **params}`` (needs ``basis``), or an explicit array of n_params positive
    weights."""
    if prior is None:
        return None
    if isinstance(prior, str):
        prior = {"kind": prior}
    if isinstance(prior, Mapping):
        opts = dict(prior)
        kind = opts.pop("kind", "algebraic")
        if kind == "none":
            return None
        if basis is None:
            raise FitError(f"prior {kind!r} needs a lowered basis (or pass the weights as an array)")
        gamma = smoothness_prior(basis, kind, **opts)
    else:
        gamma = np.asarray(prior, dtype=float)
        if gamma.ndim != 1:
            raise FitError(f"prior: an explicit prior must be a vector of weights, got shape {gamma.shape}")
    if n_params is not None and gamma.shape != (n_params,):
        raise FitError(f"prior: {gamma.shape[0]} weights for {n_params} parameters")
    if not (np.isfinite(gamma).all() and (gamma > 0).all()):
        raise FitError("prior: weights must be finite and > 0 (add a constant for p-priors with zero weights)")
    return gamma
