"""Test configuration: a private kernel/coupling cache per test session, and the path to
../shared (peer reference data) for the tests that use it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# two cores, two xdist workers: multi-threaded BLAS would only oversubscribe them
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

if "ACEGEN_CACHE_DIR" not in os.environ:
    import atexit
    import shutil

    os.environ["ACEGEN_CACHE_DIR"] = tempfile.mkdtemp(prefix="acegen-test-cache-")
    atexit.register(shutil.rmtree, os.environ["ACEGEN_CACHE_DIR"], ignore_errors=True)

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ACEGEN_SHARED", REPO.parent / "shared"))
SHARED_MISSING = (
    f"peer reference data not found at {SHARED}: set ACEGEN_SHARED=/path/to/shared "
    "(the folder holding potentials/, reference/ and data/) to run these tests"
)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(SHARED_MISSING)
    return SHARED


def pytest_terminal_summary(terminalreporter) -> None:
    if not SHARED.is_dir():
        terminalreporter.write_line(f"note: tests needing it were skipped: {SHARED_MISSING}", yellow=True)
