"""numba kernel for the truncated E-step of GSC (spike-and-slab sparse coding).

Same results as the NumPy E-step of :class:`prosper.models.gsc.GSCModel` (``estep_batch``
and ``posterior_moments``, to round-off in float64), with the same formulas: for a spike
pattern with active set A the slab is integrated out through the Cholesky factor of
Ã = I + Ψ_A^½ W_Aᵀ W_A Ψ_A^½ / σ² (see the module docstring of ``prosper.models.gsc``).

One batch runs as

1. ``Y W`` and ``Wᵀ W`` (BLAS), per-latent constants of the singletons and, once per
   candidate table, the tree of its patterns (below);
2. one parallel kernel over contiguous chunks of data points, one per thread; each chunk
   works through its points in blocks of ``_BLOCK``, with the points of a block in the
   innermost, contiguous dimension of every scratch array. The pattern structure is the
   same for all points (only the slots' latents I differ), so every step below is a loop
   over patterns, slots or tree nodes around a plain elementwise loop over the points of
   the block, which LLVM turns into SIMD vector operations:

   a. per point, the slots' features gathered once: Wᵀy, μ, Ψ^½ and log π/(1-π) of each
      slot, and per slot pair Ã, (WᵀW)_ij μ_j and Ψ_i^½ (WᵀW)_ij μ_j / σ;
   b. the log-likelihoods of all candidate patterns: zero, the H singletons in closed
      form, the table patterns along the tree;
   c. the log-sum-exp at temperature 1 (the free-energy term) and at the annealing
      temperature, and the posterior weights (exp and log as polynomials that vectorise;
      libm's are scalar);
   d. the moments, summed per slot and slot pair over the table patterns, then scattered
      through I; each chunk writes its own partial sums of ``ss``, ``b``, ``dz`` and
      ``dz2``, each point its own row of ⟨s⟩ and ⟨b⟩;
3. Σ y⟨s⟩ᵀ as one GEMM.

Pattern tree. The slots of a pattern are ascending, so the matrix Ã of a pattern is the
matrix of its prefix (the pattern without its last slot) bordered by one row and column.
Its Cholesky factor L and the inverse X = L⁻¹ are then the prefix's, bordered: row p of a
pattern's X is the new (last) row of its ancestor with p + 1 slots, and each node of the
tree computes and stores only its new row, from the prefix's X (L's new row is
l = X_prefix ã, the pivot Ã_rr - ||l||², X's new row -lᵀ X_prefix / l_rr): O(k²) per pattern
instead of O(k³). u = Ψ_A^½ W_Aᵀ (y - W_A μ_A)/σ and ||y||² - ||y - W_A μ_A||² are also
updated from the prefix's. The second moments need Σ_t q_t Ã_t⁻¹ = Σ_t q_t Σ_p x_p x_pᵀ
over the rows x_p of X_t: each node adds its new row's outer product once, weighted by the
posterior mass of its subtree, so no Ã⁻¹ is formed. The prefixes of the k = 2 patterns are
the H' one-slot patterns, which are not states themselves (the singletons over all H
latents are) but roots of the tree.

Log-likelihoods are held relative to the zero pattern, -½(D log 2πσ² + ||y||²/σ²), which
is common to all patterns: the large ||y||²/σ² then cancels exactly instead of in round-off.
Both paths still lose all precision when σ sits at its floor (1e-8) on noiseless data: the
residuals ||r||²/σ² are then round-off times 1e16, and the two paths' weights of patterns
that differ only by a near-zero slab disagree (the log marginals and ⟨s⟩ still agree).

float32: ``Y W`` runs at the precision of ``Y``; everything else, Σ y⟨s⟩ᵀ included, in
float64.
Compilation: about 10-30 s on first use, cached on disk (``cache=True``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numba
import numpy as np
from numba import njit, prange

from prosper.backends.numba_math import FMA, log_rows, run_kernel, softmax_columns

if TYPE_CHECKING:  # annotations only: kernels never import solvers
    from prosper.solvers.states import CandidateBatch

__all__ = ["gsc_estep", "pattern_tree"]

PI_MIN, PI_MAX = 1e-5, 1.0 - 1e-5  # as prosper.models.gsc (not imported: no model imports)
LOG_2PI = float(np.log(2.0 * np.pi))

#: data points per block: the SIMD dimension of the kernel's scratch arrays. A thread's
#: scratch is about 3 γ + 7 rows of ``_BLOCK`` float64 per tree node (1.8 MB for H' = 8,
#: γ = 4), which 64 keeps in L2; 32 and 128 were 10% slower at H' = 8, γ = 4.
_BLOCK = 64


@njit(cache=True, parallel=True, fastmath=FMA, error_model="numpy")
def _gsc_kernel(
    WY,
    G,
    I,
    node_parent,
    node_slots,
    node_k,
    node_anc,
    mu,
    sp,
    logit,
    gmu,
    log_a,
    inv_a,
    sigma2,
    beta,
    prior_beta,
    mask,
    accumulate,
    second,
    n_chunks,
    log_marginal,
    mean_s,
    mean_b,
    ss_part,
    b_part,
    dz_part,
    dz2_part,
):  # pragma: no cover - compiled
    """Log marginals, posterior weights and moments of all candidate patterns of all points.

    Parameters
    ----------
    WY : ndarray of shape (B, H)
        Wᵀ y (float64).
    G : ndarray of shape (H, H)
        Wᵀ W.
    I : ndarray of int64, shape (B, H')
        Preselected latents of each point.
    node_parent, node_slots, node_k, node_anc
        The nodes of the pattern tree (:func:`_tree_nodes`): H' roots, then the table
        patterns.
    mu, sp, logit : ndarray of shape (H,)
        μ, Ψ^½ and log π/(1-π).
    gmu, log_a, inv_a : ndarray of shape (H,)
        ||W_h||² μ_h, log a_h and 1/a_h with a_h = 1 + Ψ_h ||W_h||²/σ² (singletons).
    sigma2, beta, prior_beta : float
    mask : ndarray of shape (B,)
        Weight of each point in the moments.
    accumulate : bool
        Compute posterior weights and moments (else only ``log_marginal``).
    second : bool
        Also the second-order statistics (``ss``, ``dz``, ``dz2``), summed per chunk.
    n_chunks : int
    log_marginal : ndarray of shape (B,), output
        log Σ_b p(y, b) - log p(b = 0) - (the zero pattern's log-likelihood); the caller adds
        the two constants back.
    mean_s, mean_b : ndarray of shape (B, H), output
        ⟨s⟩ and ⟨b⟩ per point, times ``mask``.
    ss_part : ndarray of shape (n_chunks, H, H), output
    b_part, dz_part, dz2_part : ndarray of shape (n_chunks, H), output
    """
    B, H = WY.shape
    Hp = I.shape[1]
    n_nodes, gamma = node_slots.shape
    Kc = n_nodes - Hp
    K = 1 + H + Kc
    inv_s2 = 1.0 / sigma2
    inv_sd = 1.0 / np.sqrt(sigma2)
    tempered = beta != 1.0 or prior_beta != 1.0
    # Every loop over the points of a block writes one array and reads a few, with all
    # indices computed before it: LLVM then vectorises it behind a few run-time overlap
    # checks (more arrays exceed its limit on those checks, and an index loaded inside the
    # loop might be overwritten by the loop's own stores, which keeps it scalar).
    for c in prange(n_chunks):
        NB = _BLOCK
        # scratch of this thread; the last axis runs over the points of a block
        WYT = np.empty((H, NB))  # Wᵀ y
        SWY = np.empty((Hp, NB))  # per slot: Wᵀ y, μ, Ψ^½, Ψ^½/σ, logit, Wᵀy - ||W||² μ
        SMU = np.empty((Hp, NB))
        SSP = np.empty((Hp, NB))
        SPS = np.empty((Hp, NB))
        SLG = np.empty((Hp, NB))
        WG = np.empty((Hp, NB))
        # per slot pair: Wᵀ W, Ã, (Wᵀ W)_ij μ_j, Ψ_i^½ (Wᵀ W)_ij μ_j/σ
        GG = np.empty((Hp * Hp, NB))
        AM = np.empty((Hp * Hp, NB))
        GM = np.empty((Hp * Hp, NB))
        PU = np.empty((Hp * Hp, NB))
        # per tree node: the new (last) row of X = L⁻¹, u, and running sums
        XR = np.empty((n_nodes * gamma, NB))
        UR = np.empty((n_nodes * gamma, NB))
        RR = np.empty((n_nodes, NB))  # ||y||² - ||y - W_A μ_A||²
        LD = np.empty((n_nodes, NB))  # log det Ã = Σ log of the pivots
        LPN = np.empty((n_nodes, NB))  # Σ logit over the active slots
        DZ = np.empty((Kc * gamma if accumulate else 0, NB))  # κ - μ_A per table pattern
        LL = np.empty((K, NB))  # log-likelihood and log-joint relative to the zero pattern
        LJ = np.empty((K, NB))
        Q = np.empty((K, NB))  # posterior weights
        LV = np.empty((gamma, NB))  # of one pattern: l = X_prefix ã, v = X u, κ, q κ
        VV = np.empty((gamma, NB))
        KAP = np.empty((gamma, NB))
        QX = np.empty((gamma, NB))
        DR = np.empty(NB)
        DC = np.empty(NB)
        DL = np.empty(NB)
        ACC = np.empty(NB)
        QD = np.empty(NB)
        mx = np.empty(NB)
        sm = np.empty(NB)
        bits = np.empty(NB, dtype=np.int64)
        ef = np.empty(NB)
        # moments of the block: per latent, per slot and per slot pair; per node (subtree)
        MT = np.empty((H, NB))
        MB = np.empty((H, NB))
        BS = np.empty((Hp, NB))
        DZS = np.empty((Hp, NB))
        DZ2S = np.empty((Hp, NB))
        SSS = np.empty((Hp * Hp, NB))
        SAS = np.empty((Hp * Hp, NB))
        QS = np.empty((n_nodes, NB))
        # partial sums of the chunk, per latent and point
        BH = np.zeros((H, NB))
        DZH = np.zeros((H, NB))
        DZ2H = np.zeros((H, NB))
        SSD = np.zeros((H, NB))
        ss_c = ss_part[c]
        lo = c * B // n_chunks
        hi = (c + 1) * B // n_chunks
        for n0 in range(lo, hi, NB):
            nb = min(NB, hi - n0)
            # -- per-point features, gathered once ------------------------------------------
            for j in range(nb):
                wyn = WY[n0 + j]
                for h in range(H):
                    WYT[h, j] = wyn[h]
                if Kc > 0:
                    Idx = I[n0 + j]
                    for i in range(Hp):
                        a = Idx[i]
                        SWY[i, j] = wyn[a]
                        SMU[i, j] = mu[a]
                        SSP[i, j] = sp[a]
                        SLG[i, j] = logit[a]
                    for i in range(Hp):
                        Gi = G[Idx[i]]
                        for e in range(Hp):
                            GG[i * Hp + e, j] = Gi[Idx[e]]
            if Kc > 0:
                for i in range(Hp):
                    for j in range(nb):
                        SPS[i, j] = SSP[i, j] * inv_sd
                for i in range(Hp):
                    for e in range(Hp):
                        ie = i * Hp + e
                        one = 1.0 if i == e else 0.0
                        for j in range(nb):
                            AM[ie, j] = SSP[i, j] * GG[ie, j] * SSP[e, j] * inv_s2 + one
                        for j in range(nb):
                            GM[ie, j] = GG[ie, j] * SMU[e, j]
                        for j in range(nb):
                            PU[ie, j] = SPS[i, j] * GM[ie, j]
                for i in range(Hp):
                    ii = i * Hp + i
                    for j in range(nb):
                        WG[i, j] = SWY[i, j] - GM[ii, j]
            # -- zero pattern and singletons (closed form) ------------------------------------
            for j in range(nb):
                LL[0, j] = 0.0
            for j in range(nb):
                LJ[0, j] = 0.0
            for h in range(H):
                la, ia, m_h, g_h, lg_h = log_a[h], inv_a[h], mu[h], gmu[h], logit[h]
                f = sp[h] * inv_sd
                for j in range(nb):
                    w = WYT[h, j]
                    wr = w - g_h
                    uh = f * wr
                    LL[1 + h, j] = -0.5 * (la + (-m_h * (w + wr) - uh * uh * ia) * inv_s2)
                for j in range(nb):
                    LJ[1 + h, j] = LL[1 + h, j] + lg_h
            # -- table patterns along the tree ----------------------------------------------
            if Kc > 0:
                # roots: the one-slot patterns (1×1 Ã >= 1), prefixes but not states
                for i in range(Hp):
                    ii = i * Hp + i
                    xo = i * gamma
                    for j in range(nb):
                        d = AM[ii, j]
                        DC[j] = d if d > 1.0 else 1.0
                    for j in range(nb):
                        XR[xo, j] = 1.0 / np.sqrt(DC[j])
                    log_rows(DC, DL, bits, ef, nb)
                    for j in range(nb):
                        LD[i, j] = DL[j]
                    for j in range(nb):
                        LPN[i, j] = SLG[i, j]
                    for j in range(nb):
                        RR[i, j] = SMU[i, j] * (SWY[i, j] + WG[i, j])
                    for j in range(nb):
                        UR[xo, j] = SPS[i, j] * WG[i, j]
            for t in range(Kc):
                node = Hp + t
                par = node_parent[node]
                k = node_k[node]
                r = k - 1  # the new row
                cs = node_slots[node, r]  # the new slot
                co = cs * Hp
                cc = co + cs
                xo = node * gamma
                xr = xo + r
                po = par * gamma
                # Ã's new column above the diagonal, ã, gives L's new row l = L_prefix⁻¹ ã
                # = X_prefix ã (row p of X is the new row of the ancestor node_anc[node, p])
                for i in range(r):
                    xi = node_anc[node, i] * gamma
                    a0 = co + node_slots[node, 0]
                    for j in range(nb):
                        LV[i, j] = XR[xi, j] * AM[a0, j]
                    for p in range(1, i + 1):
                        ap = co + node_slots[node, p]
                        xp = xi + p
                        for j in range(nb):
                            LV[i, j] += XR[xp, j] * AM[ap, j]
                # the pivot d = Ã_rr - ||l||², clamped to 1, the bound that holds exactly
                # (see _slab_group of the model)
                for j in range(nb):
                    DR[j] = AM[cc, j]
                for i in range(r):
                    for j in range(nb):
                        DR[j] -= LV[i, j] * LV[i, j]
                for j in range(nb):
                    d = DR[j]
                    DC[j] = d if d > 1.0 else 1.0
                for j in range(nb):
                    XR[xr, j] = 1.0 / np.sqrt(DC[j])
                log_rows(DC, DL, bits, ef, nb)
                for j in range(nb):
                    LD[node, j] = LD[par, j] + DL[j]
                for j in range(nb):
                    LPN[node, j] = LPN[par, j] + SLG[cs, j]
                # X's new row: X_ri = -Σ_{p=i}^{r-1} l_p X_pi / l_rr
                for i in range(r):
                    xi = node_anc[node, i] * gamma + i
                    for j in range(nb):
                        ACC[j] = LV[i, j] * XR[xi, j]
                    for p in range(i + 1, r):
                        xp = node_anc[node, p] * gamma + i
                        for j in range(nb):
                            ACC[j] += LV[p, j] * XR[xp, j]
                    xw = xo + i
                    for j in range(nb):
                        XR[xw, j] = -ACC[j] * XR[xr, j]
                # u = Ψ_A^½ W_Aᵀ (y - W_A μ_A)/σ and ||y||² - ||y - W_A μ_A||² from the
                # prefix's and the root's of the new slot, through the new slot's column
                # Σ_{i<r} (Wᵀ W)_ci μ_i of W_Aᵀ W_A μ_A
                for j in range(nb):
                    ACC[j] = 0.0
                for i in range(r):
                    ci = co + node_slots[node, i]
                    for j in range(nb):
                        ACC[j] += GM[ci, j]
                for i in range(r):
                    pc = node_slots[node, i] * Hp + cs
                    ui = xo + i
                    up = po + i
                    for j in range(nb):
                        UR[ui, j] = UR[up, j] - PU[pc, j]
                for j in range(nb):
                    UR[xr, j] = SPS[cs, j] * (WG[cs, j] - ACC[j])
                for j in range(nb):
                    RR[node, j] = RR[par, j] + RR[cs, j] - 2.0 * SMU[cs, j] * ACC[j]
                # v = X u; the log-likelihood relative to the zero pattern
                for j in range(nb):
                    ACC[j] = RR[node, j]
                for i in range(k):
                    xi = node_anc[node, i] * gamma
                    for j in range(nb):
                        VV[i, j] = XR[xi, j] * UR[xo, j]
                    for p in range(1, i + 1):
                        xp = xi + p
                        up = xo + p
                        for j in range(nb):
                            VV[i, j] += XR[xp, j] * UR[up, j]
                    for j in range(nb):
                        ACC[j] += VV[i, j] * VV[i, j]
                row = 1 + H + t
                for j in range(nb):
                    LL[row, j] = -0.5 * (LD[node, j] - ACC[j] * inv_s2)
                for j in range(nb):
                    LJ[row, j] = LL[row, j] + LPN[node, j]
                if accumulate:
                    # κ - μ_A = Ψ_A^½ Xᵀ v / σ
                    for i in range(k):
                        xi = xo + i
                        for j in range(nb):
                            ACC[j] = XR[xi, j] * VV[r, j]
                        for p in range(i, r):
                            xp = node_anc[node, p] * gamma + i
                            for j in range(nb):
                                ACC[j] += XR[xp, j] * VV[p, j]
                        si = node_slots[node, i]
                        dzo = t * gamma + i
                        for j in range(nb):
                            DZ[dzo, j] = SPS[si, j] * ACC[j]
            # -- log marginals at temperature 1 ---------------------------------------------
            softmax_columns(LJ, K, nb, Q, mx, sm, bits)
            for j in range(nb):
                log_marginal[n0 + j] = mx[j] + np.log(sm[j])
            if not accumulate:
                continue
            if tempered:
                # weights at the annealing temperature: beta ll + prior_beta lp
                for j in range(nb):
                    LJ[0, j] = 0.0
                for h in range(H):
                    lp = prior_beta * logit[h]
                    for j in range(nb):
                        LJ[1 + h, j] = beta * LL[1 + h, j] + lp
                for t in range(Kc):
                    row = 1 + H + t
                    node = Hp + t
                    for j in range(nb):
                        LJ[row, j] = beta * LL[row, j] + prior_beta * LPN[node, j]
                softmax_columns(LJ, K, nb, Q, mx, sm, bits)
            # posterior weights q (times the data selection mask)
            for j in range(nb):
                sm[j] = mask[n0 + j] / sm[j]
            for e in range(K):
                for j in range(nb):
                    Q[e, j] *= sm[j]
            # -- moments: singletons --------------------------------------------------------
            for h in range(H):
                m_h, g_h = mu[h], gmu[h]
                f = sp[h] * sp[h] * inv_a[h] * inv_s2
                lam1 = sp[h] * sp[h] * inv_a[h]
                qh = 1 + h
                for j in range(nb):
                    DR[j] = f * (WYT[h, j] - g_h)  # κ - μ_h
                for j in range(nb):
                    MT[h, j] = Q[qh, j] * (m_h + DR[j])
                for j in range(nb):
                    MB[h, j] = Q[qh, j]
                if second:
                    for j in range(nb):
                        BH[h, j] += Q[qh, j]
                    for j in range(nb):
                        DZH[h, j] += Q[qh, j] * DR[j]
                    for j in range(nb):
                        DZ2H[h, j] += Q[qh, j] * (DR[j] * DR[j] + lam1)
                    for j in range(nb):
                        kap = m_h + DR[j]
                        SSD[h, j] += Q[qh, j] * (kap * kap + lam1)
            if Kc > 0:
                # -- moments: table patterns, summed per slot, then scattered through I -------
                # Σ q κ = μ Σ q + Σ q (κ - μ) per slot: the first term is added at the end
                for i in range(Hp):
                    for j in range(nb):
                        BS[i, j] = 0.0
                    for j in range(nb):
                        DZS[i, j] = 0.0
                if second:
                    for i in range(Hp):
                        for j in range(nb):
                            DZ2S[i, j] = 0.0
                    for e in range(Hp * Hp):
                        for j in range(nb):
                            SSS[e, j] = 0.0
                        for j in range(nb):
                            SAS[e, j] = 0.0
                for t in range(Kc):
                    node = Hp + t
                    k = node_k[node]
                    row = 1 + H + t
                    for i in range(k):
                        a = node_slots[node, i]
                        dzo = t * gamma + i
                        for j in range(nb):
                            BS[a, j] += Q[row, j]
                        for j in range(nb):
                            QD[j] = Q[row, j] * DZ[dzo, j]
                        for j in range(nb):
                            DZS[a, j] += QD[j]
                        if second:
                            for j in range(nb):
                                DZ2S[a, j] += QD[j] * DZ[dzo, j]
                            for j in range(nb):
                                KAP[i, j] = SMU[a, j] + DZ[dzo, j]
                            for j in range(nb):
                                QX[i, j] = Q[row, j] * KAP[i, j]
                            for e in range(i + 1):
                                ab = a * Hp + node_slots[node, e]
                                for j in range(nb):
                                    SSS[ab, j] += QX[i, j] * KAP[e, j]
                if second:
                    # Σ_t q_t Ã_t⁻¹ with Ã⁻¹ = Xᵀ X = Σ_p x_p x_pᵀ over the rows of X: row p
                    # of a pattern is the new row of its ancestor of p + 1 slots, so each
                    # node adds its new row's outer product once, times the weights of all
                    # patterns below it (its subtree; children come after their parents)
                    for i in range(Hp):
                        for j in range(nb):
                            QS[i, j] = 0.0
                    for t in range(Kc):
                        row = 1 + H + t
                        node = Hp + t
                        for j in range(nb):
                            QS[node, j] = Q[row, j]
                    for t in range(Kc - 1, -1, -1):
                        node = Hp + t
                        par = node_parent[node]
                        for j in range(nb):
                            QS[par, j] += QS[node, j]
                    for node in range(n_nodes):
                        k = node_k[node]
                        xo = node * gamma
                        for i in range(k):
                            xi = xo + i
                            for j in range(nb):
                                QX[i, j] = QS[node, j] * XR[xi, j]
                        for i in range(k):
                            ai = node_slots[node, i] * Hp
                            for e in range(i + 1):
                                ab = ai + node_slots[node, e]
                                xe = xo + e
                                for j in range(nb):
                                    SAS[ab, j] += QX[i, j] * XR[xe, j]
            # -- scatter the slot sums through I, write ⟨s⟩ and ⟨b⟩ -----------------------------
            for j in range(nb):
                n = n0 + j
                if Kc > 0:
                    Idx = I[n]
                    for i in range(Hp):
                        a = Idx[i]
                        MT[a, j] += SMU[i, j] * BS[i, j] + DZS[i, j]
                        MB[a, j] += BS[i, j]
                    if second:
                        for i in range(Hp):
                            a = Idx[i]
                            s_i = SSP[i, j]
                            BH[a, j] += BS[i, j]
                            DZH[a, j] += DZS[i, j]
                            DZ2H[a, j] += DZ2S[i, j] + s_i * s_i * SAS[i * Hp + i, j]
                            for e in range(i):
                                x = SSS[i * Hp + e, j] + s_i * SAS[i * Hp + e, j] * SSP[e, j]
                                ss_c[a, Idx[e]] += x
                                ss_c[Idx[e], a] += x
                            ss_c[a, a] += SSS[i * Hp + i, j] + s_i * SAS[i * Hp + i, j] * s_i
                ms = mean_s[n]
                mbr = mean_b[n]
                for h in range(H):
                    ms[h] = MT[h, j]
                for h in range(H):
                    mbr[h] = MB[h, j]
        # the chunk's partial sums over its points
        if second:
            for h in range(H):
                b_part[c, h] = BH[h].sum()
                dz_part[c, h] = DZH[h].sum()
                dz2_part[c, h] = DZ2H[h].sum()
                ss_c[h, h] += SSD[h].sum()


# -- preparation (plain NumPy, once per table) --------------------------------------------------
def pattern_tree(table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prefix tree of the table's spike patterns, in an order where parents come first.

    Node ``j < H'`` is the one-slot pattern {j}; node ``H' + t`` is the t-th pattern of the
    returned order (table rows sorted by their number of spikes). Every table pattern's prefix
    (its slots but the last) must be a node too, as for Expectation Truncation tables, which
    hold all patterns of 2..γ spikes among the H' slots.

    Parameters
    ----------
    table : ndarray of shape (Kc, H')
        0/1 spike patterns over the H' slots, each with at least 2 spikes.

    Returns
    -------
    parent : ndarray of int64, shape (Kc,)
        Node of each pattern's prefix.
    slots : ndarray of int64, shape (Kc, γ)
        Active slots in ascending order (padded with 0 up to γ, the most spikes of a row).
    k : ndarray of int64, shape (Kc,)
        Number of spikes.

    Raises
    ------
    ValueError
        If a row has fewer than 2 spikes or a prefix is missing.
    """
    table = np.asarray(table) != 0
    return _pattern_tree(table.shape, table.tobytes())


def _read_only(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """The arrays, write-protected: cached results are shared by every later call."""
    for a in arrays:
        a.setflags(write=False)
    return arrays


@lru_cache(maxsize=16)
def _pattern_tree(shape: tuple[int, int], data: bytes):
    table = np.frombuffer(data, dtype=bool).reshape(shape)
    Kc, Hp = table.shape
    counts = table.sum(axis=1).astype(np.int64)
    if Kc and counts.min() < 2:
        raise ValueError("GSC table rows need at least 2 spikes (singletons are separate).")
    order = np.argsort(counts, kind="stable")
    rows, k = table[order], counts[order]
    gamma = int(k.max()) if Kc else 1
    slots = np.zeros((Kc, gamma), dtype=np.int64)
    node_of: dict[tuple[int, ...], int] = {(j,): j for j in range(Hp)}
    parent = np.empty(Kc, dtype=np.int64)
    for t in range(Kc):
        active = tuple(int(j) for j in np.flatnonzero(rows[t]))
        slots[t, : len(active)] = active
        prefix = node_of.get(active[:-1])
        if prefix is None:
            raise ValueError(f"the prefix {active[:-1]} of table pattern {active} is missing")
        parent[t] = prefix
        node_of[active] = Hp + t
    return _read_only(parent, slots, k)


def _tree_nodes(table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All nodes of the pattern tree, as the kernel walks it: the H' roots, then the table.

    Parameters
    ----------
    table : ndarray of shape (Kc, H')
        As :func:`pattern_tree`.

    Returns
    -------
    parent : ndarray of int64, shape (H' + Kc,)
        Node of each node's prefix (-1 for the roots).
    slots : ndarray of int64, shape (H' + Kc, γ)
        Active slots in ascending order, padded with 0 (root j: the slot j).
    k : ndarray of int64, shape (H' + Kc,)
        Number of active slots (1 for the roots).
    anc : ndarray of int64, shape (H' + Kc, γ)
        ``anc[n, p]``: the ancestor of node n with p + 1 slots (n itself for p = k - 1),
        whose new row is row p of n's X = L⁻¹.
    """
    table = np.asarray(table) != 0
    return _tree_nodes_cached(table.shape, table.tobytes())


@lru_cache(maxsize=16)
def _tree_nodes_cached(shape: tuple[int, int], data: bytes):
    table = np.frombuffer(data, dtype=bool).reshape(shape)
    parent_t, slots_t, k_t = pattern_tree(table)
    Kc, gamma = slots_t.shape
    Hp = np.shape(table)[1]
    gamma = max(gamma, 1)
    parent = np.concatenate([np.full(Hp, -1, dtype=np.int64), parent_t])
    slots = np.zeros((Hp + Kc, gamma), dtype=np.int64)
    slots[:Hp, 0] = np.arange(Hp)
    slots[Hp:, : slots_t.shape[1]] = slots_t
    k = np.concatenate([np.ones(Hp, dtype=np.int64), k_t])
    anc = np.zeros((Hp + Kc, gamma), dtype=np.int64)
    anc[:Hp, 0] = np.arange(Hp)
    for node in range(Hp, Hp + Kc):  # parents come first
        r = k[node] - 1
        anc[node, :r] = anc[parent[node], :r]
        anc[node, r] = node
    return _read_only(parent, slots, k, anc)


def gsc_estep(
    Y: np.ndarray,
    params: dict[str, np.ndarray],
    batch: CandidateBatch,
    beta: float = 1.0,
    prior_beta: float = 1.0,
    mask: np.ndarray | None = None,
    accumulate: bool = True,
    moments_only: bool = False,
) -> tuple[np.ndarray, dict[str, np.ndarray] | None] | tuple[np.ndarray, np.ndarray]:
    """Truncated E-step of GSC on one batch (the numba version of ``GSCModel.estep_batch``).

    Parameters
    ----------
    Y : ndarray of shape (B, D)
        float64 or float32.
    params : dict of str to ndarray
        ``W`` (D, H), ``pi``, ``mu``, ``psi`` (H,) and ``sigma``.
    batch : CandidateBatch
        Candidate patterns: ``I`` (B, H') and the 0/1 ``table`` (Kc, H').
    beta, prior_beta : float, default=1.0
        Inverse temperatures of the likelihood and the prior in the posterior weights.
    mask : ndarray of shape (B,) or None
        Weight of each point in the statistics (ET data selection); None = all 1.
    accumulate : bool, default=True
        False returns the log marginals only (``stats`` is None).
    moments_only : bool, default=False
        Return ``(mean_s, mean_b)`` instead, as ``GSCModel.posterior_moments`` (with
        ``beta = prior_beta = 1`` and no mask): ⟨s⟩ and ⟨b⟩ (B, H), ⟨b⟩ capped at 1.

    Returns
    -------
    log_marginal : ndarray of shape (B,)
        log Σ_b p(y, b) over the candidate patterns at temperature 1.
    stats : dict or None
        float64 ``sy`` (D, H) Σ y⟨s⟩ᵀ, ``ss`` (H, H) Σ⟨ssᵀ⟩, ``b`` (H,) Σ⟨b⟩, ``dz`` and ``dz2``
        (H,) Σ⟨b_h (z_h - μ_h)⟩ and Σ⟨b_h (z_h - μ_h)²⟩, ``bb`` (H, H) Σ mask ⟨b_g⟩⟨b_h⟩
        (as ``prosper.models.gsc.spike_pairs``), ``yy`` Σ||y||², ``n`` Σ mask.
    """
    Y = np.asarray(Y)
    B, D = Y.shape
    W = params["W"]
    H = W.shape[1]
    sigma2 = float(params["sigma"]) ** 2
    mu = np.ascontiguousarray(params["mu"], dtype=np.float64)
    psi = np.maximum(np.asarray(params["psi"], dtype=np.float64), 0.0)
    pi = np.clip(params["pi"], PI_MIN, PI_MAX)
    logit = np.log(pi) - np.log1p(-pi)
    lp0 = float(np.log1p(-pi).sum())
    # GEMMs at the precision of Y; the rest in float64
    WY = np.ascontiguousarray(Y @ W.astype(Y.dtype, copy=False), dtype=np.float64)
    yy = np.einsum("nd,nd->n", Y, Y, dtype=np.float64)
    G = np.ascontiguousarray(W.T @ W, dtype=np.float64)
    g = np.diag(G).copy()
    a = 1.0 + psi * g / sigma2
    parent, slots, k, anc = _tree_nodes(batch.table)
    # always a write-protected view: numba compiles a read-only and a writable argument
    # separately, and this kernel takes ~100 s to compile (state sets hand over either)
    I = np.ascontiguousarray(batch.I, dtype=np.int64).view()
    I.setflags(write=False)
    accumulate = bool(accumulate or moments_only)
    second = accumulate and not moments_only
    weights = np.ones(B) if mask is None else np.ascontiguousarray(mask, dtype=np.float64)
    n_chunks = max(1, min(B, numba.get_num_threads()))
    log_marginal = np.empty(B)
    shape = (B, H) if accumulate else (0, H)
    mean_s, mean_b = np.zeros(shape), np.zeros(shape)
    ss_part = np.zeros((n_chunks, H, H) if second else (n_chunks, 0, 0))
    parts = [np.zeros((n_chunks, H) if second else (n_chunks, 0)) for _ in range(3)]
    if B:
        run_kernel(
            _gsc_kernel,
            WY,
            G,
            I,
            parent,
            slots,
            k,
            anc,
            mu,
            np.sqrt(psi),
            logit,
            g * mu,
            np.log(a),
            1.0 / a,
            sigma2,
            float(beta),
            float(prior_beta),
            weights,
            accumulate,
            second,
            n_chunks,
            log_marginal,
            mean_s,
            mean_b,
            ss_part,
            *parts,
        )
    # add back the zero pattern's log-joint, common to all patterns
    log_marginal += lp0 - 0.5 * (D * (LOG_2PI + np.log(sigma2)) + yy / sigma2)
    if moments_only:
        # a sum of pattern weights: keep it a probability despite round-off
        return mean_s, np.minimum(mean_b, 1.0)
    if not accumulate:
        return log_marginal, None
    b, dz, dz2 = (p.sum(axis=0) for p in parts)
    # spikes on together, from the per-point marginals (mean_b holds mask ⟨b⟩)
    w = weights[:, None]
    unit = np.divide(mean_b, w, out=np.zeros_like(mean_b), where=w > 0)
    return log_marginal, {
        "sy": Y.T.astype(np.float64) @ mean_s,
        "ss": ss_part.sum(axis=0),
        "b": b,
        "dz": dz,
        "dz2": dz2,
        "bb": mean_b.T @ unit,
        "yy": np.array(float(weights @ yy)),
        "n": np.array(float(weights.sum())),
    }
