"""GSC (spike-and-slab sparse coding): seconds per EM iteration and parameter recovery.

    python benchmarks/bench_gsc.py [--n 5000] [--D 25] [--H 10] [--configs 6:3,8:4]
                                   [--seeds 20] [--recovery-n 2000] [--recovery-iter 60]

Part 1 times E-step and M-step per iteration on data sampled from the model (Gaussian
dictionary, D x H) for each Hprime:gamma candidate set, and counts the flops of the model's
arithmetic per data point: 2 D H for Wᵀy plus, for every candidate pattern with k active
spikes, about k³ (Cholesky, L⁻¹, Ã⁻¹) + 12 k² (gathers, solves, moments). The achieved rate
is printed beside the machine's measured float64 GEMM rate.

Part 2 fits GSC on 5x5 bars with Gaussian intensities N(5, 1) (examples/gsc_bars.toml) from
``--seeds`` different initialisations, once per temperature schedule of ``--temperatures``
(default: GSC's default annealing, then none), and reports how often all 10 bars are found
(aligned cosine > 0.95) and the errors of π, μ, Ψ, σ over the successful runs.

Part 3 (``--kernel-n`` > 0) times one E-step pass (all batches, statistics accumulated, no
annealing, preselection included) of the model's NumPy path against the numba kernel
(prosper.backends.numba_gsc, through the numba backend) in the same process, and reports
the speed-up and the first call's compile (or cache load) time; ``--kernel-only`` runs just
this part, e.g.

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/bench_gsc.py --kernel-only

Writes benchmarks/results/gsc.json (``--kernel-only``: gsc_kernel.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from math import comb
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import compare_estep_backends, gemm_gflops, print_header, write_record

from prosper import GSC
from prosper.data.spike_slab import align_gsc, gsc_data
from prosper.solvers.states import count_states


def flops_per_point(D: int, H: int, Hprime: int, gamma: int) -> float:
    """Model arithmetic per data point (see the module docstring)."""
    groups = [(1, H)] + [(k, comb(Hprime, k)) for k in range(2, gamma + 1)]
    return 2.0 * D * H + sum(K * (k**3 + 12 * k**2) for k, K in groups)


def time_config(args, Hprime: int, gamma: int) -> dict:
    H = args.H
    data = gsc_data(args.n, D=args.D, H=H, pi=2.0 / H, mu=2.0, psi=0.5, sigma=0.3, random_state=0)
    est = GSC(
        H=H,
        Hprime=Hprime,
        gamma=gamma,
        n_iter=args.iters,
        ncut_factor=0,
        batch_size=args.batch_size,
        random_state=0,
    )
    t0 = time.perf_counter()
    est.fit(data.Y)
    wall = time.perf_counter() - t0
    estep = float(np.median(est.history_["seconds_estep"][1:]))
    mstep = float(np.median(est.history_["seconds_mstep"][1:]))
    flops = flops_per_point(args.D, H, Hprime, gamma) * args.n
    return {
        "N": args.n,
        "D": args.D,
        "H": H,
        "Hprime": Hprime,
        "gamma": gamma,
        "K": count_states(H, Hprime, gamma, 2),
        "batch_size": args.batch_size,
        "seconds_estep": estep,
        "seconds_mstep": mstep,
        "seconds_fit": wall,
        "n_iter": args.iters,
        "flops_estep": flops,
        "gflops_estep": flops / estep / 1e9,
        "us_per_point": estep / args.n * 1e6,
    }


def recovery(args, temperature) -> dict:
    data = gsc_data(
        args.recovery_n,
        D=25,
        H=10,
        pi=0.2,
        mu=5.0,
        psi=1.0,
        sigma=0.5,
        dictionary="bars",
        random_state=0,
    )
    runs = []
    for seed in range(args.seeds):
        t0 = time.perf_counter()
        est = GSC(
            H=10,
            Hprime=6,
            gamma=3,
            n_iter=args.recovery_iter,
            temperature=temperature,
            noise=args.noise,
            random_state=seed,
        )
        est.fit(data.Y)
        fit = align_gsc({"W": est.W_, "pi": est.pi_, "mu": est.mu_, "psi": est.psi_}, data.W)
        runs.append(
            {
                "seed": seed,
                "seconds": time.perf_counter() - t0,
                "bars_found": int(np.sum(fit["cosine"] > 0.95)),
                "W_err": float(np.abs(fit["W"] - data.W).max()),
                "pi_err": float(np.abs(fit["pi"] - 0.2).max()),
                "mu_err": float(np.abs(fit["mu"] - 5.0).max()),
                "psi_err": float(np.abs(fit["psi"] - 1.0).max()),
                "sigma": float(est.sigma_),
                "free_energy": float(est.free_energy_[-1]),
            }
        )
        r = runs[-1]
        print(
            f"  seed {seed:2d}: {r['bars_found']}/10 bars, |W err| {r['W_err']:.3f}, "
            f"π err {r['pi_err']:.3f}, μ err {r['mu_err']:.2f}, Ψ err {r['psi_err']:.2f}, "
            f"σ {r['sigma']:.3f}, F {r['free_energy']:.3f}, {r['seconds']:.1f} s"
        )
    ok = [r for r in runs if r["bars_found"] == 10]
    summary = {
        "N": args.recovery_n,
        "n_iter": args.recovery_iter,
        "Hprime": 6,
        "gamma": 3,
        "seeds": args.seeds,
        "success_rate": len(ok) / len(runs),
        "median_W_err": float(np.median([r["W_err"] for r in ok])) if ok else None,
        "median_pi_err": float(np.median([r["pi_err"] for r in ok])) if ok else None,
        "median_mu_err": float(np.median([r["mu_err"] for r in ok])) if ok else None,
        "median_psi_err": float(np.median([r["psi_err"] for r in ok])) if ok else None,
        "median_sigma": float(np.median([r["sigma"] for r in ok])) if ok else None,
        "runs": runs,
    }
    return summary


def kernel_comparison(args) -> dict | None:
    """Seconds of one E-step pass, NumPy model path vs numba kernel, same data and batches."""
    try:
        from prosper.backends import numba_backend
    except ImportError:
        print("\nnumba is not installed: no kernel comparison")
        return None
    from prosper.models.gsc import GSCModel
    from prosper.solvers.states import ExpectationTruncation

    D, H, N, B = args.kernel_D, args.kernel_H, args.kernel_n, args.batch_size
    Hprime, gamma = (int(v) for v in args.kernel_config.split(":"))
    # parameters near the generating ones, as in the middle of a fit
    data = gsc_data(N, D=D, H=H, pi=2.0 / H, mu=2.0, psi=0.5, sigma=0.3, random_state=0)
    rng = np.random.default_rng(1)
    params = {
        "W": data.W + 0.1 * rng.standard_normal(data.W.shape),
        "pi": np.full(H, 2.0 / H),
        "mu": np.full(H, 2.0),
        "psi": np.full(H, 0.5),
        "sigma": np.asarray(0.35),
    }
    model = GSCModel(H, D)
    states = ExpectationTruncation(H, Hprime, gamma, model.values)
    batches = [data.Y[start : start + B] for start in range(0, N, B)]
    result = {
        "N": N,
        "D": D,
        "H": H,
        "Hprime": Hprime,
        "gamma": gamma,
        "K": count_states(H, Hprime, gamma, 2),
        "batch_size": B,
        **compare_estep_backends(
            model, states, params, batches, numba_backend, args.kernel_repeats
        ),
    }
    t_numpy, t_numba = result["seconds_numpy"], result["seconds_numba"]
    first_call, err = result["seconds_first_call"], result["max_rel_diff"]
    print(
        f"\none E-step pass (statistics, no annealing), best of {args.kernel_repeats}, "
        f"numba threads {result['numba_threads']}:"
    )
    print("| N | D | H | H' | γ | K | NumPy s | numba s | speed-up | first call s | max rel diff |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {N} | {D} | {H} | {Hprime} | {gamma} | {result['K']} | {t_numpy:.3f} | "
        f"{t_numba:.3f} | {result['speedup']:.1f}x | {first_call:.2f} | {err:.1e} |"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--D", type=int, default=25)
    parser.add_argument("--H", type=int, default=10)
    parser.add_argument("--configs", default="6:3,8:4", help="Hprime:gamma pairs")
    parser.add_argument("--iters", type=int, default=4, help="iterations per timing fit")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--recovery-n", type=int, default=2000)
    parser.add_argument("--recovery-iter", type=int, default=60)
    parser.add_argument(
        "--temperatures",
        default="null;1.0",
        help='schedules to compare, JSON separated by ";" (null = GSC default, 1.0 = none)',
    )
    parser.add_argument(
        "--noise", type=json.loads, default=None, help='e.g. "[[0, 0.05], [0.5, 0]]"'
    )
    parser.add_argument("--name", default=None, help="record name (results/<name>.json)")
    parser.add_argument("--kernel-n", type=int, default=20000, help="0 skips part 3")
    parser.add_argument("--kernel-D", type=int, default=100)
    parser.add_argument("--kernel-H", type=int, default=20)
    parser.add_argument("--kernel-config", default="8:4", help="Hprime:gamma of part 3")
    parser.add_argument("--kernel-repeats", type=int, default=3)
    parser.add_argument("--kernel-only", action="store_true", help="run part 3 only")
    args = parser.parse_args()

    info = print_header("GSC: seconds per iteration and recovery")
    gemm = gemm_gflops()
    print(f"float64 GEMM rate: {gemm:.1f} GFLOP/s")
    if args.kernel_only:
        path = write_record(
            args.name or "gsc_kernel",
            {
                "benchmark": "gsc_kernel",
                "command": " ".join(sys.argv),
                "machine": info,
                "gemm_gflops": gemm,
                "kernel": kernel_comparison(args),
            },
        )
        print(f"wrote {path}")
        return
    timings = []
    print("\n| N | D | H | H' | γ | K | E-step s/iter | M-step s/iter | µs/point | GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for pair in args.configs.split(","):
        Hprime, gamma = (int(v) for v in pair.split(":"))
        t = time_config(args, Hprime, gamma)
        timings.append(t)
        print(
            f"| {t['N']} | {t['D']} | {t['H']} | {Hprime} | {gamma} | {t['K']} | "
            f"{t['seconds_estep']:.3f} | {t['seconds_mstep']:.4f} | {t['us_per_point']:.1f} | "
            f"{t['gflops_estep']:.2f} |"
        )
    rec = {}
    for spec in args.temperatures.split(";") if args.seeds > 0 else []:
        temperature = json.loads(spec)
        label = "default" if temperature is None else json.dumps(temperature)
        print(f"\nrecovery on 5x5 bars with N(5, 1) intensities, temperature {label}:")
        summary = recovery(args, temperature)
        rec[label] = summary
        print(
            f"all 10 bars found in {summary['success_rate']:.0%} of {args.seeds} runs; median "
            f"over those: |W err| {summary['median_W_err']}, π err {summary['median_pi_err']}, "
            f"μ err {summary['median_mu_err']}, Ψ err {summary['median_psi_err']}, "
            f"σ {summary['median_sigma']} (true 0.5)"
        )
    kernel = kernel_comparison(args) if args.kernel_n > 0 else None
    path = write_record(
        args.name or "gsc",
        {
            "benchmark": "gsc",
            "command": " ".join(sys.argv),
            "machine": info,
            "gemm_gflops": gemm,
            "timings": timings,
            "recovery": rec,
            "kernel": kernel,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
