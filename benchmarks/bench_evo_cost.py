"""Cost of one evolutionary E-step against ET's at equal states per point (issue #11, 4).

    python benchmarks/bench_evo_cost.py [--repeat 7] [--n 5000] [--n-large 2000]

BSC, numba backend, one thread, T = 1, batch_size 1000, in one process:

- ``bars``: 10x10 bars (H = 20, D = 100, π = 2/H, σ = 2, amplitude 10, N points) at the
  generating parameters. ET with H' = 5, γ = 5 (2^5 = 32 states per point) against the
  evolutionary set with S = 32 states (4 parents × 4 children × 2 generations: 64
  log-joints per point and E-step), three ways: the fused search and E-step
  (``linear_search_estep``), the fused search with the solver's posterior and statistics
  (the previous path), and the generic search (the numba bookkeeping kernels with the numba
  log-joints between them). The evolutionary states are first warmed by three E-steps,
  so that they are as sparse as a fit's.
- ``large``: the natural-patch example's sizes (H = 300, D = 256, S = 32), a random
  Gaussian dictionary (π = 2/H, σ = 1), N_large points: fused E-step against ET with
  H' = 5, γ = 5.

Configurations are interleaved, each E-step timed ``--repeat`` times; the medians of wall
and CPU (process) seconds are printed with the load average before and after. Wall seconds
on a shared machine mix in other processes' load; CPU seconds of a single-threaded process
do so much less. The numba search is checked against the NumPy reference (the same states
after one E-step from the same warmed states). A JSON record goes to
``benchmarks/results/evo_cost.json``.
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

from prosper.backends import get_backend  # noqa: E402
from prosper.data.bars import bars_dictionary  # noqa: E402
from prosper.models.bsc import BSCModel  # noqa: E402
from prosper.parallel import Communicator  # noqa: E402
from prosper.solvers.annealing import Schedule  # noqa: E402
from prosper.solvers.evolutionary import EvolutionaryStates, SearchSettings  # noqa: E402
from prosper.solvers.states import ExpectationTruncation  # noqa: E402
from prosper.solvers.truncated import Annealing, TruncatedEM  # noqa: E402

SEARCH = SearchSettings(n_states=32, n_parents=4, n_children=4, n_generations=2)
ANNEALING = Annealing(
    Schedule.parse(1.0, "temperature", 1.0),
    False,
    Schedule.parse(0.0, "noise", 0.0),
    Schedule.parse(0.0, "ncut_factor", 0.0),
)


def _problem(case: str, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    if case == "bars":
        W, sigma = bars_dictionary(10, amplitude=10.0), 2.0
    else:
        W, sigma = rng.standard_normal((256, 300)), 1.0
    D, H = W.shape
    model = BSCModel(H, D)
    params = {"W": W, "pi": np.asarray(2.0 / H), "sigma": np.asarray(sigma)}
    Y, _ = model.sample(n, params, rng)
    return model, params, Y


def _learner(model, params, n, states, backend="numba"):
    learner = TruncatedEM(
        model,
        states,
        ANNEALING,
        n_iter=100,
        batch_size=1000,
        backend=get_backend(backend),
        seed=1,
    )
    learner.set_params(params, n)
    return learner


class _Unfused:
    """The model without its fused E-step (the search still fused, or not at all)."""

    def __init__(self, model, search: bool) -> None:
        self._model, self._search = model, search

    def __getattr__(self, name):
        return getattr(self._model, name)

    # the solver reads this one from the model's class (whether the model repairs latents)
    latent_usage = BSCModel.latent_usage

    def state_estep(self, Y, params, backend):
        return None

    def state_search(self, Y, params, backend):
        return self._model.state_search(Y, params, backend) if self._search else None


def _timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _same_states(model, params, Y, warm: EvolutionaryStates, comm) -> bool:
    """One E-step from the same warmed states with numba's fused E-step and with the NumPy
    reference: the same states?"""
    out = []
    for backend in ("numba", "numpy"):
        states = EvolutionaryStates(warm.H, warm.values, warm.settings, warm.seed)
        learner = _learner(model, params, Y.shape[0], states, backend)
        learner._attach_rows(Y.shape[0], comm)
        states.restore(warm.packed()[: Y.shape[0]])
        learner.estep(Y, comm, 3)
        out.append(states.packed().copy())
    return bool(np.array_equal(out[0], out[1]))


def run_case(case: str, n: int, repeat: int, comm) -> dict:
    model, params, Y = _problem(case, n)
    H = model.H
    configs = {"et32": _learner(model, params, n, ExpectationTruncation(H, 5, 5, model.values))}
    variants = {"evo fused E-step": model}
    if case == "bars":
        variants["evo fused search"] = _Unfused(model, True)
        variants["evo generic search"] = _Unfused(model, False)
    for name, variant in variants.items():
        configs[name] = _learner(variant, params, n, EvolutionaryStates(H, model.values, SEARCH, 1))
    for learner in configs.values():
        for it in range(3):  # compile or load the kernels; warm the evolutionary states
            learner.estep(Y, comm, it)
    evo = configs["evo fused E-step"].states
    load_before = os.getloadavg()
    times: dict[str, list] = {name: [] for name in configs}
    for r in range(repeat):
        for name, learner in configs.items():
            step = lambda learner=learner, it=4 + r: learner.estep(Y, comm, it)  # noqa: E731
            times[name].append(_timed(step))
    load_after = os.getloadavg()
    same = _same_states(model, params, Y[: min(n, 500)], evo, comm)
    result = {
        "case": case,
        "N": n,
        "H": H,
        "D": model.D,
        "load_before": load_before,
        "load_after": load_after,
        "numba_equals_numpy_states": same,
    }
    et_wall = np.median([t[0] for t in times["et32"]])
    et_cpu = np.median([t[1] for t in times["et32"]])
    print(f"\n## {case}: H={H}, D={model.D}, N={n}, load {load_before} -> {load_after}")
    print("| E-step | median wall ms | median CPU ms | / ET wall | / ET CPU |")
    print("|---|---|---|---|---|")
    for name, ts in times.items():
        wall = np.median([t[0] for t in ts])
        cpu = np.median([t[1] for t in ts])
        result[name] = {"wall": wall, "cpu": cpu, "all": ts}
        print(
            f"| {name} | {1e3 * wall:.1f} | {1e3 * cpu:.1f} | {wall / et_wall:.2f} "
            f"| {cpu / et_cpu:.2f} |"
        )
    print(f"numba fused E-step gives the NumPy reference's states: {same}")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--n-large", type=int, default=2000)
    parser.add_argument("--cases", nargs="+", default=["bars", "large"])
    args = parser.parse_args(argv)
    info = print_header("evolutionary E-step against ET at 32 states per point")
    comm = Communicator()
    record = {"machine": info, "cases": []}
    for case in args.cases:
        n = args.n if case == "bars" else args.n_large
        record["cases"].append(run_case(case, n, args.repeat, comm))
    print("record:", write_record("evo_cost", record))


if __name__ == "__main__":
    main()
