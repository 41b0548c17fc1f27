"""Sparse Bayesian learning estimators: classic EM-SBL and Kronecker-structured SBL."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from prosper.estimators.base import EMEstimator, _dtype_name
from prosper.io.sources import is_streamable
from prosper.models.sbl import KroneckerSBLModel, SBLModel, kron_vectors
from prosper.solvers.sbl import SBLLearner
from prosper.utils.validation import (
    Interval,
    Options,
    check_data,
    check_is_fitted,
    check_source,
)

__all__ = ["SBL", "KroneckerSBL"]

#: ``evidence_tol`` compares the best log evidence with its value this many iterations before
EVIDENCE_WINDOW = 10
#: KroneckerSBL(evidence_tol="auto") with method="am": nats over ``EVIDENCE_WINDOW``
AUTO_EVIDENCE_TOL = 1.0
#: KroneckerSBL(coef_tol="auto") with method="am": relative change of Σ_l μ_l² between
#: consecutive iterations (benchmarks/RESULTS.md, session 8: 1e-4 ends 20-30 dB fits in
#: about half the iterations at the same NMSE; 3e-4 lost 0.4 dB at n = 256, 30 dB)
AUTO_COEF_TOL = 1e-4


def _is_matrix(value: Any) -> bool:
    """a 2-D numeric array"""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        return False
    return arr.ndim == 2 and arr.size > 0 and np.issubdtype(arr.dtype, np.number)


def _is_factors(value: Any) -> bool:
    """a non-empty list of 2-D numeric arrays"""
    return (
        isinstance(value, (list, tuple)) and len(value) >= 1 and all(_is_matrix(v) for v in value)
    )


def _is_block_list(value: Any) -> bool:
    """a list of positive ints, one per factor"""
    return isinstance(value, (list, tuple)) and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in value
    )


def _check_matrix(A: Any, name: str) -> np.ndarray:
    """Finite, real, without zero columns (a zero column makes an unknown unobservable)."""
    A = np.asarray(A)
    if np.iscomplexobj(A):
        raise ValueError(f"{name} must be real-valued; got complex dtype {A.dtype}.")
    A = A.astype(np.float64)
    if not np.all(np.isfinite(A)):
        raise ValueError(f"{name} contains NaN or infinity; all entries must be finite.")
    norms = np.linalg.norm(A, axis=0)
    if np.any(norms == 0):
        raise ValueError(
            f"{name} is singular: column(s) {np.flatnonzero(norms == 0).tolist()} are zero, so "
            "those unknowns never reach the measurements. Remove or replace them."
        )
    return A


def _as_snapshots(Y: Any) -> Any:
    """A 1-D y is one snapshot: (m,) -> (1, m). Anything else is left to check_data."""
    if isinstance(Y, (str, bytes)) or Y is None or is_streamable(Y):
        return Y  # streamed data are never loaded whole here
    try:
        arr = np.asarray(Y)
    except (TypeError, ValueError):
        return Y
    return arr.reshape(1, -1) if arr.ndim == 1 else Y


class _SBLEstimator(EMEstimator):
    """What SBL and KroneckerSBL share: σ handling, pruning, stopping, coef_, transform."""

    _rows_are_points = False  # rows are snapshots; a few of them is the usual case

    _parameter_constraints = {
        "learn_sigma": [bool],
        "sigma": [None, Interval("real", 0, None, "neither")],
        "prune": [Interval("real", 0, 1, "left")],
        "tol": [None, Interval("real", 0, None)],
        "model_choice": [bool],
        "backend": [Options(("auto", "numpy"))],
    }

    # -- subclass hooks -------------------------------------------------------------------
    def _make_model(self) -> SBLModel | KroneckerSBLModel:
        raise NotImplementedError

    def _check_operator(self, D: int) -> None:
        raise NotImplementedError

    def _anderson_memory(self) -> int:
        """Iterates the learner's Anderson acceleration uses (0: none)."""
        return 0

    def _entry_cost(self) -> float:
        """Log-evidence cost of an active entry (0: none)."""
        return 0.0

    def _evidence_tol(self) -> float | None:
        """Stop when the log evidence rose by less than this over ``EVIDENCE_WINDOW``
        iterations (None: no such test)."""
        return None

    def _coef_tol(self) -> float | None:
        """Stop when Σ_l μ_l² changed by less than this (relative) since the last
        iteration (None: no such test)."""
        return None

    # -- EMEstimator hooks ----------------------------------------------------------------
    def _check_params(self, D: int) -> None:
        self._check_operator(D)
        if not self.learn_sigma and self.sigma is None:
            raise ValueError(
                "learn_sigma=False keeps the noise level fixed, so sigma must be given "
                "(a float > 0); got sigma=None."
            )

    def _make_learner(self, D: int, seed: int, backend) -> SBLLearner:
        return SBLLearner(
            self._make_model(),
            batch_size=self.batch_size,
            learn_sigma=self.learn_sigma,
            sigma=self.sigma,
            prune=self.prune,
            memory=self._anderson_memory(),
            tol=self.tol,
            evidence_window=EVIDENCE_WINDOW if self._evidence_tol() is not None else 0,
            coef_tol=self._coef_tol(),
            entry_cost=self._entry_cost(),
        )

    def _stopping(self, user: Any):
        """The user's callback, or-ed with the test ``gamma_change < tol`` (same on all ranks;
        not before the penalised phase of an entry cost has run), the evidence test and the
        test of the posterior means."""
        tol, evidence_tol, coef_tol = self.tol, self._evidence_tol(), self._coef_tol()

        def callback(iteration: int, learner: Any, metrics: dict[str, float]) -> bool:
            stop = bool(user(iteration, learner, metrics)) if user is not None else False
            converged = bool(tol) and metrics["gamma_change"] < tol and not learner.pending
            # the learner keeps the best evidence of the last EVIDENCE_WINDOW + 1 iterations
            best = learner.best_evidence
            if evidence_tol is not None and len(best) > EVIDENCE_WINDOW:
                converged |= best[-1] - best[0] < evidence_tol
            if coef_tol is not None:
                converged |= metrics["coef_change"] < coef_tol
            return stop or converged

        return callback

    def _finish(self, learner: SBLLearner, Y: Any, comm: Any) -> None:
        # the empty model x = 0 against the learned one (SBLLearner.choose_model)
        self.evidence_margin_ = learner.choose_model(Y, comm) if self.model_choice else None

    def _stop_callback(self):
        # the relative-change stop goes through run_em's callback (agreed across ranks)
        return self._stopping(self.callback)

    def _fit(self, Y: Any, **kwargs: Any) -> _SBLEstimator:
        Y = _as_snapshots(Y)
        super()._fit(Y, **kwargs)
        self.coef_ = self._posterior_mean(
            check_source(Y, dtype=_dtype_name(self.dtype), batch_size=self.batch_size)
        )
        return self

    def _n_features_in(self, params: dict[str, np.ndarray]) -> int:
        # m measurements per snapshot (γ has n entries, not m)
        raise NotImplementedError

    # -- inference ------------------------------------------------------------------------
    def _learner(self) -> SBLLearner:
        params = self._fitted_params()
        learner = self._make_learner(self.n_features_in_, 0, None)
        learner.set_params(params, 1)
        return learner

    def _check_input(self, Y: Any) -> np.ndarray:
        check_is_fitted(self, ("sigma_", "n_features_in_"))
        return check_data(
            _as_snapshots(Y), dtype=_dtype_name(self.dtype), n_features=self.n_features_in_
        )

    def _posterior_mean(self, Y: np.ndarray) -> np.ndarray:
        return self._learner().posterior_mean(Y).astype(Y.dtype, copy=False)

    def transform(self, Y: Any) -> np.ndarray:
        """Posterior means x̂ of new snapshots under the fitted γ and σ.

        Parameters
        ----------
        Y : array-like of shape (L, m) or (m,)
            Snapshots, one per row (a 1-D array is one snapshot).

        Returns
        -------
        ndarray of shape (L, n)
        """
        return self._posterior_mean(self._check_input(Y))

    def score(self, Y: Any, y: Any = None) -> float:
        """Mean log evidence log p(y_l | γ, σ²) per snapshot.

        Under MPI this is collective: every rank passes its rows and gets the global mean.
        """
        return self._collective_mean(Y, lambda Y: self._learner().log_evidence(Y).sum())


_COMMON_DOC = """
    learn_sigma : bool, default=True
        Learn the noise level σ by EM; False keeps ``sigma`` fixed.
    sigma : float or None, default=None
        Initial (``learn_sigma=True``) or fixed noise standard deviation. None starts at
        {sigma0} (and needs ``learn_sigma=True``).
    prune : float in [0, 1), default={prune0}
        γ entries below ``prune`` times the largest entry{per} are set to zero for good
        (0: never prune).{prune_note}
    tol : float or None, default=1e-6
        Stop when the relative change ||γ_new - γ|| / ||γ|| of an iteration falls below
        ``tol`` (γ is the same on every rank, so all ranks stop together; it stands for the
        change of μ, which is rank-local). None or 0: run all ``n_iter`` iterations.
    model_choice : bool, default=True
        After the iterations, return the empty model (x̂ = 0, γ = 0, σ² = mean_l
        ||y_l||² / m) where it is more probable than the learned one: the log evidence of
        each plus the log prior of its support, under a uniform (Beta(1, 1)) prior on the
        inclusion probability (Scott & Berger 2010): a support of k of N entries has
        prior probability 1 / ((N + 1) C(N, k)), so the learned model pays log C(N, k)
        against the empty one.{choice_prior}
        ``evidence_margin_`` holds the log odds. False: always the learned model (as
        before 2026-12).
    n_iter : int, default=500
        Maximal number of EM iterations.
    batch_size : int, default=1000
        Snapshots per E-step batch (memory per rank O(batch_size · n)).
    backend : {"numpy", "auto"}, default="numpy"
        Only a NumPy implementation exists (dense linear algebra, BLAS-bound).
    dtype : {"float64", "float32"}, default="float64"
        Precision of Y and ``coef_``; the posterior is always computed in float64.
    random_state : int, numpy.random.Generator or None, default=None
        Recorded with the run; the initialisation is deterministic.
    comm : mpi4py communicator or None, default=None
        None uses MPI.COMM_WORLD. Snapshots are split over the ranks and share γ, σ.
    callback : callable or None, default=None
        ``callback(iteration, learner, metrics)``; returning True stops the run.
    progress : bool or None, default=None
        Progress on rank 0: a bar (True), nothing (False), or by default a bar on a
        terminal and a log line every 30 s otherwise.
    max_memory : int, str or None, default=None
        Memory limit per rank for the size check made before any allocation: bytes or a
        string such as ``"8GB"``; None: the memory available on the machine. A fit whose
        estimated need exceeds it is refused with the estimate.
"""

_COMMON_ATTRS = """
    coef_ : ndarray of shape (L_local, n)
        Posterior means x̂ of the training snapshots of this rank (after ``fit`` only, not
        after :func:`prosper.load`; use ``transform``).
    sigma_ : float
        Learned (or fixed) noise standard deviation.
    free_energy_ : ndarray of shape ``(n_iter_,)``
        Mean log evidence per snapshot, log p(y_l | γ, σ²), of the parameters entering each
        iteration (EM, i.e. classic SBL, never decreases it; the fixed-point γ updates of
        KroneckerSBL may, although they climb to a stationary point).
    history_ : dict of str to ndarray
        Per-iteration metrics: free_energy, gamma_change, sigma, n_active, timings.
    n_iter_ : int
        Iterations run (fewer than ``n_iter`` when ``tol`` stopped the run).
    n_features_in_ : int
        m, measurements per snapshot.
    evidence_margin_ : float or None
        Log posterior odds (nats, all snapshots) of the learned model against the empty
        one (``model_choice``); negative: the empty model was returned. None with
        ``model_choice=False``. Set by ``fit`` only (not by :func:`prosper.load`).
"""


class SBL(_SBLEstimator):
    __doc__ = (
        """Classic sparse Bayesian learning (EM-SBL) with a dense dictionary.

    Model: y_l = Φ x_l + ε_l, x_l ~ N(0, diag γ), ε_l ~ N(0, σ² I), with γ shared by the
    snapshots (multiple measurement vectors). EM alternates the Gaussian posterior of x_l
    with γ_j = mean_l μ_lj² + Σ_jj and the EM update of σ².

    Parameters
    ----------
    dictionary : ndarray of shape (m, n)
        Φ; the posterior works in the m × m space when m < n and in the n × n space
        otherwise, so the cost per iteration is O(min(m, n)² max(m, n)).
    entry_cost : "auto" or float >= 0, default="auto"
        Log-evidence cost κ of each non-zero γ_j: γ and σ maximise
        log p(Y | γ, σ²) - κ · #{j : γ_j > 0}, i.e. the evidence under prior odds e^κ : 1
        against each entry being active. "auto": κ = log n (odds n : 1, the risk
        inflation criterion of Foster & George 1994). EM runs until it changes γ by less
        than 1e-3 (relative); from then on every iteration also removes the active
        entries whose evidence gain at their best γ_j, the others held fixed (Tipping &
        Faul 2003), is below κ, and activates the inactive entry of largest gain above κ
        (an entry removed in this phase is not activated again). Without it (0: plain
        EM-SBL, as before 2026-12) the learned σ collapses at low SNR with one snapshot
        and m < n (see Notes).
"""
        + _COMMON_DOC.replace("{per}", "")
        .replace("{choice_prior}", "")
        .replace("{prune0}", "1e-3")
        .replace("{prune_note}", "")
        .replace("{sigma0}", "the noise of a 10 dB signal-to-noise ratio")
        + """
    Attributes
    ----------
    gamma_ : ndarray of shape (n,)
        Learned prior variances (zero: pruned)."""
        + _COMMON_ATTRS
        + """
    Notes
    -----
    Why the entry cost: with few snapshots, m < n and a low SNR, the evidence alone is
    largest with σ far below the true noise and many active γ_j that fit the noise (in an
    orthonormal Φ an entry is active when φ_jᵀy exceeds σ in magnitude, so σ → 0 with
    every entry active is always a maximum). The cost makes every active entry pay log n,
    so an entry that only fits noise loses more than it gains and σ is estimated from the
    residual of the entries that stay. It also removes spurious small entries at high
    SNR. The EM phase first finds where the evidence concentrates: the gains are
    meaningless while γ is still spread over all entries (in the first iterations even
    true entries gain less than log n). The evidence (``free_energy_``) may fall when the
    penalised phase removes entries. For Kronecker dictionaries :class:`KroneckerSBL`
    does not show the collapse.

    References
    ----------
    M. E. Tipping. Sparse Bayesian learning and the relevance vector machine. JMLR
    1:211-244, 2001. D. P. Wipf and B. D. Rao. Sparse Bayesian learning for basis
    selection. IEEE Trans. Signal Process. 52(8):2153-2164, 2004. M. E. Tipping and
    A. C. Faul. Fast marginal likelihood maximisation for sparse Bayesian models. AISTATS
    2003. D. P. Foster and E. I. George. The risk inflation criterion for multiple
    regression. Ann. Statist. 22(4):1947-1975, 1994. J. G. Scott and J. O. Berger. Bayes
    and empirical-Bayes multiplicity adjustment in the variable-selection problem. Ann.
    Statist. 38(5):2587-2619, 2010.

    Examples
    --------
    >>> from prosper import SBL
    >>> from prosper.data.kronecker import kronecker_problem
    >>> p = kronecker_problem([(6, 8), (6, 8)], sparsity=2, snr_db=30, random_state=0)
    >>> model = SBL(dictionary=p.dictionary, n_iter=200).fit(p.Y)
    >>> model.coef_.shape
    (1, 64)
    >>> bool((model.gamma_ > 0)[p.support].all())
    True
    """
    )

    _model_name = "sbl"
    _fitted_names = ("gamma", "sigma")
    _parameter_constraints = {
        "dictionary": [_is_matrix],
        "entry_cost": [Options(("auto",)), Interval("real", 0, None, "left")],
    }

    def __init__(
        self,
        dictionary: Any = None,
        *,
        entry_cost: float | str = "auto",
        learn_sigma: bool = True,
        sigma: float | None = None,
        prune: float = 1e-3,
        tol: float | None = 1e-6,
        model_choice: bool = True,
        n_iter: int = 500,
        batch_size: int = 1000,
        backend: str = "numpy",
        dtype: Any = "float64",
        random_state: int | np.random.Generator | None = None,
        comm: Any = None,
        callback: Any = None,
        progress: bool | None = None,
        max_memory: int | str | None = None,
    ) -> None:
        self.dictionary = dictionary
        self.entry_cost = entry_cost
        self.learn_sigma = learn_sigma
        self.sigma = sigma
        self.prune = prune
        self.tol = tol
        self.model_choice = model_choice
        self.n_iter = n_iter
        self.batch_size = batch_size
        self.backend = backend
        self.dtype = dtype
        self.random_state = random_state
        self.comm = comm
        self.callback = callback
        self.progress = progress
        self.max_memory = max_memory

    def _check_operator(self, D: int) -> None:
        A = _check_matrix(self.dictionary, "dictionary")
        if A.shape[0] != D:
            raise ValueError(
                f"dictionary has shape {A.shape}, i.e. m={A.shape[0]} measurements, but Y has "
                f"{D} columns; each row of Y must be one snapshot of length m."
            )

    def _make_model(self) -> SBLModel:
        return SBLModel(np.asarray(self.dictionary, dtype=np.float64))

    def _n_features_in(self, params: dict[str, np.ndarray]) -> int:
        return int(np.shape(self.dictionary)[0])

    def _entry_cost(self) -> float:
        if isinstance(self.entry_cost, str):  # "auto"
            return float(np.log(np.shape(self.dictionary)[1]))
        return float(self.entry_cost)

    def _memory_needs(self, D: int, n_local: int, n_gathered: int = 0) -> dict[str, int]:
        m, n = np.shape(self.dictionary)
        B = max(1, min(int(self.batch_size), n_local))
        return {
            # Φ, its active columns, the scaled copy, and an eigendecomposition of the smaller
            # Gram matrix (m × m or n × n)
            "operator": 8 * (4 * m * n + 3 * min(m, n) ** 2 + 8 * n),
            "E-step batch": 8 * 4 * B * (m + n),
            "coef_ (posterior means)": 8 * n_local * n,
        }


class KroneckerSBL(_SBLEstimator):
    __doc__ = (
        """Kronecker-structured sparse Bayesian learning (KroSBL, He & Joseph 2023).

    Model: y_l = (Φ_1 ⊗ … ⊗ Φ_I) x_l + ε_l, x_l ~ N(0, diag(γ_1 ⊗ … ⊗ γ_I)),
    ε_l ~ N(0, σ² I), with the γ_i shared by the snapshots. The E-step never forms Φ, Σ or
    Γ: eigendecompositions of the small factors give μ and diag(Σ) in
    O(Σ_i n_i³ + n Σ_i n_i) per iteration (n = Π n_i). Pruned (zero) γ entries are exact.

    Parameters
    ----------
    factors : list of ndarray, Φ_i of shape (m_i, n_i)
        Φ = ``np.kron(Φ_1, Φ_2, ...)``; Y has m = Π m_i columns and ``coef_`` n = Π n_i, both
        in row-major order. Each Φ_i may have more or fewer rows than columns. In a job
        file: ``factors = {file = "factors.npz", dataset = ["Phi1", "Phi2"]}``.
    method : {"am", "svd"}, default="am"
        γ update. "am": each factor entry γ_i[a] is multiplied by Σ s_j / Σ g_j over the
        entries it scales (s_j = mean_l μ_lj²/γ_j, g_j = 1 - Σ_jj/γ_j; the Kronecker form
        of MacKay's fixed-point update, see
        :func:`prosper.models.sbl.fixed_point_update`): unsupported entries shrink
        geometrically, so a fit takes tens of iterations at 20 dB and more, but the
        evidence is not guaranteed to rise at every iteration. "svd": the first 10
        iterations take the non-negative best rank-one approximation of the EM update
        μ² + diag Σ reshaped to an n_1 × … × n_I tensor (higher-order power iteration for
        I > 2) without pruning, then continue as "am" (pruning from 5 iterations later).

        Which to choose (the SBL guide of the docs; benchmarks/RESULTS.md): at high SNR
        both reach the NMSE of least squares on the true support, "am" in fewer
        iterations. With its defaults (``remove_dead``, ``evidence_tol="auto"``) "am"
        also needs the fewest iterations at 0 dB (15-22 against 32-56) and is as accurate
        as "svd" there (within 0.6 dB; better at n = 256 and 16384); at 10 dB and
        n ≈ 1000 "svd" is 1.5 dB more accurate in about 1.5× the iterations. Prefer "am";
        "svd" for moderate SNR and n, or where no stopping rule should shape the result.
    block_size : int, list of int or None, default=None
        Block-sparse KroSBL: each γ_i is shared within consecutive blocks of this length
        (one int for every factor or one per factor; it must divide n_i). None: no blocks.
    anderson_memory : int, default=5
        Anderson acceleration of the fixed-point updates (of "am", and of "svd" after its
        rank-one phase) from the last ``anderson_memory`` + 1 iterates, in log coordinates of
        γ_i and σ², guarded by the evidence: an extrapolation that lowers it is replaced by
        the plain update (one iteration lost). It reaches the same fixed point in about half
        the iterations. 0: plain updates.
    evidence_tol : "auto", float or None, default="auto"
        ``method="am"`` only: also stop when the best log evidence of the data,
        Σ_l log p(y_l | γ, σ²), has risen by less than ``evidence_tol`` nats over the last
        10 iterations. At low SNR the fixed point is approached slowly while the last
        noise entries die out; 1.0 (a difference of evidence that does not matter) stops
        there in about half the iterations at the same or a better NMSE (the SBL guide of
        the docs). "auto": 1.0 for "am" with ``remove_dead`` and no ``block_size``
        (where the tail no longer improves the NMSE), else None (also with ``tol=None``,
        which runs every iteration; the default was None before 2026-12). With
        ``block_size`` the tail still improves the NMSE at 0 dB even with dead blocks
        removed (an evidence stop of 1.0 costs up to 0.7 dB in the mean there, 0.1 up
        to 0.2 dB), so "auto" means None. None: only ``tol``.
    coef_tol : "auto", float or None, default="auto"
        ``method="am"`` only: also stop when the sums of the squared posterior means over
        the snapshots, a = Σ_l μ_l² (one per entry of x), change little:
        ``||a - a_prev|| < coef_tol * ||a_prev||``, a_prev those of the iteration
        before; such an iteration takes no Anderson extrapolation, so the fit
        ends on a plain update (``history_["coef_change"]`` holds the ratio). Once the
        support is found, γ
        may still drift towards its fixed point for several iterations while the
        posterior means, and with them ``coef_``, no longer move: 1e-4 stops there in
        30-57 % fewer iterations at 10-30 dB for n ≥ 4096 and at 20-30 dB for n = 1024,
        at the same NMSE (every benchmark cell's mean within 0.02 dB). "auto": 1e-4 where
        ``evidence_tol="auto"`` is 1.0 (``"am"`` with ``remove_dead``, no ``block_size``
        and ``tol`` set; the default was None before session 8 of 2026-12), else None.
        None: no such test.
    remove_dead : bool, default=True
        Once pruning is in force, remove every factor entry γ_i[a] whose evidence, all
        else fixed, is largest at zero: the Kronecker form of the deletion rule of Tipping
        & Faul (2003), exact and computed from the E-step (its slice of x has a Gaussian
        posterior; see ``prosper.models.sbl.dead_slices``). Not in an iteration whose
        σ² update falls by more than 5 % (while σ falls it overstates the noise, and weak
        true slices look dead). With ``block_size`` the test and the removal act on
        whole blocks (the block's slice has b × b posterior covariances, diagonalised
        exactly). At 0 dB it ends fits in a sixth to a half of the iterations with a
        0.4-6.6 dB better NMSE (n = 256 to 16384; with blocks of 2, 0-0.9 dB better in
        35-70 % of the iterations); from 10 dB on it changes little.
        False: only the ``prune`` threshold (as before 2026-12).
"""
        + _COMMON_DOC.replace("{per}", " of its factor")
        .replace(
            "{choice_prior}",
            " One such prior per factor (N = n_i, or\n        its number of blocks with"
            " ``block_size``); their costs add.",
        )
        .replace("{prune0}", "3e-3")
        .replace(
            "{prune_note}",
            " The threshold acts on each factor, so on γ it is prune^I\n"
            "        (about 1e-5 for two factors). Raise it for fewer spurious rows at low\n"
            "        SNR, lower it when true rows may be hundreds of times weaker than the\n"
            "        strongest.",
        )
        .replace("{sigma0}", "σ² = 0.3 · mean_l ||y_l||² / m (an SNR of about 4 dB)")
        + """
    Attributes
    ----------
    gamma_ : ndarray of shape (n,)
        Learned prior variances γ = γ_1 ⊗ … ⊗ γ_I (zero: pruned).
    gamma_factors_ : list of ndarray of shape (n_i,)
        The factors γ_i (balanced to equal maxima); also as ``gamma_1_``, ``gamma_2_``, ...
"""
        + _COMMON_ATTRS
        + """
    References
    ----------
    Y. He and G. Joseph. Bayesian algorithms for Kronecker-structured sparse vector
    recovery with application to IRS-MIMO channel estimation. arXiv:2307.14719, 2023.
    J. G. Scott and J. O. Berger. Bayes and empirical-Bayes multiplicity adjustment in the
    variable-selection problem. Ann. Statist. 38(5):2587-2619, 2010.

    Examples
    --------
    >>> from prosper import KroneckerSBL
    >>> from prosper.data.kronecker import kronecker_problem
    >>> p = kronecker_problem(
    ...     [(8, 12), (8, 12)], sparsity=2, snr_db=30, n_snapshots=3, random_state=0
    ... )
    >>> model = KroneckerSBL(factors=p.factors, method="am").fit(p.Y)
    >>> model.coef_.shape, model.gamma_.shape
    ((3, 144), (144,))
    >>> bool(((model.gamma_ > 0) == p.support).all())
    True
    """
    )

    _model_name = "krosbl"
    _parameter_constraints = {
        "factors": [_is_factors],
        "method": [Options(("am", "svd"))],
        "block_size": [None, Interval("int", 1, None), _is_block_list],
        "anderson_memory": [Interval("int", 0, None)],
        "evidence_tol": [None, Options(("auto",)), Interval("real", 0, None, "neither")],
        "coef_tol": [None, Options(("auto",)), Interval("real", 0, None, "neither")],
        "remove_dead": [bool],
    }

    def __init__(
        self,
        factors: Any = None,
        *,
        method: str = "am",
        block_size: int | list[int] | None = None,
        anderson_memory: int = 5,
        evidence_tol: float | str | None = "auto",
        coef_tol: float | str | None = "auto",
        remove_dead: bool = True,
        learn_sigma: bool = True,
        sigma: float | None = None,
        prune: float = 3e-3,
        tol: float | None = 1e-6,
        model_choice: bool = True,
        n_iter: int = 500,
        batch_size: int = 1000,
        backend: str = "numpy",
        dtype: Any = "float64",
        random_state: int | np.random.Generator | None = None,
        comm: Any = None,
        callback: Any = None,
        progress: bool | None = None,
        max_memory: int | str | None = None,
    ) -> None:
        self.factors = factors
        self.method = method
        self.block_size = block_size
        self.anderson_memory = anderson_memory
        self.evidence_tol = evidence_tol
        self.coef_tol = coef_tol
        self.remove_dead = remove_dead
        self.learn_sigma = learn_sigma
        self.sigma = sigma
        self.prune = prune
        self.tol = tol
        self.model_choice = model_choice
        self.n_iter = n_iter
        self.batch_size = batch_size
        self.backend = backend
        self.dtype = dtype
        self.random_state = random_state
        self.comm = comm
        self.callback = callback
        self.progress = progress
        self.max_memory = max_memory

    @property
    def _fitted_names(self) -> tuple[str, ...]:
        return (*(f"gamma_{i + 1}" for i in range(len(self.factors))), "sigma")

    def _anderson_memory(self) -> int:
        return int(self.anderson_memory)

    def _auto_stops(self) -> bool:
        """Where the "auto" stopping tests apply: "am", dead entries removed, no blocks
        and ``tol`` set."""
        removes = self.remove_dead and self.block_size is None
        return self.method == "am" and bool(self.tol) and removes

    def _evidence_tol(self) -> float | None:
        if isinstance(self.evidence_tol, str):
            return AUTO_EVIDENCE_TOL if self._auto_stops() else None
        return None if self.evidence_tol is None else float(self.evidence_tol)

    def _coef_tol(self) -> float | None:
        if isinstance(self.coef_tol, str):
            return AUTO_COEF_TOL if self._auto_stops() else None
        return None if self.coef_tol is None else float(self.coef_tol)

    def _block_sizes(self) -> list[int]:
        I = len(self.factors)
        if self.block_size is None:
            return [1] * I
        if isinstance(self.block_size, (list, tuple)):
            return [int(b) for b in self.block_size]
        return [int(self.block_size)] * I

    def _check_operator(self, D: int) -> None:
        if self._evidence_tol() is not None and self.method != "am":
            raise ValueError(
                f"evidence_tol applies to method='am' only (the rank-one phase of 'svd' "
                f"flattens the evidence before it prunes); got method={self.method!r} with "
                f"evidence_tol={self.evidence_tol!r}. Use evidence_tol=None."
            )
        if self._coef_tol() is not None and self.method != "am":
            raise ValueError(
                f"coef_tol applies to method='am' only (during the rank-one phase of 'svd' the "
                f"posterior means can rest while γ is still being shaped); got "
                f"method={self.method!r} with coef_tol={self.coef_tol!r}. Use coef_tol=None."
            )
        factors = [_check_matrix(A, f"factors[{i}]") for i, A in enumerate(self.factors)]
        shapes = [A.shape for A in factors]
        m = int(np.prod([s[0] for s in shapes]))
        if m != D:
            raise ValueError(
                f"the factor shapes {shapes} give Φ = Φ_1 ⊗ … ⊗ Φ_I with m = "
                f"{' * '.join(str(s[0]) for s in shapes)} = {m} rows, but Y has {D} columns; "
                "each row of Y must be one snapshot of length m (row-major vec)."
            )
        blocks = self._block_sizes()
        if len(blocks) != len(factors):
            raise ValueError(
                f"block_size must be an int or give one block length per factor "
                f"({len(factors)}); got block_size={self.block_size!r}."
            )
        for i, (b, (_, n)) in enumerate(zip(blocks, shapes, strict=True)):
            if n % b:
                raise ValueError(
                    f"block_size {b} must divide n_i; factors[{i}] has n_i={n} columns."
                )

    def _memory_needs(self, D: int, n_local: int, n_gathered: int = 0) -> dict[str, int]:
        shapes = [np.shape(A) for A in self.factors]
        m = int(np.prod([s[0] for s in shapes], dtype=object))
        n = int(np.prod([s[1] for s in shapes], dtype=object))
        B = max(1, min(int(self.batch_size), n_local))
        return {
            # the factors, their Gram matrices and eigenvectors; Φ itself is never formed
            "factors": 8 * sum(4 * a * b + 3 * b * b for a, b in shapes),
            # γ, diag(Σ), the eigenvalues and scales: vectors of length n
            "vectors of length n": 8 * 8 * n,
            # (+ two (B, n) arrays for the slice sums of the dead-entry test)
            "E-step batch": 8 * (6 * B * (m + n) + 2 * B * n),
            "coef_ (posterior means)": 8 * n_local * n,
        }

    def _n_features_in(self, params: dict[str, np.ndarray]) -> int:
        # m = Π m_i, without building the model (its Gram matrices) for it
        return math.prod(int(np.shape(A)[0]) for A in self.factors)

    def _make_model(self) -> KroneckerSBLModel:
        return KroneckerSBLModel(
            [np.asarray(A, dtype=np.float64) for A in self.factors],
            method=self.method,
            block_sizes=self._block_sizes(),
            remove_dead=self.remove_dead,
        )

    def _set_fitted(
        self, params: dict[str, np.ndarray], history: dict[str, Any], attrs: dict[str, Any]
    ) -> None:
        super()._set_fitted(params, history, attrs)
        self.gamma_factors_ = [
            np.asarray(params[f"gamma_{i + 1}"], dtype=np.float64).copy()
            for i in range(len(self.factors))
        ]
        self.gamma_ = kron_vectors(self.gamma_factors_)
