"""The closed-form proximal maps equal a brute-force grid minimisation of ½(u − x)² + t ψ(u)."""

from __future__ import annotations

import numpy as np
import pytest

from prosper.solvers.prox import PROX

H_GRID = 2e-4
U = np.arange(-6.0, 6.0 + H_GRID / 2, H_GRID)
U[np.argmin(np.abs(U))] = 0.0  # the grid must hold 0 exactly (the kink of every penalty)


def _psi(name, u, lam, a):
    """The penalties written out independently of prosper.models."""
    au = np.abs(u)
    if name == "l1":
        return lam * au
    if name == "l0":
        return lam * (au != 0)
    if name == "l1/2":
        return lam * np.sqrt(au)
    edge = np.sqrt(2 * lam) / a
    return np.where(au <= edge, lam - 0.5 * a**2 * (au - edge) ** 2, lam)


def _thresholds(name, step, lam, a):
    t = step * lam
    return {
        "l1": [t],
        "l0": [np.sqrt(2 * t)],
        "l1/2": [1.5 * t ** (2 / 3)],
        "cel0": [step * a * np.sqrt(2 * lam), np.sqrt(2 * lam) / a],
    }[name]


CASES = [
    # (step, lam, a): a only matters for CEL0; step * a² < 1 and >= 1 both covered
    (1.0, 0.3, 1.0),
    (0.5, 1.0, 1.0),
    (0.25, 2.0, 1.5),
    (1.0, 0.5, 0.7),
    (0.8, 0.4, 1.3),  # CEL0 with step·a² > 1 (concave inner part)
    (1.0, 0.5, 1.0),  # CEL0 with step·a² = 1 exactly
]


@pytest.mark.parametrize("name", sorted(PROX))
@pytest.mark.parametrize("step,lam,a", CASES)
def test_prox_equals_grid_minimiser(name, step, lam, a):
    thr = _thresholds(name, step, lam, a)
    x = np.concatenate(
        [np.linspace(-4, 4, 81)]
        + [np.array([s * c, s * (c - 1e-3), s * (c + 1e-3)]) for c in thr for s in (1, -1)]
    )
    u = PROX[name](x, step, lam, np.full_like(x, a))
    assert u.shape == x.shape

    def objective(values, xs):
        return 0.5 * (values - xs) ** 2 + step * _psi(name, values, lam, a)

    grid = objective(U[None, :], x[:, None])  # (n_x, n_grid)
    best = grid.min(axis=1)
    f_prox = objective(u, x)
    # the closed form is at least as good as every grid point ...
    assert np.all(f_prox <= best + 1e-12), np.max(f_prox - best)
    # ... and no better than the grid allows (grid error of a quadratic: h²/8 + slope·h/2)
    assert np.all(f_prox >= best - (H_GRID**2 + 10 * H_GRID)), np.min(f_prox - best)
    # where the minimiser is unique (no second minimum within 1e-6), it is the grid argmin
    argmin = U[grid.argmin(axis=1)]
    far = np.abs(U[None, :] - u[:, None]) > 0.05
    second = np.where(far, grid, np.inf).min(axis=1)
    unique = second > best + 1e-6
    assert unique.sum() > 60
    np.testing.assert_allclose(u[unique], argmin[unique], atol=2 * H_GRID)


def test_prox_broadcasts_over_atoms_and_keeps_dtype():
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(4, 3)
    a = np.array([0.5, 1.0, 2.0], dtype=np.float32)
    for name, prox in PROX.items():
        u = prox(x, 0.2, 0.5, a)
        assert u.shape == x.shape and u.dtype == np.float32, name
        # each column uses its own atom norm: same result as column by column
        cols = np.stack([prox(x[:, h], 0.2, 0.5, a[h]) for h in range(3)], axis=1)
        np.testing.assert_allclose(u, cols, rtol=1e-6, err_msg=name)


def test_zero_step_is_identity_and_large_threshold_is_zero():
    x = np.linspace(-2, 2, 9)
    for name, prox in PROX.items():
        np.testing.assert_allclose(prox(x, 0.0, 1.0, np.ones_like(x)), x, err_msg=name)
        np.testing.assert_array_equal(prox(x, 100.0, 1.0, np.ones_like(x)), 0.0 * x)
