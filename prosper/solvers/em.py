"""The EM driver shared by every model.

    for each iteration:
        E-step on this rank's rows, batch by batch -> local sufficient statistics
        one packed Allreduce                       -> global statistics
        M-step (identical on every rank)
        record (rank 0 writes)

The driver passes state between the learner's steps and does no mathematics; the learner
(e.g. :class:`prosper.solvers.truncated.TruncatedEM`) owns the E- and M-step. Timers are
kept apart per phase (E-step, reduction, M-step), as in SPORCO's honest timers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from prosper.parallel import Communicator
from prosper.progress import Progress

log = logging.getLogger(__name__)

__all__ = ["EMLearner", "Recorder", "Rows", "run_em"]


class Rows(Protocol):
    """This rank's rows as the learners read them: an in-memory array or a
    :class:`prosper.io.sources.DataSource`, which streams them from disk.

    Learners read ``Y[a:b]`` (a block of at most ``batch_size`` rows, C-contiguous, in the
    data's floating dtype) and, for mini-batches, ``Y[index_array]``; they never convert
    ``Y`` whole (a DataSource refuses ``np.asarray``), so memory stays bounded by the batch
    size whatever N is.
    """

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype: ...

    def __getitem__(self, key: Any) -> np.ndarray: ...


class EMLearner(Protocol):
    """What :func:`run_em` needs from a learner."""

    params: dict[str, np.ndarray]

    def estep(self, Y: Rows, comm: Communicator, iteration: int) -> dict[str, np.ndarray]: ...

    def mstep(self, stats: dict[str, np.ndarray], iteration: int) -> dict[str, float]: ...


class Recorder(Protocol):
    """Receives each finished iteration (e.g. :class:`prosper.io.results.ResultWriter`).

    ``state`` is what the learner's ``checkpoint_state()`` returns: arrays a resumed run
    needs besides the parameters. An entry named ``rows/<name>`` is a block of per-row state
    in global row order (on rank 0); on resume the learner's ``set_state`` receives for it an
    object whose ``read(start, stop)`` returns the rows of one rank.
    """

    def record(
        self,
        iteration: int,
        params: dict[str, np.ndarray],
        metrics: dict[str, float],
        state: dict[str, np.ndarray] | None = None,
    ) -> None: ...


def run_em(
    learner: EMLearner,
    Y: Rows,
    comm: Communicator,
    *,
    n_iter: int,
    start: int = 0,
    recorder: Recorder | None = None,
    callback: Callable[[int, EMLearner, dict[str, float]], Any] | None = None,
    progress: bool | None = None,
) -> dict[str, list[float]]:
    """Run EM iterations ``start .. n_iter-1``.

    Parameters
    ----------
    learner : EMLearner
        Holds the parameters; ``estep`` returns local sums, ``mstep`` consumes global sums.
    Y : ndarray or DataSource of shape (N_local, D)
        This rank's rows; the learner's E-step reads them batch by batch (see :class:`Rows`).
    comm : Communicator
    n_iter : int
        Total number of iterations of the run.
    start : int, default=0
        First iteration (a resumed run starts after its checkpoint).
    recorder : Recorder or None
        Called after every iteration with the new parameters and the metrics.
    callback : callable or None
        ``callback(iteration, learner, metrics)``; returning True stops the run (on every
        rank: the decision is agreed by a reduction).
    progress : bool or None
        On rank 0: True a progress bar, False nothing, None a bar on a terminal and
        otherwise a log line every 30 s (:class:`prosper.progress.Progress`).

    Returns
    -------
    dict of str to list of float
        Per-iteration metrics: ``free_energy`` (of the parameters entering the iteration),
        ``seconds_estep``, ``seconds_reduce``, ``seconds_mstep`` and the learner's own.
    """
    history: dict[str, list[float]] = {}
    bar = Progress(n_iter, start=start, enabled=progress if comm.rank == 0 else False)
    try:
        for it in range(start, n_iter):
            t0 = time.perf_counter()
            local = learner.estep(Y, comm, it)
            t1 = time.perf_counter()
            stats = comm.allreduce_arrays(local)
            t2 = time.perf_counter()
            metrics = learner.mstep(stats, it)
            t3 = time.perf_counter()
            metrics.update(seconds_estep=t1 - t0, seconds_reduce=t2 - t1, seconds_mstep=t3 - t2)
            for key, value in metrics.items():
                history.setdefault(key, []).append(float(value))
            if recorder is not None:
                # learners with state beyond their parameters (online statistics) give it
                # to the checkpoint
                state = getattr(learner, "checkpoint_state", None)
                recorder.record(it, learner.params, metrics, state=state() if state else None)
            log.debug("iteration %d: %s", it, metrics)
            bar.update(metrics.get("free_energy", float("nan")))
            if callback is not None and comm.allreduce(bool(callback(it, learner, metrics)), "lor"):
                log.info("stopped after iteration %d (converged, or the callback asked)", it)
                break
    finally:
        bar.close()
    return history
