"""Helpers shared by every code-generating backend (C now; CUDA and LLVM later).

* the kernel ABI constants: :data:`ABI_VERSION`, the status codes :class:`Status` and the
  minimum pair distance :data:`R_MIN`;
* the Jinja2 environment over the ``templates/`` folder (shipped as the package
  ``acegen.templates``; in a source checkout it is found next to the ``acegen`` folder);
* literal printers that render only validated numbers and generated identifiers
  (:func:`c_double`, :func:`c_int`, :func:`c_identifier`);
* :func:`lower_model`: a :class:`~acegen.ir.model.ModelIR` flattened into the tables every
  kernel needs (per bond: cutoff and channel list; per species: product DAG, output
  coefficients, embedding), so all backends read one lowering.
"""

from __future__ import annotations

import enum
import functools
import importlib.resources
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import jinja2
import numpy as np

import acegen

from ..errors import CompileError
from ..ir.dag import ProductDAG, build_dag
from ..ir.model import ModelIR, RadialBlock

try:
    from importlib.resources.abc import Traversable
except ImportError:  # Python 3.10
    from importlib.abc import Traversable

#: Version of the exported kernel interface (function names, argument lists, status codes,
#: ``info`` outputs).  Bump on any change; the loader refuses a library with another version.
ABI_VERSION = 1

#: Pairs closer than this (Å) are rejected as overlapping atoms (Status.OVERLAP).
R_MIN = 1e-12


class Status(enum.IntEnum):
    """Return codes of ``acegen_<name>_compute``; the comment says what ``*err_index`` holds."""

    OK = 0
    BAD_CENTRE_SPECIES = 1  # atom index: species[i] outside [0, n_species)
    BAD_NEIGHBOUR_SPECIES = 2  # pair index: nb_species[k] outside [0, n_species)
    OVERLAP = 3  # pair index: |r_ij| < R_MIN
    NONFINITE = 4  # pair index: a component of r_ij is NaN or infinite
    BAD_OFFSETS = 5  # atom index: offsets[i] < 0 or offsets[i+1] < offsets[i]
    NO_MEMORY = 6  # atom index: workspace allocation failed
    BAD_ARGUMENT = 7  # -1: negative n_centres or a NULL pointer


#: Which index ``*err_index`` names for each failing status.
STATUS_INDEX_KIND: dict[Status, str] = {
    Status.BAD_CENTRE_SPECIES: "atom",
    Status.BAD_NEIGHBOUR_SPECIES: "pair",
    Status.OVERLAP: "pair",
    Status.NONFINITE: "pair",
    Status.BAD_OFFSETS: "atom",
    Status.NO_MEMORY: "atom",
    Status.BAD_ARGUMENT: "none",
}

_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEX_RE = re.compile(r"^[0-9a-f]{64}$")
_FILENAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


# -- literal printers ---------------------------------------------------------------------
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


# -- templates ----------------------------------------------------------------------------
def template_root() -> Traversable:
    """The templates folder: package ``acegen.templates`` if installed, else the repo copy."""
    try:
        root = importlib.resources.files("acegen.templates")
        if root.is_dir():
            return root
    except ModuleNotFoundError:
        pass
    return Path(acegen.__file__).resolve().parent.parent / "templates"


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
        cdouble=c_double, cint=c_int, ident=c_identifier, hexdigest=hexdigest, filename=filename, cdoubles=c_doubles, cints=c_ints
    )
    return env


def render(template: str, **context: object) -> str:
    """Render ``template`` (e.g. ``"c/kernel.c.j2"``); ``preamble`` names the template."""
    preamble = f"autogenerated by acegen from template {template} -- do not edit"
    return environment().get_template(template).render(preamble=preamble, **context)


# -- model lowering -----------------------------------------------------------------------
@dataclass(frozen=True)
class BondTable:
    """What a kernel does with a neighbour of species ``zj`` around a centre of species ``zi``.

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


@dataclass(frozen=True)
class SpeciesTable:
    """Per central species: the product DAG and the bonds a kernel must visit.

    ``bonds`` holds the neighbour species that have a radial block and either channels or,
    when the species has a core repulsion (kind other than "none"), no channels at all (such
    a neighbour still enters the core density and the nearest-neighbour switch).  Other
    neighbours contribute nothing (their dE/dr_ij is zero).
    """

    zi: int
    n_A: int
    dag: ProductDAG
    bonds: tuple[BondTable, ...]


@dataclass(frozen=True)
class ModelTables:
    """A ModelIR flattened for code generation (see :func:`lower_model`)."""

    ir: ModelIR
    n_species: int
    n_y: int
    rcut: np.ndarray  # (n_species, n_species); 0 where there is no radial block
    nfunc_max: int
    nodes_max: int
    ndensity_max: int
    species: tuple[SpeciesTable, ...]
    signature: str


def lower_model(ir: ModelIR) -> ModelTables:
    """Flatten ``ir``: channel tables per bond, product DAG per species, size maxima."""
    n = len(ir.elements)
    rcut = np.zeros((n, n))
    for (zi, zj), blk in ir.radial.items():
        if not (0 <= zi < n and 0 <= zj < n) or (blk.zi, blk.zj) != (zi, zj):
            raise CompileError(f"radial block key {(zi, zj)} does not match the model's species")
        rcut[zi, zj] = blk.rcut
    n_y = (ir.lmax + 1) ** 2
    if len(ir.angular.inputs) != 3 or len(ir.angular.outputs) != 4 * n_y:
        raise CompileError(f"angular SLP must map (x, y, z) to {4 * n_y} outputs (Y, dY/dx, dY/dy, dY/dz)")
    species = []
    for prog in ir.species:
        bonds = []
        for zj in range(n):
            rows = [(ch.offset, ch.radial, ch.l) for ch in prog.channels if ch.zj == zj]
            blk = ir.radial.get((prog.zi, zj))
            if blk is not None and (rows or prog.core.kind != "none"):
                bonds.append(BondTable(prog.zi, zj, blk, np.asarray(rows, dtype=np.int32).reshape(-1, 3)))
        species.append(SpeciesTable(prog.zi, prog.n_A, build_dag(prog), tuple(bonds)))
    return ModelTables(
        ir=ir,
        n_species=n,
        n_y=n_y,
        rcut=rcut,
        nfunc_max=max((b.nfunc for b in ir.radial.values()), default=1),
        nodes_max=max([1] + [s.dag.n_nodes for s in species]),
        ndensity_max=max(p.embedding.ndensity for p in ir.species) if ir.species else 1,
        species=tuple(species),
        signature=ir.signature(),
    )
