"""The ``acegen`` command line: compile | emit | info | demo | bench | fit | activeset | select | cache."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from .errors import AcegenError


def _load(path):
    from .model import load

    return load(path)


def _one_kernel(model, what: str) -> None:
    """A multilayer model has one kernel per layer, driven by acegen.Calculator: refuse the
    commands that write one library or one source folder."""
    if getattr(model, "kind", "") == "multilayer":
        raise AcegenError(f"acegen {what}: a multilayer model compiles to one kernel per layer; use "
                          "acegen.Calculator(model) or Model.compile, or emit a LAMMPS plugin (emit --target lammps)")


def output_file(arg: str | None, default: str) -> Path:
    """The file ``-o`` names (``default`` in the current folder without it), checked before any
    work: its folder must exist and be writable; an existing folder (``.`` included) is an
    error; an existing file is overwritten (atomically, when the new one is complete)."""
    out = Path(arg) if arg else Path(default)
    shown = arg if arg else default
    if out.is_dir() or (arg and arg.endswith(("/", os.sep))):
        raise AcegenError(f"-o {shown}: is a folder; give a file name, e.g. -o {out / 'libmodel.so'}")
    folder = out.parent
    if not folder.is_dir():
        raise AcegenError(f"-o {shown}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise AcegenError(f"-o {shown}: the folder {folder} is not writable")
    if out.exists() and not out.is_file():
        raise AcegenError(f"-o {shown}: exists and is not a regular file")
    return out


def publish_copy(src: Path, out: Path) -> None:
    """Copy ``src`` to ``out`` through a temporary file in ``out``'s folder, replaced
    atomically; the temporary file never outlives a failure or an interrupt."""
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def cmd_compile(args) -> int:
    out = output_file(args.output, "") if args.output else None  # checked before the (long) compile
    model = _load(args.model)
    _one_kernel(model, "compile")
    if out is None:
        out = output_file(None, f"lib{model.name}.so")
    if args.target == "c":
        from .jit.toolchain import find_c_compiler

        if find_c_compiler(required=False) is None:
            raise AcegenError(
                "a shared library needs a C compiler, and none was found (install gcc or clang, or set CC); "
                "without one, acegen.Calculator and Model.compile use the LLVM backend in process"
            )
    t0 = time.perf_counter()
    # the library stands alone: its spline tables embedded, not loaded by acegen's loader
    kernel = model.compile(args.target, **({"tables_at_load": False} if args.target == "c" else {}))
    dt = time.perf_counter() - t0
    lib = kernel.library_path
    if lib is None:
        raise AcegenError(f"target {args.target!r} produces no shared library (use --target c)")
    publish_copy(Path(lib), out)
    print(f"compiled {args.model} ({args.target}) in {dt:.2f} s -> {out}")
    print(f"symbol: acegen_{model.ir().name}_compute (header: acegen emit {args.model} --target c)")
    return 0


def cmd_emit(args) -> int:
    model = _load(args.model)
    if args.target != "lammps":  # a LAMMPS plugin holds one kernel per layer of a multilayer model
        _one_kernel(model, "emit")
    from .backends import emit

    out = Path(args.output or f"{model.name}_{args.target}")
    if out.exists() and not out.is_dir():
        raise AcegenError(f"-o {out}: exists and is not a folder (emit writes a folder of files)")
    if not out.parent.is_dir():
        raise AcegenError(f"-o {out}: the folder {out.parent} does not exist")
    if args.target == "lammps":  # pair_coeff accepts the model file's path as typed here
        from .backends.lammps import emit_lammps

        files = emit_lammps(model, model_file=args.model)
    else:
        files = emit(model.ir(), args.target, model=model)
    out.mkdir(exist_ok=True)
    for name, text in files.items():
        p = out / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            p.write_bytes(text)
        else:
            p.write_text(text)
    print(f"wrote {len(files)} files to {out}/: {', '.join(sorted(files))}")
    if getattr(args, "build", False):
        from .backends import build_emitted

        lib = build_emitted(out, args.target, portable=True if getattr(args, "portable", False) else None)
        if args.target == "lammps":
            from .backends.lammps import lammps_input_lines

            manifest = json.loads((out / "acegen-lammps.json").read_text())
            gamma = ("; extrapolation grade: an active set after the model in pair_coeff (MODEL pot.asi ELEMENTS), "
                     "then 'fix gamma all pair 10 acegen gamma 1'" if manifest.get("gamma") else "")
            if manifest.get("layers"):
                gamma += ("; indicators per atom: 'fix theta all pair 10 acegen "
                          + " 0 ".join(f"theta{n}" for n in range(2, len(manifest["layers"]) + 1)) + " 0'")
            print("LAMMPS input (units metal; one element per atom type in pair_coeff; "
                  f"under pair_style hybrid the style is acegen/{manifest['model']}{gamma}):")
            for line in lammps_input_lines(out, lib):
                print(f"  {line}")
        print(lib)  # the built library's path is always the last line
    return 0


def describe(model) -> str:
    from .ir.dag import build_dag

    ir = model.ir()
    lines = [f"model: {model.name}", f"elements: {', '.join(ir.elements)}", f"lmax: {ir.lmax}"]
    if model.kind in ("linear", "fs"):
        b = model.basis
        orders, counts = np.unique(b.orders, return_counts=True)
        lines.append(
            "basis functions: "
            + f"{len(b)} many-body ("
            + ", ".join(f"ν={int(o)}: {int(c)}" for o, c in zip(orders, counts))
            + f"), {len(b.pair)} pair"
        )
        lines.append(f"purification: {model.spec.purification}")
        if model.kind == "fs":
            lines.append(f"embedding: {model.embedding.kind}, {model.ndensity} densities, parameters "
                         f"{list(model.embedding.params)}")
    else:
        from collections import Counter

        gracefs = model.kind == "gracefs"
        if gracefs:
            pot = model.gracefs
            lines.append(
                f"GRACE-FS: element embedding Z ({pot.nelements} x {pot.nradmax}), {pot.n_rad_base} {pot.radbasename} "
                f"radial functions, {pot.ndensity} densities ({pot.embedding}), scale {pot.scale:g}, shift {pot.shift:g}"
            )
        for mu, funcs in sorted(model.pace.functions.items()):
            cnt = Counter(f.rank for f in funcs)
            nms = sum(len(np.asarray(f.ms_combs).reshape(-1, f.rank)) for f in funcs)
            lines.append(
                f"functions centred on {ir.elements[mu]}: {len(funcs)} {'GRACE-FS' if gracefs else 'C-tilde'} ("
                + ", ".join(f"rank {k}: {cnt[k]}" for k in sorted(cnt))
                + f"), {nms} m-combinations"
            )
    tables = {id(b.spline) for b in ir.radial.values() if b.weights is not None}
    if len(ir.radial) > 1 and len(tables) == 1 and all(b.weights is not None for b in ir.radial.values()):
        blk = next(iter(ir.radial.values()))
        lines.append(f"cutoff (every pair of elements): {blk.rcut:g} Å ({blk.nfunc} radial functions: one spline "
                     "table shared by all bonds, weighted per neighbour species)")
    else:
        for (zi, zj), blk in sorted(ir.radial.items()):
            lines.append(f"cutoff {ir.elements[zi]}-{ir.elements[zj]}: {blk.rcut:g} Å ({blk.nfunc} radial functions)")
    total = 0
    for sp_ in ir.species:
        dag = build_dag(sp_)
        fl = dag.flops()
        total += fl["total"] if isinstance(fl, dict) else int(fl)
        lines.append(
            f"species {ir.elements[sp_.zi]}: {sp_.n_A} one-particle functions, {len(sp_.monomials)} monomials, "
            f"{dag.n_nodes} DAG nodes, embedding {sp_.embedding.kind}, core {sp_.core.kind}"
        )
    lines.append(f"product DAG FLOPs per atom (forward + reverse, all species summed): {total}")
    return "\n".join(lines)


def cmd_info(args) -> int:
    model = _load(args.model)
    if getattr(model, "kind", "") == "multilayer":
        print(f"model: {model.name}")
        print(repr(model.basis))
        for ir in model.ir():
            print(f"layer {ir.name}: signature {ir.signature()}")
        return 0
    print(describe(model))
    print(f"signature: {model.ir().signature()}")
    members = getattr(model, "committee", None)
    if members is not None:
        print(f"committee: {len(members)} members")
    prov = getattr(model, "provenance", None)
    if prov:
        from .fit.provenance import format_fit_log

        print("provenance:")
        print(format_fit_log(prov))
    return 0


def demo_structure():
    """YBa2Cu3O7 (orthorhombic, 13 atoms), 3×3×1, slightly rattled."""
    from ase import Atoms

    frac = [
        ("Y", (0.5, 0.5, 0.5)),
        ("Ba", (0.5, 0.5, 0.184)), ("Ba", (0.5, 0.5, 0.816)),
        ("Cu", (0.0, 0.0, 0.0)), ("Cu", (0.0, 0.0, 0.356)), ("Cu", (0.0, 0.0, 0.644)),
        ("O", (0.0, 0.5, 0.0)), ("O", (0.5, 0.0, 0.378)), ("O", (0.5, 0.0, 0.622)),
        ("O", (0.0, 0.5, 0.377)), ("O", (0.0, 0.5, 0.623)), ("O", (0.0, 0.0, 0.159)),
        ("O", (0.0, 0.0, 0.841)),
    ]
    cell = np.diag([3.82, 3.89, 11.68])
    atoms = Atoms([s for s, _ in frac], scaled_positions=[p for _, p in frac], cell=cell, pbc=True)
    atoms = atoms.repeat((3, 3, 1))
    atoms.rattle(0.02, seed=1)
    return atoms


def cmd_demo(args) -> int:
    from importlib.resources import files

    from .calculator import Calculator
    from .model import load

    path = files("acegen") / "data" / "YBCO_ACE.yace"
    print(f"acegen demo: {path.name} (Di Eugenio et al. 2025, MIT licence)")
    t0 = time.perf_counter()
    model = load(str(path))
    calc = Calculator(model, target=args.target)
    t1 = time.perf_counter()
    from .runtime.neighbours import neighbour_backend

    used = getattr(calc.kernel, "target", args.target)
    note = "" if used == args.target else f", asked for {args.target}"
    print(f"loaded and compiled ({used}{note}; neighbour list: {neighbour_backend()}) in {t1 - t0:.2f} s")
    atoms = demo_structure()
    atoms.calc = calc
    e = atoms.get_potential_energy()
    f = atoms.get_forces()
    s = atoms.get_stress()
    reps = 5
    t2 = time.perf_counter()
    for _ in range(reps):
        atoms.calc.calculate(atoms, ["energy", "forces", "stress"])
    dt = (time.perf_counter() - t2) / reps
    print(f"structure: YBa2Cu3O7 3x3x1, {len(atoms)} atoms")
    print(f"energy: {e:.6f} eV ({e / len(atoms):.6f} eV/atom)")
    print(f"max |force|: {np.abs(f).max():.6f} eV/Å")
    print(f"stress (GPa): {np.array2string(s * 160.21766208, precision=4)}")
    print(f"time per atom (energy+forces+stress, neighbour list included): {dt / len(atoms) * 1e6:.1f} µs")
    return 0


def cmd_bench(args) -> int:
    from .bench import bench_model

    print(bench_model(args.model, n_atoms=args.atoms, repeats=args.repeats, target=args.target,
                      nthreads=args.threads))
    return 0


def cmd_fit(args) -> int:
    from .fit import fit_from_config

    fit_from_config(args.config, data_dir=args.data_dir)
    return 0


def _structures(paths):
    from .fit.data import read_structures

    frames = read_structures(paths)
    if not frames:
        raise AcegenError(f"no structures in {' '.join(paths)}")
    return frames


def cmd_activeset(args) -> int:
    from .active import build_active_set

    out = output_file(args.output, Path(args.model).stem + (".asi.nonlinear" if args.full else ".asi"))
    model = _load(args.model)
    frames = _structures(args.data)
    active = build_active_set(model, frames, full=args.full, tol=args.tol, batch_size=args.batch, target=args.target)
    tmp = out.with_name(out.name + ".tmp")
    active.save(tmp)
    os.replace(tmp, out)
    sizes = ", ".join(f"{el}: {a.shape[0]}x{a.shape[1]}" for el, a in active.inverse.items())
    print(f"wrote {out} ({'full' if args.full else 'linear'} active set from {len(frames)} structures; {sizes})")
    return 0


def cmd_select(args) -> int:
    import ase.io

    from .active import ActiveSet, select_structures

    if args.n < 1:
        raise AcegenError(f"-n must be at least 1, got {args.n}")
    out = output_file(args.output, "selected.extxyz")
    model = _load(args.model)
    active = ActiveSet.load(args.activeset, model)
    frames = _structures(args.candidates)
    chosen = select_structures(model, active, frames, args.n, tol=args.tol, target=args.target)
    tmp = out.with_name(out.name + ".tmp.extxyz")
    ase.io.write(tmp, [frames[k] for k in chosen], format="extxyz")
    os.replace(tmp, out)
    print(f"wrote {out}: {len(chosen)} of {len(frames)} candidate structures (indices {' '.join(map(str, chosen))})")
    return 0


def cmd_cache(args) -> int:
    from .jit import cache_admin

    if args.action == "info":
        print(cache_admin.info().describe())
        return 0
    before = cache_admin.info()
    removed, busy = cache_admin.clear()
    print(f"cleared {before.root}: {removed} entries removed, {_freed(before)} freed")
    if busy:
        print(f"{len(busy)} entries are being built by another process and were left in place")
    return 0


def _freed(before) -> str:
    from .jit import cache_admin

    return cache_admin.human_size(max(before.size_bytes - cache_admin.info().size_bytes, 0))


MODEL_HELP = "model file: acegen JSON, or PACE .yace / .ace / .yaml"


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no status lines or progress bars on stderr (also: ACEGEN_QUIET=1)")
    p = argparse.ArgumentParser(prog="acegen", description="ACE potential compiler", parents=[common])
    p.add_argument("--version", action="version", version=f"acegen {__version__}",
                   help="print acegen's version and exit")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND", help="what to do (acegen COMMAND -h for its options)")
    c = sub.add_parser("compile", help="compile a model to a shared library", parents=[common])
    c.add_argument("model", help=MODEL_HELP)
    c.add_argument("-o", "--output", metavar="FILE",
                   help="the library to write (default: lib<model name>.so here; an existing file is replaced)")
    c.add_argument("--target", default="c", choices=["c", "llvm"], help="code generator (default: c)")
    c.set_defaults(func=cmd_compile)
    e = sub.add_parser("emit", help="write the generated source of a model", parents=[common])
    e.add_argument("model", help=MODEL_HELP)
    e.add_argument("--target", default="c", choices=["c", "cuda", "llvm", "lammps"],
                   help="which sources: C kernel, CUDA, LLVM IR or the LAMMPS plugin (default: c)")
    e.add_argument("-o", "--output", metavar="FOLDER",
                   help="folder to write the files into (created; default: <model name>_<target>)")
    e.add_argument("--build", action="store_true", help="also build the emitted folder")
    e.add_argument("--portable", action="store_true",
                   help="with --target lammps --build: build the plugin for the compiler's default target "
                        "instead of this CPU (-march=native; also ACEGEN_PORTABLE=1)")
    e.set_defaults(func=cmd_emit)
    i = sub.add_parser("info", help="describe a model file", parents=[common])
    i.add_argument("model", help=MODEL_HELP)
    i.set_defaults(func=cmd_info)
    d = sub.add_parser("demo", help="compile the shipped YBCO model and evaluate a crystal", parents=[common])
    d.add_argument("--target", default="c", choices=["c", "llvm", "numpy"],
                   help="kernel backend (default: c; without a C compiler llvm is used)")
    d.set_defaults(func=cmd_demo)
    b = sub.add_parser("bench", help="time a model (µs/atom, FLOPs, GFLOP/s)", parents=[common])
    b.add_argument("model", help=MODEL_HELP)
    b.add_argument("--atoms", type=int, default=4000, help="atoms in the benchmark crystal (default: 4000)")
    b.add_argument("--repeats", type=int, default=5, help="timed evaluations (default: 5)")
    b.add_argument("--threads", type=int, default=1, help="kernel threads (OpenMP; default: 1)")
    b.add_argument("--target", default="c", choices=["c", "llvm"], help="code generator (default: c)")
    b.set_defaults(func=cmd_bench)
    f = sub.add_parser("fit", help="fit an ACE model (linear, Finnis–Sinclair or multilayer) from a YAML config", parents=[common])
    f.add_argument("config", help="fit configuration (YAML; see docs/fitting.md)")
    f.add_argument("--data-dir", default=None,
                   help="folder in which relative data paths of the config are looked up first "
                        "(default: $ACEGEN_DATA, else data.directory of the config)")
    f.set_defaults(func=cmd_fit)
    a = sub.add_parser("activeset", help="build a PACE active set (.asi) for the extrapolation grade", parents=[common])
    a.add_argument("model", help="PACE B-basis .yaml, GRACE-FS .yaml or linear acegen .json model")
    a.add_argument("data", nargs="+", help="training structures (extxyz or any ASE-readable file)")
    a.add_argument("-o", "--output", metavar="FILE", help="the .asi to write (default: <model>.asi here)")
    a.add_argument("--full", action="store_true", help="non-linear active set (dE/dc projections, pyace's -f)")
    a.add_argument("--tol", type=float, default=1.01, help="MaxVol tolerance (default: 1.01)")
    a.add_argument("--batch", type=int, default=20000, help="environments per MaxVol batch (default: 20000)")
    a.add_argument("--target", default="c", choices=["c", "llvm"], help="code generator (default: c)")
    a.set_defaults(func=cmd_activeset)
    s_ = sub.add_parser("select", help="pick the most informative candidate structures (D-optimality)", parents=[common])
    s_.add_argument("model", help="PACE B-basis .yaml, GRACE-FS .yaml or linear acegen .json model")
    s_.add_argument("activeset", help="active set (.asi) of the model")
    s_.add_argument("candidates", nargs="+", help="candidate structures (extxyz or any ASE-readable file)")
    s_.add_argument("-n", type=int, required=True, help="number of structures to select")
    s_.add_argument("-o", "--output", metavar="FILE", help="extxyz to write (default: selected.extxyz here)")
    s_.add_argument("--tol", type=float, default=1.01, help="MaxVol tolerance (default: 1.01)")
    s_.add_argument("--target", default="c", choices=["c", "llvm"], help="code generator (default: c)")
    s_.set_defaults(func=cmd_select)
    k = sub.add_parser("cache", help="show or empty acegen's cache of kernels and symbolic data", parents=[common])
    k.add_argument("action", choices=["info", "clear"],
                   help="info: location, size and entries; clear: remove compiled kernels and cached symbolic data")
    k.set_defaults(func=cmd_cache)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "quiet", False):
        from .progress import set_quiet

        set_quiet(True)
    try:
        return int(args.func(args) or 0)
    except AcegenError as e:
        print(f"acegen: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file-system problem (permissions, a full disk, ...): no traceback
        print(f"acegen: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("acegen: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
