"""ℓq sparse coding under mpiexec: 1 and 2 ranks learn the same dictionary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import prosper
from tests.helpers import ROOT, run_mpi

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
# batch_size 300 = the rows of one rank: both runs code the same batches
model = SparseCoding(H=14, penalty=penalty, lam=0.2, n_iter=8, batch_size=300,
                     random_state=4).fit(Y)
S = model.transform(Y)
score = model.score(Y)
codes = comm.comm.gather(S, root=0) if comm.size > 1 else [S]
if comm.rank == 0:
    np.savez(out, W=model.W_, F=model.free_energy_, S=np.concatenate(codes), score=score)
"""


@pytest.mark.parametrize("penalty", ["l1", "l0"])
def test_one_and_two_ranks_learn_the_same_dictionary(tmp_path, penalty):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    runs = {}
    for n in (1, 2):
        out = tmp_path / f"r{n}.npz"
        run_mpi(n, ["python", str(script), penalty, str(out)], timeout=120)
        runs[n] = np.load(out)
    np.testing.assert_allclose(runs[2]["W"], runs[1]["W"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(runs[2]["F"], runs[1]["F"], rtol=1e-12)
    np.testing.assert_allclose(runs[2]["S"], runs[1]["S"], rtol=0, atol=1e-10)
    assert float(runs[2]["score"]) == pytest.approx(float(runs[1]["score"]), rel=1e-12)


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
