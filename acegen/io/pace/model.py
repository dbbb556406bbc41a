"""The typed, frozen PACE data model every reader produces: the C-tilde form that PACE
evaluates (:class:`PacePotential` with :class:`PaceEmbedding`, :class:`PaceBond`,
:class:`PaceFunction`) and the B-basis form of pacemaker's ``.yaml`` files
(:class:`BBasisPotential`).

:class:`PaceFunction` stores PACE's *half* basis as written in the files: radial indices
``ns`` are **1-based**, ``ms_combs`` is an ``(M, rank)`` integer array and ``ctildes`` an
``(M, ndensity)`` float array.  A rank-1 function acts on the radial basis ``g_{ns[0]-1}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

RADIAL_BASES = ("ChebExpCos", "ChebPow", "ChebLinear", "SBessel")


EMBEDDINGS = ("FinnisSinclair", "FinnisSinclairShiftedScaled")


INNER_CUTOFF_TYPES = ("density", "distance", "zbl")


@dataclass(frozen=True, eq=False)
class PaceEmbedding:
    """Embedding of one central element: ``E = Σ_p w_p F(ρ_p; m_p)``.

    ``fs_parameters`` = ``(w_0, m_0, w_1, m_1, ...)`` (length ``2 ndensity``); ``npoti`` is
    ``FinnisSinclair`` or ``FinnisSinclairShiftedScaled``; ``rho_core_cut``/``drho_core_cut``
    switch the ACE energy off on the core-repulsion density (inner cutoff type ``density``).
    """

    ndensity: int
    fs_parameters: tuple[float, ...]
    npoti: str
    rho_core_cut: float
    drho_core_cut: float

    def __eq__(self, other):
        return isinstance(other, PaceEmbedding) and (
            (self.ndensity, self.fs_parameters, self.npoti, self.rho_core_cut, self.drho_core_cut)
            == (other.ndensity, other.fs_parameters, other.npoti, other.rho_core_cut, other.drho_core_cut)
        )


@dataclass(frozen=True, eq=False)
class PaceBond:
    """Radial basis and core repulsion of the ordered species pair (central μi, neighbour μj).

    ``crad[n, l, k]`` (shape ``(nradmax, lmax+1, nradbase)``) gives
    ``R_nl = Σ_k crad[n, l, k] g_k``.  ``radparameters[0]`` is λ of the radial basis.
    ``prehc``/``lambdahc`` parametrise the core repulsion, ``rcut_in``/``dcut_in`` the inner
    cutoff of type ``inner_cutoff_type`` (density | distance | zbl).
    """

    radbasename: str
    radparameters: tuple[float, ...]
    nradbase: int
    nradmax: int
    lmax: int
    crad: np.ndarray
    rcut: float
    dcut: float
    prehc: float
    lambdahc: float
    rcut_in: float
    dcut_in: float
    inner_cutoff_type: str

    def __post_init__(self):
        c = np.array(self.crad, dtype=float).reshape(self.nradmax, self.lmax + 1, self.nradbase)
        c.setflags(write=False)
        object.__setattr__(self, "crad", c)

    def _scalars(self):
        return (
            self.radbasename, self.radparameters, self.nradbase, self.nradmax, self.lmax, self.rcut,
            self.dcut, self.prehc, self.lambdahc, self.rcut_in, self.dcut_in, self.inner_cutoff_type,
        )

    def __eq__(self, other):
        return (
            isinstance(other, PaceBond)
            and self._scalars() == other._scalars()
            and np.array_equal(self.crad, other.crad)
        )


@dataclass(frozen=True, eq=False)
class PaceFunction:
    """One C-tilde basis function of central species ``mu0`` (PACE half basis, as stored).

    ``ns`` are 1-based radial indices (rank 1: index of g_k, k = ns[0]-1; rank > 1: of R_nl),
    ``ms_combs`` has shape ``(M, rank)``, ``ctildes`` shape ``(M, ndensity)``; the density
    contribution is ``ρ_p += Σ_M Re(ctildes[M, p] · Π_t A[mus_t, ns_t-1, ls_t, ms_combs[M, t]])``.
    """

    mu0: int
    rank: int
    mus: tuple[int, ...]
    ns: tuple[int, ...]
    ls: tuple[int, ...]
    ms_combs: np.ndarray
    ctildes: np.ndarray

    def __post_init__(self):
        ms = np.array(self.ms_combs, dtype=np.int64).reshape(-1, self.rank)
        ct = np.array(self.ctildes, dtype=float)
        if ct.size == 0:  # no m-combination (the coupling vanished): nothing to infer the densities from
            ct = ct.reshape(ms.shape[0], ct.shape[1] if ct.ndim == 2 else 1)
        else:
            ct = ct.reshape(ms.shape[0], -1)
        ms.setflags(write=False)
        ct.setflags(write=False)
        object.__setattr__(self, "ms_combs", ms)
        object.__setattr__(self, "ctildes", ct)

    @property
    def ndensity(self) -> int:
        return self.ctildes.shape[1]

    @property
    def num_ms_combs(self) -> int:
        return self.ms_combs.shape[0]

    def __eq__(self, other):
        return (
            isinstance(other, PaceFunction)
            and (self.mu0, self.rank, self.mus, self.ns, self.ls) == (other.mu0, other.rank, other.mus, other.ns, other.ls)
            and np.array_equal(self.ms_combs, other.ms_combs)
            and np.array_equal(self.ctildes, other.ctildes)
        )


@dataclass(frozen=True, eq=False)
class PacePotential:
    """A PACE potential in C-tilde form (what ``pair_style pace`` evaluates).

    ``embeddings[μ]`` for every element, ``bonds[(μi, μj)]`` for every ordered pair,
    ``functions[μ0]`` (rank-1 functions first, as PACE stores them).  ``source`` is the
    file it was read from (not part of equality).  ``bfunctions[μ0]``: for a potential
    converted from a B-basis ``.yaml``, its B functions (rank-1 first, then in file order),
    each as a :class:`PaceFunction` with one "density" column holding the generalised
    Clebsch–Gordan coefficients (b_f = Σ_M Re(gen_cg_M Π_t A)); None otherwise (not part
    of equality).  ``bbasis``: the :class:`BBasisPotential` it was converted from (written
    back by ``model.save("x.yaml")``), None otherwise (not part of equality).
    """

    elements: tuple[str, ...]
    E0: tuple[float, ...]
    delta_spline_bins: float
    embeddings: dict
    bonds: dict
    functions: dict
    source: str = ""
    bfunctions: dict | None = None
    bbasis: object | None = None

    def __eq__(self, other):
        if not isinstance(other, PacePotential):
            return False
        if (self.elements, self.E0, self.delta_spline_bins) != (other.elements, other.E0, other.delta_spline_bins):
            return False
        if self.embeddings != other.embeddings or self.bonds != other.bonds:
            return False
        keys = set(self.functions) | set(other.functions)
        return all(list(self.functions.get(k, [])) == list(other.functions.get(k, [])) for k in keys)

    @property
    def nelements(self) -> int:
        return len(self.elements)

    @property
    def lmax(self) -> int:
        return max(b.lmax for b in self.bonds.values())

    @property
    def nradmax(self) -> int:
        return max(b.nradmax for b in self.bonds.values())

    @property
    def nradbase(self) -> int:
        return max(b.nradbase for b in self.bonds.values())

    @property
    def rcut_max(self) -> float:
        return max(b.rcut for b in self.bonds.values())

    @property
    def inner_cutoff_type(self) -> str:
        return next(iter(self.bonds.values())).inner_cutoff_type

    def rcut(self, mu_i: int, mu_j: int) -> float:
        return self.bonds[(mu_i, mu_j)].rcut


@dataclass(frozen=True, eq=False)
class BRadialSpec:
    """Radial basis of a B-basis species block (``nradmaxi``, ``lmaxi``, ``nradbaseij``, ...)."""

    radbase: str
    radparameters: tuple[float, ...]
    nradbase: int
    nradmax: int
    lmax: int
    radcoefficients: np.ndarray  # (nradmax, lmax+1, nradbase)
    rcut: float
    dcut: float


@dataclass(frozen=True)
class BFunctionSpec:
    """One ``nbody`` entry: ``elements`` = central element then one neighbour element per factor."""

    elements: tuple[str, ...]
    nr: tuple[int, ...]
    nl: tuple[int, ...]
    lint: tuple[int, ...]
    c: tuple[float, ...]
    skip: bool = False

    @property
    def rank(self) -> int:
        return len(self.elements) - 1


@dataclass(frozen=True, eq=False)
class BSpeciesBlock:
    """One ``speciesblock`` of a B-basis file (as written; dual pair blocks are not merged here)."""

    name: str
    elements: tuple[str, ...]
    ndensity: int | None
    npoti: str | None
    fs_parameters: tuple[float, ...] | None
    rho_core_cut: float | None
    drho_core_cut: float | None
    radial: BRadialSpec | None
    core_repulsion: tuple[float, float] | None
    inner_cutoff_type: str
    r_in: float
    delta_in: float
    functions: tuple[BFunctionSpec, ...]

    @property
    def species(self) -> tuple[str, ...]:
        """Distinct elements of the block, central element first."""
        out: list[str] = []
        for e in self.elements:
            if e not in out:
                out.append(e)
        return tuple(out)


@dataclass(frozen=True, eq=False)
class BBasisPotential:
    """A B-basis (``.yaml``) potential: global spline spacing and the species blocks."""

    delta_spline_bins: float
    blocks: tuple[BSpeciesBlock, ...]
    metadata: dict = field(default_factory=dict)
    source: str = ""
