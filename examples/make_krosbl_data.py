"""Write the data of examples/krosbl.toml: Kronecker factors and snapshots in one .npz file.

    python examples/make_krosbl_data.py [--out examples/krosbl_data.npz] [--seed 0]

The file holds ``Phi1`` (16, 32), ``Phi2`` (16, 32), ``Y`` (8, 256) measurements, and the
truth ``X`` (8, 1024) and ``support`` (1024,): a 5 x 5 Kronecker-structured support shared by
8 snapshots at 20 dB SNR. Generated rather than committed, so the repository holds no binary.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from prosper.data.kronecker import kronecker_problem


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("krosbl_data.npz"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--snapshots", type=int, default=8)
    args = parser.parse_args(argv)
    problem = kronecker_problem(
        [(16, 32), (16, 32)],
        sparsity=5,
        snr_db=20.0,
        n_snapshots=args.snapshots,
        random_state=args.seed,
    )
    np.savez(
        args.out,
        Phi1=problem.factors[0],
        Phi2=problem.factors[1],
        Y=problem.Y,
        X=problem.X,
        support=problem.support,
    )
    print(f"wrote {args.out}: Y {problem.Y.shape}, X {problem.X.shape}, sigma {problem.sigma:.4g}")
    return args.out


if __name__ == "__main__":
    main()
