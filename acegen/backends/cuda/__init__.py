"""The CUDA backend: ModelIR -> a ``.cu`` kernel and host launcher -> nvcc -> CudaKernel.

* :func:`emit_cuda` renders ``templates/cuda/`` into a folder's files: the device code
  (``acegen_<name>_kernel.cuh``), the host launcher with the acegen C ABI
  (``acegen_<name>.cu``), its header (``acegen_<name>.h``), the CPU emulation header
  (``acegen_cuda_emulate.h``), a Makefile and a CMakeLists.txt, and the spline tables
  (``acegen_<name>.bin``) if the model has any;
* :func:`compile_cuda` compiles them with ``nvcc`` (through the kernel cache) and loads the
  library with cffi when a CUDA GPU is present (:func:`cuda_device_count`, through the CUDA
  driver); otherwise it raises :class:`~acegen.errors.AcegenError`.  ``emulate=True`` compiles
  the SAME source with the host C++ compiler and the emulation header instead (no GPU needed;
  used by the tests to check the kernel's numbers against the C backend);
* :func:`build_cuda` builds an emitted (possibly hand-edited) folder outside the cache.

Design and reasons (one thread per atom, recomputed neighbour records, interleaved workspace,
handles): ``docs/backend-cuda.md``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import filelock
import numpy as np

from ...errors import AcegenError, CompileError
from ...ir.model import ModelIR
from ...jit.cache import LOCK_TIMEOUT_S, cache_key, file_sha256, kernels_dir
from ...jit.load import CompiledKernel
from ..c.printer import slp_body
from ..common import Status, kernel_meta, render
from ..plan import build_plan


#: GPU architectures of :func:`build_cuda` when none is given and no GPU is present:
#: Ampere (A100) and Hopper (H100/H200) machine code, plus sm_90 PTX for newer GPUs.
DEFAULT_ARCHS = ("sm_80", "sm_90")

#: nvcc options (besides the architectures).  ``-fmad=false``: no fused multiply-add
#: contraction, the rounding of every operation is that of the C backend (built with
#: ``-ffp-contract=off``); pass ``fmad=True`` for the faster contracted code.
NVCC_FLAGS: tuple[str, ...] = ("-O3", "-std=c++17", "-Xcompiler", "-fPIC,-fvisibility=hidden", "--shared")

#: Host C++ compiler options of the CPU emulation build (the C backend's, for C++).
EMULATE_FLAGS: tuple[str, ...] = (
    "-O3",
    "-fPIC",
    "-shared",
    "-std=c++17",
    "-fvisibility=hidden",
    "-ffp-contract=off",
    "-fno-math-errno",
    "-DACEGEN_CUDA_EMULATE",
    "-x",
    "c++",
)

EMULATE_HEADER = "acegen_cuda_emulate.h"


# -- file names ----------------------------------------------------------------------------
def source_names(name: str) -> dict[str, str]:
    """Generated file names of model ``name``: launcher (.cu), device code (.cuh), header, tables."""
    return {
        "launcher": f"acegen_{name}.cu",
        "kernel": f"acegen_{name}_kernel.cuh",
        "header": f"acegen_{name}.h",
        "tables": f"acegen_{name}.bin",
    }


def library_name(name: str, *, emulate: bool = False) -> str:
    """File name of the shared library :func:`build_cuda` writes."""
    return f"libacegen_{name}_{'emulated' if emulate else 'cuda'}.so"


# -- code generation -----------------------------------------------------------------------
#: The CUDA kernel reads spline tables in the plan's "functions" layout ([bin][function][c0..c3]).
TABLE_LAYOUT = "functions"


def _tidy(text: str) -> str:
    """Drop the blank lines that empty template hooks leave (before a closing brace, or doubled)."""
    text = re.sub(r"\n[ \t]*\n(?=[ \t]*\})", "\n", text)
    return re.sub(r"\n(?:[ \t]*\n){2,}", "\n\n", text)


def emit_cuda(ir: ModelIR) -> dict[str, str | bytes]:
    """The generated CUDA folder of ``ir``: file name -> text (bytes for the spline tables)."""
    plan = build_plan(ir)
    data = plan.tables(TABLE_LAYOUT).tobytes()
    names = source_names(ir.name)
    ctx = {**plan.context(), "slp": slp_body, "blob_file": names["tables"] if data else None,
           "blob_doubles": len(data) // 8, "files": names, "emulate_header": EMULATE_HEADER,
           "default_archs": DEFAULT_ARCHS}
    files: dict[str, str | bytes] = {
        names["kernel"]: _tidy(render("cuda/kernel.cuh.j2", **ctx)),
        names["launcher"]: _tidy(render("cuda/launcher.cu.j2", **ctx)),
        names["header"]: render("cuda/header.h.j2", **ctx),
        EMULATE_HEADER: render("cuda/emulate.h.j2"),
        "Makefile": render("cuda/Makefile.j2", **ctx),
        "CMakeLists.txt": render("cuda/CMakeLists.txt.j2", **ctx),
    }
    if data:
        files[names["tables"]] = data
    return files


def cdef(name: str, theta: bool = False) -> str:
    """cffi declarations of the CUDA library of model ``name`` (C ABI + handle functions;
    ``theta``: the entry points with indicator inputs, docs/multilayer.md)."""
    return render("cuda/cdef.j2", name=name, theta=theta)


# -- the CUDA driver -------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _driver() -> ctypes.CDLL | None:
    """libcuda (the driver API), initialised; None without a driver or when cuInit fails."""
    names = ["libcuda.so.1", "libcuda.so", ctypes.util.find_library("cuda")]
    for name in [n for n in names if n]:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        try:
            if lib.cuInit(ctypes.c_uint(0)) != 0:
                return None
        except AttributeError:
            continue
        return lib
    return None


def cuda_device_count() -> int:
    """Number of CUDA devices the driver reports (libcuda: cuInit, cuDeviceGetCount); 0 without
    a driver or a device."""
    lib = _driver()
    if lib is None:
        return 0
    count = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return int(count.value)


def device_arch(ordinal: int = 0) -> str:
    """``sm_XY`` of CUDA device ``ordinal`` (its compute capability X.Y); AcegenError without one."""
    lib = _driver()
    if lib is None or ordinal >= cuda_device_count():
        raise AcegenError(f"no CUDA device {ordinal}")
    dev = ctypes.c_int(0)
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    ok = lib.cuDeviceGet(ctypes.byref(dev), ctypes.c_int(ordinal)) == 0
    # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, _MINOR = 76
    ok = ok and lib.cuDeviceGetAttribute(ctypes.byref(major), ctypes.c_int(75), dev) == 0
    ok = ok and lib.cuDeviceGetAttribute(ctypes.byref(minor), ctypes.c_int(76), dev) == 0
    if not ok:
        raise AcegenError(f"cannot read the compute capability of CUDA device {ordinal}")
    return f"sm_{major.value}{minor.value}"


# -- compilers -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Compiler:
    """A compiler command and its version line (what the kernel cache key needs)."""

    command: tuple[str, ...]
    version: str

    def identity(self, flags: tuple[str, ...]) -> str:
        return f"{' '.join(self.command)} | {self.version}"


def _version_line(command: tuple[str, ...]) -> str:
    try:
        proc = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise CompileError(f"cannot run {shlex.join(command)}: {exc}") from exc
    if proc.returncode != 0:
        raise CompileError(f"{shlex.join(command)} --version failed: {proc.stderr.strip()}")
    lines = [ln for ln in (proc.stdout or proc.stderr).splitlines() if ln.strip()]
    return lines[-1] if command[-1].endswith("nvcc") else (lines[0] if lines else "unknown")


def find_nvcc(required: bool = True) -> tuple[str, ...] | None:
    """argv prefix of nvcc: ``$NVCC``, else ``nvcc`` on PATH, else ``$CUDA_HOME/bin/nvcc`` or
    ``/usr/local/cuda/bin/nvcc``.  None (or CompileError when ``required``) if there is none."""
    env = os.environ.get("NVCC", "").strip()
    if env:
        return tuple(shlex.split(env))
    found = shutil.which("nvcc")
    if found:
        return (found,)
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / "nvcc").is_file():
            return (str(Path(home) / "bin" / "nvcc"),)
    if required:
        raise CompileError("nvcc (the CUDA compiler) was not found: install the CUDA toolkit or set NVCC")
    return None


def find_cxx(required: bool = True) -> tuple[str, ...] | None:
    """argv prefix of the host C++ compiler: ``$CXX``, else c++, g++ or clang++ on PATH."""
    env = os.environ.get("CXX", "").strip()
    if env:
        return tuple(shlex.split(env))
    for name in ("c++", "g++", "clang++"):
        path = shutil.which(name)
        if path:
            return (path,)
    if required:
        raise CompileError("no C++ compiler found for the CUDA emulation build: install g++ or set CXX")
    return None


def arch_flags(archs: tuple[str, ...]) -> tuple[str, ...]:
    """nvcc ``-gencode`` options: machine code for every ``sm_XY`` in ``archs`` and PTX of the
    newest (so that a newer GPU can JIT-compile it)."""
    if not archs:
        raise CompileError("no GPU architecture given")
    flags: list[str] = []
    nums = []
    for a in archs:
        if not (isinstance(a, str) and a.startswith("sm_") and a[3:].rstrip("af").isdigit()):
            raise CompileError(f"GPU architecture must look like sm_90, got {a!r}")
        nums.append(a[3:])
    newest = max(nums, key=lambda s: int(s.rstrip("af")))
    for n in nums:
        code = f"[sm_{n},compute_{n}]" if n == newest else f"sm_{n}"
        flags += ["-gencode", f"arch=compute_{n},code={code}"]
    return tuple(flags)


def _build_command(compiler: _Compiler, flags: tuple[str, ...], source: Path, output: Path) -> list[str]:
    return [*compiler.command, *flags, "-o", str(output), str(source), "-lm"]


def _run_build(cmd: list[str], cwd: Path, what: str) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(cwd))
    except OSError as exc:
        raise CompileError(f"cannot run {cmd[0]!r}: {exc}") from exc
    if proc.returncode != 0:
        raise CompileError(f"{what} failed (exit {proc.returncode}): {shlex.join(cmd)}\n{proc.stderr.strip()}")


def _toolchain(emulate: bool, archs: tuple[str, ...] | None, fmad: bool) -> tuple[_Compiler, tuple[str, ...]]:
    """The compiler and flags of a build (GPU: nvcc; emulation: the host C++ compiler)."""
    if emulate:
        command = find_cxx()
        return _Compiler(command, _version_line(command)), EMULATE_FLAGS
    command = find_nvcc()
    if archs is None:
        archs = (device_arch(0),) if cuda_device_count() > 0 else DEFAULT_ARCHS
    flags = (*NVCC_FLAGS, f"-fmad={'true' if fmad else 'false'}", *arch_flags(tuple(archs)))
    return _Compiler(command, _version_line(command)), flags


def _cached_library(files: dict[str, str | bytes], launcher: str, compiler: _Compiler, flags: tuple[str, ...]) -> Path:
    """The kernel-cache library built from ``files`` (compiling ``launcher`` in their folder)."""
    key = cache_key(files, compiler, flags)  # type: ignore[arg-type]  # duck-typed identity()
    folder = kernels_dir()
    lib = folder / f"{key}.so"
    sidecar = folder / f"{key}.so.sha256"
    try:
        with filelock.FileLock(str(folder / f"{key}.lock"), timeout=LOCK_TIMEOUT_S):
            try:
                if lib.is_file() and sidecar.read_text().strip() == file_sha256(lib):
                    return lib
            except OSError:
                pass
            tmp = Path(tempfile.mkdtemp(prefix=f".build-{key[:16]}-", dir=folder))
            try:
                src = tmp / "src"
                src.mkdir()
                for fname, data in files.items():
                    (src / fname).write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
                out = tmp / "lib.so"
                _run_build(_build_command(compiler, flags, src / launcher, out), src, "CUDA build")
                (tmp / "lib.so.sha256").write_text(file_sha256(out) + "\n")
                final_src = folder / f"{key}.src"
                if final_src.exists():
                    shutil.rmtree(final_src)
                os.replace(src, final_src)
                os.replace(out, lib)
                os.replace(tmp / "lib.so.sha256", sidecar)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except filelock.Timeout as exc:
        raise CompileError(f"timed out waiting for the kernel cache lock {exc.lock_file}") from exc
    return lib


# -- loading ---------------------------------------------------------------------------------
class CudaKernel(CompiledKernel):
    """A loaded CUDA library (or its CPU emulation), callable like every acegen kernel.

    It keeps one handle (``acegen_<name>_cuda_create``: the model's device tables and a
    workspace reused across calls) on the CUDA device current when it was loaded, and calls
    ``acegen_<name>_cuda_compute_host``; calls are serialised by a lock (a handle serves one
    host thread at a time).  ``nthreads`` is ignored.  ``emulated`` says whether this is the
    CPU emulation build.
    """

    target = "cuda"

    def __init__(self, path: Path, name: str, *, emulated: bool, theta: bool = False, **meta: Any) -> None:
        super().__init__(path, name, cdef(name, theta), **meta)
        self.emulated = emulated
        self._lock = threading.Lock()
        create = getattr(self.lib, f"acegen_{name}_cuda_create")
        destroy = getattr(self.lib, f"acegen_{name}_cuda_destroy")
        compute_host = getattr(self.lib, f"acegen_{name}_cuda_compute_{'theta_' if theta else ''}host")
        handle_ptr = self.ffi.new(f"acegen_{name}_cuda **")
        rc = create(handle_ptr)
        if rc != Status.OK:
            raise AcegenError(f"kernel {name}: cannot create a CUDA handle (status {Status(rc).name})")
        handle = self.ffi.gc(handle_ptr[0], destroy)
        self._handle = handle
        lock = self._lock

        if theta:
            def compute_theta(n, species, offsets, nb_species, rij, tc, tn, energies, dEdr, dc, dn, nthreads,
                              err):  # noqa: ANN001
                with lock:
                    return compute_host(handle, n, species, offsets, nb_species, rij, tc, tn, energies, dEdr, dc, dn,
                                        err)

            self._compute_theta = compute_theta
            self._compute = None
        else:
            def compute(n, species, offsets, nb_species, rij, energies, dEdr, nthreads, err):  # noqa: ANN001
                with lock:
                    return compute_host(handle, n, species, offsets, nb_species, rij, energies, dEdr, err)

            self._compute = compute

    def compute(self, species, offsets, nb_species, rij, nthreads: int = 1):
        if self.theta:  # the layer at θ = 0
            n, n_pairs = np.asarray(species).shape[0], np.asarray(nb_species).shape[0]
            return self.compute_theta(species, offsets, nb_species, rij, np.zeros(n), np.zeros(n_pairs),
                                      nthreads=nthreads)[:2]
        return super().compute(species, offsets, nb_species, rij, nthreads)

    def __repr__(self) -> str:
        kind = "emulated on the CPU" if self.emulated else "GPU"
        return f"CudaKernel({self.name!r}, species={self.n_species}, {kind}, path={str(self.path)!r})"

    def _raise(self, rc: int, index: int, *args: np.ndarray) -> None:  # type: ignore[override]
        if rc == Status.DEVICE_ERROR:
            raise AcegenError(f"kernel {self.name}: a CUDA runtime call failed (cudaError_t {index})")
        super()._raise(rc, index, *args)


def compile_cuda(ir: ModelIR, *, arch: str | None = None, fmad: bool = False, emulate: bool = False) -> CudaKernel:
    """Generate, compile (cached) and load the CUDA kernel of ``ir``.

    GPU build (default): needs a CUDA device (:func:`cuda_device_count` > 0, else
    AcegenError) and nvcc; ``arch`` (``"sm_90"``, ...) defaults to that of device 0;
    ``fmad=True`` allows fused multiply-add contraction (faster; last-bit differences from
    the C backend).  ``emulate=True``: the same source built for the CPU with the host C++
    compiler and ``acegen_cuda_emulate.h`` (no GPU or nvcc needed; slow, for tests).
    """
    if not emulate and cuda_device_count() == 0:
        raise AcegenError(
            "the CUDA target needs a CUDA GPU and driver (libcuda: cuInit/cuDeviceGetCount found none); "
            "use target 'c', or compile_cuda(ir, emulate=True) to run the CUDA source on the CPU"
        )
    if ir.output != "energy":
        raise AcegenError("the CUDA target has no projection variant (extrapolation grade); use target 'c' or 'llvm'")
    files = emit_cuda(ir)
    compiler, flags = _toolchain(emulate, (arch,) if arch else None, fmad)
    launcher = source_names(ir.name)["launcher"]
    path = _cached_library(files, launcher, compiler, flags)
    return CudaKernel(path, ir.name, emulated=emulate, theta=ir.theta, **kernel_meta(ir))


def build_cuda(
    folder: Path, *, archs: tuple[str, ...] | None = None, fmad: bool = False, emulate: bool = False
) -> Path:
    """Build the emitted CUDA folder into ``folder/libacegen_<name>_cuda.so`` (or
    ``_emulated.so`` with ``emulate=True``), outside the cache; returns its path.

    ``archs``: GPU architectures (default: device 0's, else :data:`DEFAULT_ARCHS`).
    """
    folder = Path(folder).resolve()
    launchers = sorted(p for p in folder.glob("acegen_*.cu"))
    if len(launchers) != 1:
        raise CompileError(f"{folder}: expected exactly one acegen_<name>.cu, found {len(launchers)}")
    name = launchers[0].stem[len("acegen_"):]
    compiler, flags = _toolchain(emulate, archs, fmad)
    out = folder / library_name(name, emulate=emulate)
    _run_build(_build_command(compiler, flags, launchers[0], out), folder, "CUDA build")
    return out


__all__ = [
    "DEFAULT_ARCHS",
    "CudaKernel",
    "arch_flags",
    "build_cuda",
    "cdef",
    "compile_cuda",
    "cuda_device_count",
    "device_arch",
    "emit_cuda",
    "find_cxx",
    "find_nvcc",
    "library_name",
    "source_names",
]
