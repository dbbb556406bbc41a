"""What is in acegen's cache, and emptying it safely (``acegen cache info|clear``).

The cache root (``$ACEGEN_CACHE_DIR`` or the user cache folder) holds

* ``kernels/``: compiled libraries ``<key>.so`` (with ``.so.sha256`` sidecars and ``.src/``
  sources), LLVM objects ``<key>.o`` (with ``.o.sha256`` and ``.ll``), the model-file index
  ``index/``, one ``<key>.lock`` per entry and, during a build, ``.build-*`` folders;
* ``coupling/``, ``purify/``, ``basis/``: cached symbolic data (coupling coefficients,
  purification operators, lowered bases), each file written atomically.

:func:`clear` removes a kernel entry only while holding its lock (an entry being built by
another process is left alone and reported as busy); lock files themselves are kept (removing
a lock file another process may be waiting on would let two processes build at once).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import filelock

from .cache import cache_root

SYMBOLIC = ("coupling", "purify", "basis")


@dataclass
class CacheInfo:
    root: Path
    size_bytes: int = 0
    libraries: int = 0
    llvm_objects: int = 0
    symbolic: dict[str, int] = field(default_factory=dict)

    @property
    def entries(self) -> int:
        return self.libraries + self.llvm_objects + sum(self.symbolic.values())

    def describe(self) -> str:
        sym = ", ".join(f"{n} {k}" for k, n in self.symbolic.items())
        return "\n".join([
            f"location: {self.root}",
            f"size: {human_size(self.size_bytes)}",
            f"entries: {self.entries} ({self.libraries} compiled libraries, {self.llvm_objects} LLVM objects, "
            f"symbolic data: {sym})",
        ])


def human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


def _size(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
        except OSError:
            pass
    return total


def info(root: Path | None = None) -> CacheInfo:
    """Location, total size and entry counts of the cache (nothing is created)."""
    root = cache_root() if root is None else Path(root)
    out = CacheInfo(root)
    if not root.is_dir():
        out.symbolic = {k: 0 for k in SYMBOLIC}
        return out
    out.size_bytes = _size(root)
    kernels = root / "kernels"
    if kernels.is_dir():
        out.libraries = sum(1 for _ in kernels.glob("*.so"))
        out.llvm_objects = sum(1 for _ in kernels.glob("*.o"))
    out.symbolic = {k: sum(1 for p in (root / k).glob("*") if p.is_file()) if (root / k).is_dir() else 0
                    for k in SYMBOLIC}
    return out


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def clear(root: Path | None = None, lock_timeout_s: float = 2.0) -> tuple[int, list[str]]:
    """Remove compiled kernels, the model-file index and the symbolic data.  Returns (number of
    paths removed, keys of entries left alone because another process holds their lock)."""
    root = cache_root() if root is None else Path(root)
    removed = 0
    busy: list[str] = []
    kernels = root / "kernels"
    if kernels.is_dir():
        locks = {p.name[: -len(".lock")] for p in kernels.glob("*.lock")}
        for key in sorted(locks):
            try:
                with filelock.FileLock(str(kernels / f"{key}.lock"), timeout=lock_timeout_s):
                    doomed = [p for p in kernels.glob(f"{key}.*") if p.name != f"{key}.lock"]
                    doomed += list(kernels.glob(f".build-{key[:16]}-*")) + list(kernels.glob(f".{key}.*"))
                    for p in doomed:
                        _remove(p)
                    removed += len(doomed)
            except filelock.Timeout:
                busy.append(key)
        # entries without a lock file (none are written that way; left by other tools or versions)
        for p in list(kernels.iterdir()):
            if p.name == "index" or p.name.endswith(".lock") or p.name.startswith("."):
                continue
            if p.name.split(".")[0] not in locks:
                _remove(p)
                removed += 1
        if (kernels / "index").is_dir():
            _remove(kernels / "index")
            removed += 1
    for k in SYMBOLIC:
        if (root / k).is_dir():
            _remove(root / k)
            removed += 1
    return removed, busy
