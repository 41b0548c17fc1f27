"""Synthetic sparse-coding problems with a known dictionary (for recovery tests)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prosper.utils.validation import Interval, check_memory, check_random_state, validate_params

__all__ = ["SparseDictionaryData", "sparse_dictionary"]


@dataclass
class SparseDictionaryData:
    """Data y_n = W s_n + ε_n from a known unit-norm dictionary and sparse codes.

    Attributes
    ----------
    Y : ndarray of shape (N, D)
    S : ndarray of shape (N, H)
        Generating codes, exactly ``sparsity`` non-zeros per row.
    W : ndarray of shape (D, H)
        Generating dictionary with unit-norm columns.
    noise : float
        Standard deviation of the Gaussian noise ε.
    """

    Y: np.ndarray
    S: np.ndarray
    W: np.ndarray
    noise: float

    def ground_truth(self) -> dict[str, np.ndarray]:
        """Generating parameters as arrays (what ``prosper fit`` stores in the file)."""
        return {"W": self.W, "noise": np.asarray(self.noise)}


def sparse_dictionary(
    n_samples: int = 2000,
    D: int = 16,
    H: int = 24,
    sparsity: int = 3,
    noise: float = 0.05,
    *,
    random_state: int | np.random.Generator | None = None,
) -> SparseDictionaryData:
    """Generate data from a random unit-norm dictionary with ``sparsity`` active atoms per point.

    Atoms are Gaussian random vectors scaled to unit norm; each data point uses ``sparsity``
    atoms drawn uniformly without replacement, with coefficients of random sign and magnitude
    uniform in [0.5, 1.5] (bounded away from zero, so every active atom is visible above the
    noise), plus Gaussian noise of standard deviation ``noise`` per dimension.

    Parameters
    ----------
    n_samples : int, default=2000
    D : int, default=16
        Observed dimensions.
    H : int, default=24
        Atoms (H > D gives an overcomplete dictionary).
    sparsity : int, default=3
        Non-zero coefficients per data point, 1 <= sparsity <= H.
    noise : float, default=0.05
    random_state : int, Generator or None

    Returns
    -------
    SparseDictionaryData

    Examples
    --------
    >>> from prosper.data import get_generator
    >>> data = get_generator("sparse_dictionary")(n_samples=10, D=4, H=6, random_state=0)
    >>> data.Y.shape, (data.S != 0).sum(axis=1).tolist()
    ((10, 4), [3, 3, 3, 3, 3, 3, 3, 3, 3, 3])
    """
    validate_params(
        "sparse_dictionary",
        locals(),
        {
            "n_samples": [Interval("int", 1, None)],
            "D": [Interval("int", 1, None)],
            "H": [Interval("int", 1, None)],
            "sparsity": [Interval("int", 1, H)],
            "noise": [Interval("real", 0, None)],
        },
    )
    check_memory(
        f"sparse_dictionary(n_samples={n_samples}, D={D}, H={H})",
        {"data Y and its noise": 8 * 2 * n_samples * D, "codes": 8 * n_samples * H},
        advice="Lower n_samples, D or H.",
    )
    rng = check_random_state(random_state)
    W = rng.standard_normal((D, H))
    W /= np.linalg.norm(W, axis=0)
    # the first `sparsity` entries of a random permutation of each row's atoms
    support = np.argsort(rng.random((n_samples, H)), axis=1)[:, :sparsity]
    values = rng.uniform(0.5, 1.5, (n_samples, sparsity)) * rng.choice(
        [-1.0, 1.0], (n_samples, sparsity)
    )
    S = np.zeros((n_samples, H))
    np.put_along_axis(S, support, values, axis=1)
    Y = S @ W.T + noise * rng.standard_normal((n_samples, D))
    return SparseDictionaryData(Y=Y, S=S, W=W, noise=float(noise))
