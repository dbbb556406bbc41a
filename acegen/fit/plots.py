"""Parity plots and dimer curves as PNG files (matplotlib, imported lazily).

matplotlib is optional: without it every function warns and returns None.  Figures are
drawn with the object-oriented API (``Figure`` + Agg canvas), so no global pyplot state or
backend is touched.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from itertools import combinations_with_replacement
from pathlib import Path

import numpy as np

from .data import RowMeta

__all__ = ["dimer_curves", "parity_plot"]


def _figure(ncols: int):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        warnings.warn("matplotlib is not installed: plots are skipped (pip install matplotlib)", stacklevel=3)
        return None
    fig = Figure(figsize=(4.5 * ncols, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def parity_plot(predicted: np.ndarray, reference: np.ndarray, meta: RowMeta, path: str | Path,
                title: str = "") -> Path | None:
    """Predicted vs reference energies per atom (E − ΣE0)/N and force components, coloured by
    config type, saved as PNG.  ``predicted`` / ``reference`` are per design-matrix row."""
    pred = np.asarray(predicted, dtype=float)
    ref = np.asarray(reference, dtype=float)
    panels = [(q, lab) for q, lab in (("E", "energy per atom (eV/atom)"), ("F", "force component (eV/Å)"))
              if (meta.kind == q).any()]
    if not panels:
        return None
    fig = _figure(len(panels))
    if fig is None:
        return None
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    cts = sorted({str(c) for c in meta.config_type})
    for ax, (q, label) in zip(axes, panels):
        m = meta.kind == q
        scale = 1.0 / meta.natoms[m] if q == "E" else 1.0
        p, r = pred[m] * scale, ref[m] * scale
        for ct in cts:
            sel = meta.config_type[m] == ct
            if sel.any():
                ax.scatter(r[sel], p[sel], s=6, alpha=0.7, label=ct)
        lo, hi = float(min(p.min(), r.min())), float(max(p.max(), r.max()))
        ax.plot([lo, hi], [lo, hi], color="k", lw=0.8)
        ax.set_xlabel(f"reference {label}")
        ax.set_ylabel(f"predicted {label}")
        ax.set_aspect("equal", adjustable="datalim")
    axes[0].legend(fontsize="small", markerscale=2)
    if title:
        fig.suptitle(title)
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def dimer_curves(energy: Callable[[object], float], elements: Sequence[str], path: str | Path, *,
                 rmin: float = 0.5, rmax: float = 6.0, n: int = 200, title: str = "") -> Path | None:
    """Binding curves E(r) − E(A) − E(B) of isolated dimers A–B (every unordered pair of
    ``elements``) for r in [rmin, rmax], with ``energy(atoms)`` the model's total energy."""
    from ase import Atoms

    fig = _figure(1)
    if fig is None:
        return None
    ax = fig.subplots()
    r = np.linspace(rmin, rmax, n)
    box = 4.0 * rmax + 10.0
    single = {el: float(energy(Atoms(el, positions=[[0, 0, 0]], cell=[box] * 3, pbc=False))) for el in elements}
    lowest = 0.0
    for a, b in combinations_with_replacement(elements, 2):
        e = np.array([float(energy(Atoms(a + b, positions=[[0, 0, 0], [x, 0, 0]], cell=[box] * 3, pbc=False)))
                      - single[a] - single[b] for x in r])
        lowest = min(lowest, float(e.min()))
        ax.plot(r, e, label=f"{a}-{b}")
    ax.axhline(0.0, color="k", lw=0.6)
    # the repulsive wall can reach huge values: show the well and a window above it
    ax.set_ylim(lowest - 0.1 * abs(lowest) - 0.1, max(abs(lowest), 1.0))
    ax.set_xlabel("r (Å)")
    ax.set_ylabel("E(r) − E(A) − E(B) (eV)")
    ax.legend()
    if title:
        ax.set_title(title)
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path
