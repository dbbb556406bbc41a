"""Cartesian angular bases (``BasisSpec.angular`` 'cartesian' / 'cace', acegen.symbolic.cartesian):
the spec option, the contraction formulas of Cheng (2024), a symbolic proof that CACE's ν=2
invariants are combinations of the spherical ones, rank (span) tests against the spherical
basis, O(3) invariance, analytic derivatives, and the model (its kernels: test_cartesian_kernels.py)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import sympy as sp
from ase import Atoms
from hypothesis import given, settings
from hypothesis import strategies as st

import acegen
from acegen.basis import CartesianBasis
from acegen.basis_eval import BasisEvaluator
from acegen.errors import SpecError
from acegen.spec import BasisSpec
from acegen.symbolic import cartesian, coupling, selection
from acegen.symbolic.ylm import X, Y, Z, real_ylm_polynomials


def _spec(elements=("Si",), order=3, deg=8, angular="cartesian", **kw):
    return BasisSpec(elements, order, deg, purification="none", angular=angular, **kw)


# ------------------------------------------------------------------------------------ spec
def test_default_spec_json_and_signature_have_no_angular_key():
    s = BasisSpec(("Si",), 3, 8)
    assert s.angular == "spherical"
    assert "angular" not in s.to_dict() and "angular" not in s.to_json()
    explicit = BasisSpec(("Si",), 3, 8, angular="spherical")
    assert explicit == s and explicit.to_json() == s.to_json() and explicit.signature() == s.signature()
    assert "angular" not in repr(s)


def test_old_json_loads_as_spherical_and_cartesian_round_trips():
    s = BasisSpec(("Ti", "Al"), 2, 6)
    d = json.loads(s.to_json())
    assert BasisSpec.from_dict(d) == s and BasisSpec.from_dict(d).angular == "spherical"
    for kind in ("cartesian", "cace"):
        c = _spec(("Ti", "Al"), 2, 6, angular=kind)
        back = BasisSpec.from_dict(json.loads(c.to_json()))
        assert back == c and back.angular == kind and back.signature() == c.signature()
        assert c.to_dict()["angular"] == kind and f"angular={kind!r}" in repr(c)
        assert c.signature() != _spec(("Ti", "Al"), 2, 6, angular="spherical").signature()


@pytest.mark.parametrize("value", ["polar", "Cartesian", 3, None])
def test_bad_angular_is_a_spec_error_naming_the_field(value):
    with pytest.raises(SpecError, match="BasisSpec.angular"):
        BasisSpec(("Si",), 2, 6, purification="none", angular=value)


def test_cartesian_purification_pair_or_none():
    with pytest.raises(SpecError, match=r"BasisSpec\.angular.*purification='none' or 'pair', not 'canonical'"):
        BasisSpec(("Si",), 2, 6, angular="cartesian", purification="canonical")
    with pytest.raises(SpecError, match="BasisSpec.angular"):
        BasisSpec.from_dict({"elements": ["Si"], "order": 2, "totaldegree": 6, "angular": "cace",
                             "purification": "canonical"})
    assert BasisSpec(("Si",), 2, 6, angular="cartesian").purification == "pair"  # the default


# ------------------------------------------------------------------------------- monomials
@pytest.mark.parametrize("lmax", [0, 1, 2, 4, 6])
def test_monomial_counts_and_order(lmax):
    assert cartesian.n_cartesian(lmax) == (lmax + 1) * (lmax + 2) * (lmax + 3) // 6
    flat = [a for l in range(lmax + 1) for a in cartesian.alphas(l)]
    assert len(flat) == len(set(flat)) == cartesian.n_cartesian(lmax)
    for l in range(lmax + 1):
        block = cartesian.alphas(l)
        assert len(block) == cartesian.n_alpha(l) and all(sum(a) == l for a in block)
        assert list(block) == sorted(block, reverse=True)
        assert [cartesian.alpha_index(a) for a in block] == list(range(len(block)))
        assert flat[cartesian.block_offset(l)] == block[0]


def _direct(ls, fn):
    """{α-index tuple: coefficient} of Σ fn(...) Π A over the CACE formula, summed directly."""
    out = {}
    for key, c in fn():
        idx = tuple(cartesian.alpha_index(a) for a in key)
        out[idx] = out.get(idx, 0) + c
    return out


def _add(a, b):
    return tuple(x + y for x, y in zip(a, b))


@pytest.mark.parametrize("L", [0, 1, 2, 3, 4])
def test_cace_nu2_formula(L):
    [g] = cartesian.chain_contractions((L, L))
    m = cartesian.multinomial
    want = _direct((L, L), lambda: (((a, a), m(a)) for a in cartesian.alphas(L)))
    assert cartesian.contraction_terms((L, L), g) == want


@pytest.mark.parametrize("l1,l2", [(1, 1), (1, 2), (2, 2), (1, 3)])
def test_cace_nu3_formula(l1, l2):
    m = cartesian.multinomial
    ls = (l1, l2, l1 + l2)
    want = _direct(ls, lambda: (((a, b, _add(a, b)), m(a) * m(b))
                                for a in cartesian.alphas(l1) for b in cartesian.alphas(l2)))
    graphs = cartesian.chain_contractions(ls)
    assert want in [cartesian.contraction_terms(ls, g) for g in graphs]


@pytest.mark.parametrize("l1,l2,d", [(1, 1, 1), (1, 2, 1), (0, 2, 1), (2, 1, 2)])
def test_cace_nu4_formula(l1, l2, d):
    m = cartesian.multinomial
    ls = (l1, l2, l1 + d, l2 + d)
    want = _direct(ls, lambda: (((a, b, _add(a, c), _add(b, c)), m(a) * m(b) * m(c))
                                for a in cartesian.alphas(l1) for b in cartesian.alphas(l2)
                                for c in cartesian.alphas(d)))
    graphs = cartesian.chain_contractions(ls)
    assert want in [cartesian.contraction_terms(ls, g) for g in graphs]


def test_contractions_are_loopless_matchings():
    # (1,1,1,1): three perfect matchings of four vectors; identical factors: one class
    assert len(cartesian.contractions((1, 1, 1, 1))) == 3
    assert len(cartesian.contractions((1, 1, 1, 1), (0, 0, 0, 0))) == 1
    assert cartesian.contractions((2, 0)) == []  # only a loop would contract a rank-2 factor
    for ls in [(2, 2, 2), (1, 2, 3), (2, 2, 1, 1)]:
        for g in cartesian.contractions(ls):
            deg = [0] * len(ls)
            for s, t, e in g:
                assert s < t and e > 0
                deg[s] += e
                deg[t] += e
            assert tuple(deg) == ls


@pytest.mark.parametrize("elements,order,deg", [(("Si",), 4, 9), (("Ti", "Al"), 3, 6)])
def test_one_independent_function_per_spherical_invariant(elements, order, deg):
    multisets = selection.select_multisets(_spec(elements, order, deg))
    funcs = cartesian.cartesian_functions(multisets, "cartesian", cache=False)
    for ms, fs in zip(multisets, funcs):
        ls = tuple(l for _, _, l in ms)
        assert len(fs) == coupling.count_invariants(ls, cartesian._classes(ms)), ms
        for f in fs:
            assert f.factors == ms and all(isinstance(c, int) and c != 0 for c in f.terms.values())
    cace = cartesian.cartesian_functions(multisets, "cace", cache=False)
    for ms, fs in zip(multisets, cace):
        assert not fs or len({n for _, n, _ in ms}) == 1  # same radial index in every factor


def test_elimination_drops_the_cayley_hamilton_dependency():
    """Four copies of one rank-2 factor: two loopless contractions, tr(A⁴) and tr(A²)², but
    one spherical invariant — for a symmetric 3x3 matrix whose trace is the rank-0 factor
    (A_xx + A_yy + A_zz = A_0 on the sphere) tr(A⁴) is a combination of tr(A²)², products
    with A_0 and the lower multisets.  Elimination keeps exactly one, and the lower
    multisets (obtained by lowering l by 2) keep their own counts."""
    f0, f2 = (0, 1, 0), (0, 1, 2)
    multisets = [tuple(sorted((f0,) * k + (f2,) * (4 - k))) for k in range(5)]
    funcs = cartesian.cartesian_functions(multisets, "cartesian", cache=False)
    top = multisets.index((f2,) * 4)
    assert len(cartesian.contractions((2, 2, 2, 2), (0, 0, 0, 0))) == 2
    assert len(funcs[top]) == 1 == coupling.count_invariants((2, 2, 2, 2), (0, 0, 0, 0))
    for ms, fs in zip(multisets, funcs):
        assert len(fs) == coupling.count_invariants(tuple(l for _, _, l in ms), cartesian._classes(ms))


def test_disk_cache_round_trip_and_corrupt_file(tmp_path, monkeypatch):
    monkeypatch.setenv("ACEGEN_CACHE_DIR", str(tmp_path))
    multisets = tuple(selection.select_multisets(_spec(("Si",), 3, 7)))
    fresh = cartesian._compute_or_load("cartesian", multisets, True)
    path = cartesian._cache_file("cartesian", multisets)
    assert path.is_file() and str(tmp_path) in str(path)
    assert cartesian._compute_or_load("cartesian", multisets, True) == fresh
    path.write_text("{not json")
    assert cartesian._compute_or_load("cartesian", multisets, True) == fresh


# --------------------------------------------------------------- symbolic proof (ν = 2)
_x = sp.symbols("x1:4", real=True)
_y = sp.symbols("y1:4", real=True)


def _mono(v, a):
    return v[0] ** a[0] * v[1] ** a[1] * v[2] ** a[2]


def _sym(poly):
    return sp.expand((poly + poly.xreplace({**dict(zip(_x, _y)), **dict(zip(_y, _x))})) / 2)


@pytest.mark.parametrize("L", [0, 1, 2, 3, 4])
def test_cace_nu2_is_an_exact_combination_of_spherical_nu2(L):
    """Σ_α m(α) A_α A_α = Σ_{l ≡ L (2), l ≤ L} c_l B_sph(l, l) exactly, with c_l a rational
    multiple of 4π/√(2l+1).  Both sides are bilinear in the A's, so it is the identity of
    the (symmetrised) two-neighbour kernels k(x̂, ŷ); bihomogeneous polynomials of the same
    bidegree that agree on the sphere are equal, so the spherical side is homogenised with
    (|x|²|y|²)^((L-l)/2) and the identity checked as polynomials."""
    [g] = cartesian.chain_contractions((L, L))
    terms = cartesian.contraction_terms((L, L), g, (0, 0))
    al = cartesian.alphas(L)
    lhs = _sym(sum(c * _mono(_x, al[i]) * _mono(_y, al[j]) for (i, j), c in terms.items()))
    dot = sum(a * b for a, b in zip(_x, _y))
    assert sp.expand(lhs - dot**L) == 0  # multinomial theorem: (x·y)^L
    t = sp.Symbol("t")
    ylm = real_ylm_polynomials(max(L, 1))
    r2 = sp.expand(sum(a * a for a in _x) * sum(b * b for b in _y))
    rhs = 0
    for l in range(L % 2, L + 1, 2):
        # Legendre coefficient of t^L, rational
        a_Ll = sp.Rational(2 * l + 1, 2) * sp.integrate(t**L * sp.legendre(l, t), (t, -1, 1))
        assert a_Ll.is_Rational and a_Ll > 0
        [inv] = coupling.invariants((l, l), (0, 0))
        sph = _sym(sum(c * ylm[(l, m1)].xreplace(dict(zip((X, Y, Z), _x)))
                       * ylm[(l, m2)].xreplace(dict(zip((X, Y, Z), _y))) for (m1, m2), c in inv.items()))
        kappa = inv[(0, 0)]  # B_sph(l,l) = kappa Σ_m A_lm A_lm
        c_l = a_Ll * 4 * sp.pi / ((2 * l + 1) * kappa)
        assert sp.nsimplify(c_l * sp.sqrt(2 * l + 1) / (4 * sp.pi)).is_Rational
        rhs += c_l * r2 ** ((L - l) // 2) * sph
    assert sp.simplify(sp.expand(lhs - rhs)) == 0


# ------------------------------------------------------------------------ rank / span
def _clusters(elements, n_envs: int, seed: int, natoms: int = 14):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(math.ceil(n_envs / natoms)):
        pos: list[np.ndarray] = []
        while len(pos) < natoms:
            p = rng.uniform(-3.2, 3.2, 3)
            if all(np.linalg.norm(p - q) > 1.2 for q in pos):
                pos.append(p)
        out.append(Atoms(symbols=list(rng.choice(list(elements), natoms)), positions=pos))
    return out


def _values(basis, clusters):
    return np.concatenate([basis.evaluate(a) for a in clusters])


def _rank(*blocks):
    M = np.hstack(blocks)
    M = M / np.linalg.norm(M, axis=0)
    s = np.linalg.svd(M, compute_uv=False)
    return int((s > 1e-9 * s[0]).sum())


@pytest.mark.parametrize("elements,order,deg", [
    (("Si",), 1, 5), (("Si",), 2, 8), (("Si",), 3, 8), (("Si",), 4, 7), (("Ti", "Al"), 2, 6), (("Ti", "Al"), 3, 5),
])
def test_rank_cartesian_equals_spherical(elements, order, deg):
    sph = acegen.lower(_spec(elements, order, deg, angular="spherical"))
    cart = acegen.lower(_spec(elements, order, deg, angular="cartesian"))
    cace = acegen.lower(_spec(elements, order, deg, angular="cace"))
    assert isinstance(cart, CartesianBasis) and len(cart) == len(sph)
    assert np.array_equal(np.sort(cart.orders), np.sort(sph.orders))
    clusters = _clusters(elements, 2 * len(sph) + 10, seed=order * 10 + deg)
    Bs, Bc, Bk = _values(sph, clusters), _values(cart, clusters), _values(cace, clusters)
    assert Bs.shape[0] >= 2 * len(sph)
    assert _rank(Bc) == _rank(Bs) == _rank(Bc, Bs) == len(sph)
    assert _rank(Bk) == len(cace)  # the CACE functions kept are independent
    assert _rank(Bk, Bs) == _rank(Bs)  # and lie in the spherical span
    assert 0 < len(cace) <= len(sph)


def test_cace_values_equal_the_neighbour_sums_of_dot_products():
    """CACE's closed forms through the whole evaluation (neighbours, radial, monomials,
    index layout): ν=2 Σ_jk R_n(r_j) R_n(r_k) (r̂_j·r̂_k)^L and ν=3
    Σ_jkm R_n R_n R_n (r̂_j·r̂_m)^l1 (r̂_k·r̂_m)^l2 (the middle factor carries α+β)."""
    from acegen.symbolic import radial

    spec = _spec(("Si",), 3, 10, angular="cace")
    basis = acegen.lower(spec)
    [atoms] = _clusters(("Si",), 7, 4, natoms=7)
    B = basis.evaluate(atoms)
    i = 0
    d = np.delete(atoms.positions - atoms.positions[i], i, axis=0)
    r = np.linalg.norm(d, axis=1)
    u = d / r[:, None]
    R, _ = radial.manybody_radial_numpy(spec, 0, 0, r, nfunc=basis.nmax)
    R = np.where((r < spec.rcut_pair(0, 0))[:, None], R, 0.0)
    dots = u @ u.T
    checked = 0
    for k, f in enumerate(basis.functions):
        ls = [l for _, _, l in f.factors]
        n = f.factors[0][1]
        w = R[:, n - 1]
        if f.order == 2 and ls[0] == ls[1] >= 1:
            want = w @ dots ** ls[0] @ w
        elif f.order == 3 and ls[0] >= 1 and ls[2] == ls[0] + ls[1]:
            want = np.einsum("j,k,m,jm,km->", w, w, w, dots ** ls[0], dots ** ls[1])
        else:
            continue
        np.testing.assert_allclose(B[i, k], want, rtol=1e-11, atol=1e-11 * abs(want) + 1e-14)
        checked += 1
    assert checked >= 6


# ------------------------------------------------------------------------- invariance
def _orthogonal(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    return q if rng.integers(2) else -q  # with and without a reflection


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(["cartesian", "cace"]))
def test_invariance_under_rotations_reflections_and_permutations(seed, kind):
    basis = acegen.lower(_spec(("Ti", "Al"), 3, 6, angular=kind))
    [atoms] = _clusters(("Ti", "Al"), 10, seed % 1000, natoms=10)
    B = basis.evaluate(atoms)
    Q = _orthogonal(seed)
    moved = atoms.copy()
    moved.positions = atoms.positions @ Q.T + np.random.default_rng(seed).uniform(-5, 5, 3)
    perm = np.random.default_rng(seed + 1).permutation(len(atoms))
    moved = moved[perm]
    scale = np.abs(B).max()
    np.testing.assert_allclose(basis.evaluate(moved), B[perm], rtol=1e-12, atol=1e-12 * scale)


def test_invariance_catches_a_non_invariant_contraction():
    """The invariance check is sharp: a single monomial product is not invariant."""
    basis = acegen.lower(_spec(("Si",), 2, 6))
    f = next(f for f in basis.functions if f.order == 2 and f.factors[0][2] == 1)
    broken = CartesianBasis(spec=basis.spec, functions=(type(f)(z0=0, factors=f.factors, mtuples=f.mtuples[:1],
                                                                   coeffs=f.coeffs[:1]),),
                            pair=(), lmax=basis.lmax, nmax=basis.nmax, npair=basis.npair)
    [atoms] = _clusters(("Si",), 8, 3, natoms=8)
    moved = atoms.copy()
    moved.positions = atoms.positions @ _orthogonal(5).T
    assert not np.allclose(broken.evaluate(moved), broken.evaluate(atoms), rtol=1e-6)


# ------------------------------------------------------------------------ derivatives
def test_cartesian_derivatives_match_finite_differences():
    basis = acegen.lower(_spec(("Ti", "Al"), 3, 5))
    [atoms] = _clusters(("Ti", "Al"), 6, 11, natoms=6)
    energy, forces, _ = BasisEvaluator(basis).basis_derivatives(atoms)
    np.testing.assert_allclose(energy[: len(basis)], basis.evaluate(atoms).sum(axis=0), rtol=1e-12, atol=1e-10)
    h = 1e-5
    for a, x in itertools.product(range(len(atoms)), range(3)):
        p, m = atoms.copy(), atoms.copy()
        p.positions[a, x] += h
        m.positions[a, x] -= h
        fd = -(BasisEvaluator(basis).basis_derivatives(p)[0] - BasisEvaluator(basis).basis_derivatives(m)[0]) / (2 * h)
        np.testing.assert_allclose(forces[a, x], fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())


# ------------------------------------------------------------------------------ model
@pytest.mark.parametrize("kind", ["cartesian", "cace"])
def test_model_random_save_load_and_fold(kind, tmp_path):
    spec = _spec(("Si",), 3, 7, angular=kind)
    model = acegen.Model.random(spec, seed=1)
    assert model.basis.angular == kind and len(model.coefficients) == model.basis.n_params
    assert np.isfinite(model.basis.evaluate(_clusters(("Si",), 6, 2, natoms=6)[0])).all()
    ir = model.ir()  # compiled kernels: tests/test_cartesian_kernels.py
    assert ir.angular_kind == "cartesian" and all(ch.angular == "cartesian" for ch in ir.species[0].channels)
    model.save(tmp_path / "m.json")
    back = acegen.load(tmp_path / "m.json")
    assert back.spec == spec and np.array_equal(back.coefficients, model.coefficients)


def test_lowered_cartesian_basis_signature():
    a = acegen.lower(_spec(("Si",), 3, 7), cache=False)
    b = acegen.lower(_spec(("Si",), 3, 7))
    assert a.signature() == b.signature()
    assert a.signature() != acegen.lower(_spec(("Si",), 3, 7, angular="cace")).signature()
    assert a.signature() != acegen.lower(_spec(("Si",), 3, 7, angular="spherical")).signature()
