"""ℓq sparse coding: recover a known dictionary, then learn one from natural image patches.

python examples/sparse_coding_example.py          (patches need `pip install prosper[data]`)
mpiexec -n 2 python examples/sparse_coding_example.py
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.optimize import linear_sum_assignment

from prosper import SparseCoding
from prosper.data import get_generator
from prosper.parallel import get_comm, row_block

log = logging.getLogger("sparse_coding_example")


def main() -> None:
    comm = get_comm()
    logging.basicConfig(level=logging.INFO if comm.rank == 0 else logging.WARNING)

    # 1. synthetic data from a known dictionary: every rank generates it and keeps its rows
    data = get_generator("sparse_dictionary")(
        n_samples=2000, D=16, H=24, sparsity=3, noise=0.05, random_state=0
    )
    Y = data.Y[row_block(data.Y.shape[0], comm)]
    for penalty, lam in [("l1", 0.2), ("l0", 0.2), ("l1/2", 0.1), ("cel0", 0.1)]:
        model = SparseCoding(H=24, penalty=penalty, lam=lam, n_iter=15, random_state=0).fit(Y)
        cos = np.abs(model.W_.T @ data.W)
        rows, cols = linear_sum_assignment(-cos)
        log.info(
            "%-5s lam=%.2f: %2d of 24 atoms recovered (|cos| > 0.95), sparsity %.3f, "
            "relative error %.3f",
            penalty,
            lam,
            int((cos[rows, cols] > 0.95).sum()),
            model.history_["sparsity"][-1],
            model.history_["rel_error"][-1],
        )

    # 2. whitened natural image patches
    try:
        patches = get_generator("natural_patches")(size=8, n_samples=10000, random_state=0)
    except ImportError as exc:
        log.warning("skipping the natural patches: %s", exc)
        return
    Y = patches.Y[row_block(patches.Y.shape[0], comm)]
    model = SparseCoding(H=64, penalty="l0", lam=0.3, n_iter=5, random_state=1).fit(Y)
    log.info(
        "patches, l0: sparsity %.3f, relative error %.3f, score %.4f",
        model.history_["sparsity"][-1],
        model.history_["rel_error"][-1],
        model.score(Y),
    )
    if comm.rank == 0:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return
        fig, axes = plt.subplots(8, 8, figsize=(6, 6))
        for h, ax in enumerate(axes.ravel()):
            ax.imshow(model.W_[:, h].reshape(8, 8), cmap="gray")
            ax.set_axis_off()
        fig.savefig("sparse_coding_patches.png", dpi=100)
        log.info("dictionary written to sparse_coding_patches.png")


if __name__ == "__main__":
    main()
