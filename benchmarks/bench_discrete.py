"""TSC and DSC on their bars problems: speed per iteration, states per point, recovery rate.

    python benchmarks/bench_discrete.py [--models tsc,dsc] [--n 20000] [--seeds 10]
        [--n-iter 60] [--timing-n 20000] [--timing-iter 3] [--temperature JSON ...]
        [--jobs 1]

Two parts per model:

- timing: one fit of ``--timing-iter`` iterations on N = ``--timing-n`` bars; seconds per
  iteration (E-step, reduction, M-step), candidate states per data point, counted flops of
  one E-step, GFLOP/s beside the measured float64 GEMM rate of the machine;
- recovery: ``--seeds`` fits of ``--n-iter`` iterations on N = ``--n`` (data and
  initialisation seeded by the seed); a run succeeds when every generating bar is matched
  (after permutation; TSC: and sign) with a largest absolute error below 20 % of the bar
  amplitude. Every ``--temperature`` schedule given (JSON, e.g. '[[0, 5.0], [0.8, 1.0]]', or
  'default' = the estimator's default) is measured.

TSC: signed 5x5 bars (each bar present with probability 0.2, sign ±1 with equal chance,
amplitude 10, σ = 2), H = 10. DSC: 5x5 bars with values (0, 1, 2, 3), probabilities
(0.8, 0.2/3, 0.2/3, 0.2/3), amplitude 5 per unit (bars of 5, 10, 15), σ = 1, H = 10.
Writes benchmarks/results/discrete.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import gemm_gflops, print_header, write_record

from prosper import DSC, TSC
from prosper.data import bars
from prosper.solvers.states import ExpectationTruncation
from tests.helpers import match_columns

SETTINGS = {
    "tsc": {"cls": TSC, "H": 10, "Hprime": 6, "gamma": 3, "values": (0.0, -1.0, 1.0)},
    "dsc": {"cls": DSC, "H": 10, "Hprime": 6, "gamma": 3, "values": (0.0, 1.0, 2.0, 3.0)},
}


def problem(model: str, n: int, seed: int):
    if model == "tsc":
        return bars(
            size=5,
            n_samples=n,
            pi=0.2,
            amplitude=10.0,
            sigma=2.0,
            signed=True,
            random_state=1000 + seed,
        )
    return bars(
        size=5,
        n_samples=n,
        pi=0.2,
        amplitude=5.0,
        sigma=1.0,
        values=SETTINGS["dsc"]["values"],
        random_state=1000 + seed,
    )


def estimator(model: str, n_iter: int, seed: int, temperature):
    s = SETTINGS[model]
    kw = {"values": s["values"]} if model == "dsc" else {}
    return s["cls"](
        H=s["H"],
        Hprime=s["Hprime"],
        gamma=s["gamma"],
        n_iter=n_iter,
        temperature=temperature,
        random_state=seed,
        **kw,
    )


def count_work(model: str, D: int) -> dict[str, float]:
    """Flops of the E-step per data point (numpy kernel, linear_estep + statistics)."""
    s = SETTINGS[model]
    H, Hp = s["H"], s["Hprime"]
    states = ExpectationTruncation(H, Hp, s["gamma"], s["values"])
    Kc, nz = states.table.shape[0], len(s["values"]) - 1
    flops = (
        2 * H * D  # preselection: Y W (plus O(H) per value)
        + 2 * H * D  # Y W in the kernel
        + 2 * Kc * Hp  # linear terms: (W^T y)_I @ table^T
        + 2 * Kc * Hp * Hp  # quadratic terms: (W^T W)_II @ outer^T
        + 8 * (1 + nz * H + Kc)  # log-joint assembly, two softmaxes
        + 2 * Kc * Hp * Hp  # second moments: q @ outer
        + 2 * Kc * Hp  # first moments: q @ table
        + 2 * D * H  # Σ y <s>^T
    )
    return {"states": states.n_states, "flops": flops}


def timing(model: str, n: int, n_iter: int) -> dict:
    data = problem(model, n, 0)
    est = estimator(model, n_iter, 0, None).fit(data.Y)
    h = est.history_
    per_iter = h["seconds_estep"] + h["seconds_reduce"] + h["seconds_mstep"]
    work = count_work(model, data.Y.shape[1])
    estep = float(np.median(h["seconds_estep"]))
    return {
        "N": n,
        "iterations": n_iter,
        "seconds_per_iteration": float(np.median(per_iter)),
        "seconds_estep": estep,
        "seconds_mstep": float(np.median(h["seconds_mstep"])),
        "states_per_point": work["states"],
        "flops_per_point": work["flops"],
        "estep_gflops": work["flops"] * n / estep / 1e9,
    }


def one_run(args: tuple) -> dict:
    model, n, n_iter, seed, temperature = args
    data = problem(model, n, seed)
    t0 = time.perf_counter()
    est = estimator(model, n_iter, seed, temperature).fit(data.Y)
    seconds = time.perf_counter() - t0
    _, err = match_columns(est.W_, data.W, signed=model == "tsc")
    return {
        "seed": seed,
        "success": bool(err.max() < 0.2 * data.amplitude),
        "max_error": float(err.max()),
        "pi": np.asarray(est.pi_).tolist(),
        "sigma": est.sigma_,
        "free_energy": float(est.free_energy_[-1]),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tsc,dsc")
    parser.add_argument("--n", type=int, default=20000, help="N of the recovery runs")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--n-iter", type=int, default=60)
    parser.add_argument("--timing-n", type=int, default=20000)
    parser.add_argument("--timing-iter", type=int, default=3)
    parser.add_argument(
        "--temperature",
        action="append",
        default=None,
        help="schedule as JSON, or 'default' (repeatable)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="recovery runs in parallel")
    parser.add_argument("--name", default="discrete", help="record name (results/<name>.json)")
    args = parser.parse_args()
    schedules = args.temperature or ["default"]

    info = print_header("TSC / DSC on bars")
    gemm = gemm_gflops()
    print(f"float64 GEMM rate: {gemm:.1f} GFLOP/s")
    record = {"machine": info, "gemm_gflops": gemm, "argv": sys.argv, "models": {}}
    for model in args.models.split(","):
        s = SETTINGS[model]
        print(
            f"\n## {model.upper()}: H={s['H']}, H'={s['Hprime']}, gamma={s['gamma']}, "
            f"values={s['values']}, D=25"
        )
        t = timing(model, args.timing_n, args.timing_iter)
        print(
            f"timing N={t['N']}: {t['seconds_per_iteration']:.2f} s/iteration "
            f"(E-step {t['seconds_estep']:.2f} s, M-step {t['seconds_mstep'] * 1e3:.2f} ms), "
            f"{t['states_per_point']} states/point, {t['flops_per_point']:.0f} flops per point: "
            f"{t['estep_gflops']:.2f} GFLOP/s (GEMM {gemm:.1f} GFLOP/s)"
        )
        runs = {}
        for spec in schedules:
            temperature = None if spec == "default" else json.loads(spec)
            jobs = [(model, args.n, args.n_iter, seed, temperature) for seed in range(args.seeds)]
            if args.jobs > 1:
                with ProcessPoolExecutor(args.jobs) as pool:
                    results = list(pool.map(one_run, jobs))
            else:
                results = [one_run(j) for j in jobs]
            rate = float(np.mean([r["success"] for r in results]))
            runs[spec] = {"success_rate": rate, "runs": results}
            errors = " ".join(f"{r['max_error']:.1f}" for r in results)
            print(
                f"recovery N={args.n}, {args.n_iter} it, temperature {spec}: "
                f"{rate:.0%} of {args.seeds} seeds (max errors: {errors})",
                flush=True,
            )
        record["models"][model] = {
            "settings": {k: v for k, v in s.items() if k != "cls"},
            "timing": t,
            "recovery": {"N": args.n, "n_iter": args.n_iter, "schedules": runs},
        }
    path = write_record(args.name, record)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
