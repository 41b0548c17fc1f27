"""Truncated EM (Expectation Truncation) for every discrete-latent model.

One E-step visits this rank's rows in batches: preselection, candidate states, log-joints,
log marginals and local sufficient statistics. With ET data selection (N_cut < N) the
log marginals of all points of all ranks choose the N_cut best explained (a distributed
selection of scalars, no data moves); where few points are cut, the pass that gives them
also sums the statistics of all points and those of the cut points are subtracted (the cut
points read again), else a second pass sums the statistics of the chosen points. Memory is
bounded by ``batch_size``, plus one float per local data point.

With an evolutionary state set (:class:`prosper.solvers.evolutionary.EvolutionaryStates`)
the solver runs the E-step itself over explicit per-row states: the set's search improves
each row's S states on the model's log-joint, then tempered posterior weights, the log
marginal at T=1 and the model's statistics from those weights
(:meth:`prosper.models.base.TruncatedModel.state_stats`). The states of this rank's rows
(N_local · S · ⌈H / 8⌉ bytes for binary latents, N_local · S · H otherwise) persist across
iterations and go to the checkpoint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType

import numpy as np
from scipy.stats import chi2

from prosper.backends.numpy_backend import log_normalise
from prosper.models.base import Params, TruncatedModel
from prosper.parallel import Communicator, global_top_mask
from prosper.solvers.annealing import Schedule
from prosper.solvers.em import Rows
from prosper.solvers.evolutionary import EvolutionaryStates
from prosper.solvers.states import ExpectationTruncation

log = logging.getLogger(__name__)

__all__ = ["Annealing", "TruncatedEM"]

#: unused latents are looked for every this many iterations, in the first half of a run
REASSIGN_EVERY = 5
#: a point is poorly explained when its log marginal lies further below the median than a
#: well-fitting Gaussian model's residual would put it with this probability: half the
#: distance between the chi-square quantiles of D degrees of freedom (about 30 nats for
#: D = 100; a missing bar of 10x10 bars costs about 125)
REASSIGN_MISFIT_P = 1e-4
#: a re-initialised latent takes the residual of the median poorly explained point (the very
#: worst are outliers with many causes, whose residual no single latent can take over), at
#: most the point below which this fraction of all points lies
REASSIGN_QUANTILE = 0.1
#: two latents whose columns have a cosine above this are duplicates: the less used one is
#: re-initialised as an unused one would be (:meth:`TruncatedModel.latent_similarity`)
REASSIGN_DUPLICATE = 0.95
#: two latents are merge candidates when they are on together in at least this share of
#: the less used one's activations ...
MERGE_SHARE = 0.4
#: ... and at least this many times as often as independent latents with their usage would
#: be (for binary latents, :meth:`TruncatedModel.latent_pairs`)
MERGE_LIFT = 2.0
#: ET data selection: where at most this share of the points is cut, one E-step pass sums
#: the statistics of all points and those of the cut points are subtracted (the cut points
#: read twice) instead of a first pass of log marginals only over all points. Set below the
#: cost of a log-marginal pass relative to a statistics pass, where the two break even
#: (0.57-0.83 for the six models on bars, RESULTS.md, session 13)
SUBTRACT_CUT = 0.25


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


def misfit_margin(D: int) -> float:
    """Nats below the median log marginal beyond which a point counts as poorly explained
    (see ``REASSIGN_MISFIT_P``)."""
    return 0.5 * float(chi2.isf(REASSIGN_MISFIT_P, D) - chi2.median(D))


def _added(total: dict | None, part: dict | None) -> dict | None:
    """Statistics summed key by key (None: nothing yet)."""
    if part is None:
        return total
    return part if total is None else {k: total[k] + part[k] for k in total}


def _components(linked: np.ndarray) -> list[list[int]]:
    """Connected groups (sorted lists of indices) of a symmetric boolean matrix."""
    seen = np.zeros(linked.shape[0], dtype=bool)
    groups = []
    for start in range(linked.shape[0]):
        if seen[start]:
            continue
        group, todo = [], [start]
        seen[start] = True
        while todo:
            h = todo.pop()
            group.append(h)
            for g in np.flatnonzero(linked[h] & ~seen):
                seen[g] = True
                todo.append(int(g))
        groups.append(sorted(group))
    return groups


class TruncatedEM:
    """The E- and M-step of truncated EM for one model, driven by :func:`run_em`.

    Parameters
    ----------
    model : TruncatedModel
    states : ExpectationTruncation or EvolutionaryStates
    annealing : Annealing
    n_iter : int
        Length of the run (schedules given as fractions refer to it).
    batch_size : int
    backend : module
        Kernel module from :func:`prosper.backends.get_backend`.
    seed : int
        Seed of the annealing noise: iteration ``it`` draws from ``default_rng([seed, it])``,
        so a resumed run draws exactly what the uninterrupted run drew.
    search_rounds : int, default=20
        Evolutionary states only: E-step searches run at the fitted parameters on new data
        (``transform``, ``score``) before their posterior is read, since new rows start
        without the states that training built over its iterations.
    reassignment_ratio : float, default=0.0
        Every ``REASSIGN_EVERY`` iterations of the first half of the run, the least used
        latent is re-initialised if its usage (:meth:`TruncatedModel.latent_usage`) is
        below this fraction of the median latent's, or if its dictionary element
        duplicates another's (:meth:`TruncatedModel.latent_similarity`): it takes the
        residual of a poorly explained data point (:meth:`TruncatedModel.reassigned`).
        Before that, latents that are only ever on together with others are merged
        (:meth:`_merges`, for models with :meth:`TruncatedModel.latent_pairs`). 0 never
        does either. Models without ``latent_usage`` ignore it.
    """

    def __init__(
        self,
        model: TruncatedModel,
        states: ExpectationTruncation | EvolutionaryStates,
        annealing: Annealing,
        *,
        n_iter: int,
        batch_size: int,
        backend: ModuleType,
        seed: int,
        search_rounds: int = 20,
        reassignment_ratio: float = 0.0,
    ) -> None:
        self.model, self.states, self.annealing = model, states, annealing
        self.n_iter, self.batch_size, self.backend, self.seed = n_iter, batch_size, backend, seed
        self.search_rounds = int(search_rounds)
        self.reassignment_ratio = float(reassignment_ratio)
        # (y, <s>) of the data point an unused latent would take over this iteration
        self._spare: tuple[np.ndarray, np.ndarray] | None = None
        self.params: Params = {}
        self.n_total = 0
        self.evolutionary = isinstance(states, EvolutionaryStates)
        # the stored states of a resumed run, read for this rank's rows once it knows them
        self._stored_states = None
        self._comm: Communicator | None = None
        # rank 0's buffer of every row's states for the checkpoint (several ranks only)
        self._gathered: np.ndarray | None = None

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
        if factor <= 0 or self.evolutionary:
            return self.n_total
        A = self.model.truncated_mass(self.params, self.states.gamma)
        return max(1, int(np.floor(self.n_total * (1.0 - (1.0 - A) * factor))))

    def _batches(self, n: int):
        for start in range(0, n, self.batch_size):
            yield slice(start, min(start + self.batch_size, n))

    # -- evolutionary states ----------------------------------------------------------------
    def _attach_rows(self, n_local: int, comm: Communicator) -> None:
        """Hold the states of this rank's rows (collective on the first E-step)."""
        if self._comm is not None:
            return
        self._comm = comm
        offset = comm.exscan(n_local)
        self.states.attach(n_local, offset)
        if self._stored_states is not None:
            self.states.restore(self._stored_states.read(offset, offset + n_local))
            self._stored_states = None

    def _explicit_batch(self, Y, rows, iteration, beta, prior_beta, weight, accumulate):
        """Search, posterior and statistics of one batch of local rows (a slice) over their
        evolutionary states, which it updates.

        Returns the log marginals (B,) at T=1 and the statistics (or None). A model's fused
        search and E-step (:meth:`TruncatedModel.state_estep`) runs where its backend has
        one: the same states and numbers in one pass over each row, reading and writing the
        stored states in place (bits for binary latents); the generic path unpacks them.
        """
        st = self.states
        global_rows = np.arange(rows.start, rows.stop) + st.offset
        fresh = st.fresh[rows]
        fused = self.model.state_estep(Y, self.params, self.backend)
        if fused is not None:
            scores, estep = fused
            new, log_marginal, stats = st.evolve_estep(
                st.data[rows],
                scores,
                global_rows,
                iteration,
                fresh,
                estep,
                beta,
                prior_beta,
                weight,
                accumulate,
                in_place=True,
                packed=True,
            )
            # rows initialised in this E-step were searched in a copy
            if not np.may_share_memory(new, st.data):
                st.data[rows] = new
        else:
            X, ll, lp = self._search(Y, st.rows(rows), global_rows, iteration, fresh, beta)
            st.store(rows, X)
            log_marginal, stats = self._posterior(
                Y, X, ll, lp, beta, prior_beta, weight, accumulate
            )
        st.fresh[rows] = False
        return log_marginal, stats

    def _search(self, Y, X, rows, iteration, fresh, beta=1.0):
        """The state set's search for a batch (see :meth:`_searcher`)."""
        return self._searcher(Y, beta)(X, rows, iteration, fresh)

    def _searcher(self, Y, beta=1.0):
        """``search(X, rows, iteration, fresh)`` for a batch at the current parameters: the
        model's fused search where its backend has one, else the generic search over the
        model's log-joint. The batch's terms (Wᵀy, scores) are computed once, here, so that
        repeated searches of one batch (new data) do not redo them."""
        kernels = self.backend.KERNELS
        fused = self.model.state_search(Y, self.params, self.backend)
        if fused is not None:
            scores, run = fused
            return lambda X, rows, it, fresh: self.states.evolve(
                X, None, scores, rows, it, fresh, kernels, run
            )
        scores, log_joint = self.model.state_scorer(Y, self.params, self.backend, beta)
        return lambda X, rows, it, fresh: self.states.evolve(
            X, log_joint, scores, rows, it, fresh, kernels
        )

    def _posterior(self, Y, X, ll, lp, beta, prior_beta, weight, accumulate):
        """Log marginals at T=1 and (if asked) the model's statistics from the tempered
        posterior over explicit states X (B, K, H) with log-likelihoods and log-priors."""
        log_marginal, q = log_normalise(ll + lp)
        if not accumulate:
            return log_marginal, None
        if beta != 1.0 or prior_beta != 1.0:
            q = log_normalise(beta * ll + prior_beta * lp)[1]
        stats = self.model.state_stats(Y, X, q, weight, self.params, self.backend, beta)
        return log_marginal, stats

    def _generic_batch(self, Y, beta, prior_beta, mask, accumulate):
        """The E-step of a batch over the ET candidate states for a model without a fused
        E-step: its log-joint and statistics over the explicit states."""
        X = self.model.candidates(Y, self.states, self.params).indices()
        ll, lp = self.model.state_scorer(Y, self.params, self.backend, beta)[1](X)
        weight = np.ones(Y.shape[0]) if mask is None else mask.astype(np.float64)
        return self._posterior(Y, X, ll, lp, beta, prior_beta, weight, accumulate)

    def checkpoint_state(self) -> dict[str, np.ndarray]:
        """The evolutionary states of all rows, gathered to rank 0 in global row order
        (collective; empty for stateless state sets and on the other ranks). The array is
        the live storage (one rank) or rank 0's gather buffer: valid until the next E-step,
        so the recorder writes it at once."""
        if not self.evolutionary or self._comm is None:
            return {}
        # rank 0 keeps its buffer of all rows between checkpoints (written at once, before
        # the next E-step): a new (N, S, ⌈H/8⌉) array per iteration cost more than the write
        rows = self._comm.gather_rows(self.states.packed(), out=self._gathered)
        if rows is None:
            return {}
        if self._comm.size > 1:
            self._gathered = rows
        # "rows/..." marks a block of rows in global order: on resume each rank reads its own
        return {"rows/evo_states": rows}

    def set_state(self, state: dict | None) -> None:
        """Restore :meth:`checkpoint_state`: this rank's rows are read at its first E-step."""
        if self.evolutionary and state and "rows/evo_states" in state:
            self._stored_states = state["rows/evo_states"]

    def _pass(self, Y, beta, prior_beta, mask, accumulate, iteration=0):
        """One sweep over the local batches: log marginals and summed statistics."""
        log_marginal = np.empty(Y.shape[0])
        total: dict[str, np.ndarray] | None = None
        for rows in self._batches(Y.shape[0]):
            if self.evolutionary:
                weight = np.ones(rows.stop - rows.start) if mask is None else mask[rows]
                lm, stats = self._explicit_batch(
                    Y[rows], rows, iteration, beta, prior_beta, weight.astype(np.float64),
                    accumulate,
                )  # fmt: skip
            else:
                lm, stats = self._et_batch(
                    Y[rows], beta, prior_beta, None if mask is None else mask[rows], accumulate
                )
            log_marginal[rows] = lm
            total = _added(total, stats)
        if total is not None:
            # a GPU backend keeps the statistics on the device until the pass is done
            total = self.backend.to_host(total)
        return log_marginal, total

    def _et_batch(self, block, beta, prior_beta, mask, accumulate):
        """The E-step of one batch over the ET candidate states: the model's fused E-step,
        else the generic one over the explicit states."""
        if not self.model.fused_estep:
            return self._generic_batch(block, beta, prior_beta, mask, accumulate)
        return self.model.estep_batch(
            block, self.states, self.params, beta, prior_beta, mask, accumulate, self.backend
        )

    def _subtracts(self, n_cut: int) -> bool:
        """Whether ET data selection keeping ``n_cut`` points subtracts the cut points'
        statistics (few cut, ``SUBTRACT_CUT``) instead of making two passes; the same on
        every rank."""
        return self.n_total - n_cut <= SUBTRACT_CUT * self.n_total

    def _selected_stats(self, Y, beta, prior_beta, n_cut, comm):
        """Log marginals of all local points and the statistics of those ET's data selection
        keeps (the ``n_cut`` best explained of all ranks), with the mask of the kept points.

        Where few points are cut (at most ``SUBTRACT_CUT`` of them) one pass gives the log
        marginals that choose them and the statistics of all points, from which those of the
        cut points, read again, are taken away (except the model's
        :attr:`~prosper.models.base.TruncatedModel.unmasked_stats`); else a first pass of
        log marginals only chooses the points and a second sums the kept points' statistics.
        Both give the same statistics up to round-off.
        """
        subtract = self._subtracts(n_cut)
        log_marginal, stats = self._pass(Y, beta, prior_beta, None, subtract)
        kept = global_top_mask(log_marginal, n_cut, comm)
        mask = kept.astype(Y.dtype)
        if not subtract:
            return log_marginal, self._pass(Y, beta, prior_beta, mask, True)[1], mask
        cut = np.flatnonzero(~kept)
        removed = None
        for start in range(0, cut.size, self.batch_size):
            block = Y[cut[start : start + self.batch_size]]
            removed = _added(removed, self._et_batch(block, beta, prior_beta, None, True)[1])
        if removed is not None:
            removed = self.backend.to_host(removed)
            whole = self.model.unmasked_stats
            stats = {k: v if k in whole else v - removed[k] for k, v in stats.items()}
        return log_marginal, stats, mask

    def estep(self, Y: Rows, comm: Communicator, iteration: int) -> dict[str, np.ndarray]:
        """Local sufficient statistics of this rank's rows (summed, not yet reduced).

        The returned dict also holds ``free_energy`` (sum of log marginals of all local
        points at temperature 1) and ``n_cut`` (this rank's selected points). ``Y`` is read
        ``batch_size`` rows at a time (with ET data selection the cut points, or all points,
        a second time).
        """
        beta, prior_beta = self.betas(iteration)
        self.model.start_iteration(iteration, self.n_iter)
        n_cut = self.n_cut(iteration)
        if self.evolutionary:
            self._attach_rows(int(Y.shape[0]), comm)
        if n_cut >= self.n_total:
            log_marginal, stats = self._pass(Y, beta, prior_beta, None, True, iteration)
            mask = None
        else:
            log_marginal, stats, mask = self._selected_stats(Y, beta, prior_beta, n_cut, comm)
        if self._reassigns(iteration):
            self._spare = self._spare_point(Y, comm, log_marginal)
            stats.update(self._repair_stats(Y, beta, prior_beta, mask))
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
        metrics = {
            "free_energy": float(stats["free_energy"]) / self.n_total,
            "temperature": 1.0 / beta,
            "n_cut": float(stats["n_cut"]),
        }
        if self._reassigning():
            new, metrics["reassigned"], metrics["merged"] = self._reassign(stats, new, iteration)
        self.params = new
        return metrics

    # -- unused latents ---------------------------------------------------------------------
    def _reassigning(self) -> bool:
        """Whether this run re-initialises unused latents at all."""
        supported = type(self.model).latent_usage is not TruncatedModel.latent_usage
        return self.reassignment_ratio > 0 and supported

    def _reassigns(self, iteration: int) -> bool:
        """Whether ``iteration`` looks for an unused latent (the same on every rank)."""
        return (
            self._reassigning()
            and iteration > 0
            and iteration % REASSIGN_EVERY == 0
            and iteration < self.n_iter // 2
        )

    def _repair_stats(self, Y: Rows, beta: float, prior_beta: float, mask) -> dict:
        """The model's statistics for the repairs only (:meth:`TruncatedModel.repair_statistics`)
        from the posterior of this E-step (the same candidate states, temperature and data
        selection): one more sweep over the local batches, made at the checks only and only
        for a model that has such statistics. They join the others in the one Allreduce."""
        if type(self.model).repair_statistics is TruncatedModel.repair_statistics:
            return {}
        total: dict[str, np.ndarray] = {}
        for rows in self._batches(Y.shape[0]):
            block = Y[rows]
            weight = None if mask is None else np.asarray(mask[rows], dtype=np.float64)
            if self.evolutionary:
                part, X = None, self.states.rows(rows)  # this E-step's states, after its search
            else:
                # a fused kernel where the backend has one (no explicit states), else the
                # batch's candidate states enumerated
                part = self.model.repair_batch(
                    block, self.states, self.params, beta, prior_beta, weight, self.backend
                )
                if part is None:
                    X = self.model.candidates(block, self.states, self.params).indices()
            if part is None:
                ll, lp = self.model.state_scorer(block, self.params, self.backend, beta)[1](X)
                q = log_normalise(beta * np.asarray(ll) + prior_beta * np.asarray(lp))[1]
                if weight is not None:
                    q = q * weight[:, None]
                part = self.model.repair_statistics(X, q, self.backend)
            total = {k: total[k] + part[k] for k in part} if total else part
        return total

    def _spare_point(
        self, Y: Rows, comm: Communicator, log_marginal: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """(y, <s>) of the median poorly explained point of all ranks, sent by its rank to
        all (collective: the choice and the values are the same on every rank, whatever the
        number of ranks); None when no point is poorly explained.

        Measured on bars: the single worst point found all bars in 11 of 20 runs (10x10,
        π = 2/H), a fixed 10 % quantile in 20 of 20 but missed the rare bars of π = 1/H,
        where only 5 % of the points hold a given bar. For a model with
        ``spare_needs_room`` (TSC) and ET states, only points whose most probable state has
        fewer than gamma non-zero latents count (:meth:`_at_limit`): at 16x16 signed bars,
        π = 2/H, 14 % of the points hold more bars than gamma = 3 explains, and the point
        drawn from those gave a two-bar residual (14 of 20 runs found every bar, 20 of 20
        with the rule).
        """
        n = self.n_total
        upper = global_top_mask(log_marginal, (n + 1) // 2, comm)
        median = comm.allreduce(float(log_marginal[upper].min()) if upper.any() else np.inf, "min")
        cut = median - misfit_margin(int(Y.shape[1]))
        eligible = log_marginal < cut
        if self.model.spare_needs_room and not self.evolutionary:
            eligible &= ~self._at_limit(Y, eligible)
        misfits = comm.allreduce(int(np.count_nonzero(eligible)))
        if misfits == 0:
            return None
        k = min(max(1, (misfits + 1) // 2), max(1, int(np.ceil(REASSIGN_QUANTILE * n))))
        worst = np.flatnonzero(global_top_mask(-np.where(eligible, log_marginal, np.inf), k, comm))
        offset = comm.exscan(int(Y.shape[0]))
        # of the k worst-explained points the best explained; ties go to the lowest row
        mine = (-np.inf, 0)
        if worst.size:
            i = worst[int(np.argmax(log_marginal[worst]))]
            mine = (float(log_marginal[i]), -(offset + int(i)))
        candidates = comm.allgather(mine)
        owner = max(range(len(candidates)), key=candidates.__getitem__)
        payload = None
        if owner == comm.rank:
            row = -candidates[owner][1] - offset  # the chosen global row, as a local index
            rows = slice(row, row + 1)
            if self.evolutionary:
                mean_s = self.kept_posterior_mean(rows, Y[rows])
            else:
                mean_s = self.model.posterior_mean(Y[rows], self.states, self.params, self.backend)
            payload = (
                np.asarray(Y[rows], dtype=np.float64)[0],
                np.asarray(self.backend.to_host({"s": mean_s})["s"], dtype=np.float64)[0],
            )
        return comm.bcast(payload, root=owner)

    def _at_limit(self, Y: Rows, points: np.ndarray) -> np.ndarray:
        """Whether the most probable candidate state of each local point in ``points`` (bool,
        shape (N_local,)) has ``gamma`` non-zero latents, the most the ET state set allows:
        such a point may be poorly explained because of the truncation, not for want of a
        latent (bool, shape (N_local,), False outside ``points``). One sweep over the
        batches that hold such points, at the checks only."""
        full = np.zeros(points.shape[0], dtype=bool)
        for rows in self._batches(Y.shape[0]):
            sel = np.flatnonzero(points[rows])
            if sel.size == 0:
                continue
            block = np.asarray(Y[rows])[sel]
            X = self.model.candidates(block, self.states, self.params).indices()
            ll, lp = self.model.state_scorer(block, self.params, self.backend, 1.0)[1](X)
            best = np.argmax(np.asarray(ll) + np.asarray(lp), axis=1)
            active = np.count_nonzero(X[np.arange(X.shape[0]), best], axis=1)
            full[rows.start + sel] = active >= self.states.gamma
        return full

    def _reassign(self, stats: dict[str, np.ndarray], params: Params, iteration: int):
        """``params`` after this iteration's repairs of latents EM does not move out of a
        local optimum, with the metrics ``reassigned`` (the re-initialised latent, -1: none)
        and ``merged`` (how many latents a merge redefined).

        First latents that are only ever on together with others are merged
        (:meth:`_merges`); then the least used latent among those used less than
        ``reassignment_ratio`` times the median latent, and the less used one of two
        duplicates, takes the residual of the spare point (when there is one).
        """
        spare, self._spare = self._spare, None
        if not self._reassigns(iteration):
            return params, -1.0, 0.0
        sources = self._merges(stats, self.model.latent_similarity(params))
        if sources:
            log.info(
                "iteration %d: latents %s re-defined as the pairs %s they are on together as",
                iteration,
                sorted(sources),
                [sources[h] for h in sorted(sources)],
            )
            params = self.model.merged(params, sources, stats)
        if spare is None:
            return params, -1.0, float(len(sources))
        usage = self.model.latent_usage(stats)
        median = float(np.median(usage))
        candidate = usage < self.reassignment_ratio * median
        similarity = self.model.latent_similarity(params)
        if similarity is not None:
            g, h = np.nonzero(np.triu(similarity, 1) > REASSIGN_DUPLICATE)
            candidate[np.where(usage[g] <= usage[h], g, h)] = True
        candidate[list(sources)] = False
        if not candidate.any():
            return params, -1.0, float(len(sources))
        h = int(np.flatnonzero(candidate)[np.argmin(usage[candidate])])
        log.info(
            "iteration %d: latent %d (used %.2g times as much as the median latent) "
            "re-initialised to explain a poorly explained data point",
            iteration,
            h,
            usage[h] / median if median > 0 else 0.0,
        )
        return self.model.reassigned(params, h, *spare), float(h), float(len(sources))

    def _merges(
        self, stats: dict[str, np.ndarray], similarity: np.ndarray | None = None
    ) -> dict[int, tuple[int, ...]]:
        """Latents to redefine as pairs of latents that are on together: {h: (g, k)}.

        Two latents are linked when they are on together in at least ``MERGE_SHARE`` of the
        less used one's activations, at least ``MERGE_LIFT`` times as often as independent
        latents would be, and at least ``reassignment_ratio`` times as often as the median
        latent is on, and their columns are not duplicates (``similarity`` at most
        ``REASSIGN_DUPLICATE``: copies of one cause that share its points, as GSC's slabs
        allow, are left to the duplicate rule of :meth:`_reassign`). In each group of linked
        latents the patterns that occur are each latent alone (its activations without a
        linked partner) and each linked pair on together; the group's latents are given its
        most frequent patterns, as many as it has latents.

        The local optima this leaves (seen on bars with π = 1/H): three latents stand for
        three bars as (a + b − c)/2 and its rotations, so that every bar takes two of them;
        or a latent b − a is only ever on together with a latent a. Every point is
        explained, so no point is poorly explained and no latent unused; the merge gives
        each bar a latent and the same fit with one active latent fewer per point.
        """
        pairs = self.model.latent_pairs(stats)
        if pairs is None:
            return {}
        usage = np.diag(pairs).copy()
        n = float(stats["n"])
        smaller = np.minimum.outer(usage, usage)
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(smaller > 0, pairs / smaller, 0.0)
            lift = np.where(smaller > 0, pairs * n / np.outer(usage, usage), 0.0)
        # a pair on together as rarely as an under-used latent is on is no cause of its own
        frequent = pairs >= self.reassignment_ratio * float(np.median(usage))
        linked = (share >= MERGE_SHARE) & (lift >= MERGE_LIFT) & frequent
        if similarity is not None:
            linked &= similarity <= REASSIGN_DUPLICATE
        np.fill_diagonal(linked, False)
        sources: dict[int, tuple[int, ...]] = {}
        for group in _components(linked):
            if len(group) < 2:
                continue
            alone = {h: usage[h] - pairs[h, group][linked[h, group]].sum() for h in group}
            patterns = [(float(alone[h]), (h,)) for h in group]
            patterns += [
                (float(pairs[g, h]), (g, h)) for g in group for h in group if g < h and linked[g, h]
            ]
            # the most frequent first; ties by the lowest latents (the same on every rank)
            patterns.sort(key=lambda p: (-p[0], p[1]))
            chosen = [p for _, p in patterns[: len(group)]]
            merged = [p for p in chosen if len(p) == 2]
            free = [h for h in group if (h,) not in chosen]
            for pair in merged:
                # a member of the pair takes it where one is free
                h = next((k for k in pair if k in free), free[0])
                free.remove(h)
                sources[h] = pair
        return sources

    def _searched(self, Y: np.ndarray, rows: slice):
        """States of new rows: initialised, then ``search_rounds`` E-step searches at T=1.

        Returns the states (B, S, H) and their log-joints (B, S).
        """
        st = self.states
        B = rows.stop - rows.start
        index = np.arange(rows.start, rows.stop)
        X = np.zeros((B, st.n_states, st.H), dtype=np.uint8)
        fresh = np.ones(B, dtype=bool)
        search = self._searcher(Y)
        for r in range(max(1, self.search_rounds)):
            X, ll, lp = search(X, index, r, fresh if r == 0 else None)
        return X, ll + lp

    def kept_posterior_mean(self, rows: slice, Y: np.ndarray) -> np.ndarray:
        """<s> (B, H) of a block of this rank's training rows over the states the fit kept for
        them, at the current parameters (evolutionary states only; no new search)."""
        X = self.states.rows(rows)
        ll, lp = self.model.state_scorer(Y, self.params, self.backend)[1](X)
        q = log_normalise(ll + lp)[1]
        return self.model.state_mean(Y, X, q, self.params)

    def posterior_mean(self, Y: Rows) -> np.ndarray:
        """<s> (N, H) for local rows, batch by batch, at temperature 1.

        With evolutionary states the rows are new data: their states are searched first
        (``search_rounds``), keyed by their index in ``Y``.
        """
        out = np.empty((Y.shape[0], self.model.H))
        for rows in self._batches(Y.shape[0]):
            if self.evolutionary:
                X, lj = self._searched(Y[rows], rows)
                q = log_normalise(lj)[1]
                out[rows] = self.model.state_mean(Y[rows], X, q, self.params)
            else:
                out[rows] = self.model.posterior_mean(
                    Y[rows], self.states, self.params, self.backend
                )
        return out

    def log_marginals(self, Y: Rows) -> np.ndarray:
        """log sum_{s in K_n} p(s, y_n) per local row at temperature 1 (new rows searched
        first with evolutionary states, as in :meth:`posterior_mean`)."""
        if not self.evolutionary:
            return self._pass(Y, 1.0, 1.0, None, False)[0]
        out = np.empty(Y.shape[0])
        for rows in self._batches(Y.shape[0]):
            out[rows] = log_normalise(self._searched(Y[rows], rows)[1])[0]
        return out
