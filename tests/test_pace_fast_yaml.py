"""The fast YAML path of the PACE readers (yaml-rs, used for large files): it must hand on
exactly what PyYAML's loader does (same keys, values bit for bit, same Python types), and
every malformed file must report exactly as through PyYAML.  The fast path is forced on
(threshold 0) and compared with PyYAML on the shipped files, a synthetic multi-element file,
the broken-file cases of test_pace_io and random corruptions."""

from __future__ import annotations

import math
import random
import re
import struct
import sys
from pathlib import Path

import pytest

from acegen.errors import ModelFileError
from acegen.io.pace import checks, read_pace

from .conftest import REPO, SHARED, SHARED_MISSING
from .test_pace_io import ALL_FILES, YACE_CASES, YAML_CASES, corrupt

pytest.importorskip("yaml_rs", reason="optional fast YAML library (extra 'fast-yaml') not installed")

POT = SHARED / "potentials"
YAML_FILES = [n for n in ALL_FILES if n.endswith((".yace", ".yaml"))] + [
    "TiAl_ACEjl_tutorial_20230120.yace"
]


def _same(a, b, where="data"):
    """Strict equality: same types all the way down, floats bit for bit."""
    assert type(a) is type(b), (where, type(a), type(b))
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            _same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert struct.pack("<d", a) == struct.pack("<d", b) or (math.isnan(a) and math.isnan(b)), (where, a, b)
    else:
        assert a == b, (where, a, b)


def _both(text):
    ctx = checks._Ctx("mem.yace")
    fast = checks._fast_yaml_load(text)
    slow = checks._load_yaml(ctx, text, fast=False)
    return fast, slow


@pytest.fixture
def forced(monkeypatch):
    monkeypatch.setattr(checks, "FAST_YAML_MIN_BYTES", 0)


def _outcome(path):
    try:
        return ("ok", read_pace(path))
    except ModelFileError as exc:
        return ("error", str(exc), exc.field)


def _compare_read(path, monkeypatch):
    monkeypatch.setattr(checks, "FAST_YAML_MIN_BYTES", sys.maxsize)
    slow = _outcome(path)
    monkeypatch.setattr(checks, "FAST_YAML_MIN_BYTES", 0)
    fast = _outcome(path)
    assert fast[0] == slow[0], (fast, slow)
    if fast[0] == "ok":
        assert fast[1] == slow[1]
    else:
        assert fast[1:] == slow[1:]


@pytest.mark.skipif(not POT.is_dir(), reason=SHARED_MISSING)
@pytest.mark.parametrize("name", YAML_FILES)
def test_fast_path_gives_identical_data_on_shipped_files(forced, name):
    text = (POT / name).read_text()
    fast, slow = _both(text)
    if fast is None:  # the guard sent it to PyYAML (quoted strings, timestamps in the metadata)
        assert checks._yaml_1_1_differs(text)
        assert not name.endswith(".yace") or name.startswith("TiAl"), "fast path expected"
        return
    _same(fast, slow)


def test_fast_path_on_the_packaged_potential_and_a_synthetic_multi_element_file(forced, tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import make_pace100
    finally:
        sys.path.pop(0)
    from acegen.io.pace import write_yace

    template = read_pace(REPO / "acegen" / "data" / "YBCO_ACE.yace")
    text = (REPO / "acegen" / "data" / "YBCO_ACE.yace").read_text()
    fast, slow = _both(text)
    assert fast is not None
    _same(fast, slow)
    pot = make_pace100.make(template, 6, 20, 1)
    path = tmp_path / "six.yace"
    write_yace(pot, path)
    fast, slow = _both(path.read_text())
    assert fast is not None and len(fast["elements"]) == 6
    _same(fast, slow)


@pytest.mark.parametrize(
    "text",
    ["a: 1e-5", "a: 1.0e5", "a: 05", "a: -05", "a: 0x1f", "a: yes", "a: Off", "a: -.5", "a: 1_0",
     "a: 1:30", "a: 2001-12-14", "[[0, 1]]: 2", "{a: 1}: 2", "a: 'x'", 'a: "x"', "a: !!float 1",
     "a: &x 1\nb: *x", "a: |\n  x\n", "? a\n: 1", "--- \na: 1", "a: 1\n---\nb: 2", "<<: {a: 1}",
     "a: =", "a:\t1", "a: b\x00"],
)
def test_forms_the_two_yaml_versions_read_differently_go_to_pyyaml(forced, text):
    assert checks._yaml_1_1_differs(text)
    assert checks._fast_yaml_load(text) is None


@pytest.mark.parametrize(
    "text",
    ["a: 1.5e-05", "a: [1.0, -2.5E+3, .5, 1., -0.0, 0, -0, +3, .inf]", "E0: [0, 0]",
     "[0, 1]: {b: c}", "a: [true, false, null, ~, N, Y, y, n]", "a:\nb: 1"],
)
def test_forms_both_read_alike_take_the_fast_path(forced, text):
    fast, slow = _both(text)
    assert fast is not None
    _same(fast, slow)


@pytest.mark.skipif(not POT.is_dir(), reason=SHARED_MISSING)
@pytest.mark.parametrize("source, pattern, repl, field",
                         [("Al-Ni_opt_all.yace", *c) for c in YACE_CASES] + [("Cu-III.yaml", *c) for c in YAML_CASES])
def test_broken_files_report_alike(tmp_path, monkeypatch, source, pattern, repl, field):
    text = (POT / source).read_text()
    new, n = re.subn(pattern, repl, text, count=1, flags=re.M)
    assert n == 1
    p = tmp_path / ("broken" + Path(source).suffix)
    p.write_text(new)
    _compare_read(p, monkeypatch)


@pytest.mark.skipif(not POT.is_dir(), reason=SHARED_MISSING)
@pytest.mark.parametrize("name", ["Al-Ni_opt_all.yace", "ZBL_rep.yaml", "YBCO_ACE.yace"])
def test_truncated_and_corrupted_files_report_alike(tmp_path, monkeypatch, name):
    data = (POT / name).read_bytes()
    p = tmp_path / ("bad" + Path(name).suffix)
    rng = random.Random(4321)
    alphabet = b"0123456789-+.eE[]{}:, \nabcxyz#&*!|>'\"\t\x00\xff"
    variants = [data[: int(len(data) * f)] for f in (0.1, 0.3, 0.5, 0.7, 0.9)]
    for _ in range(60 if len(data) < 100_000 else 15):
        variants.append(corrupt(data, rng, alphabet))
    for v in variants:
        p.write_bytes(v)
        _compare_read(p, monkeypatch)
