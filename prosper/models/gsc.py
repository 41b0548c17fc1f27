"""Gaussian Sparse Coding: spike-and-slab latents, linear superposition, Gaussian noise.

y = W s + ε with s = b ⊙ z, spikes b_h ~ Bernoulli(π_h), slabs z_h ~ N(μ_h, Ψ_h) and
ε ~ N(0, σ² I_D) (Sheikh, Shelton & Lücke 2014, JMLR 15, section 2). Truncated EM runs over the
spikes only; for a spike pattern b with active set A the slab is integrated out exactly
(the paper's section 3, truncated E-step):

    p(y | b)        = N(y; W_A μ_A, C_b),  C_b = σ² I + W_A Ψ_A W_Aᵀ
    p(z_A | b, y)   = N(κ_b, Λ_b),  Λ_b = (Ψ_A⁻¹ + W_Aᵀ W_A / σ²)⁻¹,
                      κ_b = Λ_b (W_Aᵀ y / σ² + Ψ_A⁻¹ μ_A)

Everything is computed in the scaled form Ã_b = I + Ψ_A^½ W_Aᵀ W_A Ψ_A^½ / σ² (all eigenvalues
>= 1, so its Cholesky factor never breaks down and Ψ_h = 0 is allowed):

    log|C_b|   = D log σ² + log|Ã_b|                (= log|σ²I| + log|Ψ_A| + log|Λ_b⁻¹|)
    rᵀ C_b⁻¹ r = (||r||² - ||L⁻¹ u||²) / σ²          (Woodbury), r = y - W_A μ_A,
                                                     u = Ψ_A^½ W_Aᵀ r / σ, Ã_b = L Lᵀ
    κ_b - μ_A  = Ψ_A^½ Ã_b⁻¹ u / σ,   Λ_b = Ψ_A^½ Ã_b⁻¹ Ψ_A^½

The candidate states of a batch are grouped by their number of active latents k = |A|:
the zero pattern, the H singletons (closed form, 1×1) and the table rows with k = 2..γ
spikes among the H' preselected latents. Each group is one batched problem of K_k patterns
× B data points of k×k matrices, held as (k, k, K_k, B) arrays so that every step of the
Cholesky factorisation and of the triangular solves is one vector operation over all points
and patterns; Python loops run only over the k <= γ matrix indices. Moments are summed per
point over its H' slots by GEMMs with fixed one-hot maps, then scattered to the H latents.
The work per point is O(D H) for Wᵀy plus O(Σ_k K_k k³), independent of D otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.special import logsumexp

if TYPE_CHECKING:  # annotations only: models never import solvers
    from prosper.solvers.states import CandidateBatch

from prosper.models.base import (
    Params,
    TruncatedModel,
    backend_kernel,
    column_cosines,
    reassigned_column,
)

__all__ = ["GSCModel", "spike_count_masses", "spike_pairs"]

PI_MIN, PI_MAX = 1e-5, 1.0 - 1e-5
LOG_2PI = float(np.log(2.0 * np.pi))


def spike_count_masses(pi: np.ndarray, gamma: int) -> tuple[float, np.ndarray]:
    """Truncation masses of independent spikes b_h ~ Bernoulli(π_h) (Poisson binomial).

    Parameters
    ----------
    pi : ndarray of shape (H,)
    gamma : int

    Returns
    -------
    A : float
        P(|b| <= gamma).
    A_minus : ndarray of shape (H,)
        P(|b_{-h}| <= gamma - 1), the mass of the other H-1 spikes; π_h A_minus[h] =
        E[b_h 1{|b| <= gamma}].
    """
    pi = np.asarray(pi, dtype=np.float64)
    H = pi.size
    if gamma >= H:  # no truncation: exactly 1 (see prosper.models.base.binomial_truncation)
        return 1.0, np.ones(H)

    def pmf(p: np.ndarray) -> np.ndarray:
        # distribution of the number of active spikes, cut at gamma, for each row of p
        out = np.zeros((*p.shape[:-1], gamma + 1))
        out[..., 0] = 1.0
        for j in range(p.shape[-1]):
            pj = p[..., j : j + 1]
            out[..., 1:] = out[..., 1:] * (1.0 - pj) + out[..., :-1] * pj
            out[..., :1] *= 1.0 - pj
        return out

    A = float(pmf(pi[None])[0].sum())
    if gamma == 0:
        return A, np.zeros(H)
    # leave-one-out: setting π_h = 0 removes latent h from the count
    others = np.where(np.eye(H, dtype=bool), 0.0, pi[None, :])
    return A, pmf(others)[:, :gamma].sum(axis=1)


def spike_pairs(mean_b: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Σ_n w_n ⟨b_g⟩_n ⟨b_h⟩_n (H, H): how often two spikes are on together, from the
    per-point spike marginals.

    The product of the marginals stands for ⟨b_g b_h⟩_n (equal where a point's posterior
    settles on one pattern, as it does at T = 1 away from ties); it needs only ⟨b⟩ per point,
    which every E-step path has, where the exact pair sums would need them in each kernel.

    Parameters
    ----------
    mean_b : ndarray of shape (B, H)
        w_n ⟨b⟩_n, the marginals already multiplied by the point weights.
    weight : ndarray of shape (B,)
        w_n (1, or 0/1 under data selection).
    """
    w = np.asarray(weight, dtype=np.float64)[:, None]
    unit = np.divide(mean_b, w, out=np.zeros_like(mean_b), where=w > 0)
    return mean_b.T @ unit


def _singletons(
    WY: np.ndarray, yy: np.ndarray, g: np.ndarray, params: Params, D: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log p(y | b) and slab posterior of the H singleton patterns, in closed form.

    Parameters
    ----------
    WY : ndarray of shape (B, H)
        Wᵀ y.
    yy : ndarray of shape (B,)
        ||y||².
    g : ndarray of shape (H,)
        ||W_h||².
    params : dict
    D : int

    Returns
    -------
    ll, dz, lam : ndarray of shape (B, H)
        log N(y; μ_h W_h, σ² I + Ψ_h W_h W_hᵀ), κ - μ_h and Λ (the 1×1 case of the
        module docstring: Ã = 1 + Ψ_h ||W_h||² / σ²).
    """
    sigma2 = float(params["sigma"]) ** 2
    psi, mu = np.maximum(params["psi"], 0.0), params["mu"]
    a = 1.0 + psi * g / sigma2
    wr = WY - g * mu  # W_hᵀ (y - μ_h W_h)
    rr = yy[:, None] - mu * (WY + wr)  # ||y - μ_h W_h||²
    u = np.sqrt(psi) * wr / np.sqrt(sigma2)
    ll = -0.5 * (D * (LOG_2PI + np.log(sigma2)) + np.log(a) + (rr - u**2 / a) / sigma2)
    dz = np.sqrt(psi) * u / (a * np.sqrt(sigma2))
    return ll, dz, np.broadcast_to(psi / a, ll.shape)


def _slab_group(
    M: np.ndarray,
    GM: np.ndarray,
    wy: np.ndarray,
    mu: np.ndarray,
    sp: np.ndarray,
    yy: np.ndarray,
    slots: np.ndarray,
    sigma2: float,
    D: int,
    moments: bool,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """log p(y | b) and slab posterior of every pattern with k active spikes (k >= 2).

    Slot-major layout: the per-point inputs are (slots, B) arrays, so gathering a pattern
    entry for all points is a copy of contiguous rows, and all matrices are held as
    (k, k, K, B) arrays: every step of the Cholesky factorisation and of the triangular
    solves is one vector operation over all patterns and points of the group. Python loops
    run over the k <= γ matrix indices only.

    Parameters
    ----------
    M : ndarray of shape (H'*H', B)
        I + Ψ_I^½ W_Iᵀ W_I Ψ_I^½ / σ² over each point's preselected latents I, flattened.
    GM : ndarray of shape (H'*H', B)
        (W_Iᵀ W_I)_ij μ_j, flattened.
    wy, mu, sp : ndarray of shape (H', B)
        W_Iᵀ y, μ_I and Ψ_I^½.
    yy : ndarray of shape (B,)
    slots : ndarray of int, shape (K, k)
        Active slots (positions in I) of each pattern.
    sigma2 : float
    D : int
    moments : bool
        Also compute the slab posterior (not needed for the log marginals alone).

    Returns
    -------
    ll : ndarray of shape (K, B)
        log N(y; W_A μ_A, σ² I + W_A Ψ_A W_Aᵀ) with the ½ on both the log-determinant
        and the quadratic form (Sheikh et al. 2014, section 3).
    dz : ndarray of shape (k, K, B) or None
        κ_b - μ_A, the slab posterior mean minus the prior mean.
    lam : ndarray of shape (k, k, K, B) or None
        Λ_b, the slab posterior covariance.
    """
    Hp = wy.shape[0]
    k = slots.shape[1]
    K, B = slots.shape[0], M.shape[1]
    pair = slots[:, :, None] * Hp + slots[:, None, :]  # (K, k, k) flat slot pairs
    m = np.stack([mu[slots[:, i]] for i in range(k)])  # (k, K, B)
    s = np.stack([sp[slots[:, i]] for i in range(k)])
    wyA = np.stack([wy[slots[:, i]] for i in range(k)])
    wr = wyA - np.stack(
        [sum(GM[pair[:, i, j]] for j in range(k)) for i in range(k)]
    )  # W_Aᵀ (y - W_A μ_A)
    rr = yy - np.einsum("ikb,ikb->kb", m, wyA + wr)  # ||y - W_A μ_A||²
    u = s * wr / np.sqrt(sigma2)
    # Cholesky Ã = L Lᵀ. Ã >= I, so every pivot is >= 1 in exact arithmetic; with σ at its
    # floor and near-parallel columns the entries reach ~1e16 and the subtraction cancels to
    # <= 0 in floating point, hence the clamp to the bound that holds exactly
    L = np.zeros((k, k, K, B))
    for j in range(k):
        L[j, j] = np.sqrt(np.maximum(M[pair[:, j, j]] - sum(L[j, p] ** 2 for p in range(j)), 1.0))
        for i in range(j + 1, k):
            L[i, j] = (M[pair[:, i, j]] - sum(L[i, p] * L[j, p] for p in range(j))) / L[j, j]
    # v = L⁻¹ u by forward substitution; log|Ã| = 2 Σ log L_jj
    v = np.empty((k, K, B))
    for i in range(k):
        v[i] = (u[i] - sum(L[i, p] * v[p] for p in range(i))) / L[i, i]
    logdet = 2.0 * sum(np.log(L[j, j]) for j in range(k))
    quad = (rr - np.einsum("ikb,ikb->kb", v, v)) / sigma2
    ll = -0.5 * (D * (LOG_2PI + np.log(sigma2)) + logdet + quad)
    if not moments:
        return ll, None, None
    # X = L⁻¹ (lower triangular), Ã⁻¹ = Xᵀ X, Ã⁻¹ u = Xᵀ v
    X = np.zeros((k, k, K, B))
    for i in range(k):
        for j in range(i + 1):
            rhs = (1.0 if i == j else 0.0) - sum(L[i, p] * X[p, j] for p in range(j, i))
            X[i, j] = rhs / L[i, i]
    dz = np.empty((k, K, B))
    lam = np.empty((k, k, K, B))
    for i in range(k):
        dz[i] = s[i] * sum(X[p, i] * v[p] for p in range(i, k)) / np.sqrt(sigma2)
        for j in range(i + 1):
            inv_ij = sum(X[p, i] * X[p, j] for p in range(i, k))
            lam[i, j] = s[i] * inv_ij * s[j]
            lam[j, i] = lam[i, j]
    return ll, dz, lam


def _pair_map(a: np.ndarray, b: np.ndarray, mirror: bool) -> np.ndarray:
    """One-hot map (K, H'²) of the slot pair (a, b) of each pattern, plus (b, a) if mirror."""
    K = a.shape[0]
    out = (a[:, :, None] * b[:, None, :]).reshape(K, -1)
    if mirror:
        out += (b[:, :, None] * a[:, None, :]).reshape(K, -1)
    return out


class GSCModel(TruncatedModel):
    """The mathematics of GSC (spike-and-slab sparse coding).

    Parameters: W (D, H), pi (H,), mu (H,), psi (H,) slab variances >= 0, sigma (scalar).

    Differences from the original ProSper ``GSC`` code, which this class does not copy:
    the original dropped the ½ in front of the Gaussian terms of log p(y | b) and used a
    wrong Ψ update (MODELS.md, section 3). Here log p(y | b) has the ½ on both the
    log-determinant and the quadratic form, and Ψ_h = Σ_n⟨b_h (z_h - μ_h)²⟩ / Σ_n⟨b_h⟩ with
    the new μ_h and the slab posterior variance Λ_b included (Sheikh et al. 2014, section
    3), computed from moments about the previous μ so that it stays accurate when Ψ_h is
    tiny against μ_h². Exact EM with this M-step never decreases the likelihood
    (tests/unit/test_gsc.py).
    """

    fused_estep = True

    name = "gsc"
    param_names = ("W", "pi", "mu", "psi", "sigma")
    anneal_prior_default = True

    @property
    def values(self) -> np.ndarray:
        return np.array([0.0, 1.0])

    # -- parameters ---------------------------------------------------------------------
    def init_params(self, mean, var, rng, init):
        # W as for BSC (around the data mean, or zero-mean noise with the data's spread),
        # unit slabs with zero mean, π = 1/H and σ the data's standard deviation
        W = self.initial_W(mean, var, rng, init)
        H = self.H
        return {
            "W": W,
            "pi": np.full(H, 1.0 / H if H > 1 else 0.5),
            "mu": np.zeros(H),
            "psi": np.ones(H),
            "sigma": self.initial_sigma(var),
        }

    def truncated_mass(self, params: Params, gamma: int) -> float:
        return spike_count_masses(params["pi"], gamma)[0]

    def perturb(self, params, scale, rng):
        if scale <= 0:
            return params
        W = params["W"]
        H = self.H
        rms = np.sqrt(np.mean(W**2)) or 1.0
        mu_rms = np.sqrt(np.mean(params["mu"] ** 2)) or 1.0
        return {
            "W": W + scale * rms * rng.standard_normal(W.shape),
            "pi": np.clip(params["pi"] * np.exp(scale * rng.standard_normal(H)), PI_MIN, PI_MAX),
            "mu": params["mu"] + scale * mu_rms * rng.standard_normal(H),
            "psi": params["psi"] * np.exp(scale * rng.standard_normal(H)),
            "sigma": np.asarray(float(params["sigma"]) * np.exp(scale * rng.standard_normal())),
        }

    def sample(self, n, params, rng):
        b = rng.random((n, self.H)) < params["pi"]
        z = params["mu"] + np.sqrt(params["psi"]) * rng.standard_normal((n, self.H))
        S = np.where(b, z, 0.0)
        Y = S @ params["W"].T + float(params["sigma"]) * rng.standard_normal((n, self.D))
        return Y, S

    # -- E-step -------------------------------------------------------------------------
    def preselection_scores(self, Y, params):
        """Singleton marginal log-likelihood log N(y; μ_h W_h, σ²I + Ψ_h W_h W_hᵀ), (B, H)."""
        W = params["W"]
        WY = (Y @ W.astype(Y.dtype, copy=False)).astype(np.float64)
        yy = np.einsum("nd,nd->n", Y, Y, dtype=np.float64)
        return _singletons(WY, yy, np.einsum("dh,dh->h", W, W), params, self.D)[0]

    def _states(self, Y, batch, params, moments):
        """Log-likelihoods, log-priors and slab posteriors of all candidate patterns.

        Returns
        -------
        ll, lp : ndarray of shape (B, K)
            log p(y | b) and log p(b), patterns ordered [zero, singletons, groups k = 2..γ].
        single : tuple (dz, lam) of (B, H) arrays
            Slab posteriors of the singletons.
        groups : list of (slots, dz, lam, offset)
            Per group of k-spike patterns over the preselected slots: slots (K_k, k),
            κ - μ_A (k, K_k, B), Λ (k, k, K_k, B) and the group's first column.
        """
        W, mu = params["W"], params["mu"]
        B, I = Y.shape[0], batch.I
        sigma2 = float(params["sigma"]) ** 2
        pi = np.clip(params["pi"], PI_MIN, PI_MAX)
        logit = np.log(pi) - np.log1p(-pi)
        lp0 = float(np.log1p(-pi).sum())
        WY = (Y @ W.astype(Y.dtype, copy=False)).astype(np.float64)
        yy = np.einsum("nd,nd->n", Y, Y, dtype=np.float64)
        G = W.T @ W
        ll1, dz1, lam1 = _singletons(WY, yy, np.diag(G).copy(), params, self.D)
        ll = [-0.5 * (self.D * (LOG_2PI + np.log(sigma2)) + yy / sigma2)[:, None], ll1]
        lp = [np.full((B, 1), lp0), np.broadcast_to(lp0 + logit, (B, self.H))]
        groups, offset = [], 1 + self.H
        table = batch.table != 0
        if table.shape[0]:
            # the preselected latents' quantities, gathered once per batch, slot-major
            Hp = I.shape[1]
            sp = np.sqrt(np.maximum(params["psi"], 0.0))[I]
            GI = G[I[:, :, None], I[:, None, :]]
            M = sp[:, :, None] * GI * sp[:, None, :] / sigma2
            M[:, np.arange(Hp), np.arange(Hp)] += 1.0
            GM = GI * mu[I][:, None, :]
            slot_major = [
                np.ascontiguousarray(a.reshape(B, int(np.prod(a.shape[1:]))).T)
                for a in (M, GM, np.take_along_axis(WY, I, axis=1), mu[I], sp)
            ]
            logitI = logit[I]
            counts = table.sum(axis=1)
            for k in np.unique(counts):
                rows = table[counts == k]
                slots = np.nonzero(rows)[1].reshape(rows.shape[0], k)
                ll_k, dz, lam = _slab_group(*slot_major, yy, slots, sigma2, self.D, moments)
                ll.append(ll_k.T)
                lp.append(lp0 + logitI @ rows.T)
                groups.append((slots, dz, lam, offset))
                offset += slots.shape[0]
        return np.concatenate(ll, axis=1), np.concatenate(lp, axis=1), (dz1, lam1), groups

    def _accumulate(self, q, I, single, groups, mu, second):
        """Posterior moments from pattern weights q (B, K).

        Group contributions are first summed per data point over its H' preselected slots
        (GEMMs with fixed one-hot maps from pattern positions to slots), then scattered to
        the latents through I.

        Returns
        -------
        mean_s, mean_b : ndarray of shape (B, H)
            ⟨s⟩ and ⟨b⟩ per data point.
        extra : dict or None
            With ``second``: ``ss`` (H, H) Σ_n⟨ssᵀ⟩, ``dz`` and ``dz2`` (H,) Σ_n⟨b_h (z_h -
            μ_h)⟩ and Σ_n⟨b_h (z_h - μ_h)²⟩.
        """
        B, H, Hp = q.shape[0], self.H, I.shape[1]
        dz1, lam1 = single
        q1 = q[:, 1 : 1 + H]
        mean_s, mean_b = q1 * (mu + dz1), q1.copy()
        # slot-major sums (H', B) and (H'², B), as the groups' arrays
        s_slot, b_slot = np.zeros((Hp, B)), np.zeros((Hp, B))
        ss_slot, dz_slot, dz2_slot = np.zeros((Hp * Hp, B)), np.zeros((Hp, B)), np.zeros((Hp, B))
        muI = np.ascontiguousarray(mu[I].T)
        qT = np.ascontiguousarray(q.T)
        for slots, dz, lam, off in groups:
            K, k = slots.shape
            qk = qT[off : off + K]
            # one-hot maps from (pattern, position) to slots: sums over patterns are GEMMs
            onehot = np.eye(Hp)[slots.T]  # (k, K, H')
            b_slot += onehot.sum(axis=0).T @ qk
            kappa = np.stack([muI[slots[:, i]] for i in range(k)]) + dz  # (k, K, B)
            s_slot += np.tensordot(onehot, qk * kappa, axes=([0, 1], [0, 1]))
            if not second:
                continue
            dz_slot += np.tensordot(onehot, qk * dz, axes=([0, 1], [0, 1]))
            var = np.stack([lam[i, i] for i in range(k)])
            dz2_slot += np.tensordot(onehot, qk * (dz**2 + var), axes=([0, 1], [0, 1]))
            # ⟨ssᵀ⟩ over the lower triangle of each pattern's k×k block, mirrored by the map
            low = [(i, j) for i in range(k) for j in range(i + 1)]
            w = np.stack([qk * (kappa[i] * kappa[j] + lam[i, j]) for i, j in low])
            pair_map = np.stack([_pair_map(onehot[i], onehot[j], i != j) for i, j in low])
            ss_slot += np.tensordot(pair_map, w, axes=([0, 1], [0, 1]))
        r = np.arange(B)[:, None]
        mean_s[r, I] += s_slot.T
        mean_b[r, I] += b_slot.T
        if not second:
            return mean_s, mean_b, None
        Ipair = (I[:, :, None] * H + I[:, None, :]).ravel()
        # float even for an empty batch (bincount of nothing is int64)
        ss = np.bincount(Ipair, ss_slot.T.ravel(), minlength=H * H).reshape(H, H).astype(float)
        ss[np.diag_indices(H)] += np.einsum("bh,bh->h", q1, (mu + dz1) ** 2 + lam1)
        extra = {
            "ss": ss,
            "dz": np.bincount(I.ravel(), dz_slot.T.ravel(), minlength=H)
            + np.einsum("bh,bh->h", q1, dz1),
            "dz2": np.bincount(I.ravel(), dz2_slot.T.ravel(), minlength=H)
            + np.einsum("bh,bh->h", q1, dz1**2 + lam1),
        }
        return mean_s, mean_b, extra

    def runs_on(self, backend):
        # the NumPy E-step below is the reference; a backend whose ``KERNELS`` registers a
        # ``gsc_estep`` kernel (numba: prosper.backends.numba_gsc) replaces it
        return backend_kernel(backend, "gsc_estep") is not None

    def estep_batch(self, Y, states, params, beta, prior_beta, mask, accumulate, backend):
        """Truncated E-step over the spikes with the slab integrated out exactly.

        Runs the backend's ``KERNELS["gsc_estep"]`` where it has one (numba), else the
        NumPy code here, which is the reference for that kernel. Statistics:
        ``sy`` (D, H) Σ y⟨s⟩ᵀ, ``ss`` (H, H) Σ⟨ssᵀ⟩ (with Λ_b), ``b`` (H,) Σ⟨b⟩, ``dz`` and
        ``dz2`` (H,) Σ⟨b_h (z_h - μ_h)⟩ and Σ⟨b_h (z_h - μ_h)²⟩ about the current μ, ``bb``
        (H, H) Σ⟨b_g⟩⟨b_h⟩ (:func:`spike_pairs`), ``yy`` Σ||y||², ``n`` number (weight) of
        points.
        """
        batch = self.candidates(Y, states, params)
        kernel = backend_kernel(backend, "gsc_estep")
        if kernel is not None:
            return kernel(Y, params, batch, beta, prior_beta, mask, accumulate)
        ll, lp, single, groups = self._states(Y, batch, params, accumulate)
        log_marginal = logsumexp(ll + lp, axis=1)
        if not accumulate:
            return log_marginal, None
        lj = beta * ll + prior_beta * lp
        q = np.exp(lj - logsumexp(lj, axis=1, keepdims=True))
        weight = np.ones(Y.shape[0]) if mask is None else np.asarray(mask, dtype=np.float64)
        q *= weight[:, None]
        mean_s, mean_b, extra = self._accumulate(q, batch.I, single, groups, params["mu"], True)
        yy = np.einsum("nd,nd->n", Y, Y, dtype=np.float64)
        return log_marginal, {
            "sy": Y.T.astype(np.float64) @ mean_s,
            "b": mean_b.sum(axis=0),
            **extra,
            "bb": spike_pairs(mean_b, weight),
            "yy": np.array(float(weight @ yy)),
            "n": np.array(float(weight.sum())),
        }

    def posterior_moments(
        self, Y: np.ndarray, batch: CandidateBatch, params: Params, backend: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """⟨s⟩ and ⟨b⟩ under the truncated posterior at temperature 1.

        Parameters
        ----------
        Y : ndarray of shape (B, D)
        batch : CandidateBatch
        params : dict of str to ndarray
        backend : module or None, default=None
            Backend module; its ``KERNELS["gsc_estep"]`` is used when it has one.

        Returns
        -------
        mean_s, mean_b : ndarray of shape (B, H)
        """
        kernel = backend_kernel(backend, "gsc_estep")
        if kernel is not None:
            return kernel(Y, params, batch, moments_only=True)
        ll, lp, single, groups = self._states(Y, batch, params, True)
        lj = ll + lp
        q = np.exp(lj - logsumexp(lj, axis=1, keepdims=True))
        mean_s, mean_b, _ = self._accumulate(q, batch.I, single, groups, params["mu"], False)
        # a sum of pattern weights: keep it a probability despite round-off
        return mean_s, np.minimum(mean_b, 1.0)

    def posterior_mean(self, Y, states, params, backend):
        return self.posterior_moments(Y, self.candidates(Y, states, params), params, backend)[0]

    # -- explicit states (evolutionary state sets, the generic E-step) ----------------------
    #: (rows, K, m, m) floats per working array of the explicit-state E-step
    explicit_chunk_elements = 1 << 20

    def _explicit_terms(
        self, WY: np.ndarray, yy: np.ndarray, X: np.ndarray, params: Params, moments: bool
    ) -> dict:
        """log p(y | b) and the slab posterior of explicit spike patterns, (rows, K, ...).

        Each pattern is reduced to its active latents ``idx`` (B, K, m), padded with an
        index H whose Ψ^½ = μ = 0 and Wᵀ y = 0 (a row of the identity in Ã, no
        contribution), so the m×m systems of all patterns are one batched Cholesky
        factorisation; the forms are those of the module docstring.

        Parameters
        ----------
        WY : ndarray of shape (B, H)
        yy : ndarray of shape (B,)
        X : ndarray of uint8, shape (B, K, H)
        params : dict
        moments : bool
            Also return κ − μ_A (``dz``, (B, K, m)) and Λ (``lam``, (B, K, m, m)).
        """
        H = self.H
        W = params["W"]
        sigma2 = float(params["sigma"]) ** 2
        active = X != 0
        m = max(1, int(active.sum(axis=2).max(initial=0)))
        order = np.argsort(~active, axis=2, kind="stable")[..., :m]
        idx = np.where(np.take_along_axis(active, order, axis=2), order, H)
        G = np.zeros((H + 1, H + 1))
        G[:H, :H] = W.T @ W
        sp = np.append(np.sqrt(np.maximum(params["psi"], 0.0)), 0.0)[idx]  # (B, K, m)
        mu = np.append(params["mu"], 0.0)[idx]
        wy = np.take_along_axis(
            np.hstack([WY, np.zeros((WY.shape[0], 1))])[:, None, :], idx, axis=2
        )
        GA = G[idx[..., :, None], idx[..., None, :]]  # (B, K, m, m)
        wr = wy - np.einsum("bkij,bkj->bki", GA, mu)  # W_Aᵀ (y − W_A μ_A)
        rr = yy[:, None] - np.einsum("bki,bki->bk", mu, wy + wr)  # ||y − W_A μ_A||²
        u = sp * wr / np.sqrt(sigma2)
        At = sp[..., :, None] * GA * sp[..., None, :] / sigma2
        At += np.eye(m)
        L = np.linalg.cholesky(At)
        v = np.linalg.solve(L, u[..., None])[..., 0]
        logdet = 2.0 * np.log(np.diagonal(L, axis1=-2, axis2=-1)).sum(axis=-1)
        quad = (rr - np.einsum("bki,bki->bk", v, v)) / sigma2
        out = {"idx": idx, "ll": -0.5 * (self.D * (LOG_2PI + np.log(sigma2)) + logdet + quad)}
        if moments:
            inv = np.linalg.inv(At)
            out["mu"] = mu
            out["dz"] = sp * np.einsum("bkij,bkj->bki", inv, u) / np.sqrt(sigma2)
            out["lam"] = sp[..., :, None] * inv * sp[..., None, :]
        return out

    def _explicit_rows(self, X: np.ndarray) -> int:
        """Rows per chunk so that the (rows, K, m, m) arrays stay bounded."""
        m = max(1, int((X != 0).sum(axis=2).max(initial=0)))
        return max(1, self.explicit_chunk_elements // max(1, X.shape[1] * m * m))

    def state_scorer(self, Y, params, backend, beta=1.0):
        """Preselection scores (the singletons' log-likelihoods) and the log-joint of explicit
        spike patterns, computed on each pattern's active latents: O(K m³) per data point
        after the one Wᵀ y (equal to :meth:`log_joint` to round-off)."""
        W = params["W"]
        WY = (Y @ W.astype(Y.dtype, copy=False)).astype(np.float64)
        yy = np.einsum("nd,nd->n", Y, Y, dtype=np.float64)
        pi = np.clip(params["pi"], PI_MIN, PI_MAX)
        logit, lp0 = np.log(pi) - np.log1p(-pi), float(np.log1p(-pi).sum())
        scores = _singletons(WY, yy, np.einsum("dh,dh->h", W, W), params, self.D)[0]

        def log_joint(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            B, K = X.shape[:2]
            ll = np.empty((B, K))
            step = self._explicit_rows(X)
            for start in range(0, B, step):
                rows = slice(start, min(start + step, B))
                ll[rows] = self._explicit_terms(WY[rows], yy[rows], X[rows], params, False)["ll"]
            return ll, lp0 + (X != 0) @ logit

        return scores, log_joint

    def state_moments(
        self, Y: np.ndarray, X: np.ndarray, q: np.ndarray, params: Params
    ) -> tuple[np.ndarray, np.ndarray]:
        """⟨s⟩ and ⟨b⟩ (B, H) from weights q (B, K) over explicit spike patterns X (B, K, H)."""
        H, B = self.H, X.shape[0]
        WY = (Y @ params["W"].astype(Y.dtype, copy=False)).astype(np.float64)
        yy = np.einsum("nd,nd->n", Y, Y, dtype=np.float64)
        mean_s = np.zeros((B, H + 1))
        step = self._explicit_rows(X)
        for start in range(0, B, step):
            rows = slice(start, min(start + step, B))
            t = self._explicit_terms(WY[rows], yy[rows], X[rows], params, True)
            r = np.arange(start, rows.stop)[:, None, None]
            np.add.at(mean_s, (r, t["idx"]), q[rows][..., None] * (t["mu"] + t["dz"]))
        mean_b = np.einsum("bk,bkh->bh", q, (X != 0).astype(np.float64))
        return mean_s[:, :H], np.minimum(mean_b, 1.0)

    def state_mean(self, Y, X, q, params):
        """⟨s⟩ = ⟨b ⊙ z⟩ (B, H) over explicit spike patterns, the slab posterior included."""
        return self.state_moments(Y, X, q, params)[0]

    def state_stats(self, Y, X, q, weight, params, backend, beta=1.0):
        """The statistics of :meth:`estep_batch` (``sy``, ``b``, ``ss``, ``dz``, ``dz2``,
        ``bb``, ``yy``, ``n``) from posterior weights ``q`` (B, K) over explicit spike
        patterns."""
        q = q * weight[:, None]
        H = self.H
        W = params["W"]
        WY = (Y @ W.astype(Y.dtype, copy=False)).astype(np.float64)
        yy = np.einsum("nd,nd->n", Y, Y, dtype=np.float64)
        B = X.shape[0]
        mean_s = np.zeros((B, H + 1))
        b = np.zeros(H + 1)
        ss = np.zeros((H + 1) * (H + 1))
        dz_sum, dz2_sum = np.zeros(H + 1), np.zeros(H + 1)
        step = self._explicit_rows(X)
        for start in range(0, B, step):
            rows = slice(start, min(start + step, B))
            t = self._explicit_terms(WY[rows], yy[rows], X[rows], params, True)
            idx, qr = t["idx"], q[rows][..., None]  # (b, K, 1)
            kappa = t["mu"] + t["dz"]
            r = np.arange(idx.shape[0])[:, None, None]
            np.add.at(mean_s, (r, idx), qr * kappa)
            flat = idx.ravel()
            qa = np.broadcast_to(qr, idx.shape).ravel()
            b += np.bincount(flat, qa, minlength=H + 1)
            dz_sum += np.bincount(flat, (qr * t["dz"]).ravel(), minlength=H + 1)
            var = np.diagonal(t["lam"], axis1=-2, axis2=-1)
            dz2_sum += np.bincount(flat, (qr * (t["dz"] ** 2 + var)).ravel(), minlength=H + 1)
            second = qr[..., None] * (kappa[..., :, None] * kappa[..., None, :] + t["lam"])
            pair = idx[..., :, None] * (H + 1) + idx[..., None, :]
            ss += np.bincount(pair.ravel(), second.ravel(), minlength=(H + 1) ** 2)
        # the padding index H collected the padding's weights only: dropped below
        return {
            "sy": Y.T.astype(np.float64) @ mean_s[:, :H],
            "b": b[:H],
            "ss": ss.reshape(H + 1, H + 1)[:H, :H].copy(),
            "dz": dz_sum[:H],
            "dz2": dz2_sum[:H],
            "bb": spike_pairs(np.einsum("bk,bkh->bh", q, (X != 0).astype(np.float64)), weight),
            "yy": np.array(float(weight @ yy)),
            "n": np.array(float(np.sum(weight))),
        }

    def log_joint(self, Y, S, params):
        """Reference log p(y | b) and log p(b) of explicit spike patterns S (B, K, H).

        Uses the full H×H form of Ã_b (inactive rows are those of the identity), so it is
        independent of the grouped kernel; O(H³) per state, for tests and small H.
        """
        W, mu = params["W"], params["mu"]
        sigma2 = float(params["sigma"]) ** 2
        b = (np.asarray(S) != 0).astype(np.float64)
        sp = b * np.sqrt(np.maximum(params["psi"], 0.0))
        G = W.T @ W
        m = b * mu
        r = Y[:, None, :] - m @ W.T
        At = np.eye(self.H) + sp[..., :, None] * G * sp[..., None, :] / sigma2
        L = np.linalg.cholesky(At)
        u = sp * np.einsum("bkd,dh->bkh", r, W) / np.sqrt(sigma2)
        v = np.linalg.solve(L, u[..., None])[..., 0]
        logdet = 2.0 * np.log(np.diagonal(L, axis1=-2, axis2=-1)).sum(axis=-1)
        quad = (np.einsum("bkd,bkd->bk", r, r) - np.einsum("bkh,bkh->bk", v, v)) / sigma2
        ll = -0.5 * (self.D * (LOG_2PI + np.log(sigma2)) + logdet + quad)
        pi = np.clip(params["pi"], PI_MIN, PI_MAX)
        lp = b @ np.log(pi) + (1.0 - b) @ np.log1p(-pi)
        return ll, lp

    def canonical_params(self, params):
        """Unit-norm dictionary columns: W_h ← W_h / c_h, μ_h ← c_h μ_h, Ψ_h ← c_h² Ψ_h with
        c_h = ||W_h||.

        y = Σ_h W_h b_h z_h is unchanged when W_h is multiplied by c and z_h ~ N(μ_h, Ψ_h)
        divided by c, so EM can end in any of these gauges; this one makes μ and Ψ the
        scale of each latent's contribution to the data. Columns of zero norm are left as
        they are. π and σ do not change.
        """
        norms = np.linalg.norm(params["W"], axis=0)
        c = np.where(norms > 0, norms, 1.0)
        return {
            **params,
            "W": params["W"] / c,
            "mu": params["mu"] * c,
            "psi": params["psi"] * c**2,
        }

    # -- M-step -------------------------------------------------------------------------
    def latent_usage(self, stats):
        """Σ_n <b_h>: the expected number of points in which each spike is on."""
        return np.asarray(stats["b"], dtype=np.float64).copy()

    def reassigned(self, params, h, y, mean_s):
        """Column h becomes the residual y − W<s> scaled to the median column norm, with the
        median spike probability (an unused latent's own π_h is near zero)."""
        pi = np.array(params["pi"], dtype=np.float64)
        pi[h] = np.median(pi)
        return {**params, "W": reassigned_column(params["W"], h, y, mean_s), "pi": pi}

    def latent_similarity(self, params):
        """Absolute cosine similarity of the columns of W (a column is defined up to sign
        and scale: W_h z_h with W_h → −c W_h, z_h → −z_h / c is the same cause)."""
        return np.abs(column_cosines(params["W"]))

    def latent_pairs(self, stats):
        """How often two spikes are on together: Σ_n⟨b_g⟩⟨b_h⟩ off the diagonal
        (:func:`spike_pairs`), Σ_n⟨b_h⟩ on it."""
        pairs = np.array(stats["bb"], dtype=np.float64)
        np.fill_diagonal(pairs, stats["b"])
        return pairs

    def merged(self, params, sources, stats=None):
        """Latents redefined from pairs of latents that are on together.

        A pair (g, k) on together superposes W_g z_g + W_k z_k, with the mean
        m = μ_g W_g + μ_k W_k. Two local optima of GSC give such pairs (seen on bars with
        π = 1/H):

        - one cause split over two latents, both slabs away from zero (a latent b − a only
          ever on together with a): latent h becomes m, the cause;
        - two causes a, b held by a "sum" latent (a + b direction, slab mean away from zero)
          and a "difference" latent whose slab straddles zero (|μ_j| < Ψ_j^½: its sign picks
          a or b), both on for every point of a or b: the pair is two causes
          m ± Ψ_j^½ W_j, so h takes one and the pair's other member the other (when that
          member is not redefined itself).

        A new column is W_h = the vector, with μ_h = 1, the median relative slab variance
        Ψ/μ² of the latents and the median π (as :meth:`reassigned`); ``stats`` is not
        needed.
        """
        W = np.array(params["W"], dtype=np.float64)
        mu = np.array(params["mu"], dtype=np.float64)
        psi = np.maximum(np.array(params["psi"], dtype=np.float64), 0.0)
        pi = np.array(params["pi"], dtype=np.float64)
        old_W, old_mu, old_psi = W.copy(), mu.copy(), psi.copy()
        with np.errstate(divide="ignore", invalid="ignore"):
            relative = np.where(old_mu != 0, old_psi / old_mu**2, np.inf)
        spread = float(np.median(relative)) if np.isfinite(np.median(relative)) else 1.0
        new: dict[int, np.ndarray] = {}
        for h, pair in sources.items():
            members = list(pair)
            mean = old_W[:, members] @ old_mu[members]
            wide = [j for j in members if abs(old_mu[j]) < np.sqrt(old_psi[j])]
            if not wide:
                new[h] = mean
                continue
            j = max(wide, key=lambda i: (old_psi[i] * np.sum(old_W[:, i] ** 2), -i))
            half = np.sqrt(old_psi[j]) * old_W[:, j]
            new[h] = mean + half
            other = next((i for i in members if i != h), None)
            if other is not None and other not in sources and other not in new:
                new[other] = mean - half
        median_pi = float(np.median(pi))
        for h, column in new.items():
            W[:, h] = column
            mu[h], psi[h], pi[h] = 1.0, spread, median_pi
        return {**params, "W": W, "mu": mu, "psi": psi, "pi": pi}

    def mstep(self, stats, params, gamma):
        """Closed-form updates (Sheikh et al. 2014, section 3), σ² with the new W.

        W = (Σ y⟨s⟩ᵀ)(Σ⟨ssᵀ⟩)⁻¹; σ² = Σ⟨||y - W s||²⟩/(N D); μ_h = Σ⟨s_h⟩/Σ⟨b_h⟩;
        Ψ_h = Σ⟨b_h (z_h - μ_h)²⟩/Σ⟨b_h⟩; π_h = Σ⟨b_h⟩/N with the ET prior correction for
        independent per-latent spikes: π_h ← A Σ⟨b_h⟩ / (N P(|b_{-h}| <= γ-1)), A =
        P(|b| <= γ), the per-latent form of Lücke & Eggert 2010, eq. 20 (1 when γ = H).
        """
        sy, ss, n = stats["sy"], stats["ss"], float(stats["n"])
        W = params["W"].copy()
        used = np.diag(ss) > 1e-12 * max(1.0, n)
        if used.any():
            block = ss[np.ix_(used, used)]
            ridge = 1e-12 * max(np.trace(block) / used.sum(), 1e-300)
            W[:, used] = np.linalg.solve(block + ridge * np.eye(used.sum()), sy[:, used].T).T
        err = float(stats["yy"]) - 2.0 * np.sum(W * sy) + np.sum((W.T @ W) * ss)
        sigma = max(np.sqrt(max(err, 0.0) / (n * self.D)), 1e-8)

        nb = stats["b"]
        active = nb > 1e-12 * max(1.0, n)
        safe = np.where(active, nb, 1.0)
        # moments about the previous μ: shift δ = mean of (z - μ_old), variance about it
        shift = np.where(active, stats["dz"] / safe, 0.0)
        mu = params["mu"] + shift
        psi = np.where(active, np.maximum(stats["dz2"] / safe - shift**2, 0.0), params["psi"])

        A, A_minus = spike_count_masses(params["pi"], gamma)
        rate = nb / max(n, 1e-300)
        pi = np.where(A_minus > 0, A * rate / np.maximum(A_minus, 1e-300), rate)
        return {
            "W": W,
            "pi": np.clip(pi, PI_MIN, PI_MAX),
            "mu": mu,
            "psi": psi,
            "sigma": np.asarray(sigma),
        }
