"""Writer of pacemaker's B-basis ``.yaml`` potential files (the layout of pyace's
``BBasisConfiguration.save``), from a :class:`BBasisPotential`.  Floats are written with
``repr`` (round-trip exact), so :func:`acegen.io.pace.read_bbasis_yaml` gives back the same
potential."""

from __future__ import annotations

from pathlib import Path

import yaml

from ...errors import SpecError
from .model import RADIAL_BASES, BBasisPotential
from .writer import _flist, _fmt, _ilist

__all__ = ["write_bbasis_yaml"]


def _metadata(meta: dict) -> list[str]:
    if not meta:
        return []
    # every value as a string (pyace reads metadata as a string map)
    text = yaml.safe_dump({"metadata": {str(k): str(v) for k, v in meta.items()}}, default_flow_style=False,
                          sort_keys=False, allow_unicode=True)
    return text.rstrip("\n").split("\n")


def write_bbasis_yaml(potential: BBasisPotential, path) -> None:
    """Write ``potential`` as a pacemaker B-basis ``.yaml`` file (readable by pyace's
    ``ACEBBasisSet`` / ``PyACECalculator`` and by :func:`acegen.io.pace.read_bbasis_yaml`)."""
    out = _metadata(potential.metadata)
    out += ["global:", f"  DeltaSplineBins: {_fmt(potential.delta_spline_bins)}", "species:"]
    for b in potential.blocks:
        out.append(f"  - speciesblock: {b.name}")
        if b.ndensity is not None:
            out += [
                f"    ndensityi: {int(b.ndensity)}",
                f"    npoti: {b.npoti}",
                f"    parameters: {_flist(b.fs_parameters)}",
                f"    rho_core_cut: {_fmt(b.rho_core_cut)}",
                f"    drho_core_cut: {_fmt(b.drho_core_cut)}",
            ]
        r = b.radial
        if r is not None:
            if r.radbase not in RADIAL_BASES:
                raise SpecError(f"write_bbasis_yaml: block {b.name!r} has radial basis {r.radbase!r}, "
                                "which cannot be written")
            crad = "[" + ", ".join("[" + ", ".join(_flist(row) for row in nl) + "]" for nl in r.radcoefficients) + "]"
            out += [
                f"    nradmaxi: {int(r.nradmax)}",
                f"    lmaxi: {int(r.lmax)}",
                f"    rcutij: {_fmt(r.rcut)}",
                f"    dcutij: {_fmt(r.dcut)}",
                "    NameOfCutoffFunctionij: cos",
                f"    nradbaseij: {int(r.nradbase)}",
                f"    radbase: {r.radbase}",
                f"    radparameters: {_flist(r.radparameters)}",
                f"    radcoefficients: {crad}",
            ]
        if b.core_repulsion is not None:
            out.append(f"    core-repulsion: {_flist(b.core_repulsion)}")
        out += [
            f"    r_in: {_fmt(b.r_in)}",
            f"    delta_in: {_fmt(b.delta_in)}",
            f"    inner_cutoff_type: {b.inner_cutoff_type}",
        ]
        if b.functions:
            out.append("    nbody:")
        for f in b.functions:
            item = f"type: {' '.join(f.elements)}, nr: {_ilist(f.nr)}, nl: {_ilist(f.nl)}"
            if len(f.nr) > 2:
                item += f", lint: {_ilist(f.lint)}"
            item += f", c: {_flist(f.c)}"
            if f.skip:
                item += ", skip: true"
            out.append("      - {" + item + "}")
    Path(path).write_text("\n".join(out) + "\n", encoding="utf-8")
