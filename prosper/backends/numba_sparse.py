"""numba kernel for ℓq sparse coding: exact coordinate descent, one data point per row.

Same results as the NumPy reference :func:`prosper.solvers.sparse_coding.coordinate_descent`
(to round-off): per data point, cyclic sweeps over the atoms h = 0 .. H−1, each setting s_h
to the exact minimiser of E(s) = ½||y − W s||² + Σ ψ(s) over s_h with the other entries fixed,

    s_h ← prox_{ψ/G_hh}(s_h + c_h / G_hh),   c = Wᵀy − G s,   G = WᵀW,

and c updated by one row of G (O(H)) only when s_h moves. A sweep over a zero entry that
stays zero costs O(1), so a sweep costs O(H + H · moves): for sparse codes far less than the
O(H²) of one FISTA iteration. A point stops when the largest change of a sweep is at most
``tol`` times its largest entry, or after ``max_iter`` sweeps. Points are independent
(``prange`` over rows), so a point's code does not depend on the other points of its batch.

Penalty codes: 0 ℓ1 (soft threshold), 1 ℓ1/2 (half threshold), 2 ℓ0 and 3 CEL0 (hard
threshold at sqrt(2λ/G_hh): the coordinate-wise minimiser of the CEL0 energy equals the ℓ0
one, Soubies et al. 2015).

:func:`sparse_bcd` is the dictionary update of the online learner compiled: one sweep of
block coordinate descent over the atoms, the same as
:meth:`prosper.models.sparse_coding.SparseCodingModel.update_dictionary_bcd` (to round-off)
without its Python loop over atoms, so that the update that every MPI rank repeats costs
little beside the coding that the ranks share.

:func:`sparse_code_stats` and :func:`sparse_update` are one mini-batch of the online learner
in two compiled calls (the NumPy reference is ``OnlineSparseCoding._code_local`` and
``_update``): the first codes the rows a rank holds and adds their increments of Σ s sᵀ and
Σ y sᵀ, built from the non-zero entries of the codes alone, to the buffer that the Allreduce
carries; the second applies forgetting, sweeps the atoms and rebuilds WᵀW for the next
mini-batch. Between them there is no NumPy call, so that the fixed cost of a mini-batch,
which every MPI rank pays whatever its share of the rows, stays small.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

__all__ = ["PENALTY_CODES", "sparse_bcd", "sparse_cd", "sparse_code_stats", "sparse_update"]

#: penalty name -> integer code of the kernel
PENALTY_CODES = {"l1": 0, "l1/2": 1, "l0": 2, "cel0": 3}


@njit(cache=True, inline="always")
def _shrink(z, t, penalty):  # pragma: no cover - compiled
    """The coordinate prox for |z| above the threshold (below it the result is 0)."""
    if penalty == 0:
        return z - t if z > 0 else z + t
    if penalty == 1:
        az = abs(z)
        arg = min(1.0, 0.25 * t * (3.0 / az) ** 1.5)
        phi = math.acos(arg)
        return math.copysign(
            (2.0 / 3.0) * az * (1.0 + math.cos(2.0 * math.pi / 3.0 - (2.0 / 3.0) * phi)), z
        )
    return z


@njit(cache=True, inline="always")
def _cd_point(c, s, G, penalty, t, thr, max_iter, tol):  # pragma: no cover - compiled
    """Coordinate-descent sweeps on one point's code ``s`` (H,), in place; ``c`` holds
    Wᵀy − G s on entry and is kept so. Returns the sweeps run."""
    H = s.shape[0]
    for it in range(max_iter):
        dmax = 0.0
        smax = 0.0
        for h in range(H):
            g = G[h, h]
            old = s[h]
            new = 0.0
            if g > 0.0:
                z = old + c[h] / g
                if abs(z) > thr[h]:
                    new = _shrink(z, t[h], penalty)
            if new != old:
                d = new - old
                for k in range(H):
                    c[k] -= d * G[h, k]
                s[h] = new
                if abs(d) > dmax:
                    dmax = abs(d)
            if abs(new) > smax:
                smax = abs(new)
        if dmax <= tol * smax:
            return it + 1
    return max_iter


@njit(cache=True, parallel=True)
def _cd_kernel(C0, G, S, penalty, t, thr, max_iter, tol, n_iter):  # pragma: no cover - compiled
    n, H = S.shape
    for i in prange(n):
        c = np.empty(H, dtype=np.float64)
        for h in range(H):
            c[h] = C0[i, h]
        for j in range(H):
            sj = S[i, j]
            if sj != 0.0:
                for h in range(H):
                    c[h] -= sj * G[j, h]
        n_iter[i] = _cd_point(c, S[i], G, penalty, t, thr, max_iter, tol)


def sparse_cd(C0, G, S0, penalty: str, lam: float, max_iter: int, tol: float):
    """Coordinate-descent codes of a batch (see the module docstring).

    Parameters
    ----------
    C0 : ndarray of shape (n, H)
        Y W, the correlations of the points with the atoms.
    G : ndarray of shape (H, H)
        WᵀW.
    S0 : ndarray of shape (n, H)
        Start codes (not modified).
    penalty : {"l1", "l1/2", "l0", "cel0"}
    lam : float
    max_iter : int
        Sweeps at most per point.
    tol : float

    Returns
    -------
    S : ndarray of shape (n, H), float64
    n_iter : ndarray of int64, shape (n,)
        Sweeps each point ran.
    """
    S = np.array(S0, dtype=np.float64, order="C")
    G = np.ascontiguousarray(G, dtype=np.float64)
    n_iter = np.zeros(S.shape[0], dtype=np.int64)
    g = np.diagonal(G)
    # per atom: the prox parameter t = λ / G_hh and the threshold below which s_h = 0
    t = float(lam) / np.where(g > 0, g, 1.0)
    code = PENALTY_CODES[penalty]
    thr = t if code == 0 else 1.5 * t ** (2.0 / 3.0) if code == 1 else np.sqrt(2.0 * t)
    _cd_kernel(
        np.ascontiguousarray(C0, dtype=np.float64),
        G,
        S,
        code,
        t,
        np.ascontiguousarray(thr),
        int(max_iter),
        float(tol),
        n_iter,
    )
    return S, n_iter


@njit(cache=True, inline="always")
def _bcd_sweep(A, B, Wt, spare):  # pragma: no cover - compiled
    """One sweep of block coordinate descent on the atoms held as rows, ``Wt`` (H, D), in
    place; returns the atoms replaced by ``spare``."""
    H, D = Wt.shape
    diag_sum = 0.0
    for h in range(H):
        diag_sum += A[h, h]
    floor = 1e-6 * diag_sum / H if H > 0 else 0.0
    spare_norm = 0.0
    for d in range(D):
        spare_norm += spare[d] * spare[d]
    u = np.empty(D, dtype=np.float64)
    n_replaced = 0
    for h in range(H):
        a_hh = A[h, h]
        if a_hh > floor and a_hh > 0.0:
            # u = W_h + (B_h − W A_h) / A_hh, with the atoms before h already updated;
            # v = W A_h is accumulated atom by atom over contiguous rows of Wt
            for d in range(D):
                u[d] = 0.0
            k = 0
            while k + 4 <= H:  # four atoms per pass over u: fewer loads and stores of u
                a0, a1, a2, a3 = A[k, h], A[k + 1, h], A[k + 2, h], A[k + 3, h]
                w0, w1, w2, w3 = Wt[k], Wt[k + 1], Wt[k + 2], Wt[k + 3]
                for d in range(D):
                    u[d] += w0[d] * a0 + w1[d] * a1 + w2[d] * a2 + w3[d] * a3
                k += 4
            for j in range(k, H):
                a0 = A[j, h]
                for d in range(D):
                    u[d] += Wt[j, d] * a0
            for d in range(D):
                u[d] = Wt[h, d] + (B[d, h] - u[d]) / a_hh
        elif n_replaced == 0 and spare_norm > 0.0 and floor > 0.0:
            for d in range(D):
                u[d] = spare[d]
            n_replaced = 1
        else:
            continue
        norm = 0.0
        for d in range(D):
            norm += u[d] * u[d]
        norm = math.sqrt(norm)
        if norm > 1e-12:
            for d in range(D):
                Wt[h, d] = u[d] / norm
    return n_replaced


@njit(cache=True)
def _bcd_kernel(A, B, W, spare):  # pragma: no cover - compiled
    D, H = W.shape
    Wt = np.empty((H, D), dtype=np.float64)
    for d in range(D):
        for h in range(H):
            Wt[h, d] = W[d, h]
    n_replaced = _bcd_sweep(A, B, Wt, spare)
    W_new = np.empty((D, H), dtype=np.float64)
    for d in range(D):
        for h in range(H):
            W_new[d, h] = Wt[h, d]
    return W_new, n_replaced


def sparse_bcd(A, B, W, spare):
    """One sweep of block coordinate descent over the unit-norm atoms (compiled).

    The same update, arguments and results as
    :meth:`prosper.models.sparse_coding.SparseCodingModel.update_dictionary_bcd`.

    Parameters
    ----------
    A : ndarray of shape (H, H)
        Σ s sᵀ with forgetting.
    B : ndarray of shape (D, H)
        Σ y sᵀ with forgetting.
    W : ndarray of shape (D, H)
        Current dictionary (not modified).
    spare : ndarray of shape (D,)
        Replacement for an unused atom (ignored when zero).

    Returns
    -------
    W_new : ndarray of shape (D, H), float64
    n_replaced : int
    """
    W_new, n_replaced = _bcd_kernel(
        np.ascontiguousarray(A, dtype=np.float64),
        np.ascontiguousarray(B, dtype=np.float64),
        np.ascontiguousarray(W, dtype=np.float64),
        np.ascontiguousarray(spare, dtype=np.float64),
    )
    return W_new, int(n_replaced)


# -- the online learner's mini-batch, fused ---------------------------------------------------
@njit(cache=True, inline="always")
def _thresholds(G, lam, penalty, t, thr):  # pragma: no cover - compiled
    """Per atom the prox parameter t = λ / G_hh and the threshold below which s_h = 0."""
    for h in range(G.shape[0]):
        g = G[h, h]
        t[h] = lam / g if g > 0.0 else lam
        if penalty == 0:
            thr[h] = t[h]
        elif penalty == 1:
            thr[h] = 1.5 * t[h] ** (2.0 / 3.0)
        else:
            thr[h] = math.sqrt(2.0 * t[h])


@njit(cache=True, inline="always")
def _sum_sq(x):  # pragma: no cover - compiled
    """Σ x², in four interleaved partial sums (independent additions: no wait on each)."""
    n = x.shape[0]
    s0 = s1 = s2 = s3 = 0.0
    k = 0
    while k + 4 <= n:
        s0 += x[k] * x[k]
        s1 += x[k + 1] * x[k + 1]
        s2 += x[k + 2] * x[k + 2]
        s3 += x[k + 3] * x[k + 3]
        k += 4
    for j in range(k, n):
        s0 += x[j] * x[j]
    return (s0 + s1) + (s2 + s3)


@njit(cache=True, inline="always")
def _code_stats(
    Y, rows, W, Wt, G, penalty, lam, max_iter, tol, spare_at, inc, sums
):  # pragma: no cover
    n = rows.shape[0]
    H, D = Wt.shape
    n_a = H * (H + 1) // 2
    inc_A = inc[:n_a]
    inc_B = inc[n_a : n_a + D * H].reshape((D, H))
    spare = inc[n_a + D * H :]
    t1 = np.empty(H)
    thr1 = np.empty(H)
    t = np.empty(H)
    thr = np.empty(H)
    _thresholds(G, lam, 0, t1, thr1)
    _thresholds(G, lam, penalty, t, thr)
    a = np.empty(H)  # atom norms (CEL0's penalty)
    for h in range(H):
        a[h] = math.sqrt(max(G[h, h], 0.0))
    sqrt2lam = math.sqrt(2.0 * lam)
    S = np.zeros((n, H))
    nz = np.empty((n, H), dtype=np.int64)
    cnt = np.zeros(n, dtype=np.int64)
    # per point: squared error, penalty, squared norm, sweeps
    per = np.zeros((n, 4))
    # 1. code every point (independent points: one per iteration) and its residual
    for i in prange(n):
        y = Y[rows[i]]
        s = S[i]
        # c0 = Wᵀy, row by row of W: the inner loop runs over atoms without a running sum
        c0 = np.zeros(H)
        for d in range(D):
            yd = y[d]
            for h in range(H):
                c0[h] += yd * W[d, h]
        c = c0.copy()
        sweeps = 0
        if penalty != 0:  # the ℓ1 solution first, then the penalty's own descent from it
            sweeps = _cd_point(c, s, G, 0, t1, thr1, max_iter, tol)
            for h in range(H):
                c[h] = c0[h]
            for j in range(H):
                sj = s[j]
                if sj != 0.0:
                    for h in range(H):
                        c[h] -= sj * G[j, h]
        sweeps += _cd_point(c, s, G, penalty, t, thr, max_iter, tol)
        r = np.empty(D)
        for d in range(D):
            r[d] = y[d]
        m = 0
        pen = 0.0
        for h in range(H):
            sh = s[h]
            if sh != 0.0:
                nz[i, m] = h
                m += 1
                for d in range(D):
                    r[d] -= sh * Wt[h, d]
                ah = abs(sh)
                if penalty == 0:
                    pen += lam * ah
                elif penalty == 1:
                    pen += lam * math.sqrt(ah)
                elif penalty == 2:
                    pen += lam
                elif a[h] == 0.0 or ah <= sqrt2lam / a[h]:
                    pen += a[h] * sqrt2lam * ah - 0.5 * a[h] * a[h] * ah * ah
                else:
                    pen += lam
        cnt[i] = m
        sq = _sum_sq(r)
        per[i, 0] = sq
        per[i, 1] = pen
        per[i, 2] = _sum_sq(y)
        per[i, 3] = sweeps
        if i == spare_at:  # its residual, or its data row when reconstructed exactly
            if math.sqrt(sq) > 1e-12:
                for d in range(D):
                    spare[d] += r[d]
            else:
                for d in range(D):
                    spare[d] += y[d]
    # 2. Σ s sᵀ (upper triangle, packed row by row) and Σ y sᵀ from the non-zeros alone,
    # point after point (O(nnz · D) per point: a small part of the coding's cost); Σ y sᵀ
    # is gathered atom by atom in contiguous rows, then written into inc_B (D, H)
    Bt = np.zeros((H, D))
    for i in range(n):
        y = Y[rows[i]]
        m = cnt[i]
        for j in range(m):
            h = nz[i, j]
            sh = S[i, h]
            bt = Bt[h]
            for d in range(D):
                bt[d] += sh * y[d]
            base = h * H - (h * (h - 1)) // 2 - h  # packed index of (h, k) is base + k
            for jj in range(j, m):
                k = nz[i, jj]
                inc_A[base + k] += sh * S[i, k]
    for d in range(D):
        for h in range(H):
            inc_B[d, h] += Bt[h, d]
    # 3. the metric sums, in the order of the points
    sq_error = 0.0
    penalty_sum = 0.0
    sq_norm = 0.0
    n_nonzero = 0.0
    n_sweeps = 0.0
    for i in range(n):
        sq_error += per[i, 0]
        penalty_sum += per[i, 1]
        sq_norm += per[i, 2]
        n_nonzero += cnt[i]
        n_sweeps += per[i, 3]
    sums[0] += 0.5 * sq_error + penalty_sum
    sums[1] += sq_error
    sums[2] += sq_norm
    sums[3] += n_nonzero
    sums[4] += n_sweeps
    sums[5] += n


@njit(cache=True, parallel=True)
def _code_stats_parallel(
    Y, rows, W, Wt, G, penalty, lam, max_iter, tol, spare_at, inc, sums
):  # pragma: no cover
    _code_stats(Y, rows, W, Wt, G, penalty, lam, max_iter, tol, spare_at, inc, sums)


@njit(cache=True)
def _code_stats_serial(
    Y, rows, W, Wt, G, penalty, lam, max_iter, tol, spare_at, inc, sums
):  # pragma: no cover
    _code_stats(Y, rows, W, Wt, G, penalty, lam, max_iter, tol, spare_at, inc, sums)


#: rows from which a mini-batch is coded by several threads (when numba has several): below,
#: starting them costs more than they save. Both versions give the same numbers.
_PARALLEL_ROWS = 32


def sparse_code_stats(
    Y, rows, W, Wt, G, penalty: str, lam: float, max_iter: int, tol: float, spare_at: int, inc, sums
):
    """Code a mini-batch and add its statistics to ``out``: the online learner's coding step
    in one compiled call.

    Per row: the correlations Wᵀy, coordinate descent from zero as :func:`sparse_cd` (for
    the non-convex penalties first the ℓ1 problem, then the penalty's descent from its
    solution, as :class:`prosper.solvers.sparse_coding.Coder`), the residual y − W s; then
    Σ s sᵀ and Σ y sᵀ from the non-zero entries alone (the codes are sparse: far fewer
    operations than the dense products). The same numbers, to round-off, as the NumPy
    reference ``OnlineSparseCoding._code_local``.

    Parameters
    ----------
    Y : ndarray of shape (m, D), float32 or float64, C-contiguous
        Rows to read from.
    rows : ndarray of int64, shape (n,)
        The rows of Y to code (n may be 0).
    W : ndarray of shape (D, H), float64, C-contiguous
        The dictionary.
    Wt : ndarray of shape (H, D), float64, C-contiguous
        The dictionary, atoms as rows.
    G : ndarray of shape (H, H), float64, C-contiguous
        WᵀW.
    penalty : {"l1", "l1/2", "l0", "cel0"}
    lam : float
    max_iter : int
        Sweeps at most per point and problem.
    tol : float
    spare_at : int
        Position in ``rows`` of the row whose residual is the spare atom (-1: none here).
    inc : ndarray of shape (H(H+1)/2 + D·H + D,), float64
        The increments, added to (not overwritten), packed for the Allreduce: the upper
        triangle of Σ s sᵀ row by row (the order of ``numpy.triu_indices``), Σ y sᵀ (D, H)
        row-major, the spare atom (D,).
    sums : ndarray of shape (6,), float64
        Added to: the energy, squared error, squared norm, non-zeros, sweeps and rows.
    """
    parallel = rows.shape[0] >= _PARALLEL_ROWS and numba.get_num_threads() > 1
    (_code_stats_parallel if parallel else _code_stats_serial)(
        Y,
        rows,
        W,
        Wt,
        G,
        PENALTY_CODES[penalty],
        float(lam),
        int(max_iter),
        float(tol),
        int(spare_at),
        inc,
        sums,
    )


@njit(cache=True)
def _update_kernel(A, B, inc, n_rows, beta, Wt, G):  # pragma: no cover - compiled
    H, D = Wt.shape
    n_a = H * (H + 1) // 2
    inc_A = inc[:n_a]
    inc_B = inc[n_a : n_a + D * H].reshape((D, H))
    spare = inc[n_a + D * H :]
    p = 0
    for h in range(H):
        for k in range(h, H):
            x = inc_A[p] / n_rows
            p += 1
            A[h, k] = A[h, k] * beta + x
            if k != h:
                A[k, h] = A[k, h] * beta + x
    for d in range(D):
        for h in range(H):
            B[d, h] = B[d, h] * beta + inc_B[d, h] / n_rows
    n_replaced = _bcd_sweep(A, B, Wt, spare)
    W = np.empty((D, H))
    for d in range(D):
        for h in range(H):
            W[d, h] = Wt[h, d]
    # the Gram matrix of the new atoms, for the next mini-batch's coder (BLAS: about half
    # the time of a compiled loop here)
    np.dot(Wt, W, G)
    return W, n_replaced


def sparse_update(A, B, inc, n_rows: int, beta: float, Wt, G):
    """The online learner's update in one compiled call: forgetting, one sweep of block
    coordinate descent, and the Gram matrix of the new atoms.

    A ← β A + Σ s sᵀ / n, B ← β B + Σ y sᵀ / n (in place), then the sweep of
    :func:`sparse_bcd` on Wt (in place), then G ← Wt Wtᵀ (in place). The same numbers, to
    round-off, as the NumPy reference ``OnlineSparseCoding._update`` followed by
    ``Coder.set_dictionary``.

    Parameters
    ----------
    A : ndarray of shape (H, H), float64
    B : ndarray of shape (D, H), float64
    inc : ndarray of shape (H(H+1)/2 + D·H + D,)
        The increments of all ranks, packed as :func:`sparse_code_stats` writes them (the
        spare atom replaces an unused atom; ignored when zero).
    n_rows : int
        Rows of the mini-batch (all ranks).
    beta : float
        Forgetting factor.
    Wt : ndarray of shape (H, D), float64, C-contiguous
        The atoms as rows; updated in place.
    G : ndarray of shape (H, H), float64, C-contiguous
        Overwritten with the new WᵀW.

    Returns
    -------
    W : ndarray of shape (D, H)
        The new dictionary (a new array).
    n_replaced : int
    """
    W, n_replaced = _update_kernel(A, B, inc, float(n_rows), float(beta), Wt, G)
    return W, int(n_replaced)
