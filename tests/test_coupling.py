"""Exact O(3) couplings: checked against independent numerical constructions.

The references here never use :mod:`acegen.symbolic.coupling` internals: the invariant
space is computed numerically as the common fixed space of random rotations, the
reflection and the block permutations (eigen-decomposition), the distinct-factor count from
coupling trees, and the 3-factor invariant from real Gaunt integrals by quadrature.
"""

from __future__ import annotations

import itertools
import json
import math
import re

import numpy as np
import platformdirs
import pytest
import sympy as sp
from scipy.spatial.transform import Rotation

from acegen.errors import SpecError
from acegen.symbolic import coupling as C
from acegen.symbolic.ylm import lm_index, ylm_numpy

# ---------------------------------------------------------------------------------------
# independent helpers
# ---------------------------------------------------------------------------------------


def _unit(n: int, rng) -> np.ndarray:
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1)[:, None]


def _ylm_block(l: int, xyz: np.ndarray) -> np.ndarray:
    return ylm_numpy(l, xyz)[:, l * l : (l + 1) ** 2]


def _dreal(l: int, rot: np.ndarray) -> np.ndarray:
    """Real Wigner matrix: ``Y_l(R r) = D Y_l(r)``, fitted by least squares."""
    pts = _unit(6 * (2 * l + 1), np.random.default_rng(l))
    a = _ylm_block(l, pts)
    b = _ylm_block(l, pts @ rot.T)
    return np.linalg.lstsq(a, b, rcond=None)[0].T


def _blocks(classes, nu):
    classes = tuple(range(nu)) if classes is None else tuple(classes)
    return [list(g) for _, g in itertools.groupby(range(nu), key=lambda t: classes[t])]


def _perm_matrix(ls, perm) -> np.ndarray:
    """Operator permuting tensor factors (perm swaps factors of equal l)."""
    dims = [2 * l + 1 for l in ls]
    n = math.prod(dims)
    idx = np.arange(n).reshape(dims).transpose(perm).ravel()
    return np.eye(n)[idx]


def _numeric_space(ls, classes) -> np.ndarray:
    """Orthonormal basis of the block-symmetric O(3)-invariant tensors (numerically)."""
    nu = len(ls)
    n = math.prod(2 * l + 1 for l in ls)
    ops = []
    for seed in (11, 12):
        rot = Rotation.random(random_state=seed).as_matrix()
        d = np.ones((1, 1))
        for l in ls:
            d = np.kron(d, _dreal(l, rot))
        ops.append(d)
    ops.append((-1.0) ** sum(ls) * np.eye(n))  # inversion r -> -r
    for blk in _blocks(classes, nu):
        for a, b in zip(blk, blk[1:]):
            perm = list(range(nu))
            perm[a], perm[b] = b, a
            ops.append(_perm_matrix(ls, perm))
    q = sum((op - np.eye(n)).T @ (op - np.eye(n)) for op in ops)
    w, v = np.linalg.eigh(q)
    return v[:, w < 1e-8]


def _tree_count(ls) -> int:
    """Number of left-to-right coupling trees of distinct factors ending in L = 0."""
    counts = {ls[0]: 1}
    for l in ls[1:]:
        new: dict[int, int] = {}
        for a, c in counts.items():
            for L in range(abs(a - l), a + l + 1):
                new[L] = new.get(L, 0) + c
        counts = new
    return counts.get(0, 0) if sum(ls) % 2 == 0 else 0


def _orbit(mbar, blocks):
    parts = [set(itertools.permutations([mbar[t] for t in blk])) for blk in blocks]
    for choice in itertools.product(*parts):
        out = [0] * len(mbar)
        for blk, vals in zip(blocks, choice):
            for t, v in zip(blk, vals):
                out[t] = v
        yield tuple(out)


def _unfold(m, c, ls, classes) -> np.ndarray:
    """Dense symmetric full-tuple vector from folded coefficients (c / |orbit| each)."""
    dims = [2 * l + 1 for l in ls]
    full = np.zeros(dims)
    blocks = _blocks(classes, len(ls))
    for mbar, cv in zip(m.tolist(), c):
        orb = list(_orbit(mbar, blocks))
        for mu in orb:
            full[tuple(x + l for x, l in zip(mu, ls))] += cv / len(orb)
    return full.ravel()


def _contract(vec, ls, ys) -> float:
    """``Σ_μ c_μ Π_t y_t[μ_t]`` for per-factor vectors ``ys``."""
    t = vec.reshape([2 * l + 1 for l in ls])
    for y in ys:
        t = np.tensordot(t, y, axes=([0], [0]))
    return float(t)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """A private disk cache and empty in-memory caches."""
    monkeypatch.setenv("ACEGEN_CACHE_DIR", str(tmp_path / "cache"))
    cached = (C._raw, C._compute_raw, C._sympy_invariants, C._float_invariants)

    def clear():
        for f in cached:
            f.cache_clear()

    clear()
    yield tmp_path / "cache"
    clear()


@pytest.fixture(autouse=True)
def _private_cache_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ACEGEN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "acegen-cache"))


# ---------------------------------------------------------------------------------------
# counts and the numerical invariant space
# ---------------------------------------------------------------------------------------


def test_simple_counts():
    assert C.invariants((1, 1, 1)) == []
    assert len(C.invariants((1, 1, 2))) == 1
    assert len(C.invariants((2, 2, 2, 2))) == 5
    assert len(C.invariants((2, 2, 2, 2), (0, 0, 0, 0))) == 1  # only tr(S^2)^2
    assert len(C.invariants((2, 2, 2), (7, 7, 7))) == 1  # tr(S^3)
    assert len(C.invariants((3,))) == 0
    assert len(C.invariants((0,))) == 1


@pytest.mark.parametrize(
    "ls",
    [(1, 1), (1, 2, 3), (2, 2, 2, 2), (1, 2, 3, 4), (3, 3, 2, 4, 2), (1, 1, 2, 2, 3, 3), (2, 2, 2, 2, 2, 2)],
)
def test_distinct_count_is_tree_count(ls):
    assert len(C.invariants_float(ls)) == _tree_count(ls)


@pytest.mark.parametrize(
    "ls, classes",
    [
        ((2, 2, 2, 2), None),
        ((2, 2, 2, 2), (0, 0, 0, 0)),
        ((2, 2, 2, 2), (0, 0, 1, 1)),
        ((2, 2, 2, 2), (0, 1, 1, 1)),
        ((1, 1, 1, 1), (0, 0, 0, 0)),
        ((3, 3, 1, 1), (0, 0, 1, 1)),
        ((1, 1, 1, 1, 2), (0, 0, 0, 0, 1)),
        ((1, 1, 1, 1, 1, 1), (0, 0, 0, 0, 0, 0)),
        ((1, 1, 1, 1, 1, 1), (0, 0, 1, 1, 2, 2)),
        ((3, 3, 3), (0, 0, 0)),
        ((2, 1, 1, 2), (0, 1, 1, 2)),
        ((1, 1, 1), (0, 0, 0)),
    ],
)
def test_against_numerical_invariant_space(ls, classes):
    basis = _numeric_space(ls, classes)
    invs = C.invariants_float(ls, classes)
    assert len(invs) == basis.shape[1] == C.count_invariants(ls, classes)
    if not invs:
        return
    v = np.stack([_unfold(m, c, ls, classes) for m, c in invs], axis=1)
    # orthonormal before folding, and spanning exactly the numerical invariant space
    np.testing.assert_allclose(v.T @ v, np.eye(v.shape[1]), atol=1e-12)
    np.testing.assert_allclose(basis @ (basis.T @ v), v, atol=1e-10)


# ---------------------------------------------------------------------------------------
# invariance under rotations and the reflection
# ---------------------------------------------------------------------------------------

INVARIANCE_CASES = [
    ((1, 1, 2), None),
    ((2, 2, 2, 2), None),
    ((2, 2, 2, 2), (0, 0, 0, 0)),
    ((1, 1, 2, 2), (0, 0, 1, 1)),
    ((3, 3, 2, 4, 2), None),
    ((1, 1, 1, 2, 3), (0, 0, 0, 1, 2)),
    ((2, 2, 3, 3, 4), (0, 0, 1, 1, 2)),
    ((1, 1, 1, 1, 2, 2), (0, 0, 0, 0, 1, 1)),
    ((3, 3, 3, 3), (0, 0, 0, 0)),
]


@pytest.mark.parametrize("ls, classes", INVARIANCE_CASES)
def test_invariance_unfolded(ls, classes):
    rng = np.random.default_rng(sum(ls))
    r = _unit(len(ls), rng)
    invs = C.invariants_float(ls, classes)
    assert invs
    vecs = [_unfold(m, c, ls, classes) for m, c in invs]
    base = [_contract(v, ls, [_ylm_block(l, r[t : t + 1])[0] for t, l in enumerate(ls)]) for v in vecs]
    assert max(abs(b) for b in base) > 1e-8
    for seed in range(3):
        rot = Rotation.random(random_state=seed).as_matrix()
        for tr in (r @ rot.T, -r, -(r @ rot.T)):
            ys = [_ylm_block(l, tr[t : t + 1])[0] for t, l in enumerate(ls)]
            for v, b in zip(vecs, base):
                assert abs(_contract(v, ls, ys) - b) < 1e-12


def _folded_value(m, c, ls, classes, amps) -> float:
    """``Σ_canonical c Π_t A[class_t][l_t, m_t]``."""
    classes = tuple(range(len(ls))) if classes is None else classes
    cols = np.stack([amps[classes[t]][[lm_index(l, mm) for mm in m[:, t]]] for t, l in enumerate(ls)], axis=1)
    return float(c @ np.prod(cols, axis=1))


LARGE_L_CASES = [((10, 10, 10, 10), (0, 0, 0, 0)), ((5, 5, 6, 6), (0, 0, 1, 1)), ((5, 5, 6, 6), None)]


@pytest.mark.parametrize("ls, classes", INVARIANCE_CASES + LARGE_L_CASES)
def test_invariance_folded_with_atomic_basis(ls, classes):
    """The ACE use: A_{c,lm} = Σ_j w_{c,j} Y_lm(r̂_j), identical factors share A."""
    rng = np.random.default_rng(7)
    labels = set(range(len(ls)) if classes is None else classes)
    nb = _unit(8, rng)
    w = {c: rng.normal(size=8) for c in labels}
    lmax = max(ls)

    def amps(pts):
        y = ylm_numpy(lmax, pts)
        return {c: w[c] @ y for c in labels}

    a0 = amps(nb)
    rot = Rotation.random(random_state=5).as_matrix()
    a1, a2 = amps(nb @ rot.T), amps(-nb)
    for m, c in C.invariants_float(ls, classes):
        b0 = _folded_value(m, c, ls, classes, a0)
        scale = np.abs(c).sum() * max(np.abs(a).max() for a in a0.values()) ** len(ls)
        assert abs(_folded_value(m, c, ls, classes, a1) - b0) <= 1e-13 * scale
        assert abs(_folded_value(m, c, ls, classes, a2) - b0) <= 1e-13 * scale


# ---------------------------------------------------------------------------------------
# exact values, normalisation and convention
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("l", range(5))
@pytest.mark.parametrize("classes", [None, (0, 0)])
def test_pair_invariant_exact(l, classes):
    (inv,) = C.invariants((l, l), classes)
    assert inv == {(m, m): 1 / sp.sqrt(2 * l + 1) for m in range(-l, l + 1)}


@pytest.mark.parametrize("ls", [(1, 1, 2), (2, 2, 2), (1, 2, 3), (2, 3, 3), (3, 4, 5), (4, 4, 4)])
def test_three_factors_match_real_gaunt(ls):
    """For ν = 3 the invariant is the normalised real Gaunt tensor ∫ Y Y Y dΩ."""
    ct, wt = np.polynomial.legendre.leggauss(12)
    phi = 2 * np.pi * np.arange(24) / 24
    st = np.sqrt(1 - ct**2)
    xyz = np.stack([np.outer(st, np.cos(phi)).ravel(), np.outer(st, np.sin(phi)).ravel(), np.repeat(ct, 24)], 1)
    wq = np.repeat(wt, 24) * (2 * np.pi / 24)
    y = [_ylm_block(l, xyz) for l in ls]
    gaunt = np.einsum("q,qa,qb,qc->abc", wq, *y).ravel()
    gaunt /= np.linalg.norm(gaunt)
    ((m, c),) = C.invariants_float(ls)
    v = _unfold(m, c, ls, None)
    assert abs(abs(v @ gaunt) - 1) < 1e-12


@pytest.mark.parametrize(
    "ls, classes",
    [((2, 2, 2, 2), (0, 0, 0, 0)), ((1, 1, 2, 2), (0, 0, 1, 1)), ((1, 1, 2, 2), None), ((2, 2, 2), (0, 0, 0))],
)
def test_exact_orthonormal_and_surd_form(ls, classes):
    invs = C.invariants(ls, classes)
    blocks = _blocks(classes, len(ls))
    orbit = {}
    for inv in invs:
        for mbar, coef in inv.items():
            assert coef != 0
            assert (coef**2).is_Rational  # Rational * sqrt(Rational)
            orbit[mbar] = len(list(_orbit(mbar, blocks)))
    for i, a in enumerate(invs):
        for j, b in enumerate(invs):
            # unfolded inner product: Σ_orbits |orbit| (a/|orbit|)(b/|orbit|)
            s = sum(a[k] * b[k] / orbit[k] for k in a.keys() & b.keys())
            assert sp.nsimplify(sp.expand(s)) == (1 if i == j else 0)


@pytest.mark.parametrize(
    "ls, classes",
    [((2, 2, 2, 2), None), ((1, 1, 2, 2), (0, 0, 1, 1)), ((2, 2, 1, 3, 2), None), ((2, 2, 2, 2), (4, 4, 4, 4))],
)
def test_canonical_tuples_order_sign_and_float_path(ls, classes):
    exact = C.invariants(ls, classes)
    flt = C.invariants_float(ls, classes)
    assert len(exact) == len(flt)
    blocks = _blocks(classes, len(ls))
    for inv, (m, c) in zip(exact, flt):
        keys = list(inv)
        assert keys == sorted(keys)
        assert [tuple(r) for r in m.tolist()] == keys
        for k in keys:
            assert all(k[a] <= k[b] for blk in blocks for a, b in zip(blk, blk[1:]))
            assert all(abs(x) <= l for x, l in zip(k, ls))
        assert inv[keys[0]] > 0  # sign convention
        ref = np.array([float(v) for v in inv.values()])
        np.testing.assert_allclose(c, ref, rtol=1e-15, atol=0)
        assert not c.flags.writeable


def test_labels_only_matter_through_equality():
    a = C.invariants_float((1, 1, 2, 2), (5, 5, "x", "x"))
    b = C.invariants_float((1, 1, 2, 2), (0, 0, 1, 1))
    assert len(a) == len(b)
    for (ma, ca), (mb, cb) in zip(a, b):
        assert np.array_equal(ma, mb) and np.array_equal(ca, cb)


def test_results_are_fresh_dicts():
    a = C.invariants((1, 1))
    a[0][(9, 9)] = 1
    assert (9, 9) not in C.invariants((1, 1))[0]


@pytest.mark.parametrize(
    "ls, classes",
    [((1, 1, 2), (0, 1, 0)), ((1, 2), (0, 0)), ((1, 1), (0,)), ((-1, 1), None), ((1.5, 1), None), ((), None)],
)
def test_bad_arguments(ls, classes):
    with pytest.raises(SpecError):
        C.invariants(ls, classes)


def test_odd_sum_has_no_invariant():
    assert C.invariants((1, 2, 2)) == [] and C.count_invariants((1, 2, 2)) == 0
    assert C.invariants_float((1, 1, 1), (0, 0, 0)) == []


# ---------------------------------------------------------------------------------------
# caches
# ---------------------------------------------------------------------------------------


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("ACEGEN_CACHE_DIR", str(tmp_path / "x"))
    assert C.cache_dir() == tmp_path / "x"
    monkeypatch.delenv("ACEGEN_CACHE_DIR")
    assert str(C.cache_dir()) == platformdirs.user_cache_dir("acegen")


def test_disk_cache_round_trip(fresh_cache, monkeypatch):
    ls, classes = (2, 2, 3, 3), (0, 0, 1, 1)
    first = C.invariants(ls, classes)
    firstf = C.invariants_float(ls, classes)
    files = list((fresh_cache / "coupling").iterdir())
    assert len(files) == 1 and re.fullmatch(r"[0-9a-f]{64}\.json", files[0].name)
    data = json.loads(files[0].read_text())
    assert data["version"] == C.VERSION and data["ls"] == list(ls)
    # a fresh process (empty memory caches) reads the file instead of computing
    for f in (C._raw, C._compute_raw, C._sympy_invariants, C._float_invariants):
        f.cache_clear()

    def boom(*a):
        raise AssertionError("recomputed")

    monkeypatch.setattr(C, "_compute_raw", boom)
    assert C.invariants(ls, classes) == first
    for (m1, c1), (m2, c2) in zip(firstf, C.invariants_float(ls, classes)):
        assert np.array_equal(m1, m2) and np.array_equal(c1, c2)


def test_disk_cache_corrupt_file_is_recomputed(fresh_cache):
    ls = (1, 1, 2)
    ref = C.invariants(ls)
    (path,) = (fresh_cache / "coupling").iterdir()
    path.write_text('{"version": "garbage"')
    for f in (C._raw, C._compute_raw, C._sympy_invariants, C._float_invariants):
        f.cache_clear()
    assert C.invariants(ls) == ref


def test_unwritable_cache_is_skipped(tmp_path, monkeypatch, fresh_cache):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("ACEGEN_CACHE_DIR", str(blocker / "sub"))
    assert len(C.invariants((2, 2, 2))) == 1
    assert blocker.is_file()
