"""Binary Sparse Coding estimator."""

from __future__ import annotations

from prosper.estimators.base import TruncatedEMEstimator
from prosper.models.bsc import BSCModel

__all__ = ["BSC"]


class BSC(TruncatedEMEstimator):
    """Binary Sparse Coding learned by truncated EM (Expectation Truncation).

    The generative model is y = W s + ε with binary latents s_h ~ Bernoulli(π) and
    Gaussian noise ε ~ N(0, σ² I). The E-step restricts each data point's posterior to the
    all-zero state, all singletons and the states with 2..gamma active latents among the
    Hprime latents preselected by cosine similarity.

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
        Latents preselected per data point; None means min(H, 8). Hprime = gamma = H gives
        exact EM over all 2^H states.
    gamma : int or None, default=None
        Maximal number of simultaneously active latents in a candidate state; None means
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
        Every 5 iterations of the first half of the run, the least used latent is
        re-initialised to the unexplained part of a poorly explained data point if it is
        used less than this fraction of the median latent, or if its column duplicates
        another's (cosine > 0.95): a latent that has settled on a mixture of causes that
        others already explain gets a second chance (as MiniBatchKMeans' reassignment in
        scikit-learn). At the same checks, latents that are only ever on together with
        another are merged: each becomes the sum of a pair of columns that is on together
        often (the user guide's "Unused latents"). None: 0.3 for BSC (measured on bars
        over 20 seeds per size, benchmarks/RESULTS.md); 0 switches all of it off.
    n_iter : int, default=100
        EM iterations.
    batch_size : int or None, default=None
        Data points per E-step batch (bounds the memory per rank). None: 1000 on the CPU;
        on a GPU (``backend="cupy"``, ET or all states) as many as a quarter of its free
        memory holds, at most 50000: each batch costs a GPU ~2 ms of fixed overhead.
    temperature : float, list of [position, value] pairs or None, default=None
        Annealing temperature T >= 1 (the E-step uses 1/T); positions are iteration numbers
        (ints) or fractions of the run (floats). None: the measured default
        ``[[0, 3.0], [0.6, 1.0]]`` (T falls linearly from 3 to 1 over 60 % of the run);
        ``1.0`` switches annealing off.
    anneal_prior : bool or None, default=None
        Temper the prior as well as the likelihood (None: False for BSC, the measured best).
    noise : float, list of pairs or None, default=None
        Relative Gaussian noise added to W, π, σ after each M-step (annealed); None: none.
    ncut_factor : float, list of pairs or None, default=None
        ET data selection factor f: the M-step uses the N_cut = N (1 - (1 - A) f) points with
        the largest log marginal. None: raised from 0 to 1 over the first 2/3 of the run.
    init : {"data", "random"}, default="data"
        W starts around the data mean ("data") or as zero-mean noise ("random").
    backend : {"auto", "numpy", "numba", "cupy"}, default="auto"
        E-step kernels.
    dtype : {"float64", "float32"}, default="float64"
        Precision of the E-step (statistics are always accumulated in float64).
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
        Learned dictionary.
    pi_ : float
        Learned prior activation probability.
    sigma_ : float
        Learned noise standard deviation.
    free_energy_ : ndarray of shape ``(n_iter_,)``
        Mean free energy per data point of the parameters entering each iteration.
    history_ : dict of str to ndarray
        All per-iteration metrics (timings, temperature, N_cut).
    n_iter_ : int
    n_features_in_ : int

    References
    ----------
    J. Lücke and J. Eggert. Expectation Truncation and the benefits of preselection in
    training generative models. JMLR 11:2855-2900, 2010.

    Examples
    --------
    >>> from prosper import BSC
    >>> from prosper.data import bars
    >>> data = bars(size=3, n_samples=300, pi=0.2, amplitude=5.0, sigma=0.5, random_state=0)
    >>> model = BSC(H=6, Hprime=6, gamma=3, n_iter=20, random_state=0).fit(data.Y)
    >>> model.W_.shape
    (9, 6)
    >>> model.transform(data.Y[:2]).shape
    (2, 6)
    """

    _model_class = BSCModel
    _model_name = "bsc"
    # measured by benchmarks/bench_states.py (20 seeds per cell, data varying with the seed,
    # default H'=8, gamma=4): T from 3 to 1 over 60 %, likelihood only, recovered all bars in
    # 17/20 and 16/20 runs on 5x5 bars (pi = 1/H, 2/H) and 9/20, 7/20 on 10x10; the former
    # default (T from 5, prior tempered too), chosen on one 5x5 data set with H'=6, gamma=3,
    # recovered 0 of 24. Tempering the prior flattens it, and with gamma=4 the many states
    # with four active latents then take the posterior mass: pi and sigma come out too large
    # and bars merge (benchmarks/RESULTS.md, 2026-12-02).
    _default_temperature = [[0, 3.0], [0.6, 1.0]]
    _default_anneal_prior = False
    _default_reassignment = 0.3
