"""GSC end to end: parameter recovery on data from the model, result files, the example job."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import prosper
from prosper import GSC
from prosper.data.spike_slab import align_gsc, gsc_data

ROOT = Path(__file__).resolve().parents[2]


def test_recovers_generating_parameters():
    """D=25, H=10, N=5000 from known parameters; Hprime=6, gamma=3, 40 iterations, seed 0.

    No annealing (temperature=1.0): 40 iterations at T=1 converge here, while the default
    schedule would spend 60 % of them tempered. 11 s on one core (40 s when the
    machine is heavily loaded). GSC is identifiable only up to permutation and the
    per-latent gauge (W_h, μ_h, Ψ_h) -> (c W_h, μ_h/c, Ψ_h/c²), so the learned parameters
    are aligned first (align_gsc). Tolerances: max |W - W_true| < 0.05 (columns of norm
    ~1), |π - π_true| < 0.04, |μ - μ_true| < 0.1 (μ in [1.5, 3]), |Ψ - Ψ_true| < 0.12
    (Ψ in [0.2, 0.6]), |σ/σ_true - 1| < 0.03; measured: 0.012, 0.024, 0.046, 0.068, 0.010.
    Posterior means correlate with the true latents > 0.95, spike posteriors > 0.5 match
    the true spikes in > 97 % of entries.
    """
    H = 10
    mu, psi = np.linspace(1.5, 3.0, H), np.linspace(0.2, 0.6, H)
    data = gsc_data(5000, D=25, H=H, pi=0.15, mu=mu, psi=psi, sigma=0.2, random_state=0)
    est = GSC(H=H, Hprime=6, gamma=3, n_iter=40, temperature=1.0, random_state=0).fit(data.Y)
    fit = align_gsc({"W": est.W_, "pi": est.pi_, "mu": est.mu_, "psi": est.psi_}, data.W)
    assert fit["cosine"].min() > 0.99
    assert np.abs(fit["W"] - data.W).max() < 0.05
    assert np.abs(fit["pi"] - data.pi).max() < 0.04
    assert np.abs(fit["mu"] - mu).max() < 0.1
    assert np.abs(fit["psi"] - psi).max() < 0.12
    assert abs(est.sigma_ / 0.2 - 1) < 0.03
    # the posterior means track the generating latents, the spike posteriors the spikes
    S = est.transform(data.Y[:500])[:, fit["perm"]] * (fit["mu"] / est.mu_[fit["perm"]])
    assert np.corrcoef(S.ravel(), data.S[:500].ravel())[0, 1] > 0.95
    spikes = est.spike_proba(data.Y[:500])[:, fit["perm"]] > 0.5
    assert np.mean(spikes == data.B[:500]) > 0.97


def test_result_file_round_trip(tmp_path):
    data = gsc_data(
        400, D=9, H=6, pi=0.2, mu=4.0, psi=0.5, sigma=0.3, dictionary="bars", random_state=1
    )
    out = tmp_path / "gsc.h5"
    est = GSC(H=6, Hprime=4, gamma=2, n_iter=8, random_state=0).fit(data.Y, out=out)
    loaded = prosper.load(out)
    assert isinstance(loaded, GSC)
    for name in ("W_", "pi_", "mu_", "psi_"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(est, name))
    assert loaded.pi_.shape == (6,)
    np.testing.assert_allclose(loaded.transform(data.Y[:20]), est.transform(data.Y[:20]))
    np.testing.assert_allclose(loaded.spike_proba(data.Y[:20]), est.spike_proba(data.Y[:20]))


def test_example_job_runs(tmp_path):
    cli = pytest.importorskip("prosper.cli")
    out = tmp_path / "r.h5"
    code = cli.main(
        [
            "fit",
            str(ROOT / "examples" / "gsc_bars.toml"),
            "--out",
            str(out),
            "--set",
            "model.n_iter=5",
            "--log-level",
            "WARNING",
        ]
    )
    assert code == 0
    model = prosper.load(out)
    assert model.W_.shape == (25, 10) and model.mu_.shape == (10,)
