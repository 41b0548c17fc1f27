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

The repairs of latents that EM leaves in a local optimum (``reassignment_ratio``, see
:class:`prosper.solvers.truncated.TruncatedEM`) are BSC's, read for signed latents: a
latent's usage is Σ<|s_h|> (= Σ<s_h²>, the diagonal of the second moment), a column and its
negative are the same latent (duplicates by the absolute cosine), two latents are on
together by Σ<|s_g| |s_h|> (a statistic of its own, computed at the checks only: Σ<s_g s_h>
counts same-sign co-activations minus opposite-sign ones), and a merged pair is
W_g + sign(Σ<s_g s_h>) W_h, what the pair superposes to when on together.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from prosper.models.base import Params
from prosper.models.bsc import BSCModel

__all__ = ["TSCModel"]


class TSCModel(BSCModel):
    """The mathematics of TSC. Parameters: W (D, H), pi (scalar), sigma (scalar).

    ``pi`` is the probability that a latent is non-zero; each sign has probability π/2.
    Since |s| ~ Binomial(H, π) as in BSC, the initialisation, the ET truncation mass, the
    corrected π update and the annealing noise are BSC's (inherited); the values, the prior
    of each value and the preselection differ.
    """

    name = "tsc"
    spare_needs_room = True

    @property
    def values(self) -> np.ndarray:
        return np.array([0.0, -1.0, 1.0])

    def value_log_prior(self, params: Params) -> np.ndarray:
        pi = float(params["pi"])
        half = np.log(pi / 2.0)
        return np.array([np.log1p(-pi), half, half])

    def preselection_coefficients(self, params: Params) -> tuple[np.ndarray, np.ndarray]:
        """Better of the two signed singleton log-joints of each latent, up to constants.

        log p(y, ±e_h) = c − (||y||² ∓ 2 W_hᵀy + ||W_h||²) / (2σ²) + log(π/2) + (H−1) log(1−π),
        so sign ±1 scores ±2 W_hᵀy − ||W_h||² (times 1/(2σ²), plus c'); the common terms do
        not change the ranking and are left out.

        Returns
        -------
        A, C : ndarray of shape (2, H)
        """
        norms = np.einsum("dh,dh->h", params["W"], params["W"])
        return np.array([[-2.0], [2.0]]) * np.ones(self.H), np.stack([-norms, -norms])

    # -- repairs of local optima, read for signed latents -----------------------------------
    def latent_similarity(self, params: Params) -> np.ndarray:
        """Absolute cosine similarity (H, H) of the columns of W: a column and its negative
        describe the same latent (its sign flips with the latent's)."""
        return np.abs(super().latent_similarity(params))

    def repair_statistics(
        self, X: np.ndarray, q: np.ndarray, backend: ModuleType
    ) -> dict[str, np.ndarray]:
        """``pairs`` (H, H): Σ_n <|s_g| |s_h|>, how often two latents are non-zero together
        whatever their signs (the diagonal: Σ_n <|s_h|>), from posterior weights ``q``
        (B, K) over explicit states ``X`` (B, K, H, indices into :attr:`values`)."""
        moments = backend.KERNELS["linear_state_stats"](X, q, np.abs(self.values))
        return {"pairs": np.asarray(moments[1], dtype=np.float64)}

    def latent_pairs(self, stats: dict[str, np.ndarray]) -> np.ndarray | None:
        """Σ_n <|s_g| |s_h|> (:meth:`repair_statistics`); None in an iteration without it."""
        pairs = stats.get("pairs")
        return None if pairs is None else np.asarray(pairs, dtype=np.float64)

    def merged(
        self,
        params: Params,
        sources: dict[int, tuple[int, ...]],
        stats: dict[str, np.ndarray] | None = None,
    ) -> Params:
        """Column h becomes W_g + sign(Σ<s_g s_k>) W_k for ``sources[h] = (g, k)``: what
        the two latents superpose to when on together with their usual relative sign (a
        latent holding a − b that is on with the opposite sign of a's latent wherever b is
        present gives W_a − (W_a − W_b) = W_b). π and σ stay; without ``stats`` the
        columns are added."""
        W = np.array(params["W"], dtype=np.float64)
        old = W.copy()
        ss = None if stats is None else np.asarray(stats["ss"], dtype=np.float64)
        for h, group in sources.items():
            first, *rest = group
            column = old[:, first].copy()
            for k in rest:
                sign = 1.0 if ss is None or ss[first, k] >= 0 else -1.0
                column += sign * old[:, k]
            W[:, h] = column
        return {**params, "W": W}
