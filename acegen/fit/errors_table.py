"""Error tables: RMSE and MAE of energies, forces and virials per config type and overall.

Residuals are prediction − reference per design-matrix row (unweighted, see
:func:`acegen.fit.data.assemble`).  Quantities:

* ``E`` — energy per atom, (E_pred − E_ref)/N, in eV/atom (one value per structure);
* ``F`` — force components, eV/Å (3N values per structure);
* ``V`` — virial per atom, the 6 Voigt components (xx yy zz yz xz xy) of (V_pred − V_ref)/N,
  eV/atom (ACEpotentials reports virials per atom too).

RMSE = sqrt(mean r²), MAE = mean |r| over all values of that quantity in the group; the
``set`` row pools every config type.  The printed table shows E and V in meV/atom and F in
eV/Å; the saved JSON/CSV keep eV units (column ``unit``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FitError
from .data import RowMeta

__all__ = ["QUANTITIES", "UNITS", "ErrorAccumulator", "error_table", "format_error_table", "save_error_table"]

QUANTITIES = ("E", "F", "V")
UNITS = {"E": "eV/atom", "F": "eV/A", "V": "eV/atom"}
_PRINT_SCALE = {"E": (1e3, "meV/atom"), "F": (1.0, "eV/A"), "V": (1e3, "meV/atom")}


def _stats(r: np.ndarray) -> dict[str, float] | None:
    if r.size == 0:
        return None
    return {"rmse": float(np.sqrt(np.mean(r**2))), "mae": float(np.mean(np.abs(r))), "n": int(r.size)}


def error_table(residuals: np.ndarray, meta: RowMeta) -> dict[str, Any]:
    """``{"units", "config_types": {ct: {"n_structures", "E", "F", "V"}}, "set": {...}}``;
    each quantity is ``{"rmse", "mae", "n"}`` or None when the group has no such rows."""
    r = np.asarray(residuals, dtype=float)
    if r.shape != (len(meta),):
        raise FitError(f"error_table: {r.shape} residuals for {len(meta)} rows")
    per_atom = np.isin(meta.kind, ("E", "V"))
    r = np.where(per_atom, r / meta.natoms, r)

    def group(mask: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = {"n_structures": int(np.unique(meta.structure[mask]).size)}
        for q in QUANTITIES:
            out[q] = _stats(r[mask & (meta.kind == q)])
        return out

    cts = sorted({str(c) for c in meta.config_type})
    return {
        "units": dict(UNITS),
        "config_types": {ct: group(meta.config_type == ct) for ct in cts},
        "set": group(np.ones(len(meta), dtype=bool)),
    }


class ErrorAccumulator:
    """The error table (:func:`error_table`) of rows seen block by block, without keeping
    them: per config type and quantity, Σ r², Σ |r| and the count (memory O(config types)).
    A structure's rows must come in one block (as the streamed passes give them)."""

    def __init__(self) -> None:
        self._sums: dict[tuple[str, str], np.ndarray] = {}
        self._structures: dict[str, int] = {}
        self.n_rows = 0

    def add(self, residuals: np.ndarray, meta: RowMeta) -> None:
        r = np.asarray(residuals, dtype=float)
        if r.shape != (len(meta),):
            raise FitError(f"error_table: {r.shape} residuals for {len(meta)} rows")
        r = np.where(np.isin(meta.kind, ("E", "V")), r / meta.natoms, r)
        cts = np.array([str(c) for c in meta.config_type], dtype=object)
        for ct in sorted(set(cts)):
            m = cts == ct
            self._structures[ct] = self._structures.get(ct, 0) + int(np.unique(meta.structure[m]).size)
            for q in QUANTITIES:
                rq = r[m & (meta.kind == q)]
                if rq.size:
                    acc = self._sums.setdefault((ct, q), np.zeros(3))
                    acc += (float(np.sum(rq**2)), float(np.sum(np.abs(rq))), rq.size)
        self.n_rows += len(meta)

    def table(self) -> dict[str, Any]:
        def stats(acc):
            if acc is None or acc[2] == 0:
                return None
            return {"rmse": float(np.sqrt(acc[0] / acc[2])), "mae": float(acc[1] / acc[2]), "n": int(acc[2])}

        cts = sorted(self._structures)
        groups = {ct: {"n_structures": self._structures[ct],
                       **{q: stats(self._sums.get((ct, q))) for q in QUANTITIES}} for ct in cts}
        total: dict[str, Any] = {"n_structures": sum(self._structures.values())}
        for q in QUANTITIES:
            parts = [self._sums[(ct, q)] for ct in cts if (ct, q) in self._sums]
            total[q] = stats(np.sum(parts, axis=0) if parts else None)
        return {"units": dict(UNITS), "config_types": groups, "set": total}


def format_error_table(table: dict[str, Any], title: str = "") -> str:
    """Two text tables (RMSE, MAE): one line per config type and a ``set`` line."""
    rows = [(ct, g) for ct, g in table["config_types"].items()] + [("set", table["set"])]
    width = max(8, *(len(ct) for ct, _ in rows))
    lines = [title] if title else []
    for stat in ("rmse", "mae"):
        head = f"{stat.upper():<{width}} | {'#cfg':>5} | " + " | ".join(
            f"{q + ' [' + _PRINT_SCALE[q][1] + ']':>15}" for q in QUANTITIES)
        lines += [head, "-" * len(head)]
        for ct, g in rows:
            cells = []
            for q in QUANTITIES:
                v = g[q]
                cells.append(f"{'-':>15}" if v is None else f"{v[stat] * _PRINT_SCALE[q][0]:>15.4f}")
            lines.append(f"{ct:<{width}} | {g['n_structures']:>5} | " + " | ".join(cells))
        lines.append("")
    return "\n".join(lines)


def save_error_table(tables: dict[str, Any], path: str | Path) -> None:
    """Write one table, or a mapping ``{dataset: table}`` (e.g. train / test), as ``.json``
    (the dicts) or ``.csv`` (dataset, config_type, quantity, unit, n, rmse, mae)."""
    path = Path(path)
    named = {"all": tables} if "config_types" in tables else dict(tables)
    if path.suffix == ".json":
        path.write_text(json.dumps(tables, indent=1))
    elif path.suffix == ".csv":
        with path.open("w", newline="") as fh:
            wr = csv.writer(fh)
            wr.writerow(["dataset", "config_type", "quantity", "unit", "n", "rmse", "mae"])
            for name, table in named.items():
                for ct, g in list(table["config_types"].items()) + [("set", table["set"])]:
                    for q in QUANTITIES:
                        if g[q] is not None:
                            wr.writerow([name, ct, q, table["units"][q], g[q]["n"], repr(g[q]["rmse"]),
                                         repr(g[q]["mae"])])
    else:
        raise FitError(f"{path}: error tables are saved as .json or .csv")
