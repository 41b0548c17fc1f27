"""ℓq sparse coding under mpiexec: 1, 2 and 3 ranks learn the same dictionary; a run killed
with SIGKILL resumes to the uninterrupted result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import prosper
from prosper.data import get_generator
from tests.helpers import ROOT, killed_run, mpiexec_path, run_mpi

pytestmark = pytest.mark.mpi

WORKER = """
import sys
import numpy as np
from prosper import SparseCoding
from prosper.data import get_generator
from prosper.parallel import get_comm, row_block

penalty, out = sys.argv[1], sys.argv[2]
comm = get_comm()
data = get_generator("sparse_dictionary")(n_samples=600, D=10, H=14, sparsity=2, noise=0.05,
                                          random_state=0)
Y = data.Y[row_block(600, comm)]
# global mini-batches of 66-67 rows (9 per pass, one row from every run of 9), drawn from
# all ranks' rows: the same on any number of ranks
model = SparseCoding(H=14, penalty=penalty, lam=0.2, n_iter=8, batch_size=70,
                     random_state=4).fit(Y)
S = model.transform(Y)
score = model.score(Y)
codes = comm.comm.gather(S, root=0) if comm.size > 1 else [S]
if comm.rank == 0:
    np.savez(out, W=model.W_, F=model.free_energy_, S=np.concatenate(codes), score=score)
"""


@pytest.mark.parametrize(("penalty", "n_ranks"), [("l1", 3), ("l1/2", 2)])
def test_one_and_more_ranks_learn_the_same_dictionary(tmp_path, penalty, n_ranks):
    """600 rows in stratified mini-batches from runs of 9 rows: the blocks of 2 ranks (300
    rows) and of 3 ranks (200) cut runs, so ranks share mini-batches unevenly by a row."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    runs = {}
    for n in (1, n_ranks):
        out = tmp_path / f"r{n}.npz"
        run_mpi(n, ["python", str(script), penalty, str(out)], timeout=120)
        runs[n] = np.load(out)
    many, one = runs[n_ranks], runs[1]
    np.testing.assert_allclose(many["W"], one["W"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(many["F"], one["F"], rtol=1e-11)
    np.testing.assert_allclose(many["S"], one["S"], rtol=0, atol=1e-10)
    assert float(many["score"]) == pytest.approx(float(one["score"]), rel=1e-12)


def test_patches_example_runs_under_mpiexec(tmp_path):
    pytest.importorskip("prosper.cli")
    pytest.importorskip("sklearn")
    pytest.importorskip("PIL")
    job = Path(ROOT) / "examples" / "sparse_coding_patches.toml"
    small = ["--set", "data.n_samples=1000", "--set", "model.n_iter=3", "--set", "model.H=16"]
    results = {}
    for n in (1, 2):
        out = tmp_path / f"patches{n}.h5"
        run_mpi(n, ["prosper", "fit", str(job), "--out", str(out), *small], timeout=120)
        results[n] = prosper.load(out)
    assert results[1].W_.shape == (64, 16) and results[1].n_iter_ == 3
    np.testing.assert_allclose(results[2].W_, results[1].W_, rtol=0, atol=1e-8)


KILL_JOB = """
[model]
name = "sparse_coding"
H = 24
penalty = "{penalty}"
lam = 0.1
n_iter = 20
batch_size = 100
random_state = 5

[data]
file = "Y.npy"
"""


@pytest.mark.parametrize("penalty", ["l0"])
def test_sigkill_and_resume_gives_the_uninterrupted_result(tmp_path, penalty):
    """``mpiexec -n 2 prosper fit`` killed with SIGKILL after a random pass, resumed with
    --resume, ends with the dictionary and trace of the uninterrupted run (to 1e-10)."""
    exe = mpiexec_path()
    if exe is None:
        pytest.skip("mpiexec not found")
    data = get_generator("sparse_dictionary")(
        n_samples=3000, D=16, H=24, sparsity=3, noise=0.05, random_state=0
    )
    np.save(tmp_path / "Y.npy", data.Y)
    (tmp_path / "job.toml").write_text(KILL_JOB.format(penalty=penalty))
    full = tmp_path / "full.h5"
    run_mpi(2, ["prosper", "fit", "job.toml", "--out", str(full)], cwd=tmp_path)
    killed = tmp_path / "killed.h5"
    stop_after = int(np.random.default_rng().integers(1, 10))
    reached = killed_run(tmp_path / "job.toml", killed, stop_after)
    assert stop_after <= reached < 20, (stop_after, reached)
    run_mpi(2, ["prosper", "fit", "job.toml", "--out", str(killed), "--resume"], cwd=tmp_path)
    a, b = prosper.load(full), prosper.load(killed)
    assert b.n_iter_ == 20
    np.testing.assert_allclose(b.W_, a.W_, rtol=0, atol=1e-10)
    np.testing.assert_allclose(b.free_energy_, a.free_energy_, rtol=0, atol=1e-10)
