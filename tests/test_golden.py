"""The committed golden kernels in generated/ equal what acegen emits today.

On a difference: review it, then regenerate with `python -m acegen.golden`."""

from __future__ import annotations

import difflib

import pytest

from acegen.golden import default_dir, render_all


def test_golden_kernels_unchanged():
    root = default_dir()
    if not root.is_dir():
        pytest.skip("generated/ is not present (installed package without the repository)")
    files = render_all()
    committed = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != "README.md"}
    assert committed == set(files), "golden file set differs: run `python -m acegen.golden` and review"
    for rel, text in files.items():
        old = (root / rel).read_text()
        if old != text:
            diff = "".join(difflib.unified_diff(old.splitlines(True), text.splitlines(True), rel, rel, n=1))
            pytest.fail(f"generated code changed; review and run `python -m acegen.golden`:\n{diff[:4000]}")
