"""TSC and DSC end to end: recovery of the generating bars, π and σ; result-file round trip."""

from __future__ import annotations

import numpy as np
import pytest

import prosper
from prosper import DSC, TSC
from prosper.data import bars
from tests.helpers import match_columns

# settings measured to recover the bars (benchmarks/bench_discrete.py measures the rates)
SEED_TSC, N_ITER_TSC = 0, 60
TSC_SCHEDULE: dict = {}  # the default: T from 3 to 1 over the first 60 %, repairs on
SEED_DSC, N_ITER_DSC = 0, 50
DSC_SCHEDULE: dict = {}  # the default: T from 5 to 1 over the first 80 % of the run


def test_tsc_recovers_signed_bars():
    data = bars(
        size=5,
        n_samples=2000,
        pi=0.2,
        amplitude=10.0,
        sigma=2.0,
        signed=True,
        random_state=SEED_TSC,
    )
    model = TSC(H=10, Hprime=6, gamma=3, n_iter=N_ITER_TSC, random_state=1, **TSC_SCHEDULE).fit(
        data.Y
    )
    _, err = match_columns(model.W_, data.W, signed=True)
    assert err.max() < 1.0, err  # amplitude 10, noise σ = 2
    assert model.pi_ == pytest.approx(0.2, abs=0.02)
    assert model.sigma_ == pytest.approx(2.0, abs=0.1)


def test_dsc_recovers_discrete_amplitude_bars():
    values = (0, 1, 2, 3)
    data = bars(
        size=5,
        n_samples=1500,
        pi=0.2,
        amplitude=5.0,
        sigma=1.0,
        values=values,
        random_state=SEED_DSC,
    )
    model = DSC(
        H=10,
        values=values,
        Hprime=5,
        gamma=2,
        n_iter=N_ITER_DSC,
        random_state=SEED_DSC,
        **DSC_SCHEDULE,
    ).fit(data.Y)
    _, err = match_columns(model.W_, data.W)
    assert err.max() < 1.0, err  # amplitudes 5, 10, 15; noise σ = 1
    np.testing.assert_allclose(model.pi_, data.value_probs, atol=0.02)
    assert model.sigma_ == pytest.approx(1.0, abs=0.1)


def test_load_round_trip(tmp_path):
    data = bars(
        size=3, n_samples=300, pi=0.2, amplitude=5.0, sigma=0.5, values=(2, 0, -1), random_state=0
    )
    out = tmp_path / "dsc.h5"
    model = DSC(6, values=(2, 0, -1), Hprime=4, gamma=2, n_iter=4, random_state=0)
    model.fit(data.Y, out=out)
    loaded = prosper.load(out)
    assert isinstance(loaded, DSC)
    assert [float(v) for v in loaded.values] == [2.0, 0.0, -1.0]
    np.testing.assert_array_equal(loaded.pi_, model.pi_)
    np.testing.assert_array_equal(loaded.W_, model.W_)
    np.testing.assert_allclose(loaded.transform(data.Y[:5]), model.transform(data.Y[:5]))
    assert loaded.score(data.Y) == pytest.approx(model.score(data.Y))

    signed = bars(size=3, n_samples=300, amplitude=5.0, sigma=0.5, signed=True, random_state=0)
    out = tmp_path / "tsc.h5"
    model = TSC(6, Hprime=4, gamma=2, n_iter=4, random_state=0).fit(signed.Y, out=out)
    loaded = prosper.load(out)
    assert isinstance(loaded, TSC) and loaded.pi_ == model.pi_
    np.testing.assert_array_equal(loaded.W_, model.W_)
