"""The C kernel's loop over the bonds of a species (acegen.backends.c.BOND_LOOP_MIN), with the
shared per-species routines (front_loop_, back_loop_, atom_loop_, group_loop_): forced on a
small model (threshold 0) and taken by default on a synthetic 10-element PACE file, it must
give what the unrolled per-species code and the IR interpreter give (single centres and
groups of ATOM_GROUP centres of one species both occur in the test structures)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from ase.build import bulk

from acegen.backends import c as cback
from acegen.backends.c import compile_c, emit_c, source_names
from acegen.io.pace import read_pace
from acegen.io.pace_lower import pace_to_ir
from acegen.ir.interp import evaluate_ir
from acegen.runtime.neighbours import build_neighbours, species_indices

from .conftest import REPO

YBCO = REPO / "acegen" / "data" / "YBCO_ACE.yace"


def _structure(elements, n_rep=2, seed=0):
    rng = np.random.default_rng(seed)
    a = bulk("Cu", "fcc", a=3.9, cubic=True).repeat((n_rep, n_rep, n_rep))
    a.set_chemical_symbols(rng.choice(list(elements), size=len(a)))
    a.positions += rng.normal(scale=0.15, size=a.positions.shape)
    return a


def _inputs(ir, atoms):
    Z = species_indices(atoms, ir.elements)
    nl = build_neighbours(atoms, float(ir.rcut_max))
    return Z, nl.offsets, np.ascontiguousarray(Z[nl.j], dtype=np.int32), nl.rij


def _both(ir, monkeypatch, loop_min):
    """(unrolled kernel, loop kernel), checking that the sources differ as intended."""
    monkeypatch.setattr(cback, "BOND_LOOP_MIN", 10**9)
    src = source_names(ir.name)[0]
    assert "bond_info" not in emit_c(ir)[src]
    k_unrolled = compile_c(ir)
    monkeypatch.setattr(cback, "BOND_LOOP_MIN", loop_min)
    loop_src = emit_c(ir)[src]
    assert "} bond_info;" in loop_src and "int atom_loop_" in loop_src and "int group_loop_" in loop_src
    k_loop = compile_c(ir)
    return k_unrolled, k_loop


def _check(ir, k_unrolled, k_loop, atoms):
    env = _inputs(ir, atoms)
    E1, G1 = k_unrolled.compute(*env)
    E2, G2 = k_loop.compute(*env)
    Er, Gr = evaluate_ir(ir, *env)
    scale_e = max(1.0, float(np.abs(Er).max()))
    scale_g = max(1.0, float(np.abs(Gr).max()))
    assert np.abs(E2 - E1).max() <= 1e-12 * scale_e
    assert np.abs(G2 - G1).max() <= 1e-12 * scale_g
    assert np.abs(E2 - Er).max() <= 1e-12 * scale_e
    assert np.abs(G2 - Gr).max() <= 1e-12 * scale_g
    # stress-like sums over pairs (virial) agree too
    V1 = np.einsum("ka,kb->ab", env[3], G1)
    V2 = np.einsum("ka,kb->ab", env[3], G2)
    assert np.abs(V2 - V1).max() <= 1e-12 * max(1.0, float(np.abs(V1).max()))


def _synthetic(tmp_path, n_elements, n_functions):
    """make_pace100's synthetic file (YBCO's functions, the distance core repulsion)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import make_pace100
    finally:
        sys.path.pop(0)
    from acegen.io.pace import write_yace

    path = tmp_path / f"syn{n_elements}.yace"
    write_yace(make_pace100.make(read_pace(YBCO), n_elements, n_functions, 1), path)
    return pace_to_ir(read_pace(path), name=f"loop{n_elements}")


def test_forced_bond_loop_equals_unrolled_and_interpreter(monkeypatch, tmp_path):
    ir = _synthetic(tmp_path, 4, 40)
    k_unrolled, k_loop = _both(ir, monkeypatch, 0)
    for seed in range(2):
        _check(ir, k_unrolled, k_loop, _structure(ir.elements, seed=seed))


def test_ten_element_file_takes_the_loop_by_default(monkeypatch, tmp_path):
    ir = _synthetic(tmp_path, 10, 12)
    assert len(ir.elements) == 10 and cback.BOND_LOOP_MIN < 10
    k_unrolled, k_loop = _both(ir, monkeypatch, cback.BOND_LOOP_MIN)
    _check(ir, k_unrolled, k_loop, _structure(ir.elements, n_rep=2, seed=3))


@pytest.mark.parametrize("loop_min", [cback.BOND_LOOP_MIN])
def test_small_models_keep_the_unrolled_code(loop_min):
    ir = pace_to_ir(read_pace(YBCO))
    assert len(ir.elements) <= loop_min
    assert "bond_info" not in emit_c(ir)[source_names(ir.name)[0]]


def test_forced_bond_loop_in_a_projection_kernel(monkeypatch, tmp_path):
    """Projection kernels (front loop shared, atom routines per species) equal the unrolled
    ones and the interpreter's projections."""
    from acegen.ir.interp import evaluate_projections

    import acegen

    from .conftest import SHARED, SHARED_MISSING

    if not (SHARED / "potentials" / "DFT10B-AgCu.yaml").is_file():
        pytest.skip(SHARED_MISSING)
    pir = acegen.load(SHARED / "potentials" / "DFT10B-AgCu.yaml").projection_ir()
    monkeypatch.setattr(cback, "BOND_LOOP_MIN", 10**9)
    k_unrolled = compile_c(pir)
    monkeypatch.setattr(cback, "BOND_LOOP_MIN", 0)
    src = emit_c(pir)[source_names(pir.name)[0]]
    assert "int front_loop_" in src and "int atom_loop_" not in src
    k_loop = compile_c(pir)
    env = _inputs(pir, _structure(pir.elements, seed=5))  # Ag, Cu
    P1, _ = k_unrolled.compute(*env)
    P2, _ = k_loop.compute(*env)
    Pr = evaluate_projections(pir, *env)
    assert np.array_equal(P1, P2)
    assert np.abs(P2 - Pr).max() <= 1e-12 * max(1.0, float(np.abs(Pr).max()))
