"""Plain NumPy reference evaluator of multilayer ACE models, written from the equations of
docs/multilayer.md (Bochkarev et al. 2022), independent of the IR and of every kernel:

    A_i^(n)[z, n, k, l, m] = Σ_{j: Z_j = z} R_n(r_ij) Y_lm(r̂_ij) T_k(θ_j^(n))      (T_k(θ^(1)) = δ_k0)
    B_v^(n)(i)             = T_k0(θ_i^(n)) Σ_M C_{v,M} Π_t A_i^(n)[factor_t, M_t]
    φ_i^(p,n)              = Σ_v c_v^(p,n) B_v^(n)(i) + Σ c^(p,n)_pair P_i^(n)    (p = 1 in inner layers)
    θ_i^(n+1)              = tanh(φ_i^(1,n))
    E_i                    = Eref(Z_i) + Σ_p w_p F(φ_i^(p,n_layers); m_p)       (linear: φ_i^(1,n_layers))

with PACE's embeddings F (FinnisSinclair: sign(ρ)[(1 − g)|ρ|^m + W^(1−m) g |ρ|],
g = exp(−(W|ρ|)³), W = 1e6, and W^(1−m) ρ for |ρ| <= 1e-10; FinnisSinclairShiftedScaled:
sign(ρ)((x_off + |ρ|)^m − y_off), x_off = ν^(ν/(1−ν)) e^−|ρ|, y_off = ν^(1/(1−ν)) e^−|ρ|, ν = 1/m,
the identity for m = 1).

Every step after the one-particle functions runs in complex arithmetic, so forces and stress
come from the complex-step derivative (Squire & Trapp 1998): perturbing the pair vectors by
i·h·t (h = 1e-30) gives Im E / h = dE/dr · t to round-off, with no subtractive cancellation.
The radial functions and the Y_lm enter through their values and exact derivatives
(f(x + i h t) = f(x) + i h f'(x)·t + O(h²)), from :mod:`acegen.symbolic.radial` and
:func:`acegen.symbolic.ylm.ylm_numpy`.  One direction per atomic coordinate (forces) and per
strain component (stress): slow, exact, meant as the oracle of compiled kernels.
"""

from __future__ import annotations

import numpy as np

from ..errors import SpecError, StructureError

H = 1e-30  # complex step
FS_W = 1.0e6


def embed(kind: str, params, rho):
    """E = Σ_p w_p F(ρ_p; m_p) per atom; ``rho`` (n_atoms, P), real or complex (complex-step
    safe: |ρ| is taken as sign(Re ρ) ρ)."""
    if kind == "linear":
        return rho[:, 0]
    E = np.zeros(rho.shape[0], dtype=rho.dtype)
    for p in range(rho.shape[1]):
        w, m = params[2 * p], params[2 * p + 1]
        x = rho[:, p]
        sgn = np.where(x.real < 0, -1.0, 1.0)
        a = sgn * x
        if kind == "FinnisSinclair":
            small = a.real <= 1e-10
            a_safe = np.where(small, 1.0, a)
            g = np.exp(-((FS_W * a_safe) ** 3))
            full = (1 - g) * a_safe**m + FS_W ** (1 - m) * g * a_safe
            F = np.where(small, FS_W ** (1 - m) * x, sgn * full)
        elif kind == "FinnisSinclairShiftedScaled":
            if abs(m - 1.0) < 1e-10:
                F = x
            else:
                nu = 1.0 / m
                ea = np.exp(-a)
                x_off, y_off = nu ** (nu / (1 - nu)) * ea, nu ** (1 / (1 - nu)) * ea
                F = sgn * ((x_off + a) ** m - y_off)
        else:
            raise SpecError(f"unknown embedding {kind!r}")
        E = E + w * F
    return E


def chebyshev(theta, kmax: int) -> np.ndarray:
    """T_0..T_kmax (first kind) at theta (any shape, real or complex): shape theta.shape + (kmax+1,)."""
    theta = np.asarray(theta)
    out = [np.ones_like(theta), theta]
    for _ in range(2, kmax + 1):
        out.append(2.0 * theta * out[-1] - out[-2])
    return np.stack(out[: kmax + 1], axis=-1)


class _Layer:
    """One layer: its one-particle tables and the folded product terms."""

    def __init__(self, basis, mb, pr, kmax: int, k0max: int):
        self.basis = basis
        self.spec = basis.spec
        self.nel = len(basis.elements)
        self.L = basis.lmax
        self.nlm = (self.L + 1) ** 2
        self.nmax = basis.nmax
        self.npair = basis.npair
        self.kmax = kmax
        self.k0max = k0max
        nk = kmax + 1

        def index(z, n, l, k):
            return ((z * self.nmax + n - 1) * nk + k) * self.nlm + l * l + l

        mb = np.asarray(mb, dtype=float).reshape(len(basis.functions), -1)  # (n, P)
        pr = np.asarray(pr, dtype=float).reshape(len(basis.pair), -1)
        self.P = mb.shape[1]
        groups: dict = {}
        for v, f in enumerate(basis.functions):
            if not mb[v].any():
                continue
            k0 = getattr(f, "k0", 0)
            terms = [(f.factors, f.mtuples, f.coeffs)] + list(getattr(f, "corrections", ()) or ())
            for factors, mtuples, coeffs in terms:
                base = np.array([index(fc[0], fc[1], fc[2], fc[3] if len(fc) > 3 else 0) for fc in factors])
                g = groups.setdefault((f.z0, len(factors), k0), ([], []))
                g[0].append(base[None, :] + np.asarray(mtuples, dtype=np.int64))
                g[1].append(np.asarray(coeffs, dtype=float)[:, None] * mb[v][None, :])
        self.groups = {key: (np.concatenate(a), np.concatenate(w)) for key, (a, w) in groups.items()}
        self.pair_w = np.zeros((self.nel, self.nel, self.npair, self.P))
        for q, p in enumerate(basis.pair):
            self.pair_w[p.z0, p.zj, p.n - 1] += pr[q]

    def one_particle(self, Z, i, j, rij):
        """Real values and derivatives per pair: R, dR/dr, P, dP/dr, Y, ∇_rij Y."""
        from ..symbolic import radial
        from ..symbolic.ylm import ylm_numpy

        r = np.linalg.norm(rij, axis=1)
        u = rij / r[:, None]
        zi, zj = Z[i], Z[j]
        R = np.zeros((len(r), self.nmax))
        dR = np.zeros_like(R)
        P = np.zeros((len(r), self.npair))
        dP = np.zeros_like(P)
        for a in range(self.nel):
            for b in range(self.nel):
                s = (zi == a) & (zj == b)
                m = s & (r < self.spec.rcut_pair(a, b))
                if m.any():
                    R[m], dR[m] = radial.manybody_radial_numpy(self.spec, a, b, r[m], nfunc=self.nmax)
                m = s & (r < self.spec.pair_rcut_pair(a, b))
                if m.any():
                    P[m], dP[m] = radial.pair_radial_numpy(self.spec, a, b, r[m])
        Y, G = ylm_numpy(self.L, u, grad=True)
        ls = np.array([l for l in range(self.L + 1) for _ in range(2 * l + 1)])
        # Y(r̂) is a homogeneous polynomial of degree l evaluated at r̂ = r/|r|
        gY = (G - ls[None, :, None] * Y[:, :, None] * u[:, None, :]) / r[:, None, None]
        return dict(u=u, R=R, dR=dR, P=P, dP=dP, Y=Y, gY=gY)

    def phi(self, Z, i, j, nat, op, t, theta):
        """φ_i^(p) of this layer, (n_atoms, P) (complex when t is given: pair tangents, step H)."""
        u, R, P, Y = op["u"], op["R"], op["P"], op["Y"]
        if t is not None:
            dr = np.einsum("px,px->p", u, t)
            R = R + 1j * H * op["dR"] * dr[:, None]
            P = P + 1j * H * op["dP"] * dr[:, None]
            Y = Y + 1j * H * np.einsum("pmx,px->pm", op["gY"], t)
        npairs = len(i)
        nk = self.kmax + 1
        Tj = chebyshev(theta[j], self.kmax) if theta is not None else np.ones((npairs, 1))
        dtype = np.result_type(R, Y, Tj)
        zj = Z[j]
        onep = np.zeros((npairs, self.nel, self.nmax, nk, self.nlm), dtype=dtype)
        onep[np.arange(npairs), zj] = R[:, :, None, None] * Tj[:, None, :, None] * Y[:, None, None, :]
        M = np.zeros((nat, npairs))
        M[i, np.arange(npairs)] = 1.0  # each pair once per centre
        A = M @ onep.reshape(npairs, -1)
        Ap = M @ (np.eye(self.nel)[zj][:, :, None] * P[:, None, :]).reshape(npairs, -1)
        Ap = Ap.reshape(nat, self.nel, self.npair)
        phi = np.zeros((nat, self.P), dtype=np.result_type(A, Ap))
        T0 = chebyshev(theta, self.k0max) if theta is not None else np.ones((nat, 1))
        for (z0, nu, k0), (idx, w) in self.groups.items():
            rows = np.flatnonzero(Z == z0)
            if len(rows) == 0:
                continue
            phi[rows] += T0[rows, k0][:, None] * (np.prod(A[rows][:, idx], axis=2) @ w)
        phi += np.einsum("iznp,izn->ip", self.pair_w[Z], Ap)
        return phi


class MultilayerReference:
    """Energy, per-atom energies, indicators, forces and stress of a multilayer ACE model.

    ``basis``: an :class:`acegen.multilayer.MultilayerBasis`; ``coefficients``: one coefficient
    set per layer (a flat vector, many-body then pair, or a {'manybody', 'pair'} dict; the last
    layer's with one column per density when the embedding has several)."""

    def __init__(self, basis, coefficients):
        self.basis = basis
        self.spec = basis.spec
        per_layer = basis.split_params(coefficients)
        self.layers = [
            _Layer(b, mb, pr, 0 if n == 0 else self.spec.kmax, 0 if n == 0 else self.spec.k0max)
            for n, (b, (mb, pr)) in enumerate(zip(basis.layers, per_layer))
        ]
        self.eref = np.array([v for _, v in self.spec.Eref])

    @classmethod
    def from_model(cls, model):
        """The reference of an ``acegen.Model.random(mlspec)`` / loaded multilayer model."""
        return cls(model.basis, model.coefficients)

    def _prepare(self, atoms):
        from ase.neighborlist import neighbor_list

        symbols = atoms.get_chemical_symbols()
        els = self.spec.elements
        for a, s in enumerate(symbols):
            if s not in els:
                raise StructureError(f"atom {a} is {s}, which this model does not describe "
                                     f"(elements: {', '.join(els)})")
        Z = np.array([els.index(s) for s in symbols], dtype=np.int64)
        i, j, D = neighbor_list("ijD", atoms, self.spec.rcut_max)
        D = np.asarray(D, dtype=float)
        if len(D) and np.min(np.linalg.norm(D, axis=1)) < 1e-8:
            p = int(np.argmin(np.linalg.norm(D, axis=1)))
            raise StructureError(f"atoms {int(i[p])} and {int(j[p])} coincide")
        ops = [layer.one_particle(Z, i, j, D) for layer in self.layers]
        return Z, i.astype(np.int64), j.astype(np.int64), D, ops

    def _forward(self, Z, i, j, ops, t=None):
        nat = len(Z)
        theta = None
        thetas = []
        for n, (layer, op) in enumerate(zip(self.layers, ops)):
            phi = layer.phi(Z, i, j, nat, op, t, theta)
            if n < len(self.layers) - 1:
                theta = np.tanh(phi[:, 0])
                thetas.append(theta)
        return self.eref[Z] + embed(self.spec.embedding, self.spec.embedding_params, phi), thetas

    def energies(self, atoms):
        """Per-atom energies (n_atoms,) and indicators θ^(2..n_layers) (n_atoms, n_layers - 1)."""
        Z, i, j, D, ops = self._prepare(atoms)
        E, thetas = self._forward(Z, i, j, ops)
        ind = np.stack(thetas, axis=1) if thetas else np.zeros((len(Z), 0))
        return E, ind

    def compute(self, atoms, *, forces: bool = True, stress: bool = True) -> dict:
        """energy, energies, indicators (n_atoms × (n_layers − 1)), forces and (periodic cells
        with a volume) stress in ASE's Voigt order, by complex-step derivatives."""
        Z, i, j, D, ops = self._prepare(atoms)
        E, thetas = self._forward(Z, i, j, ops)
        nat = len(Z)
        out = {"energy": float(np.sum(E)), "energies": E,
               "indicators": np.stack(thetas, axis=1) if thetas else np.zeros((nat, 0))}
        if forces:
            F = np.zeros((nat, 3))
            for a in range(nat):
                sign = (j == a).astype(float) - (i == a).astype(float)
                if not sign.any():
                    continue
                for c in range(3):
                    t = np.zeros_like(D)
                    t[:, c] = sign
                    Ec, _ = self._forward(Z, i, j, ops, t)
                    F[a, c] = -np.sum(Ec).imag / H
            out["forces"] = F
        vol = abs(np.linalg.det(atoms.cell.array)) if atoms.cell.rank == 3 else 0.0
        if stress and atoms.pbc.any() and vol > 1e-10:
            W = np.zeros((3, 3))  # W[a, b] = Σ_pairs ∂E/∂r_ij[a] r_ij[b]
            for a in range(3):
                for b in range(3):
                    t = np.zeros_like(D)
                    t[:, a] = D[:, b]
                    Ec, _ = self._forward(Z, i, j, ops, t)
                    W[a, b] = np.sum(Ec).imag / H
            s = 0.5 * (W + W.T) / vol
            out["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
        return out


def compute(model, atoms, **options) -> dict:
    """Shortcut: :meth:`MultilayerReference.compute` of a multilayer model."""
    if getattr(model, "kind", None) != "multilayer":
        raise SpecError("multilayer_numpy.compute: expected a multilayer model (acegen.Model.random(mlspec))")
    return MultilayerReference.from_model(model).compute(atoms, **options)
