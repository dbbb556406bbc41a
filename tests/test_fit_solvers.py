"""Solvers of acegen.fit.solvers against closed forms, scipy and known coefficients."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from acegen.fit import Committee, FitError, assemble, load_training_set, solve
from acegen.fit.solvers import blr_log_evidence
from .fit_toy import PairToy, label, random_structures

THETA = np.array([1.0, -2.0, 0.5, 3.0, -1.0, 0.7])


@pytest.fixture(scope="module")
def toy_system():
    model = PairToy(len(THETA))
    st = label(random_structures(25, seed=3), model, THETA)
    ts = load_training_set(st, virial_key="virial", eref="zero")
    return assemble(model, ts, progress=False)


def _random_problem(n=60, m=8, seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, m)) * rng.uniform(0.5, 3, m)
    c = rng.standard_normal(m)
    w = rng.uniform(0.5, 2.0, n)
    y = A @ c + noise * rng.standard_normal(n) / w
    gamma = rng.uniform(0.5, 4.0, m)
    return A, y, w, gamma, c


@pytest.mark.parametrize("solver, options", [
    ("qr", {}),
    ("lsqr", {"damp": 0.0, "atol": 1e-14, "btol": 1e-14}),
    ("rrqr", {"rtol": 1e-12}),
    ("blr", {}),
    ("ard", {}),
])
@pytest.mark.parametrize("with_prior", [False, True])
def test_exact_recovery_on_noiseless_toy_data(toy_system, solver, options, with_prior):
    A, y, w, _ = toy_system
    gamma = np.arange(1, len(THETA) + 1, dtype=float) ** 2 if with_prior else None
    res = solve(A, y, w, solver=solver, gamma=gamma, **options)
    np.testing.assert_allclose(res.coefficients, THETA, rtol=1e-8, atol=1e-8)


def test_wide_problem_needs_regularisation():
    A, y, w, gamma, _ = _random_problem(n=5, m=8)
    with pytest.raises(FitError, match="lam > 0"):
        solve(A, y, w, solver="qr")
    assert np.isfinite(solve(A, y, w, solver="qr", lam=1e-3).coefficients).all()
    assert np.isfinite(solve(A, y, w, solver="blr", gamma=gamma).coefficients).all()


@pytest.mark.parametrize("n", [60, 5])
def test_ridge_qr_matches_normal_equations(n):
    A, y, w, gamma, _ = _random_problem(n=n)
    lam = 0.37
    W2 = np.diag(w**2)
    ref = np.linalg.solve(A.T @ W2 @ A + lam * np.diag(gamma**2), A.T @ W2 @ y)
    res = solve(A, y, w, solver="qr", gamma=gamma, lam=lam)
    np.testing.assert_allclose(res.coefficients, ref, rtol=1e-10)


def test_lsqr_damp_is_sqrt_lambda():
    A, y, w, gamma, _ = _random_problem()
    damp = 0.8
    W2 = np.diag(w**2)
    ref = np.linalg.solve(A.T @ W2 @ A + damp**2 * np.diag(gamma**2), A.T @ W2 @ y)
    res = solve(A, y, w, solver="lsqr", gamma=gamma, damp=damp, atol=1e-14, btol=1e-14)
    np.testing.assert_allclose(res.coefficients, ref, rtol=1e-8)


def test_rrqr_truncates_a_duplicated_column():
    A, y, w, _, _ = _random_problem(noise=0.0)
    A = np.column_stack([A, A[:, 0]])  # exactly rank deficient
    with pytest.raises(FitError, match="rank deficient"):
        solve(A, y, w, solver="qr")
    res = solve(A, y, w, solver="rrqr", rtol=1e-10)
    assert res.info["rank"] == A.shape[1] - 1
    np.testing.assert_allclose(A @ res.coefficients, y, atol=1e-9)


def test_zero_weight_rows_are_ignored():
    A, y, w, _, _ = _random_problem()
    y2, w2 = y.copy(), w.copy()
    y2[:5] = 1e6
    w2[:5] = 0.0
    ref = solve(A[5:], y[5:], w[5:], solver="qr").coefficients
    np.testing.assert_allclose(solve(A, y2, w2, solver="qr").coefficients, ref, rtol=1e-12)


# ---------------------------------------------------------------------------- BLR
def test_blr_log_evidence_is_the_marginal_likelihood():
    """Eq. (16) equals log N(y; 0, β⁻¹W⁻² + A Σ₀ Aᵀ) with Σ₀ = α⁻¹Γ⁻² (scipy)."""
    A, y, w, gamma, _ = _random_problem(n=20, m=6)
    for n_rows in (20, 4):  # tall (QR-compressed) and wide
        a, b = 0.7, 3.1
        cov = np.diag(1.0 / (b * w[:n_rows] ** 2)) + A[:n_rows] @ np.diag(1.0 / (a * gamma**2)) @ A[:n_rows].T
        ref = multivariate_normal(np.zeros(n_rows), cov).logpdf(y[:n_rows])
        assert blr_log_evidence(A[:n_rows], y[:n_rows], w[:n_rows], a, b, gamma) == pytest.approx(ref, rel=1e-10)


def test_blr_posterior_matches_closed_form_and_evidence_increases():
    A, y, w, gamma, _ = _random_problem(n=80, m=8, noise=0.3)
    res = solve(A, y, w, solver="blr", gamma=gamma)
    a, b = res.hyperparameters["alpha"], res.hyperparameters["beta"]
    W2 = np.diag(w**2)
    Sigma = np.linalg.inv(b * A.T @ W2 @ A + a * np.diag(gamma**2))
    mu = b * Sigma @ A.T @ W2 @ y
    np.testing.assert_allclose(res.coefficients, mu, rtol=1e-8)
    np.testing.assert_allclose(res.covariance, Sigma, rtol=1e-8, atol=1e-14)
    hist = np.array(res.info["history"])
    assert len(hist) > 2 and res.info["converged"]
    assert (np.diff(hist) >= -1e-10 * abs(hist[-1])).all()
    assert hist[-1] > hist[0]
    # a maximum: every perturbation of (α, β) lowers the evidence
    best = blr_log_evidence(A, y, w, a, b, gamma)
    assert best == pytest.approx(res.info["log_evidence"], rel=1e-12)
    for fa, fb in ((1.3, 1), (1 / 1.3, 1), (1, 1.3), (1, 1 / 1.3)):
        assert blr_log_evidence(A, y, w, a * fa, b * fb, gamma) < best
    # the noise estimate: w·residual has variance about 1/β (true noise 0.3)
    assert 1 / np.sqrt(b) == pytest.approx(0.3, rel=0.3)


def test_blr_with_fixed_hyperparameters_is_ridge():
    A, y, w, gamma, _ = _random_problem()
    res = solve(A, y, w, solver="blr", gamma=gamma, alpha=2.0, beta=4.0)
    ridge = solve(A, y, w, solver="qr", gamma=gamma, lam=0.5)
    np.testing.assert_allclose(res.coefficients, ridge.coefficients, rtol=1e-10)
    assert res.info["iterations"] == 0


# ---------------------------------------------------------------------------- ARD
def test_ard_prunes_irrelevant_features():
    model = PairToy(8, width=0.5)
    theta = np.array([1.5, 0.0, -2.0, 0.0, 0.0, 1.0, 0.0, 0.8])
    st = label(random_structures(40, seed=5), model, theta, noise=1e-3, seed=7)
    A, y, w, _ = assemble(model, load_training_set(st, virial_key="virial", eref="zero"), progress=False)
    ard = solve(A, y, w, solver="ard")
    relevant = np.flatnonzero(theta)
    assert ard.info["converged"]
    assert sorted(ard.info["active"].tolist()) == relevant.tolist()
    assert (ard.coefficients[theta == 0] == 0).all()
    np.testing.assert_allclose(ard.coefficients[relevant], theta[relevant], atol=2e-3)
    assert np.isinf(ard.hyperparameters["alpha"][theta == 0]).all()
    assert 1 / np.sqrt(ard.hyperparameters["beta"]) == pytest.approx(1e-3, rel=0.2)
    # BLR keeps every feature (small but nonzero)
    blr = solve(A, y, w, solver="blr")
    assert (blr.coefficients != 0).all()

    # Tipping & Faul (2003): at the evidence maximum a feature is in the model iff q² > s,
    # with α_k = s²/(q² − s); s = φ_kᵀC⁻¹φ_k, q = φ_kᵀC⁻¹t for C = β⁻¹I + Σ_{j≠k, kept} α_j⁻¹φ_jφ_jᵀ,
    # C⁻¹ = βI − β²Φ(diag α + βΦᵀΦ)⁻¹Φᵀ (Woodbury, Φ = the other kept columns)
    Phi, t = A * w[:, None], y * w
    alpha, beta = ard.hyperparameters["alpha"], ard.hyperparameters["beta"]
    for k in range(len(theta)):
        others = [j for j in range(len(theta)) if j != k and np.isfinite(alpha[j])]
        P, phi = Phi[:, others], Phi[:, k]
        inner = np.linalg.inv(np.diag(alpha[others]) + beta * P.T @ P)

        def cinv_dot(u, v):
            return beta * (u @ v) - beta**2 * (P.T @ u) @ inner @ (P.T @ v)

        sk, qk = cinv_dot(phi, phi), cinv_dot(phi, t)
        if theta[k] != 0:
            assert qk**2 > sk
            assert alpha[k] == pytest.approx(sk**2 / (qk**2 - sk), rel=1e-3)
        else:
            assert qk**2 <= sk


# ---------------------------------------------------------------------------- committees
def test_committee_spread_matches_posterior_std():
    A, y, w, gamma, _ = _random_problem(n=50, m=6, noise=0.5)
    res = solve(A, y, w, solver="blr", gamma=gamma)
    com = Committee.sample(res, size=6000, seed=11)
    np.testing.assert_allclose(com.members.mean(axis=0), res.coefficients,
                               atol=4 * np.sqrt(np.diag(res.covariance) / 6000).max())
    rows = np.random.default_rng(2).standard_normal((5, 6))
    mean, spread = com.predict_rows(rows)
    exact = np.sqrt(np.einsum("ik,kl,il->i", rows, res.covariance, rows))
    np.testing.assert_allclose(mean, rows @ res.coefficients)
    np.testing.assert_allclose(spread, exact, rtol=0.05)


def test_committee_predict_energy_and_forces():
    model = PairToy(len(THETA))
    st = label(random_structures(20, seed=9), model, THETA, noise=0.01, seed=4)
    ts = load_training_set(st, virial_key="virial", eref="zero")
    A, y, w, _ = assemble(model, ts, progress=False)
    res = solve(A, y, w, solver="blr")
    com = Committee.sample(res, size=4000, seed=1)
    atoms = random_structures(1, seed=99)[0]
    out = com.predict(model, atoms, e0=1.5)
    ev = model(atoms)
    assert out["energy"] == pytest.approx(ev["energy"] @ res.coefficients + 1.5)
    e_std = np.sqrt(ev["energy"] @ res.covariance @ ev["energy"])
    assert out["energy_std"] == pytest.approx(e_std, rel=0.05)
    f_std = np.sqrt(np.einsum("nck,kl,ncl->nc", ev["forces"], res.covariance, ev["forces"]))
    np.testing.assert_allclose(out["forces_std"], f_std, rtol=0.1)
    # eq. (17): adding the aleatoric term 1/(β w_E²)
    wE = 30 / np.sqrt(len(atoms))
    out2 = com.predict(model, atoms, energy_weight=wE)
    assert out2["energy_std"] ** 2 == pytest.approx(out["energy_std"] ** 2 + 1 / (res.hyperparameters["beta"] * wE**2))


def test_committee_needs_a_covariance():
    A, y, w, _, _ = _random_problem()
    with pytest.raises(FitError, match="no posterior covariance"):
        Committee.sample(solve(A, y, w, solver="qr"))


def test_option_and_input_errors():
    A, y, w, _, _ = _random_problem()
    with pytest.raises(FitError, match="unknown option 'lambda'"):
        solve(A, y, w, solver="qr", **{"lambda": 1.0})
    with pytest.raises(FitError, match="solver must be one of"):
        solve(A, y, w, solver="svd")
    with pytest.raises(FitError, match="lam must be"):
        solve(A, y, w, solver="qr", lam=-1.0)
    y2 = y.copy()
    y2[3] = np.nan
    with pytest.raises(FitError, match="non-finite"):
        solve(A, y2, w)
    with pytest.raises(FitError, match="gamma"):
        solve(A, y, w, gamma=np.zeros(A.shape[1]))
