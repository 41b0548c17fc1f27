"""Truncated EM with full enumeration is exact EM: checked against brute force over 2^H."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.special import logsumexp

from prosper.backends import get_backend
from prosper.models.bsc import BSCModel
from prosper.parallel import get_comm
from prosper.solvers.annealing import Schedule
from prosper.solvers.states import ExpectationTruncation
from prosper.solvers.truncated import Annealing, TruncatedEM


def brute_force_bsc(Y, W, pi, sigma):
    """Exact free energy and exact M-step of BSC by explicit enumeration of all 2^H states."""
    N, D = Y.shape
    H = W.shape[1]
    S = np.array(list(itertools.product([0.0, 1.0], repeat=H)))  # (2^H, H)
    F, sy, ss, active = 0.0, np.zeros((D, H)), np.zeros((H, H)), 0.0
    for y in Y:
        logj = np.array(
            [
                -0.5 * D * np.log(2 * np.pi * sigma**2)
                - np.sum((y - W @ s) ** 2) / (2 * sigma**2)
                + s.sum() * np.log(pi)
                + (H - s.sum()) * np.log(1 - pi)
                for s in S
            ]
        )
        F += logsumexp(logj)
        q = np.exp(logj - logsumexp(logj))
        mean = q @ S
        sy += np.outer(y, mean)
        ss += (S * q[:, None]).T @ S
        active += q @ S.sum(axis=1)
    W_new = sy @ np.linalg.inv(ss)
    # sigma^2 = sum_n sum_s q_n(s) ||y_n - W_new s||^2 / (N D), by explicit enumeration
    err = 0.0
    for y in Y:
        logj = np.array(
            [
                -np.sum((y - W @ s) ** 2) / (2 * sigma**2)
                + s.sum() * np.log(pi)
                + (H - s.sum()) * np.log(1 - pi)
                for s in S
            ]
        )
        q = np.exp(logj - logsumexp(logj))
        err += sum(qk * np.sum((y - W_new @ s) ** 2) for qk, s in zip(q, S, strict=True))
    return F / N, W_new, active / (N * H), np.sqrt(err / (N * D))


def learner_for(H, D, params, n_total):
    model = BSCModel(H, D)
    no = Schedule.parse(None, "x", 0.0)
    annealing = Annealing(Schedule.parse(None, "t", 1.0), False, no, no)
    learner = TruncatedEM(
        model,
        ExpectationTruncation(H, H, H, model.values),
        annealing,
        n_iter=1,
        batch_size=7,
        backend=get_backend("numpy"),
        seed=0,
    )
    learner.set_params(params, n_total)
    return learner


@pytest.mark.parametrize("H", [3, 5, 6])
def test_full_enumeration_equals_exact_em(H, rng):
    D, N = 7, 40
    W = rng.normal(size=(D, H))
    pi, sigma = 0.3, 0.8
    S = (rng.random((N, H)) < pi).astype(float)
    Y = S @ W.T + sigma * rng.normal(size=(N, D))
    F_exact, W_exact, pi_exact, sigma_exact = brute_force_bsc(Y, W, pi, sigma)

    learner = learner_for(H, D, {"W": W, "pi": pi, "sigma": sigma}, N)
    comm = get_comm(None)
    stats = comm.allreduce_arrays(learner.estep(Y, comm, 0))
    metrics = learner.mstep(stats, 0)
    assert metrics["free_energy"] == pytest.approx(F_exact, rel=1e-10, abs=1e-10)
    np.testing.assert_allclose(learner.params["W"], W_exact, rtol=1e-10, atol=1e-10)
    assert float(learner.params["pi"]) == pytest.approx(pi_exact, rel=1e-10)
    assert float(learner.params["sigma"]) == pytest.approx(sigma_exact, rel=1e-10)


def test_log_joint_reference_matches_kernel(rng):
    """The fast quadratic-form kernel equals the model's explicit reference log-joint."""
    H, D, B = 8, 6, 13
    model = BSCModel(H, D)
    params = {"W": rng.normal(size=(D, H)), "pi": np.asarray(0.2), "sigma": np.asarray(1.3)}
    Y = rng.normal(size=(B, D))
    states = ExpectationTruncation(H, 5, 3, model.values)
    batch = states.select(model.preselection_scores(Y, params), B)
    from prosper.backends.numpy_backend import linear_log_joint_parts

    W = params["W"]
    ll, lp, _ = linear_log_joint_parts(
        Y,
        Y @ W,
        W.T @ W,
        1.69,
        model.value_log_prior(params),
        batch,
        states.outer,
        states.value_counts,
    )
    ll_ref, lp_ref = model.log_joint(Y, batch.dense(), params)
    np.testing.assert_allclose(ll, ll_ref, rtol=1e-12)
    np.testing.assert_allclose(np.broadcast_to(lp, lp_ref.shape), lp_ref, rtol=1e-12)
