"""Read, validate and write PACE potential files: ``.yace``, legacy ``.ace`` and B-basis ``.yaml``.

The three formats are described in ``FORMATS.md`` of the PACE study (python-ace 0.4.0rc1,
ace-evaluator 2024.7.4).  Everything is converted to one typed, frozen representation, the
*C-tilde* form that PACE evaluates:

* :class:`PacePotential` — elements, per-element ``E0``, the spline spacing, one
  :class:`PaceEmbedding` per element, one :class:`PaceBond` per ordered species pair and, per
  central species, a list of :class:`PaceFunction`.
* :class:`PaceFunction` stores PACE's *half* basis as written in the files: radial indices
  ``ns`` are **1-based**, ``ms_combs`` is an ``(M, rank)`` integer array and ``ctildes`` an
  ``(M, ndensity)`` float array.  A rank-1 function acts on the radial basis ``g_{ns[0]-1}``.

``.yaml`` (B-basis, pacemaker output) is read into :class:`BBasisPotential` by
:func:`read_bbasis_yaml` and converted to C-tilde by :func:`bbasis_to_ctilde`, which follows
PACE's own construction (generalised Clebsch–Gordan coefficients along PACE's binary coupling
tree, half basis with doubled coefficients, permutation compression, merging of equal
(mus, ns, ls)).

Every problem with a file's *content* raises :class:`acegen.errors.ModelFileError` naming the
file and the offending field (e.g. ``bonds[0,1].rcut``); no other exception type escapes for
bad content.  YAML is parsed with PyYAML's safe loader (a subclass that only adds support for
sequence-valued mapping keys such as ``[0, 1]:``).
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml
from ase.data import atomic_numbers

from ..errors import ModelFileError, SpecError

__all__ = [
    "RADIAL_BASES",
    "EMBEDDINGS",
    "INNER_CUTOFF_TYPES",
    "PaceEmbedding",
    "PaceBond",
    "PaceFunction",
    "PacePotential",
    "BRadialSpec",
    "BFunctionSpec",
    "BSpeciesBlock",
    "BBasisPotential",
    "read_yace",
    "read_ace",
    "read_bbasis_yaml",
    "read_pace",
    "bbasis_to_ctilde",
    "write_yace",
    "clebsch_gordan",
    "coupling_tree",
]

RADIAL_BASES = ("ChebExpCos", "ChebPow", "ChebLinear", "SBessel")
EMBEDDINGS = ("FinnisSinclair", "FinnisSinclairShiftedScaled")
INNER_CUTOFF_TYPES = ("density", "distance", "zbl")

_ELEMENT_RE = re.compile(r"^[A-Z][a-z]?$")
_FLOAT_RE = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
_INT_RE = re.compile(r"^[+-]?\d+$")


# ================================================================================= data model
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
        ct = np.array(self.ctildes, dtype=float).reshape(ms.shape[0], -1)
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
    file it was read from (not part of equality).
    """

    elements: tuple[str, ...]
    E0: tuple[float, ...]
    delta_spline_bins: float
    embeddings: dict
    bonds: dict
    functions: dict
    source: str = ""

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


# ================================================================================ field checks
class _Ctx:
    """Validation helpers that raise ModelFileError(path, field, message)."""

    def __init__(self, path):
        self.path = str(path)

    def fail(self, fld, msg):
        raise ModelFileError(self.path, fld, msg)

    def get(self, d, key, fld, default=...):
        if not isinstance(d, dict):
            self.fail(fld, "expected a mapping containing this field")
        if key not in d:
            if default is ...:
                self.fail(fld, "missing field")
            return default
        return d[key]

    def mapping(self, v, fld):
        if not isinstance(v, dict):
            self.fail(fld, f"expected a mapping, got {type(v).__name__}")
        return v

    def seq(self, v, fld, length=None):
        if isinstance(v, tuple):
            v = list(v)
        if not isinstance(v, list):
            self.fail(fld, f"expected a list, got {type(v).__name__}")
        if length is not None and len(v) != length:
            self.fail(fld, f"expected {length} entries, got {len(v)}")
        return v

    def real(self, v, fld, *, positive=False, nonneg=False):
        if isinstance(v, bool) or v is None:
            self.fail(fld, f"expected a number, got {v!r}")
        if isinstance(v, str):
            s = v.strip()
            if not _FLOAT_RE.match(s):
                if s.lower().lstrip("+-.") in ("nan", "inf", "infinity"):
                    self.fail(fld, f"non-finite number {v!r}")
                self.fail(fld, f"expected a number, got {v!r}")
            v = float(s)
        if not isinstance(v, (int, float)):
            self.fail(fld, f"expected a number, got {type(v).__name__}")
        x = float(v)
        if not math.isfinite(x):
            self.fail(fld, f"non-finite number {v!r}")
        if positive and not x > 0:
            self.fail(fld, f"must be positive, got {x!r}")
        if nonneg and x < 0:
            self.fail(fld, f"must be non-negative, got {x!r}")
        return x

    def integer(self, v, fld, *, lo=None, hi=None):
        if isinstance(v, bool):
            self.fail(fld, f"expected an integer, got {v!r}")
        if isinstance(v, str) and _INT_RE.match(v.strip()):
            v = int(v.strip())
        if not isinstance(v, int):
            self.fail(fld, f"expected an integer, got {v!r}")
        if lo is not None and v < lo:
            self.fail(fld, f"must be >= {lo}, got {v}")
        if hi is not None and v > hi:
            self.fail(fld, f"must be <= {hi}, got {v}")
        return v

    def string(self, v, fld, choices=None):
        if not isinstance(v, str):
            self.fail(fld, f"expected a string, got {v!r}")
        if choices is not None and v not in choices:
            self.fail(fld, f"unknown value {v!r}; supported: {', '.join(choices)}")
        return v

    def reals(self, v, fld, length=None, **kw):
        v = self.seq(v, fld, length)
        return tuple(self.real(x, f"{fld}[{i}]", **kw) for i, x in enumerate(v))

    def ints(self, v, fld, length=None, **kw):
        v = self.seq(v, fld, length)
        return tuple(self.integer(x, f"{fld}[{i}]", **kw) for i, x in enumerate(v))

    def array3(self, v, fld, shape):
        n0, n1, n2 = shape
        v = self.seq(v, fld, n0)
        out = np.zeros(shape)
        for a, row in enumerate(v):
            row = self.seq(row, f"{fld}[{a}]", n1)
            for b, col in enumerate(row):
                out[a, b, :] = self.reals(col, f"{fld}[{a}][{b}]", n2)
        return out

    def elements(self, v, fld):
        v = self.seq(v, fld)
        if not v:
            self.fail(fld, "no elements")
        out = []
        for i, e in enumerate(v):
            out.append(self.element(e, f"{fld}[{i}]"))
        if len(set(out)) != len(out):
            dup = sorted({e for e in out if out.count(e) > 1})
            self.fail(fld, f"duplicated element(s) {dup}")
        return tuple(out)

    def element(self, e, fld):
        if not isinstance(e, str) or not _ELEMENT_RE.match(e):
            self.fail(fld, f"invalid element symbol {e!r} (must match ^[A-Z][a-z]?$)")
        if atomic_numbers.get(e, 0) < 1:
            self.fail(fld, f"{e!r} is not a chemical element")
        return e


# ===================================================================================== YAML
class _PaceYamlLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """PyYAML's safe loader, plus: sequence keys (``[0, 1]: ...``) become tuples, duplicate
    keys are an error."""


def _construct_mapping(loader, node, deep=False):
    loader.flatten_mapping(node)
    out = {}
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.SequenceNode):
            key = tuple(loader.construct_sequence(key_node, deep=True))
        else:
            key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, f"unhashable mapping key {key!r}", key_node.start_mark
            ) from None
        if key in out:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        out[key] = loader.construct_object(value_node, deep=deep)
    return out


_PaceYamlLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_text(ctx: _Ctx) -> str:
    try:
        return Path(ctx.path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        ctx.fail(None, f"not a text file ({exc.reason})")
    except OSError as exc:
        ctx.fail(None, f"cannot read file: {exc.strerror or exc}")


def _load_yaml(ctx: _Ctx, text: str):
    loader = _PaceYamlLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        ctx.fail("yaml", f"invalid YAML: {exc}")
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        ctx.fail("yaml", f"invalid YAML: {exc}")
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        ctx.fail(None, f"top level must be a mapping, got {type(data).__name__}")
    return data


# ============================================================================ common checks
def _check_zbl_dcut(ctx, fld, dcut, inner_type):
    """ZBL is shifted to zero between rcut − dcut and rcut: dcut must be positive."""
    if inner_type == "zbl" and not dcut > 0:
        ctx.fail(fld, "must be positive for inner_cutoff_type 'zbl' (width of the ZBL outer switch)")


def _check_functions(ctx: _Ctx, elements, embeddings, bonds, functions):
    """Semantic checks of C-tilde functions against the embeddings and bonds."""
    nel = len(elements)
    for mu0, funcs in functions.items():
        nd = embeddings[mu0].ndensity
        for i, f in enumerate(funcs):
            fld = f"functions[{mu0}][{i}]"
            if f.mu0 != mu0:
                ctx.fail(f"{fld}.mu0", f"is {f.mu0}, but the function is listed under species {mu0}")
            if f.ndensity != nd:
                ctx.fail(f"{fld}.ndensity", f"is {f.ndensity}, embedding of species {mu0} has {nd}")
            for t, mu in enumerate(f.mus):
                if not 0 <= mu < nel:
                    ctx.fail(f"{fld}.mus[{t}]", f"species index {mu} out of range 0..{nel - 1}")
            if f.rank == 1:
                bond = bonds[(mu0, f.mus[0])]
                if f.ls[0] != 0:
                    ctx.fail(f"{fld}.ls", "rank-1 functions must have ls = [0]")
                if not 1 <= f.ns[0] <= bond.nradbase:
                    ctx.fail(f"{fld}.ns[0]", f"n={f.ns[0]} out of range 1..nradbase={bond.nradbase} of bond {mu0},{f.mus[0]}")
            else:
                for t, (mu, n, l) in enumerate(zip(f.mus, f.ns, f.ls)):
                    bond = bonds[(mu0, mu)]
                    if not 1 <= n <= bond.nradmax:
                        ctx.fail(f"{fld}.ns[{t}]", f"n={n} out of range 1..nradmax={bond.nradmax} of bond {mu0},{mu}")
                    if not 0 <= l <= bond.lmax:
                        ctx.fail(f"{fld}.ls[{t}]", f"l={l} exceeds lmax={bond.lmax} of bond {mu0},{mu}")
            ms = f.ms_combs
            ls = np.asarray(f.ls)
            if np.any(np.abs(ms) > ls[None, :]):
                row = int(np.nonzero(np.any(np.abs(ms) > ls[None, :], axis=1))[0][0])
                ctx.fail(f"{fld}.ms_combs", f"|m| > l in combination {ms[row].tolist()} (ls={f.ls})")
            if np.any(ms.sum(axis=1) != 0):
                row = int(np.nonzero(ms.sum(axis=1) != 0)[0][0])
                ctx.fail(f"{fld}.ms_combs", f"m-combination {ms[row].tolist()} does not sum to zero")


def _check_inner_type(ctx, bonds):
    """PACE has one inner cutoff type per potential."""
    first = bonds[min(bonds)].inner_cutoff_type
    for k in sorted(bonds):
        if bonds[k].inner_cutoff_type != first:
            ctx.fail(f"bonds[{k[0]},{k[1]}].inner_cutoff_type",
                     f"is {bonds[k].inner_cutoff_type!r}, but bond {min(bonds)} has {first!r}; it must be the same for all bonds")


def _finish(ctx, elements, E0, delta, embeddings, bonds, functions) -> PacePotential:
    _check_inner_type(ctx, bonds)
    _check_functions(ctx, elements, embeddings, bonds, functions)
    return PacePotential(
        elements=tuple(elements), E0=tuple(E0), delta_spline_bins=float(delta), embeddings=dict(embeddings),
        bonds=dict(bonds), functions={k: list(v) for k, v in sorted(functions.items())}, source=ctx.path,
    )


# ===================================================================================== .yace
def read_yace(path) -> PacePotential:
    """Read a C-tilde ``.yace`` file (``ACECTildeBasisSet::load_yaml`` layout)."""
    ctx = _Ctx(path)
    data = _load_yaml(ctx, _read_text(ctx))
    return _yace_from_dict(ctx, data)


def _yace_from_dict(ctx: _Ctx, data: dict) -> PacePotential:
    elements = ctx.elements(ctx.get(data, "elements", "elements"), "elements")
    nel = len(elements)
    E0 = ctx.reals(ctx.get(data, "E0", "E0"), "E0", nel)
    delta = ctx.real(ctx.get(data, "deltaSplineBins", "deltaSplineBins"), "deltaSplineBins", positive=True)

    emb_in = ctx.mapping(ctx.get(data, "embeddings", "embeddings"), "embeddings")
    embeddings = {}
    for key, e in emb_in.items():
        mu = ctx.integer(key, f"embeddings[{key!r}]", lo=0, hi=nel - 1)
        fld = f"embeddings[{mu}]"
        ctx.mapping(e, fld)
        nd = ctx.integer(ctx.get(e, "ndensity", f"{fld}.ndensity"), f"{fld}.ndensity", lo=1)
        embeddings[mu] = PaceEmbedding(
            ndensity=nd,
            fs_parameters=ctx.reals(ctx.get(e, "FS_parameters", f"{fld}.FS_parameters"), f"{fld}.FS_parameters", 2 * nd),
            npoti=ctx.string(ctx.get(e, "npoti", f"{fld}.npoti"), f"{fld}.npoti", EMBEDDINGS),
            rho_core_cut=ctx.real(ctx.get(e, "rho_core_cutoff", f"{fld}.rho_core_cutoff"), f"{fld}.rho_core_cutoff"),
            drho_core_cut=ctx.real(
                ctx.get(e, "drho_core_cutoff", f"{fld}.drho_core_cutoff"), f"{fld}.drho_core_cutoff", nonneg=True
            ),
        )
    for mu in range(nel):
        if mu not in embeddings:
            ctx.fail(f"embeddings[{mu}]", f"missing embedding of element {elements[mu]}")

    bonds_in = ctx.mapping(ctx.get(data, "bonds", "bonds"), "bonds")
    bonds = {}
    for key, b in bonds_in.items():
        if not (isinstance(key, tuple) and len(key) == 2):
            ctx.fail(f"bonds[{key!r}]", "bond key must be a pair [mu_i, mu_j]")
        mi = ctx.integer(key[0], f"bonds[{key!r}]", lo=0, hi=nel - 1)
        mj = ctx.integer(key[1], f"bonds[{key!r}]", lo=0, hi=nel - 1)
        bonds[(mi, mj)] = _acejl_bond(ctx, f"bonds[{mi},{mj}]", b, data) or _bond_from_yaml(ctx, f"bonds[{mi},{mj}]", b)
    for mi in range(nel):
        for mj in range(nel):
            if (mi, mj) not in bonds:
                ctx.fail(f"bonds[{mi},{mj}]", f"missing bond {elements[mi]}-{elements[mj]}")

    funcs_in = ctx.mapping(ctx.get(data, "functions", "functions"), "functions")
    functions = {mu: [] for mu in range(nel)}
    for key, lst in funcs_in.items():
        mu = ctx.integer(key, f"functions[{key!r}]", lo=0, hi=nel - 1)
        lst = ctx.seq(lst, f"functions[{mu}]")
        functions[mu] = [_function_from_yaml(ctx, f"functions[{mu}][{i}]", f) for i, f in enumerate(lst)]
    return _finish(ctx, elements, E0, delta, embeddings, bonds, functions)


def _acejl_bond(ctx: _Ctx, fld: str, b, data: dict):
    """ACEpotentials.jl bonds (``radbasename: ACE.jl.base``, see :mod:`acegen.io.acejl`); None otherwise."""
    if isinstance(b, dict) and b.get("radbasename") == "ACE.jl.base":
        from .acejl import acejl_bond_from_yaml

        return acejl_bond_from_yaml(ctx, fld, b, data)
    return None


def _bond_from_yaml(ctx: _Ctx, fld: str, b) -> PaceBond:
    ctx.mapping(b, fld)
    name = ctx.string(ctx.get(b, "radbasename", f"{fld}.radbasename"), f"{fld}.radbasename")
    if name.startswith("ACE.jl"):
        ctx.fail(f"{fld}.radbasename", f"ACE.jl radial tables ({name!r}) are not supported")
    ctx.string(name, f"{fld}.radbasename", RADIAL_BASES)
    nradmax = ctx.integer(ctx.get(b, "nradmax", f"{fld}.nradmax"), f"{fld}.nradmax", lo=0)
    lmax = ctx.integer(ctx.get(b, "lmax", f"{fld}.lmax"), f"{fld}.lmax", lo=0)
    nradbase = ctx.integer(ctx.get(b, "nradbasemax", f"{fld}.nradbasemax"), f"{fld}.nradbasemax", lo=0)
    radparameters = ctx.reals(ctx.get(b, "radparameters", f"{fld}.radparameters"), f"{fld}.radparameters")
    if not radparameters:
        ctx.fail(f"{fld}.radparameters", "needs at least one value")
    crad = ctx.array3(
        ctx.get(b, "radcoefficients", f"{fld}.radcoefficients"), f"{fld}.radcoefficients", (nradmax, lmax + 1, nradbase)
    )
    rcut = ctx.real(ctx.get(b, "rcut", f"{fld}.rcut"), f"{fld}.rcut", positive=True)
    dcut = ctx.real(ctx.get(b, "dcut", f"{fld}.dcut"), f"{fld}.dcut", nonneg=True)
    rcut_in = ctx.real(ctx.get(b, "rcut_in", f"{fld}.rcut_in", 0.0), f"{fld}.rcut_in", nonneg=True)
    dcut_in = ctx.real(ctx.get(b, "dcut_in", f"{fld}.dcut_in", 0.0), f"{fld}.dcut_in", nonneg=True)
    ict = ctx.string(
        ctx.get(b, "inner_cutoff_type", f"{fld}.inner_cutoff_type", "density"), f"{fld}.inner_cutoff_type",
        INNER_CUTOFF_TYPES,
    )
    _check_zbl_dcut(ctx, f"{fld}.dcut", dcut, ict)
    return PaceBond(
        radbasename=name, radparameters=radparameters, nradbase=nradbase, nradmax=nradmax, lmax=lmax, crad=crad,
        rcut=rcut, dcut=dcut,
        prehc=ctx.real(ctx.get(b, "prehc", f"{fld}.prehc"), f"{fld}.prehc"),
        lambdahc=ctx.real(ctx.get(b, "lambdahc", f"{fld}.lambdahc"), f"{fld}.lambdahc"),
        rcut_in=rcut_in, dcut_in=dcut_in, inner_cutoff_type=ict,
    )


def _function_from_yaml(ctx: _Ctx, fld: str, f) -> PaceFunction:
    ctx.mapping(f, fld)
    mu0 = ctx.integer(ctx.get(f, "mu0", f"{fld}.mu0"), f"{fld}.mu0", lo=0)
    rank = ctx.integer(ctx.get(f, "rank", f"{fld}.rank"), f"{fld}.rank", lo=1)
    nd = ctx.integer(ctx.get(f, "ndensity", f"{fld}.ndensity"), f"{fld}.ndensity", lo=1)
    nms = ctx.integer(ctx.get(f, "num_ms_combs", f"{fld}.num_ms_combs"), f"{fld}.num_ms_combs", lo=1)
    mus = ctx.ints(ctx.get(f, "mus", f"{fld}.mus"), f"{fld}.mus", rank)
    ns = ctx.ints(ctx.get(f, "ns", f"{fld}.ns"), f"{fld}.ns", rank)
    ls = ctx.ints(ctx.get(f, "ls", f"{fld}.ls"), f"{fld}.ls", rank, lo=0)
    ms = ctx.ints(ctx.get(f, "ms_combs", f"{fld}.ms_combs"), f"{fld}.ms_combs", rank * nms)
    ct = ctx.reals(ctx.get(f, "ctildes", f"{fld}.ctildes"), f"{fld}.ctildes", nd * nms)
    return PaceFunction(mu0=mu0, rank=rank, mus=mus, ns=ns, ls=ls, ms_combs=ms, ctildes=ct)


# ====================================================================================== .ace
class _Scanner:
    """Whitespace-driven token reader mimicking the fscanf format of ``ACECTildeBasisSet::load``."""

    def __init__(self, ctx: _Ctx, text: str):
        self.ctx = ctx
        self.s = text
        self.i = 0

    def _ws(self):
        while self.i < len(self.s) and self.s[self.i].isspace():
            self.i += 1

    def peek_literal(self, lit: str) -> bool:
        """Is ``lit`` next (after whitespace)?  ``peek_literal("")`` asks whether anything is left."""
        self._ws()
        return self.i < len(self.s) and self.s.startswith(lit, self.i)

    def literal(self, lit: str, fld: str):
        """Match ``lit`` (whitespace inside ``lit`` matches any amount of whitespace)."""
        for part in lit.split():
            self._ws()
            if not self.s.startswith(part, self.i):
                got = self.s[self.i : self.i + 30].split("\n")[0]
                self.ctx.fail(fld, f"expected {lit!r}, found {got!r}" if got else f"expected {lit!r}, file is truncated")
            self.i += len(part)

    def token(self, fld: str) -> str:
        self._ws()
        j = self.i
        while j < len(self.s) and not self.s[j].isspace():
            j += 1
        if j == self.i:
            self.ctx.fail(fld, "unexpected end of file (truncated)")
        tok, self.i = self.s[self.i : j], j
        return tok

    def real(self, fld: str, **kw) -> float:
        return self.ctx.real(self.token(fld), fld, **kw)

    def integer(self, fld: str, **kw) -> int:
        return self.ctx.integer(self.token(fld), fld, **kw)

    def keyed_int(self, key: str, fld: str, **kw) -> int:
        """``key=VALUE`` (value may be glued to ``=`` or separated by whitespace)."""
        self.literal(key + "=", fld)
        return self.integer(fld, **kw)


def read_ace(path) -> PacePotential:
    """Read a legacy C-tilde ``.ace`` text file (``ACECTildeBasisSet::load``).

    One radial basis type, one embedding (applied to every element), inner cutoff type
    ``density``.  ``crad`` is stored k-outermost (``for k: for n: for l``).
    """
    ctx = _Ctx(path)
    text = _read_text(ctx)
    lines = text.splitlines(keepends=True)
    start = 0
    while start < len(lines) and not lines[start].lstrip().startswith("nelements="):
        if lines[start].strip() and not lines[start].lstrip().startswith("#"):
            ctx.fail("nelements", f"expected 'nelements=[number]', found {lines[start].strip()[:40]!r}")
        start += 1
    if start == len(lines):
        ctx.fail("nelements", "missing 'nelements=' line")
    sc = _Scanner(ctx, "".join(lines[start:]))

    nel = sc.keyed_int("nelements", "nelements", lo=1)
    sc.literal("elements:", "elements")
    elements = ctx.elements([sc.token(f"elements[{i}]") for i in range(nel)], "elements")
    lmax = sc.keyed_int("lmax", "lmax", lo=0)
    if sc.peek_literal("embedding-function:"):
        sc.literal("embedding-function:", "embedding-function")
        npoti = ctx.string(sc.token("embedding-function"), "embedding-function", EMBEDDINGS)
        explicit = True
    else:
        npoti, explicit = "FinnisSinclair", False
    nfs = sc.integer("FS parameters", lo=2)
    sc.literal("FS parameters:", "FS parameters")
    fs = tuple(sc.real(f"FS parameters[{i}]") for i in range(nfs))
    if nfs % 2:
        ctx.fail("FS parameters", f"expected an even number of parameters, got {nfs}")
    if not explicit and any(m != 1.0 for m in fs[1::2]):
        ctx.fail("embedding-function", "missing for a non-linear embedding (FinnisSinclair would be assumed)")
    sc.literal("core energy-cutoff parameters:", "core energy-cutoff parameters")
    rho_cuts = [
        (sc.real(f"core energy-cutoff parameters[{mu}].rho_core_cut"),
         sc.real(f"core energy-cutoff parameters[{mu}].drho_core_cut", nonneg=True))
        for mu in range(nel)
    ]
    E0 = [0.0] * nel
    if sc.peek_literal("E0:"):
        sc.literal("E0:", "E0")
        E0 = [sc.real(f"E0[{mu}]") for mu in range(nel)]
    sc.literal("radbasename=", "radbasename")
    radbasename = sc.token("radbasename")
    if radbasename.startswith("ACE.jl"):
        ctx.fail("radbasename", f"ACE.jl radial tables ({radbasename!r}) are not supported")
    ctx.string(radbasename, "radbasename", ("ChebExpCos", "ChebPow"))
    nradbase = sc.keyed_int("nradbase", "nradbase", lo=0)
    nradmax = sc.keyed_int("nradmax", "nradmax", lo=0)
    sc.literal("cutoffmax=", "cutoffmax")
    sc.real("cutoffmax", positive=True)
    sc.literal("deltaSplineBins=", "deltaSplineBins")
    delta = sc.real("deltaSplineBins", positive=True)
    pairs = [(i, j) for i in range(nel) for j in range(nel)]
    sc.literal("core repulsion parameters:", "core repulsion parameters")
    core = {p: (sc.real(f"core repulsion parameters[{p[0]},{p[1]}].prehc"),
                sc.real(f"core repulsion parameters[{p[0]},{p[1]}].lambdahc")) for p in pairs}
    sc.literal("radparameter=", "radparameter")
    lam = {p: sc.real(f"radparameter[{p[0]},{p[1]}]") for p in pairs}
    sc.literal("cutoff=", "cutoff")
    rcut = {p: sc.real(f"cutoff[{p[0]},{p[1]}]", positive=True) for p in pairs}
    sc.literal("dcut=", "dcut")
    dcut = {p: sc.real(f"dcut[{p[0]},{p[1]}]", nonneg=True) for p in pairs}
    sc.literal("crad=", "crad")
    bonds = {}
    for p in pairs:
        crad = np.zeros((nradmax, lmax + 1, nradbase))
        for k in range(nradbase):
            for n in range(nradmax):
                for l in range(lmax + 1):
                    crad[n, l, k] = sc.real(f"crad[{p[0]},{p[1]}]")
        bonds[p] = PaceBond(
            radbasename=radbasename, radparameters=(lam[p],), nradbase=nradbase, nradmax=nradmax, lmax=lmax,
            crad=crad, rcut=rcut[p], dcut=dcut[p], prehc=core[p][0], lambdahc=core[p][1], rcut_in=0.0, dcut_in=0.0,
            inner_cutoff_type="density",
        )
    rankmax = sc.keyed_int("rankmax", "rankmax", lo=1)
    ndensitymax = sc.keyed_int("ndensitymax", "ndensitymax", lo=1)
    if len(fs) != 2 * ndensitymax:
        ctx.fail("FS parameters", f"expected 2*ndensitymax = {2 * ndensitymax} parameters, got {len(fs)}")
    sc.keyed_int("num_c_tilde_max", "num_c_tilde_max", lo=0)
    sc.keyed_int("num_ms_combinations_max", "num_ms_combinations_max", lo=0)
    embeddings = {
        mu: PaceEmbedding(ndensity=ndensitymax, fs_parameters=fs, npoti=npoti, rho_core_cut=rho_cuts[mu][0],
                          drho_core_cut=rho_cuts[mu][1])
        for mu in range(nel)
    }
    functions = {mu: [] for mu in range(nel)}
    for section in ("total_basis_size_rank1", "total_basis_size"):
        sc.literal(section + ":", section)
        sizes = [sc.integer(f"{section}[{mu}]", lo=0) for mu in range(nel)]
        for mu in range(nel):
            for i in range(sizes[mu]):
                f = _read_ace_function(sc, f"{section}[{mu}].function[{i}]", rankmax)
                if (f.rank == 1) != (section == "total_basis_size_rank1"):
                    ctx.fail(f"{section}[{mu}].function[{i}].rank", f"rank {f.rank} in section {section}")
                if f.mu0 != mu:
                    ctx.fail(f"{section}[{mu}].function[{i}].mu0", f"is {f.mu0}, expected {mu}")
                functions[mu].append(f)
    if sc.peek_literal(""):
        ctx.fail("end of file", f"unexpected trailing content {sc.s[sc.i:sc.i + 30]!r}")
    # rank-1 functions first, as PACE stores them
    return _finish(ctx, elements, E0, delta, embeddings, bonds, functions)


def _read_ace_function(sc: _Scanner, fld: str, rankmax: int) -> PaceFunction:
    ctx = sc.ctx
    sc.literal("ctilde_basis_func:", fld)

    def kv(key):
        tok = sc.token(f"{fld}.{key}")
        if not tok.startswith(key + "="):
            ctx.fail(f"{fld}.{key}", f"expected '{key}=...', found {tok!r}")
        return ctx.integer(tok[len(key) + 1 :], f"{fld}.{key}")

    rank = kv("rank")
    if not 1 <= rank <= rankmax:
        ctx.fail(f"{fld}.rank", f"rank {rank} out of range 1..rankmax={rankmax}")
    nd = kv("ndens")
    mu0 = kv("mu0")

    def group(key, **kw):
        sc.literal(f"{key}=(", f"{fld}.{key}")
        vals = tuple(sc.integer(f"{fld}.{key}[{t}]", **kw) for t in range(rank))
        sc.literal(")", f"{fld}.{key}")
        return vals

    mus, ns, ls = group("mu"), group("n"), group("l", lo=0)
    nms = sc.keyed_int("num_ms", f"{fld}.num_ms", lo=1)
    ms, ct = [], []
    for k in range(nms):
        sc.literal("<", f"{fld}.ms_combs[{k}]")
        ms.append([sc.integer(f"{fld}.ms_combs[{k}]") for _ in range(rank)])
        sc.literal(">:", f"{fld}.ms_combs[{k}]")
        ct.append([sc.real(f"{fld}.ctildes[{k}]") for _ in range(nd)])
    return PaceFunction(mu0=mu0, rank=rank, mus=mus, ns=ns, ls=ls, ms_combs=ms, ctildes=ct)


# ================================================================================ B-basis .yaml
def read_bbasis_yaml(path) -> BBasisPotential:
    """Read a B-basis ``.yaml`` file (pacemaker output) into :class:`BBasisPotential`."""
    ctx = _Ctx(path)
    data = _load_yaml(ctx, _read_text(ctx))
    glob = ctx.mapping(ctx.get(data, "global", "global"), "global")
    delta = ctx.real(ctx.get(glob, "DeltaSplineBins", "global.DeltaSplineBins"), "global.DeltaSplineBins", positive=True)
    species = ctx.seq(ctx.get(data, "species", "species"), "species")
    if not species:
        ctx.fail("species", "no species blocks")
    meta = data.get("metadata", {})
    if not isinstance(meta, dict):
        ctx.fail("metadata", "expected a mapping")
    blocks = tuple(_read_bblock(ctx, f"species[{i}]", b) for i, b in enumerate(species))
    names = [b.name for b in blocks]
    for i, b in enumerate(blocks):
        if names.count(b.name) > 1:
            ctx.fail(f"species[{i}].speciesblock", f"duplicated species block {b.name!r}")
    return BBasisPotential(delta_spline_bins=delta, blocks=blocks, metadata=dict(meta), source=ctx.path)


def _read_bblock(ctx: _Ctx, fld: str, b) -> BSpeciesBlock:
    ctx.mapping(b, fld)
    name = ctx.string(ctx.get(b, "speciesblock", f"{fld}.speciesblock"), f"{fld}.speciesblock")
    elems = tuple(name.split())
    if not elems:
        ctx.fail(f"{fld}.speciesblock", "empty species block name")
    for i, e in enumerate(elems):
        ctx.element(e, f"{fld}.speciesblock[{i}]")
    nspec = len(set(elems))
    one = nspec == 1
    ndensity = npoti = fs = rho = drho = None
    if one:
        ndensity = ctx.integer(ctx.get(b, "ndensityi", f"{fld}.ndensityi"), f"{fld}.ndensityi", lo=1)
        npoti = ctx.string(ctx.get(b, "npoti", f"{fld}.npoti"), f"{fld}.npoti", EMBEDDINGS)
        fs = ctx.reals(ctx.get(b, "parameters", f"{fld}.parameters"), f"{fld}.parameters", 2 * ndensity)
        rho = ctx.real(ctx.get(b, "rho_core_cut", f"{fld}.rho_core_cut", 100000.0), f"{fld}.rho_core_cut")
        drho = ctx.real(ctx.get(b, "drho_core_cut", f"{fld}.drho_core_cut", 250.0), f"{fld}.drho_core_cut", nonneg=True)
    radial = None
    radkeys = ("nradmaxi", "nradbaseij", "radbase", "radparameters", "radcoefficients", "rcutij", "dcutij")
    if "lmaxi" in b:
        lmax = ctx.integer(b["lmaxi"], f"{fld}.lmaxi", lo=0)
        nradmax = ctx.integer(ctx.get(b, "nradmaxi", f"{fld}.nradmaxi"), f"{fld}.nradmaxi", lo=0)
        nradbase = ctx.integer(ctx.get(b, "nradbaseij", f"{fld}.nradbaseij"), f"{fld}.nradbaseij", lo=0)
        radbase = ctx.string(ctx.get(b, "radbase", f"{fld}.radbase"), f"{fld}.radbase", RADIAL_BASES)
        radparameters = ctx.reals(ctx.get(b, "radparameters", f"{fld}.radparameters"), f"{fld}.radparameters")
        if not radparameters:
            ctx.fail(f"{fld}.radparameters", "needs at least one value")
        rc = ctx.get(b, "radcoefficients", f"{fld}.radcoefficients")
        shape = (nradmax, lmax + 1, nradbase)
        rc_list = ctx.seq(rc, f"{fld}.radcoefficients")
        if rc_list and not isinstance(rc_list[0], (list, tuple)):
            # old flat layout: for k: for n: for l
            flat = ctx.reals(rc_list, f"{fld}.radcoefficients", nradmax * (lmax + 1) * nradbase)
            crad = np.asarray(flat, dtype=float).reshape(nradbase, nradmax, lmax + 1).transpose(1, 2, 0).copy()
        else:
            crad = ctx.array3(rc_list, f"{fld}.radcoefficients", shape)
        radial = BRadialSpec(
            radbase=radbase, radparameters=radparameters, nradbase=nradbase, nradmax=nradmax, lmax=lmax,
            radcoefficients=crad,
            rcut=ctx.real(ctx.get(b, "rcutij", f"{fld}.rcutij"), f"{fld}.rcutij", positive=True),
            dcut=ctx.real(ctx.get(b, "dcutij", f"{fld}.dcutij"), f"{fld}.dcutij", nonneg=True),
        )
    else:
        for k in radkeys:
            if k in b:
                ctx.fail(f"{fld}.lmaxi", f"radial basis is partially defined ({k!r} given without 'lmaxi')")
    core = None
    if "core-repulsion" in b:
        cr = ctx.reals(b["core-repulsion"], f"{fld}.core-repulsion", 2)
        core = (cr[0], cr[1])
    ict = ctx.string(b.get("inner_cutoff_type", "density"), f"{fld}.inner_cutoff_type", INNER_CUTOFF_TYPES)
    r_in = ctx.real(b.get("r_in", 0.0), f"{fld}.r_in", nonneg=True)
    delta_in = ctx.real(b.get("delta_in", 0.0), f"{fld}.delta_in", nonneg=True)
    nbody = ctx.seq(ctx.get(b, "nbody", f"{fld}.nbody", []), f"{fld}.nbody")
    funcs = tuple(_read_bfunc(ctx, f"{fld}.nbody[{i}]", f, elems) for i, f in enumerate(nbody))
    return BSpeciesBlock(
        name=name, elements=elems, ndensity=ndensity, npoti=npoti, fs_parameters=fs, rho_core_cut=rho,
        drho_core_cut=drho, radial=radial, core_repulsion=core, inner_cutoff_type=ict, r_in=r_in, delta_in=delta_in,
        functions=funcs,
    )


def _read_bfunc(ctx: _Ctx, fld: str, f, block_elems) -> BFunctionSpec:
    ctx.mapping(f, fld)
    typ = ctx.string(ctx.get(f, "type", f"{fld}.type"), f"{fld}.type")
    els = tuple(typ.split())
    if len(els) < 2:
        ctx.fail(f"{fld}.type", f"needs a central element and at least one neighbour, got {typ!r}")
    for i, e in enumerate(els):
        ctx.element(e, f"{fld}.type[{i}]")
    if els[0] != block_elems[0]:
        ctx.fail(f"{fld}.type", f"central element {els[0]} differs from the block's {block_elems[0]}")
    for e in els[1:]:
        if e not in block_elems:
            ctx.fail(f"{fld}.type", f"element {e} is not in the block's elements {list(block_elems)}")
    rank = len(els) - 1
    nr = ctx.ints(ctx.get(f, "nr", f"{fld}.nr"), f"{fld}.nr", rank, lo=1)
    nl = ctx.ints(ctx.get(f, "nl", f"{fld}.nl"), f"{fld}.nl", rank, lo=0)
    lint = ctx.ints(f.get("lint", []), f"{fld}.lint", max(rank - 2, 0), lo=0)
    c_raw = ctx.get(f, "c", f"{fld}.c")
    c = ctx.reals(c_raw if isinstance(c_raw, list) else [c_raw], f"{fld}.c")
    skip = f.get("skip", False)
    if not isinstance(skip, bool):
        ctx.fail(f"{fld}.skip", f"expected true/false, got {skip!r}")
    _validate_ls_lint(ctx, fld, nl, lint)
    return BFunctionSpec(elements=els, nr=nr, nl=nl, lint=lint, c=c, skip=skip)


def _validate_ls_lint(ctx, fld, ls, lint):
    """PACE's ``validate_ls_LS``: coupling-tree relations between ls and intermediate L's."""
    rank = len(ls)
    if rank == 1 and ls[0] != 0:
        ctx.fail(f"{fld}.nl", "rank-1 functions must have nl = [0]")
    if rank == 2 and ls[0] != ls[1]:
        ctx.fail(f"{fld}.nl", f"rank-2 functions need equal l's, got {list(ls)}")
    if rank in (3, 5) and lint[-1] != ls[-1]:
        ctx.fail(f"{fld}.lint", f"last lint {lint[-1]} must equal last nl {ls[-1]}")
    if rank == 4 or rank >= 6:
        if lint[-1] != lint[-2]:
            ctx.fail(f"{fld}.lint", f"last two lint values must be equal, got {list(lint)}")
    if sum(ls) % 2:
        ctx.fail(f"{fld}.nl", f"sum of l's must be even, got {list(ls)}")


# ============================================================== Clebsch–Gordan and couplings
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


def _ms_cg_list(ls, lint):
    """Half-basis (ms, generalised CG) pairs of one B function (``generate_ms_cg_list``).

    Combinations whose first non-zero m is negative are dropped and the others (with a
    non-zero m) get their coefficient doubled.  Values are exact (Racah); which combinations
    are *present* follows PACE: a combination is dropped as soon as one tree node's
    Clebsch–Gordan coefficient is zero **in PACE's floating-point recursion**
    (:func:`_pace_cg_vanishes`).  Accidental zeros that PACE computes as ~1e-17 are kept here
    with coefficient 0, so that :func:`_compress` sees (and drops) them exactly as PACE does.
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


def _compress(mus, ns, ls, ms_cgs):
    """PACE's ``order_and_compress_b_basis_function``: sort the factors of every m-combination
    by (mu, n, l, m, position), sum equal combinations, drop |c| < 1e-15; applied only if it
    reduces the number of combinations."""
    rank = len(mus)
    acc: dict[tuple[int, ...], float] = {}
    order = None
    for ms, c in ms_cgs:
        v = sorted((mus[r], ns[r], ls[r], ms[r], r) for r in range(rank))
        if order is None:
            order = v
        key = tuple(t[3] for t in v)
        acc[key] = acc.get(key, 0.0) + c
    acc = {k: v for k, v in acc.items() if abs(v) >= 1e-15}
    if len(ms_cgs) - len(acc) > 0:
        mus = tuple(t[0] for t in order)
        ns = tuple(t[1] for t in order)
        ls = tuple(t[2] for t in order)
        ms_cgs = sorted(acc.items())
    return mus, ns, ls, ms_cgs


def _sort_key(f: PaceFunction):
    """PACE's ``compare``: rank, mu0, mus, ns, ls, number of m-combinations, m-combinations."""
    return (f.rank, f.mu0, f.mus, f.ns, f.ls, f.num_ms_combs, tuple(f.ms_combs.ravel().tolist()))


# =========================================================================== B → C-tilde
def bbasis_to_ctilde(bb: BBasisPotential) -> PacePotential:
    """Convert a B-basis potential to PACE's C-tilde form (= ``pace_yaml2yace``).

    Elements are ordered alphabetically (as PACE does); pair parameters of a 2-species block
    ``A B`` are used for A–B and, if there is no ``B A`` block with its own radial basis, for
    B–A as well.  ``E0`` is zero (the B-basis format has none).
    """
    ctx = _Ctx(bb.source)
    elements = tuple(sorted({e for b in bb.blocks for e in b.elements}))
    index = {e: i for i, e in enumerate(elements)}
    nel = len(elements)

    embeddings = {}
    for i, b in enumerate(bb.blocks):
        if len(b.species) == 1:
            mu = index[b.elements[0]]
            if mu in embeddings:
                ctx.fail(f"species[{i}].ndensityi", f"embedding of {b.elements[0]} is defined twice")
            embeddings[mu] = PaceEmbedding(
                ndensity=b.ndensity, fs_parameters=b.fs_parameters, npoti=b.npoti, rho_core_cut=b.rho_core_cut,
                drho_core_cut=b.drho_core_cut,
            )
    for mu in range(nel):
        if mu not in embeddings:
            ctx.fail("species", f"no single-element block (embedding) for {elements[mu]}")

    # pair blocks: radial basis and core repulsion, completed from the dual block
    pair_blocks: dict[tuple[str, str], tuple[int, BSpeciesBlock]] = {}
    for i, b in enumerate(bb.blocks):
        sp = b.species
        if len(sp) == 1:
            pair_blocks[(sp[0], sp[0])] = (i, b)
        elif len(sp) == 2:
            pair_blocks[(sp[0], sp[1])] = (i, b)
    ict_all = {b.inner_cutoff_type for _, b in pair_blocks.values()}
    if len(ict_all) > 1:
        i, b = next(v for v in pair_blocks.values() if v[1].inner_cutoff_type != sorted(ict_all)[0])
        ctx.fail(f"species[{i}].inner_cutoff_type", f"must be identical in all 1- and 2-species blocks, found {sorted(ict_all)}")
    bonds = {}
    for a in elements:
        for c in elements:
            own = pair_blocks.get((a, c))
            dual = pair_blocks.get((c, a))
            src = own if own is not None and own[1].radial is not None else dual
            if src is None or src[1].radial is None:
                ctx.fail("species", f"radial basis of the pair {a}-{c} is defined in no species block")
            rad = src[1].radial
            core_src = own if own is not None and own[1].core_repulsion is not None else dual
            if core_src is not None and core_src[1].core_repulsion is not None:
                core_blk = core_src[1]
                prehc, lamhc = core_blk.core_repulsion
            else:
                core_blk = own[1] if own is not None else src[1]
                prehc, lamhc = 0.0, 0.0
            if own is not None and dual is not None and own[1].radial is not None and dual[1].radial is not None:
                _check_dual(ctx, own, dual)
            _check_zbl_dcut(ctx, f"species[{src[0]}].dcutij", rad.dcut, core_blk.inner_cutoff_type)
            bonds[(index[a], index[c])] = PaceBond(
                radbasename=rad.radbase, radparameters=rad.radparameters, nradbase=rad.nradbase, nradmax=rad.nradmax,
                lmax=rad.lmax, crad=rad.radcoefficients, rcut=rad.rcut, dcut=rad.dcut, prehc=prehc, lambdahc=lamhc,
                rcut_in=core_blk.r_in, dcut_in=core_blk.delta_in, inner_cutoff_type=core_blk.inner_cutoff_type,
            )

    # B functions -> half-basis (ms, gen-CG) lists, compressed, grouped by (mu0, mus, ns, ls)
    groups: dict[tuple, dict[tuple[int, ...], np.ndarray]] = {}
    bfuncs: dict[int, list] = {mu: [] for mu in range(nel)}
    for bi, b in enumerate(bb.blocks):
        mu0_block = index[b.elements[0]]
        nd = embeddings[mu0_block].ndensity
        for fi, fs in enumerate(b.functions):
            fld = f"species[{bi}].nbody[{fi}]"
            if fs.skip:
                continue
            if len(fs.c) != nd:
                ctx.fail(f"{fld}.c", f"has {len(fs.c)} coefficients, the embedding of {b.elements[0]} has {nd} densities")
            mus = tuple(index[e] for e in fs.elements[1:])
            for t, mu in enumerate(mus):
                bond = bonds[(mu0_block, mu)]
                if fs.rank == 1:
                    if fs.nr[t] > bond.nradbase:
                        ctx.fail(f"{fld}.nr", f"n={fs.nr[t]} exceeds nradbase={bond.nradbase} of {b.elements[0]}-{elements[mu]}")
                else:
                    if fs.nr[t] > bond.nradmax:
                        ctx.fail(f"{fld}.nr", f"n={fs.nr[t]} exceeds nradmax={bond.nradmax} of {b.elements[0]}-{elements[mu]}")
                    if fs.nl[t] > bond.lmax:
                        ctx.fail(f"{fld}.nl", f"l={fs.nl[t]} exceeds lmax={bond.lmax} of {b.elements[0]}-{elements[mu]}")
            bfuncs[mu0_block].append((mus, fs))
    for mu0, lst in bfuncs.items():
        # PACE sorts the B functions (rank, mus, ns, ls, ...) before compressing and grouping
        items = []
        for mus, fs in lst:
            ms_cgs = _ms_cg_list(fs.nl, fs.lint)
            items.append((fs.rank, mus, fs.nr, fs.nl, len(ms_cgs), ms_cgs, fs.c))
        items.sort(key=lambda t: (t[0], t[1], t[2], t[3], t[4], tuple(m for ms, _ in t[5] for m in ms)))
        for rank, mus, ns, ls, _, ms_cgs, c in items:
            mus2, ns2, ls2, ms_cgs2 = _compress(mus, ns, ls, ms_cgs)
            acc = groups.setdefault((mu0, mus2, ns2, ls2), {})
            cvec = np.asarray(c, dtype=float)
            for ms, g in ms_cgs2:
                if ms in acc:
                    acc[ms] = acc[ms] + cvec * g
                else:
                    acc[ms] = cvec * g
    functions: dict[int, list[PaceFunction]] = {mu: [] for mu in range(nel)}
    for (mu0, mus, ns, ls), acc in groups.items():
        keys = sorted(acc)
        functions[mu0].append(
            PaceFunction(mu0=mu0, rank=len(mus), mus=mus, ns=ns, ls=ls, ms_combs=np.array(keys, dtype=np.int64),
                         ctildes=np.array([acc[k] for k in keys]))
        )
    for mu0 in functions:
        functions[mu0].sort(key=_sort_key)
    return _finish(ctx, elements, (0.0,) * nel, bb.delta_spline_bins, embeddings, bonds, functions)


def _check_dual(ctx, own, dual):
    (i, a), (_, b) = own, dual
    ra, rb = a.radial, b.radial
    same = (
        (ra.radbase, ra.radparameters, ra.nradbase, ra.nradmax, ra.lmax, ra.rcut, ra.dcut)
        == (rb.radbase, rb.radparameters, rb.nradbase, rb.nradmax, rb.lmax, rb.rcut, rb.dcut)
        and np.array_equal(ra.radcoefficients, rb.radcoefficients)
    )
    if not same:
        ctx.fail(f"species[{i}].radcoefficients", f"radial basis of blocks {a.name!r} and {b.name!r} is inconsistent")


# ================================================================================== dispatch
def read_pace(path) -> PacePotential:
    """Read any PACE potential by extension: ``.yace``, ``.ace`` or B-basis ``.yaml``
    (converted to C-tilde with :func:`bbasis_to_ctilde`)."""
    p = str(path)
    low = p.lower()
    if low.endswith(".yace"):
        return read_yace(p)
    if low.endswith(".ace"):
        return read_ace(p)
    if low.endswith(".yaml") or low.endswith(".yml"):
        return bbasis_to_ctilde(read_bbasis_yaml(p))
    raise ModelFileError(p, None, "unknown PACE file type (expected .yace, .ace or .yaml)")


# ==================================================================================== writer
def _fmt(x: float) -> str:
    """Shortest round-tripping repr, always with a decimal point (YAML 1.1 float syntax)."""
    s = repr(float(x))
    if "e" in s and "." not in s.split("e")[0]:
        m, e = s.split("e")
        s = f"{m}.0e{e}"
    if "e" in s:
        m, e = s.split("e")
        if e[0] not in "+-":
            e = "+" + e
        s = f"{m}e{e}"
    return s


def _flist(xs) -> str:
    return "[" + ", ".join(_fmt(x) for x in xs) + "]"


def _ilist(xs) -> str:
    return "[" + ", ".join(str(int(x)) for x in xs) + "]"


def write_yace(potential: PacePotential, path) -> None:
    """Write ``potential`` as a ``.yace`` file in the layout of ``ACECTildeBasisSet::save_yaml``
    (readable by pyace and LAMMPS ``pair_style pace``); floats are written with ``repr``
    (round-trip exact)."""
    pot = potential
    for key, b in sorted(pot.bonds.items()):
        if b.radbasename not in RADIAL_BASES:
            raise SpecError(f"write_yace: bond {key} has radial basis {b.radbasename!r}, which cannot be written")
    out = [
        "elements: [" + ", ".join(pot.elements) + "]",
        "E0: " + _flist(pot.E0),
        "deltaSplineBins: " + _fmt(pot.delta_spline_bins),
        "embeddings:",
    ]
    for mu in range(len(pot.elements)):
        e = pot.embeddings[mu]
        out.append(
            f"  {mu}: {{ndensity: {e.ndensity}, FS_parameters: {_flist(e.fs_parameters)}, npoti: {e.npoti}, "
            f"rho_core_cutoff: {_fmt(e.rho_core_cut)}, drho_core_cutoff: {_fmt(e.drho_core_cut)}}}"
        )
    out.append("bonds:")
    for (mi, mj) in sorted(pot.bonds):
        b = pot.bonds[(mi, mj)]
        crad = "[" + ", ".join("[" + ", ".join(_flist(row) for row in nl) + "]" for nl in b.crad) + "]"
        out.append(
            f"  [{mi}, {mj}]: {{nradmax: {b.nradmax}, lmax: {b.lmax}, nradbasemax: {b.nradbase}, "
            f"radbasename: {b.radbasename}, radparameters: {_flist(b.radparameters)}, radcoefficients: {crad}, "
            f"prehc: {_fmt(b.prehc)}, lambdahc: {_fmt(b.lambdahc)}, rcut: {_fmt(b.rcut)}, dcut: {_fmt(b.dcut)}, "
            f"rcut_in: {_fmt(b.rcut_in)}, dcut_in: {_fmt(b.dcut_in)}, inner_cutoff_type: {b.inner_cutoff_type}}}"
        )
    out.append("functions:")
    for mu in range(len(pot.elements)):
        funcs = pot.functions.get(mu, [])
        out.append(f"  {mu}:" + ("" if funcs else " []"))
        for f in funcs:
            out.append(
                f"    - {{mu0: {f.mu0}, rank: {f.rank}, ndensity: {f.ndensity}, num_ms_combs: {f.num_ms_combs}, "
                f"mus: {_ilist(f.mus)}, ns: {_ilist(f.ns)}, ls: {_ilist(f.ls)}, "
                f"ms_combs: {_ilist(f.ms_combs.ravel())}, ctildes: {_flist(f.ctildes.ravel())}}}"
            )
    Path(path).write_text("\n".join(out) + "\n", encoding="utf-8")
