"""Where the evolutionary E-step's time goes on 10x10 bars (issue #11, part 4).

    python benchmarks/bench_evo_parts.py [--repeat 9]

BSC, numba, one thread, T = 1, N = 5000 points at the generating parameters, S = 32 states
(4 parents x 4 children x 2 generations) warmed by three E-steps, as in
``bench_evo_cost.py``. The fused kernel is run on one batch of 1000 warmed points with 0, 1
and 2 generations, without and with the posterior and statistics; the differences of the
medians of CPU (process) time give each part in µs per point:

- ``read_rescore_sort_write``: reading the 32 stored states (bits), scoring them under the current
  parameters, marking copies, sorting, and writing them back;
- ``generation_1``, ``generation_2``: one generation of 16 children each;
- ``posterior_stats``: log marginals, posterior weights, ⟨s⟩, Σ⟨s sᵀ⟩ and counts;
- ``outside_kernel``: the whole E-step (solver, N points) less the kernel: Wᵀy, WᵀW, the
  preselection scores, the proposal, ``Y.T @ mean`` and the solver's bookkeeping.

The whole E-steps of the evolutionary states and of ET with 32 states per point (H' = 5,
γ = 5) are timed in the same loop. A JSON record goes to
``benchmarks/results/evo_parts.json``.
"""

from __future__ import annotations

import os

# one thread: set before numpy and numba are imported
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from _common import print_header, write_record  # noqa: E402
from bench_evo_cost import SEARCH, _learner, _problem  # noqa: E402

from prosper.backends import numba_search  # noqa: E402
from prosper.backends.evolution import proposal  # noqa: E402
from prosper.parallel import Communicator  # noqa: E402
from prosper.solvers.evolutionary import EvolutionaryStates  # noqa: E402
from prosper.solvers.states import ExpectationTruncation  # noqa: E402

N, BATCH = 5000, 1000
# (generations, mode): mode 0 the search only, 2 with the posterior and statistics
RUNS = [(0, 0), (1, 0), (2, 0), (2, 2)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args(argv)
    info = print_header("parts of the evolutionary E-step on 10x10 bars")
    comm = Communicator()
    model, params, Y = _problem("bars", N)
    H = model.H
    evo = _learner(model, params, N, EvolutionaryStates(H, model.values, SEARCH, 1))
    et = _learner(model, params, N, ExpectationTruncation(H, 5, 5, model.values))
    for it in range(3):  # compile or load the kernels; warm the evolutionary states
        evo.estep(Y, comm, it)
        et.estep(Y, comm, it)
    states = evo.states
    X0 = states.packed()[:BATCH].copy()  # the stored form: bits
    (WY, yy, WtW, logp, sigma2), scores = model._batch_terms(Y[:BATCH], params)
    weights = proposal(scores, H, BATCH)
    rows = np.arange(BATCH, dtype=np.int64)
    gen_keys = np.array([12345, 67890], dtype=np.uint64)

    def kernel(n_generations: int, mode: int) -> float:
        X = X0.copy()  # the kernel writes the new states over it, as the solver lets it
        start = time.process_time()
        numba_search._run(
            X, WY, WtW, yy, model.values, logp, sigma2, model.D, weights, states.keys,
            gen_keys[:n_generations], rows, SEARCH.n_parents, SEARCH.n_children, mode, 1.0,
            1.0, np.ones(BATCH), X, packed=True, Y=Y[:BATCH],
        )  # fmt: skip
        return time.process_time() - start

    def estep(learner, it: int) -> float:
        start = time.process_time()
        learner.estep(Y, comm, it)
        return time.process_time() - start

    for run in RUNS:
        kernel(*run)
    load_before = os.getloadavg()
    times: dict = {run: [] for run in RUNS}
    evo_times, et_times = [], []
    for r in range(args.repeat):
        for run in RUNS:
            times[run].append(kernel(*run))
        evo_times.append(estep(evo, 10 + r))
        et_times.append(estep(et, 10 + r))
    us = {run: np.median(t) / BATCH * 1e6 for run, t in times.items()}
    parts = {
        "read_rescore_sort_write": us[(0, 0)],
        "generation_1": us[(1, 0)] - us[(0, 0)],
        "generation_2": us[(2, 0)] - us[(1, 0)],
        "posterior_stats": us[(2, 2)] - us[(2, 0)],
        "kernel": us[(2, 2)],
        "evo_estep": np.median(evo_times) / N * 1e6,
        "et32_estep": np.median(et_times) / N * 1e6,
    }
    parts["outside_kernel"] = parts["evo_estep"] - parts["kernel"]
    load = (load_before, os.getloadavg())
    print(f"load {load[0]} -> {load[1]}")
    print("| part | CPU µs per point |\n|---|---|")
    for name, value in parts.items():
        print(f"| {name} | {value:.2f} |")
    record = {"machine": info, "load": load, "repeat": args.repeat, "us_per_point": parts}
    print("record:", write_record("evo_parts", record))


if __name__ == "__main__":
    main()
