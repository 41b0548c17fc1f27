"""BSC learns the bars test end to end (the scripted/notebook use of the library)."""

from __future__ import annotations

import numpy as np
import pytest

from prosper import BSC
from prosper.data import bars
from tests.helpers import match_columns


@pytest.fixture(scope="module")
def data():
    return bars(size=5, n_samples=2000, pi=0.2, amplitude=10.0, sigma=2.0, random_state=0)


@pytest.fixture(scope="module")
def fitted(data):
    return BSC(H=10, Hprime=6, gamma=3, n_iter=100, random_state=1).fit(data.Y)


def test_recovers_bars(fitted, data):
    _, err = match_columns(fitted.W_, data.W)
    assert err.max() < 1.0, err
    assert fitted.pi_ == pytest.approx(0.2, rel=0.1)
    assert fitted.sigma_ == pytest.approx(2.0, rel=0.1)


def test_free_energy_monotone_after_annealing(fitted):
    F = fitted.free_energy_
    assert F.shape == (100,) and fitted.n_iter_ == 100
    # The default schedules end at iteration 80 (temperature; ET selection at 67). While
    # they change, F over *all* points may fall (tempered posterior, M-step on the N_cut
    # selected points); F[i] is the free energy of the parameters entering iteration i.
    end = 80 + 2
    assert np.all(np.diff(F[end:]) >= -1e-9 * np.abs(F[end:-1])), np.diff(F[end:]).min()
    assert F[-1] > F[0]


def test_transform_score_sample(fitted, data):
    S = fitted.transform(data.Y[:200])
    assert S.shape == (200, 10) and np.all((S >= 0) & (S <= 1 + 1e-12))
    # posterior means pick out the generating bars (up to the learned permutation)
    from scipy.optimize import linear_sum_assignment

    corr = np.corrcoef(S.T, data.S[:200].T)[:10, 10:]
    r, c = linear_sum_assignment(-corr)
    assert corr[r, c].min() > 0.85
    assert fitted.score(data.Y) == pytest.approx(fitted.free_energy_[-1], abs=0.05)
    Y, S = fitted.sample(500, random_state=1)
    assert Y.shape == (500, 25) and S.shape == (500, 10)
    assert S.mean() == pytest.approx(fitted.pi_, abs=0.03)
    Y2, _ = fitted.sample(500, random_state=1)
    np.testing.assert_array_equal(Y, Y2)


def test_float32_runs_in_float32(data):
    model = BSC(H=10, Hprime=6, gamma=3, n_iter=30, dtype="float32", random_state=1)
    model.fit(data.Y.astype(np.float32))
    ref = BSC(H=10, Hprime=6, gamma=3, n_iter=30, random_state=1).fit(data.Y)
    np.testing.assert_allclose(model.W_, ref.W_, atol=1e-2)


def test_exact_em_on_small_bars():
    """Hprime = gamma = H: exact EM; the free energy never decreases without annealing."""
    small = bars(size=3, n_samples=400, pi=0.2, amplitude=5.0, sigma=0.5, random_state=2)
    model = BSC(
        H=6, Hprime=6, gamma=6, n_iter=40, ncut_factor=0, temperature=1.0, random_state=0
    ).fit(small.Y)
    assert np.all(np.diff(model.free_energy_) >= -1e-10 * np.abs(model.free_energy_[1:]))


def test_callback_can_stop(data):
    seen = []
    model = BSC(
        H=10, n_iter=50, random_state=0, callback=lambda it, learner, m: seen.append(it) or it == 4
    ).fit(data.Y[:300])
    assert seen == [0, 1, 2, 3, 4] and model.n_iter_ == 5
