"""BSC under mpiexec: same model on 1, 2 and 3 ranks; failures abort the job, never hang."""

from __future__ import annotations

import time

import numpy as np
import pytest

import prosper
from prosper.data import bars
from tests.helpers import run_mpi

pytestmark = pytest.mark.mpi

JOB = """
[model]
name = "bsc"
H = 10
Hprime = 6
gamma = 3
n_iter = 30
batch_size = 250
random_state = 1
backend = "{backend}"
noise = [[0, 0.02], [0.5, 0.0]]
# every check re-initialises a latent: the chosen point may sit on any rank
reassignment_ratio = 1.0

[data]
file = "{file}"
"""


@pytest.fixture(scope="module")
def job_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("mpi")
    data = bars(size=5, n_samples=1500, random_state=0)
    np.save(path / "Y.npy", data.Y)
    (path / "job.toml").write_text(JOB.format(file="Y.npy", backend="numpy"))
    return path


def test_one_two_three_ranks_same_model(job_dir):
    W = {}
    for n in (1, 2, 3):
        out = job_dir / f"run{n}.h5"
        run_mpi(n, ["prosper", "fit", "job.toml", "--out", str(out)], cwd=job_dir)
        model = prosper.load(out)
        W[n] = model.W_
        assert (model.history_["reassigned"] >= 0).any()
        import h5py

        with h5py.File(out, "r") as f:
            assert f.attrs["n_ranks"] == n and f.attrs["n_samples"] == 1500
    np.testing.assert_allclose(W[2], W[1], rtol=0, atol=1e-8)
    np.testing.assert_allclose(W[3], W[1], rtol=0, atol=1e-8)


def test_numba_on_two_ranks_matches_numpy_on_one(job_dir):
    """The fused numba kernel (threads shared between the ranks of a node) under MPI."""
    pytest.importorskip("numba")
    (job_dir / "job_numba.toml").write_text(JOB.format(file="Y.npy", backend="numba"))
    runs = {}
    for n, job in ((1, "job.toml"), (2, "job_numba.toml")):
        out = job_dir / f"backend{n}.h5"
        run_mpi(n, ["prosper", "fit", job, "--out", str(out)], cwd=job_dir)
        runs[n] = prosper.load(out)
    np.testing.assert_allclose(runs[2].W_, runs[1].W_, rtol=0, atol=1e-8)
    np.testing.assert_allclose(runs[2].free_energy_, runs[1].free_energy_, rtol=1e-10)


EVO_JOB = """
[model]
name = "bsc"
H = 10
states = "evo"
n_states = 12
n_iter = 12
batch_size = 200
random_state = 1
backend = "{backend}"
reassignment_ratio = 1.0

[data]
file = "Y.npy"
"""


def test_evolutionary_states_do_not_depend_on_the_ranks(job_dir):
    """Each row's search draws from (seed, iteration, global row): 1 rank on NumPy, 2 and 3
    ranks on numba give the same model, and the states in the checkpoint are the same."""
    import h5py

    pytest.importorskip("numba")
    runs, states = {}, {}
    for n, backend in ((1, "numpy"), (2, "numba"), (3, "numba")):
        (job_dir / f"evo_{n}.toml").write_text(EVO_JOB.format(backend=backend))
        out = job_dir / f"evo{n}.h5"
        run_mpi(n, ["prosper", "fit", f"evo_{n}.toml", "--out", str(out)], cwd=job_dir, timeout=300)
        runs[n] = prosper.load(out)
        assert runs[n].history_["reassigned"][5] >= 0  # the point may sit on any rank
        with h5py.File(out, "r") as f:
            ck = f["checkpoint"][f["checkpoint"].attrs["active"]]
            states[n] = ck["state/rows/evo_states"][()]
    assert states[1].shape == (1500, 12, 2)  # 10 binary latents packed into two bytes
    for n in (2, 3):
        np.testing.assert_allclose(runs[n].W_, runs[1].W_, rtol=0, atol=1e-8)
        np.testing.assert_allclose(runs[n].free_energy_, runs[1].free_energy_, rtol=1e-10)
        np.testing.assert_array_equal(states[n], states[1])


def test_corrupt_rank_aborts_the_job(tmp_path):
    """Rank 1's shard is not a valid .npy file: the whole job ends with its message."""
    np.save(tmp_path / "shard_0.npy", np.ones((20, 4)))
    (tmp_path / "shard_1.npy").write_bytes(b"this is not a numpy file")
    (tmp_path / "job.toml").write_text(JOB.format(file="shard_{rank}.npy", backend="numpy"))
    start = time.time()
    proc = run_mpi(
        2, ["prosper", "fit", "job.toml", "--out", "r.h5"], cwd=tmp_path, timeout=60, check=False
    )
    assert proc.returncode != 0
    assert time.time() - start < 60
    # the ranks agree on the input error: one line naming rank 1, status 2 on every rank
    assert "(rank 1)" in proc.stderr and "shard_1.npy" in proc.stderr


def test_bad_rows_on_one_rank_are_reported_by_all(tmp_path):
    Y = np.ones((20, 4))
    Y[15, 2] = np.nan  # lands on rank 1
    np.save(tmp_path / "Y.npy", Y)
    (tmp_path / "job.toml").write_text(JOB.format(file="Y.npy", backend="numpy"))
    proc = run_mpi(
        2, ["prosper", "fit", "job.toml", "--out", "r.h5"], cwd=tmp_path, timeout=60, check=False
    )
    # agreed by the ranks: one line, status 2, no MPI_Abort (which can lose the message)
    assert proc.returncode == 2
    assert proc.stderr.count("NaN or infinity (first at row 15, column 2)") == 1, proc.stderr
    assert "(rank 1)" in proc.stderr and "MPI_Abort" not in proc.stderr


def test_more_ranks_than_rows(tmp_path):
    np.save(tmp_path / "Y.npy", np.ones((2, 4)))
    (tmp_path / "job.toml").write_text(JOB.format(file="Y.npy", backend="numpy"))
    proc = run_mpi(
        3, ["prosper", "fit", "job.toml", "--out", "r.h5"], cwd=tmp_path, timeout=60, check=False
    )
    assert proc.returncode == 2
    message = "use at most as many MPI ranks as data points (N=2, ranks=3)"
    assert proc.stderr.count(message) == 1, proc.stderr
    assert "MPI_Abort" not in proc.stderr


def test_demo_job_runs_on_two_ranks(tmp_path):
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "bsc_bars.toml"
    run_mpi(
        2,
        ["prosper", "fit", str(example), "--out", "demo.h5", "--set", "model.n_iter=5"],
        cwd=tmp_path,
    )
    assert prosper.load(tmp_path / "demo.h5").W_.shape == (25, 10)
