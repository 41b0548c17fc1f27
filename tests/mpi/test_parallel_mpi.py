"""Communicator collectives under mpiexec."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from prosper.parallel import Communicator
from tests.helpers import run_mpi

pytestmark = pytest.mark.mpi

SCRIPT = textwrap.dedent(
    """
    import sys

    import numpy as np

    from prosper.parallel import get_comm

    comm = get_comm()
    rows = [3, 0, 5][comm.rank]
    start = [0, 3, 3][comm.rank]
    # row r of the whole array holds r in every entry
    block = np.ones((rows, 4, 3), dtype=np.uint8) * np.arange(start, start + rows, dtype=np.uint8)[
        :, None, None
    ]
    floats = np.arange(start, start + rows, dtype=np.float64)[:, None] * np.ones((1, 2))
    first = comm.gather_rows(block)
    again = comm.gather_rows(block + 1, out=first)
    other = comm.gather_rows(floats)
    # refused on every rank before any row is sent (none is left waiting)
    for bad, message in (
        (np.zeros((2, 0)), "at least one byte"),
        (np.zeros((2, 3), dtype=np.float32 if comm.rank == 1 else np.float64), "rows differ"),
    ):
        try:
            comm.gather_rows(bad)
        except ValueError as e:
            assert message in str(e), e
        else:
            raise AssertionError(f"accepted: {message}")
    # another root; a read-only buffer is not written
    frozen = np.zeros((8, 2))
    frozen.flags.writeable = False
    last = comm.gather_rows(floats, out=frozen, root=2)
    if comm.rank == 2:
        assert last is not frozen and np.array_equal(last[:, 0], np.arange(8.0))
    else:
        assert last is None
    if comm.rank != 0:
        assert first is None and again is None and other is None
        sys.exit(0)
    assert again is first, "the root's buffer is reused"
    expected = np.arange(8, dtype=np.uint8)[:, None, None] * np.ones((1, 4, 3), np.uint8)
    assert np.array_equal(first, expected + 1)
    assert other.dtype == np.float64 and np.array_equal(other[:, 1], np.arange(8.0))
    print("ok")
    """
)


def test_gather_rows_on_three_ranks(tmp_path):
    """Rows of uneven blocks (one empty) arrive on the root in rank order; a given writable
    buffer of the right shape is filled in place; the other ranks get None; bad blocks are
    refused on every rank."""
    script = tmp_path / "gather.py"
    script.write_text(SCRIPT)
    proc = run_mpi(3, ["python", str(script)], timeout=120)
    assert "ok" in proc.stdout


def test_gather_rows_on_one_rank_is_the_block():
    block = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert Communicator(None).gather_rows(block) is block
