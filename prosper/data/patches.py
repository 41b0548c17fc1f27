"""Whitened natural-image patches from the sample images shipped with scikit-learn.

The images are the two photographs in ``sklearn/datasets/images`` (china.jpg, flower.jpg,
427 × 640 pixels each), read straight from the installed package with Pillow, so nothing is
downloaded. Install both with ``pip install prosper[data]``.

Pre-processing, in order:

1. grey values in [0, 1] (ITU-R 601 luma: 0.299 R + 0.587 G + 0.114 B);
2. with ``method="1/f"``: each whole image is filtered in the Fourier domain with
   R(f) = |f| exp(−(f/f₀)⁴), f₀ = 0.4 cycles/pixel, which flattens the 1/f amplitude spectrum
   of natural images and damps the highest frequencies (Olshausen & Field 1996);
3. ``n_samples`` square patches at random positions (images chosen with equal probability);
4. each patch's mean (DC component) is removed;
5. with ``method="zca"``: ZCA whitening, Y ← Y U (Λ + ε)^{-1/2} Uᵀ with the eigenpairs (Λ, U)
   of the patch covariance and ε = ``eps`` × mean eigenvalue, which decorrelates the pixels
   while keeping the patches as close as possible to the originals (Bell & Sejnowski 1997);
6. the result is scaled to unit variance per dimension on average (``Y.var(axis=0).mean()``
   = 1), so that penalty weights λ mean the same for every method.

References
----------
B. A. Olshausen and D. J. Field. Emergence of simple-cell receptive field properties by
learning a sparse code for natural images. Nature 381:607-609, 1996.

A. J. Bell and T. J. Sejnowski. The "independent components" of natural scenes are edge
filters. Vision Res. 37(23):3327-3338, 1997.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prosper.utils.validation import (
    Interval,
    Options,
    check_memory,
    check_random_state,
    validate_params,
)

__all__ = ["PatchData", "natural_patches", "sample_images"]

IMAGES = ("china.jpg", "flower.jpg")
METHODS = ("zca", "1/f")
_INSTALL = "pip install 'prosper[data]'  (scikit-learn and Pillow)"


@dataclass
class PatchData:
    """Natural image patches, one flattened (row-major) patch per row.

    Attributes
    ----------
    Y : ndarray of shape (N, size * size)
    size : int
        Patch side length.
    method : str or None
        Whitening method, None when not whitened.
    whitening : ndarray of shape (size * size, size * size) or None
        The ZCA matrix applied to the DC-free patches (None for "1/f" and unwhitened data).
    scale : float
        Factor applied last (unit variance per dimension).
    """

    Y: np.ndarray
    size: int
    method: str | None
    whitening: np.ndarray | None
    scale: float


def sample_images() -> list[np.ndarray]:
    """The grey-value sample images of scikit-learn, each of shape (427, 640), in [0, 1].

    Raises
    ------
    ImportError
        When scikit-learn or Pillow is not installed (the ``data`` extra).
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"natural_patches needs scikit-learn's sample images: {_INSTALL}.")
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(f"natural_patches needs Pillow to read the images: {_INSTALL}.") from None
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "images"
    images = []
    for name in IMAGES:
        path = folder / name
        if not path.exists():
            raise ImportError(
                f"{str(path)!r} is missing from the scikit-learn install: {_INSTALL}."
            )
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0
        images.append(rgb @ np.array([0.299, 0.587, 0.114]))
    return images


def _one_over_f(image: np.ndarray, f0: float = 0.4) -> np.ndarray:
    """Whiten a whole image with R(f) = |f| exp(-(f/f0)^4) (f in cycles per pixel)."""
    fy = np.fft.fftfreq(image.shape[0])[:, None]
    fx = np.fft.rfftfreq(image.shape[1])[None, :]
    f = np.sqrt(fx**2 + fy**2)
    filt = f * np.exp(-((f / f0) ** 4))
    return np.fft.irfft2(np.fft.rfft2(image - image.mean()) * filt, s=image.shape)


def natural_patches(
    size: int = 8,
    n_samples: int = 20000,
    *,
    whiten: bool = True,
    method: str = "zca",
    eps: float = 0.01,
    dtype: str = "float64",
    random_state: int | np.random.Generator | None = None,
) -> PatchData:
    """Random square patches of natural images, DC removed and (optionally) whitened.

    Parameters
    ----------
    size : int, default=8
        Patch side (D = size²), 2 <= size <= 64.
    n_samples : int, default=20000
        Number of patches N.
    whiten : bool, default=True
        Whiten with ``method``; False gives the DC-free grey patches scaled to unit variance.
    method : {"zca", "1/f"}, default="zca"
        ZCA whitening of the patch covariance, or 1/f filtering of the whole images (see the
        module docstring).
    eps : float, default=0.01
        ZCA regulariser relative to the mean eigenvalue (keeps the noise-dominated high
        frequencies and the removed DC direction from being blown up).
    dtype : {"float64", "float32"}, default="float64"
    random_state : int, Generator or None
        Seed of the patch positions (the same seed gives the same patches on every MPI rank).

    Returns
    -------
    PatchData

    Raises
    ------
    ImportError
        When scikit-learn or Pillow is missing (``pip install prosper[data]``).

    Examples
    --------
    >>> from prosper.data.patches import natural_patches
    >>> data = natural_patches(size=8, n_samples=500, random_state=0)  # doctest: +SKIP
    >>> data.Y.shape  # doctest: +SKIP
    (500, 64)
    """
    validate_params(
        "natural_patches",
        locals(),
        {
            "size": [Interval("int", 2, 64)],
            "n_samples": [Interval("int", 1, None)],
            "whiten": [bool],
            "method": [Options(METHODS)],
            "eps": [Interval("real", 0, None, "neither")],
            "dtype": [Options(("float64", "float32"))],
        },
    )
    check_memory(
        f"natural_patches(size={size}, n_samples={n_samples})",
        {"patches and their whitened copy": 8 * 3 * n_samples * size * size},
        advice="Lower n_samples or size.",
    )
    rng = check_random_state(random_state)
    images = sample_images()
    if whiten and method == "1/f":
        images = [_one_over_f(img) for img in images]
    which = rng.integers(len(images), size=n_samples)
    offsets = np.arange(size)
    Y = np.empty((n_samples, size * size))
    for k, img in enumerate(images):  # two images: a loop over images, not over patches
        rows = np.flatnonzero(which == k)
        r = rng.integers(img.shape[0] - size + 1, size=rows.size)
        c = rng.integers(img.shape[1] - size + 1, size=rows.size)
        patches = img[(r[:, None] + offsets)[:, :, None], (c[:, None] + offsets)[:, None, :]]
        Y[rows] = patches.reshape(rows.size, size * size)  # an image may get no patch
    Y -= Y.mean(axis=1, keepdims=True)
    whitening = None
    if whiten and method == "zca":
        cov = Y.T @ Y / n_samples
        evals, evecs = np.linalg.eigh(cov)
        evals = np.maximum(evals, 0.0)
        whitening = (evecs / np.sqrt(evals + eps * evals.mean())) @ evecs.T
        Y = Y @ whitening
    scale = 1.0 / np.sqrt(max(float(Y.var(axis=0).mean()), 1e-300))
    Y *= scale
    return PatchData(
        Y=Y.astype(dtype),
        size=size,
        method=method if whiten else None,
        whitening=whitening,
        scale=scale,
    )
