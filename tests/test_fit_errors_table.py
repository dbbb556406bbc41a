"""Error tables against hand computation on a two-structure example."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from acegen.fit import FitError, error_table, format_error_table, save_error_table
from acegen.fit.data import RowMeta


@pytest.fixture()
def example():
    """Structure 0 ('a', 2 atoms): E, 6 F, 6 V rows; structure 1 ('b', 4 atoms): E, 12 F rows."""
    kind = ["E"] + ["F"] * 6 + ["V"] * 6 + ["E"] + ["F"] * 12
    structure = [0] * 13 + [1] * 13
    natoms = [2] * 13 + [4] * 13
    ctype = ["a"] * 13 + ["b"] * 13
    comp = [0] + list(range(6)) + list(range(6)) + [0] + list(range(12))
    meta = RowMeta(np.array(structure), np.array(kind), np.array(comp), np.array(natoms),
                   np.array(ctype, dtype=object))
    res = np.array([0.2, 0.1, -0.1, 0.0, 0.0, 0.3, 0.0, 0.4, 0.0, 0.0, 0.0, 0.0, -0.2, -0.8] + [0.05] * 12)
    return res, meta


def test_values_by_hand(example):
    res, meta = example
    t = error_table(res, meta)
    a, b, s = t["config_types"]["a"], t["config_types"]["b"], t["set"]
    # a: E per atom 0.2/2; F (0.1, -0.1, 0, 0, 0.3, 0); V per atom (0.2, 0, 0, 0, 0, -0.1)
    assert a["n_structures"] == 1
    assert a["E"] == pytest.approx({"rmse": 0.1, "mae": 0.1, "n": 1})
    assert a["F"] == pytest.approx({"rmse": math.sqrt(0.11 / 6), "mae": 0.5 / 6, "n": 6})
    assert a["V"] == pytest.approx({"rmse": math.sqrt(0.05 / 6), "mae": 0.3 / 6, "n": 6})
    # b: E per atom -0.8/4; twelve force residuals of 0.05; no virial
    assert b["E"] == pytest.approx({"rmse": 0.2, "mae": 0.2, "n": 1})
    assert b["F"] == pytest.approx({"rmse": 0.05, "mae": 0.05, "n": 12})
    assert b["V"] is None
    # pooled
    assert s["n_structures"] == 2
    assert s["E"] == pytest.approx({"rmse": math.sqrt((0.01 + 0.04) / 2), "mae": 0.15, "n": 2})
    assert s["F"] == pytest.approx({"rmse": math.sqrt((0.11 + 12 * 0.0025) / 18), "mae": (0.5 + 0.6) / 18, "n": 18})
    assert s["V"] == a["V"]
    assert t["units"] == {"E": "eV/atom", "F": "eV/A", "V": "eV/atom"}


def test_format_and_save(example, tmp_path):
    res, meta = example
    t = error_table(res, meta)
    text = format_error_table(t, title="train")
    lines = text.splitlines()
    assert lines[0] == "train"
    a_rmse = next(ln for ln in lines if ln.startswith("a "))
    assert f"{100.0:.4f}" in a_rmse  # 0.1 eV/atom printed in meV/atom
    assert any(ln.startswith("MAE") for ln in lines)
    save_error_table({"train": t}, tmp_path / "e.json")
    assert json.loads((tmp_path / "e.json").read_text())["train"]["config_types"]["b"]["F"]["n"] == 12
    save_error_table(t, tmp_path / "e.csv")
    with (tmp_path / "e.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    row = next(r for r in rows if r["config_type"] == "set" and r["quantity"] == "F")
    assert float(row["mae"]) == pytest.approx(1.1 / 18) and row["unit"] == "eV/A"
    assert not any(r["config_type"] == "b" and r["quantity"] == "V" for r in rows)
    with pytest.raises(FitError, match=".json or .csv"):
        save_error_table(t, tmp_path / "e.txt")


def test_length_mismatch(example):
    res, meta = example
    with pytest.raises(FitError, match="residuals for 26 rows"):
        error_table(res[:-1], meta)
