"""The user-facing basis specification of an ACEpotentials.jl-style linear ACE model.

:class:`BasisSpec` mirrors the keyword arguments of ACEpotentials.jl's ``acemodel`` /
ACE1x's ``ace_basis`` (elements, order, totaldegree, wL, rcut, r0, transform, envelope,
pair basis options, Eref) and adds acegen's ``purification`` switch.  It is a frozen,
hashable, validated dataclass: every container inside is a tuple, every per-pair quantity is
*resolved* at construction (defaults are looked up once and stored), so two specs describing
the same model compare equal, hash equal and have the same :meth:`BasisSpec.signature`.

Conventions (see docs/conventions-radial.md for the full description):

* Per-pair quantities (``r0``, ``rcut``, ``pair_rcut``) are symmetric in the element pair and
  are stored as ``((("Cu", "Cu"), v), (("Cu", "Ni"), v), ...)`` over the unordered pairs
  (i <= j in element order).  Users may give a scalar or a mapping
  ``{("Cu", "Ni"): 5.0, ...}`` (keys may also be written ``"Cu-Ni"``); a mapping must cover
  every unordered pair.
* Default bond length r0(Zi, Zj) = (b(Zi) + b(Zj)) / 2 (ACE1x ``get_r0``), with b the
  ACEpotentials.jl table of VASP "auto length scale" bond lengths; for elements missing from
  that table the nearest-neighbour distance of ASE's reference crystal structure is used
  (JuLIP's ``rnn``), and as a last resort twice ASE's covalent radius.
* Default cutoff: rcut = max over pairs of 2.5 * r0(Zi, Zj), the same for every pair
  (ACE1x/ACEpotentials use ``(:bondlen, 2.5)`` and then take the maximum over pairs because the
  many-body transform needs a single cutoff); ``pair_rcut`` defaults to ``rcut``.
* Degree of a one-particle function (n, l): n + wL * l with n >= 1; a product of nu of them is
  kept when the sum is <= totaldegree[nu - 1].
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass
from fractions import Fraction
from typing import Any, Union

import numpy as np
from ase.data import atomic_numbers, chemical_symbols, covalent_radii, reference_states

from .errors import SpecError

__all__ = ["BasisSpec", "default_bond_length", "PURIFICATIONS", "ANGULAR_KINDS", "SPEC_FORMAT"]

SPEC_FORMAT = "acegen.BasisSpec/1"
PURIFICATIONS = ("none", "pair", "canonical")
RADIAL_KINDS = ("legendre",)
# angular one-particle basis: spherical harmonics (default) or Cartesian monomials
# (docs/cartesian.md); the key is written to JSON/signature only when not the default
ANGULAR_KINDS = ("spherical", "cartesian", "cace")
RCUT_FACTOR = 2.5

# Limits of a specification, far above fitted models (order <= 6, totaldegree <= 25,
# cutoffs <= 10 Å) and far below what would exhaust memory or time; checked at construction,
# before anything is selected or lowered (see docs/robustness.md).
MAX_ORDER = 10
MAX_TOTALDEGREE = 100  # also bounds nmax and the default pair_degree
MAX_PAIR_DEGREE = 100
MAX_LMAX = 20  # largest l the selection can reach: floor((D_nu - nu) / (2 wL))
MAX_LENGTH = 100.0  # Å: rcut, pair_rcut, r0
MIN_LENGTH = 1e-3  # Å: rcut, pair_rcut, r0 (shorter is no bond length; the radial transform needs rcut/r0 resolvable)
MAX_EXPONENT = 32  # p, q of the transforms; pin, pcut, p of the envelopes
MAX_BASIS = 200_000  # multisets the total-degree selection may produce (see symbolic/selection.py)

# Typical bond lengths (Angstrom) by atomic number: the "bond_len" column of
# ACEpotentials.jl's data/length_scales_VASP_auto_length_scales.yaml (MIT licensed data
# table; values only).  Used for the default r0 and rcut exactly as ACEpotentials does.
_BOND_LENGTHS: dict[int, float] = {
    1: 1.2, 3: 3.0, 4: 2.2, 5: 1.8, 6: 1.4, 7: 1.6, 8: 1.7, 9: 2.1, 11: 3.7, 12: 3.2,
    13: 2.9, 14: 2.4, 15: 2.5, 16: 2.3, 17: 2.6, 19: 4.6, 20: 3.8, 21: 3.2, 22: 2.9,
    23: 2.6, 24: 2.5, 26: 2.5, 27: 2.5, 28: 2.5, 29: 2.6, 30: 2.8, 31: 3.0, 32: 2.5,
    33: 2.7, 34: 2.8, 35: 2.8, 37: 4.7, 38: 4.2, 39: 3.6, 40: 3.2, 41: 2.9, 42: 2.7,
    43: 2.7, 44: 2.7, 45: 2.7, 46: 2.8, 47: 2.9, 48: 3.2, 49: 3.4, 50: 2.9, 51: 3.1,
    52: 3.2, 53: 3.2, 56: 4.3, 57: 3.7, 58: 3.4, 59: 3.7, 60: 3.7, 61: 3.6, 62: 3.6,
    64: 3.6, 65: 3.6, 66: 3.5, 69: 3.5, 70: 3.8, 72: 3.2, 73: 2.9, 74: 2.8, 75: 2.8,
    76: 2.7, 77: 2.7, 78: 2.8, 79: 2.9, 80: 3.3, 81: 3.4, 82: 3.5, 83: 3.3, 84: 3.3,
    89: 4.0, 90: 3.6, 91: 3.3,
}

# nearest-neighbour distance / lattice constant a for ASE's simple reference structures
_RNN_FACTOR = {"fcc": math.sqrt(0.5), "bcc": math.sqrt(3.0) / 2.0, "diamond": math.sqrt(3.0) / 4.0,
               "sc": 1.0, "hcp": 1.0}

Number = Union[int, float]
PairTable = tuple[tuple[tuple[str, str], float], ...]


def default_bond_length(symbol: str) -> float:
    """Typical bond length b(Z) in Angstrom (see the module docstring for the sources)."""
    z = atomic_numbers[symbol]
    if z in _BOND_LENGTHS:
        return _BOND_LENGTHS[z]
    ref = reference_states[z] if z < len(reference_states) else None
    if ref is not None and ref.get("symmetry") in _RNN_FACTOR and "a" in ref:
        return float(round(_RNN_FACTOR[ref["symmetry"]] * ref["a"], 4))
    rc = float(covalent_radii[z])
    if rc > 0 and math.isfinite(rc):
        return float(round(2.0 * rc, 4))
    raise SpecError(f"BasisSpec.r0: no typical bond length known for {symbol!r}; give r0 explicitly")


def _err(field: str, value: Any, why: str) -> SpecError:
    return SpecError(f"BasisSpec.{field}: {why}, got {value!r}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _positive_float(field: str, v: Any, hi: float | None = None, lo: float | None = None) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _err(field, v, "must be a positive number")
    try:
        f = float(v)
    except OverflowError:
        raise SpecError(f"BasisSpec.{field}: must be a positive finite number, got {str(v)[:30]}...") from None
    if not (math.isfinite(f) and f > 0):
        raise _err(field, v, "must be a positive finite number")
    if hi is not None and f > hi:
        raise _err(field, v, f"exceeds the limit of {hi}")
    if lo is not None and f < lo:
        raise _err(field, v, f"is below the limit of {lo}")
    return f


def _clean_number(v: float) -> Number:
    """Integral values are stored as int so that 12 and 12.0 give the same spec."""
    return int(v) if float(v).is_integer() else float(v)


def _parse_pair_key(field: str, key: Any, elements: tuple[str, ...]) -> tuple[str, str]:
    if isinstance(key, str):
        parts = key.split("-")
    elif isinstance(key, (tuple, list)):
        parts = list(key)
    else:
        raise _err(field, key, "pair keys must be (symbol, symbol) tuples or 'A-B' strings")
    if len(parts) != 2 or not all(isinstance(p, str) for p in parts):
        raise _err(field, key, "pair keys must name exactly two elements")
    for p in parts:
        if p not in elements:
            raise _err(field, key, f"pair key names {p!r}, which is not one of the elements {list(elements)}")
    i, j = sorted(elements.index(p) for p in parts)
    return elements[i], elements[j]


def _all_pairs(elements: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(elements[i], elements[j]) for i in range(len(elements)) for j in range(i, len(elements))]


def _pair_table(field: str, value: Any, elements: tuple[str, ...]) -> PairTable:
    """Normalise a scalar / mapping / stored table into a full PairTable."""
    pairs = _all_pairs(elements)
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (tuple, list)):
        items = []
        for entry in value:
            if isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], (tuple, list, str)):
                items.append((entry[0], entry[1]))
            elif isinstance(entry, (tuple, list)) and len(entry) == 3:
                items.append(((entry[0], entry[1]), entry[2]))
            else:
                raise _err(field, value, "must be a number or a mapping {(A, B): value}")
    else:
        v = _positive_float(field, value, MAX_LENGTH, MIN_LENGTH)
        return tuple((p, v) for p in pairs)
    table: dict[tuple[str, str], float] = {}
    for key, v in items:
        pk = _parse_pair_key(field, key, elements)
        fv = _positive_float(f"{field}[{pk[0]}-{pk[1]}]", v, MAX_LENGTH, MIN_LENGTH)
        if pk in table and table[pk] != fv:
            raise _err(field, value, f"conflicting values for pair {pk[0]}-{pk[1]}")
        table[pk] = fv
    missing = [f"{a}-{b}" for a, b in pairs if (a, b) not in table]
    if missing:
        raise _err(field, value, f"missing pair(s) {', '.join(missing)}")
    return tuple((p, table[p]) for p in pairs)


def _table_to_json(table: PairTable) -> Any:
    values = {v for _, v in table}
    if len(values) == 1:
        return _clean_number(next(iter(values)))
    return [[a, b, _clean_number(v)] for (a, b), v in table]


def _agnesi_a_positive(p: int, q: int) -> bool:
    # a = 2 (2pq - p - q) / (p^2 + p + q^2 + q)  (see acegen.symbolic.radial.agnesi_a)
    return 2 * p * q - p - q > 0


def _transform(field: str, value: Any) -> tuple[str, int, int]:
    if not isinstance(value, (tuple, list)) or len(value) != 3 or value[0] != "agnesi":
        raise _err(field, value, "must be ('agnesi', p, q)")
    _, p, q = value
    if not (_is_int(p) and _is_int(q) and 1 <= p <= q <= MAX_EXPONENT):
        raise _err(field, value, f"needs integers 1 <= p <= q <= {MAX_EXPONENT}")
    if not _agnesi_a_positive(p, q):
        raise _err(field, value, "needs 2pq > p + q (otherwise no a > 0 maximises dy/dr at r0)")
    return ("agnesi", int(p), int(q))


def _envelope(field: str, value: Any, allow_r: bool) -> tuple:
    if isinstance(value, (tuple, list)) and len(value) == 3 and value[0] == "x":
        _, pin, pcut = value
        if not (_is_int(pin) and _is_int(pcut) and 0 <= pin <= MAX_EXPONENT and 1 <= pcut <= MAX_EXPONENT):
            raise _err(field, value, f"('x', pin, pcut) needs integers 0 <= pin <= {MAX_EXPONENT}, "
                       f"1 <= pcut <= {MAX_EXPONENT}")
        return ("x", int(pin), int(pcut))
    if allow_r and isinstance(value, (tuple, list)) and len(value) == 2 and value[0] == "r":
        p = value[1]
        if not (_is_int(p) and 1 <= p <= MAX_EXPONENT):
            raise _err(field, value, f"('r', p) needs an integer 1 <= p <= {MAX_EXPONENT}")
        return ("r", int(p))
    allowed = "('x', pin, pcut) or ('r', p)" if allow_r else "('x', pin, pcut)"
    raise _err(field, value, f"must be {allowed}")


@dataclass(frozen=True)
class BasisSpec:
    """Specification of an ACEpotentials.jl-style linear ACE basis.

    Parameters
    ----------
    elements: chemical symbols (species index = position in this tuple).
    order: maximal correlation order nu_max >= 1.
    totaldegree: scalar or one value per correlation order; stored as a tuple of length
        ``order``; functions of order nu satisfy sum_t (n_t + wL l_t) <= totaldegree[nu-1].
    wL: weight of l in the degree (> 0).
    rcut: many-body cutoff; scalar or per unordered pair mapping; default see module doc.
    r0: bond length used by the distance transforms; scalar or per pair; default table.
    pair_rcut: cutoff of the pair basis (default: ``rcut``).
    pair_degree: number of pair radial functions (default: max(totaldegree), as ACE1x).
    transform / pair_transform: ('agnesi', p, q) distance transforms.
    envelope: many-body envelope ('x', pin, pcut) in the normalised coordinate y.
    pair_envelope: ('r', p) ACE1 PolyEnvelope in r, or ('x', pin, pcut).
    purification: 'pair' (default, as ACEpotentials v0.6: every function of correlation
        order >= 2 vanishes on a single neighbour), 'canonical' (canonical cluster expansion,
        sums over distinct neighbours only) or 'none' (self-interacting); see
        docs/purification.md and :mod:`acegen.symbolic.purify`.
    Eref: mapping element -> isolated-atom energy (missing elements: 0); stored as
        ``(("Ti", e_Ti), ("Al", e_Al), ...)`` in element order, so ``dict(spec.Eref)`` works.
    radial: polynomial family of the radial bases (only 'legendre').
    angular: 'spherical' (default: Y_lm and Clebsch-Gordan couplings), 'cartesian' (Cartesian
        monomials and full tensor contractions, the same span) or 'cace' (Cheng 2024's
        same-n contraction family, a subspace); see docs/cartesian.md.  The Cartesian kinds
        take purification 'pair' or 'none' (not 'canonical').
    """

    elements: tuple[str, ...]
    order: int
    totaldegree: tuple[Number, ...]
    wL: float = 1.5
    rcut: PairTable | None = None
    r0: PairTable | None = None
    _: KW_ONLY
    pair_rcut: PairTable | None = None
    pair_degree: int | None = None
    transform: tuple = ("agnesi", 2, 4)
    pair_transform: tuple = ("agnesi", 1, 3)
    envelope: tuple = ("x", 2, 2)
    pair_envelope: tuple = ("r", 2)
    purification: str = "pair"
    Eref: tuple[tuple[str, float], ...] | None = None
    radial: str = "legendre"
    angular: str = "spherical"

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731

        els = self.elements
        if isinstance(els, str) or not isinstance(els, (tuple, list)) or len(els) == 0:
            raise _err("elements", els, "must be a non-empty sequence of chemical symbols")
        for e in els:
            if not isinstance(e, str) or e not in chemical_symbols or e == "X":
                raise _err("elements", els, f"{e!r} is not a chemical symbol")
        if len(set(els)) != len(els):
            raise _err("elements", els, "duplicated element")
        els = tuple(els)
        set_("elements", els)

        if not _is_int(self.order) or not 1 <= self.order <= MAX_ORDER:
            raise _err("order", self.order, f"must be an integer in 1..{MAX_ORDER}")

        td = self.totaldegree
        if isinstance(td, (tuple, list)):
            if len(td) != self.order:
                raise _err("totaldegree", td, f"needs one value per correlation order ({self.order})")
            vals = [_positive_float("totaldegree", v, MAX_TOTALDEGREE) for v in td]
        else:
            vals = [_positive_float("totaldegree", td, MAX_TOTALDEGREE)] * self.order
        for nu, d in enumerate(vals, start=1):
            if d < nu:
                raise _err("totaldegree", td, f"degree {d} of order {nu} admits no basis function (needs >= {nu})")
        set_("totaldegree", tuple(_clean_number(v) for v in vals))

        set_("wL", float(_positive_float("wL", self.wL)))
        if self.lmax > MAX_LMAX:
            raise _err("wL", self.wL, f"lets the selection reach l = {self.lmax} (at most {MAX_LMAX}) with totaldegree "
                       f"{self.totaldegree}")

        # r0: explicit or from the bond-length table (pair value = mean of the two)
        if self.r0 is None:
            b = {e: default_bond_length(e) for e in els}
            r0 = tuple(((a, c), (b[a] + b[c]) / 2.0) for a, c in _all_pairs(els))
        else:
            r0 = _pair_table("r0", self.r0, els)
        set_("r0", r0)

        if self.rcut is None:
            rc = RCUT_FACTOR * max(v for _, v in r0)
            if rc > MAX_LENGTH:
                raise _err("rcut", None, f"the default {RCUT_FACTOR} * max r0 = {rc} exceeds the limit of {MAX_LENGTH}")
            rcut = tuple((p, rc) for p, _ in r0)
        else:
            rcut = _pair_table("rcut", self.rcut, els)
        set_("rcut", rcut)
        set_("pair_rcut", rcut if self.pair_rcut is None else _pair_table("pair_rcut", self.pair_rcut, els))

        if self.pair_degree is None:
            set_("pair_degree", int(math.floor(max(vals))))
        elif not _is_int(self.pair_degree) or not 1 <= self.pair_degree <= MAX_PAIR_DEGREE:
            raise _err("pair_degree", self.pair_degree, f"must be an integer in 1..{MAX_PAIR_DEGREE}")

        set_("transform", _transform("transform", self.transform))
        set_("pair_transform", _transform("pair_transform", self.pair_transform))
        set_("envelope", _envelope("envelope", self.envelope, allow_r=False))
        set_("pair_envelope", _envelope("pair_envelope", self.pair_envelope, allow_r=True))

        if self.purification not in PURIFICATIONS:
            raise _err("purification", self.purification, f"must be one of {list(PURIFICATIONS)}")
        if self.radial not in RADIAL_KINDS:
            raise _err("radial", self.radial, f"must be one of {list(RADIAL_KINDS)}")
        if not isinstance(self.angular, str) or self.angular not in ANGULAR_KINDS:
            raise _err("angular", self.angular, f"must be one of {list(ANGULAR_KINDS)}")
        if self.angular != "spherical" and self.purification not in ("none", "pair"):
            raise _err("angular", self.angular,
                       f"Cartesian bases support purification='none' or 'pair', not {self.purification!r}: the "
                       "canonical correlations need the radial and monomial products of every set partition of "
                       "every contraction, which are not implemented (use angular='spherical' for a canonical "
                       "purified basis)")

        set_("Eref", self._eref(self.Eref, els))

    @staticmethod
    def _eref(value: Any, els: tuple[str, ...]) -> tuple[tuple[str, float], ...]:
        if value is None:
            return tuple((e, 0.0) for e in els)
        if isinstance(value, (tuple, list)) and all(isinstance(x, (tuple, list)) and len(x) == 2 for x in value):
            value = dict(value)
        if isinstance(value, Mapping):
            out = dict.fromkeys(els, 0.0)
            for k, v in value.items():
                if k not in els:
                    raise _err("Eref", value, f"{k!r} is not one of the elements {list(els)}")
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
                    raise _err(f"Eref[{k}]", v, "must be a finite number")
                out[k] = float(v)
            return tuple((e, out[e]) for e in els)
        raise _err("Eref", value, "must be a mapping element -> energy")

    # ------------------------------------------------------------------ accessors
    @property
    def nelements(self) -> int:
        return len(self.elements)

    def _pair_value(self, table: PairTable, zi: int, zj: int) -> float:
        n = len(self.elements)
        if not (_is_int(zi) and _is_int(zj) and 0 <= zi < n and 0 <= zj < n):
            raise SpecError(f"species indices must be in 0..{n - 1}, got ({zi!r}, {zj!r})")
        i, j = min(zi, zj), max(zi, zj)
        # PairTable order: (0,0), (0,1), ..., (0,n-1), (1,1), ...
        idx = i * n - i * (i - 1) // 2 + (j - i)
        return table[idx][1]

    def rcut_pair(self, zi: int, zj: int) -> float:
        """Many-body cutoff of the bond (species indices zi, zj)."""
        return self._pair_value(self.rcut, zi, zj)

    def pair_rcut_pair(self, zi: int, zj: int) -> float:
        """Pair-basis cutoff of the bond (species indices zi, zj)."""
        return self._pair_value(self.pair_rcut, zi, zj)

    def r0_pair(self, zi: int, zj: int) -> float:
        """Bond length r0 used by the transforms of the bond (zi, zj)."""
        return self._pair_value(self.r0, zi, zj)

    @property
    def rcut_max(self) -> float:
        """Largest cutoff of any bond, many-body or pair (for neighbour lists)."""
        return max(max(v for _, v in self.rcut), max(v for _, v in self.pair_rcut))

    def eref(self, z: int) -> float:
        """Reference (isolated atom) energy of species index z."""
        return self.Eref[z][1]

    def maxdeg(self, nu: int) -> Number:
        """Total degree bound D_nu of correlation order nu (1-based)."""
        if not _is_int(nu) or not 1 <= nu <= self.order:
            raise SpecError(f"correlation order must be in 1..{self.order}, got {nu!r}")
        return self.totaldegree[nu - 1]

    @property
    def wL_exact(self) -> Fraction:
        """wL as an exact fraction (its shortest decimal representation), used by the selection."""
        return Fraction(repr(self.wL))

    @property
    def nmax(self) -> int:
        """Number of many-body radial functions R_1..R_nmax: floor(max totaldegree) (n >= 1, l = 0)."""
        return int(math.floor(max(self.totaldegree)))

    @property
    def lmax(self) -> int:
        """Largest l any selected basis function uses.

        nu = 1 functions have l = 0.  For nu >= 2 a rotation invariant needs
        l_max <= sum of the other l (triangle rule), so sum_t l_t >= 2 l and the degree is at
        least nu + 2 wL l; (l, l, 0, ...) attains it.  Hence
        lmax = max_{nu >= 2} floor((D_nu - nu) / (2 wL)).  This equals the largest l in
        :func:`acegen.symbolic.selection.select_multisets` (tested).
        """
        w = self.wL_exact
        best = 0
        for nu in range(2, self.order + 1):
            d = Fraction(repr(float(self.totaldegree[nu - 1]))) - nu
            if d >= 0:
                best = max(best, int(math.floor(d / (2 * w))))
        return best

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict:
        """A JSON-able dict; ``BasisSpec.from_dict(spec.to_dict()) == spec`` exactly."""
        return {
            "format": SPEC_FORMAT,
            "elements": list(self.elements),
            "order": self.order,
            "totaldegree": list(self.totaldegree),
            "wL": self.wL,
            "r0": _table_to_json(self.r0),
            "rcut": _table_to_json(self.rcut),
            "pair_rcut": _table_to_json(self.pair_rcut),
            "pair_degree": self.pair_degree,
            "transform": list(self.transform),
            "pair_transform": list(self.pair_transform),
            "envelope": list(self.envelope),
            "pair_envelope": list(self.pair_envelope),
            "purification": self.purification,
            "Eref": dict(self.Eref),
            "radial": self.radial,
        } | ({} if self.angular == "spherical" else {"angular": self.angular})

    @classmethod
    def from_dict(cls, d: Mapping) -> "BasisSpec":
        """Inverse of :meth:`to_dict` (also accepts hand-written dicts with defaults omitted)."""
        if not isinstance(d, Mapping):
            raise SpecError(f"BasisSpec.from_dict: expected a mapping, got {type(d).__name__}")
        d = dict(d)
        fmt = d.pop("format", SPEC_FORMAT)
        if fmt != SPEC_FORMAT:
            raise _err("format", fmt, f"unsupported format (expected {SPEC_FORMAT!r})")
        known = {"elements", "order", "totaldegree", "wL", "r0", "rcut", "pair_rcut", "pair_degree",
                 "transform", "pair_transform", "envelope", "pair_envelope", "purification", "Eref",
                 "radial", "angular"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise _err(unknown[0], d[unknown[0]], "unknown field")
        for req in ("elements", "order", "totaldegree"):
            if req not in d:
                raise SpecError(f"BasisSpec.{req}: missing")
        for k in ("transform", "pair_transform", "envelope", "pair_envelope"):
            if isinstance(d.get(k), list):
                d[k] = tuple(d[k])
        if isinstance(d.get("elements"), list):
            d["elements"] = tuple(d["elements"])
        if isinstance(d.get("totaldegree"), list):
            d["totaldegree"] = tuple(d["totaldegree"])
        args = {k: d.pop(k) for k in ("elements", "order", "totaldegree")}
        return cls(**args, **d)

    def to_json(self) -> str:
        """Canonical JSON text (sorted keys, no whitespace)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def signature(self) -> str:
        """sha256 hex digest of the canonical JSON."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def __repr__(self) -> str:
        d = self.to_dict()
        parts = [f"elements={tuple(self.elements)!r}", f"order={self.order}",
                 f"totaldegree={tuple(self.totaldegree)!r}", f"wL={self.wL!r}"]
        for k in ("r0", "rcut", "pair_rcut"):
            v = d[k]
            parts.append(f"{k}={v!r}" if not isinstance(v, list) else
                         f"{k}={{{', '.join(f'{a}-{b}: {x!r}' for a, b, x in v)}}}")
        parts += [f"pair_degree={self.pair_degree}", f"transform={self.transform!r}",
                  f"pair_transform={self.pair_transform!r}", f"envelope={self.envelope!r}",
                  f"pair_envelope={self.pair_envelope!r}", f"purification={self.purification!r}"]
        if self.angular != "spherical":
            parts.append(f"angular={self.angular!r}")
        if any(v for _, v in self.Eref):
            parts.append(f"Eref={d['Eref']!r}")
        return f"BasisSpec({', '.join(parts)})"


def split_coefficients(coefficients, n_manybody: int, n_pair: int):
    """(many-body, pair) coefficient arrays of a basis with ``n_manybody`` many-body and
    ``n_pair`` pair functions, from a flat vector (many-body then pair) or a dict
    {'manybody', 'pair'}; SpecError on a wrong length or a non-finite value."""
    if isinstance(coefficients, dict):
        mb = np.asarray(coefficients.get("manybody", np.zeros(n_manybody)), dtype=float)
        pr = np.asarray(coefficients.get("pair", np.zeros(n_pair)), dtype=float)
    else:
        c = np.asarray(coefficients, dtype=float).ravel()
        if c.shape[0] != n_manybody + n_pair:
            raise SpecError(
                f"coefficients: expected {n_manybody + n_pair} values ({n_manybody} many-body + "
                f"{n_pair} pair), got {c.shape[0]}"
            )
        mb, pr = c[:n_manybody], c[n_manybody:]
    if mb.shape != (n_manybody,) or pr.shape != (n_pair,):
        raise SpecError(
            f"coefficients: expected {n_manybody} many-body and {n_pair} pair values, "
            f"got {mb.shape} and {pr.shape}"
        )
    if not (np.isfinite(mb).all() and np.isfinite(pr).all()):
        raise SpecError("coefficients: non-finite value")
    return mb, pr
