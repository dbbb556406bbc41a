"""Content-addressed cache of JIT-compiled LLVM objects (the ``llvm`` target).

The LLVM backend (:mod:`acegen.backends.llvm`) compiles its generated IR in process with
llvmlite's MCJIT.  MCJIT hands the finished object file (ELF relocatable, not yet linked: the
addresses of libc functions and of the spline-table buffer are resolved when it is loaded)
to an *object cache*; this module stores those bytes and gives them back on the next
compilation of the same IR on the same kind of host, so the optimisation pipeline and the
code generator are skipped.

Key (:func:`llvm_cache_key`): sha256 over the LLVM IR text and a JSON record of

* the LLVM version (``llvm.llvm_version_info``) and the process triple,
* the host CPU name and feature string (``get_host_cpu_name()``,
  ``get_host_cpu_features().flatten()``): the object is compiled for exactly this CPU,
* the compile options (optimisation level, ...), acegen's version and the kernel ABI version.

Entries live in the kernel cache folder (:func:`acegen.jit.cache.kernels_dir`, so
``$ACEGEN_CACHE_DIR`` applies): ``<key>.o`` (the object), ``<key>.o.sha256`` (its sha256; an
object whose sidecar is missing or does not match is ignored), ``<key>.ll`` (the IR it was
compiled from, for reading) and ``<key>.lock`` (an inter-process ``filelock`` held while an
entry is checked and built, so concurrent processes compile a model once).  Files are written
to a temporary name in the same folder and published with ``os.replace`` (atomic).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import filelock

from .._fs import write_atomic
from ..abi import ABI_VERSION
from ..errors import CompileError
from .cache import LOCK_TIMEOUT_S, acegen_version, kernels_dir


@dataclass(frozen=True)
class HostIdentity:
    """What a JIT-compiled object depends on besides its IR: LLVM and the CPU it targets."""

    llvm_version: tuple[int, ...]
    triple: str
    cpu_name: str
    cpu_features: str


def host_identity() -> HostIdentity:
    """The identity of this process's LLVM (llvmlite) and host CPU."""
    import llvmlite.binding as llvm

    return HostIdentity(
        llvm_version=tuple(int(v) for v in llvm.llvm_version_info),
        triple=llvm.get_process_triple(),
        cpu_name=llvm.get_host_cpu_name(),
        cpu_features=llvm.get_host_cpu_features().flatten(),
    )


def llvm_cache_key(ir_text: str, options: dict[str, object], host: HostIdentity | None = None) -> str:
    """sha256 over the IR text, the host identity (LLVM version, triple, CPU name and
    features), the compile ``options`` (JSON-serialisable), acegen's and the ABI version."""
    host = host_identity() if host is None else host
    h = hashlib.sha256()
    raw = ir_text.encode("utf-8")
    h.update(f"llvm-ir\0{len(raw)}\0".encode())
    h.update(raw)
    meta = {
        "llvm": list(host.llvm_version),
        "triple": host.triple,
        "cpu": host.cpu_name,
        "features": host.cpu_features,
        "options": options,
        "acegen": acegen_version(),
        "abi": ABI_VERSION,
    }
    h.update(json.dumps(meta, sort_keys=True).encode())
    return h.hexdigest()


class ObjectCache:
    """The cache entry of one key (see the module docstring for the files)."""

    def __init__(self, key: str, folder: Path | None = None) -> None:
        self.key = key
        self.folder = kernels_dir() if folder is None else Path(folder)
        self.object_path = self.folder / f"{key}.o"
        self.sidecar_path = self.folder / f"{key}.o.sha256"
        self.source_path = self.folder / f"{key}.ll"

    @contextmanager
    def locked(self) -> Iterator[ObjectCache]:
        """Hold the entry's inter-process lock (CompileError after LOCK_TIMEOUT_S)."""
        lock = filelock.FileLock(str(self.folder / f"{self.key}.lock"), timeout=LOCK_TIMEOUT_S)
        try:
            with lock:
                yield self
        except filelock.Timeout as exc:
            raise CompileError(f"timed out waiting for the kernel cache lock {exc.lock_file}") from exc

    def load(self) -> bytes | None:
        """The cached object if present and matching its sidecar, else None."""
        try:
            data = self.object_path.read_bytes()
            want = self.sidecar_path.read_text().strip()
        except OSError:
            return None
        return data if hashlib.sha256(data).hexdigest() == want else None

    def store(self, data: bytes, ir_text: str | None = None) -> None:
        """Publish ``data`` (and the IR it came from): source, object, then the sidecar that
        validates them, each with an atomic replace (:func:`acegen._fs.write_atomic`).  An
        entry that cannot be written is skipped: without its sidecar it is a miss."""
        if ir_text is not None:
            write_atomic(self.source_path, lambda fh: fh.write(ir_text.encode("utf-8")), binary=True)
        data = bytes(data)
        if write_atomic(self.object_path, lambda fh: fh.write(data), binary=True):
            sidecar = (hashlib.sha256(data).hexdigest() + "\n").encode()
            write_atomic(self.sidecar_path, lambda fh: fh.write(sidecar), binary=True)

    def invalidate(self) -> None:
        """Forget the entry (used when a verified object still fails to load)."""
        self.sidecar_path.unlink(missing_ok=True)


__all__ = ["HostIdentity", "ObjectCache", "host_identity", "llvm_cache_key"]
