"""Benchmarks of compiled kernels: ``acegen bench MODEL`` and helpers for benchmarks/.

What is timed (all single process, wall clock with ``time.perf_counter``, median of
``repeats`` runs after one warm-up run):

* ``kernel``: one call of the compiled kernel's ``compute`` on the CSR pair arrays of the
  whole structure: energies and dE_i/dr_ij (everything needed for energy, forces and virial);
* ``neighbour list``: :func:`acegen.runtime.neighbours.build_neighbours`;
* ``step``: neighbour list + kernel + :func:`~acegen.runtime.neighbours.scatter_forces_virial`
  (energy, forces and virial of the structure from positions).

FLOPs are an estimate of the floating-point operations the C kernel performs, counted from the
model (see :func:`kernel_flops`); GFLOP/s = FLOPs / kernel time.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

#: fcc lattice constant (Å) used for single-element benchmark crystals (the issue's fcc Cu).
FCC_A = 3.6
#: rattle amplitude (Å, standard deviation of ASE's ``rattle``) of benchmark structures.
RATTLE = 0.05

# YBa2Cu3O7 (orthorhombic, 13 atoms, a = 3.82, b = 3.89, c = 11.68 Å)
_YBCO_CELL = (3.82, 3.89, 11.68)
_YBCO_SITES = (
    ("Y", (0.5, 0.5, 0.5)), ("Ba", (0.5, 0.5, 0.184)), ("Ba", (0.5, 0.5, 0.816)),
    ("Cu", (0.0, 0.0, 0.0)), ("Cu", (0.0, 0.0, 0.356)), ("Cu", (0.0, 0.0, 0.644)),
    ("O", (0.0, 0.5, 0.0)), ("O", (0.5, 0.0, 0.378)), ("O", (0.5, 0.0, 0.622)),
    ("O", (0.0, 0.5, 0.377)), ("O", (0.0, 0.5, 0.623)), ("O", (0.0, 0.0, 0.159)),
    ("O", (0.0, 0.0, 0.841)),
)


def _repeats(cell_lengths: tuple[float, float, float], n_cell: int, n_atoms: int) -> tuple[int, int, int]:
    """Repeats of a cell giving a near-cubic box with about ``n_atoms`` atoms."""
    side = (n_atoms / n_cell * float(np.prod(cell_lengths))) ** (1.0 / 3.0)
    reps = [max(1, round(side / a)) for a in cell_lengths]
    return (reps[0], reps[1], reps[2])


def benchmark_structure(elements: tuple[str, ...] | list[str], n_atoms: int, seed: int = 1):
    """The benchmark crystal for a model's elements, about ``n_atoms`` atoms, rattled.

    Ba/Cu/O/Y: YBa2Cu3O7 supercell; one element: fcc with a = 3.6 Å (Cu; for other elements
    ASE's reference fcc lattice constant when it has one); otherwise fcc (a = 3.6 Å) with the
    species assigned at random.  Positions are rattled by 0.05 Å (``seed``).
    """
    from ase import Atoms
    from ase.build import bulk
    from ase.data import atomic_numbers, reference_states

    els = list(elements)
    if set(els) == {"Ba", "Cu", "O", "Y"}:
        cell = np.diag(_YBCO_CELL)
        unit = Atoms([s for s, _ in _YBCO_SITES], scaled_positions=[p for _, p in _YBCO_SITES], cell=cell, pbc=True)
        atoms = unit.repeat(_repeats(_YBCO_CELL, len(unit), n_atoms))
    else:
        a = FCC_A
        if len(els) == 1 and els[0] != "Cu":
            ref = reference_states[atomic_numbers[els[0]]] or {}
            if ref.get("symmetry") == "fcc":
                a = float(ref["a"])
        k = _repeats((a, a, a), 4, n_atoms)
        atoms = bulk(els[0], "fcc", a=a, cubic=True).repeat(k)
        if len(els) > 1:
            rng = np.random.default_rng(seed)
            atoms.set_chemical_symbols(list(rng.choice(els, size=len(atoms))))
    atoms.rattle(RATTLE, seed=seed)
    return atoms


def kernel_flops(ir, species: np.ndarray, nl) -> dict[str, float]:
    """Estimated floating-point operations of one kernel call, by part.

    Per pair inside its bond cutoff: ``radial`` 12 per radial slot for splines (cubic value and
    derivative) or the radial SLP's operation count; ``angular`` the angular SLP's operation
    count (Y and the Cartesian gradient, for bonds with channels); ``A`` 2 per (channel, m)
    entry; ``force`` 4 per (channel, m) entry (Z and Zd), 8 per angular function (l, m) of the
    bond (Cartesian models: per monomial α and "m" is α) and 20 for the
    projection and the sum.  Per atom: ``dag`` the product DAG's forward and reverse counts
    (:meth:`acegen.ir.dag.ProductDAG.flops`).
    """
    from .backends.plan import build_plan
    from .ir.model import angular_width, n_angular

    t = build_plan(ir)
    ang = float(ir.angular.count_ops())
    out = {"radial": 0.0, "angular": 0.0, "A": 0.0, "force": 0.0, "dag": 0.0}
    r = np.sqrt(np.einsum("ij,ij->i", nl.rij, nl.rij))
    zi = np.asarray(species)[nl.i]
    zj = np.asarray(species)[nl.j]
    for st in t.species:
        n_atoms_s = int(np.sum(np.asarray(species) == st.zi))
        out["dag"] += n_atoms_s * st.dag.flops()["total"]
        for b in st.bonds:
            npairs = int(np.sum((zi == st.zi) & (zj == b.zj) & (r < b.rcut)))
            blk = b.radial.block
            used = {int(c) for c in b.channels[:, 1]} | ({blk.core} if blk.core is not None else set())
            out["radial"] += npairs * (12.0 * len(used) if blk.spline is not None else float(blk.slp.count_ops()))
            if b.n_chan:
                entries = float(sum(angular_width(t.angular_kind, int(l)) for l in b.channels[:, 2]))
                lmax_b = int(b.channels[:, 2].max())
                out["angular"] += npairs * ang
                out["A"] += npairs * 2.0 * entries
                out["force"] += npairs * (4.0 * entries + 8.0 * n_angular(t.angular_kind, lmax_b) + 20.0)
    out["total"] = sum(out.values())
    return out


def median_time(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall time and median process CPU time (s) of ``repeats`` calls of ``fn``, after
    one warm-up call.  On a shared machine the CPU time (``time.process_time``: all threads of
    this process) is the robust figure for one thread; the wall time is what a user waits."""
    fn()
    wall, cpu = [], []
    for _ in range(max(1, repeats)):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def machine_description() -> str:
    """CPU model, logical CPU count, Python and compiler (one line)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    cc = ""
    try:
        from .jit.toolchain import detect

        cc = f", {detect().version}"
    except Exception:  # noqa: BLE001 - no compiler is not an error for a description
        cc = ""
    return f"{cpu}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}{cc}"


def bench_model(path: str | Path, n_atoms: int = 4000, repeats: int = 5, target: str = "c", nthreads: int = 1) -> str:
    """Load, compile and time model ``path`` on its benchmark crystal; a human-readable report."""
    from .model import load
    from .runtime.neighbours import build_neighbours, scatter_forces_virial, species_indices

    t0 = time.perf_counter()
    model = load(path)
    kernel = model.compile(target)
    t_compile = time.perf_counter() - t0
    ir = model.ir()
    atoms = benchmark_structure(model.elements, n_atoms)
    n = len(atoms)
    Z = species_indices(atoms, model.elements)
    rc = ir.rcut_max
    nl = build_neighbours(atoms, rc)
    nbs = np.ascontiguousarray(Z[nl.j], dtype=np.int32)

    def run_kernel():
        return kernel.compute(Z, nl.offsets, nbs, nl.rij, nthreads=nthreads)

    def run_step():
        nl2 = build_neighbours(atoms, rc)
        _, g = kernel.compute(Z, nl2.offsets, np.ascontiguousarray(Z[nl2.j], dtype=np.int32), nl2.rij,
                              nthreads=nthreads)
        return scatter_forces_virial(nl2, g)

    t_kernel, c_kernel = median_time(run_kernel, repeats)
    t_nl, c_nl = median_time(lambda: build_neighbours(atoms, rc), repeats)
    t_step, c_step = median_time(run_step, repeats)
    fl = kernel_flops(ir, Z, nl)
    total = fl["total"]
    us = 1e6 / n
    lines = [
        f"model: {path} ({', '.join(model.elements)}), target {target}, {nthreads} thread(s)",
        f"machine: {machine_description()}",
        f"structure: {n} atoms ({atoms.get_chemical_formula()}), {nl.n_pairs / n:.1f} neighbours/atom within {rc:g} Å",
        f"load + compile: {t_compile:.2f} s",
        "times per atom, median of {0} (wall / process CPU):".format(repeats),
        f"  kernel (energy + dE/dr_ij):             {t_kernel * us:8.2f} / {c_kernel * us:8.2f} µs",
        f"  neighbour list:                         {t_nl * us:8.2f} / {c_nl * us:8.2f} µs",
        f"  step (list + kernel + forces, virial):  {t_step * us:8.2f} / {c_step * us:8.2f} µs",
        "FLOPs/atom (estimate): "
        + ", ".join(f"{k} {v / n / 1e3:.1f}k" for k, v in fl.items() if k != "total")
        + f"; total {total / n / 1e6:.3f} M",
        f"achieved: {total / t_kernel / 1e9:.2f} GFLOP/s (wall), {total / c_kernel / 1e9:.2f} GFLOP/s (CPU time)",
    ]
    return "\n".join(lines)
