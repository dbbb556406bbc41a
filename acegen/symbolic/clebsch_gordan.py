"""Clebsch–Gordan coefficients (exact, Racah's formula), PACE's binary coupling tree and the
generalised coefficients of one B-basis function along it (Lysogorskiy et al. 2021; Drautz
2019), including which of them PACE's floating-point recursion finds to be zero."""

from __future__ import annotations

import math
from collections import deque
from fractions import Fraction
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=None)
def clebsch_gordan(j1: int, m1: int, j2: int, m2: int, J: int, M: int) -> float:
    """⟨j1 m1 j2 m2 | J M⟩ (Condon–Shortley), exact Racah formula in rationals, then rounded."""
    if m1 + m2 != M or not abs(j1 - j2) <= J <= j1 + j2:
        return 0.0
    if abs(m1) > j1 or abs(m2) > j2 or abs(M) > J:
        return 0.0
    f = math.factorial
    pref = Fraction(
        (2 * J + 1) * f(j1 + j2 - J) * f(j1 - j2 + J) * f(-j1 + j2 + J) * f(J + M) * f(J - M)
        * f(j1 + m1) * f(j1 - m1) * f(j2 + m2) * f(j2 - m2),
        f(j1 + j2 + J + 1),
    )
    zmin = max(0, j2 - J - m1, j1 - J + m2)
    zmax = min(j1 + j2 - J, j1 - m1, j2 + m2)
    s = Fraction(0)
    for z in range(zmin, zmax + 1):
        s += Fraction(
            (-1) ** z,
            f(z) * f(j1 + j2 - J - z) * f(j1 - m1 - z) * f(j2 + m2 - z) * f(J - j2 + m1 + z) * f(J - j1 - m2 + z),
        )
    if s == 0:
        return 0.0
    sq = pref * s * s
    # sqrt of an exact rational, correctly rounded via integer square roots
    num, den = sq.numerator, sq.denominator
    scale = 1 << 128
    root = math.isqrt(num * scale * scale // den)
    return math.copysign(root / scale, float(s))


@lru_cache(maxsize=None)
def coupling_tree(rank: int) -> tuple[tuple[int, int, int], ...]:
    """PACE's binary coupling tree (``generate_coupling_tree``) as (i1, i2, i_coupled) triples.

    Indices 0..rank-1 are the single-particle (l, m), rank..2rank-3 the intermediate (L, M)
    (``lint`` in order), 2rank-2 the final (L=0, M=0).
    """
    if rank < 2:
        return ()
    leaves = deque(range(rank))
    inter = deque(range(rank, 2 * rank - 2))
    tree: list[tuple[int, int, int]] = []
    pending: deque[int] = deque()
    i_int = 0
    for _ in range(rank // 2):
        i1, i2 = leaves.popleft(), leaves.popleft()
        i_int = inter.popleft() if inter else -1
        tree.append((i1, i2, i_int))
        pending.append(i_int)
    while len(pending) > 1 and i_int != -1:
        i1, i2 = pending.popleft(), pending.popleft()
        i_int = inter.popleft() if inter else -1
        tree.append((i1, i2, i_int))
        pending.append(i_int)
    if i_int != -1:
        tree.append((pending.popleft(), leaves.popleft(), -1))
    assert len(tree) == rank - 1
    last = 2 * rank - 2
    return tuple((a, b, last if c == -1 else c) for a, b, c in tree)


def ms_cg_list(ls, lint):
    """Half-basis (ms, generalised CG) pairs of one B function (``generatems_cg_list``).

    Combinations whose first non-zero m is negative are dropped and the others (with a
    non-zero m) get their coefficient doubled.  Values are exact (Racah); which combinations
    are *present* follows PACE: a combination is dropped as soon as one tree node's
    Clebsch–Gordan coefficient is zero **in PACE's floating-point recursion**
    (:func:`_pace_cg_vanishes`).  Accidental zeros that PACE computes as ~1e-17 are kept here
    with coefficient 0, so that the compression step of
    :func:`acegen.io.pace.bbasis.bbasis_to_ctilde` sees (and drops) them exactly as PACE does.
    """
    rank = len(ls)
    if rank == 1:
        return [((0,), 1.0)]
    lsLS = list(ls) + list(lint) + [0]
    tree = coupling_tree(rank)
    out = []
    ranges = [range(-l, l + 1) for l in ls]
    for rev in _product(ranges[::-1]):
        ms = rev[::-1]
        if sum(ms) != 0:
            continue
        sign = next((1 if m > 0 else -1 for m in ms if m != 0), 0)
        if sign < 0:
            continue
        msMS = list(ms) + [0] * (rank - 1)
        gen = 1.0
        present = True
        for i1, i2, ic in tree:
            msMS[ic] = msMS[i1] + msMS[i2]
            if abs(msMS[i1]) > lsLS[i1] or abs(msMS[i2]) > lsLS[i2] or abs(msMS[ic]) > lsLS[ic]:
                present = False
                break
            args = (lsLS[i1], msMS[i1], lsLS[i2], msMS[i2], lsLS[ic], msMS[ic])
            if _pace_cg_vanishes(*args):
                present = False
                break
            gen *= clebsch_gordan(*args)
        if not present:
            continue
        if sign > 0:
            gen *= 2.0
        out.append((tuple(ms), gen))
    return out


def _pace_cg_vanishes(j1: int, m1: int, j2: int, m2: int, J: int, M: int) -> bool:
    """True iff PACE's floating-point CG (Wigner-3j series in J by the Schulten–Gordon three-term
    recursion, solved as Luscombe & Luban, Phys. Rev. E 57, 7274 (1998)) is exactly 0.0."""
    if m1 + m2 != M or not abs(j1 - j2) <= J <= j1 + j2 or abs(m1) > j1 or abs(m2) > j2:
        return True
    jmin, vals = _w3j_series_j(j1, j2, m1, m2)
    if not jmin <= J <= j1 + j2:
        return True
    return bool(vals[J - jmin] == 0.0)


@lru_cache(maxsize=None)
def _w3j_series_j(j1: int, j2: int, m1: int, m2: int):
    """Unnormalised 3j series f(J) ∝ (j1 j2 J; m1 m2 −m1−m2), J = jmin..j1+j2, in IEEE double
    arithmetic (numpy scalars: x/0 gives inf instead of raising).  Only used to decide which
    values are exactly zero."""
    F = np.float64
    jmin = max(abs(j1 - j2), abs(m1 + m2))
    jmax = j1 + j2
    if jmin == jmax:
        return jmin, (F(1.0),)
    if jmin == 0:
        a2, b1 = F(j1 + j2 + 1), F(m2 - m1)

        def Z(j):
            return j * np.sqrt((a2 + j) * (a2 - j))

        def X(j):
            return Z(j + 1)

        def Y(j):
            return (2 * j + 1) * b1
    else:
        a1, a2, a3, b1 = F(j1 - j2), F(j1 + j2 + 1), F(-m1 - m2), F(m2 - m1)
        b2 = a3 * (F(j1) * F(j1 + 1) - F(j2) * F(j2 + 1))

        def aux(j):
            return np.sqrt((a1 + j) * (a1 - j) * (a2 + j) * (a2 - j) * (a3 - j) * (a3 + j))

        def X(j):
            return j * aux(j + 1)

        def Y(j):
            return (2 * j + 1) * (j * (j + 1) * b1 - b2)

        def Z(j):
            return (j + 1) * aux(j)

    with np.errstate(all="ignore"):
        return jmin, tuple(_three_term(jmin, jmax, X, Y, Z))


def _three_term(nmin_: int, nmax_: int, X, Y, Z):
    """Solve X(n) f(n+1) + Y(n) f(n) + Z(n) f(n−1) = 0 (n = nmin..nmax) up to normalisation:
    two-term ratio recursions inwards from both ends while the ratios stay below one, a
    three-term recursion through the classical region in between."""
    F = np.float64
    one = F(1.0)
    tiny = math.sqrt(math.sqrt(np.finfo(float).tiny))
    siz = nmax_ - nmin_ + 1
    nmin, nmax = F(nmin_), F(nmax_)
    f = [F(0.0)] * siz
    i2, n2 = siz - 1, nmax
    ymax = Y(nmax)
    if abs(ymax) < tiny:
        f[i2] = one
    else:
        rn = -Z(nmax) / ymax
        f[i2] = rn
        i2 -= 1
        while i2 > 0:
            n2 -= 1
            rn = -Z(n2) / (Y(n2) + X(n2) * rn)
            if abs(rn) > one:
                break
            f[i2] = rn
            i2 -= 1
        k = i2
        f[k] = one
        for k in range(i2 + 1, siz - 1):
            f[k + 1] = f[k + 1] * f[k]
    if i2 == 0:
        return f
    i1, n1 = 0, nmin
    ymin = Y(nmin)
    if abs(ymin) < tiny:
        f[i1] = one
    else:
        sn = -X(nmin) / ymin
        f[i1] = sn
        i1 += 1
        while i1 < i2:
            n1 += 1
            sn = -X(n1) / (Y(n1) + Z(n1) * sn)
            if abs(sn) > one:
                break
            f[i1] = sn
            i1 += 1
        f[i1] = one
        for k in range(i1 - 1, 0, -1):
            f[k - 1] = f[k - 1] * f[k]
    if i1 < i2:
        n = n1
        if i1 == 0:
            f[1] = (-Y(n) * f[0]) / X(n)
            n += 1
            i1 = 1
        for k in range(i1, i2):
            f[k + 1] = (-Y(n) * f[k] - Z(n) * f[k - 1]) / X(n)
            n += 1
        scale = one / f[i2]
        f = [v * scale for v in f[: i2 + 1]] + f[i2 + 1 :]
    return f


def _product(ranges):
    """itertools.product, first range outermost (ms-space order of PACE when reversed)."""
    if not ranges:
        yield ()
        return
    for a in ranges[0]:
        for rest in _product(ranges[1:]):
            yield (a,) + rest
