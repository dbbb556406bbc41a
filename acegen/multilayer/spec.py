"""The specification of a multilayer ACE model (Bochkarev, Lysogorskiy, Ortner, Csányi, Drautz 2022).

:class:`MultilayerSpec` is a frozen, validated sequence of :class:`~acegen.spec.BasisSpec`
layers plus the parameters of the indicator expansion (see docs/multilayer.md):

* layer 1 is plain ACE on ``layers[0]``;
* layer n > 1 uses the one-particle functions R_n(r_ji) Y_lm(r̂_ji) δ(z, z_j) T_k(θ_j^(n)),
  0 <= k <= ``kmax``, and an on-site factor T_k0(θ_i^(n)), 0 <= k0 <= ``k0max``, with the degree
  Σ_t (n_t + wL l_t + wK k_t) + wK k0 <= D_ν of ``layers[n-1]``;
* θ_i^(n+1) = tanh(φ_i^(n)) (``indicator="tanh"``), one scalar per atom and inner layer;
* E_i = Eref(Z_i) + Σ_p w_p F(φ_i^(p, n_layers); m_p) with P = ``ndensity`` densities of the
  last layer and PACE's embeddings (``linear``: E_i = Eref + φ_i^(1, n_layers));
  Eref of the last layer.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import SpecError
from ..spec import BasisSpec

__all__ = ["MultilayerSpec", "MULTILAYER_SPEC_FORMAT", "INDICATORS", "EMBEDDINGS", "KMAX_LIMIT", "MAX_LAYERS"]

MULTILAYER_SPEC_FORMAT = "acegen.MultilayerSpec/1"
INDICATORS = ("tanh",)
EMBEDDINGS = ("linear", "FinnisSinclair", "FinnisSinclairShiftedScaled")
MAX_DENSITIES = 8
KMAX_LIMIT = 16  # Chebyshev degrees beyond this resolve nothing a tanh indicator carries
MAX_LAYERS = 8


def _err(field: str, value: Any, why: str) -> SpecError:
    return SpecError(f"MultilayerSpec.{field}: {why}, got {value!r}")


def _small_int(field: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _err(field, v, f"must be an integer in {lo}..{hi}")
    return int(v)


@dataclass(frozen=True)
class MultilayerSpec:
    """Specification of a multilayer ACE model with a scalar tanh indicator.

    Parameters
    ----------
    layers: one :class:`BasisSpec` per layer (1..MAX_LAYERS), all with the same elements in
        the same order.  Layers 2.. must use ``purification="none"`` (purification of the
        T_k(θ_j) factors is not defined yet) and Eref = 0 (only the last layer's Eref enters
        the energy, the inner layers give indicators).
    kmax: largest Chebyshev degree k of the neighbours' indicator factors T_k(θ_j) (0..16).
    k0max: largest degree k0 of the on-site factor T_k0(θ_i) (default: ``kmax``).
    wK: weight of k (and k0) in the degree budget (> 0; default 1).
    indicator: the map φ → θ of the next layer; only "tanh".
    embedding: the output layer's embedding: "linear" (E_i = Eref + φ_i, one density),
        "FinnisSinclair" or "FinnisSinclairShiftedScaled" (PACE's, docs/pace.md).
    embedding_params: (w_0, m_0, w_1, m_1, ...), one pair per density of the last layer
        (ndensity = len / 2, 1..8; m_p > 0); "linear" takes only (1, 1).
    """

    layers: tuple[BasisSpec, ...]
    kmax: int = 2
    k0max: int | None = None
    wK: float = 1.0
    indicator: str = "tanh"
    embedding: str = "linear"
    embedding_params: tuple[float, ...] = (1.0, 1.0)

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        layers = self.layers
        if isinstance(layers, BasisSpec) or not isinstance(layers, (tuple, list)):
            raise _err("layers", layers, "must be a sequence of acegen.BasisSpec")
        if not 1 <= len(layers) <= MAX_LAYERS:
            raise _err("layers", f"{len(layers)} layers", f"needs 1..{MAX_LAYERS} layers")
        for n, s in enumerate(layers):
            if not isinstance(s, BasisSpec):
                raise _err(f"layers[{n}]", type(s).__name__, "must be an acegen.BasisSpec")
        for n, s in enumerate(layers):
            if s.angular != "spherical":
                raise _err(f"layers[{n}].angular", s.angular,
                           "multilayer layers use the spherical angular basis (Cartesian layers are not supported)")
        els = layers[0].elements
        for n, s in enumerate(layers[1:], start=1):
            if s.elements != els:
                raise _err(f"layers[{n}].elements", s.elements, f"must equal layers[0].elements {els!r}")
            if s.purification != "none":
                raise _err(f"layers[{n}].purification", s.purification,
                           "layers after the first must use purification='none'")
        for n, s in enumerate(layers[:-1]):
            if any(v != 0.0 for _, v in s.Eref):
                raise _err(f"layers[{n}].Eref", dict(s.Eref),
                           "only the last layer's Eref enters the energy; inner layers need Eref = 0")
        set_("layers", tuple(layers))
        set_("kmax", _small_int("kmax", self.kmax, 0, KMAX_LIMIT))
        set_("k0max", self.kmax if self.k0max is None else _small_int("k0max", self.k0max, 0, KMAX_LIMIT))
        wk = self.wK
        if isinstance(wk, bool) or not isinstance(wk, (int, float)) or not math.isfinite(float(wk)) or wk <= 0:
            raise _err("wK", wk, "must be a positive finite number")
        set_("wK", float(wk))
        if self.indicator not in INDICATORS:
            raise _err("indicator", self.indicator, f"must be one of {list(INDICATORS)}")
        if self.embedding not in EMBEDDINGS:
            raise _err("embedding", self.embedding, f"must be one of {list(EMBEDDINGS)}")
        ep = self.embedding_params
        if isinstance(ep, str) or not isinstance(ep, (tuple, list)) or not ep or len(ep) % 2 \
                or len(ep) > 2 * MAX_DENSITIES:
            raise _err("embedding_params", ep, f"must be (w_0, m_0, w_1, m_1, ...), 1..{MAX_DENSITIES} pairs")
        for x in ep:
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(float(x)):
                raise _err("embedding_params", ep, "must hold finite numbers")
        ep = tuple(float(x) for x in ep)
        if any(m <= 0 for m in ep[1::2]):
            raise _err("embedding_params", ep, "needs every m_p > 0")
        if self.embedding == "linear" and ep != (1.0, 1.0):
            raise _err("embedding_params", ep, "the linear embedding has one density and parameters (1, 1)")
        set_("embedding_params", ep)

    # ------------------------------------------------------------------ accessors
    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def elements(self) -> tuple[str, ...]:
        return self.layers[0].elements

    @property
    def nelements(self) -> int:
        return len(self.elements)

    @property
    def ndensity(self) -> int:
        """Number of densities φ^(p) of the last layer (inner layers have one, the indicator's)."""
        return len(self.embedding_params) // 2

    @property
    def Eref(self) -> tuple[tuple[str, float], ...]:
        """Reference energies (those of the last layer)."""
        return self.layers[-1].Eref

    @property
    def rcut_max(self) -> float:
        """Largest cutoff of any layer (for one neighbour list serving all layers)."""
        return max(s.rcut_max for s in self.layers)

    @property
    def receptive_field(self) -> float:
        """Σ over layers of the largest cutoff: E_i depends on no atom farther than this."""
        return sum(s.rcut_max for s in self.layers)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict:
        """A JSON-able dict; ``MultilayerSpec.from_dict(s.to_dict()) == s`` exactly."""
        return {
            "format": MULTILAYER_SPEC_FORMAT,
            "layers": [s.to_dict() for s in self.layers],
            "kmax": self.kmax,
            "k0max": self.k0max,
            "wK": self.wK,
            "indicator": self.indicator,
            "embedding": self.embedding,
            "embedding_params": list(self.embedding_params),
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> "MultilayerSpec":
        if not isinstance(d, Mapping):
            raise SpecError(f"MultilayerSpec.from_dict: expected a mapping, got {type(d).__name__}")
        d = dict(d)
        fmt = d.pop("format", MULTILAYER_SPEC_FORMAT)
        if fmt != MULTILAYER_SPEC_FORMAT:
            raise _err("format", fmt, f"unsupported format (expected {MULTILAYER_SPEC_FORMAT!r})")
        unknown = sorted(set(d) - {"layers", "kmax", "k0max", "wK", "indicator", "embedding", "embedding_params"})
        if unknown:
            raise _err(unknown[0], d[unknown[0]], "unknown field")
        if "layers" not in d:
            raise SpecError("MultilayerSpec.layers: missing")
        layers = d.pop("layers")
        if not isinstance(layers, (list, tuple)):
            raise _err("layers", layers, "must be a list of BasisSpec dicts")
        specs = []
        for n, ld in enumerate(layers):
            try:
                specs.append(BasisSpec.from_dict(ld))
            except SpecError as e:
                raise SpecError(f"MultilayerSpec.layers[{n}]: {e}") from None
        if isinstance(d.get("embedding_params"), list):
            d["embedding_params"] = tuple(d["embedding_params"])
        return cls(layers=tuple(specs), **d)

    def to_json(self) -> str:
        """Canonical JSON text (sorted keys, no whitespace)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def signature(self) -> str:
        """sha256 hex digest of the canonical JSON."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def __repr__(self) -> str:
        return (f"MultilayerSpec({self.n_layers} layers, elements={self.elements!r}, kmax={self.kmax}, "
                f"k0max={self.k0max}, wK={self.wK!r}, indicator={self.indicator!r}, embedding={self.embedding!r}, "
                f"embedding_params={self.embedding_params!r})")
