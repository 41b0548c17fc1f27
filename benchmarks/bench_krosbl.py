"""KroSBL (AM, SVD) against classic SBL, OMP and the oracle: accuracy, iterations and fit time.

    python benchmarks/bench_krosbl.py [--sizes 16 32 64 128] [--snrs 0 10 20 30]
        [--trials 10 10 4 2] [--sparsity 4] [--dense-max 1024] [--dense-speed-max 4096]
        [--dense-speed-snrs 20] [--block-trials 10] [--block-sizes 32] [--block-snrs 0 10]
        [--block-only] [--speed-repeats 3] [--speed-only]
        [--record krosbl] [--quick]

"KroSBL-AM plain" is KroSBL-AM without Anderson acceleration (``anderson_memory=0``);
"KroSBL-AM before" is KroSBL-AM with the defaults before session 6 (no removal of dead
factor entries, no evidence stop, no choice against the empty model: ``remove_dead=False,
evidence_tol=None, model_choice=False``); "SBL plain" is classic SBL as before 2026-12
(``entry_cost=0, model_choice=False``, plain EM-SBL);
"KroSBL-AM etol" stops also by the evidence (``evidence_tol``, rows with ``--evidence-tol``).

Problems (issue #13): two Gaussian unit-norm-column factors Φ_i of n_i/2 × n_i, i.e.
n = n_i² unknowns and m = n/4 measurements, a sparsity × sparsity Kronecker support
(16 non-zeros by default), one snapshot, i.i.d. N(0, 1) values. For every n and SNR,
``--trials`` random problems (one count per size, or one for all; fewer at the large n
keep the run short on a small machine). Every method runs with its defaults, i.e. to
tol = 1e-6 on the relative change of γ or 500 iterations.

Recorded per method, n and SNR: NMSE = ||x̂ - x||²/||x||² as 10 log10 of the mean over the
trials and of the median, the worst trial, the exact-support rate ({j : γ_j > 0} = S; OMP is
told |S| and its support is its k atoms), the median and largest iteration count, and the
median seconds per fit (whole fit to tolerance). "oracle" is least squares on the true
support. Dense SBL and OMP run for n <= ``--dense-max``; at n = ``--dense-speed-max`` dense
SBL fits one problem at each of ``--dense-speed-snrs`` (for the speed ratio only: one
dense fit there takes minutes).

A block-sparse experiment (two n_i/2 × n_i factors for each n_i of ``--block-sizes``,
default 32, i.e. n = 1024; blocks of 2 on both factors, 2 × 2 active blocks) compares block
KroSBL with plain KroSBL and with block KroSBL as before its dead-block test ("block
before": ``remove_dead=False, evidence_tol=None, model_choice=False``) at ``--block-snrs``
(default 0 and 10 dB) over ``--block-trials`` problems; ``--block-only`` runs only this experiment.

Writes benchmarks/results/<record>.json and the plots benchmarks/<record>_{snr,runtime}.png
(``--record``, default "krosbl"); ``--speed-only`` writes benchmarks/results/krosbl_speed.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_header, write_record

from prosper import SBL, KroneckerSBL
from prosper.data.kronecker import kronecker_problem

log = logging.getLogger("bench_krosbl")
METHODS = (
    "oracle",
    "KroSBL-AM",
    "KroSBL-AM plain",
    "KroSBL-AM before",
    "KroSBL-AM etol",
    "KroSBL-SVD",
    "SBL",
    "SBL plain",
    "OMP",
)

HERE = Path(__file__).resolve().parent


def omp(Phi: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Orthogonal matching pursuit: k greedy atoms, least squares on the chosen set."""
    residual = y.copy()
    chosen: list[int] = []
    coef = np.zeros(0)
    for _ in range(k):
        scores = np.abs(Phi.T @ residual)
        scores[chosen] = -1.0
        chosen.append(int(np.argmax(scores)))
        coef, *_ = np.linalg.lstsq(Phi[:, chosen], y, rcond=None)
        residual = y - Phi[:, chosen] @ coef
    x = np.zeros(Phi.shape[1])
    x[chosen] = coef
    return x


def oracle(p) -> np.ndarray:
    """Least squares on the true support (Φ restricted to S is formed from the factors)."""
    cols = np.flatnonzero(p.support)
    dims = [A.shape[1] for A in p.factors]
    sub = np.unravel_index(cols, dims)
    A = np.ones((1, cols.size))
    for F, idx in zip(p.factors, sub, strict=True):
        # column j of ⊗ Φ_i is ⊗ (column idx_i[j] of Φ_i): build it factor by factor
        A = (A[:, None, :] * F[:, idx][None, :, :]).reshape(-1, cols.size)
    x = np.zeros(p.support.size)
    x[cols] = np.linalg.lstsq(A, p.Y[0], rcond=None)[0]
    return x


def run_method(
    name: str, p, block: int | None = None, evidence_tol: float = 1.0, extra: dict | None = None
) -> dict:
    """x̂ (n,), support (n,), iterations and seconds of one method on one problem
    (``extra``: more KroneckerSBL arguments)."""
    extra_ = extra
    start = time.perf_counter()
    iterations, sigma = 0, float("nan")
    if name == "oracle":
        x = oracle(p)
        support = p.support
    elif name == "OMP":
        x = omp(p.dictionary, p.Y[0], int(p.support.sum()))
        support = x != 0
    else:
        if name.startswith("SBL"):
            cost = {"entry_cost": 0.0, "model_choice": False} if name.endswith("plain") else {}
            est = SBL(dictionary=p.dictionary, **cost)
        else:
            # "KroSBL-AM plain": the fixed-point updates without Anderson acceleration
            method = name.split("-")[1].split()[0].lower()
            extra = {"anderson_memory": 0} if name.endswith("plain") else {}
            if name.endswith("before"):
                extra = {"remove_dead": False, "evidence_tol": None, "model_choice": False}
            if name.endswith("etol"):
                extra = {"evidence_tol": evidence_tol}
            est = KroneckerSBL(
                factors=p.factors, method=method, block_size=block, **{**extra, **(extra_ or {})}
            )
        est.fit(p.Y)
        x, support, iterations = est.coef_[0], est.gamma_ > 0, est.n_iter_
        sigma = est.sigma_ / p.sigma
    seconds = time.perf_counter() - start
    x_true = p.X[0]
    return {
        "nmse": float(np.sum((x - x_true) ** 2) / np.sum(x_true**2)),
        "exact": bool(np.array_equal(support, p.support)),
        "iterations": int(iterations),
        "seconds": seconds,
        "sigma_ratio": sigma,
    }


def summarise(runs: list[dict]) -> dict:
    nmse = np.array([r["nmse"] for r in runs])
    its = np.array([r["iterations"] for r in runs])
    return {
        "trials": len(runs),
        "nmse_mean_db": float(10 * np.log10(nmse.mean())),
        "nmse_median_db": float(10 * np.log10(np.median(nmse))),
        "nmse_worst_db": float(10 * np.log10(nmse.max())),
        "exact_support": float(np.mean([r["exact"] for r in runs])),
        "iterations_median": float(np.median(its)),
        "iterations_max": int(its.max()),
        "seconds_median": float(np.median([r["seconds"] for r in runs])),
        # learned σ over the true one (NaN for oracle and OMP)
        "sigma_ratio_median": float(np.median([r["sigma_ratio"] for r in runs])),
    }


def accuracy(n_i, snr, trials, sparsity, methods, seed0, evidence_tol=1.0):
    """One SNR and size: every method on the same ``trials`` problems."""
    runs = {m: [] for m in methods}
    for trial in range(trials):
        p = kronecker_problem(
            [(n_i // 2, n_i)] * 2, sparsity=sparsity, snr_db=snr, random_state=seed0 + trial
        )
        for name in methods:
            runs[name].append(run_method(name, p, evidence_tol=evidence_tol))
    return {m: summarise(r) for m, r in runs.items()}


BEFORE = {"remove_dead": False, "evidence_tol": None, "model_choice": False}
#: block-sparse experiment: method name -> (method, block_size, extra arguments);
#: "before": block KroSBL as before session 6's block test (no removal, no evidence stop,
#: no choice against the empty model)
BLOCK_METHODS = {
    "KroSBL-AM": ("AM", None, {}),
    "KroSBL-AM block": ("AM", 2, {}),
    "KroSBL-AM block before": ("AM", 2, BEFORE),
    "KroSBL-SVD": ("SVD", None, {}),
    "KroSBL-SVD block": ("SVD", 2, {}),
    "KroSBL-SVD block before": ("SVD", 2, BEFORE),
}


def block_experiment(trials, snrs, sizes=(32,), evidence_tol=None):
    """Block KroSBL (blocks of 2) against plain KroSBL on block-sparse problems (two
    n_i/2 × n_i factors for each n_i of ``sizes``, 2 × 2 active blocks of 2), ``trials``
    problems per size (one count per size, or one for all) and SNR. With ``evidence_tol``
    also "KroSBL-AM block etol" (block AM with that evidence_tol)."""
    trials = list(trials) if len(trials) == len(sizes) else list(trials[:1]) * len(sizes)
    methods = dict(BLOCK_METHODS)
    if evidence_tol is not None:
        methods["KroSBL-AM block etol"] = ("AM", 2, {"evidence_tol": evidence_tol})
    out: dict[str, dict] = {}
    for n_i, count in zip(sizes, trials, strict=True):
        out[str(n_i)] = {}
        for snr in snrs:
            runs: dict[str, list] = {m: [] for m in methods}
            for trial in range(count):
                p = kronecker_problem(
                    [(n_i // 2, n_i)] * 2,
                    sparsity=2,
                    snr_db=snr,
                    block=True,
                    block_size=2,
                    random_state=5000 + trial,
                )
                for name, (method, block, extra) in methods.items():
                    runs[name].append(run_method(f"KroSBL-{method}", p, block, extra=extra))
            out[str(n_i)][str(snr)] = {m: summarise(r) for m, r in runs.items()}
            for m, r in out[str(n_i)][str(snr)].items():
                log.info(
                    "block n=%5d SNR %4.0f %-24s NMSE mean %6.1f median %6.1f exact %.2f "
                    "it median %4.0f max %3d | %.3f s/fit",
                    n_i * n_i,
                    snr,
                    m,
                    r["nmse_mean_db"],
                    r["nmse_median_db"],
                    r["exact_support"],
                    r["iterations_median"],
                    r["iterations_max"],
                    r["seconds_median"],
                )
    return out


def speed(n_i: int, snr: float, repeats: int) -> dict:
    """Whole-fit seconds of dense SBL and KroSBL on one problem, interleaved, ``repeats``
    times (median), after one warm-up fit of each."""
    p = kronecker_problem([(n_i // 2, n_i)] * 2, sparsity=4, snr_db=snr, random_state=1000)
    names = ("SBL", "KroSBL-AM", "KroSBL-SVD")
    times: dict[str, list[float]] = {m: [] for m in names}
    iterations = {}
    for rep in range(repeats + 1):
        for name in names:
            run = run_method(name, p)
            iterations[name] = run["iterations"]
            if rep:  # the first round warms up
                times[name].append(run["seconds"])
    out = {
        m: {"seconds_median": float(np.median(t)), "iterations": iterations[m]}
        for m, t in times.items()
    }
    for m in names[1:]:
        out[m]["dense_over_this"] = out["SBL"]["seconds_median"] / out[m]["seconds_median"]
    return out


TABLE_HEAD = [
    "| SNR dB | method | trials | NMSE mean / median / worst dB | exact | "
    "iterations median / max | s per fit |",
    "|---:|---|---:|---:|---:|---:|---:|",
]


def _table_row(snr: str, method: str, r: dict, with_iterations: bool = True) -> str:
    """One line of a results table (TABLE_HEAD's columns)."""
    its = f"{r['iterations_median']:.0f} / {r['iterations_max']}" if with_iterations else "–"
    return (
        f"| {float(snr):g} | {method} | {r['trials']} | {r['nmse_mean_db']:.1f} / "
        f"{r['nmse_median_db']:.1f} / {r['nmse_worst_db']:.1f} | "
        f"{r['exact_support']:.2f} | {its} | {r['seconds_median']:.3f} |"
    )


def markdown(record: dict) -> str:
    """Tables of a record: per n, one row per SNR and method."""
    lines = []
    table = record["table"]
    for n_i, rows in table.items():
        n = int(n_i) ** 2
        lines += [
            f"n = {n} (two {int(n_i) // 2}×{n_i} factors, m = {n // 4}):",
            "",
            *TABLE_HEAD,
        ]
        for snr, row in rows.items():
            for m, r in row.items():
                lines.append(_table_row(snr, m, r, with_iterations=m not in ("oracle", "OMP")))
        lines.append("")
    block = record["block"]
    if block and "KroSBL-AM" in next(iter(block.values())):  # records before session 6
        block = {"32": block}
    for n_i, rows in block.items():
        lines += [
            f"Block-sparse problems (n = {int(n_i) ** 2}, blocks of 2, 2×2 active blocks):",
            "",
            *TABLE_HEAD,
        ]
        for snr, row in rows.items():
            for m, r in row.items():
                lines.append(_table_row(snr, m, r))
        lines.append("")
    for key, row in record.get("speed", {}).items():
        lines += [
            "",
            f"Whole fits on one problem ({key}), interleaved, median of the repeats:",
            "",
            "| method | iterations | s per fit | dense SBL / this |",
            "|---|---:|---:|---:|",
        ]
        for m, r in row.items():
            ratio = f"{r['dense_over_this']:.0f}×" if "dense_over_this" in r else "–"
            lines.append(f"| {m} | {r['iterations']} | {r['seconds_median']:.3f} | {ratio} |")
    return "\n".join(lines) + "\n"


def plot(table, sizes, snrs, prefix="krosbl"):
    """NMSE versus SNR per n; iterations and seconds per fit versus n (``snrs``: the keys
    of the table, strings), written to ``<prefix>_snr.png`` and ``<prefix>_runtime.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = dict(zip(METHODS, "xo+<*sdv^", strict=True))
    fig, axes = plt.subplots(1, len(sizes), figsize=(4 * len(sizes), 3.6), squeeze=False)
    for ax, n_i in zip(axes[0], sizes, strict=True):
        for m in METHODS:
            pts = [(float(s), table[str(n_i)][s].get(m)) for s in snrs]
            pts = [(s, r) for s, r in pts if r is not None]
            if not pts:
                continue
            xs = [s for s, _ in pts]
            (line,) = ax.plot(
                xs, [r["nmse_mean_db"] for _, r in pts], marker=markers[m], label=f"{m} mean"
            )
            ax.plot(xs, [r["nmse_median_db"] for _, r in pts], ls=":", color=line.get_color())
        ax.set(title=f"n = {n_i * n_i}", xlabel="SNR [dB]", ylabel="NMSE [dB] (dotted: median)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(HERE / f"{prefix}_snr.png", dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for m in ("KroSBL-AM", "KroSBL-AM plain", "KroSBL-AM before", "KroSBL-SVD", "SBL", "SBL plain"):
        for ax, key in zip(axes, ("iterations_median", "seconds_median"), strict=True):
            pts = [
                (n_i * n_i, float(np.median([table[str(n_i)][s][m][key] for s in snrs])))
                for n_i in sizes
                if all(m in table[str(n_i)][s] for s in snrs)
            ]
            if pts:
                ax.loglog(*zip(*pts, strict=True), marker=markers[m], label=m)
    axes[0].set(xlabel="n (m = n/4)", ylabel="iterations per fit (median over SNRs)")
    axes[1].set(xlabel="n (m = n/4)", ylabel="seconds per fit (median over SNRs)")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.tight_layout()
    fig.savefig(HERE / f"{prefix}_runtime.png", dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--snrs", type=float, nargs="+", default=[0, 10, 20, 30])
    parser.add_argument("--trials", type=int, nargs="+", default=[10, 10, 4, 2])
    parser.add_argument("--sparsity", type=int, default=4, help="active entries per factor")
    parser.add_argument("--dense-max", type=int, default=1024)
    parser.add_argument("--dense-speed-max", type=int, default=4096)
    parser.add_argument("--dense-speed-snrs", type=float, nargs="+", default=[20.0])
    parser.add_argument(
        "--block-trials",
        type=int,
        nargs="+",
        default=[10],
        help="block-sparse problems per size (one count per --block-sizes, or one for all)",
    )
    parser.add_argument(
        "--block-sizes", type=int, nargs="+", default=[32], help="n_i of the block problems"
    )
    parser.add_argument("--block-snrs", type=float, nargs="+", default=[0.0, 10.0])
    parser.add_argument(
        "--block-only", action="store_true", help="only the block-sparse experiment"
    )
    parser.add_argument(
        "--speed-repeats",
        type=int,
        default=3,
        help="interleaved whole-fit timings of dense SBL and KroSBL at --dense-speed-max "
        "(each --dense-speed-snrs), repeated this often (0: none)",
    )
    parser.add_argument("--speed-only", action="store_true", help="only the interleaved timings")
    parser.add_argument(
        "--evidence-tol",
        type=float,
        default=None,
        help="add rows 'KroSBL-AM etol': KroSBL-AM with this evidence_tol",
    )
    parser.add_argument("--quick", action="store_true", help="2 trials, n <= 1024 (smoke)")
    parser.add_argument(
        "--record",
        default="krosbl",
        help="name of the JSON record in benchmarks/results/ and prefix of the plots",
    )
    parser.add_argument(
        "--from-json", type=Path, help="only redo the plots and tables of a saved record"
    )
    args = parser.parse_args()
    if args.from_json is not None:
        record = json.loads(args.from_json.read_text())
        if record["table"]:
            snrs = list(next(iter(record["table"].values())))
            plot(record["table"], [int(n) for n in record["table"]], snrs, args.record)
        print(markdown(record))
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("prosper").setLevel(logging.WARNING)
    if args.quick:
        args.sizes, args.trials, args.block_trials = [16, 32], [2], [2]
    if args.block_only:
        args.sizes, args.speed_repeats = [], 0
    trials = (
        args.trials if len(args.trials) == len(args.sizes) else args.trials[:1] * len(args.sizes)
    )
    info = print_header("KroSBL benchmark")
    t0 = time.perf_counter()
    table: dict[str, dict] = {}
    timings: dict[str, dict] = {}
    if args.speed_repeats:
        n_i = round(args.dense_speed_max**0.5)
        for snr in args.dense_speed_snrs:
            key = f"n = {n_i * n_i}, {snr:g} dB"
            timings[key] = speed(n_i, snr, args.speed_repeats)
            for m, r in timings[key].items():
                log.info(
                    "speed %s %-10s %.3f s/fit (%d it)",
                    key,
                    m,
                    r["seconds_median"],
                    r["iterations"],
                )
    if args.speed_only:
        record = {
            "benchmark": "krosbl_speed",
            "command": " ".join(sys.argv),
            "machine": info,
            "speed": timings,
            "table": {},
            "block": {},
        }
        path = write_record("krosbl_speed", record)
        print(markdown(record))
        log.info("wrote %s", path)
        return
    for n_i, count in zip(args.sizes, trials, strict=True):
        n = n_i * n_i
        table[str(n_i)] = {}
        for snr in args.snrs:
            methods = ["oracle", "KroSBL-AM", "KroSBL-AM plain", "KroSBL-AM before", "KroSBL-SVD"]
            if args.evidence_tol is not None:
                methods.insert(3, "KroSBL-AM etol")
            if n <= args.dense_max:
                methods += ["SBL", "SBL plain", "OMP"]
            row = accuracy(
                n_i, snr, count, args.sparsity, methods, 1000, evidence_tol=args.evidence_tol
            )
            if args.dense_max < n <= args.dense_speed_max and snr in args.dense_speed_snrs:
                row["SBL"] = accuracy(n_i, snr, 1, args.sparsity, ["SBL"], 1000)["SBL"]
            table[str(n_i)][str(snr)] = row
            for m, r in row.items():
                log.info(
                    "n=%5d SNR %4.0f %-10s NMSE mean %6.1f median %6.1f worst %6.1f | exact "
                    "%.2f | it median %4.0f max %3d | σ/σ_true %.2f | %.3f s/fit (%d trials)",
                    n,
                    snr,
                    m,
                    r["nmse_mean_db"],
                    r["nmse_median_db"],
                    r["nmse_worst_db"],
                    r["exact_support"],
                    r["iterations_median"],
                    r["iterations_max"],
                    r["sigma_ratio_median"],
                    r["seconds_median"],
                    r["trials"],
                )
    blocks = block_experiment(
        args.block_trials, args.block_snrs, args.block_sizes, args.evidence_tol
    )
    elapsed = time.perf_counter() - t0
    if table:
        plot(table, args.sizes, [str(s) for s in args.snrs], args.record)
    record = {
        "benchmark": "krosbl",
        "command": " ".join(sys.argv),
        "machine": info,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "table": table,
        "block": blocks,
        "speed": timings,
        "seconds_total": elapsed,
    }
    path = write_record(args.record + ("_quick" if args.quick else ""), record)
    print(markdown(record))
    log.info("wrote %s (%.0f s)", path, elapsed)


if __name__ == "__main__":
    main()
