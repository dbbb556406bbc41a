"""Models: a basis with coefficients, or an imported PACE potential; save / load.

:class:`Model` is the public type; each kind of model is a subclass (:class:`LinearModel`,
:class:`PaceModel`, :class:`MultilayerModel`).

* ``Model(spec, coefficients)`` — a linear ACE model on ``acegen.lower(spec)``; coefficients
  are a flat vector (many-body functions, then the pair basis) or a dict
  ``{"manybody": ..., "pair": ...}``.
* ``Model.random(spec, seed=0)`` — random coefficients damped by the smoothness prior.
* ``acegen.load(path)`` — acegen JSON (``.json``), PACE ``.yace`` / ``.ace`` / ``.yaml``, or a
  GRACE-FS ``.yaml`` (:class:`GraceFSModel`, recognised by its content).
* ``model.save(path)`` — ``.json`` (acegen's versioned format), ``.yace`` or B-basis ``.yaml``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ._fs import write_atomic
from .errors import AcegenError, ModelFileError, SpecError

FORMAT_NAME = "acegen-model"
#: Major version: a reader refuses files of a larger major version.
FORMAT_VERSION = 1
#: Minor version: keys added within a major version (a reader ignores keys it does not know,
#: so an older acegen still loads the file).  1: optional ``committee`` and ``provenance``.
FORMAT_MINOR_VERSION = 1


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


def _is_multilayer_spec(spec) -> bool:
    """Whether ``spec`` is an ``acegen.MultilayerSpec``, without importing the multilayer
    package (and SymPy with it) when it is not loaded: then no MultilayerSpec exists."""
    import sys

    module = sys.modules.get("acegen.multilayer.spec")
    return module is not None and isinstance(spec, module.MultilayerSpec)


class Model:
    """An ACE model, compiled on demand: the public type of every kind of model.

    ``Model(spec, coefficients)`` builds a :class:`LinearModel` (a :class:`MultilayerModel`
    for a MultilayerSpec); :meth:`random`,
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
    #: committee parameter vectors (K, n_params) of a fitted linear model, or None
    committee = None
    #: how the model was made (``acegen.fit``: data, settings, solver state, errors), or None
    provenance = None

    def __new__(cls, *args, **kwargs):
        if cls is Model:
            spec = args[0] if args else kwargs.get("spec")
            cls = MultilayerModel if _is_multilayer_spec(spec) else LinearModel
        return object.__new__(cls)

    def _init_common(self, name: str) -> None:
        self.name = name
        self._ir = None
        self._kernels = {}

    # ---------------------------------------------------------------- constructors
    @classmethod
    def random(cls, spec, seed: int = 0, *, scale: float = 1.0, name: str | None = None) -> Model:
        """Random coefficients, damped by the smoothness prior (see :meth:`LinearModel.random`;
        a MultilayerSpec gives a :class:`MultilayerModel`, see :meth:`MultilayerModel.random`)."""
        if _is_multilayer_spec(spec):
            return MultilayerModel.random(spec, seed, scale=scale, name=name)
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
            from .jit.cache import events

            events["lower"] += 1
            self._ir = self._lower()
        return self._ir

    def compile(self, target: str = "c", **options):
        """The kernel (:class:`acegen.jit.kernel.Kernel`) for ``target``, cached per model
        object and in the kernel cache.  A kernel compiled before from the same content (see
        :meth:`_content_digest`), target and options is loaded through the kernel cache's
        source index without lowering the model or generating code."""
        key = (target, tuple(sorted(options.items())))
        if key not in self._kernels:
            # the index key is taken before lowering (which may draw random coefficients)
            index_key = self._source_index_key(target, options)
            kernel = self._indexed_kernel(index_key)
            if kernel is None:
                from .runtime.kernels import compile_ir

                kernel = compile_ir(self.ir(), target, **options)
                self._record_kernel(index_key, kernel)
            self._kernels[key] = kernel
        return self._kernels[key]

    def projection_ir(self):
        """The projection variant of the IR (``ModelIR.projection_ir``): per atom the densities
        and the basis-function values b (PACE: the B-basis of a ``.yaml``; linear acegen
        models: their basis functions), for the extrapolation grade γ.  Cached."""
        cached = self.__dict__.get("_projection_ir")
        if cached is None:
            cached = self._projection_ir()
            self.__dict__["_projection_ir"] = cached
        return cached

    def _projection_ir(self):
        return self.ir().projection_ir()

    def projection_kernel(self, target: str = "c", **options):
        """The kernel of :meth:`projection_ir`, compiled separately from the energy kernel
        (which it leaves unchanged) and cached like it (source index included)."""
        key = ("projections", target, tuple(sorted(options.items())))
        if key not in self._kernels:
            index_key = self._source_index_key(target, options, "projections")
            kernel = self._indexed_kernel(index_key)
            if kernel is None:
                from .runtime.kernels import compile_ir

                kernel = compile_ir(self.projection_ir(), target, **options)
                self._record_kernel(index_key, kernel)
            self._kernels[key] = kernel
        return self._kernels[key]

    # ------------------------------------------------------- the kernel cache's source index
    def _content_digest(self) -> str | None:
        """sha256 of everything that determines this model's kernels apart from its name and
        acegen's own code (both are part of the index key): a model file's bytes, or a
        specification and its coefficients.  None: no source-index shortcut."""
        return None

    def _index_extra(self) -> str:
        return self.kind

    def _source_index_key(self, target: str, options: dict, variant: str = "energy") -> str | None:
        if target not in ("c", "llvm") or options.get("cache", True) is False:
            return None
        digest = self._content_digest()
        if digest is None:
            return None
        from .jit.cache import source_key

        return source_key(digest, target, options, self.name, f"{self._index_extra()}|{variant}")

    def _indexed_kernel(self, key: str | None):
        """The kernel recorded in the source index under ``key`` (:meth:`_source_index_key`),
        loaded and verified (every file's sha256, then the loader's ABI/species/cutoff/
        signature checks), or None."""
        if key is None:
            return None
        from .errors import CompileError
        from .jit.cache import lookup_source

        # an LLVM entry is verified by its loader, which hashes the bytes it reads
        entry = lookup_source(key, verify=False)
        if entry is None:
            return None
        try:
            if entry.get("kind", "c") == "llvm":
                from .backends.llvm import kernel_from_index

                return kernel_from_index(entry)
            if lookup_source(key) is None:
                return None
            from .jit.load import CompiledKernel

            # a library that loads its spline tables: its one other file, verified by lookup_source
            tables = next((f["path"] for f in entry.get("files", [])), None)
            return CompiledKernel(
                Path(entry["library"]), entry["name"], entry["cdef"], n_species=int(entry["n_species"]),
                rcut=np.asarray(entry["rcut"], dtype=float), signature=entry["signature"],
                elements=tuple(entry["elements"]), out_width=int(entry.get("out_width", 1)),
                tables=Path(tables) if tables else None,
            )
        except (CompileError, KeyError, TypeError, ValueError):
            return None

    def _record_kernel(self, key: str | None, kernel) -> None:
        """Record a freshly compiled kernel in the source index under ``key`` (None: the model
        has no content digest; nothing is recorded without a cached artefact)."""
        if key is None:
            return
        from .jit.cache import record_source

        if getattr(kernel, "target", None) == "llvm":
            from .backends.llvm import index_record

            rec = index_record(kernel)
            if rec is not None:
                obj, files, meta = rec
                record_source(key, obj, files=files, kind="llvm", **meta)
            return
        if getattr(kernel, "library_path", None) is None or getattr(kernel, "cdef", None) is None:
            return
        tables = getattr(kernel, "tables_path", None)
        if getattr(kernel, "loads_tables", False) and (tables is None or not Path(tables).is_file()):
            return  # a library that loads its tables, without the cached table file: not indexed
        record_source(
            key, Path(kernel.library_path), files=(Path(tables),) if tables else (), kind="c", name=kernel.name,
            cdef=kernel.cdef, n_species=int(kernel.n_species), rcut=np.asarray(kernel.rcut, dtype=float).tolist(),
            signature=kernel.signature, elements=list(kernel.elements), out_width=int(kernel.out_width),
        )

    # ---------------------------------------------------------------- save
    def to_dict(self) -> dict:
        raise AcegenError(f"{self.kind} models are saved as .yace (model.save('x.yace'))")

    def _save_yace(self, path: Path) -> None:
        raise NotImplementedError

    def _save_bbasis(self, path: Path) -> None:
        from .io.pace.bbasis_writer import write_bbasis_yaml
        from .io.pace_bbasis_export import model_to_bbasis

        write_bbasis_yaml(model_to_bbasis(self), path)

    def save(self, path, *, name: str | None = None) -> None:
        """Write the model to ``path``: ``.json`` (acegen's format, linear models), ``.yace`` (PACE)
        or ``.yaml`` / ``.yml`` (pacemaker's B-basis: linear models and PACE models read from a
        B-basis ``.yaml``; :mod:`acegen.io.pace_bbasis_export`).

        The name stored in a ``.json`` file is ``name`` if given, else the model's own name
        if it was given explicitly, else the file's stem (``fit_cu/Cu.json`` -> ``Cu``), so
        models saved to different files have different names (plugin and symbol names).  A
        ``.yace`` or ``.yaml`` file stores no name: loaded, the model is named after the file."""
        path = Path(path)
        if name is not None:
            _check_name(name)
            if path.suffix in (".yace", ".yaml", ".yml"):
                raise AcegenError(f"{path}: a {path.suffix} file stores no model name (it is named after its file)")
        if path.suffix == ".yace":
            self._save_yace(path)
            return
        if path.suffix in (".yaml", ".yml"):
            self._save_bbasis(path)
            return
        if path.suffix != ".json":
            raise AcegenError(f"{path}: save as .json (acegen), .yace (PACE) or .yaml (pacemaker B-basis)")
        data = self.to_dict()
        if name is not None:
            data["name"] = name
        elif self._default_name:
            data["name"] = _safe_name(path.stem)
        text = json.dumps(data, indent=1)
        if not write_atomic(path, lambda fh: fh.write(text), suffix=".json"):
            raise AcegenError(f"{path}: cannot write the model file")


def _rms_on_crystal(spec, basis, rng, seed: int):
    """Root-mean-square value of every many-body and pair function of ``basis`` over the
    atoms of a reference crystal (rattled fcc with nearest-neighbour distance r0, species
    drawn with ``rng``); 1 where a function vanishes there."""
    from ase.build import bulk

    from .basis_eval import BasisEvaluator

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
    return np.where(bk > 1e-12, bk, 1.0), np.where(pk > 1e-12, pk, 1.0)


def _random_coefficients(spec, basis, seed: int, scale: float) -> np.ndarray:
    """The coefficients of :meth:`LinearModel.random` (see there)."""
    from .symbolic.selection import smoothness_prior

    rng = np.random.default_rng(seed)
    gam = np.asarray(smoothness_prior(spec, [f.factors for f in basis.functions], kind="algebraic", p=4,
                                      constant=1.0))
    gp = np.asarray(smoothness_prior(spec, [((p.zj, p.n, 0),) for p in basis.pair], kind="algebraic", p=4,
                                     constant=1.0))
    bk, pk = _rms_on_crystal(spec, basis, rng, seed)
    theta = rng.standard_normal(len(basis)) * scale / (gam * bk)
    theta_p = rng.standard_normal(len(basis.pair)) * scale / (gp * pk)
    return np.concatenate([theta, theta_p])


def _basis_record_name(spec) -> str:
    import hashlib

    return "basis-" + hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode()).hexdigest()


def _recorded_basis_sizes(spec) -> tuple[int, int] | None:
    """(many-body functions, pair functions) of ``acegen.lower(spec)`` as recorded by this
    version of acegen's code, or None."""
    from .jit.cache import read_record

    rec = read_record(_basis_record_name(spec))
    try:
        n_mb, n_pair = int(rec["manybody"]), int(rec["pair"])
    except (TypeError, KeyError, ValueError):
        return None
    return (n_mb, n_pair) if n_mb >= 0 and n_pair >= 0 else None


def _record_basis_sizes(spec, basis) -> None:
    from .jit.cache import write_record

    write_record(_basis_record_name(spec), {"manybody": len(basis), "pair": len(basis.pair)})


class _SpecModel(Model):
    """A model built on an acegen basis specification (``self.spec``): its elements, and its
    basis lowered once, on first use (:meth:`_build_basis`)."""

    _basis = None

    def _build_basis(self):
        raise NotImplementedError

    @property
    def basis(self):
        if self._basis is None:
            self._basis = self._build_basis()
        return self._basis

    @property
    def elements(self) -> tuple[str, ...]:
        return tuple(self.spec.elements)


class LinearModel(_SpecModel):
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
        self._random_args = None
        # validate the coefficient shape now: against the basis sizes recorded for this
        # specification if it was lowered before (acegen.jit.cache.read_record), else against
        # the lowered basis
        from .spec import split_coefficients

        sizes = _recorded_basis_sizes(spec)
        if sizes is None:
            mb, pr = self.basis.split_params(coefficients)
            _record_basis_sizes(spec, self.basis)
        else:
            mb, pr = split_coefficients(coefficients, *sizes)
            self._checked_sizes = sizes  # compared with the basis when it is lowered
        self._coefficients = np.concatenate([mb, pr])

    @classmethod
    def random(cls, spec, seed: int = 0, *, scale: float = 1.0, name: str | None = None) -> LinearModel:
        """Random coefficients, damped by the smoothness prior so energies are O(eV).

        θ_k = scale · ξ_k / (γ_k · b_k) with ξ_k ~ N(0, 1), γ_k the algebraic smoothness prior
        (p = 4, ``constant=1``; Witt et al. 2023) and b_k the root-mean-square value of basis
        function k over the atoms of a reference crystal (rattled fcc with nearest-neighbour
        distance r0, species assigned at random), so every function contributes O(scale) eV.

        The coefficients are drawn on first use (:attr:`coefficients`, lowering, compiling a
        kernel that is not in the kernel cache), so a model whose kernel was compiled before
        is ready without lowering the basis.
        """
        from .spec import BasisSpec

        if not isinstance(spec, BasisSpec):
            raise SpecError("Model.random(spec): spec must be an acegen.BasisSpec")
        m = object.__new__(cls)
        m._init_common(_check_name("random" if name is None else name))
        m._default_name = name is None
        m.spec, m._basis, m._coefficients = spec, None, None
        m._random_args = (int(seed), float(scale))
        return m

    @property
    def coefficients(self) -> np.ndarray:
        """The coefficient vector (many-body functions, then the pair basis)."""
        if self._coefficients is None:
            self._coefficients = _random_coefficients(self.spec, self.basis, *self._random_args)
        return self._coefficients

    @coefficients.setter
    def coefficients(self, value) -> None:
        self._coefficients = np.asarray(value, dtype=float)
        self._random_args = None

    def _content_digest(self) -> str | None:
        import hashlib

        h = hashlib.sha256(b"linear-ace\0")
        h.update(json.dumps(self.spec.to_dict(), sort_keys=True).encode())
        if self._coefficients is None:
            # not drawn yet: the draw is determined by the specification, seed and scale (and
            # the random generators of numpy and ASE, whose versions are part of the digest)
            import ase

            seed, scale = self._random_args
            h.update(f"\0random\0{seed!r}\0{scale!r}\0numpy {np.__version__}\0ase {ase.__version__}".encode())
        else:
            h.update(b"\0coefficients\0")
            h.update(np.ascontiguousarray(self._coefficients, dtype="<f8").tobytes())
        return h.hexdigest()

    def _build_basis(self):
        from .basis import lower

        basis = lower(self.spec)
        checked = self.__dict__.pop("_checked_sizes", None)
        if checked is not None and checked != (len(basis), len(basis.pair)):
            # the coefficients were validated against a recorded size that is wrong (a
            # damaged record): never fold them onto another split
            _record_basis_sizes(self.spec, basis)
            raise SpecError(
                f"coefficients: validated against a stale record of the basis sizes {checked}; the basis has "
                f"{len(basis)} many-body and {len(basis.pair)} pair functions (the record is rewritten: load "
                "the model again)"
            )
        return basis

    def _lower(self):
        return self.basis.fold(self.coefficients, name=self.name)

    def set_committee(self, members) -> None:
        """Attach committee parameter vectors ``members`` (K, n_params), e.g. posterior
        samples of a BLR/ARD fit; None removes the committee."""
        if members is None:
            self.committee = None
            return
        m = np.asarray(members, dtype=float)
        if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] != len(self.coefficients):
            raise SpecError(f"committee: expected (K, {len(self.coefficients)}) parameter vectors, got shape "
                            f"{m.shape}")
        if not np.isfinite(m).all():
            raise SpecError("committee: non-finite parameter")
        self.committee = m.copy()

    def _projection_ir(self):
        return self.basis.fold(self.coefficients, name=self.name, projections=True).projection_ir()

    def __repr__(self) -> str:
        return f"Model({self.name!r}, {self.basis!r})"

    def to_dict(self) -> dict:
        d = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "minor_version": FORMAT_MINOR_VERSION,
            "kind": "linear-ace",
            "name": self.name,
            "spec": self.spec.to_dict(),
            "coefficients": {
                "manybody": [float(x) for x in self.coefficients[: len(self.basis)]],
                "pair": [float(x) for x in self.coefficients[len(self.basis) :]],
            },
        }
        if self.committee is not None:
            d["committee"] = {"members": [[float(x) for x in row] for row in self.committee]}
        if self.provenance is not None:
            d["provenance"] = self.provenance
        return d

    def _save_yace(self, path: Path) -> None:
        from .io.pace import write_yace
        from .io.pace_export import model_to_pace

        write_yace(model_to_pace(self), path)


#: The Finnis–Sinclair embeddings of :class:`FSModel` (PACE's, ``acegen.ir.physics``).
FS_EMBEDDINGS = ("FinnisSinclair", "FinnisSinclairShiftedScaled")


class FSModel(_SpecModel):
    """A single-layer ACE model with a non-linear Finnis–Sinclair embedding of P densities
    (Lysogorskiy et al. 2021; PACE's ``npoti`` and ``FS_parameters``)::

        E_i = Eref(Z_i) + Σ_p w_p F(ρ_p(i); m_p),    ρ_p(i) = c_p · B(i)

    with B(i) the basis values of atom i on ``acegen.lower(spec)`` (many-body functions, then
    the pair basis) and ``coefficients`` the (n_params, P) array [c_0 … c_{P−1}].
    ``embedding``: ``"FinnisSinclairShiftedScaled"`` (default) or ``"FinnisSinclair"``;
    ``embedding_params``: (w_0, m_0, w_1, m_1, …).  Fitted by ``acegen.fit(...,
    embedding=...)`` (docs/fitting.md); compiled, saved (``.json``, or PACE ``.yace``) and
    loaded like a linear model."""

    kind = "fs"

    def __init__(self, spec, coefficients, *, embedding: str = "FinnisSinclairShiftedScaled",
                 embedding_params=(1.0, 1.0, 1.0, 0.5), name: str | None = None):
        from .ir.model import Embedding
        from .spec import BasisSpec

        if not isinstance(spec, BasisSpec):
            raise SpecError("FSModel(spec, coefficients): spec must be an acegen.BasisSpec")
        if embedding not in FS_EMBEDDINGS:
            raise SpecError(f"FSModel: embedding must be one of {list(FS_EMBEDDINGS)}, got {embedding!r}")
        try:
            params = tuple(float(x) for x in embedding_params)
        except (TypeError, ValueError):
            raise SpecError(f"FSModel: embedding_params must be numbers (w_0, m_0, w_1, m_1, ...), got "
                            f"{embedding_params!r}") from None
        if len(params) < 2 or len(params) % 2 or not all(np.isfinite(params)) or min(params[1::2]) <= 0:
            raise SpecError(f"FSModel: embedding_params must be (w_0, m_0, w_1, m_1, ...) with finite values and "
                            f"every m_p > 0, got {embedding_params!r}")
        self._init_common(_check_name("model" if name is None else name))
        self._default_name = name is None
        self.spec = spec
        self._basis = None
        self.embedding = Embedding(embedding, len(params) // 2, params)
        if isinstance(coefficients, dict):
            mb = np.asarray(coefficients.get("manybody"), dtype=float)
            pr = np.asarray(coefficients.get("pair"), dtype=float)
            if mb.ndim != 2 or pr.ndim != 2:
                raise SpecError("FSModel: coefficients 'manybody' and 'pair' must be (n, ndensity) arrays")
            c = np.concatenate([mb, pr])
        else:
            c = np.asarray(coefficients, dtype=float)
        P = self.embedding.ndensity
        if c.shape != (self.basis.n_params, P):
            raise SpecError(f"FSModel: coefficients must have shape ({self.basis.n_params}, {P}) "
                            f"(parameters x densities), got {c.shape}")
        if not np.isfinite(c).all():
            raise SpecError("FSModel: non-finite coefficient")
        self.coefficients = c.copy()

    @property
    def ndensity(self) -> int:
        return self.embedding.ndensity

    @property
    def embedding_params(self) -> tuple[float, ...]:
        return self.embedding.params

    def _build_basis(self):
        from .basis import lower

        return lower(self.spec)

    def _lower(self):
        return self.basis.fold(self.coefficients, name=self.name, embedding=self.embedding)

    def _projection_ir(self):
        return self.basis.fold(self.coefficients, name=self.name, projections=True,
                               embedding=self.embedding).projection_ir()

    def __repr__(self) -> str:
        return (f"Model({self.name!r}, {self.basis!r}, embedding {self.embedding.kind} "
                f"{list(self.embedding.params)})")

    def to_dict(self) -> dict:
        K = len(self.basis)
        d = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "minor_version": FORMAT_MINOR_VERSION,
            "kind": "fs-ace",
            "name": self.name,
            "spec": self.spec.to_dict(),
            "embedding": {"kind": self.embedding.kind, "params": [float(x) for x in self.embedding.params]},
            "coefficients": {
                "manybody": self.coefficients[:K].tolist(),
                "pair": self.coefficients[K:].tolist(),
            },
        }
        if self.provenance is not None:
            d["provenance"] = self.provenance
        return d

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
        """A PACE model for ``path``: parsed now, unless a kernel of this exact file (the C or
        LLVM target, default options) is in the kernel cache's source index (then parsed on
        first need)."""
        import hashlib

        from .jit.cache import events, lookup_source, source_key

        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        entry = None
        for target in ("c", "llvm"):
            # size and mtime only: compile() verifies the artefact it loads
            entry = lookup_source(source_key(digest, target, {}, _safe_name(name),
                                             f"{cls._index_tag(radial)}|energy"), verify=False)
            if entry is not None:
                break
        if entry is None:
            events["parse"] += 1
            m = cls(cls._read_source(path), name=name, radial=radial)
        else:
            m = cls(None, name=name, radial=radial)
            m._pace_path = path
            m._index_entry = entry
        m._source_sha256 = digest
        return m

    @staticmethod
    def _read_source(path: Path):
        from .io.pace import read_pace

        return read_pace(path)

    @staticmethod
    def _index_tag(radial: str) -> str:
        return radial

    @property
    def pace(self):
        """The PACE potential (``acegen.io.pace.PacePotential``)."""
        if self._pace is None and self._pace_path is not None:
            import hashlib

            from .jit.cache import events

            events["parse"] += 1
            pot = self._read_source(self._pace_path)
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
    def _content_digest(self) -> str | None:
        return self._source_sha256

    def _index_extra(self) -> str:
        return self._index_tag(self.pace_radial)


class MultilayerModel(_SpecModel):
    """A multilayer ACE model (docs/multilayer.md): a MultilayerSpec and one coefficient vector
    per layer (many-body functions, then the pair basis; the last layer an (n, P) array when
    the embedding has P > 1 densities).  :meth:`ir` gives one ModelIR per layer and
    :meth:`compile` one kernel per layer (:class:`acegen.runtime.multilayer.MultilayerKernel`),
    which ``acegen.Calculator`` drives (docs/multilayer.md)."""

    kind = "multilayer"

    def __init__(self, spec, coefficients, *, name: str | None = None):
        from .multilayer.spec import MultilayerSpec

        if not isinstance(spec, MultilayerSpec):
            raise SpecError("MultilayerModel(spec, coefficients): spec must be an acegen.MultilayerSpec")
        self._init_common(_check_name("model" if name is None else name))
        self._default_name = name is None
        self.spec = spec
        self._basis = None
        self.coefficients = [np.concatenate([mb, pr]) for mb, pr in self.basis.split_params(coefficients)]

    @classmethod
    def random(cls, spec, seed: int = 0, *, scale: float = 1.0, name: str | None = None) -> MultilayerModel:
        """Random coefficients per layer, θ_v = scale · ξ_v / (γ_v · b_v), ξ_v ~ N(0, 1)
        (one column per density of the last layer when ``spec.ndensity`` > 1).

        Layer 1 as :meth:`LinearModel.random`.  For a layer n > 1, γ_v is the algebraic
        smoothness prior of the function's (z, n, l) factors plus Σ_t k_t⁴ + k0⁴, and b_v the
        root-mean-square value (reference crystal) of the plain function with the T_k factors
        dropped (|T_k| <= 1 on the indicator's range, so b_v bounds it), or the mean of that
        layer's plain functions of the same species and order when no plain function matches.
        So the indicators' arguments are O(scale) and the energies O(scale) eV.
        """
        from .basis import lower as lower_basis
        from .multilayer.basis import lower_multilayer
        from .symbolic.selection import smoothness_prior

        basis = lower_multilayer(spec)
        rng = np.random.default_rng(seed)
        coefficients = []
        for n, (lspec, lb) in enumerate(zip(spec.layers, basis.layers)):
            plain = lb if n == 0 else lower_basis(lspec)
            gam = np.asarray(smoothness_prior(lspec, [tuple(f[:3] for f in fn.factors) for fn in lb.functions],
                                              kind="algebraic", p=4, constant=1.0))
            gp = np.asarray(smoothness_prior(lspec, [((p.zj, p.n, 0),) for p in lb.pair], kind="algebraic", p=4,
                                             constant=1.0))
            bk_plain, pk = _rms_on_crystal(lspec, plain, rng, seed + n)
            if n == 0:
                bk = bk_plain
            else:
                gam = gam + np.array([sum(f[3] ** 4 for f in fn.factors) + fn.k0**4 for fn in lb.functions])
                by_key = {(f.z0, f.factors, f.index): bk_plain[q] for q, f in enumerate(plain.functions)}
                by_order: dict = {}
                for q, f in enumerate(plain.functions):
                    by_order.setdefault((f.z0, f.order), []).append(bk_plain[q])
                bk = np.array([
                    by_key.get((fn.z0, tuple(sorted(f[:3] for f in fn.factors)), fn.index),
                               float(np.mean(by_order.get((fn.z0, fn.order), [1.0]))))
                    for fn in lb.functions
                ])
            cols = spec.ndensity if n == spec.n_layers - 1 else 1
            theta = rng.standard_normal((len(lb), cols)) * (scale / (gam * bk))[:, None]
            theta_p = rng.standard_normal((len(lb.pair), cols)) * (scale / (gp * pk))[:, None]
            c = np.concatenate([theta, theta_p])
            coefficients.append(c if cols > 1 else c[:, 0])
        m = object.__new__(cls)
        m._init_common(_check_name("random" if name is None else name))
        m._default_name = name is None
        m.spec, m._basis, m.coefficients = spec, basis, coefficients
        return m

    def _build_basis(self):
        from .multilayer.basis import lower_multilayer

        return lower_multilayer(self.spec)

    def _lower(self):
        """One ModelIR per layer (:func:`acegen.multilayer.ir.layer_irs`), named <name>_l<n>."""
        from .multilayer.ir import layer_irs

        return layer_irs(self.basis, self.coefficients, self.name)

    def ir(self):
        """The tuple of the layers' ModelIRs (cached): layer 1 plain, the others with indicator
        inputs (``ModelIR.theta``)."""
        return super().ir()

    def compile(self, target: str = "c", **options):
        """The :class:`acegen.runtime.multilayer.MultilayerKernel` of every layer's kernel for
        ``target`` ('c', 'llvm' or 'cuda'; options as :func:`acegen.runtime.kernels.compile_ir`,
        e.g. ``emulate=True`` for the CUDA source on the CPU), cached per model object and in
        the kernel cache."""
        from .runtime.kernels import compile_ir
        from .runtime.multilayer import MultilayerKernel

        if target not in ("c", "llvm", "cuda"):
            raise AcegenError(f"multilayer models compile for the targets 'c', 'llvm' and 'cuda', not {target!r} "
                              "(the NumPy interpreter has no indicator inputs)")
        key = (target, tuple(sorted(options.items())))
        if key not in self._kernels:
            kernels = [compile_ir(ir, target, **options) for ir in self.ir()]
            self._kernels[key] = MultilayerKernel(kernels, self.elements)
        return self._kernels[key]

    def projection_ir(self):
        raise AcegenError("a multilayer model has no projection functions (extrapolation grade) yet")

    def __repr__(self) -> str:
        return f"Model({self.name!r}, {self.basis!r})"

    def to_dict(self) -> dict:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "kind": "multilayer-ace",
            "name": self.name,
            "spec": self.spec.to_dict(),
            "coefficients": [
                {"manybody": np.asarray(c[: len(b)], dtype=float).tolist(),
                 "pair": np.asarray(c[len(b):], dtype=float).tolist()}
                for b, c in zip(self.basis.layers, self.coefficients)
            ],
        }

    def _save_yace(self, path: Path) -> None:
        raise AcegenError(f"{path}: a multilayer model has no PACE (.yace) form; save it as .json")


class GraceFSModel(PaceModel):
    """A GRACE-FS model (Lysogorskiy et al. 2024/2025; ``acegen.io.gracefs``), lowered to the IR
    by :func:`acegen.io.gracefs_lower.gracefs_to_ir`.  Loaded from a file it shares
    :class:`PaceModel`'s content-hash source index (a kernel of exactly this file is found
    without parsing it).  ``save`` writes the GRACE-FS YAML format (``.yaml`` / ``.yml``)."""

    kind = "gracefs"

    def __init__(self, potential, *, name: str | None = None, radial: str = "spline"):
        if radial != "spline":
            raise SpecError("GRACE-FS models are evaluated from their spline tables (radial='spline')")
        super().__init__(potential, name=name, radial=radial)

    @staticmethod
    def _read_source(path: Path):
        from .io.gracefs import read_gracefs

        return read_gracefs(path)

    @staticmethod
    def _index_tag(radial: str) -> str:
        return "gracefs-" + radial

    @property
    def gracefs(self):
        """The GRACE-FS model (``acegen.io.gracefs.GraceFSPotential``)."""
        return self.pace

    def _lower(self):
        from .io.gracefs_lower import gracefs_to_ir

        return gracefs_to_ir(self.gracefs, name=self.name)

    def __repr__(self) -> str:
        return f"Model({self.name!r}, GRACE-FS, elements={list(self.elements)})"

    def to_dict(self) -> dict:
        raise AcegenError("GRACE-FS models are saved as GRACE-FS YAML (model.save('x.yaml'))")

    def save(self, path, *, name: str | None = None) -> None:
        """Write the model as a GRACE-FS YAML file (``.yaml`` / ``.yml``; it stores no name:
        loaded, the model is named after the file)."""
        path = Path(path)
        if path.suffix.lower() not in (".yaml", ".yml"):
            raise AcegenError(f"{path}: a GRACE-FS model is saved as GRACE-FS YAML (.yaml or .yml), "
                              "not as acegen JSON or PACE .yace")
        if name is not None:
            raise AcegenError(f"{path}: a GRACE-FS file stores no model name (it is named after its file)")
        from .io.gracefs import write_gracefs

        write_gracefs(self.gracefs, path)


_GRACEFS_KEY = re.compile(rb"^emb_spec\s*:", re.MULTILINE)


def _looks_gracefs(path: Path) -> bool:
    """A YAML file with a top-level ``emb_spec`` key (the content, not the name, decides;
    :func:`acegen.io.gracefs.read_gracefs` then validates it fully)."""
    try:
        with open(path, "rb") as fh:
            return bool(_GRACEFS_KEY.search(fh.read()))
    except OSError:
        return False


def load(path) -> Model:
    """Load a model: acegen ``.json``, PACE ``.yace`` / ``.ace`` / ``.yaml``, or GRACE-FS YAML
    (detected from the content: a top-level ``emb_spec``)."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(path, None, "no such file")
    suffix = path.suffix.lower()
    if suffix in (".yace", ".ace", ".yaml", ".yml"):
        if _looks_gracefs(path):
            return GraceFSModel.from_file(path, name=path.stem)
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
    if data.get("kind") == "multilayer-ace":
        return _multilayer_from_dict(data, path)
    if data.get("kind") == "fs-ace":
        return _fs_from_dict(data, path)
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
    minor = data.get("minor_version", 0)
    if not isinstance(minor, int) or isinstance(minor, bool) or minor < 0:
        raise ModelFileError(path, "minor_version", f"expected an integer >= 0, got {minor!r}")
    prov = data.get("provenance")
    if prov is not None and not isinstance(prov, dict):
        raise ModelFileError(path, "provenance", "expected an object")
    try:
        model = Model(spec, vals, name=name)
    except SpecError as e:
        raise ModelFileError(path, "coefficients", str(e)) from None
    com = data.get("committee")
    if com is not None:
        members = com.get("members") if isinstance(com, dict) else None
        n = len(model.coefficients)
        if not (isinstance(members, list) and members and all(
                isinstance(row, list) and len(row) == n
                and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in row) for row in members)):
            raise ModelFileError(path, "committee.members", f"expected a non-empty list of lists of {n} numbers")
        try:
            model.set_committee(members)
        except SpecError as e:
            raise ModelFileError(path, "committee.members", str(e)) from None
    model.provenance = prov
    return model


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _coefficient_lists(coef, path, where: str, columns: int | None = None) -> dict:
    """{'manybody', 'pair'} arrays: lists of numbers, or (``columns``) lists of rows of that length."""
    if not isinstance(coef, dict):
        raise ModelFileError(path, where, "expected an object with 'manybody' and 'pair' lists")
    vals = {}
    for key in ("manybody", "pair"):
        v = coef.get(key)
        if columns is None:
            ok = isinstance(v, list) and all(_is_number(x) for x in v)
        else:
            ok = isinstance(v, list) and all(isinstance(r, list) and len(r) == columns and all(_is_number(x) for x in r)
                                             for r in v)
        if not ok:
            what = "a list of numbers" if columns is None else f"a list of rows of {columns} numbers"
            raise ModelFileError(path, f"{where}.{key}", f"expected {what}")
        vals[key] = np.asarray(v, dtype=float)
        if not np.isfinite(vals[key]).all():
            raise ModelFileError(path, f"{where}.{key}", "non-finite number")
    return vals


def _multilayer_from_dict(data: dict, path) -> MultilayerModel:
    from .multilayer.spec import MultilayerSpec

    try:
        spec = MultilayerSpec.from_dict(data.get("spec"))
    except SpecError as e:
        raise ModelFileError(path, "spec", str(e)) from None
    except (TypeError, KeyError, ValueError, AttributeError) as e:
        raise ModelFileError(path, "spec", f"invalid specification: {e}") from None
    coef = data.get("coefficients")
    if not isinstance(coef, list) or len(coef) != spec.n_layers:
        raise ModelFileError(path, "coefficients", f"expected a list of {spec.n_layers} per-layer objects")
    last, P = spec.n_layers - 1, spec.ndensity
    vals = [_coefficient_lists(c, path, f"coefficients[{n}]", P if n == last and P > 1 else None)
            for n, c in enumerate(coef)]
    name = data.get("name", "model")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ModelFileError(path, "name", f"expected letters, digits or underscores, got {str(name)[:40]!r}")
    try:
        return MultilayerModel(spec, vals, name=name)
    except SpecError as e:
        raise ModelFileError(path, "coefficients", str(e)) from None


def _fs_from_dict(data: dict, path) -> FSModel:
    from .spec import BasisSpec

    try:
        spec = BasisSpec.from_dict(data.get("spec"))
    except SpecError as e:
        raise ModelFileError(path, "spec", str(e)) from None
    except (TypeError, KeyError, ValueError, AttributeError, OverflowError) as e:
        raise ModelFileError(path, "spec", f"invalid specification: {str(e)[:200]}") from None
    emb = data.get("embedding")
    if not (isinstance(emb, dict) and emb.get("kind") in FS_EMBEDDINGS and isinstance(emb.get("params"), list)
            and emb["params"] and len(emb["params"]) % 2 == 0 and all(_is_number(x) for x in emb["params"])):
        raise ModelFileError(path, "embedding", f"expected {{kind: one of {list(FS_EMBEDDINGS)}, params: "
                                                "[w_0, m_0, ...]}")
    vals = _coefficient_lists(data.get("coefficients"), path, "coefficients", len(emb["params"]) // 2)
    name = data.get("name", "model")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ModelFileError(path, "name", f"expected letters, digits or underscores, got {str(name)[:40]!r}")
    prov = data.get("provenance")
    if prov is not None and not isinstance(prov, dict):
        raise ModelFileError(path, "provenance", "expected an object")
    try:
        model = FSModel(spec, vals, embedding=emb["kind"], embedding_params=emb["params"], name=name)
    except SpecError as e:
        raise ModelFileError(path, "embedding/coefficients", str(e)) from None
    model.provenance = prov
    return model
