"""Print straight-line programs (:class:`acegen.ir.slp.SLP`) as LLVM IR (SSA form).

The printer accepts exactly the primitive operations an SLP may contain -- ``+``, ``*``,
integer and half-integer powers, ``sqrt``, ``exp``, ``cos``, ``sin``, ``log``, real constants
-- plus ``Piecewise`` over relational conditions (``fcmp`` + ``select``), and raises
:class:`~acegen.errors.CompileError` for anything else.  It mirrors the C printer
(:mod:`acegen.backends.c.printer`) operation for operation, so with no fast-math flags an SLP
printed for LLVM and for C performs the same IEEE operations in the same order (the tests
check the bits):

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

Vector mode (``width`` > 1): every value is a ``<width x double>`` -- one SLP evaluated for
``width`` neighbours at once, lane by lane the same IEEE operations as the scalar code
(constants are splats, ``llvm.exp.v4f64`` etc. lower to the same libm calls per lane, a
Piecewise condition is a ``<width x i1>`` and ``select`` picks per lane).

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

#: Fast-math flags the printer may attach to SLP arithmetic: only ``contract`` (a*b+c may become
#: one FMA: a different rounding, within round-off).  Never nnan/ninf (the kernels test for
#: NaN/inf), never reassoc/arcp/afn (they change results beyond one rounding per operation).
ALLOWED_FLAGS = ("contract",)

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

    def __init__(
        self, names: dict[str, str], *, flags: tuple[str, ...] = (), prefix: str = "t", width: int = 1
    ) -> None:
        if not (isinstance(width, int) and 1 <= width <= 64):
            raise CompileError(f"vector width must be an integer in 1..64, got {width!r}")
        self.names = names
        self.lines: list[str] = []
        self.width = width
        self.ty = "double" if width == 1 else f"<{width} x double>"
        self.bty = "i1" if width == 1 else f"<{width} x i1>"
        self.suffix = "f64" if width == 1 else f"v{width}f64"
        self._flags = _flag_prefix(flags)
        self._prefix = c_identifier(prefix)
        self._count = 0
        self._memo: dict[sp.Basic, str] = {}

    def const(self, value: float) -> str:
        """The operand of a double constant (a splat in vector mode)."""
        c = llvm_double(value)
        return c if self.width == 1 else f"splat (double {c})"

    def _bool(self, value: bool) -> str:
        c = "true" if value else "false"
        return c if self.width == 1 else f"splat (i1 {c})"

    # -- instruction helpers ------------------------------------------------------------
    def _fresh(self) -> str:
        name = f"%{self._prefix}{self._count}"
        self._count += 1
        return name

    def _binop(self, op: str, a: str, b: str) -> str:
        out = self._fresh()
        self.lines.append(f"  {out} = {op} {self._flags}{self.ty} {a}, {b}")
        return out

    def _call(self, fn: str, *args: str) -> str:
        out = self._fresh()
        params = ", ".join(f"{self.ty} {a}" for a in args)
        self.lines.append(f"  {out} = call {self.ty} @llvm.{fn}.{self.suffix}({params})")
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
            return self.const(self._number(e))
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
    def _number(e: sp.Basic) -> float:
        try:
            v = float(e)
        except TypeError as exc:
            raise CompileError(f"SLP constant is not real: {e}") from exc
        if not math.isfinite(v):
            raise CompileError(f"SLP constant is not finite: {e}")
        return v

    def _print_mul(self, e: sp.Mul) -> str:
        num: list[str] = []
        den: list[str] = []
        for a in e.args:
            if isinstance(a, sp.Pow) and a.exp.is_Rational and a.exp.is_negative:
                den.append(self._print_pow(a.base, -a.exp))
            else:
                num.append(self.operand(a))
        top = self._product(num) if num else self.const(1.0)
        if not den:
            return top
        return self._binop("fdiv", top, self._product(den))

    def _print_pow(self, base: sp.Expr, ex: sp.Expr) -> str:
        b = self.operand(base)
        if ex.is_Integer:
            n = int(ex)
            if n == 0:
                return self.const(1.0)
            if abs(n) <= MAX_UNROLLED_POWER:
                prod = self._product([b] * abs(n))
            else:
                prod = self._call("pow", b, self.const(float(abs(n))))
            return prod if n > 0 else self._binop("fdiv", self.const(1.0), prod)
        if ex.is_Rational and ex.q == 2:
            n = int(ex.p)
            k = abs(n) // 2
            parts = [self._call("sqrt", b)]
            if k:
                parts.append(self._print_pow(base, sp.Integer(k)))
            prod = self._product(parts)
            return prod if n > 0 else self._binop("fdiv", self.const(1.0), prod)
        return self._call("pow", b, self.operand(ex))

    def _condition(self, c: sp.Basic) -> str:
        """An ``i1`` (``<width x i1>``) operand for a Piecewise condition."""
        if c is sp.true:
            return self._bool(True)
        if c is sp.false:
            return self._bool(False)
        pred = _FCMP.get(type(c))
        if pred is not None:
            a, b = self.operand(c.lhs), self.operand(c.rhs)
            out = self._fresh()
            self.lines.append(f"  {out} = fcmp {pred} {self.ty} {a}, {b}")
            return out
        if isinstance(c, (sp.And, sp.Or)):
            op = "and" if isinstance(c, sp.And) else "or"
            acc = self._condition(c.args[0])
            for a in c.args[1:]:
                nxt = self._condition(a)
                out = self._fresh()
                self.lines.append(f"  {out} = {op} {self.bty} {acc}, {nxt}")
                acc = out
            return acc
        if isinstance(c, sp.Not):
            inner = self._condition(c.args[0])
            out = self._fresh()
            self.lines.append(f"  {out} = xor {self.bty} {inner}, {self._bool(True)}")
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
            self.lines.append(f"  {out} = select {self.bty} {cond}, {self.ty} {val}, {self.ty} {acc}")
            acc = out
        return acc


def slp_instructions(
    slp: SLP, inputs: list[str], out: str, *, flags: tuple[str, ...] = (), prefix: str = "t", width: int = 1
) -> list[str]:
    """LLVM instructions evaluating ``slp`` and storing output ``i`` to ``out[i]``.

    ``inputs``: the LLVM identifiers (without ``%``) bound to ``slp.inputs`` (same order);
    ``out``: the identifier of a ``ptr``; output ``i`` is stored at element ``i`` of type
    ``double`` (``<width x double>`` in vector mode, ``align 8``).  Generated names are
    ``%<prefix>N``.
    """
    if len(inputs) != len(slp.inputs):
        raise CompileError(f"SLP has {len(slp.inputs)} inputs, {len(inputs)} LLVM names given")
    names = {n: "%" + c_identifier(c) for n, c in zip(slp.inputs, inputs)}
    out = c_identifier(out)
    printer = LLVMExprPrinter(names, flags=flags, prefix=prefix, width=width)
    for name, expr in slp.assignments:
        names[name] = printer.operand(expr)
    lines = printer.lines
    for i, o in enumerate(slp.outputs):
        if o not in names:
            raise CompileError(f"SLP output {o!r} is never assigned")
        ptr = f"%{prefix}o{i}"
        lines.append(f"  {ptr} = getelementptr inbounds {printer.ty}, ptr %{out}, i64 {i}")
        lines.append(f"  store {printer.ty} {names[o]}, ptr {ptr}, align 8")
    return lines


def slp_function(slp: SLP, name: str, inputs: list[str], *, flags: tuple[str, ...] = (), width: int = 1) -> str:
    """An internal LLVM function ``void @name(<ty> %in..., ptr %out)`` evaluating ``slp``
    (``<ty>`` is ``double``, or ``<width x double>`` in vector mode)."""
    ty = "double" if width == 1 else f"<{width} x double>"
    params = ", ".join(f"{ty} %{c_identifier(p)}" for p in inputs)
    body = "\n".join(slp_instructions(slp, inputs, "out", flags=flags, width=width))
    return f"define internal void @{c_identifier(name)}({params}, ptr noalias %out) {{\nentry:\n{body}\n  ret void\n}}\n"


__all__ = ["ALLOWED_FLAGS", "LLVMExprPrinter", "MAX_UNROLLED_POWER", "slp_function", "slp_instructions"]
