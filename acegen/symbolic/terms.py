"""Product terms stored flat: the representation of a purified basis function's corrections
(produced by :mod:`acegen.symbolic.purify`, held by :class:`acegen.basis.BasisFunction`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class PackedTerms(Sequence):
    """A read-only sequence of product terms ``(factors, mtuples, coeffs)`` stored flat.

    Entry e has the factors ``factors[fptr[e]:fptr[e+1]]`` (rows (z, n, l)), the m-tuples
    ``mtuples[mptr[e]:mptr[e+1]]`` reshaped to (K_e, ν_e) and the coefficients
    ``coeffs[rptr[e]:rptr[e+1]]`` (K_e).  Purified bases keep their (many, small) correction
    terms this way: a few arrays per function instead of a few per term; indexing and
    iteration give the same tuples a plain ``tuple`` of terms would."""

    __slots__ = ("factors", "fptr", "mtuples", "mptr", "coeffs", "rptr")

    def __init__(self, factors, fptr, mtuples, mptr, coeffs, rptr):
        self.factors = np.asarray(factors, dtype=np.int64).reshape(-1, 3)
        self.fptr = np.asarray(fptr, dtype=np.int64)
        self.mtuples = np.asarray(mtuples, dtype=np.int64).ravel()
        self.mptr = np.asarray(mptr, dtype=np.int64)
        self.coeffs = np.asarray(coeffs, dtype=float).ravel()
        self.rptr = np.asarray(rptr, dtype=np.int64)
        for a in (self.factors, self.fptr, self.mtuples, self.mptr, self.coeffs, self.rptr):
            a.flags.writeable = False

    def __len__(self) -> int:
        return len(self.fptr) - 1

    def __getitem__(self, e):
        if isinstance(e, slice):
            return tuple(self[i] for i in range(*e.indices(len(self))))
        if e < 0:
            e += len(self)
        if not 0 <= e < len(self):
            raise IndexError(e)
        f0, f1 = int(self.fptr[e]), int(self.fptr[e + 1])
        factors = tuple(tuple(r) for r in self.factors[f0:f1].tolist())
        mt = self.mtuples[int(self.mptr[e]) : int(self.mptr[e + 1])].reshape(-1, f1 - f0)
        return factors, mt, self.coeffs[int(self.rptr[e]) : int(self.rptr[e + 1])]

    def __iter__(self):
        fptr, mptr, rptr = self.fptr.tolist(), self.mptr.tolist(), self.rptr.tolist()
        rows = self.factors.tolist()
        for e in range(len(fptr) - 1):
            nb = fptr[e + 1] - fptr[e]
            yield (tuple(tuple(r) for r in rows[fptr[e] : fptr[e + 1]]),
                   self.mtuples[mptr[e] : mptr[e + 1]].reshape(-1, nb), self.coeffs[rptr[e] : rptr[e + 1]])
