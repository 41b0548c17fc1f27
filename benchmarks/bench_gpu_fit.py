"""Time to a correct result on a GPU: BSC on 10x10 bars, CuPy (float64, float32) beside numba.

    python benchmarks/bench_gpu_fit.py [--n 50000] [--seeds 0,1] [--threads 2,16] \
        [--gpu-batch-size 0,10000]

The problem is the recovery grid's (benchmarks/bench_states.py): 10x10 bars (H = 20,
amplitude 10, π = 2/H, σ = 2), here with N = 50000 points, learned by ``BSC(H=20)`` with its
defaults. Each configuration fits in its own process (thread counts are fixed when numba
and BLAS start), the configurations interleaved seed by seed. A fit stops at the first
iteration after which every bar is matched by a learned column (cosine > 0.9, the grid's
criterion), or after ``n_iter`` (100). Reported per fit: seconds to that iteration
(compilation excluded: a one-iteration fit on 2000 points runs first), median seconds per
iteration, bars found, free energy at the end. numba runs with batches of 1000 (the
default) and single-threaded BLAS, CuPy with batches of each of ``--gpu-batch-size`` (0:
the library's default ``batch_size=None``, which sizes them from the free device memory;
the record gives the size it chose).

Same seed, same model: float64 CuPy and numba learn the same dictionary (tests/gpu), so
their times to recovery compare iteration for iteration; float32 may take another path.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np
from _common import machine_info, print_header, worker_env, write_record

SIZE, AMPLITUDE, SIGMA = 10, 10.0, 2.0


def worker(args) -> dict:
    """One fit in this process; returns its times and result."""
    from bench_states import match_bars

    from prosper import BSC
    from prosper.data import bars

    H = 2 * SIZE
    data = bars(
        size=SIZE,
        n_samples=args.n,
        pi=2.0 / H,
        amplitude=AMPLITUDE,
        sigma=SIGMA,
        random_state=args.seed,
    )
    common = {
        "H": H,
        "backend": args.backend,
        "batch_size": args.batch_size or None,
        "dtype": args.dtype,
        "progress": False,
    }
    t0 = time.perf_counter()
    BSC(n_iter=1, random_state=0, **common).fit(data.Y[:2000])
    warmup = time.perf_counter() - t0

    stamps: list[float] = []
    found: list[int] = []

    def callback(iteration, learner, metrics):
        stamps.append(time.perf_counter())
        found.append(match_bars(np.asarray(learner.params["W"]), data.W))
        return found[-1] == H

    model = BSC(n_iter=args.n_iter, random_state=args.seed, callback=callback, **common)
    t0 = time.perf_counter()
    model.fit(data.Y)
    total = time.perf_counter() - t0
    # the batch size batch_size=None chose, read after the fit as the fit saw the device
    from prosper.backends import get_backend

    chosen = BSC(**common)._make_learner(data.Y.shape[1], 0, get_backend(args.backend)).batch_size
    per_iter = np.diff([t0, *stamps])
    return {
        "warmup_s": warmup,
        "seconds": total,
        "iterations": len(stamps),
        "recovered": found[-1] == H,
        "bars_found": found[-1],
        "seconds_to_recovery": stamps[-1] - t0 if found[-1] == H else None,
        "median_iteration_s": float(np.median(per_iter)),
        "free_energy": float(model.free_energy_[-1]),
        "batch_chosen": chosen,
    }


def _batch(res: dict) -> str:
    """The batch size of a fit as set, or None and the size the library chose."""
    if res["batch_size"] is None:
        return f"None ({res['batch_chosen']})"
    return str(res["batch_size"])


def run_config(backend, threads, dtype, batch_size, seed, args) -> dict:
    env = worker_env(backend, threads)
    cmd = [sys.executable, __file__, "--worker", "--backend", backend, "--dtype", dtype]
    cmd += ["--batch-size", str(batch_size), "--seed", str(seed), "--n", str(args.n)]
    cmd += ["--n-iter", str(args.n_iter)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("{")))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=50000)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--threads", default="2,16", help="numba thread counts")
    parser.add_argument("--n-iter", type=int, default=100)
    parser.add_argument(
        "--gpu-batch-size", default="0,10000", help="CuPy's batch sizes (0: batch_size=None)"
    )
    parser.add_argument("--no-gpu", action="store_true", help="numba only (CPU check)")
    parser.add_argument("--name", default="gpu_fit", help="record name (results/<name>.json)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float64", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=1000, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    info = print_header("BSC time to recovery: GPU beside CPU", machine_info(gpu=not args.no_gpu))
    configs = [("numba", int(t), "float64", 1000) for t in args.threads.split(",")]
    if not args.no_gpu:
        sizes = [int(b) for b in args.gpu_batch_size.split(",")]
        configs += [("cupy", 1, d, b) for b in sizes for d in ("float64", "float32")]
    print(
        f"10x10 bars, H=20, N={args.n}, pi=2/H, sigma={SIGMA}; BSC defaults, n_iter={args.n_iter}"
    )
    record = {"command": " ".join(sys.argv), "machine": info, "results": []}
    for seed in (int(s) for s in args.seeds.split(",")):
        for backend, threads, dtype, bs in configs:
            res = run_config(backend, threads, dtype, bs, seed, args)
            res.update(backend=backend, threads=threads, dtype=dtype, batch_size=bs or None)
            res["seed"] = seed
            record["results"].append(res)
            to_target = res["seconds_to_recovery"]
            print(
                f"seed {seed} {backend:5s} {threads:2d} thr {dtype} B={_batch(res)}: "
                f"{res['iterations']:3d} it, {res['bars_found']}/20 bars, to recovery "
                + (f"{to_target:7.2f} s" if to_target is not None else "   never")
                + f", {res['median_iteration_s'] * 1e3:7.1f} ms/it, "
                f"F {res['free_energy']:.4f}, warm-up {res['warmup_s']:.1f} s"
            )
    print(
        "\n| backend | threads | dtype | batch | median s/iteration | median s to recovery |"
        " recovered |"
    )
    print("|---|---|---|---|---|---|---|")
    for backend, threads, dtype, bs in configs:
        rows = [
            r
            for r in record["results"]
            if (r["backend"], r["threads"], r["dtype"], r["batch_size"])
            == (backend, threads, dtype, bs or None)
        ]
        reached = [r["seconds_to_recovery"] for r in rows if r["recovered"]]
        to_target = f"{statistics.median(reached):.2f}" if reached else "—"
        print(
            f"| {backend} | {threads} | {dtype} | {_batch(rows[0])} | "
            f"{statistics.median(r['median_iteration_s'] for r in rows):.4f} | {to_target} | "
            f"{len(reached)}/{len(rows)} |"
        )
    path = write_record(args.name, record)
    print(f"\nrecord: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
