"""MPI for ProSper: the only module that imports mpi4py.

Everything works without ``mpiexec``: when mpi4py or an MPI library is missing, a one-rank
communicator with the same methods stands in, so the same code path runs in a notebook and
on a cluster. Statistics travel in one packed ``Allreduce`` per EM iteration; lowercase
(pickling) collectives are used only for small Python objects.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

from prosper.exceptions import MPIUnavailableError

# seconds a failing rank waits before MPI_Abort so that mpiexec forwards its message
ABORT_GRACE_SECONDS = 0.5

log = logging.getLogger(__name__)

__all__ = [
    "AgreedError",
    "Communicator",
    "abort_on_exception",
    "get_comm",
    "install_rank_logging",
    "launched_ranks",
    "row_block",
]

#: environment variables through which launchers announce the job size or this rank
_SIZE_ENV = (
    "PMI_SIZE",
    "OMPI_COMM_WORLD_SIZE",
    "PMIX_SIZE",
    "MPI_LOCALNRANKS",
    "MV2_COMM_WORLD_SIZE",
)
_RANK_ENV = ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
_world: Communicator | None = None


def _int_env(name: str) -> int | None:
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        return None


def launched_ranks() -> str | None:
    """The environment variable showing that an MPI launcher started several ranks, or None.

    A size above 1 (``PMI_SIZE``, ``OMPI_COMM_WORLD_SIZE``, ...) or a rank above 0
    (``PMI_RANK``, ``PMIX_RANK``, ...) counts; ``mpiexec -n 1`` does not.
    """
    for name in _SIZE_ENV:
        value = _int_env(name)
        if value is not None and value > 1:
            return f"{name}={value}"
    for name in _RANK_ENV:
        value = _int_env(name)
        if value is not None and value > 0:
            return f"{name}={value}"
    return None


def _load_mpi() -> Any | None:
    """Import mpi4py.MPI, or return None when no MPI library can be loaded.

    Raises
    ------
    MPIUnavailableError
        When the environment shows an MPI launch of several ranks but mpi4py cannot load:
        each rank would otherwise run the whole job alone.
    """
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError, OSError) as exc:
        launched = launched_ranks()
        if launched is not None:
            raise MPIUnavailableError(
                f"this process was started by an MPI launcher ({launched}) but mpi4py cannot "
                f"load ({exc}); install it with pip install 'prosper[mpi]' (or "
                "'prosper[mpich]'), or run without mpiexec."
            ) from None
        return None
    return MPI


class AgreedError(ValueError):
    """An input error that every rank raises together (see :meth:`Communicator.agree`).

    Attributes
    ----------
    rank : int
        The rank that found the problem.
    """

    def __init__(self, message: str, rank: int) -> None:
        super().__init__(message)
        self.rank = rank


class Communicator:
    """Thin wrapper over an mpi4py communicator, or a one-rank stand-in.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm or None
        The communicator to wrap; None gives the serial stand-in.
    """

    def __init__(self, comm: Any = None) -> None:
        self.comm = comm
        self._MPI = _load_mpi() if comm is not None else None
        self.rank = comm.Get_rank() if comm is not None else 0
        self.size = comm.Get_size() if comm is not None else 1

    def __repr__(self) -> str:
        return f"Communicator(rank={self.rank}, size={self.size})"

    def allreduce_arrays(self, stats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Sum a dict of float arrays over all ranks with one packed ``Allreduce``.

        Every rank must pass the same keys with the same shapes. Sums are taken in float64.
        """
        keys = sorted(stats)
        arrays = [np.asarray(stats[k], dtype=np.float64) for k in keys]
        if self.size == 1:
            return dict(zip(keys, arrays, strict=True))
        buf = np.concatenate([a.ravel() for a in arrays]) if arrays else np.zeros(0)
        self.comm.Allreduce(self._MPI.IN_PLACE, buf, op=self._MPI.SUM)
        out, start = {}, 0
        for k, a in zip(keys, arrays, strict=True):
            out[k] = buf[start : start + a.size].reshape(a.shape)
            start += a.size
        return out

    def sum_in_place(self, buf: np.ndarray) -> np.ndarray:
        """Sum a contiguous float64 array over all ranks, in place (one ``Allreduce``).

        For a buffer that is already packed (no copy in or out, unlike
        :meth:`allreduce_arrays`); returns ``buf``.
        """
        if buf.dtype != np.float64 or not buf.flags.c_contiguous:
            raise ValueError(
                f"sum_in_place needs a C-contiguous float64 array; got {buf.dtype}, "
                f"contiguous={buf.flags.c_contiguous}."
            )
        if self.size > 1:
            self.comm.Allreduce(self._MPI.IN_PLACE, buf, op=self._MPI.SUM)
        return buf

    def allreduce(self, value: Any, op: str = "sum") -> Any:
        """Reduce a small Python number over ranks (``op`` in sum, max, min, land, lor)."""
        if self.size == 1:
            return value
        ops = {
            "sum": self._MPI.SUM,
            "max": self._MPI.MAX,
            "min": self._MPI.MIN,
            "land": self._MPI.LAND,
            "lor": self._MPI.LOR,
        }
        return self.comm.allreduce(value, op=ops[op])

    def allgather(self, value: Any) -> list:
        """Gather a small Python object from every rank, in rank order."""
        return [value] if self.size == 1 else self.comm.allgather(value)

    def gather(self, value: Any, root: int = 0) -> list | None:
        """Gather a Python object (e.g. an array) from every rank to ``root``, in rank order;
        None on the other ranks."""
        if self.size == 1:
            return [value]
        return self.comm.gather(value, root=root)

    def gather_rows(
        self, block: np.ndarray, out: np.ndarray | None = None, root: int = 0
    ) -> np.ndarray | None:
        """Gather every rank's block of rows into one array on ``root``, in rank order, with
        one ``Gatherv`` of raw rows (no pickling, no concatenation); None on the other ranks.

        Blocks have the same trailing shape and dtype on every rank (any number of rows,
        0 included; rows of at least one byte). ``out`` is the root's buffer when it has the
        total shape and dtype and is writable (a buffer kept across calls: no new pages per
        call), else a new array is made. On one rank the block itself is returned.

        Raises
        ------
        ValueError or MemoryError
            On every rank, before any row is sent, when the blocks differ in row shape or
            dtype, a row has no bytes, or the root cannot allocate the result.
        """
        block = np.ascontiguousarray(block)
        if self.size == 1:
            return block
        row_bytes = block.itemsize * int(np.prod(block.shape[1:], dtype=np.int64))
        # the root checks the blocks and makes its buffer before any rank sends, and every
        # rank learns the outcome: a failure raises everywhere instead of leaving the other
        # ranks waiting in the Gatherv
        info = self.comm.gather((block.shape[0], block.shape[1:], block.dtype.str), root=root)
        failure: tuple[type[Exception], str] | None = None
        if self.rank == root:
            counts = [n for n, _, _ in info]
            shape = (sum(counts), *block.shape[1:])
            if len({(rest, dtype) for _, rest, dtype in info}) > 1:
                failure = ValueError, f"gather_rows: the ranks' rows differ: {info}."
            elif row_bytes == 0:
                failure = ValueError, f"gather_rows needs rows of at least one byte; got {shape}."
            elif (
                out is None
                or out.shape != shape
                or out.dtype != block.dtype
                or not out.flags.c_contiguous
                or not out.flags.writeable
            ):
                try:
                    out = np.empty(shape, dtype=block.dtype)
                except MemoryError:
                    failure = MemoryError, f"gather_rows: no memory for {shape} {block.dtype}."
        failure = self.comm.bcast(failure, root=root)
        if failure is not None:
            raise failure[0](failure[1])
        # one row as one MPI element: counts stay rows, far below 2^31, however wide a row is
        row = self._MPI.BYTE.Create_contiguous(row_bytes)
        row.Commit()
        try:
            if self.rank != root:
                self.comm.Gatherv([block, block.shape[0], row], None, root=root)
                return None
            displs = np.concatenate([[0], np.cumsum(counts)[:-1]]).tolist()
            self.comm.Gatherv([block, block.shape[0], row], [out, counts, displs, row], root=root)
            return out
        finally:
            row.Free()

    def bcast(self, value: Any, root: int = 0) -> Any:
        """Broadcast a small Python object from ``root``."""
        return value if self.size == 1 else self.comm.bcast(value, root=root)

    def exscan(self, value: int) -> int:
        """Exclusive prefix sum of an int over ranks (0 on rank 0)."""
        if self.size == 1:
            return 0
        out = self.comm.exscan(int(value), op=self._MPI.SUM)
        return 0 if out is None else int(out)

    def barrier(self) -> None:
        if self.size > 1:
            self.comm.Barrier()

    def agree(self, error: str | None) -> None:
        """Raise the same :class:`AgreedError` (a ``ValueError``) on every rank if any rank
        reports an error.

        Use before work starts so that a rank with bad input cannot leave the others waiting
        in a collective.
        """
        errors = self.allgather(error)
        for rank, err in enumerate(errors):
            if err:
                suffix = f" (rank {rank})" if self.size > 1 else ""
                raise AgreedError(err + suffix, rank)

    def run_agreed(
        self,
        func: Callable[..., Any],
        *args: Any,
        errors: tuple[type[BaseException], ...] = (ValueError, OSError),
    ) -> Any:
        """Call ``func(*args)`` on every rank; if it raises one of ``errors`` on any rank,
        raise the same :class:`AgreedError` on every rank (collective, like :meth:`agree`)."""
        result, failure = None, None
        try:
            result = func(*args)
        except errors as exc:
            failure = str(exc) or type(exc).__name__
        self.agree(failure)
        return result

    def node_allgather(self, value: Any) -> list:
        """Gather a small Python object from the ranks on this node (shared memory), in rank
        order; ``[value]`` when serial."""
        if self.size == 1:
            return [value]
        if getattr(self, "_node", None) is None:
            self._node = self.comm.Split_type(self._MPI.COMM_TYPE_SHARED)
        return self._node.allgather(value)

    def abort(self, code: int = 1) -> None:
        """End every rank of the job (``MPI_Abort``); exits the process when serial."""
        if self.size > 1:
            # what this rank just wrote is in its pipe to mpiexec; MPI_Abort makes mpiexec tear
            # the job down, and MPICH's launcher can drop output still in flight (seen in CI:
            # the error message lost): a moment first lets it be forwarded
            sys.stdout.flush()
            sys.stderr.flush()
            time.sleep(ABORT_GRACE_SECONDS)
            self.comm.Abort(code)
        sys.exit(code)


def get_comm(comm: Any = None) -> Communicator:
    """Return a :class:`Communicator` for ``comm``; None means ``MPI.COMM_WORLD``.

    Parameters
    ----------
    comm : mpi4py communicator, Communicator or None
        A wrapped communicator is returned as it is.
    """
    global _world
    if isinstance(comm, Communicator):
        return comm
    if comm is not None:
        wrapped = Communicator(comm)
        if sys.excepthook is sys.__excepthook__:
            install_abort_hook(wrapped)
        return wrapped
    if _world is None:
        MPI = _load_mpi()
        _world = Communicator(MPI.COMM_WORLD if MPI is not None else None)
        # scripts under mpiexec get the same protection as the CLI: an uncaught exception on
        # one rank ends the job instead of leaving the others in a collective forever (a hook
        # the user installed is kept)
        if sys.excepthook is sys.__excepthook__:
            install_abort_hook(_world)
    return _world


def row_block(n_total: int, comm: Communicator | None = None) -> slice:
    """The contiguous block of rows that this rank owns out of ``n_total``.

    Rows are split as evenly as possible, in rank order, so a row's global index is the
    block's start plus its local index.
    """
    comm = get_comm(comm)
    base, extra = divmod(n_total, comm.size)
    start = comm.rank * base + min(comm.rank, extra)
    return slice(start, start + base + (1 if comm.rank < extra else 0))


def global_top_mask(values: np.ndarray, k: int, comm: Communicator) -> np.ndarray:
    """Mark the ``k`` largest entries of ``values`` taken over all ranks.

    Ties are broken by global row index (lower first); rows are in rank order, so the exact
    k-th value is found by bisection on the float ordering with scalar reductions only, and no
    rank ever holds more than its own values.

    Parameters
    ----------
    values : ndarray of shape (n_local,)
        This rank's values, in row order.
    k : int
        How many entries to keep globally.
    comm : Communicator

    Returns
    -------
    ndarray of bool, shape (n_local,)
    """
    n_total = comm.allreduce(int(values.size))
    if k >= n_total:
        return np.ones(values.size, dtype=bool)
    if k <= 0:
        return np.zeros(values.size, dtype=bool)
    # Map floats to integers with the same order, then bisect for the k-th largest key.
    # + 0.0 turns -0.0 into 0.0 so that equal floats get equal keys
    keys = (values.astype(np.float64) + 0.0).view(np.int64)
    keys = np.where(keys < 0, np.int64(-(2**63)) - keys - 1, keys)
    lo = comm.allreduce(int(keys.min()) if keys.size else 2**63 - 1, "min")
    hi = comm.allreduce(int(keys.max()) if keys.size else -(2**63), "max")
    # invariant: count(keys >= lo) >= k and count(keys >= hi + 1) < k
    while lo < hi:
        mid = lo + (hi - lo + 1) // 2
        if comm.allreduce(int(np.count_nonzero(keys >= mid))) >= k:
            lo = mid
        else:
            hi = mid - 1
    above = keys > lo
    ties = keys == lo
    need = k - comm.allreduce(int(np.count_nonzero(above)))
    before = comm.exscan(int(np.count_nonzero(ties)))
    take = max(0, min(int(np.count_nonzero(ties)), need - before))
    mask = above.copy()
    mask[np.flatnonzero(ties)[:take]] = True
    return mask


def abort_on_exception(exc_type: type, exc: BaseException, tb: Any) -> None:
    """``sys.excepthook`` for MPI jobs: log the traceback with the rank, then abort all ranks.

    Without it, one rank failing leaves the others waiting forever in the next collective.
    """
    comm = get_comm()
    text = "".join(traceback.format_exception(exc_type, exc, tb))
    sys.stderr.write(f"[rank {comm.rank}] {text}")
    sys.stderr.write(f"[rank {comm.rank}] aborting all {comm.size} MPI ranks.\n")
    sys.stderr.flush()
    comm.abort(1)


def install_abort_hook(comm: Communicator) -> None:
    """Install :func:`abort_on_exception` when running on more than one rank."""
    if comm.size > 1:
        sys.excepthook = abort_on_exception


class _RankFilter(logging.Filter):
    """Let rank 0 emit everything; other ranks only WARNING and above, tagged with the rank."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        if self.rank == 0:
            return True
        if record.levelno < logging.WARNING:
            return False
        record.msg = f"[rank {self.rank}] {record.msg}"
        return True


def install_rank_logging(
    comm: Communicator, level: int = logging.INFO, stream: Callable | None = None
) -> None:
    """Configure the ``prosper`` logger for a job: INFO on rank 0, warnings on every rank."""
    logger = logging.getLogger("prosper")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    handler.addFilter(_RankFilter(comm.rank))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
