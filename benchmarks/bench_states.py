"""Which state set, search sizes and annealing schedule find the bars? (issue #11, 3 and 4)

    python benchmarks/bench_states.py grid [--model bsc] [--sizes 5 10] [--pis 1 2]
        [--ns 2000 10000] [--seeds 0-19] [--configs evo et ...] [--workers 2]
        [--records states_grid.jsonl]
    python benchmarks/bench_states.py summary [--configs ...] [--records FILE ...]
        [--models ...]
    python benchmarks/bench_states.py ttq [--seeds 0-5] [--configs ttq-evo32-r3 ttq-et32-r3]
        [--workers 2] [--records states_ttq.jsonl]
    python benchmarks/bench_states.py oracle [--model bsc] [--sizes 5 10] [--pis 1 2]
        [--ns 2000 10000] [--seeds 0-19] [--records states_oracle.jsonl]
    python benchmarks/bench_states.py table [--rst] [--manifest grid_current.toml]
    python benchmarks/bench_states.py list

``grid`` fits BSC (or ``--model``: each model on its own bars variant, see ``MODELS``) on
bars of the given sizes (size 5, 10, 16: H = 10, 20, 32) with π = k/H for each k of
``--pis``, N data points (BSC: amplitude 10 and σ = 2, the issue's problem), once per seed and
configuration (a state set with its sizes and an annealing
schedule: ``list`` prints them). Each run writes one JSON line to
``benchmarks/results/states_grid.jsonl``; runs already in the file are skipped, so an
interrupted grid resumes. Per run it records whether every generating bar has a learned
column with cosine > 0.9 after an optimal assignment (the absolute cosine where columns
are defined up to sign: TSC, GSC), the exact log-likelihood per point of the learned and
of the generating parameters on 300 held-out points (BSC, MCA, MMCA: all 2^H states up to
H = 20, i.e. 5x5 and 10x10 bars; TSC, DSC, GSC: all V^H states or spike patterns up to
H = 12, i.e. 5x5 bars only), the seconds of the fit, the median seconds per E-step and the
git commit.

Bars variants (``MODELS``): BSC binary bars, amplitude 10, σ = 2; TSC the same with a
random sign per bar and point; DSC amplitudes 5, 10, 15 (values 0-3 in units of 5, each
non-zero value with π/3), σ = 1, fitted with ``values=(0, 1, 2, 3)``; MCA binary bars
combined by the maximum; MMCA bars with a fixed sign per bar (+ for even, − for odd h),
the larger magnitude wins, H = number of bars; GSC spike-and-slab bars (height 1, slab
N(5, 1), σ = 0.5). The configuration ``default`` is the estimator's defaults.

``summary`` prints, per grid point and configuration, the recovery rate and the median gap
of the exact log-likelihood to the generating parameters' on the successful runs.

``table`` prints the whole grid (every model, size, π and N) from the records that
``benchmarks/results/grid_current.toml`` names as measuring each model's current defaults:
runs that found every bar, the median (max) exact log-likelihood gap, and which grid points
miss their model's target (BSC 95 %, the others 90 % of seeds).

``oracle`` computes, per grid point and seed, the gap of the complete-data estimate (the
parameters estimated with the true latents of the N training points known: least squares
for BSC, TSC and DSC, per-pixel means of the winning cause for MCA and MMCA) to the
generating parameters: what estimating from N points costs any learner. ``summary`` shows
its median over the seeds of the successful runs next to theirs (give both record files).

``ttq`` measures the time to quality on 10x10 bars (N=5000): after every iteration the
exact log-likelihood on the held-out points is evaluated (its time not counted) and the run
stops once it is within 0.5 nats per point of the generating parameters'. The default
configurations run BSC's defaults (T3l, the repairs at ``reassignment_ratio=0.3``; evo
32-4-4-2) with 32 states per point for both state sets (ET H'=5, γ=5); ``ttq-evo32`` and
``ttq-et32`` are the same without the repairs (they predate them). Lines go to
``benchmarks/results/states_ttq.jsonl`` (``--records``: another file).

Workers are separate processes with one thread each (OMP_NUM_THREADS=1,
NUMBA_NUM_THREADS=1), at most ``--workers`` at a time.
"""

from __future__ import annotations

import os

# one thread per worker process: set before numpy and numba are imported
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import multiprocessing  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from scipy.optimize import linear_sum_assignment  # noqa: E402
from scipy.special import logsumexp  # noqa: E402

log = logging.getLogger("bench_states")

RESULTS = Path(os.environ.get("PROSPER_BENCH_RESULTS", Path(__file__).parent / "results"))
AMPLITUDE = 10.0
SIGMA = 2.0
N_TEST = 300
#: exact log-likelihoods are computed up to this H (2^H states)
H_EXACT = 20

# Every configuration spells out all its settings, so a row means the same thing whatever
# the estimators' defaults become. "T a->b over f, prior" tempers prior and likelihood,
# "lik" the likelihood only.
_T5 = {"temperature": [[0, 5.0], [0.8, 1.0]], "anneal_prior": True}
_T3L = {"temperature": [[0, 3.0], [0.6, 1.0]], "anneal_prior": False}
_T2L = {"temperature": [[0, 2.0], [0.6, 1.0]], "anneal_prior": False}
_T1 = {"temperature": 1.0}
_T5L = {"temperature": [[0, 5.0], [0.8, 1.0]], "anneal_prior": False}
_T3L80 = {"temperature": [[0, 3.0], [0.8, 1.0]], "anneal_prior": False}
_NCUT_LATE = {"ncut_factor": [[0.8, 0.0], [0.9, 1.0]]}
_ET = {"states": "et", "Hprime": 8, "gamma": 4}
_ET63 = {"states": "et", "Hprime": 6, "gamma": 3}
_ET32 = {"states": "et", "Hprime": 5, "gamma": 5}


def _evo(S: int, parents: int, children: int, generations: int) -> dict[str, Any]:
    return {
        "states": "evo",
        "n_states": S,
        "n_parents": parents,
        "n_children": children,
        "n_generations": generations,
    }


CONFIGS: dict[str, dict[str, Any]] = {
    # ET H'=8, gamma=4 (163 states per point: BSC's default sizes)
    "et-T5p": {**_ET, **_T5},
    "et-T3l": {**_ET, **_T3L},
    "et-T1": {**_ET, **_T1},
    # evolutionary: S states, parents, children per parent, generations per E-step
    "evo32-4-4-2-T5p": {**_evo(32, 4, 4, 2), **_T5},
    "evo32-4-4-2-T3l": {**_evo(32, 4, 4, 2), **_T3L},
    "evo32-4-4-2-T2l": {**_evo(32, 4, 4, 2), **_T2L},
    "evo32-4-4-2-T1": {**_evo(32, 4, 4, 2), **_T1},
    "evo32-8-4-2-T3l": {**_evo(32, 8, 4, 2), **_T3L},
    "evo32-4-4-4-T3l": {**_evo(32, 4, 4, 4), **_T3L},
    "evo64-4-4-2-T3l": {**_evo(64, 4, 4, 2), **_T3L},
    "evo64-8-4-2-T3l": {**_evo(64, 8, 4, 2), **_T3L},
    "evo64-8-4-2-T5p": {**_evo(64, 8, 4, 2), **_T5},
    "evo16-4-4-2-T3l": {**_evo(16, 4, 4, 2), **_T3L},
    # restarts: the best free energy of 3 initialisations (n_init)
    "et-T3l-init3": {**_ET, **_T3L, "n_init": 3},
    "evo32-4-4-2-T3l-init3": {**_evo(32, 4, 4, 2), **_T3L, "n_init": 3},
    # time to quality at 32 states per point for both sets (ET: H'=5, gamma=5 = 2^5 states)
    "ttq-evo32": {**_evo(32, 4, 4, 2), **_T3L},
    "ttq-et32": {**_ET32, **_T3L},
    "ttq-et163": {**_ET, **_T3L},
    # TSC (--model tsc): ET data selection raised from 0 to 1 between 80 % and 90 % of the
    # run (TSC's default since 2026-11), with its sizes and schedules spelled out
    "et-T5l-ncl": {**_ET, **_T5L, **_NCUT_LATE},
    "et63-T5l-ncl": {**_ET63, **_T5L, **_NCUT_LATE},
    "et-T3l-ncl": {**_ET, **_T3L, **_NCUT_LATE},
    "et-T3l80-ncl": {**_ET, **_T3L80, **_NCUT_LATE},
    "et63-T3l-ncl": {**_ET63, **_T3L, **_NCUT_LATE},
    "et63-T5l-ncl-init3": {**_ET63, **_T5L, **_NCUT_LATE, "n_init": 3},
}
# every configuration above predates the re-initialisation of unused latents (issue #11,
# 2026-12-02 session 5): they keep running without it; "-r3" adds it at ratio 0.3 (the default)
for _settings in CONFIGS.values():
    _settings["reassignment_ratio"] = 0.0
CONFIGS.update(
    {
        "et-T3l-r3": {**_ET, **_T3L, "reassignment_ratio": 0.3},
        "evo32-4-4-2-T3l-r3": {**_evo(32, 4, 4, 2), **_T3L, "reassignment_ratio": 0.3},
        "et-T3l-r3-init3": {**_ET, **_T3L, "reassignment_ratio": 0.3, "n_init": 3},
        "evo32-4-4-2-T3l-r3-init3": {
            **_evo(32, 4, 4, 2),
            **_T3L,
            "reassignment_ratio": 0.3,
            "n_init": 3,
        },
        # session 6: the re-initialisation also takes the less used of two duplicate
        # latents, and latents only ever on together are merged (new name: the code behind
        # "-r3" changed again)
        "et-T3l-r3m": {**_ET, **_T3L, "reassignment_ratio": 0.3},
        "evo32-4-4-2-T3l-r3m": {**_evo(32, 4, 4, 2), **_T3L, "reassignment_ratio": 0.3},
        # time to quality with BSC's defaults (the headline figure; session 9)
        "ttq-evo32-r3": {**_evo(32, 4, 4, 2), **_T3L, "reassignment_ratio": 0.3},
        "ttq-et32-r3": {**_ET32, **_T3L, "reassignment_ratio": 0.3},
        # fewer children per E-step: one generation of 16 or of 8 (session 9)
        "ttq-evo32-4-4-1-r3": {**_evo(32, 4, 4, 1), **_T3L, "reassignment_ratio": 0.3},
        "ttq-evo32-4-2-1-r3": {**_evo(32, 4, 2, 1), **_T3L, "reassignment_ratio": 0.3},
        # TSC (--model tsc) with the re-initialisation
        "et63-T5l-ncl-r3": {**_ET63, **_T5L, **_NCUT_LATE, "reassignment_ratio": 0.3},
        "et-T5l-ncl-r3": {**_ET, **_T5L, **_NCUT_LATE, "reassignment_ratio": 0.3},
        # the same after the re-initialisation also completes a latent that holds part of a
        # cause (main 9824f67): new names, since the code behind "-r3" changed
        "et63-T5l-ncl-r3b": {**_ET63, **_T5L, **_NCUT_LATE, "reassignment_ratio": 0.3},
        "et-T5l-ncl-r3b": {**_ET, **_T5L, **_NCUT_LATE, "reassignment_ratio": 0.3},
        # TSC (--model tsc), session 7: the repairs read for signed latents (usage Σ<|s|>,
        # duplicates by the absolute cosine, "on together" from Σ<|s_g| |s_h|>, merges
        # W_g ± W_h by the sign of Σ<s_g s_h>), with TSC's schedule (T5l) or BSC's (T3l),
        # and with restarts
        "tsc-et63-T5l-ncl-r3s": {**_ET63, **_T5L, **_NCUT_LATE, "reassignment_ratio": 0.3},
        "tsc-et63-T3l-ncl-r3s": {**_ET63, **_T3L, **_NCUT_LATE, "reassignment_ratio": 0.3},
        "tsc-et-T3l-ncl-r3s": {**_ET, **_T3L, **_NCUT_LATE, "reassignment_ratio": 0.3},
        "tsc-et63-T3l-ncl-r3s-init3": {
            **_ET63,
            **_T3L,
            **_NCUT_LATE,
            "reassignment_ratio": 0.3,
            "n_init": 3,
        },
        # the estimator's defaults, whatever they are at the recorded commit (each record
        # carries the commit): what a user gets without settings
        "default": {},
        # MCA, MMCA (session 7): the estimator's defaults with the re-initialisation off
        # (their defaults before it became 0.3)
        "default-r0": {"reassignment_ratio": 0.0},
        # MMCA (session 12): the defaults with another threshold of the zero rule
        # (sparse_nats; the default is 4, 0 switches it off)
        **{f"default-sn{v:g}": {"sparse_nats": float(v)} for v in (0, 1, 2, 8, 16)},
    }
)
# GSC (--model gsc), session 7: its session-6 defaults spelled out (ET H'=8, gamma=4; T 3->1
# over 60 %, whole joint; data selection 0->1 over 2/3), with the re-initialisation at 0.3
# ("-r3": unused latents; "-r3s": also duplicates by the absolute cosine and pairs only ever
# on together merged or split, the code of branch gsc7)
_GSC = {
    **_ET,
    "temperature": [[0, 3.0], [0.6, 1.0]],
    "anneal_prior": True,
    "ncut_factor": [[0.0, 0.0], [0.667, 1.0]],
}
CONFIGS.update(
    {
        "gsc-T3p-r0": {**_GSC, "reassignment_ratio": 0.0},
        "gsc-T3p-r3": {**_GSC, "reassignment_ratio": 0.3},
        "gsc-T3p-r3s": {**_GSC, "reassignment_ratio": 0.3},
    }
)


# ----------------------------------------------------------------------------------------
# measurements
# ----------------------------------------------------------------------------------------


def _gray_logsumexp(WtY, G, log_pi, log_1mpi, inv2s2):  # pragma: no cover - numba
    """Per point log Σ_s exp(log-joint(s) + yᵀy/(2σ²)) over all 2^H states, in Gray order.

    Consecutive Gray-code states differ in one latent h, so sᵀWᵀy (per point), sᵀGs and
    (Gs) are updated in O(N + H) per state, and exp is only taken for states within 60 nats
    of the running maximum (the others change the sum by less than e^-60 relative).
    """
    H, N = WtY.shape
    lin = np.zeros(N)
    Gs = np.zeros(H)
    s = np.zeros(H, dtype=np.bool_)
    quad = 0.0
    k = 0
    m = np.full(N, -np.inf)
    acc = np.zeros(N)
    for i in range(1 << H):
        if i > 0:
            h = 0
            while not (i >> h) & 1:
                h += 1
            if s[h]:
                quad += G[h, h] - 2.0 * Gs[h]
                for j in range(H):
                    Gs[j] -= G[j, h]
                for n in range(N):
                    lin[n] -= WtY[h, n]
                s[h] = False
                k -= 1
            else:
                quad += G[h, h] + 2.0 * Gs[h]
                for j in range(H):
                    Gs[j] += G[j, h]
                for n in range(N):
                    lin[n] += WtY[h, n]
                s[h] = True
                k += 1
        base = k * log_pi + (H - k) * log_1mpi - quad * inv2s2
        for n in range(N):
            v = base + 2.0 * lin[n] * inv2s2
            if v > m[n]:
                acc[n] = acc[n] * np.exp(m[n] - v) + 1.0
                m[n] = v
            elif v > m[n] - 60.0:
                acc[n] += np.exp(v - m[n])
    return m + np.log(acc)


_gray_kernel = None


def exact_loglik(Y: np.ndarray, W: np.ndarray, pi: float, sigma: float) -> float:
    """Mean exact log-likelihood per point of BSC over all 2^H states.

    Parameters
    ----------
    Y : ndarray of shape (N, D)
    W : ndarray of shape (D, H)
    pi, sigma : float

    Returns
    -------
    float
        (1/N) Σ_n log Σ_s p(s) N(y_n; W s, σ² I).

    Notes
    -----
    ||y - W s||² = yᵀy - 2 sᵀ(Wᵀy) + sᵀ(WᵀW)s: the quadratic term does not depend on the
    point; a numba kernel walks the states in Gray-code order so that both terms change by
    one latent per state (2^20 states x 300 points: about a second on one thread).
    """
    global _gray_kernel
    if _gray_kernel is None:
        import numba

        _gray_kernel = numba.njit(cache=True)(_gray_logsumexp)
    _, D = Y.shape
    H = W.shape[1]
    if H > 24:
        raise ValueError(f"exact log-likelihood over 2^H states needs H <= 24; got H={H}.")
    pi = float(np.clip(pi, 1e-12, 1 - 1e-12))
    WtY = np.ascontiguousarray(W.T @ Y.T)  # (H, N)
    G = np.ascontiguousarray(W.T @ W)  # (H, H)
    yy = np.einsum("nd,nd->n", Y, Y)
    inv2s2 = 1.0 / (2.0 * sigma**2)
    lse = _gray_kernel(WtY, G, np.log(pi), np.log1p(-pi), inv2s2)
    const = -0.5 * D * np.log(2 * np.pi * sigma**2)
    return float(np.mean(lse - yy * inv2s2 + const))


def exact_loglik_discrete(
    Y: np.ndarray,
    W: np.ndarray,
    values: np.ndarray,
    probs: np.ndarray,
    sigma: float,
    chunk: int = 4096,
) -> float:
    """Mean exact log-likelihood per point of a linear model with discrete latents.

    Parameters
    ----------
    Y : ndarray of shape (N, D)
    W : ndarray of shape (D, H)
    values : ndarray of shape (V,)
        The values each latent takes (TSC: 0, 1, -1; DSC: its value set).
    probs : ndarray of shape (V,)
        Their prior probabilities (independent latents).
    sigma : float
        Noise standard deviation.
    chunk : int, default=4096
        States per block (memory: chunk × N floats).

    Returns
    -------
    float
        (1/N) Σ_n log Σ_s p(s) N(y_n; W s, σ² I) over all V^H states.

    Notes
    -----
    The states are enumerated in blocks; per block the log-joints of all points are one
    product with Wᵀy, and the running log-sum-exp is updated per point. 3^10 states x 300
    points take well under a second, 4^10 a few seconds.
    """
    _, D = Y.shape
    H = W.shape[1]
    values = np.asarray(values, dtype=np.float64)
    V = values.size
    if V**H > 2**21:
        raise ValueError(f"exact log-likelihood over {V}^H states needs {V}^H <= 2^21; got H={H}.")
    log_p = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-300, None))
    WtY = W.T @ Y.T  # (H, N)
    G = W.T @ W
    inv2s2 = 1.0 / (2.0 * sigma**2)
    digits = V ** np.arange(H)
    total = np.full(Y.shape[0], -np.inf)
    for start in range(0, V**H, chunk):
        code = np.arange(start, min(start + chunk, V**H))
        idx = (code[:, None] // digits[None, :]) % V  # (K, H) value indices
        S = values[idx]
        prior = log_p[idx].sum(axis=1)
        quad = np.einsum("kh,hg,kg->k", S, G, S)
        lj = (prior - quad * inv2s2)[:, None] + 2.0 * inv2s2 * (S @ WtY)  # (K, N)
        total = np.logaddexp(total, _column_logsumexp(lj))
    yy = np.einsum("nd,nd->n", Y, Y)
    const = -0.5 * D * np.log(2 * np.pi * sigma**2)
    return float(np.mean(total - yy * inv2s2 + const))


def exact_loglik_ternary(
    Y: np.ndarray, W: np.ndarray, pi: float, sigma: float, chunk: int = 4096
) -> float:
    """Mean exact log-likelihood per point of TSC over all 3^H states.

    Parameters
    ----------
    Y : ndarray of shape (N, D)
    W : ndarray of shape (D, H)
    pi, sigma : float
        p(s_h = ±1) = π/2 each, p(s_h = 0) = 1 − π; noise standard deviation.
    chunk : int, default=4096

    Returns
    -------
    float
        (1/N) Σ_n log Σ_s p(s) N(y_n; W s, σ² I), by :func:`exact_loglik_discrete`.
    """
    pi = float(np.clip(pi, 1e-12, 1 - 1e-12))
    probs = np.array([1.0 - pi, pi / 2.0, pi / 2.0])
    return exact_loglik_discrete(Y, W, np.array([0.0, 1.0, -1.0]), probs, sigma, chunk)


def _column_logsumexp(lj: np.ndarray) -> np.ndarray:
    """log Σ_k exp(lj[k, n]) per column of a finite (K, N) array, overwriting ``lj``: scipy's
    ``logsumexp`` without its checks and copies (on the 10x10 exact log-likelihoods it took
    ~55 of the ~75 s that two of them cost, this ~5)."""
    peak = lj.max(axis=0)
    np.subtract(lj, peak, out=lj)
    np.exp(lj, out=lj)
    return peak + np.log(lj.sum(axis=0))


def _max_images(W: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Noise-free images of the states given by ``bits`` (K, H) under the hard maximum.

    The causes are applied from the last to the first, each replacing the image where its
    magnitude is at least the image's: ties go to the first cause, as in
    ``prosper.data.bars``.
    """
    clean = np.zeros((bits.shape[0], W.shape[0]))
    for h in range(W.shape[1] - 1, -1, -1):
        on = bits[:, h]
        clean[on] = np.where(np.abs(W[:, h]) >= np.abs(clean[on]), W[:, h], clean[on])
    return clean


def exact_loglik_max(
    Y: np.ndarray, W: np.ndarray, pi: float, sigma: float, low_bits: int = 12
) -> float:
    """Mean exact log-likelihood per point of MCA / MMCA (hard maximum) over all 2^H states.

    Parameters
    ----------
    Y : ndarray of shape (N, D)
    W : ndarray of shape (D, H)
    pi, sigma : float
    low_bits : int, default=12
        States per block: 2^low_bits (memory: 2^low_bits × max(D, N) floats).

    Returns
    -------
    float
        (1/N) Σ_n log Σ_s p(s) N(y_n; W̄(s), σ² I), where W̄_d(s) is the active cause of
        largest magnitude, with its sign (MCA's W >= 0: the maximum); ties go to the first
        cause, as in ``prosper.data.bars``.

    Notes
    -----
    The generative model's hard maximum, not the ρ-smoothed maximum the E-step uses while
    annealing. The states are enumerated in blocks that share their last H - low_bits causes:
    the images of the first low_bits causes are built once, a block combines them with its
    shared causes' image (the first causes win ties) and takes the log-joints of all points
    in one product. H = 20, D = 100, 300 points: a few seconds on one thread.
    """
    _, D = Y.shape
    H = W.shape[1]
    if H > H_EXACT:
        raise ValueError(f"exact max-model log-likelihood needs H <= {H_EXACT}; got H={H}.")
    pi = float(np.clip(pi, 1e-12, 1 - 1e-12))
    L = min(H, low_bits)
    low = ((np.arange(2**L)[:, None] >> np.arange(L)[None, :]) & 1).astype(bool)
    low_clean = _max_images(W[:, :L], low)  # (2^L, D)
    low_k = low.sum(axis=1)
    high = ((np.arange(2 ** (H - L))[:, None] >> np.arange(H - L)[None, :]) & 1).astype(bool)
    high_clean = _max_images(W[:, L:], high)  # (2^(H-L), D)
    inv2s2 = 1.0 / (2.0 * sigma**2)
    log_odds = np.log(pi) - np.log1p(-pi)
    Yt = np.ascontiguousarray(Y.T)
    total = np.full(Y.shape[0], -np.inf)
    for base, k_high in zip(high_clean, high.sum(axis=1), strict=True):
        clean = np.where(np.abs(low_clean) >= np.abs(base), low_clean, base)
        prior = (low_k + k_high) * log_odds + H * np.log1p(-pi)
        lj = (prior - inv2s2 * np.einsum("kd,kd->k", clean, clean))[:, None] + 2.0 * inv2s2 * (
            clean @ Yt
        )
        total = np.logaddexp(total, _column_logsumexp(lj))
    yy = np.einsum("nd,nd->n", Y, Y)
    const = -0.5 * D * np.log(2 * np.pi * sigma**2)
    return float(np.mean(total - yy * inv2s2 + const))


def exact_loglik_gsc(
    Y: np.ndarray,
    W: np.ndarray,
    pi: np.ndarray,
    mu: np.ndarray,
    psi: np.ndarray,
    sigma: float,
) -> float:
    """Mean exact log-likelihood per point of GSC over all 2^H spike patterns.

    Parameters
    ----------
    Y : ndarray of shape (N, D)
    W : ndarray of shape (D, H)
    pi, mu, psi : ndarray of shape (H,)
        Spike probabilities, slab means and slab variances.
    sigma : float

    Returns
    -------
    float
        (1/N) Σ_n log Σ_b p(b) N(y_n; W_b μ_b, σ² I + W_b diag(Ψ_b) W_bᵀ): the slab
        integrated out exactly per pattern b.

    Notes
    -----
    One D x D Cholesky factorisation per pattern (a Python loop over 2^H patterns): H <= 12.
    """
    N, D = Y.shape
    H = W.shape[1]
    if H > 12:
        raise ValueError(f"exact GSC log-likelihood needs H <= 12; got H={H}.")
    pi = np.clip(np.broadcast_to(np.asarray(pi, dtype=np.float64), (H,)), 1e-12, 1 - 1e-12)
    mu = np.broadcast_to(np.asarray(mu, dtype=np.float64), (H,))
    psi = np.broadcast_to(np.asarray(psi, dtype=np.float64), (H,))
    out = np.empty((2**H, N))
    for code in range(2**H):
        b = ((code >> np.arange(H)) & 1).astype(bool)
        Wb = W[:, b]
        C = sigma**2 * np.eye(D) + (Wb * psi[b]) @ Wb.T
        L = np.linalg.cholesky(C)
        r = np.linalg.solve(L, (Y - Wb @ mu[b]).T)  # (D, N)
        logdet = 2.0 * np.sum(np.log(np.diag(L)))
        prior = np.sum(np.log(pi[b])) + np.sum(np.log1p(-pi[~b]))
        out[code] = prior - 0.5 * (np.einsum("dn,dn->n", r, r) + logdet + D * np.log(2 * np.pi))
    return float(np.mean(logsumexp(out, axis=0)))


def match_bars(
    W: np.ndarray, W_true: np.ndarray, threshold: float = 0.9, signed: bool = False
) -> int:
    """Number of generating bars matched by a learned column with cosine > threshold.

    Parameters
    ----------
    W : ndarray of shape (D, H)
    W_true : ndarray of shape (D, H_true)
    threshold : float, default=0.9
    signed : bool, default=False
        Columns are defined up to sign (ternary latents): compare absolute cosines.

    Returns
    -------
    int
        Bars whose column in the optimal one-to-one assignment (maximal summed cosine) has
        cosine similarity above ``threshold``.
    """
    Wn = W / np.maximum(np.linalg.norm(W, axis=0, keepdims=True), 1e-12)
    Tn = W_true / np.linalg.norm(W_true, axis=0, keepdims=True)
    cos = Tn.T @ Wn  # (H_true, H)
    if signed:
        cos = np.abs(cos)
    rows, cols = linear_sum_assignment(-cos)
    return int(np.sum(cos[rows, cols] > threshold))


#: DSC's bars variant (benchmarks/bench_discrete.py): values 0..3 in units of 5, σ = 1
DSC_VALUES = (0.0, 1.0, 2.0, 3.0)
#: GSC's bars variant (examples/gsc_bars.toml): bars of height 1, slab N(5, 1), σ = 0.5
GSC_MU, GSC_PSI, GSC_SIGMA = 5.0, 1.0, 0.5
#: the exact log-likelihoods of TSC, DSC and GSC (enumerations of V^H states): up to this H
H_EXACT_SMALL = 12

#: each model on its own bars variant: estimator, data generator and its arguments, the
#: model's own arguments (the data's value set; not a learning setting), whether columns are
#: defined up to sign, and the exact log-likelihood (None: not computed)
MODELS: dict[str, dict[str, Any]] = {
    "bsc": {"estimator": "BSC", "bars": {}, "signed": False, "exact": "binary"},
    "tsc": {"estimator": "TSC", "bars": {"signed": True}, "signed": True, "exact": "ternary"},
    # discrete amplitudes 5, 10, 15, each with probability π/3
    "dsc": {
        "estimator": "DSC",
        "bars": {"values": DSC_VALUES, "amplitude": 5.0, "sigma": 1.0},
        "fit": {"values": DSC_VALUES},
        "signed": False,
        "exact": "discrete",
    },
    # bars combined by the maximum where they cross
    "mca": {"estimator": "MCA", "bars": {"combine": "max"}, "signed": False, "exact": "max"},
    # bars with a fixed sign per bar (+ for even, - for odd h), the larger magnitude wins
    # (ties: the horizontal bar), binary causes: H = number of bars
    "mmca": {
        "estimator": "MMCA",
        "generator": "fixed_sign_max",
        "bars": {},
        "signed": False,
        "exact": "max",
    },
    # spike-and-slab bars: each bar present with π, intensity N(5, 1); W defined up to scale
    # and sign (absolute cosine)
    "gsc": {"estimator": "GSC", "generator": "gsc", "bars": {}, "signed": True, "exact": "gsc"},
}


def _fixed_sign_max_bars(size: int, n: int, pi: float, seed: int):
    """MMCA's bars variant: a fixed sign per bar, the active bar of largest magnitude wins."""
    from prosper.data import bars

    base = bars(size=size, n_samples=n, pi=pi, amplitude=AMPLITUDE, sigma=SIGMA, random_state=seed)
    signs = np.where(np.arange(2 * size) % 2 == 0, 1.0, -1.0)
    W = base.W * signs
    contrib = base.S[:, None, :] * W[None, :, :]  # (N, D, H)
    winner = np.abs(contrib).argmax(axis=2)
    clean = np.take_along_axis(contrib, winner[:, :, None], axis=2)[:, :, 0]
    noise = np.random.default_rng([seed, 1]).standard_normal(clean.shape)
    return SimpleNamespace(Y=clean + SIGMA * noise, W=W, S=base.S, pi=base.pi, sigma=SIGMA)


def _data(size: int, k_pi: int, n: int, seed: int, model: str = "bsc"):
    H = 2 * size
    spec = MODELS[model]
    generator = spec.get("generator", "bars")
    if generator == "gsc":
        from prosper.data.spike_slab import gsc_data

        data = gsc_data(
            n + N_TEST,
            D=size * size,
            H=H,
            pi=k_pi / H,
            mu=GSC_MU,
            psi=GSC_PSI,
            sigma=GSC_SIGMA,
            dictionary="bars",
            random_state=seed,
        )
    elif generator == "fixed_sign_max":
        data = _fixed_sign_max_bars(size, n + N_TEST, k_pi / H, seed)
    else:
        from prosper.data import bars

        kwargs = {"amplitude": AMPLITUDE, "sigma": SIGMA, **spec["bars"]}
        data = bars(size=size, n_samples=n + N_TEST, pi=k_pi / H, random_state=seed, **kwargs)
    return data, data.Y[:n], data.Y[n:]


def _params(model: str, source: Any, fitted: bool) -> dict[str, Any]:
    """The parameters the exact log-likelihood needs, of a fitted estimator or the data."""
    kind = MODELS[model]["exact"]
    suffix = "_" if fitted else ""
    out = {
        "W": getattr(source, "W" + suffix),
        "pi": getattr(source, "pi" + suffix),
        "sigma": float(getattr(source, "sigma" + suffix)),
    }
    if kind == "gsc":
        out.update(mu=getattr(source, "mu" + suffix), psi=getattr(source, "psi" + suffix))
    if kind == "discrete":
        out["values"] = np.asarray(DSC_VALUES)
        if not fitted:
            out["pi"] = source.value_probs
    return out


def _max_oracle(Y: np.ndarray, S: np.ndarray, W_true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Complete-data estimate of W under the hard maximum, and the images it gives.

    W_dh is the mean of y_d over the points where cause h is active and either wins pixel d
    under the generating W or no active cause covers d (the pixels a learner must also
    estimate as zero). Where two causes of equal generating magnitude meet, the first
    wins; the later one's estimate is clipped below the first's there, so that the estimate
    keeps the generating winners (the complete-data likelihood does not see the loser's
    value where both are active).
    """
    H = S.shape[1]
    contrib = S[:, None, :] * W_true[None, :, :]  # (N, D, H)
    winner = np.abs(contrib).argmax(axis=2)
    explained = np.take_along_axis(contrib, winner[:, :, None], axis=2)[:, :, 0] != 0
    W = np.zeros_like(W_true)
    for h in range(H):
        won = ((winner == h) & explained) | (~explained & (S[:, h, None] != 0))  # (N, D)
        count = won.sum(axis=0)
        W[:, h] = np.where(count > 0, (Y * won).sum(axis=0) / np.maximum(count, 1), 0.0)
    mag = np.abs(W_true)
    for h in range(H):
        for g in range(h + 1, H):
            tie = (mag[:, h] == mag[:, g]) & (mag[:, h] > 0) & (np.abs(W[:, g]) >= np.abs(W[:, h]))
            W[tie, g] = np.sign(W[tie, g]) * np.abs(W[tie, h]) * (1.0 - 1e-9)
    return W, _max_images(W, S != 0)


def _oracle_params(model: str, data: Any, n: int) -> dict[str, Any] | None:
    """Parameters learned with the true latents of the n training points known.

    The complete-data maximum-likelihood estimate (least squares for the linear models,
    :func:`_max_oracle` for the maximum): the gap of its exact log-likelihood to the
    generating parameters' is what estimation from n points costs any learner, the floor
    of a fitted model's gap at this N. None where not implemented (GSC).
    """
    kind = MODELS[model]["exact"]
    Y, S = data.Y[:n], np.asarray(data.S[:n], dtype=np.float64)
    if kind in ("binary", "ternary", "discrete"):
        W = np.linalg.lstsq(S, Y, rcond=None)[0].T
        clean = S @ W.T
    elif kind == "max":
        W, clean = _max_oracle(Y, S, data.W)
    else:
        return None
    out: dict[str, Any] = {"W": W, "sigma": float(np.sqrt(np.mean((Y - clean) ** 2)))}
    if kind == "discrete":
        out["values"] = np.asarray(DSC_VALUES)
        out["pi"] = (S[:, :, None] == out["values"]).mean(axis=(0, 1))
    else:
        out["pi"] = float(np.mean(S != 0))
    return out


def run_oracle_task(task: dict[str, Any]) -> dict[str, Any]:
    """The gap of the complete-data estimate (no fit): the floor of a fit's gap at this N."""
    size, k_pi, n, seed = task["size"], task["k_pi"], task["n"], task["seed"]
    name = task["model"]
    H = 2 * size
    data, _, Y_test = _data(size, k_pi, n, seed, name)
    exact = _exact(name, H)
    oracle = _oracle_params(name, data, n)
    if exact is None or oracle is None:
        raise ValueError(f"no exact log-likelihood or complete-data estimate for {name} at H={H}")
    rec = dict(task, key=_key(task), H=H, commit=_commit())
    rec["ll_oracle_gap"] = exact(Y_test, _params(name, data, fitted=False)) - exact(Y_test, oracle)
    return rec


def _exact(model: str, H: int):
    """The exact log-likelihood of ``model`` at H latents as a function of (Y, params), or None."""
    kind = MODELS[model]["exact"]
    if kind == "binary" and H <= H_EXACT:
        return lambda Y, p: exact_loglik(Y, p["W"], float(p["pi"]), p["sigma"])
    if kind == "max" and H <= H_EXACT:
        return lambda Y, p: exact_loglik_max(Y, p["W"], float(p["pi"]), p["sigma"])
    if H > H_EXACT_SMALL:
        return None
    if kind == "ternary":
        return lambda Y, p: exact_loglik_ternary(Y, p["W"], float(p["pi"]), p["sigma"])
    if kind == "discrete":
        return lambda Y, p: exact_loglik_discrete(Y, p["W"], p["values"], p["pi"], p["sigma"])
    if kind == "gsc":
        return lambda Y, p: exact_loglik_gsc(Y, p["W"], p["pi"], p["mu"], p["psi"], p["sigma"])
    return None


def _commit() -> str | None:
    """The git commit of the benchmarked code (None outside a git checkout)."""
    import subprocess

    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def _key(task: dict[str, Any]) -> str:
    key = "{mode}|{config}|{size}|{k_pi}|{n}|{seed}|{n_iter}".format(**task)
    # BSC's keys stay those of the records written before other models were added
    model = task.get("model", "bsc")
    return key if model == "bsc" else f"{model}|{key}"


def run_grid_task(task: dict[str, Any]) -> dict[str, Any]:
    """Fit one configuration on one bars problem; return the JSON record."""
    import prosper

    size, k_pi, n, seed = task["size"], task["k_pi"], task["n"], task["seed"]
    name = task.get("model", "bsc")
    spec = MODELS[name]
    H = 2 * size
    data, Y, Y_test = _data(size, k_pi, n, seed, name)
    kwargs = dict(CONFIGS[task["config"]])
    estimator = getattr(prosper, spec["estimator"])
    model = estimator(
        H=H,
        n_iter=task["n_iter"],
        random_state=seed,
        progress=False,
        **spec.get("fit", {}),
        **kwargs,
    )
    t0 = time.perf_counter()
    model.fit(Y)
    seconds = time.perf_counter() - t0
    rec = dict(task)
    rec.update(
        key=_key(task),
        H=H,
        pi=k_pi / H,
        settings=kwargs,
        n_bars=match_bars(model.W_, data.W, signed=spec["signed"]),
        pi_learned=np.asarray(model.pi_, dtype=float).tolist(),
        sigma_learned=float(model.sigma_),
        seconds_fit=seconds,
        seconds_estep_median=float(np.median(model.history_["seconds_estep"])),
        n_iter_run=int(model.n_iter_),
        load=os.getloadavg()[0],
        commit=_commit(),
    )
    rec["recovered"] = rec["n_bars"] == H
    exact = _exact(name, H)
    if exact is not None:
        ll = exact(Y_test, _params(name, model, fitted=True))
        ll_true = exact(Y_test, _params(name, data, fitted=False))
        rec.update(ll=ll, ll_true=ll_true, ll_gap=ll_true - ll)
    return rec


def run_ttq_task(task: dict[str, Any]) -> dict[str, Any]:
    """Fit until the held-out exact log-likelihood is within 0.5 nats of the truth's."""
    from prosper import BSC

    size, k_pi, n, seed = task["size"], task["k_pi"], task["n"], task["seed"]
    H = 2 * size
    data, Y, Y_test = _data(size, k_pi, n, seed)
    ll_true = exact_loglik(Y_test, data.W, data.pi, data.sigma)
    trace: list[tuple[int, float, float]] = []
    clock = {"fit": 0.0, "last": 0.0, "estep": []}

    def callback(it, learner, metrics):
        # fit time since the previous callback returned, without the evaluation itself
        now = time.perf_counter()
        clock["fit"] += now - clock["last"]
        clock["estep"].append(metrics["seconds_estep"])
        p = learner.params
        ll = exact_loglik(Y_test, p["W"], float(p["pi"]), float(p["sigma"]))
        trace.append((it, clock["fit"], ll))
        clock["last"] = time.perf_counter()
        return ll_true - ll < 0.5

    kwargs = dict(CONFIGS[task["config"]])
    # compile the kernels (or load them from numba's cache) before the clock starts: the
    # first fit of a worker would count a minute of compilation as time to quality; 12
    # iterations on 200 points also pass one check of the repairs (iteration 5)
    BSC(H=H, n_iter=12, random_state=seed, progress=False, **kwargs).fit(Y[:200])
    model = BSC(
        H=H,
        n_iter=task["n_iter"],
        random_state=seed,
        progress=False,
        callback=callback,
        **kwargs,
    )
    clock["last"] = time.perf_counter()
    model.fit(Y)
    reached = [t for t in trace if ll_true - t[2] < 0.5]
    rec = dict(task)
    rec.update(
        key=_key(task),
        H=H,
        settings=kwargs,
        ll_true=ll_true,
        reached=bool(reached),
        seconds_to_quality=reached[0][1] if reached else None,
        iterations_to_quality=reached[0][0] + 1 if reached else None,
        seconds_estep_median=float(np.median(clock["estep"])),
        n_bars=match_bars(model.W_, data.W),
        trace=trace,
        load=os.getloadavg()[0],
        commit=_commit(),
    )
    return rec


def _run(task: dict[str, Any]) -> dict[str, Any]:
    fn = {"ttq": run_ttq_task, "grid": run_grid_task, "oracle": run_oracle_task}[task["mode"]]
    try:
        return fn(task)
    except Exception as exc:  # a failed run is recorded, not fatal for the grid
        log.exception("run %s failed", _key(task))
        return {**task, "key": _key(task), "error": repr(exc)}


# ----------------------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------------------


def _seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _execute(tasks: list[dict[str, Any]], path: Path, workers: int) -> None:
    done = {r["key"] for r in _read(path) if "error" not in r}
    todo = [t for t in tasks if _key(t) not in done]
    log.info(
        "%d runs, %d already in %s, %d to do", len(tasks), len(tasks) - len(todo), path, len(todo)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, maxtasksperchild=20) as pool, open(path, "a", encoding="utf-8") as f:
        for rec in pool.imap_unordered(_run, todo):
            f.write(json.dumps(rec) + "\n")
            f.flush()
            log.info(
                "%s: bars %s/%s gap %s %.1f s",
                rec["key"],
                rec.get("n_bars"),
                rec.get("H"),
                None
                if rec.get("ll_gap", rec.get("ll_oracle_gap")) is None
                else round(rec.get("ll_gap", rec.get("ll_oracle_gap")), 3),
                rec.get("seconds_fit") or rec.get("seconds_to_quality") or float("nan"),
            )


def summary(paths: list[Path], configs: list[str] | None, models: list[str] | None = None) -> str:
    """Markdown table: recovery rate and median LL gap per grid point and configuration."""
    rows: dict[tuple, list[dict[str, Any]]] = {}
    oracle: dict[tuple, float] = {}
    for r in itertools.chain.from_iterable(_read(path) for path in paths):
        if "error" in r or (models and r.get("model", "bsc") not in models):
            continue
        if r.get("mode") == "oracle":
            oracle[(r["model"], r["size"], r["k_pi"], r["n"], r["seed"])] = r["ll_oracle_gap"]
            continue
        if configs and r["config"] not in configs:
            continue
        group = (r.get("model", "bsc"), r["size"], r["k_pi"], r["n"], r["n_iter"], r["config"])
        rows.setdefault(group, []).append(r)
    lines = [
        "| model | bars | π | N | iters | configuration | recovered | median LL gap (ok runs) "
        "| complete-data gap, same seeds (median) | bars found by failed runs | median s/fit "
        "| median s/E-step |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (name, size, k_pi, n, n_iter, config), rs in sorted(rows.items()):
        ok = [r for r in rs if r["recovered"]]
        gaps = [r["ll_gap"] for r in ok if r.get("ll_gap") is not None]
        gap = f"{np.median(gaps):.3f}" if gaps else "–"
        floors = [
            oracle[key]
            for key in ((name, size, k_pi, n, r["seed"]) for r in ok if r.get("ll_gap") is not None)
            if key in oracle
        ]
        floor = f"{np.median(floors):.3f} ({len(floors)})" if floors else "–"
        failed = sorted(r["n_bars"] for r in rs if not r["recovered"])
        failed_text = ", ".join(map(str, failed)) if failed else "–"
        lines.append(
            f"| {name} | {size}x{size} | {k_pi}/H | {n} | {n_iter} | {config} "
            f"| {len(ok)}/{len(rs)} | {gap} | {floor} | {failed_text} "
            f"| {np.median([r['seconds_fit'] for r in rs]):.1f} "
            f"| {1e3 * np.median([r['seconds_estep_median'] for r in rs]):.1f} ms |"
        )
    return "\n".join(lines)


#: the grid's targets (issue #11): share of seeds that find every bar with the defaults
TARGETS = {"bsc": 0.95, "tsc": 0.9, "dsc": 0.9, "mca": 0.9, "mmca": 0.9, "gsc": 0.9}
#: the grid of the issue: bar sizes (H = 10, 20, 32), N, π = k/H, and seeds per grid point
GRID_SIZES, GRID_NS, GRID_PIS, GRID_SEEDS = (5, 10, 16), (2000, 10000), (1, 2), 20


def _load_manifest(path: Path) -> dict[str, Any]:
    """The manifest of the records that measure each model's current defaults (TOML)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib
    if not path.exists():
        raise SystemExit(f"manifest {path} not found")
    with open(path, "rb") as f:
        manifest = tomllib.load(f)
    if not manifest.get("models"):
        raise SystemExit(f"{path}: no [models.<name>] tables")
    unknown = set(manifest["models"]) - set(MODELS)
    if unknown:
        raise SystemExit(f"{path}: unknown models {sorted(unknown)}; known: {sorted(MODELS)}")
    for name, entry in manifest["models"].items():
        for source in entry.get("records", []):
            if not (path.parent / source["file"]).exists():
                raise SystemExit(f"{path}: [{name}] names {source['file']}, which is missing")
    return manifest


def _grid_cells(path: Path) -> dict[tuple, list[dict[str, Any]]]:
    """Runs per (model, size, N, k_pi) of the records that the manifest at ``path`` names;
    a later file's run of the same grid point and seed replaces an earlier one's."""
    manifest = _load_manifest(path)
    runs: dict[tuple, dict[str, Any]] = {}
    for name, entry in manifest["models"].items():
        for source in entry.get("records", []):
            for r in _read(path.parent / source["file"]):
                if (
                    "error" in r
                    or r.get("mode") != "grid"
                    or r.get("model", "bsc") != name
                    or r["config"] != source.get("config", "default")
                    or r["n_iter"] != 100
                ):
                    continue
                runs[(name, r["size"], r["n"], r["k_pi"], r["seed"])] = r
    cells: dict[tuple, list[dict[str, Any]]] = {
        (name, size, n, k_pi): []
        for name in manifest["models"]
        for size, n, k_pi in itertools.product(GRID_SIZES, GRID_NS, GRID_PIS)
    }
    for key, r in runs.items():
        cells[key[:4]].append(r)
    return cells


def grid_table(path: Path, rst: bool = False) -> str:
    """The whole grid with each model's current defaults, as Markdown (or a reST list-table).

    The manifest at ``path`` names, per model, the record files (and the configuration in
    them that is the model's current default). A Markdown cell reads ``found/runs`` with the
    median (max) exact log-likelihood gap of the successful runs where it is known; ``·``
    where nothing ran.
    """
    cells = _grid_cells(path)
    ok = {key: sum(r["recovered"] for r in rs) for key, rs in cells.items()}
    below = {key: ok[key] < TARGETS[key[0]] * len(rs) for key, rs in cells.items()}

    def found(key: tuple) -> str:
        if not cells[key]:
            return "·"
        text = f"{ok[key]}/{len(cells[key])}"
        return f"**{text}**" if below[key] else text

    if rst:
        lines = [
            ".. list-table::",
            "   :header-rows: 1",
            "",
            "   * - model",
            "     - N",
            "     - 5×5 (H = 10)",
            "     - 10×10 (H = 20)",
            "     - 16×16 (H = 32)",
        ]
        for name, n in dict.fromkeys((key[0], key[2]) for key in cells):
            lines += [f"   * - {name.upper()}", f"     - {n}"]
            lines += [
                "     - " + ", ".join(found((name, size, n, k_pi)) for k_pi in GRID_PIS)
                for size in GRID_SIZES
            ]
        return "\n".join(lines)
    lines = [
        "| model | bars | N | π = 1/H: found all bars | gap | π = 2/H: found all bars | gap |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, size, n in dict.fromkeys(key[:3] for key in cells):
        row = [name.upper(), f"{size}x{size}", str(n)]
        for k_pi in GRID_PIS:
            gaps = [
                r["ll_gap"]
                for r in cells[(name, size, n, k_pi)]
                if r["recovered"] and r.get("ll_gap") is not None
            ]
            gap = f"{np.median(gaps):.3f} ({max(gaps):.3f})" if gaps else "–"
            row += [found((name, size, n, k_pi)), gap if cells[(name, size, n, k_pi)] else "·"]
        lines.append("| " + " | ".join(row) + " |")
    complete = [key for key, rs in cells.items() if len(rs) >= GRID_SEEDS]
    lines += [
        "",
        f"{len(complete)} of {len(cells)} grid points have {GRID_SEEDS} or more seeds, "
        f"{sum(not below[key] for key in complete)} of them meet their model's target; "
        f"grid points below it (bold): {sum(below.values())}; "
        f"without runs (·): {sum(not rs for rs in cells.values())}.",
    ]
    return "\n".join(lines)


def ttq_summary(path: Path) -> str:
    """Markdown table: time to quality per configuration (median over seeds)."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for r in _read(path):
        if "error" not in r:
            rows.setdefault(r["config"], []).append(r)
    lines = [
        "| configuration | reached | median s to quality (all seeds, unreached = ∞) "
        "| median iterations | median s/E-step |",
        "|---|---|---|---|---|",
    ]
    for config, rs in sorted(rows.items()):
        t = [r["seconds_to_quality"] if r["reached"] else np.inf for r in rs]
        its = [r["iterations_to_quality"] for r in rs if r["reached"]]
        lines.append(
            f"| {config} | {sum(r['reached'] for r in rs)}/{len(rs)} | {np.median(t):.1f} "
            f"| {np.median(its) if its else '–'} "
            f"| {1e3 * np.median([r['seconds_estep_median'] for r in rs]):.1f} ms |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    grid = sub.add_parser("grid")
    grid.add_argument("--model", choices=sorted(MODELS), default="bsc")
    grid.add_argument("--sizes", type=int, nargs="+", default=list(GRID_SIZES))
    grid.add_argument("--pis", type=int, nargs="+", default=list(GRID_PIS), help="π = k/H")
    grid.add_argument("--ns", type=int, nargs="+", default=list(GRID_NS))
    grid.add_argument("--seeds", type=_seeds, default=_seeds(f"0-{GRID_SEEDS - 1}"))
    grid.add_argument("--configs", nargs="+", default=["et-T5p", "evo32-4-4-2-T3l"])
    grid.add_argument("--n-iter", type=int, default=100)
    grid.add_argument("--workers", type=int, default=2)
    grid.add_argument(
        "--records",
        default="states_grid.jsonl",
        help="file of JSON lines under benchmarks/results/ (one per session keeps merges apart)",
    )
    ttq = sub.add_parser("ttq")
    ttq.add_argument("--seeds", type=_seeds, default=_seeds("0-5"))
    ttq.add_argument("--configs", nargs="+", default=["ttq-evo32-r3", "ttq-et32-r3"])
    ttq.add_argument("--n-iter", type=int, default=100)
    ttq.add_argument("--workers", type=int, default=2)
    ttq.add_argument(
        "--records",
        default="states_ttq.jsonl",
        help="file of JSON lines under benchmarks/results/ (runs already in it are skipped)",
    )
    orc = sub.add_parser("oracle")
    orc.add_argument("--model", choices=sorted(MODELS), default="bsc")
    orc.add_argument("--sizes", type=int, nargs="+", default=[5, 10])
    orc.add_argument("--pis", type=int, nargs="+", default=[1, 2], help="π = k/H")
    orc.add_argument("--ns", type=int, nargs="+", default=[2000, 10000])
    orc.add_argument("--seeds", type=_seeds, default=_seeds("0-19"))
    orc.add_argument("--workers", type=int, default=2)
    orc.add_argument(
        "--records",
        default="states_oracle.jsonl",
        help="file of JSON lines under benchmarks/results/ (runs already in it are skipped)",
    )
    summ = sub.add_parser("summary")
    summ.add_argument("--configs", nargs="*", default=None)
    summ.add_argument("--records", nargs="+", default=["states_grid.jsonl"])
    summ.add_argument("--models", nargs="*", default=None)
    table = sub.add_parser("table")
    table.add_argument("--rst", action="store_true", help="a reST list-table for docs/")
    table.add_argument(
        "--manifest",
        default="grid_current.toml",
        help="TOML under benchmarks/results/ naming each model's records of its defaults",
    )
    sub.add_parser("list")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.mode == "list":
        for name, cfg in CONFIGS.items():
            print(f"{name}: {cfg}")
        return
    if args.mode == "table":
        print(grid_table(RESULTS / args.manifest, args.rst))
        return
    if args.mode == "summary":
        print(summary([RESULTS / r for r in args.records], args.configs, args.models))
        if (RESULTS / "states_ttq.jsonl").exists():
            print()
            print(ttq_summary(RESULTS / "states_ttq.jsonl"))
        return
    if args.workers > 2:
        log.warning("more than 2 workers on a shared 2-core machine distorts the timings")
    cmd = " ".join(sys.argv[1:] if argv is None else argv)
    print(f"command: python benchmarks/bench_states.py {cmd}")
    print(f"load (uptime): {os.getloadavg()}")
    if args.mode == "grid":
        tasks = [
            {
                "mode": "grid",
                "model": args.model,
                "config": c,
                "size": s,
                "k_pi": k,
                "n": n,
                "seed": seed,
                "n_iter": args.n_iter,
            }
            for c, s, k, n, seed in itertools.product(
                args.configs, args.sizes, args.pis, args.ns, args.seeds
            )
        ]
        # interleave configurations so that compared runs see the same load
        tasks.sort(key=lambda t: (t["size"], t["n"], t["k_pi"], t["seed"], t["config"]))
        _execute(tasks, RESULTS / args.records, args.workers)
        print(summary([RESULTS / args.records], args.configs, [args.model]))
    elif args.mode == "oracle":
        tasks = [
            {
                "mode": "oracle",
                "model": args.model,
                "config": "complete-data",
                "size": s,
                "k_pi": k,
                "n": n,
                "seed": seed,
                "n_iter": 0,
            }
            for s, k, n, seed in itertools.product(args.sizes, args.pis, args.ns, args.seeds)
        ]
        _execute(tasks, RESULTS / args.records, args.workers)
    else:
        tasks = [
            {
                "mode": "ttq",
                "config": c,
                "size": 10,
                "k_pi": 2,
                "n": 5000,
                "seed": seed,
                "n_iter": args.n_iter,
            }
            for seed, c in itertools.product(args.seeds, args.configs)
        ]
        _execute(tasks, RESULTS / args.records, args.workers)
        print(ttq_summary(RESULTS / args.records))


if __name__ == "__main__":
    main()
