"""Reader of PACE's ``.yace`` files (YAML, C-tilde form)."""

from __future__ import annotations

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
    _check_zbl_dcut,
    _Ctx,
    _finish,
    _load_yaml,
    _read_text,
)
from .model import EMBEDDINGS, INNER_CUTOFF_TYPES, RADIAL_BASES, PaceBond, PaceEmbedding, PaceFunction, PacePotential


def read_yace(path) -> PacePotential:
    """Read a C-tilde ``.yace`` file (``ACECTildeBasisSet::load_yaml`` layout)."""
    ctx = _Ctx(path)
    data = _load_yaml(ctx, _read_text(ctx))
    return _yace_from_dict(ctx, data)


def _yace_from_dict(ctx: _Ctx, data: dict) -> PacePotential:
    elements = ctx.elements(ctx.get(data, "elements", "elements"), "elements")
    nel = len(elements)
    E0 = ctx.reals(ctx.get(data, "E0", "E0"), "E0", nel)
    delta = ctx.real(ctx.get(data, "deltaSplineBins", "deltaSplineBins"), "deltaSplineBins", positive=True)

    emb_in = ctx.mapping(ctx.get(data, "embeddings", "embeddings"), "embeddings")
    embeddings = {}
    for key, e in emb_in.items():
        mu = ctx.integer(key, f"embeddings[{key!r}]", lo=0, hi=nel - 1)
        fld = f"embeddings[{mu}]"
        ctx.mapping(e, fld)
        nd = ctx.integer(ctx.get(e, "ndensity", f"{fld}.ndensity"), f"{fld}.ndensity", lo=1, hi=MAX_NDENSITY)
        embeddings[mu] = PaceEmbedding(
            ndensity=nd,
            fs_parameters=_fs_parameters(ctx, ctx.get(e, "FS_parameters", f"{fld}.FS_parameters"), f"{fld}.FS_parameters", nd),
            npoti=ctx.string(ctx.get(e, "npoti", f"{fld}.npoti"), f"{fld}.npoti", EMBEDDINGS),
            rho_core_cut=ctx.real(ctx.get(e, "rho_core_cutoff", f"{fld}.rho_core_cutoff"), f"{fld}.rho_core_cutoff"),
            drho_core_cut=ctx.real(
                ctx.get(e, "drho_core_cutoff", f"{fld}.drho_core_cutoff"), f"{fld}.drho_core_cutoff", nonneg=True
            ),
        )
    for mu in range(nel):
        if mu not in embeddings:
            ctx.fail(f"embeddings[{mu}]", f"missing embedding of element {elements[mu]}")

    bonds_in = ctx.mapping(ctx.get(data, "bonds", "bonds"), "bonds")
    bonds = {}
    for key, b in bonds_in.items():
        if not (isinstance(key, tuple) and len(key) == 2):
            ctx.fail(f"bonds[{key!r}]", "bond key must be a pair [mu_i, mu_j]")
        mi = ctx.integer(key[0], f"bonds[{key!r}]", lo=0, hi=nel - 1)
        mj = ctx.integer(key[1], f"bonds[{key!r}]", lo=0, hi=nel - 1)
        bonds[(mi, mj)] = _acejl_bond(ctx, f"bonds[{mi},{mj}]", b, data) or _bond_from_yaml(ctx, f"bonds[{mi},{mj}]", b)
    for mi in range(nel):
        for mj in range(nel):
            if (mi, mj) not in bonds:
                ctx.fail(f"bonds[{mi},{mj}]", f"missing bond {elements[mi]}-{elements[mj]}")

    funcs_in = ctx.mapping(ctx.get(data, "functions", "functions"), "functions")
    functions = {mu: [] for mu in range(nel)}
    for key, lst in funcs_in.items():
        mu = ctx.integer(key, f"functions[{key!r}]", lo=0, hi=nel - 1)
        lst = ctx.seq(lst, f"functions[{mu}]")
        functions[mu] = [_function_from_yaml(ctx, f"functions[{mu}][{i}]", f) for i, f in enumerate(lst)]
    return _finish(ctx, elements, E0, delta, embeddings, bonds, functions)


def _acejl_bond(ctx: _Ctx, fld: str, b, data: dict):
    """ACEpotentials.jl bonds (``radbasename: ACE.jl.base``, see :mod:`acegen.io.acejl`); None otherwise."""
    if isinstance(b, dict) and b.get("radbasename") == "ACE.jl.base":
        from ..acejl import acejl_bond_from_yaml

        return acejl_bond_from_yaml(ctx, fld, b, data)
    return None


def _bond_from_yaml(ctx: _Ctx, fld: str, b) -> PaceBond:
    ctx.mapping(b, fld)
    name = ctx.string(ctx.get(b, "radbasename", f"{fld}.radbasename"), f"{fld}.radbasename")
    if name.startswith("ACE.jl"):
        ctx.fail(f"{fld}.radbasename", f"ACE.jl radial tables ({name!r}) are not supported")
    ctx.string(name, f"{fld}.radbasename", RADIAL_BASES)
    nradmax = ctx.integer(ctx.get(b, "nradmax", f"{fld}.nradmax"), f"{fld}.nradmax", lo=0, hi=MAX_NRAD)
    lmax = ctx.integer(ctx.get(b, "lmax", f"{fld}.lmax"), f"{fld}.lmax", lo=0, hi=MAX_LMAX)
    nradbase = ctx.integer(ctx.get(b, "nradbasemax", f"{fld}.nradbasemax"), f"{fld}.nradbasemax", lo=0, hi=MAX_NRAD)
    radparameters = ctx.reals(ctx.get(b, "radparameters", f"{fld}.radparameters"), f"{fld}.radparameters",
                              absmax=MAX_RADPARAMETER)
    if not radparameters:
        ctx.fail(f"{fld}.radparameters", "needs at least one value")
    crad = ctx.array3(
        ctx.get(b, "radcoefficients", f"{fld}.radcoefficients"), f"{fld}.radcoefficients", (nradmax, lmax + 1, nradbase)
    )
    rcut = ctx.real(ctx.get(b, "rcut", f"{fld}.rcut"), f"{fld}.rcut", positive=True, absmax=MAX_RCUT)
    dcut = ctx.real(ctx.get(b, "dcut", f"{fld}.dcut"), f"{fld}.dcut", nonneg=True, absmax=MAX_RCUT)
    rcut_in = ctx.real(ctx.get(b, "rcut_in", f"{fld}.rcut_in", 0.0), f"{fld}.rcut_in", nonneg=True, absmax=MAX_RCUT)
    dcut_in = ctx.real(ctx.get(b, "dcut_in", f"{fld}.dcut_in", 0.0), f"{fld}.dcut_in", nonneg=True, absmax=MAX_RCUT)
    ict = ctx.string(
        ctx.get(b, "inner_cutoff_type", f"{fld}.inner_cutoff_type", "density"), f"{fld}.inner_cutoff_type",
        INNER_CUTOFF_TYPES,
    )
    _check_zbl_dcut(ctx, f"{fld}.dcut", dcut, ict)
    return PaceBond(
        radbasename=name, radparameters=radparameters, nradbase=nradbase, nradmax=nradmax, lmax=lmax, crad=crad,
        rcut=rcut, dcut=dcut,
        prehc=ctx.real(ctx.get(b, "prehc", f"{fld}.prehc"), f"{fld}.prehc", absmax=MAX_PREHC),
        lambdahc=ctx.real(ctx.get(b, "lambdahc", f"{fld}.lambdahc"), f"{fld}.lambdahc", absmax=MAX_LAMBDAHC),
        rcut_in=rcut_in, dcut_in=dcut_in, inner_cutoff_type=ict,
    )


def _function_from_yaml(ctx: _Ctx, fld: str, f) -> PaceFunction:
    ctx.mapping(f, fld)
    mu0 = ctx.integer(ctx.get(f, "mu0", f"{fld}.mu0"), f"{fld}.mu0", lo=0)
    rank = ctx.integer(ctx.get(f, "rank", f"{fld}.rank"), f"{fld}.rank", lo=1, hi=MAX_RANK)
    nd = ctx.integer(ctx.get(f, "ndensity", f"{fld}.ndensity"), f"{fld}.ndensity", lo=1, hi=MAX_NDENSITY)
    nms = ctx.integer(ctx.get(f, "num_ms_combs", f"{fld}.num_ms_combs"), f"{fld}.num_ms_combs", lo=1, hi=MAX_MS_COMBS)
    mus = ctx.ints(ctx.get(f, "mus", f"{fld}.mus"), f"{fld}.mus", rank, lo=0, hi=MAX_ELEMENTS - 1)
    ns = ctx.ints(ctx.get(f, "ns", f"{fld}.ns"), f"{fld}.ns", rank, lo=1, hi=MAX_NRAD)
    ls = ctx.ints(ctx.get(f, "ls", f"{fld}.ls"), f"{fld}.ls", rank, lo=0, hi=MAX_LMAX)
    ms = ctx.ints(ctx.get(f, "ms_combs", f"{fld}.ms_combs"), f"{fld}.ms_combs", rank * nms, lo=-MAX_LMAX, hi=MAX_LMAX)
    ct = ctx.reals(ctx.get(f, "ctildes", f"{fld}.ctildes"), f"{fld}.ctildes", nd * nms)
    return PaceFunction(mu0=mu0, rank=rank, mus=mus, ns=ns, ls=ls, ms_combs=ms, ctildes=ct)


def _fs_parameters(ctx: _Ctx, v, fld: str, nd: int) -> tuple[float, ...]:
    """(w_0, m_0, w_1, m_1, ...): 2 nd finite numbers, exponents within MAX_FS_EXPONENT."""
    fs = ctx.reals(v, fld, 2 * nd)
    for i in range(1, len(fs), 2):
        if abs(fs[i]) > MAX_FS_EXPONENT:
            ctx.fail(f"{fld}[{i}]", f"exponent {fs[i]!r} exceeds the limit of {MAX_FS_EXPONENT} in magnitude")
    return fs
