"""Feedback on long work: status lines and progress bars on stderr, only for a person watching.

Lowering a large basis, compiling a kernel the first time and the fitting solve take seconds
to tens of seconds.  :func:`status` writes ``acegen: <what> …`` when such work starts and
``acegen: <what>: done in 3.2 s`` when it ends; :func:`bar` wraps an iterable in a ``tqdm``
progress bar.  Both write to ``sys.stderr`` and only when it is a terminal; they are silent when
it is not (pipes, log files, batch jobs), when the environment variable ``ACEGEN_QUIET`` is
set to anything but ``""``/``0``, or after :func:`set_quiet(True) <set_quiet>` (the command
line's ``-q/--quiet``).  ``quiet=True`` / ``quiet=False`` on a call overrides all of that for
the call.

Bottom layer: standard library only (``tqdm`` is imported when a bar is shown).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterable, Iterator

_quiet: bool | None = None


def set_quiet(quiet: bool | None) -> None:
    """Silence (True) or allow (False) feedback in this process; None: back to the default
    (``ACEGEN_QUIET`` and whether stderr is a terminal)."""
    global _quiet
    _quiet = quiet


def enabled(stream=None, quiet: bool | None = None) -> bool:
    """Whether feedback is shown on ``stream`` (default ``sys.stderr``)."""
    if quiet is not None:
        return not quiet
    if _quiet is not None:
        return not _quiet
    if os.environ.get("ACEGEN_QUIET", "") not in ("", "0"):
        return False
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


@contextlib.contextmanager
def status(what: str, *, stream=None, quiet: bool | None = None) -> Iterator[None]:
    """``with status("compiling kernel"): ...`` — a line when the work starts and one when it
    ends (with its duration, or ``failed``), when :func:`enabled`."""
    stream = sys.stderr if stream is None else stream
    if not enabled(stream, quiet):
        yield
        return
    t0 = time.perf_counter()
    _write(stream, f"acegen: {what} …\n")
    ok = False
    try:
        yield
        ok = True
    finally:
        dt = time.perf_counter() - t0
        _write(stream, f"acegen: {what}: {'done' if ok else 'failed'} in {dt:.1f} s\n")


def bar(iterable: Iterable, *, desc: str, unit: str = "it", total: int | None = None, stream=None,
        quiet: bool | None = None, delay: float = 0.0, leave: bool = False) -> Iterable:
    """``iterable`` wrapped in a tqdm bar on ``stream`` when :func:`enabled`, else unchanged."""
    stream = sys.stderr if stream is None else stream
    if not enabled(stream, quiet):
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, unit=unit, total=total, file=stream, delay=delay, leave=leave)


def progress_bar(iterable: Iterable, desc: str, unit: str, progress: bool | None) -> Iterable:
    """A bar over long symbolic work: always (``progress=True``), never (False), or, by
    default (None), once it has run for two seconds and only when :func:`enabled`."""
    if progress is False:
        return iterable
    if progress is None:
        return bar(iterable, desc=desc, unit=unit, delay=2.0)
    return bar(iterable, desc=desc, unit=unit, quiet=False, leave=True)


def _write(stream, text: str) -> None:
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):  # a closed or broken stream never stops the work
        pass
