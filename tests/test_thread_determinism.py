"""A model's lowered IR (spline tables, signature, kernel cache key) does not depend on the
number of BLAS/OpenMP threads of the process that lowered it."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.resources import files

import numpy as np

from acegen.io.pace_radial import combine_in_order

YBCO = str(files("acegen") / "data" / "YBCO_ACE.yace")

_SCRIPT = """
import sys, acegen
print(acegen.load(sys.argv[1]).ir().signature())
"""


def _signature(threads: int) -> str:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", _SCRIPT, YBCO], env=env, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip().splitlines()[-1]


def test_pace_signature_independent_of_threads():
    assert _signature(1) == _signature(2)


def test_combine_in_order_is_the_matrix_product_summed_in_k_order():
    rng = np.random.default_rng(0)
    g, c = rng.normal(size=(300, 9)), rng.normal(size=(17, 9))
    ref = np.zeros((300, 17))
    for k in range(9):  # the k order, element by element
        ref = ref + np.outer(g[:, k], c[:, k])
    out = combine_in_order(g, c)
    assert np.array_equal(out, ref)
    assert np.allclose(out, g @ c.T, rtol=1e-13, atol=1e-13)
