"""Ternary Sparse Coding: latents in {-1, 0, 1}, linear superposition, Gaussian noise.

y = W s + ε with independent s_h, p(s_h = ±1) = π/2, p(s_h = 0) = 1 − π, and
ε ~ N(0, σ² I_D) (Exarchakis, Henniges, Eggert & Lücke 2012, "Ternary sparse coding",
LVA/ICA, section 2: the generative model). The prior of a state is

    log p(s | π) = |s| log(π/2) + (H − |s|) log(1 − π),   |s| = number of non-zero entries.

M-step (Exarchakis et al. 2012, the M-step equations of section 3, the same closed forms as
BSC in Lücke & Eggert 2010, eqs. 11–13 and 20): W and σ are shared with every linear model
(:meth:`LinearTruncatedModel.mstep`), π = Σ_n <|s|> / (H N) corrected for the truncation
exactly as BSC's, because |s| ~ Binomial(H, π) under the ternary prior too.

Differences from the original ProSper ``TSC_ET`` (we follow the paper):

- the σ update uses the new W (the original loops over the data with the old W), which is
  the exact M-step;
- the free energy keeps all normalising constants and does not subtract log A(π) (the
  original reports L = ... − log A), so TSC, BSC and DSC scores compare;
- preselection ranks latents by the better of their two signed singleton log-joints; the
  original took the H' best of the 2H signed singletons and could select a latent twice.
"""

from __future__ import annotations

import numpy as np

from prosper.models.base import LinearTruncatedModel, Params, binomial_truncation

__all__ = ["TSCModel"]

PI_MIN, PI_MAX = 1e-5, 1.0 - 1e-5


class TSCModel(LinearTruncatedModel):
    """The mathematics of TSC. Parameters: W (D, H), pi (scalar), sigma (scalar).

    ``pi`` is the probability that a latent is non-zero; each sign has probability π/2.
    """

    name = "tsc"

    @property
    def values(self) -> np.ndarray:
        return np.array([0.0, -1.0, 1.0])

    def value_log_prior(self, params: Params) -> np.ndarray:
        pi = float(params["pi"])
        half = np.log(pi / 2.0)
        return np.array([np.log1p(-pi), half, half])

    def truncated_mass(self, params: Params, gamma: int) -> float:
        # A(π) = P(|s| <= γ), |s| ~ Binomial(H, π): the original's double sum over the
        # numbers of −1 and +1 entries collapses to this binomial CDF
        return binomial_truncation(self.H, gamma, float(params["pi"]))[0]

    def preselection_scores(self, Y: np.ndarray, params: Params) -> np.ndarray:
        """Better of the two signed singleton log-joints of each latent, up to constants.

        log p(y, ±e_h) = c − (||y||² ∓ 2 W_hᵀy + ||W_h||²) / (2σ²) + log(π/2) + (H−1) log(1−π),
        so the better sign scores (2 |W_hᵀy| − ||W_h||²) / (2σ²) + c'; the common terms do
        not change the ranking and are left out.

        Returns
        -------
        ndarray of shape (B, H)
        """
        W = params["W"]
        return 2.0 * np.abs(Y @ W) - np.einsum("dh,dh->h", W, W)[None, :]

    def init_params(self, mean, var, rng, init):
        # as BSC (the initialisation of the original ProSper examples): W around the data
        # mean (≈ 0 for symmetric ternary data) with a quarter of the data's spread, σ the
        # data's std, π = 1/H
        std = np.sqrt(np.maximum(var, 1e-12))
        if init == "random":
            W = rng.standard_normal((self.D, self.H)) * std[:, None]
        else:
            W = mean[:, None] + rng.standard_normal((self.D, self.H)) * std[:, None] / 4.0
        return {
            "W": W,
            "pi": np.asarray(1.0 / self.H if self.H > 1 else 0.5),
            "sigma": np.asarray(np.sqrt(np.mean(var)) if np.mean(var) > 0 else 1.0),
        }

    def prior_mstep(self, stats, params, gamma):
        """π with the ET prior correction (Lücke & Eggert 2010, eq. 20; TSC paper, section 3).

        π_new = (π H A / B) Σ_n <|s|> / (H N_cut), A = P(|s| <= γ), B = E[|s| 1{|s| <= γ}]
        for |s| ~ Binomial(H, π); without truncation (γ = H) it is Σ<|s|> / (H N).
        ``counts`` holds Σ<#{h: s_h = −1}> and Σ<#{h: s_h = +1}>, whose sum is Σ<|s|>.
        """
        pi = float(params["pi"])
        A, B = binomial_truncation(self.H, gamma, pi)
        mean_active = float(np.sum(stats["counts"])) / (self.H * float(stats["n"]))
        new = pi * self.H * A / B * mean_active if B > 0 else mean_active
        return {"pi": np.asarray(np.clip(new, PI_MIN, PI_MAX))}

    def perturb(self, params, scale, rng):
        if scale <= 0:
            return params
        W = params["W"]
        rms = np.sqrt(np.mean(W**2)) or 1.0
        return {
            "W": W + scale * rms * rng.standard_normal(W.shape),
            "pi": np.asarray(
                np.clip(float(params["pi"]) * np.exp(scale * rng.standard_normal()), PI_MIN, PI_MAX)
            ),
            "sigma": np.asarray(float(params["sigma"]) * np.exp(scale * rng.standard_normal())),
        }
