"""MCA, MMCA and GSC over explicit states (``states="evo"``): their log-joints and
statistics equal those of their fused ET E-steps, the numba kernels equal the NumPy code,
and the estimators fit, resume and recover bars with evolutionary states."""

from __future__ import annotations

import numpy as np
import pytest

from prosper import GSC, MCA, MMCA
from prosper.backends import get_backend
from prosper.backends.numpy_backend import log_normalise
from prosper.data import bars
from prosper.models.gsc import GSCModel
from prosper.models.mca import MCAModel, MMCAModel
from prosper.solvers.states import ExpectationTruncation
from tests.helpers import Stop, stop_at

pytest.importorskip("numba")

H, D, B = 7, 9, 30


def _params(model_class, rng):
    W = 3.0 * rng.normal(size=(D, H))
    if model_class is GSCModel:
        psi = rng.uniform(0.2, 2.0, H)
        psi[2] = 0.0  # a slab without variance is allowed
        return {
            "W": W / 3.0,
            "pi": rng.uniform(0.1, 0.4, H),
            "mu": rng.normal(size=H),
            "psi": psi,
            "sigma": np.asarray(0.8),
        }
    model = model_class(H, D)
    W = W if model.signed else np.abs(W)
    return {"W": model.clip_W(W), "pi": np.asarray(0.25), "sigma": np.asarray(1.3)}


@pytest.mark.parametrize("model_class", [MCAModel, MMCAModel, GSCModel])
@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("beta", [1.0, 0.4])
def test_explicit_statistics_equal_the_fused_estep(model_class, backend, beta):
    """With X the ET candidate states of a batch and q their tempered posterior (data
    selection mask included), the explicit-state path gives the fused E-step's log
    marginals and statistics."""
    rng = np.random.default_rng(0)
    model = model_class(H, D)
    params = _params(model_class, rng)
    Y, _ = model.sample(B, params, rng)
    kernels = get_backend(backend)
    states = ExpectationTruncation(H, 5, 3, model.values)
    mask = (rng.random(B) < 0.7).astype(np.float64)
    lm_fused, fused = model.estep_batch(Y, states, params, beta, beta, mask, True, kernels)
    X = model.candidates(Y, states, params).indices()
    ll, lp = model.state_scorer(Y, params, kernels, beta)[1](X)
    ll_ref, lp_ref = (
        model.log_joint(Y, model.values[X], params)
        if model_class is GSCModel
        else model.log_joint(Y, model.values[X], params, beta)
    )
    np.testing.assert_allclose(ll, ll_ref, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(lp, lp_ref, rtol=1e-12, atol=1e-12)
    lm, _ = log_normalise(ll + lp)
    np.testing.assert_allclose(lm, lm_fused, rtol=1e-12, atol=1e-10)
    q = log_normalise(beta * ll + beta * lp)[1]
    stats = model.state_stats(Y, X, q, mask, params, kernels, beta)
    assert set(stats) == set(fused)
    for name, value in fused.items():
        np.testing.assert_allclose(stats[name], value, rtol=1e-10, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("model_class", [MCAModel, MMCAModel])
def test_numba_kernels_equal_the_numpy_code(model_class):
    """Arbitrary states (up to all H latents active), both kernels of the numba backend."""
    rng = np.random.default_rng(1)
    model = model_class(H, D)
    params = _params(model_class, rng)
    Y, _ = model.sample(B, params, rng)
    X = rng.integers(0, 2, (B, 20, H)).astype(np.uint8)
    X[:, 0] = 0
    X[:, 1] = 1
    q = rng.random((B, 20))
    weight = np.where(np.arange(B) % 4 == 0, 0.0, 1.0)  # MMCA's lost statistics ignore it
    numpy_kernels, numba_kernels = get_backend("numpy"), get_backend("numba")
    for beta, summed in ((1.0, False), (0.5, False), (1.0, True)):
        model.signed_sum = summed  # MMCA's signed sum (no effect on MCA)
        a = model.state_scorer(Y, params, numpy_kernels, beta)[1](X)
        b = model.state_scorer(Y, params, numba_kernels, beta)[1](X)
        np.testing.assert_allclose(b[0], a[0], rtol=1e-12)
        sa = model.state_stats(Y, X, q, weight, params, numpy_kernels, beta)
        sb = model.state_stats(Y, X, q, weight, params, numba_kernels, beta)
        for name in sa:
            np.testing.assert_allclose(sb[name], sa[name], rtol=1e-11, err_msg=name)


def test_gsc_explicit_moments_equal_the_et_posterior():
    rng = np.random.default_rng(2)
    model = GSCModel(H, D)
    params = _params(GSCModel, rng)
    Y, _ = model.sample(B, params, rng)
    kernels = get_backend("numpy")
    batch = model.candidates(Y, ExpectationTruncation(H, 5, 3, model.values), params)
    mean_s, mean_b = model.posterior_moments(Y, batch, params, kernels)
    X = batch.indices()
    q = log_normalise(np.add(*model.state_scorer(Y, params, kernels)[1](X)))[1]
    s, b = model.state_moments(Y, X, q, params)
    np.testing.assert_allclose(s, mean_s, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b, mean_b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(model.state_mean(Y, X, q, params), mean_s, rtol=1e-10, atol=1e-12)


def _data(estimator):
    signed = estimator is MMCA
    combine = "sum" if estimator is GSC else "max"
    return bars(
        size=3,
        n_samples=200,
        pi=0.2,
        amplitude=5.0,
        sigma=0.5,
        combine=combine,
        signed=signed,
        random_state=0,
    )


@pytest.mark.parametrize("estimator", [MCA, MMCA, GSC])
def test_evo_fits_the_same_on_numpy_and_numba(estimator):
    data = _data(estimator)
    fits = [
        estimator(H=6, states="evo", n_iter=4, random_state=1, backend=b, progress=False).fit(
            data.Y
        )
        for b in ("numpy", "numba")
    ]
    np.testing.assert_allclose(fits[1].W_, fits[0].W_, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(fits[1].free_energy_, fits[0].free_energy_, rtol=1e-10)
    means = [f.transform(data.Y[:10]) for f in fits]
    np.testing.assert_allclose(means[1], means[0], rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("estimator", [MCA, MMCA, GSC])
def test_resumed_evo_run_continues_exactly(estimator, tmp_path):
    data = _data(estimator)
    common = {
        "H": 6,
        "states": "evo",
        "temperature": 1.0,
        "random_state": 4,
        "backend": "numpy",
        "progress": False,
    }
    full = estimator(n_iter=4, **common).fit(data.Y)
    out = tmp_path / "evo.h5"
    # interrupted after iteration 1 of the same 4 (MMCA's E-step changes at n_iter / 2)
    with pytest.raises(Stop):
        estimator(n_iter=4, callback=stop_at(1), **common).fit(data.Y, out=out)
    resumed = estimator(n_iter=4, **common).fit(data.Y, out=out, resume=True)
    np.testing.assert_allclose(resumed.W_, full.W_, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(resumed.free_energy_, full.free_energy_, rtol=1e-12)


def _recovered(W_true, W, signed=False):
    cos = (W_true / np.linalg.norm(W_true, axis=0)).T @ (W / np.linalg.norm(W, axis=0))
    return int(((np.abs(cos) if signed else cos).max(axis=1) > 0.95).sum())


@pytest.mark.parametrize(("estimator", "H"), [(MCA, 6), (MMCA, 12)])
def test_evo_recovers_the_bars(estimator, H):
    """3x3 bars (6 of them), N=300, 30 iterations with the default schedule (MMCA: H=12,
    since a bar of either sign needs a cause of its own); all bars found in seeds 0-2."""
    data = bars(
        size=3,
        n_samples=300,
        pi=0.2,
        amplitude=5.0,
        sigma=0.5,
        combine="max",
        signed=estimator is MMCA,
        random_state=0,
    )
    est = estimator(H=H, states="evo", n_iter=30, random_state=0, backend="numba")
    est.fit(data.Y)
    assert _recovered(data.W, est.W_, signed=estimator is MMCA) == 6
    assert est.sigma_ < (0.6 if estimator is MCA else 1.1)
