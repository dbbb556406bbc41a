"""Writer of PACE ``.yace`` files (readable by python-ace and LAMMPS ``pair_style pace``)."""

from __future__ import annotations

from pathlib import Path

from ...errors import SpecError
from .model import RADIAL_BASES, PacePotential


def _fmt(x: float) -> str:
    """Shortest round-tripping repr, always with a decimal point (YAML 1.1 float syntax)."""
    s = repr(float(x))
    if "e" in s and "." not in s.split("e")[0]:
        m, e = s.split("e")
        s = f"{m}.0e{e}"
    if "e" in s:
        m, e = s.split("e")
        if e[0] not in "+-":
            e = "+" + e
        s = f"{m}e{e}"
    return s


def _flist(xs) -> str:
    return "[" + ", ".join(_fmt(x) for x in xs) + "]"


def _ilist(xs) -> str:
    return "[" + ", ".join(str(int(x)) for x in xs) + "]"


def write_yace(potential: PacePotential, path) -> None:
    """Write ``potential`` as a ``.yace`` file in the layout of ``ACECTildeBasisSet::save_yaml``
    (readable by pyace and LAMMPS ``pair_style pace``); floats are written with ``repr``
    (round-trip exact)."""
    pot = potential
    for key, b in sorted(pot.bonds.items()):
        if b.radbasename not in RADIAL_BASES:
            raise SpecError(f"write_yace: bond {key} has radial basis {b.radbasename!r}, which cannot be written")
    out = [
        "elements: [" + ", ".join(pot.elements) + "]",
        "E0: " + _flist(pot.E0),
        "deltaSplineBins: " + _fmt(pot.delta_spline_bins),
        "embeddings:",
    ]
    for mu in range(len(pot.elements)):
        e = pot.embeddings[mu]
        out.append(
            f"  {mu}: {{ndensity: {e.ndensity}, FS_parameters: {_flist(e.fs_parameters)}, npoti: {e.npoti}, "
            f"rho_core_cutoff: {_fmt(e.rho_core_cut)}, drho_core_cutoff: {_fmt(e.drho_core_cut)}}}"
        )
    out.append("bonds:")
    for (mi, mj) in sorted(pot.bonds):
        b = pot.bonds[(mi, mj)]
        crad = "[" + ", ".join("[" + ", ".join(_flist(row) for row in nl) + "]" for nl in b.crad) + "]"
        out.append(
            f"  [{mi}, {mj}]: {{nradmax: {b.nradmax}, lmax: {b.lmax}, nradbasemax: {b.nradbase}, "
            f"radbasename: {b.radbasename}, radparameters: {_flist(b.radparameters)}, radcoefficients: {crad}, "
            f"prehc: {_fmt(b.prehc)}, lambdahc: {_fmt(b.lambdahc)}, rcut: {_fmt(b.rcut)}, dcut: {_fmt(b.dcut)}, "
            f"rcut_in: {_fmt(b.rcut_in)}, dcut_in: {_fmt(b.dcut_in)}, inner_cutoff_type: {b.inner_cutoff_type}}}"
        )
    out.append("functions:")
    for mu in range(len(pot.elements)):
        funcs = pot.functions.get(mu, [])
        out.append(f"  {mu}:" + ("" if funcs else " []"))
        for f in funcs:
            out.append(
                f"    - {{mu0: {f.mu0}, rank: {f.rank}, ndensity: {f.ndensity}, num_ms_combs: {f.num_ms_combs}, "
                f"mus: {_ilist(f.mus)}, ns: {_ilist(f.ns)}, ls: {_ilist(f.ls)}, "
                f"ms_combs: {_ilist(f.ms_combs.ravel())}, ctildes: {_flist(f.ctildes.ravel())}}}"
            )
    Path(path).write_text("\n".join(out) + "\n", encoding="utf-8")
