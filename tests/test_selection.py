"""Tests of acegen.symbolic.selection: one-particle basis, multisets, counts, priors."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from fractions import Fraction
from itertools import groupby

import numpy as np
import pytest

from acegen.errors import SpecError
from acegen.spec import BasisSpec
from acegen.symbolic.selection import (
    degree,
    max_l,
    one_particle_basis,
    select_multisets,
    smoothness_prior,
)


# ------------------------------------------------------------------ independent invariant counter
# Characters of SO(3) irreps as Laurent polynomials in q = e^{i theta}: chi_l = sum_{m=-l}^{l} q^m.
# The multiplicity of the trivial irrep in a representation with character chi equals
# [q^0] chi - [q^1] chi.  Repeated identical factors are symmetrised: the character of
# Sym^k V is the cycle-index average (1/k!) sum_{sigma in S_k} prod_{cycles c} chi(g^{|c|}).
def _chi(l):
    return {m: Fraction(1) for m in range(-l, l + 1)}


def _mul(a, b):
    c = {}
    for i, x in a.items():
        for j, y in b.items():
            c[i + j] = c.get(i + j, 0) + x * y
    return c


def _partitions(n, maxp=None):
    maxp = n if maxp is None else maxp
    if n == 0:
        yield []
        return
    for p in range(min(n, maxp), 0, -1):
        for rest in _partitions(n - p, p):
            yield [p] + rest


def _sym_power(ch, k):
    tot = {}
    for lam in _partitions(k):
        z = 1
        for part, mult in Counter(lam).items():
            z *= part**mult * math.factorial(mult)
        prod = {0: Fraction(1)}
        for part in lam:
            prod = _mul(prod, {i * part: x for i, x in ch.items()})
        for i, x in prod.items():
            tot[i] = tot.get(i, 0) + x / z
    return tot


def n_invariants(multiset):
    """Number of O(3)-invariant couplings of a multiset of (z, n, l) factors."""
    if sum(f[2] for f in multiset) % 2:
        return 0
    ch = {0: Fraction(1)}
    for f, grp in groupby(sorted(multiset)):
        ch = _mul(ch, _sym_power(_chi(f[2]), len(list(grp))))
    val = ch.get(0, 0) - ch.get(1, 0)
    assert val.denominator == 1
    return int(val)


def test_invariant_counter_sanity():
    assert n_invariants(((0, 1, 1), (0, 2, 1))) == 1
    assert n_invariants(((0, 1, 1), (0, 1, 2))) == 0
    assert n_invariants(((0, 1, 2), (0, 1, 2), (0, 1, 2))) == 1     # Sym^3 V_2 has one invariant
    assert n_invariants(((0, 1, 1), (0, 2, 1), (0, 3, 1))) == 0     # odd parity
    assert n_invariants(((0, 1, 2), (0, 2, 2), (0, 3, 2))) == 1
    assert n_invariants(((0, 1, 2), (0, 2, 2), (0, 3, 2), (0, 4, 2))) == 5
    # Sym^4 V_2 (traceless symmetric 3x3 A): only tr(A^2)^2, since tr A^4 = (tr A^2)^2 / 2
    assert n_invariants(((0, 1, 2),) * 4) == 1


# ------------------------------------------------------------------ brute force selection
def _brute(spec):
    w = Fraction(repr(spec.wL))
    dmax = max(Fraction(repr(float(d))) for d in spec.totaldegree)
    facs = [(z, n, l) for z in range(spec.nelements) for n in range(1, 200) for l in range(0, 200)
            if n + w * l <= dmax]
    out = []
    for nu in range(1, spec.order + 1):
        d = Fraction(repr(float(spec.totaldegree[nu - 1])))
        for m in itertools.combinations_with_replacement(sorted(facs), nu):
            ls = [f[2] for f in m]
            if sum(f[1] + w * f[2] for f in m) > d:
                continue
            if nu == 1 and ls[0] != 0:
                continue
            if sum(ls) % 2 or 2 * max(ls) > sum(ls):
                continue
            out.append(m)
    return out


@pytest.mark.parametrize("spec", [
    BasisSpec(["Cu"], 3, 10),
    BasisSpec(["Cu", "Ni"], 3, [9, 8, 6]),
    BasisSpec(["Cu"], 4, [8, 8, 7, 6], wL=1.0),
    BasisSpec(["Cu"], 3, [8, 7.3, 6.6], wL=1.1),
])
def test_select_multisets_equals_brute_force(spec):
    got = select_multisets(spec)
    ref = _brute(spec)
    assert len(got) == len(set(got))
    assert set(got) == set(ref)
    for m in got:
        assert list(m) == sorted(m)
    keys = [(len(m), Fraction(repr(degree(m, spec.wL))), m) for m in got]
    assert keys == sorted(keys)
    assert spec.lmax == max_l(got)


@pytest.mark.parametrize("order, D, expected", [(2, 8, 31), (3, 10, 110), (3, 12, 211), (4, 10, 156)])
def test_basis_size_matches_acepotentials(order, D, expected):
    """Counts of ace1_model (one element, wL = 1.5, pair basis apart; reference notes)."""
    spec = BasisSpec(["Si"], order, D)
    ms = select_multisets(spec)
    counts = [n_invariants(m) for m in ms]
    assert sum(counts) == expected
    assert min(counts) >= 1   # every selected multiset carries at least one invariant


def test_triangle_rule_drops_only_zero_invariant_multisets():
    spec = BasisSpec(["Cu"], 3, 11)
    kept = set(select_multisets(spec))
    w = Fraction(3, 2)
    facs = [(0, n, l) for n in range(1, 12) for l in range(0, 8) if n + w * l <= 11]
    for nu in (2, 3):
        for m in itertools.combinations_with_replacement(sorted(facs), nu):
            if sum(f[1] + w * f[2] for f in m) <= 11 and m not in kept:
                assert n_invariants(m) == 0


def test_one_particle_basis():
    spec = BasisSpec(["Cu"], 3, [10, 8, 6])
    ob = one_particle_basis(spec)
    ref = [(n, l) for l in range(0, 10) for n in range(1, 11) if n + 1.5 * l <= 10]
    assert ob == ref
    assert all(n >= 1 for n, _ in ob)
    assert max(n for n, _ in ob) == spec.nmax
    # every factor used by a selected multiset is in the one-particle basis
    used = {(n, l) for m in select_multisets(spec) for _, n, l in m}
    assert used <= set(ob)


def test_exact_degree_comparison():
    # 1 + 3 * 1.1 = 4.300000000000001 in floating point; with exact wL = 11/10 it is 4.3
    spec = BasisSpec(["Cu"], 2, 4.3, wL=1.1)
    assert (1, 3) in one_particle_basis(spec)
    assert degree(((0, 1, 3),), 1.1) == pytest.approx(4.3)


def test_nu1_only_l0_and_species():
    spec = BasisSpec(["Ti", "Al"], 2, 6)
    ms = select_multisets(spec)
    nu1 = [m for m in ms if len(m) == 1]
    assert all(m[0][2] == 0 for m in nu1)
    assert sorted(m[0][:2] for m in nu1) == sorted((z, n) for z in range(2) for n in range(1, 7))
    assert all(0 <= f[0] < 2 for m in ms for f in m)
    assert all(sum(f[2] for f in m) % 2 == 0 for m in ms)


def test_degree_helper():
    assert degree(((0, 1, 0), (0, 2, 1)), 1.5) == 4.5
    assert degree(((1, 3, 2),), 2.0) == 7.0


# ------------------------------------------------------------------ priors
def test_algebraic_prior_eq10():
    spec = BasisSpec(["Cu"], 2, 8)
    ms = [((0, 1, 0),), ((0, 1, 1), (0, 2, 1)), ((0, 2, 2), (0, 3, 2))]
    g = smoothness_prior(spec, ms)  # p = 4, wL = 1
    np.testing.assert_allclose(g, [1.0, 1 + 1 + 16 + 1, 16 + 16 + 81 + 16])
    g2 = smoothness_prior(spec, ms, p=2, wL=1.5, constant=1.0)
    np.testing.assert_allclose(g2, [2.0, 1 + 1 + 1.5 + 4 + 1.5, 1 + 4 + 6 + 9 + 6])


def test_exponential_and_gaussian_priors():
    spec = BasisSpec(["Cu"], 2, 8)
    ms = [((0, 2, 0),), ((0, 1, 1), (0, 2, 1))]
    ge = smoothness_prior(spec, ms, "exponential", al=0.5, an=0.25)
    np.testing.assert_allclose(ge, [math.exp(0.25 * 2), math.exp(0.5 * 2 + 0.25 * 3)])
    gg = smoothness_prior(spec, ms, "gaussian", sigma_l=0.1, sigma_n=0.2)
    np.testing.assert_allclose(gg, [math.exp(0.2 * 4), math.exp(0.1 * 2 + 0.2 * 5)])
    # defaults al = an = 1, sigma_l = sigma_n = 2
    np.testing.assert_allclose(smoothness_prior(spec, ms[:1], "exponential"), [math.exp(2)])
    np.testing.assert_allclose(smoothness_prior(spec, ms[:1], "gaussian"), [math.exp(8)])


def test_prior_increases_with_degree():
    spec = BasisSpec(["Cu"], 3, 10)
    ms = select_multisets(spec)
    for kind in ("algebraic", "exponential", "gaussian"):
        g = smoothness_prior(spec, ms, kind)
        assert g.shape == (len(ms),) and np.all(g > 0)
        idx = {m: i for i, m in enumerate(ms)}
        for m in ms:
            for t, (z, n, l) in enumerate(m):
                bigger = tuple(sorted(m[:t] + ((z, n + 1, l),) + m[t + 1:]))
                if bigger in idx:
                    assert g[idx[bigger]] > g[idx[m]]


def test_prior_errors():
    spec = BasisSpec(["Cu"], 2, 8)
    with pytest.raises(SpecError):
        smoothness_prior(spec, [((0, 1, 0),)], "cubic")
    with pytest.raises(SpecError):
        smoothness_prior(spec, [((1, 1, 0),)])
    with pytest.raises(SpecError):
        smoothness_prior(spec, [((0, 0, 0),)])
    with pytest.raises(SpecError):
        smoothness_prior(spec, [((0, 1, 0),)], p=0)
