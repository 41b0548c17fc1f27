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
    for key in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "HYDRA_CONTROL_FD"):
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


def test_says_so_once_when_mpi_was_asked_for():
    proc = run({"PMI_SIZE": "2"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("MPI was requested but mpi4py could not load") == 1
