"""The EM learner of sparse Bayesian learning (classic and Kronecker), driven by run_em.

Snapshots (rows of Y) share γ and σ and are split over the ranks. Per iteration every rank
computes the posterior quantities shared by all snapshots (identical on all ranks, from the
parameters), visits its own snapshots in batches and returns Σ_l μ_l² (n,), the residual sum
and the summed log evidence; one packed Allreduce adds them, and the M-step, identical on
every rank, updates γ and σ. The decision to stop uses the relative change of γ, which is
the same number on every rank.
"""

from __future__ import annotations

import logging

import numpy as np

from prosper.models.sbl import GaussianPosterior, KroneckerSBLModel, SBLModel
from prosper.parallel import Communicator

log = logging.getLogger(__name__)

__all__ = ["SBLLearner"]

Params = dict[str, np.ndarray]


class SBLLearner:
    """E- and M-step of EM-SBL for one model, driven by :func:`prosper.solvers.em.run_em`.

    Parameters
    ----------
    model : SBLModel or KroneckerSBLModel
    batch_size : int
        Snapshots per E-step batch: memory per rank is O(batch_size · n).
    learn_sigma : bool
        Update σ in the M-step, or keep the initial value.
    sigma : float or None
        Initial (or fixed) noise standard deviation; None: the noise of a 10 dB SNR.
    prune : float
        γ entries below ``prune`` times the largest entry (per factor for Kronecker SBL)
        are set to zero for good.
    """

    def __init__(
        self,
        model: SBLModel | KroneckerSBLModel,
        *,
        batch_size: int,
        learn_sigma: bool,
        sigma: float | None,
        prune: float,
    ) -> None:
        self.model = model
        self.batch_size, self.learn_sigma, self.sigma, self.prune = (
            batch_size,
            learn_sigma,
            sigma,
            prune,
        )
        self.params: Params = {}
        self.n_total = 0
        self._posterior: GaussianPosterior | None = None

    # -- set-up ---------------------------------------------------------------------------
    def initialize(self, Y: np.ndarray, comm: Communicator, rng: np.random.Generator) -> None:
        """Initial γ, σ from the mean snapshot power over all ranks (``rng`` is unused:
        the initialisation is deterministic)."""
        power = 0.0
        for rows in self._batches(Y.shape[0]):  # Y may be streamed: one batch at a time
            block = Y[rows]
            power += float(np.einsum("lm,lm->", block, block, dtype=float))
        sums = comm.allreduce_arrays({"n": np.array(float(Y.shape[0])), "power": np.array(power)})
        self.n_total = round(float(sums["n"]))
        power = float(sums["power"]) / self.n_total
        if not power > 0:
            raise ValueError("Y is zero in every snapshot; there is nothing to recover.")
        self.params = self.model.init_params(power, self.sigma)

    def set_params(self, params: Params, n_total: int) -> None:
        """Start from given parameters (a checkpoint or a fitted model)."""
        self.params = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
        self.n_total = n_total
        self._posterior = None

    # -- one iteration --------------------------------------------------------------------
    def _batches(self, n: int):
        for start in range(0, n, self.batch_size):
            yield slice(start, min(start + self.batch_size, n))

    def estep(self, Y: np.ndarray, comm: Communicator, iteration: int) -> dict[str, np.ndarray]:
        """Local sums over this rank's snapshots: ``mu2`` (n,), ``resid``, ``free_energy``."""
        self._posterior = self.model.posterior(self.params)
        total: dict[str, np.ndarray] = {
            "mu2": np.zeros(self.model.n_components),
            "resid": np.array(0.0),
            "free_energy": np.array(0.0),
        }
        for rows in self._batches(Y.shape[0]):
            stats = self.model.estep_batch(Y[rows], self._posterior)
            total = {k: total[k] + stats[k] for k in total}
        return total

    def mstep(self, stats: dict[str, np.ndarray], iteration: int) -> dict[str, float]:
        """Update γ, σ from the reduced statistics.

        Returns
        -------
        dict of str to float
            ``free_energy``: mean log evidence per snapshot, log p(y_l | γ, σ²), of the
            parameters entering the iteration; ``gamma_change``: ||γ_new - γ|| / ||γ||;
            ``sigma``; ``n_active``: non-zero entries of γ.
        """
        old = self.model.gamma(self.params)
        self.params = self.model.mstep(
            stats,
            self.params,
            self._posterior,
            self.n_total,
            learn_sigma=self.learn_sigma,
            prune=self.prune,
            iteration=iteration,
        )
        new = self.model.gamma(self.params)
        change = float(np.linalg.norm(new - old) / max(np.linalg.norm(old), np.finfo(float).tiny))
        return {
            "free_energy": float(stats["free_energy"]) / self.n_total,
            "gamma_change": change,
            "sigma": float(self.params["sigma"]),
            "n_active": float(np.count_nonzero(new)),
        }

    # -- inference with fixed parameters --------------------------------------------------
    def posterior_mean(self, Y: np.ndarray) -> np.ndarray:
        """μ (L, n) of the local snapshots Y (L, m), batch by batch."""
        post = self.model.posterior(self.params)
        out = np.empty((Y.shape[0], self.model.n_components))
        for rows in self._batches(Y.shape[0]):
            out[rows] = self.model.coef(Y[rows], post)
        return out

    def log_evidence(self, Y: np.ndarray) -> np.ndarray:
        """log p(y_l | γ, σ²) (L,) of the local snapshots Y (L, m)."""
        post = self.model.posterior(self.params)
        out = np.empty(Y.shape[0])
        for rows in self._batches(Y.shape[0]):
            out[rows] = self.model.log_evidence(Y[rows], post)
        return out
