"""LLVM backend: SLP printer, generated IR, JIT kernels against the C backend, the IR
interpreter, independent references and PACE reference data; object cache; no-compiler use."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import acegen
from acegen.backends import EMIT_TARGETS, emit
from acegen.backends.common import llvm_double
from acegen.backends.llvm import LLVMKernel, compile_llvm, emit_llvm, host_lanes
from acegen.backends.llvm.printer import slp_function, slp_instructions
from acegen.backends.plan import build_plan
from acegen.calculator import evaluate
from acegen.errors import CompileError, StructureError
from acegen.ir.interp import evaluate_ir
from acegen.ir.model import Channel, CoreRepulsion, Embedding, ModelIR
from acegen.ir.slp import SLP
from acegen.jit.llvm_cache import HostIdentity, llvm_cache_key
from acegen.jit.toolchain import find_c_compiler
from acegen.runtime.kernels import compile_ir

from .c_backend_models import hermite_spline, make_model, random_environment, reference_compute
from .models import SPECS, model, random_structure

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ACEGEN_SHARED", REPO.parent / "shared"))
HAVE_CC = find_c_compiler(required=False) is not None
needs_cc = pytest.mark.skipif(not HAVE_CC, reason="no C compiler to compare with")


def assert_close(a: np.ndarray, b: np.ndarray, rtol: float = 1e-12, what: str = "") -> None:
    """|a - b| <= rtol * max|b| (relative to the array's scale: sums cancel)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (what, a.shape, b.shape)
    scale = max(float(np.max(np.abs(b), initial=0.0)), 1e-300)
    err = float(np.max(np.abs(a - b), initial=0.0))
    assert err <= rtol * scale, f"{what}: max abs error {err:.3g} vs scale {scale:.3g}"


def c_kernel(ir: ModelIR):
    from acegen.backends.c import compile_c

    return compile_c(ir)


# -- literals and the SLP printer ----------------------------------------------------------
def test_llvm_double_is_the_exact_bit_pattern():
    rng = np.random.default_rng(0)
    values = [0.1, -0.0, 1.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, math.pi]
    values += list(rng.normal(size=50) * 10.0 ** rng.integers(-300, 300, size=50))
    for v in values:
        text = llvm_double(v)
        assert re.fullmatch(r"0x[0-9A-F]{16}", text)
        assert struct.unpack("<d", struct.pack("<Q", int(text, 16)))[0] == v
        assert math.copysign(1.0, struct.unpack("<d", struct.pack("<Q", int(text, 16)))[0]) == math.copysign(1.0, v)
    assert llvm_double(1.0) == "0x3FF0000000000000"
    for bad in (math.inf, -math.inf, math.nan):
        with pytest.raises(CompileError):
            llvm_double(bad)


X, Y = sp.symbols("x y", real=True)
PY_ENV = {"sqrt": math.sqrt, "exp": math.exp, "cos": math.cos, "sin": math.sin, "log": math.log, "pow": math.pow}
EXPRS = [
    X**2 * Y**3 - 3 * X / Y**2,
    sp.Rational(1, 3) * X + sp.Rational(-7, 11) * Y**-1,
    sp.sqrt(X) * X ** sp.Rational(3, 2) / X ** sp.Rational(-5, 2),
    sp.exp(-X * Y) * sp.cos(2 * X) + sp.sin(Y) ** 4 - sp.log(X + 2),
    X**20 + Y ** sp.Rational(1, 3) + X**Y,
    sp.pi * X + sp.Float("0.1000000000000000055511151231257827", 40) - sp.E,
    -X - (X + Y) ** -3,
    X ** sp.Rational(-3, 2) + (X * Y + 1) ** 17,
]
PIECEWISE = [
    sp.Piecewise((X**2, X < Y), (sp.exp(Y), True)),
    sp.Piecewise((X, sp.And(X > 0.5, Y <= 1)), (-Y, sp.Or(sp.Eq(X, Y), sp.Ne(Y, 2))), (X * Y, True)),
    sp.Piecewise((1 / X, sp.Not(X >= 2)), (0, True)),
]


def _jit_expr(expr: sp.Expr):
    """A JIT-compiled double f(double x, double y) for ``expr`` (engine kept alive by the caller)."""
    import ctypes

    import llvmlite.binding as llvm

    from acegen.backends.llvm import _parse, _target_machine

    slp = SLP(("x", "y"), (("v", expr),), ("v",))
    decls = "".join(f"declare double @llvm.{f}.f64(double)\n" for f in ("sqrt", "exp", "cos", "sin", "log"))
    decls += "declare double @llvm.pow.f64(double, double)\n"
    text = decls + slp_function(slp, "f", ["x", "y"]).replace("define internal", "define")
    tm = _target_machine(3)
    engine = llvm.create_mcjit_compiler(_parse(text, tm), tm)
    engine.finalize_object()
    fn = ctypes.CFUNCTYPE(None, ctypes.c_double, ctypes.c_double, ctypes.POINTER(ctypes.c_double))(
        engine.get_function_address("f")
    )

    def call(x: float, y: float) -> float:
        out = ctypes.c_double()
        fn(x, y, ctypes.byref(out))
        return out.value

    return engine, call


@pytest.mark.parametrize("expr", EXPRS + PIECEWISE, ids=range(len(EXPRS) + len(PIECEWISE)))
def test_printer_matches_sympy(expr):
    engine, f = _jit_expr(expr)
    for x, y in [(1.37, 0.61), (0.3, 2.0), (2.0, 2.0), (0.75, 1.0)]:
        want = float(expr.subs({X: x, Y: y}).evalf(30))
        assert f(x, y) == pytest.approx(want, rel=1e-13), (x, y)


@pytest.mark.parametrize("expr", EXPRS, ids=range(len(EXPRS)))
def test_printer_performs_the_c_printers_operations(expr):
    """Same IEEE operations in the same order as the C printer: the fully parenthesised C
    expression evaluated by Python (IEEE doubles, the same libm) gives the same bits."""
    from acegen.backends.c.printer import CExprPrinter

    engine, f = _jit_expr(expr)
    code = CExprPrinter({"x": "x", "y": "y"}).doprint(expr)
    for x, y in [(1.37, 0.61), (0.3, 2.0)]:
        assert f(x, y) == eval(code, dict(PY_ENV), {"x": x, "y": y})  # noqa: S307 - our own expression


def test_vector_printer_is_the_scalar_rule_per_lane():
    """width=4: one <4 x double> per value; every lane gives the scalar function's bits."""
    import ctypes

    import llvmlite.binding as llvm

    from acegen.backends.llvm import _parse, _target_machine

    exprs = [EXPRS[0], EXPRS[3], EXPRS[4], EXPRS[7], *PIECEWISE]
    slp = SLP(("x", "y"), tuple((f"v{i}", e) for i, e in enumerate(exprs)), tuple(f"v{i}" for i in range(len(exprs))))
    decls = "".join(
        f"declare double @llvm.{f}.f64(double)\ndeclare <4 x double> @llvm.{f}.v4f64(<4 x double>)\n"
        for f in ("sqrt", "exp", "cos", "sin", "log")
    )
    decls += "declare double @llvm.pow.f64(double, double)\ndeclare <4 x double> @llvm.pow.v4f64(<4 x double>, <4 x double>)\n"
    scalar = slp_function(slp, "fs", ["x", "y"]).replace("define internal", "define")
    vector = slp_function(slp, "fv", ["x", "y"], width=4).replace("define internal", "define")
    wrapper = (
        "define void @fv_mem(ptr %xs, ptr %ys, ptr %out) {\nentry:\n"
        "  %x = load <4 x double>, ptr %xs, align 8\n  %y = load <4 x double>, ptr %ys, align 8\n"
        "  call void @fv(<4 x double> %x, <4 x double> %y, ptr %out)\n  ret void\n}\n"
    )
    assert "<4 x double>" in vector and "splat (double" in vector and "select <4 x i1>" in vector
    tm = _target_machine(3)
    engine = llvm.create_mcjit_compiler(_parse(decls + scalar + vector + wrapper, tm), tm)
    engine.finalize_object()
    dp = ctypes.POINTER(ctypes.c_double)
    fs = ctypes.CFUNCTYPE(None, ctypes.c_double, ctypes.c_double, dp)(engine.get_function_address("fs"))
    fv = ctypes.CFUNCTYPE(None, dp, dp, dp)(engine.get_function_address("fv_mem"))
    xs = np.array([1.37, 0.3, 2.0, 0.75])
    ys = np.array([0.61, 2.0, 2.0, 1.0])
    out_v = np.zeros((len(exprs), 4))
    fv(xs.ctypes.data_as(dp), ys.ctypes.data_as(dp), out_v.ctypes.data_as(dp))
    for lane in range(4):
        out_s = np.zeros(len(exprs))
        fs(xs[lane], ys[lane], out_s.ctypes.data_as(dp))
        np.testing.assert_array_equal(out_v[:, lane], out_s)


def test_printer_rejects_unsupported_and_unknown():
    def instr(expr: sp.Expr, inputs=("x",)) -> list[str]:
        return slp_instructions(SLP(inputs, (("v", expr),), ("v",)), list(inputs), "out")

    with pytest.raises(CompileError):
        instr(sp.Abs(X))
    with pytest.raises(CompileError):
        instr(X + Y)  # y is not an input
    with pytest.raises(CompileError):
        instr(X * sp.oo)
    with pytest.raises(CompileError):
        instr(X + sp.I)
    with pytest.raises(CompileError):
        instr(sp.Piecewise((X, X > 0)))  # no final True branch
    with pytest.raises(CompileError):
        slp_instructions(SLP(("x",), (("v", X),), ("w",)), ["x"], "out")  # output never assigned
    with pytest.raises(CompileError):
        slp_instructions(SLP(("x",), (("v", X**2),), ("v",)), ['x"; evil'], "out")
    with pytest.raises(CompileError):
        slp_instructions(SLP(("x",), (("v", X**2),), ("v",)), ["x"], "out", flags=("fast",))


def test_printer_constants_powers_and_flags():
    text = "\n".join(slp_instructions(SLP(("x",), (("v", X**3 + X**-2 + sp.sqrt(X) + sp.Rational(1, 3)),), ("v",)), ["x"], "o"))
    assert "pow" not in text and "llvm.sqrt.f64" in text
    assert llvm_double(1 / 3) in text
    assert text.count("fmul double") >= 3 and "fdiv double 0x3FF0000000000000" in text
    assert not re.search(r"\b(fast|reassoc|contract|nnan|ninf|arcp|afn|nsz)\b", text)
    flagged = "\n".join(slp_instructions(SLP(("x",), (("v", X * X + X),), ("v",)), ["x"], "o", flags=("contract",)))
    assert "fmul contract double" in flagged and "fadd contract double" in flagged


# -- generated IR --------------------------------------------------------------------------
def test_emit_is_deterministic_validated_and_marked():
    ir = make_model(0)
    files = emit_llvm(ir)
    assert emit_llvm(make_model(0)) == files
    assert "llvm" in EMIT_TARGETS and emit(ir, "llvm") == files
    assert set(files) == {"acegen_testmodel.ll", "acegen_testmodel.bin"}
    text = files["acegen_testmodel.ll"]
    assert text.startswith("; autogenerated by acegen from template llvm/kernel.ll.j2")
    assert "do not edit" in text.splitlines()[0]
    assert not re.search(r"\b(Cu|Ni)\b", text), "element names must not reach the IR"
    assert "define i32 @acegen_testmodel_compute(" in text and "define i32 @acegen_testmodel_info(" in text
    # the spline table travels as bytes, bit for bit (the plan's "slots" layout, the C kernel's
    # table: per bond [bin][c0..c3][slot] over the functions it uses), and is not printed in the IR
    table = np.frombuffer(files["acegen_testmodel.bin"], dtype="<f8")
    plan = build_plan(ir)
    np.testing.assert_array_equal(table, plan.tables("slots"))
    bond = next(b for b in plan.species[0].bonds if b.zj == 1)
    rows = table[bond.slot_offset : bond.slot_offset + bond.radial.nbins * 4 * bond.nslot_pad]
    rows = rows.reshape(bond.radial.nbins, 4, bond.nslot_pad)
    np.testing.assert_array_equal(rows[:, :, : bond.nslot],
                                  np.transpose(ir.radial[(0, 1)].spline.coeffs[:, list(bond.slots), :], (0, 2, 1)))
    coeffs = ir.radial[(0, 1)].spline.coeffs[:, list(bond.slots), :].ravel()
    table_literals = {llvm_double(v) for v in coeffs if abs(v) not in (0.0, 1.0)}
    assert len(table_literals) > 100 and not table_literals & set(re.findall(r"0x[0-9A-F]{16}", text))
    assert "@acegen_testmodel_tables = external constant" in text
    # default: strict IEEE, no fast-math flag on any instruction
    instructions = [ln for ln in text.splitlines() if not ln.lstrip().startswith(";")]
    assert not any(re.search(r"\b(fast|reassoc|contract|nnan|ninf|arcp|afn|nsz)\b", ln) for ln in instructions)
    # "contract" reaches the per-neighbour SLP and spline functions only, never a sum
    contract = emit_llvm(ir, fastmath="contract")["acegen_testmodel.ll"]
    functions = re.findall(r"^define [^@]*@(\w+)\(.*?^}", contract, re.M | re.S)
    bodies = dict(zip(functions, re.split(r"^define ", contract, flags=re.M)[1:]))
    flagged = {f for f, body in bodies.items() if " contract " in body}
    # (the spline bond (0, 1) evaluates its rows in the routine of its shape: 8 padded slots, 1 group of 4)
    assert flagged == {"angular", "radial_0_0", "spline_rows_8_1", "radial_1_0"}, flagged
    with pytest.raises(CompileError):
        emit_llvm(ir, fastmath="reassoc")


def test_models_without_splines_have_no_table_buffer():
    ir = model("Cu_o2").ir()
    files = emit_llvm(ir)
    assert list(files) == ["acegen_Cu_o2.ll"]
    assert "_tables" not in files["acegen_Cu_o2.ll"]


# -- kernels on synthetic models: interpreter, independent reference, C --------------------
EMBEDDINGS = {
    "fs": None,
    "linear": (Embedding("linear", 1, (1.0, 1.0)), Embedding("linear", 1, (1.0, 1.0))),
    "fs_small_m": (
        Embedding("FinnisSinclair", 2, (0.8, 0.4, 1.1, 1.7)),
        Embedding("FinnisSinclairShiftedScaled", 3, (1.0, 0.5, -0.3, 1.5, 0.2, 1.0)),
    ),
}
CORES = {
    "density_zbl": (CoreRepulsion("density", 1.2, 0.8), CoreRepulsion("zbl")),
    "distance_density": (CoreRepulsion("distance"), CoreRepulsion("density", 0.5, 0.3)),
    "zbl_distance": (CoreRepulsion("zbl"), CoreRepulsion("distance")),
}


def _dead_species_model() -> ModelIR:
    """Species 1 with all-zero coefficients: no product node and no output node."""
    ir = make_model(0)
    sp1 = ir.species[1]
    dead = type(sp1)(zi=1, channels=sp1.channels, monomials=sp1.monomials, coeffs=np.zeros_like(sp1.coeffs),
                     embedding=sp1.embedding, E0=sp1.E0, core=sp1.core)
    return ModelIR(ir.elements, ir.lmax, ir.angular, ir.radial, (ir.species[0], dead), name="ll_dead")


SYNTHETIC = {
    **{f"emb_{k}": (lambda k=k: make_model(seed=len(k), embeddings=EMBEDDINGS[k], name=f"ll_emb_{k}")) for k in EMBEDDINGS},
    **{f"core_{k}": (lambda k=k: make_model(seed=3, cores=CORES[k], name=f"ll_core_{k}", n_monomials=25)) for k in CORES},
    "lmax4": lambda: make_model(seed=4, lmax=4, name="ll_lmax4", n_monomials=30),
    "dead_species": _dead_species_model,
}


def _slots_model(poison: bool) -> ModelIR:
    """The density/zbl core model with bond (0, 1) on an 11-function spline table of which the
    channels use functions 9, 10, 4, 0, 2 and the core function 7 (slots in that order: the
    plan's order of first use by l, then the core; two groups of 4 slots, the second partial).
    ``poison``: the 5 functions nothing uses are NaN in the table."""
    ir = make_model(seed=3, cores=CORES["density_zbl"], name="ll_slots", n_monomials=25)
    sp0 = ir.species[0]
    remap = iter((9, 4, 0))
    chans = [dataclasses.replace(c, radial=next(remap)) if c.zj == 1 else c for c in sp0.channels]
    n_A = sum(c.size for c in chans)
    chans += [Channel(zj=1, radial=10, l=0, offset=n_A), Channel(zj=1, radial=2, l=2, offset=n_A + 1)]
    extra = [(n_A,), (0, n_A + 3), (n_A, n_A + 1)]
    monos = sorted(list(sp0.monomials) + extra, key=lambda m: (len(m), m))
    rng = np.random.default_rng(11)
    row = {m: c for m, c in zip(sp0.monomials, sp0.coeffs)}
    coeffs = np.array([row[m] if m in row else rng.normal(size=sp0.coeffs.shape[1]) * 0.3 for m in monos])
    spline = hermite_spline(4.0, 11, 0.05, 7)
    if poison:
        spline.coeffs[:, [1, 3, 5, 6, 8], :] = np.nan
    radial = dict(ir.radial)
    radial[(0, 1)] = dataclasses.replace(ir.radial[(0, 1)], nfunc=11, spline=spline, core=7)
    sp0 = dataclasses.replace(sp0, channels=tuple(chans), monomials=tuple(monos), coeffs=coeffs)
    return ModelIR(ir.elements, ir.lmax, ir.angular, radial, (sp0, ir.species[1]), name="ll_slots")


def test_spline_bond_evaluates_only_its_slots():
    """The radial step reads the C kernel's "slots" table: the bond's used functions in slot
    order (not the 11 of the table), the core at its slot; the 5 unused functions (NaN here)
    are neither in the table nor evaluated.  Results: the interpreter's (on the table without
    NaN), and the C kernel's."""
    ir, clean = _slots_model(True), _slots_model(False)
    bond = next(b for b in build_plan(ir).species[0].bonds if b.zj == 1)
    assert bond.slots == (9, 10, 4, 0, 2, 7) and bond.core_slot == 5 and bond.nslot_pad == 8
    files = emit_llvm(ir)
    table = np.frombuffer(files["acegen_ll_slots.bin"], dtype="<f8")
    np.testing.assert_array_equal(table, build_plan(clean).tables("slots"))
    assert np.isfinite(table).all()
    k = compile_llvm(ir, cache=False)
    kc = c_kernel(clean) if HAVE_CC else None
    for env in _environments(ir):
        E, G = k.compute(*env)
        assert np.isfinite(E).all() and np.isfinite(G).all()
        Er, Gr = evaluate_ir(clean, *env)
        assert_close(E, Er, what="energies vs interpreter")
        assert_close(G, Gr, what="dEdr vs interpreter")
        if kc is not None:
            Ec, Gc = kc.compute(*env)
            assert_close(E, Ec, what="energies vs C")
            assert_close(G, Gc, what="dEdr vs C")


@pytest.fixture(scope="module", params=sorted(SYNTHETIC))
def synthetic(request):
    ir = SYNTHETIC[request.param]()
    return ir, compile_llvm(ir)


@pytest.fixture(scope="module")
def base():
    ir = make_model(0, name="ll_base")
    return ir, compile_llvm(ir)


def _environments(ir: ModelIR):
    radius = 4.8 if ir.name.startswith("ll_core") else 5.0
    envs = [random_environment(seed, radius=radius) for seed in range(3)]
    envs.append(random_environment(9, n_centres=3, max_nb=7, radius=2.5))  # zbl switch range
    return envs


def test_synthetic_against_interpreter_and_reference(synthetic):
    ir, k = synthetic
    assert isinstance(k, LLVMKernel) and k.signature == ir.signature() and k.elements == ir.elements
    for env in _environments(ir):
        E, G = k.compute(*env)
        Er, Gr = evaluate_ir(ir, *env)
        assert_close(E, Er, what="energies vs interpreter")
        assert_close(G, Gr, what="dEdr vs interpreter")
        if not ir.name.startswith("ll_core"):  # the direct-loop reference has no core terms
            Er, Gr = reference_compute(ir, *env)
            assert_close(E, Er, what="energies vs reference")
            assert_close(G, Gr, what="dEdr vs reference")


@needs_cc
def test_synthetic_against_c(synthetic):
    ir, k = synthetic
    kc = c_kernel(ir)
    for env in _environments(ir):
        E, G = k.compute(*env)
        Ec, Gc = kc.compute(*env)
        assert_close(E, Ec, what="energies vs C")
        assert_close(G, Gc, what="dEdr vs C")


def test_gradient_by_finite_differences(base):
    _, k = base
    species, offsets, nb, rij = random_environment(5, n_centres=3, max_nb=8)
    _, G = k.compute(species, offsets, nb, rij)
    h = 1e-6
    for p in range(len(nb)):
        i = int(np.searchsorted(offsets, p, side="right") - 1)
        for c in range(3):
            plus, minus = rij.copy(), rij.copy()
            plus[p, c] += h
            minus[p, c] -= h
            fd = (k.compute(species, offsets, nb, plus)[0][i] - k.compute(species, offsets, nb, minus)[0][i]) / (2 * h)
            assert abs(fd - G[p, c]) <= 1e-6 * max(1.0, np.abs(G).max())


def test_isolated_atoms_and_empty_input(base):
    ir, k = base
    E, G = k.compute(np.array([0, 1]), np.array([0, 0, 0]), np.zeros(0, int), np.zeros((0, 3)))
    Er, _ = reference_compute(ir, np.array([0, 1]), np.array([0, 0, 0]), np.zeros(0, int), np.zeros((0, 3)))
    np.testing.assert_allclose(E, Er, rtol=1e-14)
    assert G.shape == (0, 3)
    E, G = k.compute(np.zeros(0, int), np.array([0]), np.zeros(0, int), np.zeros((0, 3)))
    assert E.shape == (0,) and G.shape == (0, 3)


# -- errors and threads ----------------------------------------------------------------------
def test_errors_name_atom_and_pair(base):
    _, k = base
    species, offsets, nb, rij = random_environment(4)
    bad = species.copy()
    bad[3] = 7
    with pytest.raises(StructureError, match="atom 3: species index 7"):
        k.compute(bad, offsets, nb, rij)
    p = int(offsets[2]) + 1
    nbb = nb.copy()
    nbb[p] = -1
    with pytest.raises(StructureError, match=f"atom 2, pair {p}: neighbour species index -1"):
        k.compute(species, offsets, nbb, rij)
    r2 = rij.copy()
    r2[p] = [0.0, 1e-13, 0.0]
    with pytest.raises(StructureError, match=f"atom 2, pair {p}: overlapping atoms"):
        k.compute(species, offsets, nb, r2)
    r2[p] = [np.nan, 1.0, 0.0]
    with pytest.raises(StructureError, match=f"atom 2, pair {p}: non-finite"):
        k.compute(species, offsets, nb, r2)
    r2[p] = [1.0, -np.inf, 0.0]
    with pytest.raises(StructureError, match=f"atom 2, pair {p}: non-finite"):
        k.compute(species, offsets, nb, r2)
    with pytest.raises(StructureError, match="offsets"):
        k.compute(species, offsets[:-1], nb, rij)
    with pytest.raises(StructureError, match="rij must have shape"):
        k.compute(species, offsets, nb, rij[:-1])
    with pytest.raises(TypeError):
        k.compute(species, offsets, nb, rij, nthreads=1.5)


def test_overlapping_atoms_in_a_structure_raise():
    """Through the calculator (the neighbour list or the kernel names the atoms), and through
    the kernel alone on a neighbour list that contains the zero-length pair."""
    m = model("Cu_o2")
    k = compile_llvm(m.ir())
    atoms = random_structure(m.elements, "cluster", seed=1)
    atoms.positions[3] = atoms.positions[5]
    with pytest.raises(StructureError, match=r"atoms (3 and 5|5 and 3)"):
        evaluate(k, m.elements, atoms, m.ir().rcut_max)
    species = np.zeros(len(atoms), dtype=np.int32)
    pos = atoms.positions
    pairs = [(i, j) for i in range(len(atoms)) for j in range(len(atoms)) if i != j]
    offsets = np.searchsorted([i for i, _ in pairs], np.arange(len(atoms) + 1))
    rij = np.array([pos[j] - pos[i] for i, j in pairs])
    p = pairs.index((3, 5))
    with pytest.raises(StructureError, match=f"atom 3, pair {p}: overlapping atoms"):
        k.compute(species, offsets, np.zeros(len(pairs), dtype=np.int32), rij)


def test_error_reports_lowest_failing_atom_with_threads(base):
    _, k = base
    species, offsets, nb, rij = random_environment(6, n_centres=200, max_nb=6)
    bad = rij.copy()
    firsts = [int(offsets[i]) for i in (150, 40, 120) if offsets[i + 1] > offsets[i]]
    for p in firsts:
        bad[p] = np.inf
    want = min(firsts)
    for nthreads in (1, 2, 4):
        with pytest.raises(StructureError, match=f"pair {want}: non-finite"):
            k.compute(species, offsets, nb, bad, nthreads=nthreads)
    sp_bad = species.copy()
    sp_bad[[170, 90]] = 5
    for nthreads in (1, 3):
        with pytest.raises(StructureError, match="atom 90: species index 5"):
            k.compute(sp_bad, offsets, nb, rij, nthreads=nthreads)


def test_every_block_count_of_a_bond_against_interpreter(base):
    """Centres with 1..13 neighbours of one species inside the cutoff: one to four blocks of
    LANES per bond, odd and even block counts (the A sums of low degrees run over even and odd
    blocks separately), a padded last block or none (only that block is masked), and the
    prefetch of a next block that exists or not."""
    ir, k = base
    rng = np.random.default_rng(5)
    counts = np.arange(1, 14)
    for zj in (0, 1):  # bond (0, 0): analytic radial functions; (0, 1): spline table
        species = np.zeros(counts.size, dtype=np.int32)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        n_pairs = int(offsets[-1])
        d = rng.normal(size=(n_pairs, 3))
        d /= np.linalg.norm(d, axis=1)[:, None]
        rij = d * rng.uniform(0.9, 0.95 * ir.rcut(0, zj), n_pairs)[:, None]
        env = (species, offsets, np.full(n_pairs, zj, dtype=np.int32), rij)
        E, G = k.compute(*env)
        Er, Gr = evaluate_ir(ir, *env)
        assert np.all(E != 0.0)
        assert_close(E, Er, what=f"energies, neighbours of species {zj}")
        assert_close(G, Gr, what=f"dEdr, neighbours of species {zj}")


def test_threads_give_identical_results(base):
    _, k = base
    env = random_environment(8, n_centres=300, max_nb=14)
    E1, G1 = k.compute(*env, nthreads=1)
    for nthreads in (2, 3, 0):
        E, G = k.compute(*env, nthreads=nthreads)
        np.testing.assert_array_equal(E, E1)
        np.testing.assert_array_equal(G, G1)
    results: list[object] = [None] * 4

    def work(t: int) -> None:
        try:
            for _ in range(3):
                results[t] = k.compute(*env, nthreads=1 + t % 2)
        except BaseException as exc:  # noqa: BLE001 - reported below
            results[t] = exc

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for res in results:
        assert isinstance(res, tuple), res
        np.testing.assert_array_equal(res[0], E1)
        np.testing.assert_array_equal(res[1], G1)


def test_fastmath_contract_stays_within_round_off(base):
    ir, k = base
    kf = compile_llvm(ir, fastmath="contract")
    assert kf.cache_key != k.cache_key
    for seed in range(2):
        env = random_environment(20 + seed)
        E, G = k.compute(*env)
        Ef, Gf = kf.compute(*env)
        assert_close(Ef, E)
        assert_close(Gf, G)
    with pytest.raises(CompileError):
        compile_llvm(ir, fastmath=("fast",))


# -- random specification models through the calculator -------------------------------------
@pytest.mark.parametrize("name", sorted(SPECS))
def test_spec_models_against_c_or_reference(name):
    m = model(name)
    ir = m.ir()
    k = compile_ir(ir, "llvm")
    assert isinstance(k, LLVMKernel)
    if HAVE_CC:
        other = c_kernel(ir)
    else:  # pragma: no cover - machines without a C compiler
        other = compile_ir(ir, "numpy")
    for kind in ("bulk", "skewed", "cluster", "slab"):
        atoms = random_structure(m.elements, kind, seed=3)
        got = evaluate(k, m.elements, atoms, ir.rcut_max)
        want = evaluate(other, m.elements, atoms, ir.rcut_max)
        for key in ("energies", "forces", "stress"):
            if key in want:
                assert_close(got[key], want[key], what=f"{name}/{kind}/{key}")


# -- PACE potentials on the reference structures ----------------------------------------------
PACE = {  # potential -> (reference file, frame stride, peer kernel)
    "Cu-III.yaml": ("Cu-III.extxyz", 1, "c"),
    "Al-Ni_opt_all.yace": ("Al-Ni_opt_all.extxyz", 2, "c"),
    "ZBL_rep.yaml": ("ZBL_rep.extxyz", 1, "c"),
    "Al.pbe.rhocore.ace": ("Al.pbe.rhocore.extxyz", 1, "c"),
    # 96 MB of spline tables: a cold C build takes most of a minute, the interpreter seconds
    "YBCO_ACE.yace": ("YBCO_ACE.extxyz", 6, "numpy"),
}


@pytest.mark.parametrize("pot", sorted(PACE))
def test_pace_potentials_against_peer_and_pyace(pot, shared_dir):
    """Against pyace's reference values (to their tolerance) and, at 1e-12 relative, against
    the C kernel (or the IR interpreter where noted)."""
    import ase.io

    ref_file, stride, peer = PACE[pot]
    m = acegen.load(shared_dir / "potentials" / pot)
    ir = m.ir()
    k = compile_llvm(ir)
    if peer == "c" and not HAVE_CC:  # pragma: no cover - machines without a C compiler
        peer = "numpy"
    kp = c_kernel(ir) if peer == "c" else compile_ir(ir, "numpy")
    frames = ase.io.read(shared_dir / "reference" / ref_file, ":")[::stride]
    assert frames
    for n, atoms in enumerate(frames):
        got = evaluate(k, m.elements, atoms, ir.rcut_max)
        e_ref = atoms.arrays["ref_energies"]
        f_ref = atoms.arrays["ref_forces"]
        assert np.abs(got["energies"] - e_ref).max() < 1e-7, (pot, n)
        assert (np.abs(got["forces"] - f_ref) / (1e-6 + 1e-7 * np.abs(f_ref))).max() < 1.0, (pot, n)
        want = evaluate(kp, m.elements, atoms, ir.rcut_max)
        for key in ("energies", "forces", "stress"):
            if key in want:
                assert_close(got[key], want[key], what=f"{pot}/frame {n}/{key} vs {peer}")


# -- the emitted IR outside acegen ------------------------------------------------------------
@pytest.mark.skipif(
    not all(shutil.which(t) for t in ("cc", "ld", "objcopy")), reason="needs cc, ld and objcopy to link"
)
def test_object_file_links_into_a_library_with_the_c_abi(tmp_path):
    """object_file() + the .bin tables (ld -b binary, renamed and 64-byte aligned) + cc -shared
    give a library that the C backend's loader accepts and that computes what the JIT does."""
    from acegen.backends.c import cdef
    from acegen.backends.llvm import object_file
    from acegen.jit.load import CompiledKernel

    ir = make_model(0, name="ll_standalone")
    files = emit_llvm(ir)
    (tmp_path / "acegen_ll_standalone.bin").write_bytes(files["acegen_ll_standalone.bin"])
    (tmp_path / "kernel.o").write_bytes(object_file(ir))

    def run(*cmd: str) -> None:
        proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 0, (cmd, proc.stderr)

    run("ld", "-r", "-b", "binary", "-z", "noexecstack", "-o", "tables.o", "acegen_ll_standalone.bin")
    run("objcopy", "--set-section-alignment", ".data=64", "tables.o")
    run("objcopy", "--redefine-sym", "_binary_acegen_ll_standalone_bin_start=acegen_ll_standalone_tables",
        "--rename-section", ".data=.rodata.acegen,alloc,load,readonly,data,contents", "tables.o")
    run("cc", "-shared", "-o", "libll.so", "kernel.o", "tables.o", "-lm")
    n = len(ir.elements)
    rcut = np.array([[ir.rcut(i, j) for j in range(n)] for i in range(n)])
    lib = CompiledKernel(tmp_path / "libll.so", ir.name, cdef(ir.name), n_species=n, rcut=rcut,
                         signature=ir.signature(), elements=ir.elements)
    assert not lib.openmp
    jit = compile_llvm(ir)
    for seed in range(2):
        env = random_environment(30 + seed)
        E, G = lib.compute(*env)
        Ej, Gj = jit.compute(*env)
        assert_close(E, Ej, rtol=1e-15)
        assert_close(G, Gj, rtol=1e-15)


# -- object cache --------------------------------------------------------------------------
def test_object_cache_reuses_and_verifies(tmp_path, monkeypatch):
    monkeypatch.setenv("ACEGEN_CACHE_DIR", str(tmp_path))
    ir = make_model(2, name="ll_cache", n_monomials=20)
    env = random_environment(1)
    k1 = compile_llvm(ir)
    assert not k1.from_cache
    folder = tmp_path / "kernels"
    obj = folder / f"{k1.cache_key}.o"
    assert obj.is_file() and (folder / f"{k1.cache_key}.o.sha256").is_file()
    assert (folder / f"{k1.cache_key}.ll").read_text() == emit_llvm(ir, lanes=host_lanes())["acegen_ll_cache.ll"]
    k2 = compile_llvm(ir)
    assert k2.from_cache and k2.cache_key == k1.cache_key
    E1, G1 = k1.compute(*env)
    E2, G2 = k2.compute(*env)
    np.testing.assert_array_equal(E1, E2)
    np.testing.assert_array_equal(G1, G2)
    # a damaged object fails its checksum: it is recompiled, not loaded
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 0xFF
    obj.write_bytes(bytes(data))
    k3 = compile_llvm(ir)
    assert not k3.from_cache
    np.testing.assert_array_equal(k3.compute(*env)[1], G1)
    assert compile_llvm(ir).from_cache
    # another optimisation level is another object
    assert compile_llvm(ir, opt_level=1).cache_key != k1.cache_key
    assert not compile_llvm(ir, cache=False).from_cache


def test_cache_key_depends_on_llvm_and_host_cpu():
    host = HostIdentity((22, 1, 0), "x86_64-unknown-linux-gnu", "skylake", "+avx,+avx2,+fma,-avx512f")
    key = llvm_cache_key("define void @f() { ret void }", {"opt_level": 3}, host)
    assert key == llvm_cache_key("define void @f() { ret void }", {"opt_level": 3}, host)
    variants = [
        HostIdentity((22, 1, 0), host.triple, host.cpu_name, "+avx,+avx2,+fma,+avx512f"),
        HostIdentity((22, 1, 0), host.triple, "icelake-server", host.cpu_features),
        HostIdentity((21, 1, 0), host.triple, host.cpu_name, host.cpu_features),
        HostIdentity((22, 1, 0), "aarch64-unknown-linux-gnu", host.cpu_name, host.cpu_features),
    ]
    keys = {key} | {llvm_cache_key("define void @f() { ret void }", {"opt_level": 3}, h) for h in variants}
    assert len(keys) == 1 + len(variants)
    assert llvm_cache_key("define void @g() { ret void }", {"opt_level": 3}, host) != key
    assert llvm_cache_key("define void @f() { ret void }", {"opt_level": 2}, host) != key


# -- a machine without a C compiler ----------------------------------------------------------
CHILD = textwrap.dedent(
    """
    import json, sys, warnings
    import numpy as np
    from acegen.jit.toolchain import find_c_compiler
    from acegen.runtime.kernels import compile_ir
    from acegen.calculator import evaluate
    from tests.models import model, random_structure

    assert find_c_compiler(required=False) is None, "a C compiler is still reachable"
    m = model("CuNiAl_o3")
    ir = m.ir()
    atoms = random_structure(m.elements, "bulk", seed=11)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kc = compile_ir(ir, "c")
    kl = compile_ir(ir, "llvm")
    out = {}
    for tag, k in (("c", kc), ("llvm", kl)):
        res = evaluate(k, m.elements, atoms, ir.rcut_max)
        out[tag] = {key: np.asarray(res[key]).tolist() for key in ("energies", "forces")}
        out[tag]["class"] = type(k).__name__
        out[tag]["from_cache"] = bool(getattr(k, "from_cache", False))
    out["warnings"] = [str(w.message) for w in caught]
    json.dump(out, sys.stdout)
    """
)


def test_llvm_works_without_a_c_compiler(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python").symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if k not in ("CC", "PYTHONPATH")}
    env.update(PATH=str(bindir), PYTHONPATH=str(REPO), ACEGEN_CACHE_DIR=str(tmp_path / "cache"), OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", CHILD], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert any("no C compiler found" in w for w in out["warnings"]), out["warnings"]
    assert out["c"]["class"] == out["llvm"]["class"] == "LLVMKernel"
    assert not out["c"]["from_cache"] and out["llvm"]["from_cache"]  # the second compile hits the cache
    m = model("CuNiAl_o3")
    ir = m.ir()
    atoms = random_structure(m.elements, "bulk", seed=11)
    parent = evaluate(c_kernel(ir) if HAVE_CC else compile_ir(ir, "numpy"), m.elements, atoms, ir.rcut_max)
    for tag in ("c", "llvm"):
        assert_close(np.array(out[tag]["energies"]), parent["energies"], what=f"{tag} energies")
        assert_close(np.array(out[tag]["forces"]), parent["forces"], what=f"{tag} forces")


def test_compile_ir_c_falls_back_to_llvm_options():
    """compile_ir(ir, 'c', openmp=..., march_native=...) must also work when it falls back."""
    ir = model("Cu_o1").ir()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        k = compile_llvm(ir, openmp=False, march_native=True)
    assert isinstance(k, LLVMKernel) and not k.openmp
