"""ET data selection's two ways to sum the statistics of the kept points: a pass of log
marginals then a pass over the kept points, or one pass over all points minus the cut ones
(the solver takes the second where few points are cut, ``SUBTRACT_CUT``). Both must give
the same fit to round-off for every model, on the fused and on the generic E-step."""

from __future__ import annotations

import numpy as np
import pytest

from prosper.data import bars
from prosper.estimators import get_estimator_class
from prosper.solvers import truncated
from tests.noisy_or import NoisyOR
from tests.unit.test_noisy_or import bars_or

#: small ET sets, so that the truncated mass is well below 1 and points are cut every
#: iteration (data selection at full strength from the start)
SETTINGS = {"Hprime": 5, "gamma": 2, "ncut_factor": 1.0, "n_iter": 4, "random_state": 1}


def _data(name: str) -> np.ndarray:
    if name == "noisy_or":
        return bars_or(300, seed=2)[0]
    signed = name in ("tsc", "mmca")
    values = {"values": [0.0, 1.0, 2.0]} if name == "dsc" else {}
    return bars(4, 300, pi=0.3, sigma=0.5, signed=signed, random_state=0, **values).Y


def _fit(name: str, backend: str, subtract_cut: float, monkeypatch):
    calls = {"subtracted": 0, "two_passes": 0}
    original = truncated.TruncatedEM._subtracts

    def spy(self, n_cut):
        few = original(self, n_cut)
        calls["subtracted" if few else "two_passes"] += 1
        return few

    monkeypatch.setattr(truncated, "SUBTRACT_CUT", subtract_cut)
    monkeypatch.setattr(truncated.TruncatedEM, "_subtracts", spy)
    estimator = NoisyOR if name == "noisy_or" else get_estimator_class(name)
    H = 6 if name == "noisy_or" else 8
    model = estimator(H=H, backend=backend, **SETTINGS).fit(_data(name))
    return model, calls


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("name", ["bsc", "tsc", "dsc", "gsc", "mca", "mmca", "noisy_or"])
def test_subtracting_the_cut_points_gives_the_two_pass_fit(name, backend, monkeypatch):
    if backend == "numba":
        pytest.importorskip("numba")
    subtracted, calls = _fit(name, backend, 1.0, monkeypatch)
    assert calls == {"subtracted": SETTINGS["n_iter"], "two_passes": 0}
    two_pass, calls = _fit(name, backend, 0.0, monkeypatch)
    assert calls == {"subtracted": 0, "two_passes": SETTINGS["n_iter"]}
    # points were cut in every iteration, the same number either way
    n_cut = np.asarray(two_pass.history_["n_cut"])
    assert np.all(n_cut < 300)
    np.testing.assert_array_equal(subtracted.history_["n_cut"], n_cut)
    np.testing.assert_allclose(subtracted.free_energy_, two_pass.free_energy_, rtol=1e-10)
    for key, value in two_pass._fitted_params().items():
        np.testing.assert_allclose(
            subtracted._fitted_params()[key], value, rtol=1e-8, atol=1e-10, err_msg=key
        )
