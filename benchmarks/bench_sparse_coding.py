"""ℓq sparse coding on whitened natural image patches: sparsity against reconstruction error.

For every penalty (ℓ1, ℓ1/2, ℓ0, CEL0) a λ sweep of dictionary learning runs; each gives the
fraction of non-zero coefficients and the relative reconstruction error ||Y − S Wᵀ||/||Y|| of
the codes of its last pass. Beside it, scikit-learn's MiniBatchDictionaryLearning with the
same number of atoms (an α sweep, lasso codes), compared at matched sparsity by linear
interpolation of each curve, and in seconds per pass over the data.

    python benchmarks/bench_sparse_coding.py --n-samples 20000 --H 64 --n-iter 10

Writes benchmarks/results/sparse_coding.json, benchmarks/sparse_coding_tradeoff.png and
benchmarks/sparse_coding_dictionaries.png.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import gemm_gflops, print_header, write_record

from prosper import SparseCoding
from prosper.data.patches import natural_patches

HERE = Path(__file__).resolve().parent
DEFAULT_LAMS = {
    "l1": [0.25, 0.5, 1.0, 2.0],
    "l1/2": [0.15, 0.3, 0.6, 1.2],
    "l0": [0.15, 0.3, 0.6, 1.2],
    "cel0": [0.15, 0.3, 0.6, 1.2],
}


def _flops_per_pass(N: int, D: int, H: int, fista_iter: float) -> float:
    """Y W and the statistics (4 N D H + 2 N H²) plus 2 H² per FISTA iteration and row."""
    return 4.0 * N * D * H + 2.0 * N * H * H + 2.0 * N * H * H * fista_iter


def _ours(Y, H, penalty, lam, n_iter, batch_size):
    t0 = time.perf_counter()
    model = SparseCoding(
        H=H, penalty=penalty, lam=lam, n_iter=n_iter, batch_size=batch_size, random_state=0
    ).fit(Y)
    total = time.perf_counter() - t0
    h = model.history_
    # seconds per pass without the first (cold) one, where FISTA starts from zero
    per_pass = float(np.mean((h["seconds_estep"] + h["seconds_mstep"])[1:]))
    fista_iter = float(np.mean(h["fista_iter"][1:]))
    flops = _flops_per_pass(Y.shape[0], Y.shape[1], H, fista_iter)
    return model, {
        "penalty": penalty,
        "lam": lam,
        "sparsity": float(h["sparsity"][-1]),
        "rel_error": float(h["rel_error"][-1]),
        "free_energy": float(h["free_energy"][-1]),
        "n_unused": int(h["n_unused"][-1]),
        "fista_iter_per_point": fista_iter,
        "seconds_per_pass": per_pass,
        "seconds_total": total,
        "gflops_estep": flops / 1e9 / float(np.mean(h["seconds_estep"][1:])),
    }


def _sklearn(Y, H, alpha, n_epochs, batch_size):
    from sklearn.decomposition import MiniBatchDictionaryLearning

    est = MiniBatchDictionaryLearning(
        n_components=H,
        alpha=alpha,
        max_iter=n_epochs,
        batch_size=batch_size,
        transform_algorithm="lasso_cd",
        transform_alpha=alpha,
        random_state=0,
    )
    t0 = time.perf_counter()
    est.fit(Y)
    fit_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    S = est.transform(Y)
    transform_seconds = time.perf_counter() - t0
    R = Y - S @ est.components_
    return est, {
        "alpha": alpha,
        "sparsity": float(np.count_nonzero(S)) / S.size,
        "rel_error": float(np.linalg.norm(R) / np.linalg.norm(Y)),
        "epochs": int(est.n_iter_),
        "seconds_per_pass": fit_seconds / max(int(est.n_iter_), 1),
        "seconds_transform": transform_seconds,
    }


def _error_at(points, sparsity):
    """Relative error of a curve at a sparsity by linear interpolation (None outside it)."""
    pts = sorted((p["sparsity"], p["rel_error"]) for p in points)
    xs, ys = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    if not xs[0] <= sparsity <= xs[-1]:
        return None
    return float(np.interp(sparsity, xs, ys))


def _plots(size, runs, sk_runs, dictionaries) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for penalty in DEFAULT_LAMS:
        pts = sorted((r["sparsity"], r["rel_error"]) for r in runs if r["penalty"] == penalty)
        if pts:
            ax.plot(*zip(*pts, strict=True), "o-", label=f"prosper {penalty}")
    if sk_runs:
        pts = sorted((r["sparsity"], r["rel_error"]) for r in sk_runs)
        ax.plot(*zip(*pts, strict=True), "k^--", label="sklearn MiniBatchDL (lasso)")
    ax.set_xlabel("fraction of non-zero coefficients")
    ax.set_ylabel("relative reconstruction error ||Y − SWᵀ|| / ||Y||")
    ax.set_title(f"whitened {size}×{size} natural patches")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tradeoff = HERE / "sparse_coding_tradeoff.png"
    fig.savefig(tradeoff, dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(dictionaries), figsize=(3.2 * len(dictionaries), 3.6))
    for ax, (title, W) in zip(np.atleast_1d(axes), dictionaries.items(), strict=True):
        H = W.shape[1]
        cols = int(np.ceil(np.sqrt(H)))
        rows = int(np.ceil(H / cols))
        tiles = np.full((rows * (size + 1), cols * (size + 1)), np.nan)
        for h in range(H):
            r, c = divmod(h, cols)
            atom = W[:, h].reshape(size, size)
            tiles[
                r * (size + 1) : r * (size + 1) + size, c * (size + 1) : c * (size + 1) + size
            ] = atom / max(np.abs(atom).max(), 1e-12)
        ax.imshow(tiles, cmap="gray", vmin=-1, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.tight_layout()
    dicts = HERE / "sparse_coding_dictionaries.png"
    fig.savefig(dicts, dpi=110)
    plt.close(fig)
    return [str(tradeoff.relative_to(HERE.parent)), str(dicts.relative_to(HERE.parent))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=20000)
    parser.add_argument("--size", type=int, default=8)
    parser.add_argument("--H", type=int, default=64)
    parser.add_argument("--n-iter", type=int, default=10, help="passes per prosper fit")
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--penalties", nargs="+", default=list(DEFAULT_LAMS))
    parser.add_argument("--sklearn-alphas", type=float, nargs="*", default=[0.25, 0.5, 1.0, 2.0])
    parser.add_argument("--sklearn-epochs", type=int, default=3)
    parser.add_argument("--sklearn-batch-size", type=int, default=256)
    args = parser.parse_args(argv)

    info = print_header("l_q sparse coding on natural patches")
    gemm = gemm_gflops(512)
    data = natural_patches(size=args.size, n_samples=args.n_samples, random_state=0)
    Y = data.Y
    N, D = Y.shape
    print(f"sizes: N={N}, D={D}, H={args.H}, passes={args.n_iter}, batch={args.batch_size}")
    print(f"machine GEMM rate (512³, float64): {gemm:.1f} GFLOP/s")

    runs, dictionaries = [], {}
    header = f"{'penalty':>7} {'lam':>6} {'sparsity':>9} {'rel.err':>8} {'FISTA it':>8} "
    header += f"{'s/pass':>7} {'GFLOP/s':>8} {'unused':>6}"
    print(header)
    for penalty in args.penalties:
        lams = DEFAULT_LAMS[penalty]
        for lam in lams:
            model, rec = _ours(Y, args.H, penalty, lam, args.n_iter, args.batch_size)
            runs.append(rec)
            if lam == lams[len(lams) // 2]:
                dictionaries[f"{penalty}, λ={lam}, sparsity {rec['sparsity']:.3f}"] = model.W_
            print(
                f"{penalty:>7} {lam:6.3g} {rec['sparsity']:9.4f} {rec['rel_error']:8.4f} "
                f"{rec['fista_iter_per_point']:8.1f} {rec['seconds_per_pass']:7.2f} "
                f"{rec['gflops_estep']:8.2f} {rec['n_unused']:6d}",
                flush=True,
            )

    sk_runs = []
    try:
        for alpha in args.sklearn_alphas:
            est, rec = _sklearn(Y, args.H, alpha, args.sklearn_epochs, args.sklearn_batch_size)
            sk_runs.append(rec)
            if alpha == args.sklearn_alphas[len(args.sklearn_alphas) // 2]:
                dictionaries[f"sklearn, α={alpha}, sparsity {rec['sparsity']:.3f}"] = (
                    est.components_.T
                )
            print(
                f"sklearn alpha={alpha:g}: sparsity {rec['sparsity']:.4f}, rel.err "
                f"{rec['rel_error']:.4f}, {rec['seconds_per_pass']:.2f} s/pass "
                f"({rec['epochs']} epochs), transform {rec['seconds_transform']:.2f} s",
                flush=True,
            )
    except ImportError:
        print("scikit-learn not installed: no comparison (pip install prosper[data])")

    targets = [0.05, 0.075, 0.1, 0.15, 0.2]
    matched = {}
    print("relative error at matched sparsity (linear interpolation; - = outside the sweep)")
    print(f"{'method':>8} " + " ".join(f"{t:>7.2f}" for t in targets))
    curves = {p: [r for r in runs if r["penalty"] == p] for p in args.penalties}
    if sk_runs:
        curves["sklearn"] = sk_runs
    for name, pts in curves.items():
        matched[name] = {str(t): _error_at(pts, t) for t in targets}
        cells = " ".join(
            f"{v:7.4f}" if v is not None else f"{'-':>7}" for v in matched[name].values()
        )
        print(f"{name:>8} {cells}")

    figures = _plots(args.size, runs, sk_runs, dictionaries)
    path = write_record(
        "sparse_coding",
        {
            "benchmark": "sparse_coding",
            "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
            "machine": info,
            "gemm_gflops": gemm,
            "sizes": {
                "N": N,
                "D": D,
                "H": args.H,
                "n_iter": args.n_iter,
                "batch_size": args.batch_size,
            },
            "data": {"generator": "natural_patches", "size": args.size, "method": "zca"},
            "prosper": runs,
            "sklearn": sk_runs,
            "sklearn_settings": {
                "epochs": args.sklearn_epochs,
                "batch_size": args.sklearn_batch_size,
                "transform": "lasso_cd",
            },
            "error_at_matched_sparsity": matched,
            "figures": figures,
        },
    )
    print("record:", path, "figures:", ", ".join(figures))


if __name__ == "__main__":
    main()
