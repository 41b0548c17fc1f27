"""Gaussian Sparse Coding (spike-and-slab) estimator."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import logsumexp

from prosper.estimators.base import TruncatedEMEstimator
from prosper.models.gsc import GSCModel

__all__ = ["GSC"]


class GSC(TruncatedEMEstimator):
    """Spike-and-slab sparse coding (Gaussian Sparse Coding) learned by truncated EM.

    The generative model is y = W s + ε with s = b ⊙ z: binary spikes b_h ~ Bernoulli(π_h),
    Gaussian slabs z_h ~ N(μ_h, Ψ_h) and noise ε ~ N(0, σ² I). The E-step truncates the
    posterior over the spikes (the all-zero pattern, all singletons and the patterns with
    2..gamma active latents among the Hprime preselected ones) and integrates the slab out
    exactly for every pattern, so each candidate carries a Gaussian posterior over its
    active amplitudes. Annealing tempers the whole joint by default.

    This implementation keeps the ½ on both Gaussian terms of log p(y | b) and uses the
    exact Ψ update Ψ_h = Σ⟨b_h (z_h - μ_h)²⟩ / Σ⟨b_h⟩; the original ProSper GSC code dropped
    that ½ and used a wrong Ψ update.

    Parameters
    ----------
    H : int, default=10
        Number of latents (dictionary elements).
    states : {"et", "evo", "full"}, default="et"
        Candidate states per data point: ``"et"`` Expectation Truncation (the Hprime
        preselected latents, states with up to gamma of them active); ``"evo"`` evolutionary
        states (n_states states per point, kept across iterations and improved by a genetic
        search on the log-joint: for large H); ``"full"`` all states (exact EM, small H).
    Hprime : int or None, default=None
        Latents preselected per data point (largest singleton marginal likelihood
        log N(y; μ_h W_h, σ² I + Ψ_h W_h W_hᵀ)); None means min(H, 8). Hprime = gamma = H
        gives exact EM over all 2^H spike patterns.
    gamma : int or None, default=None
        Maximal number of simultaneously active spikes in a candidate pattern; None means
        min(Hprime, 4).
    n_states, n_parents, n_children, n_generations : int or None, default=None
        ``states="evo"`` only: states kept per data point (None: 32), parents drawn per
        generation (4), children per parent (4) and generations per E-step (2). The states
        take n_states · H bytes per data point on the rank that holds it.
    n_init : int, default=1
        Fits from this many initialisations (seeds drawn from ``random_state``) and keeps
        the one with the best final free energy, as scikit-learn's GaussianMixture; the kept
        one is fitted once more to record it, so a fit costs n_init + 1 runs when n_init > 1.
    reassignment_ratio : float or None, default=None
        Re-initialisation of unused latents, of the less used of two duplicates (absolute
        cosine > 0.95) and redefinition of latents only ever on together (merged into their
        slab-mean-weighted sum, or split into two causes where one slab straddles zero),
        every 5 iterations of the first half (see :class:`prosper.BSC` and the guide's
        "Unused latents"). None: 0.3 (spike-and-slab bars, N = 2000, 20 seeds per cell:
        all bars in 20 of 20 runs on 5x5, 10x10 and 16x16 at π = 1/H and 2/H, against 13
        and 19 of 20 on 5x5, 13 and 20 of 20 on 10x10 without it; benchmarks/RESULTS.md,
        session 7). 0 switches it off.
    n_iter : int, default=100
        EM iterations.
    batch_size : int or None, default=None
        Data points per E-step batch (bounds the memory per rank: about
        batch_size * C(Hprime, gamma) * gamma² floats for the largest group of patterns).
        None: 1000 (GSC's E-step runs on the CPU on every backend).
    temperature : float, list of [position, value] pairs or None, default=None
        Annealing temperature T >= 1 (the E-step uses 1/T); positions are iteration numbers
        (ints) or fractions of the run (floats), e.g. ``[[0, 5.0], [0.8, 1.0]]``. None:
        ``[[0, 3.0], [0.6, 1.0]]``, T falling from 3 to 1 over the first 60 % of the run
        (all bars in 19 of 20 seeds on the bars benchmark, against 16 of 20 without
        annealing; benchmarks/results/gsc.md). Pass 1.0 for no annealing.
    anneal_prior : bool or None, default=None
        Temper the prior as well as the likelihood (None: yes, GSC tempers the whole joint).
    noise : float, list of pairs or None, default=None
        Relative Gaussian noise added to W, π, μ, Ψ, σ after each M-step (annealed).
    ncut_factor : float, list of pairs or None, default=None
        ET data selection factor f: the M-step uses the N_cut = N (1 - (1 - A) f) points with
        the largest log marginal. None: raised from 0 to 1 over the first 2/3 of the run.
    init : {"data", "random"}, default="data"
        W starts around the data mean ("data") or as zero-mean noise ("random"); slabs
        start at μ = 0, Ψ = 1, spikes at π = 1/H.
    backend : {"auto", "numpy", "numba", "cupy"}, default="auto"
        Accepted for a uniform interface; GSC's E-step is the NumPy kernel on every backend.
    dtype : {"float64", "float32"}, default="float64"
        Precision of the data product Wᵀy (the small solves and the statistics are float64).
    random_state : int, numpy.random.Generator or None, default=None
        Seed of the initialisation and annealing noise.
    comm : mpi4py communicator or None, default=None
        None uses MPI.COMM_WORLD (a single rank without mpiexec).
    callback : callable or None, default=None
        ``callback(iteration, learner, metrics)``; returning True stops the run.
    progress : bool or None, default=None
        Progress on rank 0: a bar (True), nothing (False), or by default a bar on a
        terminal and a log line every 30 s otherwise.
    max_memory : int, str or None, default=None
        Memory limit per rank for the size check made before any allocation: bytes or a
        string such as ``"8GB"``; None: the memory available on the machine. A fit whose
        estimated need exceeds it is refused with the estimate.

    Attributes
    ----------
    W_ : ndarray of shape (D, H)
        Learned dictionary, in the unit-norm gauge: every column has Euclidean norm 1 (or 0
        if unused) and μ_h, Ψ_h carry the scale (also in the result file's ``/model``;
        :meth:`prosper.models.gsc.GSCModel.canonical_params`).
    pi_ : ndarray of shape (H,)
        Learned spike probabilities.
    mu_ : ndarray of shape (H,)
        Learned slab means.
    psi_ : ndarray of shape (H,)
        Learned slab variances. Note that (W_h, μ_h, Ψ_h) and (c W_h, μ_h / c, Ψ_h / c²)
        give the same distribution of y, so only W_h μ_h and W_h √Ψ_h are identifiable.
    sigma_ : float
        Learned noise standard deviation.
    free_energy_ : ndarray of shape ``(n_iter_,)``
        Mean free energy per data point of the parameters entering each iteration.
    history_ : dict of str to ndarray
        All per-iteration metrics (timings, temperature, N_cut).
    n_iter_ : int
    n_features_in_ : int

    See Also
    --------
    BSC : binary latents (the Ψ → 0, μ = 1 limit of GSC).

    References
    ----------
    A.-S. Sheikh, J. A. Shelton and J. Lücke. A truncated EM approach for spike-and-slab
    sparse coding. JMLR 15:2653-2687, 2014.

    J. Lücke and J. Eggert. Expectation Truncation and the benefits of preselection in
    training generative models. JMLR 11:2855-2900, 2010.

    Examples
    --------
    >>> from prosper import GSC
    >>> from prosper.data.spike_slab import gsc_data
    >>> data = gsc_data(300, D=9, H=6, mu=5.0, dictionary="bars", random_state=0)
    >>> model = GSC(H=6, Hprime=4, gamma=2, n_iter=10, random_state=0).fit(data.Y)
    >>> model.W_.shape, model.pi_.shape
    ((9, 6), (6,))
    >>> model.transform(data.Y[:2]).shape
    (2, 6)
    >>> bool(((model.spike_proba(data.Y[:2]) >= 0) & (model.spike_proba(data.Y[:2]) <= 1)).all())
    True
    """

    _model_class = GSCModel
    _model_name = "gsc"
    #: temperature schedule used when ``temperature`` is None (measured in bench_gsc.py)
    _default_temperature = [[0, 3.0], [0.6, 1.0]]
    #: re-initialisation, duplicate and pair repairs (measured in bench_states.py, session 7)
    _default_reassignment = 0.3

    def _bytes_per_state(self, H: int, gamma: int) -> int:
        # the slab's gamma × gamma Cholesky factors and their solves per state and point
        return 8 * (H + 6 + 5 * gamma * gamma)

    def transform(self, Y: Any) -> np.ndarray:
        """Posterior mean ⟨s⟩ = ⟨b ⊙ z⟩ under the truncated posterior.

        Parameters
        ----------
        Y : array-like of shape (N, D)

        Returns
        -------
        ndarray of shape (N, H)
        """
        return self._moments(Y)[0]

    def spike_proba(self, Y: Any) -> np.ndarray:
        """Posterior probability ⟨b_h⟩ that each latent is active (its spike is on).

        Parameters
        ----------
        Y : array-like of shape (N, D)

        Returns
        -------
        ndarray of shape (N, H)
            Values in [0, 1]; latents outside a point's candidate patterns get 0.
        """
        return self._moments(Y)[1]

    def _moments(self, Y: Any) -> tuple[np.ndarray, np.ndarray]:
        Y = self._check_input(Y)
        learner = self._learner_for(Y)
        model, states, params = learner.model, learner.states, learner.params
        mean_s = np.empty((Y.shape[0], self.H))
        mean_b = np.empty((Y.shape[0], self.H))
        for start in range(0, Y.shape[0], learner.batch_size):
            rows = slice(start, min(start + learner.batch_size, Y.shape[0]))
            Yb = Y[rows]
            if learner.evolutionary:
                # new rows: their states are searched first, as in the solver's transform
                X, lj = learner._searched(Yb, rows)
                q = np.exp(lj - logsumexp(lj, axis=1, keepdims=True))
                mean_s[rows], mean_b[rows] = model.state_moments(Yb, X, q, params)
                continue
            mean_s[rows], mean_b[rows] = model.posterior_moments(
                Yb, model.candidates(Yb, states, params), params, learner.backend
            )
        return mean_s, mean_b
