"""Shared test helpers: launching MPI jobs, matching learned to true dictionaries.

Import as ``from tests.helpers import run_mpi, match_columns``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def mpiexec_path() -> str | None:
    """mpiexec next to the running interpreter (the venv's MPICH) or on PATH."""
    local = Path(sys.executable).parent / "mpiexec"
    return str(local) if local.exists() else shutil.which("mpiexec")


def run_mpi(
    n: int,
    args: list[str],
    *,
    timeout: float = 120,
    cwd: str | Path | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """Run ``mpiexec -n n <args>`` and return the finished process (skips without mpiexec).

    ``args`` starting with "python" run the test interpreter; "prosper" runs the CLI entry
    point of this interpreter's environment.
    """
    exe = mpiexec_path()
    if exe is None:
        pytest.skip("mpiexec not found")
    if args and args[0] == "python":
        args = [sys.executable, *args[1:]]
    elif args and args[0] == "prosper":
        args = [sys.executable, "-m", "prosper", *args[1:]]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("NUMBA_NUM_THREADS", "1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [exe, "-n", str(n), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"mpiexec -n {n} {' '.join(args)} failed ({proc.returncode}):\n"
            f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
        )
    return proc


def match_columns(
    W: np.ndarray, W_true: np.ndarray, signed: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Permute (and, if ``signed``, flip) the columns of W to best match W_true.

    Returns the matched W and the per-column max absolute error.
    """
    from scipy.optimize import linear_sum_assignment

    diff = np.abs(W[:, :, None] - W_true[:, None, :]).max(axis=0)
    if signed:
        diff = np.minimum(diff, np.abs(-W[:, :, None] - W_true[:, None, :]).max(axis=0))
    rows, cols = linear_sum_assignment(diff)
    matched = np.zeros_like(W_true)
    for r, c in zip(rows, cols, strict=True):
        w = W[:, r]
        if signed and np.abs(-w - W_true[:, c]).max() < np.abs(w - W_true[:, c]).max():
            w = -w
        matched[:, c] = w
    return matched, np.abs(matched - W_true).max(axis=0)


class Stop(Exception):
    """Raised by a :func:`stop_at` callback: a fit interrupted as a crash would interrupt it."""


def stop_at(iteration: int):
    """A fit callback that raises :class:`Stop` at ``iteration`` (after its record)."""

    def crash(it, learner, metrics):
        if it == iteration:
            raise Stop

    return crash


def bars_found(W, W_true, threshold: float = 0.9, absolute: bool = False) -> int:
    """Generating bars (columns of ``W_true``) matched one to one by a column of ``W`` with
    cosine above ``threshold`` (``absolute``: its magnitude, for latents defined up to sign)."""
    from scipy.optimize import linear_sum_assignment

    Wn = W / np.linalg.norm(W, axis=0)
    cos = (W_true / np.linalg.norm(W_true, axis=0)).T @ Wn
    if absolute:
        cos = np.abs(cos)
    rows, cols = linear_sum_assignment(-cos)
    return int(np.sum(cos[rows, cols] > threshold))


def em_step(est, Y, params, iteration: int):
    """The engine's parameters, metrics and statistics after one E- and M-step of ``est``'s
    learner from ``params`` at ``iteration`` (NumPy backend, one rank)."""
    from prosper.backends import get_backend
    from prosper.parallel import Communicator

    learner = est._make_learner(Y.shape[1], 0, get_backend("numpy"))
    learner.set_params(params, Y.shape[0])
    stats = learner.estep(Y, Communicator(None), iteration)
    metrics = learner.mstep(dict(stats), iteration)
    return learner.params, metrics, stats


def killed_run(job, out, kill_after: int) -> int:
    """Start the job on 2 ranks and SIGKILL every process of it once rank 0 has logged
    iteration ``kill_after``; returns the checkpoint iteration the file was left at."""
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    fit = [sys.executable, "-m", "prosper", "fit", str(job), "--out", str(out)]
    proc = subprocess.Popen(
        [mpiexec_path(), "-n", "2", *fit, "--log-level", "DEBUG"],
        stderr=subprocess.PIPE,
        text=True,
        cwd=job.parent,
        env=env,
        start_new_session=True,  # the launcher and both ranks in one process group
    )
    deadline = time.time() + 120
    try:
        for line in proc.stderr:
            # the solver's line after the checkpoint ("iteration k: {metrics}"), not the
            # repairs' "iteration k: latent ..." logged in the M-step before it
            if f"iteration {kill_after}: {{" in line or time.time() > deadline:
                break
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    # the killed ranks release the file's lock when the kernel has reaped them, which on a
    # loaded machine may be a moment after the launcher is gone
    for _ in range(150):
        try:
            f = h5py.File(out, "r")
            break
        except BlockingIOError:
            time.sleep(0.2)
    else:
        raise AssertionError(f"{out} is still locked 30 s after the kill")
    with f:
        assert "model" not in f, "the run finished before the kill: raise N_ITER"
        return int(f["checkpoint"].attrs["iteration"])
