"""One place decides the threads of a rank: BLAS through threadpoolctl, numba's threads."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from threadpoolctl import threadpool_info

from prosper import BSC
from prosper.parallel import Communicator
from prosper.threads import plan_threads


class _NodeOf(Communicator):
    """A serial communicator that pretends ``peers`` more ranks on the node share its CPUs."""

    def __init__(self, peers: int) -> None:
        super().__init__(None)
        self.peers = peers

    def node_allgather(self, value):
        return [value] * (1 + self.peers)


def _blas_threads() -> set[int]:
    return {info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}


def test_ranks_on_a_node_share_its_cores(monkeypatch):
    monkeypatch.setattr("prosper.threads._allowed_cpus", lambda: frozenset(range(8)))
    assert plan_threads(_NodeOf(3), "numba", environ={}).cores == 2
    assert plan_threads(_NodeOf(0), "numba", environ={}).cores == 8
    # more ranks than cores: one thread each, never zero
    assert plan_threads(_NodeOf(15), "numpy", environ={}).cores == 1


def test_numba_kernels_run_with_single_threaded_blas(monkeypatch):
    monkeypatch.setattr("prosper.threads._allowed_cpus", lambda: frozenset(range(4)))
    plan = plan_threads(_NodeOf(1), "numba", environ={})
    assert (plan.blas, plan.numba) == (1, 2)
    plan = plan_threads(_NodeOf(1), "numpy", environ={})
    assert (plan.blas, plan.numba) == (2, None)


def test_user_settings_win(monkeypatch):
    monkeypatch.setattr("prosper.threads._allowed_cpus", lambda: frozenset(range(4)))
    plan = plan_threads(_NodeOf(0), "numba", environ={"OMP_NUM_THREADS": "3"})
    assert (plan.blas, plan.numba) == (None, 4)
    plan = plan_threads(_NodeOf(0), "numba", environ={"NUMBA_NUM_THREADS": "3"})
    assert (plan.blas, plan.numba) == (1, None)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_limits_hold_during_the_fit_and_are_restored(monkeypatch, backend):
    for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr("prosper.threads._allowed_cpus", lambda: frozenset(range(2)))
    before_blas, before_numba = _blas_threads(), numba.get_num_threads()
    seen = []

    def spy(it, learner, metrics):
        seen.append((_blas_threads(), numba.get_num_threads()))

    Y = np.random.default_rng(0).normal(size=(50, 4))
    BSC(H=2, n_iter=2, backend=backend, random_state=0, callback=spy).fit(Y)
    expected_blas = {1} if backend == "numba" else {2}
    assert all(blas == expected_blas for blas, _ in seen), seen
    if backend == "numba":
        assert all(n == min(2, numba.config.NUMBA_NUM_THREADS) for _, n in seen), seen
    assert _blas_threads() == before_blas
    assert numba.get_num_threads() == before_numba
