"""Helpers shared by every code-generating backend (C, CUDA, LLVM, embeddable library, LAMMPS).

* the kernel ABI constants: :data:`ABI_VERSION`, the status codes :class:`Status` and the
  minimum pair distance :data:`R_MIN`;
* the Jinja2 environment over the ``templates/`` folder (shipped as the package
  ``acegen.templates``; in a source checkout it is found next to the ``acegen`` folder);
* literal printers that render only validated numbers and generated identifiers
  (:func:`c_double`, :func:`c_int`, :func:`c_identifier`; for LLVM IR :func:`llvm_double`,
  :func:`llvm_doubles`, :func:`llvm_ints`);
* :class:`BondTable`: one bond (centre species, neighbour species, radial block, channels)
  of a basis kernel; model kernels are laid out by :mod:`acegen.backends.plan`;
* :func:`lower_basis`: a :class:`~acegen.basis.CoupledBasis` flattened for basis
  (design-matrix) kernels: sparse monomial × parameter coefficients and the Jacobian
  pattern ∂B/∂A (``templates/c/basis.c.j2``, :mod:`acegen.fit.assembly_kernel`).
"""

from __future__ import annotations

import functools
import math
import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import jinja2
import numpy as np

from .._fs import template_root
from ..abi import ABI_VERSION, R_MIN, STATUS_INDEX_KIND, Status  # noqa: F401  (re-exported)
from ..errors import CompileError

if TYPE_CHECKING:  # the IR pulls in sympy; the ABI constants must load without it
    from ..ir.model import ModelIR, RadialBlock

try:
    from importlib.resources.abc import Traversable
except ImportError:  # Python 3.10
    from importlib.abc import Traversable

_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEX_RE = re.compile(r"^[0-9a-f]{64}$")
_FILENAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


# -- literal printers ---------------------------------------------------------------------
def kernel_meta(ir: ModelIR) -> dict[str, object]:
    """What a loaded kernel must report about itself (checked by the loaders), plus the
    element symbols the Python side keeps."""
    n = len(ir.elements)
    rcut = np.array([[ir.rcut(zi, zj) for zj in range(n)] for zi in range(n)], dtype=float)
    return {"n_species": n, "rcut": rcut, "signature": ir.signature(), "elements": ir.elements}


def c_double(x: float) -> str:
    """A C double literal for a finite number: the shortest repr that reads back exactly."""
    v = float(x)
    if not math.isfinite(v):
        raise CompileError(f"cannot emit a non-finite constant ({x!r})")
    s = repr(v)
    return s if ("." in s or "e" in s) else s + ".0"


def c_int(x: int) -> str:
    """A C integer literal for an integral value (numpy or Python, bool rejected)."""
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
        raise CompileError(f"expected an integer, got {x!r}")
    return str(int(x))


def c_identifier(s: str) -> str:
    """``s`` unchanged if it is a plain C identifier, else CompileError."""
    if not isinstance(s, str) or not _IDENT_RE.match(s):
        raise CompileError(f"not a valid generated identifier: {s!r}")
    return s


def hexdigest(s: str) -> str:
    """``s`` unchanged if it is a sha256 hex digest, else CompileError."""
    if not isinstance(s, str) or not _HEX_RE.match(s):
        raise CompileError(f"not a sha256 hex digest: {s!r}")
    return s


def filename(s: str) -> str:
    """``s`` unchanged if it is a plain generated file name (no path, no quotes), else CompileError."""
    if not isinstance(s, str) or not _FILENAME_RE.match(s):
        raise CompileError(f"not a valid generated file name: {s!r}")
    return s


def _wrapped(items: Iterable[str], per_line: int, indent: str) -> str:
    items = list(items)
    rows = [", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line)]
    return (",\n" + indent).join(rows)


def c_doubles(values: Iterable[float], per_line: int = 4, indent: str = "    ") -> str:
    """Comma-separated double literals, ``per_line`` to a line (array initialisers)."""
    return _wrapped((c_double(v) for v in np.asarray(values, dtype=float).ravel()), per_line, indent)


def c_ints(values: Iterable[int], per_line: int = 16, indent: str = "    ") -> str:
    """Comma-separated integer literals, ``per_line`` to a line (array initialisers)."""
    return _wrapped((c_int(int(v)) for v in np.asarray(values).ravel()), per_line, indent)


def llvm_double(x: float) -> str:
    """An LLVM IR double constant for a finite number: ``0x`` + the 16 hex digits of its IEEE
    bits (exact: no decimal rounding in either direction)."""
    v = float(x)
    if not math.isfinite(v):
        raise CompileError(f"cannot emit a non-finite constant ({x!r})")
    return "0x%016X" % struct.unpack("<Q", struct.pack("<d", v))[0]


def llvm_doubles(values: Iterable[float], per_line: int = 4, indent: str = "    ") -> str:
    """Typed elements ``double 0x..., ...`` of an LLVM array constant, ``per_line`` to a line."""
    items = ("double " + llvm_double(v) for v in np.asarray(values, dtype=float).ravel())
    return _wrapped(items, per_line, indent)


def llvm_ints(values: Iterable[int], bits: int = 32, per_line: int = 12, indent: str = "    ") -> str:
    """Typed elements ``i32 1, ...`` of an LLVM integer array constant (values must fit)."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    out = []
    for v in np.asarray(values).ravel():
        s = c_int(v)
        if not lo <= int(s) <= hi:
            raise CompileError(f"integer {s} does not fit in i{bits}")
        out.append(f"i{bits} {s}")
    return _wrapped(out, per_line, indent)


# -- templates ----------------------------------------------------------------------------
class _ResourceLoader(jinja2.BaseLoader):
    """Load ``<target>/<file>`` templates from a Traversable (works inside wheels/zips)."""

    def __init__(self, root: Traversable) -> None:
        self.root = root

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool]]:
        node = self.root
        for part in template.split("/"):
            if part in ("", ".", ".."):
                raise jinja2.TemplateNotFound(template)
            node = node / part
        if not node.is_file():
            raise jinja2.TemplateNotFound(template)
        return node.read_text(encoding="utf-8"), None, lambda: True


@functools.lru_cache(maxsize=None)
def environment() -> jinja2.Environment:
    """The one cached Jinja2 environment (StrictUndefined, trim/lstrip blocks, no autoescape)."""
    env = jinja2.Environment(
        loader=_ResourceLoader(template_root()),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters.update(
        cdouble=c_double, cint=c_int, ident=c_identifier, hexdigest=hexdigest, filename=filename, cdoubles=c_doubles, cints=c_ints,
        lldouble=llvm_double, lldoubles=llvm_doubles, llints=llvm_ints,
    )
    return env


def render(template: str, **context: object) -> str:
    """Render ``template`` (e.g. ``"c/kernel.c.j2"``); ``preamble`` names the template."""
    preamble = f"autogenerated by acegen from template {template} -- do not edit"
    return environment().get_template(template).render(preamble=preamble, **context)


# -- model lowering -----------------------------------------------------------------------
@dataclass(frozen=True)
class BondTable:
    """What a basis kernel does with a neighbour of species ``zj`` around a centre of species ``zi``.

    channels: int32 (n_channels, 3) rows (offset, radial index, l) of the centre's channels
    with this neighbour species, in channel order.
    """

    zi: int
    zj: int
    block: RadialBlock
    channels: np.ndarray

    @property
    def rcut(self) -> float:
        return float(self.block.rcut)

    @property
    def nfunc(self) -> int:
        return int(self.block.nfunc)

    @property
    def n_channels(self) -> int:
        return int(self.channels.shape[0])


# -- basis lowering (design-matrix kernels) -------------------------------------------------
@dataclass(frozen=True)
class BasisOrderTable:
    """The monomials of one correlation order ``order`` of a species' basis program.

    monomials: int32 (n_mono, order) A indices of each monomial Π_t A[monomials[m, t]];
    coef_ptr: int32 (n_mono + 1,) CSR pointers into the coefficient entries of monomial m;
    coef_row: int32 (nnz,) local row (basis function) of each entry; coef_val: float64 (nnz,)
    its coefficient (B[row] += coef_val · monomial); coef_slot: int32 (nnz, order) the
    Jacobian slot that receives coef_val · Π_{s≠t} A[monomials[m, s]] for factor t.
    """

    order: int
    monomials: np.ndarray
    coef_ptr: np.ndarray
    coef_row: np.ndarray
    coef_val: np.ndarray
    coef_slot: np.ndarray

    @property
    def n_monomials(self) -> int:
        return int(self.monomials.shape[0])

    @property
    def nnz(self) -> int:
        return int(self.coef_row.shape[0])


@dataclass(frozen=True)
class BasisBondTable(BondTable):
    """A neighbour species ``zj`` of centre species ``zi`` in a basis program: a
    :class:`BondTable` whose channels are the A indices ``a_begin .. a_end-1`` (contiguous);
    rows: int32 local rows whose Jacobian has entries in these channels; row_ptr: int32
    (len(rows) + 1,) pointers into the species' Jacobian slots (``slot_col``) of each row.
    """

    a_begin: int
    a_end: int
    rows: np.ndarray
    row_ptr: np.ndarray


@dataclass(frozen=True)
class BasisSpeciesTable:
    """The basis program of central species ``zi``: one local row per linear parameter whose
    function is centred on ``zi`` (``columns[row]`` = its global parameter index).

    The Jacobian J[row, a] = ∂B_row/∂A[a] is stored sparsely: slot s is the entry
    (row, ``slot_col[s]``); slots are sorted by (neighbour species, row, A index), so the
    slots of one row and one neighbour species are contiguous (see :class:`BasisBondTable`).
    """

    zi: int
    n_A: int
    columns: np.ndarray
    slot_col: np.ndarray
    orders: tuple[BasisOrderTable, ...]
    bonds: tuple[BasisBondTable, ...]

    @property
    def n_rows(self) -> int:
        return int(self.columns.shape[0])

    @property
    def n_slots(self) -> int:
        return int(self.slot_col.shape[0])


@dataclass(frozen=True)
class BasisTables:
    """A lowered :class:`~acegen.basis.CoupledBasis` flattened for a basis (design-matrix)
    kernel: the product basis with one coefficient column per linear parameter, as sparse
    CSR tables (see :func:`lower_basis`)."""

    n_species: int
    n_params: int
    n_y: int
    lmax: int
    angular: object  # SLP: (x, y, z) -> Y, dP/dx, dP/dy, dP/dz
    radial: dict  # (zi, zj) -> RadialBlock
    rcut: np.ndarray  # (n_species, n_species); 0 where there is no radial block
    nfunc_max: int
    species: tuple[BasisSpeciesTable, ...]
    signature: str
    angular_kind: str = "spherical"  # acegen.ir.model.ANGULAR_KINDS

    @property
    def n_A_max(self) -> int:
        return max([1] + [s.n_A for s in self.species])

    @property
    def n_rows_max(self) -> int:
        return max([1] + [s.n_rows for s in self.species])

    @property
    def n_slots_max(self) -> int:
        return max([1] + [s.n_slots for s in self.species])


def _basis_species_table(basis, z0: int, radial: dict) -> BasisSpeciesTable:
    """Tables of central species z0 (see :class:`BasisSpeciesTable`), from the product-basis
    expansion ``basis.function_terms(z0)`` (purification corrections included)."""
    from ..ir.model import angular_width  # here: a cached kernel's loader imports this module, not SymPy

    chans, _ = basis.channels(z0)
    n_A = sum(ch.size for ch in chans)
    # local rows: many-body functions, then pair functions, each {monomial: coefficient}
    n_mb = len(basis.functions)
    row_of: dict[int, int] = {}
    row_terms: list[dict[tuple[int, ...], float]] = []
    for kind, k, mono, c in basis.function_terms(z0):
        col = k if kind == "mb" else n_mb + k
        r = row_of.get(col)
        if r is None:
            r = row_of[col] = len(row_terms)
            row_terms.append({})
        row_terms[r][mono] = row_terms[r].get(mono, 0.0) + c
    columns = sorted(row_of, key=row_of.__getitem__)
    # channel species of every A index, and the A range of each neighbour species
    a_species = np.empty(n_A, dtype=np.int64)
    for ch in chans:
        a_species[ch.offset : ch.offset + ch.size] = ch.zj
    # Jacobian pattern: (neighbour species, row, A index), sorted
    pattern = sorted({(int(a_species[a]), r, a) for r, terms in enumerate(row_terms) for mono in terms for a in mono})
    slot_of = {(r, a): s for s, (_, r, a) in enumerate(pattern)}
    slot_col = np.array([a for _, _, a in pattern], dtype=np.int32)
    # monomials by order, each with its coefficient entries
    monos: dict[int, dict[tuple[int, ...], list[tuple[int, float]]]] = {}
    for r, terms in enumerate(row_terms):
        for mono, c in terms.items():
            if c != 0.0:
                monos.setdefault(len(mono), {}).setdefault(mono, []).append((r, c))
    orders = []
    for nu in sorted(monos):
        items = sorted(monos[nu].items())
        ptr = np.zeros(len(items) + 1, dtype=np.int32)
        ptr[1:] = np.cumsum([len(e) for _, e in items])
        entries = [(mono, r, c) for mono, e in items for r, c in e]
        orders.append(BasisOrderTable(
            order=nu,
            monomials=np.array([m for m, _ in items], dtype=np.int32).reshape(len(items), nu),
            coef_ptr=ptr,
            coef_row=np.array([r for _, r, _ in entries], dtype=np.int32),
            coef_val=np.array([c for _, _, c in entries], dtype=float),
            coef_slot=np.array([[slot_of[(r, a)] for a in mono] for mono, r, _ in entries],
                               dtype=np.int32).reshape(len(entries), nu),
        ))
    bonds = []
    for zj in range(len(basis.elements)):
        rows_ch = [(ch.offset, ch.radial, ch.l) for ch in chans if ch.zj == zj]
        if not rows_ch:
            continue
        blk = radial[(z0, zj)]
        a_begin = min(o for o, _, _ in rows_ch)
        a_end = max(o + angular_width(basis.ir_angular, l) for o, _, l in rows_ch)
        lo = next((s for s, t in enumerate(pattern) if t[0] == zj), len(pattern))
        hi = next((s for s, t in enumerate(pattern) if t[0] > zj), len(pattern))
        seg_rows = np.array([pattern[s][1] for s in range(lo, hi)], dtype=np.int64)
        rows, starts = np.unique(seg_rows, return_index=True)
        row_ptr = np.append(lo + starts, hi).astype(np.int32)
        bonds.append(BasisBondTable(z0, zj, blk, np.asarray(rows_ch, dtype=np.int32).reshape(-1, 3),
                                    a_begin, a_end, rows.astype(np.int32), row_ptr))
    return BasisSpeciesTable(z0, n_A, np.asarray(columns, dtype=np.int64), slot_col, tuple(orders), tuple(bonds))


def lower_basis(basis) -> BasisTables:
    """Flatten a :class:`~acegen.basis.CoupledBasis` for a basis kernel.

    Per central species: the one-particle channels (as in :func:`acegen.backends.plan.build_plan`), one local row
    per linear parameter of that species (many-body functions, then pair functions
    P_n = √(4π)·A[pair channel], the order of ``CoupledBasis.split_params``), the distinct
    monomials of every order with a sparse (monomial × row) coefficient matrix
    B_row = Σ_m coef[m, row] Π_t A[m_t], and the sparsity pattern of the Jacobian
    ∂B_row/∂A.  Only analytic (SLP) radial blocks, as ``CoupledBasis.radial_blocks`` gives.
    """
    from ..ir.model import n_angular

    n = len(basis.elements)
    radial = basis.radial_blocks()
    rcut = np.zeros((n, n))
    for (zi, zj), blk in radial.items():
        if blk.slp is None:
            raise CompileError(f"basis kernels need analytic radial functions; bond ({zi}, {zj}) has a spline table")
        rcut[zi, zj] = blk.rcut
    species = tuple(_basis_species_table(basis, z0, radial) for z0 in range(n))
    return BasisTables(
        n_species=n,
        n_params=int(basis.n_params),
        n_y=n_angular(basis.ir_angular, basis.lmax),
        lmax=int(basis.lmax),
        angular=basis.angular_slp(),
        radial=radial,
        rcut=rcut,
        nfunc_max=max((b.nfunc for b in radial.values()), default=1),
        species=species,
        signature=basis.signature(),
        angular_kind=basis.ir_angular,
    )


def refuse_indicator_inputs(ir, target: str) -> None:
    """CompileError for a ModelIR with indicator inputs (a multilayer layer n > 1) on a target
    that has no ``compute_theta`` entry point yet (the C, LLVM and CUDA kernels have it)."""
    if isinstance(ir, tuple) or getattr(ir, "theta", False):
        raise CompileError(f"the {target} target has no kernel with indicator inputs (multilayer ACE) yet; "
                           "multilayer models compile for the targets 'c', 'llvm' and 'cuda'")

