"""Discrete Sparse Coding estimator."""

from __future__ import annotations

from typing import Any

import numpy as np

from prosper.estimators.base import TruncatedEMEstimator
from prosper.models.dsc import DSCModel, check_values

__all__ = ["DSC"]


class DSC(TruncatedEMEstimator):
    """Discrete Sparse Coding learned by truncated EM (Expectation Truncation).

    The generative model is y = W s + ε with latents s_h taking values in a given finite set
    Φ = ``values`` (containing 0) with learned probabilities p(s_h = φ_k) = π_k, and
    Gaussian noise ε ~ N(0, σ² I). The E-step restricts each data point's posterior to the
    all-zero state, every non-zero value of every latent alone, and the states with
    2..gamma non-zero latents (each taking any non-zero value) among the Hprime latents
    preselected by their best singleton log-joint.

    Parameters
    ----------
    H : int, default=10
        Number of latents (dictionary elements).
    values : sequence of float, default=(0, 1, 2)
        The value set Φ: at least two distinct finite numbers, one of them 0.
    states : {"et", "evo", "full"}, default="et"
        Candidate states per data point: ``"et"`` Expectation Truncation (the Hprime
        preselected latents, states with up to gamma of them active); ``"evo"`` evolutionary
        states (n_states states per point, kept across iterations and improved by a genetic
        search on the log-joint: for large H); ``"full"`` all states (exact EM, small H).
    Hprime : int or None, default=None
        Latents preselected per data point; None means min(H, 8). Hprime = gamma = H gives
        exact EM over all V^H states (V = len(values)).
    gamma : int or None, default=None
        Maximal number of simultaneously non-zero latents in a candidate state; None means
        min(Hprime, 4). A data point has 1 + (V-1)H + sum_{k=2..gamma} C(Hprime, k) (V-1)^k
        states.
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
        half of the run (see :class:`prosper.BSC`), read for any value set as TSC reads
        them (:class:`prosper.models.base.ActivityRepairs`): a latent used less than this
        fraction of the median latent's ``Σ<s_h²>``, or the less used of two columns with
        cosine > 0.95 (absolute where the values have both signs), takes the residual of a
        poorly explained point; latents only ever non-zero together are merged into
        W_g ± W_h. None: 0.3; 0 switches the repairs off. On the discrete-amplitude 10x10
        bars (values 0..3, N = 2000) they raise the runs that find every bar from 6 of 10
        to 20 of 20 at π = 1/H and from 9 of 10 to 20 of 20 at π = 2/H: the failed runs
        kept three latents mixing three bars (benchmarks/RESULTS.md, 2026-12-02 session 8).
        The checks sweep the candidate states once more for the pair counts: with values
        0..3 at H = 20 a fit took about 2.5 times as long.
    n_iter : int, default=100
        EM iterations.
    batch_size : int or None, default=None
        Data points per E-step batch (bounds the memory per rank). None: 1000 on the CPU;
        on a GPU (``backend="cupy"``, ET or all states) as many as a quarter of its free
        memory holds, at most 50000: each batch costs a GPU ~2 ms of fixed overhead.
    temperature : float, list of [position, value] pairs or None, default=None
        Annealing temperature T >= 1 (the E-step uses 1/T); positions are iteration numbers
        (ints) or fractions of the run (floats), e.g. ``[[0, 5.0], [0.8, 1.0]]``. None: T
        falls linearly from 5 to 1 over the first 80 % of the run (on the discrete-amplitude
        bars test, N=2000, 10 seeds: 10/10 recovered; without annealing the runs settled in
        a state that explains every amplitude by one value and a too large σ;
        benchmarks/results/discrete.md). The repairs' figures (``reassignment_ratio``) were
        measured with this schedule; BSC's and TSC's 3 → 1 over 60 % was not measured
        for DSC.
    anneal_prior : bool or None, default=None
        Temper the prior as well as the likelihood (None: likelihood only).
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
    pi_ : ndarray of shape (V,)
        Learned prior probabilities of the values, in the order of ``values``; sums to 1.
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
    BSC : values (0, 1) with a single activation probability.
    TSC : values (-1, 0, 1) with a symmetric prior.

    Notes
    -----
    With ET the π update is corrected for the truncation (derived in
    :mod:`prosper.models.dsc`): the probability ρ = 1 - π_0 of a non-zero latent gets BSC's
    correction and the non-zero values share it in proportion to their posterior counts.
    The original ProSper code left this correction out and used the old W in the σ update;
    both follow the paper's M-step here.

    References
    ----------
    G. Exarchakis and J. Lücke. Discrete sparse coding. Neural Computation
    29(11):2979-3013, 2017.

    J. Lücke and J. Eggert. Expectation Truncation and the benefits of preselection in
    training generative models. JMLR 11:2855-2900, 2010.

    Examples
    --------
    >>> from prosper import DSC
    >>> from prosper.data import bars
    >>> data = bars(size=3, n_samples=300, pi=0.2, amplitude=5.0, sigma=0.5,
    ...             values=(0, 1, 2), random_state=0)
    >>> model = DSC(H=6, values=(0, 1, 2), Hprime=4, gamma=2, n_iter=20, random_state=0)
    >>> model = model.fit(data.Y)
    >>> model.pi_.shape
    (3,)
    >>> model.W_.shape
    (9, 6)
    >>> model.transform(data.Y[:2]).shape
    (2, 6)
    """

    _model_class = DSCModel
    _model_name = "dsc"
    _default_temperature: list = [[0.0, 5.0], [0.8, 1.0]]
    # with TSC's repairs (ActivityRepairs): 20/20 at 10x10 bars, both π (benchmarks/RESULTS.md,
    # 2026-12-02 session 8)
    _default_reassignment = 0.3

    def __init__(
        self,
        H: int = 10,
        *,
        values: Any = (0, 1, 2),
        states: str = "et",
        Hprime: int | None = None,
        gamma: int | None = None,
        n_states: int | None = None,
        n_parents: int | None = None,
        n_children: int | None = None,
        n_generations: int | None = None,
        n_init: int = 1,
        reassignment_ratio: float | None = None,
        n_iter: int = 100,
        batch_size: int | None = None,
        temperature: Any = None,
        anneal_prior: bool | None = None,
        noise: Any = None,
        ncut_factor: Any = None,
        init: str = "data",
        backend: str = "auto",
        dtype: Any = "float64",
        random_state: int | np.random.Generator | None = None,
        comm: Any = None,
        callback: Any = None,
        progress: bool | None = None,
        max_memory: int | str | None = None,
    ) -> None:
        self.H = H
        self.values = values
        self.states = states
        self.Hprime = Hprime
        self.gamma = gamma
        self.n_states = n_states
        self.n_parents = n_parents
        self.n_children = n_children
        self.n_generations = n_generations
        self.n_init = n_init
        self.reassignment_ratio = reassignment_ratio
        self.n_iter = n_iter
        self.batch_size = batch_size
        self.temperature = temperature
        self.anneal_prior = anneal_prior
        self.noise = noise
        self.ncut_factor = ncut_factor
        self.init = init
        self.backend = backend
        self.dtype = dtype
        self.random_state = random_state
        self.comm = comm
        self.callback = callback
        self.progress = progress
        self.max_memory = max_memory

    def _check_params(self, D: int) -> None:
        check_values(self.values)
        super()._check_params(D)

    def _model_kwargs(self) -> dict[str, Any]:
        return {"values": check_values(self.values)}
