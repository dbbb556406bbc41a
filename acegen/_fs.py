"""Storage: the one cache root and the one atomic-write helper behind every on-disk store
(coupling and basis caches, compiled kernels, LLVM objects, saved models), and the location
of the code templates.  Bottom layer: imports nothing from acegen."""

from __future__ import annotations

import importlib.resources
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import platformdirs


def write_atomic(path: Path, write: Callable[[IO], None], *, binary: bool = False, suffix: str = "") -> bool:
    """Write a cache file atomically: ``write(fh)`` fills a temporary file in the same folder,
    which then replaces ``path``.  A cache that cannot be written is skipped silently
    (returns False); readers treat a missing file as a miss."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=suffix)
        with os.fdopen(fd, "wb" if binary else "w") as fh:
            write(fh)
        os.replace(tmp, path)
        tmp = None
        return True
    except OSError:
        return False
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def cache_root() -> Path:
    """acegen's cache folder: ``$ACEGEN_CACHE_DIR`` if set, else the user cache dir.  Every
    on-disk cache (couplings, bases, kernels, LLVM objects) lives in a subfolder of it."""
    env = os.environ.get("ACEGEN_CACHE_DIR")
    return Path(env) if env else Path(platformdirs.user_cache_dir("acegen"))


def template_root():
    """The templates folder: package ``acegen.templates`` if installed, else the repo copy
    (a ``Traversable``; works inside wheels/zips)."""
    try:
        root = importlib.resources.files("acegen.templates")
        if root.is_dir():
            return root
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parent.parent / "templates"
