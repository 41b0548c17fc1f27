"""MCA and MMCA on bars that occlude each other (the maximum, not the sum, where they cross).

    python examples/mca_bars.py            # MCA on max-bars, then MMCA on signed max-bars
    python examples/mca_bars.py --plot W.png

The same runs from a job file: ``prosper fit examples/mca_bars.toml --out mca.h5``.
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.optimize import linear_sum_assignment

from prosper import MCA, MMCA
from prosper.data import bars


def matched_error(W: np.ndarray, W_true: np.ndarray) -> np.ndarray:
    """Largest absolute error of each true column after the best permutation."""
    cost = np.abs(W[:, :, None] - W_true[:, None, :]).max(axis=0)
    rows, cols = linear_sum_assignment(cost)
    return cost[rows, cols]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=2000)
    parser.add_argument("--n-iter", type=int, default=60)
    parser.add_argument("--plot", help="write the learned causes to this PNG file")
    args = parser.parse_args()

    data = bars(size=5, n_samples=args.n_samples, combine="max", random_state=0)
    mca = MCA(H=10, Hprime=8, gamma=4, n_iter=args.n_iter, random_state=1).fit(data.Y)
    err = matched_error(mca.W_, data.W)
    print(
        f"MCA:  worst bar error {err.max():.2f} (amplitude 10), pi={mca.pi_:.3f}, "
        f"sigma={mca.sigma_:.2f}, free energy {mca.free_energy_[-1]:.2f}"
    )

    signed = bars(size=5, n_samples=2 * args.n_samples, signed=True, combine="max", random_state=0)
    # binary causes: a bar seen with both signs needs two causes, +W_h and -W_h
    W_true = np.hstack([signed.W, -signed.W])
    mmca = MMCA(H=20, Hprime=8, gamma=3, n_iter=args.n_iter, random_state=1).fit(signed.Y)
    err = matched_error(mmca.W_, W_true)
    print(
        f"MMCA: worst bar error {err.max():.2f} (amplitude 10), pi={mmca.pi_:.3f}, "
        f"sigma={mmca.sigma_:.2f}"
    )

    if args.plot:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(2, 20, figsize=(20, 2.4))
        for ax in axes.ravel():
            ax.axis("off")
        for h in range(10):
            axes[0, h].imshow(mca.W_[:, h].reshape(5, 5), cmap="gray")
        lim = np.abs(mmca.W_).max()
        for h in range(20):
            axes[1, h].imshow(mmca.W_[:, h].reshape(5, 5), cmap="RdBu", vmin=-lim, vmax=lim)
        fig.savefig(args.plot, dpi=80)


if __name__ == "__main__":
    main()
