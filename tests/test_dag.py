"""Product DAG (acegen.ir.dag): structure, numerics against direct products, size."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acegen.errors import InternalError
from acegen.ir.dag import ProductDAG, build_dag
from acegen.ir.model import Channel, Embedding, SpeciesProgram


def program(monomials, coeffs, n_A: int) -> SpeciesProgram:
    """A species program with n_A scalar (l = 0) channels."""
    chans = tuple(Channel(zj=0, radial=0, l=0, offset=a) for a in range(n_A))
    nd = np.asarray(coeffs).reshape(len(monomials), -1).shape[1]
    emb = Embedding("linear", 1, (1.0, 1.0)) if nd == 1 else Embedding("FinnisSinclair", nd, (1.0, 1.0) * nd)
    return SpeciesProgram(zi=0, channels=chans, monomials=tuple(monomials), coeffs=np.asarray(coeffs), embedding=emb)


def random_program(seed: int, n_A: int = 12, count: int = 60, max_order: int = 5, nd: int = 2) -> SpeciesProgram:
    rng = np.random.default_rng(seed)
    monos: set[tuple[int, ...]] = set()
    while len(monos) < count:
        k = int(rng.integers(1, max_order + 1))
        monos.add(tuple(sorted(rng.integers(0, n_A, size=k).tolist())))
    monos_l = sorted(monos)
    return program(monos_l, rng.normal(size=(len(monos_l), nd)), n_A)


def direct_rho(prog: SpeciesProgram, A: np.ndarray) -> np.ndarray:
    return sum(c * np.prod(A[list(m)]) for m, c in zip(prog.monomials, prog.coeffs))


def direct_grad(prog: SpeciesProgram, A: np.ndarray, g: np.ndarray) -> np.ndarray:
    """d(g·ρ)/dA by the product rule, one factor at a time."""
    out = np.zeros_like(A)
    for m, c in zip(prog.monomials, prog.coeffs):
        for t in range(len(m)):
            out[m[t]] += float(g @ c) * np.prod(A[list(m[:t] + m[t + 1 :])])
    return out


@pytest.mark.parametrize("seed", range(4))
def test_evaluate_and_backward_match_direct_products(seed):
    prog = random_program(seed)
    dag = build_dag(prog)
    rng = np.random.default_rng(100 + seed)
    A = rng.normal(size=prog.n_A)
    g = rng.normal(size=2)
    np.testing.assert_allclose(dag.evaluate(A), direct_rho(prog, A), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dag.backward(A, g), direct_grad(prog, A, g), rtol=1e-12, atol=1e-12)
    # batched evaluation agrees with the single one
    B = rng.normal(size=(3, prog.n_A))
    np.testing.assert_allclose(dag.evaluate(B)[1], dag.evaluate(B[1]), rtol=1e-15)


def test_backward_matches_finite_differences():
    prog = random_program(7, n_A=6, count=25)
    dag = build_dag(prog)
    rng = np.random.default_rng(1)
    A, g = rng.normal(size=prog.n_A), rng.normal(size=2)
    h = 1e-6
    fd = np.array([(g @ dag.evaluate(A + h * e) - g @ dag.evaluate(A - h * e)) / (2 * h) for e in np.eye(prog.n_A)])
    np.testing.assert_allclose(dag.backward(A, g), fd, rtol=1e-6, atol=1e-8)


def test_structure_topological_and_shared():
    prog = random_program(3, n_A=10, count=80)
    dag = build_dag(prog)
    n = dag.n_leaves
    assert n == prog.n_A
    k = np.arange(dag.n_products) + n
    assert np.all(dag.left < k) and np.all(dag.right < k)
    # every node's monomial is the multiset union of its operands', and no monomial twice
    for i in range(dag.n_products):
        union = sorted(dag.monomials[dag.left[i]] + dag.monomials[dag.right[i]])
        assert tuple(union) == dag.monomials[n + i]
    assert len(set(dag.monomials)) == dag.n_nodes
    # output rows: exactly the requested monomials; auxiliary nodes have zero rows
    want = {m: c for m, c in zip(prog.monomials, prog.coeffs)}
    for node, mono in enumerate(dag.monomials):
        if mono in want:
            np.testing.assert_array_equal(dag.coeffs[node], want[mono])
        else:
            assert not np.any(dag.coeffs[node])
    assert set(dag.out_nodes.tolist()) == {dag.monomials.index(m) for m in want}


def test_shares_subproducts():
    # (0,1) is requested; (0,1,2) and (0,1,3) must reuse it: 3 products in all
    dag = build_dag(program([(0, 1), (0, 1, 2), (0, 1, 3)], [[1.0], [2.0], [3.0]], 4))
    assert dag.n_products == 3
    # (0,1,2,3) and (0,1,2,4) need one shared auxiliary node (a part of both), not two chains
    dag = build_dag(program([(0, 1, 2, 3), (0, 1, 2, 4), (1, 2, 3, 4)], [[1.0], [1.0], [1.0]], 5))
    aux = [m for node, m in enumerate(dag.monomials) if len(m) > 1 and not np.any(dag.coeffs[node])]
    assert dag.n_products <= 6, dag.to_text()
    assert len(aux) <= 3


def test_duplicates_merged_zero_rows_dropped_and_squares():
    prog = program([(0,), (1, 1), (1, 1), (0, 2), (2, 2, 2)], [[1.0], [2.0], [0.5], [0.0], [-1.0]], 3)
    dag = build_dag(prog)
    assert (0, 2) not in dag.monomials  # dead code (all-zero coefficients) dropped
    node = dag.monomials.index((1, 1))
    assert dag.coeffs[node, 0] == 2.5
    A = np.array([0.3, -1.2, 0.7])
    np.testing.assert_allclose(dag.evaluate(A), direct_rho(prog, A), rtol=1e-14)
    g = np.array([1.3])
    np.testing.assert_allclose(dag.backward(A, g), direct_grad(prog, A, g), rtol=1e-14)


def test_node_count_is_small():
    """Few nodes per monomial: at least 1 per order >= 2 monomial, well below a prefix trie."""
    prog = random_program(11, n_A=40, count=1500, max_order=5, nd=1)
    dag = build_dag(prog)
    high = [m for m in prog.monomials if len(m) >= 2]
    trie = {m[:k] for m in high for k in range(2, len(m) + 1)}
    assert len(high) <= dag.n_products <= len(trie)
    assert dag.n_products / len(high) < 1.45, dag.n_products / len(high)


def test_flops_counted_from_structure():
    prog = random_program(5, nd=3)
    dag = build_dag(prog)
    n_out = int(np.count_nonzero(np.any(dag.coeffs != 0, axis=1)))
    f = dag.flops()
    assert f["forward"] == dag.n_products + 2 * n_out * 3
    assert f["reverse"] == 4 * dag.n_products + 2 * n_out * 3
    assert f["total"] == f["forward"] + f["reverse"]


def test_frozen_text_signature_dot():
    prog = random_program(2)
    dag = build_dag(prog)
    with pytest.raises(AttributeError):
        dag.n_leaves = 3  # type: ignore[misc]
    with pytest.raises(ValueError):
        dag.left[0] = 0
    assert build_dag(prog).to_text() == dag.to_text()
    assert build_dag(prog).signature() == dag.signature()
    coeffs = prog.coeffs.copy()
    coeffs[-1, 0] += 1e-12
    assert build_dag(program(prog.monomials, coeffs, prog.n_A)).signature() != dag.signature()
    lines = dag.to_text().splitlines()
    assert lines[0].startswith("dag: leaves=12") and len(lines) == 1 + dag.n_products + int(
        sum(1 for m in prog.monomials if len(m) == 1)
    )
    dot = dag.to_dot()
    assert dot.startswith("digraph") and dot.count("->") == 2 * dag.n_products


def test_rejects_bad_arrays():
    with pytest.raises(InternalError):  # an internal invariant, not user input
        ProductDAG(n_leaves=2, left=np.array([2]), right=np.array([0]), monomials=((0,), (1,), (0, 0)),
                   coeffs=np.zeros((3, 1)))
    dag = build_dag(program([(0, 1)], [[1.0]], 2))
    with pytest.raises(InternalError):
        dag.evaluate(np.zeros(3))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 5), min_size=1, max_size=5), min_size=1, max_size=25),
    st.integers(0, 2**31 - 1),
)
def test_property_dag_equals_direct(monos, seed):
    monos = sorted({tuple(sorted(m)) for m in monos})
    rng = np.random.default_rng(seed)
    prog = program(monos, rng.normal(size=(len(monos), 1)), 6)
    dag = build_dag(prog)
    A = rng.uniform(-1.5, 1.5, size=6)
    g = np.array([rng.normal()])
    np.testing.assert_allclose(dag.evaluate(A), direct_rho(prog, A), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dag.backward(A, g), direct_grad(prog, A, g), rtol=1e-12, atol=1e-12)
    # every requested monomial is a node
    assert set(monos) <= set(dag.monomials)
