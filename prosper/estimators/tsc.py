"""Ternary Sparse Coding estimator."""

from __future__ import annotations

from prosper.estimators.base import TruncatedEMEstimator
from prosper.models.tsc import TSCModel

__all__ = ["TSC"]


class TSC(TruncatedEMEstimator):
    """Ternary Sparse Coding learned by truncated EM (Expectation Truncation).

    The generative model is y = W s + ε with ternary latents s_h ∈ {-1, 0, 1},
    p(s_h = ±1) = π/2, p(s_h = 0) = 1 - π, and Gaussian noise ε ~ N(0, σ² I). The E-step
    restricts each data point's posterior to the all-zero state, all 2H signed singletons
    and the states with 2..gamma non-zero latents (each of either sign) among the Hprime
    latents preselected by the better of their two signed singleton log-joints. A dictionary
    element and its negative describe the same component.

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
        Latents preselected per data point; None means min(H, 6) (BSC's 8 recovers the bars
        less often: see Notes). Hprime = gamma = H gives exact EM over all 3^H states.
    gamma : int or None, default=None
        Maximal number of simultaneously non-zero latents in a candidate state; None means
        min(Hprime, 3). A data point has 1 + 2H + sum_{k=2..gamma} C(Hprime, k) 2^k states
        (241 at H=10 with the defaults, 1721 with Hprime=8, gamma=4).
    n_states, n_parents, n_children, n_generations : int or None, default=None
        ``states="evo"`` only: states kept per data point (None: 32), parents drawn per
        generation (4), children per parent (4) and generations per E-step (2). The states
        take n_states · H bytes per data point on the rank that holds it.
    n_init : int, default=1
        Fits from this many initialisations (seeds drawn from ``random_state``) and keeps
        the one with the best final free energy, as scikit-learn's GaussianMixture; the kept
        one is fitted once more to record it, so a fit costs n_init + 1 runs when n_init > 1.
    reassignment_ratio : float or None, default=None
        Repairs of latents EM leaves in a local optimum, every 5 iterations of the first
        half of the run (see :class:`prosper.BSC`), read for signed latents: a latent used
        less than this fraction of the median latent's ``Σ<|s_h|>``, or the less used of two
        columns with absolute cosine > 0.95 (a column and its negative are one latent),
        takes the residual of a poorly explained point whose most probable ET state has
        fewer than gamma non-zero latents (one at the limit may lack a state, not a
        latent); latents only ever non-zero together
        (``Σ<|s_g| |s_h|>``) are merged into W_g ± W_h, the sign of Σ<s_g s_h>. None: 0.3; 0
        switches the repairs off. With the default schedule they raise the runs that find
        every signed bar from 8 to 20 of 20 (5x5, π = 1/H) and from 5 to 20 of 20 (10x10,
        π = 1/H; benchmarks/RESULTS.md, 2026-12-02 session 7).
    n_iter : int, default=100
        EM iterations.
    batch_size : int or None, default=None
        Data points per E-step batch (bounds the memory per rank). None: 1000 on the CPU;
        on a GPU (``backend="cupy"``, ET or all states) as many as a quarter of its free
        memory holds, at most 50000: each batch costs a GPU ~2 ms of fixed overhead.
    temperature : float, list of [position, value] pairs or None, default=None
        Annealing temperature T >= 1 (the E-step uses 1/T); positions are iteration numbers
        (ints) or fractions of the run (floats), e.g. ``[[0, 5.0], [0.8, 1.0]]``. None: T
        falls linearly from 3 to 1 over the first 60 % of the run (BSC's schedule), so that
        the bars have formed while the repairs of ``reassignment_ratio`` still look (with
        the former 5 → 1 over 80 % they form after the last check).
    anneal_prior : bool or None, default=None
        Temper the prior as well as the likelihood (None: likelihood only).
    noise : float, list of pairs or None, default=None
        Relative Gaussian noise added to W, π, σ after each M-step (annealed); None: none.
    ncut_factor : float, list of pairs or None, default=None
        ET data selection factor f: the M-step uses the N_cut = N (1 - (1 - A) f) points with
        the largest log marginal. None: off while annealing, raised from 0 to 1 between 80 %
        and 90 % of the run, once T = 1 (signed 5x5 bars, N=2000, 100 iterations, Hprime=6,
        gamma=3, one data set, 20 initialisations: 20/20 recovered with π, σ unbiased,
        against 16/20 with the selection raised during annealing as for BSC, and 20/20 but
        σ 27 % too large without selection).
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
        Learned probability that a latent is non-zero (each sign has probability ``pi_ / 2``).
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
    BSC : binary latents.
    DSC : latents from an arbitrary finite value set with a learned categorical prior.

    Notes
    -----
    The σ update uses the new W (the exact M-step); the original ProSper code used the old
    one. The ET prior correction of π is BSC's, since ``|s| ~ Binomial(H, π)`` here too.

    TSC's typical failure is a local optimum of EM itself, not of the truncation: two
    fields hold the sum and the difference of two bars. Exact EM (``states="full"``) from the
    same start with the same schedule ends in the same optimum as ET with Hprime=8, gamma=4.
    The smaller default state set (Hprime=6, gamma=3) explains data points with many causes
    less well, which keeps σ larger while the bars form and lets them separate; ET data
    selection then removes that bias once T = 1. The repairs (``reassignment_ratio``) take
    such optima apart while the bars form: on signed bars at N = 2000 (20 seeds per cell)
    the defaults find every bar in 18–20 of 20 runs on 5x5 and 10x10 bars with π = 1/H and
    2/H, and in 20 and 20 of 20 on 16x16 bars (14 of 20 at π = 2/H before the point a
    re-initialised latent takes over had to leave room for it). Where every component must
    be found, use ``n_init=3`` (four fits' cost): 20 of 20 on 5x5 bars at π = 2/H, the one
    cell below 20 (benchmarks/RESULTS.md, 2026-12-02 session 7).

    References
    ----------
    G. Exarchakis, M. Henniges, J. Eggert and J. Lücke. Ternary sparse coding. LVA/ICA 2012,
    LNCS 7191:204-212.

    J. Lücke and J. Eggert. Expectation Truncation and the benefits of preselection in
    training generative models. JMLR 11:2855-2900, 2010.

    Examples
    --------
    >>> from prosper import TSC
    >>> from prosper.data import bars
    >>> data = bars(size=3, n_samples=300, pi=0.2, amplitude=5.0, sigma=0.5, signed=True,
    ...             random_state=0)
    >>> model = TSC(H=6, Hprime=6, gamma=3, n_iter=20, random_state=0).fit(data.Y)
    >>> model.W_.shape
    (9, 6)
    >>> model.transform(data.Y[:2]).shape
    (2, 6)
    """

    _model_class = TSCModel
    _model_name = "tsc"
    # T 3 -> 1 over 60 % with the repairs (benchmarks/RESULTS.md, 2026-12-02 session 7):
    # the bars form by about iteration 35, inside the checks of the first half
    _default_temperature: list = [[0.0, 3.0], [0.6, 1.0]]
    _default_reassignment = 0.3
    # selecting data points while the posterior is still tempered locks TSC into shared
    # "sum and difference" fields; selecting only after annealing removes the truncation
    # bias without that (benchmarks/RESULTS.md, TSC schedules)
    _default_ncut = [[0.8, 0.0], [0.9, 1.0]]
    # H'=6, γ=3 (measured over 20 seeds; benchmarks/RESULTS.md, 2026-12-02): with BSC's
    # H'=8, γ=4 the posterior is close to exact EM's, whose σ collapses as soon as the bars
    # appear and freezes "sum and difference" pairs of fields
    _default_sizes = (6, 3)
