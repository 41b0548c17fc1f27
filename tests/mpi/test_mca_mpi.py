"""MCA and MMCA under mpiexec: 1 and 2 ranks learn the same W; the example jobs run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import prosper
from prosper.data import bars
from tests.helpers import run_mpi

pytestmark = pytest.mark.mpi

pytest.importorskip("prosper.cli")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

JOB = """
[model]
name = "{name}"
H = {H}
Hprime = 5
gamma = 3
n_iter = 8
batch_size = 150
random_state = 1
temperature = [[0, 2.0], [6, 1.0]]
noise = [[0, 0.02], [4, 0.0]]
ncut_factor = [[0, 0.0], [6, 1.0]]

[data]
file = "Y.npy"
"""


@pytest.mark.parametrize(("name", "signed", "H"), [("mca", False, 8), ("mmca", True, 12)])
def test_one_and_two_ranks_same_model(tmp_path, name, signed, H):
    data = bars(size=4, n_samples=701, signed=signed, combine="max", random_state=0)
    np.save(tmp_path / "Y.npy", data.Y)
    (tmp_path / "job.toml").write_text(JOB.format(name=name, H=H))
    models = {}
    for n in (1, 2):
        out = tmp_path / f"run{n}.h5"
        run_mpi(n, ["prosper", "fit", "job.toml", "--out", str(out)], cwd=tmp_path)
        models[n] = prosper.load(out)
    assert type(models[1]).__name__ == name.upper()
    # the ET data selection, annealing noise and all updates agree across ranks
    np.testing.assert_allclose(models[2].W_, models[1].W_, rtol=0, atol=1e-8)
    assert models[2].pi_ == pytest.approx(models[1].pi_, abs=1e-10)
    np.testing.assert_allclose(models[2].free_energy_, models[1].free_energy_, rtol=1e-10)


@pytest.mark.parametrize("job", ["mca_bars.toml", "mmca_bars.toml"])
def test_example_job_runs_on_two_ranks(tmp_path, job):
    run_mpi(
        2,
        [
            "prosper",
            "fit",
            str(EXAMPLES / job),
            "--out",
            "demo.h5",
            "--set",
            "model.n_iter=2",
            "--set",
            "data.n_samples=400",
        ],
        cwd=tmp_path,
    )
    model = prosper.load(tmp_path / "demo.h5")
    assert model.W_.shape[0] == 25 and model.n_iter_ == 2
