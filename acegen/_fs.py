"""Small file-system helpers shared by the on-disk caches."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


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
