"""Read and validate GRACE-FS model files (``FS_model.yaml`` / ``saved_model.yaml``).

GRACE-FS is the single-layer, tensor-decomposed ACE model of GRACE (Lysogorskiy et al.,
2024/2025), evaluated by ``pair_style grace/fs`` and ``pyace.grace_fs``.  For a central atom i
of species μ_i and neighbours j within the single cutoff:

* g_k(r), k < ``n_rad_base``: PACE's ``SBessel`` radial basis;
  R_nl(r) = Σ_k crad[n, l, k] g_k(r);
* A_{n,l,m} = nnorm · Σ_j Z[μ_j, n] R_nl(r_ij) Y^real_lm(r̂_ij) (element embedding Z instead
  of per-element channels);
* ρ_p = Σ_f coeff[f, p] Σ_s gen_cgs[f, s] Π_t A_{ns_f − 1, ls_f[t], ms_combs_f[s, t]}
  (one radial index ``ns`` per function, 1-based, shared by all factors);
* E_i = scale · Σ_p w_p F(ρ_p; m_p) + shift + E0[μ_i].

:func:`read_gracefs` returns a frozen, validated :class:`GraceFSPotential`; malformed content
raises :class:`acegen.errors.ModelFileError` naming the file and the field.  The format is
recognised from the content (:func:`is_gracefs`), not from the file name.  See
``docs/gracefs.md``.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from ase.data import atomic_numbers

from ..errors import ModelFileError

__all__ = [
    "GRACEFS_EMBEDDINGS",
    "GRACEFS_RADIAL_BASES",
    "DELTA_SPLINE_BINS",
    "LIMITS",
    "GraceFSFunction",
    "GraceFSPotential",
    "is_gracefs",
    "read_gracefs",
    "gracefs_from_dict",
    "gracefs_to_dict",
    "write_gracefs",
]

GRACEFS_EMBEDDINGS = ("FinnisSinclair", "FinnisSinclairShiftedScaled")
GRACEFS_RADIAL_BASES = ("SBessel",)
DELTA_SPLINE_BINS = 0.001  # the evaluator's fixed spline spacing (the file has no key for it)

# Sane bounds, checked before anything of that size is allocated.
LIMITS = {
    "elements": 128,
    "nradmax": 256,
    "n_rad_base": 256,
    "lmax": 16,
    "rank": 12,
    "ndensity": 64,
    "cutoff": 100.0,
    "fs_exponent": 100.0,
    "crad": 10_000_000,
    "Z": 1_000_000,
    "functions": 2_000_000,
    "ms_combs": 1_000_000,
}

_ELEMENT_RE = re.compile(r"^[A-Z][a-z]?$")


# ================================================================================= data model
@dataclass(frozen=True, eq=False)
class GraceFSFunction:
    """One GRACE-FS basis function of central species ``mu0``.

    ``ns`` is the 1-based radial index shared by all ``rank`` factors, ``ls`` the l of each
    factor, ``ms_combs`` an ``(M, rank)`` integer array of *real*-harmonic m's, ``gen_cgs`` the
    ``(M,)`` generalised coupling coefficients and ``coeff`` the ``(ndensity,)`` weights:
    ρ_p += coeff[p] Σ_s gen_cgs[s] Π_t A[ns−1, ls[t], ms_combs[s, t]].
    """

    mu0: int
    rank: int
    ns: int
    ls: tuple[int, ...]
    ms_combs: np.ndarray
    gen_cgs: np.ndarray
    coeff: np.ndarray

    def __post_init__(self):
        ms = np.array(self.ms_combs, dtype=np.int64).reshape(-1, self.rank)
        cg = np.array(self.gen_cgs, dtype=float).reshape(-1)
        c = np.array(self.coeff, dtype=float).reshape(-1)
        for a in (ms, cg, c):
            a.setflags(write=False)
        object.__setattr__(self, "ms_combs", ms)
        object.__setattr__(self, "gen_cgs", cg)
        object.__setattr__(self, "coeff", c)

    @property
    def ndensity(self) -> int:
        return self.coeff.shape[0]

    def __eq__(self, other):
        return (
            isinstance(other, GraceFSFunction)
            and (self.mu0, self.rank, self.ns, self.ls) == (other.mu0, other.rank, other.ns, other.ls)
            and np.array_equal(self.ms_combs, other.ms_combs)
            and np.array_equal(self.gen_cgs, other.gen_cgs)
            and np.array_equal(self.coeff, other.coeff)
        )


@dataclass(frozen=True, eq=False)
class GraceFSPotential:
    """A validated GRACE-FS model.

    ``crad`` has shape ``(nradmax, lmax+1, n_rad_base)``, ``Z`` shape ``(n_elements, nradmax)``;
    ``functions[μ]`` is the tuple of :class:`GraceFSFunction` of central species μ in file order
    (every species has an entry, possibly empty).  ``fs_parameters`` = (w_0, m_0, w_1, m_1, ...).
    ``source`` (the file read) is not part of equality or of :meth:`signature`.
    """

    elements: tuple[str, ...]
    nnorm: float
    embedding: str
    fs_parameters: tuple[float, ...]
    radbasename: str
    rcut: float
    crad: np.ndarray
    Z: np.ndarray
    functions: dict
    E0: tuple[float, ...]
    shift: float = 0.0
    scale: float = 1.0
    delta_spline_bins: float = DELTA_SPLINE_BINS
    source: str = field(default="", compare=False)

    def __post_init__(self):
        crad = np.array(self.crad, dtype=float)
        Z = np.array(self.Z, dtype=float)
        if crad.ndim != 3 or Z.ndim != 2 or Z.shape != (len(self.elements), crad.shape[0]):
            raise ValueError(f"inconsistent shapes crad {crad.shape}, Z {Z.shape}, {len(self.elements)} elements")
        crad.setflags(write=False)
        Z.setflags(write=False)
        object.__setattr__(self, "crad", crad)
        object.__setattr__(self, "Z", Z)
        funcs = {mu: tuple(self.functions.get(mu, ())) for mu in range(len(self.elements))}
        object.__setattr__(self, "functions", funcs)

    # ------------------------------------------------------------------ sizes
    @property
    def nelements(self) -> int:
        return len(self.elements)

    @property
    def nradmax(self) -> int:
        return self.crad.shape[0]

    @property
    def lmax(self) -> int:
        return self.crad.shape[1] - 1

    @property
    def n_rad_base(self) -> int:
        return self.crad.shape[2]

    @property
    def ndensity(self) -> int:
        return len(self.fs_parameters) // 2

    @property
    def rankmax(self) -> int:
        return max((f.rank for fs in self.functions.values() for f in fs), default=0)

    @property
    def nfunctions(self) -> int:
        return sum(len(fs) for fs in self.functions.values())

    # ------------------------------------------------------------------ identity
    def _scalars(self):
        return (
            self.elements, self.nnorm, self.embedding, self.fs_parameters, self.radbasename, self.rcut,
            self.E0, self.shift, self.scale, self.delta_spline_bins,
        )

    def signature(self) -> str:
        """SHA-256 of the model's content (every number bit-exact; not the file name)."""
        h = hashlib.sha256()
        h.update(b"gracefs-v1\0")
        h.update(repr(self._scalars()).encode())
        for a in (self.crad, self.Z):
            h.update(repr(a.shape).encode())
            h.update(np.ascontiguousarray(a, dtype="<f8").tobytes())
        for mu in range(self.nelements):
            h.update(f"\0species {mu} {len(self.functions[mu])}\0".encode())
            for f in self.functions[mu]:
                h.update(repr((f.rank, f.ns, f.ls, f.ms_combs.shape)).encode())
                h.update(np.ascontiguousarray(f.ms_combs, dtype="<i8").tobytes())
                h.update(np.ascontiguousarray(f.gen_cgs, dtype="<f8").tobytes())
                h.update(np.ascontiguousarray(f.coeff, dtype="<f8").tobytes())
        return h.hexdigest()

    def __eq__(self, other):
        return isinstance(other, GraceFSPotential) and self.signature() == other.signature()

    def __hash__(self):
        return hash(self.signature())


# ================================================================================ detection
def is_gracefs(data) -> bool:
    """True if a parsed YAML document is a GRACE-FS model (``emb_spec`` and a ``radial_basis``
    carrying ``Z``/``crad``), False for anything else (PACE B-basis ``species``/``embeddings``/
    ``bonds``, C-tilde ``.yace``, ...)."""
    if not isinstance(data, dict):
        return False
    rb = data.get("radial_basis")
    return "emb_spec" in data and isinstance(rb, dict) and ("Z" in rb or "crad" in rb)


# ================================================================================ validation
class _Ctx:
    def __init__(self, path):
        self.path = str(path)

    def fail(self, fld, msg):
        raise ModelFileError(self.path, fld, msg)

    def get(self, d, key, fld, default=...):
        if not isinstance(d, dict):
            self.fail(fld.rsplit(".", 1)[0] if "." in fld else None, "expected a mapping")
        if key not in d:
            if default is ...:
                self.fail(fld, "missing field")
            return default
        return d[key]

    def real(self, v, fld, *, positive=False):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            self.fail(fld, f"expected a number, got {v!r}"[:200])
        try:
            x = float(v)
        except OverflowError:
            self.fail(fld, f"number {str(v)[:30]}... is out of range")
        if not math.isfinite(x):
            self.fail(fld, f"non-finite number {v!r}")
        if positive and not x > 0:
            self.fail(fld, f"must be positive, got {x!r}")
        return x

    def integer(self, v, fld, lo=None, hi=None):
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            else:
                self.fail(fld, f"expected an integer, got {v!r}"[:200])
        if lo is not None and v < lo:
            self.fail(fld, f"must be >= {lo}, got {v}")
        if hi is not None and v > hi:
            self.fail(fld, f"must be <= {hi}, got {v}")
        return v

    def seq(self, v, fld, length=None, maxlen=None):
        if not isinstance(v, (list, tuple)):
            self.fail(fld, f"expected a list, got {type(v).__name__}")
        if maxlen is not None and len(v) > maxlen:
            self.fail(fld, f"{len(v)} entries exceed the limit of {maxlen}")
        if length is not None and len(v) != length:
            self.fail(fld, f"expected {length} entries, got {len(v)}")
        return v

    def reals(self, v, fld, length=None, maxlen=None):
        v = self.seq(v, fld, length, maxlen)
        if all(type(x) is float for x in v):  # fast path for the big tables
            a = np.asarray(v, dtype=float)
            bad = np.nonzero(~np.isfinite(a))[0]
            if len(bad):
                self.fail(f"{fld}[{bad[0]}]", f"non-finite number {a[bad[0]]!r}")
            return a
        return np.array([self.real(x, f"{fld}[{i}]") for i, x in enumerate(v)], dtype=float)

    def ints(self, v, fld, length=None, lo=None, hi=None, maxlen=None):
        v = self.seq(v, fld, length, maxlen)
        return [self.integer(x, f"{fld}[{i}]", lo, hi) for i, x in enumerate(v)]


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """Safe YAML loader that rejects duplicate keys."""


def _mapping(loader, node, deep=False):
    loader.flatten_mapping(node)
    out = {}
    for kn, vn in node.value:
        key = loader.construct_object(kn, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(None, None, f"unhashable key {key!r}", kn.start_mark) from None
        if key in out:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", kn.start_mark)
        out[key] = loader.construct_object(vn, deep=deep)
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _parse(ctx: _Ctx, text: str):
    loader = _Loader(text)
    try:
        data = loader.get_single_data()
    except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        ctx.fail("yaml", f"invalid YAML: {exc}"[:500])
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        ctx.fail(None, f"top level must be a mapping, got {type(data).__name__}")
    return data


def read_gracefs(path_or_text) -> GraceFSPotential:
    """Read a GRACE-FS YAML model from a path (``str``/``Path``) or from the YAML text itself
    (a ``str`` containing a newline).  Raises :class:`ModelFileError` for any malformed content,
    including a YAML document that is not a GRACE-FS model."""
    if isinstance(path_or_text, str) and "\n" in path_or_text:
        ctx, text = _Ctx("<text>"), path_or_text
    else:
        ctx = _Ctx(path_or_text)
        try:
            text = Path(path_or_text).read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            ctx.fail(None, f"not a text file ({exc.reason})")
        except OSError as exc:
            ctx.fail(None, f"cannot read file: {exc.strerror or exc}")
    return gracefs_from_dict(_parse(ctx, text), source=ctx.path)


def gracefs_from_dict(data: dict, source: str = "<dict>") -> GraceFSPotential:
    """Validate a parsed GRACE-FS document (see :func:`read_gracefs`)."""
    ctx = _Ctx(source)
    if not isinstance(data, dict):
        ctx.fail(None, f"top level must be a mapping, got {type(data).__name__}")
    if not is_gracefs(data):
        kind = "a PACE B-basis/C-tilde file" if ("bonds" in data or "species" in data) else "not a GRACE-FS model"
        ctx.fail(None, f"{kind} (a GRACE-FS model has 'emb_spec' and 'radial_basis' with 'Z' and 'crad')")

    # elements
    els = ctx.seq(ctx.get(data, "elements", "elements"), "elements", maxlen=LIMITS["elements"])
    if not els:
        ctx.fail("elements", "no elements")
    for i, e in enumerate(els):
        if not isinstance(e, str) or not _ELEMENT_RE.match(e) or atomic_numbers.get(e, 0) < 1:
            ctx.fail(f"elements[{i}]", f"{e!r} is not a chemical element symbol")
    if len(set(els)) != len(els):
        ctx.fail("elements", f"duplicated element(s) {sorted({e for e in els if els.count(e) > 1})}")
    elements = tuple(els)
    nel = len(elements)

    nnorm = ctx.real(ctx.get(data, "nnorm", "nnorm", 1.0), "nnorm")
    shift = ctx.real(ctx.get(data, "shift", "shift", 0.0), "shift")
    scale = ctx.real(ctx.get(data, "scale", "scale", 1.0), "scale")
    E0 = ctx.get(data, "E0", "E0", None)
    E0 = (0.0,) * nel if E0 is None else tuple(float(x) for x in ctx.reals(E0, "E0", nel))

    # embedding
    emb = ctx.get(data, "emb_spec", "emb_spec")
    if not isinstance(emb, dict):
        ctx.fail("emb_spec", "expected a mapping")
    etype = ctx.get(emb, "type", "emb_spec.type")
    if etype not in GRACEFS_EMBEDDINGS:
        ctx.fail("emb_spec.type", f"unknown value {etype!r}; supported: {', '.join(GRACEFS_EMBEDDINGS)}")
    params = ctx.reals(ctx.get(emb, "params", "emb_spec.params"), "emb_spec.params", maxlen=2 * LIMITS["ndensity"])
    if len(params) == 0 or len(params) % 2:
        ctx.fail("emb_spec.params", f"needs (w, m) pairs: an even, non-zero count, got {len(params)}")
    nd = len(params) // 2
    for i in range(1, len(params), 2):
        if abs(params[i]) > LIMITS["fs_exponent"]:
            ctx.fail(f"emb_spec.params[{i}]", f"exponent {float(params[i])!r} exceeds the limit of {LIMITS['fs_exponent']}")
    fs_parameters = tuple(float(x) for x in params)

    # radial basis
    rb = ctx.get(data, "radial_basis", "radial_basis")
    name = ctx.get(rb, "radbasename", "radial_basis.radbasename")
    if name not in GRACEFS_RADIAL_BASES:
        ctx.fail("radial_basis.radbasename", f"unknown value {name!r}; supported: {', '.join(GRACEFS_RADIAL_BASES)}")
    rcut = ctx.real(ctx.get(rb, "cutoff", "radial_basis.cutoff"), "radial_basis.cutoff", positive=True)
    if rcut > LIMITS["cutoff"]:
        ctx.fail("radial_basis.cutoff", f"{rcut} Å exceeds the limit of {LIMITS['cutoff']} Å")
    if int(rcut / DELTA_SPLINE_BINS) < 2:
        ctx.fail("radial_basis.cutoff", f"{rcut} Å is shorter than two spline bins of {DELTA_SPLINE_BINS} Å")
    nradmax = ctx.integer(ctx.get(rb, "nradmax", "radial_basis.nradmax"), "radial_basis.nradmax", 1, LIMITS["nradmax"])
    nrb = ctx.integer(ctx.get(rb, "n_rad_base", "radial_basis.n_rad_base"), "radial_basis.n_rad_base", 1,
                      LIMITS["n_rad_base"])
    cshape = ctx.ints(ctx.get(rb, "crad_shape", "radial_basis.crad_shape"), "radial_basis.crad_shape", 3, lo=1)
    if cshape[0] != nradmax:
        ctx.fail("radial_basis.crad_shape", f"crad_shape[0] = {cshape[0]} differs from nradmax = {nradmax}")
    if cshape[2] != nrb:
        ctx.fail("radial_basis.crad_shape", f"crad_shape[2] = {cshape[2]} differs from n_rad_base = {nrb}")
    if cshape[1] - 1 > LIMITS["lmax"]:
        ctx.fail("radial_basis.crad_shape", f"lmax = {cshape[1] - 1} exceeds the limit of {LIMITS['lmax']}")
    ncrad = cshape[0] * cshape[1] * cshape[2]
    if ncrad > LIMITS["crad"]:
        ctx.fail("radial_basis.crad_shape", f"{ncrad} coefficients exceed the limit of {LIMITS['crad']}")
    crad = ctx.reals(ctx.get(rb, "crad", "radial_basis.crad"), "radial_basis.crad", ncrad).reshape(cshape)
    lmax = cshape[1] - 1
    zshape = ctx.ints(ctx.get(rb, "Z_shape", "radial_basis.Z_shape"), "radial_basis.Z_shape", 2, lo=1)
    if zshape[0] != nel:
        ctx.fail("radial_basis.Z_shape", f"Z_shape[0] = {zshape[0]} differs from the {nel} elements")
    if zshape[1] != nradmax:
        ctx.fail("radial_basis.Z_shape", f"Z_shape[1] = {zshape[1]} differs from nradmax = {nradmax}")
    Z = ctx.reals(ctx.get(rb, "Z", "radial_basis.Z"), "radial_basis.Z", nel * nradmax).reshape(nel, nradmax)

    # functions
    fin = ctx.get(data, "functions", "functions")
    if not isinstance(fin, dict):
        ctx.fail("functions", "expected a mapping keyed by central species")
    functions: dict[int, list] = {mu: [] for mu in range(nel)}
    total = 0
    for key, lst in fin.items():
        mu = ctx.integer(key, f"functions[{key!r}]", 0, nel - 1)
        lst = ctx.seq(lst, f"functions[{mu}]")
        total += len(lst)
        if total > LIMITS["functions"]:
            ctx.fail("functions", f"more than {LIMITS['functions']} functions")
        functions[mu] = [_function(ctx, f"functions[{mu}][{i}]", f, mu, nradmax, lmax, nd) for i, f in enumerate(lst)]

    return GraceFSPotential(
        elements=elements, nnorm=nnorm, embedding=etype, fs_parameters=fs_parameters, radbasename=name, rcut=rcut,
        crad=crad, Z=Z, functions=functions, E0=E0, shift=shift, scale=scale, source=ctx.path,
    )


def _function(ctx: _Ctx, fld: str, f, mu: int, nradmax: int, lmax: int, nd: int) -> GraceFSFunction:
    if not isinstance(f, dict):
        ctx.fail(fld, "expected a mapping")
    mu0 = ctx.integer(ctx.get(f, "mu0", f"{fld}.mu0"), f"{fld}.mu0")
    if mu0 != mu:
        ctx.fail(f"{fld}.mu0", f"is {mu0}, but the function is listed under species {mu}")
    rank = ctx.integer(ctx.get(f, "rank", f"{fld}.rank"), f"{fld}.rank", 1, LIMITS["rank"])
    ns = ctx.integer(ctx.get(f, "ns", f"{fld}.ns"), f"{fld}.ns", 1, nradmax)
    ls = tuple(ctx.ints(ctx.get(f, "ls", f"{fld}.ls"), f"{fld}.ls", rank, 0, lmax))
    cgs = ctx.reals(ctx.get(f, "gen_cgs", f"{fld}.gen_cgs"), f"{fld}.gen_cgs", maxlen=LIMITS["ms_combs"])
    if len(cgs) == 0:
        ctx.fail(f"{fld}.gen_cgs", "no m-combinations")
    ms = ctx.ints(ctx.get(f, "ms_combs", f"{fld}.ms_combs"), f"{fld}.ms_combs", len(cgs) * rank, -lmax, lmax)
    ms = np.asarray(ms, dtype=np.int64).reshape(len(cgs), rank)
    bad = np.abs(ms) > np.asarray(ls)[None, :]
    if np.any(bad):
        row = int(np.nonzero(bad.any(axis=1))[0][0])
        ctx.fail(f"{fld}.ms_combs", f"|m| > l in combination {ms[row].tolist()} (ls={list(ls)})")
    ndf = ctx.integer(ctx.get(f, "ndensity", f"{fld}.ndensity"), f"{fld}.ndensity", 1)
    if ndf != nd:
        ctx.fail(f"{fld}.ndensity", f"is {ndf}, emb_spec.params gives {nd} densities")
    coeff = ctx.reals(ctx.get(f, "coeff", f"{fld}.coeff"), f"{fld}.coeff", nd)
    return GraceFSFunction(mu0=mu0, rank=rank, ns=ns, ls=ls, ms_combs=ms, gen_cgs=cgs, coeff=coeff)


# ================================================================================== writing
def gracefs_to_dict(pot: GraceFSPotential) -> dict:
    """The YAML document of ``pot`` in the format :func:`read_gracefs` reads (the layout of
    GRACE-FS's ``saved_model.yaml``)."""
    funcs = {}
    for mu in range(pot.nelements):
        funcs[mu] = [
            {
                "mu0": int(f.mu0), "rank": int(f.rank), "ndensity": int(f.ndensity), "ns": int(f.ns),
                "ls": [int(x) for x in f.ls], "ms_combs": [int(x) for x in f.ms_combs.ravel()],
                "gen_cgs": [float(x) for x in f.gen_cgs], "coeff": [float(x) for x in f.coeff],
            }
            for f in pot.functions[mu]
        ]
    return {
        "elements": list(pot.elements),
        "E0": [float(x) for x in pot.E0],
        "nnorm": float(pot.nnorm),
        "shift": float(pot.shift),
        "scale": float(pot.scale),
        "emb_spec": {"type": pot.embedding, "params": [float(x) for x in pot.fs_parameters]},
        "radial_basis": {
            "radbasename": pot.radbasename,
            "cutoff": float(pot.rcut),
            "nradmax": int(pot.nradmax),
            "n_rad_base": int(pot.n_rad_base),
            "crad_shape": [int(x) for x in pot.crad.shape],
            "crad": [float(x) for x in pot.crad.ravel()],
            "Z_shape": [int(x) for x in pot.Z.shape],
            "Z": [float(x) for x in pot.Z.ravel()],
        },
        "functions": funcs,
    }


def write_gracefs(pot: GraceFSPotential, path) -> None:
    """Write ``pot`` as a GRACE-FS YAML file (floats at full precision; read back equal)."""
    from .._fs import write_atomic

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    text = yaml.dump(gracefs_to_dict(pot), Dumper=dumper, default_flow_style=None, sort_keys=False, width=120)
    if not write_atomic(Path(path), lambda fh: fh.write(text), suffix=".yaml"):
        raise ModelFileError(str(path), None, "cannot write the model file")
