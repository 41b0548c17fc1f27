"""GSC (spike-and-slab sparse coding): E-step against dense brute force, M-step, stability.

The brute force below uses the textbook dense formulas, independent of the model's
Woodbury/Cholesky kernel: for every spike pattern b with active set A, the D×D covariance
C = σ²I + W_A Ψ_A W_Aᵀ, log N(y; W_A μ_A, C) from slogdet and solve, and the slab posterior
by Gaussian conditioning, κ = μ_A + Ψ_A W_Aᵀ C⁻¹ (y - W_A μ_A), Λ = Ψ_A - Ψ_A W_Aᵀ C⁻¹ W_A Ψ_A
(valid for Ψ_h = 0 too). Loops over points and patterns are fine here.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.special import logsumexp

from prosper import GSC, NotFittedError
from prosper.data.spike_slab import gsc_data
from prosper.models.gsc import GSCModel, spike_count_masses
from prosper.solvers.states import ExpectationTruncation


def _params(rng, D, H, psi=None):
    return {
        "W": rng.standard_normal((D, H)),
        "pi": rng.uniform(0.1, 0.6, H),
        "mu": rng.uniform(-2.0, 2.0, H),
        "psi": rng.uniform(0.2, 2.0, H) if psi is None else np.asarray(psi, dtype=float),
        "sigma": np.asarray(0.8),
    }


def _brute(Y, params, patterns):
    """Dense log marginals and posterior moments over given patterns (N, K, H) of 0/1."""
    W, pi, mu, psi = params["W"], params["pi"], params["mu"], params["psi"]
    sigma2 = float(params["sigma"]) ** 2
    N, D = Y.shape
    H = W.shape[1]
    out_lm = np.empty(N)
    mean_s, mean_b = np.zeros((N, H)), np.zeros((N, H))
    second = np.zeros((N, H, H))
    for n in range(N):
        lj, kappas, lams = [], [], []
        for b in patterns[n]:
            A = np.flatnonzero(b)
            WA = W[:, A]
            C = sigma2 * np.eye(D) + WA @ np.diag(psi[A]) @ WA.T
            r = Y[n] - WA @ mu[A]
            _, logdet = np.linalg.slogdet(C)
            ll = -0.5 * (D * np.log(2 * np.pi) + logdet + r @ np.linalg.solve(C, r))
            lp = np.sum(b * np.log(pi) + (1 - b) * np.log(1 - pi))
            gain = np.diag(psi[A]) @ WA.T @ np.linalg.inv(C)
            kappa = np.zeros(H)
            lam = np.zeros((H, H))
            kappa[A] = mu[A] + gain @ r
            lam[np.ix_(A, A)] = np.diag(psi[A]) - gain @ WA @ np.diag(psi[A])
            lj.append(ll + lp)
            kappas.append(kappa)
            lams.append(lam)
        lj = np.array(lj)
        out_lm[n] = logsumexp(lj)
        q = np.exp(lj - out_lm[n])
        kappas, lams = np.array(kappas), np.array(lams)
        mean_s[n] = q @ kappas
        mean_b[n] = q @ patterns[n]
        second[n] = np.einsum("k,ki,kj->ij", q, kappas, kappas) + np.einsum("k,kij->ij", q, lams)
    return out_lm, mean_s, mean_b, second


def _all_patterns(N, H):
    P = np.array(list(itertools.product([0.0, 1.0], repeat=H)))
    return np.broadcast_to(P, (N, *P.shape))


def _close(a, b, tol=1e-10):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    scale = max(1.0, float(np.abs(b).max()))
    np.testing.assert_allclose(a, b, rtol=0, atol=tol * scale)


def _full(H, model):
    return ExpectationTruncation(H, H, H, model.values)


@pytest.mark.parametrize(("D", "H"), [(7, 3), (6, 5)])
def test_full_enumeration_equals_dense_brute_force(D, H):
    rng = np.random.default_rng(D + H)
    params = _params(rng, D, H)
    Y = gsc_data(20, D=D, H=H, pi=0.4, mu=1.5, psi=1.0, sigma=0.8, random_state=1).Y
    model = GSCModel(H, D)
    states = _full(H, model)
    batch = states.select(None, Y.shape[0])
    lm, stats = model.estep_batch(Y, states, params, 1.0, 1.0, None, True, None)
    b_lm, b_s, b_b, b_ss = _brute(Y, params, _all_patterns(Y.shape[0], H))
    _close(lm, b_lm)
    _close(stats["sy"], Y.T @ b_s)
    _close(stats["ss"], b_ss.sum(axis=0))
    _close(stats["b"], b_b.sum(axis=0))
    mu = params["mu"]
    s_sum, b_sum, s2_sum = b_s.sum(0), b_b.sum(0), np.einsum("nhh->h", b_ss)
    _close(stats["dz"], s_sum - mu * b_sum)
    _close(stats["dz2"], s2_sum - 2 * mu * s_sum + mu**2 * b_sum)
    _close(stats["yy"], np.sum(Y**2))
    assert float(stats["n"]) == Y.shape[0]
    mean_s, mean_b = model.posterior_moments(Y, batch, params)
    _close(mean_s, b_s)
    _close(mean_b, b_b)


def test_estimator_full_enumeration_score_transform_spike_proba():
    rng = np.random.default_rng(3)
    D, H = 6, 4
    params = _params(rng, D, H)
    Y = gsc_data(30, D=D, H=H, pi=0.3, mu=1.0, psi=0.5, sigma=0.8, random_state=2).Y
    est = GSC(H=H, Hprime=H, gamma=H, ncut_factor=0, n_iter=1, random_state=0).fit(Y)
    for name, value in params.items():
        setattr(est, name + "_", float(value) if value.ndim == 0 else value)
    b_lm, b_s, b_b, _ = _brute(Y, params, _all_patterns(Y.shape[0], H))
    _close(est.score(Y), b_lm.mean())
    _close(est.transform(Y), b_s)
    _close(est.spike_proba(Y), b_b)


def test_mstep_is_the_exact_closed_form():
    rng = np.random.default_rng(4)
    D, H = 6, 4
    params = _params(rng, D, H)
    Y = gsc_data(40, D=D, H=H, pi=0.3, mu=1.0, psi=0.5, sigma=0.8, random_state=3).Y
    model = GSCModel(H, D)
    states = _full(H, model)
    _, stats = model.estep_batch(Y, states, params, 1.0, 1.0, None, True, None)
    new = model.mstep(stats, params, gamma=H)
    _, s, b, ss = _brute(Y, params, _all_patterns(40, H))
    sy, SS = Y.T @ s, ss.sum(0)
    W = np.linalg.solve(SS, sy.T).T
    mu = s.sum(0) / b.sum(0)
    psi = np.einsum("nhh->h", ss) / b.sum(0) - mu**2
    err = np.sum(Y**2) - 2 * np.sum(W * sy) + np.sum((W.T @ W) * SS)
    _close(new["W"], W, 1e-8)
    _close(new["pi"], b.mean(0))
    _close(new["mu"], mu)
    _close(new["psi"], psi)
    _close(new["sigma"], np.sqrt(err / (40 * D)))


def test_exact_em_never_decreases_the_likelihood():
    # with full enumeration, no data selection and no annealing, EM is exact: a wrong Ψ
    # update or a dropped ½ breaks this monotonicity
    data = gsc_data(
        300, D=9, H=4, pi=0.3, mu=[1.0, 2.0, -1.0, 1.5], psi=0.3, sigma=0.4, random_state=5
    )
    est = GSC(
        H=4, Hprime=4, gamma=4, ncut_factor=0, temperature=1.0, n_iter=40, random_state=1
    ).fit(data.Y)
    F = est.free_energy_
    assert np.all(np.diff(F) >= -1e-9 * np.abs(F[:-1])), np.diff(F).min()
    assert F[-1] > F[0] + 1.0


def test_truncated_candidates_match_dense_formulas():
    rng = np.random.default_rng(6)
    D, H, Hprime, gamma = 8, 7, 5, 3
    params = _params(rng, D, H)
    Y = gsc_data(15, D=D, H=H, pi=0.3, mu=1.0, psi=0.5, sigma=0.8, random_state=4).Y
    model = GSCModel(H, D)
    states = ExpectationTruncation(H, Hprime, gamma, model.values)
    batch = states.select(model.preselection_scores(Y, params), Y.shape[0])
    dense = batch.dense()
    ll, lp = model.log_joint(Y, dense, params)
    lm, stats = model.estep_batch(Y, states, params, 1.0, 1.0, None, True, None)
    b_lm, b_s, b_b, b_ss = _brute(Y, params, dense)
    _close(lm, b_lm)
    _close(logsumexp(ll + lp, axis=1), b_lm)
    _close(stats["ss"], b_ss.sum(0))
    _close(stats["sy"], Y.T @ b_s)
    mean_s, mean_b = model.posterior_moments(Y, batch, params)
    _close(mean_s, b_s)
    _close(mean_b, b_b)
    # latents outside the candidate set have zero spike probability
    assert np.all(mean_b[dense.sum(axis=1) == 0] == 0)


def test_tempered_statistics_use_beta_on_the_whole_joint():
    rng = np.random.default_rng(7)
    D, H, beta = 5, 3, 0.4
    params = _params(rng, D, H)
    Y = rng.standard_normal((10, D))
    model = GSCModel(H, D)
    states = _full(H, model)
    _, stats = model.estep_batch(Y, states, params, beta, beta, None, True, None)
    # at inverse temperature β the weights are p(b, y)^β: compare ⟨b⟩ with the dense version
    P = _all_patterns(1, H)[0]
    ll, lp = model.log_joint(Y, np.broadcast_to(P, (10, *P.shape)), params)
    q = np.exp(beta * (ll + lp) - logsumexp(beta * (ll + lp), axis=1, keepdims=True))
    _close(stats["b"], (q @ P).sum(0))


def test_preselection_is_the_singleton_marginal_likelihood():
    rng = np.random.default_rng(8)
    D, H = 6, 4
    params = _params(rng, D, H)
    Y = rng.standard_normal((5, D))
    scores = GSCModel(H, D).preselection_scores(Y, params)
    singles = np.eye(H)[None].repeat(5, axis=0)
    expected = np.empty((5, H))
    for h in range(H):
        lm, *_ = _brute(Y, {**params, "pi": np.full(H, 0.5)}, singles[:, [h]])
        expected[:, h] = lm - H * np.log(0.5)
    _close(scores, expected)


@pytest.mark.parametrize("tiny", [0.0, 1e-300, 1e-14])
def test_stable_for_near_zero_slab_variance(tiny):
    rng = np.random.default_rng(9)
    D, H = 6, 4
    params = _params(rng, D, H, psi=[tiny, tiny, 1.0, 0.3])
    Y = gsc_data(20, D=D, H=H, pi=0.4, mu=1.0, psi=0.5, sigma=0.8, random_state=6).Y
    model = GSCModel(H, D)
    states = _full(H, model)
    lm, stats = model.estep_batch(Y, states, params, 1.0, 1.0, None, True, None)
    assert all(np.all(np.isfinite(v)) for v in stats.values())
    b_lm, b_s, _, b_ss = _brute(Y, params, _all_patterns(20, H))
    _close(lm, b_lm)
    _close(stats["ss"], b_ss.sum(0))
    _close(stats["sy"], Y.T @ b_s)
    # Ψ_h -> 0 is the limit z_h = μ_h: the same as Ψ_h = 0 exactly
    lm0, _ = model.estep_batch(
        Y,
        states,
        {**params, "psi": np.array([0.0, 0.0, 1.0, 0.3])},
        1,
        1,
        None,
        False,
        None,
    )
    _close(lm, lm0, 1e-12)
    new = model.mstep(stats, params, gamma=H)
    assert np.all(np.isfinite(new["psi"])) and np.all(new["psi"] >= 0)
    # the spike-only latents keep (almost) zero slab variance
    assert np.all(new["psi"][:2] <= 1e-12)


def test_spike_count_masses_against_enumeration():
    pi = np.array([0.1, 0.5, 0.3, 0.8, 0.2])
    P = np.array(list(itertools.product([0, 1], repeat=5)))
    prob = np.prod(np.where(P == 1, pi, 1 - pi), axis=1)
    for gamma in range(6):
        A, A_minus = spike_count_masses(pi, gamma)
        keep = P.sum(1) <= gamma
        _close(A, prob[keep].sum(), 1e-14)
        # π_h P(|b_{-h}| <= γ-1) = E[b_h 1{|b| <= γ}]
        _close(pi * A_minus, (prob[keep, None] * P[keep]).sum(0), 1e-14)


def test_pi_update_corrects_truncation():
    # if the selected data look like samples of the prior truncated to |b| <= γ, the ET
    # correction gives back the generating π (a plain mean would be biased low)
    pi = np.array([0.3, 0.5, 0.2, 0.4, 0.6, 0.1])
    H, gamma = 6, 2
    A, A_minus = spike_count_masses(pi, gamma)
    model = GSCModel(H, 3)
    n = 1000.0
    stats = {
        "sy": np.ones((3, H)),
        "ss": np.eye(H) * n,
        "yy": np.array(10 * n),
        "n": np.array(n),
        "b": n * pi * A_minus / A,
        "dz": np.zeros(H),
        "dz2": np.ones(H),
    }
    params = {
        "W": np.ones((3, H)),
        "pi": pi,
        "mu": np.zeros(H),
        "psi": np.ones(H),
        "sigma": np.asarray(1.0),
    }
    _close(model.mstep(stats, params, gamma)["pi"], pi, 1e-12)
    assert np.all(stats["b"] / n < pi)


def test_sample_and_generator():
    data = gsc_data(
        4000,
        D=9,
        H=6,
        pi=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        mu=2.0,
        psi=0.5,
        sigma=0.1,
        dictionary="bars",
        random_state=0,
    )
    assert data.Y.shape == (4000, 9) and data.S.shape == (4000, 6)
    np.testing.assert_allclose(data.B.mean(0), data.pi, atol=0.03)
    active = data.S[data.B]
    assert abs(active.mean() - 2.0) < 0.05 and abs(active.var() - 0.5) < 0.05
    assert set(data.ground_truth()) == {"W", "pi", "mu", "psi", "sigma"}
    model = GSCModel(6, 9)
    Y, S = model.sample(500, data.ground_truth(), np.random.default_rng(0))
    assert Y.shape == (500, 9) and S.shape == (500, 6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pi": 1.5}, "pi"),
        ({"psi": -1.0}, "psi"),
        ({"mu": [1.0, 2.0]}, "mu"),
        ({"dictionary": "bars", "D": 20}, "bars"),
        ({"dictionary": "stripes"}, "dictionary"),
        ({"sigma": -0.1}, "sigma"),
    ],
)
def test_generator_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gsc_data(**{"n_samples": 10, "D": 25, "H": 10, **kwargs})


def test_estimator_bad_input():
    Y = gsc_data(50, D=9, H=4, random_state=0).Y
    with pytest.raises(ValueError, match="Hprime"):
        GSC(H=3, Hprime=5, n_iter=1).fit(Y)
    with pytest.raises(ValueError, match="gamma"):
        GSC(H=4, Hprime=2, gamma=3, n_iter=1).fit(Y)
    with pytest.raises(ValueError, match="'H'"):
        GSC(H=0, n_iter=1).fit(Y)
    bad = Y.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError):
        GSC(H=4, n_iter=1).fit(bad)
    with pytest.raises(NotFittedError):
        GSC(H=4).transform(Y)
    with pytest.raises(NotFittedError):
        GSC(H=4).spike_proba(Y)
    est = GSC(H=4, n_iter=1, random_state=0).fit(Y)
    with pytest.raises(ValueError):
        est.spike_proba(Y[:, :5])


def test_float32_data_gives_the_float64_result():
    data = gsc_data(300, D=9, H=6, mu=5.0, dictionary="bars", random_state=0)
    kw = {"H": 6, "Hprime": 4, "gamma": 2, "n_iter": 5, "random_state": 0}
    a = GSC(**kw).fit(data.Y)
    b = GSC(**kw, dtype="float32").fit(data.Y)
    np.testing.assert_allclose(b.W_, a.W_, rtol=0, atol=1e-4 * np.abs(a.W_).max())
    np.testing.assert_allclose(b.free_energy_, a.free_energy_, rtol=1e-5)


def test_default_schedule_anneals_the_whole_joint():
    est = GSC(H=4, n_iter=100)
    annealing = est._schedules()
    assert annealing.anneal_prior
    assert annealing.temperature(0, 100) == 3.0 and annealing.temperature(60, 100) == 1.0
    assert GSC(H=4, n_iter=100, temperature=1.0)._schedules().temperature(0, 100) == 1.0


def test_noise_free_data_stays_finite():
    """σ at its floor with two columns on the same direction: the Cholesky must not break."""
    from prosper import GSC
    from prosper.data.spike_slab import gsc_data

    d = gsc_data(200, D=9, H=1, pi=0.5, mu=2.0, psi=1.0, sigma=0.0, random_state=1)
    model = GSC(H=2, Hprime=2, gamma=2, n_iter=30, random_state=1).fit(d.Y)
    assert np.all(np.isfinite(model.free_energy_)) and np.isfinite(model.sigma_)


def test_align_needs_enough_columns():
    from prosper.data.spike_slab import align_gsc, gsc_data

    d = gsc_data(50, D=9, H=6, pi=0.3, mu=1.0, psi=1.0, sigma=0.1, random_state=0)
    params = {"W": d.W[:, :3], "pi": np.full(3, 0.3), "mu": np.ones(3), "psi": np.ones(3)}
    with pytest.raises(ValueError, match="at least 6 columns"):
        align_gsc(params, d.W)
