"""Exact O(3)-invariant couplings of products of real spherical harmonics.

Problem
-------
For factors ``t = 1..ν`` with angular momenta ``l_t`` find the coefficient vectors ``c``
over m-tuples such that ``Σ_m c_m Π_t Y_{l_t m_t}(r̂_t)`` (real ``Y``, see
:mod:`acegen.symbolic.ylm`) is invariant under every ``R ∈ O(3)``.  Reflections force
``Σ l_t`` even (``Y_l(-r̂) = (-1)^l Y_l(r̂)``); otherwise there is none.  Factors with the
same *class* label are identical (the same ``A_{znl}``), so only the symmetrisation of ``c``
over permutations inside each block of identical factors matters; the result is reported
*folded* onto canonical m-tuples (m non-decreasing inside each block), i.e. as the sum of
``c`` over each orbit.

Normalisation and order (the convention; see ``docs/conventions-angular.md``)
----------------------------------------------------------------------------
The returned invariants ``c^(1), c^(2), ...`` are, *before folding*, symmetric under the
block permutations and orthonormal in the Euclidean inner product on the full m-tuple
space (the orthonormal real ``Y`` basis).  They are built by left-to-right coupling:

* distinct factors: the generalized Clebsch–Gordan coupling trees, ordered
  lexicographically by the intermediate angular momenta ``(L_2, ..., L_{ν-1})``, where
  ``L_k`` couples factors ``1..k``;
* identical factors: at each factor that continues a block, the coupled highest-weight
  vectors are symmetrised and Gram–Schmidt orthogonalised in that same order (dependent
  ones dropped), so the basis is the Gram–Schmidt basis of the symmetrised trees.

Every folded coefficient is exactly ``Rational * sqrt(Integer)``.  The overall sign of each
invariant is fixed so that its first nonzero folded coefficient, in lexicographic order of
the canonical m-tuples, is positive.  Example: ``ls = (l, l)`` gives the single invariant
``Σ_m Y_lm Y_lm / sqrt(2l + 1)``.

Method (exact, rational arithmetic only)
----------------------------------------
Work in the *unnormalised* complex basis ``g_m = sqrt((l-m)!(l+m)!) |l m>`` (Condon–Shortley
``|l m>``).  There ``J_+ g_m = (l-m) g_{m+1}`` and ``J_- g_m = (l+m) g_{m-1}``: integer
matrices, symmetric under ``m -> -m``.  An invariant is a weight-0 vector annihilated by
``J_+``.  Rather than taking the null space of a large sparse matrix, the highest-weight
vectors of each prefix ``1..k`` are built recursively: a highest-weight vector ``u`` of
weight ``a`` of the prefix ``1..k-1`` coupled with factor ``k`` to weight ``L`` is
``Σ_j x_j (J_-^j u) ⊗ g_{L-a+j}`` with the rational recursion
``x_j = -x_{j-1} (l_k - m_{j-1}) / (j (2a - j + 1))`` (from ``J_+ J_-^j u = j (2a-j+1)
J_-^{j-1} u``).  Vectors are stored by their values on canonical m-tuples (the coefficient
of every ``g_m`` of the orbit), so identical factors cost only their symmetric subspace:
when factor ``k`` continues a block the coupled vectors are symmetrised (an average over
which block member is last) and Gram–Schmidt orthogonalised with the exact weighted inner
product ``Σ_m |orbit| Π_t (l_t-m_t)!(l_t+m_t)! v_m v'_m``.  All vectors stay integer
(content divided out); only the final normalisation introduces a square root.

With ``Σ l`` even every invariant satisfies ``v_{-m} = v_m`` (the coupling-tree parity is
``(-1)^{Σ l}``), so its function is real and the change to real ``Y`` gives, for a real
tuple ``μ`` with ``k`` nonzero entries and ``q`` negative ones (``q`` even, else 0),
``c_μ = (-1)^{q/2} 2^{-k/2} N^{-1/2} Π_t sqrt((l_t-|μ_t|)!(l_t+|μ_t|)!) Σ_s σ(s) v_{m(s)}``
summed over the sign patterns ``m_t = ±|μ_t|`` with ``Σ m = 0`` (``σ`` from the unitary
complex-to-real matrix, ``N`` the weighted norm): a single surd per coefficient.

Caching: in memory (``lru_cache``) and on disk as JSON of exact strings under
``cache_dir()/coupling/<sha256>.json``; an unwritable cache directory is silently skipped.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache, reduce
from pathlib import Path

import numpy as np
import sympy as sp

from .._fs import cache_root, write_atomic
from acegen.errors import SpecError

__all__ = ["invariants", "invariants_float", "count_invariants", "cache_dir", "VERSION"]

#: Bump when the convention or the algorithm's output changes (part of the disk-cache key).
VERSION = "acegen-coupling-1"

#: Results with more folded coefficients than this are cached in memory only (a JSON file
#: of that size loads no faster than the computation runs).
DISK_CACHE_MAX_COEFFS = 250_000


# ---------------------------------------------------------------------------------------
# cache directory
# ---------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """acegen's cache directory (the one root of every on-disk store, :func:`acegen._fs.cache_root`)."""
    return cache_root()


# ---------------------------------------------------------------------------------------
# argument normalisation
# ---------------------------------------------------------------------------------------


def _normalise(ls, classes) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Validate; return ``ls`` and block ids ``0, 0, 1, ...`` (equal id = identical)."""
    try:
        ls_t = tuple(int(l) for l in ls)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"ls must be a tuple of integers, got {ls!r}") from exc
    if any(l < 0 or l != l0 for l, l0 in zip(ls_t, ls)):
        raise SpecError(f"ls must be non-negative integers, got {ls!r}")
    if not ls_t:
        raise SpecError("at least one factor is needed")
    if math.prod(2 * l + 1 for l in ls_t) >= 2**62:
        raise SpecError(f"the m-tuple space of ls={ls_t} is too large")
    if classes is None:
        return ls_t, tuple(range(len(ls_t)))
    classes_t = tuple(classes)
    if len(classes_t) != len(ls_t):
        raise SpecError(f"classes {classes!r} must have the length of ls {ls!r}")
    blocks: list[int] = []
    seen: set = set()
    for t, c in enumerate(classes_t):
        if t > 0 and c == classes_t[t - 1]:
            if ls_t[t] != ls_t[t - 1]:
                raise SpecError(f"identical factors {t - 1} and {t} (class {c!r}) have different l")
            blocks.append(blocks[-1])
            continue
        if c in seen:
            raise SpecError(f"factors of class {c!r} are not contiguous in {classes!r}")
        seen.add(c)
        blocks.append(blocks[-1] + 1 if blocks else 0)
    return ls_t, tuple(blocks)


def _block_ranges(blocks: tuple[int, ...]) -> list[tuple[int, int]]:
    """``(start, stop)`` of each block of equal ids."""
    out: list[tuple[int, int]] = []
    start = 0
    for t in range(1, len(blocks) + 1):
        if t == len(blocks) or blocks[t] != blocks[start]:
            out.append((start, t))
            start = t
    return out


def _canon(q: np.ndarray, blocks: tuple[int, ...]) -> np.ndarray:
    """Sort each row inside every block (in place) and return it."""
    for a, b in _block_ranges(blocks):
        if b - a > 1:
            q[:, a:b] = np.sort(q[:, a:b], axis=1)
    return q


def _enumerate(ls, blocks, wmin: int, wmax: int) -> np.ndarray:
    """All canonical tuples with weight in ``[wmin, wmax]``, sorted lexicographically."""
    k = len(ls)
    arr = np.zeros((1, 0), dtype=np.int64)
    part = np.zeros(1, dtype=np.int64)
    for t in range(k):
        l = ls[t]
        vals = np.arange(-l, l + 1, dtype=np.int64)
        n = arr.shape[0]
        arr = np.concatenate([np.repeat(arr, len(vals), axis=0), np.tile(vals, n)[:, None]], axis=1)
        part = np.repeat(part, len(vals)) + arr[:, t]
        rest = sum(ls[t + 1 :])
        keep = (part >= wmin - rest) & (part <= wmax + rest)
        if t > 0 and blocks[t] == blocks[t - 1]:
            keep &= arr[:, t] >= arr[:, t - 1]
        arr, part = arr[keep], part[keep]
    return arr  # repeat/tile order is already lexicographic


def _orbit_sizes(tuples: np.ndarray, blocks) -> np.ndarray:
    """Number of distinct block permutations of each canonical tuple (object ints)."""
    out = np.ones(len(tuples), dtype=object)
    for a, b in _block_ranges(blocks):
        if b - a < 2:
            continue
        for i, row in enumerate(tuples[:, a:b].tolist()):
            denom = 1
            run = 1
            for j in range(1, len(row) + 1):
                if j < len(row) and row[j] == row[j - 1]:
                    run += 1
                else:
                    denom *= math.factorial(run)
                    run = 1
            out[i] *= math.factorial(b - a) // denom
    return out


@lru_cache(maxsize=None)
def _fact_pair(l: int) -> np.ndarray:
    """``(l-m)! (l+m)!`` for ``m = -l..l`` (object ints), the squared norms of ``g_m``."""
    return np.array([math.factorial(l - m) * math.factorial(l + m) for m in range(-l, l + 1)], dtype=object)


def _gnorm2(tuples: np.ndarray, ls) -> np.ndarray:
    """``Π_t (l_t-m_t)!(l_t+m_t)!`` for each row (object ints)."""
    out = np.ones(len(tuples), dtype=object)
    for t, l in enumerate(ls):
        out = out * _fact_pair(l)[tuples[:, t] + l]
    return out


# ---------------------------------------------------------------------------------------
# one prefix of factors: canonical tuples by weight, lowering, coupling maps
# ---------------------------------------------------------------------------------------


class _Level:
    """Canonical m-tuples of the factors ``0..k-1`` with weights in ``[wmin, wmax]``."""

    def __init__(self, ls, blocks, wmin: int, wmax: int):
        self.ls, self.blocks = tuple(ls), tuple(blocks)
        k = len(ls)
        self.radix = np.array([math.prod(2 * l + 1 for l in ls[t + 1 :]) for t in range(k)], dtype=np.int64)
        tup = _enumerate(ls, blocks, wmin, wmax)
        self.keys = self._key(tup)
        wt = tup.sum(axis=1)
        self.local = np.empty(len(tup), dtype=np.int64)
        self.slices: dict[int, np.ndarray] = {}
        for w in range(wmin, wmax + 1):
            sel = np.nonzero(wt == w)[0]
            self.slices[w] = tup[sel]
            self.local[sel] = np.arange(len(sel))
        self._lower: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._weights: dict[int, np.ndarray] = {}

    def _key(self, q: np.ndarray) -> np.ndarray:
        lvec = np.array(self.ls, dtype=np.int64)
        return ((q + lvec) * self.radix).sum(axis=1)

    def lookup(self, q: np.ndarray) -> np.ndarray:
        """Slice-local index of each canonical row of ``q`` (``-1`` if absent)."""
        if len(self.keys) == 0 or len(q) == 0:
            return np.full(len(q), -1, dtype=np.int64)
        lvec = np.array(self.ls, dtype=np.int64)
        valid = np.all(np.abs(q) <= lvec, axis=1)
        key = self._key(q)
        pos = np.clip(np.searchsorted(self.keys, key), 0, len(self.keys) - 1)
        found = valid & (self.keys[pos] == key)
        return np.where(found, self.local[pos], -1)

    def weights(self, w: int) -> np.ndarray:
        """Inner-product weights ``|orbit| Π (l-m)!(l+m)!`` on slice ``w``."""
        if w not in self._weights:
            s = self.slices[w]
            self._weights[w] = _orbit_sizes(s, self.blocks) * _gnorm2(s, self.ls)
        return self._weights[w]

    def lower(self, v: np.ndarray, w: int) -> np.ndarray:
        """``J_-`` applied to a symmetric vector ``v`` on slice ``w`` (result on ``w-1``)."""
        if w not in self._lower:
            tgt = self.slices[w - 1]
            k = len(self.ls)
            src = np.empty((len(tgt), k), dtype=np.int64)
            coef = np.empty((len(tgt), k), dtype=object)
            for t in range(k):
                q = tgt.copy()
                q[:, t] += 1
                idx = self.lookup(_canon(q, self.blocks))
                src[:, t] = np.where(idx >= 0, idx, len(self.slices[w]))
                coef[:, t] = (self.ls[t] + tgt[:, t] + 1).astype(object)
            self._lower[w] = (src, coef)
        src, coef = self._lower[w]
        vext = np.append(v, np.array([0], dtype=object))
        out = np.zeros(src.shape[0], dtype=object)
        for t in range(src.shape[1]):
            out = out + coef[:, t] * vext[src[:, t]]
        return out


def _content(v: np.ndarray) -> np.ndarray:
    """Divide an integer vector by the gcd of its entries."""
    g = reduce(math.gcd, (int(x) for x in v if x), 0)
    return v // g if g > 1 else v


def _lcm_den(xs) -> int:
    return reduce(lambda a, b: a * b // math.gcd(a, b), (x.denominator for x in xs), 1)


def _couple(lev: _Level, mult: dict[int, np.ndarray], a: int, L: int, cmap) -> np.ndarray:
    """Value vector on ``lev.slices[L]`` of the (block-symmetrised) coupling of a
    highest-weight vector of weight ``a`` (lowered multiplet ``mult``) with the last factor."""
    lk = lev.ls[-1]
    xs: dict[int, Fraction] = {}
    x = Fraction(1)
    for j in range(0, a + lk - L + 1):
        if j > 0:
            m_prev = L - a + j - 1
            x = -x * (lk - m_prev) / (j * (2 * a - j + 1))
        xs[L - a + j] = x
    den = _lcm_den(xs.values())
    xint = np.zeros(2 * lk + 1, dtype=object)
    offs = np.full(2 * lk + 1, -1, dtype=np.int64)
    pieces, pos = [], 0
    for w in range(a, min(mult) - 1, -1):
        pieces.append(mult[w])
        if L - w in xs:
            offs[L - w + lk] = pos
        pos += len(mult[w])
    for b, xv in xs.items():
        xint[b + lk] = int(xv * den)
    ucat = np.concatenate(pieces + [np.array([0], dtype=object)])
    bval, pidx = cmap
    out = np.zeros(len(bval), dtype=object)
    for s in range(bval.shape[1]):
        bi = bval[:, s] + lk
        o = offs[bi]
        ok = (pidx[:, s] >= 0) & (o >= 0)
        idx = np.where(ok, o + pidx[:, s], pos)
        out = out + xint[bi] * ucat[idx]
    return out


def _gram_schmidt(cands: list, wts: np.ndarray) -> list:
    """Exact Gram–Schmidt (weighted, unnormalised, integer vectors); drops dependents."""
    basis: list = []  # (label, v, W*v, norm)
    for label, w in cands:
        coefs = [Fraction(int(np.dot(wb, w)), nb) for _, _, wb, nb in basis]
        if any(coefs):
            den = _lcm_den(coefs)
            v = w * den
            for c, (_, b, _, _) in zip(coefs, basis):
                if c:
                    v = v - b * int(c * den)
        else:
            v = w
        if not any(v):
            continue
        v = _content(v)
        wv = wts * v
        basis.append((label, v, wv, int(np.dot(wv, v))))
    return [(label, v) for label, v, _, _ in basis]


def _hw_weights(ls) -> list[range]:
    """For each prefix ``1..k`` the weights its highest-weight vectors may need to have."""
    nu = len(ls)
    out = []
    for k in range(1, nu + 1):
        pre, rest = ls[:k], ls[k:]
        lo_p = max(0, 2 * max(pre) - sum(pre))
        lo_r = max(0, 2 * max(rest) - sum(rest)) if rest else 0
        out.append(range(max(lo_p, lo_r), min(sum(pre), sum(rest)) + 1))
    return out


def _final_vectors(ls, blocks) -> tuple[_Level, list[tuple[tuple[int, ...], np.ndarray]]]:
    """Integer value vectors (on canonical weight-0 tuples) of the orthogonal invariants."""
    nu = len(ls)
    A = _hw_weights(ls)
    if any(len(r) == 0 for r in A):
        return _Level(ls, blocks, 0, 0), []
    levels: list[_Level] = []
    for k in range(1, nu + 1):
        if k == nu:
            wmin, wmax = 0, 0
        else:
            wmax = max(A[k - 1])
            wmin = min(min(A[k - 1]), max(-wmax, min(A[k]) - ls[k]))
        levels.append(_Level(ls[:k], blocks[:k], wmin, wmax))
    one = np.array([1], dtype=object)
    hw: dict[int, list] = {a: [((), one)] for a in A[0] if a == ls[0]}
    for k in range(2, nu + 1):
        prev, lev = levels[k - 2], levels[k - 1]
        lk = ls[k - 1]
        r = 1
        while r < k and blocks[k - 1 - r] == blocks[k - 1]:
            r += 1
        mults: dict[int, list[dict[int, np.ndarray]]] = {}
        for a, vecs in hw.items():
            lst = []
            wlow = max(-a, min(prev.slices))
            for _, u in vecs:
                m = {a: u}
                for w in range(a, wlow, -1):
                    m[w - 1] = prev.lower(m[w], w)
                lst.append(m)
            mults[a] = lst
        new: dict[int, list] = {}
        for L in A[k - 1]:
            tgt = lev.slices[L]
            if len(tgt) == 0:
                continue
            cols = list(range(k - r, k))
            bval = tgt[:, cols]
            pidx = np.stack([prev.lookup(np.delete(tgt, s, axis=1)) for s in cols], axis=1)
            cands = []
            for a in sorted(hw):
                if not abs(a - lk) <= L <= a + lk:
                    continue
                for (path, _), m in zip(hw[a], mults[a]):
                    v = _couple(lev, m, a, L, (bval, pidx))
                    cands.append((path + (L,), v))
            cands.sort(key=lambda c: c[0])
            if r == 1:
                got = [(p, _content(v)) for p, v in cands]
            else:
                got = _gram_schmidt(cands, lev.weights(L))
            if got:
                new[L] = got
        hw = new
    final = [(path[:-1], v) for path, v in hw.get(0, [])]
    return levels[-1], final


# ---------------------------------------------------------------------------------------
# complex -> real change of basis, surds
# ---------------------------------------------------------------------------------------


def _real_transform(ls, blocks, lev: _Level):
    """Sparse map from complex canonical values to real canonical sums ``S_μ``.

    Returns ``(mu, ridx, cidx, sign)``: canonical real tuples ``mu`` (lexicographic, only
    those with an even number of negative entries) and triples meaning
    ``S[ridx] += sign * v[cidx]``.
    """
    nu = len(ls)
    full = _enumerate(ls, tuple(range(nu)), 0, 0)
    cidx_full = lev.lookup(_canon(full.copy(), blocks))
    assert np.all(cidx_full >= 0), "weight-0 tuple missing from the final level"
    absm = np.abs(full)
    lvec = np.array(ls, dtype=np.int64)
    radix = np.array([math.prod(2 * l + 1 for l in ls[t + 1 :]) for t in range(nu)], dtype=np.int64)
    keys, cis, sgs = [], [], []
    blk = _block_ranges(blocks)
    for tau in itertools.product((1, -1), repeat=nu):
        tau_a = np.array(tau, dtype=np.int64)
        ok = ~np.any((absm == 0) & (tau_a < 0), axis=1)
        mu, m, ci = absm[ok] * tau_a, full[ok], cidx_full[ok]
        for a, b in blk:
            if b - a > 1:
                ok2 = np.all(np.diff(mu[:, a:b], axis=1) >= 0, axis=1)
                mu, m, ci = mu[ok2], m[ok2], ci[ok2]
        even = (mu < 0).sum(axis=1) % 2 == 0
        mu, m, ci = mu[even], m[even], ci[even]
        odd_mu = (np.abs(mu) % 2 == 1)
        # sigma_t: mu>0: (-1)^mu if m>0 else 1;  mu<0: (-1)^|mu| if m>0 else -1
        flip = np.where(m > 0, odd_mu, mu < 0)
        sign = np.where(flip.sum(axis=1) % 2 == 1, -1, 1)
        keys.append(((mu + lvec) * radix).sum(axis=1))
        cis.append(ci)
        sgs.append(sign)
    key = np.concatenate(keys)
    ci = np.concatenate(cis)
    sg = np.concatenate(sgs)
    ukeys, ridx = np.unique(key, return_inverse=True)
    mu_u = np.empty((len(ukeys), nu), dtype=np.int64)
    rem = ukeys.copy()
    for t in range(nu):
        mu_u[:, t] = rem // radix[t] - ls[t]
        rem = rem % radix[t]
    nc = max(len(lev.slices[0]), 1)
    pair, inv = np.unique(ridx.astype(np.int64) * nc + ci, return_inverse=True)
    coef = np.zeros(len(pair), dtype=np.int64)
    np.add.at(coef, inv, sg)
    keep = coef != 0
    pair, coef = pair[keep], coef[keep]
    return mu_u, pair // nc, pair % nc, coef


_PRIMES = [p for p in range(2, 1000) if all(p % d for d in range(2, int(p**0.5) + 1))]


@lru_cache(maxsize=1 << 16)
def split_square(n: int) -> tuple[int, int]:
    """``n = s*s*r`` with ``r`` squarefree (n > 0)."""
    s, r = 1, 1
    for p in _PRIMES:
        if p * p > n:
            break
        e = 0
        while n % p == 0:
            n //= p
            e += 1
        s *= p ** (e // 2)
        r *= p ** (e % 2)
    if n > 1:
        t = math.isqrt(n)
        if t * t == n:
            s *= t
        elif n < _PRIMES[-1] ** 2:
            r *= n  # n is prime
        else:  # large cofactor: factor it completely (rare: our numbers are factorial-like)
            for p, e in sp.factorint(n).items():
                s *= int(p) ** (e // 2)
                r *= int(p) ** (e % 2)
    return s, r


@dataclass(frozen=True)
class _RawInv:
    """One invariant, exactly: folded coefficient ``num[i] * F_g * sqrt(E_g)`` at the real
    canonical tuple ``mu[rows[i]]``, ``g = grp[i]``, ``(F_g, E_g) = fac[g]``."""

    rows: np.ndarray  # int64, ascending (lexicographic tuples)
    num: np.ndarray  # object (python ints)
    grp: np.ndarray  # int64 group ids
    fac: dict[int, tuple[Fraction, int]]


@dataclass(frozen=True)
class _RawSet:
    """All invariants of one ``(ls, blocks)``; ``mu`` are the real canonical tuples."""

    mu: np.ndarray
    invs: tuple[_RawInv, ...]

    def n_coeffs(self) -> int:
        return sum(len(inv.rows) for inv in self.invs)


def _readonly(*arrays: np.ndarray) -> None:
    for a in arrays:
        a.flags.writeable = False


@lru_cache(maxsize=None)
def _compute_raw(ls: tuple[int, ...], blocks: tuple[int, ...]) -> _RawSet:
    """The invariants exactly, without the disk cache."""
    empty = _RawSet(np.zeros((0, len(ls)), dtype=np.int64), ())
    if sum(ls) % 2 == 1:
        return empty
    lev, vecs = _final_vectors(ls, blocks)
    if not vecs:
        return empty
    mu, ridx, cidx, sgn = _real_transform(ls, blocks, lev)
    order = np.argsort(ridx, kind="stable")
    ridx, cidx, sgn = ridx[order], cidx[order], sgn[order].astype(object)
    starts = np.flatnonzero(np.r_[True, ridx[1:] != ridx[:-1]])
    rows = ridx[starts]
    mu_rows = mu[rows]
    # per row: sign (-1)^{q/2} times the orbit size; per |mu| pattern (group): sqrt(P / 2^k)
    q = (mu_rows < 0).sum(axis=1)
    pre = _orbit_sizes(mu_rows, blocks) * np.where((q // 2) % 2 == 1, -1, 1).astype(object)
    absm = np.abs(mu_rows)
    akey = (absm * np.array([math.prod(l + 1 for l in ls[t + 1 :]) for t in range(len(ls))])).sum(axis=1)
    gkeys, grp = np.unique(akey, return_inverse=True)
    first = np.zeros(len(gkeys), dtype=np.int64)
    first[grp[::-1]] = np.arange(len(grp))[::-1]
    gpart: list[tuple[Fraction, int]] = []
    for i in first:
        k = int((absm[i] != 0).sum())
        s_, r_ = split_square(int(_gnorm2(absm[i : i + 1], ls)[0]) << k)
        gpart.append((Fraction(s_, 1 << k), r_))
    w0 = lev.weights(0)
    invs = []
    for _, v in vecs:
        nrm = int(np.dot(w0 * v, v))
        sn, rn = split_square(nrm)
        s_all = np.add.reduceat(sgn * v[cidx], starts) * pre
        nz = np.flatnonzero(s_all != 0)
        num = s_all[nz]
        if num[0] < 0:
            num = -num
        g = grp[nz].astype(np.int64)
        fac = {}
        for gi in np.unique(g).tolist():
            a, p = gpart[gi]
            h = math.gcd(p, rn)
            fac[gi] = (a * Fraction(sn * h, nrm), (p // h) * (rn // h))
        _readonly(nz, num, g)
        invs.append(_RawInv(rows[nz].astype(np.int64), num, g, fac))
    for inv in invs:
        _readonly(inv.rows)
    _readonly(mu)
    return _RawSet(mu, tuple(invs))


# ---------------------------------------------------------------------------------------
# disk cache
# ---------------------------------------------------------------------------------------


def _cache_file(ls, blocks) -> Path:
    key = json.dumps([list(ls), list(blocks), VERSION])
    return cache_dir() / "coupling" / (hashlib.sha256(key.encode()).hexdigest() + ".json")


def _to_json(ls, blocks, raw: _RawSet) -> str:
    """Exact results as JSON: integers and fractions are strings."""
    return json.dumps(
        {
            "version": VERSION,
            "ls": list(ls),
            "classes": list(blocks),
            "mu": raw.mu.tolist(),
            "invariants": [
                {
                    "rows": inv.rows.tolist(),
                    "num": [str(x) for x in inv.num],
                    "grp": inv.grp.tolist(),
                    "fac": [[g, str(f), str(e)] for g, (f, e) in sorted(inv.fac.items())],
                }
                for inv in raw.invs
            ],
        },
        separators=(",", ":"),
    )


def _from_json(text: str, ls, blocks) -> _RawSet | None:
    """Parse a cache file; ``None`` if it is corrupt or for another key."""
    try:
        d = json.loads(text)
        if d["version"] != VERSION or tuple(d["ls"]) != ls or tuple(d["classes"]) != blocks:
            return None
        mu = np.array(d["mu"], dtype=np.int64).reshape(-1, len(ls))
        invs = []
        for inv in d["invariants"]:
            rows = np.array(inv["rows"], dtype=np.int64)
            num = np.array([int(x) for x in inv["num"]] + [0], dtype=object)[:-1]
            grp = np.array(inv["grp"], dtype=np.int64)
            fac = {int(g): (Fraction(f), int(e)) for g, f, e in inv["fac"]}
            if not (len(rows) == len(num) == len(grp)) or not set(grp.tolist()) <= set(fac):
                return None
            if len(rows) and (rows.min() < 0 or rows.max() >= len(mu)):
                return None
            _readonly(rows, num, grp)
            invs.append(_RawInv(rows, num, grp, fac))
        _readonly(mu)
        return _RawSet(mu, tuple(invs))
    except (ValueError, KeyError, TypeError, ZeroDivisionError):
        return None


@lru_cache(maxsize=None)
def _raw(ls: tuple[int, ...], blocks: tuple[int, ...]) -> _RawSet:
    """Exact invariants through the disk cache."""
    path = _cache_file(ls, blocks)
    try:
        got = _from_json(path.read_text(), ls, blocks)
    except OSError:
        got = None
    if got is not None:
        return got
    raw = _compute_raw(ls, blocks)
    if raw.n_coeffs() <= DISK_CACHE_MAX_COEFFS:
        write_atomic(path, lambda fh: fh.write(_to_json(ls, blocks, raw)), suffix=".json")
    return raw


# ---------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------


@lru_cache(maxsize=65536)
def _sqrt_int(e: int) -> sp.Expr:
    return sp.sqrt(sp.Integer(e))


def _surd(f: Fraction, e: int) -> sp.Expr:
    """``f * sqrt(e)`` as a sympy number (``e`` has no small square factors)."""
    r = sp.Integer(f.numerator) if f.denominator == 1 else sp.Rational(f.numerator, f.denominator)
    if e == 1:
        return r
    root = _sqrt_int(e)
    if f == 1:
        return root
    if not isinstance(root, sp.Pow):  # sympy extracted a factor: let it combine
        return r * root
    # the canonical form ``Mul(Rational, Pow)``, built without re-evaluating each time
    return sp.Mul._from_args((r, root))


@lru_cache(maxsize=None)
def _sympy_invariants(ls, blocks) -> tuple[tuple[tuple[tuple[int, ...], sp.Expr], ...], ...]:
    raw = _raw(ls, blocks)
    out = []
    for inv in raw.invs:
        tuples = [tuple(t) for t in raw.mu[inv.rows].tolist()]
        fac = inv.fac
        out.append(
            tuple(
                (t, _surd(n * fac[g][0], fac[g][1]))
                for t, n, g in zip(tuples, inv.num.tolist(), inv.grp.tolist())
            )
        )
    return tuple(out)


def invariants(ls: tuple[int, ...], classes: tuple[int, ...] | None = None) -> list[dict[tuple[int, ...], sp.Expr]]:
    """Exact, linearly independent O(3) invariants of ``Π_t Y_{l_t m_t}``.

    ``ls[t]`` is the ``l`` of factor ``t``; ``classes[t]`` a label, equal labels marking
    identical factors (contiguous, equal ``l``; ``None``: all distinct).  Each invariant maps
    canonical m-tuples (m non-decreasing inside each block of identical factors),
    lexicographically ordered, to its nonzero folded coefficient ``Rational * sqrt(Integer)``
    (the sum of the coefficients over the tuple's orbit).  Normalisation, order and sign:
    see the module docstring.  Returns ``[]`` when ``Σ l`` is odd or no invariant exists.
    Building sympy numbers costs ~10 µs per coefficient; use :func:`invariants_float` for
    large cases.
    """
    key = _normalise(ls, classes)
    return [dict(inv) for inv in _sympy_invariants(*key)]


@lru_cache(maxsize=None)
def _float_invariants(ls, blocks) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    raw = _raw(ls, blocks)
    out = []
    for inv in raw.invs:
        m = raw.mu[inv.rows]
        gval = {g: math.sqrt(float(f * f * e)) * (1 if f > 0 else -1) for g, (f, e) in inv.fac.items()}
        gv = np.array([gval.get(g, 0.0) for g in range(max(gval) + 1)] if gval else [], dtype=np.float64)
        c = inv.num.astype(np.float64) * gv[inv.grp]
        _readonly(m, c)
        out.append((m, c))
    return tuple(out)


def invariants_float(
    ls: tuple[int, ...], classes: tuple[int, ...] | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`invariants` as floats: a list of ``(mtuples (K, ν) int64, coeffs (K,) float64)``.

    Same order, tuples and values (to ~1e-16 relative) as :func:`invariants`; the arrays
    are shared with the cache and read-only.
    """
    key = _normalise(ls, classes)
    return list(_float_invariants(*key))


def count_invariants(ls: tuple[int, ...], classes: tuple[int, ...] | None = None) -> int:
    """Number of invariants by the character formula ``n_0 - n_1``.

    ``n_w`` is the number of canonical m-tuples of weight ``w`` (a weight basis of the
    block-symmetric tensor space); every irrep contributes one weight-0 and, unless it is
    trivial, one weight-1 vector.  Zero when ``Σ l`` is odd.
    """
    ls_t, blocks = _normalise(ls, classes)
    if sum(ls_t) % 2 == 1:
        return 0
    return len(_enumerate(ls_t, blocks, 0, 0)) - len(_enumerate(ls_t, blocks, 1, 1))
