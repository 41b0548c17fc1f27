"""ℓq sparse coding estimator: MAP codes by FISTA, dictionary by alternating minimisation."""

from __future__ import annotations

from typing import Any

import numpy as np

from prosper.estimators.base import EMEstimator
from prosper.models.sparse_coding import PENALTIES, SparseCodingModel
from prosper.solvers.fista import FISTAOptions
from prosper.solvers.sparse_coding import SparseCodingEM
from prosper.utils.validation import Interval, Options, check_data

__all__ = ["SparseCoding"]


class SparseCoding(EMEstimator):
    """Sparse coding with an ℓ1, ℓ1/2, ℓ0 or CEL0 penalty, learned by alternating minimisation.

    Each data point is coded by its MAP estimate

        s_n = argmin_s ½ ||y_n − W s||² + Σ_h ψ(s_h),

    with ψ(u) = λ|u| ("l1"), λ sqrt|u| ("l1/2"), λ 1{u ≠ 0} ("l0") or the continuous exact ℓ0
    relaxation of Soubies et al. ("cel0", with a_h = ||W_h||), found by batched FISTA with step
    1/||W||₂². Each iteration codes all data points (warm-started from the previous codes; the
    non-convex penalties start from the ℓ1 solution) and then sets W to the least-squares
    dictionary from Σ y sᵀ and Σ s sᵀ, columns scaled to unit norm. Under MPI every rank codes
    its own rows and one Allreduce adds the sums.

    Parameters
    ----------
    H : int, default=64
        Number of atoms (dictionary elements).
    penalty : {"l1", "l1/2", "l0", "cel0"}, default="l1"
        Sparsity penalty.
    lam : float, default=0.1
        Penalty weight λ > 0 (larger: sparser codes).
    n_iter : int, default=50
        Dictionary-learning iterations (each one pass over the data).
    max_iter : int, default=200
        FISTA iterations at most per data point and pass.
    tol : float, default=1e-4
        FISTA stops for a data point when the relative change of its code is at most tol.
    solver : {"fista", "ista"}, default="fista"
        Accelerated (with adaptive restart) or plain proximal gradient.
    batch_size : int, default=1000
        Data points coded at once (bounds the working memory per rank).
    init : {"data", "random"}, default="data"
        Initial atoms: H randomly chosen data points, or Gaussian noise (unit norm either way).
    backend : {"auto", "numpy", "numba", "cupy"}, default="numpy"
        Accepted for the common interface; coding is NumPy matrix products (BLAS) on the CPU
        whatever the value.
    dtype : {"float64", "float32"}, default="float64"
        Precision of the coding (statistics are summed in float64).
    random_state : int, numpy.random.Generator or None, default=None
        Seed of the initial dictionary.
    comm : mpi4py communicator or None, default=None
        None uses MPI.COMM_WORLD (a single rank without mpiexec).
    callback : callable or None, default=None
        ``callback(iteration, learner, metrics)``; returning True stops the run.
    progress : bool or None, default=None
        Progress bar on rank 0 (None: only when stderr is a terminal).
    max_memory : int, str or None, default=None
        Memory limit per rank for the size check made before any allocation: bytes or a
        string such as ``"8GB"``; None: the memory available on the machine. A fit whose
        estimated need exceeds it is refused with the estimate.

    Attributes
    ----------
    W_ : ndarray of shape (D, H)
        Learned dictionary, unit-norm columns.
    free_energy_ : ndarray of shape ``(n_iter_,)``
        Minus the mean energy per data point of the codes found in each iteration (under the
        dictionary entering it), so larger is better as for the probabilistic models.
    history_ : dict of str to ndarray
        All per-iteration metrics: ``sparsity`` (fraction of non-zero coefficients),
        ``rel_error`` (||Y − S Wᵀ||_F / ||Y||_F), ``fista_iter`` (mean FISTA iterations per
        point), ``n_unused`` (atoms no point used) and the timings.
    n_iter_ : int
    n_features_in_ : int

    References
    ----------
    S. Rentzeperis, L. Calatroni, L. Perrinet and D. Prandi. Beyond ℓ1 sparse coding in V1.
    PLoS Comput. Biol. 19(9):e1011459, 2023.

    A. Beck and M. Teboulle. A fast iterative shrinkage-thresholding algorithm for linear
    inverse problems. SIAM J. Imaging Sci. 2(1):183-202, 2009.

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
    """

    _model_name = "sparse_coding"
    _fitted_names = ("W",)
    _parameter_constraints = {
        "H": [Interval("int", 1, None)],
        "penalty": [Options(PENALTIES)],
        "lam": [Interval("real", 0, None, "neither")],
        "max_iter": [Interval("int", 1, None)],
        "tol": [Interval("real", 0, None, "neither")],
        "solver": [Options(("fista", "ista"))],
        "init": [Options(("data", "random"))],
    }

    def __init__(
        self,
        H: int = 64,
        *,
        penalty: str = "l1",
        lam: float = 0.1,
        n_iter: int = 50,
        max_iter: int = 200,
        tol: float = 1e-4,
        solver: str = "fista",
        batch_size: int = 1000,
        init: str = "data",
        backend: str = "numpy",
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
        self.max_iter = max_iter
        self.tol = tol
        self.solver = solver
        self.batch_size = batch_size
        self.init = init
        self.backend = backend
        self.dtype = dtype
        self.random_state = random_state
        self.comm = comm
        self.callback = callback
        self.progress = progress
        self.max_memory = max_memory

    def _make_learner(self, D: int, seed: int, backend) -> SparseCodingEM:
        model = SparseCodingModel(self.H, D, self.penalty, float(self.lam))
        options = FISTAOptions(
            max_iter=int(self.max_iter), tol=float(self.tol), accelerate=self.solver == "fista"
        )
        return SparseCodingEM(model, options=options, batch_size=int(self.batch_size))

    def _memory_needs(self, D: int, n_local: int) -> dict[str, int]:
        H = int(self.H)
        B = max(1, min(int(self.batch_size), n_local))
        return {
            # W, its statistics (D × H), the Gram matrix and statistics (H × H), checkpoint
            "dictionary": 8 * (8 * D * H + 3 * H * H),
            "warm-start codes": 8 * n_local * H,
            # FISTA: iterate, previous iterate, momentum point, gradient, residual
            "FISTA buffers": 8 * (6 * B * H + 2 * B * D),
        }

    def _init_kwargs(self) -> dict[str, Any]:
        return {"init": self.init}

    def _learner_for(self, Y: np.ndarray) -> SparseCodingEM:
        self._validate()
        learner = self._make_learner(Y.shape[1], getattr(self, "seed_", 0), None)
        learner.set_params(self._fitted_params(), Y.shape[0])
        return learner

    def transform(self, Y: Any) -> np.ndarray:
        """MAP codes under the learned dictionary (cold start, ℓ1 first for non-convex ψ).

        Parameters
        ----------
        Y : array-like of shape (N, D)

        Returns
        -------
        ndarray of shape (N, H)
        """
        Y = self._check_input(Y)
        return self._learner_for(Y).encode(Y)

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

    def score(self, Y: Any) -> float:
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
