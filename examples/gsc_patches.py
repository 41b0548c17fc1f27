"""GSC (spike-and-slab sparse coding) on whitened 16x16 natural image patches.

    python examples/gsc_patches.py --plot gsc_patches.png
    python examples/gsc_patches.py --n-samples 4000 --H 32 --n-iter 10   # a quick look

The patches come from the sample images shipped with scikit-learn
(``pip install 'prosper[data]'``), DC removed and ZCA-whitened. GSC learns localised,
oriented fields (Gabor-like, as in Sheikh et al. 2014, section 5) together with a spike
probability, slab mean and slab variance per field. The PNG shows the learned fields W_h
ordered by their spike probability π_h.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

from prosper import GSC
from prosper.data.patches import natural_patches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16, help="patch side (D = size²)")
    parser.add_argument("--n-samples", type=int, default=20000)
    parser.add_argument("--H", type=int, default=64)
    parser.add_argument("--Hprime", type=int, default=6)
    parser.add_argument("--gamma", type=int, default=3)
    parser.add_argument("--n-iter", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", help="write the learned fields to this PNG file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    data = natural_patches(args.size, args.n_samples, whiten=True, random_state=args.seed)
    est = GSC(
        H=args.H,
        Hprime=args.Hprime,
        gamma=args.gamma,
        n_iter=args.n_iter,
        # anneal from T=2 to 1 over the first half: helps fields leave the all-alike start
        temperature=[[0, 2.0], [0.5, 1.0]],
        random_state=args.seed,
    ).fit(data.Y)
    seconds = est.history_["seconds_estep"] + est.history_["seconds_mstep"]
    print(
        f"N={data.Y.shape[0]}, D={data.Y.shape[1]}, H={args.H}: free energy "
        f"{est.free_energy_[0]:.2f} -> {est.free_energy_[-1]:.2f}, "
        f"{np.median(seconds):.2f} s per iteration"
    )
    print(f"mean active fields per patch H·π = {est.pi_.sum():.2f}, sigma = {est.sigma_:.3f}")

    if args.plot:
        import matplotlib.pyplot as plt

        order = np.argsort(-est.pi_)
        cols = int(np.ceil(np.sqrt(args.H)))
        rows = int(np.ceil(args.H / cols))
        fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.1))
        for ax in np.ravel(axes):
            ax.axis("off")
        for ax, h in zip(np.ravel(axes), order, strict=False):
            field = est.W_[:, h].reshape(args.size, args.size)
            lim = np.abs(field).max() or 1.0
            ax.imshow(field, cmap="gray", vmin=-lim, vmax=lim)
        fig.suptitle(f"GSC fields on whitened {args.size}x{args.size} patches (by π_h)")
        fig.savefig(args.plot, dpi=80, bbox_inches="tight")
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
