"""NumPy reference kernels for the E-step.

Everything is written as batched matrix products over data points and candidate states:
no Python loop over either. Other backends must reproduce these numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from prosper.backends.evolution import REFERENCE
from prosper.backends.linear_terms import preselection_scores, state_log_prior

if TYPE_CHECKING:  # annotations only: models and kernels never import solvers
    from prosper.solvers.states import CandidateBatch, ExpectationTruncation


NAME = "numpy"
AVAILABLE = True

__all__ = [
    "BATCH_POINTS",
    "KERNELS",
    "batch_points",
    "linear_candidates",
    "linear_estep",
    "linear_posterior_mean",
    "linear_state_log_joint",
    "linear_state_stats",
    "select_device",
    "to_host",
]


def linear_candidates(
    Y: np.ndarray,
    W: np.ndarray,
    states: ExpectationTruncation,
    presel: tuple[np.ndarray, np.ndarray],
) -> tuple[CandidateBatch, np.ndarray]:
    """Candidate states of a batch and Wᵀy, from one GEMM shared with the E-step.

    Parameters
    ----------
    Y : ndarray of shape (B, D)
    W : ndarray of shape (D, H)
    states : ExpectationTruncation
    presel : tuple of two ndarrays of shape (V', H)
        The model's preselection coefficients (see
        :func:`prosper.backends.linear_terms.preselection_scores`).

    Returns
    -------
    batch : CandidateBatch
    WY : ndarray of shape (B, H)
        ``Y @ W`` at the precision of Y.
    """
    WY = Y @ W
    scores = None if states.full else preselection_scores(WY, presel)
    return states.select(scores, Y.shape[0]), WY


def linear_log_joint_parts(
    Y: np.ndarray,
    WY: np.ndarray,
    WtW: np.ndarray,
    sigma2: float,
    value_logp: np.ndarray,
    batch: CandidateBatch,
    outer: np.ndarray,
    value_counts: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log-likelihood (B, K) and log-prior (K,) of every candidate state, linear Gaussian model.

    Uses ||y - Ws||^2 = ||y||^2 - 2 s^T(W^T y) + s^T (W^T W) s with the batch's W^T y (``WY``,
    (B, H)); per data point the H'xH' block of W^T W contracted with the state table (a second
    GEMM over the flattened block), O(K H'^2) per point.

    Returns
    -------
    ll : ndarray of shape (B, K)
    lp : ndarray of shape (K,)
    yy : ndarray of shape (B,)
        ||y||^2 per data point.
    """
    B, D = Y.shape
    I, table, nz = batch.I, batch.table, batch.values[1:]
    yy = np.einsum("nd,nd->n", Y, Y)
    diag = np.diag(WtW)
    n_single = nz.size * batch.H
    # squared errors minus ||y||^2, filled in place: [zero | singletons | table rows]
    err = np.empty((B, 1 + n_single + table.shape[0]), dtype=np.result_type(Y, np.float64))
    err[:, 0] = 0.0
    # singletons, value-major: (B, V-1, H)
    err[:, 1 : 1 + n_single] = (
        (nz**2)[None, :, None] * diag[None, None, :] - 2.0 * nz[None, :, None] * WY[:, None, :]
    ).reshape(B, n_single)
    # multi-latent states over the preselected slots: two GEMMs against the table
    M_I = WtW[I[:, :, None], I[:, None, :]].reshape(B, I.shape[1] ** 2)
    multi = err[:, 1 + n_single :]
    np.matmul(M_I, outer.T, out=multi)
    multi -= 2.0 * (np.take_along_axis(WY, I, axis=1) @ table.T)
    err += yy[:, None]
    ll = err
    ll *= -1.0 / (2.0 * sigma2)
    ll -= 0.5 * D * np.log(2.0 * np.pi * sigma2)
    return ll, state_log_prior(value_logp, batch.H, value_counts), yy


def linear_estep(
    Y: np.ndarray,
    W: np.ndarray,
    sigma2: float,
    value_logp: np.ndarray,
    states: ExpectationTruncation,
    presel: tuple[np.ndarray, np.ndarray],
    beta: float,
    prior_beta: float,
    mask: np.ndarray | None = None,
    accumulate: bool = True,
) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
    """Truncated E-step of a linear Gaussian model (BSC, TSC, DSC) on one batch.

    Preselection, candidate states, log-joints, log marginals and statistics.

    Parameters
    ----------
    Y : ndarray of shape (B, D)
    W : ndarray of shape (D, H)
    sigma2 : float
        Observation noise variance.
    value_logp : ndarray of shape (V,)
        Prior log-probability of one latent taking each value (value 0 first).
    states : ExpectationTruncation
        The candidate-state sets (H', γ, table of multi-latent states).
    presel : tuple of two ndarrays of shape (V', H)
        The model's preselection coefficients: latent h scores max_v (A_vh (Wᵀy)_h + C_vh).
    beta, prior_beta : float
        Inverse temperatures of the likelihood and the prior (1 = no annealing).
    mask : ndarray of shape (B,) or None
        Weight of each data point in the statistics (ET data selection); None = all 1.
    accumulate : bool, default=True
        False skips the statistics (only the log marginals are wanted).

    Returns
    -------
    log_marginal : ndarray of shape (B,)
        log sum_{s in K_n} p(s, y_n) at temperature 1 (the free-energy terms).
    stats : dict or None
        ``sy`` (D, H) sum y <s>^T, ``ss`` (H, H) sum <s s^T>, ``counts`` (V-1,) sum of
        <#{h: s_h = v}>, ``yy`` sum ||y||^2, ``n`` number (weight) of points.
    """
    batch, WY = linear_candidates(Y, W, states, presel)
    ll, lp, yy = linear_log_joint_parts(
        Y, WY, W.T @ W, sigma2, value_logp, batch, states.outer, states.value_counts
    )
    untempered = ll + lp
    if not accumulate:
        return log_normalise(untempered)[0], None
    if beta == 1.0 and prior_beta == 1.0:
        log_marginal, q = log_normalise(untempered)
    else:
        log_marginal = log_normalise(untempered)[0]
        q = log_normalise(beta * ll + prior_beta * lp)[1]
    if mask is not None:
        q = q * mask[:, None]
    return log_marginal, _linear_stats(Y, q, batch, states.outer, states.value_counts, yy, mask)


def linear_posterior_mean(
    Y: np.ndarray,
    W: np.ndarray,
    sigma2: float,
    value_logp: np.ndarray,
    states: ExpectationTruncation,
    presel: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """Posterior mean <s> (B, H) under the truncated posterior at temperature 1.

    Arguments as for :func:`linear_estep`.
    """
    batch, WY = linear_candidates(Y, W, states, presel)
    ll, lp, _ = linear_log_joint_parts(
        Y, WY, W.T @ W, sigma2, value_logp, batch, states.outer, states.value_counts
    )
    return _split_posterior(log_normalise(ll + lp)[1], batch)[0]


def log_normalise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise log-sum-exp (B,) and softmax (B, K) of log-weights, stable (max subtracted).

    Faster than scipy.special.logsumexp for the small rows of an E-step batch.
    """
    peak = x.max(axis=1, keepdims=True)
    weights = np.exp(x - peak)
    total = weights.sum(axis=1, keepdims=True)
    weights /= total
    return (np.log(total) + peak)[:, 0], weights


def _split_posterior(q: np.ndarray, batch: CandidateBatch):
    """<s> (B, H) plus the singleton (B, V-1, H) and table (B, Kc) parts of q."""
    B, H = q.shape[0], batch.H
    nz = batch.values[1:]
    n_single = nz.size * H
    q_single = q[:, 1 : 1 + n_single].reshape(B, nz.size, H)
    q_multi = q[:, 1 + n_single :]
    # singletons, plus the table rows scattered to each point's preselected latents
    mean = np.einsum("v,bvh->bh", nz, q_single)
    np.put_along_axis(
        mean, batch.I, np.take_along_axis(mean, batch.I, axis=1) + q_multi @ batch.table, axis=1
    )
    return mean, q_single, q_multi


def _linear_stats(Y, q, batch, outer, value_counts, yy, mask) -> dict[str, np.ndarray]:
    B, H = Y.shape[0], batch.H
    nz = batch.values[1:]
    mean, q_single, q_multi = _split_posterior(q, batch)
    # second moment: diagonal from singletons, H'xH' blocks from the table rows
    ss = np.diag(np.einsum("v,bvh->h", nz**2, q_single))
    blocks = (q_multi @ outer).ravel()
    flat = (batch.I[:, :, None] * H + batch.I[:, None, :]).ravel()
    ss = ss + np.bincount(flat, weights=blocks, minlength=H * H).reshape(H, H)
    counts = q_single.sum(axis=(0, 2)) + q_multi.sum(axis=0) @ value_counts
    weight = np.ones(B) if mask is None else mask
    return {
        "sy": Y.T.astype(np.float64) @ mean,
        "ss": ss,
        "counts": counts,
        "yy": np.array(float(weight @ yy)),
        "n": np.array(float(weight.sum())),
    }


# -- explicit states (evolutionary state sets) ----------------------------------------------
def linear_state_log_joint(
    WY: np.ndarray,
    WtW: np.ndarray,
    yy: np.ndarray,
    X: np.ndarray,
    values: np.ndarray,
    value_logp: np.ndarray,
    sigma2: float,
    D: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Log-likelihood and log-prior of explicit states of a linear Gaussian model.

    ||y - Ws||² = ||y||² - 2 sᵀ(Wᵀy) + sᵀ(WᵀW)s for every state of every point.

    Parameters
    ----------
    WY : ndarray of shape (B, H)
        Wᵀy of each point.
    WtW : ndarray of shape (H, H)
    yy : ndarray of shape (B,)
        ||y||² of each point.
    X : ndarray of uint8, shape (B, K, H)
        States as indices into ``values``.
    values : ndarray of shape (V,)
    value_logp : ndarray of shape (V,)
        log p(s_h = v) of one latent.
    sigma2 : float
    D : int

    Returns
    -------
    ll, lp : ndarray of shape (B, K)
    """
    S = values[X]
    quad = np.einsum("bkh,bkh->bk", S @ WtW, S)
    err = yy[:, None] - 2.0 * np.einsum("bkh,bh->bk", S, WY.astype(np.float64)) + quad
    ll = -err / (2.0 * sigma2) - 0.5 * D * np.log(2.0 * np.pi * sigma2)
    return ll, value_logp[X].sum(axis=2)


def linear_state_stats(
    X: np.ndarray, q: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Posterior moments of explicit states weighted by q.

    Parameters
    ----------
    X : ndarray of uint8, shape (B, K, H)
    q : ndarray of shape (B, K)
        Posterior weights (times the data-selection weight of the point).
    values : ndarray of shape (V,)

    Returns
    -------
    mean : ndarray of shape (B, H)
        Σ_k q_k s_k per point.
    ss : ndarray of shape (H, H)
        Σ_b Σ_k q_bk s_k s_kᵀ.
    counts : ndarray of shape (V-1,)
        Σ_b Σ_k q_bk #{h: s_h = v} per non-zero value v.
    """
    S = values[X]
    B, K, H = S.shape
    mean = np.einsum("bk,bkh->bh", q, S)
    scaled = (S * np.sqrt(q)[:, :, None]).reshape(B * K, H)
    # Σ q #{h: s_h = v} for each non-zero value v (V is small: a loop over values)
    nonzero = range(1, len(values))
    per_value = np.stack([np.count_nonzero(np.equal(X, v), axis=2) for v in nonzero], axis=-1)
    counts = np.einsum("bk,bkv->v", q, per_value)
    return mean, scaled.T @ scaled, counts


#: the kernels this backend offers by name (models and solvers look them up here)
KERNELS = {
    "linear_state_log_joint": linear_state_log_joint,
    "linear_state_stats": linear_state_stats,
    **REFERENCE,
}


#: points per E-step batch on the CPU when the estimator's ``batch_size`` is None: enough
#: to amortise the per-batch Python work, few enough for the batch's arrays to stay in cache
BATCH_POINTS = 1000


def batch_points(bytes_per_point: int) -> int:
    """Points per E-step batch when the estimator leaves ``batch_size`` to the backend.

    Parameters
    ----------
    bytes_per_point : int
        Working memory of the E-step per data point of a batch (the GPU backend sizes its
        batches from it; the CPU backends take :data:`BATCH_POINTS`).
    """
    return BATCH_POINTS


def to_host(stats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Statistics on the host: already there on this backend (the GPU backend moves them)."""
    return stats


def select_device(comm=None) -> int:
    """No device to choose on this backend (the GPU backend binds each rank to a GPU)."""
    return -1
