"""Ternary sparse coding on signed bars: learn W, π and σ, compare with the generating bars.

    python examples/tsc_bars.py
    python examples/tsc_bars.py --n-iter 30 --plot tsc_W.png

The same run from a job file: ``prosper fit examples/tsc_bars.toml --out tsc_bars.h5``.
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.optimize import linear_sum_assignment

from prosper import TSC
from prosper.data import bars


def signed_matched_error(W: np.ndarray, W_true: np.ndarray) -> np.ndarray:
    """Largest absolute error of each true column after the best permutation and signs."""
    cost = np.minimum(
        np.abs(W[:, :, None] - W_true[:, None, :]).max(axis=0),
        np.abs(W[:, :, None] + W_true[:, None, :]).max(axis=0),
    )
    rows, cols = linear_sum_assignment(cost)
    return cost[rows, cols]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=2000)
    parser.add_argument("--n-iter", type=int, default=60)
    parser.add_argument("--plot", help="write the learned dictionary to this PNG file")
    args = parser.parse_args()

    data = bars(
        size=5,
        n_samples=args.n_samples,
        pi=0.2,
        amplitude=10.0,
        sigma=2.0,
        signed=True,
        random_state=0,
    )
    model = TSC(
        H=10,
        Hprime=6,
        gamma=3,
        n_iter=args.n_iter,
        random_state=1,  # default annealing: T from 3 to 1 over the first 60 % of the run
    )
    model.fit(data.Y)
    err = signed_matched_error(model.W_, data.W)
    print(
        f"TSC: worst bar error {err.max():.2f} (amplitude 10), pi={model.pi_:.3f} (true 0.2), "
        f"sigma={model.sigma_:.2f} (true 2), free energy {model.free_energy_[-1]:.2f}"
    )
    if args.plot:
        import matplotlib.pyplot as plt

        lim = np.abs(model.W_).max()
        fig, axes = plt.subplots(1, 10, figsize=(10, 1.2))
        for h, ax in enumerate(axes):
            ax.imshow(model.W_[:, h].reshape(5, 5), cmap="RdBu", vmin=-lim, vmax=lim)
            ax.axis("off")
        fig.savefig(args.plot, dpi=80)


if __name__ == "__main__":
    main()
