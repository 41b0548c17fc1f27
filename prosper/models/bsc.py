"""Binary Sparse Coding: binary latents, linear superposition, Gaussian noise.

y = W s + ε with s_h ~ Bernoulli(π) independently and ε ~ N(0, σ² I_D)
(Lücke & Eggert 2010, JMLR, section 5; Henniges et al. 2010).
"""

from __future__ import annotations

import numpy as np

from prosper.models.base import (
    LinearTruncatedModel,
    Params,
    binomial_truncation,
    column_cosines,
)

__all__ = ["BSCModel"]

PI_MIN, PI_MAX = 1e-5, 1.0 - 1e-5


class BSCModel(LinearTruncatedModel):
    """The mathematics of BSC. Parameters: W (D, H), pi (scalar), sigma (scalar)."""

    name = "bsc"

    @property
    def values(self) -> np.ndarray:
        return np.array([0.0, 1.0])

    def value_log_prior(self, params: Params) -> np.ndarray:
        pi = float(params["pi"])
        return np.array([np.log1p(-pi), np.log(pi)])

    def preselection_coefficients(self, params):
        # cosine similarity W_hᵀy / (||W_h|| ||y||); ||y|| does not change the ranking
        norms = np.linalg.norm(params["W"], axis=0)
        return (1.0 / np.where(norms > 0, norms, 1.0))[None, :], np.zeros((1, self.H))

    def truncated_mass(self, params: Params, gamma: int) -> float:
        return binomial_truncation(self.H, gamma, float(params["pi"]))[0]

    def init_params(self, mean, var, rng, init):
        # W around the data mean with the data's spread, σ the data's std, π = 1/H
        # (the initialisation of the original ProSper BSC examples)
        W = self.initial_W(mean, var, rng, init)
        return {
            "W": W,
            "pi": np.asarray(1.0 / self.H if self.H > 1 else 0.5),
            "sigma": self.initial_sigma(var),
        }

    def prior_mstep(self, stats, params, gamma):
        """π with the ET prior correction (Lücke & Eggert 2010, eq. 20).

        π_new = (π H A / B) Σ_n <|s|> / (H N_cut), A = P(|s| <= γ), B = E[|s| 1{|s| <= γ}];
        without truncation (γ = H) it is the exact update Σ<|s|> / (H N).
        """
        pi = float(params["pi"])
        A, B = binomial_truncation(self.H, gamma, pi)
        # counts holds Σ<#{h: s_h = v}> per non-zero value v; their sum is Σ<|s|>
        # (one value for BSC, -1 and +1 for TSC, which inherits this update)
        mean_active = float(np.sum(stats["counts"])) / (self.H * float(stats["n"]))
        new = pi * self.H * A / B * mean_active if B > 0 else mean_active
        return {"pi": np.asarray(np.clip(new, PI_MIN, PI_MAX))}

    def latent_similarity(self, params):
        """Cosine similarity of the columns of W."""
        return column_cosines(params["W"])

    def latent_pairs(self, stats):
        """Σ_n <s_g s_h>: for binary latents the second-moment statistic counts how often
        two latents are on together."""
        return np.asarray(stats["ss"], dtype=np.float64)

    def merged(self, params, sources, stats=None):
        """Column h becomes the sum of the columns ``sources[h]`` (what they superpose to
        when on together); the other columns, π and σ stay (``stats`` is not needed)."""
        W = np.array(params["W"], dtype=np.float64)
        old = W.copy()
        for h, group in sources.items():
            W[:, h] = old[:, list(group)].sum(axis=1)
        return {**params, "W": W}

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
