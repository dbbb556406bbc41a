"""Provenance of a fit and the fit log.

:func:`build_provenance` records how a model was fitted, in plain JSON types (stored in the
model file under ``provenance`` and on ``model.provenance``): the data files and their
sha256, numbers of structures and atoms, the target keys, weights and reference energies, the
basis specification, solver, prior and committee settings, the solver state (BLR α, β, the
log evidence; ARD's α per parameter, ``null`` where pruned), the train (and test) error tables,
timings, the acegen version and the date (UTC, ISO 8601).  :func:`format_fit_log` renders it
as the text that a fit prints and writes to ``<model>.log``.
"""

from __future__ import annotations

import datetime
import hashlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors_table import format_error_table

__all__ = ["build_provenance", "data_sources", "format_fit_log", "jsonable", "sha256_file"]


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def data_sources(structures: Any) -> list[dict[str, Any]] | None:
    """``[{"path", "sha256"}, ...]`` for a path or a list of paths; ``[{"path": null,
    "n_frames": N}]`` for structures passed in memory; None for None."""
    if structures is None:
        return None
    if isinstance(structures, (str, Path)):
        structures = [structures]
    items = list(structures)
    if items and all(isinstance(p, (str, Path)) for p in items):
        return [{"path": str(p), "sha256": sha256_file(p)} for p in items]
    return [{"path": None, "n_frames": len(items)}]


def jsonable(x: Any) -> Any:
    """``x`` with NumPy scalars / arrays as Python numbers / lists and non-finite floats as None."""
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if x is None or isinstance(x, str):
        return x
    if isinstance(x, Path):
        return str(x)
    return repr(x)


def build_provenance(*, spec, train, test, training_set, test_set, keys: Mapping[str, Any], weights, solver: str,
                     solver_options, prior, committee, result, errors: Mapping[str, Any], timings,
                     n_rows: int) -> dict[str, Any]:
    """The provenance record of a fit (module docstring)."""
    from .._version import __version__
    from .data import resolve_weights

    def counts(ts):
        return None if ts is None else {"n_structures": len(ts), "n_atoms": ts.n_atoms_total,
                                        "n_isolated_atoms": len(ts.isolated)}

    info = {k: v for k, v in result.info.items() if k != "history"}
    return jsonable({
        "acegen_version": __version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "data": {
            "train": data_sources(train), "test": data_sources(test),
            "train_counts": counts(training_set), "test_counts": counts(test_set),
            **dict(keys), "weights": resolve_weights(weights), "eref": dict(training_set.eref),
        },
        "settings": {"spec": spec.to_dict(), "solver": solver, "solver_options": dict(solver_options or {}),
                     "prior": prior, "committee": None if committee is None else dict(committee),
                     "n_params": len(result.coefficients), "n_rows": int(n_rows)},
        "solver_state": {"hyperparameters": result.hyperparameters, "info": info},
        "errors": dict(errors),
        "timings": dict(timings),
    })


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list) and len(v) > 8:
        finite = [x for x in v if isinstance(x, (int, float))]
        rng = f", range {min(finite):.4g} .. {max(finite):.4g}" if finite else ""
        return f"{len(v)} values ({len(v) - len(finite)} null{rng})"
    return str(v)


def format_fit_log(prov: Mapping[str, Any], *, signature: str | None = None) -> str:
    """The fit log: the provenance as text, error tables included."""
    d, s, st = prov.get("data", {}), prov.get("settings", {}), prov.get("solver_state", {})
    lines = [f"acegen {prov.get('acegen_version')} fit, {prov.get('date')}"]
    if signature:
        lines.append(f"model signature: {signature}")
    for which in ("train", "test"):
        src, cnt = d.get(which), d.get(f"{which}_counts")
        if not src:
            continue
        for f in src:
            lines.append(f"{which} data: {f['path']} (sha256 {f['sha256']})" if f.get("path")
                         else f"{which} data: {f.get('n_frames')} structures passed in memory")
        if cnt:
            lines.append(f"  {cnt['n_structures']} structures, {cnt['n_atoms']} atoms, "
                         f"{cnt['n_isolated_atoms']} isolated atoms")
    keys = ", ".join(f"{k} {d.get(k)}" for k in ("energy_key", "force_key", "virial_key", "stress_key",
                                                  "config_type_key", "missing") if k in d)
    lines.append(f"keys: {keys}")
    lines.append(f"weights: {d.get('weights')}")
    lines.append(f"reference energies: {d.get('eref')}")
    spec = s.get("spec") or {}
    lines.append("basis: " + ", ".join(f"{k} {spec[k]}" for k in ("elements", "order", "totaldegree", "rcut",
                                                                  "purification") if k in spec)
                 + f"; {s.get('n_params')} parameters, {s.get('n_rows')} rows")
    opts = s.get("solver_options") or {}
    lines.append(f"solver: {s.get('solver')}" + (f" {opts}" if opts else "") + f"; prior: {_fmt(s.get('prior'))}"
                 + (f"; committee: {s['committee']}" if s.get("committee") else ""))
    if s.get("embedding"):
        lines.append(f"embedding: {s['embedding'].get('kind')} {s['embedding'].get('params')}")
    hyper = st.get("hyperparameters") or {}
    if hyper:
        lines.append("solver state: " + ", ".join(f"{k} {_fmt(v)}" for k, v in hyper.items()))
    info = st.get("info") or {}
    keep = [k for k in ("log_evidence", "iterations", "n_evaluations", "loss_initial", "loss", "converged",
                        "n_active", "rank") if k in info]
    if keep:
        lines.append("  " + ", ".join(f"{k} {_fmt(info[k])}" for k in keep))
    t = prov.get("timings") or {}
    if t:
        lines.append("timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in t.items() if isinstance(v, (int, float))))
    for which, table in (prov.get("errors") or {}).items():
        if table:
            lines.append(format_error_table(table, title=f"{which} errors"))
    return "\n".join(lines)
