"""numba kernels for the E-step of linear models: one fused, parallel kernel per batch.

Same functions, arguments and results as :mod:`prosper.backends.numpy_backend` (to round-off
in float64); GSC's and MCA's kernels are :mod:`prosper.backends.numba_gsc` and
:mod:`prosper.backends.numba_mca`. Outside the kernel run only
three BLAS GEMMs per batch: ``Y W``, ``Wᵀ W`` and Σ y <s>ᵀ. The kernel runs in parallel
(``prange``) over contiguous chunks of data points, one per thread, and each chunk works
through its points in blocks of ``_BLOCK``, with the points of a block in the innermost,
contiguous dimension of every scratch array, so that every loop over states runs as SIMD
vector operations over the points of the block:

1. preselection: per point, the H' best latents by the model's score max_v (A (Wᵀy) + C)
   (computed before the kernel by the NumPy expression every backend shares), ties to the
   lower index exactly as :func:`prosper.solvers.states._top_indices`;
2. features (Wᵀy on the slots, the slots' block of WᵀW) gathered once per point;
3. squared errors of all table states by the parent recurrence of
   :class:`prosper.backends.linear_terms.TableTerms` (m + 1 terms per state with m active
   latents, instead of the O(H'²) of a dense quadratic form or a GEMM);
4. log-joints, the log-sum-exp at temperature 1 (free energy) and at the annealing
   temperature, posterior weights (exp as a polynomial that vectorises; libm's is scalar);
5. moments of the table states by the same tree backwards (m + 3 terms per state),
   scattered through I to <s> and the chunk's Σ<s sᵀ>.

No (B, K, H) state tensor and no (B, K) array is formed: the scratch of one thread is
O(K · ``_BLOCK``). Every chunk writes its own partial sums of the statistics, which are added
up afterwards; each point's posterior mean goes to its own row.

Threads: during a fit :mod:`prosper.threads` gives the kernels this rank's share of the
node's cores and BLAS one thread (unless ``NUMBA_NUM_THREADS`` or ``OMP_NUM_THREADS`` etc.
are set); :func:`numba_threads` sets them by hand.

Compilation: the kernels are compiled on first use (about 10-30 s) and cached on disk
(``cache=True``: ``__pycache__`` next to this file, or ``NUMBA_CACHE_DIR``); later processes
load them in well under a second. :func:`warmup` compiles them explicitly, e.g. in a short
single-rank run before a large MPI job so that the ranks do not all compile at once.

float32: ``Y W`` runs at the precision of ``Y``; everything else, including Σ y <s>ᵀ and all
other statistics, in float64.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numba
import numpy as np
from numba import njit, prange

from prosper.backends import numpy_backend
from prosper.backends.linear_terms import preselection_scores, state_log_prior, table_terms
from prosper.backends.numba_gsc import gsc_estep
from prosper.backends.numba_math import FMA, run_kernel, softmax_columns
from prosper.backends.numba_mca import mca_estep, mca_preselection
from prosper.backends.numba_mca_states import mca_state_log_joint, mca_state_stats
from prosper.backends.numba_search import linear_search, linear_search_estep
from prosper.backends.numba_sparse import sparse_bcd, sparse_cd, sparse_code_stats, sparse_update
from prosper.backends.numba_states import (
    evo_children,
    evo_select,
    linear_state_log_joint,
    linear_state_stats,
)

if TYPE_CHECKING:  # annotations only: kernels never import solvers
    from prosper.solvers.states import ExpectationTruncation


NAME = "numba"
AVAILABLE = True


@contextlib.contextmanager
def numba_threads(n: int) -> Iterator[int]:
    """Run the block with ``n`` numba threads (at most ``NUMBA_NUM_THREADS``), then restore.

    :mod:`prosper.threads` decides ``n`` per MPI rank; use this only to override it.
    """
    old = numba.get_num_threads()
    n = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    try:
        yield n
    finally:
        numba.set_num_threads(old)


__all__ = [
    "KERNELS",
    "batch_points",
    "gsc_estep",
    "linear_activity_pairs",
    "linear_estep",
    "linear_posterior_mean",
    "mca_estep",
    "numba_threads",
    "select_device",
    "sparse_cd",
    "to_host",
    "warmup",
]

#: the kernels this backend offers by name (models and solvers look them up here)
KERNELS = {
    "linear_state_log_joint": linear_state_log_joint,
    "linear_state_stats": linear_state_stats,
    "evo_select": evo_select,
    "evo_children": evo_children,
    "linear_search": linear_search,
    "linear_search_estep": linear_search_estep,
    # fused E-steps of the model families (see the models' runs_on)
    "gsc_estep": gsc_estep,
    "mca_estep": mca_estep,
    "mca_preselection": mca_preselection,
    "sparse_cd": sparse_cd,
    "sparse_bcd": sparse_bcd,
    # the online learner's mini-batch: coding with statistics, and the update
    "sparse_code_stats": sparse_code_stats,
    "sparse_update": sparse_update,
    "mca_state_log_joint": mca_state_log_joint,
    "mca_state_stats": mca_state_stats,
}

#: data points per block: the SIMD dimension of the kernel's scratch arrays. 64 keeps a
#: thread's scratch (about 2 K · 64 float64) in L2 for K up to about a thousand states.
_BLOCK = 64
#: most latents for which the preselection ranks by O(H²) SIMD compares (see _rank_block)
_RANK_MAX_H = 48


# -- compiled kernels ------------------------------------------------------------------------
@njit(cache=True, inline="always")
def _rank_block(scores, n0, nb, ST, CNT):  # pragma: no cover - compiled
    """CNT[h, j] = how many latents beat latent h for point n0 + j (a higher score, or an
    equal score and a lower index): h is among the H' best exactly when CNT[h, j] < H',
    the rule of :func:`prosper.solvers.states._top_indices`. ``ST`` is (H, NB) scratch."""
    H = scores.shape[1]
    for j in range(nb):
        row = scores[n0 + j]
        for h in range(H):
            ST[h, j] = row[h]
    for h in range(H):
        s = ST[h]
        c = CNT[h]
        for j in range(nb):
            c[j] = 0
        for g in range(h):
            x = ST[g]
            for j in range(nb):
                c[j] += x[j] >= s[j]
        for g in range(h + 1, H):
            x = ST[g]
            for j in range(nb):
                c[j] += x[j] > s[j]


@njit(cache=True, inline="always")
def _top_slots(score, top_score, top):  # pragma: no cover - compiled
    """The H' best latents of one point by ``score``, ascending in ``top``; ties to the lower
    index, as :func:`prosper.solvers.states._top_indices`.

    Insertion into a list kept sorted by descending score (O(H) compares when H' << H): an
    equal score never displaces an earlier (lower) latent.
    """
    H = score.shape[0]
    Hp = top.shape[0]
    filled = 0
    for h in range(H):
        s = score[h]
        if filled < Hp:
            pos = filled
            filled += 1
        elif s > top_score[Hp - 1]:
            pos = Hp - 1
        else:
            continue
        while pos > 0 and top_score[pos - 1] < s:
            top_score[pos] = top_score[pos - 1]
            top[pos] = top[pos - 1]
            pos -= 1
        top_score[pos] = s
        top[pos] = h
    for a in range(1, Hp):
        x = top[a]
        b = a
        while b > 0 and top[b - 1] > x:
            top[b] = top[b - 1]
            b -= 1
        top[b] = x


@njit(cache=True, parallel=True, fastmath=FMA)
def _linear_kernel(
    WY,
    yy,
    WtW,
    scores,
    full,
    Hp,
    nz,
    mom_nz,
    lp,
    parent,
    err_terms,
    err_index,
    err_coef,
    mom_terms,
    mom_index,
    mom_coef,
    pair_a,
    pair_b,
    c0,
    inv2s2,
    beta,
    prior_beta,
    mask,
    accumulate,
    n_chunks,
    log_marginal,
    mean,
    ss_part,
    counts_part,
):  # pragma: no cover - compiled
    """Preselection, log-joints, log marginals, weights and moments of one batch.

    Writes ``log_marginal`` (B,) and, with ``accumulate``, <s> into ``mean`` (B, H) and the
    per-chunk partial sums ``ss_part`` (n_chunks, H, H) and ``counts_part``
    (n_chunks, V-1). State order: [zero, singletons value-major, table rows]. The moments
    weigh a latent's value v by ``mom_nz`` (the singletons) and ``mom_coef`` (the table):
    ``nz`` and its products give <s> and Σ<s sᵀ>, ones give <1{s ≠ 0}> and the co-activations.
    """
    B, H = WY.shape
    V1 = nz.shape[0]
    P = pair_a.shape[0]
    F = Hp + P
    R = parent.shape[0]
    R1 = V1 * Hp
    off = 1 + V1 * H
    K = off + R - R1
    tempered = beta != 1.0 or prior_beta != 1.0
    # up to _RANK_MAX_H latents the preselection ranks a block of points with SIMD compares
    # (O(H²) per point, no branches); beyond, insertion per point (O(H))
    ranked = not full and H <= _RANK_MAX_H
    diag = np.empty(H)
    for h in range(H):
        diag[h] = WtW[h, h]
    for c in prange(n_chunks):
        NB = _BLOCK
        # scratch of this thread; the last axis runs over the points of a block
        I = np.empty((NB, Hp), dtype=np.int64)
        X = np.empty((F, NB))
        WYT = np.empty((H, NB))
        S1 = np.empty((R1, NB))
        LJ = np.empty((K, NB))
        Q = np.empty((K, NB))
        MOM = np.empty((F + V1, NB))
        MT = np.empty((H, NB))
        SD = np.zeros((H, NB))
        CN = np.zeros((V1, NB))
        yb = np.empty(NB)
        mx = np.empty(NB)
        sm = np.empty(NB)
        bits = np.empty(NB, dtype=np.int64)
        top_score = np.empty(Hp)
        top = np.empty(Hp + 1, dtype=np.int64)
        ST = np.empty((H if ranked else 0, NB))
        CNT = np.empty((H if ranked else 0, NB), dtype=np.int64)
        ss_c = ss_part[c]
        lo = c * B // n_chunks
        hi = (c + 1) * B // n_chunks
        for n0 in range(lo, hi, NB):
            nb = min(NB, hi - n0)
            # preselection and per-point features, gathered once
            if ranked:
                _rank_block(scores, n0, nb, ST, CNT)
            for j in range(nb):
                wy = WY[n0 + j]
                yb[j] = yy[n0 + j]
                for h in range(H):
                    WYT[h, j] = wy[h]
                if full:
                    for i in range(Hp):
                        top[i] = i
                elif ranked:
                    # the chosen latents in ascending order, without branches: every latent
                    # is written, and the position advances past the chosen ones only
                    pos = 0
                    for h in range(H):
                        top[pos] = h
                        pos += CNT[h, j] < Hp
                else:
                    _top_slots(scores[n0 + j], top_score, top[:Hp])
                for i in range(Hp):
                    I[j, i] = top[i]
                    X[i, j] = wy[top[i]]
                for p in range(P):
                    X[Hp + p, j] = WtW[top[pair_a[p]], top[pair_b[p]]]
            # squared errors minus ||y||^2: single-slot rows, then the table states (in LJ)
            for r in range(R):
                dst = S1[r] if r < R1 else LJ[off + r - R1]
                q = parent[r]
                if q < 0:
                    for j in range(nb):
                        dst[j] = 0.0
                else:
                    src = S1[q] if q < R1 else LJ[off + q - R1]
                    for j in range(nb):
                        dst[j] = src[j]
                for e in range(err_terms[r]):
                    x = X[err_index[r, e]]
                    cf = err_coef[r, e]
                    for j in range(nb):
                        dst[j] += cf * x[j]
            # log-joints at temperature 1: zero state, singletons, table states
            row = LJ[0]
            for j in range(nb):
                row[j] = c0 - yb[j] * inv2s2 + lp[0]
            for v in range(V1):
                s = nz[v]
                for h in range(H):
                    k = 1 + v * H + h
                    row = LJ[k]
                    w = WYT[h]
                    d = s * s * diag[h]
                    lpk = lp[k]
                    for j in range(nb):
                        row[j] = c0 - (yb[j] - 2.0 * s * w[j] + d) * inv2s2 + lpk
            for k in range(off, K):
                row = LJ[k]
                lpk = lp[k]
                for j in range(nb):
                    row[j] = c0 - (yb[j] + row[j]) * inv2s2 + lpk
            # log marginals: stable log-sum-exp over the states
            softmax_columns(LJ, K, nb, Q, mx, sm, bits)
            for j in range(nb):
                log_marginal[n0 + j] = mx[j] + np.log(sm[j])
            if not accumulate:
                continue
            if tempered:
                # weights at the annealing temperature: beta ll + prior_beta lp
                for k in range(K):
                    row = LJ[k]
                    lpk = lp[k]
                    if lpk == -np.inf:  # a value of prior probability 0: stays impossible
                        continue
                    for j in range(nb):
                        row[j] = beta * (row[j] - lpk) + prior_beta * lpk
                softmax_columns(LJ, K, nb, Q, mx, sm, bits)
            # posterior weights q (times the data selection mask), in place
            for j in range(nb):
                sm[j] = mask[n0 + j] / sm[j]
            for k in range(K):
                row = Q[k]
                for j in range(nb):
                    row[j] *= sm[j]
            # singletons: <s>, the diagonal of <s s^T> and the value counts
            for h in range(H):
                for j in range(nb):
                    MT[h, j] = 0.0
            for v in range(V1):
                s = mom_nz[v]
                cn = CN[v]
                for h in range(H):
                    qk = Q[1 + v * H + h]
                    m = MT[h]
                    sd = SD[h]
                    for j in range(nb):
                        m[j] += s * qk[j]
                        sd[j] += s * s * qk[j]
                        cn[j] += qk[j]
            # table states: moments over the slots by the tree of TableTerms. U (the weight
            # of a row's state and all its descendants) replaces q in the table rows of Q and
            # starts at 0 in the single-slot rows (S1, free now); children follow parents
            for r in range(R1):
                for j in range(nb):
                    S1[r, j] = 0.0
            for r in range(R - 1, -1, -1):
                q = parent[r]
                if q >= 0:
                    src = S1[r] if r < R1 else Q[off + r - R1]
                    dst = S1[q] if q < R1 else Q[off + q - R1]
                    for j in range(nb):
                        dst[j] += src[j]
            for f in range(F + V1):
                for j in range(nb):
                    MOM[f, j] = 0.0
            for r in range(R):
                u = S1[r] if r < R1 else Q[off + r - R1]
                for e in range(mom_terms[r]):
                    t = MOM[mom_index[r, e]]
                    cf = mom_coef[r, e]
                    for j in range(nb):
                        t[j] += cf * u[j]
            for v in range(V1):
                cn = CN[v]
                t = MOM[F + v]
                for j in range(nb):
                    cn[j] += t[j]
            for j in range(nb):
                for i in range(Hp):
                    MT[I[j, i], j] += MOM[i, j]
                for p in range(P):
                    a = I[j, pair_a[p]]
                    b = I[j, pair_b[p]]
                    x = MOM[Hp + p, j]
                    ss_c[a, b] += x
                    if a != b:
                        ss_c[b, a] += x
                out = mean[n0 + j]
                for h in range(H):
                    out[h] = MT[h, j]
        # the chunk's vector partial sums
        for h in range(H):
            ss_c[h, h] += SD[h].sum()
        for v in range(V1):
            counts_part[c, v] += CN[v].sum()


def _run(
    Y, W, sigma2, value_logp, states, presel, beta, prior_beta, mask, accumulate, activity=False
):
    """GEMMs and kernel of one batch: log marginals (B,), and <s> (B, H) plus the statistics'
    parts (``ss`` (H, H), ``counts`` (V-1,), weights (B,), ||y||² (B,)) when ``accumulate``.
    With ``activity`` the moments count non-zero latents instead: <1{s ≠ 0}> and
    Σ<1{s_g ≠ 0} 1{s_h ≠ 0}> in place of <s> and Σ<s sᵀ>."""
    Y = np.asarray(Y)
    B, D = Y.shape
    H = W.shape[1]
    # GEMMs over the data at the precision of Y; the rest in float64
    WY = np.ascontiguousarray(Y @ np.asarray(W, dtype=Y.dtype), dtype=np.float64)
    W64 = np.asarray(W, dtype=np.float64)
    WtW = np.ascontiguousarray(W64.T @ W64)
    yy = np.einsum("nd,nd->n", Y, Y, dtype=np.float64)
    terms = table_terms(states.table, states.values)
    nz = np.ascontiguousarray(states.values[1:], dtype=np.float64)
    mom_nz, mom_coef = nz, terms.mom_coef
    if activity:  # every non-zero value, and so every product of them, counts as 1
        mom_nz = np.ones_like(nz)
        mom_coef = (np.arange(mom_coef.shape[1])[None, :] < terms.mom_terms[:, None]).astype(
            np.float64
        )
    # the scores by the shared NumPy expression, so that every backend ranks the same numbers
    scores = np.zeros((0, H)) if states.full else preselection_scores(WY, presel)
    n_chunks = max(1, min(B, numba.get_num_threads()))
    weights = np.ones(B) if mask is None else np.ascontiguousarray(mask, dtype=np.float64)
    log_marginal = np.empty(B)
    mean = np.empty((B, H) if accumulate else (0, H))
    ss = np.zeros((n_chunks, H, H))
    counts = np.zeros((n_chunks, nz.size))
    if B:
        run_kernel(
            _linear_kernel,
            WY,
            yy,
            WtW,
            np.ascontiguousarray(scores, dtype=np.float64),
            bool(states.full),
            int(terms.n_slots),
            nz,
            mom_nz,
            state_log_prior(value_logp, H, states.value_counts),
            terms.parent,
            terms.err_terms,
            terms.err_index,
            terms.err_coef,
            terms.mom_terms,
            terms.mom_index,
            mom_coef,
            terms.pair_a,
            terms.pair_b,
            float(-0.5 * D * np.log(2.0 * np.pi * sigma2)),
            float(0.5 / sigma2),
            float(beta),
            float(prior_beta),
            weights,
            bool(accumulate),
            n_chunks,
            log_marginal,
            mean,
            ss,
            counts,
        )
    return log_marginal, mean, ss.sum(axis=0), counts.sum(axis=0), weights, yy


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

    Arguments and results as :func:`prosper.backends.numpy_backend.linear_estep`, to
    round-off in float64; ``Y`` may be float32 (``Y W`` then runs in float32, everything
    else in float64, and the statistics are float64).
    """
    log_marginal, mean, ss, counts, weights, yy = _run(
        Y, W, float(sigma2), value_logp, states, presel, beta, prior_beta, mask, accumulate
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
    states: ExpectationTruncation,
    presel: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """Posterior mean <s> (B, H) under the truncated posterior at temperature 1.

    Arguments as for :func:`linear_estep`.
    """
    return _run(Y, W, float(sigma2), value_logp, states, presel, 1.0, 1.0, None, True)[1]


def linear_activity_pairs(
    Y: np.ndarray,
    W: np.ndarray,
    sigma2: float,
    value_logp: np.ndarray,
    states: ExpectationTruncation,
    presel: tuple[np.ndarray, np.ndarray],
    beta: float,
    prior_beta: float,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Σ_n <1{s_g ≠ 0} 1{s_h ≠ 0}> (H, H) of one batch under the truncated posterior at the
    inverse temperatures ``beta``, ``prior_beta``, weighted by ``mask``: the co-activations
    that the repairs of :class:`prosper.models.base.ActivityRepairs` read.

    Arguments as for :func:`linear_estep`. This is the E-step's own kernel with every
    non-zero value counted as one, so it costs one E-step pass; the sweep over explicit
    states it replaces cost about 40 passes at 10x10 DSC bars (1721 states per point).
    """
    return _run(
        Y, W, float(sigma2), value_logp, states, presel, beta, prior_beta, mask, True, True
    )[2]


KERNELS["linear_activity_pairs"] = linear_activity_pairs


def needs_compiling() -> bool:
    """Whether a kernel is neither loaded in this process nor in the on-disk cache, so that
    the first E-step will compile it (the estimator then says so before it starts)."""
    from prosper.backends import numba_gsc, numba_mca, numba_search, numba_states

    kernels = [_linear_kernel, numba_gsc._gsc_kernel, numba_mca._mca_kernel]
    kernels += [numba_states._log_joint, numba_states._stats]
    kernels += [numba_states._select, numba_states._children, numba_search._linear_search]
    for kernel in kernels:
        if kernel.overloads:
            continue
        try:
            index = kernel._cache._cache_file._index_path
        except AttributeError:  # another numba's internals: say nothing rather than guess
            return False
        if not os.path.exists(index):
            return True
    return False


def warmup() -> float:
    """Compile (or load from the cache) every kernel on a tiny problem; returns seconds taken."""
    from prosper.solvers.states import ExpectationTruncation

    start = time.perf_counter()
    states = ExpectationTruncation(H=3, Hprime=2, gamma=2, values=(0.0, 1.0))
    presel = (np.ones((1, 3)), np.zeros((1, 3)))
    logp = np.log([0.5, 0.5])
    Y, W = np.zeros((2, 2)), np.ones((2, 3))
    linear_estep(Y, W, 1.0, logp, states, presel, 1.0, 1.0)
    params = {"W": W, "pi": np.full(3, 0.5), "mu": np.zeros(3), "psi": np.ones(3), "sigma": 1.0}
    batch = states.select(np.zeros((2, 3)), 2)
    gsc_estep(Y, params, batch)
    mca_estep(Y, {"W": W, "pi": 0.5, "sigma": 1.0}, batch, 2.0)  # MMCA: same kernel
    mca_preselection(Y, W)
    X = np.zeros((2, 2, 3), dtype=np.uint8)
    values = np.arange(2.0)
    linear_state_log_joint(np.zeros((2, 3)), np.eye(3), np.zeros(2), X, values, logp, 1.0, 2)
    linear_state_stats(X, np.ones((2, 2)), values)
    mca_state_stats(Y, X, np.ones((2, 2)), np.ones(2), W, 2.0, False)
    keys = np.ones((3, 2), dtype=np.uint64)
    evo_select(X, np.zeros((2, 2)), np.zeros((2, 2)), keys, 1)
    evo_children(X, np.zeros((2, 2)), np.ones((2, 3)), 1, np.arange(2), 1, 1, 1)
    linear_search(
        X,
        np.zeros((2, 3)),
        np.eye(3),
        np.zeros(2),
        values,
        logp,
        1.0,
        2,
        np.ones((2, 3)),
        keys,
        [1],
        np.arange(2),
        1,
        1,
    )
    return time.perf_counter() - start


def batch_points(bytes_per_point: int) -> int:
    """Points per E-step batch when the estimator leaves ``batch_size`` to the backend: the
    CPU's :data:`prosper.backends.numpy_backend.BATCH_POINTS` (argument as there)."""
    return numpy_backend.BATCH_POINTS


def to_host(stats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Statistics on the host: already there on this backend (the GPU backend moves them)."""
    return stats


def select_device(comm=None) -> int:
    """No device to choose on this backend (the GPU backend binds each rank to a GPU)."""
    return -1
