"""benchmarks/make_gracefs.py: random GRACE-FS models of the many-element foundation shape,
validated by the reader and evaluated by the NumPy reference (reduced size here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

from acegen.io.gracefs import gracefs_from_dict, read_gracefs
from acegen.reference.gracefs_numpy import GraceFSReference

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "make_gracefs.py"
_spec = importlib.util.spec_from_file_location("make_gracefs", _PATH)
mg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mg)

SMALL = dict(n_elements=4, n_functions=160, lmax=3, nradmax=6, n_rad_base=5)


def _structure(pot, a0=3.7, seed=1):
    a = bulk("Cu", "fcc", a=a0, cubic=True) * (2, 2, 1)
    a.symbols[:] = np.random.default_rng(seed).choice(list(pot.elements), len(a))
    a.rattle(0.05, seed=seed)
    return a


def test_default_shape_is_the_foundation_model_shape():
    pot = gracefs_from_dict(mg.make_gracefs(seed=0))
    assert pot.nelements == 25 and pot.nfunctions == 5000 and pot.rankmax == 4 and pot.lmax == 5
    assert pot.ndensity == 4 and pot.embedding == "FinnisSinclairShiftedScaled"
    assert 8 <= pot.nradmax <= 16 and 8 <= pot.n_rad_base <= 16
    assert {f.rank for fs in pot.functions.values() for f in fs} == {1, 2, 3, 4}


def test_written_file_is_read_back_and_seeded(tmp_path):
    p = tmp_path / "fs.yaml"
    mg.write_gracefs(p, seed=5, **SMALL)
    pot = read_gracefs(p)
    assert pot == gracefs_from_dict(mg.make_gracefs(seed=5, **SMALL))
    assert pot.nelements == 4 and pot.nfunctions == 160 and pot.lmax == 3 and pot.rankmax == 4
    assert pot.signature() != gracefs_from_dict(mg.make_gracefs(seed=6, **SMALL)).signature()


def test_random_model_is_rotation_invariant_with_ev_energies():
    pot = gracefs_from_dict(mg.make_gracefs(seed=2, **SMALL))
    ref = GraceFSReference(pot)
    a = _structure(pot)
    out = ref.compute(a)
    e = out["energies"] - np.array([pot.E0[pot.elements.index(s)] for s in a.symbols])
    assert np.isfinite(e).all() and 1e-2 < np.median(np.abs(e)) < 50.0
    b = a.copy()
    rot = np.linalg.qr(np.random.default_rng(4).normal(size=(3, 3)))[0]
    b.set_cell(a.cell @ rot.T, scale_atoms=False)
    b.positions = a.positions @ rot.T
    ob = ref.compute(b)
    assert np.allclose(ob["energies"], out["energies"], rtol=1e-10, atol=1e-10)
    assert np.allclose(ob["forces"], out["forces"] @ rot.T, atol=1e-8)


def test_couplings_are_invariants_of_the_real_harmonics():
    from acegen.reference.gracefs_numpy import real_ylm

    rng = np.random.default_rng(0)
    v = rng.normal(size=(4, 3))
    rot = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    for ls, L in [((1, 1), None), ((1, 2, 3), None), ((2, 2, 2), None), ((1, 1, 2, 2), 2), ((1, 2, 2, 3), 1)]:
        ms, cg = mg.coupling(ls, L, lmax=3)
        assert len(set(map(tuple, ms))) == len(ms)

        def value(vecs):
            Y, _ = real_ylm(vecs / np.linalg.norm(vecs, axis=1)[:, None], 3)
            # a sum over the four "neighbours" for every factor, like A with one shared radial
            A = Y.sum(axis=0)
            return sum(c * np.prod([A[l * l + l + m] for l, m in zip(ls, row)]) for row, c in zip(ms, cg))

        assert abs(value(v)) > 1e-6
        assert value(v @ rot.T) == pytest.approx(value(v), rel=1e-10, abs=1e-12)
