"""Lowering of a multilayer ACE model to one :class:`~acegen.ir.model.ModelIR` per layer.

Every layer is folded like a single-layer model (c̃ = Cᵀθ on canonical monomials of A) and
compiled by the same pipeline (plan → templates → C / LLVM):

* layer 1 is a plain IR (no indicator inputs): E_i = φ_i^(1) for an inner layer (linear
  embedding, E0 = 0), the model's embedding and Eref for a one-layer model;
* a layer n > 1 is an IR with indicator inputs (``ModelIR.theta``): its radial blocks are
  SLPs of (r, θ_j) whose functions are R_c(r) T_k(θ_j), c over the plain block's functions
  (many-body then pair) and k = 0..kmax, function index k·nfunc + c (the pair functions are
  used with k = 0 only); every species has the on-site degree ``k0max`` and one coefficient
  column ψ_{p,k0} per density p and degree k0, so that ρ_p = Σ_k0 T_k0(θ_i) ψ_{p,k0} inside
  the embedding (:func:`acegen.ir.physics.theta_embedding_slp`).  Inner layers have the linear
  embedding, so the kernel's E_i is φ_i^(n).
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from ..basis import SQRT4PI, spec_radial_blocks
from ..ir.model import Channel, Embedding, ModelIR, RadialBlock, SpeciesProgram
from ..ir.slp import SLP

__all__ = ["layer_irs", "theta_radial_block", "unit_layer_fold"]


def theta_radial_block(block: RadialBlock, kmax: int) -> RadialBlock:
    """The block of functions R_c(r) T_k(θ_j), k = 0..kmax, index k·nfunc + c: an SLP of
    ``('r', 'theta')`` with outputs the values, then ∂/∂r, then ∂/∂θ_j."""
    slp, nf = block.slp, block.nfunc
    sym = lambda n: sp.Symbol(n, real=True)  # noqa: E731
    th = sym("theta")
    assigns = list(slp.assignments)
    T: list = [sp.Float(1.0), th]
    dT: list = [sp.Float(0.0), sp.Float(1.0)]
    for k in range(2, kmax + 1):
        assigns.append((f"cheb_T{k}", 2 * th * T[k - 1] - T[k - 2]))
        T.append(sym(f"cheb_T{k}"))
        assigns.append((f"cheb_dT{k}", 2 * T[k - 1] + 2 * th * dT[k - 1] - dT[k - 2]))
        dT.append(sym(f"cheb_dT{k}"))
    R = [sym(o) for o in slp.outputs[:nf]]
    dR = [sym(o) for o in slp.outputs[nf:]]
    vals, ders, dths = [], [], []
    for k in range(kmax + 1):
        for c in range(nf):
            vals.append(R[c] * T[k])
            ders.append(dR[c] * T[k])
            dths.append(R[c] * dT[k])
    outs = []
    for tag, exprs in (("Rt", vals), ("dRt", ders), ("dRth", dths)):
        for q, e in enumerate(exprs):
            assigns.append((f"{tag}{q}", e))
            outs.append(f"{tag}{q}")
    new = SLP(("r", "theta"), tuple(assigns), tuple(outs))
    return RadialBlock(block.zi, block.zj, block.rcut, nf * (kmax + 1), slp=new)


def _program(z0, chans, acc: dict, ncol: int, embedding: Embedding, E0: float, onsite) -> SpeciesProgram:
    monos = sorted(acc, key=lambda m: (len(m), m))
    coeffs = np.array([acc[m] for m in monos], dtype=float).reshape(len(monos), ncol)
    return SpeciesProgram(zi=z0, channels=tuple(chans), monomials=tuple(monos), coeffs=coeffs,
                          embedding=embedding, E0=E0, onsite=onsite)


def _fold_first(basis, mb, pr):
    """Per species of layer 1: (z0, channels, {monomial: (P,) weights})."""
    P = mb.shape[1]
    out = []
    for z0 in range(len(basis.elements)):
        chans, _ = basis.channels(z0)
        acc: dict = {}
        for kind, k, mono, c in basis.function_terms(z0):
            th = mb[k] if kind == "mb" else pr[k]
            if th.any():
                acc[mono] = acc.get(mono, np.zeros(P)) + th * c
        out.append((z0, chans, acc))
    return out


def _first_layer(basis, mb, pr, embedding: Embedding, eref: dict, name: str) -> ModelIR:
    """Layer 1: the plain fold, with P coefficient columns and the given embedding."""
    from ..symbolic.ylm import ylm_slp

    P = mb.shape[1]
    programs = [_program(z0, chans, acc, P, embedding, eref.get(basis.elements[z0], 0.0), None)
                for z0, chans, acc in _fold_first(basis, mb, pr)]
    return ModelIR(elements=basis.elements, lmax=basis.lmax, angular=ylm_slp(basis.lmax),
                   radial=basis.radial_blocks(), species=tuple(programs), name=name)


def _indicator_layer(basis, mb, pr, embedding: Embedding, eref: dict, name: str) -> ModelIR:
    """A layer n > 1 (see the module docstring)."""
    from ..symbolic.ylm import ylm_slp

    P = mb.shape[1]
    nk0 = basis.k0max + 1
    plain = spec_radial_blocks(basis.spec, basis.nmax)
    radial = {key: theta_radial_block(b, basis.kmax) for key, b in plain.items()}
    lmax = max(basis.lmax, 0)
    programs = [_program(z0, chans, acc, P * nk0, embedding, eref.get(basis.elements[z0], 0.0), basis.k0max)
                for z0, chans, acc in _fold_indicator(basis, mb, pr)]
    return ModelIR(elements=basis.elements, lmax=lmax, angular=ylm_slp(lmax), radial=radial,
                   species=tuple(programs), name=name)


def _fold_indicator(basis, mb, pr):
    """Per species of a layer n > 1: (z0, channels, {monomial: (P·(k0max + 1),) weights}),
    column p·(k0max + 1) + k0."""
    P = mb.shape[1]
    nk0 = basis.k0max + 1
    nf = basis.nmax + basis.npair
    out = []
    for z0 in range(len(basis.elements)):
        labels = set()
        for f in basis.functions:
            if f.z0 == z0:
                labels.update(("mb",) + tuple(fc) for fc in f.factors)
        for p in basis.pair:
            if p.z0 == z0:
                labels.add(("pair", p.zj, p.n, 0, 0))
        chans, lookup, off = [], {}, 0
        for lab in sorted(labels, key=lambda t: (t[1], t[0] != "mb", t[2], t[4], t[3])):
            kind, z, n, l, k = lab
            c = (n - 1) if kind == "mb" else basis.nmax + n - 1
            ch = Channel(zj=z, radial=k * nf + c, l=l, offset=off)
            chans.append(ch)
            lookup[lab] = ch
            off += ch.size
        acc: dict = {}
        for v, f in enumerate(basis.functions):
            if f.z0 != z0 or not mb[v].any():
                continue
            offs = [lookup[("mb",) + tuple(fc)].offset + fc[2] for fc in f.factors]
            for mt, c in zip(f.mtuples, f.coeffs):
                mono = tuple(sorted(o + int(m) for o, m in zip(offs, mt)))
                row = acc.setdefault(mono, np.zeros((P, nk0)))
                row[:, f.k0] += mb[v] * float(c)
        for q, p in enumerate(basis.pair):
            if p.z0 != z0 or not pr[q].any():
                continue
            mono = (lookup[("pair", p.zj, p.n, 0, 0)].offset,)
            row = acc.setdefault(mono, np.zeros((P, nk0)))
            row[:, 0] += pr[q] * SQRT4PI
        acc = {m: r.reshape(-1) for m, r in acc.items()}  # column p·(k0max + 1) + k0
        out.append((z0, tuple(chans), acc))
    return out


def layer_irs(basis, coefficients, name: str = "model") -> tuple[ModelIR, ...]:
    """One ModelIR per layer of the :class:`~acegen.multilayer.basis.MultilayerBasis` with
    ``coefficients`` (as :meth:`MultilayerBasis.split_params` takes them), named
    ``<name>_l<n>`` (n = 1, 2, ...)."""
    spec = basis.spec
    per_layer = basis.split_params(coefficients)
    last = spec.n_layers - 1
    out = []
    for n, (lb, (mb, pr)) in enumerate(zip(basis.layers, per_layer)):
        mb = np.asarray(mb, dtype=float).reshape(len(lb.functions), -1)
        pr = np.asarray(pr, dtype=float).reshape(len(lb.pair), -1)
        if n == last:
            emb = Embedding(spec.embedding, spec.ndensity, tuple(spec.embedding_params))
            eref = dict(spec.Eref)
        else:
            emb, eref = Embedding("linear", 1, (1.0, 1.0)), {}
        lname = f"{name}_l{n + 1}"  # model names have at most 48 characters
        build = _first_layer if n == 0 else _indicator_layer
        out.append(build(lb, mb, pr, emb, eref, lname))
    return tuple(out)


def unit_layer_fold(layer_basis, first: bool):
    """The fold of one layer with the identity as coefficients: per species (z0, channels,
    monomials, weights (n_monomials, n_params·(k0max + 1))), parameters many-body then pair, column
    v·(k0max + 1) + k0 (layer 1: column v) the weight of the monomial in basis function v with
    on-site degree k0.  The multilayer fit (:mod:`acegen.fit.multilayer`) evaluates every basis
    function of a layer from it."""
    n_many, n_pair = len(layer_basis.functions), len(layer_basis.pair)
    eye = np.eye(n_many + n_pair)
    fold = _fold_first if first else _fold_indicator
    ncol = (n_many + n_pair) * (1 if first else layer_basis.k0max + 1)
    out = []
    for z0, chans, acc in fold(layer_basis, eye[:n_many], eye[n_many:]):
        monos = sorted(acc, key=lambda m: (len(m), m))
        W = np.array([acc[m] for m in monos], dtype=float).reshape(len(monos), ncol)
        out.append((z0, tuple(chans), tuple(monos), W))
    return out
