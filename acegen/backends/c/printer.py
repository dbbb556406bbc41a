"""Print straight-line programs (:class:`acegen.ir.slp.SLP`) as C99.

The printer is deliberately small and fully parenthesised: it accepts exactly the primitive
operations an SLP may contain (+, *, integer and half-integer powers, ``sqrt``, ``exp``,
``cos``, ``sin``, ``log``, real constants) and raises :class:`~acegen.errors.CompileError`
for anything else, so an unsupported sympy node can never be printed as something C
misreads.  Conventions:

* names: every SLP input and assignment is renamed to a generated identifier (inputs to the
  parameter names the caller chooses, assignments to ``v0, v1, ...`` in order; a name that is
  assigned twice gets a fresh identifier each time), so no name from a model file reaches C;
* constants: every number is printed as the nearest double, ``repr(float(x))`` (shortest
  round-trip form, so the C compiler reads back exactly that double; rationals are rounded
  once, not computed as p.0/q.0);
* powers: x**n for 0 < |n| <= :data:`MAX_UNROLLED_POWER` as repeated multiplication, x**(n/2)
  with ``sqrt``, any other exponent with ``pow``; negative exponents as ``1.0/(...)``.
"""

from __future__ import annotations

import math

import sympy as sp

from ...errors import CompileError
from ...ir.slp import SLP
from ..common import c_double, c_identifier

MAX_UNROLLED_POWER = 16

_FUNCS = {sp.exp: "exp", sp.cos: "cos", sp.sin: "sin", sp.log: "log"}


class CExprPrinter:
    """Print one sympy expression as a C expression over already-named values.

    ``names`` maps sympy symbol names to C identifiers (generated ones only).
    """

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names

    def doprint(self, expr: sp.Expr) -> str:
        return self._print(sp.sympify(expr))

    def _print(self, e: sp.Basic) -> str:
        if isinstance(e, sp.Symbol):
            try:
                return self.names[e.name]
            except KeyError:
                raise CompileError(f"SLP uses an undefined name {e.name!r}") from None
        if isinstance(e, (sp.Number, sp.NumberSymbol)) or (e.is_number and not e.free_symbols and e.is_real):
            return self._number(e)
        if isinstance(e, sp.Add):
            return "(" + " + ".join(self._print(a) for a in e.args) + ")"
        if isinstance(e, sp.Mul):
            return self._print_mul(e)
        if isinstance(e, sp.Pow):
            return self._print_pow(e.base, e.exp)
        if isinstance(e, sp.Piecewise):
            return self._print_piecewise(e)
        fn = _FUNCS.get(type(e))
        if fn is not None and len(e.args) == 1:
            return f"{fn}({self._print(e.args[0])})"
        raise CompileError(f"the C printer does not support {type(e).__name__} in an SLP: {e}")

    _RELATIONS = {sp.StrictLessThan: "<", sp.LessThan: "<=", sp.StrictGreaterThan: ">", sp.GreaterThan: ">="}

    def _print_piecewise(self, e: sp.Piecewise) -> str:
        """``Piecewise((a, c1), (b, c2), ..., (z, True))`` as nested conditionals; the
        conditions are single comparisons (e.g. a function's own cutoff ``r < rc``)."""
        pieces = list(e.args)
        if pieces[-1].cond is not sp.true:
            raise CompileError(f"Piecewise without a default branch in an SLP: {e}")
        out = self._print(pieces[-1].expr)
        for piece in reversed(pieces[:-1]):
            op = self._RELATIONS.get(type(piece.cond))
            if op is None:
                raise CompileError(f"unsupported Piecewise condition in an SLP: {piece.cond}")
            lhs, rhs = (self._print(a) for a in piece.cond.args)
            out = f"(({lhs} {op} {rhs}) ? {self._print(piece.expr)} : {out})"
        return out

    @staticmethod
    def _number(e: sp.Expr) -> str:
        try:
            v = float(e)
        except TypeError as exc:
            raise CompileError(f"SLP constant is not real: {e}") from exc
        if not math.isfinite(v):
            raise CompileError(f"SLP constant is not finite: {e}")
        return c_double(v)

    def _print_mul(self, e: sp.Mul) -> str:
        num: list[str] = []
        den: list[str] = []
        for a in e.args:
            if isinstance(a, sp.Pow) and a.exp.is_Rational and a.exp.is_negative:
                den.append(self._print_pow(a.base, -a.exp))
            else:
                num.append(self._print(a))
        top = "*".join(num) if num else "1.0"
        if not den:
            return "(" + top + ")"
        return "(" + top + "/(" + "*".join(den) + "))"

    def _print_pow(self, base: sp.Expr, ex: sp.Expr) -> str:
        b = self._print(base)
        if ex.is_Integer:
            n = int(ex)
            if n == 0:
                return "1.0"
            if abs(n) <= MAX_UNROLLED_POWER:
                prod = "(" + "*".join([b] * abs(n)) + ")"
            else:
                prod = f"pow({b}, {c_double(float(abs(n)))})"
            return prod if n > 0 else f"(1.0/{prod})"
        if ex.is_Rational and ex.q == 2:
            n = int(ex.p)
            k = abs(n) // 2
            parts = [f"sqrt({b})"]
            if k:
                parts.append(self._print_pow(base, sp.Integer(k)))
            prod = "(" + "*".join(parts) + ")"
            return prod if n > 0 else f"(1.0/{prod})"
        return f"pow({b}, {self._print(ex)})"


def slp_body(slp: SLP, inputs: list[str], out: str, *, indent: str = "    ", rows: bool = False) -> str:
    """C statements evaluating ``slp``: ``const double vK = ...;`` then ``out[i] = ...;``.

    ``inputs`` are the C identifiers bound to ``slp.inputs`` (same order); ``out`` is the
    identifier of a ``double *`` receiving the outputs in ``slp.outputs`` order.  With
    ``rows``, ``out`` is a pointer to rows (``double (*out)[N]``) and output i is stored to
    ``out[i][q]`` instead: structure-of-arrays over a batch indexed by ``q``, the caller's
    loop variable.
    """
    if len(inputs) != len(slp.inputs):
        raise CompileError(f"SLP has {len(slp.inputs)} inputs, {len(inputs)} C names given")
    names = {n: c_identifier(c) for n, c in zip(slp.inputs, inputs)}
    printer = CExprPrinter(names)
    out = c_identifier(out)
    lines: list[str] = []
    for k, (name, expr) in enumerate(slp.assignments):
        rhs = printer.doprint(expr)
        names[name] = f"v{k}"
        lines.append(f"{indent}const double v{k} = {rhs};")
    for i, o in enumerate(slp.outputs):
        if o not in names:
            raise CompileError(f"SLP output {o!r} is never assigned")
        target = f"{out}[{i}][q]" if rows else f"{out}[{i}]"
        lines.append(f"{indent}{target} = {names[o]};")
    return "\n".join(lines)
