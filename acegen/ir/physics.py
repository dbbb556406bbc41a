"""The per-atom physics of a species program as straight-line programs.

Two SLPs per central species, written once here and printed by every target (C, CUDA, LLVM)
and evaluated by the interpreter (:mod:`acegen.ir.interp`):

* :func:`embedding_slp` -- the embedding ``E = Σ_p F_p(ρ_p)`` and ``dE/dρ_p``; inputs
  ``rho_0 .. rho_{P-1}``, outputs ``(E, dE_0, .., dE_{P-1})``.  The kinds are PACE's:
  ``linear`` (F = ρ_0), ``FinnisSinclair`` and ``FinnisSinclairShiftedScaled`` with
  parameters ``(w_p, m_p)`` per density (Lysogorskiy et al. 2021; Bochkarev et al. 2022);
* :func:`core_slp` -- the composition of the embedding energy with the core repulsion and the
  inner cutoff; inputs ``(e_ace, rho_core, d, delta)``, outputs ``(E, scale, dE_drho_core,
  dE_dd)``.  ``scale`` multiplies dE/dρ_p, ``dE_dd`` is dE/dd of the nearest-neighbour switch
  (zbl only; ``d = +inf``, ``delta = 0`` when there is no neighbour gives f = 1).

Both switches are PACE's ``cutoff_func_poly``: 1 at or below xc − dx, 0 at or above xc,
in between with t = 1 − 2(1 + (x − xc)/dx): f = 1/2 + 15/4 (t/4 − t³/6 + t⁵/20),
df/dx = −(15/2)/dx (1/4 − t²/2 + t⁴/4).
"""

from __future__ import annotations

import sympy as sp

from .slp import SLP

#: The Finnis–Sinclair regularisation scale W of PACE (the ρ below 1/W is linearised).
FS_W = 1.0e6

#: |ρ| at or below which PACE's Finnis–Sinclair embedding is the linear W^(1−m) ρ.
FS_RHO_SMALL = 1.0e-10

#: |m − 1| below which PACE's shifted-scaled Finnis–Sinclair embedding is the identity.
FSS_M_ONE = 1.0e-10

CORE_INPUTS = ("e_ace", "rho_core", "d", "delta")
CORE_OUTPUTS = ("E", "scale", "dE_drho_core", "dE_dd")


def _sym(name: str) -> sp.Symbol:
    return sp.Symbol(name, real=True)


def _abs(x: sp.Symbol) -> sp.Expr:
    """|x| as a Piecewise of one comparison (every printer has those; −x is exact)."""
    return sp.Piecewise((-x, sp.StrictLessThan(x, 0)), (x, True))


class _Program:
    """Named assignments in order (every intermediate named, so sympy never reassociates
    across them: the rounding is that of the written formula)."""

    def __init__(self, inputs: tuple[str, ...]) -> None:
        self.inputs = inputs
        self.assignments: list[tuple[str, sp.Expr]] = []

    def let(self, name: str, expr) -> sp.Expr:
        expr = sp.sympify(expr)
        if expr.is_number:
            return sp.Float(float(expr))
        self.assignments.append((name, expr))
        return _sym(name)

    def build(self, outputs: list[tuple[str, object]]) -> SLP:
        names = []
        for name, value in outputs:
            self.assignments.append((name, sp.sympify(value)))
            names.append(name)
        return SLP(tuple(self.inputs), tuple(self.assignments), tuple(names))


def _fs_term(prog: _Program, p: int, rho: sp.Symbol, m: float) -> tuple[sp.Expr, sp.Expr]:
    """PACE "FinnisSinclair": sign(ρ) [(1 − g)|ρ|^m + W^(1−m) g |ρ|], g = exp(−(W|ρ|)³), for
    |ρ| > 1e-10; W^(1−m) ρ below.  Returns (F, dF/dρ) as named values."""
    lam = float(FS_W ** (1.0 - m))
    a = prog.let(f"a_{p}", _abs(rho))
    am = prog.let(f"am_{p}", a ** sp.Float(m))
    wa = prog.let(f"wa_{p}", sp.Float(FS_W) * a)
    g = prog.let(f"g_{p}", sp.exp(-(wa * wa * wa)))
    dg = prog.let(f"dg_{p}", sp.Float(-3.0 * FS_W) * wa * wa * g)
    omg = prog.let(f"omg_{p}", 1 - g)
    t1 = prog.let(f"dFa_{p}", sp.Float(m) * a ** sp.Float(m - 1.0) * omg)
    t2 = prog.let(f"dFb_{p}", am * dg)
    t3 = prog.let(f"dFc_{p}", sp.Float(lam) * prog.let(f"dFd_{p}", dg * a + g))
    d_full = prog.let(f"dFfull_{p}", t1 - t2 + t3)
    f_full = prog.let(f"Ffull_{p}", omg * am + sp.Float(lam) * g * a)
    small = sp.LessThan(a, sp.Float(FS_RHO_SMALL))
    F = prog.let(f"F_{p}", sp.Piecewise((sp.Float(lam) * rho, small), (-f_full, sp.StrictLessThan(rho, 0)), (f_full, True)))
    dF = prog.let(f"dF_{p}", sp.Piecewise((sp.Float(lam), small), (d_full, True)))
    return F, dF


def _fss_term(prog: _Program, p: int, rho: sp.Symbol, m: float) -> tuple[sp.Expr, sp.Expr]:
    """PACE "FinnisSinclairShiftedScaled": F = ρ if |m − 1| < 1e-10; else with a = |ρ|,
    ν = 1/m, x_off = ν^(ν/(1−ν)) e^−a, y_off = ν^(1/(1−ν)) e^−a:
    F = sign(ρ) ((x_off + a)^m − y_off), dF/dρ = y_off + m (1 − x_off)(x_off + a)^(m−1)."""
    if abs(m - 1.0) < FSS_M_ONE:
        return rho, sp.Float(1.0)
    nu = 1.0 / m
    cx = float(nu ** (nu / (1.0 - nu)))
    cy = float(nu ** (1.0 / (1.0 - nu)))
    a = prog.let(f"a_{p}", _abs(rho))
    ea = prog.let(f"ea_{p}", sp.exp(-a))
    x_off = prog.let(f"xoff_{p}", sp.Float(cx) * ea)
    y_off = prog.let(f"yoff_{p}", sp.Float(cy) * ea)
    base = prog.let(f"base_{p}", x_off + a)
    dF = prog.let(f"dF_{p}", y_off + prog.let(f"dFa_{p}", sp.Float(m) * (1 - x_off)) * base ** sp.Float(m - 1.0))
    f_full = prog.let(f"Ffull_{p}", base ** sp.Float(m) - y_off)
    F = prog.let(f"F_{p}", sp.Piecewise((-f_full, sp.StrictLessThan(rho, 0)), (f_full, True)))
    return F, dF


def embedding_slp(kind: str, params, ndensity: int) -> SLP:
    """The embedding of one species: inputs ``rho_p``, outputs ``(E, dE_0, .., dE_{P-1})``
    with E = Σ_p w_p F(ρ_p; m_p) (``linear``: E = ρ_0, dE_0 = 1)."""
    inputs = tuple(f"rho_{p}" for p in range(ndensity))
    prog = _Program(inputs)
    rho = [_sym(n) for n in inputs]
    if kind == "linear":
        return prog.build([("E", rho[0])] + [(f"dE_{p}", sp.Float(1.0 if p == 0 else 0.0)) for p in range(ndensity)])
    if kind not in ("FinnisSinclair", "FinnisSinclairShiftedScaled"):
        raise ValueError(f"unknown embedding kind {kind!r}")
    term = _fs_term if kind == "FinnisSinclair" else _fss_term
    params = [float(x) for x in params]
    total: sp.Expr = sp.Float(0.0)
    outs: list[tuple[str, object]] = []
    for p in range(ndensity):
        w, m = params[2 * p], params[2 * p + 1]
        F, dF = term(prog, p, rho[p], m)
        wf = prog.let(f"wF_{p}", sp.Float(w) * F)
        total = wf if p == 0 else prog.let(f"E_{p}", total + wf)
        outs.append((f"dE_{p}", sp.Float(w) * dF))
    return prog.build([("E", total)] + outs)


def theta_embedding_slp(kind: str, params, ndensity: int, k0max: int) -> SLP:
    """The embedding of a multilayer layer n > 1, with the on-site factor of the centre's
    indicator θ_i (docs/multilayer.md).  Inputs ``rho_c`` for the columns c = p (k0max + 1) + k0
    (the partial densities ψ_{p,k0}) and ``theta``; with ρ_p = Σ_k0 T_k0(θ_i) ψ_{p,k0}
    (Chebyshev polynomials of the first kind) and E = Σ_p w_p F(ρ_p; m_p) as in
    :func:`embedding_slp`, the outputs are ``(E, dE_0, .., dE_{C-1}, dE_theta)``:
    dE/dψ_{p,k0} = w_p F'(ρ_p) T_k0(θ_i) and dE/dθ_i = Σ_p w_p F'(ρ_p) Σ_k0 T'_k0(θ_i) ψ_{p,k0}."""
    nk = k0max + 1
    inputs = tuple(f"rho_{c}" for c in range(ndensity * nk)) + ("theta",)
    prog = _Program(inputs)
    psi = [_sym(n) for n in inputs[:-1]]
    th = _sym("theta")
    T: list = [sp.Float(1.0), th]
    dT: list = [sp.Float(0.0), sp.Float(1.0)]
    for k in range(2, nk):
        T.append(prog.let(f"T_{k}", 2 * th * T[k - 1] - T[k - 2]))
        dT.append(prog.let(f"dT_{k}", 2 * T[k - 1] + 2 * th * dT[k - 1] - dT[k - 2]))
    rho, drho = [], []
    for p in range(ndensity):
        cols = psi[p * nk:(p + 1) * nk]
        rho.append(prog.let(f"phi_{p}", sp.Add(*[T[k] * cols[k] for k in range(nk)])))
        drho.append(prog.let(f"dphi_{p}", sp.Add(*[dT[k] * cols[k] for k in range(1, nk)])))
    if kind == "linear":
        if ndensity != 1:
            raise ValueError("the linear embedding has one density")
        total, dFs = rho[0], [sp.Float(1.0)]
    elif kind in ("FinnisSinclair", "FinnisSinclairShiftedScaled"):
        term = _fs_term if kind == "FinnisSinclair" else _fss_term
        params = [float(x) for x in params]
        total, dFs = sp.Float(0.0), []
        for p in range(ndensity):
            w, m = params[2 * p], params[2 * p + 1]
            F, dF = term(prog, p, rho[p], m)
            wf = prog.let(f"wF_{p}", sp.Float(w) * F)
            total = wf if p == 0 else prog.let(f"E_{p}", total + wf)
            dFs.append(prog.let(f"wdF_{p}", sp.Float(w) * dF))
    else:
        raise ValueError(f"unknown embedding kind {kind!r}")
    outs: list[tuple[str, object]] = [("E", total)]
    for p in range(ndensity):
        outs += [(f"dE_{p * nk + k}", dFs[p] * T[k]) for k in range(nk)]
    outs.append(("dE_theta", sp.Add(*[dFs[p] * drho[p] for p in range(ndensity)])))
    return prog.build(outs)


def _switch(prog: _Program, tag: str, x: sp.Expr, xc, dx) -> tuple[sp.Expr, sp.Expr]:
    """PACE's cutoff_func_poly (f, df/dx) at x, every intermediate named."""
    t = prog.let(f"t_{tag}", 1 - 2 * prog.let(f"s_{tag}", 1 + prog.let(f"q_{tag}", (x - xc) / dx)))
    t2 = prog.let(f"t2_{tag}", t * t)
    f = prog.let(f"fpoly_{tag}", sp.Rational(1, 2) + sp.Float(3.75) * (t / 4 - t2 * t / 6 + t2 * t2 * t / 20))
    df = prog.let(f"dfpoly_{tag}", prog.let(f"k_{tag}", sp.Float(-7.5) / dx) * (sp.Rational(1, 4) - t2 / 2 + t2 * t2 / 4))
    above = x >= xc
    below = x <= prog.let(f"lo_{tag}", xc - dx)
    fc = prog.let(f"f_{tag}", sp.Piecewise((0, above), (1, below), (f, True)))
    # two assignments: sympy would merge the two zero branches into one Or condition
    dfc = prog.let(f"df_{tag}", sp.Piecewise((0, above), (prog.let(f"dfin_{tag}", sp.Piecewise((0, below), (df, True))), True)))
    return fc, dfc


def core_slp(kind: str, E0: float, rho_core_cut: float = 0.0, drho_core_cut: float = 0.0) -> SLP:
    """The energy of one atom from its embedding energy ``e_ace``, core density ``rho_core``
    and (zbl) the nearest-neighbour distance ``d`` past the inner cutoff with width ``delta``:

    ======== =================================================  ================
    kind     E                                                  scale
    ======== =================================================  ================
    none     E0 + e_ace                                          1
    density  E0 + (e_ace fc(ρ_core) + ρ_core)                    fc
    distance E0 + (e_ace + ρ_core)                               1
    zbl      E0 + (e_ace f_in + ρ_core (1 − f_in))               f_in
    ======== =================================================  ================

    with fc = poly_switch(ρ_core, rho_core_cut, drho_core_cut) and f_in =
    poly_switch(δ − d, δ, δ).  Outputs ``(E, scale, dE_drho_core, dE_dd)``.
    """
    prog = _Program(CORE_INPUTS)
    e, rc, d, delta = (_sym(n) for n in CORE_INPUTS)
    E0 = sp.Float(float(E0))
    one, zero = sp.Float(1.0), sp.Float(0.0)
    if kind == "none":
        return prog.build([("E", E0 + e), ("scale", one), ("dE_drho_core", zero), ("dE_dd", zero)])
    if kind == "distance":
        s = prog.let("s", e + rc)
        return prog.build([("E", E0 + s), ("scale", one), ("dE_drho_core", one), ("dE_dd", zero)])
    if kind == "density":
        fc, dfc = _switch(prog, "core", rc, sp.Float(float(rho_core_cut)), sp.Float(float(drho_core_cut)))
        s = prog.let("s", e * fc + rc)
        return prog.build([("E", E0 + s), ("scale", fc), ("dE_drho_core", e * dfc + 1), ("dE_dd", zero)])
    if kind == "zbl":
        x = prog.let("x_in", delta - d)
        fc, dfc = _switch(prog, "in", x, delta, delta)
        omf = prog.let("omf", 1 - fc)
        s = prog.let("s", e * fc + rc * omf)
        # d f_in / d d = −df/dx
        return prog.build([("E", E0 + s), ("scale", fc), ("dE_drho_core", omf),
                           ("dE_dd", prog.let("de", e - rc) * prog.let("mdf", -dfc))])
    raise ValueError(f"unknown core kind {kind!r}")


__all__ = ["CORE_INPUTS", "CORE_OUTPUTS", "FS_W", "core_slp", "embedding_slp", "theta_embedding_slp"]
