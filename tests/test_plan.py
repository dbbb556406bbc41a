"""The kernel plan (acegen.backends.plan) and the physics SLPs (acegen.ir.physics).

The embedding and core-composition programs are checked against the independent NumPy
oracles of acegen.reference.pace_numpy; the plan's spline layouts against the tables of the
model; its text form for determinism and sensitivity; the templates for hand-written physics."""

from __future__ import annotations

import re

import numpy as np
import pytest

from .c_backend_models import make_model

from acegen.backends.common import template_root
from acegen.backends.plan import LAYOUTS, SIMD_PAD, TABLE_ALIGN, build_plan
from acegen.errors import CompileError
from acegen.golden import reference_model
from acegen.ir.physics import core_slp, embedding_slp
from acegen.reference.pace_numpy import cutoff_func_poly, embedding as ref_embedding

RHO = np.array([-3.7, -0.8, -1e-7, -1e-11, -0.0, 0.0, 1e-12, 1e-9, 3e-7, 0.05, 0.9, 2.5, 40.0])


def _eval(slp, **inputs):
    with np.errstate(all="ignore"):
        return [np.asarray(v, dtype=float) for v in slp.evaluate(**inputs)]


@pytest.mark.parametrize("kind", ["FinnisSinclair", "FinnisSinclairShiftedScaled"])
def test_embedding_slp_matches_pace_reference(kind):
    params = [1.0, 1.0, -0.7, 0.5, 0.3, 1.8, 2.0, 0.25]
    nd = len(params) // 2
    slp = embedding_slp(kind, params, nd)
    rng = np.random.default_rng(3)
    rho = np.stack([rng.permutation(RHO) for _ in range(nd)], axis=1)  # (n, nd)
    E_ref, dE_ref = ref_embedding(kind, params, rho)
    for i in range(rho.shape[0]):
        out = _eval(slp, **{f"rho_{p}": rho[i, p] for p in range(nd)})
        np.testing.assert_allclose(out[0], E_ref[i], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(np.array(out[1:]), dE_ref[i], rtol=1e-12, atol=1e-14)


def test_linear_embedding_slp():
    out = _eval(embedding_slp("linear", [1.0, 1.0], 1), rho_0=-2.5)
    assert out == [-2.5, 1.0]
    with pytest.raises(ValueError):
        embedding_slp("Morse", [1.0, 1.0], 1)


def test_core_slp_density_matches_pace_switch():
    cut, dcut, E0 = 1.2, 0.8, -0.25
    slp = core_slp("density", E0, cut, dcut)
    for e_ace, rc in [(-3.0, 0.0), (-3.0, 0.4), (2.0, 0.41), (1.5, 0.9), (-1.0, 1.19), (0.7, 1.2), (0.7, 5.0)]:
        fc, dfc = (float(v) for v in cutoff_func_poly(rc, cut, dcut))
        E, scale, dEdrc, dEdd = _eval(slp, e_ace=e_ace, rho_core=rc, d=0.0, delta=0.0)
        assert E == pytest.approx(E0 + e_ace * fc + rc, rel=1e-13, abs=1e-14)
        assert scale == pytest.approx(fc, rel=1e-13, abs=1e-15)
        assert dEdrc == pytest.approx(e_ace * dfc + 1.0, rel=1e-12, abs=1e-14)
        assert dEdd == 0.0


def test_core_slp_zbl_switch_and_its_derivative():
    slp = core_slp("zbl", 0.5)
    e_ace, rc, delta = -2.0, 3.0, 0.3
    for d in [-1.0, 0.0, 0.1, 0.15, 0.29, 0.3, 2.0]:
        f, df = (float(v) for v in cutoff_func_poly(delta - d, delta, delta))
        E, scale, dEdrc, dEdd = _eval(slp, e_ace=e_ace, rho_core=rc, d=d, delta=delta)
        assert E == pytest.approx(0.5 + e_ace * f + rc * (1.0 - f), rel=1e-13)
        assert scale == pytest.approx(f, abs=1e-15)
        assert dEdrc == pytest.approx(1.0 - f, abs=1e-15)
        assert dEdd == pytest.approx((e_ace - rc) * -df, rel=1e-12, abs=1e-15)
        if 0.0 < d < delta:  # finite difference of E in d
            h = 1e-6
            Ep = _eval(slp, e_ace=e_ace, rho_core=rc, d=d + h, delta=delta)[0]
            Em = _eval(slp, e_ace=e_ace, rho_core=rc, d=d - h, delta=delta)[0]
            assert dEdd == pytest.approx((Ep - Em) / (2 * h), rel=1e-6)
    # no neighbour: d = +inf, delta = 0 gives the plain embedding energy
    E, scale, dEdrc, dEdd = _eval(slp, e_ace=e_ace, rho_core=rc, d=np.inf, delta=0.0)
    assert (E, scale, dEdrc) == (0.5 + e_ace, 1.0, 0.0) and dEdd == 0.0


@pytest.fixture(scope="module")
def cuni_plan():
    return build_plan(reference_model("cuni_order3").ir())


def test_plan_text_is_deterministic_and_sensitive(cuni_plan):
    ir = reference_model("cuni_order3").ir()
    again = build_plan(ir)
    assert again.to_text() == cuni_plan.to_text() and again.signature() == cuni_plan.signature()
    assert re.fullmatch(r"[0-9a-f]{64}", cuni_plan.signature())
    text = cuni_plan.to_text()
    assert "species 1:" in text and "bond (1, 0)" in text and "embedding linear" in text
    # another model (other coefficients) has another plan
    other = build_plan(reference_model("cu_order2").ir())
    assert other.signature() != cuni_plan.signature()


def test_plan_sizes_and_padding(cuni_plan):
    for s in cuni_plan.species:
        assert s.n_nodes_pad % SIMD_PAD == 0 and s.n_nodes <= s.n_nodes_pad
        assert s.coef.shape == (s.ndensity, s.n_nodes_pad)
        assert not s.coef[:, s.n_nodes :].any()
        for b in s.bonds:
            rows = b.rows
            assert rows.shape == (b.n_chan, 2)
            # every channel's radial function has a slot, and the rows point at it
            for (off, rad, l) in b.channels:
                k = list(b.rows[:, 1]).index(off)
                assert b.slots[b.rows[k, 0]] == rad
            assert [g.l for g in b.groups] == sorted(g.l for g in b.groups)
    assert cuni_plan.nodes_max == max(s.n_nodes_pad for s in cuni_plan.species)


def test_plan_spline_tables_both_layouts():
    plan = build_plan(make_model(seed=4))
    assert plan.slot_doubles > 0 and plan.function_doubles > 0
    slots, funcs = plan.tables("slots"), plan.tables("functions")
    assert slots.size == plan.slot_doubles and funcs.size == plan.function_doubles
    assert {rp.kind for rp in plan.radials} == {"slp", "spline"}
    for rp in plan.radials:
        if rp.kind == "slp":
            assert rp.offset == -1
            continue
        assert rp.offset % TABLE_ALIGN == 0
        c = rp.block.spline.coeffs  # (nbins, nfunc, 4)
        np.testing.assert_array_equal(funcs[rp.offset : rp.offset + c.size].reshape(c.shape), c)
    for s in plan.species:
        for b in s.bonds:
            if b.radial.kind == "slp":
                assert b.slot_offset == -1
                continue
            assert b.slot_offset % TABLE_ALIGN == 0
            c = b.radial.block.spline.coeffs
            t = slots[b.slot_offset : b.slot_offset + c.shape[0] * 4 * b.nslot_pad].reshape(c.shape[0], 4, b.nslot_pad)
            for k, f in enumerate(b.slots):
                np.testing.assert_array_equal(t[:, :, k], c[:, f, :])
            assert not t[:, :, b.nslot :].any()
    with pytest.raises(CompileError):
        plan.tables("rows")
    assert set(LAYOUTS) == {"slots", "functions"}


def test_templates_hold_no_physics_formula():
    """The embedding, the switch and the core composition are SLPs: no template writes them."""
    root = template_root()
    patterns = ["1.0e6", "1e6", "poly_switch", "embed_fs", "x_off", "7.5", "3.75", "E0 |", "E0|"]
    for target in ("c", "cuda", "llvm"):
        for node in (root / target).iterdir():
            if not node.name.endswith(".j2") or node.name == "basis.c.j2":
                continue
            text = node.read_text()
            for p in patterns:
                assert p not in text, f"{target}/{node.name} contains {p!r}"
