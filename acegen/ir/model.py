"""The lowered model: the IR every backend consumes.

A :class:`ModelIR` describes, for every central species, how the per-atom energy is computed
from the neighbour environment, in four typed pieces:

1. ``radial[(zi, zj)]`` — a :class:`RadialBlock`: the radial functions R_c(r) of a bond
   (an analytic :class:`~acegen.ir.slp.SLP` or a cubic :class:`SplineTable`), with cutoff.
2. ``angular`` — the real spherical harmonics Y_lm(r̂) up to ``lmax`` (an SLP over the unit
   vector, outputs and gradients), one documented convention (docs/conventions.md); with
   ``angular_kind == "cartesian"`` the Cartesian monomials r̂^α, |α| <= lmax, instead
   (docs/cartesian.md; :func:`angular_offset` and :func:`angular_width` give the layout).
3. ``species[zi].channels`` — the one-particle basis: each :class:`Channel` is
   (neighbour species zj, radial function c, l) and owns the 2l+1 entries
   A[offset + l + m] = Σ_j R_c(r_ij) Y_lm(r̂_ij) δ(z_j, zj) (a Cartesian channel the
   (l+1)(l+2)/2 entries A[offset + q] = Σ_j R_c(r_ij) r̂_ij^α, α the q-th monomial of degree l).  A channel of ``zj ==``
   :data:`ANY` sums over the neighbours of every species, each with the radial function c of
   its own bond (zi, z_j): with an element embedding (GRACE-FS) the bonds share one spline
   table and differ only by per-function ``weights`` (:class:`RadialBlock`).
4. ``species[zi].monomials`` / ``coeffs`` — the product basis with the coefficients already
   folded in (c̃ = Cᵀθ): densities ρ_p = Σ_k coeffs[k, p] Π_{a ∈ monomials[k]} A[a], and the
   energy E_i = E0 + Σ_p F_p(ρ_p) (+ core repulsion terms).
5. optionally ``species[zi].projections`` — :class:`ProjectionRows`: basis functions b_f
   (e.g. PACE's B-basis, for the extrapolation grade γ) as linear combinations of monomials of
   the same A.  They do not enter the energy nor the signature of the energy model;
   :meth:`ModelIR.projection_ir` makes the separate variant whose kernel outputs, per atom,
   (ρ_0 … ρ_{nd−1}, b_0 … b_{N−1}, F'_0(ρ_0) … F'_{nd−1}(ρ_{nd−1})) instead of the energy
   (``output == "projections"``).
6. indicator inputs (:attr:`ModelIR.theta`, a multilayer layer n > 1, docs/multilayer.md):
   radial blocks whose SLPs also take the neighbour's indicator θ_j, and species programs
   with an on-site degree (``onsite``) whose coefficient columns are combined with T_k0(θ_i)
   inside the embedding; the kernel also returns dE_i/dθ_i and dE_i/dθ_j.

Everything is plain data (numbers, tuples, numpy arrays, SLPs): validated on construction,
printable with :meth:`ModelIR.to_text` and hashable with :meth:`ModelIR.signature`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

import numpy as np

from ..errors import InternalError, SpecError
from .slp import SLP

ELEMENT_RE = re.compile(r"^[A-Z][a-z]?$")

EMBEDDINGS = ("linear", "FinnisSinclair", "FinnisSinclairShiftedScaled")
CORE_KINDS = ("none", "density", "distance", "zbl")

#: ``Channel.zj`` of a channel that accumulates over the neighbours of every species.
ANY = -1

#: The angular one-particle functions of a model: real spherical harmonics Y_lm (2l+1 per l)
#: or Cartesian monomials r̂^α (|α| = l, (l+1)(l+2)/2 per l).
ANGULAR_KINDS = ("spherical", "cartesian")


def angular_width(kind: str, l: int) -> int:
    """Angular functions of degree l: 2l+1 harmonics or (l+1)(l+2)/2 monomials."""
    return 2 * l + 1 if kind == "spherical" else (l + 1) * (l + 2) // 2


def angular_offset(kind: str, l: int) -> int:
    """Index of the first angular function of degree l among the angular SLP's outputs:
    l² (Y_lm at l² + l + m) or l(l+1)(l+2)/6 (monomials, acegen.symbolic.cartesian order)."""
    return l * l if kind == "spherical" else l * (l + 1) * (l + 2) // 6


def n_angular(kind: str, lmax: int) -> int:
    """Angular functions of degree <= lmax: (lmax+1)² or (lmax+1)(lmax+2)(lmax+3)/6."""
    return angular_offset(kind, lmax + 1)


def _finite(x, what):
    a = np.asarray(x, dtype=float)
    if not np.all(np.isfinite(a)):
        raise SpecError(f"{what}: non-finite value")
    return a


@dataclass(frozen=True, eq=False)
class SplineTable:
    """Piecewise cubic radial functions on a uniform grid.

    For r in [0, rcut): bin b = floor(r / h), t = r/h - b in [0, 1),
    f(r) = c0 + t (c1 + t (c2 + t c3)) and f'(r) = (c1 + t (2 c2 + 3 t c3)) / h,
    with (c0..c3) = coeffs[b, function, :].  Zero at and beyond rcut.
    """

    rcut: float
    h: float
    coeffs: np.ndarray  # (nbins, nfunc, 4)

    def __post_init__(self):
        c = _finite(self.coeffs, "SplineTable.coeffs")
        if c.ndim != 3 or c.shape[2] != 4:
            raise InternalError(f"SplineTable.coeffs must have shape (nbins, nfunc, 4), got {c.shape}")
        if not (self.h > 0 and self.rcut > 0):
            raise SpecError("SplineTable: h and rcut must be positive")
        object.__setattr__(self, "coeffs", np.ascontiguousarray(c))

    @property
    def nbins(self) -> int:
        return self.coeffs.shape[0]

    @property
    def nfunc(self) -> int:
        return self.coeffs.shape[1]

    def evaluate(self, r):
        r = np.asarray(r, dtype=float)
        x = r / self.h
        b = np.floor(x).astype(np.int64)
        inside = (r < self.rcut) & (b < self.nbins) & (b >= 0)
        b = np.clip(b, 0, self.nbins - 1)
        t = (x - b)[..., None]
        c = self.coeffs[b]  # (..., nfunc, 4)
        f = c[..., 0] + t * (c[..., 1] + t * (c[..., 2] + t * c[..., 3]))
        df = (c[..., 1] + t * (2 * c[..., 2] + 3 * t * c[..., 3])) / self.h
        m = inside[..., None]
        return np.where(m, f, 0.0), np.where(m, df, 0.0)

    def signature(self) -> str:
        """sha256 of the table (computed once: a table may be shared by many radial blocks)."""
        cached = self.__dict__.get("_signature")
        if cached is None:
            h = hashlib.sha256()
            h.update(np.float64([self.rcut, self.h]).tobytes())
            h.update(self.coeffs.tobytes())
            cached = h.hexdigest()
            object.__setattr__(self, "_signature", cached)
        return cached


@dataclass(frozen=True, eq=False)
class RadialBlock:
    """The radial functions of one bond (central species zi, neighbour species zj).

    Exactly one of ``slp`` (inputs ``('r',)``, outputs R_0..R_{n-1} then dR_0..dR_{n-1})
    or ``spline`` is given.  A radial block of a multilayer layer n > 1 (:attr:`theta`) has
    an SLP of the inputs ``('r', 'theta')`` -- the bond length and the neighbour's indicator
    θ_j -- with outputs R_c(r, θ_j), then ∂R_c/∂r, then ∂R_c/∂θ_j (R_c = R_n(r) T_k(θ_j)).
    ``nfunc`` functions; all vanish for r >= rcut (the kernel also
    skips neighbours beyond rcut).  ``core`` is the index of the core-repulsion function
    φ_core among them, or None.  ``weights`` (optional, ``(nfunc,)``, spline blocks only):
    the bond's functions are weights[c] · table_c(r), so bonds that differ only by a factor
    per function (an element embedding) share one :class:`SplineTable` object.
    """

    zi: int
    zj: int
    rcut: float
    nfunc: int
    slp: SLP | None = None
    spline: SplineTable | None = None
    core: int | None = None
    # inner cutoff (zbl): r_in, delta_in of this bond
    r_in: float = 0.0
    delta_in: float = 0.0
    weights: np.ndarray | None = None

    def __post_init__(self):
        if self.weights is not None:
            w = _finite(self.weights, f"RadialBlock({self.zi},{self.zj}).weights").reshape(-1)
            if w.shape != (self.nfunc,):
                raise InternalError(f"RadialBlock({self.zi},{self.zj}): weights must have shape ({self.nfunc},)")
            if self.spline is None:
                raise InternalError(f"RadialBlock({self.zi},{self.zj}): weights need a spline table")
            w = np.ascontiguousarray(w)
            w.setflags(write=False)
            object.__setattr__(self, "weights", w)
        if (self.slp is None) == (self.spline is None):
            raise InternalError("RadialBlock: give exactly one of slp or spline")
        if not (np.isfinite(self.rcut) and self.rcut > 0):
            raise SpecError(f"RadialBlock({self.zi},{self.zj}): cutoff must be positive, got {self.rcut}")
        if self.slp is not None and self.slp.inputs not in (("r",), ("r", "theta")):
            raise InternalError(f"RadialBlock: slp inputs must be ('r',) or ('r', 'theta'), got {self.slp.inputs}")
        if self.slp is not None and len(self.slp.outputs) != (3 if self.theta else 2) * self.nfunc:
            raise InternalError("RadialBlock: slp must output nfunc values and nfunc derivatives"
                                + (" per input" if self.theta else ""))
        if self.spline is not None and self.spline.nfunc != self.nfunc:
            raise InternalError("RadialBlock: spline table has the wrong number of functions")
        if self.core is not None and not (0 <= self.core < self.nfunc):
            raise InternalError("RadialBlock: core index out of range")

    @property
    def theta(self) -> bool:
        """True when the functions also depend on the neighbour's indicator θ_j."""
        return self.slp is not None and len(self.slp.inputs) == 2

    def evaluate(self, r):
        """Values and derivatives, each of shape r.shape + (nfunc,)."""
        if self.theta:
            raise InternalError(f"RadialBlock({self.zi},{self.zj}) depends on θ_j: evaluate it with its slp")
        r = np.asarray(r, dtype=float)
        if self.spline is not None:
            v, d = self.spline.evaluate(r)
            if self.weights is not None:
                v, d = v * self.weights, d * self.weights
            return v, d
        outs = self.slp.evaluate(r=r)
        v = np.stack(outs[: self.nfunc], axis=-1)
        d = np.stack(outs[self.nfunc :], axis=-1)
        inside = (r < self.rcut)[..., None]
        return np.where(inside, v, 0.0), np.where(inside, d, 0.0)

    def to_text(self) -> str:
        kind = "spline" if self.spline is not None else "slp"
        s = f"radial[{self.zi},{self.zj}] rcut={self.rcut!r} nfunc={self.nfunc} {kind}"
        if self.spline is not None:
            s += f" h={self.spline.h!r} nbins={self.spline.nbins}"
        if self.core is not None:
            s += f" core={self.core}"
        if self.theta:
            s += " theta"
        if self.r_in or self.delta_in:
            s += f" r_in={self.r_in!r} delta_in={self.delta_in!r}"
        if self.weights is not None:
            s += f" weighted table={self.spline.signature()[:16]}"
        return s

    def signature(self) -> str:
        body = self.slp.signature() if self.slp is not None else self.spline.signature()
        if self.weights is not None:
            body += hashlib.sha256(np.asarray(self.weights, dtype="<f8").tobytes()).hexdigest()
        return hashlib.sha256((self.to_text() + body).encode()).hexdigest()


@dataclass(frozen=True)
class Channel:
    """One-particle channel: A[offset + l + m] = Σ_j R_radial(r_ij) Y_lm(r̂_ij) over j of species zj
    (over every neighbour, with the radial function of its own bond, when ``zj == ANY``).
    ``angular == "cartesian"``: A[offset + q] = Σ_j R_radial(r_ij) r̂_ij^α, α the q-th
    monomial of degree l (``acegen.symbolic.cartesian.alphas(l)``)."""

    zj: int
    radial: int
    l: int
    offset: int
    angular: str = "spherical"

    @property
    def size(self) -> int:
        """The channel's width: 2l+1 (spherical) or (l+1)(l+2)/2 (Cartesian)."""
        return angular_width(self.angular, self.l)


@dataclass(frozen=True)
class Embedding:
    """E = Σ_p F_p(ρ_p).  ``linear``: F(ρ) = ρ (ndensity 1).  FinnisSinclair /
    FinnisSinclairShiftedScaled: PACE's, with params = [w_0, m_0, w_1, m_1, ...]."""

    kind: str = "linear"
    ndensity: int = 1
    params: tuple[float, ...] = (1.0, 1.0)

    def __post_init__(self):
        if self.kind not in EMBEDDINGS:
            raise SpecError(f"unknown embedding {self.kind!r}; known: {', '.join(EMBEDDINGS)}")
        if self.ndensity < 1:
            raise SpecError("embedding: ndensity must be >= 1")
        if self.kind == "linear" and self.ndensity != 1:
            raise SpecError("linear embedding has exactly one density")
        if len(self.params) != 2 * self.ndensity:
            raise SpecError(f"embedding: expected {2 * self.ndensity} parameters, got {len(self.params)}")
        _finite(self.params, "embedding parameters")


@dataclass(frozen=True)
class CoreRepulsion:
    """Core repulsion / inner cutoff (PACE).  kind: none | density | distance | zbl.
    For density: E_i = F_ACE·fcut(ρ_core) + ρ_core with the switch between
    rho_core_cut − drho_core_cut and rho_core_cut."""

    kind: str = "none"
    rho_core_cut: float = 0.0
    drho_core_cut: float = 0.0

    def __post_init__(self):
        if self.kind not in CORE_KINDS:
            raise SpecError(f"unknown core repulsion kind {self.kind!r}")


@dataclass(frozen=True, eq=False)
class ProjectionRows:
    """Basis functions of one species as rows over monomials of A:
    b_f = Σ_k coeffs[k, f] Π_{a ∈ monomials[k]} A[a], f = 0 … n_functions − 1."""

    monomials: tuple[tuple[int, ...], ...]
    coeffs: np.ndarray  # (len(monomials), n_functions)

    def __post_init__(self):
        c = _finite(self.coeffs, "projection coefficients")
        if c.ndim != 2 or c.shape[0] != len(self.monomials):
            raise InternalError(f"projection coefficients must have shape (monomials, functions), got {c.shape}")
        object.__setattr__(self, "coeffs", np.ascontiguousarray(c))

    @property
    def n_functions(self) -> int:
        return int(self.coeffs.shape[1])


@dataclass(frozen=True, eq=False)
class SpeciesProgram:
    """Everything needed to evaluate atoms of central species ``zi``."""

    zi: int
    channels: tuple[Channel, ...]
    monomials: tuple[tuple[int, ...], ...]
    coeffs: np.ndarray  # (len(monomials), ndensity)
    embedding: Embedding = field(default_factory=Embedding)
    E0: float = 0.0
    core: CoreRepulsion = field(default_factory=CoreRepulsion)
    projections: ProjectionRows | None = None
    #: None (no on-site factor), or the largest degree k0 of the on-site factor T_k0(θ_i) of a
    #: multilayer layer n > 1: then ``coeffs`` has one column ψ_{p,k0} per density p and degree
    #: k0 (column p (onsite + 1) + k0) and the density is ρ_p = Σ_k0 T_k0(θ_i) ψ_{p,k0}
    onsite: int | None = None

    @property
    def n_columns(self) -> int:
        """Columns of ``coeffs``: ndensity, times onsite + 1 with an on-site factor."""
        return self.embedding.ndensity * (1 if self.onsite is None else self.onsite + 1)

    def __post_init__(self):
        c = _finite(self.coeffs, f"species {self.zi}: coefficients")
        if self.onsite is not None and (isinstance(self.onsite, bool) or not isinstance(self.onsite, int)
                                        or self.onsite < 0):
            raise InternalError(f"species {self.zi}: onsite must be a non-negative integer or None")
        if c.size != len(self.monomials) * self.n_columns:
            raise InternalError(f"species {self.zi}: coefficients must have shape (monomials, columns)")
        c = c.reshape(len(self.monomials), self.n_columns)
        object.__setattr__(self, "coeffs", np.ascontiguousarray(c))
        off = 0
        for ch in self.channels:
            if ch.offset != off:
                raise InternalError(f"species {self.zi}: channel offsets must be contiguous")
            off += ch.size
        for mono in self.monomials:
            if len(mono) == 0 or list(mono) != sorted(mono) or not all(0 <= a < off for a in mono):
                raise InternalError(f"species {self.zi}: bad monomial {mono}")
        if not np.isfinite(self.E0):
            raise SpecError(f"species {self.zi}: E0 not finite")
        if self.projections is not None:
            for mono in self.projections.monomials:
                if len(mono) == 0 or list(mono) != sorted(mono) or not all(0 <= a < off for a in mono):
                    raise InternalError(f"species {self.zi}: bad projection monomial {mono}")

    @property
    def n_projections(self) -> int:
        """Number of projection functions (0 without projections)."""
        return 0 if self.projections is None else self.projections.n_functions

    @property
    def n_A(self) -> int:
        return sum(ch.size for ch in self.channels)

    @property
    def max_order(self) -> int:
        return max((len(m) for m in self.monomials), default=0)


@dataclass(frozen=True, eq=False)
class ModelIR:
    elements: tuple[str, ...]
    lmax: int
    angular: SLP  # inputs (x, y, z); outputs Y (n_angular(angular_kind, lmax)) then d/dx, d/dy, d/dz of each
    radial: dict  # (zi, zj) -> RadialBlock
    species: tuple[SpeciesProgram, ...]
    name: str = "model"
    #: "energy" (E_i and dE_i/dr_ij) or "projections" (per atom ρ then b, see projection_ir)
    output: str = "energy"
    #: the angular functions ``angular`` computes and every channel uses (:data:`ANGULAR_KINDS`)
    angular_kind: str = "spherical"

    def __post_init__(self):
        if self.output not in ("energy", "projections"):
            raise InternalError(f"unknown ModelIR output {self.output!r}")
        if self.theta:
            if self.output != "energy":
                raise InternalError("a ModelIR with indicator inputs has no projection variant")
            if not all(sp_.onsite is not None for sp_ in self.species):
                raise InternalError("a ModelIR with indicator inputs needs an on-site degree for every species")
            if any(b.spline is not None for b in self.radial.values()):
                raise InternalError("a ModelIR with indicator inputs needs analytic (SLP) radial blocks")
        if self.angular_kind not in ANGULAR_KINDS:
            raise InternalError(f"unknown ModelIR angular kind {self.angular_kind!r}")
        for sp_ in self.species:
            for ch in sp_.channels:
                if ch.angular != self.angular_kind:
                    raise InternalError(f"species {sp_.zi}: channel {ch} is {ch.angular}, the model {self.angular_kind}")
        for e in self.elements:
            if not isinstance(e, str) or not ELEMENT_RE.match(e):
                raise SpecError(f"invalid element symbol {e!r}")
        if len(set(self.elements)) != len(self.elements):
            raise SpecError("duplicated element in model")
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$", self.name):
            raise SpecError(f"invalid model name {self.name!r} (letters, digits, underscore)")
        nel = len(self.elements)
        if len(self.species) != nel:
            raise InternalError("one SpeciesProgram per element required")
        for zi, sp_ in enumerate(self.species):
            if sp_.zi != zi:
                raise InternalError("species programs must be ordered by species index")
            for ch in sp_.channels:
                if ch.zj == ANY:
                    blks = [b for (a, _), b in self.radial.items() if a == zi]
                    if not blks or not all(0 <= ch.radial < b.nfunc for b in blks):
                        raise InternalError(f"species {zi}: channel {ch} needs radial function {ch.radial} in every bond")
                    if ch.l > self.lmax:
                        raise InternalError(f"channel l={ch.l} exceeds lmax={self.lmax}")
                    continue
                blk = self.radial.get((zi, ch.zj))
                if blk is None or not (0 <= ch.radial < blk.nfunc):
                    raise InternalError(f"species {zi}: channel {ch} refers to a missing radial function")
                if ch.l > self.lmax:
                    raise InternalError(f"channel l={ch.l} exceeds lmax={self.lmax}")

    @property
    def theta(self) -> bool:
        """True for a multilayer layer n > 1: the kernel takes the indicator θ_i of every centre
        and θ_j of every neighbour (radial blocks of (r, θ_j), on-site factors T_k0(θ_i)) and
        also returns dE_i/dθ_i and dE_i/dθ_j (``acegen_<name>_compute_theta``)."""
        return any(b.theta for b in self.radial.values()) or any(sp_.onsite is not None for sp_ in self.species)

    @property
    def has_projections(self) -> bool:
        return all(sp.projections is not None for sp in self.species)

    @property
    def projection_width(self) -> int:
        """Outputs per atom of the projection variant: max over species of 2·ndensity + N."""
        return max(2 * sp.embedding.ndensity + sp.n_projections for sp in self.species)

    def projection_ir(self) -> "ModelIR":
        """The projection variant: same channels and radial functions, every species's
        monomials the union of its energy and projection monomials, ``output="projections"``.
        Its kernel writes, for each atom i of species zi, row i of an (n, projection_width)
        array: ρ_0 … ρ_{nd−1} (the energy densities), b_0 … b_{N−1}, then F'_0(ρ_0) … F'_{nd−1}(ρ_{nd−1})
        (the derivatives of the species's embedding, for the full projections), zero-padded."""
        if not self.has_projections:
            raise SpecError(f"model {self.name!r} has no projection functions (PACE B-basis .yaml, GRACE-FS and linear acegen models have them)")
        if self.output == "projections":
            return self
        progs = []
        for sp in self.species:
            pr = sp.projections
            union = sorted(set(sp.monomials) | set(pr.monomials), key=lambda m: (len(m), m))
            row = {m: k for k, m in enumerate(union)}
            ce = np.zeros((len(union), sp.embedding.ndensity))
            cp = np.zeros((len(union), pr.n_functions))
            for m, c in zip(sp.monomials, sp.coeffs):
                ce[row[m]] += c
            for m, c in zip(pr.monomials, pr.coeffs):
                cp[row[m]] += c
            progs.append(SpeciesProgram(
                zi=sp.zi, channels=sp.channels, monomials=tuple(union), coeffs=ce, embedding=sp.embedding,
                E0=sp.E0, core=sp.core, projections=ProjectionRows(tuple(union), cp),
            ))
        return ModelIR(elements=self.elements, lmax=self.lmax, angular=self.angular, radial=self.radial,
                       species=tuple(progs), name=f"{self.name}_proj"[:64], output="projections",
                       angular_kind=self.angular_kind)

    @property
    def rcut_max(self) -> float:
        return max(b.rcut for b in self.radial.values())

    def rcut(self, zi: int, zj: int) -> float:
        b = self.radial.get((zi, zj))
        return 0.0 if b is None else b.rcut

    def to_text(self) -> str:
        lines = [f"model {self.name}: elements={list(self.elements)} lmax={self.lmax}"
                 + ("" if self.angular_kind == "spherical" else f" angular={self.angular_kind}")]
        for k in sorted(self.radial):
            lines.append("  " + self.radial[k].to_text())
        for s in self.species:
            lines.append(
                f"  species {s.zi} ({self.elements[s.zi]}): {len(s.channels)} channels, n_A={s.n_A}, "
                f"{len(s.monomials)} monomials (max order {s.max_order}), embedding={s.embedding.kind}"
                f"{list(s.embedding.params)}, E0={s.E0!r}, core={s.core.kind}"
                + (f", {sum(ch.zj == ANY for ch in s.channels)} channels over every neighbour species"
                   if any(ch.zj == ANY for ch in s.channels) else "")
            )
        if self.output != "energy":
            lines.append(f"  output={self.output} width={self.projection_width}")
        if self.theta:
            lines.append("  indicator inputs: on-site degrees "
                         + " ".join(str(s.onsite) for s in self.species))
        return "\n".join(lines)

    def signature(self) -> str:
        """sha256 of the whole model (computed once: the IR is immutable, and hashing the
        spline tables of a large potential takes ~0.1 s)."""
        cached = self.__dict__.get("_signature")
        if cached is None:
            cached = self._compute_signature()
            object.__setattr__(self, "_signature", cached)
        return cached

    def _compute_signature(self) -> str:
        h = hashlib.sha256()
        h.update(self.to_text().encode())
        h.update(self.angular.signature().encode())
        for k in sorted(self.radial):
            h.update(self.radial[k].signature().encode())
        for s in self.species:
            h.update(json.dumps([[c.zj, c.radial, c.l, c.offset] for c in s.channels]).encode())
            h.update(json.dumps(s.monomials).encode())
            h.update(s.coeffs.tobytes())
            h.update(json.dumps([s.core.kind, s.core.rho_core_cut, s.core.drho_core_cut]).encode())
            if self.output != "energy":
                h.update(json.dumps(s.projections.monomials).encode())
                h.update(s.projections.coeffs.tobytes())
        return h.hexdigest()
