"""A noisy-OR model added the documented way ("Adding a model"): a test of the protocol.

Binary latents s_h ~ Bernoulli(π) and binary data, each active cause switching pixel d on
with probability W_dh independently of the others (a noisy OR):

    p(y_d = 1 | s) = P_d(s) = 1 − Π_h (1 − W_dh s_h),   0 < W_dh < 1.

The model gives the log-joint of explicit states and the statistics of its M-step, and
nothing else: it has no fused E-step, so the solver runs it through the generic E-step on
every backend and with every state set (``states="et" | "evo" | "full"``).

M-step. At a maximum of the free energy in W_dh, Σ_n Σ_s q_n(s) s_h (y_nd / P_d(s) − 1) = 0
(the derivative of y log P + (1 − y) log(1 − P), with ∂P_d/∂W_dh = (1 − P_d)/(1 − W_dh) for
s_h = 1). Multiplying by W_dh gives the fixed-point update used here:

    W_dh ← W_dh Σ_n ⟨s_h y_nd / P_d(s)⟩ / Σ_n ⟨s_h⟩,

exact for a pixel that a single cause explains (W_dh becomes the mean of y_d where h is
active). Like the update of Šingliar & Hauskrecht (2006) it is a fixed-point iteration, not a
closed-form maximum; W is kept in [1e-4, 1 − 1e-4]. π ← Σ_n⟨|s|⟩ / (N H) with the ET
correction of BSC (1 for ``states="evo"`` and ``"full"``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from prosper.estimators.base import TruncatedEMEstimator
from prosper.models.base import Params, TruncatedModel, binomial_truncation

__all__ = ["NoisyOR", "NoisyORModel"]

W_MIN, W_MAX = 1e-4, 1.0 - 1e-4
PI_MIN, PI_MAX = 1e-5, 1.0 - 1e-5
#: floor of P_d(s): the zero state explains an active pixel with log-probability log(1e-100)
P_FLOOR = 1e-100


class NoisyORModel(TruncatedModel):
    """The mathematics of the noisy-OR model. Parameters: W (D, H) in (0, 1), pi (scalar).

    Parameters
    ----------
    H : int
        Number of latent causes.
    D : int
        Number of binary observed dimensions.
    """

    name = "noisy_or"
    param_names = ("W", "pi")

    @property
    def values(self) -> np.ndarray:
        return np.array([0.0, 1.0])

    def _log_off(self, S: np.ndarray, params: Params) -> np.ndarray:
        """log(1 − P_d(s)) = Σ_h s_h log(1 − W_dh) for states S (B, K, H): (B, K, D)."""
        return np.asarray(S, dtype=np.float64) @ np.log1p(-params["W"]).T

    def log_joint(self, Y, S, params):
        """log p(y | s) and log p(s) of explicit states S (B, K, H), each (B, K)."""
        log_off = self._log_off(S, params)
        log_on = np.log(np.maximum(-np.expm1(log_off), P_FLOOR))
        ll = np.einsum("bd,bkd->bk", Y, log_on) + np.einsum("bd,bkd->bk", 1.0 - Y, log_off)
        size = np.asarray(S != 0).sum(axis=2)
        pi = float(params["pi"])
        return ll, size * np.log(pi) + (self.H - size) * np.log1p(-pi)

    def state_stats(self, Y, X, q, weight, params, backend, beta=1.0):
        """``ysP`` (D, H) Σ⟨s_h y_d / P_d(s)⟩, ``s`` (H,) Σ⟨s_h⟩ and ``n`` (weight of the
        points), from weights q (B, K) over index states X (B, K, H)."""
        q = q * weight[:, None]
        S = X.astype(np.float64)
        P = np.maximum(-np.expm1(self._log_off(S, params)), P_FLOOR)  # (B, K, D)
        R = q[:, :, None] * Y[:, None, :] / P
        return {
            "ysP": np.einsum("bkd,bkh->dh", R, S),
            "s": np.einsum("bk,bkh->h", q, S),
            "n": np.array(float(np.sum(weight))),
        }

    def mstep(self, stats, params, gamma):
        """The fixed-point W update of the module docstring and π with the ET correction."""
        n, s = float(stats["n"]), stats["s"]
        used = s > 1e-12 * max(n, 1.0)
        W = params["W"] * stats["ysP"] / np.where(used, s, 1.0)
        W = np.clip(np.where(used, W, params["W"]), W_MIN, W_MAX)
        pi = float(params["pi"])
        A, B = binomial_truncation(self.H, gamma, pi)
        mean_active = float(s.sum()) / (self.H * max(n, 1e-300))
        pi_new = pi * self.H * A / B * mean_active if B > 0 else mean_active
        return {"W": W, "pi": np.asarray(np.clip(pi_new, PI_MIN, PI_MAX))}

    def preselection_scores(self, Y, params):
        """log p(y | the singleton of h) up to a constant: one matrix product, (B, H)."""
        W = params["W"]
        return Y @ (np.log(W) - np.log1p(-W)) + np.log1p(-W).sum(axis=0)

    def truncated_mass(self, params, gamma):
        return binomial_truncation(self.H, gamma, float(params["pi"]))[0]

    def init_params(self, mean, var, rng, init):
        # causes around the pixel means (or uniform in [0.05, 0.5]), π = 1/H
        if init == "random":
            W = rng.uniform(0.05, 0.5, (self.D, self.H))
        else:
            W = mean[:, None] + 0.25 * rng.random((self.D, self.H))
        return {"W": np.clip(W, 0.05, 0.95), "pi": np.asarray(1.0 / max(self.H, 2))}

    def sample(self, n, params, rng):
        S = (rng.random((n, self.H)) < float(params["pi"])).astype(np.float64)
        P = -np.expm1(S @ np.log1p(-params["W"]).T)
        return (rng.random(P.shape) < P).astype(np.float64), S

    def perturb(self, params, scale, rng):
        if scale <= 0:
            return params
        W = params["W"] + scale * rng.standard_normal(params["W"].shape) * 0.1
        return {"W": np.clip(W, W_MIN, W_MAX), "pi": params["pi"]}


class NoisyOR(TruncatedEMEstimator):
    """Noisy-OR model of binary data learned by truncated EM (a model of the tests).

    Parameters
    ----------
    H : int, default=10
        Number of latent causes.
    **kwargs
        As for :class:`prosper.BSC` (``states``, ``Hprime``, ``gamma``, ``n_states``,
        ``n_iter``, ``backend``, ``random_state``, ...).

    Attributes
    ----------
    W_ : ndarray of shape (D, H)
        Probability that cause h switches pixel d on.
    pi_ : float
        Prior probability of a cause being active.
    """

    _model_class = NoisyORModel
    _model_name = "noisy_or"

    def _check_input(self, Y: Any) -> np.ndarray:
        Y = super()._check_input(Y)
        if not np.all((Y == 0) | (Y == 1)):
            raise ValueError("NoisyOR needs binary data: every entry of Y must be 0 or 1.")
        return Y
