"""Time to quality on 10x10 bars, side by side with tvo (issue #11, section 4).

    python benchmarks/bench_tvo.py [--seeds 0-5] [--epochs 100] [--contenders tvo evo et]
        [--eval-after-reached 10] [--name tvo]

One process, one thread per library, runs interleaved by seed (the order of the contenders
rotates from seed to seed), on the problem of ``bench_states.py ttq``: 10x10 bars, H = 20,
π = 2/H, amplitude 10, σ = 2, N = 5000 training points and 300 held-out points. Contenders:

``tvo``
    tvo's BSC (PyTorch, CPU, ``torch.set_num_threads(1)``) with its evolutionary states,
    set up as in tvo's ``examples/bars-test`` (its documented defaults, with S = 32):
    ``EVOConfig(n_states=32, n_parents=5, n_children=3, n_generations=2,
    parent_selection="fitness", crossover=False)`` (uniform bit-flip mutation), batch size
    32, shuffled, float32, W around the data mean (``init_W_data_mean``), σ² the mean data
    variance, π_h = 1/H per latent (tvo's default: one prior per latent), no annealing.
``evo``, ``et``
    ProSper's ``BSC(H=20, states="evo")`` and ``BSC(H=20, states="et")`` with every other
    setting at its default (evo: 32 states, 4 parents, 4 children, 2 generations; ET:
    H' = 8, γ = 4; T 3 → 1 over 60 % of the run, ``reassignment_ratio=0.3``), numba
    backend, one thread; ``n_iter`` = ``--epochs`` (the annealing is a fraction of it).

After every epoch the exact log-likelihood per point of the held-out points is computed
over all 2^20 states (its time is not counted; tvo's per-latent priors enter the linear
term of the Gray-code walk of ``bench_states.exact_loglik``). Until a run is within 0.5 nats
per point of the generating parameters' value, it is evaluated after every epoch; afterwards
only every ``--eval-after-reached`` epochs and at the end (the evaluation costs more than an
epoch). Reported per contender: median seconds per epoch, how many seeds reach the target,
median seconds and epochs to it (unreached seeds count as ∞), bars recovered at the end
(cosine > 0.9 after an optimal assignment). The record goes to
``benchmarks/results/<name>.json`` (``PROSPER_BENCH_RESULTS`` overrides the folder).

Installing tvo (not on PyPI; kept out of ProSper's dependencies), in a separate venv::

    git clone https://github.com/tvlearn/tvo /tmp/tvo_src
    python -m venv /tmp/tvo_venv        # the python of ProSper's venv
    /tmp/tvo_venv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
    /tmp/tvo_venv/bin/pip install cython munch numba scipy h5py
    /tmp/tvo_venv/bin/pip install --no-build-isolation -e /tmp/tvo_src
    /tmp/tvo_venv/bin/pip install -e ".[mpich,data]"
    /tmp/tvo_venv/bin/python benchmarks/bench_tvo.py

Without tvo (or torch) the ``tvo`` contender is skipped with a message.
"""

from __future__ import annotations

import os

# one thread per library: set before numpy, numba and torch are imported
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import bench_states  # noqa: E402
import numpy as np  # noqa: E402
from _common import gemm_gflops, print_header, write_record  # noqa: E402
from bench_states import _data, _seeds, exact_loglik, match_bars  # noqa: E402

log = logging.getLogger("bench_tvo")

SIZE = 10
K_PI = 2
N_TRAIN = 5000
TARGET = 0.5
#: tvo's evolutionary settings: its bars example's defaults (examples/bars-test/params.py)
#: with S = 32 states
TVO_EVO = {
    "n_states": 32,
    "n_parents": 5,
    "n_children": 3,
    "n_generations": 2,
    "parent_selection": "fitness",
    "crossover": False,
}
TVO_BATCH = 32


def exact_loglik_pis(Y: np.ndarray, W: np.ndarray, pis: np.ndarray, sigma: float) -> float:
    """Mean exact log-likelihood per point of BSC with one prior π_h per latent.

    Parameters
    ----------
    Y : ndarray of shape (N, D)
    W : ndarray of shape (D, H)
    pis : ndarray of shape (H,)
    sigma : float

    Returns
    -------
    float
        (1/N) Σ_n log Σ_s p(s) N(y_n; W s, σ² I) with p(s) = Π_h π_h^s_h (1 - π_h)^(1-s_h).

    Notes
    -----
    log p(s) = Σ_h s_h log(π_h / (1 - π_h)) + Σ_h log(1 - π_h) is linear in s, so it joins
    the per-point linear term sᵀWᵀy / σ² of ``bench_states``' Gray-code kernel (as σ² times
    the log-odds added to Wᵀy), and its constant is added at the end.
    """
    if bench_states._gray_kernel is None:  # compile (or load) the kernel
        exact_loglik(Y[:1], W, 0.5, sigma)
    _, D = Y.shape
    pis = np.clip(np.asarray(pis, dtype=np.float64), 1e-12, 1 - 1e-12)
    log_odds = np.log(pis) - np.log1p(-pis)
    WtY = np.ascontiguousarray(W.T @ Y.T + sigma**2 * log_odds[:, None])  # (H, N)
    G = np.ascontiguousarray(W.T @ W)  # (H, H)
    yy = np.einsum("nd,nd->n", Y, Y)
    inv2s2 = 1.0 / (2.0 * sigma**2)
    lse = bench_states._gray_kernel(WtY, G, 0.0, 0.0, inv2s2)
    const = -0.5 * D * np.log(2 * np.pi * sigma**2) + float(np.sum(np.log1p(-pis)))
    return float(np.mean(lse - yy * inv2s2 + const))


class _Tracker:
    """Per-epoch fit time (evaluation excluded) and held-out exact log-likelihood."""

    def __init__(self, Y_test: np.ndarray, ll_true: float, every_after: int, epochs: int):
        self.Y_test = Y_test
        self.ll_true = ll_true
        self.every_after = every_after
        self.epochs = epochs
        self.fit = 0.0
        self.epoch_seconds: list[float] = []
        self.trace: list[tuple[int, float, float]] = []  # (epoch, cumulative fit s, ll)
        self.reached: tuple[int, float] | None = None

    def epoch(self, seconds: float, params: Callable[[], tuple]) -> None:
        self.fit += seconds
        self.epoch_seconds.append(seconds)
        ep = len(self.epoch_seconds)
        if not (self.reached is None or ep % self.every_after == 0 or ep == self.epochs):
            return
        W, pis, sigma = params()
        ll = exact_loglik_pis(self.Y_test, W, pis, sigma)
        self.trace.append((ep, self.fit, ll))
        if self.reached is None and self.ll_true - ll < TARGET:
            self.reached = (ep, self.fit)


def run_tvo(seed: int, epochs: int, every_after: int) -> dict[str, Any]:
    """tvo's BSC with evolutionary states on one seed's bars."""
    import torch
    from tvo.exp._EStepConfig import EVOConfig
    from tvo.exp._utils import make_var_states
    from tvo.models import BSC as TvoBSC
    from tvo.trainer import Trainer
    from tvo.utils.data import TVODataLoader
    from tvo.utils.param_init import init_sigma2_default, init_W_data_mean

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    # tvo draws its initial states (and crossover points) from numpy's global generator
    np.random.seed(seed)  # noqa: NPY002
    data, Y, Y_test = _data(SIZE, K_PI, N_TRAIN, seed)
    ll_true = exact_loglik(Y_test, data.W, data.pi, data.sigma)
    H, D = 2 * SIZE, Y.shape[1]
    precision = torch.float32
    Yt = torch.from_numpy(Y).to(precision)
    model = TvoBSC(
        H=H,
        D=D,
        W_init=init_W_data_mean(data=Yt, H=H, dtype=precision).contiguous(),
        sigma2_init=init_sigma2_default(Yt, precision),
        pies_init=torch.full((H,), 1.0 / H, dtype=precision),
        precision=precision,
    )
    states = make_var_states(EVOConfig(**TVO_EVO), N_TRAIN, H, precision)
    loader = TVODataLoader(Yt, batch_size=TVO_BATCH, shuffle=True)
    trainer = Trainer(model, train_data=loader, train_states=states)
    tracker = _Tracker(Y_test, ll_true, every_after, epochs)

    def params() -> tuple:
        th = model.theta
        W = th["W"].detach().double().numpy()
        return W, th["pies"].detach().double().numpy(), float(th["sigma2"].sqrt().item())

    for _ in range(epochs):
        t0 = time.perf_counter()
        trainer.em_step()
        tracker.epoch(time.perf_counter() - t0, params)
    W = params()[0]
    return _record("tvo", seed, tracker, match_bars(W, data.W), dict(TVO_EVO, batch=TVO_BATCH))


def run_prosper(states: str, seed: int, epochs: int, every_after: int) -> dict[str, Any]:
    """ProSper's BSC with ``states`` ("evo" or "et") and its defaults on one seed's bars."""
    from prosper import BSC

    data, Y, Y_test = _data(SIZE, K_PI, N_TRAIN, seed)
    ll_true = exact_loglik(Y_test, data.W, data.pi, data.sigma)
    tracker = _Tracker(Y_test, ll_true, every_after, epochs)
    clock = {"last": 0.0}

    def callback(it, learner, metrics):
        seconds = time.perf_counter() - clock["last"]
        p = learner.params
        H = p["W"].shape[1]

        def params() -> tuple:
            return p["W"], np.full(H, float(p["pi"])), float(p["sigma"])

        tracker.epoch(seconds, params)
        clock["last"] = time.perf_counter()
        return False

    model = BSC(
        H=2 * SIZE,
        states=states,
        n_iter=epochs,
        backend="numba",
        random_state=seed,
        progress=False,
        callback=callback,
    )
    clock["last"] = time.perf_counter()
    model.fit(Y)
    settings = {"states": states, "backend": "numba", "n_iter": epochs}
    return _record(states, seed, tracker, match_bars(model.W_, data.W), settings)


def _record(name: str, seed: int, tr: _Tracker, n_bars: int, settings: dict) -> dict[str, Any]:
    return {
        "contender": name,
        "seed": seed,
        "settings": settings,
        "ll_true": tr.ll_true,
        "reached": tr.reached is not None,
        "epochs_to_quality": tr.reached[0] if tr.reached else None,
        "seconds_to_quality": tr.reached[1] if tr.reached else None,
        "seconds_per_epoch_median": float(np.median(tr.epoch_seconds)),
        "epoch_seconds": tr.epoch_seconds,
        "seconds_fit": tr.fit,
        "ll_final": tr.trace[-1][2],
        "gap_final": tr.ll_true - tr.trace[-1][2],
        "n_bars": n_bars,
        "trace": tr.trace,
        "load": os.getloadavg()[0],
    }


def summary(runs: list[dict[str, Any]]) -> str:
    """Markdown table per contender (medians over seeds; unreached seeds count as ∞)."""
    lines = [
        "| contender | s/epoch (median) | reached ≤ 0.5 nats | median s to quality "
        "| median epochs to quality | all bars at the end | bars per seed | final gap (median) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by.setdefault(r["contender"], []).append(r)
    for name, rs in by.items():
        t = [r["seconds_to_quality"] if r["reached"] else np.inf for r in rs]
        ep = [r["epochs_to_quality"] if r["reached"] else np.inf for r in rs]
        lines.append(
            f"| {name} | {np.median([r['seconds_per_epoch_median'] for r in rs]):.3f} "
            f"| {sum(r['reached'] for r in rs)}/{len(rs)} | {np.median(t):.1f} "
            f"| {np.median(ep):.0f} | {sum(r['n_bars'] == 2 * SIZE for r in rs)}/{len(rs)} "
            f"| {' '.join(str(r['n_bars']) for r in rs)} "
            f"| {np.median([r['gap_final'] for r in rs]):.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=_seeds, default=_seeds("0-5"))
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--contenders", nargs="+", default=["tvo", "evo", "et"])
    parser.add_argument(
        "--eval-after-reached",
        type=int,
        default=10,
        help="once within 0.5 nats, evaluate only every this many epochs (and at the end)",
    )
    parser.add_argument("--name", default="tvo", help="record name in benchmarks/results/")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    contenders = list(args.contenders)
    unknown = set(contenders) - {"tvo", "evo", "et"}
    if unknown:
        parser.error(f"unknown contenders {sorted(unknown)}; choose from tvo, evo, et")
    info = print_header("time to quality on 10x10 bars against tvo")
    versions: dict[str, str | None] = {}
    if "tvo" in contenders:
        try:
            import torch
            import tvo

            torch.set_num_threads(1)
            versions["torch"] = torch.__version__
            log.info("tvo from %s, torch %s", tvo.__file__, torch.__version__)
        except ImportError as exc:
            log.warning("tvo is skipped: %s (install it as the docstring of this script says)", exc)
            contenders.remove("tvo")
    info["versions"].update(versions)
    if not contenders:
        log.warning("nothing to run")
        return
    gemm = gemm_gflops()
    print(
        f"threads: 1 per library (env {info['thread_env']}); GEMM float64 1 thread: "
        f"{gemm:.1f} GFLOP/s"
    )
    print(f"load (uptime) at start: {os.getloadavg()}")
    # load (or compile) ProSper's numba kernels before any timed run
    for states in ("evo", "et"):
        if states in contenders:
            from prosper import BSC

            Y_warm = np.random.default_rng(0).standard_normal((64, 9))
            BSC(H=4, states=states, n_iter=2, backend="numba", progress=False).fit(Y_warm)
    runners = {
        "tvo": lambda s: run_tvo(s, args.epochs, args.eval_after_reached),
        "evo": lambda s: run_prosper("evo", s, args.epochs, args.eval_after_reached),
        "et": lambda s: run_prosper("et", s, args.epochs, args.eval_after_reached),
    }
    runs: list[dict[str, Any]] = []
    for i, seed in enumerate(args.seeds):
        order = contenders[i % len(contenders) :] + contenders[: i % len(contenders)]
        for name in order:
            rec = runners[name](seed)
            runs.append(rec)
            log.info(
                "seed %d %s: %.3f s/epoch, reached %s (epoch %s, %s s), bars %d/20, "
                "final gap %.3f, load %.1f",
                seed,
                name,
                rec["seconds_per_epoch_median"],
                rec["reached"],
                rec["epochs_to_quality"],
                None if rec["seconds_to_quality"] is None else round(rec["seconds_to_quality"], 1),
                rec["n_bars"],
                rec["gap_final"],
                rec["load"],
            )
            # rewrite the record after every run, so an interrupted benchmark keeps its runs
            write_record(
                args.name,
                {
                    "benchmark": "bench_tvo",
                    "machine": info,
                    "gemm_gflops_1thread": gemm,
                    "args": vars(args),
                    "problem": {
                        "size": SIZE,
                        "pi": K_PI / (2 * SIZE),
                        "N": N_TRAIN,
                        "N_test": bench_states.N_TEST,
                        "amplitude": bench_states.AMPLITUDE,
                        "sigma": bench_states.SIGMA,
                        "target_nats": TARGET,
                    },
                    "runs": runs,
                },
            )
    print(f"load (uptime) at end: {os.getloadavg()}")
    print(summary(runs))


if __name__ == "__main__":
    main()
