"""ℓq sparse coding estimator: MAP codes, dictionary learned online in mini-batches."""

from __future__ import annotations

from typing import Any

import numpy as np

from prosper.backends import get_backend
from prosper.estimators.base import EMEstimator, _dtype_name
from prosper.models.sparse_coding import PENALTIES, SparseCodingModel
from prosper.solvers.sparse_coding import SOLVERS, Coder, OnlineSparseCoding
from prosper.utils.validation import Interval, Options, check_data

__all__ = ["SparseCoding"]


class SparseCoding(EMEstimator):
    """Sparse coding with an ℓ1, ℓ1/2, ℓ0 or CEL0 penalty, dictionary learned online.

    Each data point is coded by its MAP estimate

        s_n = argmin_s ½ ||y_n − W s||² + Σ_h ψ(s_h),

    with ψ(u) = λ|u| ("l1"), λ sqrt|u| ("l1/2"), λ 1{u ≠ 0} ("l0") or the continuous exact ℓ0
    relaxation of Soubies et al. ("cel0", with a_h = ||W_h||). The dictionary is learned by
    online dictionary learning (Mairal et al. 2010): the data are visited in global
    mini-batches of about ``batch_size`` points, stratified (each takes one row, chosen at
    random per pass, from every run of N / ``batch_size`` consecutive rows, so each draws
    from the whole data set and every rank holds its share of it); each mini-batch is coded
    (exact coordinate descent by default; the non-convex penalties start from the ℓ1
    solution), its contributions to A = Σ s sᵀ and B = Σ y sᵀ are added with a forgetting
    factor, and one sweep of block coordinate descent updates the unit-norm atoms. Under MPI
    every rank codes the rows of each mini-batch that it holds and one Allreduce per
    mini-batch adds the increments, so the result does not depend on the number of ranks
    beyond round-off. See :mod:`prosper.solvers.sparse_coding`.

    The full-batch alternating algorithm of earlier versions (one least-squares dictionary
    update per pass, warm-started codes kept per row) is gone: it had no remaining use. It
    made one dictionary update per pass (issue #12: objective 16.4 after 60 passes on 20 000
    patches, where scikit-learn's online learner was at 15.9 after one), lost atoms for ℓ0
    and CEL0 on synthetic data that the online learner recovers (benchmarks/RESULTS.md),
    and needed O(N_local H) memory per rank for the kept codes, which would also have had to
    go into the checkpoint for an exact resume.

    Parameters
    ----------
    H : int, default=64
        Number of atoms (dictionary elements).
    penalty : {"l1", "l1/2", "l0", "cel0"}, default="l1"
        Sparsity penalty. With ``solver="cd"``, "cel0" gives the same codes as "l0": the
        coordinate-wise minimiser of the CEL0 energy is ℓ0's hard threshold (the two differ
        with the proximal-gradient solvers).
    lam : float, default=0.1
        Penalty weight λ > 0 (larger: sparser codes).
    n_iter : int, default=10
        Passes over the data (each makes ceil(N / batch_size) dictionary updates).
    batch_size : int, default=512
        Data points per global mini-batch at most (a pass makes ceil(N / batch_size)
        mini-batches of equal size to within one point); also bounds the rows a rank codes
        at once.
    max_iter : int, default=200
        Coordinate-descent sweeps (or FISTA iterations) at most per data point.
    tol : float, default=1e-4
        A data point's coding stops when the largest change of its code in a sweep (an
        iteration) is at most tol times its largest entry (its norm, for FISTA).
    solver : {"cd", "fista", "ista"}, default="cd"
        Coder: exact cyclic coordinate descent, or proximal gradient with momentum
        (with adaptive restart) or without.
    init : {"random", "data", "svd"}, default="random"
        Initial atoms: Gaussian noise, H randomly chosen data points, or the data's leading
        principal directions (eigenvectors of YᵀY, streamed; Gaussian atoms beyond D), unit
        norm in every case. Data points are mixtures of several true atoms, and the
        non-convex penalties keep such mixtures as atoms (a local minimum they do not
        leave): from data points ℓ0 recovered 42 of 48 atoms of the issue #12 problem, from
        noise 48 of 48, as did ℓ1, CEL0 and ℓ1/2. On natural images choose "svd": on 20000
        whitened 8x8 patches (H=64, λ=1) one pass from it reaches objective 17.71 against
        18.60 from noise (scikit-learn's one pass: 17.82); on sparse synthetic
        dictionaries it recovers slightly fewer atoms (44-47 of 48) than noise does.
    backend : {"auto", "numpy", "numba", "cupy"}, default="auto"
        "auto" and "numba" run coordinate descent compiled by numba when it is installed;
        otherwise (and with "numpy" or "cupy") the vectorised NumPy reference runs.
    dtype : {"float64", "float32"}, default="float64"
        Precision of Y W (statistics and dictionary updates are in float64).
    random_state : int, numpy.random.Generator or None, default=None
        Seed of the initial dictionary and of the order of the mini-batches.
    comm : mpi4py communicator or None, default=None
        None uses MPI.COMM_WORLD (a single rank without mpiexec).
    callback : callable or None, default=None
        ``callback(iteration, learner, metrics)`` after each pass; returning True stops.
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
        Learned dictionary, unit-norm columns.
    free_energy_ : ndarray of shape ``(n_iter_,)``
        Per pass, minus the mean energy of the mini-batch codes, each under the dictionary
        it was coded with (the online estimate; :meth:`score` gives the exact value).
    history_ : dict of str to ndarray
        All per-pass metrics: ``sparsity`` (fraction of non-zero coefficients),
        ``rel_error`` (||Y − S Wᵀ||_F / ||Y||_F), ``coder_iter`` (mean sweeps or iterations
        per point), ``n_replaced`` (unused atoms replaced by data residuals) and timings.
    inner_stats_ : dict of str to ndarray
        ``A`` (H, H), ``B`` (D, H) and ``n_steps`` (mini-batches seen): what
        :meth:`partial_fit` continues from.
    n_iter_ : int
    n_features_in_ : int

    References
    ----------
    J. Mairal, F. Bach, J. Ponce and G. Sapiro. Online learning for matrix factorization and
    sparse coding. J. Mach. Learn. Res. 11:19-60, 2010.

    S. Rentzeperis, L. Calatroni, L. Perrinet and D. Prandi. Beyond ℓ1 sparse coding in V1.
    PLoS Comput. Biol. 19(9):e1011459, 2023.

    Z. Xu, X. Chang, F. Xu and H. Zhang. L1/2 regularization: a thresholding representation
    theory and a fast solver. IEEE Trans. Neural Netw. Learn. Syst. 23(7), 2012.

    E. Soubies, L. Blanc-Féraud and G. Aubert. A continuous exact ℓ0 penalty (CEL0) for least
    squares regularized problem. SIAM J. Imaging Sci. 8(3):1607-1639, 2015.

    Examples
    --------
    >>> from prosper import SparseCoding
    >>> from prosper.data.synthetic import sparse_dictionary
    >>> data = sparse_dictionary(n_samples=300, D=8, H=10, sparsity=2, random_state=0)
    >>> model = SparseCoding(H=10, penalty="l0", lam=0.02, n_iter=10, random_state=0)
    >>> model = model.fit(data.Y)
    >>> model.W_.shape
    (8, 10)
    >>> model.transform(data.Y[:2]).shape
    (2, 10)
    >>> model = model.partial_fit(data.Y[:50])  # one more online step on new data
    """

    _model_name = "sparse_coding"
    _fitted_names = ("W",)
    _parameter_constraints = {
        "H": [Interval("int", 1, None)],
        "penalty": [Options(PENALTIES)],
        "lam": [Interval("real", 0, None, "neither")],
        "max_iter": [Interval("int", 1, None)],
        "tol": [Interval("real", 0, None, "neither")],
        "solver": [Options(SOLVERS)],
        "init": [Options(("data", "random", "svd"))],
    }

    def __init__(
        self,
        H: int = 64,
        *,
        penalty: str = "l1",
        lam: float = 0.1,
        n_iter: int = 10,
        batch_size: int = 512,
        max_iter: int = 200,
        tol: float = 1e-4,
        solver: str = "cd",
        init: str = "random",
        backend: str = "auto",
        dtype: Any = "float64",
        random_state: int | np.random.Generator | None = None,
        comm: Any = None,
        callback: Any = None,
        progress: bool | None = None,
        max_memory: int | str | None = None,
    ) -> None:
        self.H = H
        self.penalty = penalty
        self.lam = lam
        self.n_iter = n_iter
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.tol = tol
        self.solver = solver
        self.init = init
        self.backend = backend
        self.dtype = dtype
        self.random_state = random_state
        self.comm = comm
        self.callback = callback
        self.progress = progress
        self.max_memory = max_memory

    def _make_learner(self, D: int, seed: int, backend=None) -> OnlineSparseCoding:
        model = SparseCodingModel(self.H, D, self.penalty, float(self.lam))
        if self.backend == "auto":
            # the best backend with a coding kernel (numba), else NumPy
            backend = get_backend("auto", supports=lambda m: "sparse_cd" in m.KERNELS)
        elif backend is None:
            backend = get_backend(self.backend)
        coder = Coder(
            model,
            solver=self.solver,
            max_iter=int(self.max_iter),
            tol=float(self.tol),
            backend=backend,
        )
        learner = OnlineSparseCoding(model, coder, batch_size=int(self.batch_size), seed=seed)
        learner.backend = backend
        self._learner = learner  # read back by _fit: the online statistics
        return learner

    def _memory_needs(self, D: int, n_local: int, n_gathered: int = 0) -> dict[str, int]:
        H = int(self.H)
        B = max(1, min(int(self.batch_size), n_local))
        return {
            # W, its statistics (D × H), the Gram matrix and statistics (H × H), checkpoint
            "dictionary": 8 * (8 * D * H + 3 * H * H),
            # the pass's mini-batches, evaluated a chunk at a time (StratifiedBatches)
            "row order": 128 * 16384,
            # coding: Y W, codes, FISTA's iterates and momentum, gradient, residual
            "coding buffers": 8 * (6 * B * H + 2 * B * D),
        }

    def _init_kwargs(self) -> dict[str, Any]:
        return {"init": self.init}

    def _fit(self, Y: Any, **kwargs: Any) -> SparseCoding:
        try:
            super()._fit(Y, **kwargs)
            self.inner_stats_ = self._learner.checkpoint_state()
        finally:
            self.__dict__.pop("_learner", None)
        return self

    def partial_fit(self, Y: Any, y: Any = None) -> SparseCoding:
        """One online update with Y as one mini-batch (the first call initialises W).

        As scikit-learn's ``MiniBatchDictionaryLearning.partial_fit``: the codes of Y enter
        the statistics A and B with the forgetting factor, then one sweep of block
        coordinate descent updates the atoms. Under MPI this is collective: every rank
        passes its rows, and all ranks' rows together form the mini-batch. No result file
        is written.

        Parameters
        ----------
        Y : array-like of shape (n, D)
        y : None
            Ignored (scikit-learn compatibility).

        Returns
        -------
        self
        """
        comm = self._comm()
        self._validate()
        fitted = hasattr(self, "W_")
        Y = check_data(
            Y,
            comm=comm,
            dtype=_dtype_name(self.dtype),
            n_features=self.n_features_in_ if fitted else None,
        )
        if fitted:
            seed = self.seed_
            learner = self._make_learner(Y.shape[1], seed)
            learner.set_params(self._fitted_params(), comm.allreduce(int(Y.shape[0])))
            learner.set_state(getattr(self, "inner_stats_", None))
            history = {k: list(v) for k, v in self.history_.items()}
        else:
            seed = self._seed(comm)
            learner = self._make_learner(Y.shape[1], seed)
            learner.initialize(Y, comm, np.random.default_rng(seed), **self._init_kwargs())
            history = {}
        self.__dict__.pop("_learner", None)
        metrics = learner.partial_step(Y, comm)
        for key, value in metrics.items():
            history.setdefault(key, []).append(value)
        n_done = len(history["free_energy"])
        self._set_fitted(learner.params, history, {"n_iter": n_done, "seed": seed})
        self.inner_stats_ = learner.checkpoint_state()
        return self

    def _learner_for(self, Y: np.ndarray) -> OnlineSparseCoding:
        self._validate()
        fitting = self.__dict__.get("_learner")  # a fit in progress keeps its learner
        learner = self._make_learner(Y.shape[1], getattr(self, "seed_", 0))
        self.__dict__.pop("_learner", None)
        if fitting is not None:
            self._learner = fitting
        learner.set_params(self._fitted_params(), Y.shape[0])
        return learner

    def transform(self, Y: Any) -> np.ndarray:
        """MAP codes under the learned dictionary (from zero; ℓ1 first for non-convex ψ).

        Parameters
        ----------
        Y : array-like of shape (N, D)

        Returns
        -------
        ndarray of shape (N, H)
        """
        Y = self._check_input(Y)
        return self._learner_for(Y).encode(Y).astype(Y.dtype, copy=False)

    def energy(self, Y: Any) -> np.ndarray:
        """Energy ½||y − W s||² + Σ ψ(s) of each data point at its MAP code.

        Parameters
        ----------
        Y : array-like of shape (N, D)

        Returns
        -------
        ndarray of shape (N,)
        """
        Y = self._check_input(Y)
        return self._learner_for(Y).energies(Y)

    def score(self, Y: Any, y: Any = None) -> float:
        """Minus the mean energy per data point (larger is better, like ``free_energy_``).

        Under MPI this is collective: every rank passes its rows and gets the global mean.
        """
        return -self._collective_mean(Y, lambda Y: self.energy(Y).sum())

    def inverse_transform(self, S: Any) -> np.ndarray:
        """Reconstruction W s of codes.

        Parameters
        ----------
        S : array-like of shape (N, H)

        Returns
        -------
        ndarray of shape (N, D)
        """
        W = self._fitted_params()["W"]
        S = check_data(S, n_features=W.shape[1], name="S")
        return S @ W.T.astype(S.dtype, copy=False)
