"""The ``ACE.jl.base`` radial basis of ACEpotentials.jl ``.yace`` exports (PACE's ``ships_radial``).

ACE1.jl / ACEpotentials.jl export their radial basis as orthogonal polynomials in a transformed
coordinate, given by a three-term recursion whose coefficients are stored in the file
(bond keys ``r0, p, xl, xr, pl, pr, maxn, rcut, recursion_coefficients: {A, B, C}``, global
``lmax``):

    x(r) = ((1 + r0) / (1 + r))^p,
    f(x) = (x − xl)^pl (x − xr)^pr  for xl ≤ x ≤ xr, else 0,
    P_0 = A_0 f,   P_1 = (A_1 x + B_1) P_0,   P_n = (A_n x + B_n) P_{n−1} + C_n P_{n−2}.

PACE uses g_k = P_k for rank-1 functions and R_nl = P_n (the same for every l) for the others;
acegen represents that as a :class:`~acegen.io.pace.PaceBond` with ``nradbase = nradmax = maxn``
and the identity as ``crad`` (R_nl = Σ_k δ_nk g_k), so everything downstream of the bond's
radial functions is unchanged.  The polynomial pair potential (a top-level ``polypairpot``
block of older exports) is not supported and is rejected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .pace.checks import MAX_RCUT
from .pace.model import PaceBond

__all__ = ["ACEJL_RADIAL", "ShipsRadial", "AceJlBond", "acejl_bond_from_yaml"]

ACEJL_RADIAL = "ACE.jl.base"
MAXN_LIMIT = 64
LMAX_LIMIT = 16


@dataclass(frozen=True)
class ShipsRadial:
    """Parameters of one bond's ``ACE.jl.base`` polynomial basis (see the module docstring)."""

    r0: float
    p: int
    xl: float
    xr: float
    pl: int
    pr: int
    A: tuple[float, ...]
    B: tuple[float, ...]
    C: tuple[float, ...]

    @property
    def maxn(self) -> int:
        return len(self.A)


@dataclass(frozen=True, eq=False)
class AceJlBond(PaceBond):
    """A :class:`PaceBond` whose radial basis is ACE.jl's recursion (``radbasename`` ACE.jl.base)."""

    ships: ShipsRadial = None

    def __eq__(self, other):
        return isinstance(other, AceJlBond) and PaceBond.__eq__(self, other) and self.ships == other.ships

    __hash__ = None


def acejl_bond_from_yaml(ctx, fld: str, b, data: dict) -> AceJlBond:
    """Validate one ``.yace`` bond with ``radbasename: ACE.jl.base``; ``data`` is the whole
    document (for the global ``lmax``).  ``ctx`` is the reader's field checker (raises
    ModelFileError naming file and field)."""
    ctx.mapping(b, fld)
    name = ctx.string(ctx.get(b, "radbasename", f"{fld}.radbasename"), f"{fld}.radbasename", (ACEJL_RADIAL,))
    if "polypairpot" in data:
        ctx.fail("polypairpot", "the ACE.jl polynomial pair potential is not supported")
    lmax = ctx.integer(ctx.get(data, "lmax", "lmax"), "lmax", lo=0, hi=LMAX_LIMIT)
    maxn = ctx.integer(ctx.get(b, "maxn", f"{fld}.maxn"), f"{fld}.maxn", lo=1, hi=MAXN_LIMIT)
    rc = ctx.mapping(ctx.get(b, "recursion_coefficients", f"{fld}.recursion_coefficients"),
                     f"{fld}.recursion_coefficients")
    A, B, C = (ctx.reals(ctx.get(rc, k, f"{fld}.recursion_coefficients.{k}"), f"{fld}.recursion_coefficients.{k}", maxn)
               for k in "ABC")
    xl = ctx.real(ctx.get(b, "xl", f"{fld}.xl"), f"{fld}.xl")
    xr = ctx.real(ctx.get(b, "xr", f"{fld}.xr"), f"{fld}.xr")
    if not xl < xr:
        ctx.fail(f"{fld}.xr", f"must exceed xl = {xl}, got {xr}")
    s = ShipsRadial(
        r0=ctx.real(ctx.get(b, "r0", f"{fld}.r0"), f"{fld}.r0", nonneg=True, absmax=MAX_RCUT),
        p=ctx.integer(ctx.get(b, "p", f"{fld}.p"), f"{fld}.p", lo=1, hi=16),
        xl=xl, xr=xr,
        pl=ctx.integer(ctx.get(b, "pl", f"{fld}.pl"), f"{fld}.pl", lo=0, hi=16),
        pr=ctx.integer(ctx.get(b, "pr", f"{fld}.pr"), f"{fld}.pr", lo=0, hi=16),
        A=A, B=B, C=C,
    )
    rcut = ctx.real(ctx.get(b, "rcut", f"{fld}.rcut"), f"{fld}.rcut", positive=True)
    crad = np.zeros((maxn, lmax + 1, maxn))
    for n in range(maxn):
        crad[n, :, n] = 1.0
    return AceJlBond(
        radbasename=name, radparameters=(), nradbase=maxn, nradmax=maxn, lmax=lmax, crad=crad, rcut=rcut, dcut=0.0,
        prehc=0.0, lambdahc=0.0, rcut_in=0.0, dcut_in=0.0, inner_cutoff_type="density", ships=s,
    )
