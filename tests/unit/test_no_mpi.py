"""``import prosper`` and a fit work where no MPI library can be loaded at all."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import logging, sys
sys.modules["mpi4py"] = None  # any 'from mpi4py import MPI' now fails like a missing libmpi
logging.basicConfig(level=logging.WARNING)
import prosper
from prosper.data import bars
from prosper.parallel import get_comm
data = bars(size=3, n_samples=100, random_state=0)
model = prosper.BSC(H=6, n_iter=3, random_state=0, backend="numpy").fit(data.Y)
print("size", get_comm().size, "W", model.W_.shape)
"""


def run(env_extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT), **env_extra)
    for key in ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"):
        env.pop(key, None)
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=120
    )


def test_serial_without_mpi_library():
    proc = run({})
    assert proc.returncode == 0, proc.stderr
    assert "size 1 W (9, 6)" in proc.stdout
    assert "MPI" not in proc.stderr  # silent when nobody asked for MPI


def test_stops_when_a_launcher_asked_for_several_ranks():
    """Under mpiexec -n 2 without mpi4py, each process would run the whole job alone."""
    proc = run({"PMI_SIZE": "2", "PMI_RANK": "0"})
    assert proc.returncode != 0
    assert proc.stderr.count("started by an MPI launcher (PMI_SIZE=2)") == 1
    assert "pip install 'prosper[mpi]'" in proc.stderr
    assert "size 1" not in proc.stdout  # no work was done


def test_one_launched_rank_runs_serially():
    proc = run({"PMI_SIZE": "1", "PMI_RANK": "0"})
    assert proc.returncode == 0, proc.stderr
    assert "size 1 W (9, 6)" in proc.stdout
