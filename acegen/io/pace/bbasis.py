"""Reader of pacemaker's B-basis ``.yaml`` files and their conversion to the C-tilde form
(:func:`bbasis_to_ctilde`), following PACE's own construction: generalised Clebsch–Gordan
coefficients along PACE's binary coupling tree (:mod:`acegen.symbolic.clebsch_gordan`), half
basis with doubled coefficients, permutation compression, merging of equal (mus, ns, ls)."""

from __future__ import annotations

from dataclasses import replace
import math

import numpy as np

from ...symbolic.clebsch_gordan import ms_cg_list
from .checks import (
    MAX_LAMBDAHC,
    MAX_LMAX,
    MAX_MS_COMBS,
    MAX_MS_ENUMERATION,
    MAX_NDENSITY,
    MAX_NRAD,
    MAX_PREHC,
    MAX_RADPARAMETER,
    MAX_RANK,
    MAX_RCUT,
    MAX_SPLINE_BINS,
    _check_zbl_dcut,
    _Ctx,
    _finish,
    _load_yaml,
    _read_text,
)
from .yace import _fs_parameters
from .model import (
    EMBEDDINGS,
    INNER_CUTOFF_TYPES,
    RADIAL_BASES,
    BBasisPotential,
    BFunctionSpec,
    BRadialSpec,
    BSpeciesBlock,
    PaceBond,
    PaceEmbedding,
    PaceFunction,
    PacePotential,
)


def read_bbasis_yaml(path) -> BBasisPotential:
    """Read a B-basis ``.yaml`` file (pacemaker output) into :class:`BBasisPotential`."""
    ctx = _Ctx(path)
    data = _load_yaml(ctx, _read_text(ctx))
    glob = ctx.mapping(ctx.get(data, "global", "global"), "global")
    delta = ctx.real(ctx.get(glob, "DeltaSplineBins", "global.DeltaSplineBins"), "global.DeltaSplineBins", positive=True)
    species = ctx.seq(ctx.get(data, "species", "species"), "species")
    if not species:
        ctx.fail("species", "no species blocks")
    meta = data.get("metadata", {})
    if not isinstance(meta, dict):
        ctx.fail("metadata", "expected a mapping")
    blocks = tuple(_read_bblock(ctx, f"species[{i}]", b) for i, b in enumerate(species))
    for i, b in enumerate(blocks):
        if b.radial is not None and b.radial.rcut / delta > MAX_SPLINE_BINS:
            ctx.fail("global.DeltaSplineBins", f"{delta!r} Å gives {b.radial.rcut / delta:.3g} spline bins over the cutoff "
                     f"{b.radial.rcut} Å of species[{i}] (at most {MAX_SPLINE_BINS})")
    names = [b.name for b in blocks]
    for i, b in enumerate(blocks):
        if names.count(b.name) > 1:
            ctx.fail(f"species[{i}].speciesblock", f"duplicated species block {b.name!r}")
    return BBasisPotential(delta_spline_bins=delta, blocks=blocks, metadata=dict(meta), source=ctx.path)


def _read_bblock(ctx: _Ctx, fld: str, b) -> BSpeciesBlock:
    ctx.mapping(b, fld)
    name = ctx.string(ctx.get(b, "speciesblock", f"{fld}.speciesblock"), f"{fld}.speciesblock")
    elems = tuple(name.split())
    if not elems:
        ctx.fail(f"{fld}.speciesblock", "empty species block name")
    for i, e in enumerate(elems):
        ctx.element(e, f"{fld}.speciesblock[{i}]")
    nspec = len(set(elems))
    one = nspec == 1
    ndensity = npoti = fs = rho = drho = None
    if one:
        ndensity = ctx.integer(ctx.get(b, "ndensityi", f"{fld}.ndensityi"), f"{fld}.ndensityi", lo=1, hi=MAX_NDENSITY)
        npoti = ctx.string(ctx.get(b, "npoti", f"{fld}.npoti"), f"{fld}.npoti", EMBEDDINGS)
        fs = _fs_parameters(ctx, ctx.get(b, "parameters", f"{fld}.parameters"), f"{fld}.parameters", ndensity)
        rho = ctx.real(ctx.get(b, "rho_core_cut", f"{fld}.rho_core_cut", 100000.0), f"{fld}.rho_core_cut")
        drho = ctx.real(ctx.get(b, "drho_core_cut", f"{fld}.drho_core_cut", 250.0), f"{fld}.drho_core_cut", nonneg=True)
    radial = None
    radkeys = ("nradmaxi", "nradbaseij", "radbase", "radparameters", "radcoefficients", "rcutij", "dcutij")
    if "lmaxi" in b:
        lmax = ctx.integer(b["lmaxi"], f"{fld}.lmaxi", lo=0, hi=MAX_LMAX)
        nradmax = ctx.integer(ctx.get(b, "nradmaxi", f"{fld}.nradmaxi"), f"{fld}.nradmaxi", lo=0, hi=MAX_NRAD)
        nradbase = ctx.integer(ctx.get(b, "nradbaseij", f"{fld}.nradbaseij"), f"{fld}.nradbaseij", lo=0, hi=MAX_NRAD)
        radbase = ctx.string(ctx.get(b, "radbase", f"{fld}.radbase"), f"{fld}.radbase", RADIAL_BASES)
        radparameters = ctx.reals(ctx.get(b, "radparameters", f"{fld}.radparameters"), f"{fld}.radparameters",
                                  absmax=MAX_RADPARAMETER)
        if not radparameters:
            ctx.fail(f"{fld}.radparameters", "needs at least one value")
        rc = ctx.get(b, "radcoefficients", f"{fld}.radcoefficients")
        shape = (nradmax, lmax + 1, nradbase)
        rc_list = ctx.seq(rc, f"{fld}.radcoefficients")
        if rc_list and not isinstance(rc_list[0], (list, tuple)):
            # old flat layout: for k: for n: for l
            flat = ctx.reals(rc_list, f"{fld}.radcoefficients", nradmax * (lmax + 1) * nradbase)
            crad = np.asarray(flat, dtype=float).reshape(nradbase, nradmax, lmax + 1).transpose(1, 2, 0).copy()
        else:
            crad = ctx.array3(rc_list, f"{fld}.radcoefficients", shape)
        radial = BRadialSpec(
            radbase=radbase, radparameters=radparameters, nradbase=nradbase, nradmax=nradmax, lmax=lmax,
            radcoefficients=crad,
            rcut=ctx.real(ctx.get(b, "rcutij", f"{fld}.rcutij"), f"{fld}.rcutij", positive=True, absmax=MAX_RCUT),
            dcut=ctx.real(ctx.get(b, "dcutij", f"{fld}.dcutij"), f"{fld}.dcutij", nonneg=True, absmax=MAX_RCUT),
        )
    else:
        for k in radkeys:
            if k in b:
                ctx.fail(f"{fld}.lmaxi", f"radial basis is partially defined ({k!r} given without 'lmaxi')")
    core = None
    if "core-repulsion" in b:
        cr = ctx.reals(b["core-repulsion"], f"{fld}.core-repulsion", 2)
        if abs(cr[0]) > MAX_PREHC or abs(cr[1]) > MAX_LAMBDAHC:
            ctx.fail(f"{fld}.core-repulsion", f"{list(cr)} exceeds the limits ({MAX_PREHC:g}, {MAX_LAMBDAHC:g}) in magnitude")
        core = (cr[0], cr[1])
    ict = ctx.string(b.get("inner_cutoff_type", "density"), f"{fld}.inner_cutoff_type", INNER_CUTOFF_TYPES)
    r_in = ctx.real(b.get("r_in", 0.0), f"{fld}.r_in", nonneg=True, absmax=MAX_RCUT)
    delta_in = ctx.real(b.get("delta_in", 0.0), f"{fld}.delta_in", nonneg=True, absmax=MAX_RCUT)
    nbody = ctx.seq(ctx.get(b, "nbody", f"{fld}.nbody", []), f"{fld}.nbody")
    funcs = tuple(_read_bfunc(ctx, f"{fld}.nbody[{i}]", f, elems) for i, f in enumerate(nbody))
    return BSpeciesBlock(
        name=name, elements=elems, ndensity=ndensity, npoti=npoti, fs_parameters=fs, rho_core_cut=rho,
        drho_core_cut=drho, radial=radial, core_repulsion=core, inner_cutoff_type=ict, r_in=r_in, delta_in=delta_in,
        functions=funcs,
    )


def _read_bfunc(ctx: _Ctx, fld: str, f, block_elems) -> BFunctionSpec:
    ctx.mapping(f, fld)
    typ = ctx.string(ctx.get(f, "type", f"{fld}.type"), f"{fld}.type")
    els = tuple(typ.split())
    if len(els) < 2:
        ctx.fail(f"{fld}.type", f"needs a central element and at least one neighbour, got {typ!r}")
    for i, e in enumerate(els):
        ctx.element(e, f"{fld}.type[{i}]")
    if els[0] != block_elems[0]:
        ctx.fail(f"{fld}.type", f"central element {els[0]} differs from the block's {block_elems[0]}")
    for e in els[1:]:
        if e not in block_elems:
            ctx.fail(f"{fld}.type", f"element {e} is not in the block's elements {list(block_elems)}")
    rank = len(els) - 1
    if rank > MAX_RANK:
        ctx.fail(f"{fld}.type", f"rank {rank} exceeds the limit of {MAX_RANK}")
    nr = ctx.ints(ctx.get(f, "nr", f"{fld}.nr"), f"{fld}.nr", rank, lo=1, hi=MAX_NRAD)
    nl = ctx.ints(ctx.get(f, "nl", f"{fld}.nl"), f"{fld}.nl", rank, lo=0, hi=MAX_LMAX)
    lint = ctx.ints(f.get("lint", []), f"{fld}.lint", max(rank - 2, 0), lo=0, hi=MAX_RANK * MAX_LMAX)
    c_raw = ctx.get(f, "c", f"{fld}.c")
    c = ctx.reals(c_raw if isinstance(c_raw, list) else [c_raw], f"{fld}.c")
    skip = f.get("skip", False)
    if not isinstance(skip, bool):
        ctx.fail(f"{fld}.skip", f"expected true/false, got {skip!r}")
    _validate_ls_lint(ctx, fld, nl, lint)
    return BFunctionSpec(elements=els, nr=nr, nl=nl, lint=lint, c=c, skip=skip)


def _validate_ls_lint(ctx, fld, ls, lint):
    """PACE's ``validate_ls_LS``: coupling-tree relations between ls and intermediate L's."""
    rank = len(ls)
    if rank == 1 and ls[0] != 0:
        ctx.fail(f"{fld}.nl", "rank-1 functions must have nl = [0]")
    if rank == 2 and ls[0] != ls[1]:
        ctx.fail(f"{fld}.nl", f"rank-2 functions need equal l's, got {list(ls)}")
    if rank in (3, 5) and lint[-1] != ls[-1]:
        ctx.fail(f"{fld}.lint", f"last lint {lint[-1]} must equal last nl {ls[-1]}")
    if rank == 4 or rank >= 6:
        if lint[-1] != lint[-2]:
            ctx.fail(f"{fld}.lint", f"last two lint values must be equal, got {list(lint)}")
    if sum(ls) % 2:
        ctx.fail(f"{fld}.nl", f"sum of l's must be even, got {list(ls)}")


def _compress(mus, ns, ls, ms_cgs):
    """PACE's ``order_and_compress_b_basis_function``: sort the factors of every m-combination
    by (mu, n, l, m, position), sum equal combinations, drop |c| < 1e-15; applied only if it
    reduces the number of combinations."""
    rank = len(mus)
    acc: dict[tuple[int, ...], float] = {}
    order = None
    for ms, c in ms_cgs:
        v = sorted((mus[r], ns[r], ls[r], ms[r], r) for r in range(rank))
        if order is None:
            order = v
        key = tuple(t[3] for t in v)
        acc[key] = acc.get(key, 0.0) + c
    acc = {k: v for k, v in acc.items() if abs(v) >= 1e-15}
    if len(ms_cgs) - len(acc) > 0:
        mus = tuple(t[0] for t in order)
        ns = tuple(t[1] for t in order)
        ls = tuple(t[2] for t in order)
        ms_cgs = sorted(acc.items())
    return mus, ns, ls, ms_cgs


def _sort_key(f: PaceFunction):
    """PACE's ``compare``: rank, mu0, mus, ns, ls, number of m-combinations, m-combinations."""
    return (f.rank, f.mu0, f.mus, f.ns, f.ls, f.num_ms_combs, tuple(f.ms_combs.ravel().tolist()))


def bbasis_to_ctilde(bb: BBasisPotential) -> PacePotential:
    """Convert a B-basis potential to PACE's C-tilde form (= ``pace_yaml2yace``).

    Elements are ordered alphabetically (as PACE does); pair parameters of a 2-species block
    ``A B`` are used for A–B and, if there is no ``B A`` block with its own radial basis, for
    B–A as well.  ``E0`` is zero (the B-basis format has none).
    """
    ctx = _Ctx(bb.source)
    elements = tuple(sorted({e for b in bb.blocks for e in b.elements}))
    index = {e: i for i, e in enumerate(elements)}
    nel = len(elements)

    embeddings = {}
    for i, b in enumerate(bb.blocks):
        if len(b.species) == 1:
            mu = index[b.elements[0]]
            if mu in embeddings:
                ctx.fail(f"species[{i}].ndensityi", f"embedding of {b.elements[0]} is defined twice")
            embeddings[mu] = PaceEmbedding(
                ndensity=b.ndensity, fs_parameters=b.fs_parameters, npoti=b.npoti, rho_core_cut=b.rho_core_cut,
                drho_core_cut=b.drho_core_cut,
            )
    for mu in range(nel):
        if mu not in embeddings:
            ctx.fail("species", f"no single-element block (embedding) for {elements[mu]}")

    # pair blocks: radial basis and core repulsion, completed from the dual block
    pair_blocks: dict[tuple[str, str], tuple[int, BSpeciesBlock]] = {}
    for i, b in enumerate(bb.blocks):
        sp = b.species
        if len(sp) == 1:
            pair_blocks[(sp[0], sp[0])] = (i, b)
        elif len(sp) == 2:
            pair_blocks[(sp[0], sp[1])] = (i, b)
    ict_all = {b.inner_cutoff_type for _, b in pair_blocks.values()}
    if len(ict_all) > 1:
        i, b = next(v for v in pair_blocks.values() if v[1].inner_cutoff_type != sorted(ict_all)[0])
        ctx.fail(f"species[{i}].inner_cutoff_type", f"must be identical in all 1- and 2-species blocks, found {sorted(ict_all)}")
    bonds = {}
    for a in elements:
        for c in elements:
            own = pair_blocks.get((a, c))
            dual = pair_blocks.get((c, a))
            src = own if own is not None and own[1].radial is not None else dual
            if src is None or src[1].radial is None:
                ctx.fail("species", f"radial basis of the pair {a}-{c} is defined in no species block")
            rad = src[1].radial
            core_src = own if own is not None and own[1].core_repulsion is not None else dual
            if core_src is not None and core_src[1].core_repulsion is not None:
                core_blk = core_src[1]
                prehc, lamhc = core_blk.core_repulsion
            else:
                core_blk = own[1] if own is not None else src[1]
                prehc, lamhc = 0.0, 0.0
            if own is not None and dual is not None and own[1].radial is not None and dual[1].radial is not None:
                _check_dual(ctx, own, dual)
            _check_zbl_dcut(ctx, f"species[{src[0]}].dcutij", rad.dcut, core_blk.inner_cutoff_type)
            bonds[(index[a], index[c])] = PaceBond(
                radbasename=rad.radbase, radparameters=rad.radparameters, nradbase=rad.nradbase, nradmax=rad.nradmax,
                lmax=rad.lmax, crad=rad.radcoefficients, rcut=rad.rcut, dcut=rad.dcut, prehc=prehc, lambdahc=lamhc,
                rcut_in=core_blk.r_in, dcut_in=core_blk.delta_in, inner_cutoff_type=core_blk.inner_cutoff_type,
            )

    # B functions -> half-basis (ms, gen-CG) lists, compressed, grouped by (mu0, mus, ns, ls)
    groups: dict[tuple, dict[tuple[int, ...], np.ndarray]] = {}
    bfuncs: dict[int, list] = {mu: [] for mu in range(nel)}
    for bi, b in enumerate(bb.blocks):
        mu0_block = index[b.elements[0]]
        nd = embeddings[mu0_block].ndensity
        for fi, fs in enumerate(b.functions):
            fld = f"species[{bi}].nbody[{fi}]"
            if fs.skip:
                continue
            if len(fs.c) != nd:
                ctx.fail(f"{fld}.c", f"has {len(fs.c)} coefficients, the embedding of {b.elements[0]} has {nd} densities")
            mus = tuple(index[e] for e in fs.elements[1:])
            for t, mu in enumerate(mus):
                bond = bonds[(mu0_block, mu)]
                if fs.rank == 1:
                    if fs.nr[t] > bond.nradbase:
                        ctx.fail(f"{fld}.nr", f"n={fs.nr[t]} exceeds nradbase={bond.nradbase} of {b.elements[0]}-{elements[mu]}")
                else:
                    if fs.nr[t] > bond.nradmax:
                        ctx.fail(f"{fld}.nr", f"n={fs.nr[t]} exceeds nradmax={bond.nradmax} of {b.elements[0]}-{elements[mu]}")
                    if fs.nl[t] > bond.lmax:
                        ctx.fail(f"{fld}.nl", f"l={fs.nl[t]} exceeds lmax={bond.lmax} of {b.elements[0]}-{elements[mu]}")
            bfuncs[mu0_block].append((mus, fs))
    # the half basis enumerates Π_t (2 l_t + 1) m-combinations per function: bound the work first
    total = 0
    for bi, b in enumerate(bb.blocks):
        for fi, fs in enumerate(b.functions):
            n = math.prod(2 * l + 1 for l in fs.nl)
            if n > MAX_MS_COMBS:
                ctx.fail(f"species[{bi}].nbody[{fi}].nl", f"{list(fs.nl)} spans {n} m-combinations (at most {MAX_MS_COMBS})")
            total += 0 if fs.skip else n
    if total > MAX_MS_ENUMERATION:
        ctx.fail("species", f"the B functions span {total} m-combinations in all (at most {MAX_MS_ENUMERATION})")

    projections: dict[int, list[PaceFunction]] = {mu: [] for mu in range(nel)}
    for mu0, lst in bfuncs.items():
        # B functions for the projections (extrapolation grade): rank 1 first, else file order
        for mus, fs in sorted(lst, key=lambda t: t[1].rank != 1):
            mus2, ns2, ls2, ms_cgs2 = _compress(mus, tuple(fs.nr), tuple(fs.nl), ms_cg_list(fs.nl, fs.lint))
            projections[mu0].append(PaceFunction(
                mu0=mu0, rank=len(mus2), mus=mus2, ns=ns2, ls=ls2,
                ms_combs=np.array([ms for ms, _ in ms_cgs2], dtype=np.int64).reshape(-1, len(mus2)),
                ctildes=np.array([[g] for _, g in ms_cgs2], dtype=float).reshape(-1, 1)))
    for mu0, lst in bfuncs.items():
        # PACE sorts the B functions (rank, mus, ns, ls, ...) before compressing and grouping
        items = []
        for mus, fs in lst:
            ms_cgs = ms_cg_list(fs.nl, fs.lint)
            items.append((fs.rank, mus, fs.nr, fs.nl, len(ms_cgs), ms_cgs, fs.c))
        items.sort(key=lambda t: (t[0], t[1], t[2], t[3], t[4], tuple(m for ms, _ in t[5] for m in ms)))
        for rank, mus, ns, ls, _, ms_cgs, c in items:
            mus2, ns2, ls2, ms_cgs2 = _compress(mus, ns, ls, ms_cgs)
            acc = groups.setdefault((mu0, mus2, ns2, ls2), {})
            cvec = np.asarray(c, dtype=float)
            for ms, g in ms_cgs2:
                if ms in acc:
                    acc[ms] = acc[ms] + cvec * g
                else:
                    acc[ms] = cvec * g
    functions: dict[int, list[PaceFunction]] = {mu: [] for mu in range(nel)}
    for (mu0, mus, ns, ls), acc in groups.items():
        keys = sorted(acc)
        functions[mu0].append(
            PaceFunction(mu0=mu0, rank=len(mus), mus=mus, ns=ns, ls=ls, ms_combs=np.array(keys, dtype=np.int64),
                         ctildes=np.array([acc[k] for k in keys]))
        )
    for mu0 in functions:
        functions[mu0].sort(key=_sort_key)
    pot = _finish(ctx, elements, (0.0,) * nel, bb.delta_spline_bins, embeddings, bonds, functions)
    return replace(pot, bfunctions=projections, bbasis=bb)


def _check_dual(ctx, own, dual):
    (i, a), (_, b) = own, dual
    ra, rb = a.radial, b.radial
    same = (
        (ra.radbase, ra.radparameters, ra.nradbase, ra.nradmax, ra.lmax, ra.rcut, ra.dcut)
        == (rb.radbase, rb.radparameters, rb.nradbase, rb.nradmax, rb.lmax, rb.rcut, rb.dcut)
        and np.array_equal(ra.radcoefficients, rb.radcoefficients)
    )
    if not same:
        ctx.fail(f"species[{i}].radcoefficients", f"radial basis of blocks {a.name!r} and {b.name!r} is inconsistent")
