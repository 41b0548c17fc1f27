"""TSC and DSC: exact EM against brute force, ET corrections, preselection, sampling, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.special import logsumexp

from prosper.backends import get_backend
from prosper.data import bars
from prosper.estimators.dsc import DSC
from prosper.estimators.tsc import TSC
from prosper.models.dsc import DSCModel, check_values
from prosper.models.tsc import TSCModel
from prosper.parallel import Communicator


def _exact_em_reference(Y, values, log_value_prior, params):
    """Brute-force exact EM over all V^H states: mean free energy and one M-step.

    ``values`` (V,) and ``log_value_prior`` (V,) in the same order; returns F and the new
    W, sigma and the expected fraction of latents taking each value (V,).
    """
    N, D = Y.shape
    W, sigma = params["W"], float(params["sigma"])
    H = W.shape[1]
    states = list(itertools.product(range(len(values)), repeat=H))
    log_joint = np.empty((N, len(states)))
    for k, idx in enumerate(states):
        s = values[list(idx)]
        resid = Y - s @ W.T
        log_joint[:, k] = (
            -0.5 * D * np.log(2 * np.pi * sigma**2)
            - np.sum(resid**2, axis=1) / (2 * sigma**2)
            + sum(log_value_prior[i] for i in idx)
        )
    F = logsumexp(log_joint, axis=1)
    q = np.exp(log_joint - F[:, None])
    sy, ss = np.zeros((D, H)), np.zeros((H, H))
    value_frac = np.zeros(len(values))
    for k, idx in enumerate(states):
        s = values[list(idx)]
        sy += np.outer(Y.T @ q[:, k], s)
        ss += q[:, k].sum() * np.outer(s, s)
        for i in idx:
            value_frac[i] += q[:, k].sum()
    W_new = np.linalg.solve(ss, sy.T).T
    err = 0.0
    for k, idx in enumerate(states):
        s = values[list(idx)]
        err += q[:, k] @ np.sum((Y - s @ W_new.T) ** 2, axis=1)
    return F.mean(), W_new, np.sqrt(err / (N * D)), value_frac / (N * H)


def _one_exact_step(est, Y, params):
    """Free energy and parameters after one M-step of the engine with full enumeration."""
    learner = est._make_learner(Y.shape[1], 0, get_backend("numpy"))
    learner.set_params(params, Y.shape[0])
    stats = learner.estep(Y, Communicator(None), 0)
    metrics = learner.mstep(stats, 0)
    return metrics["free_energy"], learner.params


def test_tsc_full_enumeration_is_exact_em(rng):
    H, D, N = 4, 6, 40
    W = rng.standard_normal((D, H)) * 2.0
    S = rng.choice([-1.0, 0.0, 1.0], size=(N, H), p=[0.15, 0.7, 0.15])
    Y = S @ W.T + 0.7 * rng.standard_normal((N, D))
    params = {"W": W + 0.3 * rng.standard_normal((D, H)), "pi": np.asarray(0.35), "sigma": 0.9}
    est = TSC(H, Hprime=H, gamma=H, n_iter=1, ncut_factor=0.0, temperature=1.0, backend="numpy")
    F, new = _one_exact_step(est, Y, params)

    values = np.array([-1.0, 0.0, 1.0])
    pi = 0.35
    logp = np.log([pi / 2, 1 - pi, pi / 2])
    F_ref, W_ref, sigma_ref, frac = _exact_em_reference(Y, values, logp, params)
    np.testing.assert_allclose(F, F_ref, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(new["W"], W_ref, atol=1e-10, rtol=0)
    assert float(new["sigma"]) == pytest.approx(sigma_ref, abs=1e-10)
    assert float(new["pi"]) == pytest.approx(frac[0] + frac[2], abs=1e-10)


@pytest.mark.parametrize("values", [(0, 1, 2), (2, 0, -1)])
def test_dsc_full_enumeration_is_exact_em(rng, values):
    H, D, N = 3, 5, 40
    vals = np.array(values, dtype=float)
    pi = np.array([0.6, 0.25, 0.15]) if values[0] == 0 else np.array([0.2, 0.55, 0.25])
    W = rng.standard_normal((D, H)) * 2.0
    S = vals[rng.choice(3, size=(N, H), p=pi)]
    Y = S @ W.T + 0.5 * rng.standard_normal((N, D))
    params = {"W": W + 0.3 * rng.standard_normal((D, H)), "pi": pi, "sigma": 0.8}
    est = DSC(
        H,
        values=values,
        Hprime=H,
        gamma=H,
        n_iter=1,
        ncut_factor=0.0,
        temperature=1.0,
        backend="numpy",
    )
    F, new = _one_exact_step(est, Y, params)

    F_ref, W_ref, sigma_ref, frac = _exact_em_reference(Y, vals, np.log(pi), params)
    np.testing.assert_allclose(F, F_ref, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(new["W"], W_ref, atol=1e-10, rtol=0)
    assert float(new["sigma"]) == pytest.approx(sigma_ref, abs=1e-10)
    # exact update π_k = Σ<c_k>/(N H), in the user's order of values
    np.testing.assert_allclose(new["pi"], frac, atol=1e-10, rtol=0)


def _brute_force_truncation(values, pi, H, gamma):
    """A = P(|s| <= γ) and B_k = E[c_k 1{|s| <= γ}] by enumerating all V^H states."""
    A, B = 0.0, np.zeros(len(values))
    for idx in itertools.product(range(len(values)), repeat=H):
        p = np.prod(pi[list(idx)])
        if sum(values[i] != 0 for i in idx) <= gamma:
            A += p
            B += p * np.bincount(idx, minlength=len(values))
    return A, B


def test_dsc_truncated_mass_matches_enumeration():
    values = np.array([0.0, 1.0, -2.0, 3.0])
    pi = np.array([0.55, 0.2, 0.15, 0.1])
    H, gamma = 5, 2
    model = DSCModel(H, 4, values=values)
    A_ref, B_ref = _brute_force_truncation(values, pi, H, gamma)
    assert model.truncated_mass({"pi": pi}, gamma) == pytest.approx(A_ref, rel=1e-12)

    # the corrected update is a fixed point when the posterior counts equal the truncated
    # prior's expectations B_k / A (what ET's correction is designed for)
    n = 1000.0
    stats = {"counts": n * B_ref[1:] / A_ref, "n": np.array(n)}
    new = model.prior_mstep(stats, {"pi": pi}, gamma)["pi"]
    np.testing.assert_allclose(new, pi, rtol=1e-12)
    # and the uncorrected normalised counts would not be
    assert not np.allclose(B_ref / B_ref.sum(), pi, rtol=1e-3)


def test_tsc_prior_correction_is_a_fixed_point():
    H, gamma, pi = 6, 2, 0.3
    values = np.array([0.0, -1.0, 1.0])
    probs = np.array([1 - pi, pi / 2, pi / 2])
    A_ref, B_ref = _brute_force_truncation(values, probs, H, gamma)
    model = TSCModel(H, 4)
    assert model.truncated_mass({"pi": np.asarray(pi)}, gamma) == pytest.approx(A_ref, rel=1e-12)
    n = 500.0
    stats = {"counts": n * B_ref[1:] / A_ref, "n": np.array(n)}
    new = model.prior_mstep(stats, {"pi": np.asarray(pi)}, gamma)["pi"]
    assert float(new) == pytest.approx(pi, rel=1e-12)


def _singleton_states(model, B):
    nz = model.values[1:]
    single = (nz[:, None, None] * np.eye(model.H)[None]).reshape(-1, model.H)
    return np.broadcast_to(single, (B, *single.shape)), nz.size


@pytest.mark.parametrize(
    "model, pi",
    [
        (TSCModel(7, 6), np.asarray(0.2)),
        (DSCModel(7, 6, values=(0, 1, -2, 0.5)), np.array([0.7, 0.05, 0.2, 0.05])),
    ],
)
def test_preselection_is_best_singleton_log_joint(rng, model, pi):
    B = 12
    params = {"W": rng.standard_normal((6, 7)), "pi": pi, "sigma": np.asarray(0.7)}
    Y = rng.standard_normal((B, 6)) * 2
    S, n_nz = _singleton_states(model, B)
    ll, lp = model.log_joint(Y, S, params)
    best = (ll + lp).reshape(B, n_nz, model.H).max(axis=1)
    scores = model.preselection_scores(Y, params)
    if isinstance(model, TSCModel):
        scores = scores / (2 * float(params["sigma"]) ** 2)
    # equal up to a per-data-point constant, hence the same ranking
    diff = best - scores
    np.testing.assert_allclose(diff, diff[:, :1] * np.ones((1, model.H)), atol=1e-9)


def test_model_sample_statistics(rng):
    H, D = 8, 5
    W = rng.standard_normal((D, H))
    tsc = TSCModel(H, D)
    Y, S = tsc.sample(20000, {"W": W, "pi": np.asarray(0.3), "sigma": np.asarray(0.5)}, rng)
    assert Y.shape == (20000, D) and S.shape == (20000, H)
    assert set(np.unique(S)) <= {-1.0, 0.0, 1.0}
    assert np.mean(S != 0) == pytest.approx(0.3, abs=0.01)
    assert np.mean(S == 1) == pytest.approx(np.mean(S == -1), abs=0.01)
    assert np.std(Y - S @ W.T) == pytest.approx(0.5, rel=0.02)

    pi = np.array([0.1, 0.6, 0.3])
    dsc = DSCModel(H, D, values=(3, 0, -1))
    Y, lat = dsc.sample(20000, {"W": W, "pi": pi, "sigma": np.asarray(0.5)}, rng)
    freq = [np.mean(lat == v) for v in (3, 0, -1)]
    np.testing.assert_allclose(freq, pi, atol=0.01)


def test_estimator_sample_and_transform_shapes():
    data = bars(
        size=3, n_samples=200, pi=0.2, amplitude=5.0, sigma=0.5, values=(0, 1, 2), random_state=0
    )
    est = DSC(6, values=(0, 1, 2), Hprime=4, gamma=2, n_iter=3, random_state=0).fit(data.Y)
    assert est.pi_.shape == (3,) and est.pi_.sum() == pytest.approx(1.0)
    assert est.W_.shape == (9, 6) and isinstance(est.sigma_, float)
    Y, S = est.sample(50, random_state=1)
    assert Y.shape == (50, 9) and S.shape == (50, 6)
    assert set(np.unique(S)) <= {0.0, 1.0, 2.0}
    assert est.transform(data.Y[:7]).shape == (7, 6)
    assert np.isfinite(est.score(data.Y))

    tsc_data = bars(size=3, n_samples=200, signed=True, amplitude=5.0, sigma=0.5, random_state=0)
    est = TSC(6, Hprime=4, gamma=2, n_iter=3, random_state=0).fit(tsc_data.Y)
    assert isinstance(est.pi_, float)
    Y, S = est.sample(40, random_state=1)
    assert Y.shape == (40, 9) and set(np.unique(S)) <= {-1.0, 0.0, 1.0}


@pytest.mark.parametrize(
    "values, match",
    [
        ((1, 2), "contain 0"),
        ((0, 1, 1), "distinct"),
        ((0, np.inf), "finite"),
        ((0,), "at least 2"),
        ("abc", "sequence of numbers"),
        (((0, 1), (2, 3)), "flat sequence"),
    ],
)
def test_dsc_rejects_bad_values(values, match):
    Y = np.random.default_rng(0).standard_normal((20, 4))
    with pytest.raises(ValueError, match=match):
        DSC(3, values=values, n_iter=1).fit(Y)
    with pytest.raises(ValueError, match="values"):
        check_values(values)


def test_bad_hyper_parameters_raise():
    Y = np.random.default_rng(0).standard_normal((20, 4))
    with pytest.raises(ValueError, match="Hprime"):
        TSC(3, Hprime=5, n_iter=1).fit(Y)
    with pytest.raises(ValueError, match="gamma"):
        DSC(3, Hprime=2, gamma=3, n_iter=1).fit(Y)
    with pytest.raises(ValueError, match="'H' parameter of TSC"):
        TSC(0, n_iter=1).fit(Y)


def test_bars_discrete_amplitudes():
    data = bars(
        size=4,
        n_samples=4000,
        values=(0, 1, 3),
        value_probs=(0.7, 0.2, 0.1),
        sigma=0.0,
        amplitude=2.0,
        random_state=3,
    )
    lat = data.S
    assert set(np.unique(lat)) <= {0.0, 1.0, 3.0}
    np.testing.assert_allclose([np.mean(lat == v) for v in (0, 1, 3)], [0.7, 0.2, 0.1], atol=0.01)
    np.testing.assert_allclose(data.Y, data.S @ data.W.T)
    assert data.pi == pytest.approx(0.3)
    np.testing.assert_allclose(data.ground_truth()["pi"], [0.7, 0.2, 0.1])
    default = bars(size=4, n_samples=4000, values=(0, 1, 2), pi=0.3, random_state=0)
    np.testing.assert_allclose(default.value_probs, [0.7, 0.15, 0.15])
    # the binary and signed generators are unchanged by the new options
    a = bars(size=3, n_samples=50, signed=True, random_state=5)
    assert a.values is None and np.ndim(a.ground_truth()["pi"]) == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"values": (0, 1), "signed": True}, "signed"),
        ({"values": (0, 1), "value_probs": (0.5, 0.2)}, "sum to 1"),
        ({"values": (0, 1), "value_probs": (1.0,)}, "one entry per value"),
        ({"value_probs": (0.5, 0.5)}, "needs values"),
        ({"values": (1, 2)}, "contain 0"),
    ],
)
def test_bars_rejects_bad_discrete_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bars(size=3, n_samples=10, **kwargs)


@pytest.mark.parametrize("H, sizes", [(10, (6, 3)), (20, (6, 3)), (5, (5, 3)), (2, (2, 2))])
def test_tsc_default_et_sizes(H, sizes):
    # measured over 20 seeds of signed 5x5 bars (benchmarks/RESULTS.md, 2026-12-02): H'=6,
    # γ=3 finds all bars far more often than BSC's H'=8, γ=4, at a seventh of the states
    est = TSC(H, n_iter=1)
    states = est._states(est._make_model(4), 0)
    assert (states.Hprime, states.gamma) == sizes
    # explicit sizes are kept, and BSC's defaults are unchanged
    states = TSC(H, Hprime=H, gamma=min(H, 4), n_iter=1)._states(est._make_model(4), 0)
    assert (states.Hprime, states.gamma) == (H, min(H, 4))
    from prosper import BSC

    assert BSC(10)._resolved() == (8, 4)
