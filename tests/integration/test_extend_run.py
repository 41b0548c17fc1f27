"""--resume with a larger n_iter extends a run; any other change is still refused."""

from __future__ import annotations

import json
import logging

import h5py
import numpy as np
import pytest

from prosper import BSC


def _Y() -> np.ndarray:
    rng = np.random.default_rng(0)
    W = rng.normal(size=(6, 3)) * 3
    return (rng.random((120, 3)) < 0.3) @ W.T + rng.normal(size=(120, 6))


def _bsc(n_iter: int, temperature=1.0) -> BSC:
    return BSC(
        H=3,
        n_iter=n_iter,
        temperature=temperature,
        ncut_factor=0.0,
        backend="numpy",
        random_state=0,
    )


def test_larger_n_iter_continues_to_the_uninterrupted_result(tmp_path):
    Y = _Y()
    out = tmp_path / "run.h5"
    _bsc(3).fit(Y, out=out)
    extended = _bsc(5).fit(Y, out=out, resume=True)
    straight = _bsc(5).fit(Y)
    assert extended.n_iter_ == 5
    np.testing.assert_array_equal(extended.W_, straight.W_)
    np.testing.assert_array_equal(extended.free_energy_, straight.free_energy_)
    with h5py.File(out, "r") as f:
        assert json.loads(f.attrs["extensions"]) == [{"from_n_iter": 3, "to_n_iter": 5, "at": 3}]
        assert json.loads(f.attrs["estimator_params"])["n_iter"] == 5
        assert f["params/W"].shape[0] == 5


def test_fraction_schedules_span_the_new_length(tmp_path):
    Y = _Y()
    out = tmp_path / "run.h5"
    schedule = [[0, 2.0], [1.0, 1.0]]  # T from 2 to 1 over the whole run
    _bsc(4, temperature=schedule).fit(Y, out=out)
    extended = _bsc(8, temperature=schedule).fit(Y, out=out, resume=True)
    T = extended.history_["temperature"]
    # the first 4 iterations annealed over 4, the next ones continue on the 8-long schedule
    np.testing.assert_allclose(T[:4], 2.0 - np.arange(4) / 4)
    np.testing.assert_allclose(T[4:], 2.0 - np.arange(4, 8) / 8)


def test_smaller_n_iter_and_other_changes_are_refused(tmp_path):
    Y = _Y()
    out = tmp_path / "run.h5"
    _bsc(4).fit(Y, out=out)
    with pytest.raises(ValueError, match="n_iter=2 is smaller than the stored run's n_iter=4"):
        _bsc(2).fit(Y, out=out, resume=True)
    with pytest.raises(ValueError, match="differs from the stored run in H"):
        BSC(H=4, n_iter=6, temperature=1.0, ncut_factor=0.0, backend="numpy", random_state=0).fit(
            Y, out=out, resume=True
        )


def test_resume_of_a_finished_run_says_there_is_nothing_to_do(tmp_path, caplog):
    Y = _Y()
    out = tmp_path / "run.h5"
    first = _bsc(3).fit(Y, out=out)
    caplog.set_level(logging.INFO, logger="prosper")
    again = _bsc(3).fit(Y, out=out, resume=True)
    assert any("nothing to do" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(again.W_, first.W_)
    assert again.n_iter_ == 3
