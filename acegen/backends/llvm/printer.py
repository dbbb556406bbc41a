"""Print straight-line programs (:class:`acegen.ir.slp.SLP`) as LLVM IR (SSA form).

The printer accepts exactly the primitive operations an SLP may contain -- ``+``, ``*``,
integer and half-integer powers, ``sqrt``, ``exp``, ``cos``, ``sin``, ``log``, real constants
-- plus ``Piecewise`` over relational conditions (``fcmp`` + ``select``), and raises
:class:`~acegen.errors.CompileError` for anything else.  It mirrors the C printer
(:mod:`acegen.backends.c.printer`) operation for operation, so with no fast-math flags the
LLVM and C kernels perform the same IEEE operations in the same order:

* ``a + b + c`` -> ``fadd (fadd a, b), c`` in sympy's argument order;
* products: the factors with a negative rational exponent form a denominator,
  ``(n1*n2*...) / (d1*d2*...)`` (``1.0 / (...)`` if there is no numerator), left to right;
* ``x**n``: 0 < |n| <= :data:`MAX_UNROLLED_POWER` as repeated ``fmul`` (x*x*x...), larger
  exponents with ``llvm.pow.f64``; ``x**(n/2)`` as ``sqrt(x) * x**(|n| div 2)``; negative
  exponents as ``1.0 / (...)``; any other exponent with ``llvm.pow.f64``;
* ``exp``/``cos``/``sin``/``log``/``sqrt``: the intrinsics ``llvm.<f>.f64`` (they lower to the
  C library's functions, like the C backend's calls, but never set ``errno``);
* constants: ``float(c)`` printed as the hex form of its IEEE bits (``0x3FF0000000000000``),
  exact by construction;
* names: SLP inputs are bound to the caller's parameter names, every computed value gets a
  generated SSA name (``%t0, %t1, ...``), so no name from a model file reaches the IR;
  identical sub-expressions are computed once (pure arithmetic: the values do not change).

Fast-math flags: none by default (strict IEEE, like the C backend's
``-O3 -ffp-contract=off``); ``flags=("contract",)`` lets LLVM fuse a*b+c into an FMA.  See
``docs/backend-llvm.md`` for the per-instruction policy.
"""

from __future__ import annotations

import math

import sympy as sp

from ...errors import CompileError
from ...ir.slp import SLP
from ..common import c_identifier, llvm_double

MAX_UNROLLED_POWER = 16

#: Fast-math flags the printer may attach to SLP arithmetic (never nnan/ninf: the kernels test
#: for NaN/inf; never reassoc/arcp/afn: they change results).
ALLOWED_FLAGS = ("contract", "nsz")

_FUNCS = {sp.exp: "exp", sp.cos: "cos", sp.sin: "sin", sp.log: "log"}

#: sympy relational class -> ordered fcmp predicate (false when an operand is NaN)
_FCMP = {
    sp.StrictLessThan: "olt",
    sp.LessThan: "ole",
    sp.StrictGreaterThan: "ogt",
    sp.GreaterThan: "oge",
    sp.Equality: "oeq",
    sp.Unequality: "une",
}

ONE = llvm_double(1.0)


def _flag_prefix(flags: tuple[str, ...]) -> str:
    for f in flags:
        if f not in ALLOWED_FLAGS:
            raise CompileError(f"fast-math flag {f!r} is not allowed in SLP code (allowed: {', '.join(ALLOWED_FLAGS)})")
    return "".join(f + " " for f in flags)


class LLVMExprPrinter:
    """Emit SSA instructions that evaluate sympy expressions over already-named values.

    ``names`` maps sympy symbol names to LLVM operands (``%param`` or generated ``%tN``);
    :meth:`operand` appends the instructions to :attr:`lines` and returns the operand that
    holds the value (an SSA name or a constant).
    """

    def __init__(self, names: dict[str, str], *, flags: tuple[str, ...] = (), prefix: str = "t") -> None:
        self.names = names
        self.lines: list[str] = []
        self._flags = _flag_prefix(flags)
        self._prefix = c_identifier(prefix)
        self._count = 0
        self._memo: dict[sp.Basic, str] = {}

    # -- instruction helpers ------------------------------------------------------------
    def _fresh(self) -> str:
        name = f"%{self._prefix}{self._count}"
        self._count += 1
        return name

    def _binop(self, op: str, a: str, b: str) -> str:
        out = self._fresh()
        self.lines.append(f"  {out} = {op} {self._flags}double {a}, {b}")
        return out

    def _call(self, fn: str, *args: str) -> str:
        out = self._fresh()
        params = ", ".join(f"double {a}" for a in args)
        self.lines.append(f"  {out} = call double @llvm.{fn}.f64({params})")
        return out

    def _product(self, factors: list[str]) -> str:
        acc = factors[0]
        for f in factors[1:]:
            acc = self._binop("fmul", acc, f)
        return acc

    # -- printing -----------------------------------------------------------------------
    def operand(self, expr: sp.Basic) -> str:
        """The operand holding ``expr`` (instructions appended to :attr:`lines`)."""
        e = sp.sympify(expr)
        if isinstance(e, sp.Symbol):
            try:
                return self.names[e.name]
            except KeyError:
                raise CompileError(f"SLP uses an undefined name {e.name!r}") from None
        memo = self._memo.get(e)
        if memo is not None:
            return memo
        out = self._print(e)
        self._memo[e] = out
        return out

    def _print(self, e: sp.Basic) -> str:
        if isinstance(e, (sp.Number, sp.NumberSymbol)) or (
            getattr(e, "is_number", False) and not e.free_symbols and e.is_real
        ):
            return self._number(e)
        if isinstance(e, sp.Add):
            acc = self.operand(e.args[0])
            for a in e.args[1:]:
                acc = self._binop("fadd", acc, self.operand(a))
            return acc
        if isinstance(e, sp.Mul):
            return self._print_mul(e)
        if isinstance(e, sp.Pow):
            return self._print_pow(e.base, e.exp)
        if isinstance(e, sp.Piecewise):
            return self._print_piecewise(e)
        fn = _FUNCS.get(type(e))
        if fn is not None and len(e.args) == 1:
            return self._call(fn, self.operand(e.args[0]))
        raise CompileError(f"the LLVM printer does not support {type(e).__name__} in an SLP: {e}")

    @staticmethod
    def _number(e: sp.Basic) -> str:
        try:
            v = float(e)
        except TypeError as exc:
            raise CompileError(f"SLP constant is not real: {e}") from exc
        if not math.isfinite(v):
            raise CompileError(f"SLP constant is not finite: {e}")
        return llvm_double(v)

    def _print_mul(self, e: sp.Mul) -> str:
        num: list[str] = []
        den: list[str] = []
        for a in e.args:
            if isinstance(a, sp.Pow) and a.exp.is_Rational and a.exp.is_negative:
                den.append(self._print_pow(a.base, -a.exp))
            else:
                num.append(self.operand(a))
        top = self._product(num) if num else ONE
        if not den:
            return top
        return self._binop("fdiv", top, self._product(den))

    def _print_pow(self, base: sp.Expr, ex: sp.Expr) -> str:
        b = self.operand(base)
        if ex.is_Integer:
            n = int(ex)
            if n == 0:
                return ONE
            if abs(n) <= MAX_UNROLLED_POWER:
                prod = self._product([b] * abs(n))
            else:
                prod = self._call("pow", b, llvm_double(float(abs(n))))
            return prod if n > 0 else self._binop("fdiv", ONE, prod)
        if ex.is_Rational and ex.q == 2:
            n = int(ex.p)
            k = abs(n) // 2
            parts = [self._call("sqrt", b)]
            if k:
                parts.append(self._print_pow(base, sp.Integer(k)))
            prod = self._product(parts)
            return prod if n > 0 else self._binop("fdiv", ONE, prod)
        return self._call("pow", b, self.operand(ex))

    def _condition(self, c: sp.Basic) -> str:
        """An ``i1`` operand for a Piecewise condition."""
        if c is sp.true:
            return "true"
        if c is sp.false:
            return "false"
        pred = _FCMP.get(type(c))
        if pred is not None:
            a, b = self.operand(c.lhs), self.operand(c.rhs)
            out = self._fresh()
            self.lines.append(f"  {out} = fcmp {pred} double {a}, {b}")
            return out
        if isinstance(c, (sp.And, sp.Or)):
            op = "and" if isinstance(c, sp.And) else "or"
            acc = self._condition(c.args[0])
            for a in c.args[1:]:
                nxt = self._condition(a)
                out = self._fresh()
                self.lines.append(f"  {out} = {op} i1 {acc}, {nxt}")
                acc = out
            return acc
        if isinstance(c, sp.Not):
            inner = self._condition(c.args[0])
            out = self._fresh()
            self.lines.append(f"  {out} = xor i1 {inner}, true")
            return out
        raise CompileError(f"the LLVM printer does not support the Piecewise condition {c}")

    def _print_piecewise(self, e: sp.Piecewise) -> str:
        """``Piecewise((e1, c1), ..., (en, True))``: every branch is evaluated, a chain of
        ``select`` picks the first whose condition holds (SLP expressions have no side
        effects, and a NaN or inf in an unused branch does not propagate through select)."""
        pieces = list(e.args)
        if pieces[-1].cond is not sp.true:
            raise CompileError(f"a Piecewise in an SLP needs a final (expr, True) branch: {e}")
        acc = self.operand(pieces[-1].expr)
        for piece in reversed(pieces[:-1]):
            val = self.operand(piece.expr)
            cond = self._condition(piece.cond)
            out = self._fresh()
            self.lines.append(f"  {out} = select i1 {cond}, double {val}, double {acc}")
            acc = out
        return acc


def slp_instructions(
    slp: SLP, inputs: list[str], out: str, *, flags: tuple[str, ...] = (), prefix: str = "t"
) -> list[str]:
    """LLVM instructions evaluating ``slp`` and storing output ``i`` to ``out[i]``.

    ``inputs``: the LLVM identifiers (without ``%``) bound to ``slp.inputs`` (same order);
    ``out``: the identifier of a ``ptr`` to doubles.  Generated names are ``%<prefix>N``.
    """
    if len(inputs) != len(slp.inputs):
        raise CompileError(f"SLP has {len(slp.inputs)} inputs, {len(inputs)} LLVM names given")
    names = {n: "%" + c_identifier(c) for n, c in zip(slp.inputs, inputs)}
    out = c_identifier(out)
    printer = LLVMExprPrinter(names, flags=flags, prefix=prefix)
    for name, expr in slp.assignments:
        names[name] = printer.operand(expr)
    lines = printer.lines
    for i, o in enumerate(slp.outputs):
        if o not in names:
            raise CompileError(f"SLP output {o!r} is never assigned")
        ptr = f"%{prefix}o{i}"
        lines.append(f"  {ptr} = getelementptr inbounds double, ptr %{out}, i64 {i}")
        lines.append(f"  store double {names[o]}, ptr {ptr}")
    return lines


def slp_function(slp: SLP, name: str, inputs: list[str], *, flags: tuple[str, ...] = ()) -> str:
    """An internal LLVM function ``void @name(double %in..., ptr %out)`` evaluating ``slp``."""
    params = ", ".join(f"double %{c_identifier(p)}" for p in inputs)
    body = "\n".join(slp_instructions(slp, inputs, "out", flags=flags))
    return f"define internal void @{c_identifier(name)}({params}, ptr noalias %out) {{\nentry:\n{body}\n  ret void\n}}\n"


__all__ = ["ALLOWED_FLAGS", "LLVMExprPrinter", "MAX_UNROLLED_POWER", "slp_function", "slp_instructions"]
