"""KroneckerSBL of two source trees in one process: same fits? how much faster?

Usage::

    git worktree add /tmp/prosper-main main      # the tree to compare with
    OMP_NUM_THREADS=1 python benchmarks/bench_krosbl_trees.py --old /tmp/prosper-main \
        [--new .] [--sizes 32 64] [--snrs 0 10 20 30] [--repeats 15] [--cpu] [--check 4]

Both trees' ``prosper`` packages are imported into this process (one at a time in
``sys.modules``, swapped before every fit), so their fits interleave on the same problems
(``kronecker_problem`` with two n_i/2 × n_i factors, a 4×4 support, one snapshot, seed
1000) under the same load. Per size and SNR the table gives the iterations of each tree
and the median whole-fit time over ``--repeats`` after one warm-up round (``--cpu``:
``time.process_time`` instead of ``time.perf_counter``, less sensitive to other processes).
``--check K`` first fits seeds 1000 .. 1000 + K - 1 with both trees and reports whether
γ_i, σ and coef_ are equal bit for bit.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np

HERE = Path(__file__).resolve().parent


def _drop() -> None:
    for name in [k for k in sys.modules if k == "prosper" or k.startswith("prosper.")]:
        del sys.modules[name]


def load_tree(path: Path) -> dict[str, ModuleType]:
    """Import the ``prosper`` package of ``path`` and return its modules."""
    _drop()
    sys.path.insert(0, str(path))
    try:
        import prosper.data.kronecker
        import prosper.estimators.sbl  # noqa: F401
    finally:
        sys.path.remove(str(path))
    modules = {k: v for k, v in sys.modules.items() if k == "prosper" or k.startswith("prosper.")}
    origin = Path(modules["prosper"].__file__).resolve()
    if path.resolve() not in origin.parents:
        raise ValueError(f"{path} has no prosper package of its own (imported {origin}).")
    return modules


def use_tree(modules: dict[str, ModuleType]) -> ModuleType:
    _drop()
    sys.modules.update(modules)
    return modules["prosper"]


def fit(modules: dict[str, ModuleType], n_i: int, snr: float, seed: int, clock) -> tuple:
    """(iterations, seconds, parameters as one vector, coef_) of one default fit."""
    prosper = use_tree(modules)
    p = modules["prosper.data.kronecker"].kronecker_problem(
        [(n_i // 2, n_i)] * 2, sparsity=4, snr_db=snr, random_state=seed
    )
    start = clock()
    est = prosper.KroneckerSBL(factors=p.factors).fit(p.Y)
    seconds = clock() - start
    params = np.concatenate([*est.gamma_factors_, [est.sigma_]])
    return est.n_iter_, seconds, params, est.coef_


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="the tree to compare with")
    parser.add_argument("--new", type=Path, default=HERE.parent)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64], help="n_i (n = n_i²)")
    parser.add_argument("--snrs", type=float, nargs="+", default=[0.0, 10.0, 20.0, 30.0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--cpu", action="store_true", help="process time instead of wall time")
    parser.add_argument("--check", type=int, default=0, help="seeds to compare bit for bit")
    args = parser.parse_args()
    trees = {"old": load_tree(args.old), "new": load_tree(args.new)}
    clock = time.process_time if args.cpu else time.perf_counter
    print(f"load average before: {os.getloadavg()}")
    if args.check:
        same = total = 0
        for n_i in args.sizes:
            for snr in args.snrs:
                for seed in range(1000, 1000 + args.check):
                    old, new = (fit(m, n_i, snr, seed, clock) for m in trees.values())
                    equal = np.array_equal(old[2], new[2]) and np.array_equal(old[3], new[3])
                    same += equal and old[0] == new[0]
                    total += 1
        print(f"{same} of {total} fits equal bit for bit (parameters, coef_, iterations)")
    print("| n | SNR dB | iterations old / new | old ms | new ms | old / new |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n_i in args.sizes:
        for snr in args.snrs:
            times: dict[str, list[float]] = {k: [] for k in trees}
            its = {}
            for rep in range(args.repeats + 1):  # round 0 warms up
                for name, modules in trees.items():
                    its[name], seconds, _, _ = fit(modules, n_i, snr, 1000, clock)
                    if rep:
                        times[name].append(seconds)
            old, new = (float(np.median(times[k])) for k in trees)
            print(
                f"| {n_i * n_i} | {snr:g} | {its['old']} / {its['new']} | {1e3 * old:.1f} | "
                f"{1e3 * new:.1f} | {old / new:.2f}× |",
                flush=True,
            )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
