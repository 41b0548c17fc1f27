"""Peak resident memory of ``prosper fit`` streaming an HDF5 file, against N.

    python benchmarks/bench_streaming.py --n 200000 1000000 [--model bsc] [--n-iter 3]
        [--workdir /tmp/prosper_stream] [--keep]

Writes N x 256 float32 rows (BSC data: 64 atoms, about two active per row) into one HDF5
file per N, a TOML job per model, and runs ``/usr/bin/time -v prosper fit`` on it with one
thread (OMP/OpenBLAS/numba). Reports the maximum resident set size and the seconds per
iteration (median of E-step + reduction + M-step from the result file), and writes
benchmarks/results/streaming_<model>.json. The data files are deleted at the end unless
``--keep``: they are large (1 GiB per million rows) and must never be committed.

The memory target (issue #12): below 400 MiB at batch_size 2000 on 1,000,000 rows, within
50 MiB of the same job on 200,000 rows; seconds per iteration grow linearly in N.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_header, write_record

D, H_TRUE = 256, 64
JOBS = {
    "bsc": {"name": "bsc", "H": 64, "dtype": "float32"},
    # max_iter bounds the coding sweeps per row: the run measures memory, not code quality
    "sparse_coding": {"name": "sparse_coding", "H": 256, "dtype": "float32", "max_iter": 20},
}


def make_data(path: Path, n: int, seed: int = 0, chunk: int = 50_000) -> None:
    """BSC data written chunk by chunk (never N rows in memory)."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((D, H_TRUE)).astype(np.float32)
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("Y", shape=(n, D), dtype=np.float32)
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            S = (rng.random((m, H_TRUE)) < 2.0 / H_TRUE).astype(np.float32)
            ds[start : start + m] = S @ W.T + 0.5 * rng.standard_normal((m, D), dtype=np.float32)


def write_job(path: Path, data: Path, model: dict, n_iter: int, batch_size: int) -> None:
    lines = ["[model]"]
    for key, value in {**model, "n_iter": n_iter, "batch_size": batch_size}.items():
        lines.append(f"{key} = {value!r}".replace("'", '"'))
    lines += ["random_state = 0", "", "[data]", f'file = "{data.name}"', 'dataset = "Y"']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def run_fit(job: Path, out: Path, env: dict[str, str]) -> dict[str, float]:
    prosper = shutil.which("prosper") or str(Path(sys.executable).parent / "prosper")
    cmd = ["/usr/bin/time", "-v", prosper, "fit", str(job), "--out", str(out), "--overwrite"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)[1])
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr)[1]
    seconds = sum(float(p) * 60**i for i, p in enumerate(reversed(wall.split(":"))))
    cpu = sum(
        float(re.search(rf"{kind} time \(seconds\): ([\d.]+)", proc.stderr)[1])
        for kind in ("User", "System")
    )
    with h5py.File(out, "r") as f:
        per_iter = sum(
            np.asarray(f[f"metrics/{k}"])
            for k in ("seconds_estep", "seconds_reduce", "seconds_mstep")
        )
    return {
        "max_rss_mib": rss_kb / 1024,
        "wall_s": seconds,
        "cpu_s": cpu,
        "s_per_iter_median": float(np.median(per_iter)),
        "s_per_iter": [float(x) for x in per_iter],
    }


def cpu_per_iteration(data: Path, model: dict, n_iter: int, batch_size: int) -> list[float]:
    """CPU seconds (this process, one thread) of each iteration of the same fit, run here on
    the HDF5 dataset: unlike wall time, barely changed by other jobs sharing the cores."""
    import time

    from prosper.estimators import get_estimator_class

    params = {k: v for k, v in model.items() if k != "name"}
    marks = []

    def tick(iteration, learner, metrics):
        marks.append(time.process_time())

    estimator = get_estimator_class(model["name"])(
        **params, n_iter=n_iter, batch_size=batch_size, random_state=0, callback=tick
    )
    estimator.fit(h5py.File(data, "r")["Y"])
    return list(np.diff(marks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--model", choices=sorted(JOBS), default="bsc")
    parser.add_argument("--n-iter", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/prosper_stream"))
    parser.add_argument("--keep", action="store_true", help="keep the data files")
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="also time each iteration's CPU seconds in this process (one fit more per N)",
    )
    args = parser.parse_args()
    machine = print_header("bench_streaming: peak memory of prosper fit on HDF5 data")
    args.workdir.mkdir(parents=True, exist_ok=True)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(var, "1")  # numba reads it on import (in cpu_per_iteration)
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    rows = []
    try:
        for n in args.n:
            data = args.workdir / f"stream_{n}.h5"
            if not data.exists():
                make_data(data, n)
            job = args.workdir / f"{args.model}_{n}.toml"
            write_job(job, data, JOBS[args.model], args.n_iter, args.batch_size)
            result = run_fit(job, args.workdir / f"{args.model}_{n}_run.h5", env)
            result["n"] = n
            if args.cpu:
                # n_iter + 1: the first tick comes after iteration 0
                cpu = cpu_per_iteration(data, JOBS[args.model], args.n_iter + 1, args.batch_size)
                result["cpu_s_per_iter"] = cpu
                print(f"N={n:>9d}  CPU s per iteration 1..{len(cpu)}: {np.round(cpu, 2)}")
            rows.append(result)
            print(
                f"N={n:>9d}  max RSS {result['max_rss_mib']:7.1f} MiB  "
                f"{result['s_per_iter_median']:8.2f} s/iteration  wall {result['wall_s']:.1f} s  "
                f"CPU {result['cpu_s']:.1f} s",
                flush=True,
            )
    finally:
        if not args.keep:
            for path in args.workdir.glob("stream_*.h5"):
                path.unlink()
    write_record(
        f"streaming_{args.model}",
        {
            "args": {k: str(v) for k, v in vars(args).items() if k != "workdir"},
            "machine": machine,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
