"""The NumPy PACE evaluator against pyace's reference values, finite differences and
independent formulas (scipy spherical harmonics, orthonormality of the SBessel basis,
the universal ZBL potential)."""

from __future__ import annotations

import json
import math

import ase.io
import numpy as np
import pytest
import scipy.special as ss
from ase import Atoms

from acegen.errors import SpecError, StructureError
from acegen.io.pace import read_pace
from acegen.ir.model import RadialBlock, SplineTable
from acegen.reference.pace_numpy import (
    PaceReference,
    PaceSpline,
    bond_functions,
    core_repulsion,
    embedding,
    pace_radial_block,
    pace_spline_tables,
    radial_basis,
    ylm_pace,
)

from .conftest import SHARED, SHARED_MISSING  # noqa: E402

POT, REF = SHARED / "potentials", SHARED / "reference"
pytestmark = pytest.mark.skipif(not (REF / "MANIFEST.json").is_file(), reason=SHARED_MISSING)


def _manifest():
    if not (REF / "MANIFEST.json").is_file():
        return {}
    return json.loads((REF / "MANIFEST.json").read_text())["files"]


MANIFEST = _manifest()
_CACHE: dict = {}


def _pot(name):
    if name not in _CACHE:
        _CACHE[name] = read_pace(POT / name)
    return _CACHE[name]


def _frames(fname):
    key = ("frames", fname)
    if key not in _CACHE:
        _CACHE[key] = ase.io.read(REF / fname, ":")
    return _CACHE[key]


def _errors(ref: PaceReference, frames):
    """Max errors: energy/atom, per-atom energy, force (scaled by tolerance), stress."""
    e = ei = fr = fs = s = 0.0
    for a in frames:
        out = ref.compute(a)
        e = max(e, abs(out["energy"] - a.info["ref_energy"]) / len(a))
        ei = max(ei, np.abs(out["energies"] - a.arrays["ref_energies"]).max())
        dF = np.abs(out["forces"] - a.arrays["ref_forces"])
        fs = max(fs, dF.max())
        fr = max(fr, (dF / (1e-6 + 1e-7 * np.abs(a.arrays["ref_forces"]))).max())
        if "ref_stress" in a.info:
            assert "stress" in out
            s = max(s, np.abs(out["stress"] - a.info["ref_stress"]).max())
        else:
            assert "stress" not in out
    return e, ei, fr, fs, s


# ------------------------------------------------------------------ against pyace references
@pytest.mark.parametrize("fname", sorted(MANIFEST))
def test_spline_reference_matches_pyace(fname):
    ref = PaceReference(_pot(MANIFEST[fname]["potential"]))
    e, ei, fr, _, s = _errors(ref, _frames(fname))
    assert e < 1e-7 and ei < 1e-7 and fr < 1.0 and s < 1e-7, (e, ei, fr, s)
    assert e < 1e-10  # same splines: agreement to round-off, not just to the tolerance


@pytest.mark.parametrize("fname", sorted(MANIFEST))
def test_analytic_radial_is_close_to_pyace(fname):
    """Analytic radial functions differ from PACE by the spline error: energies stay within
    1e-7 eV/atom, forces within 1e-6 + 1e-7|F| fail for the ChebExpCos potentials with large
    forces (see docs/pace-formats-support.md)."""
    ref = PaceReference(_pot(MANIFEST[fname]["potential"]), radial="analytic")
    e, ei, fr, fs, s = _errors(ref, _frames(fname))
    assert e < 1e-7 and ei < 5e-7 and fs < 2e-3 and s < 1e-4, (e, ei, fr, fs, s)


# ----------------------------------------------------------------------- finite differences
def _dimer(fname, ctype, r):
    """The reference dimer of type ``ctype`` closest to separation r."""
    ds = [x for x in _frames(fname) if x.info["config_type"] == ctype]
    return min(ds, key=lambda x: abs(x.get_distance(0, 1) - r)).copy()


def _zbl_transition_cluster():
    """YBCO cluster with one neighbour moved into the ZBL switching range of its atom."""
    a = next(x for x in _frames("YBCO_ACE.extxyz") if x.info["config_type"] == "cluster").copy()
    pot = _pot("YBCO_ACE.yace")
    d = a.get_all_distances()
    np.fill_diagonal(d, np.inf)
    i, j = np.unravel_index(np.argmin(d), d.shape)
    b = pot.bonds[(pot.elements.index(a[i].symbol), pot.elements.index(a[j].symbol))]
    target = b.rcut_in - 0.4 * b.dcut_in
    a.positions[j] = a.positions[i] + (a.positions[j] - a.positions[i]) * target / d[i, j]
    return a


FD_CASES = [
    ("YBCO_ACE.extxyz", lambda: _zbl_transition_cluster(), "spline"),
    ("YBCO_ACE.extxyz", lambda: _dimer("YBCO_ACE.extxyz", "dimer_BaBa", 1.6), "spline"),
    ("YBCO_ACE.extxyz", lambda: _frame("YBCO_ACE.extxyz", "compressed"), "analytic"),
    ("Al.pbe.rhocore.extxyz", lambda: _dimer("Al.pbe.rhocore.extxyz", "dimer_AlAl", 1.2), "spline"),
    ("Al.pbe.rhocore.extxyz", lambda: _frame("Al.pbe.rhocore.extxyz", "compressed"), "spline"),
    ("Cu-I.extxyz", lambda: _frame("Cu-I.extxyz", "compressed"), "spline"),
    ("Al-Ni_opt_all.extxyz", lambda: _frame("Al-Ni_opt_all.extxyz", "bulk_rattled"), "spline"),
    ("ZBL_rep.extxyz", lambda: _frame("ZBL_rep.extxyz", "trimer"), "spline"),
    ("ethanol.extxyz", lambda: _frame("ethanol.extxyz", "cluster"), "analytic"),
]


def _frame(fname, ctype):
    return next(x for x in _frames(fname) if x.info["config_type"] == ctype).copy()


@pytest.mark.parametrize("case", range(len(FD_CASES)))
def test_forces_and_stress_by_finite_differences(case):
    fname, make, radial = FD_CASES[case]
    a = make()
    ref = PaceReference(_pot(MANIFEST[fname]["potential"]), radial=radial)
    out = ref.compute(a)
    h = 1e-5
    rng = np.random.default_rng(case)
    atoms_idx = rng.choice(len(a), size=1 if len(a) > 20 else min(2, len(a)), replace=False)
    fmax = np.abs(out["forces"]).max()
    for i in atoms_idx:
        for c in range(3):
            ap, am = a.copy(), a.copy()
            ap.positions[i, c] += h
            am.positions[i, c] -= h
            fd = -(ref.compute(ap)["energy"] - ref.compute(am)["energy"]) / (2 * h)
            assert out["forces"][i, c] == pytest.approx(fd, rel=1e-6, abs=1e-7 * (1 + fmax))
    if "stress" in out:
        cell = a.cell.array.copy()
        vol = a.get_volume()
        for k, (p, q) in [(0, (0, 0)), (3, (1, 2)), (5, (0, 1))]:
            es = []
            for sgn in (1, -1):
                eps = np.eye(3)
                eps[p, q] += sgn * h
                if p != q:
                    eps[q, p] += sgn * h
                b = a.copy()
                b.set_cell(cell @ eps.T, scale_atoms=True)
                es.append(ref.compute(b)["energy"])
            fd = (es[0] - es[1]) / (2 * h) / vol / (1 if p == q else 2)
            assert out["stress"][k] == pytest.approx(fd, rel=1e-6, abs=1e-7)


# ------------------------------------------------------------------------------- splines
def test_spline_knots_and_layout():
    pot = _pot("Cu-PBE-core-rep.ace")
    bond = pot.bonds[(0, 0)]
    table, meta = pace_spline_tables(pot, 0, 0)
    assert isinstance(table, SplineTable)
    K, N, L1 = bond.nradbase, bond.nradmax, bond.lmax + 1
    assert table.nfunc == K + N * L1 + 1 and meta.core == K + N * L1
    assert meta.nlut == int(bond.rcut / pot.delta_spline_bins) and table.nbins == meta.nlut
    assert table.h == pytest.approx(bond.rcut / meta.nlut, rel=1e-15) and meta.r_min == table.h
    # Hermite interpolation: value and derivative equal the analytic functions at every knot
    n = np.array([1, 2, 17, 1000, 4321, meta.nlut - 1])
    knots = n * table.h
    v, d = table.evaluate(knots)
    av, ad = bond_functions(pot, 0, 0, knots)
    np.testing.assert_allclose(v, av, rtol=1e-12, atol=1e-12 * np.abs(av).max())
    np.testing.assert_allclose(d, ad, rtol=1e-10, atol=1e-10 * np.abs(ad).max())
    # layout: R_{n,l} = Σ_k crad g_k, in n-major order
    r = np.linspace(0.8, 7.3, 50)
    v, _ = table.evaluate(r)
    R = v[:, meta.g] @ bond.crad.reshape(-1, K).T
    np.testing.assert_allclose(v[:, meta.R], R, rtol=1e-9, atol=1e-12)
    # the IR table and PACE's own lookup agree (r ≥ h), and vanish beyond rcut
    sp = PaceSpline(lambda x: bond_functions(pot, 0, 0, x), bond.rcut, pot.delta_spline_bins)
    r = np.random.default_rng(1).uniform(table.h, bond.rcut + 0.5, 2000)
    a, da = table.evaluate(r)
    b, db = sp.evaluate(r)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())
    np.testing.assert_allclose(da, db, rtol=1e-10, atol=1e-10 * np.abs(db).max())
    assert np.all(table.evaluate(np.array([bond.rcut, bond.rcut + 1]))[0] == 0.0)
    # bin 0 continues bin 1 (finite, continuous at r = h)
    lo, _ = table.evaluate(np.array([table.h * (1 - 1e-12)]))
    hi, _ = table.evaluate(np.array([table.h]))
    np.testing.assert_allclose(lo, hi, rtol=1e-9)


def test_spline_accuracy_away_from_the_core():
    """Spline vs analytic radial functions for r ≥ 1 Å: the size of the difference the
    tolerances have to absorb."""
    for name, keys in (("YBCO_ACE.yace", [(0, 0), (1, 2)]), ("DFT10B-AgCu.yaml", [(0, 1)]), ("Cu-PBE-core-rep.ace", [(0, 0)])):
        pot = _pot(name)
        for key in keys:
            table, meta = pace_spline_tables(pot, *key)
            r = np.linspace(1.0, meta.rcut - 1e-6, 5001)
            v, d = table.evaluate(r)
            av, ad = bond_functions(pot, *key, r)
            scale = np.abs(av).max(axis=0) + 1.0
            assert np.all(np.abs(v - av).max(axis=0) < 1e-6 * scale)


def test_radial_block_for_the_ir():
    pot = _pot("YBCO_ACE.yace")
    blk = pace_radial_block(pot, 0, 2)
    assert isinstance(blk, RadialBlock) and blk.spline is not None
    b = pot.bonds[(0, 2)]
    assert blk.rcut == b.rcut and blk.r_in == b.rcut_in and blk.delta_in == b.dcut_in
    assert blk.nfunc == b.nradbase + b.nradmax * (b.lmax + 1) + 1 and blk.core == blk.nfunc - 1
    with pytest.raises(SpecError):
        pace_radial_block(pot, 0, 2, mode="analytic")


# ------------------------------------------------------------------- independent formulas
def test_ylm_against_scipy_and_gradient():
    rng = np.random.default_rng(3)
    v = rng.normal(size=(20, 3))
    v /= np.linalg.norm(v, axis=1)[:, None]
    L = 6
    Y, DY = ylm_pace(v, L)
    th, ph = np.arccos(v[:, 2]), np.arctan2(v[:, 1], v[:, 0])
    k = 0
    for l in range(L + 1):
        for m in range(l + 1):
            ref = math.sqrt(4 * math.pi) * ss.sph_harm_y(l, m, th, ph)
            np.testing.assert_allclose(Y[:, k], ref, rtol=1e-12, atol=1e-12)
            k += 1
    # DY = r ∂Y(r/|r|)/∂r at |r| = 1 (finite differences on the unit vector)
    h = 1e-6
    for c in range(3):
        e = np.zeros(3)
        e[c] = h
        up, dn = v + e, v - e
        Yp, _ = ylm_pace(up / np.linalg.norm(up, axis=1)[:, None], L)
        Ym, _ = ylm_pace(dn / np.linalg.norm(dn, axis=1)[:, None], L)
        np.testing.assert_allclose(DY[:, :, c], (Yp - Ym) / (2 * h), atol=1e-7)


def test_radial_derivatives_and_sbessel_orthonormality():
    for name in ("YBCO_ACE.yace", "Cu-PBE-core-rep.ace", "Cu-III.yaml", "Cu-I.yaml"):
        pot = _pot(name)
        bond = pot.bonds[(0, 0)]
        r = np.linspace(0.5, bond.rcut - 0.02, 301)
        h = 1e-6
        g, dg = radial_basis(bond, r)
        fd = (radial_basis(bond, r + h)[0] - radial_basis(bond, r - h)[0]) / (2 * h)
        np.testing.assert_allclose(dg, fd, atol=1e-6 * (1 + np.abs(dg).max()))
        Zi = Zj = 1
        c, dc = core_repulsion(bond, r, Zi, Zj)
        fdc = (core_repulsion(bond, r + h, Zi, Zj)[0] - core_repulsion(bond, r - h, Zi, Zj)[0]) / (2 * h)
        np.testing.assert_allclose(dc, fdc, rtol=1e-6, atol=1e-6)
    bond = _pot("YBCO_ACE.yace").bonds[(0, 0)]  # SBessel: orthonormal with weight r² on [0, rc]
    r = np.linspace(1e-6, bond.rcut, 100001)
    g, _ = radial_basis(bond, r)
    G = np.trapezoid(g[:, :, None] * g[:, None, :] * (r**2)[:, None, None], r, axis=0)
    np.testing.assert_allclose(G, np.eye(bond.nradbase), atol=1e-6)


def test_zbl_core_is_the_universal_potential_inside():
    pot = _pot("YBCO_ACE.yace")
    bond = pot.bonds[(1, 2)]  # Cu-O
    Zi, Zj = 29, 8
    r = np.linspace(0.3, 2.0, 50)
    phi, _ = core_repulsion(bond, r, Zi, Zj)
    a = 0.46850 / (Zi**0.23 + Zj**0.23)
    x = r / a
    screen = 0.18175 * np.exp(-3.1998 * x) + 0.50986 * np.exp(-0.94229 * x) + 0.28022 * np.exp(-0.4029 * x) + 0.02817 * np.exp(-0.20162 * x)
    zbl = 14.399645351950543 / 2 * Zi * Zj / r * screen
    shift = phi - bond.prehc * zbl  # constant shift C making it vanish at rcut
    assert np.ptp(shift) < 1e-12 * np.abs(phi).max()
    assert core_repulsion(bond, np.array([bond.rcut]), Zi, Zj)[0][0] == 0.0


def test_embedding_derivatives():
    rho = np.linspace(-3, 3, 121)[:, None] * np.array([[1.0, 0.7]])
    h = 1e-7
    for npoti, fs in [("FinnisSinclairShiftedScaled", (1.0, 1.0, 2.0, 0.5)), ("FinnisSinclair", (1.0, 1.0, 0.5, 0.5))]:
        E, dE = embedding(npoti, fs, rho)
        for p in range(2):
            e = np.zeros(2)
            e[p] = h
            fd = (embedding(npoti, fs, rho + e)[0] - embedding(npoti, fs, rho - e)[0]) / (2 * h)
            ok = np.abs(rho[:, p]) > 1e-3
            np.testing.assert_allclose(dE[ok, p], fd[ok], rtol=1e-5, atol=1e-6)
    E, _ = embedding("FinnisSinclairShiftedScaled", (1.0, 1.0, 1.0, 0.5), np.array([[2.0, 4.0]]))
    assert E[0] == pytest.approx(2.0 + (math.exp(-4) / 4 + 4) ** 0.5 - math.exp(-4) / 2, rel=1e-14)


# ------------------------------------------------------------------------------ structures
def test_structure_errors():
    ref = PaceReference(_pot("Cu-III.yaml"))
    with pytest.raises(StructureError, match="atom 1"):
        ref.compute(Atoms("CuAg", positions=[[0, 0, 0], [2, 0, 0]]))
    close = Atoms("Cu2", positions=[[0, 0, 0], [0.0005, 0, 0]])
    with pytest.raises(StructureError, match="very small distance"):
        ref.compute(close)
    out = PaceReference(_pot("Cu-III.yaml"), radial="analytic").compute(close)
    assert np.isfinite(out["energy"])
    iso = ref.compute(Atoms("Cu", positions=[[0, 0, 0]]))
    assert iso["energy"] == 0.0 and np.all(iso["forces"] == 0.0)


def test_translation_rotation_and_permutation_invariance():
    a = next(x for x in _frames("YBCO_ACE.extxyz") if x.info["config_type"] == "cluster").copy()
    ref = PaceReference(_pot("YBCO_ACE.yace"))
    base = ref.compute(a)
    rot = np.linalg.qr(np.random.default_rng(5).normal(size=(3, 3)))[0]
    b = a.copy()
    b.positions = a.positions @ rot.T + 1.234
    out = ref.compute(b)
    assert out["energy"] == pytest.approx(base["energy"], rel=1e-12)
    np.testing.assert_allclose(out["forces"], base["forces"] @ rot.T, atol=1e-9)
    perm = np.random.default_rng(6).permutation(len(a))
    out = ref.compute(a[perm])
    np.testing.assert_allclose(out["energies"], base["energies"][perm], atol=1e-11)
