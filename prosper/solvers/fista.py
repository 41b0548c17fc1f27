"""Batched proximal gradient: FISTA (Beck & Teboulle 2009) and ISTA for many rows at once.

The solver owns the loop, the step size and the stopping test; a problem supplies only the
gradient of its smooth part and the proximal map of its non-smooth part (the SPORCO split of
algorithm and problem). The unknown is a matrix X (n, H) whose rows are independent problems
sharing one step size, e.g. the codes of n data points under one dictionary: every iteration
is a matrix product for all rows.

Each row runs until its own relative change ``||x_k − x_{k−1}|| <= tol ||x_k||``; finished rows
leave the active set, so later iterations only touch rows still moving and a row's result does
not depend on which other rows share its batch (nor on the number of MPI ranks). Momentum is
restarted per row with the gradient test of O'Donoghue & Candès (2015).

References
----------
A. Beck and M. Teboulle. A fast iterative shrinkage-thresholding algorithm for linear inverse
problems. SIAM J. Imaging Sci. 2(1):183-202, 2009.

B. O'Donoghue and E. Candès. Adaptive restart for accelerated gradient schemes. Found.
Comput. Math. 15:715-732, 2015.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from prosper.backends import get_namespace

log = logging.getLogger(__name__)

__all__ = ["FISTAOptions", "FISTAResult", "ProximalProblem", "fista", "lipschitz_constant"]


@dataclass(frozen=True)
class FISTAOptions:
    """Options of :func:`fista`.

    Attributes
    ----------
    max_iter : int, default=200
        Iterations at most, per row.
    tol : float, default=1e-4
        A row stops when its relative change ``||x_k − x_{k−1}|| / ||x_k||`` is at most tol
        (a row that stays at zero stops at once).
    accelerate : bool, default=True
        FISTA momentum; False gives plain ISTA (proximal gradient).
    restart : bool, default=True
        Reset a row's momentum when it points against the proximal-gradient step.
    """

    max_iter: int = 200
    tol: float = 1e-4
    accelerate: bool = True
    restart: bool = True

    def __post_init__(self) -> None:
        if not (isinstance(self.max_iter, (int, np.integer)) and self.max_iter >= 1):
            raise ValueError(f"max_iter must be an int >= 1; got {self.max_iter!r}.")
        if not (self.tol >= 0):
            raise ValueError(f"tol must be >= 0; got {self.tol!r}.")


@dataclass
class FISTAResult:
    """Solution of :func:`fista`.

    Attributes
    ----------
    X : ndarray of shape (n, H)
    n_iter : ndarray of int, shape (n,)
        Iterations each row ran.
    converged : ndarray of bool, shape (n,)
        Whether the row met the tolerance within ``max_iter``.
    """

    X: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray


class ProximalProblem(Protocol):
    """min_X f(X) + g(X), separable over the rows of X.

    ``grad_f(X, rows)`` gets the current values of the rows listed in ``rows`` (an index
    array into the full problem, in the order of X's rows) and returns ∇f for them;
    ``prox_g(V, step)`` returns prox_{step·g}(V) row by row.
    """

    def grad_f(self, X, rows): ...

    def prox_g(self, V, step): ...


def lipschitz_constant(W, *, n_iter: int = 200, tol: float = 1e-8, safety: float = 1.01) -> float:
    """L = ||W||₂² (largest eigenvalue of WᵀW) by power iteration, times a safety factor.

    The Rayleigh quotient approaches ||W||₂² from below, so it is multiplied by ``safety`` to
    keep the step 1/L admissible; the result is never below the largest squared column norm.
    The start vector is fixed, so every MPI rank gets the same L for the same W.

    Parameters
    ----------
    W : ndarray of shape (D, H)
    n_iter : int, default=200
    tol : float, default=1e-8
        Stop when the estimate changes by less than ``tol`` relatively.
    safety : float, default=1.01

    Returns
    -------
    float
    """
    xp = get_namespace(W)
    G = W.T @ W
    v = xp.asarray(np.random.default_rng(0).standard_normal(G.shape[0]), dtype=W.dtype)
    v /= xp.linalg.norm(v)
    value = 0.0
    for _ in range(n_iter):
        Gv = G @ v
        new = float(v @ Gv)
        norm = float(xp.linalg.norm(Gv))
        if norm == 0.0:
            break
        v = Gv / norm
        if abs(new - value) <= tol * max(abs(new), 1e-300):
            value = new
            break
        value = new
    return safety * max(value, float(xp.max(xp.diagonal(G))))


def fista(
    problem: ProximalProblem, X0, *, L: float, options: FISTAOptions | None = None
) -> FISTAResult:
    """Minimise f + g row by row with step 1/L, from the warm start X0.

    Parameters
    ----------
    problem : ProximalProblem
    X0 : ndarray of shape (n, H)
        Start (e.g. the previous iteration's codes; zeros for a cold start). Not modified.
    L : float
        Lipschitz constant of ∇f (see :func:`lipschitz_constant`).
    options : FISTAOptions or None
        None uses the defaults.

    Returns
    -------
    FISTAResult
    """
    opts = FISTAOptions() if options is None else options
    if not L > 0:
        raise ValueError(f"L must be > 0; got {L!r}.")
    xp = get_namespace(X0)
    step = 1.0 / L
    n = X0.shape[0]
    out = xp.array(X0, copy=True)
    n_iter = np.full(n, opts.max_iter, dtype=np.int64)
    converged = np.zeros(n, dtype=bool)
    active = np.arange(n)
    x = xp.array(X0, copy=True)
    y = x
    t = xp.ones(n, dtype=X0.dtype)
    for k in range(1, opts.max_iter + 1):
        if active.size == 0:
            break
        x_new = problem.prox_g(y - step * problem.grad_f(y, active), step)
        dx = x_new - x
        change = xp.sqrt(xp.sum(dx * dx, axis=1))
        size = xp.sqrt(xp.sum(x_new * x_new, axis=1))
        done = _to_numpy(change <= opts.tol * size)
        if opts.accelerate:
            t_new = 0.5 * (1.0 + xp.sqrt(1.0 + 4.0 * t * t))
            beta = (t - 1.0) / t_new
            if opts.restart:
                against = xp.sum((y - x_new) * dx, axis=1) > 0
                beta = xp.where(against, 0.0, beta)
                t_new = xp.where(against, 1.0, t_new)
            y = x_new + beta[:, None] * dx
            t = t_new
        else:
            y = x_new
        x = x_new
        if done.any():
            finished = active[done]
            out[finished] = x[done]
            n_iter[finished] = k
            converged[finished] = True
            keep = ~done
            active, x, y, t = active[keep], x[keep], y[keep], t[keep]
    if active.size:
        out[active] = x
    return FISTAResult(X=out, n_iter=n_iter, converged=converged)


def _to_numpy(a) -> np.ndarray:
    """Small boolean masks come to the host (index bookkeeping stays on the CPU)."""
    return a.get() if hasattr(a, "get") else np.asarray(a)
