"""CLI errors under mpiexec -n 2: an input error is printed once, names the rank, and every
rank exits with status 2 (no MPI_Abort banner, no hang)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import run_mpi

pytestmark = pytest.mark.mpi

JOB = """
[model]
name = "bsc"
H = 6
n_iter = 2
backend = "numpy"

[data]
file = "{file}"
"""


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error" in line.lower()]


def test_agreed_input_error_printed_once_with_status_2(tmp_path):
    (tmp_path / "job.toml").write_text(JOB.format(file="Y.npy"))
    np.save(tmp_path / "Y.npy", np.ones((20, 4)))
    proc = run_mpi(
        2,
        ["prosper", "fit", "job.toml", "--out", "r.h5", "--set", "model.Hprim=3"],
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and "Did you mean 'Hprime'" in lines[0] and "(rank 0)" in lines[0]
    assert "Traceback" not in proc.stderr and "BAD TERMINATION" not in proc.stdout + proc.stderr


def test_bad_shard_on_one_rank_is_named_once(tmp_path):
    np.save(tmp_path / "shard_0.npy", np.ones((20, 4)))
    (tmp_path / "shard_1.npy").write_bytes(b"this is not a numpy file")
    (tmp_path / "job.toml").write_text(JOB.format(file="shard_{rank}.npy"))
    proc = run_mpi(
        2, ["prosper", "fit", "job.toml", "--out", "r.h5"], cwd=tmp_path, timeout=120, check=False
    )
    assert proc.returncode == 2, proc.stderr
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and "shard_1.npy" in lines[0] and "(rank 1)" in lines[0], lines
    assert "Traceback" not in proc.stderr and "BAD TERMINATION" not in proc.stdout + proc.stderr
    assert not (tmp_path / "r.h5").exists()
