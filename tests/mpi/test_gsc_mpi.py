"""GSC under mpiexec: the example job on 1 and 2 ranks learns the same model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import prosper
from tests.helpers import run_mpi

pytestmark = pytest.mark.mpi

ROOT = Path(__file__).resolve().parents[2]


def test_example_job_one_and_two_ranks_agree(tmp_path):
    pytest.importorskip("prosper.cli")
    job = str(ROOT / "examples" / "gsc_bars.toml")
    # 20 iterations reach the ET data selection (N_cut < N), a batch size below the
    # per-rank row count gives several batches per rank
    args = ["--set", "model.n_iter=20", "--set", "model.batch_size=300"]
    fitted = {}
    for n in (1, 2):
        out = tmp_path / f"run{n}.h5"
        run_mpi(n, ["prosper", "fit", job, "--out", str(out), *args], cwd=tmp_path)
        fitted[n] = prosper.load(out)
    assert np.any(fitted[1].history_["n_cut"] < 2000)
    for name in ("W_", "pi_", "mu_", "psi_"):
        np.testing.assert_allclose(
            getattr(fitted[2], name), getattr(fitted[1], name), rtol=0, atol=1e-8
        )
    assert abs(fitted[2].sigma_ - fitted[1].sigma_) < 1e-10
    np.testing.assert_allclose(fitted[2].free_energy_, fitted[1].free_energy_, rtol=1e-10)
