"""Content-addressed cache of compiled kernels.

Location: ``$ACEGEN_CACHE_DIR/kernels/`` if the variable is set, else
``platformdirs.user_cache_dir("acegen")/kernels/``.  If that folder cannot be created or
written, a private temporary folder (removed at exit) is used instead, with a warning.

Entries, all named by the key (a sha256 over the generated sources, the compiler identity
and version, the flags, the acegen version and the kernel ABI version):

* ``<key>.so`` -- the library; published with ``os.replace`` (atomic, a new inode, so a
  library that some process has already loaded is never overwritten in place);
* ``<key>.so.sha256`` -- sha256 of the library; a library whose sidecar is missing or does
  not match is rebuilt;
* ``<key>.src/`` -- the sources it was built from (for reading and debugging);
* ``<key>.lock`` -- an inter-process file lock (``filelock``) held while checking and
  building, so concurrent processes compiling the same model build it once and all get the
  same good library.

Libraries are built in a temporary folder ``.build-<key prefix>-*`` inside the cache folder
(same file system, so the final ``os.replace`` is atomic).  A build killed half-way leaves its
folder behind; the next build removes such folders once they are older than
``STALE_BUILD_S`` and no process holds the lock of their entry.
"""

from __future__ import annotations

import atexit
import collections
import functools
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import filelock

from .. import _version
from .._fs import cache_root, template_root, write_atomic
from ..abi import ABI_VERSION
from ..errors import CompileError
from .toolchain import Toolchain

LOCK_TIMEOUT_S = 1800.0
STALE_BUILD_S = 600.0

_private_dir: Path | None = None

#: What this process did, counted (for tests and ``benchmarks/startup.py``): ``"c_build"``
#: (a C compiler run publishing a library), ``"llvm_compile"`` (an LLVM module optimised and
#: compiled), ``"lower"`` (a model lowered to its ModelIR), ``"parse"`` (a model file parsed),
#: ``"index_hit"`` / ``"index_miss"`` (source-index lookups).
events: collections.Counter = collections.Counter()


def acegen_version() -> str:
    """acegen's version: ``acegen.__version__``, else the installed metadata, else a marker."""
    version = getattr(_version, "__version__", None)
    if isinstance(version, str):
        return version
    try:
        return importlib.metadata.version("acegen")
    except importlib.metadata.PackageNotFoundError:
        return "0+source-tree"


def _private_kernels_dir() -> Path:
    global _private_dir
    if _private_dir is None or not _private_dir.is_dir():
        _private_dir = Path(tempfile.mkdtemp(prefix="acegen-kernels-"))
        atexit.register(shutil.rmtree, _private_dir, True)
    return _private_dir


def kernels_dir() -> Path:
    """``<cache root>/kernels``, created; a private temp folder (with a warning) if unwritable."""
    wanted = cache_root() / "kernels"
    try:
        wanted.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=wanted):
            pass
        return wanted
    except OSError as exc:
        fallback = _private_kernels_dir()
        warnings.warn(
            f"acegen: kernel cache {wanted} is not writable ({exc}); using the private folder {fallback} "
            "(set ACEGEN_CACHE_DIR to a writable folder to keep compiled kernels)",
            RuntimeWarning,
            stacklevel=3,
        )
        return fallback


def cache_key(sources: dict[str, str | bytes], toolchain: Toolchain, flags: tuple[str, ...]) -> str:
    """sha256 over the generated files (names and contents), compiler identity + version,
    flags, acegen and ABI versions."""
    h = hashlib.sha256()
    for fname in sorted(sources):
        data = sources[fname]
        raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        h.update(f"{fname}\0{len(raw)}\0".encode())
        h.update(raw)
    meta = {
        "compiler": toolchain.identity(flags),
        "flags": list(flags),
        "acegen": acegen_version(),
        "abi": ABI_VERSION,
    }
    h.update(json.dumps(meta, sort_keys=True).encode())
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


#: sha256 of libraries this process hashed itself (built or verified), by path, with the size
#: and modification time they had: :func:`record_source` reuses them instead of reading a
#: library of up to ~100 MB once more right after building or verifying it.
_hashed: dict[str, tuple[int, int, str]] = {}


def _remember_digest(lib: Path, digest: str) -> None:
    try:
        st = os.stat(lib)
    except OSError:
        return
    _hashed[str(lib)] = (st.st_size, st.st_mtime_ns, digest)


def _valid(lib: Path, sidecar: Path) -> bool:
    try:
        if not lib.is_file():
            return False
        digest = file_sha256(lib)
        ok = sidecar.read_text().strip() == digest
    except OSError:
        return False
    if ok:
        _remember_digest(lib, digest)
    return ok


def remove_stale_builds(folder: Path, max_age_s: float = STALE_BUILD_S) -> int:
    """Remove ``.build-*`` folders left by killed builds: older than ``max_age_s`` and with
    no lock of a matching entry held.  Returns how many were removed."""
    removed = 0
    now = time.time()
    for build in folder.glob(".build-*"):
        try:
            if now - build.stat().st_mtime < max_age_s:
                continue
        except OSError:
            continue
        prefix = build.name[len(".build-"):].split("-")[0]
        held = False
        for lock in folder.glob(f"{prefix}*.lock"):
            try:
                with filelock.FileLock(str(lock), timeout=0):
                    pass
            except filelock.Timeout:
                held = True
                break
        if not held:
            shutil.rmtree(build, ignore_errors=True)
            removed += not build.exists()
    return removed


def _build_and_publish(
    folder: Path, key: str, sources: dict[str, str | bytes], toolchain: Toolchain, flags: tuple[str, ...]
) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".build-{key[:16]}-", dir=folder))
    try:
        src_dir = tmp / "src"
        src_dir.mkdir()
        for fname, data in sources.items():
            if "/" in fname or fname.startswith("."):
                raise CompileError(f"invalid generated file name {fname!r}")
            if isinstance(data, str):
                (src_dir / fname).write_text(data, encoding="utf-8")
            else:
                (src_dir / fname).write_bytes(data)
        lib_tmp = tmp / "lib.so"
        c_files = sorted(src_dir / f for f in sources if f.endswith(".c"))
        toolchain.compile_shared(c_files, lib_tmp, flags)
        events["c_build"] += 1
        digest = file_sha256(lib_tmp)
        (tmp / "lib.so.sha256").write_text(digest + "\n")
        src_final = folder / f"{key}.src"
        if src_final.exists():
            shutil.rmtree(src_final)
        os.replace(src_dir, src_final)
        os.replace(lib_tmp, folder / f"{key}.so")
        os.replace(tmp / "lib.so.sha256", folder / f"{key}.so.sha256")
        _remember_digest(folder / f"{key}.so", digest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_library(
    sources: dict[str, str | bytes], toolchain: Toolchain, flags: tuple[str, ...], *, force: bool = False
) -> Path:
    """Path of the cached library for ``sources`` (every ``*.c`` is compiled, in the folder
    holding all the files, so that ``.incbin`` finds binary tables), built if needed.

    ``force`` rebuilds even if a verified entry exists (used when a verified library still
    fails to load).
    """
    key = cache_key(sources, toolchain, flags)
    folder = kernels_dir()
    lib = folder / f"{key}.so"
    try:
        with filelock.FileLock(str(folder / f"{key}.lock"), timeout=LOCK_TIMEOUT_S):
            if force or not _valid(lib, folder / f"{key}.so.sha256"):
                from ..progress import status

                remove_stale_builds(folder)
                names = ", ".join(sorted(f for f in sources if f.endswith(".c")))
                with status(f"compiling {names} ({toolchain.family} {' '.join(flags)})"):
                    _build_and_publish(folder, key, sources, toolchain, flags)
    except filelock.Timeout as exc:
        raise CompileError(f"timed out waiting for the kernel cache lock {exc.lock_file}") from exc
    return lib


# -- source index: skip parsing, lowering and code generation for a model compiled before ------
#
# ``<kernels>/index/<key>.json`` maps the *content* of a model (the sha256 of a model file, or
# of a specification with its coefficients: ``acegen.model.Model._content_digest``), the
# compile target and options, the model name, acegen's code (a fingerprint of its sources and
# templates), the acegen and ABI versions, the compiler (the ``$CC`` setting, the resolved
# executable, its size and modification time) and the CPU (for -march=native) to the cached
# artefact (a C library, or an LLVM object and its spline tables) and what its loader checks
# (n_species, cutoffs, signature, elements, cffi declarations).  A hit loads the artefact
# without reading the model, lowering it or rendering code; the entry is trusted only while
# every recorded file has the recorded size, modification time *and* sha256 (bytes can change
# with size and mtime kept: bit rot, zero-filled blocks after a crash, a restored backup), and
# the loader still checks ABI, species, cutoffs and signature.  A mismatch is a miss: the
# caller compiles, and the build step, which verifies the artefact against its sidecar
# digest, rebuilds it.
def _cpu_identity() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        import platform

        return platform.processor() or platform.machine()
    keep = [line for line in text.splitlines() if line.startswith(("model name", "flags", "cpu family", "model\t"))]
    return hashlib.sha256("\n".join(sorted(set(keep))).encode()).hexdigest()


def _compiler_identity() -> str:
    from .toolchain import find_c_compiler

    command = find_c_compiler(required=False)
    if command is None:
        return "none"
    exe = shutil.which(command[0]) or command[0]
    try:
        st = os.stat(os.path.realpath(exe))
        stamp = f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        stamp = "?"
    return f"{os.environ.get('CC', '')}|{' '.join(command)}|{os.path.realpath(exe)}|{stamp}"


@functools.lru_cache(maxsize=1)
def generator_fingerprint() -> str:
    """sha256 over acegen's own code and templates (every ``*.py`` of the package and every
    file under the templates folder): a model file's cached kernel is reused only by the code
    that generated it.  Computed once per process."""
    h = hashlib.sha256()

    def walk(node, prefix: str) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            rel = f"{prefix}/{child.name}"
            if child.is_dir():
                if child.name != "__pycache__":
                    walk(child, rel)
            elif child.name.endswith((".py", ".j2")) or prefix.startswith("templates"):
                data = child.read_bytes()
                h.update(f"{rel}\0{len(data)}\0".encode())
                h.update(data)

    walk(Path(__file__).resolve().parent.parent, "acegen")
    walk(template_root(), "templates")
    return h.hexdigest()


def source_key(source_sha256: str, target: str, options: dict, name: str, extra: str = "") -> str:
    """Index key of a compiled model file (see the comment above ``_cpu_identity``)."""
    meta = {
        "generator": generator_fingerprint(),
        "source": source_sha256,
        "target": target,
        "options": sorted((str(k), repr(v)) for k, v in options.items()),
        "name": name,
        "extra": extra,
        "acegen": acegen_version(),
        "abi": ABI_VERSION,
        "compiler": _compiler_identity(),
        "cpu": _cpu_identity(),
    }
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def _index_path(key: str) -> Path:
    folder = kernels_dir() / "index"
    folder.mkdir(exist_ok=True)
    return folder / f"{key}.json"


def _file_record(path: Path) -> dict:
    st = os.stat(path)
    known = _hashed.get(str(path))
    if known is not None and known[:2] == (st.st_size, st.st_mtime_ns):
        digest = known[2]
    else:
        digest = file_sha256(path)
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}


def _file_matches(record: dict, verify: bool) -> bool:
    try:
        st = os.stat(record["path"])
        if record.get("size") != st.st_size or record.get("mtime_ns") != st.st_mtime_ns:
            return False
        digest = record.get("sha256")
        return isinstance(digest, str) and (not verify or file_sha256(Path(record["path"])) == digest)
    except (OSError, KeyError, TypeError):
        return False


def lookup_source(key: str, *, verify: bool = True) -> dict | None:
    """The recorded entry of ``key`` if its files (``library`` and any ``files``) are still the
    ones recorded (size, modification time and, with ``verify``, sha256), else None.
    ``verify=False`` is for loaders that hash the bytes they read themselves."""
    try:
        entry = json.loads(_index_path(key).read_text())
        main = {"path": entry["library"], "size": entry.get("size"), "mtime_ns": entry.get("mtime_ns"),
                "sha256": entry.get("sha256")}
        records = [main, *entry.get("files", [])]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        events["index_miss"] += 1
        return None
    if not all(isinstance(r, dict) and _file_matches(r, verify) for r in records):
        events["index_miss"] += 1
        return None
    events["index_hit"] += 1
    return entry


def record_source(key: str, library: Path, *, files: tuple[Path, ...] = (), **meta: object) -> None:
    """Record that ``key`` compiles to ``library`` (and needs ``files`` besides it: their
    size, modification time and sha256 are recorded and checked on lookup); atomic write,
    failures are ignored."""
    try:
        main = _file_record(Path(library))
        sidecar = library.with_name(library.name + ".sha256")
        if sidecar.is_file() and sidecar.read_text().strip() != main["sha256"]:
            return  # the library no longer matches what was built: never index it
        entry = {"library": str(library), "size": main["size"], "mtime_ns": main["mtime_ns"],
                 "sha256": main["sha256"], "files": [_file_record(Path(f)) for f in files], **meta}
        write_atomic(_index_path(key), lambda fh: fh.write(json.dumps(entry)), suffix=".json")
    except OSError:
        pass


def _record_path(name: str) -> Path:
    tag = hashlib.sha256(f"{name}\0{generator_fingerprint()}\0{acegen_version()}".encode()).hexdigest()
    return _index_path(f"record-{tag}")


def read_record(name: str) -> dict | None:
    """A small JSON record written by :func:`write_record` with this version of acegen's code
    (the generator fingerprint is part of its file name), or None."""
    try:
        data = json.loads(_record_path(name).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_record(name: str, data: dict) -> None:
    """Store ``data`` under ``name`` for this version of acegen's code (atomic; failures are
    ignored)."""
    try:
        text = json.dumps(data)
        write_atomic(_record_path(name), lambda fh: fh.write(text), suffix=".json")
    except OSError:
        pass
