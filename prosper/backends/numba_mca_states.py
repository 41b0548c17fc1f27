"""numba kernels of MCA and MMCA over explicit binary states (evolutionary state sets).

Same results as the NumPy code of :meth:`prosper.models.mca.MCAModel.state_scorer` and
:meth:`~prosper.models.mca.MCAModel.state_stats` (to round-off in float64); the model's
docstrings define the mathematics. Per data point and state the kernel lists the active
latents (one pass over the H value indices), then works on those only: a state with m
active causes costs O(H + m D). States with m <= 1 use the exact maximum (0 or W_h);
for m >= 2, per pixel, the shift M_d = max over the active latents of log|W_dh|,
t_d = Σ exp(ρ (log|W_dh| − M_d)) and W̄_d = t_d^(1/ρ) exp(M_d); MMCA: t⁺_d and t⁻_d over
the positive and the negative causes, W̄_d = ±max(t⁺_d, t⁻_d)^(1/ρ) exp(M_d) with the sign of
the larger, A_dh = 0 where the sign of W_dh loses and there the statistics ``lost``,
``lost_to`` and ``lost_y`` of the model's M-step.

Threads run (``prange``) over contiguous chunks of data points; each chunk sums its own
(H, D) partial statistics, added afterwards.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

__all__ = ["mca_state_log_joint", "mca_state_stats"]

_TINY = np.finfo(np.float64).tiny


@njit(cache=True, parallel=True, error_model="numpy")
def _terms(
    Y, X, W, logW, sgnW, rho, signed, summed, q, weight, n_chunks, stats
):  # pragma: no cover
    B, K, H = X.shape
    D = Y.shape[1]
    err = np.empty((B, K))
    A = np.zeros((n_chunks, H, D))
    Ay = np.zeros((n_chunks, H, D))
    # MMCA: closeness-weighted mass and magnitude of the winners where a cause's sign lost
    lost = np.zeros((n_chunks, H, D))
    lost_to = np.zeros((n_chunks, H, D))
    lost_y = np.zeros((n_chunks, H, D))  # ... and the data there
    counts = np.zeros(n_chunks)
    err_sum = np.zeros(n_chunks)
    step = (B + n_chunks - 1) // n_chunks
    inv_rho = 1.0 / rho
    for c in prange(n_chunks):
        idx = np.empty(H, dtype=np.int64)
        Wbar = np.empty(D)
        M = np.empty(D)
        t_abs = np.empty(D)
        root = np.empty(D)
        win = np.empty(D, dtype=np.bool_)
        for b in range(c * step, min(B, (c + 1) * step)):
            for k in range(K):
                m = 0
                for h in range(H):
                    if X[b, k, h] != 0:
                        idx[m] = h
                        m += 1
                if m == 0:
                    for d in range(D):
                        Wbar[d] = 0.0
                elif m == 1:
                    for d in range(D):
                        Wbar[d] = W[d, idx[0]]
                else:
                    for d in range(D):
                        shift = logW[idx[0], d]
                        for i in range(1, m):
                            shift = max(shift, logW[idx[i], d])
                        t = 0.0
                        t_neg = 0.0  # MMCA: the negative causes' sum (t: the positive's)
                        for i in range(m):
                            e = np.exp(rho * (logW[idx[i], d] - shift))
                            if signed and sgnW[idx[i], d] < 0.0:
                                t_neg += e
                            else:
                                t += e
                        if summed:  # MMCA's signed sum t⁺ − t⁻
                            t, t_neg = t - t_neg, 0.0
                            win[d] = t >= 0.0
                            t = abs(t)
                        else:
                            win[d] = t >= t_neg
                        ta = max(max(t, t_neg), _TINY)
                        r = ta**inv_rho
                        M[d], t_abs[d], root[d] = shift, ta, r
                        Wbar[d] = r * np.exp(shift) * (1.0 if win[d] else -1.0)
                e2 = 0.0
                for d in range(D):
                    diff = Y[b, d] - Wbar[d]
                    e2 += diff * diff
                err[b, k] = e2
                if not stats:
                    continue
                # MMCA's lost statistics count every point (weight not applied)
                q_all = q[b, k]
                w = q_all * weight[b]
                if w == 0.0 and (summed or not signed or q_all == 0.0):
                    continue
                counts[c] += w * m
                err_sum[c] += w * e2
                if m == 1:
                    h = idx[0]
                    for d in range(D):
                        A[c, h, d] += w
                        Ay[c, h, d] += w * Y[b, d]
                elif m >= 2:
                    for i in range(m):
                        h = idx[i]
                        for d in range(D):
                            L = logW[h, d] - M[d]
                            if summed:  # the capped A of the original code
                                a = np.exp((1.0 - rho) * max(np.log(t_abs[d]) * inv_rho - L, 0.0))
                                A[c, h, d] += w * a
                                Ay[c, h, d] += w * a * Y[b, d]
                                continue
                            if signed and (sgnW[h, d] > 0.0) != win[d]:
                                a = q_all * np.exp(rho * L) / t_abs[d]
                                lost[c, h, d] += a
                                lost_to[c, h, d] += a * root[d] * np.exp(M[d])
                                lost_y[c, h, d] += a * Y[b, d]
                                continue
                            a = np.exp((rho - 1.0) * L) * root[d] / t_abs[d]
                            A[c, h, d] += w * a
                            Ay[c, h, d] += w * a * Y[b, d]
    return (
        err,
        A.sum(axis=0),
        Ay.sum(axis=0),
        counts.sum(),
        err_sum.sum(),
        lost.sum(axis=0),
        lost_to.sum(axis=0),
        lost_y.sum(axis=0),
    )


def _run(Y, X, W, rho, signed, q, weight, stats):
    Y = np.ascontiguousarray(Y, dtype=np.float64)
    W = np.ascontiguousarray(W, dtype=np.float64)
    logW = np.ascontiguousarray(np.log(np.abs(W)).T)
    sgnW = np.ascontiguousarray(np.sign(W).T)
    n_chunks = max(1, min(numba.get_num_threads(), X.shape[0]))
    q = np.zeros((1, 1)) if q is None else np.ascontiguousarray(q, dtype=np.float64)
    weight = np.zeros(1) if weight is None else np.ascontiguousarray(weight, dtype=np.float64)
    summed = int(signed) == 2
    return _terms(
        Y,
        np.ascontiguousarray(X),
        W,
        logW,
        sgnW,
        float(rho),
        bool(signed),
        summed,
        q,
        weight,
        n_chunks,
        stats,
    )


def mca_state_log_joint(Y, X, W, rho, signed):
    """Squared errors ||y_b − W̄(s_bk)||² of explicit binary states, shape (B, K).

    Parameters
    ----------
    Y : ndarray of shape (B, D)
    X : ndarray of uint8, shape (B, K, H)
    W : ndarray of shape (D, H), in the model's domain (|W| >= 1e-4)
    rho : float
    signed : int or bool
        0: MCA; MMCA (the active cause of largest magnitude wins with its sign), 1: the
        larger of the two signs' smoothed maxima, 2: the signed sum
        (``MMCAModel.kernel_mode``).
    """
    return _run(Y, X, W, rho, signed, None, None, False)[0]


def mca_state_stats(Y, X, q, weight, W, rho, signed):
    """Σ w q A (D, H), Σ w q A y (D, H), Σ w q |s|, Σ w q ||y − W̄||² over explicit states
    and, for MMCA, the statistics ``lost``, ``lost_to`` and ``lost_y`` (D, H) of the pixels
    where a cause's sign loses, over all points (without w; zeros for MCA).

    ``q`` (B, K) are the posterior weights, ``weight`` (B,) the points' weights w (ET's
    data selection); the other arguments as for :func:`mca_state_log_joint`.
    """
    _, A, Ay, counts, err, lost, lost_to, lost_y = _run(Y, X, W, rho, signed, q, weight, True)
    return (
        A.T.copy(),
        Ay.T.copy(),
        float(counts),
        float(err),
        lost.T.copy(),
        lost_to.T.copy(),
        lost_y.T.copy(),
    )
