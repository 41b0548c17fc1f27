"""Data sampled from the spike-and-slab (GSC) generative model, with known parameters."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prosper.data.bars import bars_dictionary
from prosper.utils.validation import (
    Interval,
    Options,
    check_memory,
    check_random_state,
    validate_params,
)

__all__ = ["SpikeSlabData", "align_gsc", "gsc_data"]


@dataclass
class SpikeSlabData:
    """A data set drawn from y = W (b ⊙ z) + ε.

    Attributes
    ----------
    Y : ndarray of shape (N, D)
        Observations.
    S : ndarray of shape (N, H)
        Generating latents s = b ⊙ z.
    B : ndarray of bool, shape (N, H)
        Generating spikes b.
    W : ndarray of shape (D, H)
        Generating dictionary.
    pi, mu, psi : ndarray of shape (H,)
        Spike probabilities, slab means and slab variances.
    sigma : float
        Noise standard deviation.
    """

    Y: np.ndarray
    S: np.ndarray
    B: np.ndarray
    W: np.ndarray
    pi: np.ndarray
    mu: np.ndarray
    psi: np.ndarray
    sigma: float

    def ground_truth(self) -> dict[str, np.ndarray]:
        """Generating parameters as arrays (what ``prosper fit`` stores in the file)."""
        return {
            "W": self.W,
            "pi": self.pi,
            "mu": self.mu,
            "psi": self.psi,
            "sigma": np.asarray(self.sigma),
        }


def _per_latent(value, H: int, name: str, low: float, high: float = np.inf) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(H, float(arr))
    if arr.shape != (H,) or not np.all(np.isfinite(arr)):
        raise ValueError(
            f"{name} must be a finite number or a list of H={H} numbers; got {value!r}."
        )
    if np.any(arr < low) or np.any(arr > high):
        raise ValueError(f"{name} must lie in [{low}, {high}]; got {value!r}.")
    return arr


def gsc_data(
    n_samples: int = 2000,
    D: int = 25,
    H: int = 10,
    *,
    pi: float | list[float] = 0.2,
    mu: float | list[float] = 1.0,
    psi: float | list[float] = 1.0,
    sigma: float = 0.5,
    dictionary: str = "gaussian",
    random_state: int | np.random.Generator | None = None,
) -> SpikeSlabData:
    """Sample from the spike-and-slab sparse coding model (GSC).

    Each latent is active with probability ``pi[h]`` and then takes a Gaussian amplitude
    z_h ~ N(mu[h], psi[h]); y = W s + N(0, sigma² I).

    Parameters
    ----------
    n_samples : int, default=2000
    D : int, default=25
        Observed dimensions.
    H : int, default=10
        Latents.
    pi, mu, psi : float or list of H floats
        Spike probability in (0, 1], slab mean, slab variance >= 0 (scalars are shared).
    sigma : float, default=0.5
        Noise standard deviation (>= 0).
    dictionary : {"gaussian", "bars"}, default="gaussian"
        "gaussian": W with i.i.d. N(0, 1/D) entries (columns of about unit norm), drawn
        first from ``random_state``; "bars": horizontal and vertical bars of height 1 on a
        square image (needs D = size² and H = 2 size), so that the bars' intensities vary
        with the slab.
    random_state : int, Generator or None

    Returns
    -------
    SpikeSlabData

    Examples
    --------
    >>> from prosper.data.spike_slab import gsc_data
    >>> data = gsc_data(100, D=25, H=10, mu=5.0, dictionary="bars", random_state=0)
    >>> data.Y.shape, data.W.shape
    ((100, 25), (25, 10))
    """
    validate_params(
        "gsc_data",
        {"n_samples": n_samples, "D": D, "H": H, "sigma": sigma, "dictionary": dictionary},
        {
            "n_samples": [Interval("int", 1, None)],
            "D": [Interval("int", 1, None)],
            "H": [Interval("int", 1, None)],
            "sigma": [Interval("real", 0, None, "left")],
            "dictionary": [Options(("gaussian", "bars"))],
        },
    )
    check_memory(
        f"gsc_data(n_samples={n_samples}, D={D}, H={H})",
        {"data Y and its noise": 8 * 2 * n_samples * D, "spikes, slabs, S": 8 * 3 * n_samples * H},
        advice="Lower n_samples, D or H.",
    )
    pi_ = _per_latent(pi, H, "pi", 0.0, 1.0)
    mu_ = _per_latent(mu, H, "mu", -np.inf)
    psi_ = _per_latent(psi, H, "psi", 0.0)
    rng = check_random_state(random_state)
    if dictionary == "bars":
        size = H // 2
        if H % 2 or (H // 2) ** 2 != D:
            raise ValueError(
                f'dictionary="bars" needs H = 2 size and D = size²; got D={D}, H={H} '
                "(e.g. D=25, H=10)."
            )
        W = bars_dictionary(size, 1.0)
    else:
        W = rng.standard_normal((D, H)) / np.sqrt(D)
    spikes = rng.random((n_samples, H)) < pi_
    z = mu_ + np.sqrt(psi_) * rng.standard_normal((n_samples, H))
    S = np.where(spikes, z, 0.0)
    Y = S @ W.T + sigma * rng.standard_normal((n_samples, D))
    return SpikeSlabData(Y=Y, S=S, B=spikes, W=W, pi=pi_, mu=mu_, psi=psi_, sigma=float(sigma))


def align_gsc(params: dict[str, np.ndarray], W_true: np.ndarray) -> dict[str, np.ndarray]:
    """Bring learned GSC parameters into the ground truth's order, sign and scale.

    GSC's likelihood is unchanged by permuting the latents and by (W_h, μ_h, Ψ_h) ->
    (c W_h, μ_h / c, Ψ_h / c²) for any c != 0. Columns are matched by the largest absolute
    cosine (Hungarian assignment), then each is rescaled with the c that gives it the sign
    and norm of its true column.

    Parameters
    ----------
    params : dict
        ``W`` (D, H), ``pi``, ``mu``, ``psi`` (H,) of a fitted model.
    W_true : ndarray of shape (D, H)

    Returns
    -------
    dict
        ``W``, ``pi``, ``mu``, ``psi`` in the true gauge, ``perm`` (learned index of each
        true column) and ``cosine`` (H,) absolute cosine of each matched pair.
    """
    from scipy.optimize import linear_sum_assignment

    W = np.asarray(params["W"], dtype=np.float64)
    if W.ndim != 2 or W.shape[0] != W_true.shape[0] or W.shape[1] < W_true.shape[1]:
        raise ValueError(
            f"align_gsc needs a learned W with D={W_true.shape[0]} rows and at least "
            f"{W_true.shape[1]} columns (one per true column); got shape {W.shape}."
        )
    norms = np.linalg.norm(W, axis=0)
    true_norms = np.linalg.norm(W_true, axis=0)
    cos = (W / np.where(norms > 0, norms, 1.0)).T @ (
        W_true / np.where(true_norms > 0, true_norms, 1.0)
    )
    rows, cols = linear_sum_assignment(-np.abs(cos))
    perm = np.empty(W_true.shape[1], dtype=np.int64)
    perm[cols] = rows
    matched = cos[perm, np.arange(W_true.shape[1])]
    c = np.where(matched < 0, -1.0, 1.0) * np.where(true_norms > 0, norms[perm] / true_norms, 1.0)
    c = np.where(c == 0, 1.0, c)
    return {
        "W": W[:, perm] / c,
        "pi": np.asarray(params["pi"])[perm],
        "mu": np.asarray(params["mu"])[perm] * c,
        "psi": np.asarray(params["psi"])[perm] * c**2,
        "perm": perm,
        "cosine": np.abs(matched),
    }
