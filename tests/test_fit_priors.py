"""Smoothness priors (seed 003 eq. 10 and variants) against hand-evaluated formulas."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from acegen.fit import FitError
from acegen.fit.priors import basis_labels, prior_gamma, smoothness_prior
from acegen.spec import BasisSpec


@pytest.fixture()
def basis():
    """Two many-body functions and two pair functions with known (z, n, l) labels."""
    spec = BasisSpec(["Si", "C"], 3, 8)
    functions = [SimpleNamespace(factors=((0, 2, 0),)), SimpleNamespace(factors=((0, 1, 1), (1, 3, 1), (1, 2, 2)))]
    pair = [SimpleNamespace(z0=0, zj=1, n=1), SimpleNamespace(z0=1, zj=0, n=4)]
    return SimpleNamespace(spec=spec, functions=functions, pair=pair, n_params=4)


def test_labels(basis):
    assert basis_labels(basis) == [((0, 2, 0),), ((0, 1, 1), (1, 3, 1), (1, 2, 2)), ((1, 1, 0),), ((0, 4, 0),)]


def test_algebraic(basis):
    g = smoothness_prior(basis, "algebraic", p=4, wL=1.0)
    # Σ_t n^4 + l^4
    np.testing.assert_allclose(g, [16, (1 + 1) + (81 + 1) + (16 + 16), 1, 256])
    g = smoothness_prior(basis, "algebraic", p=2, wL=1.5, constant=1.0)
    np.testing.assert_allclose(g, [1 + 4, 1 + (1 + 1.5) + (9 + 1.5) + (4 + 6), 1 + 1, 1 + 16])


def test_exponential_and_gaussian(basis):
    g = smoothness_prior(basis, "exponential", al=1.5, an=0.5)
    np.testing.assert_allclose(g, [math.exp(1.0), math.exp(1.5 * 4 + 0.5 * 6), math.exp(0.5), math.exp(2.0)])
    g = smoothness_prior(basis, "gaussian", sigma_l=2.0, sigma_n=0.5)
    np.testing.assert_allclose(g, [math.exp(2.0), math.exp(2.0 * 6 + 0.5 * 14), math.exp(0.5), math.exp(8.0)])
    np.testing.assert_array_equal(smoothness_prior(basis, "none"), np.ones(4))


def test_errors(basis):
    with pytest.raises(FitError, match="kind must be one of"):
        smoothness_prior(basis, "cubic")
    with pytest.raises(FitError, match="unknown parameter 'sigma_l'"):
        smoothness_prior(basis, "algebraic", sigma_l=1.0)
    with pytest.raises(FitError, match="p must be positive"):
        smoothness_prior(basis, "algebraic", p=-1)


def test_prior_gamma_forms(basis):
    assert prior_gamma(None, basis) is None
    assert prior_gamma("none", basis) is None
    np.testing.assert_allclose(prior_gamma("algebraic", basis, 4), smoothness_prior(basis, "algebraic"))
    np.testing.assert_allclose(prior_gamma({"kind": "algebraic", "p": 2}, basis), smoothness_prior(basis, p=2))
    np.testing.assert_array_equal(prior_gamma([1.0, 2.0, 3.0], None, 3), [1.0, 2.0, 3.0])
    with pytest.raises(FitError, match="2 weights for 3 parameters"):
        prior_gamma([1.0, 2.0], None, 3)
    with pytest.raises(FitError, match="finite and > 0"):
        prior_gamma([1.0, 0.0], None, 2)
    with pytest.raises(FitError, match="needs a lowered basis"):
        prior_gamma("algebraic", None, 3)
