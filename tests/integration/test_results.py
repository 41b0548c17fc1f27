"""HDF5 result files: layout, load round trip, resume, refusal to lose data."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

import prosper
from prosper import BSC
from prosper.data import bars
from tests.helpers import Stop, stop_at


@pytest.fixture(scope="module")
def data():
    return bars(size=3, n_samples=300, pi=0.2, amplitude=5.0, sigma=0.5, random_state=0)


def small(**kw):
    return BSC(
        **{"H": 6, "Hprime": 5, "gamma": 2, "n_iter": 12, "batch_size": 64, "random_state": 3, **kw}
    )


def test_layout_and_load(tmp_path, data):
    out = tmp_path / "run.h5"
    model = small().fit(data.Y, out=out)
    with h5py.File(out, "r") as f:
        for key in (
            "prosper_version",
            "model",
            "config",
            "n_ranks",
            "start_time",
            "host",
            "estimator_params",
            "n_samples",
        ):
            assert key in f.attrs, key
        assert f.attrs["model"] == "bsc" and f.attrs["n_ranks"] == 1
        assert f["params/W"].shape == (12, 9, 6) and f["params/W"].chunks == (1, 9, 6)
        assert f["params/W"].maxshape == (None, 9, 6)
        np.testing.assert_array_equal(f["params/W"][-1], model.W_)
        for m in ("free_energy", "seconds_estep", "seconds_mstep", "seconds_reduce"):
            assert f["metrics"][m].shape == (12,)
        assert f["checkpoint"].attrs["iteration"] == 12
        np.testing.assert_array_equal(f["model/W"], model.W_)
        assert 'name = "bsc"' in f.attrs["config"]
    loaded = prosper.load(out)
    assert type(loaded) is BSC and loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.W_, model.W_)
    assert loaded.pi_ == model.pi_ and loaded.sigma_ == model.sigma_
    np.testing.assert_array_equal(loaded.free_energy_, model.free_energy_)
    np.testing.assert_allclose(loaded.transform(data.Y[:5]), model.transform(data.Y[:5]))
    assert loaded.score(data.Y) == pytest.approx(model.score(data.Y))


def test_resume_equals_uninterrupted(tmp_path, data):
    full = small(noise=[[0, 0.05], [0.5, 0.0]], temperature=[[0, 2.0], [0.5, 1.0]])
    full.fit(data.Y, out=tmp_path / "full.h5")

    crash = stop_at(6)

    out = tmp_path / "part.h5"
    part = small(noise=[[0, 0.05], [0.5, 0.0]], temperature=[[0, 2.0], [0.5, 1.0]], callback=crash)
    with pytest.raises(Stop):
        part.fit(data.Y, out=out)
    with h5py.File(out, "r") as f:  # the crashed run's file is readable and resumable
        assert f["checkpoint"].attrs["iteration"] == 7 and "model" not in f
    with pytest.raises(ValueError, match="holds no final model"):
        prosper.load(out)
    part.set_params(callback=None).fit(data.Y, out=out, resume=True)
    np.testing.assert_allclose(part.W_, full.W_, rtol=0, atol=1e-10)
    np.testing.assert_allclose(part.free_energy_, full.free_energy_, rtol=1e-12)
    assert prosper.load(out).n_iter_ == 12


def test_resume_with_a_drawn_seed(tmp_path, data):
    """random_state=None: the seed drawn by the first call is stored and reused on resume."""

    crash = stop_at(5)

    out = tmp_path / "drawn.h5"
    kwargs = {"noise": [[0, 0.1], [0.8, 0.0]], "random_state": None}
    with pytest.raises(Stop):
        small(callback=crash, **kwargs).fit(data.Y, out=out)
    resumed = small(**kwargs).fit(data.Y, out=out, resume=True)
    full = small(**{**kwargs, "random_state": resumed.seed_}).fit(data.Y)
    np.testing.assert_allclose(resumed.W_, full.W_, rtol=0, atol=1e-12)


def test_resuming_a_finished_run_changes_nothing(tmp_path, data):
    out = tmp_path / "done.h5"
    model = small(n_iter=4).fit(data.Y, out=out)
    again = small(n_iter=4).fit(data.Y, out=out, resume=True)
    np.testing.assert_array_equal(again.W_, model.W_)
    assert again.n_iter_ == 4 and len(again.free_energy_) == 4
    with h5py.File(out, "r") as f:
        assert f["params/W"].shape[0] == 4
    np.testing.assert_array_equal(prosper.load(out).W_, model.W_)


def test_refused_resume_leaves_the_file_intact(tmp_path, data):
    out = tmp_path / "done.h5"
    model = small(n_iter=4).fit(data.Y, out=out)
    with pytest.raises(ValueError, match="configuration differs"):
        small(n_iter=4, H=5).fit(data.Y, out=out, resume=True)
    with pytest.raises(
        ValueError, match="fitted on data with D=9 features, this run's data has D=8"
    ):
        small(n_iter=4).fit(data.Y[:, :8], out=out, resume=True)
    with pytest.raises(ValueError, match="data differ from the stored run's"):
        small(n_iter=4).fit(data.Y[::-1] * 1.01, out=out, resume=True)
    np.testing.assert_array_equal(prosper.load(out).W_, model.W_)
    with h5py.File(out, "r") as f:
        assert f["params/W"].shape[0] == 4


def test_no_silent_overwrite_and_resume_checks(tmp_path, data):
    out = tmp_path / "run.h5"
    small(n_iter=2).fit(data.Y, out=out)
    with pytest.raises(ValueError, match="resume and overwrite exclude each other"):
        small(n_iter=2).fit(data.Y, out=out, resume=True, overwrite=True)
    with pytest.raises(ValueError, match="already exists; continue it with --resume"):
        small(n_iter=2).fit(data.Y, out=out)
    small(n_iter=3).fit(data.Y, out=out, overwrite=True)
    with pytest.raises(ValueError, match="configuration differs .* H \\(stored 6, now 7\\)"):
        small(H=7).fit(data.Y, out=out, resume=True)
    with pytest.raises(ValueError, match="the file holds a 'bsc' run, not 'tsc'"):
        prosper.TSC(H=6, Hprime=5, gamma=2, n_iter=12).fit(data.Y, out=out, resume=True)
    with pytest.raises(ValueError, match="fitted on 300 data points, this run has 299"):
        small(n_iter=3).fit(data.Y[:299], out=out, resume=True)
    with pytest.raises(ValueError, match="does not exist"):
        small().fit(data.Y, out=tmp_path / "nope.h5", resume=True)
    with pytest.raises(ValueError, match="output directory .* does not exist"):
        small().fit(data.Y, out=tmp_path / "missing" / "run.h5")
    with pytest.raises(FileNotFoundError):
        prosper.load(tmp_path / "none.h5")


def test_unwritable_output(tmp_path, data):
    import os

    with pytest.raises(ValueError, match="'/proc' is not writable"):
        small().fit(data.Y, out="/proc/prosper-run.h5")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is not a directory"):
        small().fit(data.Y, out=tmp_path / "file" / "run.h5")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(ValueError, match="is not writable"):
            small().fit(data.Y, out=locked / "run.h5")
    finally:
        locked.chmod(0o700)
