"""The active-set inverse (``.asi``), the extrapolation grade γ, building active sets and the
D-optimal selection of candidate structures."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import AcegenError, ModelFileError
from .maxvol import MaxVolError, maxvol_batched
from .projections import atom_projections, projection_sizes


@dataclass(frozen=True, eq=False)
class ActiveSet:
    """Per element the inverse (pinv) of its active-set matrix, N_μ × N_μ ("linear") or
    N_μ·nd × N_μ·nd ("full"), as pyace's ``.asi`` / ``.asi.nonlinear`` files hold."""

    inverse: dict  # element symbol -> (width, width) float64
    full: bool = False

    @classmethod
    def load(cls, path, model) -> ActiveSet:
        """Read an ``.asi`` (NumPy ``.npz``, one array per element symbol) for ``model``;
        linear or full is detected from the shapes (mixed files are refused)."""
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(path, None, "no such active-set file")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: np.asarray(data[k]) for k in data.files}
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise ModelFileError(path, None, f"not a NumPy .npz active-set file ({e})") from None
        sizes = projection_sizes(model)
        kinds = set()
        inverse = {}
        for mu, el in enumerate(model.elements):
            if el not in arrays:
                raise ModelFileError(path, el, f"no active set for element {el} (file has {sorted(arrays)})")
            a = arrays[el]
            N, nd = sizes[mu]
            if a.ndim != 2 or a.shape[0] != a.shape[1] or a.dtype.kind != "f":
                raise ModelFileError(path, el, f"expected a square float array, got {a.dtype} {a.shape}")
            if a.shape[0] == N:
                kinds.add("linear")
            elif a.shape[0] == N * nd:
                kinds.add("full")
            else:
                raise ModelFileError(path, el, f"shape {a.shape} fits neither the linear ({N}×{N}) nor the "
                                     f"full ({N * nd}×{N * nd}) projections of {el}")
            if not np.all(np.isfinite(a)):
                raise ModelFileError(path, el, "non-finite entries")
            inverse[el] = np.ascontiguousarray(a, dtype=np.float64)
        extra = sorted(set(arrays) - set(model.elements))
        if extra:
            raise ModelFileError(path, extra[0], f"element {extra[0]} is not in the model {list(model.elements)}")
        if len(kinds) > 1:
            raise ModelFileError(path, None, "mixes linear and full (non-linear) active sets")
        return cls(inverse, full=kinds == {"full"})

    def save(self, path) -> None:
        """Write the ``.npz`` pyace and LAMMPS read (keys: element symbols)."""
        buf = io.BytesIO()
        np.savez(buf, **self.inverse)
        Path(path).write_bytes(buf.getvalue())

    def gamma_rows(self, element: str, rows: np.ndarray) -> np.ndarray:
        """γ of projection rows of one element: max_k |(b · ASI)_k|."""
        if len(rows) == 0:
            return np.zeros(0)
        return np.max(np.abs(rows @ self.inverse[element]), axis=1)

    def gamma(self, model, Z, rows) -> np.ndarray:
        """Per-atom γ from :func:`atom_projections`' output."""
        g = np.zeros(len(Z))
        for mu, el in enumerate(model.elements):
            g[np.flatnonzero(Z == mu)] = self.gamma_rows(el, rows[mu])
        return g


def build_active_set(model, structures, *, full: bool = False, tol: float = 1.01, max_iters: int = 300,
                     batch_size: int = 20000, target: str = "c", progress=None) -> ActiveSet:
    """Active set of ``model`` from the atomic environments of ``structures`` (MaxVol per
    element over the projection rows, streamed in batches of about ``batch_size`` rows so
    that the memory stays bounded), inverted with pinv."""
    kernel = model.projection_kernel(target)
    sizes = projection_sizes(model)
    inverse = {}
    for mu, el in enumerate(model.elements):
        width = sizes[mu][0] * (sizes[mu][1] if full else 1)

        def batches(mu=mu, width=width):
            buf, n = [], 0
            for atoms in structures:
                _, rows = atom_projections(model, atoms, full=full, kernel=kernel)
                if len(rows[mu]):
                    buf.append(rows[mu])
                    n += len(rows[mu])
                if n >= batch_size:
                    yield np.vstack(buf)
                    buf, n = [], 0
            if buf:
                yield np.vstack(buf)

        try:
            sel, _ = maxvol_batched(batches, width, tol=tol, max_iters=max_iters)
        except MaxVolError as e:
            raise AcegenError(f"active set of {el}: {e} (one per {'full ' if full else ''}projection function)") from None
        inverse[el] = np.linalg.pinv(sel)
    return ActiveSet(inverse, full=full)


def select_structures(model, active: ActiveSet, candidates, n: int, *, tol: float = 1.01, max_iters: int = 300,
                      target: str = "c") -> list[int]:
    """Indices of the ``n`` most informative ``candidates`` (D-optimality, as pacemaker's
    ``pace_select``): MaxVol over the active set ∪ all candidate environments, per element,
    starting from the active set; structures are ranked by the number of their environments
    that enter the new active set (ties and the remainder by their largest γ)."""
    kernel = model.projection_kernel(target)
    proj = [atom_projections(model, atoms, full=active.full, kernel=kernel) for atoms in candidates]
    count = np.zeros(len(candidates), dtype=np.int64)
    gmax = np.zeros(len(candidates))
    for s, (Z, rows) in enumerate(proj):
        gmax[s] = float(np.max(active.gamma(model, Z, rows))) if len(Z) else 0.0
    for mu, el in enumerate(model.elements):
        inv = active.inverse[el]
        r = inv.shape[0]
        owners = [s for s, (_, rows) in enumerate(proj) if len(rows[mu])]
        if not owners:
            continue
        # rows as coefficients through the current active set: B = b · ASI (the active rows
        # are the identity), so the existing active set never needs to be inverted back
        coeffs = [proj[s][1][mu] @ inv for s in owners]
        sel_org = _select_from_coefficients(coeffs, r, tol, max_iters)
        for b, _ in sel_org:
            if b >= 0:
                count[owners[b]] += 1
    order = sorted(range(len(candidates)), key=lambda s: (-count[s], -gmax[s], s))
    return order[: max(0, int(n))]


def _select_from_coefficients(coeffs, r, tol, max_iters):
    """MaxVol starting from the identity (the active set) over candidate coefficient rows."""
    from .maxvol import maxvol

    stack = np.vstack([np.eye(r)] + list(coeffs))
    org = [(-1, k) for k in range(r)] + [(b, k) for b, c in enumerate(coeffs) for k in range(len(c))]
    I = maxvol(stack, tol, max_iters, start=np.arange(r))
    return [org[i] for i in I]
