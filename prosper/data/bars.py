"""The bars test: horizontal and vertical bars on a small square image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prosper.utils.validation import (
    Interval,
    Options,
    check_memory,
    check_random_state,
    validate_params,
)

__all__ = ["BarsData", "bars", "bars_dictionary"]


@dataclass
class BarsData:
    """A generated bars data set.

    Attributes
    ----------
    Y : ndarray of shape (N, D)
        Observed images, flattened row-major (D = size**2).
    S : ndarray of shape (N, H)
        Generating latents (H = 2 * size).
    W : ndarray of shape (D, H)
        Generating dictionary: ``size`` horizontal then ``size`` vertical bars.
    pi, sigma, amplitude : float
        Generating parameters (``pi``: probability that a bar is present).
    values, value_probs : ndarray of shape (V,) or None
        For discrete amplitudes (DSC): the latent values and their probabilities; None for
        binary and signed bars.
    """

    Y: np.ndarray
    S: np.ndarray
    W: np.ndarray
    pi: float
    sigma: float
    amplitude: float
    values: np.ndarray | None = None
    value_probs: np.ndarray | None = None

    def ground_truth(self) -> dict[str, np.ndarray]:
        """Generating parameters as arrays (what ``prosper fit`` stores in the file).

        With discrete amplitudes ``pi`` is the vector of value probabilities, in the order
        of ``values`` (DSC's ``pi_``).
        """
        pi = self.pi if self.value_probs is None else self.value_probs
        return {"W": self.W, "pi": np.asarray(pi), "sigma": np.asarray(self.sigma)}


def bars_dictionary(size: int, amplitude: float = 1.0) -> np.ndarray:
    """W of shape (size**2, 2*size): horizontal bars first, then vertical bars."""
    H = 2 * size
    W = np.zeros((size, size, H))
    for i in range(size):
        W[i, :, i] = amplitude
        W[:, i, size + i] = amplitude
    return W.reshape(size * size, H)


def bars(
    size: int = 5,
    n_samples: int = 2000,
    *,
    pi: float = 0.2,
    amplitude: float = 10.0,
    sigma: float = 2.0,
    signed: bool = False,
    combine: str = "sum",
    values=None,
    value_probs=None,
    random_state: int | np.random.Generator | None = None,
) -> BarsData:
    """Generate bars data: each bar appears independently with probability ``pi``.

    Parameters
    ----------
    size : int, default=5
        Images are size x size with ``size`` horizontal and ``size`` vertical bars (H=2*size).
    n_samples : int, default=2000
    pi : float, default=0.2
        Probability of each bar being present.
    amplitude : float, default=10.0
        Bar intensity.
    sigma : float, default=2.0
        Standard deviation of the additive Gaussian noise.
    signed : bool, default=False
        Latents in {-1, 0, 1} (each sign with probability pi/2), as for TSC.
    combine : {"sum", "max"}, default="sum"
        How overlapping bars combine: linear sum (BSC, TSC) or the maximum (MCA; with
        ``signed`` the cause of largest magnitude wins with its sign, as for MMCA).
    values : sequence of float or None, default=None
        Discrete amplitudes, as for DSC: each latent takes one of ``values`` (which must
        contain 0). Not combined with ``signed`` (give negative values instead).
    value_probs : sequence of float or None, default=None
        Probabilities of ``values`` (non-negative, summing to 1). None: 0 has probability
        1 - pi and the non-zero values share pi equally; when given, ``pi`` is ignored.
    random_state : int, Generator or None

    Returns
    -------
    BarsData
    """
    validate_params(
        "bars",
        locals(),
        {
            "size": [Interval("int", 1, None)],
            "n_samples": [Interval("int", 1, None)],
            "pi": [Interval("real", 0, 1, "right")],
            "amplitude": [Interval("real", 0, None, "neither")],
            "sigma": [Interval("real", 0, None, "left")],
            "signed": [bool],
            "combine": [Options(("sum", "max"))],
        },
    )
    D, H = size * size, 2 * size
    check_memory(
        f"bars(size={size}, n_samples={n_samples})",
        {"data Y and its noise": 8 * 2 * n_samples * D, "latents S": 8 * n_samples * H},
        advice="Lower n_samples or size.",
    )
    probs = None
    if values is not None:
        values, probs = _discrete_values(values, value_probs, pi, signed)
    elif value_probs is not None:
        raise ValueError("value_probs needs values= (the amplitudes they belong to).")
    rng = check_random_state(random_state)
    W = bars_dictionary(size, amplitude)
    H = W.shape[1]
    if values is None:
        S = (rng.random((n_samples, H)) < pi).astype(np.float64)
        if signed:
            S *= np.where(rng.random((n_samples, H)) < 0.5, -1.0, 1.0)
    else:
        S = values[rng.choice(values.size, size=(n_samples, H), p=probs)]
        pi = 1.0 - float(probs[values == 0][0])
    if combine == "sum":
        clean = S @ W.T
    else:
        contrib = S[:, None, :] * W[None, :, :]  # (N, D, H)
        winner = np.abs(contrib).argmax(axis=2)
        clean = np.take_along_axis(contrib, winner[:, :, None], axis=2)[:, :, 0]
    Y = clean + sigma * rng.standard_normal(clean.shape)
    return BarsData(
        Y=Y,
        S=S,
        W=W,
        pi=float(pi),
        sigma=float(sigma),
        amplitude=float(amplitude),
        values=values,
        value_probs=probs,
    )


def _discrete_values(values, value_probs, pi: float, signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Checked amplitudes (V,) and their probabilities (V,) for discrete-amplitude bars."""
    from prosper.models.dsc import check_values

    if signed:
        raise ValueError(
            "signed=True cannot be combined with values=; give signed amplitudes in values, "
            "e.g. values=(-2, -1, 0, 1, 2)."
        )
    values = check_values(values)
    if value_probs is None:
        probs = np.where(values == 0, 1.0 - pi, pi / (values.size - 1))
    else:
        try:
            probs = np.asarray(value_probs, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                f"value_probs must be a sequence of numbers; got {value_probs!r}."
            ) from None
        if probs.shape != values.shape:
            raise ValueError(
                f"value_probs must have one entry per value ({values.size}); got {value_probs!r}."
            )
        if not np.all(np.isfinite(probs)) or np.any(probs < 0) or abs(probs.sum() - 1) > 1e-9:
            raise ValueError(f"value_probs must be non-negative and sum to 1; got {value_probs!r}.")
    return values, probs
