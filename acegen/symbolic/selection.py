"""Sparse (total-degree) selection of the ACE product basis and smoothness priors.

A one-particle function is (z, n, l): neighbour species index z, radial index n >= 1 and
angular degree l; its degree is n + wL * l.  A product basis function of correlation order
nu is a *multiset* of nu one-particle functions (factors sorted, repeats allowed) with

    sum_t (n_t + wL l_t) <= D_nu = spec.totaldegree[nu - 1]          (Witt et al. 2023, eq. 9)

and, because the model is O(3)-invariant,

* nu = 1: only l = 0 (a single Y_lm has no invariant for l > 0);
* sum_t l_t even (reflections: the product of the Y's has parity (-1)^{sum l});
* l_max <= sum of the other l_t (triangle rule), the necessary and sufficient condition for
  V_{l_1} x ... x V_{l_nu} to contain an SO(3) invariant.  Multisets failing it would only
  get zero coupled functions, so they are dropped here (the number of invariants of a kept
  multiset is computed by acegen.symbolic.coupling).

Multilayer ACE (Bochkarev et al. 2022) adds a Chebyshev index k >= 0 of the neighbour's
indicator, T_k(theta_j), a rotation-invariant scalar: with ``kmax > 0`` the factors are
(z, n, l, k), (n, k) acting as a generalised radial index, and the degree is
n + wL l + wK k (coupling still runs over l only).  With ``kmax = 0`` (every plain spec)
nothing changes.

Degrees are compared exactly: wL is taken as the fraction of its shortest decimal
representation (1.5 -> 3/2), so no rounding decides membership.

Smoothness priors (Witt et al. 2023, eq. 10 and the two variants after it), diagonal weights per
basis function given by its multiset:

    algebraic:    gamma = sum_t (n_t^p + wL l_t^p)                  (p = 4, wL = 1 defaults)
    exponential:  gamma = exp(al * sum_t l_t + an * sum_t n_t)       (al = an = 1)
    gaussian:     gamma = exp(sigma_l * sum_t l_t^2 + sigma_n * sum_t n_t^2)   (= 2)

(the ``wL`` of the prior is its own parameter, not spec.wL; ACE1x's ``smoothness_prior``
adds 1 to the algebraic weights, available here as ``constant=1``).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from ..errors import SpecError
from ..spec import MAX_BASIS, BasisSpec

__all__ = [
    "Factor",
    "Multiset",
    "degree",
    "one_particle_basis",
    "select_multisets",
    "max_l",
    "smoothness_prior",
    "PRIOR_KINDS",
]

Factor = tuple[int, int, int]  # (z, n, l)
Multiset = tuple[Factor, ...]
PRIOR_KINDS = ("algebraic", "exponential", "gaussian")


def _exact(x: float | int) -> Fraction:
    return Fraction(repr(float(x)))


def degree(multiset, wL: float, wK: float = 1.0) -> float:
    """Total degree sum_t (n_t + wL l_t [+ wK k_t]) of a multiset of (z, n, l) or
    (z, n, l, k) factors."""
    w, wk = _exact(wL), _exact(wK)
    return float(sum((f[1] + w * f[2] + (wk * f[3] if len(f) > 3 else 0) for f in multiset), Fraction(0)))


def one_particle_basis(spec: BasisSpec) -> list[tuple[int, int]]:
    """All (n, l) with n >= 1, l >= 0 and n + wL l <= max_nu D_nu, sorted by (l, n).

    The same list applies to every neighbour species.  (Channels that no selected multiset
    uses, e.g. l > spec.lmax, are included; lowering may drop them.)
    """
    w = spec.wL_exact
    dmax = max(_exact(d) for d in spec.totaldegree)
    out = []
    l = 0
    while 1 + w * l <= dmax:
        n = 1
        while n + w * l <= dmax:
            out.append((n, l))
            n += 1
        l += 1
    return sorted(out, key=lambda nl: (nl[1], nl[0]))


def _admissible(ls: list[int]) -> bool:
    tot = sum(ls)
    return tot % 2 == 0 and 2 * max(ls) <= tot


def select_multisets(spec: BasisSpec, *, kmax: int = 0, wK: float = 1.0) -> list[Multiset]:
    """All selected multisets of (z, n, l) factors, nu = 1..spec.order.

    Each multiset is a sorted tuple of factors.  The list is ordered by nu, then total degree,
    then lexicographically, and is the same for every central species.

    ``kmax > 0`` (multilayer ACE): factors are (z, n, l, k) with 0 <= k <= kmax and degree
    n + wL l + wK k; ``kmax = 0`` gives the plain (z, n, l) selection.
    """
    if isinstance(kmax, bool) or not isinstance(kmax, int) or kmax < 0:
        raise SpecError(f"select_multisets: kmax must be an integer >= 0, got {kmax!r}")
    w = spec.wL_exact
    wk = _exact(wK)
    if wk <= 0:
        raise SpecError(f"select_multisets: wK must be positive, got {wK!r}")
    ks = range(kmax + 1)
    ext = kmax > 0

    def label(z: int, n: int, l: int, k: int) -> tuple:
        return (z, n, l, k) if ext else (z, n, l)

    nz = spec.nelements
    out: list[tuple[int, Fraction, Multiset]] = []
    visited = [0]  # candidate multisets examined (bounded by MAX_BASIS)
    for nu in range(1, spec.order + 1):
        dnu = _exact(spec.totaldegree[nu - 1])
        if nu == 1:
            for z in range(nz):
                for k in ks:
                    n = 1
                    while n + wk * k <= dnu:
                        out.append((1, n + wk * k, (label(z, n, 0, k),)))
                        n += 1
            continue
        # candidate factors: the other nu - 1 factors need degree >= 1 each
        budget1 = dnu - (nu - 1)
        cands = [label(z, n, l, k) for z in range(nz) for (n, l) in one_particle_basis(spec) for k in ks
                 if n + w * l + wk * k <= budget1]
        cands.sort()
        # exact degrees as integers in units of 1/den (fast; the same comparisons as with Fractions)
        den = math.lcm(w.denominator, dnu.denominator, wk.denominator)
        wden, wkden = int(w * den), int(wk * den)
        degs = [f[1] * den + wden * f[2] + (wkden * f[3] if ext else 0) for f in cands]

        def rec(start: int, k: int, budget: int, acc: list[int]) -> None:
            if k == 0:
                visited[0] += 1
                if visited[0] > MAX_BASIS:
                    raise SpecError(
                        f"BasisSpec: order {spec.order} with totaldegree {spec.totaldegree} selects more than "
                        f"{MAX_BASIS} product functions (nu = {nu}); lower the order or the total degree"
                    )
                fs = tuple(cands[i] for i in acc)
                if _admissible([f[2] for f in fs]):
                    out.append((nu, Fraction(dnu_s - budget, den), fs))
                return
            for i in range(start, len(cands)):
                if degs[i] + (k - 1) * den <= budget:
                    acc.append(i)
                    rec(i, k - 1, budget - degs[i], acc)
                    acc.pop()

        dnu_s = int(dnu * den)
        rec(0, nu, dnu_s, [])
    out.sort(key=lambda t: (t[0], t[1], t[2]))
    return [m for _, _, m in out]


def max_l(multisets) -> int:
    """Largest l in a list of multisets (0 for an empty list)."""
    return max((f[2] for m in multisets for f in m), default=0)


def smoothness_prior(spec: BasisSpec, multisets, kind: str = "algebraic", *, p: float = 4,
                     wL: float = 1.0, al: float = 1.0, an: float = 1.0, sigma_l: float = 2.0,
                     sigma_n: float = 2.0, constant: float = 0.0) -> np.ndarray:
    """Diagonal prior weights gamma (one per multiset) of Witt et al. 2023, eq. (10) and variants.

    kind='algebraic': gamma = constant + sum_t (n_t^p + wL l_t^p)
    kind='exponential': gamma = constant + exp(al sum_t l_t + an sum_t n_t)
    kind='gaussian': gamma = constant + exp(sigma_l sum_t l_t^2 + sigma_n sum_t n_t^2)

    Parameter names follow ACEpotentials/ACE1x (p, wL; al, an; σl, σn -> sigma_l, sigma_n).
    A pair-basis function R_n is passed as the multiset ((z, n, 0),).
    """
    if kind not in PRIOR_KINDS:
        raise SpecError(f"smoothness_prior: kind must be one of {list(PRIOR_KINDS)}, got {kind!r}")
    for name, v in (("p", p), ("wL", wL), ("al", al), ("an", an), ("sigma_l", sigma_l),
                    ("sigma_n", sigma_n), ("constant", constant)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise SpecError(f"smoothness_prior: {name} must be a finite number, got {v!r}")
    if p <= 0:
        raise SpecError(f"smoothness_prior: p must be positive, got {p!r}")
    nz = spec.nelements
    out = np.empty(len(multisets))
    for i, m in enumerate(multisets):
        if len(m) == 0:
            raise SpecError("smoothness_prior: empty multiset")
        for f in m:
            if len(f) != 3 or not (0 <= f[0] < nz) or f[1] < 1 or f[2] < 0:
                raise SpecError(f"smoothness_prior: bad factor {f!r} (expected (z, n >= 1, l >= 0))")
        ns = np.array([f[1] for f in m], dtype=float)
        ls = np.array([f[2] for f in m], dtype=float)
        if kind == "algebraic":
            g = float(np.sum(ns**p + wL * ls**p))
        elif kind == "exponential":
            g = math.exp(al * ls.sum() + an * ns.sum())
        else:
            g = math.exp(sigma_l * np.sum(ls**2) + sigma_n * np.sum(ns**2))
        out[i] = constant + g
    return out
