"""Small synthetic ModelIRs, neighbour environments and an independent NumPy reference.

Used by test_c_backend.py and test_jit_cache.py.  The reference (``reference_compute``) is a
direct per-atom loop written from the model definition (docs of acegen.ir.model and
FORMATS.md §6): it evaluates every monomial as an explicit product (no product DAG), uses the
IR's own NumPy evaluators for R and Y, the gradient formula (G - l Y u)/r of a degree-l
homogeneous polynomial, and the embedding formulas re-derived here.
"""

from __future__ import annotations

import math

import numpy as np
import sympy as sp

from acegen.ir.model import (
    Channel,
    CoreRepulsion,
    Embedding,
    ModelIR,
    RadialBlock,
    SpeciesProgram,
    SplineTable,
)
from acegen.ir.slp import SLP, SLPBuilder

LMAX = 2


def angular_slp_l2() -> SLP:
    """Real Y_lm (Y_00 = 1 normalisation) for l <= 2 as homogeneous polynomials, with gradients."""
    b = SLPBuilder(inputs=("x", "y", "z"), wrt=("x", "y", "z"), prefix="a")
    x, y, z = (b.input(n) for n in ("x", "y", "z"))
    s3, s15, s5 = sp.sqrt(3), sp.sqrt(15), sp.sqrt(5)
    exprs = [
        sp.Integer(1),
        s3 * y,
        s3 * z,
        s3 * x,
        s15 * x * y,
        s15 * y * z,
        s5 / 2 * (2 * z**2 - x**2 - y**2),
        s15 * x * z,
        s15 / 2 * (x**2 - y**2),
    ]
    vals = [b.assign(e) for e in exprs]
    outs = list(vals)
    names = [f"Y{k}" for k in range(len(vals))]
    for w in ("x", "y", "z"):
        outs += [b.deriv(v, w) for v in vals]
        names += [f"dY{k}_{w}" for k in range(len(vals))]
    b.output(outs, names)
    return b.build()


def angular_slp(lmax: int = LMAX) -> SLP:
    """acegen.symbolic.ylm.ylm_slp(lmax) when it exists (and has the contracted shape), else ours."""
    try:
        from acegen.symbolic.ylm import ylm_slp  # type: ignore[import-not-found]

        slp = ylm_slp(lmax)
        if len(slp.inputs) == 3 and len(slp.outputs) == 4 * (lmax + 1) ** 2:
            return slp
    except (ImportError, TypeError):
        pass
    assert lmax == LMAX
    return angular_slp_l2()


def radial_slp(rc: float, nfunc: int, seed: int) -> SLP:
    """nfunc smooth radial functions vanishing at rc (with their r-derivatives)."""
    rng = np.random.default_rng(seed)
    b = SLPBuilder(inputs=("r",), wrt=("r",), prefix="q")
    r = b.input("r")
    t = b.assign(1 - r / rc)
    env = b.assign(t**2)
    vals = []
    for n in range(nfunc):
        a, w, c1 = rng.uniform(0.2, 1.0), rng.uniform(0.5, 2.0), rng.normal()
        e = b.assign(sp.exp(-a * r))
        vals.append(b.assign(e * env * (1 + c1 * sp.cos(w * r)) + sp.sqrt(r) * env**2 / (1 + r**2)))
    b.output(vals + [b.deriv(v, "r") for v in vals], [f"R{n}" for n in range(nfunc)] + [f"dR{n}" for n in range(nfunc)])
    return b.build()


def hermite_spline(rc: float, nfunc: int, h: float, seed: int) -> SplineTable:
    """C^1 cubic Hermite table of smooth functions vanishing at rc (so finite differences work)."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.3, 1.0, nfunc)
    w = rng.uniform(0.5, 2.0, nfunc)
    nbins = int(math.ceil(rc / h))
    knots = np.arange(nbins + 1) * h

    def f(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = r[:, None]
        s = np.clip(1 - r / rc, 0.0, None)
        v = np.exp(-a * r) * np.cos(w * r) * s**3
        dv = np.exp(-a * r) * (-a * np.cos(w * r) * s**3 - w * np.sin(w * r) * s**3 - 3 * np.cos(w * r) * s**2 / rc)
        return v, dv

    v, dv = f(knots)
    c = np.empty((nbins, nfunc, 4))
    f0, f1, d0, d1 = v[:-1], v[1:], dv[:-1] * h, dv[1:] * h
    c[..., 0] = f0
    c[..., 1] = d0
    c[..., 2] = 3 * (f1 - f0) - 2 * d0 - d1
    c[..., 3] = 2 * (f0 - f1) + d0 + d1
    return SplineTable(rcut=rc, h=h, coeffs=c)


def random_monomials(rng: np.random.Generator, n_A: int, count: int, max_order: int) -> list[tuple[int, ...]]:
    monos: set[tuple[int, ...]] = set()
    while len(monos) < count:
        k = int(rng.integers(1, max_order + 1))
        monos.add(tuple(sorted(rng.integers(0, n_A, size=k).tolist())))
    return sorted(monos, key=lambda m: (len(m), m))


def make_channels(
    rng: np.random.Generator, zjs: list[int], nfunc: dict[int, int], n: int, lmax: int
) -> tuple[Channel, ...]:
    chans = []
    off = 0
    for _ in range(n):
        zj = int(rng.choice(zjs))
        l = int(rng.integers(0, lmax + 1))
        chans.append(Channel(zj=zj, radial=int(rng.integers(0, nfunc[zj])), l=l, offset=off))
        off += 2 * l + 1
    return tuple(chans)


def make_model(
    seed: int = 0,
    embeddings: tuple[Embedding, ...] | None = None,
    n_monomials: int = 40,
    max_order: int = 4,
    name: str = "testmodel",
    lmax: int = LMAX,
    cores: tuple[CoreRepulsion, CoreRepulsion] | None = None,
) -> ModelIR:
    """Two species.  Bonds: (0,0) SLP, (0,1) spline, (1,0) SLP; (1,1) has no block.

    Species 0 has channels towards species 0 and 1, species 1 only towards species 0 (so a
    species-1 neighbour of a species-1 atom is ignored unless its core repulsion uses it).
    With ``cores``, every bond's last radial function is its core function φ_core and the
    bonds get an inner cutoff (r_in, delta_in) inside the sampled distances.
    """
    rng = np.random.default_rng(seed)
    if embeddings is None:
        embeddings = (
            Embedding("FinnisSinclairShiftedScaled", 2, (1.0, 1.0, 0.7, 0.5)),
            Embedding("FinnisSinclair", 2, (1.3, 1.0, -0.6, 0.75)),
        )
    core_args = [{}, {}, {}]
    if cores is not None:
        core_args = [
            {"core": 2, "r_in": 1.6, "delta_in": 0.4},
            {"core": 1, "r_in": 1.5, "delta_in": 0.3},
            {"core": 1, "r_in": 1.7, "delta_in": 0.5},
        ]
    radial = {
        (0, 0): RadialBlock(0, 0, rcut=4.5, nfunc=3, slp=radial_slp(4.5, 3, seed + 1), **core_args[0]),
        (0, 1): RadialBlock(0, 1, rcut=4.0, nfunc=2, spline=hermite_spline(4.0, 2, 0.05, seed + 2), **core_args[1]),
        (1, 0): RadialBlock(1, 0, rcut=3.7, nfunc=2, slp=radial_slp(3.7, 2, seed + 3), **core_args[2]),
    }
    species = []
    for zi, zjs in ((0, [0, 1]), (1, [0])):
        nf = {zj: radial[(zi, zj)].nfunc for zj in zjs}
        chans = make_channels(rng, zjs, nf, 5 if zi == 0 else 4, lmax)
        n_A = sum(c.size for c in chans)
        monos = random_monomials(rng, n_A, n_monomials, max_order)
        emb = embeddings[zi]
        coeffs = np.array([rng.normal(size=emb.ndensity) * 0.3**len(m) for m in monos])
        species.append(
            SpeciesProgram(zi=zi, channels=chans, monomials=tuple(monos), coeffs=coeffs, embedding=emb,
                           E0=float(rng.normal()), core=cores[zi] if cores else CoreRepulsion("none"))
        )
    return ModelIR(elements=("Cu", "Ni"), lmax=lmax, angular=angular_slp(lmax), radial=radial,
                   species=tuple(species), name=name)


def random_environment(
    seed: int, n_centres: int = 6, max_nb: int = 14, radius: float = 5.0, n_species: int = 2
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """species, offsets, nb_species, rij with neighbours in a ball of ``radius`` (some beyond cutoff)."""
    rng = np.random.default_rng(seed)
    species = rng.integers(0, n_species, n_centres).astype(np.int32)
    counts = rng.integers(0, max_nb + 1, n_centres)
    counts[0] = max_nb
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    n_pairs = int(offsets[-1])
    nb = rng.integers(0, n_species, n_pairs).astype(np.int32)
    d = rng.normal(size=(n_pairs, 3))
    d /= np.linalg.norm(d, axis=1)[:, None]
    r = rng.uniform(0.8, radius, n_pairs)
    return species, offsets, nb, d * r[:, None]


# -- independent reference -----------------------------------------------------------------
def _embedding(kind: str, params: tuple[float, ...], rho: np.ndarray) -> tuple[float, np.ndarray]:
    """E = sum_p w_p F(rho_p; m_p) and dE/drho_p, from FORMATS.md §6."""
    if kind == "linear":
        return float(rho[0]), np.array([1.0])
    e = 0.0
    d = np.zeros_like(rho)
    for p, x in enumerate(rho):
        w, m = params[2 * p], params[2 * p + 1]
        a = abs(x)
        if kind == "FinnisSinclair":
            W = 1e6
            lam = W ** (1 - m)
            if a > 1e-10:
                g = math.exp(-((W * a) ** 3))
                F = math.copysign((1 - g) * a**m + lam * g * a, x)
                dg = -3 * W**3 * a**2 * g
                dF = m * a ** (m - 1) * (1 - g) - a**m * dg + lam * (dg * a + g)
            else:
                F, dF = lam * x, lam
        else:
            if abs(m - 1) < 1e-10:
                F, dF = x, 1.0
            else:
                nu = 1 / m
                xo = nu ** (nu / (1 - nu)) * math.exp(-a)
                yo = nu ** (1 / (1 - nu)) * math.exp(-a)
                F = math.copysign((xo + a) ** m - yo, x)
                dF = yo + m * (1 - xo) * (xo + a) ** (m - 1)
        e += w * F
        d[p] = w * dF
    return e, d


def reference_compute(ir: ModelIR, species, offsets, nb, rij) -> tuple[np.ndarray, np.ndarray]:
    """Per-atom energies and dE_i/dr_ij by a direct loop (no product DAG)."""
    n = len(species)
    E = np.zeros(n)
    G = np.zeros((len(nb), 3))
    nY = (ir.lmax + 1) ** 2
    lofm = np.array([l for l in range(ir.lmax + 1) for _ in range(2 * l + 1)])
    for i in range(n):
        prog = ir.species[species[i]]
        A = np.zeros(prog.n_A)
        dA = np.zeros((prog.n_A, offsets[i + 1] - offsets[i], 3))  # dA/dr_ij
        for j, k in enumerate(range(offsets[i], offsets[i + 1])):
            blk = ir.radial.get((prog.zi, int(nb[k])))
            r = float(np.linalg.norm(rij[k]))
            if blk is None or r >= blk.rcut:
                continue
            u = rij[k] / r
            R, dR = blk.evaluate(np.array([r]))
            R, dR = R[0], dR[0]
            out = np.array([o.item() for o in ir.angular.evaluate(x=u[0], y=u[1], z=u[2])])
            Y = out[:nY]
            Gp = out[nY:].reshape(3, nY).T  # (nY, 3) gradient of the polynomial at u
            gY = (Gp - (lofm * Y)[:, None] * u[None, :]) / r
            for ch in prog.channels:
                if ch.zj != nb[k]:
                    continue
                for m in range(-ch.l, ch.l + 1):
                    lm = ch.l * ch.l + ch.l + m
                    A[ch.offset + ch.l + m] += R[ch.radial] * Y[lm]
                    dA[ch.offset + ch.l + m, j] += dR[ch.radial] * Y[lm] * u + R[ch.radial] * gY[lm]
        rho = np.zeros(prog.coeffs.shape[1])
        dE_dA = np.zeros(prog.n_A)
        terms = []
        for mono, c in zip(prog.monomials, prog.coeffs):
            rho += c * np.prod(A[list(mono)])
            terms.append((mono, c))
        e, drho = _embedding(prog.embedding.kind, prog.embedding.params, rho)
        E[i] = prog.E0 + e
        for mono, c in terms:
            wgt = float(drho @ c)
            for t in range(len(mono)):
                rest = list(mono[:t]) + list(mono[t + 1 :])
                dE_dA[mono[t]] += wgt * np.prod(A[rest])
        G[offsets[i] : offsets[i + 1]] = np.einsum("a,ajx->jx", dE_dA, dA)
    return E, G
