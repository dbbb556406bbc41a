"""Non-linear least-squares fits: a small *residual model* protocol and two solvers over it.

A model whose predictions are non-linear in its parameters θ (Finnis–Sinclair embeddings
with several densities; multilayer ACE) is fitted by minimising

    L(θ) = Σ_rows [w (f(θ) − y)]² + λ ‖Γ θ‖²

(the linear fit's objective, docs/fitting.md, with f non-linear): Γ the smoothness prior of
the linear fit (repeated for every block of parameters that multiplies the basis, e.g. each
density), λ its weight (by default the BLR λ = α/β of the linear fit the model starts from).

**The protocol** (:class:`ResidualModel`): ``n_params``, ``n_batches`` and
``evaluate(theta, batch, jacobian=...)`` returning a :class:`Residuals` of one batch of
structures: the weighted residuals r = w (f(θ) − y) of its rows (energies, forces, virials in
the row order of :func:`acegen.fit.data.assemble`), the predictions f, targets y, row meta
and, when asked, the Jacobian ∂r/∂θ (rows × n_params).  Anything providing that can be
fitted: :class:`acegen.fit.fs.FSResidualModel` does for Finnis–Sinclair models.

**Solvers** (:func:`fit_nonlinear`):

* ``lm`` — Levenberg–Marquardt (MINPACK's, through ``scipy.optimize.least_squares(method=
  "lm")``, variables scaled by the Jacobian's column norms) on the stacked residuals
  [r; √λ Γθ] with the exact Jacobian.  It holds the whole Jacobian (rows × n_params
  doubles): above ``max_jacobian_gib`` (default 4 GiB) it refuses with a
  :class:`~acegen.errors.FitError` naming the size and suggesting ``lbfgs``.
* ``lbfgs`` — scipy's L-BFGS-B on L(θ) / L(θ₀) with the gradient 2 Σ_batches J_bᵀ r_b +
  2λ Γ²θ accumulated batch by batch, in the variables u = Rθ with R the triangular factor of
  the Jacobian at θ₀ (folded batch by batch, as the streaming linear fit folds its design
  matrix), so that the Gauss–Newton Hessian at the start is the identity.  Memory: n_params²
  plus one batch's Jacobian.

Both descend from θ₀ (their loss never increases), so a fit started from a model's linear
fit ends with a loss no larger than that fit's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import FitError
from .data import RowMeta

__all__ = ["NONLINEAR_SOLVERS", "NonlinearResult", "ResidualModel", "Residuals", "fit_nonlinear"]

NONLINEAR_SOLVERS = ("lm", "lbfgs")
GIB = float(1 << 30)
#: μ of the L-BFGS preconditioner R = qr([J; √λΓ; √μ diag‖J_k‖]) at the start
LBFGS_RIDGE = 1e-4


@dataclass
class Residuals:
    """One batch: weighted residuals ``r = w (pred − y)``, ``pred``, ``y``, ``w``, row
    ``meta`` (structure indices within the batch) and, when asked, ``J = ∂r/∂θ``."""

    r: np.ndarray
    pred: np.ndarray
    y: np.ndarray
    w: np.ndarray
    meta: RowMeta
    J: np.ndarray | None = None


@runtime_checkable
class ResidualModel(Protocol):
    """Parameters → residuals (and Jacobian) over batches of structures (module docstring)."""

    n_params: int

    @property
    def n_batches(self) -> int: ...

    def n_rows(self, batch: int) -> int: ...

    def evaluate(self, theta: np.ndarray, batch: int, *, jacobian: bool = False) -> Residuals: ...


@dataclass
class NonlinearResult:
    """``theta`` (the minimiser), ``loss`` and ``loss_initial`` (L at θ and θ₀),
    ``iterations`` (lm: Jacobian evaluations; lbfgs: its iterations), ``n_evaluations`` (residual evaluations),
    ``converged`` and the solver's ``message``; ``history``: L after every evaluation."""

    theta: np.ndarray
    loss: float
    loss_initial: float
    iterations: int
    n_evaluations: int
    converged: bool
    message: str
    solver: str
    lam: float
    history: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def info(self) -> dict[str, Any]:
        return {"loss": self.loss, "loss_initial": self.loss_initial, "iterations": self.iterations,
                "n_evaluations": self.n_evaluations, "converged": self.converged, "message": self.message,
                "seconds": self.seconds}


class _Progress:
    """One tqdm bar over solver iterations, with the current loss (only when
    :func:`acegen.progress.enabled`, or always / never for ``progress`` True / False)."""

    def __init__(self, total: int, desc: str, progress: bool | None):
        import sys

        from ..progress import enabled

        self.bar = None
        if enabled(sys.stderr, None if progress is None else not progress):
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="eval", file=sys.stderr, leave=False)

    def update(self, loss: float, loss0: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"loss/initial {loss / loss0:.6g}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _reg(gamma: np.ndarray | None, n: int, lam: float) -> np.ndarray:
    """√λ Γ as a vector (Γ = I when ``gamma`` is None)."""
    g = np.ones(n) if gamma is None else np.asarray(gamma, dtype=float)
    return np.sqrt(lam) * g


def _all_residuals(model: ResidualModel, theta: np.ndarray, jacobian: bool) -> tuple[np.ndarray, np.ndarray | None]:
    rs, Js = [], []
    for b in range(model.n_batches):
        res = model.evaluate(theta, b, jacobian=jacobian)
        rs.append(res.r)
        if jacobian:
            Js.append(res.J)
    return np.concatenate(rs), (np.vstack(Js) if jacobian else None)


def _check(theta: np.ndarray, what: str) -> None:
    if not np.isfinite(theta).all():
        raise FitError(f"non-linear fit: non-finite {what}")


def fit_nonlinear(model: ResidualModel, theta0: np.ndarray, *, solver: str = "lm", gamma: np.ndarray | None = None,
                  lam: float = 0.0, max_iter: int = 100, tol: float = 1e-10, max_jacobian_gib: float = 4.0,
                  progress: bool | None = None) -> NonlinearResult:
    """Minimise L(θ) = ‖r(θ)‖² + λ‖Γθ‖² from ``theta0`` with ``solver`` ``"lm"`` or
    ``"lbfgs"`` (module docstring).  ``gamma``: Γ's diagonal (n_params,), None for I;
    ``max_iter``: the most iterations (lm: residual evaluations, at least one per iteration);
    ``tol``: relative tolerance on the loss (lm: ``ftol`` and ``xtol``; lbfgs: ``ftol``)."""
    if solver not in NONLINEAR_SOLVERS:
        raise FitError(f"non-linear fit: solver must be one of {list(NONLINEAR_SOLVERS)}, got {solver!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise FitError(f"non-linear fit: max_iter must be an integer >= 1, got {max_iter!r}")
    for name, v in (("tol", tol), ("lam", lam), ("max_jacobian_gib", max_jacobian_gib)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
            raise FitError(f"non-linear fit: {name} must be a finite number >= 0, got {v!r}")
    n = int(model.n_params)
    theta0 = np.asarray(theta0, dtype=float).ravel()
    if theta0.shape != (n,):
        raise FitError(f"non-linear fit: theta0 has {theta0.size} values for {n} parameters")
    _check(theta0, "initial parameters")
    if gamma is not None and np.shape(gamma) != (n,):
        raise FitError(f"non-linear fit: gamma has shape {np.shape(gamma)}, expected ({n},)")
    sg = _reg(gamma, n, float(lam))
    t0 = time.perf_counter()
    if solver == "lm":
        res = _lm(model, theta0, sg, max_iter, tol, max_jacobian_gib, progress)
    else:
        res = _lbfgs(model, theta0, sg, max_iter, tol, progress)
    res.lam = float(lam)
    res.seconds = time.perf_counter() - t0
    _check(res.theta, "parameters (the fit diverged)")
    return res


def _lm(model, theta0, sg, max_iter, tol, max_gib, progress) -> NonlinearResult:
    from scipy.optimize import least_squares

    n = theta0.size
    rows = sum(model.n_rows(b) for b in range(model.n_batches)) + n
    need = rows * n * 8.0
    if need > max_gib * GIB:
        raise FitError(f"non-linear fit (lm): the Jacobian has {rows} rows x {n} parameters ({need / GIB:.2f} GiB), "
                       f"over max_jacobian_gib = {max_gib:g}; use solver 'lbfgs' (memory: one batch) or raise "
                       "max_jacobian_gib")
    history: list[float] = []
    n_jac = [0]
    bar = _Progress(max_iter, "non-linear fit (lm)", progress)

    def fun(th):
        r, _ = _all_residuals(model, th, False)
        out = np.concatenate([r, sg * th])
        history.append(float(out @ out))
        bar.update(history[-1], history[0])
        return out

    def jac(th):
        n_jac[0] += 1
        J = np.empty((rows, n))  # filled batch by batch: one Jacobian in memory, not two
        row = 0
        for b in range(model.n_batches):
            Jb = model.evaluate(th, b, jacobian=True).J
            J[row:row + Jb.shape[0]] = Jb
            row += Jb.shape[0]
        if row != rows - n:
            raise FitError(f"non-linear fit: the model gave {row} rows, announced {rows - n} (n_rows)")
        J[row:] = np.diag(sg)
        return J

    try:
        sol = least_squares(fun, theta0, jac=jac, method="lm", x_scale="jac", ftol=max(tol, 2.3e-16),
                            xtol=max(tol, 2.3e-16), gtol=1e-15, max_nfev=max_iter)
    finally:
        bar.close()
    loss = float(sol.fun @ sol.fun)
    return NonlinearResult(np.asarray(sol.x, dtype=float), loss, history[0], n_jac[0], int(sol.nfev),
                           bool(sol.status > 0), str(sol.message), "lm", 0.0, history)


def _lbfgs(model, theta0, sg, max_iter, tol, progress) -> NonlinearResult:
    import scipy.linalg as sla
    from scipy.optimize import minimize

    # Gauss–Newton preconditioner: R from the QR of the Jacobian at θ0 (data and prior rows),
    # folded batch by batch (memory O(n²)); in u = Rθ the Hessian of L at θ0 is ≈ 2I.
    R = np.diag(sg)
    col2 = sg**2
    loss0 = float(np.sum((sg * theta0) ** 2))
    for b in range(model.n_batches):
        res = model.evaluate(theta0, b, jacobian=True)
        R = np.linalg.qr(np.vstack([R, res.J]), mode="r")
        col2 = col2 + np.einsum("ij,ij->j", res.J, res.J)
        loss0 += float(res.r @ res.r)
    if not col2.max() > 0:
        raise FitError("non-linear fit (lbfgs): the Jacobian at the start is zero")
    # Marquardt's ridge μ diag(JᵀJ): the Jacobian of a Finnis–Sinclair start is singular
    # (every density is linear to first order), the ridge keeps the scaled steps finite
    R = np.linalg.qr(np.vstack([R, np.diag(np.sqrt(LBFGS_RIDGE * np.where(col2 > 0, col2, col2.max())))]),
                     mode="r")
    if not loss0 > 0:
        return NonlinearResult(theta0.copy(), loss0, loss0, 0, 1, True, "zero loss at the start", "lbfgs", 0.0,
                               [loss0])
    history: list[float] = []
    n_eval = [0]
    bar = _Progress(max_iter, "non-linear fit (lbfgs)", progress)

    def theta_of(u):
        return sla.solve_triangular(R, u, check_finite=False)

    def fun(u):
        th = theta_of(u)
        L = float(np.sum((sg * th) ** 2))
        g = 2.0 * sg**2 * th
        for b in range(model.n_batches):
            res = model.evaluate(th, b, jacobian=True)
            L += float(res.r @ res.r)
            g += 2.0 * (res.J.T @ res.r)
        n_eval[0] += 1
        history.append(L)
        bar.update(L, loss0)
        return L / loss0, sla.solve_triangular(R, g, trans="T", check_finite=False) / loss0

    try:
        sol = minimize(fun, R @ theta0, jac=True, method="L-BFGS-B",
                       options={"maxiter": max_iter, "maxfun": 2 * max_iter, "ftol": max(tol, 2.3e-16),
                                "gtol": 1e-12, "maxcor": 20})
    finally:
        bar.close()
    theta = theta_of(np.asarray(sol.x, dtype=float))
    loss = float(sol.fun) * loss0
    return NonlinearResult(theta, loss, loss0, int(sol.nit), n_eval[0], bool(sol.success), str(sol.message),
                           "lbfgs", 0.0, history)
