"""E-step seconds of MCA, MMCA and GSC with evolutionary states against their fused ET E-step.

5x5 bars (MCA/MMCA: point-wise maximum, MMCA signed; GSC: linear), N=1000, H=10, numba
backend, T=1, 5 iterations; the median of ``history_["seconds_estep"]`` over iterations 2-5
per run. ET with its defaults (H'=8, γ=4: 165 states per point), evo with its defaults
(S=32, 4 parents × 4 children, 2 generations: 64 log-joints per point and E-step).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_evo_models.py [--repeat 2]
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

from prosper import GSC, MCA, MMCA
from prosper.data import bars

log = logging.getLogger("bench_evo_models")

MODELS = {
    "MCA": (MCA, {"combine": "max"}),
    "MMCA": (MMCA, {"combine": "max", "signed": True}),
    "GSC": (GSC, {}),
}


def estep_seconds(name: str, states: str) -> float:
    """Median seconds of one E-step (iterations 2-5) of one fit."""
    estimator, kwargs = MODELS[name]
    data = bars(size=5, n_samples=1000, pi=0.2, amplitude=5.0, sigma=0.5, random_state=0, **kwargs)
    fit = estimator(
        H=10,
        states=states,
        n_iter=5,
        temperature=1.0,
        random_state=0,
        backend="numba",
        progress=False,
    ).fit(data.Y)
    return float(np.median(fit.history_["seconds_estep"][1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("prosper").setLevel(logging.WARNING)
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeat):  # interleaved: every model and state set once per round
        for name in MODELS:
            for states in ("et", "evo"):
                times.setdefault((name, states), []).append(estep_seconds(name, states))
    log.info("| model | ET s/E-step | evo s/E-step | evo / ET |")
    log.info("|---|---|---|---|")
    for name in MODELS:
        et, evo = np.median(times[name, "et"]), np.median(times[name, "evo"])
        log.info("| %s | %.3f | %.3f | %.1f |", name, et, evo, evo / et)


if __name__ == "__main__":
    main()
