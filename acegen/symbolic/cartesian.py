"""Cartesian rotation invariants: full tensor contractions of Cartesian monomials.

The one-particle angular functions are the monomials of the bond direction

    r̂^α = r̂_x^{α_x} r̂_y^{α_y} r̂_z^{α_z},   |α| = l,

and ``A[z, n, α] = Σ_{j: Z_j = z} R_n(r_ij) r̂_ij^α`` is, for fixed (z, n, l), the symmetric
rank-l tensor ``Σ_j R_n r̂_j ⊗ ... ⊗ r̂_j`` written by its independent entries.  An O(3)
invariant of a product of ν such tensors (ranks l_1..l_ν) is a *full contraction*: the Σl
tensor indices are paired by Kronecker deltas.  Since each factor is symmetric, a
contraction is a loopless multigraph on the ν factors (``e_st`` indices shared by factors s
and t, node t of degree l_t), and

    I_e = Σ_{γ_st, |γ_st| = e_st} Π_{s<t} m(γ_st) Π_t A_t[Σ_s γ_st],   m(γ) = |γ|!/(γ_x! γ_y! γ_z!)

with exact integer coefficients (no surds).  Contractions *within* a factor (loops) are left
out: on the unit sphere ``Σ_a r̂_a r̂_a = 1``, so a loop turns the rank-l factor into the
rank-(l-2) factor of the same (z, n), and the contraction into one of a multiset with a
lower degree, which the selection holds already.

Two families, both over the multisets of :func:`acegen.symbolic.selection.select_multisets`:

* ``cartesian``: every loopless contraction of every selected multiset, reduced to a linearly
  independent set.  Contractions of a multiset M span the spherical invariants of M *and* of
  the multisets obtained from M by lowering some l_t by even amounts (the traces of the
  symmetric tensors); those are selected too (lower degree) and come first.  Multisets are
  therefore processed in groups with the same (z, n, l mod 2) factors, in increasing Σl, and
  a contraction is kept when it is independent of those kept before.  Exactly
  ``coupling.count_invariants`` functions are kept per multiset (checked), so the basis has
  the length and the span of the spherical one.
* ``cace``: the tensor-decomposed family of Cheng (2024) — the same radial index n in every
  factor and chain-shaped contractions: ν=1 A_(000); ν=2 Σ m(α) A_α A_α; ν=3
  Σ m(α) m(β) A_α A_β A_{α+β}; ν=4 Σ m(α) m(β) m(δ) A_α A_β A_{α+δ} A_{β+δ} (edge weights
  l1, l2, δ ≥ 0; a zero weight gives a product of lower-order invariants), reduced to an
  independent set the same way.  It spans a subspace of the spherical basis.

Linear independence is decided by exact arithmetic: every candidate is evaluated on random
environments with *rational* unit vectors (stereographic points) and random integer radial
values, exactly, modulo the prime 2^31 - 1; the kept columns have a nonzero minor mod p, hence
over ℚ, so they are independent functions; for ``cartesian`` their number equals the
dimension of the spherical invariants of the multiset, an upper bound, so they also span.

α ordering inside a degree block (the "m index" of a Cartesian factor): α_x descending, then
α_y descending (``alphas(2)`` = xx, xy, xz, yy, yz, zz); the flat index of α over all degrees
≤ lmax is ``l (l+1) (l+2) / 6 + alpha_index(α)``.

Results are cached on disk under ``cache_root()/cartesian`` (JSON, atomic writes).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from .._fs import cache_root, write_atomic
from ..errors import InternalError, SpecError
from . import coupling

__all__ = [
    "KINDS", "VERSION", "alphas", "alpha_index", "n_alpha", "n_cartesian", "block_offset",
    "multinomial", "contractions", "contraction_terms", "chain_contractions", "CartesianFunction", "cartesian_functions",
    "monomial_slp",
]

VERSION = "acegen-cartesian-1"
KINDS = ("cartesian", "cace")
_P = 2_147_483_647  # 2^31 - 1: products of two residues fit in int64


# ------------------------------------------------------------------------------ monomials
@lru_cache(maxsize=None)
def alphas(l: int) -> tuple[tuple[int, int, int], ...]:
    """The multi-indices α with |α| = l, in acegen's order (α_x, then α_y descending)."""
    return tuple((ax, ay, l - ax - ay) for ax in range(l, -1, -1) for ay in range(l - ax, -1, -1))


@lru_cache(maxsize=None)
def _alpha_lookup(l: int) -> dict:
    return {a: k for k, a in enumerate(alphas(l))}


def alpha_index(alpha) -> int:
    """Position of α in ``alphas(|α|)``."""
    a = tuple(int(x) for x in alpha)
    return _alpha_lookup(sum(a))[a]


def n_alpha(l: int) -> int:
    """Number of monomials of degree exactly l: (l+1)(l+2)/2."""
    return (l + 1) * (l + 2) // 2


def block_offset(l: int) -> int:
    """Flat index of the first monomial of degree l: l(l+1)(l+2)/6."""
    return l * (l + 1) * (l + 2) // 6


def n_cartesian(lmax: int) -> int:
    """Number of monomials of degree <= lmax: (lmax+1)(lmax+2)(lmax+3)/6."""
    return block_offset(lmax + 1)


def multinomial(alpha) -> int:
    """m(α) = |α|! / (α_x! α_y! α_z!)."""
    return math.factorial(sum(alpha)) // math.prod(math.factorial(a) for a in alpha)


@lru_cache(maxsize=None)
def monomial_slp(lmax: int, prefix: str = "cart"):
    """The angular SLP of a Cartesian model: inputs ``("x", "y", "z")``, outputs every
    monomial ``x^a y^b z^c`` (a + b + c <= lmax, flat index ``block_offset(l) +
    alpha_index(α)``), then its ``∂/∂x``, ``∂/∂y``, ``∂/∂z`` (``4 n_cartesian(lmax)`` outputs
    named ``{prefix}_Y{i}``, ``{prefix}_dx{i}``, ...), the layout of
    :func:`acegen.symbolic.ylm.ylm_slp`.  The monomials are homogeneous polynomials of the
    unit vector (like Y_lm's P_lm), so a kernel turns their Euclidean gradients into the
    gradient of ``(r/|r|)^α`` by the same projection ``(I - r̂ r̂ᵀ) ∇P / |r|``.

    Each monomial of degree l is one multiplication of a degree l-1 monomial (by x when
    α_x > 0, else by y, else z); each derivative ``α_b u^(α - e_b)`` is an integer times a
    lower monomial, so there are no derivative intermediates."""
    import sympy as sp

    from ..ir.slp import SLPBuilder

    if not isinstance(lmax, int) or lmax < 0:
        raise SpecError(f"lmax must be a non-negative integer, got {lmax!r}")
    b = SLPBuilder(inputs=("x", "y", "z"), prefix=f"{prefix}_t")
    var = [b.input("x"), b.input("y"), b.input("z")]
    mono: dict[tuple[int, int, int], sp.Expr] = {(0, 0, 0): sp.Integer(1)}
    for l in range(1, lmax + 1):
        for a in alphas(l):
            c = next(k for k in range(3) if a[k] > 0)
            parent = tuple(a[k] - (k == c) for k in range(3))
            mono[a] = b.assign(mono[parent] * var[c], derivs=False)
    order = [a for l in range(lmax + 1) for a in alphas(l)]
    n = len(order)
    b.output([mono[a] for a in order], [f"{prefix}_Y{i}" for i in range(n)])
    for k, w in enumerate("xyz"):
        ders = []
        for a in order:
            if a[k] == 0:
                ders.append(sp.Integer(0))
                continue
            lower = tuple(a[q] - (q == k) for q in range(3))
            ders.append(sp.Integer(a[k]) * mono[lower])
        b.output(ders, [f"{prefix}_d{w}{i}" for i in range(n)])
    return b.build()


# ---------------------------------------------------------------------------- contractions
Graph = tuple[tuple[int, int, int], ...]  # sorted ((s, t, e_st) with s < t, e_st > 0)


def _blocks(classes) -> list[list[int]]:
    out: dict[int, list[int]] = {}
    for t, c in enumerate(classes):
        out.setdefault(c, []).append(t)
    return list(out.values())


def _canonical(edges: dict, classes) -> Graph:
    """The smallest relabelling of a multigraph under permutations of identical factors."""
    blocks = _blocks(classes)
    best = None
    for perms in itertools.product(*(itertools.permutations(b) for b in blocks)):
        sigma = {}
        for b, p in zip(blocks, perms):
            sigma.update(zip(b, p))
        g = tuple(sorted((min(sigma[s], sigma[t]), max(sigma[s], sigma[t]), e) for (s, t), e in edges.items() if e))
        if best is None or g < best:
            best = g
    return best


def contractions(ls, classes=None) -> list[Graph]:
    """All loopless full contractions of factors of ranks ``ls`` (multigraphs with node
    degrees ``ls``), one per class of multigraphs related by permuting identical factors
    (``classes[t] == classes[s]``), in a deterministic order."""
    ls = tuple(int(l) for l in ls)
    classes = tuple(range(len(ls))) if classes is None else tuple(classes)
    nu = len(ls)
    if sum(ls) % 2:
        return []
    pairs = [(s, t) for s in range(nu) for t in range(s + 1, nu)]
    seen: dict[Graph, None] = {}
    rem = list(ls)
    edges: dict = {}

    def rec(k: int) -> None:
        if k == len(pairs):
            if not any(rem):
                seen.setdefault(_canonical(edges, classes), None)
            return
        s, t = pairs[k]
        # the last pair touching s must use up its remaining degree
        last_s = all(p[0] != s and p[1] != s for p in pairs[k + 1 :])
        lo = rem[s] if last_s else 0
        for e in range(lo, min(rem[s], rem[t]) + 1):
            rem[s] -= e
            rem[t] -= e
            edges[(s, t)] = e
            rec(k + 1)
            rem[s] += e
            rem[t] += e
        edges.pop((s, t), None)

    if nu == 1:
        return [()] if ls[0] == 0 else []
    rec(0)
    return sorted(seen)


def chain_contractions(ls) -> list[Graph]:
    """CACE's tensor-decomposed contractions of factors of ranks ``ls`` (ν <= 4): chains
    p_1 - p_2 (- p_3 (- p_4)) with edge weights >= 0 matching the ranks (see module doc)."""
    ls = tuple(int(l) for l in ls)
    nu = len(ls)
    out = set()
    if nu == 1:
        return [()] if ls[0] == 0 else []
    if nu > 4:
        return []
    for perm in itertools.permutations(range(nu)):
        deg = [ls[p] for p in perm]
        # chain edges w_1..w_{ν-1}: deg[0] = w_1, deg[k] = w_k + w_{k+1}, deg[-1] = w_{ν-1}
        w = [deg[0]]
        for k in range(1, nu - 1):
            w.append(deg[k] - w[-1])
        if any(x < 0 for x in w) or w[-1] != deg[-1]:
            continue
        edges = {}
        for k, e in enumerate(w):
            s, t = sorted((perm[k], perm[k + 1]))
            edges[(s, t)] = edges.get((s, t), 0) + e
        out.add(tuple(sorted((s, t, e) for (s, t), e in edges.items() if e)))
    return sorted(out)


@lru_cache(maxsize=None)
def _compositions(e: int) -> tuple[tuple[tuple[int, int, int], int], ...]:
    return tuple((a, multinomial(a)) for a in alphas(e))


def contraction_terms(ls, graph: Graph, classes=None) -> dict[tuple[int, ...], int]:
    """The contraction ``graph`` of factors of ranks ``ls`` as {α-index tuple: integer
    coefficient}: I = Σ c · Π_t A_t[alphas(l_t)[idx_t]].  With ``classes`` the α indices of
    identical factors are sorted and equal products merged."""
    ls = tuple(int(l) for l in ls)
    nu = len(ls)
    out: dict[tuple[int, ...], int] = {}
    blocks = _blocks(classes) if classes is not None else [[t] for t in range(nu)]
    for choice in itertools.product(*(_compositions(e) for _, _, e in graph)):
        acc = [[0, 0, 0] for _ in range(nu)]
        c = 1
        for (s, t, _), (g, m) in zip(graph, choice):
            c *= m
            for a in range(3):
                acc[s][a] += g[a]
                acc[t][a] += g[a]
        idx = [alpha_index(a) for a in acc]
        for b in blocks:
            if len(b) > 1:
                for t, v in zip(b, sorted(idx[t] for t in b)):
                    idx[t] = v
        key = tuple(idx)
        out[key] = out.get(key, 0) + c
    return {k: v for k, v in out.items() if v}


# -------------------------------------------------------------- exact independence (mod p)
def _sphere_points(rng, k: int) -> np.ndarray:
    """k rational unit vectors mod p (stereographic: (2ac, 2bc, a²+b²-c²)/(a²+b²+c²))."""
    a, b, c = (rng.integers(-60, 61, size=k) for _ in range(3))
    c = np.where((a == 0) & (b == 0) & (c == 0), 1, c)
    s = a * a + b * b + c * c
    inv = np.array([pow(int(x), _P - 2, _P) for x in s], dtype=np.int64)
    num = np.stack([2 * a * c, 2 * b * c, a * a + b * b - c * c], axis=1) % _P
    return num * inv[:, None] % _P


def _monomials_mod(u: np.ndarray, lmax: int) -> list[np.ndarray]:
    """Per degree l: (k, n_alpha(l)) residues of u^α."""
    k = len(u)
    pw = np.ones((lmax + 1, k, 3), dtype=np.int64)
    for e in range(1, lmax + 1):
        pw[e] = pw[e - 1] * u % _P
    out = []
    for l in range(lmax + 1):
        cols = [pw[a[0], :, 0] * pw[a[1], :, 1] % _P * pw[a[2], :, 2] % _P for a in alphas(l)]
        out.append(np.stack(cols, axis=1))
    return out


def _environments(rng, keys, lmax: int, rows: int, nneigh: int) -> dict:
    """Exact A[(z, n)][l] (rows, n_alpha(l)) residues for random environments: for each
    species z, ``nneigh`` neighbours with rational directions and random integer R_n."""
    species = sorted({z for z, _ in keys})
    out = {}
    for z in species:
        u = _sphere_points(rng, rows * nneigh)
        mono = _monomials_mod(u, lmax)
        for zz, n in keys:
            if zz != z:
                continue
            w = rng.integers(1, 1000, size=(rows, nneigh))
            per_l = []
            for m in mono:
                m = m.reshape(rows, nneigh, -1)
                acc = np.zeros((rows, m.shape[2]), dtype=np.int64)
                for j in range(nneigh):
                    acc = (acc + w[:, j, None] * m[:, j, :]) % _P
                per_l.append(acc)
            out[(z, n)] = per_l
    return out


def _evaluate_mod(factors, terms: dict, env: dict, rows: int) -> np.ndarray:
    vals = np.zeros(rows, dtype=np.int64)
    if not terms:
        return vals
    idx = np.array(list(terms), dtype=np.int64).reshape(len(terms), len(factors))
    coef = np.array([c % _P for c in terms.values()], dtype=np.int64)
    prod = np.ones((rows, len(terms)), dtype=np.int64)
    for t, (z, n, l) in enumerate(factors):
        prod = prod * env[(z, n)][l][:, idx[:, t]] % _P
    prod = prod * coef[None, :] % _P
    return (prod.sum(axis=1) % _P).astype(np.int64)


class _Echelon:
    """Incremental Gaussian elimination of vectors mod p."""

    def __init__(self):
        self.rows: list[tuple[int, np.ndarray]] = []

    def add(self, v: np.ndarray) -> bool:
        v = v.copy() % _P
        for piv, b in self.rows:
            if v[piv]:
                v = (v - v[piv] * b) % _P
        nz = np.flatnonzero(v)
        if len(nz) == 0:
            return False
        piv = int(nz[0])
        v = v * pow(int(v[piv]), _P - 2, _P) % _P
        self.rows.append((piv, v))
        return True


# ---------------------------------------------------------------------------- the basis
class CartesianFunction(tuple):
    """(factors, graph, terms): a contraction of the (z, n, l) ``factors``; ``terms`` maps
    α-index tuples to integer coefficients (see :func:`contraction_terms`)."""

    __slots__ = ()

    def __new__(cls, factors, graph, terms):
        return super().__new__(cls, (tuple(map(tuple, factors)), tuple(map(tuple, graph)), dict(terms)))

    factors = property(lambda self: self[0])
    graph = property(lambda self: self[1])
    terms = property(lambda self: self[2])


def _classes(ms) -> tuple[int, ...]:
    classes: list[int] = []
    for t, f in enumerate(ms):
        classes.append(classes[t - 1] if t > 0 and ms[t - 1] == f else t)
    return tuple(classes)


def _reduce(multisets, kind: str, seed: int = 0, attempts: int = 4) -> list[list[CartesianFunction]]:
    """Per multiset (same order), the kept independent contractions."""
    groups: dict = {}
    for k, ms in enumerate(multisets):
        key = tuple(sorted((z, n, l % 2) for z, n, l in ms))
        groups.setdefault(key, []).append(k)
    result: list[list[CartesianFunction]] = [[] for _ in multisets]
    for gkey, members in groups.items():
        members.sort(key=lambda k: (sum(l for _, _, l in multisets[k]), k))
        cands = []  # (member k, factors, graph, terms)
        expected = {}
        for k in members:
            ms = multisets[k]
            ls, cl = tuple(l for _, _, l in ms), _classes(ms)
            if kind == "cace":
                if len({n for _, n, _ in ms}) != 1:
                    continue
                graphs = {_canonical({(s, t): e for s, t, e in g}, cl) for g in chain_contractions(ls)}
                graphs = sorted(graphs)
            else:
                graphs = contractions(ls, cl)
                expected[k] = coupling.count_invariants(ls, cl)
            for g in graphs:
                cands.append((k, ms, g, contraction_terms(ls, g, cl)))
        if not cands:
            continue
        lmax = max(l for _, ms, _, _ in cands for _, _, l in ms)
        keys = sorted({(z, n) for _, ms, _, _ in cands for z, n, _ in ms})
        nu = len(cands[0][1])
        target = sum(expected.values()) if kind != "cace" else len(cands)
        for attempt in range(attempts):
            rng = np.random.default_rng([seed, attempt, len(members), hash(gkey) & 0xFFFF])
            rows = (target + 8) * (attempt + 1)
            env = _environments(rng, keys, lmax, rows, nneigh=nu + 2 + attempt)
            ech = _Echelon()
            kept: dict[int, list] = {k: [] for k in members}
            for k, ms, g, terms in cands:
                if ech.add(_evaluate_mod(ms, terms, env, rows)):
                    kept[k].append(CartesianFunction(ms, g, terms))
            if kind == "cace" or all(len(kept[k]) == expected[k] for k in members):
                break
        else:
            bad = [(multisets[k], len(kept[k]), expected[k]) for k in members if len(kept[k]) != expected[k]]
            raise InternalError(f"Cartesian invariants: kept/expected counts differ for {bad[:3]}")
        for k in members:
            result[k] = kept[k]
    return result


def _cache_file(kind: str, multisets) -> Path:
    key = json.dumps([VERSION, kind, [list(map(list, ms)) for ms in multisets]], separators=(",", ":"))
    return cache_root() / "cartesian" / (hashlib.sha256(key.encode()).hexdigest() + ".json")


def _to_json(kind: str, multisets, funcs) -> str:
    return json.dumps({
        "version": VERSION, "kind": kind,
        "multisets": [list(map(list, ms)) for ms in multisets],
        "functions": [[[list(f.graph), [list(k) + [str(c)] for k, c in f.terms.items()]] for f in fs]
                      for fs in funcs],
    }, separators=(",", ":"))


def _from_json(text: str, kind: str, multisets):
    try:
        d = json.loads(text)
        if d["version"] != VERSION or d["kind"] != kind or d["multisets"] != [list(map(list, ms)) for ms in multisets]:
            return None
        out = []
        for ms, fs in zip(multisets, d["functions"], strict=True):
            row = []
            for graph, terms in fs:
                row.append(CartesianFunction(ms, [tuple(g) for g in graph],
                                             {tuple(int(x) for x in t[:-1]): int(t[-1]) for t in terms}))
            out.append(row)
        return out
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def cartesian_functions(multisets, kind: str = "cartesian", *, cache: bool = True) -> list[list[CartesianFunction]]:
    """The independent Cartesian invariants of each multiset of (z, n, l) factors (same order
    as ``multisets``; see the module doc for ``kind`` 'cartesian' and 'cace')."""
    if kind not in KINDS:
        raise SpecError(f"BasisSpec.angular: must be one of {list(KINDS)} here, got {kind!r}")
    multisets = [tuple(tuple(int(x) for x in f) for f in ms) for ms in multisets]
    return [list(fs) for fs in _cached(kind, tuple(multisets), cache)]


@lru_cache(maxsize=16)
def _cached_memory(kind: str, multisets: tuple):
    return _compute_or_load(kind, multisets, True)


def _cached(kind, multisets, cache):
    if cache:
        return _cached_memory(kind, multisets)
    return _compute_or_load(kind, multisets, False)


def _compute_or_load(kind: str, multisets: tuple, use_disk: bool):
    path = _cache_file(kind, multisets)
    if use_disk:
        try:
            got = _from_json(path.read_text(), kind, multisets)
        except (OSError, UnicodeDecodeError):
            got = None
        if got is not None:
            return tuple(tuple(fs) for fs in got)
    funcs = _reduce(list(multisets), kind)
    if use_disk:
        text = _to_json(kind, multisets, funcs)
        write_atomic(path, lambda fh: fh.write(text), suffix=".json")
    return tuple(tuple(fs) for fs in funcs)
