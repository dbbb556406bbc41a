"""Multilayer ACE at run time: one kernel per layer, forces by reverse mode across layers.

Forward (docs/multilayer.md): layer 1 gives φ^(1); θ^(2) = tanh(φ^(1)) per atom, mapped to
every pair through its neighbour index (a periodic image carries its owner's θ); layer n > 1
(``compute_theta``) takes θ_i of its centres and θ_j of their neighbours and gives φ^(n), and
the last layer E_i.  Every kernel is called once, with seed 1 (an inner layer's E_i is φ_i),
and its per-pair outputs dφ_i/dr_ij and dφ_i/dθ_j are kept.

Backward: the adjoint of θ^(n) is G_a = Σ_{pairs (i, j=a)} w^(n)_i ∂φ_i^(n)/∂θ_j + w^(n)_a ∂φ_a^(n)/∂θ_a
with w^(last) = 1, and the adjoint of φ^(n−1) is w^(n−1)_a = G_a (1 − θ_a²); the pair
gradients dE/dr_ij = Σ_n w^(n)_i dφ_i^(n)/dr_ij give forces and virial exactly as for one layer.
The cost is one kernel call per layer plus O(n_pairs) NumPy work per layer.
"""

from __future__ import annotations

import numpy as np

from ..errors import AcegenError, StructureError
from .neighbours import NeighbourList, build_neighbours, pair_results, species_indices

__all__ = ["MultilayerKernel", "evaluate_multilayer"]


class MultilayerKernel:
    """The compiled kernels of a multilayer model, one per layer (``kernels[0]`` plain, the
    others with indicator inputs); ``rcut`` is the elementwise largest cutoff matrix, so one
    neighbour list serves every layer (each kernel skips pairs beyond its own cutoffs)."""

    def __init__(self, kernels, elements):
        self.kernels = tuple(kernels)
        self.elements = tuple(elements)
        if not self.kernels:
            raise AcegenError("a multilayer kernel needs at least one layer")
        for n, k in enumerate(self.kernels[1:], start=2):
            if not getattr(k, "theta", False):
                raise AcegenError(f"layer {n}: the kernel takes no indicator inputs (compute_theta)")
        self.target = self.kernels[0].target
        self.rcut = np.max(np.stack([np.asarray(k.rcut, dtype=float) for k in self.kernels]), axis=0)
        self.n_layers = len(self.kernels)

    def __repr__(self) -> str:
        return f"MultilayerKernel({self.n_layers} layers, target={self.target!r})"

    def compute_layers(self, species, nl: NeighbourList, nthreads: int = 1):
        """Per-atom energies E_i, indicators (n_atoms, n_layers − 1) and dE/dr_ij (n_pairs, 3)
        of the atoms of species indices ``species`` with the neighbour list ``nl``."""
        from .neighbours import compute_on

        n = len(species)
        nbs = np.ascontiguousarray(np.asarray(species)[nl.j], dtype=np.int32)
        kept = []  # per layer: (dphi/dr, dphi/dtheta_c, dphi/dtheta_nb, theta)
        thetas = []
        theta = None
        for layer, k in enumerate(self.kernels):
            if theta is None:
                phi, g = compute_on(k, species, nl, nthreads)
                kept.append((g, None, None, None))
            else:
                try:
                    phi, g, dc, dn = k.compute_theta(species, nl.offsets, nbs, nl.rij, theta, theta[nl.j],
                                                     nthreads=nthreads)
                except StructureError as e:
                    if e.pair is None or not 0 <= e.pair < nl.n_pairs:
                        raise
                    p = e.pair
                    raise StructureError(f"{e} (atoms {int(nl.i[p])} and {int(nl.j[p])})", pair=p) from None
                kept.append((g, dc, dn, theta))
            if layer < self.n_layers - 1:
                if not np.all(np.isfinite(phi)):
                    a = int(np.flatnonzero(~np.isfinite(phi))[0])
                    raise StructureError(f"atom {a}: layer {layer + 1} gave a non-finite indicator argument")
                theta = np.tanh(phi)
                thetas.append(theta)
        energies = np.asarray(phi, dtype=float)
        # reverse mode: w = dE/dφ^(layer) per centre, the last layer's seed 1
        w = np.ones(n)
        dEdr = np.zeros((nl.n_pairs, 3))
        for layer in range(self.n_layers - 1, -1, -1):
            g, dc, dn, th = kept[layer]
            wi = w[nl.i]
            dEdr += wi[:, None] * g
            if th is None:
                break
            G = w * dc + np.bincount(nl.j, weights=wi * dn, minlength=n)
            w = G * (1.0 - th * th)
        ind = np.stack(thetas, axis=1) if thetas else np.zeros((n, 0))
        return energies, ind, dEdr


def evaluate_multilayer(kernel: MultilayerKernel, elements, atoms, nthreads: int = 1, nl=None) -> dict:
    """energy, energies, indicators (n_atoms × (n_layers − 1)), forces and, for cells with a
    volume, stress (ASE's Voigt order) of a multilayer model."""
    Z = species_indices(atoms, elements)
    if nl is None:
        nl = build_neighbours(atoms, float(np.max(kernel.rcut)))
    energies, ind, dEdr = kernel.compute_layers(Z, nl, nthreads)
    return {**pair_results(atoms, nl, energies, dEdr), "indicators": ind}
