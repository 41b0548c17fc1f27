"""Figures of results (needs the ``plot`` extra: matplotlib)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

__all__ = ["dictionary_grid", "plot_result"]


def _matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'prosper[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def dictionary_grid(
    W: np.ndarray, shape: tuple[int, int] | None = None, pad: int = 1
) -> np.ndarray | None:
    """Tile the columns of W (D, H) as images into one array (NaN between tiles).

    Returns None when D is not a perfect square and no ``shape`` is given.
    """
    D, H = W.shape
    if shape is None:
        side = math.isqrt(D)
        if side * side != D:
            return None
        shape = (side, side)
    cols = int(np.ceil(np.sqrt(H)))
    rows = int(np.ceil(H / cols))
    h, w = shape
    grid = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad), np.nan)
    for k in range(H):
        r, c = divmod(k, cols)
        grid[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = W[
            :, k
        ].reshape(shape)
    return grid


def _draw_dictionary(ax, W: np.ndarray, title: str) -> None:
    grid = dictionary_grid(W)
    if grid is None:
        ax.plot(W)
        ax.set_xlabel("dimension d")
    else:
        import matplotlib

        vmax = np.nanmax(np.abs(grid)) or 1.0
        # one diverging map for all dictionaries, zero white; tile gaps grey
        cmap = matplotlib.colormaps["RdBu_r"].copy()
        cmap.set_bad("0.6")
        ax.imshow(
            np.ma.masked_invalid(grid), cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest"
        )
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_title(title)


def plot_result(path: str | os.PathLike, output: str | os.PathLike) -> Path:
    """Write a PNG with the learned dictionary (and the true one, if stored) and the
    free-energy curve of a result file."""
    from prosper.io.results import checkpoint_group, open_result

    output = Path(output)
    if output.suffix.lower() not in (".png", ".pdf", ".svg", ".jpg", ".jpeg"):
        output = output.with_name(output.name + ".png")
    if not output.parent.exists():
        raise ValueError(f"output directory {str(output.parent)!r} does not exist.")
    plt = _matplotlib()
    with open_result(path) as f:
        model = str(f.attrs.get("model", "?"))
        W = None
        groups = [f["model"]] if "model" in f else []
        groups += [checkpoint_group(f)] if "checkpoint" in f else []
        for group in groups:
            if "W" in group:
                W = np.array(group["W"])
                break
        truth = np.array(f["ground_truth/W"]) if "ground_truth/W" in f else None
        F = np.array(f["metrics/free_energy"]) if "metrics/free_energy" in f else None
        T = np.array(f["metrics/temperature"]) if "metrics/temperature" in f else None
        n_cut = np.array(f["metrics/n_cut"]) if "metrics/n_cut" in f else None
        n_samples = int(f.attrs.get("n_samples", 0))
    panels = [p for p in (W, truth) if p is not None and np.ndim(p) == 2]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(4 * (len(panels) + 1), 4), squeeze=False)
    axes = axes[0]
    if W is not None and np.ndim(W) == 2:
        _draw_dictionary(axes[0], W, f"learned W ({model})")
    if truth is not None and np.ndim(truth) == 2:
        _draw_dictionary(axes[len(panels) - 1], truth, "true W")
    ax = axes[-1]
    if F is not None and len(F):
        ax.plot(np.arange(len(F)), F)
        # F counts every data point; while the posterior is tempered or the M-step fits only
        # the N_cut selected points it may fall, so those phases are shaded
        if T is not None and np.any(T > 1):
            ax.axvspan(
                0,
                np.flatnonzero(T > 1)[-1] + 1,
                color="tab:orange",
                alpha=0.15,
                label="annealing (T > 1)",
            )
        if n_cut is not None and n_samples and np.any(n_cut < n_samples):
            ax.axvspan(
                np.flatnonzero(n_cut < n_samples)[0],
                len(F),
                color="tab:green",
                alpha=0.1,
                label="ET data selection",
            )
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("iteration")
    ax.set_ylabel("free energy per data point")
    ax.set_title("learning curve")
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output
