"""What a discrete-latent model provides to the truncated-EM solver.

A model is its mathematics only: it holds shapes and fixed settings, takes parameters as a
dict of arrays, and never loops over iterations, talks to other ranks or touches files.
The solver calls, per iteration, one of two E-step paths for every batch, then
:meth:`mstep` with the statistics summed over all ranks:

- ET preselection and full enumeration: :meth:`estep_batch`, the model's fused E-step (the
  model picks the candidate states of the batch, :meth:`candidates`, itself, so that a
  backend can share the preselection's GEMM with the E-step);
- explicit per-row states (the evolutionary state set): the solver owns the E-step and asks
  the model only for what is its own: :meth:`state_scorer` (preselection scores that guide
  the search, and the log-joint of given states), :meth:`state_stats` (sufficient
  statistics from posterior weights over given states) and :meth:`mstep`.

A model for the second path needs no more than :meth:`log_joint` and :meth:`state_stats`;
see "Adding a model" in the documentation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import logsumexp
from scipy.stats import binom

from prosper.backends.linear_terms import preselection_scores

if TYPE_CHECKING:  # annotations only: models and kernels never import solvers
    from prosper.solvers.states import CandidateBatch, ExpectationTruncation


__all__ = [
    "ActivityRepairs",
    "LinearTruncatedModel",
    "TruncatedModel",
    "backend_kernel",
    "binomial_truncation",
]

Params = dict[str, np.ndarray]
#: (ll, lp) of index states (B, K, H): log-likelihood and log-prior, each (B, K)
StateLogJoint = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def backend_kernel(backend: ModuleType | None, name: str) -> Callable | None:
    """The kernel ``name`` from a backend's ``KERNELS`` registry, or None where the backend
    does not register it (or no backend is given: the model's NumPy reference runs)."""
    return None if backend is None else backend.KERNELS.get(name)


def binomial_truncation(H: int, gamma: int, p_active: float) -> tuple[float, float]:
    """ET truncation masses for |s| ~ Binomial(H, p_active).

    Returns
    -------
    A : float
        P(|s| <= gamma), the prior mass kept by the truncation.
    B : float
        E[|s| 1{|s| <= gamma}] = sum_{k<=gamma} k C(H,k) p^k (1-p)^(H-k).
    """
    if gamma >= H:
        # no truncation: exactly 1, so that ET data selection keeps every point (a sum of
        # the pmf can fall below 1 by round-off, and that by a different amount per run)
        return 1.0, float(H * p_active)
    k = np.arange(gamma + 1)
    pmf = binom.pmf(k, H, p_active)
    return float(pmf.sum()), float(k @ pmf)


class TruncatedModel(ABC):
    """Base class of the models learned by truncated EM.

    Parameters
    ----------
    H : int
        Number of latents.
    D : int
        Number of observed dimensions.
    """

    #: short name used in configs and result files
    name: str = ""
    #: names of the learned parameters, in the order they are recorded
    param_names: tuple[str, ...] = ()
    #: whether annealing tempers the prior together with the likelihood by default
    anneal_prior_default: bool = False

    def __init__(self, H: int, D: int) -> None:
        self.H, self.D = int(H), int(D)

    @property
    @abstractmethod
    def values(self) -> np.ndarray:
        """Latent values, shape (V,), the first being 0."""

    @abstractmethod
    def init_params(
        self, mean: np.ndarray, var: np.ndarray, rng: np.random.Generator, init: str
    ) -> Params:
        """Initial parameters from data moments (mean, variance per dimension over all ranks)."""

    @abstractmethod
    def preselection_scores(self, Y: np.ndarray, params: Params) -> np.ndarray:
        """Scores (B, H), larger meaning latent h is more likely active for that data point."""

    @abstractmethod
    def log_joint(
        self, Y: np.ndarray, S: np.ndarray, params: Params
    ) -> tuple[np.ndarray, np.ndarray]:
        """Reference log-likelihood and log-prior of explicit states.

        Parameters
        ----------
        Y : ndarray of shape (B, D)
        S : ndarray of shape (B, K, H)

        Returns
        -------
        ll, lp : ndarray of shape (B, K)
            log p(y | s) and log p(s), with all normalising constants.
        """

    def runs_on(self, backend: ModuleType) -> bool:
        """Whether the E-step runs on ``backend``'s kernels (False: the model's own NumPy)."""
        return True

    def candidates(
        self, Y: np.ndarray, states: ExpectationTruncation, params: Params
    ) -> CandidateBatch:
        """Candidate states of a batch: the H' latents with the best preselection scores."""
        scores = None if states.full else self.preselection_scores(Y, params)
        return states.select(scores, Y.shape[0])

    #: whether the solver's spare point (the residual a re-initialised latent takes) is
    #: chosen only among points whose most probable ET state has fewer than gamma non-zero
    #: latents (set where measured: TSC, whose points with more causes than gamma would
    #: otherwise give two-bar residuals)
    spare_needs_room: bool = False

    #: whether :meth:`estep_batch` is a fused E-step for the ET state set (else the solver
    #: runs the generic E-step over the explicit candidate states)
    fused_estep: bool = False

    #: statistics that sum over every point whatever the data selection's ``mask`` (MMCA's
    #: contested statistics); every other statistic must be a sum over points weighted by
    #: the mask, since the solver takes the selected points' statistics as those of all
    #: points minus those of the few it cut
    unmasked_stats: tuple[str, ...] = ()

    def estep_batch(
        self,
        Y: np.ndarray,
        states: ExpectationTruncation,
        params: Params,
        beta: float,
        prior_beta: float,
        mask: np.ndarray | None,
        accumulate: bool,
        backend: ModuleType,
    ) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
        """Log marginals (B,) over the candidate states and, if asked, the local statistics.

        The fused E-step of a model that sets :attr:`fused_estep`; the candidate states of the
        batch are chosen here (:meth:`candidates`).
        """
        raise NotImplementedError(f"{type(self).__name__} has no fused E-step")

    @abstractmethod
    def mstep(self, stats: dict[str, np.ndarray], params: Params, gamma: int) -> Params:
        """New parameters from statistics summed over all data points of all ranks.

        ``gamma`` is the ET cap on active latents; explicit state sets pass H, for which the
        ET corrections of the prior updates vanish.
        """

    # -- the generic E-step over explicit states -----------------------------------------
    def state_scorer(
        self, Y: np.ndarray, params: Params, backend: ModuleType, beta: float = 1.0
    ) -> tuple[np.ndarray | None, StateLogJoint]:
        """What the evolutionary search needs for a batch.

        ``beta`` is the iteration's inverse temperature, for models whose log-joint depends
        on it (MCA's ρ); the others ignore it.

        Returns
        -------
        scores : ndarray of shape (B, H) or None
            Preselection scores (larger = latent more likely active) that guide the search's
            flips; None for uniform flips.
        log_joint : callable
            ``log_joint(X)`` for index states X (B, K, H) (indices into :attr:`values`)
            returns the log-likelihood and the log-prior, each (B, K).

        This generic version evaluates :meth:`log_joint` on the dense states; models with a
        backend kernel override it.
        """
        values = self.values
        return self.preselection_scores(Y, params), lambda X: self.log_joint(Y, values[X], params)

    def state_search(self, Y: np.ndarray, params: Params, backend: ModuleType):
        """A backend's fused evolutionary search for this model, or None (the generic search
        over :meth:`state_scorer`'s log-joint runs instead).

        Returns
        -------
        None or (scores, search)
            ``scores`` as :meth:`state_scorer`'s; ``search(X, proposal, keys, gen_keys, rows,
            n_parents, n_children)`` returns what
            :meth:`prosper.solvers.evolutionary.EvolutionaryStates.evolve` returns.
        """
        return None

    def state_estep(self, Y: np.ndarray, params: Params, backend: ModuleType):
        """A backend's fused evolutionary search and E-step for this model, or None (the
        solver then runs :meth:`state_search` or the generic search, and
        :meth:`state_stats`).

        Returns
        -------
        None or (scores, estep)
            ``scores`` as :meth:`state_scorer`'s; ``estep(X, proposal, keys, gen_keys, rows,
            n_parents, n_children, beta, prior_beta, weight, accumulate, out=None,
            packed=False)`` returns the new states (B, S, H) (those of :meth:`state_search`;
            written into ``out`` where given, which may be X itself; with ``packed``, binary
            states as bits (B, S, ⌈H / 8⌉) in and out), the log marginals (B,) at T=1 over them
            and, if ``accumulate``, the statistics :meth:`state_stats` gives for the
            tempered posterior weights times ``weight`` (else None).
        """
        return None

    def state_stats(
        self,
        Y: np.ndarray,
        X: np.ndarray,
        q: np.ndarray,
        weight: np.ndarray,
        params: Params,
        backend: ModuleType,
        beta: float = 1.0,
    ) -> dict[str, np.ndarray]:
        """Local sufficient statistics from posterior weights over explicit states.

        Parameters
        ----------
        Y : ndarray of shape (B, D)
        X : ndarray of uint8, shape (B, K, H)
            States as indices into :attr:`values`.
        q : ndarray of shape (B, K)
            Posterior weights of the states (not multiplied by ``weight``).
        weight : ndarray of shape (B,)
            Weight of each data point in the statistics (1, or 0/1 under data selection):
            every statistic is a sum over points weighted by it, except those the model
            names in :attr:`unmasked_stats`, which sum over all points (MMCA's contested
            statistics).
        params : dict
        backend : module
        beta : float, default=1.0
            The iteration's inverse temperature (as for :meth:`state_scorer`).

        Returns
        -------
        dict
            The statistics :meth:`mstep` reads, summed over the batch.
        """
        raise NotImplementedError(
            f"{type(self).__name__} has no statistics for explicit states (states='evo')"
        )

    def state_mean(self, Y: np.ndarray, X: np.ndarray, q: np.ndarray, params: Params) -> np.ndarray:
        """Posterior mean <s> (B, H) from weights q (B, K) over index states X (B, K, H).

        The latents' values weighted by q; models whose latents are more than the state
        (GSC's slab) override it.
        """
        return np.einsum("bk,bkh->bh", q, self.values[X])

    @classmethod
    def supports_explicit_states(cls) -> bool:
        """Whether :meth:`state_stats` is implemented (the evolutionary state set works)."""
        return cls.state_stats is not TruncatedModel.state_stats

    def start_iteration(self, iteration: int, n_iter: int) -> None:
        """Called by the solver before the E-step of each iteration (0-based, of n_iter).

        Nothing by default; a model whose E-step changes with the iteration (MMCA: the
        smoothed maximum of its first half) sets its state here, from these two numbers
        only, so a resumed fit continues the same way.
        """
        return None

    @abstractmethod
    def truncated_mass(self, params: Params, gamma: int) -> float:
        """A(Θ): prior probability that a state has at most gamma non-zero entries."""

    @abstractmethod
    def sample(
        self, n: int, params: Params, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` data points: returns Y (n, D) and latents S (n, H)."""

    @abstractmethod
    def perturb(self, params: Params, scale: float, rng: np.random.Generator) -> Params:
        """Annealing noise of relative size ``scale``, then clip parameters to their domain."""

    def latent_usage(self, stats: dict[str, np.ndarray]) -> np.ndarray | None:
        """How much each latent is used, (H,), from statistics summed over all ranks; None
        where the model does not re-initialise unused latents (the solver then never does).

        Only ratios between latents matter (the solver compares each with the median).
        """
        return None

    def reassigned(self, params: Params, h: int, y: np.ndarray, mean_s: np.ndarray) -> Params:
        """``params`` with latent ``h`` re-initialised to explain what the model leaves
        unexplained of the data point ``y`` (D,) whose posterior mean is ``mean_s`` (H,).

        Called only where :meth:`latent_usage` is not None.
        """
        raise NotImplementedError

    def latent_similarity(self, params: Params) -> np.ndarray | None:
        """Cosine similarity (H, H) of the latents' dictionary elements, or None where the
        model does not look for duplicate latents (the solver then re-initialises only
        under-used ones)."""
        return None

    def latent_pairs(self, stats: dict[str, np.ndarray]) -> np.ndarray | None:
        """How often two latents are on together (H, H) (the diagonal: how often each is
        on), from statistics summed over all ranks (Σ_n <s_g s_h> for binary latents); None
        where the model does not merge latents (:meth:`merged`)."""
        return None

    def merged(
        self,
        params: Params,
        sources: dict[int, tuple[int, ...]],
        stats: dict[str, np.ndarray] | None = None,
    ) -> Params:
        """``params`` with each latent ``h`` in ``sources`` standing for what the latents
        ``sources[h]`` of ``params`` explain when they are on together; ``stats`` are the
        iteration's statistics summed over all ranks (for models whose merge depends on
        more than W, such as the sign of a signed co-activation).

        Called only where :meth:`latent_pairs` is not None.
        """
        raise NotImplementedError

    def repair_statistics(
        self, X: np.ndarray, q: np.ndarray, backend: ModuleType
    ) -> dict[str, np.ndarray]:
        """Statistics that only the repairs read (:meth:`latent_pairs`), from posterior
        weights ``q`` (B, K) over explicit states ``X`` (B, K, H) of a batch (indices into
        :attr:`values`); summed over batches and ranks with the others (one Allreduce).

        The solver computes them only at the iterations that look for latents to repair,
        and only for models that override this (the default has none).
        """
        return {}

    def repair_batch(
        self,
        Y: np.ndarray,
        states: ExpectationTruncation,
        params: Params,
        beta: float,
        prior_beta: float,
        mask: np.ndarray | None,
        backend: ModuleType,
    ) -> dict[str, np.ndarray] | None:
        """:meth:`repair_statistics` of a batch under ET states by a fused kernel of
        ``backend`` (arguments as :meth:`estep_batch`), or None where the backend has none:
        the solver then scores the batch's explicit candidate states and calls
        :meth:`repair_statistics`."""
        return None

    def canonical_params(self, params: Params) -> Params:
        """The same model in its documented gauge (where parameters trade scale).

        Models whose likelihood is unchanged by rescaling latents against dictionary columns
        (GSC) return the parameters in one fixed gauge; the others return them unchanged.
        """
        return params

    def initial_W(
        self, mean: np.ndarray, var: np.ndarray, rng: np.random.Generator, init: str
    ) -> np.ndarray:
        """The start of W (D, H) shared by every model: around the data mean with a quarter of
        the data's spread ("data", the original ProSper examples' start), or zero-mean noise
        with the data's spread ("random")."""
        std = np.sqrt(np.maximum(var, 1e-12))
        noise = rng.standard_normal((self.D, self.H)) * std[:, None]
        return noise if init == "random" else mean[:, None] + noise / 4.0

    @staticmethod
    def initial_sigma(var: np.ndarray) -> np.ndarray:
        """The start of σ: the data's standard deviation (1 for constant data)."""
        return np.asarray(np.sqrt(np.mean(var)) if np.mean(var) > 0 else 1.0)

    def posterior_mean(
        self,
        Y: np.ndarray,
        states: ExpectationTruncation,
        params: Params,
        backend: ModuleType,
    ) -> np.ndarray:
        """<s> under the truncated posterior at temperature 1, shape (B, H).

        This generic version materialises the states; models with a fast kernel override it.
        """
        batch = self.candidates(Y, states, params)
        ll, lp = self.log_joint(Y, batch.dense(), params)
        lj = ll + lp
        q = np.exp(lj - logsumexp(lj, axis=1, keepdims=True))
        return np.einsum("bk,bkh->bh", q, batch.dense())


def column_cosines(W: np.ndarray) -> np.ndarray:
    """Cosine similarity (H, H) of the columns of W (D, H); a zero column has cosine 0 with
    every column."""
    norms = np.linalg.norm(W, axis=0)
    unit = W / np.where(norms > 0, norms, 1.0)
    return unit.T @ unit


def reassigned_column(W: np.ndarray, h: int, y: np.ndarray, mean_s: np.ndarray) -> np.ndarray:
    """A copy of W (D, H) whose column h is the residual y − W<s> scaled to the median
    column norm (the size of a typical cause, so that switching it on costs what the others
    cost); W unchanged when the residual is zero."""
    W = np.array(W, dtype=np.float64)
    residual = np.asarray(y, dtype=np.float64) - W @ mean_s
    norm = float(np.linalg.norm(residual))
    if norm > 0.0:
        W[:, h] = residual * (float(np.median(np.linalg.norm(W, axis=0))) / norm)
    return W


class LinearTruncatedModel(TruncatedModel):
    """y = W s + N(0, σ² I) with a factorised prior over discrete values (BSC, TSC, DSC).

    Subclasses give :meth:`value_log_prior` (log-probability of one latent taking each value)
    and the prior part of the M-step; the likelihood, its statistics and the W and σ updates
    are shared.
    """

    param_names = ("W", "pi", "sigma")
    fused_estep = True

    @abstractmethod
    def value_log_prior(self, params: Params) -> np.ndarray:
        """log p(s_h = v) for each latent value v, shape (V,)."""

    @abstractmethod
    def preselection_coefficients(self, params: Params) -> tuple[np.ndarray, np.ndarray]:
        """Slopes A and offsets C, each (V', H): latent h scores max_v (A_vh (Wᵀy)_h + C_vh).

        Every backend evaluates this form from the Wᵀy it computes for the E-step anyway.
        """

    @abstractmethod
    def prior_mstep(
        self, stats: dict[str, np.ndarray], params: Params, gamma: int
    ) -> dict[str, np.ndarray]:
        """Prior parameter updates from the value counts."""

    def sigma2(self, params: Params) -> float:
        return float(params["sigma"]) ** 2

    def log_joint(self, Y, S, params):
        W, sigma2 = params["W"], self.sigma2(params)
        resid = Y[:, None, :] - np.einsum("dh,bkh->bkd", W, S)
        ll = -0.5 * self.D * np.log(2 * np.pi * sigma2) - np.einsum("bkd,bkd->bk", resid, resid) / (
            2 * sigma2
        )
        logp = self.value_log_prior(params)
        index = np.searchsorted(self.values_sorted, S)
        lp = logp[self.sort_order[index]].sum(axis=2)
        return ll, lp

    @property
    def values_sorted(self) -> np.ndarray:
        return np.sort(self.values)

    @property
    def sort_order(self) -> np.ndarray:
        return np.argsort(self.values)

    def preselection_scores(self, Y, params):
        W = params["W"].astype(Y.dtype, copy=False)
        return preselection_scores(Y @ W, self.preselection_coefficients(params))

    def kernel_args(self, Y, params, states) -> tuple:
        """The leading arguments of the backends' linear kernels (``linear_estep``,
        ``linear_posterior_mean``, ``linear_activity_pairs``) for a batch ``Y``: Y, W at Y's
        precision, σ², log p(s_h = v), the states and the preselection coefficients."""
        W = params["W"].astype(Y.dtype, copy=False)
        logp = self.value_log_prior(params)
        presel = self.preselection_coefficients(params)
        return Y, W, self.sigma2(params), logp, states, presel

    def estep_batch(self, Y, states, params, beta, prior_beta, mask, accumulate, backend):
        return backend.linear_estep(
            *self.kernel_args(Y, params, states), beta, prior_beta, mask=mask, accumulate=accumulate
        )

    def _batch_terms(self, Y, params):
        """What the log-joints of any states of a batch need: (Wᵀy (B, H), ||y||² (B,),
        WᵀW (H, H), log p(s_h = v) (V,), σ²), and the preselection scores from the same Wᵀy."""
        WY = Y @ params["W"].astype(Y.dtype, copy=False)
        terms = (
            WY,
            np.einsum("nd,nd->n", Y, Y, dtype=np.float64),
            params["W"].T @ params["W"],
            self.value_log_prior(params),
            self.sigma2(params),
        )
        return terms, preselection_scores(WY, self.preselection_coefficients(params))

    def state_scorer(self, Y, params, backend, beta=1.0):
        (WY, yy, WtW, logp, sigma2), scores = self._batch_terms(Y, params)
        run = backend.KERNELS["linear_state_log_joint"]

        def log_joint(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return run(WY, WtW, yy, X, self.values, logp, sigma2, self.D)

        return scores, log_joint

    def state_search(self, Y, params, backend):
        search = backend.KERNELS.get("linear_search")
        if search is None:
            return None
        (WY, yy, WtW, logp, sigma2), scores = self._batch_terms(Y, params)

        def fused(X, proposal, keys, gen_keys, rows, n_parents, n_children):
            return search(
                X, WY, WtW, yy, self.values, logp, sigma2, self.D, proposal, keys, gen_keys,
                rows, n_parents, n_children,
            )  # fmt: skip

        return scores, fused

    def state_estep(self, Y, params, backend):
        estep = backend.KERNELS.get("linear_search_estep")
        if estep is None:
            return None
        (WY, yy, WtW, logp, sigma2), scores = self._batch_terms(Y, params)

        def fused(X, proposal, keys, gen_keys, rows, n_parents, n_children, beta, prior_beta,
                  weight, accumulate, out=None, packed=False):  # fmt: skip
            X, log_marginal, moments = estep(
                X, Y, WY, WtW, yy, self.values, logp, sigma2, self.D, proposal, keys,
                gen_keys, rows, n_parents, n_children, beta, prior_beta, weight, accumulate,
                out, packed,
            )  # fmt: skip
            stats = None if moments is None else self._stats(yy, weight, *moments)
            return X, log_marginal, stats

        return scores, fused

    @staticmethod
    def _stats(yy, weight, sy, ss, counts):
        """The statistics dict from the summed moments (Σ y<s>ᵀ, Σ<s sᵀ>, counts), ||y||²
        (B,) and the rows' weights."""
        return {
            "sy": sy,
            "ss": ss,
            "counts": counts,
            "yy": np.array(float(weight @ yy)),
            "n": np.array(float(weight.sum())),
        }

    @classmethod
    def _moment_stats(cls, Y, yy, weight, mean, ss, counts):
        """The statistics dict from the posterior moments over explicit states (``mean``
        (B, H) per row, ``ss`` and ``counts`` summed) and ||y||² (B,)."""
        # Yᵀ as a view where Y is float64: astype's copy had the view's layout, so the
        # product is the same, without a pass that copies the batch
        sy = Y.T.astype(np.float64, copy=False) @ mean
        return cls._stats(yy, weight, sy, ss, counts)

    def state_stats(self, Y, X, q, weight, params, backend, beta=1.0):
        moments = backend.KERNELS["linear_state_stats"](X, q * weight[:, None], self.values)
        yy = np.einsum("nd,nd->n", Y, Y, dtype=np.float64)
        return self._moment_stats(Y, yy, weight, *moments)

    def posterior_mean(self, Y, states, params, backend):
        return backend.linear_posterior_mean(*self.kernel_args(Y, params, states))

    def latent_usage(self, stats):
        """Σ_n <s_h²>: the diagonal of the second-moment statistic."""
        return np.diag(np.asarray(stats["ss"], dtype=np.float64)).copy()

    def reassigned(self, params, h, y, mean_s):
        """Column h becomes the residual y − W<s>, scaled to the median column norm."""
        return {**params, "W": reassigned_column(params["W"], h, y, mean_s)}

    def mstep(self, stats, params, gamma):
        """W = (Σ y<s>ᵀ)(Σ<ssᵀ>)⁻¹ (ET paper eq. 11); σ² with the *new* W.

        The original ProSper code used the old W in the σ update; using the new one is the
        exact M-step and cannot decrease the free energy (MODELS.md, section 2).
        """
        sy, ss, n = stats["sy"], stats["ss"], float(stats["n"])
        W_old = params["W"]
        used = np.diag(ss) > 1e-12 * max(1.0, n)
        W = W_old.copy()
        if used.any():
            block = ss[np.ix_(used, used)]
            ridge = 1e-12 * max(np.trace(block) / used.sum(), 1e-300)
            W[:, used] = np.linalg.solve(block + ridge * np.eye(used.sum()), sy[:, used].T).T
        err = float(stats["yy"]) - 2.0 * np.sum(W * sy) + np.sum((W.T @ W) * ss)
        sigma = np.sqrt(max(err, 0.0) / (n * self.D))
        new = {"W": W, "sigma": np.asarray(max(sigma, 1e-8))}
        new.update(self.prior_mstep(stats, params, gamma))
        return new

    def _sample_latents(self, n: int, params: Params, rng: np.random.Generator) -> np.ndarray:
        p = np.exp(self.value_log_prior(params))
        idx = rng.choice(len(p), size=(n, self.H), p=p / p.sum())
        return self.values[idx]

    def sample(self, n, params, rng):
        S = self._sample_latents(n, params, rng)
        Y = S @ params["W"].T + float(params["sigma"]) * rng.standard_normal((n, self.D))
        return Y, S


class ActivityRepairs:
    """The repairs of local optima (:class:`prosper.solvers.truncated.TruncatedEM`,
    ``reassignment_ratio``) for a :class:`LinearTruncatedModel` whose latents take values
    other than 0 and 1 (TSC's -1 and 1, DSC's value sets), mixed in before it.

    A latent is on when it is non-zero, whatever its value: two latents are on together by
    Σ_n <1{s_g ≠ 0} 1{s_h ≠ 0}> (a statistic of its own, computed at the checks only;
    Σ<s_g s_h> weighs co-activations by their values and, with signed values, subtracts
    opposite-sign ones). Where the values have both signs, a column and its negative are
    the same latent (duplicates by the absolute cosine). A merged pair is
    W_g + sign(Σ<s_g s_h>) W_h, what the pair superposes to when on together.
    """

    values: np.ndarray
    H: int

    def latent_similarity(self, params: Params) -> np.ndarray:
        """Cosine similarity (H, H) of the columns of W, absolute where the values have both
        signs (a column and its negative then describe the same latent)."""
        cosines = column_cosines(params["W"])
        signed = bool(np.any(self.values < 0) and np.any(self.values > 0))
        return np.abs(cosines) if signed else cosines

    def repair_statistics(
        self, X: np.ndarray, q: np.ndarray, backend: ModuleType
    ) -> dict[str, np.ndarray]:
        """``pairs`` (H, H): Σ_n <1{s_g ≠ 0} 1{s_h ≠ 0}>, how often two latents are on
        together whatever their values (the diagonal: how often each is on), from posterior
        weights ``q`` (B, K) over explicit states ``X`` (B, K, H, indices into
        :attr:`values`)."""
        on = (self.values != 0).astype(np.float64)
        moments = backend.KERNELS["linear_state_stats"](X, q, on)
        return {"pairs": np.asarray(moments[1], dtype=np.float64)}

    def repair_batch(self, Y, states, params, beta, prior_beta, mask, backend):
        """``pairs`` of :meth:`repair_statistics` by the backend's fused E-step kernel with
        every non-zero value counted as one (``linear_activity_pairs``), where it has one."""
        run = backend_kernel(backend, "linear_activity_pairs")
        if run is None:
            return None
        pairs = run(*self.kernel_args(Y, params, states), beta, prior_beta, mask)
        return {"pairs": np.asarray(pairs, dtype=np.float64)}

    def latent_pairs(self, stats: dict[str, np.ndarray]) -> np.ndarray | None:
        """Σ_n <1{s_g ≠ 0} 1{s_h ≠ 0}> (:meth:`repair_statistics`); None in an iteration
        without it."""
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
        present gives W_a − (W_a − W_b) = W_b). The prior and σ stay; without ``stats`` the
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
