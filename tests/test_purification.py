"""Purified bases (acegen.symbolic.purify): pair purification and the canonical cluster
expansion, checked against formulas written here.

* The exact building blocks: products of the unnormalised harmonics against products of
  acegen's Y_lm (numerical), real Gaunt coefficients against quadrature, hand-derived exact
  expansions, radial products against the NumPy radial reference, the inclusion–exclusion
  identity on random numbers.
* The bases: canonical functions of order ν vanish with fewer than ν neighbours of the
  species they couple and equal a brute-force sum over distinct neighbour tuples; pair
  purified functions of order ≥ 2 vanish on one neighbour and equal B − Σ_j B({j}); every
  variant is O(3) invariant, linearly independent, has a smoothness prior, and its compiled
  C kernel matches the NumPy reference.
"""

from __future__ import annotations

import functools
import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from ase import Atoms
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import acegen
from acegen.basis import PackedTerms
from acegen.errors import SpecError
from acegen.reference.ace_numpy import ACEReference
from acegen.symbolic import purify, radial
from acegen.symbolic.selection import smoothness_prior
from acegen.symbolic.ylm import lm_index, ylm_numpy

VARIANTS = ("none", "pair", "canonical")
RCUT = 5.0
SPECS = {
    "Cu_o3": dict(elements=["Cu"], order=3, totaldegree=8, rcut=RCUT),
    "CuNi_o4": dict(elements=["Cu", "Ni"], order=4, totaldegree=7, rcut=RCUT),
    "Cu_o4": dict(elements=["Cu"], order=4, totaldegree=9, rcut=RCUT),
}
HYP = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@functools.lru_cache(maxsize=None)
def basis(name: str, kind: str):
    return acegen.lower(acegen.BasisSpec(**SPECS[name], purification=kind))


@functools.lru_cache(maxsize=None)
def reference(name: str, kind: str) -> ACEReference:
    return ACEReference(basis(name, kind))


def centre_values(name: str, kind: str, z0: int, pos, zs) -> np.ndarray:
    """Basis values of the atom at the origin (species z0) with neighbours at pos."""
    els = basis(name, kind).elements
    atoms = Atoms([els[z0]] + [els[z] for z in zs], positions=np.vstack([np.zeros((1, 3)), pos]))
    return reference(name, kind).basis_values(atoms)[0][0]


def environment(seed: int, nneigh: int, nel: int):
    """Random neighbours at distances in [1.2, 4.8] (inside the cutoff), mutually apart."""
    rng = np.random.default_rng(seed)
    pos = []
    while len(pos) < nneigh:
        p = rng.normal(size=3)
        p *= rng.uniform(1.2, 0.96 * RCUT) / np.linalg.norm(p)
        if all(np.linalg.norm(p - q) > 0.7 for q in pos):
            pos.append(p)
    return np.array(pos).reshape(-1, 3), rng.integers(0, nel, nneigh)


# ---------------------------------------------------------------------------------------
# the exact building blocks
# ---------------------------------------------------------------------------------------


def _K(l: int, m: int) -> float:
    """Y_lm = K_lm U_lm, written here from the definition of the real harmonics."""
    a = abs(m)
    return math.sqrt((2 * l + 1) / (4 * math.pi) * math.factorial(l - a) / math.factorial(l + a) * (2 if m else 1))


def _directions(n: int, seed: int = 0) -> np.ndarray:
    u = np.random.default_rng(seed).normal(size=(n, 3))
    return u / np.linalg.norm(u, axis=1)[:, None]


def test_u_products_match_products_of_ylm():
    u = _directions(40)
    Y = ylm_numpy(8, u)

    def U(l, m):
        return Y[:, lm_index(l, m)] / _K(l, m)

    for l1, l2 in [(0, 3), (1, 1), (1, 2), (2, 2), (3, 2), (4, 3)]:
        for m1 in range(-l1, l1 + 1):
            for m2 in range(-l2, l2 + 1):
                lhs = U(l1, m1) * U(l2, m2)
                terms = purify.u_product(l1, m1, l2, m2)
                assert all(isinstance(g, Fraction) for _, g in terms)
                rhs = sum(float(g) * U(L, M) for (L, M), g in terms)
                assert np.abs(lhs - rhs).max() <= 1e-12 * (1 + np.abs(lhs).max())


def test_u_products_by_hand():
    # z² = (2 P_2 + 1)/3;  x² = sin²θ cos²φ = 1/3 − P_2/3 + U_22/6  (U_22 = 3 sin²θ cos 2φ)
    assert dict(purify.u_product(1, 0, 1, 0)) == {(0, 0): Fraction(1, 3), (2, 0): Fraction(2, 3)}
    assert dict(purify.u_product(1, 1, 1, 1)) == {(0, 0): Fraction(1, 3), (2, 0): Fraction(-1, 3),
                                                  (2, 2): Fraction(1, 6)}
    # x y = sin²θ sin 2φ / 2 = U_{2,-2} / 6
    assert dict(purify.u_product(1, 1, 1, -1)) == {(2, -2): Fraction(1, 6)}


def _sphere_quadrature(n: int = 24):
    """Gauss–Legendre in cos θ × uniform in φ: exact for polynomials of degree < 2n."""
    x, w = np.polynomial.legendre.leggauss(n)
    phi = 2 * np.pi * np.arange(2 * n) / (2 * n)
    ct, ph = np.meshgrid(x, phi, indexing="ij")
    st_ = np.sqrt(1 - ct**2)
    pts = np.stack([st_ * np.cos(ph), st_ * np.sin(ph), ct], axis=-1).reshape(-1, 3)
    wts = (w[:, None] * np.full(2 * n, 2 * np.pi / (2 * n))[None, :]).ravel()
    return pts, wts


def test_real_gaunt_coefficients_against_quadrature():
    """Y_{l1m1} Y_{l2m2} = Σ G Y_LM with G = ∫ Y Y Y dΩ."""
    pts, wts = _sphere_quadrature()
    Y = ylm_numpy(8, pts)
    for l1, l2 in [(1, 1), (2, 1), (2, 2), (3, 3), (4, 2)]:
        for m1 in range(-l1, l1 + 1):
            for m2 in range(-l2, l2 + 1):
                got = {(L, M): float(g) * _K(l1, m1) * _K(l2, m2) / _K(L, M)
                       for (L, M), g in purify.u_product(l1, m1, l2, m2)}
                for L in range(abs(l1 - l2), l1 + l2 + 1):
                    for M in range(-L, L + 1):
                        q = np.sum(wts * Y[:, lm_index(l1, m1)] * Y[:, lm_index(l2, m2)] * Y[:, lm_index(L, M)])
                        assert abs(got.get((L, M), 0.0) - q) < 1e-13


def test_block_product_is_iterated_pairwise_product():
    u = _directions(30, seed=2)
    Y = ylm_numpy(9, u)
    lms = ((2, 1), (1, -1), (3, 2), (2, -2))
    lhs = np.prod([Y[:, lm_index(l, m)] / _K(l, m) for l, m in lms], axis=0)
    rhs = sum(float(g) * Y[:, lm_index(L, M)] / _K(L, M) for (L, M), g in purify.block_product(lms))
    assert np.abs(lhs - rhs).max() <= 1e-12 * np.abs(lhs).max()


@pytest.mark.parametrize("ns", [(1, 1), (2, 5), (3, 3, 4), (1, 2, 2, 6), (7, 9)])
def test_radial_products_are_exact_expansions(ns):
    spec = acegen.BasisSpec(["Si"], 4, 12, envelope=("x", 2, 3))
    exact = purify.radial_product_exact(spec, ns)
    assert all(isinstance(a, Fraction) and isinstance(s, Fraction) for _, a, s in exact)
    q, rho = purify.radial_product(spec, ns)
    assert q.max() == purify.extended_nmax(spec, ns) == sum(ns) - len(ns) + 1 + (len(ns) - 1) * 5
    r = np.linspace(0.3, spec.rcut_pair(0, 0) * 0.999, 60)
    R, _ = radial.manybody_radial_numpy(spec, 0, 0, r, nfunc=int(q.max()))
    lhs = np.prod([R[:, n - 1] for n in ns], axis=0)
    assert np.abs(lhs - R[:, q - 1] @ rho).max() <= 1e-12 * np.abs(lhs).max()


@given(nu=st.integers(1, 4), nj=st.integers(1, 5), seed=st.integers(0, 10**6))
@HYP
def test_inclusion_exclusion_over_set_partitions(nu, nj, seed):
    """Σ_{distinct j} Π_t f_t(j_t) = Σ_π μ(π) Π_b Σ_j Π_{t∈b} f_t(j)."""
    f = np.random.default_rng(seed).normal(size=(nu, nj))
    brute = sum(np.prod([f[t, j] for t, j in enumerate(js)]) for js in itertools.permutations(range(nj), nu))
    parts = purify.set_partitions(nu)
    assert len(parts) == [1, 1, 2, 5, 15][nu]
    formula = sum(purify.moebius(p) * np.prod([np.prod(f[list(b)], axis=0).sum() for b in p]) for p in parts)
    assert abs(brute - formula) <= 1e-12 * (1 + np.abs(f).sum() ** nu)


# ---------------------------------------------------------------------------------------
# the purified bases
# ---------------------------------------------------------------------------------------


def _factor_phi(b, z0, pos, zs):
    """φ values of every (z, n, l, m) one-particle function of centre species z0 at every
    neighbour, from the NumPy radial reference and acegen's Y_lm: (z, n, l) -> (2l+1, J)."""
    r = np.linalg.norm(pos, axis=1)
    Y = ylm_numpy(b.lmax, pos / r[:, None])
    nmax = b.spec.nmax
    R = np.array([radial.manybody_radial_numpy(b.spec, z0, int(zj), r[j:j + 1], nfunc=nmax)[0][0]
                  for j, zj in enumerate(zs)])  # (J, nmax)
    out = {}
    for f in b.functions:
        for z, n, l in f.factors:
            if (z, n, l) in out:
                continue
            vals = R[None, :, n - 1] * Y[:, l * l : l * l + 2 * l + 1].T * (zs == z)[None, :]
            out[(z, n, l)] = vals
    return out


def _brute_distinct(f, phi, nj):
    """Σ_M c_M Σ_{j_1 ≠ … ≠ j_ν} Π_t φ_{k_t, M_t}(r_{j_t})."""
    tot = 0.0
    cols = [phi[k][f.mtuples[:, t] + k[2]] for t, k in enumerate(f.factors)]  # (K, J) per factor
    for js in itertools.permutations(range(nj), f.order):
        tot += f.coeffs @ np.prod([c[:, j] for c, j in zip(cols, js)], axis=0)
    return tot


@pytest.mark.parametrize("name", ["Cu_o3", "CuNi_o4"])
@given(seed=st.integers(0, 10**6), nneigh=st.integers(1, 5), z0=st.integers(0, 1))
@HYP
def test_canonical_is_a_sum_over_distinct_neighbours(name, seed, nneigh, z0):
    b = basis(name, "canonical")
    nel = len(b.elements)
    z0 = z0 % nel
    pos, zs = environment(seed, nneigh, nel)
    B = centre_values(name, "canonical", z0, pos, zs)
    Bself = centre_values(name, "none", z0, pos, zs)
    phi = _factor_phi(b, z0, pos, zs)
    scale = 1.0 + np.abs(Bself).max()
    counts = np.bincount(zs, minlength=nel)
    for k, f in enumerate(b.functions):
        if f.z0 != z0:
            continue
        need = np.bincount([z for z, _, _ in f.factors], minlength=nel)
        if np.any(need > counts):  # fewer neighbours of some species than factors using it
            assert abs(B[k]) <= 1e-12 * scale, (k, f.factors, B[k])
        assert abs(B[k] - _brute_distinct(f, phi, nneigh)) <= 1e-12 * scale


@pytest.mark.parametrize("kind", ["pair", "canonical"])
@pytest.mark.parametrize("name", ["Cu_o4", "CuNi_o4"])
@given(seed=st.integers(0, 10**6), z0=st.integers(0, 1), zj=st.integers(0, 1))
@HYP
def test_orders_two_and_up_vanish_on_one_neighbour(kind, name, seed, z0, zj):
    b = basis(name, kind)
    nel = len(b.elements)
    pos, _ = environment(seed, 1, nel)
    B = centre_values(name, kind, z0 % nel, pos, np.array([zj % nel]))
    Bself = centre_values(name, "none", z0 % nel, pos, np.array([zj % nel]))
    hi = b.orders >= 2
    assert np.abs(Bself[hi]).max() > 1e-3  # the self-interacting basis does not vanish
    assert np.abs(B[hi]).max() <= 1e-13 * (1 + np.abs(Bself).max())


@pytest.mark.parametrize("name", ["Cu_o4", "CuNi_o4"])
@given(seed=st.integers(0, 10**6), nneigh=st.integers(2, 5))
@HYP
def test_pair_purification_removes_the_diagonal(name, seed, nneigh):
    """B_pair(env) = B(env) − Σ_j B({j}) for functions of order ≥ 2 (B self-interacting)."""
    nel = len(basis(name, "none").elements)
    pos, zs = environment(seed, nneigh, nel)
    Bp = centre_values(name, "pair", 0, pos, zs)
    B = centre_values(name, "none", 0, pos, zs)
    diag = sum(centre_values(name, "none", 0, pos[j : j + 1], zs[j : j + 1]) for j in range(nneigh))
    hi = basis(name, "none").orders >= 2
    want = np.where(hi, B - diag, B)
    assert np.abs(Bp - want).max() <= 1e-12 * (1 + np.abs(B).max())


@given(seed=st.integers(0, 10**6), nneigh=st.integers(1, 5))
@HYP
def test_pair_and_canonical_agree_at_order_two(seed, nneigh):
    pos, zs = environment(seed, nneigh, 2)
    hi = basis("CuNi_o4", "none").orders == 2
    Bp = centre_values("CuNi_o4", "pair", 1, pos, zs)
    Bc = centre_values("CuNi_o4", "canonical", 1, pos, zs)
    assert np.abs(Bp[hi] - Bc[hi]).max() <= 1e-13 * (1 + np.abs(Bp).max())


@pytest.mark.parametrize("kind", VARIANTS)
@given(seed=st.integers(0, 10**6), reflect=st.booleans())
@HYP
def test_invariance_under_rotations_and_reflections(kind, seed, reflect):
    name = "CuNi_o4"
    pos, zs = environment(seed, 5, 2)
    Q, _ = np.linalg.qr(np.random.default_rng(seed + 1).normal(size=(3, 3)))
    if (np.linalg.det(Q) < 0) != reflect:
        Q[:, 0] *= -1
    B = centre_values(name, kind, 0, pos, zs)
    BQ = centre_values(name, kind, 0, pos @ Q.T, zs)
    assert np.abs(B - BQ).max() <= 1e-12 * (1 + np.abs(B).max())


@pytest.mark.parametrize("kind", VARIANTS)
@pytest.mark.parametrize("name", ["Cu_o4", "CuNi_o4"])
def test_linear_independence(name, kind):
    b = basis(name, kind)
    ref = reference(name, kind)
    rows, seed = [], 0
    while sum(len(r) for r in rows) < 3 * len(b):
        for z0 in range(len(b.elements)):
            pos, zs = environment(seed, 2 + seed % 7, len(b.elements))
            els = b.elements
            atoms = Atoms([els[z0]] + [els[z] for z in zs], positions=np.vstack([np.zeros((1, 3)), pos]))
            rows.append(ref.basis_values(atoms)[0][:1])
        seed += 1
    M = np.vstack(rows)
    for z0 in range(len(b.elements)):
        cols = np.flatnonzero(b.species == z0)
        sub = M[:, cols]
        sub = sub[np.abs(sub).sum(axis=1) > 0]
        s = np.linalg.svd(sub / np.linalg.norm(sub, axis=0), compute_uv=False)
        assert int(np.sum(s > s[0] * 1e-10)) == len(cols)


def test_variants_share_functions_and_smoothness_prior():
    bs = {k: basis("CuNi_o4", k) for k in VARIANTS}
    ref = bs["none"]
    gam = smoothness_prior(ref.spec, [f.factors for f in ref.functions], kind="algebraic")
    for k, b in bs.items():
        assert [(f.z0, f.factors, f.index) for f in b.functions] == [(f.z0, f.factors, f.index) for f in ref.functions]
        assert all(np.array_equal(f.mtuples, g.mtuples) and np.array_equal(f.coeffs, g.coeffs)
                   for f, g in zip(b.functions, ref.functions))
        got = smoothness_prior(b.spec, [f.factors for f in b.functions], kind="algebraic")
        np.testing.assert_array_equal(got, gam)
        # corrections are of lower order and use radial indices up to the extended nmax
        for f in b.functions:
            for factors, mt, c in f.corrections:
                assert len(factors) < f.order and mt.shape == (len(c), len(factors))
                assert max(n for _, n, _ in factors) <= b.nmax and max(l for _, _, l in factors) <= b.lmax
        if k == "none":
            assert b.nmax == b.spec.nmax and not any(len(f.corrections) for f in b.functions)
        else:
            # nmax is what the largest correction needs (same-species products of every order)
            need = max(purify.extended_nmax(b.spec, tuple(n for _, n, _ in f.factors)) for f in b.functions
                       if len({z for z, _, _ in f.factors}) == 1)
            assert b.nmax == need
    blocks = bs["canonical"].radial_blocks()
    assert all(blk.nfunc == bs["canonical"].nmax + bs["canonical"].npair for blk in blocks.values())


@pytest.mark.parametrize("kind", VARIANTS)
def test_compiled_kernel_matches_reference(kind):
    from acegen.calculator import evaluate

    from .models import random_structure

    spec = acegen.BasisSpec(["Cu", "Ni"], 3, 7, rcut=RCUT, purification=kind)
    m = acegen.Model.random(spec, seed=3)
    kern = m.compile("c")
    for struct in ("bulk", "cluster"):
        atoms = random_structure(m.elements, struct, seed=4)
        ref = ACEReference(m.basis, m.coefficients).compute(atoms)
        got = evaluate(kern, m.elements, atoms, m.ir().rcut_max)
        for key in ("energies", "forces"):
            scale = max(np.abs(ref[key]).max(), 1e-300)
            assert np.abs(got[key] - ref[key]).max() <= 1e-12 * scale, (struct, key)
        if "stress" in ref:
            assert np.abs(got["stress"] - ref["stress"]).max() <= 1e-12 * np.abs(ref["stress"]).max()


def test_whole_basis_cache_round_trip(tmp_path, monkeypatch):
    from acegen import basis as basis_mod

    monkeypatch.setenv("ACEGEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(basis_mod, "_MEMORY", {})
    spec = acegen.BasisSpec(**SPECS["CuNi_o4"], purification="canonical")
    fresh = acegen.lower(spec, cache=False)
    assert not (tmp_path / "basis").exists()
    first = acegen.lower(spec)
    assert len(list((tmp_path / "basis").glob("*.npz"))) == 1
    monkeypatch.setattr(basis_mod, "_MEMORY", {})
    loaded = acegen.lower(spec)
    assert loaded is not first
    assert (loaded.nmax, loaded.lmax, loaded.npair, loaded.pair) == (fresh.nmax, fresh.lmax, fresh.npair, fresh.pair)
    assert loaded.signature() == fresh.signature()
    for f, g in zip(loaded.functions, fresh.functions):
        assert (f.z0, f.factors, f.index) == (g.z0, g.factors, g.index)
        assert isinstance(f.corrections, (tuple, PackedTerms)) and len(f.corrections) == len(g.corrections)
        for (fa, ma, ca), (fb, mb, cb) in zip(f.corrections, g.corrections):
            assert fa == fb and np.array_equal(ma, mb) and np.array_equal(ca, cb)
    # a corrupt cache file is ignored
    for p in (tmp_path / "basis").glob("*.npz"):
        p.write_bytes(b"not a zip file")
    monkeypatch.setattr(basis_mod, "_MEMORY", {})
    assert acegen.lower(spec).signature() == fresh.signature()


def test_errors():
    b = basis("Cu_o3", "pair")
    with pytest.raises(SpecError, match="purification"):
        purify.purify(basis("Cu_o3", "none"), "full")
    with pytest.raises(SpecError, match="already purified"):
        purify.purify(b, "canonical")
