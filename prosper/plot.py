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
        gamma, grid = _learned_gamma(f)
        support = _true_support(f)
    panels = [p for p in (W, truth) if p is not None and np.ndim(p) == 2]
    n_gamma = 0 if gamma is None else 1 + (grid is not None and gamma.size == grid[0] * grid[1])
    n_panels = len(panels) + n_gamma + 1
    fig, axes = plt.subplots(1, n_panels, figsize=(4 * n_panels, 4), squeeze=False)
    axes = axes[0]
    if W is not None and np.ndim(W) == 2:
        _draw_dictionary(axes[0], W, f"learned W ({model})")
    if truth is not None and np.ndim(truth) == 2:
        _draw_dictionary(axes[len(panels) - 1], truth, "true W")
    if gamma is not None:
        _draw_gamma(axes[len(panels)], gamma, support)
        if n_gamma == 2:
            image = axes[len(panels) + 1].imshow(gamma.reshape(grid), cmap="viridis")
            axes[len(panels) + 1].set_title(f"estimated γ as a {grid[0]} x {grid[1]} grid")
            fig.colorbar(image, ax=axes[len(panels) + 1], shrink=0.8)
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


def _true_support(f) -> np.ndarray | None:
    """Indices of the true non-zero rows, when the file stores the generating problem."""
    for name in ("support", "gamma"):
        key = f"ground_truth/{name}"
        if key in f:
            value = np.array(f[key])
            if value.dtype == bool or name == "gamma":
                return np.flatnonzero(value)
            return value.astype(int).ravel()
    return None


def _learned_gamma(f) -> tuple[np.ndarray | None, tuple[int, int] | None]:
    """γ of an SBL result (KroneckerSBL: γ_1 ⊗ γ_2 ⊗ ..., with the grid shape for two
    factors), or (None, None)."""
    if "model" not in f:
        return None, None
    g = f["model"]
    if "gamma" in g:
        return np.array(g["gamma"]).ravel(), None
    factors = [np.array(g[f"gamma_{k}"]) for k in range(1, 10) if f"gamma_{k}" in g]
    if not factors or any(a.ndim != 1 for a in factors):
        return None, None
    gamma = factors[0]
    for a in factors[1:]:
        gamma = np.kron(gamma, a)
    grid = (factors[0].size, factors[1].size) if len(factors) == 2 else None
    return gamma, grid


def _draw_gamma(ax, gamma: np.ndarray, support: np.ndarray | None) -> None:
    """γ of every dictionary column (pruned ones are 0), the true support marked."""
    index = np.arange(gamma.size)
    ax.vlines(index, 0, gamma, color="tab:blue", linewidth=1)
    ax.plot(index[gamma > 0], gamma[gamma > 0], "o", color="tab:blue", markersize=3)
    if support is not None and support.size:
        ax.plot(support, np.zeros(support.size), "x", color="tab:red", label="true support")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel("dictionary column")
    ax.set_ylabel("γ")
    ax.set_title(f"estimated γ ({int(np.count_nonzero(gamma))} of {gamma.size} kept)")
