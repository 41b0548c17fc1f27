"""Threads per MPI rank: the one place that decides how many threads BLAS and numba use.

Every rank of a job would otherwise start one BLAS thread and one numba thread per core of
the node, so k ranks on a node oversubscribe it k-fold, and OpenBLAS's worker threads, which
spin for a while after each call, compete with numba's threads for the same cores (issue #16:
2 ranks on 2 cores ran 6x slower than with ``OMP_NUM_THREADS=1``). The rule:

- the cores a rank may use are the CPUs it is allowed to run on (its affinity mask),
  divided by the number of ranks on the same node that share that mask;
- with the numba backend, numba's kernels get those cores and BLAS gets one thread, so that
  no numba kernel ever runs while BLAS threads are awake (the kernels carry the work; the
  GEMMs around them are small per batch);
- with any other backend, BLAS gets those cores (numba does not run);
- a limit the user set wins: ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``,
  ``MKL_NUM_THREADS`` or ``BLIS_NUM_THREADS`` leave BLAS alone, ``NUMBA_NUM_THREADS`` leaves
  numba alone.

The limits hold only while a fit runs (:func:`rank_threads` is a context manager that
restores the previous settings), so importing ProSper changes nothing in a notebook.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

from prosper.parallel import Communicator

log = logging.getLogger(__name__)

__all__ = ["ThreadPlan", "plan_threads", "rank_threads"]

#: environment variables by which a user fixes the BLAS threads
BLAS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")
NUMBA_ENV = "NUMBA_NUM_THREADS"


@dataclass(frozen=True)
class ThreadPlan:
    """Threads of one rank.

    Attributes
    ----------
    cores : int
        Cores this rank may use (its share of the node).
    blas : int or None
        BLAS threads to set; None leaves BLAS as the user configured it.
    numba : int or None
        numba threads to set; None leaves numba as it is.
    """

    cores: int
    blas: int | None
    numba: int | None


def _allowed_cpus() -> frozenset[int]:
    try:
        return frozenset(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return frozenset(range(os.cpu_count() or 1))


def plan_threads(
    comm: Communicator, backend: str, environ: dict[str, str] | None = None
) -> ThreadPlan:
    """Decide the threads of this rank (collective over the ranks of a node).

    Parameters
    ----------
    comm : Communicator
    backend : str
        Name of the backend of the fit (``"numba"``, ``"numpy"``, ``"cupy"``).
    environ : dict, optional
        The environment to read (default ``os.environ``).

    Returns
    -------
    ThreadPlan
    """
    environ = os.environ if environ is None else environ
    cpus = _allowed_cpus()
    sharing = sum(1 for other in comm.node_allgather(sorted(cpus)) if frozenset(other) == cpus)
    cores = max(1, len(cpus) // max(1, sharing))
    user_blas = any(environ.get(key) for key in BLAS_ENV)
    user_numba = bool(environ.get(NUMBA_ENV))
    if backend == "numba":
        return ThreadPlan(cores, None if user_blas else 1, None if user_numba else cores)
    return ThreadPlan(cores, None if user_blas else cores, None)


@contextlib.contextmanager
def rank_threads(comm: Communicator, backend: str) -> Iterator[ThreadPlan]:
    """Apply :func:`plan_threads` while the block runs, then restore the previous limits."""
    from threadpoolctl import threadpool_limits

    plan = plan_threads(comm, backend)
    log.debug(
        "threads per rank: %d core(s), BLAS %s, numba %s",
        plan.cores,
        "as set by the user" if plan.blas is None else plan.blas,
        "untouched" if plan.numba is None else plan.numba,
    )
    with contextlib.ExitStack() as stack:
        if plan.blas is not None:
            stack.enter_context(threadpool_limits(limits=plan.blas, user_api="blas"))
        if plan.numba is not None:
            from prosper.backends.numba_backend import numba_threads

            stack.enter_context(numba_threads(plan.numba))
        yield plan
