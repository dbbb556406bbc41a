"""Exporting acegen's own linear models to PACE's .yace (acegen/io/pace_export.py).

Independent references: acegen's NumPy reference evaluator of the *original* model
(ACEReference, analytic radial functions, real harmonics); the .yace read back by acegen's PACE
reader and evaluated by the NumPy PACE evaluator (PaceReference: complex Y with Y_00 = 1, PACE's
ChebPow formula, PACE's splines); scipy's complex spherical harmonics; pyace 0.4.0rc1 itself in
a subprocess when it is installed in a separate environment.

Accuracy expected (docs/pace.md, "Exporting acegen models to .yace"): the radial fit is checked
at 1e-12 (values) / 1e-10 (derivatives) relative, so with analytic radial functions the .yace
reproduces acegen to ~1e-11 eV and ~1e-10 eV/Å; PACE's splines add their own error (~1e-9 eV/Å
here).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms

import acegen
from acegen.errors import AcegenError
from acegen.io import pace_export
from acegen.io.pace import PaceBond, read_yace
from acegen.reference.ace_numpy import ACEReference
from acegen.reference.pace_numpy import PaceReference, radial_basis

from .models import random_structure

REPO = Path(__file__).resolve().parent.parent

CASES = {  # name -> (elements, order, totaldegree, purification)
    "Cu_o2_none": (("Cu",), 2, 8, "none"),
    "Cu_o3_pair": (("Cu",), 3, 8, "pair"),
    "CuNi_o2_pair": (("Cu", "Ni"), 2, 7, "pair"),
    "CuNi_o3_none": (("Cu", "Ni"), 3, 6, "none"),
}
ANALYTIC_TOL = {"energy": 1e-9, "forces": 2e-9}  # eV, eV/Å: fit error only
SPLINE_TOL = {"energy": 1e-9, "forces": 2e-8}  # + PACE's cubic splines on the 0.001 Å grid


@functools.lru_cache(maxsize=None)
def case_model(name: str) -> acegen.Model:
    els, order, deg, pur = CASES[name]
    eref = {e: -1.25 * (k + 1) for k, e in enumerate(els)}
    spec = acegen.BasisSpec(elements=list(els), order=order, totaldegree=deg, rcut=5.0, purification=pur, Eref=eref)
    return acegen.Model.random(spec, seed=2, name=name)


@functools.lru_cache(maxsize=None)
def exported(name: str, directory: str):
    path = Path(directory) / f"{name}.yace"
    case_model(name).save(path)
    return path


@pytest.fixture(scope="module")
def yace_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("yace"))


def _compare(got: dict, want: dict, tol: dict, what: str) -> None:
    dE = abs(got["energy"] - want["energy"])
    dF = np.abs(np.asarray(got["forces"]) - np.asarray(want["forces"])).max()
    assert dE < tol["energy"], f"{what}: |ΔE| = {dE:.2e} eV"
    assert dF < tol["forces"], f"{what}: max |ΔF| = {dF:.2e} eV/Å"


# ------------------------------------------------------------------ building blocks
def test_chebpow_basis_is_pace_chebpow_with_lambda_1():
    """The exporter's g_k equal the NumPy PACE evaluator's ChebPow (λ = 1); derivatives agree
    with central differences."""
    rc, K = 4.7, 40
    bond = PaceBond(radbasename="ChebPow", radparameters=(1.0,), nradbase=K, nradmax=1, lmax=0,
                    crad=np.zeros((1, 1, K)), rcut=rc, dcut=0.01, prehc=0.0, lambdahc=1.0, rcut_in=0.0,
                    dcut_in=0.0, inner_cutoff_type="density")
    r = np.linspace(0.05, rc - 1e-3, 997)
    g, dg = pace_export.chebpow_basis(r, rc, K)
    g_ref, dg_ref = radial_basis(bond, r)
    np.testing.assert_allclose(g, g_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(dg, dg_ref, rtol=0, atol=1e-9)
    h = 1e-6
    fd = (pace_export.chebpow_basis(r + h, rc, K)[0] - pace_export.chebpow_basis(r - h, rc, K)[0]) / (2 * h)
    np.testing.assert_allclose(dg, fd, rtol=0, atol=2e-6 * np.abs(dg).max())


def test_real_harmonics_in_complex_ones():
    """Σ coef · Y^c_{l,m'} of _real_to_complex equals acegen's real orthonormal Y_lm (scipy's
    complex harmonics with the Condon–Shortley phase)."""
    from scipy.special import sph_harm_y

    from acegen.symbolic.ylm import lm_index, ylm_numpy

    rng = np.random.default_rng(0)
    v = rng.normal(size=(50, 3))
    v /= np.linalg.norm(v, axis=1)[:, None]
    theta, phi = np.arccos(v[:, 2]), np.arctan2(v[:, 1], v[:, 0])
    L = 5
    Yr = ylm_numpy(L, v)
    for l in range(L + 1):
        for m in range(-l, l + 1):
            comb = sum(c * sph_harm_y(l, mc, theta, phi) for c, mc in pace_export._real_to_complex(m))
            np.testing.assert_allclose(comb.imag, 0.0, atol=1e-13)
            np.testing.assert_allclose(comb.real, Yr[:, lm_index(l, m)], rtol=0, atol=1e-13)


def test_radial_fits_reach_the_tolerance():
    m = case_model("CuNi_o2_pair")
    fits = pace_export.fit_radials(m)
    assert set(fits) == {(a, b) for a in range(2) for b in range(2)}
    for (zi, zj), fit in fits.items():
        assert fit.err.max() <= pace_export.DEFAULT_TOL
        assert fit.derr.max() <= 100 * pace_export.DEFAULT_TOL
        assert fit.has_v
        # the singular pair part is fitted from r_min = 0.2 r0 on, the many-body R_n from 0
        assert fit.r_lo[-1] == pytest.approx(0.2 * m.spec.r0_pair(zi, zj))
        assert np.all(fit.r_lo[:-1] == 0.0)


# ------------------------------------------------------------------ the written file
@pytest.mark.parametrize("name", sorted(CASES))
def test_yace_layout(name, yace_dir):
    """Linear embedding, E0 = Eref, ChebPow bonds without core repulsion, rank-1 functions first,
    PACE's half basis (Σm = 0, first non-zero m positive unless self-conjugate)."""
    path = exported(name, yace_dir)
    pot = read_yace(path)
    m = case_model(name)
    assert pot.elements == m.elements
    assert pot.E0 == tuple(dict(m.spec.Eref)[e] for e in m.elements)
    for emb in pot.embeddings.values():
        assert (emb.ndensity, emb.npoti, emb.fs_parameters) == (1, "FinnisSinclairShiftedScaled", (1.0, 1.0))
    for bond in pot.bonds.values():
        assert bond.radbasename == "ChebPow" and bond.radparameters == (1.0,)
        assert bond.prehc == 0.0 and bond.inner_cutoff_type == "density"
        # R_nl does not depend on l
        assert np.array_equal(bond.crad, np.broadcast_to(bond.crad[:, :1, :], bond.crad.shape))
    for mu0, funcs in pot.functions.items():
        ranks = [f.rank for f in funcs]
        assert ranks == sorted(ranks) and ranks[0] == 1
        assert max(ranks) == m.spec.order
        for f in funcs:
            assert np.all(f.ms_combs.sum(axis=1) == 0)
            facs = list(zip(f.mus, f.ns, f.ls))
            for row in f.ms_combs.tolist():
                first = next((x for x in row if x != 0), 0)
                self_conj = sorted(zip(facs, row)) == sorted(zip(facs, (-x for x in row)))
                assert first > 0 or self_conj, (f, row)


# ------------------------------------------------------------------ round trip
@pytest.mark.parametrize("name", sorted(CASES))
def test_round_trip_reproduces_acegen(name, yace_dir):
    """acegen → .yace → acegen.load: the same energies and forces as the original model, with the
    radial functions evaluated analytically (fit error only) and through PACE's splines."""
    path = exported(name, yace_dir)
    loaded = acegen.load(path)
    assert loaded.kind == "pace"
    m = case_model(name)
    ref = ACEReference(m.basis, m.coefficients)
    analytic = PaceReference(loaded.pace, radial="analytic")
    spline = PaceReference(loaded.pace, radial="spline")
    for seed, kind in enumerate(("bulk", "cluster", "slab")):
        atoms = random_structure(m.elements, kind, seed=seed)
        want = ref.compute(atoms)
        assert abs(want["energy"]) > 1.0  # a non-trivial model
        _compare(analytic.compute(atoms), want, ANALYTIC_TOL, f"{name}/{kind}/analytic")
        _compare(spline.compute(atoms), want, SPLINE_TOL, f"{name}/{kind}/spline")


def test_dimers_from_r_min_to_beyond_the_cutoff(yace_dir):
    """Pair and many-body radial functions over the whole fitted range: dimers of every species
    pair from r_min = 0.2 r0 (where the ('r', 2) pair envelope is large) to past the cutoff."""
    name = "CuNi_o2_pair"
    m = case_model(name)
    pace = PaceReference(read_yace(exported(name, yace_dir)), radial="analytic")
    ref = ACEReference(m.basis, m.coefficients)
    for a in m.elements:
        for b in m.elements:
            r0 = m.spec.r0_pair(m.elements.index(a), m.elements.index(b))
            for r in np.concatenate([np.linspace(0.2 * r0, 5.0, 23), [5.2]]):
                atoms = Atoms([a, b], positions=[[0, 0, 0], [0.3 * r, 0.4 * r, np.sqrt(0.75) * r]])
                want, got = ref.compute(atoms), pace.compute(atoms)
                scale = 1.0 + abs(want["energy"]) + np.abs(want["forces"]).max()
                assert abs(got["energy"] - want["energy"]) < 1e-10 * scale, (a, b, r)
                assert np.abs(got["forces"] - want["forces"]).max() < 1e-9 * scale, (a, b, r)


# ------------------------------------------------------------------ what cannot be exported
@pytest.mark.parametrize("pair_rcut, what", [
    (4.5, "the order-1/pair function"),  # the pair functions stop at 4.5 inside the 5.0 bond
    (5.5, "R_1 "),  # the many-body functions stop at 5.0 inside the 5.5 bond
])
def test_radial_functions_with_a_kink_are_refused(pair_rcut, what, tmp_path):
    """A bond has one cutoff in PACE: functions ending at a smaller one cannot be fitted."""
    spec = acegen.BasisSpec(elements=["Cu"], order=2, totaldegree=5, rcut=5.0, pair_rcut=pair_rcut,
                            purification="none")
    m = acegen.Model.random(spec, seed=0)
    with pytest.raises(AcegenError, match=f"cannot export to .yace: {what}"):
        m.save(tmp_path / "x.yace")
    assert not (tmp_path / "x.yace").exists()


def test_r_min_outside_the_cutoff_is_refused():
    with pytest.raises(AcegenError, match="r_min"):
        pace_export.model_to_pace(case_model("Cu_o2_none"), r_min=6.0)


# ------------------------------------------------------------------ a fitted model
def test_fitted_model_saves_to_yace_from_a_config(shared_dir, tmp_path):
    """`acegen fit` with output.yace: the written .yace evaluates like the fitted model."""
    from acegen.fit import fit_from_config

    (tmp_path / "fit.yaml").write_text(
        "basis: {elements: [Ti, Al], order: 2, totaldegree: 6, rcut: 5.5, purification: none}\n"
        f"data: {{train: {shared_dir / 'data' / 'TiAl_tiny.xyz'}, force_key: null, virial_key: null,\n"
        "       eref: {Ti: -1586.0195, Al: -105.5954}}\n"
        "output: {directory: out, model: model.json, yace: model.yace, errors: [], plots: false}\n"
        "progress: false\n")
    m = fit_from_config(tmp_path / "fit.yaml", verbose=False)
    pot = read_yace(tmp_path / "out" / "model.yace")
    assert pot.E0 == (-1586.0195, -105.5954)
    ref = ACEReference(m.basis, m.coefficients)
    pace = PaceReference(pot, radial="spline")
    for atoms in ase.io.read(shared_dir / "data" / "TiAl_tiny.xyz", ":3"):
        _compare(pace.compute(atoms), ref.compute(atoms), SPLINE_TOL, "TiAl fit")


# ------------------------------------------------------------------ pyace (a peer, if installed)
PYACE_SCRIPT = r"""
import json, sys, ase.io
from pyace import PyACECalculator
calc = PyACECalculator(sys.argv[1])
out = []
for a in ase.io.read(sys.argv[2], ":"):
    a.calc = calc
    out.append({"energy": a.get_potential_energy(), "forces": a.get_forces().tolist()})
json.dump(out, open(sys.argv[3], "w"))
"""


@functools.lru_cache(maxsize=None)
def pyace_python() -> str | None:
    """An interpreter with pyace: $ACEGEN_PYACE_PYTHON or a pyace-venv next to the repository."""
    cands = [os.environ.get("ACEGEN_PYACE_PYTHON", "")]
    cands += [str(REPO.parent / d / "bin" / "python") for d in ("pyace-venv", "pyace-venv2")]
    for c in cands:
        if c and Path(c).exists():
            ok = subprocess.run([c, "-c", "import pyace"], capture_output=True, timeout=120).returncode == 0
            if ok:
                return c
    return None


@pytest.mark.parametrize("name", ["Cu_o3_pair", "CuNi_o3_none"])
def test_pyace_reads_the_export(name, yace_dir, tmp_path):
    """pyace 0.4.0rc1 loads the .yace and agrees with PaceReference's spline evaluation to
    rounding, and with acegen's original model to the export's accuracy."""
    py = pyace_python()
    if py is None:
        pytest.skip("pyace is not installed (set ACEGEN_PYACE_PYTHON)")
    m = case_model(name)
    path = exported(name, yace_dir)
    # pyace takes fully periodic or non-periodic cells only (no slabs)
    frames = [random_structure(m.elements, kind, seed=s) for s, kind in enumerate(("bulk", "cluster", "bulk"))]
    ase.io.write(tmp_path / "s.extxyz", frames)
    frames = ase.io.read(tmp_path / "s.extxyz", ":")  # positions as pyace sees them (8 decimals)
    subprocess.run([py, "-c", PYACE_SCRIPT, str(path), str(tmp_path / "s.extxyz"), str(tmp_path / "o.json")],
                   check=True, capture_output=True, timeout=600)
    got = json.loads((tmp_path / "o.json").read_text())
    ref = ACEReference(m.basis, m.coefficients)
    spline = PaceReference(read_yace(path), radial="spline")
    for atoms, g in zip(frames, got):
        _compare(g, spline.compute(atoms), {"energy": 1e-10, "forces": 1e-10}, f"{name} pyace vs PaceReference")
        _compare(g, ref.compute(atoms), SPLINE_TOL, f"{name} pyace vs acegen")

