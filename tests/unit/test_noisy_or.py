"""The noisy-OR model of tests/noisy_or.py, added the documented way: it has no fused
E-step, so it runs through the solver's generic E-step with every state set and backend,
writes and resumes result files, and learns binary bars."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from prosper.backends import available_backends
from prosper.estimators import ESTIMATORS
from tests.noisy_or import NoisyOR, NoisyORModel


def bars_or(n: int, seed: int, pi: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """Binary data of 3x3 bars (3 horizontal, 3 vertical) from the model's own sample."""
    W = np.full((9, 6), 0.02)
    for i in range(3):
        W[3 * i : 3 * i + 3, i] = 0.9
        W[i::3, 3 + i] = 0.9
    Y, _ = NoisyORModel(6, 9).sample(n, {"W": W, "pi": np.asarray(pi)}, np.random.default_rng(seed))
    return Y, W


@pytest.fixture(scope="module")
def data():
    return bars_or(200, seed=0)[0]


def test_model_runs_the_generic_path():
    assert not NoisyORModel.fused_estep
    assert NoisyORModel.supports_explicit_states()


@pytest.mark.parametrize("states", ["et", "evo", "full"])
def test_every_backend_learns_the_same_model(data, states):
    kwargs = {"Hprime": 5, "gamma": 3} if states == "et" else {}
    fits = {
        b: NoisyOR(H=6, states=states, n_iter=3, random_state=0, backend=b, **kwargs).fit(data)
        for b in ("numpy", "numba", "cupy")
        if b in available_backends()
    }
    assert "numba" in fits
    reference = fits.pop("numpy")
    assert np.all(np.isfinite(reference.W_)) and np.all(np.diff(reference.free_energy_) > 0)
    for fit in fits.values():
        np.testing.assert_allclose(fit.W_, reference.W_, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(fit.free_energy_, reference.free_energy_, rtol=1e-10)
    assert reference.transform(data[:4]).shape == (4, 6)
    assert np.isfinite(reference.score(data[:20]))


@pytest.mark.parametrize("states", ["et", "evo"])
def test_result_file_and_resume(data, states, tmp_path, monkeypatch):
    import prosper

    common = {"H": 6, "states": states, "random_state": 3, "backend": "numpy"}
    full = NoisyOR(n_iter=4, **common).fit(data)
    out = tmp_path / "noisy_or.h5"
    NoisyOR(n_iter=2, **common).fit(data, out=out)
    resumed = NoisyOR(n_iter=4, **common).fit(data, out=out, resume=True)
    np.testing.assert_allclose(resumed.W_, full.W_, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(resumed.free_energy_, full.free_energy_, rtol=1e-12)
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["model/W"][()], resumed.W_)
    # registered under its name, prosper.load (and TOML jobs) find the estimator
    monkeypatch.setitem(ESTIMATORS, "noisy_or", "tests.noisy_or:NoisyOR")
    loaded = prosper.load(out)
    assert isinstance(loaded, NoisyOR)
    np.testing.assert_array_equal(loaded.W_, resumed.W_)
    np.testing.assert_allclose(loaded.transform(data[:5]), resumed.transform(data[:5]))


def test_non_binary_data_is_refused(data):
    with pytest.raises(ValueError, match="binary data"):
        NoisyOR(H=6, n_iter=1).fit(data * 2.0)


def test_evo_recovers_the_bars():
    """N=600 from the model with 6 bars of 0.9 on a 0.02 background, random start, 40
    iterations with evolutionary states: every bar within 0.1 (seed 2; seeds 0-3 find 3, 5,
    6, 5 of them, a local search from a random start)."""
    Y, W = bars_or(600, seed=2)
    est = NoisyOR(H=6, states="evo", n_iter=40, init="random", random_state=2, backend="numba")
    est.fit(Y)
    error = np.abs(W[:, :, None] - est.W_[:, None, :]).max(axis=0).min(axis=1)
    assert np.all(error < 0.1), error
    assert abs(est.pi_ - 0.15) < 0.03
