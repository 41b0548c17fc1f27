"""A script (not the CLI) under mpiexec: one rank failing ends the whole job, never a hang."""

from __future__ import annotations

import time

import pytest

from tests.helpers import run_mpi

pytestmark = pytest.mark.mpi

SCRIPT = """
import numpy as np
from prosper import BSC
from prosper.parallel import get_comm, row_block
comm = get_comm()
Y = np.random.default_rng(0).normal(size=(40, 4))[row_block(40, comm)]
if comm.rank == 1:
    raise RuntimeError("rank 1 lost its data")
BSC(H=2, n_iter=5).fit(Y)  # rank 0 waits in a collective that rank 1 never joins
"""


def test_exception_on_one_rank_aborts_script(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    start = time.time()
    proc = run_mpi(2, ["python", str(script)], timeout=60, check=False)
    assert proc.returncode != 0
    assert time.time() - start < 60
    assert "[rank 1]" in proc.stderr and "rank 1 lost its data" in proc.stderr


SCORE_SCRIPT = """
import numpy as np
from prosper import BSC
from prosper.parallel import get_comm, row_block
comm = get_comm()
Y = np.random.default_rng(0).normal(size=(40, 4))[row_block(40, comm)]
model = BSC(H=2, n_iter=2, random_state=0).fit(Y)
bad = Y[:, :3] if comm.rank == 1 else Y  # rank 1 passes the wrong number of features
try:
    model.score(bad)
except ValueError as exc:
    print(f"rank {comm.rank} caught: {exc}", flush=True)
comm.barrier()
print(f"rank {comm.rank} done", flush=True)
"""


def test_bad_input_to_collective_score_raises_on_every_rank(tmp_path):
    """A caught error on one rank must not leave the other waiting in score's reduction."""
    script = tmp_path / "score.py"
    script.write_text(SCORE_SCRIPT)
    proc = run_mpi(2, ["python", str(script)], timeout=60)
    assert "rank 0 caught" in proc.stdout and "rank 1 caught" in proc.stdout
    assert "has 3 features" in proc.stdout
    assert "rank 0 done" in proc.stdout and "rank 1 done" in proc.stdout
