"""The numba GSC E-step kernel against the NumPy reference of GSCModel, to 1e-10.

The NumPy E-step (``GSCModel.estep_batch`` without a kernel-bearing backend) is itself
checked against dense brute force in test_gsc.py; here every output of the kernel (log
marginals, sy, ss, b, dz, dz2, yy, n, ⟨s⟩, ⟨b⟩) must match it on candidate sets with and
without preselection, annealing, data masks, float32 data, several blocks of points and
chunks, and the edge cases γ = 1 (no table), B = 1 and Ψ_h = 0.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

pytest.importorskip("numba")

from prosper.backends import numba_gsc
from prosper.data.spike_slab import gsc_data
from prosper.models.gsc import GSCModel
from prosper.solvers.states import ExpectationTruncation

STAT_KEYS = ("sy", "ss", "b", "dz", "dz2", "yy", "n")


def _problem(D, H, Hprime, gamma, N, seed=0, psi=None, dtype=np.float64):
    rng = np.random.default_rng(seed)
    params = {
        "W": rng.standard_normal((D, H)),
        "pi": rng.uniform(0.1, 0.6, H),
        "mu": rng.uniform(-2.0, 2.0, H),
        "psi": rng.uniform(0.2, 2.0, H) if psi is None else np.asarray(psi, dtype=float),
        "sigma": np.asarray(0.8),
    }
    Y = gsc_data(N, D=D, H=H, pi=0.3, mu=1.0, psi=0.5, sigma=0.8, random_state=seed + 1).Y
    model = GSCModel(H, D)
    states = ExpectationTruncation(H, Hprime, gamma, model.values)
    Y = Y.astype(dtype)
    batch = states.select(None if states.full else model.preselection_scores(Y, params), N)
    return model, states, batch, params, Y


def _reference(model, Y, batch, states, params, beta, prior_beta, mask, accumulate):
    """The model's NumPy E-step (backend None has no kernel)."""
    return model.estep_batch(Y, states, params, beta, prior_beta, mask, accumulate, None)


def _close(a, b, tol=1e-10):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape
    scale = max(1.0, float(np.abs(b).max())) if b.size else 1.0
    np.testing.assert_allclose(a, b, rtol=0, atol=tol * scale)


def _check(lm, stats, ref_lm, ref_stats, tol=1e-10):
    _close(lm, ref_lm, tol)
    if ref_stats is None:
        assert stats is None
        return
    assert set(stats) == set(ref_stats)
    for key in STAT_KEYS:
        _close(stats[key], ref_stats[key], tol)


@pytest.mark.parametrize(
    ("D", "H", "Hprime", "gamma", "N"),
    [
        (7, 5, 5, 5, 25),  # full enumeration H' = γ = H
        (6, 3, 3, 3, 10),  # full enumeration, tiny
        (10, 8, 6, 1, 30),  # γ = 1: zero and singletons only, no table
        (10, 9, 6, 2, 40),
        (12, 10, 6, 3, 40),
        (12, 10, 7, 4, 40),
        (9, 7, 5, 3, 1),  # B = 1
    ],
)
def test_kernel_matches_numpy_estep(D, H, Hprime, gamma, N):
    model, states, batch, params, Y = _problem(D, H, Hprime, gamma, N)
    ref = _reference(model, Y, batch, states, params, 1.0, 1.0, None, True)
    _check(*numba_gsc.gsc_estep(Y, params, batch), *ref)
    ref_s, ref_b = model.posterior_moments(Y, batch, params)
    mean_s, mean_b = numba_gsc.gsc_estep(Y, params, batch, moments_only=True)
    _close(mean_s, ref_s)
    _close(mean_b, ref_b)
    assert np.all(mean_b <= 1.0)


@pytest.mark.parametrize(("beta", "prior_beta"), [(0.4, 0.4), (0.3, 1.0), (0.6, 0.8)])
def test_annealing_and_mask(beta, prior_beta):
    model, states, batch, params, Y = _problem(11, 9, 6, 3, 50, seed=3)
    rng = np.random.default_rng(4)
    mask = rng.uniform(0.0, 1.0, 50) * (rng.random(50) > 0.3)  # with exact zeros
    assert np.any(mask == 0)
    ref = _reference(model, Y, batch, states, params, beta, prior_beta, mask, True)
    _check(*numba_gsc.gsc_estep(Y, params, batch, beta, prior_beta, mask), *ref)
    # the tempered weights really differ from the untempered ones
    plain = numba_gsc.gsc_estep(Y, params, batch, 1.0, 1.0, mask)[1]
    assert np.abs(plain["b"] - ref[1]["b"]).max() > 1e-3


@pytest.mark.parametrize("threads", [1, 2])
def test_several_blocks_and_chunks(threads):
    # more points than a block (the SIMD dimension of the kernel's scratch), the last block
    # partial, split over chunks: nothing carries over between blocks or chunks
    import numba

    N = 2 * numba_gsc._BLOCK + 13
    model, states, batch, params, Y = _problem(12, 10, 7, 4, N, seed=9)
    rng = np.random.default_rng(10)
    mask = rng.uniform(0.0, 1.0, N)
    old = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        for beta, prior_beta, m in [(1.0, 1.0, None), (0.5, 0.7, mask)]:
            ref = _reference(model, Y, batch, states, params, beta, prior_beta, m, True)
            _check(*numba_gsc.gsc_estep(Y, params, batch, beta, prior_beta, m), *ref)
        ref_s, ref_b = model.posterior_moments(Y, batch, params)
        mean_s, mean_b = numba_gsc.gsc_estep(Y, params, batch, moments_only=True)
        _close(mean_s, ref_s)
        _close(mean_b, ref_b)
    finally:
        numba.set_num_threads(old)


def test_log_marginals_only():
    model, states, batch, params, Y = _problem(10, 8, 6, 4, 30, seed=5)
    ref_lm, ref_stats = _reference(model, Y, batch, states, params, 0.5, 0.5, None, False)
    lm, stats = numba_gsc.gsc_estep(Y, params, batch, 0.5, 0.5, None, accumulate=False)
    assert ref_stats is None and stats is None
    _close(lm, ref_lm)


def test_zero_slab_variance():
    # Ψ_h = 0 (a spike-only latent) and Ψ_h tiny: pivots at their bound 1
    psi = [0.0, 1e-14, 1.0, 0.3, 0.7, 0.0]
    model, states, batch, params, Y = _problem(8, 6, 5, 3, 30, seed=6, psi=psi)
    ref = _reference(model, Y, batch, states, params, 1.0, 1.0, None, True)
    lm, stats = numba_gsc.gsc_estep(Y, params, batch)
    _check(lm, stats, *ref)
    assert all(np.all(np.isfinite(v)) for v in stats.values())


def test_float32_data():
    model, states, _, params, Y = _problem(12, 10, 6, 3, 40, seed=7)
    Y32 = Y.astype(np.float32)
    batch32 = states.select(model.preselection_scores(Y32, params), Y.shape[0])
    # same arithmetic as the NumPy path with float32 data (Wᵀy and sy at float32)
    ref32 = _reference(model, Y32, batch32, states, params, 1.0, 1.0, None, True)
    lm, stats = numba_gsc.gsc_estep(Y32, params, batch32)
    _check(lm, stats, *ref32)
    assert lm.dtype == np.float64 and all(v.dtype == np.float64 for v in stats.values())
    # and the float64 result to float32 precision (same candidates)
    ref64 = _reference(model, Y32.astype(np.float64), batch32, states, params, 1, 1, None, True)
    _check(lm, stats, *ref64, tol=2e-5)


def test_empty_batch():
    _, _, batch, params, Y = _problem(8, 6, 4, 3, 5)
    empty = type(batch)(batch.I[:0], batch.table, batch.values, batch.H)
    lm, stats = numba_gsc.gsc_estep(Y[:0], params, empty)
    assert lm.shape == (0,) and float(stats["n"]) == 0.0
    assert np.all(stats["ss"] == 0) and stats["sy"].shape == (8, 6)


def test_model_dispatches_to_the_kernel():
    model, states, batch, params, Y = _problem(10, 8, 6, 3, 30, seed=8)
    calls = []

    def kernel(*args, **kwargs):
        calls.append(kwargs.get("moments_only", False))
        return numba_gsc.gsc_estep(*args, **kwargs)

    backend = types.SimpleNamespace(KERNELS={"gsc_estep": kernel}, NAME="numba")
    ref = _reference(model, Y, batch, states, params, 0.5, 0.7, None, True)
    got = model.estep_batch(Y, states, params, 0.5, 0.7, None, True, backend)
    _check(*got, *ref)
    ref_s, ref_b = model.posterior_moments(Y, batch, params)
    mean_s, mean_b = model.posterior_moments(Y, batch, params, backend)
    _close(mean_s, ref_s)
    _close(mean_b, ref_b)
    _close(model.posterior_mean(Y, states, params, backend), ref_s)
    assert calls == [False, True, True]
    # a backend without the kernel (numpy, cupy) keeps the NumPy path
    plain = model.estep_batch(
        Y, states, params, 0.5, 0.7, None, True, types.SimpleNamespace(KERNELS={})
    )
    _check(*plain, *ref, tol=0.0)


def test_pattern_tree():
    table = ExpectationTruncation(6, 4, 3, (0.0, 1.0)).table
    parent, slots, k = numba_gsc.pattern_tree(table)
    assert np.array_equal(np.bincount(k), [0, 0, 6, 4])
    rows = table[np.argsort(table.sum(axis=1), kind="stable")] != 0
    for t in range(len(k)):
        active = slots[t, : k[t]]
        assert np.array_equal(np.flatnonzero(rows[t]), active)
        # the parent is the pattern without the last slot, and comes first
        if k[t] == 2:
            assert parent[t] == active[0]
        else:
            assert 4 <= parent[t] < 4 + t
            assert np.array_equal(slots[parent[t] - 4, : k[t] - 1], active[:-1])
    with pytest.raises(ValueError, match="prefix"):
        numba_gsc.pattern_tree(np.array([[1.0, 1.0, 1.0, 0.0]]))
    with pytest.raises(ValueError, match="at least 2"):
        numba_gsc.pattern_tree(np.array([[1.0, 0.0, 0.0, 0.0]]))
