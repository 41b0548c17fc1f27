"""Time the Expectation Truncation state table: array build against the former Python loop.

    python benchmarks/bench_state_table.py --sizes 16,16,2 12,4,4 --repeat 3

Each size is Hprime,gamma,V (V latent values, 0 included). Both builds are checked equal
(same rows, same order) and timed interleaved; the median of ``--repeat`` runs is printed.
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

from prosper.solvers.states import ExpectationTruncation


def loop_table(Hprime: int, gamma: int, values: np.ndarray) -> np.ndarray:
    """The former build: one Python iteration per table row."""
    rows = []
    for k in range(2, gamma + 1):
        for subset in itertools.combinations(range(Hprime), k):
            for vals in itertools.product(values[1:], repeat=k):
                row = np.zeros(Hprime)
                row[list(subset)] = vals
                rows.append(row)
    return np.array(rows).reshape(len(rows), Hprime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["16,16,2", "12,4,4"])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for size in args.sizes:
        Hprime, gamma, V = (int(v) for v in size.split(","))
        values = np.arange(V, dtype=np.float64)
        t_loop, t_array, t_init = [], [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            a = loop_table(Hprime, gamma, values)
            t1 = time.perf_counter()
            states = ExpectationTruncation(Hprime, Hprime, gamma, values)
            t2 = time.perf_counter()
            b = states._build_table()
            t3 = time.perf_counter()
            assert np.array_equal(a, b)
            t_loop.append(t1 - t0)
            t_init.append(t2 - t1)
            t_array.append(t3 - t2)
        print(
            f"Hprime={Hprime} gamma={gamma} V={V} rows={a.shape[0]}: table by loop "
            f"{np.median(t_loop):.3f} s, by arrays {np.median(t_array):.3f} s; whole "
            f"ExpectationTruncation (with the table products) {np.median(t_init):.3f} s"
        )


if __name__ == "__main__":
    main()
