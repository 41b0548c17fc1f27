"""Discrete Sparse Coding: latents from a given finite value set, learned categorical prior.

y = W s + ε, ε ~ N(0, σ² I_D), with independent s_h ∈ Φ = {φ_0 = 0, φ_1, …, φ_K} and
p(s_h = φ_k) = π_k, Σ_k π_k = 1 (Exarchakis & Lücke 2017, Neural Computation 29,
"Discrete sparse coding", section 2: the generative model). The prior of a state is

    log p(s | π) = Σ_h log π_{k(s_h)} = Σ_k c_k(s) log π_k,   c_k(s) = #{h: s_h = φ_k}.

M-step (Exarchakis & Lücke 2017, section 2, the M-step equations for W, σ² and π_k): W and
σ are shared with every linear model (:meth:`LinearTruncatedModel.mstep`), and without
truncation π_k = Σ_n <c_k(s)>_n / (N H).

ET prior correction (derived here, analogous to BSC's Lücke & Eggert 2010, eq. 20)
-------------------------------------------------------------------------------------
The truncated posteriors average the counts under the prior *restricted* to
|s| = Σ_{k>=1} c_k <= γ. Under the categorical prior the number of non-zeros is
|s| ~ Binomial(H, ρ), ρ = 1 − π_0, and given |s| = m each non-zero entry is φ_k with
probability π_k / ρ independently. Hence

    A(π)   = P(|s| <= γ) = Σ_{m<=γ} C(H, m) ρ^m (1 − ρ)^(H−m)      (the multinomial mass of
                                                                   the states with <= γ
                                                                   non-zeros)
    B(π)   = E[|s| 1{|s| <= γ}]
    B_k(π) = E[c_k 1{|s| <= γ}] = (π_k / ρ) B(π)                     for k >= 1.

The truncated prior mean of c_k is B_k / A instead of H π_k; the ET correction rescales the
observed mean accordingly: applied to the paper's π_k update this is, for k >= 1,
π_k ← π_k (H A / B_k) Σ_n <c_k> / (H N_cut), the per-value analogue of BSC's eq. 20. With
B_k = (π_k / ρ) B it becomes

    ρ_new = (ρ H A / B) Σ_n <|s|> / (H N_cut)     (BSC's eq. 20 with π := ρ)
    π_k   = ρ_new Σ_n <c_k> / Σ_n <|s|>            for k >= 1,   π_0 = 1 − ρ_new:

the truncation only biases how many latents are active, not which non-zero value they
take. π_0 follows from Σ_k π_k = 1 (a separate corrected π_0 update would not keep the
sum at one). Without truncation (γ = H: A = 1, B = H ρ) this is the exact update.

Differences from the original ProSper ``DSC_ET`` (we follow the paper):

- the original normalises the raw counts and leaves out the ET prior correction (its
  ``B_pi_gamma`` is commented out); we apply the correction above;
- the σ update uses the new W (the original accumulates the error with the old W);
- the free energy keeps all normalising constants.

The repairs of latents that EM leaves in a local optimum (``reassignment_ratio``, see
:class:`prosper.solvers.truncated.TruncatedEM`) are TSC's
(:class:`prosper.models.base.ActivityRepairs`): a latent is on when it is non-zero whatever
its value, so two latents are on together by Σ<1{s_g ≠ 0} 1{s_h ≠ 0}> (Σ<s_g s_h> would
weigh the pairs by their values); duplicates by the cosine, absolute where Φ has values of
both signs; a latent's usage is Σ<s_h²>.
"""

from __future__ import annotations

import numpy as np

from prosper.models.base import (
    ActivityRepairs,
    LinearTruncatedModel,
    Params,
    binomial_truncation,
)

__all__ = ["DSCModel", "check_values"]

PI_MIN = 1e-5


def check_values(values) -> np.ndarray:
    """Validate a DSC value set Φ and return it as a float array of shape (V,).

    Raises ``ValueError`` unless ``values`` is a one-dimensional sequence of at least two
    distinct finite numbers containing 0.
    """
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"values must be a sequence of numbers containing 0, e.g. (0, 1, 2); got {values!r}."
        ) from None
    if arr.ndim != 1 or arr.size < 2:
        raise ValueError(
            "values must be a flat sequence of at least 2 numbers containing 0, e.g. (0, 1, 2); "
            f"got {values!r}."
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"values must all be finite; got {values!r}.")
    if np.unique(arr).size != arr.size:
        raise ValueError(f"values must be distinct; got {values!r}.")
    if not np.any(arr == 0):
        raise ValueError(f"values must contain 0 (the inactive state); got {values!r}.")
    return arr


class DSCModel(ActivityRepairs, LinearTruncatedModel):
    """The mathematics of DSC. Parameters: W (D, H), pi (V,), sigma (scalar).

    Parameters
    ----------
    H, D : int
    values : sequence of float, default=(0, 1, 2)
        The value set Φ (contains 0). ``pi[k]`` is the prior probability of ``values[k]``,
        in the order given here; internally 0 is moved to the front of the state table.
    """

    name = "dsc"

    def __init__(self, H: int, D: int, values=(0, 1, 2)) -> None:
        super().__init__(H, D)
        self.user_values = check_values(values)
        zero = int(np.flatnonzero(self.user_values == 0)[0])
        #: internal order (0 first) as indices into the user's order
        self.order = np.concatenate([[zero], np.delete(np.arange(self.user_values.size), zero)])
        self._values = self.user_values[self.order]
        self.V = self.user_values.size

    @property
    def values(self) -> np.ndarray:
        return self._values

    def value_log_prior(self, params: Params) -> np.ndarray:
        pi = np.asarray(params["pi"], dtype=np.float64)[self.order]
        with np.errstate(divide="ignore"):
            return np.log(pi)

    def _rho(self, params: Params) -> float:
        """ρ = 1 − π_0, the probability that a latent is non-zero."""
        pi = np.asarray(params["pi"], dtype=np.float64)
        return float(1.0 - pi[self.order[0]])

    def truncated_mass(self, params: Params, gamma: int) -> float:
        return binomial_truncation(self.H, gamma, self._rho(params))[0]

    def preselection_coefficients(self, params: Params) -> tuple[np.ndarray, np.ndarray]:
        """Best singleton log-joint of each latent over the non-zero values, up to constants.

        log p(y, φ_k e_h) = c − (||y||² − 2 φ_k W_hᵀy + φ_k² ||W_h||²) / (2σ²) + log π_k
        + (H−1) log π_0; the terms common to all (h, k) are left out, so value φ_k scores
        (φ_k / σ²) W_hᵀy − φ_k² ||W_h||² / (2σ²) + log π_k.

        Returns
        -------
        A, C : ndarray of shape (V-1, H)
        """
        sigma2 = self.sigma2(params)
        nz = self.values[1:]
        logp = self.value_log_prior(params)[1:]
        norms = np.einsum("dh,dh->h", params["W"], params["W"])
        A = (nz / sigma2)[:, None] * np.ones(self.H)
        C = -0.5 * (nz**2 / sigma2)[:, None] * norms[None, :] + logp[:, None]
        return A, C

    def init_params(self, mean, var, rng, init):
        # W as BSC (around the data mean with a quarter of its spread), divided by the mean
        # magnitude of the non-zero values so that W_h φ is of the data's size (with
        # values (0, 1, 2, 3) the unscaled start settled in a state that explains all
        # amplitudes by φ = 1 and a too large σ; see benchmarks/bench_discrete.py);
        # σ the data's std; π_0 = 1 − 1/H and the non-zero values share 1/H equally
        W = self.initial_W(mean, var, rng, init)
        W = W / np.mean(np.abs(self.values[1:]))
        rho = 1.0 / self.H if self.H > 1 else 0.5
        pi = np.full(self.V, rho / (self.V - 1))
        pi[self.order[0]] = 1.0 - rho
        return {
            "W": W,
            "pi": pi,
            "sigma": self.initial_sigma(var),
        }

    def prior_mstep(self, stats, params, gamma):
        """π_k with the ET prior correction derived in the module docstring.

        ``counts`` (V−1,) holds Σ_n <c_k> for the non-zero values in internal order.
        Exact (γ = H): π_k = Σ_n <c_k> / (N H) (Exarchakis & Lücke 2017, section 2).
        """
        counts = np.asarray(stats["counts"], dtype=np.float64)
        n = float(stats["n"])
        active = float(counts.sum())
        rho = self._rho(params)
        A, B = binomial_truncation(self.H, gamma, rho)
        mean_active = active / (self.H * n)
        rho_new = rho * self.H * A / B * mean_active if B > 0 else mean_active
        rho_new = float(np.clip(rho_new, PI_MIN * (self.V - 1), 1.0 - PI_MIN))
        share = counts / active if active > 0 else np.full(self.V - 1, 1.0 / (self.V - 1))
        internal = np.concatenate([[1.0 - rho_new], rho_new * share])
        return {"pi": self._to_user(self._clip(internal))}

    def _clip(self, pi_internal: np.ndarray) -> np.ndarray:
        """Keep every π_k >= PI_MIN and Σ π_k = 1 (a value that is never used stays learnable)."""
        pi = np.maximum(pi_internal, PI_MIN)
        return pi / pi.sum()

    def _to_user(self, pi_internal: np.ndarray) -> np.ndarray:
        out = np.empty(self.V)
        out[self.order] = pi_internal
        return out

    def perturb(self, params, scale, rng):
        if scale <= 0:
            return params
        W = params["W"]
        rms = np.sqrt(np.mean(W**2)) or 1.0
        pi = np.asarray(params["pi"], dtype=np.float64)[self.order]
        pi = self._clip(pi * np.exp(scale * rng.standard_normal(self.V)))
        return {
            "W": W + scale * rms * rng.standard_normal(W.shape),
            "pi": self._to_user(pi),
            "sigma": np.asarray(float(params["sigma"]) * np.exp(scale * rng.standard_normal())),
        }

    def _sample_latents(self, n: int, params: Params, rng: np.random.Generator) -> np.ndarray:
        pi = np.asarray(params["pi"], dtype=np.float64)
        idx = rng.choice(self.V, size=(n, self.H), p=pi / pi.sum())
        return self.user_values[idx]
