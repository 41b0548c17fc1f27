"""numba kernels for explicit candidate states (evolutionary state sets).

The log-joints and statistics of linear models over given states, and the evolutionary
search's bookkeeping (:func:`evo_select`, :func:`evo_children`: the same choices as the
NumPy reference :mod:`prosper.backends.evolution`, one data point per parallel iteration).

Same arguments and results as :func:`prosper.backends.numpy_backend.linear_state_log_joint`
and :func:`~prosper.backends.numpy_backend.linear_state_stats` (to round-off in float64).
The states are sparse: per state the kernels first list its active latents (one pass over
its H value indices), then work on those only, so a state with m active latents costs
O(H + m²) instead of the O(H²) of a dense quadratic form. They run in parallel (``prange``)
over data points; the second moment Σ q s sᵀ is summed per chunk of points (one chunk per
thread) and the chunks are added afterwards.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from prosper.backends.evolution import GOLDEN, M1, M2

__all__ = [
    "evo_children",
    "evo_select",
    "linear_state_log_joint",
    "linear_state_stats",
]


@njit(cache=True, parallel=True)
def _log_joint(WY, WtW, yy, X, values, value_logp, inv2s2, const):  # pragma: no cover - compiled
    B, K, H = X.shape
    ll = np.empty((B, K))
    lp = np.empty((B, K))
    for b in prange(B):
        idx = np.empty(H, dtype=np.int64)
        val = np.empty(H)
        for k in range(K):
            m = 0
            # the log-prior from the active latents only: H log p(0) + Σ (log p(v) - log p(0))
            prior = H * value_logp[0]
            for h in range(H):
                # branch-free: sparse random states would mispredict a branch per latent
                v = X[b, k, h]
                idx[m] = h
                val[m] = values[v]
                prior += value_logp[v] - value_logp[0]  # adds an exact 0 for v = 0
                m += v != 0
            lin = 0.0
            quad = 0.0
            for i in range(m):
                hi = idx[i]
                vi = val[i]
                lin += vi * WY[b, hi]
                row = 0.0
                for j in range(i):
                    row += WtW[hi, idx[j]] * val[j]
                quad += vi * (2.0 * row + vi * WtW[hi, hi])
            ll[b, k] = const - (yy[b] - 2.0 * lin + quad) * inv2s2
            lp[b, k] = prior
    return ll, lp


def linear_state_log_joint(WY, WtW, yy, X, values, value_logp, sigma2, D):
    """Log-likelihood and log-prior of explicit states (see the NumPy reference)."""
    return _log_joint(
        np.ascontiguousarray(WY, dtype=np.float64),
        np.ascontiguousarray(WtW, dtype=np.float64),
        np.ascontiguousarray(yy, dtype=np.float64),
        np.ascontiguousarray(X),
        np.asarray(values, dtype=np.float64),
        np.asarray(value_logp, dtype=np.float64),
        1.0 / (2.0 * float(sigma2)),
        -0.5 * int(D) * np.log(2.0 * np.pi * float(sigma2)),
    )


@njit(cache=True, parallel=True)
def _stats(X, q, values, n_chunks):  # pragma: no cover - compiled
    B, K, H = X.shape
    V = values.shape[0]
    mean = np.zeros((B, H))
    ss = np.zeros((n_chunks, H, H))
    counts = np.zeros((n_chunks, V))
    step = (B + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        idx = np.empty(H, dtype=np.int64)
        val = np.empty(H)
        for b in range(c * step, min(B, (c + 1) * step)):
            for k in range(K):
                w = q[b, k]
                if w == 0.0:
                    continue
                m = 0
                for h in range(H):
                    v = X[b, k, h]
                    if v != 0:
                        idx[m] = h
                        val[m] = values[v]
                        counts[c, v] += w
                        m += 1
                for i in range(m):
                    hi = idx[i]
                    wi = w * val[i]
                    mean[b, hi] += wi
                    for j in range(m):
                        ss[c, hi, idx[j]] += wi * val[j]
    return mean, ss.sum(axis=0), counts.sum(axis=0)[1:]


def linear_state_stats(X, q, values):
    """Posterior moments of explicit states weighted by q (see the NumPy reference)."""
    n_chunks = max(1, min(numba.get_num_threads(), X.shape[0]))
    return _stats(
        np.ascontiguousarray(X),
        np.ascontiguousarray(q, dtype=np.float64),
        np.asarray(values, dtype=np.float64),
        n_chunks,
    )


# -- the evolutionary search's bookkeeping (same choices as prosper.backends.evolution) -----
# The stand-alone kernels of the generic path (any model's log-joint runs between them); the
# fused search of linear models (prosper.backends.numba_search) makes the same choices.
_GOLDEN = np.uint64(GOLDEN)
_M1 = np.uint64(M1)
_M2 = np.uint64(M2)


@njit(cache=True, inline="always")
def _mix(x):  # pragma: no cover - compiled
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


@njit(cache=True)
def _count_le(cdf, value):  # pragma: no cover - compiled
    n = 0
    for i in range(cdf.shape[0]):
        if cdf[i] <= value:
            n += 1
    return n


@njit(cache=True)
def _select_row(X, ll, lp, keys, n_keep, out_X, out_ll, out_lp, scratch, order, seen, used):
    """The n_keep best distinct states of one row (X (K, H)) into out_*."""
    K, H = X.shape
    size = seen.shape[0]
    bits = 0
    while (1 << bits) < size:
        bits += 1
    shift = np.uint64(64 - bits)
    mask = np.uint64(size - 1)
    used[:] = False
    for k in range(K):
        acc = np.uint64(0)
        for h in range(H):
            acc += keys[h, X[k, h]]  # key[h, 0] is 0: zeros add nothing (no branch)
        # a duplicate of an earlier state (the first copy stays) gets ll = -inf; the hashes
        # seen so far are kept in an open-addressing set
        row_ll = ll[k]
        slot = (acc * _GOLDEN) >> shift
        while used[slot]:
            if seen[slot] == acc:
                row_ll = -np.inf
                break
            slot = (slot + np.uint64(1)) & mask
        if not used[slot]:
            used[slot] = True
            seen[slot] = acc
        scratch[k, 0] = row_ll
        scratch[k, 1] = -(row_ll + lp[k])
        # stable insertion by the sort key (ties keep the lower index first)
        i = k
        while i > 0 and scratch[order[i - 1], 1] > scratch[k, 1]:
            order[i] = order[i - 1]
            i -= 1
        order[i] = k
    for i in range(n_keep):
        k = order[i]
        out_ll[i] = scratch[k, 0]
        out_lp[i] = lp[k]
        for h in range(H):
            out_X[i, h] = X[k, h]


def _table_size(K: int) -> int:
    """Slots of the per-row hash set: a power of two >= 2K."""
    return 1 << max(4, int(2 * K - 1).bit_length())


@njit(cache=True, parallel=True)
def _select(X, ll, lp, keys, n_keep, n_chunks, size):  # pragma: no cover - compiled
    B, K, H = X.shape
    out_X = np.empty((B, n_keep, H), dtype=np.uint8)
    out_ll = np.empty((B, n_keep))
    out_lp = np.empty((B, n_keep))
    step = (B + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        scratch = np.empty((K, 2))
        order = np.empty(K, dtype=np.int64)
        seen = np.empty(size, dtype=np.uint64)
        used = np.zeros(size, dtype=np.bool_)
        for b in range(c * step, min(B, (c + 1) * step)):
            _select_row(
                X[b],
                ll[b],
                lp[b],
                keys,
                n_keep,
                out_X[b],
                out_ll[b],
                out_lp[b],
                scratch,
                order,
                seen,
                used,
            )
    return out_X, out_ll, out_lp


def evo_select(X, ll, lp, keys, n_keep):
    """The best distinct states of each row (see :func:`prosper.backends.evolution.evo_select`)."""
    return _select(
        np.ascontiguousarray(X),
        np.ascontiguousarray(ll, dtype=np.float64),
        np.ascontiguousarray(lp, dtype=np.float64),
        keys,
        int(n_keep),
        max(1, min(numba.get_num_threads(), X.shape[0])),
        _table_size(X.shape[1]),
    )


@njit(cache=True)
def _children_row(X, lj, proposal, key, row, P, C, nz, out, u, fcdf, cum):  # pragma: no cover
    """Children of one row's states X (S, H) into out (P C, H)."""
    S, H = X.shape
    n_u = P + 4 * P * C
    n_moves = 4 if nz > 1 else 3
    base = _mix(np.uint64(row) * _GOLDEN ^ key)
    for j in range(n_u):
        u[j] = np.float64(_mix(base + np.uint64(j + 1) * _GOLDEN) >> np.uint64(11)) * 2.0**-53
    low = np.inf
    for k in range(S):
        if np.isfinite(lj[k]) and lj[k] < low:
            low = lj[k]
    total = 0.0
    for k in range(S):
        total += (lj[k] - low + 1.0) if np.isfinite(lj[k]) else 0.0
        fcdf[k] = total
    acc = 0.0
    for h in range(H):
        acc += proposal[h]
        cum[h] = acc
    for i in range(P):
        parent = min(_count_le(fcdf[:S], u[i] * fcdf[S - 1]), S - 1)
        for j in range(C):
            c = i * C + j
            base_u = P + 4 * c
            n_active = 0
            for h in range(H):
                out[c, h] = X[parent, h]
                n_active += X[parent, h] != 0
            move = min(int(u[base_u] * n_moves), n_moves - 1)
            if n_active == 0 and move != 0:
                move = 0
            if n_active == H and move == 0:
                move = 1
            rank = min(int(u[base_u + 2] * n_active), max(n_active - 1, 0))
            h_off = 0
            seen = 0
            for h in range(H):
                if out[c, h] != 0:
                    if seen == rank:
                        h_off = h
                        break
                    seen += 1
            remove = move == 1 or move == 2
            h_on = 0
            if move == 0 or move == 2:
                # the reference's running sums: all latents' (cum) minus the blocked
                # (active, not removed) latents' (acc); the first eligible latent whose
                # difference passes u times the eligible mass, else the last eligible one
                acc = 0.0
                for h in range(H):
                    if out[c, h] != 0 and not (remove and h == h_off):
                        acc += proposal[h]
                target = u[base_u + 1] * (cum[H - 1] - acc)
                acc = 0.0
                h_on = H - 1
                for h in range(H):
                    if out[c, h] != 0 and not (remove and h == h_off):
                        acc += proposal[h]
                    else:
                        h_on = h
                        if cum[h] - acc > target:
                            break
            value = min(1 + int(u[base_u + 3] * nz), nz)
            current = np.int64(out[c, h_off])
            if remove:
                out[c, h_off] = 0
            elif move == 3:
                step = min(1 + int(u[base_u + 3] * (nz - 1)), max(nz - 1, 1))
                out[c, h_off] = 1 + (current - 1 + step) % nz
            if move == 0 or move == 2:
                out[c, h_on] = value


@njit(cache=True, parallel=True)
def _children(X, lj, proposal, key, rows, P, C, nz):  # pragma: no cover - compiled
    B, S, H = X.shape
    out = np.empty((B, P * C, H), dtype=np.uint8)
    for b in prange(B):
        u = np.empty(P + 4 * P * C)
        fcdf = np.empty(S)
        cum = np.empty(H)
        _children_row(X[b], lj[b], proposal[b], key, rows[b], P, C, nz, out[b], u, fcdf, cum)
    return out


def evo_children(X, lj, proposal, key, rows, n_parents, n_children, n_nonzero):
    """Mutated copies of fitness-drawn parents (see
    :func:`prosper.backends.evolution.evo_children`)."""
    return _children(
        np.ascontiguousarray(X),
        np.ascontiguousarray(lj, dtype=np.float64),
        np.ascontiguousarray(proposal, dtype=np.float64),
        np.uint64(key),
        np.ascontiguousarray(rows, dtype=np.int64),
        int(n_parents),
        int(n_children),
        int(n_nonzero),
    )
