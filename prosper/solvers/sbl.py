"""The EM learner of sparse Bayesian learning (classic and Kronecker), driven by run_em.

Snapshots (rows of Y) share γ and σ and are split over the ranks. Per iteration every rank
computes the posterior quantities shared by all snapshots (identical on all ranks, from the
parameters), visits its own snapshots in batches and returns Σ_l μ_l² (n,), the residual sum
and the summed log evidence; one packed Allreduce adds them, and the M-step, identical on
every rank, updates γ and σ. The decision to stop uses the relative change of γ, which is
the same number on every rank. Where Kronecker SBL tests for dead factor entries
(:meth:`KroneckerSBLModel.dead_test_phase`) the E-step also returns one (n,) sum per factor
(``slice_1`` ..), reduced in the same Allreduce. After the iterations
:meth:`SBLLearner.choose_model` compares the learned model with the empty one (x = 0) on
the evidence summed over all ranks and keeps the more probable one.

For Kronecker SBL the fixed-point update of γ and σ is a map θ → G(θ) whose iterates
converge linearly, slowly where many entries are marginal (low SNR). With ``memory`` > 0
the learner extrapolates it by Anderson acceleration (type II, Walker & Ni 2011) in the
model's gauge-free log coordinates: from the last ``memory`` + 1 pairs (θ_k, G(θ_k)) it
takes the combination of the G(θ_k) whose residuals G(θ) - θ combine to the smallest norm.
The guard is the evidence: the E-step at an extrapolated point gives its log evidence, and
when it is below that of the last accepted point the learner goes back to the plain update
G of that point (which costs the one iteration) and restarts the history. Convergence is
still judged by the plain step's change of γ, and no extrapolation is taken once that
change is below ``tol``.
"""

from __future__ import annotations

import itertools
import logging

import numpy as np

from prosper.models.sbl import GaussianPosterior, KroneckerSBLModel, SBLModel
from prosper.parallel import Communicator

log = logging.getLogger(__name__)

__all__ = ["SBLLearner"]

Params = dict[str, np.ndarray]


#: largest change of a log coordinate that an extrapolation may add to the plain update
#: (a factor of e^10 ≈ 2·10⁴); a guard against overflow when entries are not pruned
MAX_LOG_STEP = 10.0
#: classic SBL with an entry cost: the plain EM updates run until they change γ by less
#: than this (relative), then the penalised phase starts
PENALTY_START = 1e-3
_TINY = np.finfo(np.float64).tiny


def _relative_change(new: np.ndarray, old: np.ndarray) -> float:
    diff = new - old
    # the norms as np.linalg.norm computes them (sqrt of the dot product), without its
    # per-call overhead
    with np.errstate(over="ignore"):  # inf when γ was all zero (everything removed)
        return float(np.sqrt(diff.dot(diff)) / max(np.sqrt(old.dot(old)), _TINY))


class _Anderson:
    """Anderson extrapolation of a fixed-point map from its last ``memory`` + 1 iterates,
    guarded by the log evidence (see the module docstring).

    The history holds the logs of whole parameter vectors (-inf on pruned entries), so that
    it can be re-expressed on the entries still active after pruning.
    """

    def __init__(self, model: KroneckerSBLModel, memory: int, learn_sigma: bool) -> None:
        self.model, self.memory, self.learn_sigma = model, memory, learn_sigma
        self.reset()

    def reset(self) -> None:
        self.points: list[Params] = []  # θ_k
        self.images: list[Params] = []  # G(θ_k)
        # their logs, each parameter set as one vector (log γ_1, …, log γ_I, log σ²)
        self._logs: list[tuple[np.ndarray, np.ndarray]] = []
        self.fallback: Params | None = None
        self.accepted_free_energy = -np.inf
        self.extrapolated = False

    def clear_history(self) -> None:
        self.points, self.images, self._logs = [], [], []

    def _append(self, point: Params, image: Params) -> None:
        logs = (
            np.concatenate(self.model.log_parameters(point)),
            np.concatenate(self.model.log_parameters(image)),
        )
        keep = self.memory + 1
        self.points = [*self.points, point][-keep:]
        self.images = [*self.images, image][-keep:]
        self._logs = [*self._logs, logs][-keep:]

    def step(self, point: Params, image: Params, prune: float) -> Params:
        """Record (θ, G(θ)) and return the next point: G(θ) while the history is short,
        else the Anderson combination."""
        self.fallback = image
        self._append(point, image)
        self.extrapolated = len(self.points) >= 2
        if not self.extrapolated:
            return image
        active = self.model.active_factors(image)
        # the coordinates of every θ_k, then of every G(θ_k), in one call
        stacked = np.array([*(t for t, _ in self._logs), *(g for _, g in self._logs)])
        bounds = list(itertools.accumulate([0, *(a.size for a in active), 1]))
        logs = [stacked[:, a:b] for a, b in itertools.pairwise(bounds)]
        coords = self.model.gauge_coordinates(logs, active)
        theta, images = coords[: len(self._logs)], coords[len(self._logs) :]
        residuals = images - theta
        d_res = (residuals[1:] - residuals[:-1]).T  # (length, k): np.diff along the history
        d_img = (images[1:] - images[:-1]).T
        coef = np.linalg.lstsq(d_res, residuals[-1], rcond=None)[0]
        step = np.minimum(np.maximum(d_img @ coef, -MAX_LOG_STEP), MAX_LOG_STEP)
        vector = images[-1] - step
        if not np.isfinite(vector).all():
            self.extrapolated = False
            self.clear_history()
            return image
        out = self.model.from_log_coordinates(vector, active, prune)
        if not self.learn_sigma:  # a fixed σ stays bit for bit what it was
            out["sigma"] = image["sigma"]
        return out

    # -- checkpoint -----------------------------------------------------------------------
    def _pack(self, params: Params) -> np.ndarray:
        return np.concatenate([np.ravel(params[k]) for k in self.model.param_names])

    def _unpack(self, vector: np.ndarray) -> Params:
        out, start = {}, 0
        for name, g in zip(self.model.param_names[:-1], self.model.shapes, strict=True):
            out[name] = vector[start : start + g[1]].copy()
            start += g[1]
        out["sigma"] = np.array(vector[start])
        return out

    def state(self) -> dict[str, np.ndarray]:
        width = sum(s[1] for s in self.model.shapes) + 1
        return {
            "anderson_points": np.array([self._pack(p) for p in self.points]).reshape(-1, width),
            "anderson_images": np.array([self._pack(p) for p in self.images]).reshape(-1, width),
            "anderson_fallback": (
                np.zeros(0) if self.fallback is None else self._pack(self.fallback)
            ),
            "anderson_free_energy": np.array(self.accepted_free_energy),
            "anderson_extrapolated": np.array(self.extrapolated),
        }

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self.clear_history()
        points = [self._unpack(v) for v in np.asarray(state["anderson_points"])]
        images = [self._unpack(v) for v in np.asarray(state["anderson_images"])]
        for point, image in zip(points, images, strict=True):
            self._append(point, image)
        fallback = np.asarray(state["anderson_fallback"])
        self.fallback = self._unpack(fallback) if fallback.size else None
        self.accepted_free_energy = float(state["anderson_free_energy"])
        self.extrapolated = bool(state["anderson_extrapolated"])


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
    memory : int, default=0
        Anderson acceleration of the fixed-point updates of Kronecker SBL from the last
        ``memory`` + 1 iterates (0: none; ignored for classic SBL).
    tol : float or None, default=None
        No extrapolation once the plain update changes γ by less than ``tol`` (relative),
        so that a run stopped by ``tol`` ends on a plain update.
    evidence_window : int, default=0
        > 0: keep the best log evidence of the data, Σ_l log p(y_l | γ, σ²), of the last
        ``evidence_window`` + 1 iterations in :attr:`best_evidence` (in the checkpoint, so
        that a stop by the evidence resumes exactly). 0: none.
    coef_tol : float or None, default=None
        Also report ``coef_change`` (see :meth:`mstep`), the relative change of the
        reduced Σ_l μ_l² between consecutive E-steps, and take no extrapolation in an
        iteration where it is below ``coef_tol``, so that a run stopped by it ends on a
        plain update, as with ``tol``. The last sums are kept in the checkpoint, so that
        such a stop resumes exactly. None: neither.
    entry_cost : float, default=0.0
        Classic SBL only: log-evidence cost κ of each active entry. > 0: once the EM
        updates change γ by less than ``PENALTY_START``, every iteration also sets to zero
        the active entries whose evidence gain (:meth:`SBLModel.entry_gains`) is below κ
        and activates the inactive entry of largest gain above κ at its best γ_j; an entry
        that leaves the active set in this phase is not activated again. 0: plain EM.
    """

    def __init__(
        self,
        model: SBLModel | KroneckerSBLModel,
        *,
        batch_size: int,
        learn_sigma: bool,
        sigma: float | None,
        prune: float,
        memory: int = 0,
        tol: float | None = None,
        evidence_window: int = 0,
        coef_tol: float | None = None,
        entry_cost: float = 0.0,
    ) -> None:
        if entry_cost > 0 and not isinstance(model, SBLModel):
            raise ValueError("entry_cost applies to classic SBL (SBLModel) only.")
        self.model = model
        self.entry_cost = float(entry_cost)
        self.batch_size, self.learn_sigma, self.sigma, self.prune = (
            batch_size,
            learn_sigma,
            sigma,
            prune,
        )
        self.tol = tol or 0.0
        self.evidence_window = int(evidence_window)
        self.coef_tol = coef_tol
        self.params: Params = {}
        self.n_total = 0
        self._posterior: GaussianPosterior | None = None
        self._anderson = (
            _Anderson(model, memory, learn_sigma)
            if memory > 0 and isinstance(model, KroneckerSBLModel)
            else None
        )
        self.set_state(None)

    # -- state beyond the parameters (Anderson history, penalised phase) --------------------
    def checkpoint_state(self) -> dict[str, np.ndarray]:
        """The Anderson history, the evidence window and the phase of the entry cost, so
        that a resumed run continues exactly (empty without any of them)."""
        state = {} if self._anderson is None else self._anderson.state()
        if self.evidence_window:
            state["best_evidence"] = np.array(self.best_evidence, dtype=np.float64)
        if self.coef_tol is not None and self.last_mu2 is not None:
            state["last_mu2"] = self.last_mu2
        if self.entry_cost > 0:
            state["penalty_phase"] = np.array(self.penalised)
            state["penalty_removed"] = self._removed.astype(np.uint8)
        return state

    def set_state(self, state: dict[str, np.ndarray] | None) -> None:
        """Restore :meth:`checkpoint_state` (None or empty: a fresh history)."""
        self.penalised = False
        self.pending = self.entry_cost > 0
        self._removed = np.zeros(self.model.n_components, dtype=bool)
        self.best_evidence: list[float] = []
        # Σ_l μ_l² of the last E-step (None: no E-step yet), for ``coef_change``
        self.last_mu2: np.ndarray | None = None
        if state and "last_mu2" in state:
            self.last_mu2 = np.array(state["last_mu2"], dtype=np.float64)
        if state and "best_evidence" in state:
            self.best_evidence = [float(v) for v in np.ravel(state["best_evidence"])]
        if state and "penalty_phase" in state:
            self.penalised = bool(state["penalty_phase"])
            self._removed = np.asarray(state["penalty_removed"]).astype(bool)
        if self._anderson is None:
            return
        if state and "anderson_points" in state:
            self._anderson.set_state(state)
        else:
            self._anderson.reset()

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
        self.set_state(None)

    def set_params(self, params: Params, n_total: int) -> None:
        """Start from given parameters (a checkpoint or a fitted model)."""
        self.params = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
        self.n_total = n_total
        self._posterior = None
        self.set_state(None)

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
        if self.penalised:
            total["corr2"] = np.zeros(self.model.n_components)
        # the slice sums of the dead-entry test, where the M-step of ``iteration`` may run it
        names = (
            self.model.statistic_names()
            if self.prune > 0 and self.model.dead_test_phase(self.prune, iteration)
            else ()
        )
        for name in names:
            total[name] = np.zeros(self.model.n_components)
        first = True
        for rows in self._batches(Y.shape[0]):
            stats = self.model.estep_batch(
                Y[rows], self._posterior, correlations=self.penalised, slices=bool(names)
            )
            # (the first batch's sums are the totals so far: 0 + x = x)
            total = {k: stats[k] if first else total[k] + stats[k] for k in total}
            first = False
        return total

    def mstep(self, stats: dict[str, np.ndarray], iteration: int) -> dict[str, float]:
        """Update γ, σ from the reduced statistics.

        Returns
        -------
        dict of str to float
            ``free_energy``: mean log evidence per snapshot, log p(y_l | γ, σ²), of the
            parameters entering the iteration; ``gamma_change``: ||γ_new - γ|| / ||γ|| of
            the plain update (of the step back, after a rejected extrapolation);
            ``sigma``; ``n_active``: non-zero entries of γ; ``rejected``: 1 when the
            extrapolated parameters entering the iteration lowered the evidence and were
            replaced by the plain update of the point before them; ``penalised``: 1 when
            the iteration applied the entry cost; with ``coef_change``, ``coef_change``:
            ||Σ_l μ_l² - the same sums of the previous E-step|| / ||the previous sums||
            (inf in the first iteration), how much the posterior means of the parameters
            entering this iteration differ from those entering the last one.
        """
        free_energy = float(stats["free_energy"]) / self.n_total
        extra = {}
        if self.coef_tol is not None:
            mu2 = stats["mu2"]
            last, self.last_mu2 = self.last_mu2, mu2
            extra["coef_change"] = np.inf if last is None else _relative_change(mu2, last)
        # the posterior means rest: the run may stop here, so no extrapolation
        resting = self.coef_tol is not None and extra["coef_change"] < self.coef_tol
        if self.evidence_window:
            total = float(stats["free_energy"])
            best = max(self.best_evidence[-1], total) if self.best_evidence else total
            self.best_evidence = [*self.best_evidence, best][-(self.evidence_window + 1) :]
        old = self.model.gamma(self.params)
        acc = self._anderson
        if acc is not None and acc.extrapolated and not free_energy >= acc.accepted_free_energy:
            # (also when the extrapolated point gave a non-finite evidence)
            self.params = acc.fallback
            acc.extrapolated = False
            acc.clear_history()
            change = _relative_change(self.model.gamma(self.params), old)
            return {**self._metrics(free_energy, change, rejected=True), **extra}
        plain = self.model.mstep(
            stats,
            self.params,
            self._posterior,
            self.n_total,
            learn_sigma=self.learn_sigma,
            prune=self.prune,
            iteration=iteration,
        )
        penalised = self.penalised
        if penalised:
            plain = self._apply_entry_cost(stats, plain)
        change = _relative_change(self.model.gamma(plain), old)
        # the run may stop (tol) only once the penalised phase has run an iteration
        self.pending = self.entry_cost > 0 and not penalised
        if self.pending and change < PENALTY_START:
            self.penalised = True
        if acc is not None:
            acc.accepted_free_energy = free_energy
            if self.model.fixed_point_phase(iteration) and change >= self.tol and not resting:
                prune = self.model.prune_threshold(self.prune, iteration)
                plain = acc.step(self.params, plain, prune)
            else:
                acc.extrapolated = False
        self.params = plain
        return {**self._metrics(free_energy, change, rejected=False, penalised=penalised), **extra}

    def _apply_entry_cost(self, stats: dict[str, np.ndarray], new: Params) -> Params:
        """Remove the active entries whose gain is below the entry cost and activate the
        best inactive one above it (never one removed before in this phase)."""
        gain, best = self.model.entry_gains(stats, self.params, self._posterior, self.n_total)
        was_active = self.model.gamma(self.params) > 0
        gamma = np.where(was_active & (gain < self.entry_cost), 0.0, self.model.gamma(new))
        self._removed |= was_active & (gamma == 0)
        candidates = np.flatnonzero(~was_active & ~self._removed & (gain > self.entry_cost))
        if candidates.size:
            j = candidates[np.argmax(gain[candidates])]
            gamma[j] = best[j]
        return {**new, "gamma": gamma}

    def _metrics(
        self, free_energy: float, change: float, *, rejected: bool, penalised: bool = False
    ) -> dict[str, float]:
        return {
            "free_energy": free_energy,
            "gamma_change": change,
            "sigma": float(self.params["sigma"]),
            "n_active": float(self.model.n_active(self.params)),
            "rejected": float(rejected),
            "penalised": float(penalised),
        }

    # -- the model against x = 0 ----------------------------------------------------------
    def choose_model(self, Y: np.ndarray, comm: Communicator) -> float:
        """Keep the learned model or return the empty one (x = 0), whichever has the larger
        posterior probability (collective).

        Compares log p(Y | γ, σ²) + log P(S) of the learned parameters with
        log p(Y | 0, σ₀²) + log P(∅) under the support prior of
        :meth:`~prosper.models.sbl.SBLModel.support_log_prior`; σ₀² = Σ_l ||y_l||² / (L m)
        maximises the empty model's evidence (with a fixed σ, σ₀ = σ). The sums over the
        snapshots are reduced over the ranks, so every rank makes the same choice.

        Returns
        -------
        float
            The log posterior odds (nats) of the learned model against the empty one;
            negative when the empty model was chosen (and is now :attr:`params`).
        """
        post = self.model.posterior(self.params)
        evidence = power = 0.0
        for rows in self._batches(Y.shape[0]):  # Y may be streamed: one batch at a time
            block = np.asarray(Y[rows], dtype=np.float64)
            evidence += float(self.model.log_evidence(block, post).sum())
            power += float(np.einsum("lm,lm->", block, block))
        sums = comm.allreduce_arrays({"evidence": np.array(evidence), "power": np.array(power)})
        power, size = float(sums["power"]), self.n_total * self.model.n_features
        sigma2 = power / size if self.learn_sigma else float(self.params["sigma"]) ** 2
        empty = -0.5 * (size * np.log(2 * np.pi * sigma2) + power / sigma2)
        margin = float(sums["evidence"]) + self.model.support_log_prior(self.params) - empty
        if margin < 0:
            self.params = self.model.empty_params(sigma2)
            self._posterior = None
        return margin

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
