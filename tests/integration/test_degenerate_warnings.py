"""Degenerate fits warn (logged once, recorded in the result file) instead of ending silently."""

from __future__ import annotations

import json
import logging

import h5py
import numpy as np

from prosper import BSC, load


def test_pure_noise_warns_and_the_file_records_it(tmp_path, caplog):
    Y = np.random.default_rng(0).normal(size=(50, 25))  # 50 rows of pure noise
    out = tmp_path / "noise.h5"
    caplog.set_level(logging.WARNING, logger="prosper")
    # the prior tempered from T=5 (BSC's default before 2026-12) drives ET data selection
    # down to a handful of the noise rows
    model = BSC(
        H=10,
        n_iter=50,
        temperature=[[0, 5.0], [0.8, 1.0]],
        anneal_prior=True,
        backend="numpy",
        random_state=0,
    ).fit(Y, out=out)
    assert any("ET data selection kept only" in w for w in model.warnings_), model.warnings_
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [m for m in logged if "ET data selection kept only" in m] == [
        "BSC: " + w for w in model.warnings_ if "ET data selection" in w
    ]
    with h5py.File(out, "r") as f:
        assert json.loads(f["model"].attrs["warnings"]) == model.warnings_
    assert load(out).warnings_ == model.warnings_


def _fitted(Y: np.ndarray) -> BSC:
    return BSC(H=3, n_iter=3, ncut_factor=0.0, backend="numpy", random_state=0).fit(Y)


def test_sigma_at_its_floor_and_unused_elements_are_named(monkeypatch):
    rng = np.random.default_rng(1)
    Y = rng.normal(size=(40, 6))
    model = _fitted(Y)
    assert model.warnings_ == []
    model.sigma_ = 1.7e-8
    codes = np.ones((40, 3))
    codes[:, 1] = 0.0
    monkeypatch.setattr(model, "transform", lambda Y: codes)
    found = model._degenerate(Y, model._comm(), 40, {"n_cut": [40.0]})
    assert len(found) == 2
    assert found[0].startswith("sigma collapsed to 1.7e-08")
    assert found[1].startswith("1 of 3 dictionary elements are unused") and "[1]" in found[1]
