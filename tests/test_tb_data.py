"""benchmarks/tb_data.py: the LCN s-band tight-binding data generator (charge neutrality
reached, Hellmann–Feynman forces equal finite differences, invariance, seeded extxyz output)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.io import read

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "tb_data.py"
_spec = importlib.util.spec_from_file_location("tb_data", _PATH)
tb = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("tb_data", tb)  # dataclasses look their module up
_spec.loader.exec_module(tb)

MODEL = tb.TBModel()


@pytest.mark.parametrize("n, seed", [(2, 0), (7, 1), (18, 2)])
def test_charge_neutrality_and_forces(n, seed):
    at = tb.random_cluster(np.random.default_rng(seed), n)
    out = MODEL.compute(at)
    n0 = np.array([MODEL.n0[s] for s in at.get_chemical_symbols()])
    np.testing.assert_allclose(out["charge"], n0, atol=1e-11)
    assert abs(out["forces"].sum(axis=0)).max() < 1e-10
    h = 1e-5
    for a in range(min(n, 4)):
        for c in range(3):
            p, m = at.copy(), at.copy()
            p.positions[a, c] += h
            m.positions[a, c] -= h
            fd = -(MODEL.compute(p)["energy"] - MODEL.compute(m)["energy"]) / (2 * h)
            assert abs(fd - out["forces"][a, c]) < 1e-7


def test_lcn_shifts_are_needed_and_invariant():
    at = tb.random_cluster(np.random.default_rng(5), 9)
    out = MODEL.compute(at)
    assert np.abs(out["onsite_shift"]).max() > 1e-2  # λ = 0 would not be neutral
    Q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    moved = at.copy()
    moved.positions = at.positions @ Q.T + 3.0
    perm = np.random.default_rng(1).permutation(len(at))
    moved = moved[perm]
    out2 = MODEL.compute(moved)
    assert out2["energy"] == pytest.approx(out["energy"], abs=1e-10)
    np.testing.assert_allclose(out2["forces"], (out["forces"] @ Q.T)[perm], atol=1e-9)
    np.testing.assert_allclose(out2["onsite_shift"] - out2["onsite_shift"].mean(),
                               (out["onsite_shift"] - out["onsite_shift"].mean())[perm], atol=1e-9)


def test_chains_are_symmetric():
    chain = tb.linear_chains([11])[0]
    out = MODEL.compute(chain)
    lam = out["onsite_shift"]
    np.testing.assert_allclose(lam, lam[::-1], atol=1e-10)
    assert abs(lam[0] - lam[5]) > 1e-2  # the ends differ from the middle
    np.testing.assert_allclose(out["forces"][:, 1:], 0.0, atol=1e-12)


def test_generate_is_seeded_and_writes_extxyz(tmp_path):
    tb.main(["-o", str(tmp_path), "--clusters", "4", "--seed", "3"])
    clusters = read(tmp_path / "tb_clusters.extxyz", ":")
    chains = read(tmp_path / "tb_chains.extxyz", ":")
    assert len(clusters) == 4 and len(chains) == 24
    assert all(2 <= len(a) <= 25 for a in clusters)
    again, _ = tb.generate(4, 3)
    for a, b in zip(clusters, again):  # extxyz stores 8 decimals
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-7)
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-9)
        np.testing.assert_allclose(a.get_forces(), b.get_forces(), atol=1e-7)
        np.testing.assert_allclose(a.arrays["onsite_shift"], b.arrays["onsite_shift"], atol=1e-7)


def test_bad_input():
    from ase import Atoms

    with pytest.raises(ValueError, match="atom 1 is Fe"):
        MODEL.compute(Atoms("CuFe", positions=[[0, 0, 0], [2.5, 0, 0]]))
    with pytest.raises(ValueError, match="clusters"):
        MODEL.compute(Atoms("Cu", cell=[3, 3, 3], pbc=True))


@pytest.mark.parametrize("n, seed", [(15, 0), (25, 4)])
def test_lattice_walks_are_elongated_and_first_neighbour_forces_exact(n, seed):
    at = tb.lattice_walk(np.random.default_rng(seed), n)
    assert len(at) == n
    sites = np.round(at.positions[:, :2] / 2.5)
    assert len({tuple(s) for s in sites}) == n  # self-avoiding on the lattice
    assert np.abs(at.positions - 2.5 * np.column_stack([sites, np.zeros(n)])).max() < 0.6  # rattled
    d = np.linalg.norm(at.positions[:, None] - at.positions[None], axis=2)
    near = (d < 3.0) & ~np.eye(n, dtype=bool)
    # connected through first-neighbour bonds, and longer than one short cutoff
    seen, todo = {0}, [0]
    while todo:
        a = todo.pop()
        for b in np.flatnonzero(near[a]):
            if b not in seen:
                seen.add(int(b))
                todo.append(int(b))
    assert len(seen) == n
    assert d.max() > 2 * 3.2
    model = tb.short_range_model()
    out = model.compute(at)
    n0 = np.array([model.n0[s] for s in at.get_chemical_symbols()])
    np.testing.assert_allclose(out["charge"], n0, atol=1e-11)
    h = 1e-5
    for a in range(3):
        for c in range(3):
            p, m = at.copy(), at.copy()
            p.positions[a, c] += h
            m.positions[a, c] -= h
            fd = -(model.compute(p)["energy"] - model.compute(m)["energy"]) / (2 * h)
            assert abs(fd - out["forces"][a, c]) < 1e-7


def test_short_range_model_shifts_reach_beyond_its_cutoff():
    """LCN makes the on-site shift of an atom depend on species beyond the hopping range."""
    from ase import Atoms

    model = tb.short_range_model()
    chain = Atoms("Cu" * 9, positions=[[2.5 * k, 0, 0] for k in range(9)])
    other = chain.copy()
    other.symbols[8] = "Ni"  # 20 Å from atom 0, the hopping reaches 3.2 Å
    lam0, lam1 = model.compute(chain)["onsite_shift"], model.compute(other)["onsite_shift"]
    d0, d1 = lam0 - lam0[0], lam1 - lam1[0]
    assert abs((d1[1] - d1[0]) - (d0[1] - d0[0])) > 1e-4


def test_generate_kinds():
    clusters, _ = tb.generate(3, 1, sizes=(15, 18), kind="walk", model=tb.short_range_model())
    assert all(15 <= len(a) <= 18 for a in clusters)
    assert all(abs(a.positions[:, 2]).max() < 0.6 for a in clusters)
    with pytest.raises(ValueError, match="unknown cluster kind"):
        tb.generate(1, 0, kind="fcc")
