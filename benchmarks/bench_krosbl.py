"""KroSBL (AM, SVD) against classic SBL and OMP: accuracy versus SNR and measurements, run time.

    python benchmarks/bench_krosbl.py [--trials 20] [--n-i 16] [--m-i 10] [--sparsity 3]
        [--snrs 0 10 20 30 40] [--m-list 6 8 10 12 14] [--snr-m 25]
        [--time-sizes 8 16 32 64 128] [--dense-max 4096] [--quick]

Three experiments, the shape of He & Joseph's (2023) figures:

1. NMSE and support recovery versus SNR on a 2-factor problem Φ = Φ_1 ⊗ Φ_2 with m_i × n_i
   Gaussian unit-norm-column factors and a sparsity × sparsity Kronecker-structured support,
   one snapshot, averaged over ``--trials`` random problems.
2. The same versus the number of measurements m_i per factor at ``--snr-m`` dB.
3. Seconds per EM iteration and per fit versus n = n_1 n_2 (m_i = n_i / 2): KroSBL's
   structured E-step against dense SBL, which is skipped beyond ``--dense-max`` unknowns.

Support recovery: the estimated support is {j : γ_j > 0} after pruning for the SBL variants
and the k = |S| atoms OMP picks (OMP is told the true sparsity); "exact" counts trials where
it equals the true support S, "overlap" is |S ∩ Ŝ| / |S ∪ Ŝ|.
Writes benchmarks/results/krosbl.json and the plots benchmarks/krosbl_{snr,measurements,
runtime}.png.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import gemm_gflops, print_header, write_record

from prosper import SBL, KroneckerSBL
from prosper.data.kronecker import kronecker_problem

METHODS = ("KroSBL-AM", "KroSBL-SVD", "SBL", "OMP")
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


def run_method(name: str, p) -> tuple[np.ndarray, np.ndarray, float]:
    """x̂ (n,), estimated support (n,) and seconds for one method on one problem."""
    start = time.perf_counter()
    if name == "OMP":
        x = omp(p.dictionary, p.Y[0], int(p.support.sum()))
        support = x != 0
    else:
        if name == "SBL":
            est = SBL(dictionary=p.dictionary)
        else:
            est = KroneckerSBL(factors=p.factors, method=name.split("-")[1].lower())
        est.fit(p.Y)
        x, support = est.coef_[0], est.gamma_ > 0
    return x, support, time.perf_counter() - start


def accuracy(shape_list, snr, trials, sparsity, seed0):
    """Mean NMSE (dB of the mean), exact-support rate, overlap and seconds per method."""
    out = {m: {"nmse": [], "exact": [], "overlap": [], "seconds": []} for m in METHODS}
    for trial in range(trials):
        p = kronecker_problem(shape_list, sparsity=sparsity, snr_db=snr, random_state=seed0 + trial)
        x_true = p.X[0]
        for name in METHODS:
            x, support, seconds = run_method(name, p)
            out[name]["nmse"].append(np.sum((x - x_true) ** 2) / np.sum(x_true**2))
            out[name]["exact"].append(bool(np.array_equal(support, p.support)))
            inter = np.sum(support & p.support)
            out[name]["overlap"].append(inter / np.sum(support | p.support))
            out[name]["seconds"].append(seconds)
    return {
        m: {
            "nmse_db": float(10 * np.log10(np.mean(v["nmse"]))),
            "exact_support": float(np.mean(v["exact"])),
            "overlap": float(np.mean(v["overlap"])),
            "seconds": float(np.mean(v["seconds"])),
        }
        for m, v in out.items()
    }


def kron_flops(shapes: list[tuple[int, int]]) -> int:
    """Flops of one kron_matvec with factors of the given (rows, cols) on one vector."""
    size = int(np.prod([c for _, c in shapes]))
    flops = 0
    for r, c in shapes:
        flops += 2 * size * r  # contracts mode of length c into r: (size / c) * c * r * 2
        size = size // c * r
    return flops


def iteration_flops(shapes, dense: bool) -> float:
    """Approximate flops of one EM iteration for one snapshot (E-step dominated)."""
    m = int(np.prod([s[0] for s in shapes]))
    n = int(np.prod([s[1] for s in shapes]))
    if dense:
        # m < n branch: K Kᵀ (2 m² n), eigh (~9 m³), Kᵀ V (2 n m²), Φ μ, Vᵀ y, ...
        return 2 * m * m * n + 9 * m**3 + 2 * n * m * m + 4 * m * n
    square = [(c, c) for _, c in shapes]
    eig = sum(9 * c**3 + 2 * r * c * c for r, c in shapes)  # Φ_iᵀΦ_i is cached; B_i, eigh
    diag = kron_flops(square)
    per_snapshot = (
        kron_flops([(c, r) for r, c in shapes])  # Φᵀ y
        + 2 * kron_flops(square)  # Uᵀ w, U z
        + kron_flops(shapes)  # Φ μ
    )
    return eig + diag + per_snapshot


def timing(sizes, dense_max, dense_fit_max, iters, rate):
    """Seconds per EM iteration (all γ active: the first iterations) and per fit (tol 1e-6)."""
    warm = kronecker_problem([(4, 8), (4, 8)], sparsity=1, random_state=0)
    KroneckerSBL(factors=warm.factors, n_iter=2).fit(warm.Y)  # imports, first allocations
    SBL(dictionary=warm.dictionary, n_iter=2).fit(warm.Y)
    rows = []
    for n_i in sizes:
        shapes = [(n_i // 2, n_i), (n_i // 2, n_i)]
        p = kronecker_problem(shapes, sparsity=3, snr_db=25, random_state=0)
        n = n_i * n_i
        row = {"n_i": n_i, "n": n, "m": (n_i // 2) ** 2}
        candidates = {
            "KroSBL-AM": lambda t, k, r, p=p: KroneckerSBL(
                factors=p.factors, method="am", n_iter=k, tol=t, prune=r
            ),
            "KroSBL-SVD": lambda t, k, r, p=p: KroneckerSBL(
                factors=p.factors, method="svd", n_iter=k, tol=t, prune=r
            ),
        }
        if n <= dense_max:
            candidates["SBL"] = lambda t, k, r, p=p: SBL(
                dictionary=p.dictionary, n_iter=k, tol=t, prune=r
            )
        for name, make in candidates.items():
            # prune=0: every iteration works on all n unknowns (the cost before pruning)
            est = make(None, iters, 0.0).fit(p.Y)
            h = est.history_
            per_iter = float(np.median(h["seconds_estep"] + h["seconds_mstep"]))
            flops = iteration_flops(shapes, dense=name == "SBL")
            fit_seconds = fit_iterations = exact = None
            if name != "SBL" or n <= dense_fit_max:
                start = time.perf_counter()
                fitted = make(1e-6, 500, 1e-3).fit(p.Y)
                fit_seconds = time.perf_counter() - start
                fit_iterations = fitted.n_iter_
                exact = bool(np.array_equal(fitted.gamma_ > 0, p.support))
            row[name] = {
                "seconds_per_iteration": per_iter,
                "seconds_estep": float(np.median(h["seconds_estep"])),
                "seconds_mstep": float(np.median(h["seconds_mstep"])),
                "flops_per_iteration": flops,
                "gflops": flops / per_iter / 1e9,
                "fit_seconds": fit_seconds,
                "fit_iterations": fit_iterations,
                "fit_exact_support": exact,
            }
        row.setdefault("SBL", None)
        rows.append(row)
        cells = []
        for name in ("KroSBL-AM", "KroSBL-SVD", "SBL"):
            r = row[name]
            if r is None:
                cells.append(f"{'skipped (dense Φ: n > --dense-max)':>44}")
                continue
            fit = (
                "-"
                if r["fit_seconds"] is None
                else f"{r['fit_seconds']:.2f}s/{r['fit_iterations']}it"
            )
            cells.append(
                f"{1e3 * r['seconds_per_iteration']:9.2f} ms/it {r['gflops']:6.2f} GF/s "
                f"fit {fit:>12}"
            )
        print(f"n={n:6d} m={row['m']:5d} | " + " | ".join(cells))
    print(
        f"(GEMM rate of this machine: {rate:.1f} GFLOP/s; ms/it with prune=0, i.e. all n "
        "unknowns; fit = default settings until tol, * = support not recovered exactly)"
    )
    return rows


def print_table(title, key_name, keys, table):
    print(f"\n## {title}")
    header = f"{key_name:>6} | " + " | ".join(f"{m:^26}" for m in METHODS)
    print(header)
    print(
        f"{'':>6} | " + " | ".join(f"{'NMSE dB':>8} {'exact':>6} {'overlap':>8}" for _ in METHODS)
    )
    for k in keys:
        r = table[str(k)]
        print(
            f"{k:>6} | "
            + " | ".join(
                f"{r[m]['nmse_db']:8.1f} {r[m]['exact_support']:6.2f} {r[m]['overlap']:8.2f}"
                for m in METHODS
            )
        )


def plot(snr_table, snrs, m_table, m_list, timing_rows, suffix=""):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = dict(zip(METHODS, "osd^", strict=True))
    for name, table, keys, xlabel in (
        ("snr", snr_table, snrs, "SNR [dB]"),
        ("measurements", m_table, m_list, "measurements per factor m_i"),
    ):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for m in METHODS:
            axes[0].plot(
                keys, [table[str(k)][m]["nmse_db"] for k in keys], marker=markers[m], label=m
            )
            axes[1].plot(
                keys, [table[str(k)][m]["exact_support"] for k in keys], marker=markers[m], label=m
            )
        axes[0].set(xlabel=xlabel, ylabel="NMSE [dB]")
        axes[1].set(xlabel=xlabel, ylabel="exact support recovery rate", ylim=(-0.05, 1.05))
        for ax in axes:
            ax.grid(alpha=0.3)
        axes[0].legend()
        fig.tight_layout()
        fig.savefig(HERE / f"krosbl_{name}{suffix}.png", dpi=110)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for m in ("KroSBL-AM", "KroSBL-SVD", "SBL"):
        pts = [(r["n"], r[m]["seconds_per_iteration"]) for r in timing_rows if r[m] is not None]
        ax.loglog(*zip(*pts, strict=True), marker=markers[m], label=m)
    ax.set(xlabel="n = n_1 n_2 (m = n/4)", ylabel="seconds per EM iteration")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(HERE / f"krosbl_runtime{suffix}.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--n-i", type=int, default=16, help="columns n_i of each factor")
    parser.add_argument("--m-i", type=int, default=10, help="rows m_i (SNR sweep)")
    parser.add_argument("--sparsity", type=int, default=3, help="active entries per factor")
    parser.add_argument("--snrs", type=float, nargs="+", default=[0, 10, 20, 30, 40])
    parser.add_argument("--m-list", type=int, nargs="+", default=[6, 8, 10, 12, 14])
    parser.add_argument("--snr-m", type=float, default=25.0)
    parser.add_argument("--time-sizes", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--dense-max", type=int, default=4096, help="largest n for dense SBL")
    parser.add_argument(
        "--dense-fit-max", type=int, default=1024, help="largest n for a full dense SBL fit"
    )
    parser.add_argument("--time-iters", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="3 trials, small sizes (smoke)")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.snrs, args.m_list, args.time_sizes = 3, [10, 30], [8, 12], [8, 16]
    info = print_header("KroSBL benchmark")
    rate = gemm_gflops(512)
    print(f"float64 GEMM (512^3): {rate:.1f} GFLOP/s")
    print(
        f"problem: 2 factors {args.m_i}x{args.n_i} (n = {args.n_i**2}), support "
        f"{args.sparsity}x{args.sparsity}, 1 snapshot, {args.trials} trials"
    )
    t0 = time.perf_counter()
    snr_table = {
        str(s): accuracy([(args.m_i, args.n_i)] * 2, s, args.trials, args.sparsity, 1000)
        for s in args.snrs
    }
    print_table("versus SNR", "SNR", args.snrs, snr_table)
    m_table = {
        str(m): accuracy([(m, args.n_i)] * 2, args.snr_m, args.trials, args.sparsity, 2000)
        for m in args.m_list
    }
    print_table(f"versus measurements m_i (SNR {args.snr_m:g} dB)", "m_i", args.m_list, m_table)
    seconds = {
        m: float(np.mean([snr_table[str(s)][m]["seconds"] for s in args.snrs])) for m in METHODS
    }
    print(
        "\nmean seconds per fit (SNR sweep): "
        + ", ".join(f"{m} {v:.3f}" for m, v in seconds.items())
    )
    print("\n## run time versus n (m_i = n_i / 2, m = n / 4)")
    timing_rows = timing(args.time_sizes, args.dense_max, args.dense_fit_max, args.time_iters, rate)
    elapsed = time.perf_counter() - t0
    plot(snr_table, args.snrs, m_table, args.m_list, timing_rows, "_quick" if args.quick else "")
    path = write_record(
        "krosbl" + ("_quick" if args.quick else ""),
        {
            "benchmark": "krosbl",
            "command": " ".join(sys.argv),
            "machine": info,
            "gemm_gflops": rate,
            "settings": vars(args),
            "versus_snr": snr_table,
            "versus_measurements": m_table,
            "timing": timing_rows,
            "seconds_total": elapsed,
        },
    )
    print(f"\nwrote {path} ({elapsed:.0f} s)")


if __name__ == "__main__":
    main()
