"""numba kernels for the truncated E-step of MCA and MMCA (:mod:`prosper.models.mca`), and
MCA's preselection scores (:func:`mca_preselection`: no excess array is stored; the NumPy
scores' order of summation, so the same numbers).

Same results as the NumPy E-step of :class:`prosper.models.mca.MCAModel` and
:class:`~prosper.models.mca.MMCAModel` (log marginals, the statistics ``Ay``, ``A``,
``counts``, ``err``, ``n`` and the posterior mean) to round-off in float64; the model's
docstrings define the mathematics (the ρ-smoothed maximum W̄^ρ, the responsibilities A_dh).

Layout. Unlike the linear models, whose states cost O(1) per point and state, every MCA
state costs O(D): its smoothed maximum is a vector over the pixels. The SIMD axis is
therefore the pixel axis d: every scratch array of a thread is a stack of rows of length
D_pad (D rounded up to a multiple of ``_LANES``, the padding entries being inert: y = 0 and
exp(M) = 0 there, so W̄ = 0 and they add nothing to the errors; they are dropped from the
statistics). Per data point:

1. gather log|W_dh| of the H' preselected latents (slot rows), the shift M_d (their
   maximum) and E_jd = sign(W_dh) exp(ρ (log|W_dh| − M_d)) (vectorised exp of
   :mod:`prosper.backends.numba_math`);
2. t_d of every table state by the prefix tree of the table: the table of
   :class:`prosper.solvers.states.ExpectationTruncation` is ordered by number of active
   slots, then lexicographically, so the parent of a state (the state without its last
   active slot: a slot row for two active slots, an earlier table row otherwise) precedes
   it, and t = t(parent) + E(last slot) is one row addition per state (MMCA: the sums t⁺
   and t⁻ of the positive and the negative entries of E, and t = ±max(t⁺, t⁻) with the
   sign of the larger);
3. |t|^(1/ρ) = exp(log|t| / ρ) for all states at once (vectorised log and exp), W̄ and the
   squared errors ||y||² − 2 yᵀW̄ + ||W̄||² (the zero state and the singletons, with the exact
   maximum, come from one GEMM ``Y W`` before the kernel);
4. log-joints, log-sum-exp at temperature 1 (log marginal) and at the annealing
   temperature (posterior weights q), as vectors over the K states;
5. statistics: MCA's A_dh factorises into exp((ρ−1)(log W_dh − M)) times |t|^(1/ρ)/|t|, and
   the sum over the states that contain slot j runs over the same tree backwards (each
   state's weighted row is added to its parent, and each row once to its last slot: every
   state containing j is counted once, at its prefix that ends in j); MMCA's A_dh (0 where
   the sign of W_dh loses) and, where it loses, the closeness c = |E_jd| / |t| and c |W̄_d|
   (statistics ``lost`` and ``lost_to``; ``lost_y``, c y_d, per point) run over the active
   slots of each state. They are scattered through I into the thread's (H, D_pad) partial sums.

Threads run (``prange``) over contiguous chunks of data points; each chunk writes its own
partial sums of A and Σ A y, and per-point values (singleton weights, weighted errors and
counts, or the posterior mean) go to their own rows. Outside the kernel: the GEMMs ``Y W``
and Σ_n q_singleton yᵀ and the final sums.

Loops are compiled with ``fastmath={"contract"}`` (FMA) and ``error_model="numpy"`` (no
zero-division checks, which keep loops scalar). The per-state error sums over pixels run in
8 explicit partial sums (D_pad is a multiple of 8), the sum of the K posterior weights with
reassociation allowed (a vector of partial sums); both are fixed orders for a given build.
The work of a state is done on rows that stay in L1 (t, |t|, log, exp, error one after the
other). Y is converted to float64 (as the NumPy E-step does), so float32 input gives the
float64 result of its float64 copy.

Range: the kernel shares the model's range limit (max/min of |W_dh| over the preselected
latents at a pixel below exp(700/ρ)); MMCA's responsibility is computed as a product
of the two factors above instead of one exp of their log, which agrees to round-off within
that range.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numba
import numpy as np
from numba import njit, prange

from prosper.backends.numba_math import FMA, exp_shifted, log_rows, run_kernel

if TYPE_CHECKING:  # annotations only: kernels never import solvers
    from prosper.solvers.states import CandidateBatch

__all__ = ["mca_estep", "mca_preselection"]

#: smallest |W_dh|, as prosper.models.mca.W_MIN (not imported: no model imports)
W_MIN = 1e-4
#: pixel rows are padded to a multiple of this many float64 (whole SIMD vectors)
_LANES = 8
_TINY = float(np.finfo(np.float64).tiny)
#: flags of the sum over the states' weights: FMA and a vector of partial sums
_REDUCE = {"contract", "reassoc"}
_MODES = {"lm": 0, "stats": 1, "mean": 2}


# -- compiled kernels ------------------------------------------------------------------------
@njit(cache=True, fastmath=_REDUCE, error_model="numpy")
def _sum(x, n):  # pragma: no cover - compiled
    """Σ x[:n]."""
    acc = 0.0
    for i in range(n):
        acc += x[i]
    return acc


@njit(cache=True, inline="always", fastmath=FMA, error_model="numpy")
def _err_row(y, root, t, scale, signed, prod, n):  # pragma: no cover - compiled
    """Σ_d w_d (w_d − 2 y_d) with w = sign(t) root scale (W̄ of one state): ||y − W̄||² − ||y||².

    n must be a multiple of 8: the products go to ``prod`` (vectorised), whose sum runs
    in 8 interleaved partial sums (a fixed order, no reassociation by the compiler).
    """
    if signed:
        for d in range(n):
            w = root[d] * scale[d]
            w = w if t[d] > 0.0 else (-w if t[d] < 0.0 else 0.0)
            prod[d] = w * (w - 2.0 * y[d])
    else:
        for d in range(n):
            w = root[d] * scale[d]
            prod[d] = w * (w - 2.0 * y[d])
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    for d in range(0, n, 8):
        a0 += prod[d]
        a1 += prod[d + 1]
        a2 += prod[d + 2]
        a3 += prod[d + 3]
        a4 += prod[d + 4]
        a5 += prod[d + 5]
        a6 += prod[d + 6]
        a7 += prod[d + 7]
    return ((a0 + a4) + (a1 + a5)) + ((a2 + a6) + (a3 + a7))


@njit(cache=True, inline="always", fastmath=FMA, error_model="numpy")
def _softmax(x, n, out, bits):  # pragma: no cover - compiled
    """out[:n] = exp(x[:n] − max x); returns (max x, Σ out)."""
    mx = x[0]
    for k in range(1, n):
        mx = x[k] if x[k] > mx else mx
    exp_shifted(x, mx, out, bits, n)
    return mx, _sum(out, n)


@njit(cache=True, parallel=True, fastmath=FMA, error_model="numpy")
def _mca_kernel(
    Y,
    I,
    logW,
    absW,
    sgnW,
    err_single,
    yy,
    parent,
    last,
    slots,
    sizes,
    lp,
    c0,
    inv2s2,
    rho,
    beta,
    prior_beta,
    mask,
    signed,
    summed,
    mode,
    n_chunks,
    log_marginal,
    point_q,
    point_err,
    point_count,
    A_part,
    Ay_part,
    L_part,
    LW_part,
    LY_part,
):  # pragma: no cover - compiled
    """Log marginals and, by ``mode`` (0: none, 1: statistics, 2: posterior mean), the rest.

    Mode 1 writes the masked singleton weights into ``point_q`` (B, H), Σ_k q_k err_k into
    ``point_err``, Σ_k q_k |s_k| into ``point_count`` and the chunks' partial sums of the
    table states' Σ A and Σ A y into ``A_part`` and ``Ay_part`` (n_chunks, H, D_pad);
    MMCA's ``L_part``, ``LW_part``, ``LY_part`` sum over all points (``mask`` not applied).
    Mode 2 writes <s> into ``point_q``. State order: [zero, H singletons, table rows].
    """
    B, D = Y.shape
    H = logW.shape[0]
    Hp = I.shape[1]
    Kc = parent.shape[0]
    Dp = A_part.shape[2]
    K = 1 + H + Kc
    off = 1 + H
    inv_rho = 1.0 / rho
    tempered = beta != 1.0 or prior_beta != 1.0
    classes = signed and not summed  # MMCA: the larger of the two signs' sums wins
    n_slot = Hp * Dp
    n_tab = Kc * Dp
    for c in prange(n_chunks):
        # scratch of this thread: rows of Dp pixels, flat
        y = np.zeros(Dp)
        M = np.zeros(Dp)
        expM = np.zeros(Dp)
        Lsh = np.zeros(n_slot)  # log|W| - M of the slots
        E = np.empty(n_slot)  # sign(W) exp(rho (log|W| - M))
        Ep = np.empty(n_slot)  # exp((rho - 1)(log|W| - M))
        S = np.empty(n_slot)  # responsibilities per slot
        T = np.empty(n_tab)  # t of the table states (MMCA: ±the winning sign's sum)
        TP = np.empty(n_tab if classes else 0)  # MMCA: the power sums of the positive
        TN = np.empty(n_tab if classes else 0)  # and of the negative causes
        EP = np.empty(n_slot if classes else 0)  # MMCA: max(E, 0) and max(-E, 0)
        EN = np.empty(n_slot if classes else 0)
        SL = np.empty(n_slot if classes else 0)  # MMCA: Σ q c (lost) per slot
        SLW = np.empty(n_slot if classes else 0)  # and Σ q c |W̄| (lost to)
        QA = np.empty(Kc if classes else 0)  # MMCA: q of the table states, unmasked
        TA = np.empty(n_tab)  # max(|t|, tiny)
        lg = np.empty(Dp)  # log |t| of one state
        xr = np.empty(Dp)
        ROOT = np.empty(n_tab)  # |t|^(1/rho)
        G = np.empty(n_tab)  # q_k |t|^(1/rho) / |t| (MCA) or |t|^(1/rho) / |t| (MMCA)
        X = np.empty(n_slot)  # exp arguments of the slot rows
        bits = np.empty(max(n_slot, Dp), dtype=np.int64)
        expo = np.empty(Dp)
        err = np.empty(K)
        ll = np.empty(K)
        lj = np.empty(K)
        q = np.empty(K)
        kbits = np.empty(K, dtype=np.int64)
        A_c = A_part[c]
        Ay_c = Ay_part[c]
        L_c = L_part[c]
        LW_c = LW_part[c]
        LY_c = LY_part[c]
        lo = c * B // n_chunks
        hi = (c + 1) * B // n_chunks
        for n in range(lo, hi):
            yn = Y[n]
            Ino = I[n]
            for d in range(D):
                y[d] = yn[d]
            # 1. slot rows: shift M, exp(M) = max |W|, E
            if Hp > 0:
                h = Ino[0]
                for d in range(D):
                    M[d] = logW[h, d]
                    expM[d] = absW[h, d]
                for i in range(1, Hp):
                    h = Ino[i]
                    lw = logW[h]
                    aw = absW[h]
                    for d in range(D):
                        M[d] = lw[d] if lw[d] > M[d] else M[d]
                        expM[d] = aw[d] if aw[d] > expM[d] else expM[d]
            for i in range(Hp):
                h = Ino[i]
                lw = logW[h]
                row = Lsh[i * Dp : (i + 1) * Dp]
                xs = X[i * Dp : (i + 1) * Dp]
                for d in range(D):
                    row[d] = lw[d] - M[d]
                for d in range(Dp):
                    xs[d] = rho * row[d]
            exp_shifted(X, 0.0, E, bits, n_slot)
            if signed:
                for i in range(Hp):
                    sw = sgnW[Ino[i]]
                    row = E[i * Dp : (i + 1) * Dp]
                    for d in range(D):
                        row[d] *= sw[d]
            if classes:
                for i in range(n_slot):
                    EP[i] = E[i] if E[i] > 0.0 else 0.0
                    EN[i] = -E[i] if E[i] < 0.0 else 0.0
            yyn = yy[n]
            err[0] = yyn
            es = err_single[n]
            for h in range(H):
                err[1 + h] = es[h]
            # 2.-3. per table state, on rows that stay in L1: t by the prefix tree,
            # |t|^(1/rho) = exp(log|t| / rho), the squared error
            for k in range(Kc):
                p = parent[k]
                j = last[k]
                dst = T[k * Dp : (k + 1) * Dp]
                ta = TA[k * Dp : (k + 1) * Dp]
                rt = ROOT[k * Dp : (k + 1) * Dp]
                if classes:
                    # the sums of each sign by the tree; the larger wins with its sign
                    if p < Hp:
                        sp = EP[p * Dp : (p + 1) * Dp]
                        sn = EN[p * Dp : (p + 1) * Dp]
                    else:
                        sp = TP[(p - Hp) * Dp : (p - Hp + 1) * Dp]
                        sn = TN[(p - Hp) * Dp : (p - Hp + 1) * Dp]
                    ep = EP[j * Dp : (j + 1) * Dp]
                    en = EN[j * Dp : (j + 1) * Dp]
                    tp = TP[k * Dp : (k + 1) * Dp]
                    tn = TN[k * Dp : (k + 1) * Dp]
                    for d in range(Dp):
                        tp[d] = sp[d] + ep[d]
                        tn[d] = sn[d] + en[d]
                    for d in range(Dp):
                        a = tp[d] if tp[d] >= tn[d] else tn[d]
                        a = a if a > _TINY else _TINY
                        ta[d] = a
                        dst[d] = a if tp[d] >= tn[d] else -a
                else:
                    src = (
                        E[p * Dp : (p + 1) * Dp] if p < Hp else T[(p - Hp) * Dp : (p - Hp + 1) * Dp]
                    )
                    e = E[j * Dp : (j + 1) * Dp]
                    for d in range(Dp):
                        dst[d] = src[d] + e[d]
                    for d in range(Dp):
                        a = dst[d] if dst[d] >= 0.0 else -dst[d]  # MMCA's signed sum
                        ta[d] = a if a > _TINY else _TINY
                log_rows(ta, lg, bits, expo, Dp)
                for d in range(Dp):
                    xr[d] = lg[d] * inv_rho
                exp_shifted(xr, 0.0, rt, bits, Dp)
                err[off + k] = yyn + _err_row(y, rt, dst, expM, signed, lg, Dp)
            # 4. log-joints, log marginal, posterior weights
            for k in range(K):
                ll[k] = c0 - err[k] * inv2s2
                lj[k] = ll[k] + lp[k]
            mx, tot = _softmax(lj, K, q, kbits)
            log_marginal[n] = mx + np.log(tot)
            if mode == 0:
                continue
            if tempered:
                for k in range(K):
                    lj[k] = beta * ll[k] + prior_beta * lp[k]
                mx, tot = _softmax(lj, K, q, kbits)
            qn = point_q[n]
            if mode == 2:
                w = 1.0 / tot
                for h in range(H):
                    qn[h] = q[1 + h] * w
                for k in range(Kc):
                    qk = q[off + k] * w
                    for a in range(sizes[k]):
                        qn[Ino[slots[k, a]]] += qk
                continue
            w = mask[n] / tot
            if classes:
                # MMCA's contested statistics count every point, masked or not: a point
                # ET's data selection cuts can be the only one to show a crossing's order
                w_all = 1.0 / tot
                for k in range(Kc):
                    QA[k] = q[off + k] * w_all
            elif w == 0.0:
                for h in range(H):
                    qn[h] = 0.0
                point_err[n] = 0.0
                point_count[n] = 0.0
                continue
            for k in range(K):
                q[k] *= w
            acc_err = 0.0
            acc_count = 0.0
            for k in range(K):
                acc_err += q[k] * err[k]
            for h in range(H):
                qn[h] = q[1 + h]
                acc_count += q[1 + h]
            for k in range(Kc):
                acc_count += q[off + k] * sizes[k]
            point_err[n] = acc_err
            point_count[n] = acc_count
            if Kc == 0:
                continue
            # 5. responsibilities of the table states per slot, scattered through I
            for i in range(n_slot):
                X[i] = (rho - 1.0) * Lsh[i]
            exp_shifted(X, 0.0, Ep, bits, n_slot)
            for i in range(n_slot):
                S[i] = 0.0
            if summed:
                # MMCA's signed sum: the capped A of the original code
                for i in range(n_tab):
                    G[i] = ROOT[i] / TA[i]
                for k in range(Kc):
                    qk = q[off + k]
                    g = G[k * Dp : (k + 1) * Dp]
                    for a in range(sizes[k]):
                        j = slots[k, a]
                        ep = Ep[j * Dp : (j + 1) * Dp]
                        s = S[j * Dp : (j + 1) * Dp]
                        for d in range(Dp):
                            r = ep[d] * g[d]
                            s[d] += qk * (r if r < 1.0 else 1.0)
            elif signed:
                # A where the slot's sign wins; where it loses, the closeness c = |E| / |t|
                # and c |W̄| (the statistics of the M-step's ordering of opposite signs)
                for i in range(n_slot):
                    SL[i] = 0.0
                    SLW[i] = 0.0
                for k in range(Kc):
                    qk = QA[k]
                    ta = TA[k * Dp : (k + 1) * Dp]
                    rt = ROOT[k * Dp : (k + 1) * Dp]
                    tw = T[k * Dp : (k + 1) * Dp]
                    g = G[k * Dp : (k + 1) * Dp]
                    for d in range(Dp):
                        g[d] = qk / ta[d]
                    for a in range(sizes[k]):
                        j = slots[k, a]
                        e = E[j * Dp : (j + 1) * Dp]
                        ep = Ep[j * Dp : (j + 1) * Dp]
                        s = S[j * Dp : (j + 1) * Dp]
                        sl = SL[j * Dp : (j + 1) * Dp]
                        slw = SLW[j * Dp : (j + 1) * Dp]
                        for d in range(Dp):
                            if (e[d] > 0.0) == (tw[d] > 0.0):
                                s[d] += ep[d] * g[d] * rt[d]
                            else:
                                close = -e[d] * g[d] if e[d] < 0.0 else e[d] * g[d]
                                sl[d] += close
                                slw[d] += close * rt[d] * expM[d]
                for j in range(Hp):
                    sl = SL[j * Dp : (j + 1) * Dp]
                    slw = SLW[j * Dp : (j + 1) * Dp]
                    l_row = L_c[Ino[j]]
                    lw_row = LW_c[Ino[j]]
                    ly_row = LY_c[Ino[j]]
                    for d in range(Dp):
                        l_row[d] += sl[d]
                        lw_row[d] += slw[d]
                        ly_row[d] += sl[d] * y[d]
                # A counts the selected points only
                mn = mask[n]
                for i in range(n_slot):
                    S[i] *= mn
            else:
                for k in range(Kc):
                    qk = q[off + k]
                    g = G[k * Dp : (k + 1) * Dp]
                    rt = ROOT[k * Dp : (k + 1) * Dp]
                    ta = TA[k * Dp : (k + 1) * Dp]
                    for d in range(Dp):
                        g[d] = qk * rt[d] / ta[d]
                # backwards over the tree: each row collects its descendants, then goes to
                # its parent (children follow their parents in the table)
                for k in range(Kc - 1, -1, -1):
                    p = parent[k]
                    dst = (
                        S[p * Dp : (p + 1) * Dp] if p < Hp else G[(p - Hp) * Dp : (p - Hp + 1) * Dp]
                    )
                    src = G[k * Dp : (k + 1) * Dp]
                    for d in range(Dp):
                        dst[d] += src[d]
                # a slot row's total already sits in S; each table row goes to its last slot
                for k in range(Kc):
                    j = last[k]
                    dst = S[j * Dp : (j + 1) * Dp]
                    src = G[k * Dp : (k + 1) * Dp]
                    for d in range(Dp):
                        dst[d] += src[d]
                for i in range(n_slot):
                    S[i] *= Ep[i]
            for j in range(Hp):
                s = S[j * Dp : (j + 1) * Dp]
                a_row = A_c[Ino[j]]
                ay_row = Ay_c[Ino[j]]
                for d in range(Dp):
                    a_row[d] += s[d]
                    ay_row[d] += s[d] * y[d]


@njit(cache=True, parallel=True, error_model="numpy")
def _preselection_kernel(Y, W, out, n_chunks):  # pragma: no cover - compiled
    """out[n, h] = −Σ_d max(W_dh − y_nd, 0), summed over d in ascending order (the order of
    the NumPy scores: bit for bit), vectorised over h."""
    B, D = Y.shape
    H = W.shape[1]
    for c in prange(n_chunks):
        acc = np.empty(H)
        for n in range(c * B // n_chunks, (c + 1) * B // n_chunks):
            yn = Y[n]
            for h in range(H):
                acc[h] = 0.0
            for d in range(D):
                wd = W[d]
                yd = yn[d]
                for h in range(H):
                    e = wd[h] - yd
                    acc[h] += e if e > 0.0 else 0.0
            on = out[n]
            for h in range(H):
                on[h] = -acc[h]


# -- the table's tree ------------------------------------------------------------------------
@lru_cache(maxsize=16)
def _tree(table_bytes: bytes, shape: tuple[int, int]):
    """parent, last, slots, sizes of the table rows (see the module docstring, point 2)."""
    table = np.frombuffer(table_bytes, dtype=np.float64).reshape(shape)
    Kc, Hp = shape
    active = [tuple(int(i) for i in np.flatnonzero(row)) for row in table]
    width = max((len(a) for a in active), default=0)
    row_of = {a: Hp + k for k, a in enumerate(active)}
    parent = np.empty(Kc, dtype=np.int64)
    last = np.empty(Kc, dtype=np.int64)
    slots = np.zeros((Kc, width), dtype=np.int64)
    sizes = np.empty(Kc, dtype=np.int64)
    for k, a in enumerate(active):
        if len(a) < 2:
            raise ValueError("table rows need two or more active slots")
        prefix = a[:-1]
        parent[k] = prefix[0] if len(prefix) == 1 else row_of[prefix]
        if parent[k] >= Hp + k:
            raise ValueError("the table must list every state after its parent")
        last[k] = a[-1]
        slots[k, : len(a)] = a
        sizes[k] = len(a)
    return parent, last, slots, sizes


def _clip_W(W: np.ndarray, signed: bool) -> np.ndarray:
    """W in the model's domain (as ``MCAModel.clip_W`` / ``MMCAModel.clip_W``)."""
    if signed:
        return np.where(W < 0, np.minimum(W, -W_MIN), np.maximum(W, W_MIN))
    return np.maximum(W, W_MIN)


# -- public entry point ----------------------------------------------------------------------
def mca_preselection(Y: np.ndarray, W: np.ndarray) -> np.ndarray:
    """MCA's preselection scores −Σ_d max(W_dh − y_d, 0), (B, H): the same numbers as
    :meth:`prosper.models.mca.MCAModel.preselection_scores`, bit for bit.

    Parameters
    ----------
    Y : ndarray of shape (B, D)
        float64 or float32 (converted to float64).
    W : ndarray of shape (D, H)
        In the model's domain (already clipped).
    """
    Y = np.ascontiguousarray(Y, dtype=np.float64)
    W = np.ascontiguousarray(W, dtype=np.float64)
    out = np.empty((Y.shape[0], W.shape[1]))
    if Y.shape[0]:
        n_chunks = max(1, min(Y.shape[0], numba.get_num_threads()))
        run_kernel(_preselection_kernel, Y, W, out, n_chunks)
    return out


def mca_estep(
    Y: np.ndarray,
    params: dict,
    batch: CandidateBatch,
    rho: float,
    beta: float = 1.0,
    prior_beta: float = 1.0,
    mask: np.ndarray | None = None,
    what: str = "stats",
    signed: int = 0,
) -> tuple[np.ndarray, dict[str, np.ndarray] | np.ndarray | None]:
    """Truncated E-step of MCA (``signed=False``) or MMCA (``signed=True``) on one batch.

    Parameters
    ----------
    Y : ndarray of shape (B, D)
        float64 or float32 (converted to float64).
    params : dict
        ``W`` (D, H) (clipped into the model's domain here), ``pi`` and ``sigma`` (scalars).
    batch : CandidateBatch
        Candidate states (``I`` (B, H'), binary ``table`` (Kc, H') ordered as
        :class:`prosper.solvers.states.ExpectationTruncation` builds it).
    rho : float
        Softness ρ of the smoothed maximum (``model.rho(beta)``).
    beta, prior_beta : float
        Inverse temperatures of the likelihood and the prior in the posterior weights.
    mask : ndarray of shape (B,) or None
        Weight of each point in the statistics (not in MMCA's ``lost``, ``lost_to``,
        ``lost_y``, which count every point); None = all 1.
    what : {"stats", "lm", "mean"}
        "stats": log marginals and statistics; "lm": log marginals only; "mean": log
        marginals and <s> (B, H) (call with ``beta = prior_beta = 1``).
    signed : int, default=0
        0 (or False): MCA; MMCA (signed W, the cause of largest magnitude wins) with
        1 (or True): the larger of the smoothed maxima of the two signs, 2: the signed sum
        of the first half of the iterations (``MMCAModel.kernel_mode``).

    Returns
    -------
    log_marginal : ndarray of shape (B,)
        log Σ_{s∈K_n} p(s, y_n) at temperature 1 with the given ρ.
    out : dict, ndarray or None
        "stats": ``Ay`` (D, H), ``A`` (D, H), ``counts`` (1,), ``err`` and ``n`` (0-d), as
        :meth:`prosper.models.mca.MCAModel.estep_batch`; "mean": <s> (B, H); "lm": None.
    """
    if what not in _MODES:
        raise ValueError(f"what must be one of {sorted(_MODES)}; got {what!r}")
    mode = _MODES[what]
    summed = int(signed) == 2
    signed = bool(signed)
    Y = np.ascontiguousarray(Y, dtype=np.float64)
    B, D = Y.shape
    W = _clip_W(np.asarray(params["W"], dtype=np.float64), signed)
    H = W.shape[1]
    sigma2 = float(params["sigma"]) ** 2
    pi = float(params["pi"])
    table = np.ascontiguousarray(batch.table, dtype=np.float64)
    parent, last, slots, sizes = _tree(table.tobytes(), table.shape)
    I = np.ascontiguousarray(batch.I, dtype=np.int64)
    # log prior of [zero, singletons, table rows], as MCAModel._log_prior
    l1, l0 = np.log(pi), np.log1p(-pi)
    lp = np.concatenate([[H * l0], np.full(H, l1 + (H - 1) * l0), sizes * l1 + (H - sizes) * l0])
    # zero state and singletons (exact maximum) by one GEMM
    yy = np.einsum("bd,bd->b", Y, Y)
    err_single = yy[:, None] - 2.0 * (Y @ W) + np.einsum("dh,dh->h", W, W)[None, :]
    absW = np.ascontiguousarray(np.abs(W).T)
    logW = np.log(absW)
    sgnW = np.ascontiguousarray(np.sign(W).T)
    Dp = -(-D // _LANES) * _LANES
    n_chunks = max(1, min(B, numba.get_num_threads()))
    weights = np.ones(B) if mask is None else np.ascontiguousarray(mask, dtype=np.float64)
    log_marginal = np.empty(B)
    point_q = np.zeros((B, H))
    point_err = np.zeros(B)
    point_count = np.zeros(B)
    A_part = np.zeros((n_chunks, H, Dp))
    Ay_part = np.zeros_like(A_part)
    # MMCA's statistics of the pixels a cause lost to the other sign
    L_part = np.zeros((n_chunks, H, Dp) if signed and not summed else (n_chunks, 0, 0))
    LW_part = np.zeros_like(L_part)
    LY_part = np.zeros_like(L_part)
    if B:
        run_kernel(
            _mca_kernel,
            Y,
            I,
            logW,
            absW,
            sgnW,
            np.ascontiguousarray(err_single),
            yy,
            parent,
            last,
            slots,
            sizes,
            lp,
            float(-0.5 * D * np.log(2.0 * np.pi * sigma2)),
            float(0.5 / sigma2),
            float(rho),
            float(beta),
            float(prior_beta),
            weights,
            signed,
            summed,
            mode,
            n_chunks,
            log_marginal,
            point_q,
            point_err,
            point_count,
            A_part,
            Ay_part,
            L_part,
            LW_part,
            LY_part,
        )
    if mode == 0:
        return log_marginal, None
    if mode == 2:
        return log_marginal, point_q
    A = A_part.sum(axis=0)[:, :D] + point_q.sum(axis=0)[:, None]
    Ay = Ay_part.sum(axis=0)[:, :D] + point_q.T @ Y
    stats = {
        "Ay": Ay.T,
        "A": A.T,
        "counts": np.array([point_count.sum()]),
        "err": np.array(float(point_err.sum())),
        "n": np.array(float(weights.sum())),
    }
    if signed:
        zeros = np.zeros((D, H))
        stats["lost"] = zeros if summed else L_part.sum(axis=0)[:, :D].T
        stats["lost_to"] = zeros if summed else LW_part.sum(axis=0)[:, :D].T
        stats["lost_y"] = zeros if summed else LY_part.sum(axis=0)[:, :D].T
    return log_marginal, stats
