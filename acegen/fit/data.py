"""Training data: structures, targets, reference energies, weights and the design matrix.

Conventions
-----------
* Energies are total energies (eV), forces eV/Å, virials eV (the extxyz/ACE convention).
* **Virial** ``V = −Σ_pairs (∂E/∂r_ij) ⊗ r_ij = −σ·Ω`` with σ the ASE stress
  (``(1/Ω) ∂E/∂ε``, Voigt order xx yy zz yz xz xy) and Ω the cell volume; a compressed
  cell has a positive virial trace.  A ``stress_key`` is converted with ``V = −σ·Ω``.
  A virial may be stored as 3×3, as 9 numbers (row-major) or as 6 Voigt numbers
  (xx yy zz yz xz xy).  The fit uses the 6 Voigt components of the symmetrised virial
  (ACEpotentials does the same).
* **Lookup** of a key: per-structure values in ``atoms.info[key]``, per-atom values in
  ``atoms.arrays[key]``, then the attached calculator's ``atoms.calc.results[key]``
  (ase ≥ 3.23 moves an extxyz header ``energy=`` / ``stress=`` and a ``forces`` column there).
* **Reference energies** ``E0[element]`` (the one-body term V⁽⁰⁾, ``BasisSpec.Eref``) are
  subtracted from every energy target: ``y_E = E − Σ_i E0[Z_i]``.  Structures with one atom
  and an isolated-atom ``config_type`` (case, ``_`` and ``-`` ignored: ``isolated_atom``,
  ``IsolatedAtom``, ``isolated``, ``single_atom``) set E0 when none is given and are left out
  of the fit (their basis rows vanish).
* **Weights** (Witt et al. 2023, §II E): per config type ``w̃ = {"E", "F", "V"}`` (defaults 30, 1, 1;
  the entry ``"default"`` overrides the defaults, any other entry overrides single values for
  its config type), then ``w_E = w̃_E/√N``, ``w_F = w̃_F``, ``w_V = w̃_V/√N``.  The loss is
  ``Σ_rows w² (y − A c)²``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FitError, TargetError

__all__ = [
    "DEFAULT_WEIGHTS", "ISOLATED_ATOM_TYPES", "VOIGT", "LazyTrainingSet", "RowMeta", "StructureData", "TrainingSet",
    "assemble", "iter_structures", "load_training_set", "read_pacemaker", "read_structures", "resolve_weights",
    "to_virial",
]

DEFAULT_WEIGHTS: dict[str, float] = {"E": 30.0, "F": 1.0, "V": 1.0}
ISOLATED_ATOM_TYPES: tuple[str, ...] = ("isolatedatom", "isolated", "singleatom")
VOIGT: tuple[tuple[int, int], ...] = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
_VOIGT_ROWS = np.array([a for a, _ in VOIGT])
_VOIGT_COLS = np.array([b for _, b in VOIGT])

BasisEvaluator = Callable[[Any], Mapping[str, np.ndarray]]


# ---------------------------------------------------------------------------- reading
PACEMAKER_SUFFIXES: tuple[str, ...] = (".pckl.gzip", ".pkl.gzip", ".pckl.gz", ".pkl.gz")


def read_structures(paths: str | Path | Iterable[str | Path], index: str = ":") -> list:
    """All frames of one or several structure files, in order: extxyz (any ase-readable
    format, read frame by frame with ``ase.io.iread``) or pacemaker data frames
    (:func:`read_pacemaker`, by the suffixes ``.pckl.gzip`` / ``.pkl.gzip`` / ``.pckl.gz``)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out = []
    for p in paths:
        out.extend(iter_structures(p, index))
    return out


def iter_structures(path: str | Path, index: str = ":") -> Iterable:
    """The frames of one file, lazily (see :func:`read_structures`)."""
    import ase.io

    p = Path(path)
    if not p.is_file():
        raise FitError(f"{p}: no such structure file")
    if p.name.lower().endswith(PACEMAKER_SUFFIXES):
        yield from read_pacemaker(p)
        return
    k = -1
    try:
        for k, atoms in enumerate(ase.io.iread(p, index)):
            yield atoms
    except FitError:
        raise
    except Exception as e:  # ase raises many types for malformed files
        raise FitError(f"{p}: cannot read structures (after frame {k}): {e}") from e


def read_pacemaker(path: str | Path) -> list:
    """Structures from a pacemaker data frame (a gzip-compressed pandas pickle).

    Columns: ``ase_atoms`` (required); ``energy_corrected`` (preferred) or ``energy`` → the
    ``energy`` info key; ``forces`` (n, 3) → the ``forces`` array; ``w_energy`` → the
    ``w_energy`` info key and ``w_forces`` (per atom) → the ``w_forces`` array (use them with
    ``weight_keys={"E": "w_energy", "F": "w_forces"}``); ``name`` → ``atoms.info["name"]``.
    Needs pandas (an optional dependency)."""
    try:
        import pandas as pd
    except ImportError:
        raise FitError(f"{path}: reading pacemaker data frames needs pandas (pip install pandas)") from None
    try:
        df = pd.read_pickle(path, compression="gzip")
    except Exception as e:
        raise FitError(f"{path}: cannot read a pacemaker data frame: {e}") from e
    if not hasattr(df, "columns") or "ase_atoms" not in df.columns:
        raise FitError(f"{path}: not a pacemaker data frame (no 'ase_atoms' column)")
    ecol = "energy_corrected" if "energy_corrected" in df.columns else ("energy" if "energy" in df.columns else None)
    out = []
    for k, row in enumerate(df.itertuples(index=False)):
        r = row._asdict()
        atoms = r["ase_atoms"]
        if not hasattr(atoms, "get_chemical_symbols"):
            raise FitError(f"{path}: row {k}: ase_atoms is not an ase.Atoms ({type(atoms).__name__})")
        atoms = atoms.copy()
        atoms.calc = None
        n = len(atoms)
        if ecol is not None and r[ecol] is not None:
            atoms.info["energy"] = r[ecol]
        if "forces" in r and r["forces"] is not None:
            f = np.asarray(r["forces"], dtype=float)
            if f.shape != (n, 3):
                raise FitError(f"{path}: row {k}: forces have shape {f.shape}, expected ({n}, 3)")
            atoms.arrays["forces"] = f
        if "w_energy" in r and r["w_energy"] is not None:
            atoms.info["w_energy"] = float(r["w_energy"])
        if "w_forces" in r and r["w_forces"] is not None:
            wf = np.asarray(r["w_forces"], dtype=float).reshape(-1)
            if wf.shape != (n,):
                raise FitError(f"{path}: row {k}: w_forces has {wf.size} values for {n} atoms")
            atoms.arrays["w_forces"] = wf
        if "name" in r and r["name"] is not None:
            atoms.info["name"] = str(r["name"])
        out.append(atoms)
    return out


def _normalise_type(config_type: str) -> str:
    return config_type.lower().replace("_", "").replace("-", "")


# ---------------------------------------------------------------------------- lookup
_MISSING = object()


def _lookup(atoms, key: str, per_atom: bool) -> Any:
    """The value stored under ``key`` (see the module docstring), or ``_MISSING``."""
    store = atoms.arrays if per_atom else atoms.info
    if key in store:
        return store[key]
    calc = getattr(atoms, "calc", None)
    results = getattr(calc, "results", None) or {}
    if key in results:
        return results[key]
    return _MISSING


def _available_keys(atoms) -> str:
    calc = getattr(atoms, "calc", None)
    results = sorted(getattr(calc, "results", None) or {})
    info = sorted(k for k in atoms.info)
    arrays = sorted(k for k in atoms.arrays if k not in ("numbers", "positions"))
    return f"info keys {info}, array keys {arrays}, calculator results {results}"


def _as_float_array(value: Any, index: int, key: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise TargetError(index, key, f"not numeric: {value!r}") from None
    if not np.isfinite(arr).all():
        raise TargetError(index, key, "non-finite value")
    return arr


def to_virial(value: Any, index: int = -1, key: str = "virial") -> np.ndarray:
    """A 3×3 virial from 3×3, 9 (row-major) or 6 Voigt (xx yy zz yz xz xy) numbers."""
    arr = _as_float_array(value, index, key)
    if arr.shape == (3, 3):
        return arr.copy()
    flat = arr.ravel()
    if flat.size == 9:
        return flat.reshape(3, 3).copy()
    if flat.size == 6:
        v = np.empty((3, 3))
        v[_VOIGT_ROWS, _VOIGT_COLS] = flat
        v[_VOIGT_COLS, _VOIGT_ROWS] = flat
        return v
    raise TargetError(index, key, f"expected 3x3, 9 or 6 (Voigt) numbers, got shape {arr.shape}")


def voigt(virial: np.ndarray) -> np.ndarray:
    """The 6 Voigt components (xx yy zz yz xz xy) of the symmetrised 3×3 matrix(es) in the
    leading two axes (extra trailing axes, e.g. parameters, are kept)."""
    sym = 0.5 * (virial + np.swapaxes(virial, 0, 1))
    return sym[_VOIGT_ROWS, _VOIGT_COLS]


# ---------------------------------------------------------------------------- weights
def resolve_weights(weights: Mapping[str, Mapping[str, float]] | None) -> dict[str, dict[str, float]]:
    """Validated per-config-type weights ``{config_type: {"E", "F", "V"}}``, every entry
    complete: missing values come from the ``"default"`` entry, then from (30, 1, 1)."""
    if weights is None:
        weights = {}
    if not isinstance(weights, Mapping):
        raise FitError(f"weights: expected a mapping config_type -> {{'E','F','V'}}, got {type(weights).__name__}")
    for ct, w in weights.items():
        if not isinstance(ct, str):
            raise FitError(f"weights: config type keys must be strings, got {ct!r}")
        if not isinstance(w, Mapping):
            raise FitError(f"weights[{ct!r}]: expected a mapping with keys E, F, V, got {w!r}")
        for k, v in w.items():
            if k not in DEFAULT_WEIGHTS:
                raise FitError(f"weights[{ct!r}]: unknown observation {k!r} (expected E, F or V)")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise FitError(f"weights[{ct!r}][{k!r}]: must be a finite number >= 0, got {v!r}")
    default = {**DEFAULT_WEIGHTS, **{k: float(v) for k, v in weights.get("default", {}).items()}}
    out = {"default": default}
    for ct, w in weights.items():
        out[ct] = {**default, **{k: float(v) for k, v in w.items()}}
    return out


# ---------------------------------------------------------------------------- containers
@dataclass
class StructureData:
    """One training structure and its targets.

    ``energy`` is the total energy as read (None when not fitted); ``e0`` = Σ_i E0[Z_i];
    ``forces`` (n, 3), ``virial`` (3, 3) or None; ``weights`` the effective row weights
    (w_E, w_F, w_V) after the 1/√N scaling."""

    index: int
    atoms: Any
    config_type: str
    energy: float | None
    forces: np.ndarray | None
    virial: np.ndarray | None
    e0: float
    weights: dict[str, float]

    @property
    def n_atoms(self) -> int:
        return len(self.atoms)

    @property
    def energy_target(self) -> float | None:
        """The energy the basis must fit: E − Σ_i E0[Z_i]."""
        return None if self.energy is None else self.energy - self.e0


@dataclass
class TrainingSet:
    """Structures with targets and weights, ready for :func:`assemble`.

    ``eref`` maps element → E0 (what was subtracted); ``isolated`` lists the input indices
    of isolated-atom structures left out of the fit; ``keys`` records the keys used."""

    structures: list[StructureData]
    eref: dict[str, float]
    weights: dict[str, dict[str, float]]
    keys: dict[str, str | None]
    isolated: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.structures)

    @property
    def config_types(self) -> list[str]:
        return sorted({s.config_type for s in self.structures})

    @property
    def has_forces(self) -> bool:
        return any(s.forces is not None for s in self.structures)

    @property
    def has_virials(self) -> bool:
        return any(s.virial is not None for s in self.structures)

    @property
    def n_atoms_total(self) -> int:
        return int(sum(s.n_atoms for s in self.structures))

    def e0_of(self, atoms) -> float:
        """Σ_i E0[Z_i] of any structure (elements without E0 count 0)."""
        return float(sum(self.eref.get(s, 0.0) for s in atoms.get_chemical_symbols()))

    def data_hash(self) -> str:
        """SHA-256 over every structure (species, positions, cell, pbc), its config type,
        targets and row weights, in order, and the reference energies (the same value as
        :meth:`LazyTrainingSet.data_hash` for the same data)."""
        h = _new_data_hash()
        for s in self.structures:
            _hash_structure(h, s)
        return _finish_data_hash(h, self.eref, len(self.structures))

    def n_blocks(self, block_size: int) -> int:
        return -(-len(self.structures) // block_size)

    def iter_blocks(self, block_size: int, start: int = 0) -> Iterable[list[StructureData]]:
        """Blocks of ``block_size`` structures from block ``start`` on, in order."""
        s = self.structures
        for b in range(start, self.n_blocks(block_size)):
            yield s[b * block_size:(b + 1) * block_size]


# ---------------------------------------------------------------------------- extraction
def _extract(atoms, index: int, energy_key, force_key, virial_key, stress_key, missing: str):
    """(energy, forces, virial) of one structure, None where not requested / skipped."""

    def fail(key, msg):
        if missing == "error":
            raise TargetError(index, key, msg + f" ({_available_keys(atoms)})")

    energy = forces = virial = None
    if energy_key is not None:
        v = _lookup(atoms, energy_key, per_atom=False)
        if v is _MISSING:
            fail(energy_key, "no energy stored under this key")
        else:
            arr = _as_float_array(v, index, energy_key)
            if arr.size != 1:
                raise TargetError(index, energy_key, f"expected one number, got shape {arr.shape}")
            energy = float(arr.ravel()[0])
    if force_key is not None:
        v = _lookup(atoms, force_key, per_atom=True)
        if v is _MISSING:
            fail(force_key, "no forces stored under this key")
        else:
            arr = _as_float_array(v, index, force_key)
            if arr.shape != (len(atoms), 3):
                raise TargetError(index, force_key, f"expected shape ({len(atoms)}, 3), got {arr.shape}")
            forces = arr.copy()
    if virial_key is not None:
        v = _lookup(atoms, virial_key, per_atom=False)
        if v is _MISSING:
            fail(virial_key, "no virial stored under this key")
        else:
            virial = to_virial(v, index, virial_key)
    elif stress_key is not None:
        v = _lookup(atoms, stress_key, per_atom=False)
        if v is _MISSING:
            fail(stress_key, "no stress stored under this key")
        else:
            if atoms.cell.rank < 3:
                raise TargetError(index, stress_key, "a stress needs a 3D cell (volume) to become a virial")
            virial = -to_virial(v, index, stress_key) * atoms.get_volume()
    return energy, forces, virial


def _weight_keys(weight_keys) -> dict[str, str]:
    if weight_keys is None:
        return {}
    if isinstance(weight_keys, str):
        return {"E": weight_keys, "F": weight_keys, "V": weight_keys}
    if not isinstance(weight_keys, Mapping):
        raise FitError(f"weight_keys: expected a key or a mapping {{'E','F','V'}} -> key, got {weight_keys!r}")
    for q, key in weight_keys.items():
        if q not in DEFAULT_WEIGHTS:
            raise FitError(f"weight_keys: unknown observation {q!r} (expected E, F or V)")
        if not isinstance(key, str):
            raise FitError(f"weight_keys[{q!r}]: expected a key name, got {key!r}")
    return dict(weight_keys)


def _data_weight(atoms, index: int, key: str, per_atom: bool) -> np.ndarray | None:
    """√(stored weight) (a scalar, or per atom for forces), None when the key is absent."""
    v = atoms.arrays.get(key) if per_atom and key in atoms.arrays else atoms.info.get(key, _MISSING)
    if v is _MISSING:
        return None
    arr = _as_float_array(v, index, key)
    if (arr < 0).any():
        raise TargetError(index, key, "negative weight")
    if per_atom and arr.ndim and arr.size == len(atoms):
        return np.sqrt(arr.reshape(-1))
    if arr.size != 1:
        raise TargetError(index, key, f"expected one weight{' or one per atom' if per_atom else ''}, "
                                      f"got shape {arr.shape}")
    return np.sqrt(arr.reshape(()))


def _resolve_eref(eref, raw, isolated, elements) -> dict[str, float]:
    """E0 per element: explicit mapping, 'isolated', 'average' or 'zero' (see load_training_set)."""
    if isinstance(eref, Mapping):
        out = {}
        for k, v in eref.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise FitError(f"eref[{k!r}]: must be a finite number, got {v!r}")
            out[str(k)] = float(v)
        return out
    if eref is None:
        eref = "isolated" if isolated else "zero"
        if eref == "zero":
            warnings.warn("no Eref given and no isolated-atom structures found: reference energies are 0; "
                          "pass eref={element: E0} or eref='average'", stacklevel=3)
    if eref == "zero":
        return {}
    if eref == "isolated":
        out: dict[str, float] = {}
        for i in isolated:
            counts, energy = raw[i]
            if energy is None:
                raise FitError(f"structure {i}: isolated atom without an energy")
            el = next(iter(counts))
            if el in out and abs(out[el] - energy) > 1e-8 * max(1.0, abs(energy)):
                raise FitError(f"structure {i}: isolated {el} energy {energy} differs from an earlier one "
                               f"({out[el]}); give eref explicitly")
            out.setdefault(el, energy)
        if not out:
            raise FitError("eref='isolated' but there is no isolated-atom structure")
        return out
    if eref == "average":
        iso = set(isolated)
        rows = [(c, e) for k, (c, e) in enumerate(raw) if e is not None and k not in iso]
        if not rows:
            raise FitError("eref='average' needs structures with energies")
        X = np.array([[c.get(el, 0) for el in elements] for c, _ in rows], dtype=float)
        e = np.array([en for _, en in rows])
        sol, *_ = np.linalg.lstsq(X, e, rcond=None)
        return {el: float(v) for el, v in zip(elements, sol)}
    raise FitError(f"eref: expected a mapping element -> energy, 'isolated', 'average' or 'zero', got {eref!r}")


def _structure_targets(atoms, k: int, opts: dict):
    """Validate one input structure: (config type, isolated?, energy, forces, virial)."""
    if not hasattr(atoms, "get_chemical_symbols"):
        raise FitError(f"structure {k}: expected an ase.Atoms, got {type(atoms).__name__}")
    if len(atoms) == 0:
        raise FitError(f"structure {k}: no atoms")
    elements = opts["elements"]
    if elements is not None:
        bad = [s for s in atoms.get_chemical_symbols() if s not in elements]
        if bad:
            raise FitError(f"structure {k}: element {bad[0]} is not one of {list(elements)}")
    ct = str(atoms.info.get(opts["config_type_key"], "default"))
    is_iso = len(atoms) == 1 and _normalise_type(ct) in opts["iso_types"]
    targets = _extract(atoms, k, opts["energy_key"], None if is_iso else opts["force_key"],
                       None if is_iso else opts["virial_key"], None if is_iso else opts["stress_key"],
                       opts["missing"])
    return ct, is_iso, *targets


def _row_weights(atoms, k: int, ct: str, opts: dict) -> dict:
    """The effective row weights (w_E, w_F, w_V) of one fitted structure."""
    wt = opts["weights"]
    n = len(atoms)
    w = wt.get(ct, wt["default"])
    row_w = {"E": w["E"] / math.sqrt(n), "F": w["F"], "V": w["V"] / math.sqrt(n)}
    for q, key in opts["weight_keys"].items():
        f = _data_weight(atoms, k, key, per_atom=q == "F")
        if f is not None:
            row_w[q] = row_w[q] * (np.repeat(f, 3) if f.ndim else float(f))
    return row_w


def _hash_structure(h, s: StructureData) -> None:
    """Feed one fitted structure (species, positions, cell, pbc, config type, targets as
    read, row weights) into the data hash."""
    a = s.atoms
    for arr in (a.numbers, a.positions, np.asarray(a.cell), a.pbc):
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update(repr((s.config_type, s.energy, s.forces is None, s.virial is None)).encode())
    for arr in (s.forces, s.virial):
        if arr is not None:
            h.update(np.ascontiguousarray(arr, dtype=float).tobytes())
    for q in ("E", "F", "V"):
        h.update(np.ascontiguousarray(s.weights[q], dtype=float).tobytes())


DATA_HASH_FORMAT = "acegen-training-data-2"


def _new_data_hash():
    import hashlib

    return hashlib.sha256(DATA_HASH_FORMAT.encode())


def _finish_data_hash(h, eref: Mapping[str, float], n: int) -> str:
    h.update(repr((n, sorted((str(k), float(v)) for k, v in eref.items()))).encode())
    return h.hexdigest()


class LazyTrainingSet:
    """A training set read from structure files and never held in memory.

    :func:`load_training_set` scans the files once, keeping only small per-structure
    metadata (atom counts, config types, which targets exist, species counts for the
    reference energies) and the data hash; every pass over the data
    (:meth:`iter_blocks`) reads the files again, sequentially, and yields blocks of
    :class:`StructureData` in file order.  Memory: O(one block), whatever the file size.
    It answers the questions of :class:`TrainingSet` (``len``, ``config_types``,
    ``has_forces``, ``has_virials``, ``n_atoms_total``, ``e0_of``, ``data_hash``);
    ``structures`` reads everything into a list (only for in-memory assembly)."""

    def __init__(self, paths: list[Path], opts: dict, eref: dict[str, float], weights, keys, isolated: list[int],
                 n_atoms: np.ndarray, config_types: list[str], has_forces: bool, has_virials: bool, digest: str):
        self.paths = paths
        self._opts = opts
        self.eref = eref
        self.weights = weights
        self.keys = keys
        self.isolated = isolated
        self._n_atoms = n_atoms
        self._config_types = config_types
        self._has_forces = has_forces
        self._has_virials = has_virials
        self._digest = digest

    def __len__(self) -> int:
        return len(self._n_atoms)

    @property
    def config_types(self) -> list[str]:
        return list(self._config_types)

    @property
    def has_forces(self) -> bool:
        return self._has_forces

    @property
    def has_virials(self) -> bool:
        return self._has_virials

    @property
    def n_atoms_total(self) -> int:
        return int(self._n_atoms.sum())

    def data_hash(self) -> str:
        return self._digest

    def e0_of(self, atoms) -> float:
        """Σ_i E0[Z_i] of any structure (elements without E0 count 0)."""
        return float(sum(self.eref.get(s, 0.0) for s in atoms.get_chemical_symbols()))

    def iter_structures(self, start: int = 0) -> Iterable[StructureData]:
        """The fitted structures from position ``start`` on, read from the files (one
        sequential read; the skipped structures are parsed, not built)."""
        iso = set(self.isolated)
        p = 0
        k = -1
        for k, atoms in enumerate(_iter_paths(self.paths)):
            if k in iso:
                continue
            if p >= len(self._n_atoms) or len(atoms) != self._n_atoms[p]:
                raise FitError(f"{', '.join(map(str, self.paths))}: structure {k} differs from the first read "
                               f"(the file changed during the fit)")
            if p >= start:
                ct, _, energy, forces, virial = _structure_targets(atoms, k, self._opts)
                yield StructureData(
                    index=k, atoms=atoms, config_type=ct, energy=energy, forces=forces, virial=virial,
                    e0=self.e0_of(atoms), weights=_row_weights(atoms, k, ct, self._opts))
            p += 1
        if p != len(self._n_atoms):
            raise FitError(f"{', '.join(map(str, self.paths))}: {p} structures to fit where the first read found "
                           f"{len(self._n_atoms)} (the file changed during the fit)")

    def n_blocks(self, block_size: int) -> int:
        return -(-len(self) // block_size)

    def iter_blocks(self, block_size: int, start: int = 0) -> Iterable[list[StructureData]]:
        """Blocks of ``block_size`` structures from block ``start`` on, in order."""
        block: list[StructureData] = []
        for s in self.iter_structures(start * block_size):
            block.append(s)
            if len(block) == block_size:
                yield block
                block = []
        if block:
            yield block

    @property
    def structures(self) -> list[StructureData]:
        """Every structure, read into memory."""
        return list(self.iter_structures())

    def materialise(self) -> TrainingSet:
        """The same training set held in memory."""
        return TrainingSet(self.structures, self.eref, self.weights, self.keys, list(self.isolated))


def _iter_paths(paths: list[Path]) -> Iterable:
    for p in paths:
        yield from iter_structures(p)


def _as_paths(structures) -> list[Path] | None:
    """A path or a non-empty list of paths as a list of paths; None for anything else."""
    if isinstance(structures, (str, Path)):
        return [Path(structures)]
    if isinstance(structures, (list, tuple)) and structures and all(isinstance(p, (str, Path)) for p in structures):
        return [Path(p) for p in structures]
    return None


def load_training_set(
    structures: Sequence | str | Path,
    *,
    energy_key: str | None = "energy",
    force_key: str | None = "forces",
    virial_key: str | None = None,
    stress_key: str | None = None,
    config_type_key: str = "config_type",
    weights: Mapping[str, Mapping[str, float]] | None = None,
    eref: Mapping[str, float] | str | None = None,
    elements: Sequence[str] | None = None,
    isolated_atom_types: Sequence[str] = ISOLATED_ATOM_TYPES,
    missing: str = "error",
    weight_keys: Mapping[str, str] | str | None = None,
    lazy: bool | None = None,
) -> TrainingSet | LazyTrainingSet:
    """Extract targets and weights from ASE structures (or an extxyz path / list of paths).

    ``energy_key`` / ``force_key`` / ``virial_key`` (or ``stress_key``, converted with
    V = −σΩ) name the stored targets; ``None`` skips that observation.  A missing target is a
    :class:`TargetError` naming the structure and the key unless ``missing='skip'`` (then that
    observation of that structure is left out).  A stored but non-finite or misshaped target
    is always an error.  ``eref``: mapping element → E0; ``'isolated'`` (from isolated-atom
    structures); ``'average'`` (least-squares E0 per element from the energies, for data sets
    without isolated atoms); ``'zero'``; ``None`` = ``'isolated'`` if such structures exist,
    else ``'zero'`` with a warning.  ``elements`` restricts the allowed species.

    ``weight_keys``: per-structure weights stored with the data, ``{"E": key, "F": key,
    "V": key}`` (a string: the same key for all three).  The stored value multiplies that
    observation's terms in the loss Σ w²(y − Ac)², i.e. the row weight by its square root (the
    pacemaker convention for ``w_energy`` / ``w_forces``); E and V keys are per-structure
    ``atoms.info`` values, the F key a per-atom array (``atoms.arrays``) or one info value.
    Structures without the key keep their config-type weights.

    ``lazy``: for file inputs, a :class:`LazyTrainingSet` (the files are scanned once and
    read again block by block on every pass; memory independent of the data size).  None
    (default): lazy for extxyz (any ase-readable) files; pacemaker data frames are pickles,
    loaded whole, so they give an in-memory :class:`TrainingSet`.  False: always in memory.
    """
    if missing not in ("error", "skip"):
        raise FitError(f"missing: expected 'error' or 'skip', got {missing!r}")
    if virial_key is not None and stress_key is not None:
        raise FitError("give virial_key or stress_key, not both")
    if energy_key is None and force_key is None and virial_key is None and stress_key is None:
        raise FitError("no observation selected: energy_key, force_key and virial_key are all None")
    paths = _as_paths(structures)
    if lazy is None:
        lazy = paths is not None and not any(p.name.lower().endswith(PACEMAKER_SUFFIXES) for p in paths)
    if lazy and paths is None:
        raise FitError("lazy=True needs structure files (a path or a list of paths)")
    if not lazy and paths is not None:
        structures = read_structures(paths)
    wt = resolve_weights(weights)
    wkeys = _weight_keys(weight_keys)
    if elements is not None and isinstance(eref, Mapping):
        extra = sorted(str(k) for k in eref if k not in elements)
        if extra:
            raise FitError(f"eref: {extra[0]!r} is not one of the elements {list(elements)}")
    opts = {"energy_key": energy_key, "force_key": force_key, "virial_key": virial_key, "stress_key": stress_key,
            "config_type_key": config_type_key, "missing": missing, "elements": elements,
            "iso_types": {_normalise_type(t) for t in isolated_atom_types}, "weights": wt, "weight_keys": wkeys}
    keys = {"energy": energy_key, "forces": force_key, "virial": virial_key, "stress": stress_key,
            "config_type": config_type_key}

    # one pass: validate every structure; keep the structures (in memory) or only their
    # metadata and the data hash (lazy)
    found: set[str] = set()
    raw = []  # per structure: (species counts, energy) for the reference energies
    isolated = []
    kept: list[StructureData] = []
    n_atoms: list[int] = []
    cts: set[str] = set()
    has_f = has_v = False
    h = _new_data_hash()
    for k, atoms in enumerate(_iter_paths(paths) if lazy else structures):
        ct, is_iso, energy, forces, virial = _structure_targets(atoms, k, opts)
        syms = atoms.get_chemical_symbols()
        counts: dict[str, int] = {}
        for el in syms:
            counts[el] = counts.get(el, 0) + 1
        found.update(counts)
        raw.append((counts, energy))
        if is_iso:
            isolated.append(k)
            continue
        s = StructureData(index=k, atoms=atoms, config_type=ct, energy=energy, forces=forces, virial=virial,
                          e0=0.0, weights=_row_weights(atoms, k, ct, opts))
        if lazy:
            _hash_structure(h, s)
            n_atoms.append(len(atoms))
            cts.add(ct)
            has_f = has_f or forces is not None
            has_v = has_v or virial is not None
        else:
            kept.append(s)
    els = list(elements) if elements is not None else sorted(found)
    e0 = _resolve_eref(eref, raw, isolated, els)
    if (len(n_atoms) if lazy else len(kept)) == 0:
        raise FitError("no structures left to fit (all were isolated atoms or empty input)")
    if lazy:
        digest = _finish_data_hash(h, e0, len(n_atoms))
        return LazyTrainingSet(paths, opts, e0, wt, keys, isolated, np.asarray(n_atoms, dtype=np.int64),
                               sorted(cts), has_f, has_v, digest)
    for s in kept:
        s.e0 = float(sum(e0.get(el, 0.0) for el in s.atoms.get_chemical_symbols()))
    return TrainingSet(kept, e0, wt, keys, isolated)


# ---------------------------------------------------------------------------- assembly
@dataclass(frozen=True)
class RowMeta:
    """What each row of the design matrix is.

    ``structure``: position in ``TrainingSet.structures``; ``kind``: 'E', 'F' or 'V';
    ``component``: 0 for E, 3·atom + xyz for F, the Voigt index (xx yy zz yz xz xy) for V;
    ``natoms`` and ``config_type`` of the structure."""

    structure: np.ndarray
    kind: np.ndarray
    component: np.ndarray
    natoms: np.ndarray
    config_type: np.ndarray

    def __len__(self) -> int:
        return len(self.kind)


def _n_rows(s: StructureData) -> int:
    return (s.energy is not None) + (3 * s.n_atoms if s.forces is not None else 0) + (6 if s.virial is not None else 0)


def _check_block(ev: Mapping, key: str, shape: tuple, s: StructureData) -> np.ndarray:
    if key not in ev:
        raise FitError(f"structure {s.index}: the basis evaluator returned no {key!r} "
                       f"(the training set has {key} targets)")
    a = np.asarray(ev[key], dtype=float)
    if a.shape != shape:
        raise FitError(f"structure {s.index}: basis evaluator {key!r} has shape {a.shape}, expected {shape}")
    if not np.isfinite(a).all():
        raise FitError(f"structure {s.index}: basis evaluator {key!r} has non-finite values")
    return a


def assemble(
    basis_evaluator: BasisEvaluator,
    training_set: TrainingSet,
    *,
    progress: bool | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, RowMeta]:
    """Design matrix ``A`` (rows × n_params), targets ``y``, row weights ``w`` and row meta.

    ``basis_evaluator(atoms)`` returns, for one structure, the derivatives with respect to
    each linear parameter θ_k of the model's total energy, forces and virial::

        {"energy": (n_params,), "forces": (n_atoms, 3, n_params), "virial": (3, 3, n_params)}

    i.e. E(θ) = energy·θ, F(θ) = forces·θ (F = −∂E/∂r), V(θ) = virial·θ (V = −σΩ, see the
    module docstring); ``forces`` / ``virial`` may be left out when no structure has such
    targets.  Rows per structure: E (target E − Σ E0), then forces atom by atom (x, y, z),
    then the 6 Voigt virial components.  ``progress``: tqdm bar (None: only on a terminal).
    """
    from tqdm.auto import tqdm

    structs = training_set.structures
    n_rows = sum(_n_rows(s) for s in structs)
    A: np.ndarray | None = None
    y = np.empty(n_rows)
    w = np.empty(n_rows)
    st = np.empty(n_rows, dtype=np.int64)
    kind = np.empty(n_rows, dtype="<U1")
    comp = np.empty(n_rows, dtype=np.int64)
    nat = np.empty(n_rows, dtype=np.int64)
    ctype = np.empty(n_rows, dtype=object)
    row = 0
    if progress is None:
        from ..progress import bar as _bar

        bar = _bar(structs, desc="assembling", unit="structure", leave=True)
    else:
        bar = tqdm(structs, desc="assembling", unit="structure", disable=not progress)
    for p, s in enumerate(bar):
        if _n_rows(s) == 0:
            continue
        ev = basis_evaluator(s.atoms)
        if not isinstance(ev, Mapping):
            raise FitError(f"structure {s.index}: the basis evaluator must return a mapping, got {type(ev).__name__}")
        if A is None:
            if "energy" not in ev:
                raise FitError(f"structure {s.index}: the basis evaluator returned no 'energy'")
            n_params = int(np.asarray(ev["energy"]).size)
            A = np.empty((n_rows, n_params))
        n_params = A.shape[1]
        r0 = row
        if s.energy is not None:
            A[row] = _check_block(ev, "energy", (n_params,), s)
            y[row], w[row], kind[row], comp[row] = s.energy_target, s.weights["E"], "E", 0
            row += 1
        if s.forces is not None:
            nf = 3 * s.n_atoms
            A[row:row + nf] = _check_block(ev, "forces", (s.n_atoms, 3, n_params), s).reshape(nf, n_params)
            y[row:row + nf] = s.forces.ravel()
            w[row:row + nf] = s.weights["F"]
            kind[row:row + nf] = "F"
            comp[row:row + nf] = np.arange(nf)
            row += nf
        if s.virial is not None:
            A[row:row + 6] = voigt(_check_block(ev, "virial", (3, 3, n_params), s))
            y[row:row + 6] = voigt(s.virial)
            w[row:row + 6] = s.weights["V"]
            kind[row:row + 6] = "V"
            comp[row:row + 6] = np.arange(6)
            row += 6
        st[r0:row], nat[r0:row], ctype[r0:row] = p, s.n_atoms, s.config_type
    if A is None:
        raise FitError("the training set has no observations (every target was skipped)")
    return A, y, w, RowMeta(st, kind, comp, nat, ctype)
