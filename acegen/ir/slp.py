"""Straight-line programs (SLP): the IR of every per-neighbour numerical function.

An :class:`SLP` is a list of assignments ``name = expr`` where ``expr`` is a sympy
expression over the inputs and earlier names, restricted to a small set of primitive
operations every backend can print (+, *, integer powers, sqrt, exp, cos, sin, log,
real constants, and ``Piecewise`` over single comparisons).  Radial bases, envelopes, spherical harmonics, core repulsion, the embedding
functions and the inner-cutoff composition (:mod:`acegen.ir.physics`) are all lowered to SLPs; the C, CUDA and LLVM printers each walk the same list.

:class:`SLPBuilder` builds an SLP together with its forward-mode derivatives with
respect to chosen inputs, so no expression swell occurs (every intermediate is named).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import sympy as sp

ALLOWED_FUNCS = {"exp": sp.exp, "cos": sp.cos, "sin": sp.sin, "sqrt": sp.sqrt, "log": sp.log}


@dataclass(frozen=True)
class SLP:
    """A straight-line program.

    inputs: names of the input scalars.
    assignments: ``(name, expr)`` in evaluation order; ``expr`` uses only inputs and
        earlier names.
    outputs: names whose values the program returns (inputs or assigned names).
    """

    inputs: tuple[str, ...]
    assignments: tuple[tuple[str, sp.Expr], ...]
    outputs: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.assignments)

    def to_text(self) -> str:
        lines = [f"slp({', '.join(self.inputs)}) -> ({', '.join(self.outputs)})"]
        for name, expr in self.assignments:
            lines.append(f"  {name} = {sp.sstr(expr, full_prec=True)}")
        return "\n".join(lines)

    __str__ = to_text

    def signature(self) -> str:
        return hashlib.sha256(self.to_text().encode()).hexdigest()

    def count_ops(self) -> int:
        return int(sum(sp.count_ops(e) for _, e in self.assignments))

    def evaluate(self, **inputs):
        """Evaluate with numpy (arrays broadcast).  Returns a list, one array per output."""
        env: dict[str, object] = {}
        for k in self.inputs:
            env[k] = np.asarray(inputs[k], dtype=float)
        fns = self._compiled()
        for (name, _), fn in zip(self.assignments, fns):
            env[name] = fn(env)
        shape = np.broadcast(*[env[k] for k in self.inputs]).shape if self.inputs else ()
        return [np.broadcast_to(np.asarray(env[o], dtype=float), shape).copy() for o in self.outputs]

    def _compiled(self):
        cache = self.__dict__.get("_fns")
        if cache is None:
            cache = []
            known = list(self.inputs)
            for name, expr in self.assignments:
                syms = sorted(expr.free_symbols, key=lambda s: s.name)
                f = sp.lambdify(syms, expr, modules="numpy")
                names = [s.name for s in syms]
                cache.append(lambda env, f=f, names=names: f(*[env[n] for n in names]))
                known.append(name)
            object.__setattr__(self, "_fns", cache)
        return cache


def _is_const(expr) -> bool:
    return isinstance(expr, (sp.Number, sp.NumberSymbol)) or (expr.is_number is True)


@dataclass
class SLPBuilder:
    """Build an SLP with forward-mode derivatives.

    ``wrt`` lists the inputs derivatives are taken with respect to.  Each named value
    ``v`` carries derivative names ``d_v_<x>`` for each ``x`` in ``wrt`` (omitted when
    structurally zero).  ``prefix`` keeps names unique when several SLPs are combined.
    """

    inputs: tuple[str, ...]
    wrt: tuple[str, ...] = ()
    prefix: str = "t"
    assignments: list = field(default_factory=list)
    _deriv: dict = field(default_factory=dict)  # name -> {x: sympy expr (symbol or 0/const)}
    _count: int = 0

    def __post_init__(self):
        for x in self.inputs:
            self._deriv[x] = {w: (sp.Integer(1) if w == x else sp.Integer(0)) for w in self.wrt}

    def sym(self, name: str) -> sp.Symbol:
        return sp.Symbol(name, real=True)

    def input(self, name: str) -> sp.Symbol:
        assert name in self.inputs
        return self.sym(name)

    def assign(self, expr, name: str | None = None, *, derivs: bool = True) -> sp.Expr:
        """Assign ``expr`` to a fresh name and return its symbol (constants are returned as is)."""
        expr = sp.sympify(expr)
        if _is_const(expr):
            return expr
        if isinstance(expr, sp.Symbol):
            return expr
        if name is None:
            name = f"{self.prefix}{self._count}"
            self._count += 1
        self.assignments.append((name, expr))
        d = {}
        if derivs:
            for w in self.wrt:
                total = sp.Integer(0)
                for s in expr.free_symbols:
                    ds = self._deriv.get(s.name, {}).get(w, sp.Integer(0))
                    if ds == 0:
                        continue
                    total += sp.diff(expr, s) * ds
                if total != 0:
                    total = self.assign(total, f"d{name}_{w}", derivs=False)
                d[w] = total
        self._deriv[name] = d
        return self.sym(name)

    def deriv(self, value, w: str) -> sp.Expr:
        """The derivative expression (a symbol or constant) of a value w.r.t. input ``w``."""
        value = sp.sympify(value)
        if _is_const(value):
            return sp.Integer(0)
        if isinstance(value, sp.Symbol):
            return self._deriv[value.name].get(w, sp.Integer(0))
        raise TypeError("deriv() takes a value returned by assign()")

    def output(self, values, names) -> None:
        """Bind output names to values (assigning copies where needed)."""
        self._outputs = getattr(self, "_outputs", [])
        for v, n in zip(values, names):
            v = sp.sympify(v)
            self.assignments.append((n, v))
            self._outputs.append(n)

    def build(self) -> SLP:
        return SLP(tuple(self.inputs), tuple(self.assignments), tuple(getattr(self, "_outputs", [])))
