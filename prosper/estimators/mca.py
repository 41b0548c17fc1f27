"""Maximal Causes Analysis estimators: MCA (W >= 0) and MMCA (signed W)."""

from __future__ import annotations

from typing import Any

import numpy as np

from prosper.estimators.base import TruncatedEMEstimator
from prosper.models.mca import MCAModel, MMCAModel
from prosper.utils.validation import Interval

__all__ = ["MCA", "MMCA"]


class MCA(TruncatedEMEstimator):
    """Maximal Causes Analysis learned by truncated EM (Expectation Truncation).

    The generative model combines binary causes s_h ~ Bernoulli(π) by a point-wise maximum
    instead of a sum: y_d ~ N(max_h s_h W_dh, σ²) with W >= 0, a model of occlusion-like
    superposition. The E-step uses the all-zero state, all singletons and the states with
    2..gamma active causes among the Hprime causes preselected by how little W_h sticks out
    above y (Σ_d max(W_dh − y_d, 0)). States with several causes use the ρ-smoothed maximum
    (Σ_h s_h W_dh^ρ)^(1/ρ), with ρ tied to the annealing temperature (ρ = T'/(T' − 1),
    T' = max(T, 1.05): ρ ≈ 1, a linear sum, while T is high and ρ = 21 at T = 1); the M-step
    is the W update with A_dh = ∂W̄_d^ρ/∂W_dh of Lücke & Sahani (2008).

    Where the original ProSper code and the paper differ we follow the paper: the singleton
    states enter the W update with A_dh = 1 (the original weights them by W_dh²).

    Parameters
    ----------
    H : int, default=10
        Number of causes (dictionary elements).
    states : {"et", "evo", "full"}, default="et"
        Candidate states per data point: ``"et"`` Expectation Truncation (the Hprime
        preselected latents, states with up to gamma of them active); ``"evo"`` evolutionary
        states (n_states states per point, kept across iterations and improved by a genetic
        search on the log-joint: for large H); ``"full"`` all states (exact EM, small H).
    Hprime : int or None, default=None
        Causes preselected per data point; None means min(H, 8). Hprime = gamma = H gives
        exact EM (of the ρ-smoothed objective) over all 2^H states.
    gamma : int or None, default=None
        Maximal number of simultaneously active causes in a candidate state; None means
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
        Re-initialisation of unused latents (see :class:`prosper.BSC`); None means 0.3.
        Every 5 iterations of the first half of the run, the least used latent (usage: how
        often it holds the maximum at its most used pixel) below this fraction of the median
        latent's usage, or the less used of two latents whose columns have a cosine above
        0.95, takes what the maximum leaves unexplained of a poorly explained data point: the
        pixels where y exceeds the reconstruction of its most probable state by more than σ
        (MMCA: in magnitude), at y's values. 0 switches it off (the former default).
    n_iter : int, default=100
        EM iterations.
    batch_size : int or None, default=None
        Data points per E-step batch (bounds the memory per rank together with an internal
        sub-chunking of the (rows, states, D) working arrays). None: 1000 (MCA's E-step
        runs on the CPU on every backend).
    temperature : float, list of [position, value] pairs or None, default=None
        Annealing temperature T >= 1 (the E-step uses 1/T for the whole joint and sets ρ);
        positions are iteration numbers (ints) or fractions of the run (floats).
        None: ``[[0, 4.0], [0.6, 1.0]]``, the best of the schedules measured in
        benchmarks/bench_mca.py (benchmarks/results/mca.md).
    anneal_prior : bool or None, default=None
        Temper the prior as well as the likelihood (None: yes, the whole joint).
    noise : float, list of pairs or None, default=None
        Relative Gaussian noise added to W, π, σ after each M-step (annealed); None: none.
    ncut_factor : float, list of pairs or None, default=None
        ET data selection factor f: the M-step uses the N_cut = N (1 - (1 - A) f) points with
        the largest log marginal. None: raised from 0 to 1 over the first 2/3 of the run.
    init : {"data", "random"}, default="data"
        W starts around the data mean ("data") or as noise of the data's spread ("random").
    backend : {"auto", "numpy", "numba", "cupy"}, default="auto"
        E-step kernels: numba runs a fused kernel (chosen by "auto" where numba is
        installed), "numpy" the reference E-step; there is no GPU kernel for MCA yet, so
        "cupy" runs the NumPy E-step on the host.
    dtype : {"float64", "float32"}, default="float64"
        Precision of the data; the non-linear E-step always computes in float64.
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
        Learned causes, ``W_ >= 1e-4``.
    pi_ : float
        Learned prior probability of a cause being active.
    sigma_ : float
        Learned noise standard deviation.
    free_energy_ : ndarray of shape ``(n_iter_,)``
        Mean free energy per data point of the parameters entering each iteration, with
        that iteration's ρ.
    history_ : dict of str to ndarray
        All per-iteration metrics (timings, temperature, N_cut).
    n_iter_ : int
    n_features_in_ : int

    See Also
    --------
    MMCA : the maximum-magnitude variant for signed data.
    BSC : linear superposition of binary causes.

    References
    ----------
    J. Lücke and M. Sahani. Maximal causes for non-linear component extraction. JMLR
    9:1227-1267, 2008.
    G. Puertas, J. Bornschein and J. Lücke. The maximal causes of natural scenes are edge
    filters. NIPS 23, 2010.
    J. Bornschein, M. Henniges and J. Lücke. Are V1 simple cells optimized for visual
    occlusions? A comparative study. PLoS Comput Biol 9(6):e1003062, 2013.

    Examples
    --------
    >>> from prosper import MCA
    >>> from prosper.data import bars
    >>> data = bars(size=3, n_samples=300, pi=0.2, amplitude=5.0, sigma=0.5,
    ...             combine="max", random_state=0)
    >>> model = MCA(H=6, Hprime=6, gamma=3, n_iter=20, random_state=0).fit(data.Y)
    >>> model.W_.shape
    (9, 6)
    >>> bool((model.W_ >= 1e-4).all())
    True
    >>> model.transform(data.Y[:2]).shape
    (2, 6)
    """

    _model_class = MCAModel
    _model_name = "mca"
    #: default annealing (None in the constructor), chosen in benchmarks/bench_mca.py
    _default_temperature: float | list = [[0.0, 4.0], [0.6, 1.0]]
    #: re-initialisation of unused and duplicate latents (benchmarks/RESULTS.md, session 7)
    _default_reassignment = 0.3


class MMCA(MCA):
    """Maximum-Magnitude Maximal Causes Analysis learned by truncated EM.

    MCA for signed data: binary causes s_h ~ Bernoulli(π) with signed W, and at each pixel
    the active cause of largest magnitude ``|W_dh|`` wins and keeps its sign,
    ``y_d ~ N(W_{d h*}, σ²)`` with ``h* = argmax_{h: s_h = 1} |W_dh|``. States with several
    causes use a ρ-smoothed maximum: in the first half of the iterations the signed
    ``sign(t_d) |t_d|^(1/ρ)``, ``t_d = Σ_h s_h sign(W_dh) |W_dh|^ρ``, of the original
    ProSper MMCA code, then ``± max(t⁺_d, t⁻_d)^(1/ρ)``, ``t^±_d`` the sums over the
    positive and the negative causes, with the sign of the larger and responsibilities for
    the causes of that sign only. The first sets the order of causes of opposite sign and
    equal magnitude from the data, the second learns their magnitudes and the order the
    data of the contested states show (where a cause lost a pixel to the other sign, it
    stays 2 % below the winners' magnitude or, where those data show its value, overtakes
    them; these contested data count every point, also those ET's data selection cuts),
    and sets to 0 the values whose data fit them less than 4 nats better than 0 (the noise
    a cause learns off its component from the few points where it wins a pixel;
    ``sparse_nats``); see :class:`prosper.models.mca.MMCAModel`.
    ρ = T'/(T' − 1), T' = max(T, 1.2), ρ <= 35 (ρ = 6 at T = 1). Causes are preselected
    by the smallest ||W_h − y||². The W update is damped by the inertia
    ι = max(1 − exp(−Σ_n <A_dh> / 2.5), 0.2) of the original ProSper MMCA code. A
    component that appears with both signs needs two causes, W_h and −W_h.

    Parameters
    ----------
    H : int, default=10
        Number of causes (dictionary elements).
    sparse_nats : float or None, default=None
        In the second half of the iterations, a value W_dh whose data fit it less than
        this many nats better than 0 (Σ_n <A_dh> m_dh² / (2σ²), m_dh the updated value) is
        set to 0 (±1e-4): a prior with mass at 0 that charges every other value
        ``sparse_nats`` nats. None means 4, which took the exact log-likelihood gap to the
        generating parameters' on 10x10 bars from 0.5-0.8 to 0.06-0.27 nats per point
        (benchmarks/RESULTS.md, session 11); 0 switches the rule off (the fit of ProSper
        before it). The evidence grows with the number of points a value is seen in, so
        with much data only values near 0 are affected.
    states, Hprime, gamma, n_states, n_parents, n_children, n_generations, n_init, \
reassignment_ratio, n_iter, batch_size, anneal_prior, noise, ncut_factor, init, backend, \
dtype, random_state, comm, callback, progress, max_memory
        As for :class:`MCA`.
    temperature : float, list of [position, value] pairs or None, default=None
        As for :class:`MCA`; None: T = 1 throughout (ρ = 6), the best of the schedules
        measured in benchmarks/bench_mca.py: unlike MCA, MMCA recovered fewer bars the
        hotter it started (benchmarks/results/mca.md).

    Attributes
    ----------
    W_ : ndarray of shape (D, H)
        Learned signed causes, ``|W_| >= 1e-4``.
    pi_ : float
    sigma_ : float
    free_energy_ : ndarray of shape ``(n_iter_,)``
    history_ : dict of str to ndarray
    n_iter_ : int
    n_features_in_ : int

    See Also
    --------
    MCA : the non-negative model.

    References
    ----------
    J. Bornschein, M. Henniges and J. Lücke. Are V1 simple cells optimized for visual
    occlusions? A comparative study. PLoS Comput Biol 9(6):e1003062, 2013.
    J. Lücke and M. Sahani. Maximal causes for non-linear component extraction. JMLR
    9:1227-1267, 2008.

    Examples
    --------
    >>> from prosper import MMCA
    >>> from prosper.data import bars
    >>> data = bars(size=3, n_samples=300, pi=0.2, amplitude=5.0, sigma=0.5, signed=True,
    ...             combine="max", random_state=0)
    >>> model = MMCA(H=12, Hprime=6, gamma=3, n_iter=10, random_state=0).fit(data.Y)
    >>> model.W_.shape
    (9, 12)
    >>> model.transform(data.Y[:2]).shape
    (2, 12)
    """

    _model_class = MMCAModel
    _model_name = "mmca"
    _default_temperature = 1.0
    _parameter_constraints = {"sparse_nats": [None, Interval("real", 0.0, None)]}

    def __init__(
        self,
        H: int = 10,
        *,
        sparse_nats: float | None = None,
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
        super().__init__(
            H,
            states=states,
            Hprime=Hprime,
            gamma=gamma,
            n_states=n_states,
            n_parents=n_parents,
            n_children=n_children,
            n_generations=n_generations,
            n_init=n_init,
            reassignment_ratio=reassignment_ratio,
            n_iter=n_iter,
            batch_size=batch_size,
            temperature=temperature,
            anneal_prior=anneal_prior,
            noise=noise,
            ncut_factor=ncut_factor,
            init=init,
            backend=backend,
            dtype=dtype,
            random_state=random_state,
            comm=comm,
            callback=callback,
            progress=progress,
            max_memory=max_memory,
        )
        self.sparse_nats = sparse_nats

    def _model_kwargs(self) -> dict[str, Any]:
        return {"sparse_nats": self.sparse_nats}
