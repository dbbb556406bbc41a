"""Validation shared by the PACE readers: field checks that raise
:class:`acegen.errors.ModelFileError` naming the file and the field, the YAML loader (PyYAML's
safe loader plus sequence-valued mapping keys such as ``[0, 1]:``), and the checks every
format's content passes through before it becomes a :class:`PacePotential`."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import yaml
from ase.data import atomic_numbers

from ...errors import ModelFileError
from .model import PacePotential

_ELEMENT_RE = re.compile(r"^[A-Z][a-z]?$")


_FLOAT_RE = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")


_INT_RE = re.compile(r"^[+-]?\d+$")

# ------------------------------------------------------------------------------ limits
# Every size and range the PACE readers accept (documented in docs/pace-formats-support.md,
# "Limits").  Sizes are checked before anything of that size is allocated; a count read from
# a file is also checked against what the rest of the file can hold.  The limits are far
# above what fitted potentials use (lmax <= 6, nradmax <= 20, nradbase <= 16, ndensity <= 4,
# rank <= 6, rcut <= 10 Å, 10^4 spline bins) and far below what would exhaust memory or time.
MAX_ELEMENTS = 118  # distinct chemical elements
MAX_LMAX = 20
MAX_NRAD = 100  # nradmax, nradbase
MAX_NDENSITY = 100
MAX_RANK = 10
MAX_RCUT = 100.0  # Å: cutoffs, inner cutoffs and their widths
MAX_SPLINE_BINS = 1_000_000  # rcut / deltaSplineBins per bond
MAX_RADPARAMETER = 100.0  # |λ| of the radial basis (exp(λ ...) must stay finite)
MAX_PREHC = 1e8  # |prehc| of the core repulsion (eV Å)
MAX_LAMBDAHC = 1000.0  # |lambdahc| of the core repulsion (1/Å)
MAX_FS_EXPONENT = 100.0  # |m| of the Finnis-Sinclair embedding ρ^m
MAX_MS_COMBS = 1_000_000  # m-combinations of one function
MAX_MS_ENUMERATION = 10_000_000  # m-combinations a B-basis conversion enumerates in all


class _Ctx:
    """Validation helpers that raise ModelFileError(path, field, message)."""

    def __init__(self, path):
        self.path = str(path)

    def fail(self, fld, msg):
        raise ModelFileError(self.path, fld, msg)

    def get(self, d, key, fld, default=...):
        if not isinstance(d, dict):
            self.fail(fld, "expected a mapping containing this field")
        if key not in d:
            if default is ...:
                self.fail(fld, "missing field")
            return default
        return d[key]

    def mapping(self, v, fld):
        if not isinstance(v, dict):
            self.fail(fld, f"expected a mapping, got {type(v).__name__}")
        return v

    def seq(self, v, fld, length=None):
        if isinstance(v, tuple):
            v = list(v)
        if not isinstance(v, list):
            self.fail(fld, f"expected a list, got {type(v).__name__}")
        if length is not None and len(v) != length:
            self.fail(fld, f"expected {length} entries, got {len(v)}")
        return v

    def real(self, v, fld, *, positive=False, nonneg=False, absmax=None):
        if isinstance(v, bool) or v is None:
            self.fail(fld, f"expected a number, got {v!r}")
        if isinstance(v, str):
            s = v.strip()
            if not _FLOAT_RE.match(s):
                if s.lower().lstrip("+-.") in ("nan", "inf", "infinity"):
                    self.fail(fld, f"non-finite number {v!r}")
                self.fail(fld, f"expected a number, got {v!r}")
            v = float(s)
        if not isinstance(v, (int, float)):
            self.fail(fld, f"expected a number, got {type(v).__name__}")
        try:
            x = float(v)
        except OverflowError:
            self.fail(fld, f"number {str(v)[:30]}... is out of range")
        if not math.isfinite(x):
            self.fail(fld, f"non-finite number {v!r}")
        if positive and not x > 0:
            self.fail(fld, f"must be positive, got {x!r}")
        if nonneg and x < 0:
            self.fail(fld, f"must be non-negative, got {x!r}")
        if absmax is not None and abs(x) > absmax:
            self.fail(fld, f"{x!r} exceeds the limit of {absmax!r} in magnitude")
        return x

    def integer(self, v, fld, *, lo=None, hi=None):
        if isinstance(v, bool):
            self.fail(fld, f"expected an integer, got {v!r}")
        if isinstance(v, str) and _INT_RE.match(v.strip()):
            if len(v.strip()) > 30:
                self.fail(fld, f"integer {v.strip()[:30]}... is out of range")
            v = int(v.strip())
        if not isinstance(v, int):
            self.fail(fld, f"expected an integer, got {str(v)[:40]}")
        if lo is not None and v < lo:
            self.fail(fld, f"must be >= {lo}, got {v}")
        if hi is not None and v > hi:
            self.fail(fld, f"must be <= {hi}, got {v}")
        return v

    def string(self, v, fld, choices=None):
        if not isinstance(v, str):
            self.fail(fld, f"expected a string, got {v!r}")
        if choices is not None and v not in choices:
            self.fail(fld, f"unknown value {v!r}; supported: {', '.join(choices)}")
        return v

    def reals(self, v, fld, length=None, **kw):
        v = self.seq(v, fld, length)
        return tuple(self.real(x, f"{fld}[{i}]", **kw) for i, x in enumerate(v))

    def ints(self, v, fld, length=None, **kw):
        v = self.seq(v, fld, length)
        return tuple(self.integer(x, f"{fld}[{i}]", **kw) for i, x in enumerate(v))

    def array3(self, v, fld, shape):
        n0, n1, n2 = shape
        v = self.seq(v, fld, n0)
        if n0 * n1 * n2 > MAX_NRAD * (MAX_LMAX + 1) * MAX_NRAD:
            self.fail(fld, f"shape {shape} exceeds the limits")
        out = np.zeros(shape)
        for a, row in enumerate(v):
            row = self.seq(row, f"{fld}[{a}]", n1)
            for b, col in enumerate(row):
                out[a, b, :] = self.reals(col, f"{fld}[{a}][{b}]", n2)
        return out

    def elements(self, v, fld):
        v = self.seq(v, fld)
        if not v:
            self.fail(fld, "no elements")
        out = []
        for i, e in enumerate(v):
            out.append(self.element(e, f"{fld}[{i}]"))
        if len(set(out)) != len(out):
            dup = sorted({e for e in out if out.count(e) > 1})
            self.fail(fld, f"duplicated element(s) {dup}")
        return tuple(out)

    def element(self, e, fld):
        if not isinstance(e, str) or not _ELEMENT_RE.match(e):
            self.fail(fld, f"invalid element symbol {e!r} (must match ^[A-Z][a-z]?$)")
        if atomic_numbers.get(e, 0) < 1:
            self.fail(fld, f"{e!r} is not a chemical element")
        return e


class _PaceYamlLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """PyYAML's safe loader, plus: sequence keys (``[0, 1]: ...``) become tuples, duplicate
    keys are an error."""


def _construct_mapping(loader, node, deep=False):
    loader.flatten_mapping(node)
    out = {}
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.SequenceNode):
            key = tuple(loader.construct_sequence(key_node, deep=True))
        else:
            key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, f"unhashable mapping key {key!r}", key_node.start_mark
            ) from None
        if key in out:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        out[key] = loader.construct_object(value_node, deep=deep)
    return out


_PaceYamlLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_text(ctx: _Ctx) -> str:
    try:
        return Path(ctx.path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        ctx.fail(None, f"not a text file ({exc.reason})")
    except OSError as exc:
        ctx.fail(None, f"cannot read file: {exc.strerror or exc}")


# ------------------------------------------------------------------------------ fast YAML
# A 100-element .yace is ~30 MB of YAML: PyYAML's C loader spends ~20 s building nodes and
# constructing Python objects.  yaml-rs (optional, the ``fast-yaml`` extra) builds the same
# objects in ~2 s.  It implements YAML 1.2's core schema, PyYAML YAML 1.1's, so it is used only
# for files of 64 KiB or more whose text has none of the plain-scalar forms the two schemas resolve
# differently (1.1 booleans yes/no/on/off, leading-zero / 0x / 0o / 0b / underscore /
# sexagesimal numbers, exponents without a dot or without a sign, timestamps, signed .5) and
# none of the constructs where the loaders' rules differ (tags, anchors, aliases, explicit and
# mapping keys, merge keys, block and quoted scalars, directives, tabs, control characters):
# on such text both give the same keys, values and types.  Anything else, and every file yaml-rs rejects, goes
# through PyYAML, so malformed files report exactly as before.
FAST_YAML_MIN_BYTES = 1 << 16  # smaller files parse in under 0.1 s with PyYAML (a 600 kB .yace: 0.8 s, yaml-rs 0.04 s)

# Each scan starts with a literal or a rare character, so that the whole check costs well
# under a second on 30 MB.
# tags, anchors, aliases, explicit keys, block and quoted scalars; tabs, control characters
# (PyYAML rejects some that yaml-rs accepts) and anything not ASCII
_UNSAFE_CHAR = re.compile(r"""[^\n\r\x20-\x7e]|[!&*?|>%@`"'\\=]""")
_UNSAFE_SCANS = (
    re.compile(r"<<|\n---|\n\.\.\.|}\s*:"),  # merge keys, documents, mapping keys
    re.compile(r"_(?<=\d_)|_\d"),  # underscores in numbers
    re.compile(r":(?<=\d:)\d"),  # sexagesimal numbers
    re.compile(r"-(?<=\d{4}-)\d"),  # timestamps
    re.compile(r"0(?<=[\s\[,{:]0)[\dxXoObB_]"),  # 1.1 octal and prefixed ints ...
    re.compile(r"0(?<=[\s\[,{:][-+]0)[\dxXoObB_]"),  # ... signed
    re.compile(r"\.(?<=[\s\[,{:][-+]\.)"),  # -.5: 1.2 float, 1.1 string
)
_EXPONENT = re.compile(r"[eE][-+]?\d")
_WORD = re.compile(r"[A-Za-z_]\w*")
_BOOL_1_1 = frozenset({"yes", "Yes", "YES", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF"})
_SEQ_KEY = re.compile(r"\]\s*:")
_INT_SEQ_KEY = re.compile(r"\[[-+\d, ]*\]\s*:")


def _yaml_1_1_differs(text: str) -> bool:
    """True where the text may hold something YAML 1.1 (PyYAML) and 1.2 (yaml-rs) read
    differently; conservative: a False is a guarantee, a True only sends the file to PyYAML."""
    if text.startswith(("---", "...", "%")) or _UNSAFE_CHAR.search(text):
        return True
    if any(r.search(text) for r in _UNSAFE_SCANS):
        return True
    for m in _EXPONENT.finditer(text):
        j = m.start() - 1
        if j < 0 or not (text[j].isdigit() or text[j] == "."):
            continue  # a letter e/E, not an exponent (E0:)
        if m.group()[1] not in "+-":
            return True  # 1.0e5: 1.1 string
        while j >= 0 and text[j].isdigit():
            j -= 1
        if j < 0 or text[j] != ".":
            return True  # 1e-5: 1.1 string
    if not _BOOL_1_1.isdisjoint(_WORD.findall(text)):
        return True
    # the only mapping keys that are collections: flat sequences of integers ([0, 1]:)
    return len(_SEQ_KEY.findall(text)) != len(_INT_SEQ_KEY.findall(text))


def _fast_yaml_module():
    try:
        import yaml_rs
    except ImportError:
        return None
    return yaml_rs


def _fast_yaml_load(text: str):
    """The document through yaml-rs, or None where PyYAML must read it (see above)."""
    if len(text) < FAST_YAML_MIN_BYTES:
        return None
    yaml_rs = _fast_yaml_module()
    if yaml_rs is None or _yaml_1_1_differs(text):
        return None
    try:
        data = yaml_rs.loads(text, parse_datetime=False)
    except Exception:  # noqa: BLE001 - PyYAML reads it again and reports the error
        return None
    return data if isinstance(data, dict) else None


def _load_yaml(ctx: _Ctx, text: str, *, fast: bool = True):
    if fast:
        data = _fast_yaml_load(text)
        if data is not None:
            return data
    loader = _PaceYamlLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        ctx.fail("yaml", f"invalid YAML: {exc}")
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        ctx.fail("yaml", f"invalid YAML: {exc}")
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        ctx.fail(None, f"top level must be a mapping, got {type(data).__name__}")
    return data


def _check_zbl_dcut(ctx, fld, dcut, inner_type):
    """ZBL is shifted to zero between rcut − dcut and rcut: dcut must be positive."""
    if inner_type == "zbl" and not dcut > 0:
        ctx.fail(fld, "must be positive for inner_cutoff_type 'zbl' (width of the ZBL outer switch)")


def _check_functions(ctx: _Ctx, elements, embeddings, bonds, functions):
    """Semantic checks of C-tilde functions against the embeddings and bonds."""
    nel = len(elements)
    for mu0, funcs in functions.items():
        nd = embeddings[mu0].ndensity
        for i, f in enumerate(funcs):
            fld = f"functions[{mu0}][{i}]"
            if f.mu0 != mu0:
                ctx.fail(f"{fld}.mu0", f"is {f.mu0}, but the function is listed under species {mu0}")
            if f.ndensity != nd:
                ctx.fail(f"{fld}.ndensity", f"is {f.ndensity}, embedding of species {mu0} has {nd}")
            for t, mu in enumerate(f.mus):
                if not 0 <= mu < nel:
                    ctx.fail(f"{fld}.mus[{t}]", f"species index {mu} out of range 0..{nel - 1}")
            if f.rank == 1:
                bond = bonds[(mu0, f.mus[0])]
                if f.ls[0] != 0:
                    ctx.fail(f"{fld}.ls", "rank-1 functions must have ls = [0]")
                if not 1 <= f.ns[0] <= bond.nradbase:
                    ctx.fail(f"{fld}.ns[0]", f"n={f.ns[0]} out of range 1..nradbase={bond.nradbase} of bond {mu0},{f.mus[0]}")
            else:
                for t, (mu, n, l) in enumerate(zip(f.mus, f.ns, f.ls)):
                    bond = bonds[(mu0, mu)]
                    if not 1 <= n <= bond.nradmax:
                        ctx.fail(f"{fld}.ns[{t}]", f"n={n} out of range 1..nradmax={bond.nradmax} of bond {mu0},{mu}")
                    if not 0 <= l <= bond.lmax:
                        ctx.fail(f"{fld}.ls[{t}]", f"l={l} exceeds lmax={bond.lmax} of bond {mu0},{mu}")
            ms = f.ms_combs
            ls = np.asarray(f.ls)
            if np.any(np.abs(ms) > ls[None, :]):
                row = int(np.nonzero(np.any(np.abs(ms) > ls[None, :], axis=1))[0][0])
                ctx.fail(f"{fld}.ms_combs", f"|m| > l in combination {ms[row].tolist()} (ls={f.ls})")
            if np.any(ms.sum(axis=1) != 0):
                row = int(np.nonzero(ms.sum(axis=1) != 0)[0][0])
                ctx.fail(f"{fld}.ms_combs", f"m-combination {ms[row].tolist()} does not sum to zero")


def _check_inner_type(ctx, bonds):
    """PACE has one inner cutoff type per potential."""
    first = bonds[min(bonds)].inner_cutoff_type
    for k in sorted(bonds):
        if bonds[k].inner_cutoff_type != first:
            ctx.fail(f"bonds[{k[0]},{k[1]}].inner_cutoff_type",
                     f"is {bonds[k].inner_cutoff_type!r}, but bond {min(bonds)} has {first!r}; it must be the same for all bonds")


def _check_ranges(ctx, delta, embeddings, bonds):
    """Range checks every reader's result passes (the readers check most fields as they read
    them, naming the field as written; this catches whatever reached the model another way)."""
    for mu in sorted(embeddings):
        e = embeddings[mu]
        if not 1 <= e.ndensity <= MAX_NDENSITY:
            ctx.fail(f"embeddings[{mu}].ndensity", f"{e.ndensity} is outside 1..{MAX_NDENSITY}")
        for p, m in enumerate(e.fs_parameters[1::2]):
            if abs(m) > MAX_FS_EXPONENT:
                ctx.fail(f"embeddings[{mu}].FS_parameters[{2 * p + 1}]",
                         f"exponent {m!r} exceeds the limit of {MAX_FS_EXPONENT} in magnitude")
    for k in sorted(bonds):
        b = bonds[k]
        fld = f"bonds[{k[0]},{k[1]}]"
        for name, v, hi in (("lmax", b.lmax, MAX_LMAX), ("nradmax", b.nradmax, MAX_NRAD),
                            ("nradbase", b.nradbase, MAX_NRAD)):
            if not 0 <= v <= hi:
                ctx.fail(f"{fld}.{name}", f"{v} is outside 0..{hi}")
        if not 0 < b.rcut <= MAX_RCUT:
            ctx.fail(f"{fld}.rcut", f"{b.rcut!r} Å is outside (0, {MAX_RCUT}] Å")
        for name, v in (("dcut", b.dcut), ("rcut_in", b.rcut_in), ("dcut_in", b.dcut_in)):
            if not 0 <= v <= MAX_RCUT:
                ctx.fail(f"{fld}.{name}", f"{v!r} Å is outside [0, {MAX_RCUT}] Å")
        for i, lam in enumerate(b.radparameters):
            if abs(lam) > MAX_RADPARAMETER:
                ctx.fail(f"{fld}.radparameters[{i}]", f"{lam!r} exceeds the limit of {MAX_RADPARAMETER} in magnitude")
        if abs(b.prehc) > MAX_PREHC:
            ctx.fail(f"{fld}.prehc", f"{b.prehc!r} exceeds the limit of {MAX_PREHC:g} in magnitude")
        if abs(b.lambdahc) > MAX_LAMBDAHC:
            ctx.fail(f"{fld}.lambdahc", f"{b.lambdahc!r} exceeds the limit of {MAX_LAMBDAHC:g} in magnitude")
        nbins = b.rcut / delta
        if nbins > MAX_SPLINE_BINS:
            ctx.fail("deltaSplineBins", f"{delta!r} Å gives {nbins:.3g} spline bins over the cutoff {b.rcut} Å of bond "
                     f"{k[0]},{k[1]} (at most {MAX_SPLINE_BINS})")
        if int(nbins) < 2:
            ctx.fail("deltaSplineBins", f"{delta!r} Å leaves fewer than two spline bins over the cutoff {b.rcut} Å "
                     f"of bond {k[0]},{k[1]}")


def _finish(ctx, elements, E0, delta, embeddings, bonds, functions) -> PacePotential:
    _check_ranges(ctx, delta, embeddings, bonds)
    _check_inner_type(ctx, bonds)
    _check_functions(ctx, elements, embeddings, bonds, functions)
    return PacePotential(
        elements=tuple(elements), E0=tuple(E0), delta_spline_bins=float(delta), embeddings=dict(embeddings),
        bonds=dict(bonds), functions={k: list(v) for k, v in sorted(functions.items())}, source=ctx.path,
    )
