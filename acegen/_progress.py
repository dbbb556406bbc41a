"""Progress bars for long symbolic work (bottom layer: imports nothing from acegen)."""

from __future__ import annotations


def progress_bar(iterable, desc: str, unit: str, progress: bool | None):
    """tqdm over ``iterable``: always (True), never (False), or only once it has run for
    more than two seconds (None)."""
    if progress is False:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, unit=unit, delay=0.0 if progress else 2.0, leave=bool(progress))
