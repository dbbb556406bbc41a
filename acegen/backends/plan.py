"""The kernel plan: a :class:`~acegen.ir.model.ModelIR` laid out for code generation, once.

``ModelIR → KernelPlan → templates``: :func:`build_plan` decides everything a kernel template
needs that is not target syntax -- per central species the bonds it visits (radial slots,
channel rows grouped by l, record sizes), the grouped product schedule and its output
coefficients, the embedding and core/inner-cutoff physics as straight-line programs
(:mod:`acegen.ir.physics`), and the placement of every spline table in one float64 buffer.
The C, LLVM and CUDA backends (and through the C kernel the embeddable library and the
LAMMPS plugin) render their templates from the same plan with their own SLP printer.

The plan is frozen; :meth:`KernelPlan.to_text` prints it (committed as golden files under
``generated/``), :meth:`KernelPlan.signature` hashes that text.

Spline tables come in two layouts, both placed at multiples of :data:`TABLE_ALIGN` doubles:

* ``"slots"`` (the C kernel): per bond, ``[bin][c0..c3][slot]`` over the bond's radial slots,
  padded to ``nslot_pad`` -- one contiguous row per neighbour, vectorised over the slots;
* ``"functions"`` (LLVM, CUDA): per radial block, PACE's ``[bin][function][c0..c3]``.

Radial blocks that share one :class:`~acegen.ir.model.SplineTable` object (an element
embedding: the bonds differ only by per-function ``weights``) share one copy of the table in
each layout; a kernel multiplies the values and derivatives by the bond's weights.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from ..errors import CompileError
from ..ir.dag import GroupedSchedule, ProductDAG, build_dag, group_schedule
from ..ir.model import ANY, ModelIR, RadialBlock, angular_offset, angular_width, n_angular
from ..ir.physics import core_slp, embedding_slp, theta_embedding_slp
from ..ir.slp import SLP
from ..abi import ABI_VERSION, R_MIN, STATUS_INDEX_KIND, Status

#: Every spline table starts on a multiple of this many doubles (64 bytes) in its buffer.
TABLE_ALIGN = 8

#: Padding (doubles) of radial slots and product-DAG nodes: the largest SIMD width a kernel
#: uses (8 doubles with AVX-512; the 4-lane LLVM vectors and the narrower C widths divide it).
SIMD_PAD = 8

LAYOUTS = ("slots", "functions")


def _pad(n: int, to: int) -> int:
    return -(-n // to) * to


def _aligned(n: int) -> int:
    return _pad(n, TABLE_ALIGN)


@dataclass(frozen=True, eq=False)
class RadialPlan:
    """One radial block (bond ``(zi, zj)``) as a kernel evaluates it: an SLP of the single
    input ``r`` (``kind == "slp"``), or a cubic spline table (``kind == "spline"``) whose
    ``[bin][function][c0..c3]`` copy starts at ``offset`` doubles in the "functions" buffer."""

    zi: int
    zj: int
    kind: str
    nfunc: int
    rcut: float
    slp: SLP | None
    nbins: int
    h: float
    offset: int  # "functions" layout; -1 for an SLP
    block: RadialBlock

    @property
    def inv_h(self) -> float:
        return 1.0 / self.h

    @property
    def weights(self) -> np.ndarray | None:
        """Per-function weights of a shared table (None: the table holds the functions)."""
        return self.block.weights


@dataclass(frozen=True, eq=False)
class Group:
    """Channel rows ``r0 .. r1-1`` of a bond share the angular momentum ``l``."""

    l: int
    r0: int
    r1: int


@dataclass(frozen=True, eq=False)
class BondPlan:
    """What a kernel does with a neighbour of species ``zj`` around a centre ``zi``.

    ``channels``: int32 (n_chan, 3) rows (offset, radial function, l) in channel order;
    ``slots``: the radial functions evaluated, in order of first use by the channels sorted by
    (l, channel order), then the core-repulsion function (functions no channel uses are never
    evaluated); ``rows``: int32 (n_chan, 2) (slot, offset) of every channel grouped by l, with
    ``groups`` over them; ``rec``: doubles per neighbour of the C record (u, r, R, dR over
    slots, then Y and grad P when the bond has channels); ``slot_offset``: the bond's table in
    the "slots" buffer (-1 without spline).
    """

    zi: int
    zj: int
    rcut: float
    nfunc: int
    channels: np.ndarray
    core: int | None  # the block's core-repulsion function
    core_slot: int | None  # its slot, when the species has a core repulsion
    r_in: float
    delta_in: float
    slots: tuple[int, ...]
    rows: np.ndarray
    groups: tuple[Group, ...]
    lmax: int
    rec: int
    slot_offset: int
    radial: RadialPlan
    # a merged bond (``build_plan(ir, merge_shared=True)``): the neighbour species it serves,
    # and the weights (n_species, nslot) of its slots per neighbour species; () and None otherwise
    zjs: tuple[int, ...] = ()
    weight_table: np.ndarray | None = None
    #: the radial functions also depend on the neighbour's indicator θ_j: a third row per
    #: slot holds ∂R/∂θ_j (after R and dR/dr)
    theta: bool = False

    @property
    def rad_rows(self) -> int:
        """Rows of radial data per slot in the C record: R, dR/dr (and ∂R/∂θ_j)."""
        return (3 if self.theta else 2) * len(self.slots)

    @property
    def y_row(self) -> int:
        """First row of Y (then the gradients of P) in the C record."""
        return 4 + self.rad_rows
    angular_kind: str = "spherical"

    @property
    def members(self) -> tuple[int, ...]:
        """The neighbour species bucketed into this bond."""
        return self.zjs or (self.zj,)

    @property
    def n_chan(self) -> int:
        return int(self.channels.shape[0])

    @property
    def nslot(self) -> int:
        return len(self.slots)

    @property
    def nslot_pad(self) -> int:
        return _pad(max(self.nslot, 1), SIMD_PAD)

    @property
    def ny(self) -> int:
        """Angular functions of degree <= the bond's lmax."""
        return n_angular(self.angular_kind, self.lmax)

    @property
    def slot_weights(self) -> np.ndarray | None:
        """The radial block's weights of the slot functions (None without weights, and for a
        merged bond, whose weights depend on the neighbour: :attr:`weight_table`)."""
        w = self.radial.block.weights
        return None if w is None or self.weight_table is not None else np.asarray(w)[list(self.slots)]


@dataclass(frozen=True, eq=False)
class SpeciesPlan:
    """Per central species: the product schedule, the physics SLPs and the bonds to visit.

    ``coef``: (ndensity, n_nodes_pad) output coefficients of the schedule's nodes (zero for
    auxiliary nodes and padding); ``embedding``: :func:`~acegen.ir.physics.embedding_slp`;
    ``core``: :func:`~acegen.ir.physics.core_slp` (E0 included).
    """

    zi: int
    n_A: int
    dag: ProductDAG
    schedule: GroupedSchedule
    coef: np.ndarray
    ndensity: int
    embedding_kind: str
    embedding_params: tuple[tuple[float, float], ...]
    embedding: SLP
    E0: float
    core_kind: str
    rho_core_cut: float
    drho_core_cut: float
    core: SLP
    bonds: tuple[BondPlan, ...]

    @property
    def n_nodes(self) -> int:
        return int(self.schedule.n_nodes)

    @property
    def n_nodes_pad(self) -> int:
        return _pad(self.n_nodes, SIMD_PAD)

    @property
    def n_products(self) -> int:
        return int(self.schedule.n_products)

    @property
    def n_groups(self) -> int:
        return int(self.schedule.n_groups)

    @property
    def key(self) -> np.ndarray:
        return self.schedule.key

    @property
    def group_ptr(self) -> np.ndarray:
        return self.schedule.group_ptr

    @property
    def other(self) -> np.ndarray:
        return self.schedule.other

    @property
    def n_out(self) -> int:
        return int(self.dag.out_nodes.size)


@dataclass(frozen=True, eq=False)
class KernelPlan:
    """A ModelIR laid out for the kernel templates (see the module docstring)."""

    ir: ModelIR
    name: str
    n_species: int
    lmax: int
    n_y: int
    rcut: np.ndarray  # (n_species, n_species); 0 where there is no radial block
    angular: SLP
    species: tuple[SpeciesPlan, ...]
    radials: tuple[RadialPlan, ...]  # the radial blocks some bond uses, (zi, zj) ascending
    slot_doubles: int  # size of the "slots" table buffer
    function_doubles: int  # size of the "functions" table buffer
    #: "spherical" (Y_lm: 2l+1 per degree at l²) or "cartesian" (monomials: (l+1)(l+2)/2 at
    #: l(l+1)(l+2)/6); ``ang_off[l]`` / ``ang_width[l]`` are what the templates print
    angular_kind: str = "spherical"

    @property
    def cartesian(self) -> bool:
        return self.angular_kind == "cartesian"

    @cached_property
    def ang_off(self) -> tuple[int, ...]:
        """Index of the first angular function of degree l, l = 0..lmax+1."""
        return tuple(angular_offset(self.angular_kind, l) for l in range(self.lmax + 2))

    @cached_property
    def ang_width(self) -> tuple[int, ...]:
        """Angular functions of degree l, l = 0..lmax."""
        return tuple(angular_width(self.angular_kind, l) for l in range(self.lmax + 1))

    # -- what the kernel outputs -------------------------------------------------------------
    @property
    def project(self) -> bool:
        """The projection variant (``ModelIR.output == "projections"``): per centre, the row
        ρ_0 … ρ_{nd−1}, b_0 … b_{N−1}, F'_0(ρ_0) … F'_{nd−1}(ρ_{nd−1}) (the species's embedding,
        printed as in the energy kernel; zero-padded to :attr:`out_width`) instead of E_i, and
        no gradients (the kernel leaves dE/dr zero)."""
        return self.ir.output == "projections"

    @property
    def theta(self) -> bool:
        """The kernel takes indicator inputs (``ModelIR.theta``, a multilayer layer n > 1) and
        exports ``acegen_<name>_compute_theta`` besides ``acegen_<name>_compute``."""
        return self.ir.theta

    @property
    def out_width(self) -> int:
        """Doubles written per centre: 1 (the energy) or the projection row width."""
        return self.ir.projection_width if self.project else 1

    # -- sizes the templates declare ------------------------------------------------------
    @property
    def nfunc_max(self) -> int:
        return max((b.nfunc for b in self.ir.radial.values()), default=1)

    @property
    def nodes_max(self) -> int:
        return max([SIMD_PAD] + [s.n_nodes_pad for s in self.species])

    @property
    def n_nodes_max(self) -> int:
        """The largest DAG node count, unpadded (the CUDA kernel's per-thread workspace)."""
        return max([1] + [s.n_nodes for s in self.species])

    @property
    def ndens_max(self) -> int:
        return max([1] + [s.ndensity for s in self.species])

    @property
    def nbonds_max(self) -> int:
        return max([1] + [len(s.bonds) for s in self.species])

    @property
    def rec_max(self) -> int:
        return max([1] + [b.rec for s in self.species for b in s.bonds])

    @property
    def na_max(self) -> int:
        return max([1] + [s.n_A for s in self.species])

    @property
    def lmax_used(self) -> int:
        return max([b.lmax for s in self.species for b in s.bonds if b.n_chan], default=0)

    @property
    def embedding_kinds(self) -> list[str]:
        return sorted({s.embedding_kind for s in self.species})

    @property
    def core_kinds(self) -> list[str]:
        return sorted({s.core_kind for s in self.species})

    @cached_property
    def signature_ir(self) -> str:
        return self.ir.signature()

    # -- spline tables --------------------------------------------------------------------
    def tables(self, layout: str) -> np.ndarray:
        """The little-endian float64 buffer of every spline table in ``layout`` ("slots" or
        "functions"; see the module docstring), at the plan's offsets; empty without splines."""
        if layout == "slots":
            out = np.zeros(self.slot_doubles, dtype="<f8")
            done: set[int] = set()
            for s in self.species:
                for b in s.bonds:
                    if b.slot_offset < 0 or b.slot_offset in done:
                        continue
                    done.add(b.slot_offset)
                    spl = b.radial.block.spline
                    if b.slots:  # written in place (the buffer is zero: padding slots stay zero)
                        table = out[b.slot_offset : b.slot_offset + spl.nbins * 4 * b.nslot_pad]
                        table.reshape(spl.nbins, 4, b.nslot_pad)[:, :, : b.nslot] = np.transpose(
                            spl.coeffs[:, list(b.slots), :], (0, 2, 1))
            return out
        if layout == "functions":
            out = np.zeros(self.function_doubles, dtype="<f8")
            done = set()
            for rp in self.radials:
                if rp.offset >= 0 and rp.offset not in done:
                    done.add(rp.offset)
                    flat = np.ascontiguousarray(rp.block.spline.coeffs, dtype="<f8").ravel()
                    out[rp.offset : rp.offset + flat.size] = flat
            return out
        raise CompileError(f"unknown spline-table layout {layout!r}; choose one of {', '.join(LAYOUTS)}")

    # -- templates --------------------------------------------------------------------------
    def context(self) -> dict[str, object]:
        """The template variables every kernel target shares: the ABI constants, the model's
        identity and sizes, and the plan's species and radial blocks."""
        return {
            "plan": self,
            "name": self.name,
            "abi_version": ABI_VERSION,
            "r_min": R_MIN,
            "status": [(s.name, int(s), STATUS_INDEX_KIND.get(s, "none")) for s in Status],
            "signature": self.signature_ir,
            "n_species": self.n_species,
            "n_y": self.n_y,
            "lmax": self.lmax,
            "lmax_used": self.lmax_used,
            "rcut": self.rcut,
            "nfunc_max": self.nfunc_max,
            "nodes_max": self.nodes_max,
            "n_nodes_max": self.n_nodes_max,
            "ndens_max": self.ndens_max,
            "nbonds_max": self.nbonds_max,
            "rec_max": self.rec_max,
            "na_max": self.na_max,
            "embedding_kinds": self.embedding_kinds,
            "core_kinds": self.core_kinds,
            "species": self.species,
            "radials": self.radials,
            "project": self.project,
            "out_width": self.out_width,
            "theta": self.theta,
        }

    # -- text and identity --------------------------------------------------------------
    def to_text(self) -> str:
        """A readable, deterministic description of the whole plan (numbers at full precision)."""

        def ints(a) -> str:
            return " ".join(str(int(v)) for v in np.asarray(a).ravel())

        def floats(a) -> str:
            return " ".join(repr(float(v)) for v in np.asarray(a).ravel())

        def slp(prog: SLP, indent: str) -> list[str]:
            return [indent + line for line in prog.to_text().splitlines()]

        out = [
            f"kernel plan {self.name}: {self.n_species} species, lmax {self.lmax}, n_y {self.n_y}",
            f"ir signature {self.signature_ir}",
            f"table_align {TABLE_ALIGN} simd_pad {SIMD_PAD}",
            f"tables: slots {self.slot_doubles} doubles, functions {self.function_doubles} doubles",
            f"sizes: nfunc_max {self.nfunc_max} nodes_max {self.nodes_max} ndens_max {self.ndens_max} "
            f"nbonds_max {self.nbonds_max} rec_max {self.rec_max} na_max {self.na_max} lmax_used {self.lmax_used}",
            f"rcut {floats(self.rcut)}",
            f"angular: {len(self.angular)} assignments, signature {self.angular.signature()}",
        ]
        if self.cartesian:
            out.append("angular kind cartesian: degree l at l(l+1)(l+2)/6, (l+1)(l+2)/2 monomials")
        if self.project:
            out.append(f"output projections, width {self.out_width}")
        if self.theta:
            out.append("indicator inputs: theta_i per centre, theta_j per pair; on-site degrees "
                       + " ".join(str(sp.onsite) for sp in self.ir.species))
        for rp in self.radials:
            if rp.kind == "slp":
                out.append(f"radial ({rp.zi}, {rp.zj}): slp, {rp.nfunc} functions, rcut {rp.rcut!r}, "
                           f"{len(rp.slp)} assignments, signature {rp.slp.signature()}")
            else:
                out.append(f"radial ({rp.zi}, {rp.zj}): spline, {rp.nfunc} functions, rcut {rp.rcut!r}, "
                           f"{rp.nbins} bins of h {rp.h!r}, functions offset {rp.offset}")
                if rp.weights is not None:
                    out.append(f"  weights: {floats(rp.weights)}")
        for s in self.species:
            out.append(f"species {s.zi}: n_A {s.n_A}, nodes {s.n_nodes} (pad {s.n_nodes_pad}), products {s.n_products}, "
                       f"groups {s.n_groups}, outputs {s.n_out}, ndensity {s.ndensity}")
            out.append(f"  schedule key: {ints(s.key)}")
            out.append(f"  schedule group_ptr: {ints(s.group_ptr)}")
            out.append(f"  schedule other: {ints(s.other)}")
            for p in range(s.ndensity):
                out.append(f"  coef[{p}]: {floats(s.coef[p, : s.n_nodes])}")
            out.append(f"  embedding {s.embedding_kind} params {floats([x for pair in s.embedding_params for x in pair])}")
            out.extend(slp(s.embedding, "    "))
            out.append(f"  core {s.core_kind} E0 {s.E0!r} rho_core_cut {s.rho_core_cut!r} drho_core_cut {s.drho_core_cut!r}")
            out.extend(slp(s.core, "    "))
            for b in s.bonds:
                out.append(f"  bond ({b.zi}, {b.zj}): rcut {b.rcut!r}, r_in {b.r_in!r}, delta_in {b.delta_in!r}, "
                           f"{b.radial.kind}, slots [{ints(b.slots)}] (pad {b.nslot_pad}), core {b.core} "
                           f"core_slot {b.core_slot}, lmax {b.lmax}, rec {b.rec}, slot_offset {b.slot_offset}")
                if b.weight_table is not None:
                    out.append(f"    merged neighbour species [{ints(b.zjs)}], weights per species: {floats(b.weight_table)}")
                out.append(f"    channels (offset radial l): {ints(b.channels)}")
                out.append(f"    rows (slot offset): {ints(b.rows)}")
                out.append("    groups (l r0 r1): " + " ".join(f"({g.l} {g.r0} {g.r1})" for g in b.groups))
        return "\n".join(out) + "\n"

    __str__ = to_text

    def signature(self) -> str:
        """sha256 of :meth:`to_text`."""
        return hashlib.sha256(self.to_text().encode()).hexdigest()


def _bond(ir: ModelIR, zi: int, zj: int, rows_in: list[tuple[int, int, int]], has_core: bool, n_y: int,
          radial: RadialPlan, slot_offset: int, shared_slots: tuple[int, ...] | None = None) -> BondPlan:
    """``n_y``: angular functions per neighbour record (every degree <= ``ir.lmax``)."""
    blk = ir.radial[(zi, zj)]
    channels = np.asarray(rows_in, dtype=np.int32).reshape(-1, 3)
    order = sorted(range(channels.shape[0]), key=lambda c: (int(channels[c, 2]), c))
    slot_of: dict[int, int] = {}
    if blk.weights is not None:  # a shared table: every function is a slot, so all bonds share one copy
        slot_of = {f: f for f in range(blk.nfunc)}
    elif shared_slots is not None:  # a table several bonds use: the functions any of them uses
        slot_of = {f: k for k, f in enumerate(shared_slots)}
    rows: list[tuple[int, int]] = []
    groups: list[list[int]] = []
    for c in order:
        off, rad, l = (int(v) for v in channels[c])
        if rad not in slot_of:
            slot_of[rad] = len(slot_of)
        if not groups or groups[-1][0] != l:
            groups.append([l, len(rows), len(rows)])
        rows.append((slot_of[rad], off))
        groups[-1][2] = len(rows)
    core = blk.core if has_core else None
    if core is not None and core not in slot_of:
        slot_of[core] = len(slot_of)
    slots = tuple(sorted(slot_of, key=slot_of.__getitem__))
    n_chan = channels.shape[0]
    return BondPlan(
        zi=zi, zj=zj, rcut=float(blk.rcut), nfunc=int(blk.nfunc), channels=channels,
        core=blk.core, core_slot=None if core is None else slot_of[core],
        r_in=float(blk.r_in), delta_in=float(blk.delta_in), slots=slots,
        rows=np.asarray(rows, dtype=np.int32).reshape(-1, 2),
        groups=tuple(Group(*g) for g in groups),
        lmax=max((g[0] for g in groups), default=0),
        rec=4 + (3 if blk.theta else 2) * len(slots) + (4 * n_y if n_chan else 0),
        slot_offset=slot_offset, radial=radial, theta=blk.theta, angular_kind=ir.angular_kind,
    )


def _merge_shared(ir: ModelIR, prog, bonds: list[BondPlan]) -> list[BondPlan]:
    """One bond for every neighbour species when a species' channels all sum over every
    neighbour (``ANY``), its bonds share one weighted spline table, rows and cutoff, and it has
    no core repulsion; else ``bonds`` unchanged."""
    if len(bonds) < 2 or prog.core.kind != "none" or not prog.channels:
        return bonds
    if not all(ch.zj == ANY for ch in prog.channels):
        return bonds
    b0 = bonds[0]
    blk0 = b0.radial.block
    for b in bonds:
        blk = b.radial.block
        if (blk.weights is None or blk.spline is not blk0.spline or b.rcut != b0.rcut or b.slots != b0.slots
                or b.slot_offset != b0.slot_offset or not np.array_equal(b.rows, b0.rows)):
            return bonds
    table = np.zeros((len(ir.elements), b0.nslot))
    for b in bonds:
        table[b.zj] = np.asarray(b.radial.block.weights)[list(b.slots)]
    return [replace(b0, zjs=tuple(b.zj for b in bonds), weight_table=table)]


@dataclass(frozen=True)
class _Outputs:
    """What :func:`~acegen.ir.dag.build_dag` reads of a program: its leaves, monomials and
    output columns (the projection variant's columns are ρ then b)."""

    n_A: int
    monomials: tuple
    coeffs: np.ndarray


def build_plan(ir: ModelIR, *, merge_shared: bool = False) -> KernelPlan:
    """Lay ``ir`` out for the kernel templates (see the module docstring).

    ``merge_shared``: bonds of a species that differ only by the weights of one shared
    spline table become one bond over all their neighbour species, the weights looked up
    per neighbour (:func:`_merge_shared`; the C kernel renders such bonds)."""
    n = len(ir.elements)
    rcut = np.zeros((n, n))
    for (zi, zj), blk in ir.radial.items():
        if not (0 <= zi < n and 0 <= zj < n) or (blk.zi, blk.zj) != (zi, zj):
            raise CompileError(f"radial block key {(zi, zj)} does not match the model's species")
        rcut[zi, zj] = blk.rcut
    n_y = n_angular(ir.angular_kind, ir.lmax)
    if len(ir.angular.inputs) != 3 or len(ir.angular.outputs) != 4 * n_y:
        raise CompileError(f"angular SLP must map (x, y, z) to {4 * n_y} outputs (Y, dY/dx, dY/dy, dY/dz)")
    # the bonds every species visits: a radial block, and channels or a core repulsion
    visits: list[list[tuple[int, list[tuple[int, int, int]]]]] = []
    for prog in ir.species:
        per = []
        for zj in range(n):
            rows = [(ch.offset, ch.radial, ch.l) for ch in prog.channels if ch.zj == zj or ch.zj == ANY]
            if (prog.zi, zj) in ir.radial and (rows or prog.core.kind != "none"):
                per.append((zj, rows))
        visits.append(per)
    # radial blocks in use, with their "functions" table offsets
    radials: dict[tuple[int, int], RadialPlan] = {}
    fdoubles = 0
    # one copy of a SplineTable that several bonds use (a shared table weighted per
    # neighbour species, or equal bonds of a PACE file: acegen.io.pace_radial)
    shared_f: dict[int, int] = {}  # id(SplineTable) -> its "functions" offset
    for zi, zj in sorted({(prog.zi, zj) for prog, per in zip(ir.species, visits) for zj, _ in per}):
        blk = ir.radial[(zi, zj)]
        if blk.slp is not None:
            if blk.slp.inputs != (("r", "theta") if blk.theta else ("r",)):
                raise CompileError(f"radial SLP of bond ({zi}, {zj}) must have the single input r "
                                   "(and theta, for a kernel with indicator inputs)")
            radials[(zi, zj)] = RadialPlan(zi, zj, "slp", int(blk.nfunc), float(blk.rcut), blk.slp, 0, 0.0, -1, blk)
        else:
            spl = blk.spline
            off = shared_f.get(id(spl))
            if off is None:
                off = fdoubles
                fdoubles += _aligned(int(np.asarray(spl.coeffs).size))
                shared_f[id(spl)] = off
            radials[(zi, zj)] = RadialPlan(zi, zj, "spline", int(blk.nfunc), float(spl.rcut), None, int(spl.nbins),
                                           float(spl.h), off, blk)
    # spline tables that several bonds use (equal bonds of a PACE file): one "slots" copy over
    # the union of the functions those bonds evaluate
    users: dict[int, list[tuple[int, int]]] = {}
    union: dict[int, set[int]] = {}
    for prog, per in zip(ir.species, visits):
        for zj, rows in per:
            blk = ir.radial[(prog.zi, zj)]
            if blk.slp is None and blk.weights is None:
                users.setdefault(id(blk.spline), []).append((prog.zi, zj))
                used = union.setdefault(id(blk.spline), set())
                used.update(rad for _, rad, _ in rows)
                if prog.core.kind != "none":
                    used.add(int(blk.core))
    shared_slots = {k: tuple(sorted(union[k])) for k, v in users.items() if len(v) > 1}
    species = []
    sdoubles = 0
    shared_s: dict[tuple, int] = {}  # (id(SplineTable), slots) -> its "slots" offset
    for prog, per in zip(ir.species, visits):
        bonds = []
        for zj, rows in per:
            rp = radials[(prog.zi, zj)]
            spl_id = id(rp.block.spline) if rp.kind == "spline" else None
            bond = _bond(ir, prog.zi, zj, rows, prog.core.kind != "none", n_y, rp, -1, shared_slots.get(spl_id))
            if rp.kind == "spline":
                key = (id(rp.block.spline), bond.slots, bond.nslot_pad)
                off = shared_s.get(key)
                if off is None:
                    off = sdoubles
                    sdoubles += _aligned(rp.nbins * 4 * bond.nslot_pad)
                    shared_s[key] = off
                bond = replace(bond, slot_offset=off)
            bonds.append(bond)
        if merge_shared:
            bonds = _merge_shared(ir, prog, bonds)
        emb = prog.embedding
        if ir.output == "projections":
            # the outputs are the densities and then the projection functions
            outs = _Outputs(prog.n_A, prog.monomials, np.hstack([prog.coeffs, prog.projections.coeffs]))
        else:
            outs = prog
        dag = build_dag(outs)
        sched = group_schedule(dag)
        ndensity = int(dag.coeffs.shape[1])
        coef = np.zeros((ndensity, _pad(sched.n_nodes, SIMD_PAD)))
        coef[:, : sched.n_nodes] = sched.coeffs
        params = [float(p) for p in emb.params]
        species.append(SpeciesPlan(
            zi=prog.zi, n_A=prog.n_A, dag=dag, schedule=sched, coef=coef, ndensity=ndensity,
            embedding_kind=emb.kind, embedding_params=tuple(zip(params[0::2], params[1::2])),
            embedding=(embedding_slp(emb.kind, params, emb.ndensity) if prog.onsite is None
                       else theta_embedding_slp(emb.kind, params, emb.ndensity, prog.onsite)), E0=float(prog.E0),
            core_kind=prog.core.kind, rho_core_cut=float(prog.core.rho_core_cut),
            drho_core_cut=float(prog.core.drho_core_cut),
            core=core_slp(prog.core.kind, float(prog.E0), float(prog.core.rho_core_cut), float(prog.core.drho_core_cut)),
            bonds=tuple(bonds),
        ))
    return KernelPlan(
        ir=ir, name=ir.name, n_species=n, lmax=int(ir.lmax), n_y=n_y, rcut=rcut, angular=ir.angular,
        species=tuple(species), radials=tuple(radials.values()), slot_doubles=sdoubles, function_doubles=fdoubles,
        angular_kind=ir.angular_kind,
    )


__all__ = ["BondPlan", "Group", "KernelPlan", "LAYOUTS", "RadialPlan", "SIMD_PAD", "SpeciesPlan", "TABLE_ALIGN",
           "build_plan"]
