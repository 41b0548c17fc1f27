"""ET data selection: the cut points' statistics subtracted against a second pass (issue #11).

    python benchmarks/bench_data_selection.py [--models bsc tsc dsc gsc mca mmca] [--size 10]
        [--k-pi 2] [--n 2000] [--seeds 0] [--repeat 2] [--record data_selection]

With ET data selection every E-step needs the log marginals of all points to choose the
N_cut best explained before it can sum their statistics. The solver used to make a pass of
log marginals only and a second pass of statistics over the kept points; where few points
are cut (``prosper.solvers.truncated.SUBTRACT_CUT``) it now makes one statistics pass over
all points and subtracts the statistics of the cut points, read again. This benchmark fits
each model with its defaults (numba backend, one thread) on its own bars variant of
``bench_states.py`` both ways, the two fits interleaved (the order alternates by repeat), and
prints per model:

- the share of the points cut, median over the iterations that select;
- the seconds of the E-steps summed over the fit and of the whole fit, each way, and their
  ratio (the fits are equal to round-off: the same bars found, the largest difference of W
  is printed);
- the cost of a log-marginal pass relative to a statistics pass, timed alternately on the
  training data at two thirds of the shipped fit (iteration ``2 n_iter / 3``), which sets
  the break-even share of cut points of the subtraction;
- rows read per selecting E-step: 2 N for two passes, N + cut for the subtraction (bytes =
  rows · D · 8), beside the machine's GEMM rate for scale (the E-steps are not GEMMs).

A JSON record goes to ``benchmarks/results/<record>.json``.
"""

from __future__ import annotations

import os

# one thread: set before numpy and numba are imported
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from _common import gemm_gflops, print_header, write_record  # noqa: E402
from bench_states import MODELS, _data, match_bars  # noqa: E402

import prosper  # noqa: E402
from prosper.solvers import truncated  # noqa: E402

N_ITER = 100


def _pass_ratio(learner, Y, repeat: int = 5) -> float:
    """Median (log-marginal pass seconds) / (statistics pass seconds) at the learner's
    current parameters and temperature 1, the two timed alternately."""
    lm, stats = [], []
    for _ in range(repeat):
        for out, accumulate in ((lm, False), (stats, True)):
            t0 = time.process_time()
            learner._pass(Y, 1.0, 1.0, None, accumulate)
            out.append(time.process_time() - t0)
    return float(np.median(lm) / np.median(stats))


def _fit(name: str, Y: np.ndarray, H: int, seed: int, subtract_cut: float, probe: dict | None):
    """Fit the model's defaults with the given ``SUBTRACT_CUT``; with ``probe`` (a dict) the
    pass ratio is measured at iteration 2 N_ITER / 3 and stored in it."""
    spec = MODELS[name]

    def callback(iteration, learner, metrics):
        if probe is not None and iteration == 2 * N_ITER // 3:
            wall, cpu = time.perf_counter(), time.process_time()
            probe["pass_ratio"] = _pass_ratio(learner, Y)
            probe["seconds"] = {
                "wall": time.perf_counter() - wall,
                "cpu": time.process_time() - cpu,
            }

    truncated.SUBTRACT_CUT = subtract_cut
    estimator = getattr(prosper, spec["estimator"])(
        H=H,
        n_iter=N_ITER,
        random_state=seed,
        progress=False,
        backend="numba",
        callback=callback,
        **spec.get("fit", {}),
    )
    wall, cpu = time.perf_counter(), time.process_time()
    estimator.fit(Y)
    seconds = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
    if probe is not None:
        # the probe's passes are not part of the fit
        seconds = {k: v - probe["seconds"][k] for k, v in seconds.items()}
    return estimator, seconds


def run_model(name: str, args, seed: int) -> dict:
    data, Y, _ = _data(args.size, args.k_pi, args.n, seed, name)
    # compile or load the kernels before the clocks start
    spec = MODELS[name]
    getattr(prosper, spec["estimator"])(
        H=2 * args.size, n_iter=4, progress=False, backend="numba", **spec.get("fit", {})
    ).fit(Y[:200])
    shipped = truncated.SUBTRACT_CUT
    runs: dict[str, list] = {"subtract": [], "two passes": []}
    fits = {}
    probe: dict = {}
    for r in range(args.repeat):
        order = ("subtract", "two passes") if r % 2 == 0 else ("two passes", "subtract")
        for way in order:
            cut = shipped if way == "subtract" else 0.0
            est, seconds = _fit(
                name, Y, 2 * args.size, seed, cut, probe if way == "subtract" and r == 0 else None
            )
            runs[way].append(
                {
                    "fit_cpu": seconds["cpu"],
                    "fit_wall": seconds["wall"],
                    "estep_sum": float(np.sum(est.history_["seconds_estep"])),
                }
            )
            fits[way] = est
    truncated.SUBTRACT_CUT = shipped
    n_cut = np.asarray(fits["subtract"].history_["n_cut"], dtype=float)
    selecting = n_cut < args.n
    share = 1.0 - n_cut[selecting] / args.n
    signed = MODELS[name]["signed"]
    bars = {w: match_bars(f.W_, data.W, signed=signed) for w, f in fits.items()}
    med = {w: {k: float(np.median([x[k] for x in v])) for k in v[0]} for w, v in runs.items()}
    D = Y.shape[1]
    rows_two = 2 * args.n
    rows_sub = args.n + float(np.median(share)) * args.n if share.size else args.n
    return {
        "model": name,
        "seed": seed,
        "N": args.n,
        "D": D,
        "selecting_iterations": int(selecting.sum()),
        "cut_share_median": float(np.median(share)) if share.size else 0.0,
        "cut_share_max": float(share.max()) if share.size else 0.0,
        "subtracting_iterations": int(np.sum(share <= shipped)),
        "pass_ratio": probe.get("pass_ratio"),
        "bars": bars,
        "max_abs_dW": float(np.max(np.abs(fits["subtract"].W_ - fits["two passes"].W_))),
        "median": med,
        "runs": runs,
        "bytes_per_estep": {"two passes": rows_two * D * 8, "subtract": rows_sub * D * 8},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["bsc", "tsc", "dsc", "gsc", "mca", "mmca"])
    parser.add_argument("--size", type=int, default=10)
    parser.add_argument("--k-pi", type=int, default=2)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--record", default="data_selection", help="name of the JSON record")
    args = parser.parse_args(argv)
    info = print_header("ET data selection: subtracted cut points against two passes")
    gemm = gemm_gflops()
    print(f"GEMM rate (1024^3, float64, this process's threads): {gemm:.1f} GFLOP/s")
    print(f"SUBTRACT_CUT = {truncated.SUBTRACT_CUT}; load before: {os.getloadavg()}")
    record = {"machine": info, "gemm_gflops": gemm, "args": vars(args), "results": []}
    print(
        "\n| model | seed | cut share median (max) | log-marginal / statistics pass | "
        "E-steps wall s: two passes | subtract | ratio | fit CPU s: two passes | subtract | "
        "ratio | "
        "bars (both) | max abs ΔW |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        for name in args.models:
            res = run_model(name, args, seed)
            record["results"].append(res)
            two, sub = res["median"]["two passes"], res["median"]["subtract"]
            ratio = res["pass_ratio"]
            print(
                f"| {name} | {seed} | {res['cut_share_median']:.3f} ({res['cut_share_max']:.3f}) "
                f"| {'-' if ratio is None else f'{ratio:.2f}'} "
                f"| {two['estep_sum']:.2f} | {sub['estep_sum']:.2f} "
                f"| {sub['estep_sum'] / two['estep_sum']:.3f} "
                f"| {two['fit_cpu']:.2f} | {sub['fit_cpu']:.2f} "
                f"| {sub['fit_cpu'] / two['fit_cpu']:.3f} "
                f"| {res['bars']['two passes']}, {res['bars']['subtract']} "
                f"| {res['max_abs_dW']:.2g} |",
                flush=True,
            )
    record["load_after"] = os.getloadavg()
    print(f"load after: {record['load_after']}")
    print("record:", write_record(args.record, record))


if __name__ == "__main__":
    main()
