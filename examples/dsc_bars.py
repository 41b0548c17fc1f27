"""Discrete sparse coding on bars with amplitudes 5, 10 and 15: learn W, π_k and σ.

    python examples/dsc_bars.py
    python examples/dsc_bars.py --n-iter 40 --plot dsc_W.png

The same run from a job file: ``prosper fit examples/dsc_bars.toml --out dsc_bars.h5``.
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.optimize import linear_sum_assignment

from prosper import DSC
from prosper.data import bars

VALUES = (0, 1, 2, 3)


def matched_error(W: np.ndarray, W_true: np.ndarray) -> np.ndarray:
    """Largest absolute error of each true column after the best permutation."""
    cost = np.abs(W[:, :, None] - W_true[:, None, :]).max(axis=0)
    rows, cols = linear_sum_assignment(cost)
    return cost[rows, cols]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=2000)
    parser.add_argument("--n-iter", type=int, default=80)
    parser.add_argument("--plot", help="write the learned dictionary to this PNG file")
    args = parser.parse_args()

    data = bars(
        size=5,
        n_samples=args.n_samples,
        pi=0.2,
        amplitude=5.0,
        sigma=1.0,
        values=VALUES,
        random_state=0,
    )
    model = DSC(
        H=10,
        values=VALUES,
        Hprime=6,
        gamma=3,
        n_iter=args.n_iter,
        random_state=1,  # default annealing: T from 5 to 1 over the first 80 % of the run
    )
    model.fit(data.Y)
    err = matched_error(model.W_, data.W)
    print(f"DSC: worst bar error {err.max():.2f} (bar amplitude 5 per unit of s)")
    print(f"     pi_ = {np.round(model.pi_, 3)} (true {np.round(data.value_probs, 3)})")
    print(f"     sigma = {model.sigma_:.2f} (true 1), free energy {model.free_energy_[-1]:.2f}")
    if args.plot:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 10, figsize=(10, 1.2))
        for h, ax in enumerate(axes):
            ax.imshow(model.W_[:, h].reshape(5, 5), cmap="gray")
            ax.axis("off")
        fig.savefig(args.plot, dpi=80)


if __name__ == "__main__":
    main()
