"""Reader of PACE's legacy ``.ace`` files (whitespace-separated text, C-tilde form)."""

from __future__ import annotations

import re

import numpy as np

from .checks import (
    MAX_ELEMENTS,
    MAX_FS_EXPONENT,
    MAX_LAMBDAHC,
    MAX_LMAX,
    MAX_MS_COMBS,
    MAX_NDENSITY,
    MAX_NRAD,
    MAX_PREHC,
    MAX_RADPARAMETER,
    MAX_RANK,
    MAX_RCUT,
    _Ctx,
    _finish,
    _read_text,
)
from .model import EMBEDDINGS, PaceBond, PaceEmbedding, PaceFunction, PacePotential


# whitespace as str.isspace() sees it (the regular expression module uses the same Unicode
# whitespace test for str patterns)
_WS = re.compile(r"\s*")
_TOKEN = re.compile(r"\s*(\S+)")


class _Scanner:
    """Whitespace-driven token reader mimicking the fscanf format of ``ACECTildeBasisSet::load``."""

    def __init__(self, ctx: _Ctx, text: str):
        self.ctx = ctx
        self.s = text
        self.i = 0

    def _ws(self):
        self.i = _WS.match(self.s, self.i).end()

    def peek_literal(self, lit: str) -> bool:
        """Is ``lit`` next (after whitespace)?  ``peek_literal("")`` asks whether anything is left."""
        self._ws()
        return self.i < len(self.s) and self.s.startswith(lit, self.i)

    def literal(self, lit: str, fld: str):
        """Match ``lit`` (whitespace inside ``lit`` matches any amount of whitespace)."""
        for part in lit.split():
            self._ws()
            if not self.s.startswith(part, self.i):
                got = self.s[self.i : self.i + 30].split("\n")[0]
                self.ctx.fail(fld, f"expected {lit!r}, found {got!r}" if got else f"expected {lit!r}, file is truncated")
            self.i += len(part)

    def token(self, fld: str) -> str:
        m = _TOKEN.match(self.s, self.i)
        if m is None:
            self.i = len(self.s)
            self.ctx.fail(fld, "unexpected end of file (truncated)")
        self.i = m.end()
        return m.group(1)

    def real(self, fld: str, **kw) -> float:
        return self.ctx.real(self.token(fld), fld, **kw)

    def integer(self, fld: str, **kw) -> int:
        return self.ctx.integer(self.token(fld), fld, **kw)

    def tokens_left(self) -> int:
        """An upper bound of the tokens left: each needs a character and a separator."""
        return (len(self.s) - self.i + 1) // 2

    def count(self, n: int, per: int, fld: str, what: str) -> int:
        """Check that ``n`` items of at least ``per`` tokens each fit in the rest of the file
        (before a loop or an allocation of that size)."""
        if n * per > self.tokens_left():
            self.ctx.fail(fld, f"{n} {what} cannot fit in the rest of the file (truncated or corrupt size)")
        return n

    def reals(self, n: int, fld: str) -> np.ndarray:
        """``n`` whitespace-separated numbers (``n`` already checked with :meth:`count`)."""
        return np.array([self.real(fld) for _ in range(n)], dtype=float)

    def keyed_int(self, key: str, fld: str, **kw) -> int:
        """``key=VALUE`` (value may be glued to ``=`` or separated by whitespace)."""
        self.literal(key + "=", fld)
        return self.integer(fld, **kw)


def read_ace(path) -> PacePotential:
    """Read a legacy C-tilde ``.ace`` text file (``ACECTildeBasisSet::load``).

    One radial basis type, one embedding (applied to every element), inner cutoff type
    ``density``.  ``crad`` is stored k-outermost (``for k: for n: for l``).
    """
    ctx = _Ctx(path)
    text = _read_text(ctx)
    lines = text.splitlines(keepends=True)
    start = 0
    while start < len(lines) and not lines[start].lstrip().startswith("nelements="):
        if lines[start].strip() and not lines[start].lstrip().startswith("#"):
            ctx.fail("nelements", f"expected 'nelements=[number]', found {lines[start].strip()[:40]!r}")
        start += 1
    if start == len(lines):
        ctx.fail("nelements", "missing 'nelements=' line")
    sc = _Scanner(ctx, "".join(lines[start:]))

    nel = sc.keyed_int("nelements", "nelements", lo=1, hi=MAX_ELEMENTS)
    sc.count(nel, 1, "nelements", "element symbols")
    sc.literal("elements:", "elements")
    elements = ctx.elements([sc.token(f"elements[{i}]") for i in range(nel)], "elements")
    lmax = sc.keyed_int("lmax", "lmax", lo=0, hi=MAX_LMAX)
    if sc.peek_literal("embedding-function:"):
        sc.literal("embedding-function:", "embedding-function")
        npoti = ctx.string(sc.token("embedding-function"), "embedding-function", EMBEDDINGS)
        explicit = True
    else:
        npoti, explicit = "FinnisSinclair", False
    nfs = sc.integer("FS parameters", lo=2, hi=2 * MAX_NDENSITY)
    sc.count(nfs, 1, "FS parameters", "FS parameters")
    sc.literal("FS parameters:", "FS parameters")
    fs = tuple(sc.real(f"FS parameters[{i}]", absmax=MAX_FS_EXPONENT if i % 2 else None) for i in range(nfs))
    if nfs % 2:
        ctx.fail("FS parameters", f"expected an even number of parameters, got {nfs}")
    if not explicit and any(m != 1.0 for m in fs[1::2]):
        ctx.fail("embedding-function", "missing for a non-linear embedding (FinnisSinclair would be assumed)")
    sc.literal("core energy-cutoff parameters:", "core energy-cutoff parameters")
    rho_cuts = [
        (sc.real(f"core energy-cutoff parameters[{mu}].rho_core_cut"),
         sc.real(f"core energy-cutoff parameters[{mu}].drho_core_cut", nonneg=True))
        for mu in range(nel)
    ]
    E0 = [0.0] * nel
    if sc.peek_literal("E0:"):
        sc.literal("E0:", "E0")
        E0 = [sc.real(f"E0[{mu}]") for mu in range(nel)]
    sc.literal("radbasename=", "radbasename")
    radbasename = sc.token("radbasename")
    if radbasename.startswith("ACE.jl"):
        ctx.fail("radbasename", f"ACE.jl radial tables ({radbasename!r}) are not supported")
    ctx.string(radbasename, "radbasename", ("ChebExpCos", "ChebPow"))
    nradbase = sc.keyed_int("nradbase", "nradbase", lo=0, hi=MAX_NRAD)
    nradmax = sc.keyed_int("nradmax", "nradmax", lo=0, hi=MAX_NRAD)
    sc.literal("cutoffmax=", "cutoffmax")
    sc.real("cutoffmax", positive=True)
    sc.literal("deltaSplineBins=", "deltaSplineBins")
    delta = sc.real("deltaSplineBins", positive=True)
    pairs = [(i, j) for i in range(nel) for j in range(nel)]
    sc.literal("core repulsion parameters:", "core repulsion parameters")
    core = {p: (sc.real(f"core repulsion parameters[{p[0]},{p[1]}].prehc", absmax=MAX_PREHC),
                sc.real(f"core repulsion parameters[{p[0]},{p[1]}].lambdahc", absmax=MAX_LAMBDAHC)) for p in pairs}
    sc.literal("radparameter=", "radparameter")
    lam = {p: sc.real(f"radparameter[{p[0]},{p[1]}]", absmax=MAX_RADPARAMETER) for p in pairs}
    sc.literal("cutoff=", "cutoff")
    rcut = {p: sc.real(f"cutoff[{p[0]},{p[1]}]", positive=True, absmax=MAX_RCUT) for p in pairs}
    sc.literal("dcut=", "dcut")
    dcut = {p: sc.real(f"dcut[{p[0]},{p[1]}]", nonneg=True, absmax=MAX_RCUT) for p in pairs}
    sc.literal("crad=", "crad")
    ncrad = nradbase * nradmax * (lmax + 1)
    sc.count(ncrad * len(pairs), 1, "crad", "radial coefficients")
    bonds = {}
    for p in pairs:
        # stored k-outermost: for k: for n: for l
        crad = sc.reals(ncrad, f"crad[{p[0]},{p[1]}]").reshape(nradbase, nradmax, lmax + 1).transpose(1, 2, 0)
        bonds[p] = PaceBond(
            radbasename=radbasename, radparameters=(lam[p],), nradbase=nradbase, nradmax=nradmax, lmax=lmax,
            crad=crad, rcut=rcut[p], dcut=dcut[p], prehc=core[p][0], lambdahc=core[p][1], rcut_in=0.0, dcut_in=0.0,
            inner_cutoff_type="density",
        )
    rankmax = sc.keyed_int("rankmax", "rankmax", lo=1, hi=MAX_RANK)
    ndensitymax = sc.keyed_int("ndensitymax", "ndensitymax", lo=1, hi=MAX_NDENSITY)
    if len(fs) != 2 * ndensitymax:
        ctx.fail("FS parameters", f"expected 2*ndensitymax = {2 * ndensitymax} parameters, got {len(fs)}")
    sc.keyed_int("num_c_tilde_max", "num_c_tilde_max", lo=0)
    sc.keyed_int("num_ms_combinations_max", "num_ms_combinations_max", lo=0)
    embeddings = {
        mu: PaceEmbedding(ndensity=ndensitymax, fs_parameters=fs, npoti=npoti, rho_core_cut=rho_cuts[mu][0],
                          drho_core_cut=rho_cuts[mu][1])
        for mu in range(nel)
    }
    functions = {mu: [] for mu in range(nel)}
    for section in ("total_basis_size_rank1", "total_basis_size"):
        sc.literal(section + ":", section)
        sizes = [sc.integer(f"{section}[{mu}]", lo=0) for mu in range(nel)]
        # a function takes at least 9 whitespace-separated chunks (header, groups, one combination)
        sc.count(sum(sizes), 9, section, "basis functions")
        for mu in range(nel):
            for i in range(sizes[mu]):
                f = _read_ace_function(sc, f"{section}[{mu}].function[{i}]", rankmax)
                if (f.rank == 1) != (section == "total_basis_size_rank1"):
                    ctx.fail(f"{section}[{mu}].function[{i}].rank", f"rank {f.rank} in section {section}")
                if f.mu0 != mu:
                    ctx.fail(f"{section}[{mu}].function[{i}].mu0", f"is {f.mu0}, expected {mu}")
                functions[mu].append(f)
    if sc.peek_literal(""):
        ctx.fail("end of file", f"unexpected trailing content {sc.s[sc.i:sc.i + 30]!r}")
    # rank-1 functions first, as PACE stores them
    return _finish(ctx, elements, E0, delta, embeddings, bonds, functions)


def _read_ace_function(sc: _Scanner, fld: str, rankmax: int) -> PaceFunction:
    ctx = sc.ctx
    sc.literal("ctilde_basis_func:", fld)

    def kv(key):
        tok = sc.token(f"{fld}.{key}")
        if not tok.startswith(key + "="):
            ctx.fail(f"{fld}.{key}", f"expected '{key}=...', found {tok!r}")
        return ctx.integer(tok[len(key) + 1 :], f"{fld}.{key}")

    rank = kv("rank")
    if not 1 <= rank <= rankmax:
        ctx.fail(f"{fld}.rank", f"rank {rank} out of range 1..rankmax={rankmax}")
    nd = kv("ndens")
    if not 1 <= nd <= MAX_NDENSITY:
        ctx.fail(f"{fld}.ndens", f"{nd} is outside 1..{MAX_NDENSITY}")
    mu0 = kv("mu0")

    def group(key, **kw):
        sc.literal(f"{key}=(", f"{fld}.{key}")
        vals = tuple(sc.integer(f"{fld}.{key}[{t}]", **kw) for t in range(rank))
        sc.literal(")", f"{fld}.{key}")
        return vals

    mus, ns, ls = group("mu", lo=0, hi=MAX_ELEMENTS - 1), group("n", lo=1, hi=MAX_NRAD), group("l", lo=0, hi=MAX_LMAX)
    nms = sc.keyed_int("num_ms", f"{fld}.num_ms", lo=1, hi=MAX_MS_COMBS)
    sc.count(nms, rank + nd, f"{fld}.num_ms", "m-combinations")
    ms, ct = [], []
    for k in range(nms):
        sc.literal("<", f"{fld}.ms_combs[{k}]")
        ms.append([sc.integer(f"{fld}.ms_combs[{k}]", lo=-MAX_LMAX, hi=MAX_LMAX) for _ in range(rank)])
        sc.literal(">:", f"{fld}.ms_combs[{k}]")
        ct.append([sc.real(f"{fld}.ctildes[{k}]") for _ in range(nd)])
    return PaceFunction(mu0=mu0, rank=rank, mus=mus, ns=ns, ls=ls, ms_combs=ms, ctildes=ct)
