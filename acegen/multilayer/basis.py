"""Symbolic lowering of a :class:`~acegen.multilayer.spec.MultilayerSpec`.

Layer 1 is ``acegen.basis.lower(spec.layers[0])`` (a :class:`~acegen.basis.CoupledBasis`).
A layer n > 1 is an :class:`IndicatorLayerBasis`: its one-particle functions are labelled
(z, n, l, k) -- R_n(r_ji) Y_lm(r̂_ji) δ(z, z_j) T_k(θ_j) -- with (n, k) a generalised radial
index.  T_k(θ_j) is a rotation-invariant scalar, so the coupling runs over l exactly as for
plain ACE: the multisets come from :func:`acegen.symbolic.selection.select_multisets` with
``kmax``/``wK`` and the invariants from :func:`acegen.symbolic.coupling.invariants_float`
(identical factors are those with equal (z, n, l, k)).  Every coupled function is further
multiplied by the on-site factor T_k0(θ_i), k0 = 0..k0max, within the same degree budget:

    B_v(i) = T_k0(θ_i) Σ_M C_M Π_t A_i[z_t, n_t, l_t, k_t, M_t],
    Σ_t (n_t + wL l_t + wK k_t) + wK k0 <= D_ν.

The pair basis of every layer is the plain one of its BasisSpec (k = 0).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from ..basis import CoupledBasis, FunctionSet, PairFunction
from ..basis import lower as lower_basis
from ..errors import SpecError
from .spec import MultilayerSpec

__all__ = ["IndicatorFunction", "IndicatorLayerBasis", "MultilayerBasis", "lower_multilayer", "lower"]


@dataclass(frozen=True, eq=False)
class IndicatorFunction:
    """B = T_k0(θ_i) Σ_M coeffs[M] Π_t A[factors[t], m = mtuples[M, t]] for atoms of species z0;
    ``factors`` are sorted (z, n, l, k) labels."""

    z0: int
    factors: tuple[tuple[int, int, int, int], ...]
    k0: int
    mtuples: np.ndarray  # (K, ν) int
    coeffs: np.ndarray  # (K,) float
    index: int = 0

    @property
    def order(self) -> int:
        return len(self.factors)


def _split(n_many: int, n_pair: int, coefficients, what: str):
    if isinstance(coefficients, dict):
        mb = np.asarray(coefficients.get("manybody", np.zeros(n_many)), dtype=float)
        pr = np.asarray(coefficients.get("pair", np.zeros(n_pair)), dtype=float)
    else:
        c = np.asarray(coefficients, dtype=float).ravel()
        if c.shape[0] != n_many + n_pair:
            raise SpecError(f"{what}: expected {n_many + n_pair} values ({n_many} many-body + {n_pair} pair), "
                            f"got {c.shape[0]}")
        mb, pr = c[:n_many], c[n_many:]
    if mb.shape != (n_many,) or pr.shape != (n_pair,):
        raise SpecError(f"{what}: expected {n_many} many-body and {n_pair} pair values, got {mb.shape} and {pr.shape}")
    if not (np.isfinite(mb).all() and np.isfinite(pr).all()):
        raise SpecError(f"{what}: non-finite value")
    return mb, pr


def _split_dense(n_many: int, n_pair: int, P: int, coefficients):
    """Like :func:`_split` with P columns: returns (n_many, P) and (n_pair, P) arrays."""
    try:
        if isinstance(coefficients, dict):
            mb = np.asarray(coefficients.get("manybody", np.zeros((n_many, P))), dtype=float)
            pr = np.asarray(coefficients.get("pair", np.zeros((n_pair, P))), dtype=float)
        else:
            c = np.asarray(coefficients, dtype=float)
            if c.shape != (n_many + n_pair, P):
                raise SpecError(f"coefficients: expected shape ({n_many + n_pair}, {P}) ({n_many} many-body + "
                                f"{n_pair} pair rows, one column per density), got {c.shape}")
            mb, pr = c[:n_many], c[n_many:]
    except (TypeError, ValueError) as e:
        if isinstance(e, SpecError):
            raise
        raise SpecError(f"coefficients: not a numeric array ({e})") from None
    if mb.shape != (n_many, P) or pr.shape != (n_pair, P):
        raise SpecError(f"coefficients: expected ({n_many}, {P}) many-body and ({n_pair}, {P}) pair values, "
                        f"got {mb.shape} and {pr.shape}")
    if not (np.isfinite(mb).all() and np.isfinite(pr).all()):
        raise SpecError("coefficients: non-finite value")
    return mb, pr


@dataclass(frozen=True, eq=False)
class IndicatorLayerBasis(FunctionSet):
    """The basis of a layer n > 1 (see the module docstring)."""

    spec: object  # the layer's BasisSpec
    kmax: int
    k0max: int
    wK: float
    functions: tuple[IndicatorFunction, ...]
    pair: tuple[PairFunction, ...]
    lmax: int
    nmax: int
    npair: int
    _cache: dict = field(default_factory=dict, repr=False)

    def split_params(self, coefficients):
        """A flat vector (many-body then pair) or a dict {'manybody', 'pair'} → (mb, pair)."""
        return _split(len(self), len(self.pair), coefficients, "coefficients")

    def __repr__(self) -> str:
        counts = {int(o): int(c) for o, c in zip(*np.unique(self.orders, return_counts=True))}
        return (f"IndicatorLayerBasis({len(self)} functions, by order {counts}, pair {len(self.pair)}, "
                f"elements {list(self.elements)}, lmax {self.lmax}, kmax {self.kmax}, k0max {self.k0max})")

    def to_text(self) -> str:
        lines = [repr(self)]
        for q, f in enumerate(self.functions):
            fac = " ".join(f"({self.elements[z]},{n},{l},k{k})" for z, n, l, k in f.factors)
            lines.append(f"  B[{q}] z0={self.elements[f.z0]} ν={f.order} T{f.k0}(θi) {fac} #{f.index} "
                         f"terms={len(f.coeffs)}")
        return "\n".join(lines)

    def signature(self) -> str:
        if "signature" not in self._cache:
            h = hashlib.sha256(self.spec.signature().encode())
            h.update(json.dumps([self.kmax, self.k0max, repr(self.wK)]).encode())
            for f in self.functions:
                h.update(json.dumps([f.z0, f.factors, f.k0, f.index]).encode())
                h.update(np.ascontiguousarray(f.mtuples, dtype=np.int64).tobytes())
                h.update(np.ascontiguousarray(f.coeffs, dtype=np.float64).tobytes())
            self._cache["signature"] = h.hexdigest()
        return self._cache["signature"]


@dataclass(frozen=True, eq=False)
class MultilayerBasis:
    """The lowered bases of all layers: ``layers[0]`` a CoupledBasis, the others
    IndicatorLayerBasis.  ``len`` counts many-body functions over all layers."""

    spec: MultilayerSpec
    layers: tuple

    def __len__(self) -> int:
        return sum(len(b) for b in self.layers)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def orders(self) -> np.ndarray:
        """Correlation orders of every many-body function, layer by layer."""
        return np.concatenate([b.orders for b in self.layers])

    @property
    def elements(self) -> tuple[str, ...]:
        return self.spec.elements

    @property
    def n_params(self) -> tuple[int, ...]:
        """Number of linear parameters of each layer (many-body + pair)."""
        return tuple(b.n_params for b in self.layers)

    def split_params(self, coefficients) -> list[tuple[np.ndarray, np.ndarray]]:
        """One coefficient set per layer (flat vector or {'manybody', 'pair'} dict each)
        → a list of (many-body, pair) arrays.  With ``spec.ndensity`` P > 1 the last layer's
        set has one column per density: shape (n_params, P), or a dict of (n, P) arrays."""
        if isinstance(coefficients, dict) or not isinstance(coefficients, (list, tuple)):
            raise SpecError("coefficients: expected one coefficient set per layer (a list)")
        if len(coefficients) != self.n_layers:
            raise SpecError(f"coefficients: expected {self.n_layers} layers, got {len(coefficients)}")
        out = []
        P = self.spec.ndensity
        for n, (b, c) in enumerate(zip(self.layers, coefficients)):
            try:
                if n == self.n_layers - 1 and P > 1:
                    out.append(_split_dense(len(b), len(b.pair), P, c))
                else:
                    out.append(b.split_params(c))
            except SpecError as e:
                raise SpecError(f"layer {n + 1}: {e}") from None
        return out

    def __repr__(self) -> str:
        return (f"MultilayerBasis({self.n_layers} layers, functions per layer "
                f"{[len(b) for b in self.layers]}, elements {list(self.elements)})")

    def to_text(self) -> str:
        return "\n".join([repr(self)] + [f"layer {n + 1}: " + b.to_text() for n, b in enumerate(self.layers)])

    def signature(self) -> str:
        h = hashlib.sha256(self.spec.signature().encode())
        for b in self.layers:
            h.update(b.signature().encode())
        return h.hexdigest()


def lower_indicator_layer(spec, kmax: int, k0max: int, wK: float) -> IndicatorLayerBasis:
    """The basis of a layer n > 1 on the BasisSpec ``spec`` (purification 'none')."""
    from ..symbolic import coupling, radial, selection

    if spec.purification != "none":
        raise SpecError("MultilayerSpec: layers after the first must use purification='none'")
    w, wk = spec.wL_exact, Fraction(repr(float(wK)))
    multisets = selection.select_multisets(spec, kmax=kmax, wK=wK)
    per_multiset = []
    for ms in multisets:
        ls = tuple(f[2] for f in ms)
        classes = []
        for t, f in enumerate(ms):
            classes.append(classes[t - 1] if t > 0 and ms[t - 1] == f else t)
        deg = sum((f[1] + w * f[2] + wk * f[3] for f in ms), Fraction(0))
        dnu = Fraction(repr(float(spec.totaldegree[len(ms) - 1])))
        k0s = [k0 for k0 in range(k0max + 1) if deg + wk * k0 <= dnu]
        per_multiset.append((ms, k0s, coupling.invariants_float(ls, tuple(classes))))
    functions = []
    for z0 in range(spec.nelements):
        for ms, k0s, invs in per_multiset:
            for k0 in k0s:
                for q, (mt, c) in enumerate(invs):
                    functions.append(IndicatorFunction(z0=z0, factors=tuple(ms), k0=k0,
                                                       mtuples=np.asarray(mt, dtype=np.int64),
                                                       coeffs=np.asarray(c, dtype=float), index=q))
    lmax = max((f[2] for fn in functions for f in fn.factors), default=0)
    nmax = radial.manybody_radial_slp(spec, 0, 0)[1]
    npair = radial.pair_radial_slp(spec, 0, 0)[1]
    nel = spec.nelements
    pair = tuple(PairFunction(z0, zj, n) for z0 in range(nel) for zj in range(nel) for n in range(1, npair + 1))
    return IndicatorLayerBasis(spec=spec, kmax=kmax, k0max=k0max, wK=wK, functions=tuple(functions), pair=pair,
                               lmax=lmax, nmax=nmax, npair=npair)


_MEMORY: dict = {}


def lower_multilayer(mlspec: MultilayerSpec, *, progress: bool | None = None, cache: bool = True) -> MultilayerBasis:
    """Lower every layer of ``mlspec`` (see the module docstring)."""
    if not isinstance(mlspec, MultilayerSpec):
        raise SpecError(f"lower_multilayer: expected an acegen.MultilayerSpec, got {type(mlspec).__name__}")
    if cache and mlspec in _MEMORY:
        return _MEMORY[mlspec]
    layers: list = [lower_basis(mlspec.layers[0], progress=progress, cache=cache)]
    for s in mlspec.layers[1:]:
        layers.append(lower_indicator_layer(s, mlspec.kmax, mlspec.k0max, mlspec.wK))
    basis = MultilayerBasis(spec=mlspec, layers=tuple(layers))
    if cache:
        if len(_MEMORY) >= 8:
            del _MEMORY[next(iter(_MEMORY))]
        _MEMORY[mlspec] = basis
    return basis


def lower(spec, **options) -> CoupledBasis | MultilayerBasis:
    """``acegen.lower``: a BasisSpec → CoupledBasis, a MultilayerSpec → MultilayerBasis."""
    if isinstance(spec, MultilayerSpec):
        return lower_multilayer(spec, **options)
    return lower_basis(spec, **options)
