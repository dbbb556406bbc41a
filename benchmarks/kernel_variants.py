#!/usr/bin/env python
"""Builds of one model's kernel side by side: C flag variants and LLVM lane widths, alternating.

    python benchmarks/kernel_variants.py POTENTIAL [--atoms 4000] [--repeats 9]
        [--c-variant NAME=FLAGS ...] [--llvm-lanes 4 8] [--library NAME=PATH ...]

Times ``kernel.compute`` (per-atom energies and dE_i/dr_ij; neighbour list built before the loop
and excluded; one thread) of each build once in every repeat, in an order shuffled per repeat
(seeded; a fixed order favours some positions by 2–4 %), as thread CPU time, and prints
the medians in µs/atom and their ratio to the cached C kernel (``model.compile("c")``, the
reference row ``c``), with the total energy of each build as a consistency check.

* ``--c-variant NAME=FLAGS``: the model's emitted C source built again with the cached kernel's
  flags plus FLAGS (e.g. ``avx2=-mno-avx512f`` for the AVX2 code path on an AVX-512 host,
  ``fma=-ffp-contract=fast``); repeatable;
* ``--llvm-lanes``: LLVM kernels with blocks of these many neighbours (``compile_llvm(lanes=)``;
  ``llvm`` alone is the width :func:`acegen.backends.llvm.host_lanes` picks);
* ``--library NAME=PATH``: a C library of the same model built elsewhere, e.g. from the folder
  ``acegen emit`` wrote in another checkout (``make`` there, or ``gcc`` with the flags of
  ``acegen.jit.toolchain.detect().flags(march_native=True)``): the code before a change,
  called in turn with the code after it in one process.

The structure is ``acegen.bench.benchmark_structure`` (fcc Cu a = 3.6 Å, or the YBa2Cu3O7
supercell), rattled 0.05 Å.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import acegen  # noqa: E402
from acegen.backends.c import cdef, emit_c  # noqa: E402
from acegen.backends.llvm import compile_llvm, host_lanes  # noqa: E402
from acegen.bench import benchmark_structure, machine_description  # noqa: E402
from acegen.jit.load import CompiledKernel  # noqa: E402
from acegen.jit.toolchain import detect  # noqa: E402
from acegen.runtime.neighbours import build_neighbours, species_indices  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("potential")
    ap.add_argument("--atoms", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--c-variant", action="append", default=[], metavar="NAME=FLAGS")
    ap.add_argument("--llvm-lanes", type=int, nargs="*", default=[])
    ap.add_argument("--library", action="append", default=[], metavar="NAME=PATH")
    args = ap.parse_args(argv)

    model = acegen.load(args.potential)
    ir = model.ir()
    kernels = {"c": model.compile("c"), "llvm": model.compile("llvm")}
    for lanes in args.llvm_lanes:
        kernels[f"llvm{lanes}"] = compile_llvm(ir, lanes=lanes)
    with tempfile.TemporaryDirectory(prefix="acegen-variants-") as tmp:
        folder = Path(tmp)
        for name, data in emit_c(ir).items():
            (folder / name).write_bytes(data if isinstance(data, bytes) else data.encode())
        tc = detect()
        base = tc.flags(openmp=True, march_native=True)
        ref = kernels["c"]
        decl = cdef(ir.name, theta=ir.theta)  # these builds embed their tables (no ACEGEN_TABLES_AT_LOAD)
        for spec in args.c_variant:
            name, _, extra = spec.partition("=")
            lib = folder / f"lib_{name}.so"
            tc.compile_shared([folder / f"acegen_{ir.name}.c"], lib, base + tuple(extra.split()))
            kernels[name] = CompiledKernel(lib, ref.name, decl, n_species=ref.n_species, rcut=ref.rcut,
                                           signature=ref.signature)
        for spec in args.library:
            name, _, path = spec.partition("=")
            kernels[name] = CompiledKernel(Path(path), ref.name, decl, n_species=ref.n_species, rcut=ref.rcut,
                                           signature=ref.signature)
        atoms = benchmark_structure(model.elements, args.atoms)
        Z = species_indices(atoms, model.elements)
        nl = build_neighbours(atoms, ir.rcut_max)
        nbs = np.ascontiguousarray(Z[nl.j], dtype=np.int32)
        times: dict[str, list[float]] = {k: [] for k in kernels}
        energies: dict[str, float] = {}
        order = list(kernels)
        shuffle = random.Random(0).shuffle
        for _ in range(args.repeats):
            shuffle(order)
            for name in order:
                k = kernels[name]
                t0 = time.thread_time()
                e, _g = k.compute(Z, nl.offsets, nbs, nl.rij)
                times[name].append((time.thread_time() - t0) / len(atoms) * 1e6)
                energies[name] = float(np.sum(e))
    print(f"potential: {args.potential}")
    print(f"machine: {machine_description()}; LLVM host lanes {host_lanes()}")
    print("command: python benchmarks/kernel_variants.py " + " ".join(sys.argv[1:] if argv is None else argv))
    print(f"{len(atoms)} atoms, {len(nl.j) / len(atoms):.1f} neighbours/atom; kernel.compute, thread CPU, "
          f"medians of {args.repeats} repeats, each build once per repeat in a shuffled order")
    m0 = statistics.median(times["c"])
    for name in kernels:
        m = statistics.median(times[name])
        print(f"  {name:12s} {m:8.2f} µs/atom   / c {m / m0:6.3f}   E = {energies[name]:.10f} eV")


if __name__ == "__main__":
    main()
