"""Truncated EM (Expectation Truncation) for every discrete-latent model.

One E-step visits this rank's rows in batches: preselection, candidate states, log-joints,
log marginals and local sufficient statistics. With ET data selection (N_cut < N) it makes
two passes: the first ranks all points of all ranks by their log marginal (a distributed
selection of scalars, no data moves), the second accumulates the statistics of the chosen
points. Memory is bounded by ``batch_size``, plus one float per local data point.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from prosper.models.base import Params, TruncatedModel
from prosper.parallel import Communicator, global_top_mask
from prosper.solvers.annealing import Schedule
from prosper.solvers.em import Rows
from prosper.solvers.states import ExpectationTruncation

log = logging.getLogger(__name__)

__all__ = ["Annealing", "TruncatedEM"]


@dataclass(frozen=True)
class Annealing:
    """Deterministic annealing and ET data selection schedules.

    Attributes
    ----------
    temperature : Schedule
        T >= 1; the E-step uses β = 1/T.
    anneal_prior : bool
        Temper the prior together with the likelihood.
    noise : Schedule
        Relative size of Gaussian parameter noise after each M-step (0 = none).
    ncut_factor : Schedule
        ET data selection: N_cut = floor(N (1 - (1 - A) f)); 0 keeps every point.
    """

    temperature: Schedule
    anneal_prior: bool
    noise: Schedule
    ncut_factor: Schedule

    def end(self, n_iter: int) -> int:
        """First iteration from which temperature and noise no longer change."""
        return max(self.temperature.end(n_iter), self.noise.end(n_iter))


class TruncatedEM:
    """The E- and M-step of truncated EM for one model, driven by :func:`run_em`.

    Parameters
    ----------
    model : TruncatedModel
    states : ExpectationTruncation
    annealing : Annealing
    n_iter : int
        Length of the run (schedules given as fractions refer to it).
    batch_size : int
    backend : module
        Kernel module from :func:`prosper.backends.get_backend`.
    seed : int
        Seed of the annealing noise: iteration ``it`` draws from ``default_rng([seed, it])``,
        so a resumed run draws exactly what the uninterrupted run drew.
    """

    def __init__(
        self,
        model: TruncatedModel,
        states: ExpectationTruncation,
        annealing: Annealing,
        *,
        n_iter: int,
        batch_size: int,
        backend: ModuleType,
        seed: int,
    ) -> None:
        self.model, self.states, self.annealing = model, states, annealing
        self.n_iter, self.batch_size, self.backend, self.seed = n_iter, batch_size, backend, seed
        self.params: Params = {}
        self.n_total = 0

    # -- set-up ---------------------------------------------------------------------------
    def initialize(self, Y: Rows, comm: Communicator, rng: np.random.Generator, init: str) -> None:
        """Initial parameters from the data moments of all ranks (identical on every rank).

        The mean and the variance per dimension are accumulated in float64 over blocks of
        ``batch_size`` rows (two passes: the variance about the mean, since E[y²] − mean²
        cancels badly for data with an offset), so no full or centred copy of Y is made.
        """
        n_local = int(Y.shape[0])
        total = np.zeros(Y.shape[1])
        for rows in self._batches(n_local):
            total += Y[rows].sum(axis=0, dtype=np.float64)
        sums = comm.allreduce_arrays({"n": np.array(float(n_local)), "sum": total})
        n = float(sums["n"])
        mean = sums["sum"] / n
        sumsq = np.zeros(Y.shape[1])
        for rows in self._batches(n_local):
            block = Y[rows]
            centred = block - mean.astype(block.dtype)
            sumsq += np.einsum("nd,nd->d", centred, centred, dtype=np.float64)
        var = comm.allreduce_arrays({"sumsq": sumsq})["sumsq"] / n
        self.n_total = round(n)
        self.params = self.model.init_params(mean, var, rng, init)

    def set_params(self, params: Params, n_total: int) -> None:
        """Start from given parameters (a checkpoint, or user-supplied initial values)."""
        self.params = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
        self.n_total = n_total

    # -- one iteration --------------------------------------------------------------------
    def betas(self, iteration: int) -> tuple[float, float]:
        T = max(self.annealing.temperature(iteration, self.n_iter), 1.0)
        beta = 1.0 / T
        return beta, (beta if self.annealing.anneal_prior else 1.0)

    def n_cut(self, iteration: int) -> int:
        factor = self.annealing.ncut_factor(iteration, self.n_iter)
        if factor <= 0:
            return self.n_total
        A = self.model.truncated_mass(self.params, self.states.gamma)
        return max(1, int(np.floor(self.n_total * (1.0 - (1.0 - A) * factor))))

    def _batches(self, n: int):
        for start in range(0, n, self.batch_size):
            yield slice(start, min(start + self.batch_size, n))

    def _pass(self, Y, beta, prior_beta, mask, accumulate):
        """One sweep over the local batches: log marginals and summed statistics."""
        log_marginal = np.empty(Y.shape[0])
        total: dict[str, np.ndarray] | None = None
        for rows in self._batches(Y.shape[0]):
            lm, stats = self.model.estep_batch(
                Y[rows],
                self.states,
                self.params,
                beta,
                prior_beta,
                None if mask is None else mask[rows],
                accumulate,
                self.backend,
            )
            log_marginal[rows] = lm
            if stats is not None:
                total = stats if total is None else {k: total[k] + stats[k] for k in total}
        if total is not None and hasattr(self.backend, "to_host"):
            # a GPU backend keeps the statistics on the device until the pass is done
            total = self.backend.to_host(total)
        return log_marginal, total

    def estep(self, Y: Rows, comm: Communicator, iteration: int) -> dict[str, np.ndarray]:
        """Local sufficient statistics of this rank's rows (summed, not yet reduced).

        The returned dict also holds ``free_energy`` (sum of log marginals of all local
        points at temperature 1) and ``n_cut`` (this rank's selected points). ``Y`` is read
        ``batch_size`` rows at a time (twice with ET data selection).
        """
        beta, prior_beta = self.betas(iteration)
        n_cut = self.n_cut(iteration)
        if n_cut >= self.n_total:
            log_marginal, stats = self._pass(Y, beta, prior_beta, None, True)
            mask = None
        else:
            log_marginal, _ = self._pass(Y, beta, prior_beta, None, False)
            mask = global_top_mask(log_marginal, n_cut, comm).astype(Y.dtype)
            _, stats = self._pass(Y, beta, prior_beta, mask, True)
        stats["free_energy"] = np.array(float(log_marginal.sum()))
        stats["n_cut"] = np.array(float(Y.shape[0] if mask is None else mask.sum()))
        return stats

    def mstep(self, stats: dict[str, np.ndarray], iteration: int) -> dict[str, float]:
        """Update the parameters from reduced statistics; returns per-iteration metrics."""
        beta, _ = self.betas(iteration)
        new = self.model.mstep(stats, self.params, self.states.gamma)
        scale = self.annealing.noise(iteration, self.n_iter)
        if scale > 0:
            new = self.model.perturb(new, scale, np.random.default_rng([self.seed, iteration]))
        self.params = new
        return {
            "free_energy": float(stats["free_energy"]) / self.n_total,
            "temperature": 1.0 / beta,
            "n_cut": float(stats["n_cut"]),
        }

    def posterior_mean(self, Y: Rows) -> np.ndarray:
        """<s> (N, H) for local rows, batch by batch, at temperature 1."""
        out = np.empty((Y.shape[0], self.model.H))
        for rows in self._batches(Y.shape[0]):
            out[rows] = self.model.posterior_mean(Y[rows], self.states, self.params, self.backend)
        return out

    def log_marginals(self, Y: Rows) -> np.ndarray:
        """log sum_{s in K_n} p(s, y_n) per local row at temperature 1."""
        return self._pass(Y, 1.0, 1.0, None, False)[0]
