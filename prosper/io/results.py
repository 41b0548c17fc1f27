"""HDF5 result files: one per run, written by rank 0.

Layout (DESIGN.md)::

    /                  attrs: prosper_version, model, estimator, config (TOML text),
                       estimator_params (JSON), n_ranks, start_time, host, n_samples
    /params/<name>     one row per finished iteration (chunked, extendable): the
                       parameters *after* that iteration's M-step
    /metrics/<name>    free_energy (of the parameters *entering* the iteration),
                       seconds_estep, seconds_reduce, seconds_mstep, temperature, ...
    /checkpoint        the parameters to resume from; attrs: iteration (next to run), seed
    /model/<name>      final parameters (what prosper.load reads); attrs: n_iter
    /ground_truth/...  optional generating parameters (CLI runs on generated data)

The file is opened, appended, flushed and closed once per iteration, never held open in
write mode between iterations, and the checkpoint is updated last: a run killed at any
moment leaves a file that h5py opens and whose traces are cut back to the checkpoint on
``--resume``.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from prosper._version import __version__
from prosper.exceptions import ConfigError
from prosper.parallel import Communicator

__all__ = ["Checkpoint", "ResultWriter", "load", "read_checkpoint"]


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"__array__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (type, np.dtype)):
        return np.dtype(value).name
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict) and "__array__" in value:
        return np.asarray(value["__array__"], dtype=value["dtype"])
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def encode_params(params: dict[str, Any]) -> str:
    """Estimator hyper-parameters as JSON text (arrays and dtypes encoded)."""
    return json.dumps({k: _jsonable(v) for k, v in params.items()}, sort_keys=True)


def decode_params(text: str) -> dict[str, Any]:
    return {k: _from_json(v) for k, v in json.loads(text).items()}


class Checkpoint:
    """What ``--resume`` needs: the next iteration, the parameters, the seed."""

    def __init__(
        self,
        iteration: int,
        params: dict[str, np.ndarray],
        seed: int,
        attrs: dict[str, Any],
    ) -> None:
        self.iteration, self.params, self.seed, self.attrs = iteration, params, seed, attrs


def _open_error(path: Path) -> str | None:
    """Why ``path`` cannot be created for writing, or None (checked before any work)."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        return f"output directory {str(parent)!r} does not exist."
    if not parent.is_dir():
        return f"output directory {str(parent)!r} is not a directory."
    if path.exists() and not os.access(path, os.W_OK):
        return f"output file {str(path)!r} is not writable."
    # a real probe: access() says yes to root even on read-only or virtual file systems
    probe = path.with_name(path.name + ".probe")
    try:
        with open(probe, "a"):
            pass
        probe.unlink()
    except OSError as exc:
        return f"output directory {str(parent)!r} is not writable ({exc.strerror})."
    return None


class ResultWriter:
    """Rank-0 writer of a run's HDF5 file; on other ranks every method does nothing.

    Parameters
    ----------
    path : str or path-like
    comm : Communicator
    attrs : dict
        Root attributes (model, estimator, config, estimator_params, ...).
    resume : bool, default=False
        Continue an existing file (its traces are cut back to its checkpoint).
    overwrite : bool, default=False
        Replace an existing file; without it (and without ``resume``) an existing file is an
        error, so no result is ever lost by accident.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        comm: Communicator,
        *,
        attrs: dict[str, Any],
        resume: bool = False,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        self.comm = comm
        self.attrs = attrs
        self.resume = resume
        error = None
        if comm.rank == 0:
            error = _open_error(self.path)
            if resume and overwrite:
                error = "resume and overwrite exclude each other: continue the file or replace it."
            if error is None and self.path.exists() and not (resume or overwrite):
                error = (
                    f"output file {str(self.path)!r} already exists; continue it with --resume "
                    "(resume=True in Python) or replace it with --overwrite (overwrite=True)."
                )
            if error is None and resume and not self.path.exists():
                error = f"cannot resume: {str(self.path)!r} does not exist."
        comm.agree(error)

    @property
    def active(self) -> bool:
        return self.comm.rank == 0

    def start(
        self,
        params: dict[str, np.ndarray],
        seed: int,
        ground_truth: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Create the file with its layout (rank 0) and an initial checkpoint."""
        if not self.active:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        with h5py.File(tmp, "w") as f:
            for key, value in self.attrs.items():
                f.attrs[key] = value
            f.attrs["prosper_version"] = __version__
            f.attrs["n_ranks"] = self.comm.size
            f.attrs["start_time"] = datetime.datetime.now().isoformat(timespec="seconds")
            f.attrs["host"] = socket.gethostname()
            g = f.create_group("params")
            for name, value in params.items():
                value = np.asarray(value, dtype=np.float64)
                g.create_dataset(
                    name,
                    shape=(0, *value.shape),
                    maxshape=(None, *value.shape),
                    chunks=(1, *value.shape),
                    dtype="f8",
                )
            f.create_group("metrics")
            ck = f.create_group("checkpoint")
            for name, value in params.items():
                ck.create_dataset(name, data=np.asarray(value, dtype=np.float64))
            ck.attrs["iteration"] = 0
            ck.attrs["seed"] = seed
            if ground_truth:
                gt = f.create_group("ground_truth")
                for name, value in ground_truth.items():
                    gt.create_dataset(name, data=np.asarray(value))
        _replace(tmp, self.path)

    def record(
        self, iteration: int, params: dict[str, np.ndarray], metrics: dict[str, float]
    ) -> None:
        """Append one iteration's parameters and metrics, then move the checkpoint."""
        if not self.active:
            return
        with h5py.File(self.path, "a") as f:
            for name, value in params.items():
                d = f["params"][name]
                d.resize(iteration + 1, axis=0)
                d[iteration] = value
            m = f["metrics"]
            for name, value in metrics.items():
                if name not in m:
                    m.create_dataset(name, shape=(0,), maxshape=(None,), chunks=(256,), dtype="f8")
                d = m[name]
                d.resize(iteration + 1, axis=0)
                d[iteration] = value
            f.flush()
            ck = f["checkpoint"]
            for name, value in params.items():
                ck[name][...] = value
            ck.attrs["iteration"] = iteration + 1
            f.flush()

    def rewind(self, iteration: int) -> None:
        """Before resuming: cut the traces back to the checkpoint's ``iteration`` (a killed
        run may have recorded a row after its last checkpoint) and drop the final model."""
        if not self.active:
            return
        with h5py.File(self.path, "a") as f:
            for group in ("params", "metrics"):
                for d in f[group].values():
                    if d.shape[0] > iteration:
                        d.resize(iteration, axis=0)
            if "model" in f:
                del f["model"]

    def finish(self, params: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
        """Write the final model (what :func:`load` reads)."""
        if not self.active:
            return
        with h5py.File(self.path, "a") as f:
            if "model" in f:
                del f["model"]
            g = f.create_group("model")
            for name, value in params.items():
                g.create_dataset(name, data=np.asarray(value))
            for key, value in attrs.items():
                g.attrs[key] = value


def _replace(tmp: Path, final: Path) -> None:
    """Atomically move a closed file into place (fsync first, same directory)."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read the checkpoint of a result file (read-only; see :meth:`ResultWriter.rewind`)."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if "checkpoint" not in f:
                raise ConfigError(f"{str(path)!r} holds no checkpoint; it cannot be resumed.")
            ck = f["checkpoint"]
            iteration = int(ck.attrs["iteration"])
            params = {name: np.array(d) for name, d in ck.items()}
            attrs = dict(f.attrs)
            seed = int(ck.attrs["seed"])
    except OSError as exc:
        raise ConfigError(f"cannot resume from {str(path)!r}: {exc}") from None
    return Checkpoint(iteration, params, seed, attrs)


def open_result(path: str | os.PathLike) -> h5py.File:
    """Open a result file for reading, with a clear error for anything else."""
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise ValueError(
            f"{str(path)!r} is not a ProSper result file (HDF5 written by 'prosper fit' or "
            "fit(..., out=...))."
        ) from None
    if "model" not in f.attrs or "checkpoint" not in f:
        f.close()
        raise ValueError(f"{str(path)!r} is an HDF5 file but not a ProSper result file.")
    return f


def read_history(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All per-iteration metrics of a result file."""
    with h5py.File(path, "r") as f:
        return {name: np.array(d) for name, d in f["metrics"].items()}


def load(path: str | os.PathLike):
    """Load the fitted estimator stored in a result file.

    Parameters
    ----------
    path : str or path-like
        A file written by ``prosper fit`` or ``Estimator.fit(Y, out=...)``.

    Returns
    -------
    estimator
        An instance of the model's estimator class with its fitted attributes (``W_``,
        ``free_energy_``, ...) set, ready for ``transform``, ``score`` and ``sample``.
    """
    from prosper.estimators import get_estimator_class

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"result file {str(path)!r} does not exist.")
    with open_result(path) as f:
        if "model" not in f:
            raise ValueError(
                f"{str(path)!r} holds no final model (/model): the run did not finish; "
                "continue it with 'prosper fit ... --resume'."
            )
        cls = get_estimator_class(str(f.attrs["model"]))
        params = decode_params(str(f.attrs["estimator_params"]))
        fitted = {name: np.array(d) for name, d in f["model"].items()}
        model_attrs = dict(f["model"].attrs)
        history = {name: np.array(d) for name, d in f["metrics"].items()}
    estimator = cls(**params)
    estimator._set_fitted(fitted, history, model_attrs)
    return estimator
