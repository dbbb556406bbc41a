"""Real spherical harmonics: scipy, quadrature, finite differences, SLP and sign checks."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
import sympy as sp
from scipy.special import sph_harm_y

from acegen.errors import SpecError
from acegen.symbolic.ylm import lm_index, n_lm, real_ylm_polynomials, ylm_numpy, ylm_slp

X, Y, Z = sp.symbols("x y z", real=True)


def _terms(expr: sp.Expr) -> list[tuple[mpmath.mpf, int, int, int]]:
    """Monomials ``c x^a y^b z^c`` of an exact polynomial, coefficients in 40-digit mpmath."""
    out = []
    for term in sp.Add.make_args(sp.expand(expr)):
        coef, mono = term.as_independent(X, Y, Z, as_Add=False)
        pw = mono.as_powers_dict()
        c = mpmath.mpf(sp.N(coef, 40))
        out.append((c, int(pw.get(X, 0)), int(pw.get(Y, 0)), int(pw.get(Z, 0))))
    return out


def _eval_terms(terms, pt) -> tuple[float, list[float]]:
    """Value and gradient of a polynomial given by :func:`_terms` at ``pt`` (mpmath)."""
    x, y, z = (mpmath.mpf(v) for v in pt)
    val = sum(c * x**a * y**b * z**e for c, a, b, e in terms)
    gx = sum(c * a * x ** (a - 1) * y**b * z**e for c, a, b, e in terms if a)
    gy = sum(c * b * x**a * y ** (b - 1) * z**e for c, a, b, e in terms if b)
    gz = sum(c * e * x**a * y**b * z ** (e - 1) for c, a, b, e in terms if e)
    return float(val), [float(gx), float(gy), float(gz)]


def _unit(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1)[:, None]


def _scipy_real(lmax: int, xyz: np.ndarray) -> np.ndarray:
    """Real Y from scipy's complex Y (Condon–Shortley) by the documented conversion."""
    theta = np.arccos(np.clip(xyz[:, 2], -1, 1))
    phi = np.arctan2(xyz[:, 1], xyz[:, 0])
    out = np.empty((len(xyz), n_lm(lmax)))
    for l in range(lmax + 1):
        for m in range(-l, l + 1):
            c = sph_harm_y(l, abs(m), theta, phi)
            if m > 0:
                val = np.sqrt(2) * (-1) ** m * c.real
            elif m < 0:
                val = np.sqrt(2) * (-1) ** m * c.imag
            else:
                val = c.real
            out[:, lm_index(l, m)] = val
    return out


def test_index():
    assert [lm_index(l, m) for l in range(3) for m in range(-l, l + 1)] == list(range(9))
    assert n_lm(0) == 1 and n_lm(4) == 25


def test_against_scipy():
    xyz = _unit(200, 0)
    np.testing.assert_allclose(ylm_numpy(10, xyz), _scipy_real(10, xyz), rtol=0, atol=1e-13)


def test_sign_convention():
    c = np.sqrt(3 / (4 * np.pi))
    e = np.eye(3)
    y = ylm_numpy(1, e)
    # Y_{1,1} = +c x, Y_{1,-1} = +c y, Y_{1,0} = +c z
    np.testing.assert_allclose(y[:, lm_index(1, 1)], [c, 0, 0], atol=1e-15)
    np.testing.assert_allclose(y[:, lm_index(1, -1)], [0, c, 0], atol=1e-15)
    np.testing.assert_allclose(y[:, lm_index(1, 0)], [0, 0, c], atol=1e-15)
    np.testing.assert_allclose(y[:, 0], 0.5 / np.sqrt(np.pi), rtol=1e-15)
    p = real_ylm_polynomials(2)
    k = sp.sqrt(3) / (2 * sp.sqrt(sp.pi))
    assert sp.simplify(p[(1, 1)] - k * X) == 0
    assert sp.simplify(p[(1, -1)] - k * Y) == 0
    assert sp.simplify(p[(1, 0)] - k * Z) == 0
    # Y_{2,-2} is +xy, Y_{2,2} is +(x^2 - y^2)
    assert p[(2, -2)].coeff(X * Y) > 0
    assert p[(2, 2)].coeff(X**2) > 0


def test_orthonormal_by_quadrature():
    lmax = 10
    nt, nphi = 16, 32  # exact for polynomial degree 2*lmax on the sphere
    ct, wt = np.polynomial.legendre.leggauss(nt)
    phi = 2 * np.pi * np.arange(nphi) / nphi
    st = np.sqrt(1 - ct**2)
    xyz = np.stack(
        [np.outer(st, np.cos(phi)).ravel(), np.outer(st, np.sin(phi)).ravel(), np.repeat(ct, nphi)], axis=1
    )
    w = np.repeat(wt, nphi) * (2 * np.pi / nphi)
    ymat = ylm_numpy(lmax, xyz)
    gram = ymat.T @ (w[:, None] * ymat)
    np.testing.assert_allclose(gram, np.eye(n_lm(lmax)), atol=1e-13)


def test_gradient_finite_differences():
    lmax = 8
    xyz = _unit(20, 1)
    _, dy = ylm_numpy(lmax, xyz, grad=True)
    h = 1e-6
    for k in range(3):
        e = np.zeros(3)
        e[k] = h
        fd = (ylm_numpy(lmax, xyz + e) - ylm_numpy(lmax, xyz - e)) / (2 * h)
        np.testing.assert_allclose(dy[:, :, k], fd, atol=2e-7 * lmax**2)


def test_gradient_homogeneous():
    # Euler: r . grad P = l P for a homogeneous polynomial of degree l
    lmax = 6
    xyz = _unit(10, 2)
    y, dy = ylm_numpy(lmax, xyz, grad=True)
    ls = np.array([l for l in range(lmax + 1) for _ in range(2 * l + 1)])
    np.testing.assert_allclose(np.einsum("nik,nk->ni", dy, xyz), ls * y, atol=1e-12)


def test_polynomials_exact_form():
    p = real_ylm_polynomials(5)
    assert list(p) == [(l, m) for l in range(6) for m in range(-l, l + 1)]
    for (l, _m), expr in p.items():
        poly = sp.Poly(expr * sp.sqrt(sp.pi), X, Y, Z)
        assert poly.is_homogeneous and poly.total_degree() == l
        for c in poly.coeffs():
            assert (c**2).is_Rational


def test_polynomials_match_numpy():
    lmax = 12
    p = real_ylm_polynomials(lmax)
    xyz = _unit(3, 3)
    ref, dref = ylm_numpy(lmax, xyz, grad=True)
    dscale = 1 + np.abs(dref).max()
    mpmath.mp.dps = 40
    for (l, m), expr in p.items():
        terms = _terms(expr)
        for row, r, dr in zip(xyz, ref[:, lm_index(l, m)], dref[:, lm_index(l, m)]):
            val, grad = _eval_terms(terms, row)
            assert abs(val - r) < 1e-14
            np.testing.assert_allclose(grad, dr, rtol=0, atol=1e-14 * dscale)


def test_slp_matches_polynomials_and_numpy():
    lmax = 12
    slp = ylm_slp(lmax)
    n = n_lm(lmax)
    assert slp.inputs == ("x", "y", "z")
    assert len(slp.outputs) == 4 * n
    assert slp.outputs[:2] == ("ylm_Y0", "ylm_Y1") and slp.outputs[n] == "ylm_dx0"
    assert len(slp) <= 12 * n  # O(lmax^2) assignments, not expanded polynomials
    xyz = _unit(40, 4)
    outs = np.array(slp.evaluate(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2]))
    y, dy = ylm_numpy(lmax, xyz, grad=True)
    np.testing.assert_allclose(outs[:n].T, y, rtol=0, atol=1e-14)
    dscale = 1 + np.abs(dy).max()  # derivatives reach ~10 at l = 12: compare on that scale
    for k in range(3):
        got = outs[(k + 1) * n : (k + 2) * n].T
        np.testing.assert_allclose(got, dy[:, :, k], rtol=0, atol=1e-14 * dscale)
    # the exact polynomials and their exact gradients at a rational unit vector
    mpmath.mp.dps = 40
    pt = (mpmath.mpf(2) / 7, mpmath.mpf(-3) / 7, mpmath.mpf(6) / 7)
    got = slp.evaluate(x=2 / 7, y=-3 / 7, z=6 / 7)
    for (l, m), expr in real_ylm_polynomials(lmax).items():
        i = lm_index(l, m)
        val, grad = _eval_terms(_terms(expr), pt)
        assert abs(float(got[i]) - val) < 1e-14
        for k in range(3):
            assert abs(float(got[(k + 1) * n + i]) - grad[k]) <= 1e-14 * dscale


def test_slp_constants_round_trip():
    slp = ylm_slp(3)
    floats = [a for _, e in slp.assignments for a in e.atoms(sp.Float)]
    assert floats
    # at least double precision, printed with >= 17 significant digits (text round-trips
    # to within one ulp; sympy may multiply two constants in a derivative expression)
    text = slp.to_text()
    for f in floats:
        assert f._prec >= 53
        assert abs(float(sp.sstr(f, full_prec=True)) - float(f)) <= np.spacing(abs(float(f)))
    assert "pi" not in text
    # the constants the recursion introduces are correctly rounded doubles of exact values
    assert sp.Float(0.5 / np.sqrt(np.pi), 17) in [e for _, e in slp.assignments]


def test_bad_input():
    with pytest.raises(SpecError):
        ylm_numpy(-1, np.zeros((1, 3)))
    with pytest.raises(SpecError):
        ylm_numpy(2, np.zeros((3,)))
