"""E-step backends: NumPy reference vs numba (1 and 2 threads) vs CuPy, and 1 vs 2 MPI ranks.

One E-step is a full pass over N points in batches, as a fit does it: preselection, candidate
states, log-joints, log marginals and accumulated statistics (BSC model, no annealing).
Every configuration runs in its own process so that the thread counts are set by the
environment: ``NUMBA_NUM_THREADS`` = threads with single-threaded BLAS for numba (its
per-batch GEMMs are small; BLAS threads spinning next to numba's slow it down), BLAS threads
= threads for numpy. ``NUMBA_THREADING_LAYER`` is passed through and recorded.

Flop model (the same for every backend, so GFLOP/s compare work per second): with K states
per point, Kc of them multi-latent, the reference algorithm does per E-step

    4 N D H                 Wᵀ y and Σ y <s>ᵀ (two N×D×H GEMMs)
  + 2 N Kc (H'² + H')       the quadratic and linear forms of the table states
  + 2 N Kc (H'² + H')       the moments <s sᵀ> and <s> of the table states
  + 10 N K                  singletons, log-sum-exp and weights (nominal)

Usage::

    python benchmarks/bench_backends.py                  # both cases, numpy + numba, MPI 1 vs 2
    python benchmarks/bench_backends.py --gpu            # also cupy, float64 and float32
    python benchmarks/bench_backends.py --gpu --gpu-batch-size 10000,50000 --no-compile-check
    python benchmarks/bench_backends.py --cases bars --n-bars 20000 --no-mpi
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# run as a script: its folder is on sys.path
from _common import gemm_gflops, machine_info, print_header, worker_env, write_record

ROOT = Path(__file__).resolve().parent.parent
CASES = {
    # 10x10 bars: D=100, H=20 bars of amplitude 10, pi=2/H, sigma=2
    "bars": {"D": 100, "H": 20, "Hprime": 8, "gamma": 4, "kind": "bars"},
    # 16x16 patches scale: D=256, H=100, a random Gaussian dictionary, pi=2/H, sigma=1
    "large": {"D": 256, "H": 100, "Hprime": 10, "gamma": 4, "kind": "random"},
}


def make_case(name: str, N: int, seed: int = 0):
    """Data (N, D) drawn from the BSC model with the case's dictionary, and its parameters."""
    from prosper.data.bars import bars_dictionary
    from prosper.models.bsc import BSCModel

    c = CASES[name]
    rng = np.random.default_rng(seed)
    if c["kind"] == "bars":
        W, sigma = bars_dictionary(int(np.sqrt(c["D"])), amplitude=10.0), 2.0
    else:
        W, sigma = rng.standard_normal((c["D"], c["H"])), 1.0
    params = {"W": W, "pi": np.asarray(2.0 / c["H"]), "sigma": np.asarray(sigma)}
    model = BSCModel(H=c["H"], D=c["D"])
    Y, _ = model.sample(N, params, rng)
    return model, params, Y


def flops(name: str, N: int) -> dict[str, float]:
    from prosper.solvers.states import ExpectationTruncation

    c = CASES[name]
    states = ExpectationTruncation(c["H"], c["Hprime"], c["gamma"], (0.0, 1.0))
    K, Kc, Hp = states.n_states, states.table.shape[0], c["Hprime"]
    gemm = 4.0 * N * c["D"] * c["H"]
    states_part = 4.0 * N * Kc * (Hp**2 + Hp) + 10.0 * N * K
    return {"total": gemm + states_part, "gemm": gemm, "states": states_part, "K": K, "Kc": Kc}


def estep_pass(model, params, states, Y, backend, batch_size, comm=None):
    """One E-step over the local rows; returns the summed statistics (reduced over ranks)."""
    total = None
    for start in range(0, Y.shape[0], batch_size):
        Yb = Y[start : start + batch_size]
        _, stats = model.estep_batch(Yb, states, params, 1.0, 1.0, None, True, backend)
        total = stats if total is None else {k: total[k] + stats[k] for k in total}
    if hasattr(backend, "to_host"):  # CuPy: sums on the device, one copy per pass
        total = backend.to_host(total)
    return total if comm is None else comm.allreduce_arrays(total)


# -- worker: one configuration in this process ------------------------------------------------
def worker(args) -> dict:
    from prosper.backends import get_backend
    from prosper.parallel import get_comm, row_block
    from prosper.solvers.states import ExpectationTruncation

    comm = get_comm(None)
    c = CASES[args.case]
    model, params, Y = make_case(args.case, args.n)
    Y = np.ascontiguousarray(Y[row_block(args.n, comm)], dtype=args.dtype)
    states = ExpectationTruncation(c["H"], c["Hprime"], c["gamma"], model.values)
    t0 = time.perf_counter()
    backend = get_backend(args.backend)
    info = {"import_s": time.perf_counter() - t0}
    if args.backend == "numba":
        info["warmup_s"] = backend.warmup()
    if args.backend == "cupy":
        info["device"] = backend.select_device(comm)
    # first pass: compilation of CuPy kernels, caches, page faults
    t0 = time.perf_counter()
    estep_pass(model, params, states, Y, backend, args.batch_size)
    info["first_pass_s"] = time.perf_counter() - t0
    times = []
    for _ in range(args.repeats):
        comm.barrier()
        t0 = time.perf_counter()
        estep_pass(model, params, states, Y, backend, args.batch_size, comm)
        times.append(comm.allreduce(time.perf_counter() - t0, op="max"))
    W = params["W"].astype(Y.dtype)
    if args.backend == "cupy":
        gemm_t = device_gemm_seconds(Y, W, max(args.repeats, 3))
        rate = device_gemm_gflops(Y.dtype)
    else:
        gemm_t = min(_timed(lambda: Y @ W) for _ in range(max(args.repeats, 3)))
        rate = gemm_gflops(n=1024, dtype=Y.dtype) if comm.size == 1 else None
    info.update(
        seconds=min(times),
        gemm_NDH_s=comm.allreduce(gemm_t, op="max"),
        gemm_gflops=rate,
        ranks=comm.size,
        threading_layer=_threading_layer(args.backend),
    )
    return info


def _device_best_seconds(fn, repeats: int) -> float:
    """Best device time of ``fn()`` over ``repeats`` calls, by CUDA events, after a warm-up."""
    import cupy as cp

    fn()  # cuBLAS handle, workspace
    best = np.inf
    for _ in range(repeats):
        start, stop = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        best = min(best, cp.cuda.get_elapsed_time(start, stop) / 1e3)
    return best


def device_gemm_seconds(Y: np.ndarray, W: np.ndarray, repeats: int) -> float:
    """Best time of the product ``Y W`` with both factors already on the GPU (cuBLAS)."""
    import cupy as cp

    dY, dW = cp.asarray(Y), cp.asarray(W)
    return _device_best_seconds(lambda: dY @ dW, repeats)


def device_gemm_gflops(dtype, n: int = 8192, repeats: int = 5) -> float:
    """The GPU's measured n×n×n GEMM rate at ``dtype`` (GFLOP/s, best of ``repeats``)."""
    import cupy as cp

    a = cp.random.default_rng(0).standard_normal((n, n)).astype(dtype)
    return 2.0 * n**3 / _device_best_seconds(lambda: a @ a, repeats) / 1e9


def _threading_layer(backend: str) -> str | None:
    if backend != "numba":
        return None
    import numba

    try:
        return numba.threading_layer()
    except ValueError:  # no parallel region has run
        return None


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_config(
    case, backend, n, threads, repeats, batch_size, ranks=None, cache_dir=None, dtype="float64"
):
    """Run :func:`worker` in a child process (under mpiexec with ``ranks``)."""
    env = worker_env(backend, threads)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = str(cache_dir)
    cmd = [sys.executable, __file__, "--worker", "--case", case, "--backend", backend]
    cmd += ["--n", str(n), "--repeats", str(repeats), "--batch-size", str(batch_size)]
    cmd += ["--dtype", dtype]
    if ranks is not None:
        mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or "mpiexec"
        cmd = [mpiexec, "-n", str(ranks), *cmd]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[0])


def cold_compile_seconds() -> dict[str, float]:
    """numba's first-call compile time (empty cache) and the cached load in a new process."""
    code = "from prosper.backends import numba_backend as nb; print(nb.warmup())"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with tempfile.TemporaryDirectory() as tmp:
        env["NUMBA_CACHE_DIR"] = tmp
        out = []
        for _ in range(2):
            proc = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
            )
            out.append(float(proc.stdout.strip().splitlines()[-1]))
    return {"compile_s": out[0], "cached_load_s": out[1]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="bars,large")
    parser.add_argument("--n-bars", type=int, default=50000)
    parser.add_argument("--n-large", type=int, default=10000)
    parser.add_argument("--threads", default="1,2", help="numba/BLAS thread counts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1000, help="CPU batch size")
    parser.add_argument(
        "--gpu-batch-size", default="10000", help="cupy batch sizes, comma-separated"
    )
    parser.add_argument(
        "--gpu", action="store_true", help="also benchmark the cupy backend (float64, float32)"
    )
    parser.add_argument(
        "--no-compile-check",
        action="store_true",
        help="skip timing numba's compilation into an empty cache (two extra processes)",
    )
    parser.add_argument("--no-mpi", action="store_true", help="skip the 1 vs 2 ranks runs")
    parser.add_argument("--name", default="backends", help="record name (results/<name>.json)")
    # worker mode (internal)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float64", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        info = worker(args)
        from prosper.parallel import get_comm

        if get_comm(None).rank == 0:
            print(json.dumps(info))
        return 0

    info = print_header("E-step backends", machine_info(gpu=args.gpu))
    threads = [int(t) for t in args.threads.split(",")]
    record = {"command": " ".join(sys.argv), "machine": info, "results": [], "mpi": []}
    if not args.no_compile_check:
        record["numba_compile"] = cold_compile_seconds()
        print(
            "numba first-call compile (empty cache): "
            f"{record['numba_compile']['compile_s']:.1f} s, "
            f"cached load in a new process: {record['numba_compile']['cached_load_s']:.2f} s"
        )
    sizes = {"bars": args.n_bars, "large": args.n_large}
    # (backend, threads, batch size, dtype)
    configs = [("numpy", 1, args.batch_size, "float64")]
    configs += [("numba", t, args.batch_size, "float64") for t in threads]
    if args.gpu:
        configs += [
            ("cupy", 1, int(bs), dtype)
            for dtype in ("float64", "float32")
            for bs in args.gpu_batch_size.split(",")
        ]
    rows = []
    for case in args.cases.split(","):
        N = sizes[case]
        fl = flops(case, N)
        c = CASES[case]
        print(
            f"\n## {case}: N={N} D={c['D']} H={c['H']} H'={c['Hprime']} gamma={c['gamma']} "
            f"K={fl['K']} (Kc={fl['Kc']}); nominal {fl['total'] / 1e9:.2f} GFLOP per E-step "
            f"({fl['gemm'] / 1e9:.3f} in the two NxDxH GEMMs)"
        )
        base = None
        for backend, t, bs, dtype in configs:
            res = run_config(case, backend, N, t, args.repeats, bs, dtype=dtype)
            res.update(case=case, backend=backend, threads=t, N=N, batch_size=bs, dtype=dtype)
            res.update(fl)
            res["gflops"] = fl["total"] / res["seconds"] / 1e9
            res["vs_gemm"] = res["seconds"] / res["gemm_NDH_s"]
            base = res["seconds"] if backend == "numpy" else base
            res["speedup_vs_numpy"] = base / res["seconds"] if base else None
            record["results"].append(res)
            rows.append(res)
            print(
                f"{backend:6s} {t:2d} thr {dtype} B={bs}: {res['seconds']:8.4f} s  "
                f"{res['gflops']:7.2f} GFLOP/s  "
                f"x{res['speedup_vs_numpy']:.2f} vs numpy  E-step/GEMM(NxDxH) "
                f"{res['vs_gemm']:6.1f}  (GEMM rate {res['gemm_gflops'] or 0:.1f} GFLOP/s)"
            )
        if not args.no_mpi:
            for backend in ("numpy", "numba"):
                for ranks in (1, 2):
                    res = run_config(case, backend, N, 1, args.repeats, args.batch_size, ranks)
                    res.update(case=case, backend=backend, threads=1, N=N)
                    record["mpi"].append(res)
                    print(f"mpi {backend:6s} {ranks} rank(s) x 1 thread: {res['seconds']:8.3f} s")
    print("\n" + markdown_table(rows, record["mpi"]))
    path = write_record(args.name, record)
    print(f"\nrecord: {path}")
    return 0


def markdown_table(rows, mpi) -> str:
    lines = [
        "| case | backend | threads | dtype | batch | E-step s | GFLOP/s | vs numpy |"
        " E-step / GEMM(N×D×H) | GEMM GFLOP/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['backend']} | {r['threads']} | {r.get('dtype', 'float64')} | "
            f"{r['batch_size']} | {r['seconds']:.4f} | "
            f"{r['gflops']:.2f} | {r['speedup_vs_numpy']:.2f}x | {r['vs_gemm']:.1f} | "
            f"{r['gemm_gflops'] or 0:.1f} |"
        )
    if mpi:
        lines += ["", "| case | backend | ranks (1 thread each) | E-step s |", "|---|---|---|---|"]
        lines += [
            f"| {r['case']} | {r['backend']} | {r['ranks']} | {r['seconds']:.3f} |" for r in mpi
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
