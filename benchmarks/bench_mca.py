"""MCA and MMCA on their bars problems: speed per iteration, states per point, recovery rate.

    python benchmarks/bench_mca.py [--models mca,mmca] [--n 20000] [--seeds 10]
        [--n-iter 60] [--timing-n 20000] [--timing-iter 3] [--temperature JSON ...]
        [--jobs 1] [--kernel-n 10000] [--kernel-configs mca:5:10:8:4,...] [--kernel-only]

Two parts per model:

- timing: one fit of ``--timing-iter`` iterations on N = ``--timing-n`` max-bars; seconds
  per iteration (E-step, reduction, M-step), candidate states per data point, counted
  flops and transcendental evaluations of one E-step, GFLOP/s beside the measured float64
  GEMM rate of the machine;
- recovery: ``--seeds`` fits of ``--n-iter`` iterations on N = ``--n`` (data and
  initialisation seeded by the seed); a run succeeds when every generating bar is matched
  (after permutation; MMCA: against [W, -W] with sign matching) with a largest absolute
  error below 20 % (MCA) or 30 % (MMCA) of the bar amplitude. MMCA's looser bound: where
  bars of equal magnitude and opposite sign cross, bars() lets the horizontal one win
  (argmax takes the first), which the symmetric model cannot reproduce, so crossing pixels
  of vertical bars are off by up to about 25 %; a missed bar is off by 100 %. Every
  ``--temperature`` schedule given (JSON, e.g. '[[0, 5.0], [0.6, 1.0]]', or 'default') is
  measured, to choose the estimator default.

and, before them (``--kernel-n`` > 0), a side-by-side timing of one E-step pass over N =
``--kernel-n`` points in batches of ``--kernel-batch``, the model's NumPy E-step against the
numba kernel (prosper/backends/numba_mca.py) in the same process, with the first call's
compile (or cache load) time and the largest relative difference of the results
(``--kernel-configs``: model:bars size:H:H':gamma; ``--kernel-only`` skips the rest).

MCA: 5x5 bars combined by the maximum, H = 10. MMCA: signed 5x5 bars (random sign per bar
and data point, the larger magnitude wins), binary causes, so H = 20 (W_h and -W_h).
Writes benchmarks/results/mca.json.
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
from _common import compare_estep_backends, gemm_gflops, print_header, write_record

from prosper import MCA, MMCA
from prosper.data import bars
from prosper.solvers.states import ExpectationTruncation
from tests.helpers import match_columns

SETTINGS = {
    "mca": {"cls": MCA, "H": 10, "Hprime": 8, "gamma": 4, "signed": False, "tol": 0.2},
    "mmca": {"cls": MMCA, "H": 20, "Hprime": 8, "gamma": 3, "signed": True, "tol": 0.3},
}


def problem(model: str, n: int, seed: int):
    signed = SETTINGS[model]["signed"]
    data = bars(size=5, n_samples=n, signed=signed, combine="max", random_state=1000 + seed)
    W_true = np.hstack([data.W, -data.W]) if signed else data.W
    return data, W_true


def estimator(model: str, n_iter: int, seed: int, temperature):
    s = SETTINGS[model]
    return s["cls"](
        H=s["H"],
        Hprime=s["Hprime"],
        gamma=s["gamma"],
        n_iter=n_iter,
        temperature=temperature,
        random_state=seed,
    )


def count_work(model: str, D: int) -> dict[str, float]:
    """Flops and transcendental evaluations of the E-step per data point."""
    s = SETTINGS[model]
    H, Hp = s["H"], s["Hprime"]
    states = ExpectationTruncation(H, Hp, s["gamma"], (0.0, 1.0))
    Kc = states.table.shape[0]
    active = float(states.table.sum())
    flops = (
        3 * H * D  # preselection
        + 2 * H * D  # singleton errors (Y W)
        + 2 * Kc * Hp * D  # t = table @ exp(rho (log W - M))
        + 6 * Kc * D  # smoothed maximum, errors
        + 4 * H * Hp * D  # statistics scatter
    )
    trans = Hp * D + Kc * D  # exp of the preselected W, |t|^(1/rho)
    if s["signed"]:
        flops += 5 * active * D
        trans += active * D + Kc * D
    else:
        flops += 2 * Kc * Hp * D + 3 * Kc * D
        trans += Hp * D
    return {"states": states.n_states, "flops": flops, "transcendentals": trans}


def timing(model: str, n: int, n_iter: int) -> dict:
    data, _ = problem(model, n, 0)
    cpu = time.process_time()
    est = estimator(model, n_iter, 0, None).fit(data.Y)
    cpu = (time.process_time() - cpu) / n_iter
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
        # CPU time of this process (includes the initialisation): less sensitive than wall
        # time to other processes sharing the cores
        "cpu_seconds_per_iteration": cpu,
        "states_per_point": work["states"],
        "flops_per_point": work["flops"],
        "transcendentals_per_point": work["transcendentals"],
        "estep_gflops": work["flops"] * n / estep / 1e9,
        "estep_mtranscendentals_per_s": work["transcendentals"] * n / estep / 1e6,
    }


def kernel_comparison(model: str, n: int, size: int, H: int, config: str, batch: int, repeats: int):
    """Seconds of one E-step pass (statistics), NumPy model path vs numba kernel, same batches.

    Parameters as in a fit near convergence: the generating bars (MMCA: [W, -W]) plus noise,
    π = 2/H, σ = 0.5, T = 1. Both passes include the preselection (the same NumPy code).
    """
    try:
        from prosper.backends import numba_backend
    except ImportError:
        print("numba is not installed: no kernel comparison")
        return None
    s = SETTINGS[model]
    Hprime, gamma = (int(v) for v in config.split(":"))
    data = bars(size=size, n_samples=n, signed=s["signed"], combine="max", random_state=0)
    W_true = np.hstack([data.W, -data.W]) if s["signed"] else data.W
    D = data.Y.shape[1]
    rng = np.random.default_rng(1)
    reps = -(-H // W_true.shape[1])
    W = np.tile(W_true, reps)[:, :H] + 0.1 * rng.standard_normal((D, H))
    params = {"W": W, "pi": np.asarray(2.0 / H), "sigma": np.asarray(0.5)}
    model_obj = s["cls"]._model_class(H, D)
    states = ExpectationTruncation(H, Hprime, gamma, model_obj.values)
    batches = [data.Y[start : start + batch] for start in range(0, n, batch)]
    result = {
        "model": model,
        "N": n,
        "D": D,
        "H": H,
        "Hprime": Hprime,
        "gamma": gamma,
        "K": states.n_states,
        "batch_size": batch,
        **compare_estep_backends(model_obj, states, params, batches, numba_backend, repeats),
    }
    t_numpy, t_numba = result["seconds_numpy"], result["seconds_numba"]
    first_call, err = result["seconds_first_call"], result["max_rel_diff"]
    print(
        f"| {model} | {n} | {D} | {H} | {Hprime} | {gamma} | {result['K']} | {t_numpy:.3f} | "
        f"{t_numba:.3f} | {result['speedup']:.1f}x | {first_call:.2f} | {err:.1e} |"
    )
    return result


def kernel_comparisons(args) -> list[dict]:
    """The NumPy/numba comparison of every ``--kernel-configs`` entry, as a table."""
    try:
        import numba
    except ImportError:
        print("\nnumba is not installed: no kernel comparison")
        return []
    print(
        f"\none E-step pass (statistics, T = 1), batches of {args.kernel_batch}, best of "
        f"{args.kernel_repeats}, numba threads {numba.get_num_threads()} "
        "(both include the NumPy preselection; first call = compile or cache load):"
    )
    print(
        "| model | N | D | H | H' | γ | K | NumPy s | numba s | speed-up | first call s "
        "| max rel diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    results = []
    for spec in args.kernel_configs.split(","):
        model, size, H, Hprime, gamma = spec.split(":")
        results.append(
            kernel_comparison(
                model,
                args.kernel_n,
                int(size),
                int(H),
                f"{Hprime}:{gamma}",
                args.kernel_batch,
                args.kernel_repeats,
            )
        )
    return results


def one_run(args: tuple) -> dict:
    model, n, n_iter, seed, temperature = args
    data, W_true = problem(model, n, seed)
    t0 = time.perf_counter()
    est = estimator(model, n_iter, seed, temperature).fit(data.Y)
    seconds = time.perf_counter() - t0
    _, err = match_columns(est.W_, W_true, signed=SETTINGS[model]["signed"])
    return {
        "seed": seed,
        "success": bool(err.max() < SETTINGS[model]["tol"] * data.amplitude),
        "max_error": float(err.max()),
        "pi": est.pi_,
        "sigma": est.sigma_,
        "free_energy": float(est.free_energy_[-1]),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mca,mmca")
    parser.add_argument("--n", type=int, default=20000, help="N of the recovery runs")
    parser.add_argument("--seeds", type=int, default=10, help="0: timing only")
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
    parser.add_argument(
        "--kernel-n", type=int, default=10000, help="N of the NumPy/numba comparison (0: skip)"
    )
    parser.add_argument(
        "--kernel-configs",
        default="mca:5:10:8:4,mca:10:20:8:4,mmca:5:20:8:3,mmca:10:20:6:3",
        help="model:bars size:H:H':gamma of the comparison, comma separated",
    )
    parser.add_argument("--kernel-batch", type=int, default=1000)
    parser.add_argument("--kernel-repeats", type=int, default=3)
    parser.add_argument("--kernel-only", action="store_true", help="only the comparison")
    args = parser.parse_args()
    schedules = args.temperature or ["default"]

    info = print_header("MCA / MMCA on max-bars")
    gemm = gemm_gflops()
    print(f"float64 GEMM rate: {gemm:.1f} GFLOP/s")
    record = {"machine": info, "gemm_gflops": gemm, "argv": sys.argv, "models": {}}
    if args.kernel_n > 0:
        record["kernel"] = kernel_comparisons(args)
    for model in [] if args.kernel_only else args.models.split(","):
        s = SETTINGS[model]
        print(f"\n## {model.upper()}: H={s['H']}, H'={s['Hprime']}, gamma={s['gamma']}, D=25")
        t = timing(model, args.timing_n, args.timing_iter)
        print(
            f"timing N={t['N']}: {t['seconds_per_iteration']:.2f} s/iteration "
            f"({t['cpu_seconds_per_iteration']:.2f} s CPU) "
            f"(E-step {t['seconds_estep']:.2f} s, M-step {t['seconds_mstep'] * 1e3:.2f} ms), "
            f"{t['states_per_point']} states/point, {t['flops_per_point']:.0f} flops and "
            f"{t['transcendentals_per_point']:.0f} exp/pow per point: "
            f"{t['estep_gflops']:.2f} GFLOP/s + {t['estep_mtranscendentals_per_s']:.0f} "
            f"M exp/pow per s (GEMM {gemm:.1f} GFLOP/s)"
        )
        runs = {}
        for spec in schedules if args.seeds > 0 else []:
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
                f"{rate:.0%} of {args.seeds} seeds (max errors: {errors})"
            )
        record["models"][model] = {
            "settings": {k: v for k, v in s.items() if k != "cls"},
            "timing": t,
            "recovery": {"N": args.n, "n_iter": args.n_iter, "schedules": runs},
        }
    path = write_record("mca_kernel" if args.kernel_only else "mca", record)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
