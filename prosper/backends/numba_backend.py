"""numba kernels for the E-step of linear models: BLAS for the products, compiled loops for
everything per candidate state.

Same functions, arguments and results as :mod:`prosper.backends.numpy_backend` (to round-off
in float64). The squared error of a state is ||y - W s||² = ||y||² - 2 sᵀ(Wᵀ y) + sᵀ(Wᵀ W) s;
for the multi-latent (table) states it is linear in the per-point features
f_n = [Wᵀ y_n on the H' preselected latents, the lower triangle of their H'×H' block of WᵀW],
so one batch runs as

1. ``Y W`` and ``Wᵀ W`` (BLAS), then the features f (B, F), F = H' + H'(H'+1)/2 (kernel);
2. the quadratic forms of all table states of all points as one GEMM f · forward (B, Kc);
3. one fused parallel kernel over the data points: log-joint of every state (zero,
   singletons, table), log-sum-exp at temperature 1 (the free-energy term) and at the
   annealing temperature, posterior weights, and the singletons' share of the statistics;
4. the table states' moments as one GEMM q · backward (B, F + V-1), scattered to <s> and
   Σ<s sᵀ> by a parallel kernel; Σ y <s>ᵀ is a last GEMM.

No (B, K, H) state tensor is formed; the (B, Kc) block of one batch is the largest array.
GEMMs do the O(Kc F) work per point at BLAS speed, which hand-written loops without
``fastmath`` cannot reach, and the kernels vectorise the O(K) work (including a polynomial
exp, since libm's exp is scalar). Parallel loops (``prange``) run over contiguous chunks of
data points, one per thread; every chunk writes its own partial sums of the statistics,
which are added up afterwards, and each point's posterior mean goes to its own row.

Threads: numba uses ``NUMBA_NUM_THREADS`` threads (default: all cores) or what
``numba.set_num_threads`` sets at run time, BLAS its own (``OMP_NUM_THREADS``,
``OPENBLAS_NUM_THREADS``). Under MPI, threads × ranks per node should equal the cores of the
node, e.g. ``OMP_NUM_THREADS=8 NUMBA_NUM_THREADS=8 mpiexec -n 4`` on 32 cores. When
``NUMBA_NUM_THREADS`` is not set and the launcher tells how many ranks share the node
(``MPI_LOCALNRANKS``, ``OMPI_COMM_WORLD_LOCAL_SIZE``, ``SLURM_NTASKS_PER_NODE``), each rank
takes its share of the cores by itself.

Compilation: the kernels are compiled on first use (about 10-30 s) and cached on disk
(``cache=True``: ``__pycache__`` next to this file, or ``NUMBA_CACHE_DIR``); later processes
load them in well under a second. :func:`warmup` compiles them explicitly, e.g. in a short
single-rank run before a large MPI job so that the ranks do not all compile at once.

float32: ``Y W`` and ``Y·mean`` run at the precision of ``Y``; the features, the per-state
part and all statistics are computed in float64.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import numba
import numpy as np
from numba import njit, prange

if TYPE_CHECKING:  # annotations only: kernels never import solvers
    from prosper.solvers.states import CandidateBatch


NAME = "numba"
AVAILABLE = True

#: launcher variables giving the number of MPI ranks on this node (MPICH/hydra, Open MPI,
#: Slurm)
_LOCAL_SIZE_ENV = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE")


def _share_cores_between_ranks() -> None:
    """Give each of k ranks on a node 1/k of its cores, unless NUMBA_NUM_THREADS is set.

    Without this every rank starts one thread per core, and k ranks oversubscribe the node
    k-fold, which made E-steps 7-20x slower in benchmarks/results/backends.md.
    """
    if "NUMBA_NUM_THREADS" in os.environ:
        return
    for key in _LOCAL_SIZE_ENV:
        value = os.environ.get(key, "")
        if value.isdigit() and int(value) > 1:
            numba.set_num_threads(max(1, numba.config.NUMBA_NUM_THREADS // int(value)))
            return


_share_cores_between_ranks()

__all__ = [
    "linear_estep",
    "linear_posterior_mean",
    "state_log_prior",
    "table_coefficients",
    "warmup",
]


# -- preparation shared with the CuPy backend (plain NumPy, per batch, O(Kc H'^2)) ----------
def table_coefficients(
    table: np.ndarray, value_counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Linear maps between per-point features and the table states of a linear model.

    With the features of a point f = [Wᵀy restricted to I (H'), the lower triangle of the
    H'×H' block of WᵀW (P = H'(H'+1)/2 entries)], the squared error of table state k is
    ||y||² + Σ_f ``forward[f, k]`` f_f, and the posterior moments of the table states are
    Σ_k q_k ``backward[k, :]`` = [Σ q s over the slots (H'), Σ q s_i s_j for i >= j (P),
    Σ q #{s = v} (V-1)].

    Parameters
    ----------
    table : ndarray of shape (Kc, H')
    value_counts : ndarray of shape (Kc, V-1)

    Returns
    -------
    forward : ndarray of shape (H' + P, Kc)
        ``-2 table`` then ``table_i table_j`` with off-diagonal pairs counted twice.
    backward : ndarray of shape (Kc, H' + P + V-1)
    tri_i, tri_j : ndarray of int64, shape (P,)
        Slot pairs (i >= j) of the triangle entries.
    """
    table = np.asarray(table, dtype=np.float64)
    tri_i, tri_j = np.tril_indices(table.shape[1])
    pairs = table[:, tri_i] * table[:, tri_j]
    forward = np.concatenate([-2.0 * table, pairs * np.where(tri_i == tri_j, 1.0, 2.0)], axis=1)
    backward = np.concatenate([table, pairs, np.asarray(value_counts, dtype=np.float64)], axis=1)
    return (
        np.ascontiguousarray(forward.T),
        np.ascontiguousarray(backward),
        tri_i.astype(np.int64),
        tri_j.astype(np.int64),
    )


def state_log_prior(value_logp: np.ndarray, H: int, value_counts: np.ndarray) -> np.ndarray:
    """Log-prior of every candidate state in the order [zero, singletons, table], shape (K,)."""
    value_logp = np.asarray(value_logp, dtype=np.float64)
    base = H * value_logp[0]
    delta = value_logp[1:] - value_logp[0]
    return np.concatenate([[base], np.repeat(base + delta, H), base + value_counts @ delta])


# -- compiled kernels ------------------------------------------------------------------------
@njit(cache=True, parallel=True, fastmath=False)
def _features_kernel(WY, WtW, I, tri_i, tri_j, feat):  # pragma: no cover - compiled
    """feat[n] = [WY[n, I_n] (H'), WtW[I_n[tri_i], I_n[tri_j]] (P)], shape (B, H' + P)."""
    B = WY.shape[0]
    Hp = I.shape[1]
    P = tri_i.shape[0]
    for n in prange(B):
        Idx = I[n]
        for i in range(Hp):
            feat[n, i] = WY[n, Idx[i]]
        for p in range(P):
            feat[n, Hp + p] = WtW[Idx[tri_i[p]], Idx[tri_j[p]]]


# exp(x) for x <= 0 as loops LLVM can vectorise (libm's scalar exp cannot be): x = t ln2 + r
# with |r| <= ln2/2, exp(r) by its Taylor series to degree 13 (relative error < 1e-16 before
# rounding, a few ulp after), 2^t written into the exponent bits. Below -700 (exp < 1e-304,
# far below the largest term 1 of every sum it enters) the result is 0.
_LOG2E = 1.4426950408889634
_LN2_HI = 0.693147180369123816490  # upper bits of ln 2: t * _LN2_HI is exact for |t| < 2^11
_LN2_LO = 1.90821492927058770002e-10
_EXP_MIN = -700.0


@njit(cache=True, fastmath=False, inline="always")
def _exp_nonpositive(x, shift, out, bits, n):  # pragma: no cover - compiled
    """out[:n] = exp(x[:n] - shift) for x <= shift; ``bits`` is int64 scratch (>= n)."""
    for k in range(n):
        v = x[k] - shift
        v = v if v > _EXP_MIN else _EXP_MIN
        t = np.floor(v * _LOG2E + 0.5)
        r = (v - t * _LN2_HI) - t * _LN2_LO
        p = 1.0 / 6227020800.0
        p = p * r + 1.0 / 479001600.0
        p = p * r + 1.0 / 39916800.0
        p = p * r + 1.0 / 3628800.0
        p = p * r + 1.0 / 362880.0
        p = p * r + 1.0 / 40320.0
        p = p * r + 1.0 / 5040.0
        p = p * r + 1.0 / 720.0
        p = p * r + 1.0 / 120.0
        p = p * r + 1.0 / 24.0
        p = p * r + 1.0 / 6.0
        p = p * r + 0.5
        p = p * r + 1.0
        out[k] = p * r + 1.0
        bits[k] = (np.int64(t) + 1023) << 52
    scale = bits.view(np.float64)
    for k in range(n):
        out[k] = out[k] * scale[k] if x[k] - shift > _EXP_MIN else 0.0


@njit(cache=True, fastmath=False, inline="always")
def _sum(x, n):  # pragma: no cover - compiled
    """sum(x[:n]) with four independent partial sums (a fixed order, not numpy's)."""
    a = 0.0
    b = 0.0
    c = 0.0
    d = 0.0
    m = n - n % 4
    for k in range(0, m, 4):
        a += x[k]
        b += x[k + 1]
        c += x[k + 2]
        d += x[k + 3]
    for k in range(m, n):
        a += x[k]
    return (a + b) + (c + d)


@njit(cache=True, fastmath=False, inline="always")
def _max(x, n):  # pragma: no cover - compiled
    m = x[0]
    for k in range(1, n):
        m = x[k] if x[k] > m else m
    return m


@njit(cache=True, parallel=True, fastmath=False)
def _posterior_kernel(
    WY,
    yy,
    diag,
    nz,
    err,
    lp,
    c0,
    inv2s2,
    beta,
    prior_beta,
    mask,
    accumulate,
    n_chunks,
    log_marginal,
    mean,
    ss_diag_part,
    counts_part,
):  # pragma: no cover - compiled
    """Log-joints, log-sum-exps and posterior weights of every state of every point.

    ``err`` (B, Kc) holds sᵀWᵀWs - 2 sᵀWᵀy of the table states on entry; with
    ``accumulate`` it holds their posterior weights (times ``mask``) on exit. Writes
    ``log_marginal`` (B,) and, with ``accumulate``, the singletons' share of the statistics:
    ``mean`` (B, H), per chunk ``ss_diag_part`` (n_chunks, H) and ``counts_part``
    (n_chunks, V-1).
    """
    B, H = WY.shape
    V1 = nz.shape[0]
    Kc = err.shape[1]
    n_single = V1 * H
    K = 1 + n_single + Kc
    tempered = beta != 1.0 or prior_beta != 1.0
    for c in prange(n_chunks):
        ll = np.empty(K)
        lj = np.empty(K)
        w = np.empty(K)
        bits = np.empty(K, dtype=np.int64)
        diag_c = ss_diag_part[c]
        counts_c = counts_part[c]
        for n in range(c * B // n_chunks, (c + 1) * B // n_chunks):
            y2 = yy[n]
            row_err = err[n]
            # log-likelihoods (state order [zero, singletons value-major, table rows]) and
            # log-joints at temperature 1
            ll[0] = c0 - y2 * inv2s2
            lj[0] = ll[0] + lp[0]
            for v in range(V1):
                s = nz[v]
                o = 1 + v * H
                for h in range(H):
                    x = c0 - (y2 - 2.0 * s * WY[n, h] + s * s * diag[h]) * inv2s2
                    ll[o + h] = x
                    lj[o + h] = x + lp[o + h]
            o = 1 + n_single
            for k in range(Kc):
                x = c0 - (y2 + row_err[k]) * inv2s2
                ll[o + k] = x
                lj[o + k] = x + lp[o + k]
            # log marginal: stable log-sum-exp of ll + lp
            m1 = _max(lj, K)
            _exp_nonpositive(lj, m1, w, bits, K)
            sw = _sum(w, K)
            log_marginal[n] = m1 + np.log(sw)
            if not accumulate:
                continue
            if tempered:
                # posterior at the annealing temperature: weights of beta ll + prior_beta lp
                for k in range(K):
                    lj[k] = beta * ll[k] + prior_beta * lp[k]
                mb = _max(lj, K)
                _exp_nonpositive(lj, mb, w, bits, K)
                sw = _sum(w, K)
            scale = mask[n] / sw
            row = mean[n]
            for h in range(H):
                row[h] = 0.0
            for v in range(V1):
                s = nz[v] * scale
                s2 = nz[v] * s
                offset = 1 + v * H
                for h in range(H):
                    row[h] += s * w[offset + h]
                    diag_c[h] += s2 * w[offset + h]
                counts_c[v] += _sum(w[offset:], H) * scale
            o = 1 + n_single
            for k in range(Kc):
                row_err[k] = w[o + k] * scale


@njit(cache=True, parallel=True, fastmath=False)
def _scatter_kernel(I, tri_i, tri_j, moments, n_chunks, mean, ss_part):  # pragma: no cover
    """Add the table states' moments (B, H' + P + ...) to ``mean`` rows and per-chunk ``ss``."""
    B, Hp = I.shape
    P = tri_i.shape[0]
    for c in prange(n_chunks):
        ss_c = ss_part[c]
        for n in range(c * B // n_chunks, (c + 1) * B // n_chunks):
            Idx = I[n]
            for i in range(Hp):
                mean[n, Idx[i]] += moments[n, i]
            for p in range(P):
                a = Idx[tri_i[p]]
                b = Idx[tri_j[p]]
                x = moments[n, Hp + p]
                ss_c[a, b] += x
                if a != b:
                    ss_c[b, a] += x


def _run(Y, W, sigma2, value_logp, batch, value_counts, beta, prior_beta, mask, accumulate):
    """Kernels and GEMMs of one batch: log marginals (B,), and <s> (B, H) plus the
    statistics' parts (``ss`` (H, H), ``counts`` (V-1,), weights (B,), ||y||² (B,)) when
    ``accumulate``."""
    Y = np.asarray(Y)
    B, D = Y.shape
    H, Hp = batch.H, batch.I.shape[1]
    # GEMMs over the data at the precision of Y; the rest in float64
    WY = np.ascontiguousarray(Y @ np.asarray(W, dtype=Y.dtype), dtype=np.float64)
    W64 = np.asarray(W, dtype=np.float64)
    WtW = np.ascontiguousarray(W64.T @ W64)
    yy = np.einsum("nd,nd->n", Y, Y, dtype=np.float64)
    nz = np.ascontiguousarray(batch.values[1:], dtype=np.float64)
    value_counts = np.asarray(value_counts, dtype=np.float64)
    forward, backward, tri_i, tri_j = table_coefficients(batch.table, value_counts)
    lp = state_log_prior(value_logp, H, value_counts)
    I = np.ascontiguousarray(batch.I, dtype=np.int64)
    n_chunks = max(1, min(B, numba.get_num_threads()))
    weights = np.ones(B) if mask is None else np.ascontiguousarray(mask, dtype=np.float64)

    log_marginal = np.empty(B)
    mean = np.empty((B, H) if accumulate else (0, H))
    ss_diag = np.zeros((n_chunks, H if accumulate else 0))
    counts_part = np.zeros((n_chunks, nz.size))
    ss = np.zeros((n_chunks, H, H) if accumulate else (n_chunks, 0, 0))
    if B:
        feat = np.empty((B, forward.shape[0]))
        _features_kernel(WY, WtW, I, tri_i, tri_j, feat)
        # quadratic forms of all table states of all points: one GEMM (B, F) x (F, Kc)
        err = feat @ forward
        _posterior_kernel(
            WY,
            yy,
            np.ascontiguousarray(np.diag(WtW)),
            nz,
            err,
            lp,
            float(-0.5 * D * np.log(2.0 * np.pi * sigma2)),
            float(0.5 / sigma2),
            float(beta),
            float(prior_beta),
            weights,
            bool(accumulate),
            n_chunks,
            log_marginal,
            mean,
            ss_diag,
            counts_part,
        )
        if accumulate:
            # moments of the table states: one GEMM (B, Kc) x (Kc, H' + P + V-1)
            moments = err @ backward
            _scatter_kernel(I, tri_i, tri_j, moments, n_chunks, mean, ss)
            counts_part[0] += moments[:, Hp + tri_i.size :].sum(axis=0)
    ss = ss.sum(axis=0)
    ss[np.diag_indices(ss.shape[0])] += ss_diag.sum(axis=0)
    return log_marginal, mean, ss, counts_part.sum(axis=0), weights, yy


def linear_estep(
    Y: np.ndarray,
    W: np.ndarray,
    sigma2: float,
    value_logp: np.ndarray,
    batch: CandidateBatch,
    outer: np.ndarray,
    value_counts: np.ndarray,
    beta: float,
    prior_beta: float,
    mask: np.ndarray | None = None,
    accumulate: bool = True,
) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
    """Truncated E-step of a linear Gaussian model (BSC, TSC, DSC) on one batch.

    Parameters
    ----------
    Y : ndarray of shape (B, D)
        float64 or float32.
    W : ndarray of shape (D, H)
    sigma2 : float
        Observation noise variance.
    value_logp : ndarray of shape (V,)
        Prior log-probability of one latent taking each value (value 0 first).
    batch : CandidateBatch
        Candidate states of the batch.
    outer : ndarray of shape (Kc, H'^2)
        Flattened outer products of the table rows (unused: :func:`table_coefficients`
        derives the symmetric, smaller form from ``batch.table``; kept for the shared
        signature).
    value_counts : ndarray of shape (Kc, V-1)
        How often each non-zero value occurs in each table row.
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
        float64 ``sy`` (D, H) sum y <s>^T, ``ss`` (H, H) sum <s s^T>, ``counts`` (V-1,) sum
        of <#{h: s_h = v}>, ``yy`` sum ||y||^2, ``n`` number (weight) of points.
    """
    log_marginal, mean, ss, counts, weights, yy = _run(
        Y, W, float(sigma2), value_logp, batch, value_counts, beta, prior_beta, mask, accumulate
    )
    if not accumulate:
        return log_marginal, None
    return log_marginal, {
        "sy": np.asarray(Y).T.astype(np.float64, copy=False) @ mean,
        "ss": ss,
        "counts": counts,
        "yy": np.array(float(weights @ yy)),
        "n": np.array(float(weights.sum())),
    }


def linear_posterior_mean(
    Y: np.ndarray,
    W: np.ndarray,
    sigma2: float,
    value_logp: np.ndarray,
    batch: CandidateBatch,
    outer: np.ndarray,
    value_counts: np.ndarray,
) -> np.ndarray:
    """Posterior mean <s> (B, H) under the truncated posterior at temperature 1."""
    return _run(Y, W, float(sigma2), value_logp, batch, value_counts, 1.0, 1.0, None, True)[1]


def warmup() -> float:
    """Compile (or load from the cache) the kernels on a tiny problem; returns seconds taken."""
    from prosper.solvers.states import ExpectationTruncation

    start = time.perf_counter()
    states = ExpectationTruncation(H=3, Hprime=2, gamma=2, values=(0.0, 1.0))
    Y = np.zeros((2, 2))
    batch = states.select(np.zeros((2, 3)), 2)
    logp = np.log([0.5, 0.5])
    linear_estep(Y, np.ones((2, 3)), 1.0, logp, batch, states.outer, states.value_counts, 1, 1)
    return time.perf_counter() - start
