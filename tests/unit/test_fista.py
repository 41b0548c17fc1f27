"""Batched FISTA/ISTA reach the optimum of small lasso problems solved by other libraries."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from prosper.solvers.fista import FISTAOptions, fista, lipschitz_constant
from prosper.solvers.prox import PROX


class Lasso:
    """½||y_n − W s_n||² + λ||s_n||₁ for every row y_n of Y."""

    def __init__(self, Y, W, lam):
        self.B, self.G, self.lam = Y @ W, W.T @ W, lam

    def grad_f(self, X, rows):
        return X @ self.G - self.B[rows]

    def prox_g(self, V, step):
        return PROX["l1"](V, step, self.lam)


def _problem(seed=0, n=5, D=12, H=20, lam=0.3):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((D, H))
    W /= np.linalg.norm(W, axis=0)
    S = rng.standard_normal((n, H)) * (rng.random((n, H)) < 0.2)
    Y = S @ W.T + 0.05 * rng.standard_normal((n, D))
    return Y, W, lam


def _scipy_lasso(y, W, lam):
    """Reference: the lasso as a smooth bound-constrained problem s = p − q, p, q >= 0."""
    H = W.shape[1]

    def fun(z):
        s = z[:H] - z[H:]
        r = W @ s - y
        g = W.T @ r
        return 0.5 * r @ r + lam * z.sum(), np.concatenate([g + lam, -g + lam])

    res = minimize(
        fun,
        np.zeros(2 * H),
        jac=True,
        method="L-BFGS-B",
        bounds=[(0, None)] * (2 * H),
        options={"ftol": 1e-16, "gtol": 1e-12, "maxiter": 20000, "maxcor": 50},
    )
    return res.x[:H] - res.x[H:]


@pytest.mark.parametrize("accelerate", [True, False])
def test_fista_and_ista_reach_the_lasso_optimum(accelerate):
    Y, W, lam = _problem()
    res = fista(
        Lasso(Y, W, lam),
        np.zeros((Y.shape[0], W.shape[1])),
        L=lipschitz_constant(W),
        options=FISTAOptions(max_iter=50000, tol=1e-13, accelerate=accelerate),
    )
    assert res.converged.all()
    for n in range(Y.shape[0]):
        np.testing.assert_allclose(res.X[n], _scipy_lasso(Y[n], W, lam), atol=1e-6)
    if accelerate:  # FISTA needs far fewer iterations than ISTA for the same accuracy
        ista = fista(
            Lasso(Y, W, lam),
            np.zeros_like(res.X),
            L=lipschitz_constant(W),
            options=FISTAOptions(max_iter=50000, tol=1e-13, accelerate=False),
        )
        assert res.n_iter.mean() < 0.5 * ista.n_iter.mean()


def test_fista_matches_scikit_learn_lasso():
    linear_model = pytest.importorskip("sklearn.linear_model")
    Y, W, lam = _problem(seed=1, n=3)
    res = fista(
        Lasso(Y, W, lam),
        np.zeros((3, W.shape[1])),
        L=lipschitz_constant(W),
        options=FISTAOptions(max_iter=50000, tol=1e-13),
    )
    for n in range(3):
        # scikit-learn minimises (1/2D)||y − W s||² + α||s||₁, i.e. α = λ/D
        ref = (
            linear_model.Lasso(
                alpha=lam / W.shape[0], fit_intercept=False, tol=1e-14, max_iter=100000
            )
            .fit(W, Y[n])
            .coef_
        )
        np.testing.assert_allclose(res.X[n], ref, atol=1e-6)


def test_rows_are_independent_of_their_batch_and_warm_start_helps():
    Y, W, lam = _problem(seed=2, n=40)
    opts = FISTAOptions(max_iter=5000, tol=1e-10)
    L = lipschitz_constant(W)
    full = fista(Lasso(Y, W, lam), np.zeros((40, W.shape[1])), L=L, options=opts)
    half = fista(Lasso(Y[:7], W, lam), np.zeros((7, W.shape[1])), L=L, options=opts)
    np.testing.assert_allclose(half.X, full.X[:7], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(half.n_iter, full.n_iter[:7])
    warm = fista(Lasso(Y, W, lam), full.X, L=L, options=opts)
    assert warm.n_iter.max() <= 2
    np.testing.assert_allclose(warm.X, full.X, atol=1e-9)


def test_lipschitz_constant_is_the_squared_spectral_norm():
    W = np.random.default_rng(3).standard_normal((30, 50))
    exact = np.linalg.norm(W, 2) ** 2
    assert exact <= lipschitz_constant(W) <= 1.011 * exact
    assert lipschitz_constant(W, safety=1.0) == pytest.approx(exact, rel=1e-6)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="max_iter"):
        FISTAOptions(max_iter=0)
    with pytest.raises(ValueError, match="tol"):
        FISTAOptions(tol=-1.0)
    Y, W, lam = _problem()
    with pytest.raises(ValueError, match="L must be"):
        fista(Lasso(Y, W, lam), np.zeros((5, 20)), L=0.0)
