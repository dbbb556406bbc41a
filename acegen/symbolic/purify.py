"""Purified ACE bases: pair purification and the canonical cluster expansion, exactly.

acegen's one-particle basis is φ_k(r) = R_n(r) Y_lm(r̂) δ(Z_j, z) for k = (z, n, l, m), with
A_k = Σ_j φ_k(r_ij) and the self-interacting basis B = Σ_M c_M Π_t A_{k_t}
(:mod:`acegen.basis`).  This module rewrites every B of correlation order ν ≥ 2 so that

* ``kind="pair"``: B vanishes on an environment with a single neighbour, and
* ``kind="canonical"``: B = Σ_M c_M 𝒜_M with the canonical (purified) correlations
  𝒜_{k_1..k_ν} = Σ_{j_1 ≠ … ≠ j_ν} Π_t φ_{k_t}(r_{j_t}) (Dusson et al. 2022),

and expresses the change as *corrections*: ordinary products of A's of lower order whose
factors may use an extended radial index q > spec.nmax (``BasisFunction.corrections``).
Every consumer of :meth:`acegen.basis.CoupledBasis.function_terms` therefore sees the
purified basis as a plain polynomial in A, and every backend gets it for free.

Mathematics (docs/purification.md has the derivation)
-----------------------------------------------------
Inclusion–exclusion over the set partitions π of the factor positions {1..ν}:

    𝒜_{k_1..k_ν} = Σ_π μ(π) Π_{b ∈ π} A[Π_{t ∈ b} φ_{k_t}],   μ(π) = Π_b (−1)^{|b|−1} (|b|−1)!

where A[f] = Σ_j f(r_ij).  This is the closed form of the recursion
𝒜_{k_1..k_ν} = 𝒜_{k_1..k_{ν−1}} A_{k_ν} − Σ_{β<ν} Σ_κ P^κ_{k_β k_ν} 𝒜_{k_1..(k_β→κ)..k_{ν−1}}.
A block b is nonzero only if all its factors have the same species z (one neighbour has one
species).  Its product is expanded exactly in the one-particle basis:

* radial: Π_{t∈b} R_{n_t} = Σ_q ρ_q R_q.  With R_n = e(y) π_{n−1}(y) / √h_{n−1} (envelope e of
  degree d_e, monic orthogonal π_k, see :mod:`acegen.symbolic.radial`) the product is
  e · [e^{|b|−1} Π π_{n_t−1}] / √(Π h), a polynomial of degree (|b|−1) d_e + Σ (n_t − 1) times
  e, so q ≤ Σ n_t − |b| + 1 + (|b|−1) d_e and ρ_q = a_q √(h_{q−1} / Π h_{n_t−1}) with
  rational a_q;
* angular: Π_{t∈b} Y_{l_t m_t} = Σ_{LM} G Y_{LM} (real Gaunt coefficients).  They are
  computed in the *unnormalised* real harmonics U_lm = P_l^{(|m|)}(cos θ) sin^{|m|}θ ·
  (cos mφ | sin |m|φ), Y_lm = K_lm U_lm with K_lm² = (2l+1)/(4π) (l−|m|)!/(l+|m|)! (×2 for
  m ≠ 0) — the convention of :mod:`acegen.symbolic.ylm`.  Products of U's expand into U's
  with *rational* coefficients (products of trigonometric functions, and a triangular
  change of basis between polynomials in cos θ), and an invariant written in the U basis
  has coefficients (rational) × (one surd per invariant).  So the angular tensor of each
  partition, T̂_π = Σ_M ĉ_M Π_b g_b(m_b), is exact rational arithmetic; converting back to
  Y multiplies each entry by one surd Π_b 1/K_{L_b M_b}.

Pair purification keeps only the one-block partition, with coefficient 1 instead of
(−1)^{ν−1}(ν−1)!: on a single neighbour at r (species z, direction u),
B = const_B Π_t R_{n_t}(r) with const_B = Σ_M c_M Π_t Y_{l_t m_t}(u) = c_{0…0} Π_t
√((2l_t+1)/(4π)) (take u = ẑ, where Y_lm(ẑ) = δ_{m0} √((2l+1)/(4π))), and
B_pair = B − const_B √(4π) Σ_q ρ_q A_{z q 0 0} (A_{zq00} = Σ_j R_q Y_00, Y_00 = 1/√(4π)).
Functions mixing species vanish on one neighbour already and are left alone.  For ν = 2 the
pair and canonical bases coincide.

Exactness and caching: the radial coefficients (a_q, h_q) are Rationals, the Gaunt-type
coefficients and the angular tensors T̂ are Fractions, the invariants come exactly from
:func:`acegen.symbolic.coupling.invariants`; only the final coefficients become floats
(each a product of correctly rounded values of exact numbers).  The angular tensors are
cached in memory and on disk per (ls, identical-factor classes) under
``coupling.cache_dir()/purify/<sha256>.json`` (exact strings; unwritable caches are skipped).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np
import sympy as sp

from .._fs import write_atomic
from ..progress import progress_bar
from ..errors import SpecError
from . import coupling
from .radial import radial_polynomial_form
from .terms import PackedTerms

__all__ = [
    "purify",
    "purify_cartesian",
    "KINDS",
    "VERSION",
    "radial_product",
    "radial_product_exact",
    "u_product",
    "block_product",
    "set_partitions",
    "moebius",
    "angular_tensors",
    "extended_nmax",
]

#: purification kinds :func:`purify` accepts
KINDS = ("pair", "canonical")

#: Bump when the disk-cache content changes (part of the cache key).
VERSION = "acegen-purify-1"

FOUR_PI = 4.0 * math.pi

# ---------------------------------------------------------------------------------------
# exact helpers
# ---------------------------------------------------------------------------------------



def _sqrt_split(x: Fraction) -> tuple[Fraction, int]:
    """``√x = f √r`` with ``f`` rational and ``r`` a squarefree integer (x ≥ 0)."""
    if x < 0:
        raise ValueError("negative radicand")
    if x == 0:
        return Fraction(0), 1
    s, r = coupling.split_square(x.numerator * x.denominator)
    return Fraction(s, x.denominator), r


def _parse_surd(expr: sp.Expr) -> tuple[Fraction, Fraction]:
    """A sympy number ``Rational * sqrt(Rational)`` as ``(f, e)`` with value ``f √e``."""
    coeff, rest = expr.as_coeff_Mul()
    f = Fraction(int(coeff.p), int(coeff.q))
    if rest == 1:
        return f, Fraction(1)
    sq = rest**2
    if not sq.is_Rational:
        raise SpecError(f"purify: coupling coefficient {expr} is not Rational*sqrt(Rational)")
    return f, Fraction(int(sq.p), int(sq.q))


def _surd_float(f: Fraction, r: Fraction | int) -> float:
    """``float(f √r)`` to about one ulp."""
    return float(f) * math.sqrt(float(Fraction(r)))


@lru_cache(maxsize=None)
def _k2(l: int, m: int) -> Fraction:
    """``4π K_lm²`` where ``Y_lm = K_lm U_lm`` (see module docstring)."""
    a = abs(m)
    v = Fraction((2 * l + 1) * math.factorial(l - a), math.factorial(l + a))
    return 2 * v if m else v


# ---------------------------------------------------------------------------------------
# radial products
# ---------------------------------------------------------------------------------------


def _poly_mul(a, b):
    out = [Fraction(0)] * (len(a) + len(b) - 1)
    for i, x in enumerate(a):
        if x:
            for j, y in enumerate(b):
                if y:
                    out[i + j] += x * y
    return out


def _check_envelope(spec) -> tuple:
    env = tuple(spec.envelope)
    if not (len(env) == 3 and env[0] == "x"):
        raise SpecError(f"purification needs a polynomial many-body envelope ('x', pin, pcut), got {env!r}")
    return env


class _RadialAlgebra:
    """Exact products in the monic orthogonal family π_k of a many-body radial basis.

    With R_n = e π_{n−1} / √h_{n−1}, a product of radial functions is e times a polynomial;
    polynomials are kept as coefficient lists in the π basis (Fractions).  Multiplication
    by y uses the three-term recurrence y π_k = π_{k+1} + α_k π_k + β_k π_{k−1}
    (β_k = h_k / h_{k−1}), so e π_a π_b for all b follows from
    π_{b+1} = (y − α_b) π_b − β_b π_{b−1} at O(degree) cost per step.
    """

    def __init__(self, spec):
        self.spec = spec
        env = _check_envelope(spec)
        self.de = env[1] + env[2]
        self.size = 0
        self._grow(spec.nmax + spec.order * self.de + 2)
        self.rows: dict[int, list[list[Fraction]]] = {}  # a -> [e π_a π_b for b = 0, 1, ...]

    def _grow(self, n: int) -> None:
        if n <= self.size:
            return
        form = radial_polynomial_form(self.spec, 0, 0, "manybody", n)
        self.alpha = [Fraction(int(x.p), int(x.q)) for x in form.alpha]
        self.norm2 = [Fraction(int(x.p), int(x.q)) for x in form.norm2]
        self.beta = [Fraction(0)] + [self.norm2[k] / self.norm2[k - 1] for k in range(1, n)]
        self.env = [Fraction(int(c.p), int(c.q)) for c in form.envelope_coeffs]
        self.size = n

    def times_y(self, v: list[Fraction]) -> list[Fraction]:
        self._grow(len(v) + 2)
        out = [Fraction(0)] * (len(v) + 1)
        for k, c in enumerate(v):
            if c:
                out[k + 1] += c
                out[k] += self.alpha[k] * c
                if k:
                    out[k - 1] += self.beta[k] * c
        return out

    def _env_times(self, v: list[Fraction]) -> list[Fraction]:
        """e(y) · v by Horner's rule on the power coefficients of e."""
        acc = [self.env[-1] * c for c in v]
        for c in reversed(self.env[:-1]):
            acc = self.times_y(acc)
            for k, x in enumerate(v):
                acc[k] += c * x
        return acc

    def row(self, a: int, b: int) -> list[Fraction]:
        """e π_a π_b in the π basis."""
        rows = self.rows.setdefault(a, [])
        if not rows:
            rows.append(self._env_times([Fraction(0)] * a + [Fraction(1)]))
        while len(rows) <= b:
            k = len(rows) - 1  # build row k+1 = (y − α_k) row_k − β_k row_{k−1}
            self._grow(k + 2)
            nxt = self.times_y(rows[k])
            for i, c in enumerate(rows[k]):
                nxt[i] -= self.alpha[k] * c
            if k:
                for i, c in enumerate(rows[k - 1]):
                    nxt[i] -= self.beta[k] * c
            rows.append(nxt)
        return rows[b]


@lru_cache(maxsize=None)
def _algebra(spec) -> _RadialAlgebra:
    return _RadialAlgebra(spec)


@lru_cache(maxsize=None)
def _monic_chain(spec, ns: tuple[int, ...]) -> tuple[Fraction, ...]:
    """e^{ν−1} Π_t π_{n_t−1} in the π basis (ns sorted)."""
    alg = _algebra(spec)
    if len(ns) == 1:
        return tuple([Fraction(0)] * (ns[0] - 1) + [Fraction(1)])
    prev = _monic_chain(spec, ns[:-1])
    out: list[Fraction] = []
    for k, c in enumerate(prev):
        if c:
            r = alg.row(k, ns[-1] - 1)
            if len(r) > len(out):
                out += [Fraction(0)] * (len(r) - len(out))
            for i, x in enumerate(r):
                if x:
                    out[i] += c * x
    while out and out[-1] == 0:
        out.pop()
    return tuple(out)


@lru_cache(maxsize=None)
def radial_product_exact(spec, ns: tuple[int, ...]) -> tuple[tuple[int, Fraction, Fraction], ...]:
    """Π_t R_{n_t} = Σ_q a_q √(s_q) R_q exactly: returns the nonzero ``(q, a_q, s_q)``.

    R_q (q = 1, 2, ...) is the many-body radial basis of ``spec`` (envelope ('x', pin,
    pcut), :mod:`acegen.symbolic.radial`) extended as far as needed; s_q = h_{q−1} / Π_t
    h_{n_t−1}.  The same for every bond: only y(r) depends on the bond.
    """
    ns = tuple(sorted(int(n) for n in ns))
    if not ns or ns[0] < 1:
        raise SpecError(f"radial indices must be >= 1, got {ns!r}")
    alg = _algebra(spec)
    chain = _monic_chain(spec, ns)
    alg._grow(len(chain) + 1)
    hprod = math.prod(alg.norm2[n - 1] for n in ns)
    return tuple((k + 1, a, alg.norm2[k] / hprod) for k, a in enumerate(chain) if a)


@lru_cache(maxsize=None)
def radial_product(spec, ns: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Float form of :func:`radial_product_exact`: arrays ``(q, ρ_q)``."""
    ex = radial_product_exact(spec, tuple(sorted(ns)))
    q = np.array([t[0] for t in ex], dtype=np.int64)
    v = np.array([_surd_float(a, s) for _, a, s in ex], dtype=float)
    q.flags.writeable = False
    v.flags.writeable = False
    return q, v


def extended_nmax(spec, ns: tuple[int, ...]) -> int:
    """Largest q in Π_t R_{n_t} = Σ_q ρ_q R_q: Σ n_t − ν + 1 + (ν − 1) d_e."""
    env = _check_envelope(spec)
    de = env[1] + env[2]
    return sum(ns) - len(ns) + 1 + (len(ns) - 1) * de


# ---------------------------------------------------------------------------------------
# angular products in the unnormalised real harmonics U_lm (rational coefficients)
# ---------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _dlegendre(l: int, a: int) -> tuple[Fraction, ...]:
    """Ascending coefficients (in z) of d^a P_l / dz^a (P_l Legendre)."""
    c = [Fraction(0)] * (l + 1)
    for k in range(l // 2 + 1):
        c[l - 2 * k] = Fraction((-1) ** k * math.comb(l, k) * math.comb(2 * l - 2 * k, l), 2**l)
    for _ in range(a):
        c = [i * c[i] for i in range(1, len(c))] or [Fraction(0)]
    return tuple(c)


@lru_cache(maxsize=None)
def _legendre_expand(l1: int, a: int, l2: int, b: int, c: int) -> tuple[tuple[int, Fraction], ...]:
    """P_{l1}^{(a)} P_{l2}^{(b)} (1−z²)^{(a+b−c)/2} = Σ_L g_L P_L^{(c)}  (c = a+b or |a−b|)."""
    poly = _poly_mul(list(_dlegendre(l1, a)), list(_dlegendre(l2, b)))
    for _ in range((a + b - c) // 2):
        poly = _poly_mul(poly, [Fraction(1), Fraction(0), Fraction(-1)])
    out = []
    for d in range(len(poly) - 1, -1, -1):
        if poly[d] == 0:
            continue
        L = c + d
        basis = _dlegendre(L, c)
        g = poly[d] / basis[d]
        for i, x in enumerate(basis):
            poly[i] -= g * x
        out.append((L, g))
    return tuple(sorted(out))


def _trig_product(m1: int, m2: int) -> dict[int, Fraction]:
    """T_{m1} T_{m2} = Σ_M t_M T_M with T_m = cos(mφ) (m ≥ 0), sin(|m|φ) (m < 0)."""
    a, b = abs(m1), abs(m2)
    h = Fraction(1, 2)
    out: dict[int, Fraction] = {}

    def add(M: int, v: Fraction) -> None:
        if v:
            out[M] = out.get(M, Fraction(0)) + v

    if m1 >= 0 and m2 >= 0:  # cos a cos b
        add(a + b, h)
        add(abs(a - b), h)
    elif m1 < 0 and m2 < 0:  # sin a sin b
        add(abs(a - b), h)
        add(a + b, -h)
    else:  # one sine: ½ sin(a+b) ± ½ sin(a−b), sin of a negative angle flips the sign
        s, c_ = (a, b) if m1 < 0 else (b, a)  # sin s · cos c
        add(-(s + c_), h)
        d = s - c_
        if d:
            add(-abs(d), h if d > 0 else -h)
    return {M: v for M, v in out.items() if v}


@lru_cache(maxsize=None)
def u_product(l1: int, m1: int, l2: int, m2: int) -> tuple[tuple[tuple[int, int], Fraction], ...]:
    """U_{l1 m1} U_{l2 m2} = Σ_{LM} g_{LM} U_{LM} on the unit sphere, exactly (rational g)."""
    out: dict[tuple[int, int], Fraction] = {}
    for M, t in _trig_product(m1, m2).items():
        for L, g in _legendre_expand(l1, abs(m1), l2, abs(m2), abs(M)):
            key = (L, M)
            out[key] = out.get(key, Fraction(0)) + t * g
    return tuple(sorted((k, v) for k, v in out.items() if v))


@lru_cache(maxsize=None)
def block_product(lms: tuple[tuple[int, int], ...]) -> tuple[tuple[tuple[int, int], Fraction], ...]:
    """Π_t U_{l_t m_t} = Σ_{LM} g_{LM} U_{LM} (exact), by pairwise products left to right."""
    if len(lms) == 1:
        return ((tuple(lms[0]), Fraction(1)),)
    head = block_product(lms[:-1])
    l2, m2 = lms[-1]
    out: dict[tuple[int, int], Fraction] = {}
    for (L1, M1), g1 in head:
        for key, g2 in u_product(L1, M1, l2, m2):
            out[key] = out.get(key, Fraction(0)) + g1 * g2
    return tuple(sorted((k, v) for k, v in out.items() if v))


# ---------------------------------------------------------------------------------------
# set partitions
# ---------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def set_partitions(n: int) -> tuple[tuple[tuple[int, ...], ...], ...]:
    """All set partitions of {0..n−1}; blocks ascending, ordered by their first element."""
    if n == 0:
        return ((),)
    out = []
    for p in set_partitions(n - 1):
        out.append(p + ((n - 1,),))
        for i in range(len(p)):
            out.append(p[:i] + (p[i] + (n - 1,),) + p[i + 1 :])
    return tuple(tuple(sorted(p)) for p in out)


def moebius(partition) -> int:
    """μ(0̂, π) = Π_b (−1)^{|b|−1} (|b|−1)! on the lattice of set partitions."""
    return math.prod((-1) ** (len(b) - 1) * math.factorial(len(b) - 1) for b in partition)


def _blocks_of_classes(classes: tuple[int, ...]) -> list[tuple[int, int]]:
    out, start = [], 0
    for t in range(1, len(classes) + 1):
        if t == len(classes) or classes[t] != classes[start]:
            out.append((start, t))
            start = t
    return out


@lru_cache(maxsize=None)
def _partition_orbits(classes: tuple[int, ...]) -> tuple[tuple[tuple[tuple[int, ...], ...], int], ...]:
    """Representatives of the non-trivial set partitions modulo permutations of identical
    factors, with their orbit sizes.  Identical factors make partitions in one orbit give
    the same polynomial in A (the couplings are symmetric under those permutations)."""
    nu = len(classes)
    ranges = _blocks_of_classes(classes)
    perms = []
    for choice in itertools.product(*[itertools.permutations(range(a, b)) for a, b in ranges]):
        perm = [0] * nu
        for (a, b), pr in zip(ranges, choice):
            for i, t in enumerate(range(a, b)):
                perm[t] = pr[i]
        perms.append(perm)
    counts: dict = {}
    for p in set_partitions(nu):
        if all(len(b) == 1 for b in p):
            continue
        canon = min(tuple(sorted(tuple(sorted(perm[t] for t in b)) for b in p)) for perm in perms)
        counts[canon] = counts.get(canon, 0) + 1
    return tuple(sorted(counts.items(), key=lambda kv: (len(kv[0]), kv[0])))


# ---------------------------------------------------------------------------------------
# invariants in the U basis and angular tensors
# ---------------------------------------------------------------------------------------


def _unfold(mt: tuple[int, ...], ranges) -> list[tuple[int, ...]]:
    """All distinct permutations of a canonical m-tuple inside blocks of identical factors."""
    parts = []
    for a, b in ranges:
        seg = mt[a:b]
        parts.append(sorted(set(itertools.permutations(seg))) if b - a > 1 else [seg])
    return [sum(c, ()) for c in itertools.product(*parts)]


def _u_invariant(ls, ranges, inv: dict) -> dict[int, dict[tuple[int, ...], Fraction]]:
    """ĉ: B = (4π)^{−ν/2} Σ_r √r Σ_M ĉ_r[M] Π_t U_{l_t m_t} over *full* m-tuples M."""
    out: dict[int, dict[tuple[int, ...], Fraction]] = {}
    for mt, val in inv.items():
        f, e = _parse_surd(val)
        full = _unfold(tuple(mt), ranges)
        rad = e * math.prod(_k2(l, m) for l, m in zip(ls, mt))
        s, r = _sqrt_split(rad)
        v = f * s / len(full)
        d = out.setdefault(r, {})
        for M in full:
            d[M] = v
    return out


def _lcm(xs) -> int:
    out = 1
    for x in xs:
        out = out * x // math.gcd(out, x)
    return out


def _angular_tensor(ls, uinv, partition) -> list[tuple[tuple, int, Fraction]]:
    """T̂_π = Σ_M ĉ_M Π_b g_b(m_b): entries (coarse key ((L_b, M_b) per block), r, value).

    Exact: rationals are brought to common denominators (one for ĉ, one per block) so the
    inner loop runs on Python integers."""
    out: list[tuple[tuple, int, Fraction]] = []
    for r, vec in uinv.items():
        dc = _lcm(v.denominator for v in vec.values())
        # per block: the expansions of every m-subtuple that occurs, on one denominator
        emaps, dens = [], []
        for b in partition:
            subs = {tuple(M[t] for t in b) for M in vec}
            if len(b) == 1:
                emaps.append({m: (((ls[b[0]], m[0]), 1),) for m in subs})
                dens.append(1)
                continue
            exps = {m: block_product(tuple((ls[t], mm) for t, mm in zip(b, m))) for m in subs}
            d = _lcm(g.denominator for e in exps.values() for _, g in e)
            emaps.append({m: tuple((k, g.numerator * (d // g.denominator)) for k, g in e) for m, e in exps.items()})
            dens.append(d)
        acc: dict[tuple, int] = {}
        for M, c in vec.items():
            ci = c.numerator * (dc // c.denominator)
            parts = [emap[tuple(M[t] for t in b)] for emap, b in zip(emaps, partition)]
            for combo in itertools.product(*parts):
                g = ci
                for _, gv in combo:
                    g *= gv
                if g:
                    key = tuple(k for k, _ in combo)
                    acc[key] = acc.get(key, 0) + g
        den = dc * math.prod(dens)
        out += [(key, r, Fraction(v, den)) for key, v in acc.items() if v]
    return out


def _cache_file(ls, classes) -> Path:
    key = json.dumps([list(ls), list(classes), VERSION, coupling.VERSION])
    return coupling.cache_dir() / "purify" / (hashlib.sha256(key.encode()).hexdigest() + ".json")


def _exact_tensors(ls: tuple[int, ...], classes: tuple[int, ...]):
    """Exact angular tensors of every invariant and every partition representative.

    Returns ``[[(partition, weight, entries), ...] per invariant]`` with ``entries`` as
    in :func:`_angular_tensor`.  Disk-cached as JSON of exact strings."""
    path = _cache_file(ls, classes)
    try:
        d = json.loads(path.read_text())
        if d.get("version") == VERSION and d.get("ls") == list(ls) and d.get("classes") == list(classes):
            return [
                [
                    (tuple(tuple(b) for b in p), w,
                     [(tuple(tuple(k) for k in key), r, Fraction(v)) for key, r, v in ents])
                    for p, w, ents in inv
                ]
                for inv in d["invariants"]
            ]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    ranges = _blocks_of_classes(classes)
    orbits = _partition_orbits(classes)
    out = []
    for inv in coupling.invariants(ls, classes):
        uinv = _u_invariant(ls, ranges, inv)
        out.append([(p, w, _angular_tensor(ls, uinv, p)) for p, w in orbits])
    text = json.dumps(
        {
            "version": VERSION,
            "ls": list(ls),
            "classes": list(classes),
            "invariants": [
                [[[list(b) for b in p], w, [[[list(k) for k in key], r, str(v)] for key, r, v in ents]]
                 for p, w, ents in inv]
                for inv in out
            ],
        },
        separators=(",", ":"),
    )
    write_atomic(path, lambda fh: fh.write(text), suffix=".json")
    return out


@lru_cache(maxsize=None)
def angular_tensors(ls: tuple[int, ...], classes: tuple[int, ...]):
    """Float angular tensors in the Y basis, per invariant of ``coupling.invariants(ls, classes)``.

    Returns a tuple (one per invariant) of tuples ``(partition, weight, L, M, values,
    lmkey)`` for every non-trivial partition representative: ``weight`` its orbit size
    under permutations of identical factors, ``L``/``M`` int arrays (K, nblocks),
    ``values`` (K,) floats with

        Σ_M c_M Π_{b∈π} [Π_{t∈b} Y_{l_t m_t}] = Σ_k values[k] Π_b Y_{L[k,b] M[k,b]}

    (blocks of π in order), and ``lmkey = L * _MB + M + _MOFF`` (the (L, M) part of the
    composite factor keys of :func:`_assemble`).  Exact entries (:func:`_exact_tensors`)
    times one surd each.
    """
    ls = tuple(int(l) for l in ls)
    classes = tuple(classes)
    nu = len(ls)
    res = []
    for inv in _exact_tensors(ls, classes):
        per = []
        for p, w, ents in inv:
            nb = len(p)
            L = np.zeros((len(ents), nb), dtype=np.int64)
            M = np.zeros((len(ents), nb), dtype=np.int64)
            vals = np.zeros(len(ents))
            pi_pow = FOUR_PI ** (-(nu - nb) / 2)
            for i, (key, r, v) in enumerate(ents):
                kprod = math.prod(_k2(Lb, Mb) for Lb, Mb in key)
                L[i] = [k[0] for k in key]
                M[i] = [k[1] for k in key]
                vals[i] = _surd_float(v, Fraction(r) / kprod) * pi_pow
            lmkey = L * _MB + M + _MOFF
            for arr in (L, M, vals, lmkey):
                arr.flags.writeable = False
            per.append((p, w, L, M, vals, lmkey))
        res.append(tuple(per))
    return tuple(res)


# ---------------------------------------------------------------------------------------
# the basis transformation
# ---------------------------------------------------------------------------------------


def _classes(ms) -> tuple[int, ...]:
    cl: list[int] = []
    for t, f in enumerate(ms):
        cl.append(cl[t - 1] if t > 0 and ms[t - 1] == f else t)
    return tuple(cl)


@lru_cache(maxsize=None)
def _zero_coefficient(ls: tuple[int, ...], classes: tuple[int, ...]) -> tuple[tuple[Fraction, Fraction], ...]:
    """Per invariant, (f, e) with const_B = f √e (4π)^{−ν/2}: the value of the invariant's
    angular part on ν equal directions (c_{0…0} Π √(2l+1), exact)."""
    out = []
    zero = (0,) * len(ls)
    for inv in coupling.invariants(ls, classes):
        val = inv.get(zero)
        if val is None or val == 0:
            out.append((Fraction(0), Fraction(1)))
            continue
        f, e = _parse_surd(val)
        out.append((f, e * math.prod(2 * l + 1 for l in ls)))
    return tuple(out)


# composite key of one factor of a correction: ((z * _QB + q) * _LB + L) * _MB + (M + _MOFF)
_QB, _LB, _MB, _MOFF = 1 << 12, 1 << 7, 1 << 8, 1 << 7


def _group_rows(fk: np.ndarray, mk: np.ndarray, coef: np.ndarray):
    """Sum duplicate rows (fk, mk) and sort them with the factor tuple fk as the major key.

    Returns (fk, mk, coef) of the distinct rows with nonzero sum."""
    nb = fk.shape[1]
    uf, frank = np.unique(fk, return_inverse=True)
    frank = frank.reshape(fk.shape)
    mmin = int(mk.min())
    mr = int(mk.max()) - mmin + 1
    fr = len(uf)
    if (fr * mr) ** nb < (1 << 62):
        key = np.zeros(len(fk), dtype=np.int64)
        for t in range(nb):
            key = key * fr + frank[:, t]
        for t in range(nb):
            key = key * mr + (mk[:, t] - mmin)
        ukey, inv = np.unique(key, return_inverse=True)
        acc = np.bincount(inv.ravel(), weights=coef, minlength=len(ukey))
        keep = acc != 0.0
        ukey, acc = ukey[keep], acc[keep]
        m_out = np.empty((len(ukey), nb), dtype=np.int64)
        f_out = np.empty((len(ukey), nb), dtype=np.int64)
        rest = ukey
        for t in reversed(range(nb)):
            m_out[:, t] = rest % mr + mmin
            rest = rest // mr
        for t in reversed(range(nb)):
            f_out[:, t] = uf[rest % fr]
            rest = rest // fr
        return f_out, m_out, acc
    order = np.lexsort(tuple(mk[:, t] for t in reversed(range(nb))) + tuple(fk[:, t] for t in reversed(range(nb))))
    fk, mk, coef = fk[order], mk[order], coef[order]
    new = np.ones(len(fk), dtype=bool)
    new[1:] = np.any((fk[1:] != fk[:-1]) | (mk[1:] != mk[:-1]), axis=1)
    starts = np.flatnonzero(new)
    acc = np.add.reduceat(coef, starts)
    keep = acc != 0.0
    return fk[starts][keep], mk[starts][keep], acc[keep]


def _assemble(chunks: list[tuple[np.ndarray, np.ndarray]]):
    """Turn rows of composite factor keys (R, nb) with coefficients (R,) into packed
    correction entries ``(factors, mtuples, coeffs)``: factors sorted, m's sorted inside runs
    of identical factors, duplicates summed, exact zeros dropped; entries ordered by
    (number of factors, factors)."""
    by_nb: dict[int, list] = {}
    for keys, coef in chunks:
        by_nb.setdefault(keys.shape[1], []).append((keys, coef))
    facs, mts, cs, nfac, nrow = [], [], [], [], []
    for nb in sorted(by_nb):
        keys = np.sort(np.concatenate([k for k, _ in by_nb[nb]]), axis=1)
        coef = np.concatenate([c for _, c in by_nb[nb]])
        fk, mk, coef = _group_rows(keys // _MB, keys % _MB - _MOFF, coef)
        if len(coef) == 0:
            continue
        newf = np.ones(len(fk), dtype=bool)
        newf[1:] = np.any(fk[1:] != fk[:-1], axis=1)
        starts = np.flatnonzero(newf)
        firsts = fk[starts]  # (E, nb)
        facs.append(np.stack([firsts // (_QB * _LB), firsts // _LB % _QB, firsts % _LB], axis=2).reshape(-1, 3))
        mts.append(mk.ravel())
        cs.append(coef)
        nfac.append(np.full(len(starts), nb))
        nrow.append(np.diff(np.append(starts, len(fk))))
    return _pack(facs, mts, cs, nfac, nrow)


def _pack(facs, mts, cs, nfac, nrow):
    if not facs:
        return ()
    nfac, nrow = np.concatenate(nfac), np.concatenate(nrow)
    zero = np.zeros(1, dtype=np.int64)
    return PackedTerms(np.concatenate(facs), np.concatenate([zero, np.cumsum(nfac)]), np.concatenate(mts),
                       np.concatenate([zero, np.cumsum(nfac * nrow)]), np.concatenate(cs),
                       np.concatenate([zero, np.cumsum(nrow)]))


def _pair_corrections(spec, ms, index):
    """−const_B √(4π) Σ_q ρ_q A_{z q 0 0} for same-species functions of order ≥ 2."""
    nu = len(ms)
    if nu < 2 or len({z for z, _, _ in ms}) != 1:
        return ()
    ls = tuple(l for _, _, l in ms)
    f, e = _zero_coefficient(ls, _classes(ms))[index]
    if f == 0:
        return ()
    const = _surd_float(f, e) * FOUR_PI ** (-(nu - 1) / 2)  # const_B · √(4π)
    q, rho = radial_product(spec, tuple(n for _, n, _ in ms))
    ne = len(q)
    fac = np.stack([np.full(ne, ms[0][0]), q, np.zeros(ne, dtype=np.int64)], axis=1)
    ones = np.ones(ne, dtype=np.int64)
    return _pack([fac], [np.zeros(ne, dtype=np.int64)], [-const * rho], [ones], [ones])


def _canonical_corrections(spec, ms, index) -> tuple:
    """Σ_{π non-trivial} μ(π) Π_b A[Π_{t∈b} φ_{k_t}], coupled with the function's c_M."""
    nu = len(ms)
    if nu < 2:
        return ()
    ls = tuple(l for _, _, l in ms)
    tensors = angular_tensors(ls, _classes(ms))[index]
    chunks = []
    for p, w, L, M, vals, lmkey in tensors:
        zs = [{ms[t][0] for t in b} for b in p]
        if any(len(s) != 1 for s in zs) or len(vals) == 0:
            continue
        # cartesian product over blocks of (factor offset of z and q, radial coefficient)
        offs = np.zeros((1, 0), dtype=np.int64)
        rcomb = np.full(1, float(moebius(p) * w))
        for b, zb in zip(p, zs):
            if len(b) == 1:
                q, rho = np.array([ms[b[0]][1]], dtype=np.int64), np.ones(1)
            else:
                q, rho = radial_product(spec, tuple(ms[t][1] for t in b))
            o = (next(iter(zb)) * _QB + q) * (_LB * _MB)
            offs = np.concatenate([np.repeat(offs, len(o), axis=0), np.tile(o, len(offs))[:, None]], axis=1)
            rcomb = np.repeat(rcomb, len(o)) * np.tile(rho, len(rcomb))
        keys = (offs[:, None, :] + lmkey[None, :, :]).reshape(-1, len(p))
        chunks.append((keys, np.outer(rcomb, vals).ravel()))
    return _assemble(chunks) if chunks else ()


def purify(basis, kind: str, *, progress: bool | None = None):
    """The ``kind`` ('pair' or 'canonical') purification of a self-interacting CoupledBasis.

    Returns a new :class:`~acegen.basis.CoupledBasis` with the same functions (same order,
    factors, couplings and hence the same smoothness prior) whose ``corrections`` hold the
    lower-order product terms, ``nmax`` extended to the largest radial index any correction
    uses and ``lmax`` to the largest l.  The pair basis is unchanged.
    """
    if kind not in KINDS:
        raise SpecError(f"purification must be one of {list(KINDS)}, got {kind!r}")
    _check_envelope(basis.spec)
    if any(len(f.corrections) for f in basis.functions):
        raise SpecError("purify: the basis is already purified")
    make = _pair_corrections if kind == "pair" else _canonical_corrections
    cache: dict = {}
    funcs = basis.functions
    iterator = progress_bar(funcs, f"purify ({kind})", "function", progress)
    new = []
    nmax, lmax = basis.nmax, basis.lmax
    for f in iterator:
        key = (f.factors, f.index)
        corr = cache.get(key)
        if corr is None:
            corr = make(basis.spec, f.factors, f.index)
            cache[key] = corr
            if len(corr):
                nmax = max(nmax, int(corr.factors[:, 1].max()))
                lmax = max(lmax, int(corr.factors[:, 2].max()))
        new.append(dataclasses.replace(f, corrections=corr))
    return dataclasses.replace(basis, functions=tuple(new), lmax=lmax, nmax=nmax, _cache={})


# ---------------------------------------------------------------------------------------
# Cartesian bases (acegen.symbolic.cartesian)
# ---------------------------------------------------------------------------------------


def _cartesian_pair_corrections(spec, f):
    """−const_B Σ_q ρ_q A_{z q (000)} for a same-species Cartesian function of order >= 2.

    On one neighbour at r (direction u) every factor is R_{n_t}(r) u^{⊗l_t}, so
    B = const_B Π_t R_{n_t}(r) with const_B = Σ_M c_M Π_t u^{α_t} the contraction evaluated
    on ν copies of u: a rotation invariant, read off at u = ẑ (only α_t = (0, 0, l_t) is
    nonzero there, with value 1).  A loopless full contraction gives (u·u)^e per edge, so
    const_B = 1; it is computed, not assumed.  The angular function of degree 0 is 1 (not
    Y_00 = 1/√(4π)), so no √(4π) appears."""
    from .cartesian import n_alpha

    ms = f.factors
    nu = len(ms)
    if nu < 2 or len({z for z, _, _ in ms}) != 1:
        return ()
    top = np.array([n_alpha(l) - 1 for _, _, l in ms], dtype=np.int64)  # α = (0, 0, l)
    const = float(np.asarray(f.coeffs)[np.all(np.asarray(f.mtuples) == top[None, :], axis=1)].sum())
    if const == 0.0:
        return ()
    q, rho = radial_product(spec, tuple(n for _, n, _ in ms))
    ne = len(q)
    fac = np.stack([np.full(ne, ms[0][0]), q, np.zeros(ne, dtype=np.int64)], axis=1)
    ones = np.ones(ne, dtype=np.int64)
    return _pack([fac], [np.zeros(ne, dtype=np.int64)], [-const * rho], [ones], [ones])


def purify_cartesian(basis, kind: str):
    """The pair purification of a Cartesian basis (:class:`acegen.basis.CartesianBasis`):
    every function of order ν >= 2 on one species minus its value on a single neighbour,
    re-expanded in the extended radial basis (:func:`_cartesian_pair_corrections`), so it
    vanishes on any environment with one neighbour.  The map B ↦ B − B|one neighbour is
    linear, and each Cartesian function is a fixed linear combination of spherical functions,
    so the purified Cartesian basis spans the pair-purified spherical one.

    ``kind="canonical"`` is refused: the canonical correlations would need the products of
    several factors of one block, r̂^{α_1} ⋯ r̂^{α_k} = r̂^{α_1+…+α_k}, with their radial
    products, for every term of every contraction and every set partition; not implemented."""
    if kind != "pair":
        raise SpecError(f"purification={kind!r} is not available for Cartesian bases; use 'pair' or 'none'")
    _check_envelope(basis.spec)
    new, cache = [], {}
    nmax = basis.nmax
    for f in basis.functions:
        key = (f.factors, f.index)
        corr = cache.get(key)
        if corr is None:
            corr = cache[key] = _cartesian_pair_corrections(basis.spec, f)
            if len(corr):
                nmax = max(nmax, int(corr.factors[:, 1].max()))
        new.append(dataclasses.replace(f, corrections=corr))
    return dataclasses.replace(basis, functions=tuple(new), nmax=nmax, _cache={})
