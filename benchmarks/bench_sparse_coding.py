"""ℓq sparse coding on natural image patches: SPAMS, scikit-learn and ProSper side by side.

The problem of issue #12: 20000 whitened 8x8 patches, 64 atoms, λ = 1, one thread, the
per-point objective ½||y − W s||² + λ||s||₁. Every learned dictionary is scored the same way:
exact ℓ1 codes of all points (ProSper's coordinate descent to tol 1e-6), their mean
objective, sparsity (fraction of non-zeros) and relative error ||Y − S Wᵀ||/||Y||.

1. scikit-learn MiniBatchDictionaryLearning, one pass (batch 256): its objective F_sk is the
   target; SPAMS trainDL (mode 2, lambda1 = λ, batch 256) after 1/8 .. 2 passes; ProSper
   SparseCoding (online, batch 256) pass by pass, from random atoms and from the data's
   principal directions (``init="svd"``, scikit-learn's start). Time per pass and time to
   reach F_sk.
   Runs are interleaved and repeated; the median time is reported.
2. ℓ0, CEL0 and ℓ1/2 against ℓ1 at matched sparsity: a λ sweep per penalty (3 passes), the
   relative error of each penalty interpolated at the sparsities of the ℓ1 sweep.
3. The same ProSper job (ℓ1, λ = 1, ``init="svd"``, 3 passes) on 1 and 2 MPI ranks (one
   thread each), per global mini-batch size (``--mpi-batch-sizes``), runs interleaved.
4. (``--parts split``) the same 2-rank job emulated in one process from thread CPU times,
   for a machine whose cores other jobs are using (see :func:`part_split`).

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/bench_sparse_coding.py

Writes benchmarks/results/<name>.json (default sparse_coding_online.json). Needs
scikit-learn and Pillow (the patches); SPAMS (``pip install spams-bin``, or the ``bench``
extra) is compared when it imports.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_header, write_record

from prosper import SparseCoding
from prosper.data.patches import natural_patches
from prosper.models.sparse_coding import SparseCodingModel, energy
from prosper.solvers.sparse_coding import Coder

log = logging.getLogger("bench_sparse_coding")
HERE = Path(__file__).resolve().parent
SWEEPS = {
    "l1": [0.5, 1.0, 2.0],
    "l0": [0.5, 1.0, 2.0],
    "cel0": [0.5, 1.0, 2.0],
    "l1/2": [0.3, 0.6, 1.2],
}


def score(Y: np.ndarray, W: np.ndarray, penalty: str = "l1", lam: float = 1.0) -> dict:
    """Exact codes of all rows under W; mean objective, sparsity, relative error."""
    from prosper.backends import get_backend

    model = SparseCodingModel(W.shape[1], W.shape[0], penalty, lam)
    coder = Coder(model, max_iter=2000, tol=1e-6, backend=get_backend("auto"))
    coder.set_dictionary(W)
    S = np.concatenate([coder.code(Y[i : i + 2000])[0] for i in range(0, Y.shape[0], 2000)])
    R = Y - S @ W.T
    return {
        "objective": float(energy(Y, S, W, penalty, lam).mean()),
        "sparsity": float(np.count_nonzero(S) / S.size),
        "rel_error": float(np.linalg.norm(R) / np.linalg.norm(Y)),
    }


def run_sklearn(Y, H, lam, batch_size):
    from sklearn.decomposition import MiniBatchDictionaryLearning

    est = MiniBatchDictionaryLearning(
        n_components=H, alpha=lam, max_iter=1, batch_size=batch_size, random_state=0
    )
    t0 = time.perf_counter()
    est.fit(Y)
    return time.perf_counter() - t0, est.components_.T.copy()


def run_spams(Y, H, lam, batch_size, fraction):
    import spams

    n_steps = max(1, round(fraction * Y.shape[0] / batch_size))
    X = np.asfortranarray(Y.T)
    t0 = time.perf_counter()
    W = spams.trainDL(
        X,
        K=H,
        lambda1=lam,
        mode=2,
        iter=n_steps,
        batchsize=batch_size,
        numThreads=1,
        verbose=False,
    )
    return time.perf_counter() - t0, np.array(W)


def run_prosper(Y, H, lam, batch_size, n_passes, penalty="l1", init="random"):
    """Seconds after each pass (from the start of fit) and the dictionary then."""
    marks: list[tuple[float, np.ndarray]] = []
    t0 = time.perf_counter()

    def callback(it, learner, metrics):
        marks.append((time.perf_counter() - t0, learner.params["W"].copy()))

    model = SparseCoding(
        H=H,
        penalty=penalty,
        lam=lam,
        n_iter=n_passes,
        batch_size=batch_size,
        init=init,
        random_state=0,
        callback=callback,
    )
    model.fit(Y)
    return marks, model


def time_to(target: float, points: list[tuple[float, float]]) -> float | None:
    """First time at which the objective is at most target (None: never)."""
    for seconds, objective in sorted(points):
        if objective <= target:
            return seconds
    return None


def part_speed(Y, args) -> dict:
    have_spams = True
    try:
        import spams  # noqa: F401
    except ImportError:
        have_spams = False
        log.warning("SPAMS does not import: comparing with scikit-learn only")
    fractions = [0.125, 0.25, 0.5, 1.0, 2.0]
    inits = ("random", "svd")
    sk_times, spams_times = [], {f: [] for f in fractions}
    ours_times: dict[str, list] = {i: [] for i in inits}
    W_sk, W_spams, marks = None, {}, {}
    for rep in range(args.repeats):
        seconds, W_sk = run_sklearn(Y, args.H, args.lam, 256)
        sk_times.append(seconds)
        if have_spams:
            for f in fractions:
                seconds, W_spams[f] = run_spams(Y, args.H, args.lam, 256, f)
                spams_times[f].append(seconds)
        for init in inits:
            marks[init], _ = run_prosper(Y, args.H, args.lam, 256, args.passes, init=init)
            ours_times[init].append([m[0] for m in marks[init]])
        log.info("repeat %d done", rep)
    sk = {"seconds_per_pass": float(np.median(sk_times)), **score(Y, W_sk, "l1", args.lam)}
    target = sk["objective"]
    spams_rows = []
    if have_spams:
        for f in fractions:
            spams_rows.append(
                {
                    "passes": f,
                    "seconds": float(np.median(spams_times[f])),
                    **score(Y, W_spams[f], "l1", args.lam),
                }
            )
    ours_rows = {}
    for init in inits:
        median_marks = np.median(np.array(ours_times[init]), axis=0)
        ours_rows[init] = [
            {"passes": p + 1, "seconds": float(seconds), **score(Y, W, "l1", args.lam)}
            for p, (seconds, (_, W)) in enumerate(zip(median_marks, marks[init], strict=True))
        ]
    reached = {"spams": time_to(target, [(r["seconds"], r["objective"]) for r in spams_rows])}
    for init in inits:
        points = [(r["seconds"], r["objective"]) for r in ours_rows[init]]
        reached[f"prosper_{init}"] = time_to(target, points)
    return {
        "sklearn_one_pass": sk,
        "spams": spams_rows,
        "prosper": ours_rows["random"],
        "prosper_svd": ours_rows["svd"],
        "seconds_to_sklearn_objective": reached,
    }


def part_penalties(Y, args) -> dict:
    rows = []
    for penalty, lams in SWEEPS.items():
        for lam in lams:
            _, model = run_prosper(Y, args.H, lam, 256, 3, penalty)
            h = model.history_
            rows.append(
                {
                    "penalty": penalty,
                    "lam": lam,
                    "seconds_per_pass": float(np.median(h["seconds_estep"] + h["seconds_mstep"])),
                    **score(Y, model.W_, penalty, lam),
                }
            )
            log.info("%s", rows[-1])
    l1 = sorted((r["sparsity"], r["rel_error"]) for r in rows if r["penalty"] == "l1")
    matched = []
    for penalty in ("l0", "cel0", "l1/2"):
        pts = sorted((r["sparsity"], r["rel_error"]) for r in rows if r["penalty"] == penalty)
        xs, ys = np.log([p[0] for p in pts]), [p[1] for p in pts]
        for sparsity, err in l1:
            if xs[0] <= np.log(sparsity) <= xs[-1]:
                matched.append(
                    {
                        "penalty": penalty,
                        "sparsity": sparsity,
                        "l1_error": err,
                        "error": float(np.interp(np.log(sparsity), xs, ys)),
                    }
                )
    return {"sweeps": rows, "matched_sparsity": matched}


MPI_WORKER = """
import json, os, sys, time, numpy as np
from prosper import SparseCoding
from prosper.data.patches import natural_patches
from prosper.parallel import get_comm, row_block
comm = get_comm()
n_samples, H, batch_size = (int(a) for a in sys.argv[1:4])
Y = natural_patches(size=8, n_samples=n_samples, random_state=0).Y
Y = Y[row_block(Y.shape[0], comm)]
kw = dict(H=H, lam=1.0, batch_size=batch_size, init="svd", random_state=0)
SparseCoding(n_iter=1, **kw).fit(Y)
cpu = time.process_time()
m = SparseCoding(n_iter=3, **kw).fit(Y)
cpu = comm.allgather(time.process_time() - cpu)
if comm.rank == 0:
    print(json.dumps({"seconds_per_pass": float(np.median(m.history_["seconds_estep"])),
                      "cpu_seconds_fit": cpu, "load": os.getloadavg()[0],
                      "W": m.W_.tolist()}))
"""


def part_mpi(args, Y) -> dict:
    """Seconds per pass of one job (ℓ1, λ = 1, ``init="svd"``, 3 passes) on 1 and 2 ranks,
    runs interleaved, per global mini-batch size; the objective of both dictionaries."""
    mpiexec = Path(sys.executable).parent / "mpiexec"
    if not mpiexec.exists():
        return {"skipped": "no mpiexec next to the interpreter"}
    script = HERE / "results" / f"_{args.name}_mpi_worker.py"
    script.write_text(MPI_WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    env["PYTHONPATH"] = str(HERE.parent) + os.pathsep + env.get("PYTHONPATH", "")
    rows = []
    try:
        for batch_size in args.mpi_batch_sizes:
            runs: dict[int, list] = {1: [], 2: []}
            for _ in range(args.repeats):
                for n in (1, 2):
                    cmd = [str(mpiexec), "-n", str(n), sys.executable, str(script)]
                    cmd += [str(args.n_samples), str(args.H), str(batch_size)]
                    out = subprocess.run(
                        cmd, capture_output=True, text=True, env=env, check=True, timeout=900
                    )
                    runs[n].append(json.loads(out.stdout.strip().splitlines()[-1]))
            t1 = float(np.median([r["seconds_per_pass"] for r in runs[1]]))
            t2 = float(np.median([r["seconds_per_pass"] for r in runs[2]]))
            W1, W2 = (np.array(runs[n][-1]["W"]) for n in (1, 2))
            rows.append(
                {
                    "batch_size": batch_size,
                    "seconds_per_pass_1_rank": t1,
                    "seconds_per_pass_2_ranks": t2,
                    "speedup": t1 / t2,
                    "runs_1_rank": [r["seconds_per_pass"] for r in runs[1]],
                    "runs_2_ranks": [r["seconds_per_pass"] for r in runs[2]],
                    "load_at_runs": [r["load"] for n in (1, 2) for r in runs[n]],
                    "max_abs_W_difference": float(np.abs(W1 - W2).max()),
                    "objective_after_3_passes": score(Y, W1, "l1", 1.0)["objective"],
                }
            )
            log.info(
                "batch_size %d: %.3f s per pass on 1 rank, %.3f s on 2 ranks: %.2fx "
                "(load average %.1f-%.1f)",
                batch_size,
                t1,
                t2,
                t1 / t2,
                min(rows[-1]["load_at_runs"]),
                max(rows[-1]["load_at_runs"]),
            )
    finally:
        script.unlink(missing_ok=True)
    return {"rows": rows}


def part_split(args, Y) -> dict:
    """The 2-rank pass emulated in one process, for machines whose cores are not free.

    Per global mini-batch of the second pass (``init="svd"``), thread CPU time of coding all
    its rows (one rank) and of coding each half that ``row_block`` gives two ranks, and of
    the update every rank repeats. Estimated 2-rank pass: per mini-batch the slower half,
    the update and an Allreduce of the statistics (timed alone with mpiexec -n 2, else the
    ``--allreduce-us`` given). CPU time leaves out the waits for a core that a loaded
    machine adds to wall-clock time; it is an estimate of the quiet-machine ratio, not a
    measurement of it. Each coding call is timed ``--split-min-of`` times and the least
    time kept: one timing of a 0.6 ms call on a loaded machine varies by about 16 %, and
    the larger of two such timings would count that noise as imbalance between the ranks.
    Also recorded per mini-batch: the larger half's rows and coordinate-descent sweeps
    over the halves' mean (the work imbalance between two ranks, free of timing noise).
    """
    import time

    from prosper.io.sources import as_source
    from prosper.parallel import get_comm
    from prosper.solvers.sparse_coding import _METRIC_SUMS

    source, comm, n = as_source(Y), get_comm(None), Y.shape[0]
    rows = []
    for batch_size in args.mpi_batch_sizes:
        ratios, parts, imbalance = [], [], []
        for _ in range(args.repeats):
            est = SparseCoding(H=args.H, lam=args.lam, batch_size=batch_size, random_state=0)
            learner = est._make_learner(Y.shape[1], 0)
            learner.initialize(source, comm, np.random.default_rng(0), init="svd")
            fused = learner.coder.fused is not None
            one = two = 0.0
            for iteration in range(2):
                local = dict.fromkeys(_METRIC_SUMS, 0.0)
                if fused:  # what estep runs with the numba backend
                    run = learner._fused_start(source)
                    scratch = learner._fused_start(source)
                for idx, spare_row, n_rows in learner._pass_batches(n, 0, iteration):
                    halves = []
                    if fused:
                        t_all = np.inf
                        for _ in range(args.split_min_of):
                            t = time.thread_time()
                            run.inc[:] = 0.0
                            learner._code_fused(source, idx, spare_row, run)
                            t_all = min(t_all, time.thread_time() - t)
                        scratch.Wt, scratch.G = run.Wt, run.G
                        rows_sweeps = []
                        for part in (idx[idx < n - n // 2], idx[idx >= n - n // 2]):
                            t_half = np.inf
                            for _ in range(args.split_min_of):
                                sweeps = scratch.sums[4]
                                t = time.thread_time()
                                scratch.inc[:] = 0.0
                                learner._code_fused(source, part, spare_row, scratch)
                                t_half = min(t_half, time.thread_time() - t)
                            halves.append(t_half)
                            rows_sweeps.append((part.size, scratch.sums[4] - sweeps))
                        if iteration == 1:
                            imbalance.append(
                                np.max(rows_sweeps, axis=0) / np.mean(rows_sweeps, axis=0)
                            )
                        t = time.thread_time()
                        learner._update_fused(run.inc, n_rows, n, run)
                        t_update = time.thread_time() - t
                    else:  # the NumPy reference
                        learner.coder.set_dictionary(learner.params["W"], Y.dtype)
                        t = time.thread_time()
                        inc = learner._code_local(source, idx, spare_row, local)
                        t_all = time.thread_time() - t
                        for part in (idx[idx < n - n // 2], idx[idx >= n - n // 2]):
                            t = time.thread_time()
                            learner._code_local(source, part, spare_row, dict(local))
                            halves.append(time.thread_time() - t)
                        t = time.thread_time()
                        learner._update(inc, n_rows, n)
                        t_update = time.thread_time() - t
                    if iteration == 1:
                        one += t_all + t_update
                        two += max(halves) + t_update + args.allreduce_us * 1e-6
                        parts.append((t_all, max(halves), min(halves), t_update))
            ratios.append((one, two))
        one, two = (float(np.median([r[i] for r in ratios])) for i in (0, 1))
        rows.append(
            {
                "batch_size": batch_size,
                "cpu_seconds_per_pass_1_rank": one,
                "cpu_seconds_per_pass_2_ranks_estimated": two,
                "estimated_speedup": one / two,
                # medians over the mini-batches of all repeats, in µs
                "per_mini_batch_us": dict(
                    zip(
                        ("code_all", "code_slower_half", "code_faster_half", "update"),
                        (1e6 * np.median(parts, axis=0)).round(1).tolist(),
                        strict=True,
                    )
                ),
                "runs": ratios,
                # means over the mini-batches: the larger half's rows and sweeps / the mean
                "larger_half_over_mean": dict(
                    zip(
                        ("rows", "sweeps"),
                        np.mean(imbalance, axis=0).round(4).tolist() if imbalance else [],
                        strict=False,
                    )
                ),
                "split_min_of": args.split_min_of,
            }
        )
        log.info(
            "batch_size %d, estimated from CPU times: %.3f s per pass on 1 rank, %.3f s on 2 "
            "ranks: %.2fx; per mini-batch (µs) %s; larger half / mean %s",
            batch_size,
            one,
            two,
            one / two,
            rows[-1]["per_mini_batch_us"],
            rows[-1]["larger_half_over_mean"],
        )
    return {"allreduce_us": args.allreduce_us, "rows": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=20000)
    parser.add_argument("--H", type=int, default=64)
    parser.add_argument("--lam", type=float, default=1.0)
    parser.add_argument("--passes", type=int, default=4, help="ProSper passes in part 1")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--parts", nargs="+", default=["speed", "penalties", "mpi"])
    parser.add_argument(
        "--mpi-batch-sizes",
        type=int,
        nargs="+",
        default=[256],
        help="global mini-batch sizes of the 1-rank/2-rank comparison (part mpi)",
    )
    parser.add_argument(
        "--allreduce-us",
        type=float,
        default=46.0,
        help="seconds (in µs) of one Allreduce of the statistics, for part split",
    )
    parser.add_argument(
        "--split-min-of",
        type=int,
        default=3,
        help="timings of each coding call in part split, the least kept (1: one timing)",
    )
    parser.add_argument("--name", default="sparse_coding_online", help="results/<name>.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    info = print_header("l_q sparse coding on natural patches: SPAMS, scikit-learn, ProSper")
    Y = natural_patches(size=8, n_samples=args.n_samples, random_state=0).Y
    # compile the numba kernel before anything is timed
    SparseCoding(H=args.H, lam=args.lam, n_iter=1, random_state=0).fit(Y[:512])
    record = {"machine": info, "args": vars(args), "load_before": os.getloadavg()}
    if "speed" in args.parts:
        record["speed"] = part_speed(Y, args)
        log.info("%s", json.dumps(record["speed"], indent=1))
    if "penalties" in args.parts:
        record["penalties"] = part_penalties(Y, args)
        log.info("%s", json.dumps(record["penalties"]["matched_sparsity"], indent=1))
    if "mpi" in args.parts:
        record["mpi"] = part_mpi(args, Y)
        log.info("%s", record["mpi"])
    if "split" in args.parts:
        record["split"] = part_split(args, Y)
    record["load_after"] = os.getloadavg()
    path = write_record(args.name, record)
    log.info("wrote %s", path)


if __name__ == "__main__":
    main()
