"""Models: a basis with coefficients, or an imported PACE potential; save / load.

:class:`Model` is the public type; each kind of model is a subclass (:class:`LinearModel`,
:class:`PaceModel`).

* ``Model(spec, coefficients)`` — a linear ACE model on ``acegen.lower(spec)``; coefficients
  are a flat vector (many-body functions, then the pair basis) or a dict
  ``{"manybody": ..., "pair": ...}``.
* ``Model.random(spec, seed=0)`` — random coefficients damped by the smoothness prior.
* ``acegen.load(path)`` — acegen JSON (``.json``) or PACE ``.yace`` / ``.ace`` / ``.yaml``.
* ``model.save(path)`` — ``.json`` (acegen's versioned format) or ``.yace``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ._fs import write_atomic
from .errors import AcegenError, ModelFileError, SpecError

FORMAT_NAME = "acegen-model"
FORMAT_VERSION = 1


NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,47}$")


def _check_name(name) -> str:
    """A model name becomes part of C identifiers: letters, digits and underscores only."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise SpecError(
            f"model name {name!r} is not allowed: use 1-48 letters, digits or underscores, "
            "not starting with a digit"
        )
    return name


def _safe_name(stem: str) -> str:
    """A valid model name derived from a file name (anything else replaced by '_')."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", stem)[:48] or "model"
    if not re.match(r"[A-Za-z_]", name[0]):
        name = "m_" + name
    return name


class Model:
    """An ACE model, compiled on demand: the public type of every kind of model.

    ``Model(spec, coefficients)`` builds a :class:`LinearModel`; :meth:`random`,
    :meth:`from_pace` and :func:`load` build the kind they describe.  A subclass provides
    :attr:`elements`, :meth:`_lower` (its ModelIR) and :meth:`to_dict` / :meth:`_save_yace`;
    the IR and the compiled kernels are cached here.
    """

    kind: str = ""
    # True when no name was given to the constructor: ``save`` then names the model after
    # the file it is saved to
    _default_name = False
    spec = None
    coefficients = None
    pace = None
    pace_radial = "spline"

    def __new__(cls, *args, **kwargs):
        return object.__new__(LinearModel if cls is Model else cls)

    def _init_common(self, name: str) -> None:
        self.name = name
        self._ir = None
        self._kernels = {}

    # ---------------------------------------------------------------- constructors
    @classmethod
    def random(cls, spec, seed: int = 0, *, scale: float = 1.0, name: str | None = None) -> LinearModel:
        """Random coefficients, damped by the smoothness prior (see :meth:`LinearModel.random`)."""
        return LinearModel.random(spec, seed, scale=scale, name=name)

    @classmethod
    def from_pace(cls, potential, *, name: str | None = None, radial: str = "spline") -> PaceModel:
        """Wrap a PACE potential (``acegen.io.pace.PacePotential``)."""
        return PaceModel(potential, name=name, radial=radial)

    # ---------------------------------------------------------------- properties
    @property
    def basis(self):
        raise AcegenError(f"a {self.kind} model has no acegen basis specification")

    @property
    def elements(self) -> tuple[str, ...]:
        raise NotImplementedError

    def _lower(self):
        raise NotImplementedError

    def ir(self):
        """The lowered ModelIR (cached)."""
        if self._ir is None:
            self._ir = self._lower()
        return self._ir

    def compile(self, target: str = "c", **options):
        """The kernel (:class:`acegen.jit.kernel.Kernel`) for ``target``, cached per model
        object and in the kernel cache."""
        key = (target, tuple(sorted(options.items())))
        if key not in self._kernels:
            kernel = self._indexed_kernel(target, options)
            if kernel is None:
                from .runtime.kernels import compile_ir

                kernel = compile_ir(self.ir(), target, **options)
                self._record_kernel(target, options, kernel)
            self._kernels[key] = kernel
        return self._kernels[key]

    def _indexed_kernel(self, target: str, options: dict):
        """A kernel found without lowering the model, or None (see :class:`PaceModel`)."""
        return None

    def _record_kernel(self, target: str, options: dict, kernel) -> None:
        """Remember a freshly compiled kernel (see :class:`PaceModel`)."""

    # ---------------------------------------------------------------- save
    def to_dict(self) -> dict:
        raise AcegenError(f"{self.kind} models are saved as .yace (model.save('x.yace'))")

    def _save_yace(self, path: Path) -> None:
        raise NotImplementedError

    def save(self, path, *, name: str | None = None) -> None:
        """Write the model to ``path``: ``.json`` (acegen's format, linear models) or ``.yace`` (PACE).

        The name stored in a ``.json`` file is ``name`` if given, else the model's own name
        if it was given explicitly, else the file's stem (``fit_cu/Cu.json`` -> ``Cu``), so
        models saved to different files have different names (plugin and symbol names).  A
        ``.yace`` file stores no name: loaded, the model is named after the file."""
        path = Path(path)
        if name is not None:
            _check_name(name)
            if path.suffix == ".yace":
                raise AcegenError(f"{path}: a .yace file stores no model name (it is named after its file)")
        if path.suffix == ".yace":
            self._save_yace(path)
            return
        if path.suffix != ".json":
            raise AcegenError(f"{path}: save as .json (acegen) or .yace (PACE)")
        data = self.to_dict()
        if name is not None:
            data["name"] = name
        elif self._default_name:
            data["name"] = _safe_name(path.stem)
        text = json.dumps(data, indent=1)
        if not write_atomic(path, lambda fh: fh.write(text), suffix=".json"):
            raise AcegenError(f"{path}: cannot write the model file")


class LinearModel(Model):
    """A linear ACE model: coefficients θ on the basis ``acegen.lower(spec)``."""

    kind = "linear"

    def __init__(self, spec, coefficients, *, name: str | None = None):
        from .spec import BasisSpec

        if not isinstance(spec, BasisSpec):
            raise SpecError("Model(spec, coefficients): spec must be an acegen.BasisSpec")
        self._init_common(_check_name("model" if name is None else name))
        self._default_name = name is None
        self.spec = spec
        self._basis = None
        # validate the coefficient shape now (lowers the basis)
        mb, pr = self.basis.split_params(coefficients)
        self.coefficients = np.concatenate([mb, pr])

    @classmethod
    def random(cls, spec, seed: int = 0, *, scale: float = 1.0, name: str | None = None) -> LinearModel:
        """Random coefficients, damped by the smoothness prior so energies are O(eV).

        θ_k = scale · ξ_k / (γ_k · b_k) with ξ_k ~ N(0, 1), γ_k the algebraic smoothness prior
        (p = 4, ``constant=1``; Witt et al. 2023) and b_k the root-mean-square value of basis
        function k over the atoms of a reference crystal (rattled fcc with nearest-neighbour
        distance r0, species assigned at random), so every function contributes O(scale) eV.
        """
        from ase.build import bulk

        from .basis import lower
        from .basis_eval import BasisEvaluator
        from .symbolic.selection import smoothness_prior

        basis = lower(spec)
        rng = np.random.default_rng(seed)
        gam = np.asarray(smoothness_prior(spec, [f.factors for f in basis.functions], kind="algebraic", p=4,
                                          constant=1.0))
        gp = np.asarray(smoothness_prior(spec, [((p.zj, p.n, 0),) for p in basis.pair], kind="algebraic", p=4,
                                         constant=1.0))
        r0 = float(np.mean([spec.r0_pair(a, b) for a in range(len(spec.elements)) for b in range(len(spec.elements))]))
        atoms = bulk("X", "fcc", a=r0 * np.sqrt(2.0), cubic=True).repeat(2)
        atoms.rattle(0.05 * r0, seed=seed)
        atoms.set_chemical_symbols(list(rng.choice(list(spec.elements), size=len(atoms))))
        B, P = BasisEvaluator(basis).basis_values(atoms)
        Z = np.array([spec.elements.index(s) for s in atoms.get_chemical_symbols()])
        bk = np.ones(len(basis))
        for k, f in enumerate(basis.functions):
            v = B[Z == f.z0, k]
            bk[k] = np.sqrt(np.mean(v**2)) if len(v) else 1.0
        pk = np.sqrt(np.mean(P**2, axis=0)) if len(P) else np.ones(len(basis.pair))
        bk = np.where(bk > 1e-12, bk, 1.0)
        pk = np.where(pk > 1e-12, pk, 1.0)
        theta = rng.standard_normal(len(basis)) * scale / (gam * bk)
        theta_p = rng.standard_normal(len(basis.pair)) * scale / (gp * pk)
        m = object.__new__(cls)
        m._init_common(_check_name("random" if name is None else name))
        m._default_name = name is None
        m.spec, m._basis, m.coefficients = spec, basis, np.concatenate([theta, theta_p])
        return m

    @property
    def basis(self):
        if self._basis is None:
            from .basis import lower

            self._basis = lower(self.spec)
        return self._basis

    @property
    def elements(self) -> tuple[str, ...]:
        return tuple(self.spec.elements)

    def _lower(self):
        return self.basis.fold(self.coefficients, name=self.name)

    def __repr__(self) -> str:
        return f"Model({self.name!r}, {self.basis!r})"

    def to_dict(self) -> dict:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "kind": "linear-ace",
            "name": self.name,
            "spec": self.spec.to_dict(),
            "coefficients": {
                "manybody": [float(x) for x in self.coefficients[: len(self.basis)]],
                "pair": [float(x) for x in self.coefficients[len(self.basis) :]],
            },
        }

    def _save_yace(self, path: Path) -> None:
        from .io.pace import write_yace
        from .io.pace_export import model_to_pace

        write_yace(model_to_pace(self), path)


class PaceModel(Model):
    """An imported PACE potential (Lysogorskiy et al. 2021), lowered to the IR on demand.

    Read from a file, it keeps the file, its sha256 and, when a kernel of exactly this file
    was compiled before (the kernel cache's source index), that entry; then the file is parsed
    only when something needs the potential itself (``pace``, ``ir()``).
    """

    kind = "pace"

    def __init__(self, potential, *, name: str | None = None, radial: str = "spline"):
        src = getattr(potential, "source", None) or "pace"
        self._init_common(_safe_name(name or Path(str(src)).stem))
        self._pace = potential
        self.pace_radial = radial
        self._pace_path: Path | None = None
        self._source_sha256: str | None = None
        self._index_entry: dict | None = None

    @classmethod
    def from_file(cls, path: Path, *, name: str, radial: str = "spline") -> PaceModel:
        """A PACE model for ``path``: parsed now, unless a kernel of this exact file for the
        default target is in the kernel cache's source index (then parsed on first need)."""
        import hashlib

        from .jit.cache import lookup_source, source_key

        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        entry = lookup_source(source_key(digest, "c", {}, _safe_name(name), radial))
        if entry is None:
            from .io.pace import read_pace

            m = cls(read_pace(path), name=name, radial=radial)
        else:
            m = cls(None, name=name, radial=radial)
            m._pace_path = path
            m._index_entry = entry
        m._source_sha256 = digest
        return m

    @property
    def pace(self):
        """The PACE potential (``acegen.io.pace.PacePotential``)."""
        if self._pace is None and self._pace_path is not None:
            import hashlib

            from .io.pace import read_pace

            pot = read_pace(self._pace_path)
            if hashlib.sha256(self._pace_path.read_bytes()).hexdigest() != self._source_sha256:
                raise ModelFileError(self._pace_path, None, "the file changed after it was loaded; load it again")
            self._pace = pot
        return self._pace

    @property
    def elements(self) -> tuple[str, ...]:
        if self._pace is None and self._index_entry is not None:
            return tuple(self._index_entry["elements"])
        return tuple(self.pace.elements)

    def _lower(self):
        from .io.pace_lower import pace_to_ir

        return pace_to_ir(self.pace, name=self.name, radial=self.pace_radial)

    def __repr__(self) -> str:
        return f"Model({self.name!r}, PACE potential, elements={list(self.elements)})"

    def _save_yace(self, path: Path) -> None:
        from .io.pace import write_yace

        write_yace(self.pace, path)

    # ------------------------------------------------------- the kernel cache's source index
    def _source_index_key(self, target: str, options: dict) -> str | None:
        if self._source_sha256 is None or target != "c":
            return None
        from .jit.cache import source_key

        return source_key(self._source_sha256, target, options, self.name, self.pace_radial)

    def _indexed_kernel(self, target: str, options: dict):
        key = self._source_index_key(target, options)
        if key is None:
            return None
        from .errors import CompileError
        from .jit.cache import lookup_source
        from .jit.load import CompiledKernel

        entry = lookup_source(key)
        if entry is None:
            return None
        try:
            return CompiledKernel(
                Path(entry["library"]), entry["name"], entry["cdef"], n_species=int(entry["n_species"]),
                rcut=np.asarray(entry["rcut"], dtype=float), signature=entry["signature"],
                elements=tuple(entry["elements"]),
            )
        except (CompileError, KeyError, TypeError, ValueError):
            return None

    def _record_kernel(self, target: str, options: dict, kernel) -> None:
        key = self._source_index_key(target, options)
        if key is None or kernel.library_path is None:
            return
        from .jit.cache import record_source

        record_source(
            key, Path(kernel.library_path), name=kernel.name, cdef=kernel.cdef, n_species=int(kernel.n_species),
            rcut=np.asarray(kernel.rcut, dtype=float).tolist(), signature=kernel.signature,
            elements=list(self.elements),
        )


def load(path) -> Model:
    """Load a model: acegen ``.json`` or PACE ``.yace`` / ``.ace`` / ``.yaml``."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(path, None, "no such file")
    suffix = path.suffix.lower()
    if suffix in (".yace", ".ace", ".yaml", ".yml"):
        return PaceModel.from_file(path, name=path.stem)
    if suffix != ".json":
        raise ModelFileError(path, None, "unknown model format (expected .json, .yace, .ace or .yaml)")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # ValueError: also integers of > 4300 digits
        raise ModelFileError(path, None, f"not valid JSON: {str(e)[:200]}") from None
    return model_from_dict(data, path)


def model_from_dict(data, path=None) -> Model:
    from .spec import BasisSpec

    if not isinstance(data, dict):
        raise ModelFileError(path, None, "top level must be a JSON object")
    if data.get("format") != FORMAT_NAME:
        raise ModelFileError(path, "format", f"expected {FORMAT_NAME!r}")
    ver = data.get("version")
    if not isinstance(ver, int) or isinstance(ver, bool) or ver > FORMAT_VERSION or ver < 1:
        raise ModelFileError(path, "version", f"unsupported version {ver!r} (this acegen reads 1..{FORMAT_VERSION})")
    if data.get("kind") != "linear-ace":
        raise ModelFileError(path, "kind", f"unknown model kind {data.get('kind')!r}")
    try:
        spec = BasisSpec.from_dict(data.get("spec"))
    except SpecError as e:
        raise ModelFileError(path, "spec", str(e)) from None
    except (TypeError, KeyError, ValueError, AttributeError, OverflowError) as e:
        raise ModelFileError(path, "spec", f"invalid specification: {str(e)[:200]}") from None
    coef = data.get("coefficients")
    if not isinstance(coef, dict):
        raise ModelFileError(path, "coefficients", "expected an object with 'manybody' and 'pair' lists")
    vals = {}
    for key in ("manybody", "pair"):
        v = coef.get(key)
        if not isinstance(v, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            raise ModelFileError(path, f"coefficients.{key}", "expected a list of numbers")
        try:
            vals[key] = np.asarray(v, dtype=float)
        except OverflowError:
            raise ModelFileError(path, f"coefficients.{key}", "number out of the range of a double") from None
        if not np.isfinite(vals[key]).all():
            raise ModelFileError(path, f"coefficients.{key}", "non-finite number")
    name = data.get("name", "model")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ModelFileError(path, "name", f"expected letters, digits or underscores, got {str(name)[:40]!r}")
    try:
        return Model(spec, vals, name=name)
    except SpecError as e:
        raise ModelFileError(path, "coefficients", str(e)) from None
