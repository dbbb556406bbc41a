"""Linear least-squares solvers for ACE fits (Witt et al. 2023, §II E–F, Table I) and committees.

All solvers minimise (some regularised / Bayesian form of)

    ‖W(y − A c)‖² + λ ‖Γ c‖²                                            (eq. 12)

with W = diag(w) the row weights and Γ = diag(γ) the smoothness prior.  Γ is applied by
rescaling columns: Ã = W A Γ⁻¹, c̃ = Γ c, so every solver works on ‖ỹ − Ã c̃‖² + λ‖c̃‖²
(ỹ = W y) and the answer is c = Γ⁻¹ c̃.  Rows with w = 0 are dropped.  For tall problems
(rows > parameters) the QR, RRQR, BLR and ARD solvers first compress the system with one
QR factorisation of [Ã | ỹ] = Q [R z; 0 ρ]: ‖ỹ − Ãc̃‖² = ‖z − R c̃‖² + ρ² for every c̃.

Solvers (``solve(A, y, w, solver=..., gamma=..., **options)``):

* ``qr``   — ridge by QR of the Tikhonov-extended system [Ã; √λ I] (option ``lam``, default 0).
* ``lsqr`` — scipy's LSQR on Ã with ``damp`` (minimises ‖ỹ − Ãc̃‖² + damp²‖c̃‖², so
  λ = damp²), ``atol``, ``btol``, ``conlim``, ``iter_lim``; Γ acts as a column preconditioner.
* ``rrqr`` — rank-revealing (column-pivoted) QR; directions with |R_kk| ≤ rtol·|R_11| are
  dropped (basic solution on the kept pivots), option ``rtol`` (default 1e-5).
* ``blr``  — Bayesian linear regression, eqs. (13)–(16): likelihood N(y; Ac, β⁻¹W⁻²), prior
  N(c; 0, Σ₀) with Σ₀ = α⁻¹Γ⁻²; α (prior precision scale) and β (noise precision) maximise
  the log evidence

      log p(y|α,β) = ½[N log β + M log α − β‖ỹ − Ãμ̃‖² − α‖μ̃‖² − log det(αI + βÃᵀÃ)
                     − N log 2π] + Σ_rows log w

  computed from the SVD of Ã (or R), by MacKay's fixed-point updates
  γ_eff = Σ βs²/(α + βs²), α ← γ_eff/‖μ̃‖², β ← (N − γ_eff)/‖ỹ − Ãμ̃‖², each step
  backtracked (in log α, log β) so the evidence never decreases.  Posterior mean
  μ = Γ⁻¹μ̃ and covariance Σ = Γ⁻¹(αI + βÃᵀÃ)⁻¹Γ⁻¹.  Options: ``alpha`` / ``beta`` (fix
  one or both), ``tol`` (on log α and log β, default 1e-6), ``maxiter`` (500).
* ``ard``  — automatic relevance determination: one precision α_k per parameter
  (prior N(c̃_k; 0, α_k⁻¹)), MacKay/Tipping updates γ_k = 1 − α_k Σ̃_kk, α_k ← γ_k/μ̃_k²,
  β ← (N − Σγ_k)/‖ỹ − Ãμ̃‖², started from the BLR solution; parameter k is pruned (set to
  0) once α_k > ``threshold``·β‖Ã_k‖² (its prior is ``threshold`` times tighter than what
  the data determine; default 1e6).  Options ``tol`` (1e-4), ``maxiter`` (300),
  ``threshold``.

Every solver returns a :class:`FitResult`; BLR and ARD also give the posterior covariance,
from which :class:`Committee` samples K parameter vectors (eq. 17).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg as sla
from scipy.sparse.linalg import lsqr as _scipy_lsqr

from ..errors import FitError

__all__ = ["SOLVERS", "Committee", "FitResult", "solve", "solve_compressed"]

_LOG2PI = math.log(2.0 * math.pi)
_EPS = np.finfo(float).eps


@dataclass
class FitResult:
    """Solution of a fit.

    ``coefficients`` c (in the original, unscaled parameters); ``covariance`` the posterior
    covariance of c (BLR, ARD) or None; ``hyperparameters`` e.g. ``lam``, ``alpha``,
    ``beta``; ``info`` diagnostics (iterations, log evidence history, rank, ...)."""

    coefficients: np.ndarray
    covariance: np.ndarray | None
    hyperparameters: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class _System:
    """‖ỹ − Ãc̃‖² = ‖z − R c̃‖² + rho2; n_obs rows of positive weight."""

    R: np.ndarray
    z: np.ndarray
    rho2: float
    n_obs: int
    log_w: float

    @property
    def yy(self) -> float:
        return float(self.z @ self.z) + self.rho2


def _compress(At: np.ndarray | _System, yt: np.ndarray | None, log_w: float) -> _System:
    if isinstance(At, _System):  # already compressed (streaming assembly)
        return At
    n, m = At.shape
    if n <= m + 1:
        return _System(At, yt, 0.0, n, log_w)
    raug = np.linalg.qr(np.column_stack([At, yt]), mode="r")  # (m + 1, m + 1)
    return _System(raug[:m, :m], raug[:m, m].copy(), float(raug[m, m] ** 2), n, log_w)


# ---------------------------------------------------------------------------- ridge
def _qr(At: np.ndarray, yt: np.ndarray, log_w: float, *, lam: float = 0.0):
    _check_nonneg("qr", "lam", lam)
    s = _compress(At, yt, log_w)
    m = s.R.shape[1]
    R, z = s.R, s.z
    if lam > 0:
        R = np.vstack([R, math.sqrt(lam) * np.eye(m)])
        z = np.concatenate([z, np.zeros(m)])
    if R.shape[0] < m:
        raise FitError(f"qr: {R.shape[0]} weighted observations for {m} parameters; use lam > 0, rrqr or blr")
    Q, T = sla.qr(R, mode="economic", check_finite=False)
    d = np.abs(np.diag(T))
    if d.min() <= m * _EPS * d.max():
        raise FitError("qr: the (regularised) design matrix is rank deficient; use lam > 0, rrqr or blr")
    c = sla.solve_triangular(T, Q.T @ z, check_finite=False)
    return c, None, {"lam": float(lam)}, {"diag_ratio": float(d.min() / d.max())}


def _lsqr(At: np.ndarray, yt: np.ndarray, log_w: float, *, damp: float = 1e-4, atol: float = 1e-6,
          btol: float = 1e-6, conlim: float = 1e8, iter_lim: int | None = None):
    for k, v in (("damp", damp), ("atol", atol), ("btol", btol), ("conlim", conlim)):
        _check_nonneg("lsqr", k, v)
    if isinstance(At, _System):  # same minimiser; the stopping rules then refer to ‖z‖, not ‖ỹ‖
        At, yt = At.R, At.z
    out = _scipy_lsqr(At, yt, damp=damp, atol=atol, btol=btol, conlim=conlim, iter_lim=iter_lim)
    c, istop, itn = out[0], int(out[1]), int(out[2])
    return c, None, {"damp": float(damp), "lam": float(damp) ** 2}, {"istop": istop, "iterations": itn}


def _rrqr(At: np.ndarray, yt: np.ndarray, log_w: float, *, rtol: float = 1e-5):
    _check_nonneg("rrqr", "rtol", rtol)
    s = _compress(At, yt, log_w)
    m = s.R.shape[1]
    Q, T, piv = sla.qr(s.R, mode="economic", pivoting=True, check_finite=False)
    d = np.abs(np.diag(T))
    if d.size == 0 or d[0] == 0:
        raise FitError("rrqr: the design matrix is zero")
    k = int(np.count_nonzero(d > rtol * d[0]))
    c = np.zeros(m)
    c[piv[:k]] = sla.solve_triangular(T[:k, :k], Q[:, :k].T @ s.z, check_finite=False)
    return c, None, {"rtol": float(rtol)}, {"rank": k}


# ---------------------------------------------------------------------------- BLR
class _Evidence:
    """Log evidence and posterior statistics of BLR from the SVD of R (see module doc)."""

    def __init__(self, s: _System):
        self.sys = s
        U, sv, self.Vt = sla.svd(s.R, full_matrices=False, check_finite=False, lapack_driver="gesdd")
        self.s = sv
        self.s2 = sv**2
        self.q = U.T @ s.z
        self.tail = max(s.yy - float(self.q @ self.q), 0.0)
        self.N = s.n_obs
        self.M = s.R.shape[1]
        self.ed_floor = (64 * _EPS) ** 2 * max(s.yy, np.finfo(float).tiny)

    def stats(self, la: float, lb: float) -> dict[str, Any]:
        a, b = math.exp(la), math.exp(lb)
        d = a + b * self.s2
        mu_s = b * self.s * self.q / d
        ew = float(mu_s @ mu_s)
        ed = max(self.tail + float(np.sum((a * self.q / d) ** 2)), self.ed_floor)
        logdet = float(np.sum(np.log(d))) + (self.M - len(self.s)) * la
        gam = float(np.sum(b * self.s2 / d))
        logev = 0.5 * (self.N * lb + self.M * la - b * ed - a * ew - logdet - self.N * _LOG2PI) + self.sys.log_w
        return {"alpha": a, "beta": b, "d": d, "mu_s": mu_s, "ew": ew, "ed": ed, "gamma": gam, "logev": logev}

    def mean(self, st) -> np.ndarray:
        return self.Vt.T @ st["mu_s"]

    def covariance(self, st) -> np.ndarray:
        cov = (self.Vt.T / st["d"]) @ self.Vt
        if len(self.s) < self.M:
            cov += (np.eye(self.M) - self.Vt.T @ self.Vt) / st["alpha"]
        return cov


def _mackay(ev: _Evidence, st) -> tuple[float, float]:
    """MacKay's fixed-point values (log α, log β)."""
    ew = max(st["ew"], np.finfo(float).tiny)
    gam = min(max(st["gamma"], 1e-300), ev.N * (1 - 1e-12))
    return math.log(gam / ew), math.log((ev.N - gam) / st["ed"])


def _blr_system(s: _System, *, alpha: float | None = None, beta: float | None = None, tol: float = 1e-6,
                maxiter: int = 500):
    ev = _Evidence(s)
    for k, v in (("alpha", alpha), ("beta", beta)):
        if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise FitError(f"blr: {k} must be a positive number, got {v!r}")
    _check_nonneg("blr", "tol", tol)
    if not (isinstance(maxiter, int) and maxiter >= 0):
        raise FitError(f"blr: maxiter must be an integer >= 0, got {maxiter!r}")
    # start: noise ~ 10 % of the signal, prior precision ~ 1e-3 of the mean data precision
    lb = math.log(beta) if beta is not None else math.log(100.0 * ev.N / max(s.yy, np.finfo(float).tiny))
    smean = float(np.mean(ev.s2)) if len(ev.s2) else 1.0
    la = math.log(alpha) if alpha is not None else lb + math.log(1e-3 * max(smean, np.finfo(float).tiny))
    st = ev.stats(la, lb)
    history = [st["logev"]]
    converged = alpha is not None and beta is not None
    it = 0
    while not converged and it < maxiter:
        it += 1
        na, nb = _mackay(ev, st)
        dla = 0.0 if alpha is not None else na - la
        dlb = 0.0 if beta is not None else nb - lb
        t = 1.0
        while True:
            cand = ev.stats(la + t * dla, lb + t * dlb)
            if cand["logev"] >= st["logev"] - 1e-13 * abs(st["logev"]):
                break
            t *= 0.5
            if t < 1e-8:
                cand = None
                break
        if cand is None:  # no ascent along the MacKay direction: at the maximum
            converged = True
            break
        la, lb, st = la + t * dla, lb + t * dlb, cand
        history.append(st["logev"])
        if max(abs(t * dla), abs(t * dlb)) < tol:
            converged = True
    hyper = {"alpha": st["alpha"], "beta": st["beta"], "lam": st["alpha"] / st["beta"],
             "effective_parameters": st["gamma"]}
    info = {"log_evidence": st["logev"], "history": history, "iterations": it, "converged": converged,
            "n_obs": ev.N}
    return ev.mean(st), ev.covariance(st), hyper, info


def _blr(At: np.ndarray, yt: np.ndarray, log_w: float, *, alpha: float | None = None,
         beta: float | None = None, tol: float = 1e-6, maxiter: int = 500):
    return _blr_system(_compress(At, yt, log_w), alpha=alpha, beta=beta, tol=tol, maxiter=maxiter)


def blr_log_evidence(A: np.ndarray, y: np.ndarray, w: np.ndarray | None, alpha: float, beta: float,
                     gamma: np.ndarray | None = None) -> float:
    """The BLR log evidence at given (α, β) (for diagnostics and tests; same formula as the
    ``blr`` solver)."""
    At, yt, log_w = _prepare(A, y, w, gamma)
    return _Evidence(_compress(At, yt, log_w)).stats(math.log(alpha), math.log(beta))["logev"]


# ---------------------------------------------------------------------------- ARD
def _ard(At: np.ndarray, yt: np.ndarray, log_w: float, *, tol: float = 1e-4, maxiter: int = 300,
         threshold: float = 1e6):
    _check_nonneg("ard", "tol", tol)
    if not (isinstance(threshold, (int, float)) and threshold > 0):
        raise FitError(f"ard: threshold must be > 0, got {threshold!r}")
    s = _compress(At, yt, log_w)
    _, _, h0, _ = _blr_system(s)
    m = s.R.shape[1]
    alpha = np.full(m, h0["alpha"])
    beta = h0["beta"]
    active = np.arange(m)
    colnorm2 = np.sum(s.R**2, axis=0)
    yy, N = s.yy, s.n_obs
    history = []
    converged = False
    mu = cov = None
    it = 0
    for it in range(1, maxiter + 1):
        Ra = s.R[:, active]
        ka = len(active)
        # H = βRᵀR + diag(α) = TᵀT from the QR of [√β R; diag(√α)] (stable)
        stack = np.vstack([math.sqrt(beta) * Ra, np.diag(np.sqrt(alpha[active]))])
        Q, T = sla.qr(stack, mode="economic", check_finite=False)
        rhs = np.concatenate([math.sqrt(beta) * s.z, np.zeros(ka)])
        mu = sla.solve_triangular(T, Q.T @ rhs, check_finite=False)
        Tinv = sla.solve_triangular(T, np.eye(ka), check_finite=False)
        cov = Tinv @ Tinv.T
        g = np.clip(1.0 - alpha[active] * np.diag(cov), 0.0, 1.0)
        res = s.z - Ra @ mu
        ed = max(float(res @ res) + s.rho2, (64 * _EPS) ** 2 * yy)
        logdet = 2.0 * float(np.sum(np.log(np.abs(np.diag(T)))))
        logev = 0.5 * (N * math.log(beta) + float(np.sum(np.log(alpha[active]))) - beta * ed
                       - float(np.sum(alpha[active] * mu**2)) - logdet - N * _LOG2PI) + log_w
        history.append(logev)
        new_alpha = g / np.maximum(mu**2, np.finfo(float).tiny)
        new_beta = (N - float(g.sum())) / ed
        change = max(float(np.max(np.abs(np.log(new_alpha) - np.log(alpha[active])), initial=0.0)),
                     abs(math.log(new_beta) - math.log(beta)))
        alpha[active] = new_alpha
        beta = new_beta
        keep = new_alpha <= threshold * beta * colnorm2[active]
        if not keep.any():
            raise FitError("ard: every parameter was pruned; lower the threshold or check the data")
        pruned = not keep.all()
        active = active[keep]
        if not pruned and change < tol:
            converged = True
            break
    # final posterior on the active set with the last hyperparameters
    Ra = s.R[:, active]
    ka = len(active)
    stack = np.vstack([math.sqrt(beta) * Ra, np.diag(np.sqrt(alpha[active]))])
    Q, T = sla.qr(stack, mode="economic", check_finite=False)
    mu = sla.solve_triangular(T, Q.T @ np.concatenate([math.sqrt(beta) * s.z, np.zeros(ka)]), check_finite=False)
    Tinv = sla.solve_triangular(T, np.eye(ka), check_finite=False)
    c = np.zeros(m)
    c[active] = mu
    full_cov = np.zeros((m, m))
    full_cov[np.ix_(active, active)] = Tinv @ Tinv.T
    alpha_out = np.full(m, np.inf)
    alpha_out[active] = alpha[active]
    hyper = {"alpha": alpha_out, "beta": beta}
    info = {"active": active, "n_active": ka, "iterations": it, "converged": converged,
            "history": history, "log_evidence": history[-1] if history else None, "n_obs": N}
    return c, full_cov, hyper, info


# ---------------------------------------------------------------------------- driver
SOLVERS: dict[str, Callable] = {"qr": _qr, "lsqr": _lsqr, "rrqr": _rrqr, "blr": _blr, "ard": _ard}


def _check_nonneg(solver: str, name: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise FitError(f"{solver}: {name} must be a finite number >= 0, got {v!r}")


def _prepare(A, y, w, gamma):
    A = np.asarray(A, dtype=float)
    y = np.asarray(y, dtype=float)
    if A.ndim != 2 or y.shape != (A.shape[0],):
        raise FitError(f"solve: A must be (rows, params) and y (rows,), got {A.shape} and {y.shape}")
    w = np.ones(len(y)) if w is None else np.asarray(w, dtype=float)
    if w.shape != y.shape:
        raise FitError(f"solve: w has shape {w.shape}, expected {y.shape}")
    for name, v in (("A", A), ("y", y), ("w", w)):
        if not np.isfinite(v).all():
            raise FitError(f"solve: {name} has non-finite entries")
    if (w < 0).any():
        raise FitError("solve: negative weight")
    keep = w > 0
    if not keep.any():
        raise FitError("solve: every row has weight 0")
    At = A[keep] * w[keep, None]
    if gamma is not None:
        gamma = np.asarray(gamma, dtype=float)
        if gamma.shape != (A.shape[1],) or not (np.isfinite(gamma).all() and (gamma > 0).all()):
            raise FitError(f"solve: gamma must be {A.shape[1]} positive weights")
        At /= gamma[None, :]
    return At, y[keep] * w[keep], float(np.sum(np.log(w[keep])))


def solve(A: np.ndarray, y: np.ndarray, w: np.ndarray | None = None, *, solver: str = "blr",
          gamma: np.ndarray | None = None, **options: Any) -> FitResult:
    """Solve the weighted, Γ-regularised least-squares problem with the named solver.

    ``A`` (rows, params), ``y`` (rows,), ``w`` row weights (None: ones), ``gamma`` the
    diagonal of Γ (None: identity).  ``options`` are the solver's (module docstring); an
    unknown option is a :class:`FitError`."""
    fn = _check_options(solver, options)
    At, yt, log_w = _prepare(A, y, w, gamma)
    c, cov, hyper, info = fn(At, yt, log_w, **options)
    return _finish(solver, c, cov, hyper, info, gamma)


def _check_options(solver: str, options: Mapping[str, Any]) -> Callable:
    if solver not in SOLVERS:
        raise FitError(f"solver must be one of {sorted(SOLVERS)}, got {solver!r}")
    fn = SOLVERS[solver]
    allowed = [p for p in inspect.signature(fn).parameters if p not in ("At", "yt", "log_w")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise FitError(f"solver {solver!r}: unknown option {unknown[0]!r} (allowed: {allowed})")
    return fn


def _finish(solver: str, c, cov, hyper, info, gamma) -> FitResult:
    if not np.isfinite(c).all():
        raise FitError(f"solver {solver!r} produced non-finite coefficients")
    if gamma is not None:
        g = np.asarray(gamma, dtype=float)
        c = c / g
        if cov is not None:
            cov = cov / np.outer(g, g)
    info["solver"] = solver
    return FitResult(np.asarray(c, dtype=float), cov, hyper, info)


def solve_compressed(R_aug: np.ndarray, n_obs: int, log_w: float, *, solver: str = "blr",
                     gamma: np.ndarray | None = None, **options: Any) -> FitResult:
    """:func:`solve` from the compressed system of a streamed assembly.

    ``R_aug`` (k, M+1) is the triangular factor of [W A | W y] over the rows of positive
    weight (k = min(rows, M+1)), ``n_obs`` their number and ``log_w`` = Σ log w: with
    [W A | W y] = Q R_aug, ‖W(y − A c)‖² = ‖z − R c‖² + ρ² (R = R_aug[:M, :M], z its last
    column, ρ = R_aug[M, M]), and the BLR/ARD evidence needs exactly R, z, ρ², N and Σ log w,
    so every solver gives what :func:`solve` gives on the full system, to round-off (LSQR: the
    same minimiser; its stopping tolerances refer to the compressed right-hand side).  Γ
    scales columns, R Γ⁻¹ is the factor of W A Γ⁻¹, so the prior is applied here."""
    fn = _check_options(solver, options)
    R_aug = np.asarray(R_aug, dtype=float)
    if R_aug.ndim != 2 or R_aug.shape[1] < 2 or not np.isfinite(R_aug).all():
        raise FitError(f"solve_compressed: R_aug must be a finite (k, M+1) matrix, got shape {R_aug.shape}")
    if n_obs < 1:
        raise FitError("solve: every row has weight 0")
    m = R_aug.shape[1] - 1
    k = min(R_aug.shape[0], m)
    R = R_aug[:k, :m].copy()
    if gamma is not None:
        gamma = np.asarray(gamma, dtype=float)
        if gamma.shape != (m,) or not (np.isfinite(gamma).all() and (gamma > 0).all()):
            raise FitError(f"solve: gamma must be {m} positive weights")
        R /= gamma[None, :]
    rho2 = float(R_aug[m, m] ** 2) if R_aug.shape[0] > m else 0.0
    system = _System(R, R_aug[:k, m].copy(), rho2, int(n_obs), float(log_w))
    c, cov, hyper, info = fn(system, None, float(log_w), **options)
    return _finish(solver, c, cov, hyper, info, gamma)


# ---------------------------------------------------------------------------- committees
@dataclass
class Committee:
    """K parameter vectors drawn from the posterior N(μ, Σ) of a BLR/ARD fit (eq. 17).

    ``mean`` μ (M,), ``members`` (K, M), ``beta`` the noise precision (for the aleatoric
    term 1/(β w²) of eq. 17)."""

    mean: np.ndarray
    members: np.ndarray
    beta: float | None = None

    @classmethod
    def sample(cls, result: FitResult, size: int = 32, seed: int | None = 0) -> "Committee":
        if result.covariance is None:
            raise FitError(f"committee: solver {result.info.get('solver')!r} gives no posterior covariance "
                           "(use blr or ard)")
        if not (isinstance(size, int) and size >= 1):
            raise FitError(f"committee: size must be an integer >= 1, got {size!r}")
        cov = 0.5 * (result.covariance + result.covariance.T)
        evals, evecs = np.linalg.eigh(cov)
        factor = evecs * np.sqrt(np.clip(evals, 0.0, None))[None, :]
        z = np.random.default_rng(seed).standard_normal((size, len(result.coefficients)))
        beta = result.hyperparameters.get("beta")
        return cls(result.coefficients.copy(), result.coefficients[None, :] + z @ factor.T,
                   None if beta is None else float(beta))

    def __len__(self) -> int:
        return len(self.members)

    def predict_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean-model predictions rows·μ and committee spread sqrt(mean_k (rows·c_k − rows·μ)²)."""
        rows = np.asarray(rows, dtype=float)
        mean = rows @ self.mean
        spread = rows @ self.members.T - mean[..., None]
        return mean, np.sqrt(np.mean(spread**2, axis=-1))

    def predict(self, basis_evaluator: Callable[[Any], Mapping[str, np.ndarray]], atoms, *, e0: float = 0.0,
                energy_weight: float | None = None, force_weight: float | None = None) -> dict[str, np.ndarray]:
        """Energy and force predictions with uncertainties for one structure.

        Returns ``energy`` (mean model, + ``e0`` = Σ E0), ``energy_std`` (eq. 17:
        sqrt(1/(β w_E²) + mean_k (E_k − E_μ)²), the first term only when ``energy_weight`` is
        given), ``energy_committee`` (K,), and, when the evaluator gives forces, ``forces``,
        ``forces_std`` (same rule with ``force_weight``) and ``forces_committee`` (K, n, 3)."""
        ev = basis_evaluator(atoms)
        e_row = np.asarray(ev["energy"], dtype=float)
        out: dict[str, np.ndarray] = {}
        e_mu = float(e_row @ self.mean) + e0
        e_k = self.members @ e_row + e0
        var = float(np.mean((e_k - e_mu) ** 2))
        if energy_weight is not None and self.beta:
            var += 1.0 / (self.beta * energy_weight**2)
        out["energy"], out["energy_std"], out["energy_committee"] = np.float64(e_mu), np.float64(math.sqrt(var)), e_k
        if "forces" in ev:
            f = np.asarray(ev["forces"], dtype=float)
            f_mu = f @ self.mean
            f_k = np.einsum("nck,jk->jnc", f, self.members)
            fvar = np.mean((f_k - f_mu[None]) ** 2, axis=0)
            if force_weight is not None and self.beta:
                fvar = fvar + 1.0 / (self.beta * force_weight**2)
            out["forces"], out["forces_std"], out["forces_committee"] = f_mu, np.sqrt(fvar), f_k
        return out
