"""CuPy (CUDA) kernels for the E-step of linear models.

Same functions and arguments as :mod:`prosper.backends.numpy_backend`, NumPy arrays in; the
log marginals come back as host arrays, the statistics stay on the device (see below). One
batch runs on the current GPU as

1. the batch copied to the device through a reused page-locked (pinned) host buffer;
2. ``Y W`` (cuBLAS); the preselection scores from it and the H' best latents of every
   point on the device (an elementwise kernel ranks each latent within its row, ties to the
   lower index as :meth:`prosper.solvers.states.ExpectationTruncation.select` breaks them,
   and a second one lists each row's kept latents): no (B, H) array crosses the bus;
3. ``Wᵀ W`` and the table states' quadratic forms f · forward as cuBLAS GEMMs, with the
   per-point features f = [Wᵀy on I_n, lower triangle of the I_n block of WᵀW] (see
   :func:`prosper.backends.linear_terms.table_coefficients`);
4. one RawKernel (``cuda/linear_estep.cu``, one thread block per data point): log-joint of
   every state, both log-sum-exps, posterior weights;
5. the statistics reduced on the device (GEMMs and a scatter-add) and returned as device
   arrays: the solver adds them up over the batches on the device and :func:`to_host`
   copies the sums back in one transfer per pass (per iteration without ET data
   selection).

Apart from that one copy per pass, the only transfer that waits for the device is the
batch's log marginals (B floats): nothing else in a batch synchronises with the GPU, so the
host queues the next kernels while the device runs.

A GPU needs large batches: the estimators' default ``batch_size=None`` takes them from
:func:`batch_points` (at most 50000 points, as free device memory allows). Under MPI each
rank binds to one GPU (local rank mod visible devices, :func:`select_device`, called by
``fit``); the Allreduce stays on host arrays.

Importing this module never requires CuPy: without it, or without a visible CUDA device,
``AVAILABLE`` is False and ``get_backend("auto")`` falls back to numba.
"""

from __future__ import annotations

import logging
import os
import socket
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np

from prosper.backends import numpy_backend
from prosper.backends.linear_terms import (
    preselection_scores,
    state_log_prior,
    table_coefficients,
)

if TYPE_CHECKING:  # annotations only: kernels never import solvers
    from prosper.solvers.states import ExpectationTruncation

log = logging.getLogger(__name__)

NAME = "cupy"

try:
    import cupy as cp

    AVAILABLE = cp.cuda.runtime.getDeviceCount() > 0
except Exception:  # no cupy, no driver, no device: CuPy raises several types here
    cp = None
    AVAILABLE = False

__all__ = [
    "AVAILABLE",
    "KERNELS",
    "KERNEL_FILE",
    "batch_points",
    "linear_estep",
    "linear_posterior_mean",
    "local_rank",
    "select_device",
    "to_host",
]

#: kernels for the generic E-step over explicit states: the NumPy reference's for now (on
#: the host; a CUDA version belongs to the GPU work)
KERNELS = dict(numpy_backend.KERNELS)

#: CUDA source of the per-state kernel, shipped as package data
KERNEL_FILE = "cuda/linear_estep.cu"
#: threads per block; equal to PROSPER_BLOCK in the CUDA source (checked by a test)
BLOCK = 128
#: environment variables in which MPI launchers and schedulers give the node-local rank
_LOCAL_RANK_ENV = (
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "MPI_LOCALRANKID",
    "PMI_LOCAL_RANK",
    "SLURM_LOCALID",
)


def kernel_source() -> str:
    """The CUDA source of the E-step kernel."""
    return resources.files("prosper.backends").joinpath(KERNEL_FILE).read_text(encoding="utf-8")


# compiled by NVRTC on first launch and kept in CuPy's kernel cache (memory and disk)
_posterior_kernel = cp.RawKernel(kernel_source(), "prosper_linear_posterior") if AVAILABLE else None
# keep[b, h]: latent h is among the k best of row b. Its rank counts the latents that beat
# it, a tie going to the lower index: the set ExpectationTruncation.select picks on the host
# (O(H) per element; H is at most a few hundred)
_top_latents = (
    cp.ElementwiseKernel(
        "raw float64 scores, int32 H, int32 k",
        "bool keep",
        """
        const long long row = (i / H) * H;
        const int h = i % H;
        const double s = scores[row + h];
        int rank = 0;
        for (int j = 0; j < H; ++j) {
            const double t = scores[row + j];
            rank += (t > s) || (t == s && j < h);
        }
        keep = rank < k;
        """,
        "prosper_top_latents",
    )
    if AVAILABLE
    else None
)
# one thread per row: the kept latents of the row in ascending order into latents[row, :k],
# and how many were kept. A NaN score compares false both ways, so its row keeps more than
# k; the surplus is dropped (the indices stay valid) and the count tells (see _run)
_compact_latents = (
    cp.ElementwiseKernel(
        "raw bool keep, int32 H, int32 k",
        "raw int64 latents, int32 count",
        """
        const long long row = (long long)i * H;
        const long long out = (long long)i * k;
        int n = 0;
        for (int h = 0; h < H; ++h) {
            if (keep[row + h]) {
                if (n < k) latents[out + n] = h;
                ++n;
            }
        }
        for (int m = n; m < k; ++m) latents[out + m] = 0;
        count = n;
        """,
        "prosper_compact_latents",
    )
    if AVAILABLE
    else None
)


# -- device selection under MPI --------------------------------------------------------------
def local_rank(comm: Any = None) -> int:
    """Rank of this process among the processes on the same node.

    Parameters
    ----------
    comm : prosper.parallel.Communicator, mpi4py communicator or None
        With a communicator, ranks sharing a host name are counted (one ``allgather`` of
        the host name: call it on every rank). None reads the launcher's environment
        (Open MPI, MPICH/Hydra, PMI, Slurm) and gives 0 outside MPI.
    """
    if comm is not None and getattr(comm, "size", 1) > 1:
        hosts = comm.allgather(socket.gethostname())
        me = comm.rank
        return sum(1 for r in range(me) if hosts[r] == hosts[me])
    for key in _LOCAL_RANK_ENV:
        if key in os.environ:
            return int(os.environ[key])
    return 0


def select_device(comm: Any = None) -> int:
    """Bind this process to one GPU, local rank modulo the visible devices.

    Call once per rank before the first E-step (collective when ``comm`` is given). Set
    ``CUDA_VISIBLE_DEVICES`` to restrict the devices a node offers.

    Returns
    -------
    device : int
        The CUDA device id now current for this process.
    """
    if not AVAILABLE:
        raise RuntimeError("select_device needs CuPy and a visible CUDA device")
    rank = local_rank(comm)
    n_devices = cp.cuda.runtime.getDeviceCount()
    device = rank % n_devices
    if rank >= n_devices:
        log.warning(
            "local rank %d shares GPU %d: more ranks than the %d visible GPUs on this node",
            rank,
            device,
            n_devices,
        )
    cp.cuda.Device(device).use()
    return device


# -- host -> device transfers ----------------------------------------------------------------
class _PinnedStage:
    """A page-locked host buffer, grown on demand and reused for every batch.

    Copies from pinned memory run at full bus speed (pageable memory is first copied by the
    driver). Reuse is safe because every call ends with a blocking device-to-host copy.
    """

    def __init__(self) -> None:
        self._mem = None
        self._nbytes = 0

    def to_device(self, x: np.ndarray):
        x = np.ascontiguousarray(x)
        if x.nbytes > self._nbytes:
            self._mem = cp.cuda.alloc_pinned_memory(x.nbytes)
            self._nbytes = x.nbytes
        host = np.frombuffer(self._mem, dtype=x.dtype, count=x.size).reshape(x.shape)
        np.copyto(host, x)
        out = cp.empty(x.shape, dtype=x.dtype)
        out.set(host)
        return out


_stage = _PinnedStage()
# device copies of the last state table's coefficients (the table is fixed during a fit)
_table_cache: dict[str, Any] = {}


def _device_tables(table: np.ndarray, value_counts: np.ndarray) -> dict[str, Any]:
    device = cp.cuda.Device().id
    cached = _table_cache
    if not (
        cached.get("table") is table
        and cached.get("value_counts") is value_counts
        and cached.get("device") == device
    ):
        forward, backward, tri_i, tri_j = table_coefficients(table, value_counts)
        off = tri_i != tri_j
        cached.clear()
        cached.update(
            table=table,
            value_counts=value_counts,
            device=device,
            forward=cp.asarray(forward),
            backward=cp.asarray(backward),
            tri_i=cp.asarray(tri_i),
            tri_j=cp.asarray(tri_j),
            # column numbers, not a mask: a boolean index would wait for its count
            offdiag=cp.asarray(np.flatnonzero(off)),
            off_i=cp.asarray(tri_i[off]),
            off_j=cp.asarray(tri_j[off]),
        )
    return cached


def _candidates(states: ExpectationTruncation, WY, presel, B: int):
    """The H' candidate latents of every point, ascending, as a (B, H') int64 device array,
    and per point how many latents it kept ((B,) int32; H' unless a score is NaN)."""
    Hp = states.Hprime
    if states.full:
        latents = cp.ascontiguousarray(cp.broadcast_to(cp.arange(Hp, dtype=cp.int64), (B, Hp)))
        return latents, None
    scores = preselection_scores(WY, tuple(cp.asarray(c, dtype=cp.float64) for c in presel))
    H = scores.shape[1]
    keep = cp.empty(scores.shape, dtype=cp.bool_)
    _top_latents(cp.ascontiguousarray(scores), np.int32(H), np.int32(Hp), keep)
    # int64 as the host's; no device-to-host copy (cp.nonzero would wait for the sizes)
    latents = cp.empty((B, Hp), dtype=cp.int64)
    count = cp.empty(B, dtype=cp.int32)
    _compact_latents(keep, np.int32(H), np.int32(Hp), latents, count)
    return latents, count


def _checked(log_marginal) -> np.ndarray:
    """The log marginals on the host; NaN ones (parameters that diverged, or a NaN
    preselection score, see :func:`_run`) stop the fit here rather than in the M-step."""
    host = log_marginal.get()
    if np.isnan(host).any():
        raise FloatingPointError(
            "non-finite log marginals or preselection scores: the parameters diverged"
        )
    return host


def _run(Y, W, sigma2, value_logp, states, presel, beta, prior_beta, mask, accumulate):
    """Device part of one batch; returns the log marginals and, with ``accumulate``, the
    device arrays the statistics are reduced from."""
    Y = np.asarray(Y)
    B, D = Y.shape
    H = W.shape[1]
    nz_host = np.asarray(states.values[1:], dtype=np.float64)
    V1 = nz_host.size
    value_counts = np.asarray(states.value_counts, dtype=np.float64)
    tables = _device_tables(states.table, value_counts)
    K = states.n_states

    dY = _stage.to_device(Y)
    dW = cp.asarray(W, dtype=Y.dtype)
    # GEMMs over the data at the precision of Y, the rest in float64
    WY = cp.ascontiguousarray((dY @ dW).astype(cp.float64, copy=False))
    I, kept = _candidates(states, WY, presel, B)
    Hp = I.shape[1]
    Y64 = dY.astype(cp.float64, copy=False)
    W64 = dW.astype(cp.float64, copy=False)
    WtW = W64.T @ W64
    yy = cp.einsum("nd,nd->n", Y64, Y64)
    feat = cp.concatenate(
        [cp.take_along_axis(WY, I, axis=1), WtW[I[:, tables["tri_i"]], I[:, tables["tri_j"]]]],
        axis=1,
    )
    err = cp.ascontiguousarray(feat @ tables["forward"])
    nz = cp.asarray(nz_host)
    lp = cp.asarray(state_log_prior(value_logp, H, value_counts))
    weights = cp.ones(B) if mask is None else cp.asarray(mask, dtype=cp.float64)
    log_marginal = cp.empty(B)
    q = cp.empty((B, K))
    _posterior_kernel(
        (B,),
        (BLOCK,),
        (
            WY,
            yy,
            cp.ascontiguousarray(cp.diag(WtW)),
            nz,
            err,
            lp,
            cp.ascontiguousarray(weights),
            np.int32(B),
            np.int32(H),
            np.int32(V1),
            np.int32(err.shape[1]),
            np.float64(-0.5 * D * np.log(2.0 * np.pi * sigma2)),
            np.float64(0.5 / sigma2),
            np.float64(beta),
            np.float64(prior_beta),
            np.int32(bool(accumulate)),
            log_marginal,
            q,
        ),
    )
    if kept is not None:
        # a row whose scores held a NaN got an arbitrary candidate set: mark it for _checked
        log_marginal = cp.where(kept == Hp, log_marginal, np.nan)
    if not accumulate:
        return log_marginal, None
    n_single = V1 * H
    q_single = q[:, 1 : 1 + n_single].reshape(B, V1, H)
    # moments of the table states: [Σ q s (H'), Σ q s_i s_j (P), Σ q #{s = v} (V-1)]
    moments = q[:, 1 + n_single :] @ tables["backward"]
    mean = cp.einsum("v,bvh->bh", nz, q_single)
    # (row, I[row, j]) pairs are distinct, so a fancy-index += adds every term
    mean[cp.arange(B)[:, None], I] += moments[:, :Hp]
    return log_marginal, {
        "Hp": Hp,
        "Y64": Y64,
        "I": I,
        "mean": mean,
        "moments": moments,
        "q_single": q_single,
        "nz": nz,
        "weights": weights,
        "yy": yy,
        "tables": tables,
    }


def _statistics(ctx: dict[str, Any], H: int) -> list:
    """Statistics on the device, in the order sy, ss, counts, yy, n."""
    I, moments, tables, Hp = ctx["I"], ctx["moments"], ctx["tables"], ctx["Hp"]
    P = int(tables["tri_i"].size)
    pairs = moments[:, Hp : Hp + P]
    lower = (I[:, tables["tri_i"]] * H + I[:, tables["tri_j"]]).ravel()
    off = tables["offdiag"]
    upper = (I[:, tables["off_j"]] * H + I[:, tables["off_i"]]).ravel()
    # scatter-adds (atomic): unlike bincount they need no maximum from the device first
    ss = cp.zeros(H * H)
    cp.add.at(ss, lower, pairs.ravel())
    cp.add.at(ss, upper, pairs[:, off].ravel())
    ss = ss.reshape(H, H)
    ss[cp.arange(H), cp.arange(H)] += cp.einsum("v,bvh->h", ctx["nz"] ** 2, ctx["q_single"])
    counts = ctx["q_single"].sum(axis=(0, 2)) + moments[:, Hp + P :].sum(axis=0)
    weights = ctx["weights"]
    return [ctx["Y64"].T @ ctx["mean"], ss, counts, weights @ ctx["yy"], weights.sum()]


def linear_estep(
    Y: np.ndarray,
    W: np.ndarray,
    sigma2: float,
    value_logp: np.ndarray,
    states: ExpectationTruncation,
    presel: tuple[np.ndarray, np.ndarray],
    beta: float,
    prior_beta: float,
    mask: np.ndarray | None = None,
    accumulate: bool = True,
) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
    """Truncated E-step of a linear Gaussian model (BSC, TSC, DSC) on one batch, on the GPU.

    Arguments as :func:`prosper.backends.numpy_backend.linear_estep` (host arrays; ``Y`` may
    be float32). Returns the log marginals (B,) as a host array and the float64 statistics
    (``sy``, ``ss``, ``counts``, ``yy``, ``n``) as device arrays (host arrays for an empty
    batch): sum them over batches on the device and copy the sums back with :func:`to_host`.
    """
    B, D = np.shape(Y)
    H = np.shape(W)[1]
    if B == 0:
        empty = np.zeros(0)
        if not accumulate:
            return empty, None
        zeros = {"sy": (D, H), "ss": (H, H), "counts": (states.values.size - 1,)}
        stats = {k: np.zeros(s) for k, s in zeros.items()}
        return empty, {**stats, "yy": np.array(0.0), "n": np.array(0.0)}
    log_marginal, ctx = _run(
        Y, W, float(sigma2), value_logp, states, presel, beta, prior_beta, mask, accumulate
    )
    if ctx is None:
        return _checked(log_marginal), None
    # the statistics stay on the device: the solver adds them up over the batches and
    # copies the sums back once per pass (to_host)
    sy, ss, counts, yy, n = _statistics(ctx, H)
    return _checked(log_marginal), {"sy": sy, "ss": ss, "counts": counts, "yy": yy, "n": n}


#: the largest automatic batch: past it the E-step gains little (H200, 10x10 bars, N = 50000:
#: 20 ms per pass in batches of 10^4, 13 ms in one of 5 · 10^4, float64)
MAX_BATCH_POINTS = 50000
#: share of the device's free memory an automatic batch may take (CuPy's memory pool keeps
#: the previous batch's arrays, and other ranks may share the GPU)
BATCH_MEMORY_SHARE = 0.25


def batch_points(bytes_per_point: int) -> int:
    """Points per E-step batch when the estimator leaves ``batch_size`` to the backend.

    On a GPU every batch costs a fixed ~2 ms of kernel launches and transfers, so batches
    are as large as :data:`BATCH_MEMORY_SHARE` of the current device's free memory allows
    at ``bytes_per_point``, at most :data:`MAX_BATCH_POINTS` and at least the CPU's
    :data:`prosper.backends.numpy_backend.BATCH_POINTS`.
    """
    # memory CuPy's pool holds for reuse is free for this process: counting it keeps the
    # choice the same from one fit (or restart) to the next in a process
    free = cp.cuda.Device().mem_info[0] + cp.get_default_memory_pool().free_bytes()
    fits = int(BATCH_MEMORY_SHARE * free) // max(1, int(bytes_per_point))
    return max(numpy_backend.BATCH_POINTS, min(MAX_BATCH_POINTS, fits))


def to_host(stats: dict[str, Any]) -> dict[str, np.ndarray]:
    """Statistics as float64 host arrays, with one device-to-host transfer for all of them.

    Parameters
    ----------
    stats : dict of str to array
        Device (CuPy) arrays, as :func:`linear_estep` returns them and sums of them; host
        arrays (an empty batch, or a model without a CuPy kernel) pass through.
    """
    on_device = [k for k, v in stats.items() if isinstance(v, cp.ndarray)]
    out = {k: np.asarray(v, dtype=np.float64) for k, v in stats.items() if k not in on_device}
    if on_device:
        host = cp.concatenate([cp.ravel(stats[k]) for k in on_device]).get()
        start = 0
        for k in on_device:
            size, shape = int(stats[k].size), stats[k].shape
            out[k] = host[start : start + size].reshape(shape)
            start += size
    return {k: out[k] for k in stats}


def linear_posterior_mean(
    Y: np.ndarray,
    W: np.ndarray,
    sigma2: float,
    value_logp: np.ndarray,
    states: ExpectationTruncation,
    presel: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """Posterior mean <s> (B, H) under the truncated posterior at temperature 1 (host array).

    Arguments as for :func:`linear_estep`.
    """
    if np.shape(Y)[0] == 0:
        return np.zeros((0, np.shape(W)[1]))
    log_marginal, ctx = _run(Y, W, float(sigma2), value_logp, states, presel, 1.0, 1.0, None, True)
    _checked(log_marginal)
    return ctx["mean"].get()
