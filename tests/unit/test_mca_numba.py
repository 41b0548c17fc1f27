"""The numba E-step of MCA and MMCA (prosper/backends/numba_mca.py) against the NumPy model.

The NumPy E-step of prosper/models/mca.py is the reference (itself checked against a brute
force in test_mca.py); the kernel must reproduce its log marginals, statistics and posterior
means to 1e-10 relative in float64, dispatched through the model as a fit would.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

pytest.importorskip("numba")

from prosper.backends import get_backend, numba_mca
from prosper.models.gsc import GSCModel
from prosper.models.mca import MCAModel, MMCAModel
from prosper.solvers.states import ExpectationTruncation

BACKEND = types.SimpleNamespace(KERNELS={"mca_estep": numba_mca.mca_estep}, NAME="numba")
RTOL = 1e-10


def assert_close(got, ref, rtol=RTOL):
    """Elementwise relative agreement; entries far below the array's scale get rtol × scale."""
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * 1e-3 * scale)


def problem(cls, H, D, B, seed=0, scale=1.0):
    """Data near the model (max-combined causes plus noise) and perturbed parameters."""
    rng = np.random.default_rng(seed)
    model = cls(H, D)
    W = rng.uniform(0.2, 3.0, (D, H)) * scale
    if model.signed:
        W *= rng.choice([-1.0, 1.0], (D, H))
    W[0, 0] = 1e-6  # below the floor: clipped to 1e-4 by both paths
    S = (rng.random((B, H)) < 0.3).astype(np.float64)
    Y = model._combine(S, model.clip_W(W)) + 0.3 * rng.standard_normal((B, D))
    params = {"W": W, "pi": np.asarray(0.25), "sigma": np.asarray(0.6)}
    return model, Y, params


def both(model, Y, states, params, beta, prior_beta, mask, accumulate):
    ref = model.estep_batch(Y, states, params, beta, prior_beta, mask, accumulate, None)
    got = model.estep_batch(Y, states, params, beta, prior_beta, mask, accumulate, BACKEND)
    return got, ref


def check_stats(got, ref):
    assert_close(got[0], ref[0])
    keys = {"Ay", "A", "counts", "err", "n"}
    if "lost" in ref[1]:  # MMCA: the pixels a cause's sign lost
        keys |= {"lost", "lost_to", "lost_y"}
    assert set(got[1]) == set(ref[1]) == keys
    for key in ref[1]:
        assert np.shape(got[1][key]) == np.shape(ref[1][key]), key
        assert_close(got[1][key], ref[1][key])


MODELS = [MCAModel, MMCAModel]
# (H, H', gamma): preselection, full enumeration (H' = gamma = H), gamma = 1 (no table)
CONFIGS = [(9, 6, 3), (10, 8, 4), (5, 5, 5), (7, 4, 1)]


@pytest.mark.parametrize("cls", MODELS)
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("beta", [1.0, 0.45])
def test_statistics_match_numpy(cls, config, beta):
    H, Hp, gamma = config
    model, Y, params = problem(cls, H, D=13, B=37)
    states = ExpectationTruncation(H, Hp, gamma, model.values)
    got, ref = both(model, Y, states, params, beta, beta, None, True)
    check_stats(got, ref)


@pytest.mark.parametrize("config", CONFIGS)
def test_mmca_signed_sum_matches_numpy(config):
    """MMCA's signed sum (the first half of the iterations, kernel mode 2) on both paths."""
    H, Hp, gamma = config
    model, Y, params = problem(MMCAModel, H, D=13, B=37, seed=4)
    model.start_iteration(5, 10)
    assert model.kernel_mode == 1  # the second half: the maximum of the two signs
    model.start_iteration(4, 10)
    assert model.kernel_mode == 2
    states = ExpectationTruncation(H, Hp, gamma, model.values)
    got, ref = both(model, Y, states, params, 0.8, 0.8, None, True)
    check_stats(got, ref)
    assert not ref[1]["lost"].any()  # no cap in this phase


@pytest.mark.parametrize("cls", MODELS)
def test_prior_beta_and_mask_with_zeros(cls):
    model, Y, params = problem(cls, 8, D=11, B=41, seed=1)
    states = ExpectationTruncation(8, 6, 3, model.values)
    mask = np.random.default_rng(2).random(41)
    mask[::3] = 0.0
    got, ref = both(model, Y, states, params, 0.6, 0.9, mask, True)
    check_stats(got, ref)
    # a zero weight removes a point from the statistics, not from the log marginals
    assert float(got[1]["n"]) == pytest.approx(mask.sum())


@pytest.mark.parametrize("cls", MODELS)
def test_log_marginals_only(cls):
    model, Y, params = problem(cls, 9, D=17, B=29, seed=3)
    states = ExpectationTruncation(9, 6, 3, model.values)
    (lm, stats), (lm_ref, stats_ref) = both(model, Y, states, params, 0.7, 0.7, None, False)
    assert stats is None and stats_ref is None
    assert_close(lm, lm_ref)


@pytest.mark.parametrize("cls", MODELS)
def test_single_point(cls):
    model, Y, params = problem(cls, 6, D=9, B=1, seed=4)
    states = ExpectationTruncation(6, 4, 3, model.values)
    got, ref = both(model, Y, states, params, 1.0, 1.0, None, True)
    assert got[0].shape == (1,)
    check_stats(got, ref)
    mean = model.posterior_mean(Y, states, params, BACKEND)
    assert mean.shape == (1, 6)
    assert_close(mean, model.posterior_mean(Y, states, params, None))


@pytest.mark.parametrize("cls", MODELS)
def test_empty_batch(cls):
    """B = 0: empty log marginals and zero statistics (the NumPy path returns None)."""
    model, Y, params = problem(cls, 6, D=9, B=1, seed=4)
    states = ExpectationTruncation(6, 4, 3, model.values)
    lm, stats = model.estep_batch(Y[:0], states, params, 1.0, 1.0, None, True, BACKEND)
    assert lm.shape == (0,)
    assert stats["Ay"].shape == stats["A"].shape == (9, 6)
    for value in stats.values():
        assert not np.any(value)
    assert model.posterior_mean(Y[:0], states, params, BACKEND).shape == (0, 6)


@pytest.mark.parametrize("cls", MODELS)
def test_float32_data(cls):
    """float32 Y: both paths work on its float64 copy, so the float64 tolerance holds."""
    model, Y, params = problem(cls, 8, D=15, B=33, seed=5)
    Y32 = Y.astype(np.float32)
    states = ExpectationTruncation(8, 6, 3, model.values)
    got, ref = both(model, Y32, states, params, 0.8, 0.8, None, True)
    check_stats(got, ref)
    for value in got[1].values():
        assert value.dtype == np.float64


@pytest.mark.parametrize("cls", MODELS)
@pytest.mark.parametrize("config", [(9, 6, 3), (5, 5, 5), (7, 4, 1)])
def test_posterior_mean(cls, config):
    H, Hp, gamma = config
    model, Y, params = problem(cls, H, D=12, B=31, seed=6)
    states = ExpectationTruncation(H, Hp, gamma, model.values)
    got = model.posterior_mean(Y, states, params, BACKEND)
    ref = model.posterior_mean(Y, states, params, None)
    assert_close(got, ref)
    assert np.all(got >= 0.0) and np.all(got <= 1.0 + 1e-12)


def test_mmca_cancelling_causes():
    """Opposite causes of equal magnitude tie (the positive sign wins) on both paths."""
    model, Y, params = problem(MMCAModel, 6, D=10, B=23, seed=7)
    W = params["W"].copy()
    W[:, 1] = -W[:, 0]
    W[2, 3], W[2, 4] = 2.0, -2.0
    params = {**params, "W": W}
    states = ExpectationTruncation(6, 6, 6, model.values)
    got, ref = both(model, Y, states, params, 1.0, 1.0, None, True)
    check_stats(got, ref)


@pytest.mark.parametrize("cls", MODELS)
def test_wide_range_of_W(cls):
    """Magnitudes over five decades within a point's preselection (within the range limit)."""
    model, Y, params = problem(cls, 8, D=16, B=25, seed=8)
    rng = np.random.default_rng(9)
    W = params["W"] * 10.0 ** rng.uniform(-3.0, 2.0, params["W"].shape)
    params = {**params, "W": W}
    states = ExpectationTruncation(8, 6, 4, model.values)
    got, ref = both(model, Y, states, params, 1.0, 1.0, None, True)
    check_stats(got, ref)


def test_dispatch():
    model = MCAModel(4, 3)
    assert model.runs_on(BACKEND)
    assert not model.runs_on(types.SimpleNamespace(KERNELS={}, NAME="numpy"))
    assert MMCAModel(4, 3).runs_on(BACKEND)
    # the real backends declare the kernel in their KERNELS registry (numba) or not (numpy)
    assert model.runs_on(get_backend("numba"))
    assert not model.runs_on(get_backend("numpy"))
    assert GSCModel(4, 3).runs_on(get_backend("numba"))
    assert not GSCModel(4, 3).runs_on(get_backend("numpy"))


def test_kernel_is_not_the_numpy_path(monkeypatch):
    """The dispatch really runs the kernel: the NumPy chunks are not called."""
    model, Y, params = problem(MCAModel, 6, D=8, B=10, seed=10)
    states = ExpectationTruncation(6, 4, 2, model.values)

    def fail(*args, **kwargs):
        raise AssertionError("NumPy E-step called")

    monkeypatch.setattr(model, "_run_chunks", fail)
    model.estep_batch(Y, states, params, 1.0, 1.0, None, True, BACKEND)
    model.posterior_mean(Y, states, params, BACKEND)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_numba_preselection_scores_are_the_numpy_scores_bit_for_bit(dtype):
    """MCA's preselection kernel sums the excesses in the NumPy scores' order (ascending d),
    so the H' causes it preselects are the same, ties included."""
    model, Y, params = problem(MCAModel, H=13, D=37, B=29, seed=4)
    Y = Y.astype(dtype)
    W = model.clip_W(params["W"])
    got = numba_mca.mca_preselection(Y, W)
    np.testing.assert_array_equal(got, model.preselection_scores(Y, params))
    assert numba_mca.mca_preselection(Y[:0], W).shape == (0, 13)


def test_mca_estep_preselects_with_the_numba_kernel(monkeypatch):
    """Through the numba backend MCA's E-step scores with the kernel (MMCA keeps its matrix
    product) and gives the NumPy E-step's log marginals."""
    backend = get_backend("numba")
    calls = []
    kernel = backend.KERNELS["mca_preselection"]
    monkeypatch.setitem(
        backend.KERNELS, "mca_preselection", lambda Y, W: calls.append(len(Y)) or kernel(Y, W)
    )
    states = ExpectationTruncation(H=9, Hprime=5, gamma=3, values=(0.0, 1.0))
    for cls, expected in ((MCAModel, [31]), (MMCAModel, [])):
        calls.clear()
        model, Y, params = problem(cls, H=9, D=20, B=31, seed=5)
        got = model.estep_batch(Y, states, params, 1.0, 1.0, None, False, backend)
        ref = model.estep_batch(Y, states, params, 1.0, 1.0, None, False, None)
        assert calls == expected
        assert_close(got[0], ref[0])
