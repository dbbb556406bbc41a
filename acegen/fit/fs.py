"""Finnis–Sinclair fits: per-atom basis data from the C basis kernel and the residual model
of E_i = Σ_p w_p F(ρ_p(i); m_p), ρ_p(i) = c_p · B(i) (:class:`acegen.FSModel`).

**Per-atom basis data** (:func:`atom_basis`).  The generated basis kernel
(:mod:`acegen.fit.assembly_kernel`) sums over the centres it is given; called on *one* centre
i, with the neighbours of i renumbered 1..k (its own periodic images 0), it returns B(i)
(P values), −∂B(i)/∂r_a for a = i and every neighbour a of i, and i's share of the virial,
−Σ_j ∂B(i)/∂r_ij ⊗ r_ij.  :class:`AtomBasis` stores these per structure: ``B`` (n, P),
``G`` (S, 3, P) over the S (centre, atom) *slots* of the structure, the slots' centres and
atoms, and ``V`` (n, 3, 3, P) when virials are fitted.

**Residuals and Jacobian** (:class:`FSResidualModel`, the
:class:`acegen.fit.nonlinear.ResidualModel` of a Finnis–Sinclair fit).  Parameters
θ = (c_0, …, c_{P−1}) (density-major); with F'_p, F''_p the weighted derivatives
w_p F'(ρ_p; m_p), w_p F''(ρ_p; m_p) and g_p(s) = c_p · G(s):

    E        = Σ_i Σ_p w_p F(ρ_p(i))                       ∂E/∂c_{p,v}   = Σ_i F'_p(i) B_v(i)
    F_a      = Σ_{s→a} Σ_p F'_p(i_s) g_p(s)                ∂F_a/∂c_{p,v} = Σ_{s→a} [F''_p(i_s) B_v(i_s) g_p(s)
                                                                                    + F'_p(i_s) G_v(s)]
    V        = Σ_i Σ_p F'_p(i) c_p · V(i)                  ∂V/∂c_{p,v}   = Σ_i [F''_p(i) B_v(i) c_p · V(i)
                                                                                    + F'_p(i) V_v(i)]

(Σ_{s→a}: the slots whose atom is a), rows in the order of :func:`acegen.fit.data.assemble`
(E, the forces atom by atom, the 6 Voigt virial components), each times its row weight.

**Memory.**  Structures are processed in batches (``block_size`` structures); the per-atom
data of a batch take about 8·3·P·S bytes (S ≈ n_atoms × (1 + neighbours)).  They are kept
between solver iterations up to ``cache_gib`` (default 2 GiB) in all, and recomputed by the
kernel for the batches beyond; a batch's Jacobian is (rows × P·ndensity) doubles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sps

from ..errors import FitError, StructureError
from .data import RowMeta, _n_rows, voigt
from .embedding import Embedding
from .nonlinear import Residuals

__all__ = ["AtomBasis", "FSResidualModel", "atom_basis", "default_embedding_params"]

#: PACE/pacemaker's default exponents m_p of ndensity = 1..8 (w_p = 1).
_DEFAULT_M = (1.0, 0.5, 0.75, 0.25, 0.125, 0.375, 0.875, 2.0)


def default_embedding_params(ndensity: int) -> tuple[float, ...]:
    """(w_0, m_0, …) = (1, 1, 1, 0.5, 1, 0.75, 1, 0.25, …): the first density linear (m_0 = 1),
    the next ones with pacemaker's default exponents (up to 8 densities)."""
    if isinstance(ndensity, bool) or not isinstance(ndensity, int) or not 1 <= ndensity <= len(_DEFAULT_M):
        raise FitError(f"ndensity must be an integer in 1..{len(_DEFAULT_M)}, got {ndensity!r}")
    return tuple(x for m in _DEFAULT_M[:ndensity] for x in (1.0, m))


@dataclass
class AtomBasis:
    """Per-atom basis data of one structure (module docstring)."""

    B: np.ndarray             # (n, P) basis values B(i)
    G: np.ndarray             # (S, 3, P) −∂B(centre_s)/∂r_{atom_s}
    centre: np.ndarray        # (S,) centre of each slot
    atom: np.ndarray          # (S,) atom of each slot
    V: np.ndarray | None      # (n, 3, 3, P) −Σ_j ∂B(i)/∂r_ij ⊗ r_ij, or None
    scatter: sps.csr_matrix   # (n, S): 1 where atom_s = a

    @property
    def nbytes(self) -> int:
        return int(self.B.nbytes + self.G.nbytes + (0 if self.V is None else self.V.nbytes)
                   + self.centre.nbytes + self.atom.nbytes + self.scatter.data.nbytes * 3)


def atom_basis(kernel, elements, atoms, *, virial: bool = False) -> AtomBasis:
    """The :class:`AtomBasis` of ``atoms`` from a loaded :class:`~acegen.fit.assembly_kernel.BasisKernel`
    (one kernel call per centre, module docstring)."""
    from ..runtime.neighbours import build_neighbours, species_indices

    Z = species_indices(atoms, tuple(elements))
    n = len(atoms)
    nl = build_neighbours(atoms, float(np.max(kernel.rcut)))
    P = kernel.n_params
    B = np.empty((n, P))
    Gs, centres, slot_atoms = [], [], []
    V = np.empty((n, 3, 3, P)) if virial else None
    offsets = np.asarray(nl.offsets, dtype=np.int64)
    for i in range(n):
        lo, hi = int(offsets[i]), int(offsets[i + 1])
        js = np.asarray(nl.j[lo:hi], dtype=np.int64)
        others = js != i
        uniq, inv = np.unique(js[others], return_inverse=True)
        local = np.zeros(hi - lo, dtype=np.int64)
        local[others] = 1 + inv
        try:
            e, f, v = kernel.compute(Z[i:i + 1], np.array([0, hi - lo], dtype=np.int64), Z[js], local,
                                     nl.rij[lo:hi], 1 + len(uniq), forces=True, virial=virial, nthreads=1)
        except StructureError as err:  # the call numbers the centre 0 and its pairs from 0
            raise StructureError(f"centre atom {i} (neighbours {js.tolist()[:12]}"
                                 f"{' ...' if len(js) > 12 else ''}; pair k below is its k-th): {err}") from None
        B[i] = e
        Gs.append(f)
        centres.append(np.full(1 + len(uniq), i, dtype=np.int64))
        slot_atoms.append(np.concatenate([[i], uniq]).astype(np.int64))
        if virial:
            V[i] = v
    G = np.concatenate(Gs) if Gs else np.zeros((0, 3, P))
    centre = np.concatenate(centres) if centres else np.zeros(0, dtype=np.int64)
    atom = np.concatenate(slot_atoms) if slot_atoms else np.zeros(0, dtype=np.int64)
    S = len(atom)
    scatter = sps.csr_matrix((np.ones(S), (atom, np.arange(S))), shape=(n, S))
    return AtomBasis(B, G, centre, atom, V, scatter)


class FSResidualModel:
    """The :class:`~acegen.fit.nonlinear.ResidualModel` of a Finnis–Sinclair fit (module
    docstring): ``blocks`` lists of :class:`~acegen.fit.data.StructureData`, ``kernel`` a
    loaded basis kernel of ``elements``, ``embedding`` an :class:`acegen.fit.embedding.Embedding`.
    θ = coefficients (n_basis, P) flattened density-major (``theta_of`` / ``coefficients_of``)."""

    def __init__(self, blocks, kernel, elements, embedding: Embedding, *, cache_gib: float = 2.0):
        self.blocks = [list(b) for b in blocks]
        self.kernel = kernel
        self.elements = tuple(elements)
        self.embedding = embedding
        self.n_basis = int(kernel.n_params)
        self.ndensity = embedding.ndensity
        self.n_params = self.n_basis * self.ndensity
        self.cache_bytes = float(cache_gib) * float(1 << 30)
        self._cache: dict[tuple[int, int], AtomBasis] = {}
        self._cached = 0
        self._rows = [sum(_n_rows(s) for s in b) for b in self.blocks]

    # -------------------------------------------------------------- parameters
    def theta_of(self, coefficients: np.ndarray) -> np.ndarray:
        """(n_basis, P) coefficients → θ."""
        return np.asarray(coefficients, dtype=float).T.ravel().copy()

    def coefficients_of(self, theta: np.ndarray) -> np.ndarray:
        """θ → (n_basis, P) coefficients."""
        return np.asarray(theta, dtype=float).reshape(self.ndensity, self.n_basis).T.copy()

    def energy(self, atoms, theta: np.ndarray) -> float:
        """E − Σ E0 of ``atoms`` for parameters θ (dimer curves)."""
        ab = atom_basis(self.kernel, self.elements, atoms)
        return float(self.embedding(ab.B @ self.coefficients_of(theta))[0].sum())

    # -------------------------------------------------------------- protocol
    @property
    def n_batches(self) -> int:
        return len(self.blocks)

    def n_rows(self, batch: int) -> int:
        return self._rows[batch]

    def _atom_basis(self, b: int, k: int, s) -> AtomBasis:
        key = (b, k)
        ab = self._cache.get(key)
        if ab is None:
            ab = atom_basis(self.kernel, self.elements, s.atoms, virial=s.virial is not None)
            if self._cached + ab.nbytes <= self.cache_bytes:
                self._cache[key] = ab
                self._cached += ab.nbytes
        return ab

    def evaluate(self, theta: np.ndarray, batch: int, *, jacobian: bool = False) -> Residuals:
        C = self.coefficients_of(theta)
        structs = [(k, s) for k, s in enumerate(self.blocks[batch]) if _n_rows(s)]
        nrow = self._rows[batch]
        pred = np.empty(nrow)
        y = np.empty(nrow)
        w = np.empty(nrow)
        J = np.empty((nrow, self.n_params)) if jacobian else None
        st = np.empty(nrow, dtype=np.int64)
        kind = np.empty(nrow, dtype="<U1")
        comp = np.empty(nrow, dtype=np.int64)
        nat = np.empty(nrow, dtype=np.int64)
        ctype = np.empty(nrow, dtype=object)
        abs_ = [self._atom_basis(batch, k, s) for k, s in structs]
        # the embedding of every atom of the batch at once
        rho = [ab.B @ C for ab in abs_]
        E_at, d1, d2 = self.embedding(np.concatenate(rho) if rho else np.zeros((0, self.ndensity)))
        split = np.cumsum([len(r) for r in rho])[:-1]
        row = 0
        for (k, s), ab, e, a1, a2 in zip(structs, abs_, np.split(E_at, split), np.split(d1, split),
                                         np.split(d2, split)):
            r0 = row
            for p, jac, tgt, wt, kd in self._structure_rows(ab, s, C, e, a1, a2, jacobian):
                m = p.size
                pred[row:row + m] = p
                y[row:row + m] = tgt
                w[row:row + m] = wt
                kind[row:row + m] = kd
                comp[row:row + m] = np.arange(m)
                if jacobian:
                    J[row:row + m] = jac
                row += m
            st[r0:row], nat[r0:row], ctype[r0:row] = k, s.n_atoms, s.config_type
        r = w * (pred - y)
        if jacobian:
            J *= w[:, None]
        if not np.isfinite(r).all():
            bad = int(st[np.flatnonzero(~np.isfinite(r))[0]])
            raise FitError(f"structure {self.blocks[batch][bad].index}: non-finite prediction of the Finnis-Sinclair "
                           "model (the densities left the embedding's domain)")
        return Residuals(r, pred, y, w, RowMeta(st, kind, comp, nat, ctype), J)

    def _structure_rows(self, ab: AtomBasis, s, C, E_at, d1, d2, jacobian: bool) -> list:
        """[(pred, jacobian rows or None, targets, weight, kind)] of one structure (E, F, V);
        ``E_at``, ``d1``, ``d2``: the embedding and its weighted derivatives per atom."""
        P, D = self.n_basis, self.ndensity
        out = []
        if s.energy is not None:
            jac = (d1.T @ ab.B).reshape(1, D * P) if jacobian else None
            out.append((np.array([E_at.sum()]), jac, np.array([s.energy_target]), s.weights["E"], "E"))
        if s.forces is not None:
            n = s.n_atoms
            S = len(ab.atom)
            g = (ab.G.reshape(S * 3, P) @ C).reshape(S, 3, D)       # c_p · G(s)
            d1s, d2s = d1[ab.centre], d2[ab.centre]                 # (S, D)
            f = ab.scatter @ np.einsum("sxd,sd->sx", g, d1s)        # (n, 3)
            jac = None
            if jacobian:
                jac = np.empty((3 * n, D, P))
                slots = np.arange(S)
                rows3 = (3 * ab.atom[:, None] + np.arange(3)[None, :]).ravel()
                cols3 = np.repeat(ab.centre, 3)
                G2 = ab.G.reshape(S, 3 * P)
                for d in range(D):
                    # Σ_{s→a} F'_p(i_s) G(s)  and  Σ_{s→a} F''_p(i_s) g_p(s) B(i_s), as sparse products
                    t2 = sps.csr_matrix((d1s[:, d], (ab.atom, slots)), shape=(n, S)) @ G2
                    K = sps.csr_matrix(((d2s[:, d, None] * g[:, :, d]).ravel(), (rows3, cols3)), shape=(3 * n, n))
                    jac[:, d, :] = t2.reshape(3 * n, P) + K @ ab.B
                jac = jac.reshape(3 * n, D * P)
            out.append((f.ravel(), jac, s.forces.ravel(), s.weights["F"], "F"))
        if s.virial is not None:
            gv = np.einsum("ixyv,vd->ixyd", ab.V, C)                # (n, 3, 3, D)
            v = np.einsum("ixyd,id->xy", gv, d1)
            jac = None
            if jacobian:
                jv = (np.einsum("ixyd,id,iv->xydv", gv, d2, ab.B) + np.einsum("ixyv,id->xydv", ab.V, d1))
                jac = voigt(jv.reshape(3, 3, D * P))
            out.append((voigt(v), jac, voigt(s.virial), s.weights["V"], "V"))
        return out


# ---------------------------------------------------------------------------- the fit
#: ``solver_options`` of a non-linear fit (``acegen.fit(..., solver="lm" | "lbfgs")``).
NONLINEAR_OPTIONS = ("max_iter", "tol", "lam", "init_solver", "init_options", "max_jacobian_gib", "cache_gib")


def resolve_embedding(embedding: str, ndensity: int | None, embedding_params) -> tuple[str, tuple[float, ...]]:
    """Validated (kind, params) of a Finnis–Sinclair fit: ``embedding_params`` given, or the
    defaults of ``ndensity`` (:func:`default_embedding_params`; ndensity 2 when neither)."""
    from ..model import FS_EMBEDDINGS

    if embedding not in FS_EMBEDDINGS:
        raise FitError(f"embedding must be one of {list(FS_EMBEDDINGS)} (or None / 'linear' for a linear fit), "
                       f"got {embedding!r}")
    if embedding_params is None:
        return embedding, default_embedding_params(2 if ndensity is None else ndensity)
    try:
        params = tuple(float(x) for x in embedding_params)
    except (TypeError, ValueError):
        raise FitError(f"embedding_params must be numbers (w_0, m_0, w_1, m_1, ...), got {embedding_params!r}") from None
    if not params or len(params) % 2 or not all(np.isfinite(params)) or min(params[1::2]) <= 0 \
            or any(w == 0 for w in params[0::2]):
        raise FitError(f"embedding_params must be (w_0, m_0, w_1, m_1, ...) with finite values, w_p != 0 and "
                       f"m_p > 0, got {embedding_params!r}")
    if ndensity is not None and ndensity != len(params) // 2:
        raise FitError(f"ndensity = {ndensity!r} but embedding_params has {len(params) // 2} (w, m) pairs")
    return embedding, params


def initial_coefficients(theta_lin: np.ndarray, params: tuple[float, ...]) -> np.ndarray:
    """The start of a Finnis–Sinclair fit: c_0 = θ_lin / w_0 (the linear fit; exactly the linear
    model when m_0 = 1, since F(ρ; 1) = ρ), c_p = 0 for p > 0 (ρ_p = 0, F(0) = 0: those
    densities add nothing at the start, and their Jacobian columns w_p F'(0) B are not zero)."""
    C = np.zeros((len(theta_lin), len(params) // 2))
    C[:, 0] = np.asarray(theta_lin, dtype=float) / params[0]
    return C


def check_options(solver_options) -> dict:
    """The validated ``solver_options`` of a non-linear fit (:data:`NONLINEAR_OPTIONS`)."""
    opts = dict(solver_options or {})
    bad = sorted(k for k in opts if k not in NONLINEAR_OPTIONS)
    if bad:
        raise FitError(f"non-linear fit: unknown solver option {bad[0]!r} (allowed: {list(NONLINEAR_OPTIONS)})")
    cache = opts.get("cache_gib", 2.0)
    if isinstance(cache, bool) or not isinstance(cache, (int, float)) or not cache >= 0:
        raise FitError(f"non-linear fit: cache_gib must be a number >= 0, got {cache!r}")
    return opts


def predictions(model: FSResidualModel, theta: np.ndarray, block_size: int):
    """(pred, y, row meta) over every batch of ``model`` (structure indices of the whole set)."""
    preds, ys, metas = [], [], []
    for b in range(model.n_batches):
        res = model.evaluate(theta, b)
        preds.append(res.pred)
        ys.append(res.y)
        m = res.meta
        metas.append(RowMeta(m.structure + b * block_size, m.kind, m.component, m.natoms, m.config_type))
    meta = RowMeta(*(np.concatenate([getattr(m, f) for m in metas])
                     for f in ("structure", "kind", "component", "natoms", "config_type")))
    return np.concatenate(preds), np.concatenate(ys), meta


def score_fs(model: FSResidualModel, test_set, theta: np.ndarray, block_size: int):
    """(error table, row meta, predictions, targets) of the fitted θ on a test set."""
    from .errors_table import error_table

    tm = FSResidualModel(list(test_set.iter_blocks(block_size, 0)), model.kernel, model.elements, model.embedding,
                         cache_gib=0.0)
    pred, y, meta = predictions(tm, theta, block_size)
    return error_table(pred - y, meta), meta, pred, y
