"""Kronecker-structured sparse recovery problems (He & Joseph 2023, section on simulations).

y_l = Φ x_l + ε_l with Φ = Φ_1 ⊗ … ⊗ Φ_I (Gaussian factors with unit-norm columns), x_l
sparse with a Kronecker-structured support S = S_1 × … × S_I shared by the snapshots, and
white Gaussian noise at a given signal-to-noise ratio.
"""

from __future__ import annotations

import functools
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from prosper.models.sbl import kron_matvec
from prosper.utils.validation import Interval, check_memory, check_random_state, validate_params

__all__ = ["KroneckerProblem", "kronecker_problem"]


@dataclass
class KroneckerProblem:
    """A generated Kronecker-structured sparse recovery problem.

    Attributes
    ----------
    Y : ndarray of shape (L, m)
        Noisy measurements, one snapshot per row (m = Π m_i).
    X : ndarray of shape (L, n)
        True sparse coefficients (n = Π n_i), row-major vec of the n_1 × … × n_I tensor.
    factors : list of ndarray, Φ_i of shape (m_i, n_i)
        Unit-norm-column Gaussian factors; Φ = ``np.kron(*factors)``.
    support : ndarray of bool, shape (n,)
        True support (the Kronecker product of the factor supports).
    support_factors : list of ndarray of bool, shape (n_i,)
        Support of each factor.
    sigma : float
        Noise standard deviation.
    snr_db : float or None
        Signal-to-noise ratio 10 log10(||ΦX||²/||E||²) in expectation; None: noiseless.
    """

    Y: np.ndarray
    X: np.ndarray
    factors: list[np.ndarray]
    support: np.ndarray
    support_factors: list[np.ndarray]
    sigma: float
    snr_db: float | None

    @property
    def dictionary(self) -> np.ndarray:
        """The dense Φ = Φ_1 ⊗ … ⊗ Φ_I, shape (m, n) (small problems only)."""
        return functools.reduce(np.kron, self.factors)

    def ground_truth(self) -> dict[str, np.ndarray]:
        """Generating quantities as arrays (what ``prosper fit`` stores in the file)."""
        truth = {
            "X": self.X,
            "support": self.support.astype(np.uint8),
            "sigma": np.asarray(self.sigma),
        }
        truth.update({f"Phi_{i + 1}": A for i, A in enumerate(self.factors)})
        return truth


def _is_shapes(value: Any) -> bool:
    """a non-empty list of [m_i, n_i] pairs of positive ints"""
    try:
        return len(value) >= 1 and all(
            len(s) == 2
            and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in s)
            and min(s) >= 1
            for s in value
        )
    except TypeError:
        return False


def _is_sparsity(value: Any) -> bool:
    """a positive int or a list of positive ints (one per factor)"""
    values = value if isinstance(value, (list, tuple)) else [value]
    return len(values) >= 1 and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in values
    )


def kronecker_problem(
    shapes: Any = ((16, 32), (16, 32)),
    sparsity: Any = 5,
    snr_db: float | None = 30.0,
    n_snapshots: int = 1,
    *,
    block: bool = False,
    block_size: int = 2,
    random_state: int | np.random.Generator | None = None,
) -> KroneckerProblem:
    """Generate a Kronecker-structured sparse recovery problem.

    Parameters
    ----------
    shapes : list of [m_i, n_i], default=[(16, 32), (16, 32)]
        Shape of each factor Φ_i (entries N(0, 1), columns scaled to unit norm).
    sparsity : int or list of int, default=5
        Active entries of each factor's support (or, with ``block``, active blocks); the
        support of x is their Kronecker product (e.g. 5 × 5 = 25 entries).
    snr_db : float or None, default=30.0
        Signal-to-noise ratio in dB, >= 0: σ² = ||ΦX||²_F / (L m) / 10^(snr_db/10).
        None gives noiseless measurements.
    n_snapshots : int, default=1
        Number of snapshots L sharing the support (rows of Y); their non-zero values are
        drawn independently, N(0, 1).
    block : bool, default=False
        Block-sparse supports: each factor's support is a union of ``sparsity`` aligned
        blocks of ``block_size`` entries.
    block_size : int, default=2
        Block length (used with ``block=True``; must divide every n_i).
    random_state : int, Generator or None

    Returns
    -------
    KroneckerProblem

    Examples
    --------
    >>> from prosper.data.kronecker import kronecker_problem
    >>> p = kronecker_problem([(4, 6), (5, 8)], sparsity=2, snr_db=20, random_state=0)
    >>> p.Y.shape, p.X.shape, int(p.support.sum())
    ((1, 20), (1, 48), 4)
    """
    validate_params(
        "kronecker_problem",
        locals(),
        {
            "shapes": [_is_shapes],
            "sparsity": [_is_sparsity],
            "snr_db": [None, Interval("real", 0, None)],
            "n_snapshots": [Interval("int", 1, None)],
            "block": [bool],
            "block_size": [Interval("int", 1, None)],
        },
    )
    m_total = int(np.prod([int(m) for m, _ in shapes], dtype=object))
    n_total = int(np.prod([int(n) for _, n in shapes], dtype=object))
    check_memory(
        f"kronecker_problem(shapes={shapes}, n_snapshots={n_snapshots})",
        {
            "factors": 8 * sum(int(m) * int(n) for m, n in shapes),
            "signals X": 8 * 2 * n_total * n_snapshots,
            "snapshots Y": 8 * 3 * m_total * n_snapshots,
        },
        advice="Lower the factor sizes or n_snapshots.",
    )
    shapes = [(int(m), int(n)) for m, n in shapes]
    I = len(shapes)
    counts = list(sparsity) if isinstance(sparsity, (list, tuple)) else [sparsity] * I
    if len(counts) != I:
        raise ValueError(
            f"sparsity must be an int or give one count per factor ({I}); got {sparsity!r}."
        )
    unit = block_size if block else 1
    for i, ((_, n), k) in enumerate(zip(shapes, counts, strict=True)):
        if n % unit:
            raise ValueError(
                f"block_size={block_size} must divide every n_i; factor {i + 1} has n_i={n}."
            )
        if k * unit > n:
            raise ValueError(
                f"sparsity asks for {k * unit} active entries of factor {i + 1}, which has only "
                f"n_i={n}."
            )
    rng = check_random_state(random_state)
    factors = []
    for m, n in shapes:
        A = rng.standard_normal((m, n))
        factors.append(A / np.linalg.norm(A, axis=0))
    support_factors = []
    for (_, n), k in zip(shapes, counts, strict=True):
        chosen = rng.choice(n // unit, size=k, replace=False)
        mask = np.zeros(n // unit, dtype=bool)
        mask[chosen] = True
        support_factors.append(np.repeat(mask, unit))
    support = functools.reduce(np.kron, support_factors).astype(bool)
    n_total = support.size
    X = np.zeros((n_snapshots, n_total))
    X[:, support] = rng.standard_normal((n_snapshots, int(support.sum())))
    clean = kron_matvec(factors, X)
    if snr_db is None:
        sigma = 0.0
        Y = clean
    else:
        sigma = float(np.sqrt(np.mean(clean**2) / 10.0 ** (snr_db / 10.0)))
        Y = clean + sigma * rng.standard_normal(clean.shape)
    return KroneckerProblem(
        Y=Y,
        X=X,
        factors=factors,
        support=support,
        support_factors=support_factors,
        sigma=sigma,
        snr_db=None if snr_db is None else float(snr_db),
    )
