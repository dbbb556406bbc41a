"""Tests of acegen.symbolic.radial: transform, envelopes, orthogonality, SLP vs reference."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from scipy.optimize import minimize_scalar

from acegen.errors import SpecError
from acegen.ir.slp import ALLOWED_FUNCS
from acegen.spec import BasisSpec
from acegen.symbolic import radial as rad

SPECS = [
    BasisSpec(["Cu"], 3, [20, 16, 12]),
    BasisSpec(["Ti", "Al"], 2, 10, rcut={("Ti", "Ti"): 5.5, ("Ti", "Al"): 5.0, ("Al", "Al"): 4.8},
              pair_rcut=6.0),
    BasisSpec(["Si"], 2, 9, transform=("agnesi", 2, 6), envelope=("x", 0, 3),
              pair_envelope=("x", 1, 2), pair_transform=("agnesi", 2, 4)),
]
BONDS = [(SPECS[0], 0, 0), (SPECS[1], 0, 1), (SPECS[1], 1, 1), (SPECS[2], 0, 0)]
KINDS = ["manybody", "pair"]


def _slp(spec, zi, zj, kind, nfunc=None):
    f = rad.manybody_radial_slp if kind == "manybody" else rad.pair_radial_slp
    return f(spec, zi, zj, nfunc)


def _numpy(spec, zi, zj, kind, r, nfunc=None):
    f = rad.manybody_radial_numpy if kind == "manybody" else rad.pair_radial_numpy
    return f(spec, zi, zj, r, nfunc)


def _eval_slp(slp, n, r):
    out = slp.evaluate(r=r)
    return np.stack(out[:n], -1), np.stack(out[n:], -1)


def _rcut(spec, zi, zj, kind):
    return spec.rcut_pair(zi, zj) if kind == "manybody" else spec.pair_rcut_pair(zi, zj)


# ---------------------------------------------------------------- transform
@pytest.mark.parametrize("p, q", [(2, 4), (1, 3), (2, 2), (3, 5), (2, 6)])
def test_agnesi_a_from_symbolic_condition(p, q):
    # independent derivation: a solves d^2 x / ds^2 = 0 at s = 1
    s, a = sp.symbols("s a", positive=True)
    x = 1 / (1 + a * s**q / (1 + s ** (q - p)))
    sols = sp.solve(sp.Eq(sp.diff(x, s, 2).subs(s, 1), 0), a)
    pos = [v for v in sols if v.is_positive]
    assert len(pos) == 1 and sp.simplify(pos[0] - rad.agnesi_a(p, q)) == 0


@pytest.mark.parametrize("p, q", [(2, 4), (1, 3), (3, 5)])
def test_agnesi_a_maximises_slope_at_r0(p, q):
    r0 = 2.6
    a = float(rad.agnesi_a(p, q))
    res = minimize_scalar(lambda r: -abs(rad.agnesi_dx(r, r0, p, q, a)), bounds=(0.3 * r0, 3 * r0),
                          method="bounded", options={"xatol": 1e-10})
    assert res.x == pytest.approx(r0, rel=1e-6)
    # and a different a moves the maximum away from r0
    res2 = minimize_scalar(lambda r: -abs(rad.agnesi_dx(r, r0, p, q, 1.5 * a)), bounds=(0.3 * r0, 3 * r0),
                           method="bounded", options={"xatol": 1e-10})
    assert abs(res2.x - r0) > 1e-3


def test_agnesi_dx_matches_finite_difference():
    r = np.linspace(0.4, 7.0, 50)
    h = 1e-6
    fd = (rad.agnesi_x(r + h, 2.5, 2, 4) - rad.agnesi_x(r - h, 2.5, 2, 4)) / (2 * h)
    np.testing.assert_allclose(rad.agnesi_dx(r, 2.5, 2, 4), fd, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("spec, zi, zj", BONDS)
@pytest.mark.parametrize("kind", KINDS)
def test_normalised_coordinate_maps_0_rcut_to_minus1_plus1(spec, zi, zj, kind):
    tp = rad.transform_params(spec, zi, zj, kind)
    rc = _rcut(spec, zi, zj, kind)
    assert rad.normalized_y(tp, 0.0) == pytest.approx(-1.0, abs=1e-15)
    assert rad.normalized_y(tp, rc) == pytest.approx(1.0, abs=1e-14)
    r = np.linspace(0.0, rc, 200)
    assert np.all(np.diff(rad.normalized_y(tp, r)) > 0)


# ---------------------------------------------------------------- SLP vs reference
@pytest.mark.parametrize("spec, zi, zj", BONDS)
@pytest.mark.parametrize("kind", KINDS)
def test_slp_matches_numpy_reference(spec, zi, zj, kind):
    slp, n = _slp(spec, zi, zj, kind)
    assert n == (spec.nmax if kind == "manybody" else spec.pair_degree)
    assert slp.outputs == tuple(f"R_{i}" for i in range(1, n + 1)) + tuple(f"dR_{i}" for i in range(1, n + 1))
    rc = _rcut(spec, zi, zj, kind)
    r = np.linspace(0.3, rc, 1500, endpoint=False)
    V, D = _eval_slp(slp, n, r)
    Vr, Dr = _numpy(spec, zi, zj, kind, r)
    for a, b in ((V, Vr), (D, Dr)):
        scale = np.maximum(np.abs(b).max(axis=0), 1.0)
        assert np.all(np.abs(a - b).max(axis=0) <= 1e-13 * scale)


@pytest.mark.parametrize("spec, zi, zj", BONDS)
@pytest.mark.parametrize("kind", KINDS)
def test_derivatives_match_finite_differences(spec, zi, zj, kind):
    slp, n = _slp(spec, zi, zj, kind)
    rc = _rcut(spec, zi, zj, kind)
    r = np.linspace(0.5, rc - 1e-3, 300)
    h = 1e-5
    Vp, _ = _eval_slp(slp, n, r + h)
    Vm, _ = _eval_slp(slp, n, r - h)
    _, D = _eval_slp(slp, n, r)
    fd = (Vp - Vm) / (2 * h)
    scale = np.maximum(np.abs(D).max(axis=0), 1.0)
    assert np.all(np.abs(fd - D).max(axis=0) <= 1e-6 * scale)


@pytest.mark.parametrize("spec, zi, zj", BONDS)
@pytest.mark.parametrize("kind", KINDS)
def test_smooth_cutoff(spec, zi, zj, kind):
    slp, n = _slp(spec, zi, zj, kind)
    rc = _rcut(spec, zi, zj, kind)
    V, D = _eval_slp(slp, n, np.array([rc]))
    scale = max(1.0, np.abs(_eval_slp(slp, n, np.linspace(0.5, rc, 100))[0]).max())
    assert np.abs(V).max() <= 1e-12 * scale and np.abs(D).max() <= 1e-11 * scale
    # approaching the cutoff the values decay (at least quadratically)
    eps = np.array([1e-2, 1e-3])
    Vn, _ = _eval_slp(slp, n, rc - eps)
    assert np.all(np.abs(Vn[1]) <= 0.02 * np.abs(Vn[0]) + 1e-14)
    # reference and RadialBlock are identically zero at and beyond the cutoff
    rr = np.array([rc, rc + 0.1, rc + 3.0])
    Vr, Dr = _numpy(spec, zi, zj, kind, rr)
    assert np.all(Vr == 0) and np.all(Dr == 0)
    blk = (rad.manybody_radial_block if kind == "manybody" else rad.pair_radial_block)(spec, zi, zj)
    assert blk.rcut == rc and blk.nfunc == n
    Vb, Db = blk.evaluate(rr)
    assert np.all(Vb == 0) and np.all(Db == 0)


def test_slp_uses_only_primitive_operations():
    allowed_funcs = tuple(ALLOWED_FUNCS.values())
    for spec, zi, zj in BONDS:
        for kind in KINDS:
            slp, _ = _slp(spec, zi, zj, kind)
            names = set(slp.inputs)
            for name, expr in slp.assignments:
                for node in sp.preorder_traversal(expr):
                    if isinstance(node, sp.Pow):
                        assert node.exp.is_Integer, (name, expr)
                    elif isinstance(node, sp.Function):
                        assert isinstance(node, allowed_funcs), (name, expr)
                    elif isinstance(node, sp.Symbol):
                        assert node.name in names, (name, expr)
                names.add(name)


# ---------------------------------------------------------------- orthogonality
def _gauss_r(rc, npts=400):
    x, w = np.polynomial.legendre.leggauss(npts)
    return 0.5 * rc * (x + 1), 0.5 * rc * w


@pytest.mark.parametrize("spec, zi, zj", BONDS)
def test_manybody_orthonormal_including_envelope(spec, zi, zj):
    """(1/2) int_{-1}^{1} R_n R_m dy = delta_nm, integrated in r with dy = y'(r) dr."""
    slp, n = _slp(spec, zi, zj, "manybody")
    tp = rad.transform_params(spec, zi, zj, "manybody")
    r, w = _gauss_r(tp.rcut)
    V, _ = _eval_slp(slp, n, r)
    dy = tp.y1 * rad.agnesi_dx(r, tp.r0, tp.p, tp.q, tp.a)
    G = 0.5 * (V * (w * dy)[:, None]).T @ V
    np.testing.assert_allclose(G, np.eye(n), atol=1e-10)


@pytest.mark.parametrize("spec, zi, zj", [b for b in BONDS if b[0].pair_envelope[0] == "r"])
def test_pair_polynomials_orthonormal_without_r_envelope(spec, zi, zj):
    slp, n = _slp(spec, zi, zj, "pair")
    tp = rad.transform_params(spec, zi, zj, "pair")
    r, w = _gauss_r(tp.rcut)
    V, _ = _eval_slp(slp, n, r)
    pe = spec.pair_envelope[1]
    s, sc = r / tp.r0, tp.rcut / tp.r0
    env = s ** (-pe) - sc ** (-pe) + pe * sc ** (-pe - 1) * (s - sc)
    P = V / env[:, None]
    dy = tp.y1 * rad.agnesi_dx(r, tp.r0, tp.p, tp.q, tp.a)
    G = 0.5 * (P * (w * dy)[:, None]).T @ P
    np.testing.assert_allclose(G, np.eye(n), atol=1e-9)
    # ACE1 orientation: the degree-1 polynomial increases towards r = 0
    assert P[0, 1] > P[-1, 1]


def test_pair_with_x_envelope_orthonormal_including_envelope():
    spec = SPECS[2]
    slp, n = _slp(spec, 0, 0, "pair")
    tp = rad.transform_params(spec, 0, 0, "pair")
    r, w = _gauss_r(tp.rcut)
    V, _ = _eval_slp(slp, n, r)
    dy = tp.y1 * rad.agnesi_dx(r, tp.r0, tp.p, tp.q, tp.a)
    G = 0.5 * (V * (w * dy)[:, None]).T @ V
    np.testing.assert_allclose(G, np.eye(n), atol=1e-10)


# ---------------------------------------------------------------- exact polynomial form
@pytest.mark.parametrize("spec, zi, zj", BONDS)
@pytest.mark.parametrize("kind", KINDS)
def test_exact_form_reproduces_basis(spec, zi, zj, kind):
    form = rad.radial_polynomial_form(spec, zi, zj, kind)
    tp = rad.transform_params(spec, zi, zj, kind)
    rc = _rcut(spec, zi, zj, kind)
    r = np.linspace(0.4, rc * 0.999, 97)
    y = rad.normalized_y(tp, r)
    Vr, _ = _numpy(spec, zi, zj, kind, r)
    env = spec.envelope if kind == "manybody" else spec.pair_envelope
    if env[0] == "x":
        assert form.polynomial_envelope and form.envelope_degree == env[1] + env[2]
        ec = [float(c) for c in form.envelope_coeffs]
        assert all(isinstance(c, sp.Rational) for c in form.envelope_coeffs)
        f = np.polynomial.polynomial.polyval(y, ec)
        np.testing.assert_allclose(f, (1 + y) ** env[1] * (1 - y) ** env[2], atol=1e-14)
    else:
        assert not form.polynomial_envelope and form.envelope_degree is None
        s, sc = r / tp.r0, tp.rcut / tp.r0
        f = s ** (-env[1]) - sc ** (-env[1]) + env[1] * sc ** (-env[1] - 1) * (s - sc)
    for n in range(1, form.nfunc + 1):
        c, h = form.rational_coefficients(n)
        assert all(isinstance(ci, sp.Rational) for ci in c) and isinstance(h, sp.Rational)
        assert len(c) == n  # degree n - 1
        poly = np.polynomial.polynomial.polyval(y, [float(ci) for ci in c]) / np.sqrt(float(h))
        scale = max(1.0, np.abs(Vr[:, n - 1]).max())
        assert np.abs(f * poly - Vr[:, n - 1]).max() <= 1e-9 * scale
        ex = form.coefficients(n)
        assert float(ex[-1]) == pytest.approx(float(c[-1]) / np.sqrt(float(h)), rel=1e-14)


def test_default_manybody_envelope_is_y2_times_y_minus_ycut_squared():
    """Seed 003: f_env = y^2 (y - y_cut)^2 in a coordinate with y(0) = 0; in the normalised
    coordinate this is (1 + y)^2 (1 - y)^2 up to a constant factor."""
    form = rad.radial_polynomial_form(SPECS[0], 0, 0)
    y = sp.Symbol("y")
    env = sum(c * y**k for k, c in enumerate(form.envelope_coeffs))
    t = (y + 1) / 2  # maps [-1, 1] -> [0, 1], y_cut = 1
    assert sp.simplify(env - 16 * t**2 * (t - 1) ** 2) == 0


def test_extended_nfunc_for_purification():
    spec = SPECS[0]
    n_ext = spec.nmax + 4 * (spec.order - 1)
    slp, n = rad.manybody_radial_slp(spec, 0, 0, nfunc=n_ext)
    assert n == n_ext
    r = np.linspace(0.5, 6.4, 300)
    V, _ = _eval_slp(slp, n, r)
    Vr, _ = rad.manybody_radial_numpy(spec, 0, 0, r, nfunc=n_ext)
    np.testing.assert_allclose(V, Vr, atol=1e-12 * np.abs(Vr).max())
    # a product R_a R_b equals envelope times a polynomial of degree a + b - 2 + 4 =>
    # it lies in the span of R_1..R_{a+b+3}
    a, b = 5, 7
    form = rad.radial_polynomial_form(spec, 0, 0, nfunc=a + b + 3)
    tp = rad.transform_params(spec, 0, 0)
    yy = np.linspace(-0.99, 0.99, 200)
    basis = []
    for k in range(1, a + b + 4):
        c, h = form.rational_coefficients(k)
        basis.append((1 - yy**2) ** 2 * np.polynomial.polynomial.polyval(yy, [float(x) for x in c]) / np.sqrt(float(h)))
    basis = np.array(basis).T
    ra = basis[:, a - 1] * basis[:, b - 1]
    coef, *_ = np.linalg.lstsq(basis, ra, rcond=None)
    assert np.abs(basis @ coef - ra).max() < 1e-10
    assert tp.rcut == spec.rcut_pair(0, 0)


def test_bad_arguments():
    with pytest.raises(SpecError):
        rad.transform_params(SPECS[0], 0, 0, "triple")
    with pytest.raises(SpecError):
        rad.manybody_radial_slp(SPECS[0], 0, 1)
    with pytest.raises(SpecError):
        rad.radial_polynomial_form(SPECS[0], 0, 0, nfunc=0)
    with pytest.raises(SpecError):
        rad.radial_polynomial_form(SPECS[0], 0, 0).rational_coefficients(99)
