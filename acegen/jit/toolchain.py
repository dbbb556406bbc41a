"""The system C compiler: found once, probed once, then used to build shared libraries.

Compiler choice: ``$CC`` (split like a shell word list, so ``CC="ccache gcc"`` works), else the
first of ``cc``, ``gcc``, ``clang`` on ``PATH``.

Flags (:meth:`Toolchain.flags`):

* always ``-O3 -fPIC -shared -std=c11 -fvisibility=hidden`` (only the ``ACEGEN_API`` functions
  are exported), ``-ffp-contract=off`` and ``-fno-math-errno``;
* ``-fopenmp`` when requested and the probe found it working (compiles *and* loads);
* ``-march=native`` only when asked for (the library then runs only on CPUs like this one; the
  expanded target, e.g. ``-march=rocketlake -mavx2 ...``, goes into the cache key).

No ``-ffast-math`` by default, on purpose: it lets the compiler reassociate sums, flush
denormals to zero and assume that no NaN or infinity occurs -- the last one deletes the
kernel's own ``isfinite`` checks on the input, and reassociation breaks the 1e-12 agreement
with the NumPy interpreter and the bitwise reproducibility between runs.  For the same reason
``-ffp-contract=off`` forbids fusing a*b+c into an FMA (which ``-march=native`` would otherwise
enable on FMA hardware).  ``-fno-math-errno`` changes no result, it only lets ``sqrt`` compile
to one instruction.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import CompileError

BASE_FLAGS: tuple[str, ...] = (
    "-O3",
    "-fPIC",
    "-shared",
    "-std=c11",
    "-fvisibility=hidden",
    "-ffp-contract=off",
    "-fno-math-errno",
)
LIBS: tuple[str, ...] = ("-lm",)

_PROBE_SOURCE = """
__attribute__((visibility("default"))) int acegen_probe(void);
#ifdef _OPENMP
#include <omp.h>
int acegen_probe(void) { return omp_get_max_threads(); }
#else
int acegen_probe(void) { return -1; }
#endif
"""


@dataclass(frozen=True)
class Toolchain:
    """A probed C compiler.

    command: argv prefix that runs the compiler (``$CC`` split, or a found executable).
    version: first line of ``--version``.
    family: ``"gcc"``, ``"clang"`` or ``"unknown"``.
    openmp: ``-fopenmp`` compiles, links and the result loads.
    native_target: the options ``-march=native`` expands to ("" if it is not supported).
    """

    command: tuple[str, ...]
    version: str
    family: str
    openmp: bool
    native_target: str

    @property
    def march_native(self) -> bool:
        return bool(self.native_target)

    def flags(self, *, openmp: bool = True, march_native: bool = False) -> tuple[str, ...]:
        """Compiler flags for a kernel; ``openmp``/``march_native`` are dropped if unsupported."""
        flags = list(BASE_FLAGS)
        if openmp and self.openmp:
            flags.append("-fopenmp")
        if march_native and self.march_native:
            flags.append("-march=native")
        return tuple(flags)

    def identity(self, flags: tuple[str, ...]) -> str:
        """What the cache key needs to know about this compiler for these flags."""
        ident = f"{' '.join(self.command)} | {self.version}"
        if "-march=native" in flags:
            ident += f" | {self.native_target}"
        return ident

    def compile_shared(self, sources: list[Path], output: Path, flags: tuple[str, ...]) -> None:
        """Compile and link ``sources`` into the shared library ``output``; CompileError on failure.

        The compiler runs in the folder of the first source (where ``.incbin`` files are read).
        """
        cmd = [*self.command, *flags, "-o", str(Path(output).resolve()), *(str(Path(s).resolve()) for s in sources), *LIBS]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(Path(sources[0]).parent))
        except OSError as exc:
            raise CompileError(f"cannot run the C compiler {self.command[0]!r}: {exc}") from exc
        if proc.returncode != 0 or not output.exists():
            raise CompileError(
                f"C compilation failed (exit {proc.returncode}): {shlex.join(cmd)}\n{proc.stderr.strip()}"
            )


def find_c_compiler(required: bool = True) -> tuple[str, ...] | None:
    """argv prefix of the C compiler: ``$CC``, else cc, gcc or clang from PATH.

    If none is found: CompileError when ``required``, else None.
    """
    env = os.environ.get("CC", "").strip()
    if env:
        return tuple(shlex.split(env))
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return (path,)
    if required:
        raise CompileError("no C compiler found: install gcc or clang, or set CC")
    return None


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None


def _try_build(command: tuple[str, ...], extra: list[str], load: bool) -> bool:
    with tempfile.TemporaryDirectory(prefix="acegen-probe-") as tmp:
        src = Path(tmp) / "probe.c"
        lib = Path(tmp) / "probe.so"
        src.write_text(_PROBE_SOURCE)
        proc = _run([*command, *BASE_FLAGS, *extra, "-o", str(lib), str(src), *LIBS])
        if proc is None or proc.returncode != 0 or not lib.exists():
            return False
        if load:
            try:
                return ctypes.CDLL(str(lib)).acegen_probe() > 0
            except (OSError, AttributeError):
                return False
        return True


def _native_target(command: tuple[str, ...]) -> str:
    if not _try_build(command, ["-march=native"], load=False):
        return ""
    proc = _run([*command, "-march=native", "-###", "-x", "c", "-c", os.devnull, "-o", os.devnull])
    text = (proc.stderr + proc.stdout) if proc is not None else ""
    opts = [t.strip('"') for line in text.splitlines() if "-march=" in line for t in line.split()]
    opts = [t for t in opts if t.startswith("-m")]
    return " ".join(opts) if opts else "-march=native"


@functools.lru_cache(maxsize=None)
def _probe(command: tuple[str, ...]) -> Toolchain:
    proc = _run([*command, "--version"])
    if proc is None or proc.returncode != 0:
        raise CompileError(f"C compiler {shlex.join(command)!r} does not run (--version failed)")
    text = proc.stdout.strip() or proc.stderr.strip()
    version = text.splitlines()[0] if text else "unknown"
    low = text.lower()
    family = "clang" if "clang" in low else ("gcc" if ("gcc" in low or "free software foundation" in low) else "unknown")
    if not _try_build(command, [], load=False):
        raise CompileError(f"C compiler {shlex.join(command)!r} cannot build a shared library with {' '.join(BASE_FLAGS)}")
    return Toolchain(
        command=command,
        version=version,
        family=family,
        openmp=_try_build(command, ["-fopenmp"], load=True),
        native_target=_native_target(command),
    )


def detect() -> Toolchain:
    """The probed toolchain for the current ``$CC``/``PATH`` (probed once per compiler)."""
    command = find_c_compiler()
    assert command is not None
    return _probe(command)
