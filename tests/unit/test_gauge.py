"""GSC stores its parameters in one documented gauge: unit-norm columns of W."""

from __future__ import annotations

import h5py
import numpy as np

from prosper import GSC, load
from prosper.models.gsc import GSCModel


def _data() -> np.ndarray:
    rng = np.random.default_rng(0)
    W = rng.normal(size=(6, 3)) * 4.0
    b = rng.random((150, 3)) < 0.3
    z = 5.0 + rng.normal(size=(150, 3))
    return (b * z) @ W.T + 0.5 * rng.normal(size=(150, 6))


def test_canonical_params_keep_the_likelihood():
    rng = np.random.default_rng(1)
    params = {
        "W": rng.normal(size=(6, 3)) * 3,
        "pi": np.full(3, 0.3),
        "mu": rng.normal(size=3),
        "psi": rng.random(3) + 0.5,
        "sigma": np.asarray(0.7),
    }
    model = GSCModel(3, 6)
    canonical = model.canonical_params(params)
    np.testing.assert_allclose(np.linalg.norm(canonical["W"], axis=0), 1.0)
    # every state's log-joint is unchanged (the data's law is gauge-free)
    Y = rng.normal(size=(5, 6))
    S = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=float)
    S = np.broadcast_to(S, (5, 4, 3))
    new, old = model.log_joint(Y, S, canonical), model.log_joint(Y, S, params)
    for a, b in zip(new, old, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10)


def test_fitted_gsc_and_its_file_are_in_the_unit_norm_gauge(tmp_path):
    Y = _data()
    out = tmp_path / "gsc.h5"
    model = GSC(H=3, n_iter=4, backend="numpy", random_state=0).fit(Y, out=out)
    np.testing.assert_allclose(np.linalg.norm(model.W_, axis=0), 1.0)
    with h5py.File(out, "r") as f:
        np.testing.assert_allclose(f["model/W"][...], model.W_)
        np.testing.assert_allclose(f["model/mu"][...], model.mu_)
    again = load(out)
    np.testing.assert_allclose(again.score(Y), model.score(Y), rtol=1e-12)
