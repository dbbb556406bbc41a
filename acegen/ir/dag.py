"""The product DAG of one central species: every density monomial as a graph of binary products.

Conventions
-----------
Node indices ``0 .. n_leaves-1`` are the leaves, the entries ``A[a]`` of the species' atomic
base (``SpeciesProgram.n_A`` of them, in the channel layout of :mod:`acegen.ir.model`).
Product node ``n_leaves + k`` (k = 0 .. n_products-1) is ``AA[left[k]] * AA[right[k]]`` with
``left[k], right[k] < n_leaves + k``, so the arrays are in topological order and a kernel
evaluates them with one table-driven loop::

    AA[0:n_A] = A
    for k in range(n_products):
        AA[n_A + k] = AA[left[k]] * AA[right[k]]
    rho[p] = sum over nodes n of coeffs[n, p] * AA[n]

Every node stands for a monomial (a sorted tuple of leaf indices, a multiset); different nodes
stand for different monomials, so sub-products are shared across all monomials of the species.
``coeffs`` (n_nodes, ndensity) holds the output coefficients: the rows of order-1 monomials sit
on leaves, auxiliary nodes (intermediates no monomial asked for) have zero rows.  Monomials
listed twice in the program are merged (their coefficient rows summed); monomials whose
coefficient row is entirely zero are dropped (dead code).

The reverse sweep (adjoint, reverse-mode AD of the product graph) is::

    W[n] = sum_p dE/drho_p * coeffs[n, p]
    for k in reversed(range(n_products)):
        W[left[k]]  += W[n_A + k] * AA[right[k]]
        W[right[k]] += W[n_A + k] * AA[left[k]]

after which ``W[0:n_A] = dE/dA``.  (A square ``left == right`` gets both updates, i.e. 2·w·a.)

Construction (:func:`build_dag`) processes the monomials by increasing order.  A monomial that
can be written as the product of two existing nodes costs one node; otherwise the split whose
missing halves need the fewest new nodes (an exact count over the sub-multiset lattice, given
the nodes that exist) is chosen, ties broken towards plans whose new intermediates are parts of
the most requested monomials not built yet (so later monomials find them), and the missing
halves are built recursively the same way.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from dataclasses import dataclass

import numpy as np

from typing import TYPE_CHECKING

from ..errors import InternalError

if TYPE_CHECKING:
    from .model import SpeciesProgram

Monomial = tuple[int, ...]
#: (new nodes, minus the summed popularity of the new nodes, split) of a construction plan
_Plan = tuple[int, int, "tuple[Monomial, Monomial] | None"]


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class ProductDAG:
    """A frozen product graph (see the module docstring for the conventions).

    n_leaves: number of leaves (= ``SpeciesProgram.n_A``).
    left, right: int32 arrays (n_products,), operands of product node ``n_leaves + k``.
    monomials: the monomial every node stands for, ``(a,)`` for leaf ``a``.
    coeffs: float64 (n_nodes, ndensity) output coefficients (zero rows for auxiliary nodes).
    """

    n_leaves: int
    left: np.ndarray
    right: np.ndarray
    monomials: tuple[Monomial, ...]
    coeffs: np.ndarray

    def __post_init__(self) -> None:
        left = np.asarray(self.left, dtype=np.int32).reshape(-1)
        right = np.asarray(self.right, dtype=np.int32).reshape(-1)
        coeffs = np.asarray(self.coeffs, dtype=np.float64)
        n_nodes = self.n_leaves + left.size
        if right.size != left.size or coeffs.ndim != 2 or coeffs.shape[0] != n_nodes:
            raise InternalError("ProductDAG: inconsistent array shapes")
        if len(self.monomials) != n_nodes:
            raise InternalError("ProductDAG: one monomial per node required")
        k = np.arange(left.size) + self.n_leaves
        if left.size and (left.min() < 0 or right.min() < 0 or np.any(left >= k) or np.any(right >= k)):
            raise InternalError("ProductDAG: nodes are not in topological order")
        if not np.all(np.isfinite(coeffs)):
            raise InternalError("ProductDAG: non-finite coefficient")
        object.__setattr__(self, "left", _readonly(left))
        object.__setattr__(self, "right", _readonly(right))
        object.__setattr__(self, "coeffs", _readonly(coeffs))

    # -- sizes -------------------------------------------------------------------------
    @property
    def n_products(self) -> int:
        return int(self.left.size)

    @property
    def n_nodes(self) -> int:
        return self.n_leaves + self.n_products

    @property
    def ndensity(self) -> int:
        return int(self.coeffs.shape[1])

    @property
    def out_nodes(self) -> np.ndarray:
        """Indices (int32, increasing) of the nodes with a nonzero coefficient row."""
        return np.flatnonzero(np.any(self.coeffs != 0.0, axis=1)).astype(np.int32)

    @property
    def out_coeffs(self) -> np.ndarray:
        """Coefficient rows of :attr:`out_nodes`, shape (n_out, ndensity)."""
        return np.ascontiguousarray(self.coeffs[self.out_nodes])

    def flops(self) -> dict[str, int]:
        """Floating-point operations per atom, counted as executed by the table-driven loops.

        forward: one multiply per product node, a multiply-add per (output node, density);
        reverse: a multiply-add per (output node, density) to seed W, two multiply-adds per
        product node in the sweep.  Leaves (the A accumulation) and the embedding are not
        part of the DAG and are not counted.
        """
        n_out = int(self.out_nodes.size)
        fwd = self.n_products + 2 * n_out * self.ndensity
        rev = 2 * n_out * self.ndensity + 4 * self.n_products
        return {"forward": fwd, "reverse": rev, "total": fwd + rev}

    # -- numerics (reference semantics for the backends) -------------------------------
    def forward(self, A: np.ndarray) -> np.ndarray:
        """All node values AA, shape A.shape[:-1] + (n_nodes,)."""
        A = np.asarray(A, dtype=np.float64)
        if A.shape[-1] != self.n_leaves:
            raise InternalError(f"ProductDAG: expected {self.n_leaves} A entries, got {A.shape[-1]}")
        AA = np.empty(A.shape[:-1] + (self.n_nodes,))
        AA[..., : self.n_leaves] = A
        for k, (a, b) in enumerate(zip(self.left.tolist(), self.right.tolist())):
            AA[..., self.n_leaves + k] = AA[..., a] * AA[..., b]
        return AA

    def evaluate(self, A: np.ndarray) -> np.ndarray:
        """Densities ρ, shape A.shape[:-1] + (ndensity,)."""
        return self.forward(A) @ self.coeffs

    def backward(self, A: np.ndarray, dE_drho: np.ndarray) -> np.ndarray:
        """dE/dA given dE/dρ (shape A.shape[:-1] + (ndensity,)), by the reverse sweep."""
        AA = self.forward(A)
        W = np.asarray(dE_drho, dtype=np.float64) @ self.coeffs.T
        for k in range(self.n_products - 1, -1, -1):
            a, b = int(self.left[k]), int(self.right[k])
            w = W[..., self.n_leaves + k]
            W[..., a] += w * AA[..., b]
            W[..., b] += w * AA[..., a]
        return W[..., : self.n_leaves].copy()

    # -- printing ----------------------------------------------------------------------
    def to_text(self) -> str:
        """One line per product node and per output leaf; coefficients at full precision."""
        lines = [
            f"dag: leaves={self.n_leaves} products={self.n_products} "
            f"outputs={self.out_nodes.size} ndensity={self.ndensity}"
        ]
        out = set(self.out_nodes.tolist())

        def coef(n: int) -> str:
            return " c=[" + ", ".join(repr(float(c)) for c in self.coeffs[n]) + "]" if n in out else ""

        for n in range(self.n_leaves):
            if n in out:
                lines.append(f"  n{n} = A[{n}]{coef(n)}")
        for k in range(self.n_products):
            n = self.n_leaves + k
            mono = ",".join(map(str, self.monomials[n]))
            lines.append(f"  n{n} = n{self.left[k]} * n{self.right[k]}  ({mono}){coef(n)}")
        return "\n".join(lines)

    __str__ = to_text

    def signature(self) -> str:
        h = hashlib.sha256(self.to_text().encode())
        h.update(self.coeffs.tobytes())
        return h.hexdigest()

    def to_dot(self) -> str:
        """Graphviz source: leaves as boxes, auxiliary nodes dashed, outputs doubled."""
        out = set(self.out_nodes.tolist())
        used = set(self.left.tolist()) | set(self.right.tolist()) | out
        lines = ["digraph product_dag {", "  rankdir=BT;"]
        for n in sorted(x for x in used if x < self.n_leaves):
            peri = ", peripheries=2" if n in out else ""
            lines.append(f'  n{n} [shape=box, label="A[{n}]"{peri}];')
        for k in range(self.n_products):
            n = self.n_leaves + k
            style = ", peripheries=2" if n in out else ", style=dashed"
            label = "*".join(map(str, self.monomials[n]))
            lines.append(f'  n{n} [label="{label}"{style}];')
            lines.append(f"  n{self.left[k]} -> n{n};")
            lines.append(f"  n{self.right[k]} -> n{n};")
        lines.append("}")
        return "\n".join(lines)


def _sub_multisets(m: Monomial, size: int) -> list[Monomial]:
    """Distinct sub-multisets of ``m`` (sorted tuple) with ``size`` elements."""
    return sorted(set(itertools.combinations(m, size)))


def _complement(m: Monomial, s: Monomial) -> Monomial:
    rest = list(m)
    for a in s:
        rest.remove(a)
    return tuple(rest)


def _splits(m: Monomial) -> list[tuple[Monomial, Monomial]]:
    """All distinct unordered splits of ``m`` into two non-empty sub-multisets (big half first)."""
    seen: set[tuple[Monomial, Monomial]] = set()
    out: list[tuple[Monomial, Monomial]] = []
    for size in range(len(m) - 1, (len(m) - 1) // 2, -1):
        for s in _sub_multisets(m, size):
            t = _complement(m, s)
            key = (s, t) if (len(s), s) >= (len(t), t) else (t, s)
            if key not in seen:
                seen.add(key)
                out.append(key)
    return out


class _Builder:
    """Greedy DAG construction state (see the module docstring)."""

    def __init__(self, n_leaves: int, targets: list[Monomial]) -> None:
        self.node_of: dict[Monomial, int] = {(a,): a for a in range(n_leaves)}
        self.monomials: list[Monomial] = [(a,) for a in range(n_leaves)]
        self.left: list[int] = []
        self.right: list[int] = []
        # popularity: for how many requested monomials not yet built a sub-multiset is a proper part
        self.popularity: Counter[Monomial] = Counter()
        for m in targets:
            self.popularity.update(self._parts(m))

    @staticmethod
    def _parts(m: Monomial) -> list[Monomial]:
        return [s for size in range(2, len(m)) for s in _sub_multisets(m, size)]

    def _new(self, m: Monomial, s: Monomial, t: Monomial) -> int:
        n = len(self.monomials)
        self.left.append(self.node_of[s])
        self.right.append(self.node_of[t])
        self.monomials.append(m)
        self.node_of[m] = n
        return n

    def _plan(self, m: Monomial, memo: dict[Monomial, _Plan]) -> _Plan:
        """(new nodes, -popularity of the new nodes, split) of the cheapest way to make ``m``.

        New nodes are counted per half (a node both halves need is counted twice), and the
        popularity of every node the plan creates is summed, so among equally cheap plans the
        one whose intermediates later monomials contain most often wins.
        """
        if m in self.node_of:
            return (0, 0, None)
        if m not in memo:
            best: _Plan | None = None
            for s, t in _splits(m):
                cs, ps, _ = self._plan(s, memo)
                ct, pt, _ = self._plan(t, memo)
                cand = (1 + cs + ct, ps + pt - self.popularity[m], (s, t))
                if best is None or cand[:2] < best[:2]:
                    best = cand
            memo[m] = best
        return memo[m]

    def _make(self, m: Monomial) -> int:
        if m in self.node_of:
            return self.node_of[m]
        # one-node options first: (k-1)-part times a leaf, then any two existing parts
        for s, t in _splits(m):
            if s in self.node_of and t in self.node_of:
                return self._new(m, s, t)
        _, _, split = self._plan(m, {})
        assert split is not None
        s, t = split
        self._make(s)
        self._make(t)
        return self._new(m, s, t)

    def make_target(self, m: Monomial) -> int:
        """Make a requested monomial; it then no longer counts towards popularity."""
        self.popularity.subtract(self._parts(m))
        return self._make(m)


def build_dag(program: SpeciesProgram) -> ProductDAG:
    """The product DAG of ``program`` (conventions in the module docstring)."""
    n_A = program.n_A
    coeffs = np.asarray(program.coeffs, dtype=np.float64)
    merged: dict[Monomial, np.ndarray] = {}
    for m, row in zip(program.monomials, coeffs):
        m = tuple(int(a) for a in m)
        merged[m] = merged[m] + row if m in merged else row.copy()
    targets = sorted((m for m, row in merged.items() if np.any(row != 0.0)), key=lambda m: (len(m), m))
    builder = _Builder(n_A, targets)
    for m in targets:
        builder.make_target(m)
    n_nodes = len(builder.monomials)
    out = np.zeros((n_nodes, coeffs.shape[1]))
    for m in targets:
        out[builder.node_of[m]] = merged[m]
    return ProductDAG(
        n_leaves=n_A,
        left=np.asarray(builder.left, dtype=np.int32),
        right=np.asarray(builder.right, dtype=np.int32),
        monomials=tuple(builder.monomials),
        coeffs=out,
    )


# -- scheduling for table-driven kernels ---------------------------------------------------
@dataclass(frozen=True, eq=False)
class GroupedSchedule:
    """The product nodes of a :class:`ProductDAG` renumbered into runs that share an operand.

    Leaves keep their indices ``0 .. n_leaves-1``; the product at new position ``p`` is node
    ``n_leaves + p`` and stands for the old product ``perm[p]``.  Products are sorted by the
    order (degree) of their monomial, so both operands of every product come earlier (both
    have a lower degree), and within one degree by their *key* operand: run ``g`` is the
    products ``group_ptr[g] .. group_ptr[g+1]-1``, each ``AA[key[g]] * AA[other[p]]``.  The key
    of a product is the operand used by more products of the whole DAG (ties: the lower old
    index), so runs are long (e.g. one leaf times many order-2 nodes).

    A kernel then loads ``AA[key]`` once per run in the forward sweep and, in the reverse
    sweep, accumulates the run's contribution to ``W[key]`` in a register instead of updating
    it in memory once per product::

        forward:  for g: a = AA[key[g]]; for p in run g: AA[n_leaves + p] = a * AA[other[p]]
        reverse:  for g descending: a = AA[key[g]]; s = 0
                      for p in run g: w = W[n_leaves + p]; s += w * AA[other[p]]; W[other[p]] += w * a
                      W[key[g]] += s

    (a square ``key == other`` gets both terms, 2·w·a).  ``coeffs`` are the DAG's output
    coefficients in the new numbering, transposed: shape (ndensity, n_nodes).
    """

    n_leaves: int
    perm: np.ndarray
    key: np.ndarray
    group_ptr: np.ndarray
    other: np.ndarray
    coeffs: np.ndarray

    @property
    def n_products(self) -> int:
        return int(self.other.size)

    @property
    def n_groups(self) -> int:
        return int(self.key.size)

    @property
    def n_nodes(self) -> int:
        return self.n_leaves + self.n_products

    def forward(self, A: np.ndarray) -> np.ndarray:
        """All node values (new numbering) for one atom, A of shape (n_leaves,)."""
        AA = np.empty(self.n_nodes)
        AA[: self.n_leaves] = A
        for g in range(self.n_groups):
            a = AA[self.key[g]]
            for p in range(int(self.group_ptr[g]), int(self.group_ptr[g + 1])):
                AA[self.n_leaves + p] = a * AA[self.other[p]]
        return AA

    def backward(self, A: np.ndarray, dE_drho: np.ndarray) -> np.ndarray:
        """dE/dA for one atom by the grouped reverse sweep (the kernels' loop, in NumPy)."""
        AA = self.forward(A)
        W = np.asarray(dE_drho, dtype=np.float64) @ self.coeffs
        for g in range(self.n_groups - 1, -1, -1):
            k = int(self.key[g])
            s = 0.0
            for p in range(int(self.group_ptr[g]), int(self.group_ptr[g + 1])):
                w = W[self.n_leaves + p]
                o = int(self.other[p])
                s += w * AA[o]
                W[o] += w * AA[k]
            W[k] += s
        return W[: self.n_leaves].copy()


def group_schedule(dag: ProductDAG) -> GroupedSchedule:
    """Renumber ``dag``'s products into operand-sharing runs (see :class:`GroupedSchedule`)."""
    nl, npr = dag.n_leaves, dag.n_products
    left = dag.left.astype(np.int64)
    right = dag.right.astype(np.int64)
    uses = np.bincount(np.concatenate([left, right]), minlength=dag.n_nodes)
    degree = np.array([len(m) for m in dag.monomials], dtype=np.int64)
    swap = (uses[right] > uses[left]) | ((uses[right] == uses[left]) & (right < left))
    key_old = np.where(swap, right, left)
    other_old = np.where(swap, left, right)
    prod_degree = degree[nl:]
    perm = np.lexsort((np.arange(npr), key_old, prod_degree)).astype(np.int64)
    new_index = np.arange(dag.n_nodes, dtype=np.int64)
    new_index[nl + perm] = nl + np.arange(npr)
    key_new = new_index[key_old[perm]]
    other_new = new_index[other_old[perm]]
    deg_sorted = prod_degree[perm]
    if npr:
        starts = np.flatnonzero(np.r_[True, (key_new[1:] != key_new[:-1]) | (deg_sorted[1:] != deg_sorted[:-1])])
    else:
        starts = np.zeros(0, dtype=np.int64)
    group_ptr = np.r_[starts, npr].astype(np.int32)
    coeffs = np.zeros((dag.ndensity, dag.n_nodes))
    coeffs[:, new_index] = dag.coeffs.T
    return GroupedSchedule(
        n_leaves=nl,
        perm=_readonly(perm.astype(np.int32)),
        key=_readonly(key_new[starts].astype(np.int32)),
        group_ptr=_readonly(group_ptr),
        other=_readonly(other_new.astype(np.int32)),
        coeffs=_readonly(coeffs),
    )
