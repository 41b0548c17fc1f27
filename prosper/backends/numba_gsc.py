"""numba kernel for the truncated E-step of GSC (spike-and-slab sparse coding).

Same results as the NumPy E-step of :class:`prosper.models.gsc.GSCModel` (``estep_batch``
and ``posterior_moments``, to round-off in float64), with the same formulas: for a spike
pattern with active set A the slab is integrated out through the Cholesky factor of
Ã = I + Ψ_A^½ W_Aᵀ W_A Ψ_A^½ / σ² (see the module docstring of ``prosper.models.gsc``).

One batch runs as

1. ``Y W`` and ``Wᵀ W`` (BLAS), per-latent constants of the singletons and, once per
   candidate table, the tree of its patterns (below);
2. one parallel kernel over contiguous chunks of data points: per point, the log-likelihood
   of every candidate pattern (zero, the H singletons in closed form, the table patterns by
   Cholesky), the log-sum-exp at temperature 1 (the free-energy term) and at the annealing
   temperature, the posterior weights and the moments; each chunk writes its own partial
   sums of ``ss``, ``b``, ``dz`` and ``dz2``, each point its own row of ⟨s⟩ and ⟨b⟩;
3. Σ y⟨s⟩ᵀ as one GEMM.

Pattern tree. The slots of a pattern are ascending, so the matrix Ã of a pattern is the
matrix of its prefix (the pattern without its last slot) bordered by one row and column.
Its Cholesky factor L, the inverse X = L⁻¹ and Ã⁻¹ = Xᵀ X are then the prefix's, bordered:
each table pattern only computes the new row of L and X and a rank-one update of Ã⁻¹, O(k²)
instead of O(k³), and the sums run in the same order as in the NumPy code (which sums over
ascending indices), so the factors agree to the last bit or nearly. The prefixes of the
k = 2 patterns are the H' one-slot patterns, which are not states themselves (the
singletons over all H latents are) but roots of the tree.

Log-likelihoods are held relative to the zero pattern, -½(D log 2πσ² + ||y||²/σ²), which
is common to all patterns: the large ||y||²/σ² then cancels exactly instead of in round-off,
so the weights are at least as accurate as the NumPy path's.

float32: ``Y W`` and ``Y·⟨s⟩`` run at the precision of ``Y``; everything else is float64.
Compilation: about 10-20 s on first use, cached on disk (``cache=True``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numba
import numpy as np
from numba import njit, prange

from prosper.backends.numba_math import exp_shifted

if TYPE_CHECKING:  # annotations only: kernels never import solvers
    from prosper.solvers.states import CandidateBatch

__all__ = ["gsc_estep", "pattern_tree"]

PI_MIN, PI_MAX = 1e-5, 1.0 - 1e-5  # as prosper.models.gsc (not imported: no model imports)
LOG_2PI = float(np.log(2.0 * np.pi))

#: fastmath flags of the main kernel: reassociation and contraction let LLVM vectorise the
#: loops; no nnan/ninf, so a non-finite value is still handled as IEEE says
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


@njit(cache=True, fastmath=False, inline="always")
def _max(x, n):  # pragma: no cover - compiled
    m = x[0]
    for k in range(1, n):
        m = x[k] if x[k] > m else m
    return m


@njit(cache=True, parallel=True, fastmath=_FASTMATH)
def _gsc_kernel(
    WY,
    yy,
    G,
    I,
    node_parent,
    node_slots,
    node_k,
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
    yy : ndarray of shape (B,)
        ||y||².
    G : ndarray of shape (H, H)
        Wᵀ W.
    I : ndarray of int64, shape (B, H')
        Preselected latents of each point.
    node_parent, node_slots, node_k
        The pattern tree of the table (:func:`pattern_tree`), over nodes H'.. of the tree.
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
    Kc = node_k.shape[0]
    gamma = node_slots.shape[1]
    T = gamma * (gamma + 1) // 2  # entries of a lower triangle
    n_nodes = Hp + Kc
    K = 1 + H + Kc
    inv_s2 = 1.0 / sigma2
    inv_sd = 1.0 / np.sqrt(sigma2)
    tempered = beta != 1.0 or prior_beta != 1.0
    for c in prange(n_chunks):
        # per-chunk scratch, reused for every point of the chunk
        Mi = np.empty((Hp, Hp))
        GMi = np.empty((Hp, Hp))
        wy = np.empty(Hp)
        m = np.empty(Hp)
        s = np.empty(Hp)
        lg = np.empty(Hp)
        Lt = np.empty((n_nodes, T))  # lower triangles of L, X = L⁻¹ and Ã⁻¹ of every node
        Xt = np.empty((n_nodes, T))
        At = np.empty((n_nodes, T))
        gm = np.empty((n_nodes, gamma))  # Σ_{j in A} (Wᵀ W)_ij μ_j per active slot i
        lsum = np.empty(n_nodes)  # Σ log L_jj
        lpn = np.empty(n_nodes)  # Σ logit over the active slots
        dzs = np.empty((Kc, gamma))  # κ - μ_A of each table pattern
        v = np.empty(gamma)
        llr = np.empty(K)  # log-likelihood and log-prior relative to the zero pattern
        lpr = np.empty(K)
        lj = np.empty(K)
        w = np.empty(K)
        bits = np.empty(K, dtype=np.int64)
        s_slot = np.empty(Hp)
        b_slot = np.empty(Hp)
        dz_slot = np.empty(Hp)
        dz2_slot = np.empty(Hp)
        ss_slot = np.empty((Hp, Hp))
        ss_c = ss_part[c]
        b_c = b_part[c]
        dz_c = dz_part[c]
        dz2_c = dz2_part[c]
        for n in range(c * B // n_chunks, (c + 1) * B // n_chunks):
            wyn = WY[n]
            # -- zero pattern and singletons (closed form, as _singletons) --------------------
            llr[0] = 0.0
            lpr[0] = 0.0
            for h in range(H):
                wr = wyn[h] - gmu[h]
                uh = sp[h] * wr * inv_sd
                llr[1 + h] = -0.5 * (
                    log_a[h] + (-mu[h] * (wyn[h] + wr) - uh * uh * inv_a[h]) * inv_s2
                )
                lpr[1 + h] = logit[h]
            # -- table patterns -----------------------------------------------------------------
            if Kc > 0:
                Idx = I[n]
                for i in range(Hp):
                    a = Idx[i]
                    wy[i] = wyn[a]
                    m[i] = mu[a]
                    s[i] = sp[a]
                    lg[i] = logit[a]
                for i in range(Hp):
                    Gi = G[Idx[i]]
                    for j in range(Hp):
                        g = Gi[Idx[j]]
                        Mi[i, j] = s[i] * g * s[j] / sigma2
                        GMi[i, j] = g * m[j]
                    Mi[i, i] += 1.0
                # roots: the one-slot patterns (1×1 Ã >= 1)
                for i in range(Hp):
                    d = Mi[i, i] if Mi[i, i] > 1.0 else 1.0
                    Lt[i, 0] = np.sqrt(d)
                    Xt[i, 0] = 1.0 / Lt[i, 0]
                    At[i, 0] = Xt[i, 0] * Xt[i, 0]
                    gm[i, 0] = GMi[i, i]
                    lsum[i] = np.log(Lt[i, 0])
                    lpn[i] = lg[i]
                for t in range(Kc):
                    # 2-D indexing only: a row view per pattern would cost reference counting
                    node = Hp + t
                    par = node_parent[t]
                    k = node_k[t]
                    r = k - 1  # the new row
                    cs = node_slots[t, r]  # the new slot
                    o = (r * (r + 1)) >> 1  # start of row r in a lower triangle
                    for e in range(o):
                        Lt[node, e] = Lt[par, e]
                    # new row of L: Ã_rj = Σ_p L_rp L_jp (Cholesky, column by column); pivots
                    # clamped to 1, the bound that holds exactly (see _slab_group)
                    for j in range(r):
                        oj = (j * (j + 1)) >> 1
                        acc = 0.0
                        for p in range(j):
                            acc += Lt[node, o + p] * Lt[node, oj + p]
                        Lt[node, o + j] = (Mi[cs, node_slots[t, j]] - acc) / Lt[node, oj + j]
                    acc = 0.0
                    for p in range(r):
                        acc += Lt[node, o + p] * Lt[node, o + p]
                    d = Mi[cs, cs] - acc
                    l_rr = np.sqrt(d if d > 1.0 else 1.0)
                    Lt[node, o + r] = l_rr
                    lsum[node] = lsum[par] + np.log(l_rr)
                    lpn[node] = lpn[par] + lg[cs]
                    # W_Aᵀ W_A μ_A, summed over ascending j as in NumPy: the prefix's sums
                    # plus the new column
                    acc = 0.0
                    for i in range(r):
                        a = node_slots[t, i]
                        gm[node, i] = gm[par, i] + GMi[a, cs]
                        acc += GMi[cs, a]
                    gm[node, r] = acc + GMi[cs, cs]
                    # u = Ψ_A^½ W_Aᵀ (y - W_A μ_A)/σ, ||y - W_A μ_A||² - ||y||², v = L⁻¹ u
                    rr = 0.0
                    vv = 0.0
                    for i in range(k):
                        a = node_slots[t, i]
                        wr = wy[a] - gm[node, i]
                        rr += m[a] * (wy[a] + wr)
                        oi = (i * (i + 1)) >> 1
                        acc = 0.0
                        for p in range(i):
                            acc += Lt[node, oi + p] * v[p]
                        v[i] = (s[a] * wr * inv_sd - acc) / Lt[node, oi + i]
                        vv += v[i] * v[i]
                    llr[1 + H + t] = -0.5 * (2.0 * lsum[node] + (-rr - vv) * inv_s2)
                    lpr[1 + H + t] = lpn[node]
                    if not accumulate:
                        continue
                    # new row of X = L⁻¹ and rank-one update Ã⁻¹ = Xᵀ X
                    for e in range(o):
                        Xt[node, e] = Xt[par, e]
                    inv_l = 1.0 / l_rr
                    for j in range(r):
                        acc = 0.0
                        for p in range(j, r):
                            acc += Lt[node, o + p] * Xt[node, ((p * (p + 1)) >> 1) + j]
                        Xt[node, o + j] = -acc * inv_l
                    Xt[node, o + r] = inv_l
                    for i in range(r):
                        oi = (i * (i + 1)) >> 1
                        xi = Xt[node, o + i]
                        for j in range(i + 1):
                            At[node, oi + j] = At[par, oi + j] + xi * Xt[node, o + j]
                    for j in range(k):
                        At[node, o + j] = inv_l * Xt[node, o + j]
                    # κ - μ_A = Ψ_A^½ Xᵀ v / σ
                    for i in range(k):
                        acc = 0.0
                        for p in range(i, k):
                            acc += Xt[node, ((p * (p + 1)) >> 1) + i] * v[p]
                        dzs[t, i] = s[node_slots[t, i]] * acc * inv_sd
            # -- log marginal at temperature 1 ----------------------------------------------------
            for e in range(K):
                lj[e] = llr[e] + lpr[e]
            m1 = _max(lj, K)
            exp_shifted(lj, m1, w, bits, K)
            sw = 0.0
            for e in range(K):
                sw += w[e]
            log_marginal[n] = m1 + np.log(sw)
            if not accumulate:
                continue
            if tempered:
                for e in range(K):
                    lj[e] = beta * llr[e] + prior_beta * lpr[e]
                mb = _max(lj, K)
                exp_shifted(lj, mb, w, bits, K)
                sw = 0.0
                for e in range(K):
                    sw += w[e]
            scale = mask[n] / sw
            # -- moments: singletons ------------------------------------------------------------
            ms = mean_s[n]
            mb_row = mean_b[n]
            for h in range(H):
                q1 = w[1 + h] * scale
                wr = wyn[h] - gmu[h]
                dz1 = sp[h] * (sp[h] * wr * inv_sd) * inv_a[h] * inv_sd
                kap = mu[h] + dz1
                ms[h] = q1 * kap
                mb_row[h] = q1
                if second:
                    lam1 = sp[h] * sp[h] * inv_a[h]
                    b_c[h] += q1
                    dz_c[h] += q1 * dz1
                    dz2_c[h] += q1 * (dz1 * dz1 + lam1)
                    ss_c[h, h] += q1 * (kap * kap + lam1)
            if Kc == 0:
                continue
            # -- moments: table patterns, summed per slot, then scattered through I ---------------
            for i in range(Hp):
                s_slot[i] = 0.0
                b_slot[i] = 0.0
            if second:
                for i in range(Hp):
                    dz_slot[i] = 0.0
                    dz2_slot[i] = 0.0
                    for j in range(Hp):
                        ss_slot[i, j] = 0.0
            for t in range(Kc):
                q = w[1 + H + t] * scale
                if q == 0.0:
                    continue
                k = node_k[t]
                node = Hp + t
                for i in range(k):
                    a = node_slots[t, i]
                    dzi = dzs[t, i]
                    kap = m[a] + dzi
                    b_slot[a] += q
                    s_slot[a] += q * kap
                    if second:
                        oi = (i * (i + 1)) >> 1
                        si = s[a]
                        dz_slot[a] += q * dzi
                        dz2_slot[a] += q * (dzi * dzi + si * At[node, oi + i] * si)
                        for j in range(i + 1):
                            b = node_slots[t, j]
                            ss_slot[a, b] += q * (
                                kap * (m[b] + dzs[t, j]) + si * At[node, oi + j] * s[b]
                            )
            Idx = I[n]
            for i in range(Hp):
                a = Idx[i]
                ms[a] += s_slot[i]
                mb_row[a] += b_slot[i]
            if second:
                for i in range(Hp):
                    a = Idx[i]
                    b_c[a] += b_slot[i]
                    dz_c[a] += dz_slot[i]
                    dz2_c[a] += dz2_slot[i]
                    for j in range(i):
                        x = ss_slot[i, j]
                        ss_c[a, Idx[j]] += x
                        ss_c[Idx[j], a] += x
                    ss_c[a, a] += ss_slot[i, i]


# -- preparation (plain NumPy, once per table) --------------------------------------------------
_TREE_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


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
    key = (table.shape, table.tobytes())
    if key in _TREE_CACHE:
        return _TREE_CACHE[key]
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
    _TREE_CACHE[key] = (parent, slots, k)
    return parent, slots, k


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
        (H,) Σ⟨b_h (z_h - μ_h)⟩ and Σ⟨b_h (z_h - μ_h)²⟩, ``yy`` Σ||y||², ``n`` Σ mask.
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
    parent, slots, k = pattern_tree(batch.table)
    I = np.ascontiguousarray(batch.I, dtype=np.int64)
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
        _gsc_kernel(
            WY,
            yy,
            G,
            I,
            parent,
            slots,
            k,
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
    return log_marginal, {
        "sy": Y.T.astype(np.float64) @ mean_s,
        "ss": ss_part.sum(axis=0),
        "b": b,
        "dz": dz,
        "dz2": dz2,
        "yy": np.array(float(weights @ yy)),
        "n": np.array(float(weights.sum())),
    }
