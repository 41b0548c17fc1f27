"""BSC E-step and M-step speed on 10x10 bars, against the GEMM rate and a per-point loop.

    python benchmarks/bench_bsc.py [--size 10] [--n 20000] [--Hprime 8] [--gamma 4]

Prints the machine, the flops counted, the achieved GFLOP/s of the E-step beside the
measured float64 GEMM rate, the time of the single N x D x H GEMM Y W, a per-data-point
reference (a Python loop over data points computing W s for every candidate state, as the
original ProSper did) on a subset, and 1 vs 2 MPI ranks (a second run under mpiexec).
Writes benchmarks/results/bsc.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy.special import logsumexp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_time, gemm_gflops, print_header, write_record

from prosper import BSC
from prosper.data import bars
from prosper.parallel import get_comm, row_block
from prosper.solvers.states import count_states


def make_learner(args, Y, comm):
    """A BSC learner at a fitted-like point (initialised from data, a few iterations run)."""
    est = BSC(
        H=2 * args.size,
        Hprime=args.Hprime,
        gamma=args.gamma,
        n_iter=3,
        batch_size=args.batch_size,
        ncut_factor=0,
        temperature=1.0,
        backend=args.backend,
        random_state=0,
    )
    learner = est._make_learner(
        Y.shape[1], 0, __import__("prosper.backends").backends.get_backend(args.backend)
    )
    learner.initialize(Y, comm, np.random.default_rng(0), init="data")
    return learner


def reference_estep(Y, learner):
    """Per-data-point loop over candidate states, vectorised only inside a point."""
    model, params = learner.model, learner.params
    W, pi, sigma = params["W"], float(params["pi"]), float(params["sigma"])
    D, H = W.shape
    sy, ss, F = np.zeros((D, H)), np.zeros((H, H)), 0.0
    for y in Y:
        batch = learner.states.select(model.preselection_scores(y[None], params), 1)
        S = batch.dense()[0]  # (K, H)
        resid = y[None, :] - S @ W.T
        active = S.sum(axis=1)
        logj = (
            -0.5 * D * np.log(2 * np.pi * sigma**2)
            - np.sum(resid**2, axis=1) / (2 * sigma**2)
            + active * np.log(pi)
            + (H - active) * np.log1p(-pi)
        )
        F += logsumexp(logj)
        q = np.exp(logj - logsumexp(logj))
        mean = q @ S
        sy += np.outer(y, mean)
        ss += (S * q[:, None]).T @ S
    return F, sy, ss


def estep_flops(N, D, H, Hp, Kc):
    """Flops of the NumPy E-step: Y W, the quadratic and linear forms over the table, the
    second-moment blocks and Y^T <s>."""
    return (
        2 * N * D * H
        + 2 * N * Hp * Hp * Kc
        + 2 * N * Hp * Kc
        + 2 * N * Kc * Hp * Hp
        + 2 * N * D * H
    )


def worker(args):
    """Under mpiexec: time full EM iterations on this rank's rows; rank 0 prints JSON."""
    comm = get_comm()
    data = bars(size=args.size, n_samples=args.n, pi=0.1, amplitude=10.0, sigma=2.0, random_state=0)
    Y = data.Y[row_block(args.n, comm)]
    learner = make_learner(args, Y, comm)
    learner.estep(Y, comm, 0)  # warm-up
    comm.barrier()
    t0 = time.perf_counter()
    for it in range(args.iterations):
        stats = comm.allreduce_arrays(learner.estep(Y, comm, it))
        learner.mstep(stats, it)
    seconds = (time.perf_counter() - t0) / args.iterations
    if comm.rank == 0:
        print(json.dumps({"ranks": comm.size, "seconds_per_iteration": seconds}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--Hprime", type=int, default=8)
    parser.add_argument("--gamma", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--reference-n", type=int, default=400)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    info = print_header("BSC E-step benchmark (bars)")
    comm = get_comm()
    H, D = 2 * args.size, args.size**2
    data = bars(size=args.size, n_samples=args.n, pi=0.1, amplitude=10.0, sigma=2.0, random_state=0)
    Y = data.Y
    learner = make_learner(args, Y, comm)
    K = count_states(H, args.Hprime, args.gamma, 2)
    Kc = learner.states.table.shape[0]
    print(
        f"problem: N={args.n} D={D} H={H} H'={args.Hprime} gamma={args.gamma} "
        f"K={K} states per point, backend {args.backend}, batch {args.batch_size}"
    )

    gemm_rate = gemm_gflops(1024)
    W = learner.params["W"]
    t_gemm = best_time(lambda: Y @ W, repeats=5)
    learner.estep(Y, comm, 0)  # warm-up (compiles numba kernels when asked for)
    t_estep = best_time(lambda: learner.estep(Y, comm, 0), repeats=args.iterations)
    stats = learner.estep(Y, comm, 0)
    t_mstep = best_time(lambda: learner.model.mstep(stats, learner.params, args.gamma), repeats=5)
    flops = estep_flops(args.n, D, H, args.Hprime, Kc)

    sub = Y[: args.reference_n]
    t_ref = best_time(lambda: reference_estep(sub, learner), repeats=1) / len(sub)
    F_ref, sy_ref, _ = reference_estep(sub, learner)
    check = learner.estep(sub, comm, 0)
    assert np.allclose(check["sy"], sy_ref) and np.isclose(check["free_energy"], F_ref)
    t_fast_per_point = t_estep / args.n

    print(f"machine float64 GEMM rate (1024^3):      {gemm_rate:8.1f} GFLOP/s")
    print(
        f"GEMM Y W alone (N x D x H):              {t_gemm * 1e3:8.2f} ms "
        f"({2 * args.n * D * H / t_gemm / 1e9:.1f} GFLOP/s)"
    )
    print(
        f"E-step ({flops / 1e9:.3f} GFLOP counted):      {t_estep * 1e3:8.2f} ms "
        f"({flops / t_estep / 1e9:.1f} GFLOP/s) = {t_estep / t_gemm:.1f}x the GEMM time"
    )
    print(f"M-step:                                  {t_mstep * 1e3:8.3f} ms")
    print(
        f"per-point reference ({args.reference_n} points):     "
        f"{t_ref * 1e6:8.1f} us/point vs {t_fast_per_point * 1e6:.2f} us/point: "
        f"speed-up {t_ref / t_fast_per_point:.0f}x (same statistics checked)"
    )

    ranks = {}
    mpiexec = shutil.which("mpiexec") or str(Path(sys.executable).parent / "mpiexec")
    if Path(mpiexec).exists():
        for n in (1, 2):
            cmd = [
                mpiexec,
                "-n",
                str(n),
                sys.executable,
                __file__,
                "--worker",
                f"--size={args.size}",
                f"--n={args.n}",
                f"--Hprime={args.Hprime}",
                f"--gamma={args.gamma}",
                f"--backend={args.backend}",
                f"--batch-size={args.batch_size}",
                f"--iterations={args.iterations}",
            ]
            env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
            line = [x for x in out.stdout.splitlines() if x.startswith("{")]
            if out.returncode == 0 and line:
                ranks[n] = json.loads(line[-1])["seconds_per_iteration"]
                print(f"{n} MPI rank(s), 1 thread each:           {ranks[n]:8.3f} s/iteration")
        if len(ranks) == 2:
            print(f"speed-up 1 -> 2 ranks:                   {ranks[1] / ranks[2]:8.2f}x")

    write_record(
        "bsc",
        {
            "machine": info,
            "N": args.n,
            "D": D,
            "H": H,
            "Hprime": args.Hprime,
            "gamma": args.gamma,
            "K": K,
            "backend": args.backend,
            "batch_size": args.batch_size,
            "gemm_rate_gflops": gemm_rate,
            "seconds_gemm_YW": t_gemm,
            "seconds_estep": t_estep,
            "seconds_mstep": t_mstep,
            "estep_flops": flops,
            "estep_gflops": flops / t_estep,
            "estep_over_gemm": t_estep / t_gemm,
            "reference_seconds_per_point": t_ref,
            "speedup_vs_reference": t_ref / t_fast_per_point,
            "seconds_per_iteration_by_ranks": ranks,
        },
    )


if __name__ == "__main__":
    main()
