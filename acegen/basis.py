"""Symbolic lowering of a :class:`~acegen.spec.BasisSpec` to a coupled basis.

``basis = acegen.lower(spec)`` gives a :class:`CoupledBasis`: the rotation- and
reflection-invariant many-body basis B = C·A (one entry per central species, correlation
order ν = 1..order, multiset of one-particle factors and independent coupling), the pair
basis apart, and everything needed to fold coefficients into a :class:`~acegen.ir.model.ModelIR`.

Stages (each printable on its own):

    BasisSpec ──selection──▶ multisets of (z, n, l)
              ──coupling───▶ BasisFunction(z0, factors, m-tuples, coefficients)   (exact, cached)
              ──radial─────▶ RadialBlock SLPs per bond (many-body R_n, then pair P_n)
              ──fold θ─────▶ ModelIR (channels, monomials, c̃ = Cᵀθ)
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from ._fs import write_atomic
from .progress import progress_bar
from .errors import SpecError
from .spec import split_coefficients
from .ir.model import Channel, Embedding, ModelIR, ProjectionRows, RadialBlock, SpeciesProgram
from .ir.slp import SLP
from .symbolic.terms import PackedTerms

SQRT4PI = math.sqrt(4.0 * math.pi)


@dataclass(frozen=True, eq=False)
class BasisFunction:
    """B = Σ_M coeffs[M] Π_t A[z0; factors[t], m = mtuples[M, t]] for atoms of species z0.

    ``factors`` are sorted (z, n, l) one-particle labels; ``mtuples`` the canonical
    m-tuples (m's sorted within blocks of identical factors) with nonzero coefficients."""

    z0: int
    factors: tuple[tuple[int, int, int], ...]
    mtuples: np.ndarray  # (K, ν) int
    coeffs: np.ndarray  # (K,) float
    index: int = 0  # which independent coupling of this multiset
    # purification: extra lower-order product terms, each (factors, mtuples, coeffs) with the
    # same meaning as above (factors may use extended radial indices n > nmax); a tuple or a
    # PackedTerms
    corrections: Sequence = ()

    @property
    def order(self) -> int:
        return len(self.factors)


@dataclass(frozen=True)
class PairFunction:
    """Pair basis function Σ_j P_n(r_ij) over neighbours j of species zj (centre species z0)."""

    z0: int
    zj: int
    n: int


def _concat_slps(parts: list[tuple[SLP, int, float]], rcut: float) -> tuple[SLP, int]:
    """Merge radial SLPs (each with outputs values then derivatives) into one, renaming
    intermediates.  Functions whose own cutoff is below the block cutoff are multiplied by
    a step so they vanish beyond it."""
    r = sp.Symbol("r", real=True)
    assigns = []
    vals, ders = [], []
    for p, (slp, nf, rc) in enumerate(parts):
        ren = {}
        for name, expr in slp.assignments:
            new = f"p{p}_{name}"
            assigns.append((new, expr.xreplace(ren)))
            ren[sp.Symbol(name, real=True)] = sp.Symbol(new, real=True)
        outs = [ren.get(sp.Symbol(o, real=True), sp.Symbol(o, real=True)) for o in slp.outputs]
        v, d = outs[:nf], outs[nf:]
        if rc < rcut:
            v = [sp.Piecewise((x, r < rc), (0, True)) for x in v]
            d = [sp.Piecewise((x, r < rc), (0, True)) for x in d]
        vals += v
        ders += d
    n = len(vals)
    outs = []
    for k, e in enumerate(vals + ders):
        name = f"R{k}" if k < n else f"dR{k - n}"
        assigns.append((name, e))
        outs.append(name)
    return SLP(("r",), tuple(assigns), tuple(outs)), n


def spec_radial_blocks(spec, nmax: int) -> dict:
    """One RadialBlock per ordered species pair of ``spec``: outputs R_1..R_nmax then
    P_1..P_npair (the many-body then the pair radial functions of the spec)."""
    from .symbolic import radial

    blocks = {}
    nel = len(spec.elements)
    for zi in range(nel):
        for zj in range(nel):
            mb, nmb = radial.manybody_radial_slp(spec, zi, zj, nfunc=nmax)
            pr, npr = radial.pair_radial_slp(spec, zi, zj)
            rc_mb = spec.rcut_pair(zi, zj)
            rc_pr = spec.pair_rcut_pair(zi, zj)
            rc = max(rc_mb, rc_pr)
            slp, nf = _concat_slps([(mb, nmb, rc_mb), (pr, npr, rc_pr)], rc)
            blocks[(zi, zj)] = RadialBlock(zi, zj, rc, nf, slp=slp)
    return blocks


class FunctionSet:
    """What every lowered basis answers from its ``spec``, ``functions`` (each with ``order``
    and ``z0``) and ``pair``: its elements, the count of many-body functions, their orders and
    central species, and the number of parameters."""

    @property
    def elements(self) -> tuple[str, ...]:
        return tuple(self.spec.elements)

    def __len__(self) -> int:
        return len(self.functions)

    @property
    def orders(self) -> np.ndarray:
        return np.array([f.order for f in self.functions], dtype=np.int64)

    @property
    def species(self) -> np.ndarray:
        return np.array([f.z0 for f in self.functions], dtype=np.int64)

    @property
    def n_params(self) -> int:
        return len(self.functions) + len(self.pair)


@dataclass(frozen=True, eq=False)
class CoupledBasis(FunctionSet):
    """The lowered basis of a spec.  ``len(basis)`` counts many-body functions (all central
    species, ν = 1..order); ``basis.pair`` the pair basis apart."""

    spec: object
    functions: tuple[BasisFunction, ...]
    pair: tuple[PairFunction, ...]
    lmax: int
    nmax: int
    npair: int
    _cache: dict = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        counts = {int(o): int(c) for o, c in zip(*np.unique(self.orders, return_counts=True))}
        return (
            f"CoupledBasis({len(self)} functions, by order {counts}, pair {len(self.pair)}, "
            f"elements {list(self.elements)}, lmax {self.lmax}, "
            f"purification {getattr(self.spec, 'purification', 'none')!r})"
        )

    def to_text(self) -> str:
        lines = [repr(self)]
        for k, f in enumerate(self.functions):
            fac = " ".join(f"({self.elements[z]},{n},{l})" for z, n, l in f.factors)
            corr = sum(len(c) for _, _, c in f.corrections)
            extra = f" corrections={len(f.corrections)}/{corr}" if corr else ""
            lines.append(f"  B[{k}] z0={self.elements[f.z0]} ν={f.order} {fac} #{f.index} terms={len(f.coeffs)}{extra}")
        return "\n".join(lines)

    def signature(self) -> str:
        if "signature" in self._cache:
            return self._cache["signature"]
        h = hashlib.sha256(self.spec.signature().encode())
        for f in self.functions:
            h.update(json.dumps([f.z0, f.factors, f.index]).encode())
            h.update(np.ascontiguousarray(f.mtuples, dtype=np.int64).tobytes())
            h.update(np.ascontiguousarray(f.coeffs, dtype=np.float64).tobytes())
            if isinstance(f.corrections, PackedTerms):
                for a in (f.corrections.factors, f.corrections.fptr, f.corrections.mtuples, f.corrections.coeffs,
                          f.corrections.rptr):
                    h.update(np.ascontiguousarray(a).tobytes())
                continue
            for factors, mtuples, coeffs in f.corrections:
                h.update(json.dumps(factors).encode())
                h.update(np.ascontiguousarray(mtuples, dtype=np.int64).tobytes())
                h.update(np.ascontiguousarray(coeffs, dtype=np.float64).tobytes())
        self._cache["signature"] = h.hexdigest()
        return self._cache["signature"]

    def evaluate(self, atoms) -> np.ndarray:
        """Per-atom basis values, shape (n_atoms, len(basis)); functions centred on another
        species than the atom's are zero.  Useful as descriptors."""
        from .basis_eval import BasisEvaluator

        return BasisEvaluator(self).basis_values(atoms)[0]

    def evaluate_pair(self, atoms) -> np.ndarray:
        """Per-atom pair-basis values, shape (n_atoms, len(basis.pair))."""
        from .basis_eval import BasisEvaluator

        return BasisEvaluator(self).basis_values(atoms)[1]

    # ------------------------------------------------------------------ radial
    def radial_blocks(self) -> dict:
        """One RadialBlock per ordered species pair: outputs R_1..R_nmax then P_1..P_npair."""
        blocks = self._cache.get("radial")
        if blocks is None:
            blocks = spec_radial_blocks(self.spec, self.nmax)
            self._cache["radial"] = blocks
        return blocks

    # ------------------------------------------------------------------ channels
    #: the angular functions of the folded model (:data:`acegen.ir.model.ANGULAR_KINDS`)
    ir_angular = "spherical"

    def _m_base(self, l: int) -> int:
        """Position in its channel of the entry an ``mtuples`` value 0 indexes: l (m = -l..l)."""
        return l

    @property
    def _pair_coeff(self) -> float:
        """P_n = coefficient · A[pair channel]: √(4π) since Y_00 = 1/√(4π)."""
        return SQRT4PI

    def channels(self, z0: int) -> tuple[tuple[Channel, ...], dict]:
        """Channels of central species z0 and the map (kind, zj, n, l) → Channel."""
        key = ("channels", z0)
        if key not in self._cache:
            labels = set()
            packed = []
            for f in self.functions:
                if f.z0 == z0:
                    for z, n, l in f.factors:
                        labels.add(("mb", z, n, l))
                    if isinstance(f.corrections, PackedTerms):
                        packed.append(f.corrections.factors)
                        continue
                    for factors, _, _ in f.corrections:
                        for z, n, l in factors:
                            labels.add(("mb", z, n, l))
            if packed:
                fac = np.concatenate(packed)
                code = np.unique((fac[:, 0] << 40) | (fac[:, 1] << 20) | fac[:, 2])
                labels.update(("mb", int(c >> 40), int((c >> 20) & 0xFFFFF), int(c & 0xFFFFF)) for c in code)
            for p in self.pair:
                if p.z0 == z0:
                    labels.add(("pair", p.zj, p.n, 0))
            chans, lookup, off = [], {}, 0
            for lab in sorted(labels, key=lambda t: (t[1], t[0] != "mb", t[2], t[3])):
                kind, z, n, l = lab
                rad = (n - 1) if kind == "mb" else self.nmax + n - 1
                ch = Channel(zj=z, radial=rad, l=l, offset=off, angular=self.ir_angular)
                chans.append(ch)
                lookup[lab] = ch
                off += ch.size
            self._cache[key] = (tuple(chans), lookup)
        return self._cache[key]

    # ------------------------------------------------------------------ folding
    def split_params(self, coefficients):
        """Accept a flat vector (many-body then pair) or a dict {'manybody', 'pair'}."""
        return split_coefficients(coefficients, len(self), len(self.pair))

    def function_terms(self, z0: int):
        """The product-basis expansion of every function centred on species z0.

        Yields ``(kind, k, monomial, coeff)``: ``kind`` is "mb" (many-body function k) or
        "pair" (pair function k), ``monomial`` a sorted tuple of A indices in the channel
        layout of :meth:`channels`, and B_k = Σ coeff · Π A[monomial].  Purified bases add
        their lower-order correction terms here, so every consumer (fold, fitting kernels)
        sees the same expansion."""
        chans, lookup = self.channels(z0)
        for k, f in enumerate(self.functions):
            if f.z0 != z0:
                continue
            offs = [lookup[("mb", z, n, l)].offset + self._m_base(l) for z, n, l in f.factors]
            for mt, c in zip(f.mtuples, f.coeffs):
                yield "mb", k, tuple(sorted(o + int(m) for o, m in zip(offs, mt))), float(c)
            corr = getattr(f, "corrections", ()) or ()
            if isinstance(corr, PackedTerms):
                yield from self._packed_terms(k, corr, lookup)
                continue
            for factors, mtuples, coeffs in corr:
                offs2 = [lookup[("mb", z, n, l)].offset + self._m_base(l) for z, n, l in factors]
                for mt, c in zip(mtuples, coeffs):
                    yield "mb", k, tuple(sorted(o + int(m) for o, m in zip(offs2, mt))), float(c)
        for k, p in enumerate(self.pair):
            if p.z0 != z0:
                continue
            ch = lookup[("pair", p.zj, p.n, 0)]
            yield "pair", k, (ch.offset,), self._pair_coeff

    def _packed_terms(self, k: int, corr: PackedTerms, lookup: dict):
        """function_terms of packed corrections: (A index rows sorted) per entry, vectorised."""
        fo = np.array([lookup[("mb", z, n, l)].offset + self._m_base(l) for z, n, l in corr.factors.tolist()],
                      dtype=np.int64)
        fptr, mptr, rptr = corr.fptr.tolist(), corr.mptr.tolist(), corr.rptr.tolist()
        coeffs = corr.coeffs.tolist()
        for e in range(len(fptr) - 1):
            nb = fptr[e + 1] - fptr[e]
            idx = np.sort(fo[fptr[e] : fptr[e + 1]][None, :] + corr.mtuples[mptr[e] : mptr[e + 1]].reshape(-1, nb),
                          axis=1)
            for mono, c in zip(map(tuple, idx.tolist()), coeffs[rptr[e] : rptr[e + 1]]):
                yield "mb", k, mono, c

    def projection_params(self, z0: int) -> np.ndarray:
        """Global parameter index (many-body k, then len(self) + pair k) of every projection
        column of species z0 (:meth:`fold` with ``projections=True``), in column order."""
        seen: dict[tuple[str, int], None] = {}
        for kind, k, _, _ in self.function_terms(z0):
            seen.setdefault((kind, k), None)
        return np.array([k if kind == "mb" else len(self) + k for kind, k in seen], dtype=np.int64)

    def fold(self, coefficients, *, name: str = "model", projections: bool = False,
             embedding: Embedding | None = None) -> ModelIR:
        """c̃ = Cᵀθ: fold coefficients onto the product basis, giving the ModelIR.
        ``projections``: also attach every basis function of each species (many-body, then
        pair, in parameter order) as :class:`~acegen.ir.model.ProjectionRows`, for the
        extrapolation grade (they do not change the energy model or its signature).
        ``embedding`` (default linear): with P densities (Finnis–Sinclair, ``ndensity`` P),
        ``coefficients`` is an (n_params, P) array, one column c_p per density
        ρ_p(i) = c_p · B(i)."""
        if embedding is None:
            embedding = Embedding("linear", 1, (1.0, 1.0))
        if not isinstance(coefficients, dict) and np.ndim(coefficients) == 2:
            c2 = np.asarray(coefficients, dtype=float)
            if c2.shape[1] != embedding.ndensity:
                raise SpecError(f"coefficients: {c2.shape[1]} columns for an embedding of {embedding.ndensity} "
                                f"densities")
            cols = [self.split_params(c2[:, p]) for p in range(c2.shape[1])]
            mb = np.stack([c[0] for c in cols], axis=1)
            pr = np.stack([c[1] for c in cols], axis=1)
        else:
            if embedding.ndensity != 1:
                raise SpecError(f"coefficients: an embedding of {embedding.ndensity} densities needs an "
                                f"(n_params, {embedding.ndensity}) array")
            mb, pr = self.split_params(coefficients)
        programs = []
        for z0 in range(len(self.elements)):
            chans, _ = self.channels(z0)
            acc: dict[tuple[int, ...], float] = {}
            pacc: dict[tuple[int, ...], dict[int, float]] = {}
            pcol: dict[tuple[str, int], int] = {}
            for kind, k, mono, c in self.function_terms(z0):
                if projections:
                    col = pcol.setdefault((kind, k), len(pcol))
                    row = pacc.setdefault(mono, {})
                    row[col] = row.get(col, 0.0) + c
                th = mb[k] if kind == "mb" else pr[k]
                if np.any(th != 0.0):
                    acc[mono] = acc.get(mono, 0.0) + th * c
            monos = sorted(acc, key=lambda m: (len(m), m))
            nd = embedding.ndensity
            coeffs = np.array([np.broadcast_to(acc[m], (nd,)) for m in monos], dtype=float).reshape(len(monos), nd)
            eref = 0.0
            if getattr(self.spec, "Eref", None):
                eref = float(dict(self.spec.Eref).get(self.elements[z0], 0.0))
            rows = None
            if projections:
                pmonos = sorted(pacc, key=lambda m: (len(m), m))
                pc = np.zeros((len(pmonos), len(pcol)))
                for r, m in enumerate(pmonos):
                    for col, c in pacc[m].items():
                        pc[r, col] = c
                rows = ProjectionRows(tuple(pmonos), pc)
            programs.append(
                SpeciesProgram(
                    zi=z0, channels=chans, monomials=tuple(monos), coeffs=coeffs,
                    embedding=embedding, E0=eref, projections=rows,
                )
            )
        return ModelIR(
            elements=self.elements,
            lmax=self.lmax,
            angular=self.angular_slp(),
            radial=self.radial_blocks(),
            species=tuple(programs),
            name=name,
            angular_kind=self.ir_angular,
        )

    def angular_slp(self):
        """The angular SLP of the folded model: real Y_lm, l <= lmax, and their gradients."""
        from .symbolic.ylm import ylm_slp

        return ylm_slp(self.lmax)


@dataclass(frozen=True, eq=False)
class CartesianBasis(CoupledBasis):
    """The lowered basis of a spec with ``angular`` 'cartesian' or 'cace'
    (:mod:`acegen.symbolic.cartesian`): the same :class:`BasisFunction` records, with
    ``mtuples`` indexing the Cartesian monomials ``alphas(l)`` of each factor instead of m,
    and exact integer coefficients.  It folds into a ModelIR of ``angular_kind``
    'cartesian': channels of width (l+1)(l+2)/2 (A[offset + q] for the q-th monomial of
    degree l) and the angular SLP :func:`~acegen.symbolic.cartesian.monomial_slp`, so every
    backend, the basis (fitting) kernel and the calculator take it as they take a spherical
    basis."""

    angular: str = "cartesian"
    ir_angular = "cartesian"

    def __repr__(self) -> str:
        return super().__repr__().replace("CoupledBasis(", f"CartesianBasis(angular {self.angular!r}, ", 1)

    def _m_base(self, l: int) -> int:
        return 0  # mtuples hold the position of α in alphas(l)

    @property
    def _pair_coeff(self) -> float:
        return 1.0  # r̂^(000) = 1

    def angular_slp(self):
        """The monomials r̂^α, |α| <= lmax, and their gradients (:func:`~acegen.symbolic.cartesian.monomial_slp`)."""
        from .symbolic.cartesian import monomial_slp

        return monomial_slp(self.lmax)


def _lower_cartesian(spec, progress: bool | None, cache: bool = True) -> CartesianBasis:
    from .progress import status
    from .symbolic import cartesian, radial, selection

    multisets = selection.select_multisets(spec)
    with status(f"lowering the {spec.angular} basis ({', '.join(spec.elements)}, order {spec.order}, "
                f"total degree {spec.totaldegree})", quiet=None if progress is None else not progress):
        per_multiset = cartesian.cartesian_functions(multisets, spec.angular, cache=cache)
    functions = []
    nel = len(spec.elements)
    for z0 in range(nel):
        for ms, funcs in zip(multisets, per_multiset):
            for q, f in enumerate(funcs):
                mt = np.array(list(f.terms), dtype=np.int64).reshape(len(f.terms), len(ms))
                c = np.array([float(v) for v in f.terms.values()], dtype=float)
                functions.append(BasisFunction(z0=z0, factors=tuple(ms), mtuples=mt, coeffs=c, index=q))
    lmax = max((l for f in functions for _, _, l in f.factors), default=0)
    nmax = radial.manybody_radial_slp(spec, 0, 0)[1]
    npair = radial.pair_radial_slp(spec, 0, 0)[1]
    pair = tuple(
        PairFunction(z0, zj, n) for z0 in range(nel) for zj in range(nel) for n in range(1, npair + 1)
    )
    basis = CartesianBasis(spec=spec, functions=tuple(functions), pair=pair, lmax=lmax, nmax=nmax, npair=npair,
                           angular=spec.angular)
    if spec.purification != "none":
        from .symbolic import purify

        basis = purify.purify_cartesian(basis, spec.purification)
    return basis


#: Part of the whole-basis cache key; bump when lowering's output changes.
BASIS_CACHE_VERSION = "acegen-basis-1"

_MEMORY: dict = {}  # spec -> basis, the few most recently lowered
_MEMORY_SIZE = 8


def _remember(spec, basis: CoupledBasis) -> None:
    _MEMORY.pop(spec, None)
    _MEMORY[spec] = basis
    while len(_MEMORY) > _MEMORY_SIZE:
        del _MEMORY[next(iter(_MEMORY))]


def _basis_cache_path(spec):
    from ._version import __version__
    from .symbolic import coupling

    versions = [BASIS_CACHE_VERSION, __version__, coupling.VERSION]
    if spec.purification != "none":
        from .symbolic import purify

        versions.append(purify.VERSION)
    key = json.dumps([spec.signature(), versions])
    return coupling.cache_dir() / "basis" / (hashlib.sha256(key.encode()).hexdigest() + ".npz"), key


def _save_basis(basis: CoupledBasis) -> None:
    """Write the lowered basis to the whole-basis cache (flat arrays; silently skipped when
    the cache directory is not writable).  Functions sharing (factors, index) across
    central species are stored once."""

    path, key = _basis_cache_path(basis.spec)
    tpl_of: dict = {}
    tpls = []
    fz0, ftpl = [], []
    for f in basis.functions:
        t = tpl_of.get((f.factors, f.index))
        if t is None:
            t = tpl_of[(f.factors, f.index)] = len(tpls)
            tpls.append(f)
        fz0.append(f.z0)
        ftpl.append(t)
    zero = np.zeros(1, dtype=np.int64)
    nf = np.array([f.order for f in tpls], dtype=np.int64)
    nr = np.array([len(f.coeffs) for f in tpls], dtype=np.int64)
    cf, cfp, cm, cmp_, cc, crp, ce = [], [zero], [], [zero], [], [zero], [0]
    foff = moff = roff = 0
    for f in tpls:
        corr = f.corrections
        if len(corr) and not isinstance(corr, PackedTerms):
            return  # only packed corrections are cached
        if len(corr):
            cf.append(corr.factors)
            cfp.append(corr.fptr[1:] + foff)
            cm.append(corr.mtuples)
            cmp_.append(corr.mptr[1:] + moff)
            cc.append(corr.coeffs)
            crp.append(corr.rptr[1:] + roff)
            foff, moff, roff = foff + len(corr.factors), moff + len(corr.mtuples), roff + len(corr.coeffs)
        ce.append(ce[-1] + len(corr))
    arrays = dict(
        key=np.array(key),
        scalars=np.array([basis.lmax, basis.nmax, basis.npair], dtype=np.int64),
        pair=np.array([[p.z0, p.zj, p.n] for p in basis.pair], dtype=np.int64).reshape(-1, 3),
        fz0=np.array(fz0, dtype=np.int64),
        ftpl=np.array(ftpl, dtype=np.int64),
        tindex=np.array([f.index for f in tpls], dtype=np.int64),
        tfactors=np.array([x for f in tpls for x in f.factors], dtype=np.int64).reshape(-1, 3),
        tfptr=np.concatenate([zero, np.cumsum(nf)]),
        tmt=np.concatenate([np.asarray(f.mtuples, dtype=np.int8).ravel() for f in tpls] + [zero[:0].astype(np.int8)]),
        tmptr=np.concatenate([zero, np.cumsum(nf * nr)]),
        tc=np.concatenate([np.asarray(f.coeffs, dtype=float) for f in tpls] + [np.zeros(0)]),
        trptr=np.concatenate([zero, np.cumsum(nr)]),
        ceptr=np.array(ce, dtype=np.int64),
        cfactors=np.concatenate(cf + [np.zeros((0, 3), dtype=np.int64)]).astype(np.int32),
        cfptr=np.concatenate(cfp),
        cmt=np.concatenate(cm + [zero[:0]]).astype(np.int8),
        cmptr=np.concatenate(cmp_),
        cc=np.concatenate(cc + [np.zeros(0)]),
        crptr=np.concatenate(crp),
    )
    write_atomic(path, lambda fh: np.savez(fh, **arrays), binary=True, suffix=".npz")


def _load_basis(spec) -> CoupledBasis | None:
    """The cached lowered basis of ``spec``, or None (missing, unreadable or stale)."""
    path, key = _basis_cache_path(spec)
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            d = {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError, EOFError):
        return None
    try:
        lmax, nmax, npair = (int(x) for x in d["scalars"])
        tmt = d["tmt"].astype(np.int64)
        cmt = d["cmt"].astype(np.int64)
        cfac = d["cfactors"].astype(np.int64)
        tfp, tmp_, trp = d["tfptr"].tolist(), d["tmptr"].tolist(), d["trptr"].tolist()
        cep, cfp, cmp_, crp = d["ceptr"].tolist(), d["cfptr"], d["cmptr"], d["crptr"]
        tfac = d["tfactors"].tolist()
        tc = d["tc"]
        for a in (tmt, tc):
            a.flags.writeable = False
        templates = []
        for t, index in enumerate(d["tindex"].tolist()):
            factors = tuple(tuple(r) for r in tfac[tfp[t] : tfp[t + 1]])
            mt = tmt[tmp_[t] : tmp_[t + 1]].reshape(-1, len(factors))
            c = tc[trp[t] : trp[t + 1]]
            e0, e1 = cep[t], cep[t + 1]
            corr: Sequence = ()
            if e1 > e0:
                f0, f1, m0, m1, r0, r1 = cfp[e0], cfp[e1], cmp_[e0], cmp_[e1], crp[e0], crp[e1]
                corr = PackedTerms(cfac[f0:f1], cfp[e0 : e1 + 1] - f0, cmt[m0:m1], cmp_[e0 : e1 + 1] - m0,
                                   d["cc"][r0:r1], crp[e0 : e1 + 1] - r0)
            templates.append((factors, mt, c, index, corr))
        functions = []
        for z0, t in zip(d["fz0"].tolist(), d["ftpl"].tolist()):
            factors, mt, c, index, corr = templates[t]
            functions.append(BasisFunction(z0=z0, factors=factors, mtuples=mt, coeffs=c, index=index,
                                           corrections=corr))
        pair = tuple(PairFunction(*r) for r in d["pair"].tolist())
    except (KeyError, ValueError, IndexError):
        return None
    return CoupledBasis(spec=spec, functions=tuple(functions), pair=pair, lmax=lmax, nmax=nmax, npair=npair)


def lower(spec, *, progress: bool | None = None, cache: bool = True) -> CoupledBasis:
    """Lower a BasisSpec to its coupled, invariant basis.

    Couplings are exact and cached per multiset (:mod:`acegen.symbolic.coupling`); with
    ``spec.purification`` 'pair' or 'canonical' the basis is purified
    (:mod:`acegen.symbolic.purify`).  ``cache=True`` reuses a basis lowered before, in this
    process or on disk (``coupling.cache_dir()/basis``, keyed by ``spec.signature()`` and the
    code versions); ``cache=False`` lowers afresh.  ``progress``: show a progress bar always
    (True), never (False) or only on a terminal, with a status line, and a bar for steps that
    run longer than two seconds (None; see :mod:`acegen.progress`).

    A spec with ``angular`` 'cartesian' or 'cace' gives a :class:`CartesianBasis`
    (:mod:`acegen.symbolic.cartesian`, whose invariants are cached on disk).
    """
    if getattr(spec, "angular", "spherical") != "spherical":
        basis = _MEMORY.get(spec) if cache else None
        if basis is None:
            basis = _lower_cartesian(spec, progress, cache)
            if cache:
                _remember(spec, basis)
        return basis
    purification = getattr(spec, "purification", "none")
    if purification != "none":
        try:
            from .symbolic import purify  # noqa: F401
        except ImportError:
            raise SpecError(
                f"BasisSpec.purification={purification!r} is not available in this version "
                "of acegen; use purification='none' (self-interacting basis)"
            ) from None
    if cache:
        basis = _MEMORY.get(spec)
        if basis is None:
            basis = _load_basis(spec)
        if basis is not None:
            _remember(spec, basis)
            return basis

    from .progress import status

    what = (f"lowering the basis ({', '.join(spec.elements)}, order {spec.order}, "
            f"total degree {spec.totaldegree}, purification {purification})")
    with status(what, quiet=None if progress is None else not progress):
        basis = _lower_uncached(spec, purification, progress)
    if cache:
        _save_basis(basis)
        _remember(spec, basis)
    return basis


def _lower_uncached(spec, purification: str, progress: bool | None) -> CoupledBasis:
    from .symbolic import coupling, radial, selection

    multisets = selection.select_multisets(spec)
    functions = []
    per_multiset = []
    for ms in progress_bar(multisets, "coupling", "multiset", progress):
        ls = tuple(l for _, _, l in ms)
        classes = []
        for t, f in enumerate(ms):
            classes.append(classes[t - 1] if t > 0 and ms[t - 1] == f else t)
        invs = coupling.invariants_float(ls, tuple(classes))
        per_multiset.append((ms, invs))
    nel = len(spec.elements)
    for z0 in range(nel):
        for ms, invs in per_multiset:
            for q, (mt, c) in enumerate(invs):
                functions.append(
                    BasisFunction(z0=z0, factors=tuple(ms), mtuples=np.asarray(mt, dtype=np.int64),
                                  coeffs=np.asarray(c, dtype=float), index=q)
                )
    lmax = max((l for f in functions for _, _, l in f.factors), default=0)
    nmax = radial.manybody_radial_slp(spec, 0, 0)[1]
    npair = radial.pair_radial_slp(spec, 0, 0)[1]
    pair = tuple(
        PairFunction(z0, zj, n) for z0 in range(nel) for zj in range(nel) for n in range(1, npair + 1)
    )
    basis = CoupledBasis(spec=spec, functions=tuple(functions), pair=pair, lmax=lmax, nmax=nmax, npair=npair)
    if purification != "none":
        from .symbolic import purify

        basis = purify.purify(basis, purification, progress=progress)
    return basis
