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
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

__all__ = ["PENALTY_CODES", "sparse_bcd", "sparse_cd"]

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
        n_iter[i] = max_iter
        for it in range(max_iter):
            dmax = 0.0
            smax = 0.0
            for h in range(H):
                g = G[h, h]
                old = S[i, h]
                new = 0.0
                if g > 0.0:
                    z = old + c[h] / g
                    if abs(z) > thr[h]:
                        new = _shrink(z, t[h], penalty)
                if new != old:
                    d = new - old
                    for k in range(H):
                        c[k] -= d * G[h, k]
                    S[i, h] = new
                    if abs(d) > dmax:
                        dmax = abs(d)
                if abs(new) > smax:
                    smax = abs(new)
            if dmax <= tol * smax:
                n_iter[i] = it + 1
                break


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


@njit(cache=True)
def _bcd_kernel(A, B, W, spare):  # pragma: no cover - compiled
    D, H = W.shape
    # atoms as rows (Wt = Wᵀ), so that every inner loop runs over contiguous memory without
    # reordering a sum: v = W A_h is accumulated atom by atom
    Wt = np.empty((H, D), dtype=np.float64)
    for d in range(D):
        for h in range(H):
            Wt[h, d] = W[d, h]
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
            # u = W_h + (B_h − W A_h) / A_hh, with the atoms before h already updated
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
