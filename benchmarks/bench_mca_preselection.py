"""MCA's preselection scores: a numba kernel and a NumPy buffer against large chunks (#11).

    python benchmarks/bench_mca_preselection.py [--shapes 1000:256:32 1000:100:20 ...]
        [--repeat 7] [--fit-size 16] [--fit-n 2000] [--fit-repeat 2] [--record NAME]

MCA preselects the H' causes of a point by −Σ_d max(W_dh − y_d, 0), a sum over (B, D, H)
elements that no matrix product gives. It was formed in chunks of up to 2^21 floats
(16 MiB per temporary, two temporaries per chunk: page faults and memory traffic). Now the
NumPy form ("buffer", the reference and the path of the NumPy and CuPy backends) works a
few rows at a time in one buffer of ``PRESELECTION_ELEMENTS`` floats reused for the whole
batch, and the numba backend runs a kernel ("numba", ``KERNELS["mca_preselection"]``) that
never stores the excesses. All three sum each (row, h) over d in ascending order, so they
give the same scores bit for bit (checked here on every shape).

Prints per shape (B, D, H): the elements B D H (one subtraction, maximum and addition
each: 3 flops), seconds of each form, medians of ``--repeat`` calls rotating the order of
the forms, and the achieved GFLOP/s beside the machine's GEMM rate (for scale). Then
``--fit-repeat`` pairs of whole MCA fits with the shipped defaults (numba backend, 100
iterations, one thread) on the 16x16 max-bars of ``bench_states.py``, with the earlier
chunks and with the kernel (the order alternating), with the seconds in the preselection,
the whole fit's seconds and their ratio; the fits are identical (the same W bit for bit).
A JSON record goes to ``benchmarks/results/<record>.json``.
"""

from __future__ import annotations

import os

# one thread: set before numpy and numba are imported
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from _common import gemm_gflops, print_header, write_record  # noqa: E402
from bench_states import MODELS, _data, match_bars  # noqa: E402

import prosper  # noqa: E402
from prosper.backends.numba_mca import mca_preselection  # noqa: E402
from prosper.models.base import TruncatedModel  # noqa: E402
from prosper.models.mca import MCAModel  # noqa: E402

NEW = MCAModel.preselection_scores
CANDIDATES = MCAModel.candidates
#: the earlier form's chunk (floats)
OLD_CHUNK = 1 << 21


def old_scores(self, Y, params):
    """The earlier form: chunks of up to 2^21 floats, two temporaries per chunk."""
    W = self.clip_W(np.asarray(params["W"], dtype=np.float64))
    Y = np.asarray(Y, dtype=np.float64)
    out = np.empty((Y.shape[0], self.H))
    step = max(1, OLD_CHUNK // (self.H * self.D))
    for start in range(0, Y.shape[0], step):
        rows = slice(start, min(start + step, Y.shape[0]))
        excess = W.T[None, :, :] - Y[rows, None, :]
        out[rows] = -np.maximum(excess, 0.0).sum(axis=2)
    return out


def numba_scores(self, Y, params):
    return mca_preselection(Y, self.clip_W(np.asarray(params["W"], dtype=np.float64)))


FORMS = {"chunks": old_scores, "buffer": NEW, "numba": numba_scores}


def time_shape(B: int, D: int, H: int, repeat: int) -> dict:
    rng = np.random.default_rng(0)
    W = rng.uniform(0.0, 10.0, (D, H))
    Y = rng.uniform(0.0, 10.0, (B, D))
    model = MCAModel(H, D)
    params = {"W": W, "pi": np.asarray(2.0 / H), "sigma": np.asarray(2.0)}
    results = {name: f(model, Y, params) for name, f in FORMS.items()}
    equal = all(np.array_equal(results["chunks"], r) for r in results.values())
    seconds: dict[str, list[float]] = {name: [] for name in FORMS}
    names = list(FORMS)
    for r in range(repeat):
        for name in names[r % 3 :] + names[: r % 3]:
            t0 = time.perf_counter()
            FORMS[name](model, Y, params)
            seconds[name].append(time.perf_counter() - t0)
    med = {name: float(np.median(v)) for name, v in seconds.items()}
    flops = 3 * B * D * H
    rec = {
        "B": B,
        "D": D,
        "H": H,
        "flops": flops,
        "seconds": med,
        "gflops": {name: flops / s / 1e9 for name, s in med.items()},
        "ratio_over_chunks": {name: s / med["chunks"] for name, s in med.items()},
        "equal": equal,
    }
    forms = ", ".join(
        f"{name} {1e3 * s:.2f} ms ({rec['gflops'][name]:.2f} GFLOP/s, "
        f"x{rec['ratio_over_chunks'][name]:.2f})"
        for name, s in med.items()
    )
    print(f"B={B} D={D} H={H}: {flops / 1e6:.0f} Mflop; {forms}; equal: {equal}")
    return rec


def fit_once(form: str, Y: np.ndarray, H: int, seed: int) -> tuple[float, float, np.ndarray]:
    """(fit seconds, seconds in the preselection, W) of an MCA fit with the given form."""
    spent = [0.0]

    def timed(self, Y, states, params, backend=None):
        t0 = time.perf_counter()
        if form == "chunks":  # the earlier code: NumPy scores in large chunks on every backend
            out = TruncatedModel.candidates(self, Y, states, params)
        else:
            out = CANDIDATES(self, Y, states, params, backend)
        spent[0] += time.perf_counter() - t0
        return out

    MCAModel.candidates = timed
    MCAModel.preselection_scores = old_scores
    try:
        est = prosper.MCA(H=H, n_iter=100, random_state=seed, progress=False)
        t0 = time.perf_counter()
        est.fit(Y)
        return time.perf_counter() - t0, spent[0], est.W_
    finally:
        MCAModel.candidates = CANDIDATES
        MCAModel.preselection_scores = NEW


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["1000:256:32", "1000:100:20", "1000:64:10"])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--fit-size", type=int, default=16)
    parser.add_argument("--fit-n", type=int, default=2000)
    parser.add_argument("--fit-repeat", type=int, default=2, help="0: no fits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--record", default="mca_preselection")
    args = parser.parse_args(argv)
    info = print_header("MCA preselection: numba kernel, NumPy buffer, large chunks")
    gemm = gemm_gflops()
    print(f"float64 GEMM rate of this machine: {gemm:.1f} GFLOP/s (for scale)")
    record: dict = {"machine": info, "gemm_gflops": gemm, "shapes": [], "fits": []}
    for shape in args.shapes:
        B, D, H = (int(x) for x in shape.split(":"))
        record["shapes"].append(time_shape(B, D, H, args.repeat))
    if args.fit_repeat:
        H = 2 * args.fit_size
        data, Y, _ = _data(args.fit_size, 2, args.fit_n, args.seed, "mca")
        fit_once("numba", Y[:200], H, args.seed)  # compile or load the kernels first
        runs: dict[str, list] = {"chunks": [], "numba": []}
        for r in range(args.fit_repeat):
            for form in ("chunks", "numba") if r % 2 == 0 else ("numba", "chunks"):
                seconds, presel, W = fit_once(form, Y, H, args.seed)
                bars = match_bars(W, data.W, signed=MODELS["mca"]["signed"])
                runs[form].append((seconds, presel, W, bars))
                print(
                    f"fit {args.fit_size}x{args.fit_size} N={args.fit_n} [{form}]: "
                    f"{seconds:.1f} s, preselection {presel:.1f} s, bars {bars}/{H}"
                )
        same = all(
            np.array_equal(a[2], b[2]) for a, b in zip(runs["chunks"], runs["numba"], strict=True)
        )
        med = {f: float(np.median([x[0] for x in v])) for f, v in runs.items()}
        pre = {f: float(np.median([x[1] for x in v])) for f, v in runs.items()}
        print(
            f"fit medians: chunks {med['chunks']:.1f} s (preselection {pre['chunks']:.1f}), "
            f"numba {med['numba']:.1f} s (preselection {pre['numba']:.1f}); "
            f"ratio {med['numba'] / med['chunks']:.3f}; same W: {same}"
        )
        record["fits"] = {
            "size": args.fit_size,
            "n": args.fit_n,
            "seed": args.seed,
            "seconds": {f: [x[0] for x in v] for f, v in runs.items()},
            "preselection_seconds": {f: [x[1] for x in v] for f, v in runs.items()},
            "bars": {f: [x[3] for x in v] for f, v in runs.items()},
            "same_W": same,
        }
    record["load_end"] = os.getloadavg()[0]
    print(f"load average at the end: {record['load_end']:.1f}")
    write_record(args.record, record)


if __name__ == "__main__":
    main()
