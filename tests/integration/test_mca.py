"""MCA and MMCA learn their bars problems end to end, and round-trip through a result file."""

from __future__ import annotations

import numpy as np
import pytest

import prosper
from prosper import MCA, MMCA
from prosper.data import bars
from tests.helpers import match_columns


@pytest.fixture(scope="module")
def max_bars():
    return bars(size=5, n_samples=1000, combine="max", random_state=0)


@pytest.fixture(scope="module")
def mca(max_bars):
    # a short anneal (the default starts at T = 4 and needs more iterations)
    return MCA(
        H=10, Hprime=8, gamma=4, n_iter=30, temperature=[[0, 2.0], [0.6, 1.0]], random_state=1
    ).fit(max_bars.Y)


def test_mca_recovers_max_bars(mca, max_bars):
    assert (mca.W_ >= 1e-4).all()
    _, err = match_columns(mca.W_, max_bars.W)
    assert err.max() < 1.5, err
    assert mca.pi_ == pytest.approx(0.2, rel=0.15)
    assert mca.sigma_ == pytest.approx(2.0, rel=0.1)
    # the run ends at T = 1 (rho = 21); the rho-smoothed M-step is no exact EM step, so F
    # may wobble slightly at the end, but it has settled far above its start
    F = mca.free_energy_
    assert mca.history_["temperature"][-1] == 1.0
    assert F[-1] > F[0] + 1.0
    assert np.ptp(F[-5:]) < 1e-2


def test_mca_transform_score_sample_load(mca, max_bars, tmp_path):
    S = mca.transform(max_bars.Y[:200])
    assert S.shape == (200, 10) and np.all((S >= 0) & (S <= 1 + 1e-12))
    from scipy.optimize import linear_sum_assignment

    corr = np.corrcoef(S.T, max_bars.S[:200].T)[:10, 10:]
    r, c = linear_sum_assignment(-corr)
    assert corr[r, c].min() > 0.8
    # score = the free energy at T = 1 of the final parameters: close to the last trace value
    assert mca.score(max_bars.Y) == pytest.approx(mca.free_energy_[-1], abs=0.05)
    Y, S = mca.sample(400, random_state=1)
    assert Y.shape == (400, 25) and S.mean() == pytest.approx(mca.pi_, abs=0.04)
    out = tmp_path / "mca.h5"
    model = MCA(H=10, Hprime=8, gamma=4, n_iter=3, random_state=1).fit(max_bars.Y, out=out)
    loaded = prosper.load(out)
    assert type(loaded) is MCA and loaded.get_params()["Hprime"] == 8
    np.testing.assert_array_equal(loaded.W_, model.W_)
    np.testing.assert_allclose(loaded.transform(max_bars.Y[:5]), model.transform(max_bars.Y[:5]))


def test_mmca_recovers_signed_max_bars():
    data = bars(size=4, n_samples=2000, signed=True, combine="max", random_state=0)
    model = MMCA(
        H=16, Hprime=6, gamma=3, n_iter=40, temperature=[[0, 2.0], [0.6, 1.0]], random_state=0
    ).fit(data.Y)
    # binary causes: each bar is learned once with each sign. Where two bars of equal
    # magnitude and opposite sign cross, bars() lets the horizontal one win (argmax takes
    # the first), which no symmetric model reproduces: crossing pixels of the vertical bars
    # are off by up to ~2.5, a missed bar by ~10.
    _, err = match_columns(model.W_, np.hstack([data.W, -data.W]), signed=True)
    assert err.max() < 3.0, err
    assert model.pi_ == pytest.approx(0.1, rel=0.25)
    assert model.sigma_ == pytest.approx(2.0, rel=0.15)
    assert model.transform(data.Y[:3]).shape == (3, 16)
