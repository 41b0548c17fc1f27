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
:class:`prosper.solvers.truncated.TruncatedEM`) are BSC's, read for signed latents
(:class:`prosper.models.base.ActivityRepairs`, shared with DSC): a latent's usage is
Σ<|s_h|> (= Σ<s_h²>, the diagonal of the second moment), a column and its negative are the
same latent (duplicates by the absolute cosine), two latents are on together by
Σ<|s_g| |s_h|> (a statistic of its own, computed at the checks only: Σ<s_g s_h> counts
same-sign co-activations minus opposite-sign ones), and a merged pair is
W_g + sign(Σ<s_g s_h>) W_h, what the pair superposes to when on together.
"""

from __future__ import annotations

import numpy as np

from prosper.models.base import ActivityRepairs, Params
from prosper.models.bsc import BSCModel

__all__ = ["TSCModel"]


class TSCModel(ActivityRepairs, BSCModel):
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
