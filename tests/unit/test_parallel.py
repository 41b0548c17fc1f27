"""The serial stand-in communicator and the distributed selection of ET's N_cut points."""

from __future__ import annotations

import numpy as np
import pytest

from prosper.parallel import Communicator, get_comm, global_top_mask, row_block


def test_row_block_partitions_rows():
    class Fake(Communicator):
        def __init__(self, rank, size):
            super().__init__(None)
            self.rank, self.size = rank, size

    blocks = [row_block(10, Fake(r, 3)) for r in range(3)]
    assert [(b.start, b.stop) for b in blocks] == [(0, 4), (4, 7), (7, 10)]


def test_serial_reductions():
    comm = get_comm(Communicator(None))
    out = comm.allreduce_arrays({"a": np.ones((2, 2)), "b": np.array(3.0)})
    np.testing.assert_array_equal(out["a"], np.ones((2, 2)))
    assert comm.exscan(5) == 0 and comm.allgather(1) == [1] and comm.bcast("x") == "x"
    buf = np.arange(4.0)
    assert comm.sum_in_place(buf) is buf and buf.tolist() == [0.0, 1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="float64"):
        comm.sum_in_place(np.zeros(3, dtype=np.float32))
    with pytest.raises(ValueError, match="bad input"):
        comm.agree("bad input")


@pytest.mark.parametrize("k", [0, 1, 7, 50, 99, 100, 150])
def test_global_top_mask_matches_sort(k, rng):
    values = rng.normal(size=100)
    values[10:20] = values[5]  # ties: lower index first
    values[30] = -0.0
    values[31] = 0.0
    mask = global_top_mask(values, k, Communicator(None))
    order = sorted(range(100), key=lambda i: (-values[i], i))
    expected = np.zeros(100, dtype=bool)
    expected[order[:k]] = True
    np.testing.assert_array_equal(mask, expected)
