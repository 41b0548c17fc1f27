"""HDF5 result files: one per run, written by rank 0.

Layout (DESIGN.md)::

    /                  attrs: prosper_version, model, estimator, config (TOML text),
                       estimator_params (JSON), n_ranks, start_time, host, n_samples
    /params/<name>     one row per finished iteration (chunked, extendable): the
                       parameters *after* that iteration's M-step
    /metrics/<name>    free_energy (of the parameters *entering* the iteration),
                       seconds_estep, seconds_reduce, seconds_mstep, temperature, ...
    /checkpoint        two slots ``a`` and ``b``, each a complete checkpoint (the parameters to
                       resume from; attrs: iteration (next to run), seed); the group's attribute
                       ``active`` names the valid slot and is switched only after the other
                       slot has been written and flushed (``iteration``/``seed`` mirror it)
                       each slot's group ``state`` holds the learner's state beyond its
                       parameters (e.g. SparseCoding's online statistics), where it has any
    (root attr)        extensions: JSON list of n_iter extensions by --resume (from, to, at)
    /model/<name>      final parameters (what prosper.load reads); attrs: n_iter
    /ground_truth/...  optional generating parameters (CLI runs on generated data)

The file is opened, appended, flushed and closed once per iteration, never held open in
write mode between iterations, and the checkpoint is updated last: a run killed at any
moment leaves a file that h5py opens and whose traces are cut back to the checkpoint on
``--resume``.

Why two slots rather than write-then-rename of the whole file: the file grows by one row of
parameters per iteration, so copying it every iteration would cost O(iterations) I/O each
time; writing the new checkpoint into the idle slot costs the size of the parameters, and the
switch is one attribute. A kill before the switch leaves the previous slot in force; a kill
after it, the new one.

Files are never written through a symbolic link unless the caller asks for it
(``allow_symlink``), never over the job's own input files, and temporary and probe files are
created exclusively (``tempfile.mkstemp`` in the target folder) with unpredictable names.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from prosper._version import __version__
from prosper.exceptions import ConfigError
from prosper.parallel import Communicator

__all__ = [
    "Checkpoint",
    "ResultWriter",
    "checkpoint_group",
    "load",
    "output_error",
    "read_checkpoint",
]


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
    """What ``--resume`` needs: the next iteration, the parameters, the seed, the learner's
    state (empty when it has none)."""

    def __init__(
        self,
        iteration: int,
        params: dict[str, np.ndarray],
        seed: int,
        attrs: dict[str, Any],
        state: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.iteration, self.params, self.seed, self.attrs = iteration, params, seed, attrs
        self.state = state or {}


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def output_error(
    path: str | os.PathLike,
    *,
    allow_symlink: bool = False,
    inputs: Iterable[str | os.PathLike] = (),
) -> str | None:
    """Why ``path`` cannot be used as a result file, or None (checked before any work).

    Parameters
    ----------
    path : str or path-like
        The result file to create, replace or continue.
    allow_symlink : bool, default=False
        Accept a ``path`` that is a symbolic link (its target is then written).
    inputs : iterable of path-like
        The job's own input files (data, job file): ``path`` must be none of them, whatever
        ``overwrite`` says.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        return f"output directory {str(parent)!r} does not exist."
    if not parent.is_dir():
        return f"output directory {str(parent)!r} is not a directory."
    if path.is_symlink() and not allow_symlink:
        return (
            f"output file {str(path)!r} is a symbolic link (to {os.readlink(path)!r}); "
            "ProSper does not write through links unless asked: pass --allow-symlink "
            "(allow_symlink=True in Python) or give the target's path."
        )
    if path.is_dir():
        return f"output file {str(path)!r} is a directory; give a file name inside it."
    for source in inputs:
        if path.exists() and _same_file(path, Path(source)):
            return (
                f"output file {str(path)!r} is the job's own input {str(source)!r}; "
                "choose another output file (--overwrite does not allow this)."
            )
    if path.exists() and not os.access(path, os.W_OK):
        return f"output file {str(path)!r} is not writable."
    # a real probe: access() says yes to root even on read-only or virtual file systems; it
    # is created exclusively under an unpredictable name, so no planted link is followed
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"output directory {str(parent)!r} is not writable ({exc.strerror})."
    return None


def checkpoint_group(f: h5py.File) -> h5py.Group:
    """The valid checkpoint of an open result file (the active slot; older files: the group)."""
    ck = f["checkpoint"]
    active = ck.attrs.get("active")
    if active is None:
        return ck
    return ck[str(active.decode() if isinstance(active, bytes) else active)]


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
    allow_symlink : bool, default=False
        Accept a ``path`` that is a symbolic link and write its target.
    inputs : iterable of path-like, default=()
        The job's input files, which ``path`` must not be.
    """

    #: testing only: called as ``_fault_hook(stage, iteration)`` at points inside the
    #: checkpoint write ("slot-partial", "slot-written", "switched"), e.g. to kill the
    #: process there and check that the file still resumes
    _fault_hook: Callable[[str, int], None] | None = None

    def __init__(
        self,
        path: str | os.PathLike,
        comm: Communicator,
        *,
        attrs: dict[str, Any],
        resume: bool = False,
        overwrite: bool = False,
        allow_symlink: bool = False,
        inputs: Iterable[str | os.PathLike] = (),
    ) -> None:
        self.path = Path(path)
        self.comm = comm
        self.attrs = attrs
        self.resume = resume
        error = None
        if comm.rank == 0:
            error = output_error(self.path, allow_symlink=allow_symlink, inputs=inputs)
            if error is None and allow_symlink and self.path.is_symlink():
                # the link stays; its target is the file (the final rename replaces the target)
                self.path = Path(os.path.realpath(self.path))
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
        fd, name = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
        )
        os.close(fd)
        tmp = Path(name)
        try:
            self._create(tmp, params, seed, ground_truth)
            _replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _create(
        self,
        tmp: Path,
        params: dict[str, np.ndarray],
        seed: int,
        ground_truth: dict[str, np.ndarray] | None,
    ) -> None:
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
            for slot in ("a", "b"):
                g = ck.create_group(slot)
                for name, value in params.items():
                    g.create_dataset(name, data=np.asarray(value, dtype=np.float64))
                g.attrs["iteration"] = 0
                g.attrs["seed"] = seed
            ck.attrs["active"] = "a"
            ck.attrs["iteration"] = 0
            ck.attrs["seed"] = seed
            if ground_truth:
                gt = f.create_group("ground_truth")
                for name, value in ground_truth.items():
                    gt.create_dataset(name, data=np.asarray(value))

    def _open(self) -> h5py.File:
        """Open the result file for appending, never through a link planted since the start."""
        if self.path.is_symlink():
            raise ValueError(
                f"output file {str(self.path)!r} became a symbolic link during the run; "
                "refusing to write through it."
            )
        return h5py.File(self.path, "a")

    def _fault(self, stage: str, iteration: int) -> None:
        if self._fault_hook is not None:
            self._fault_hook(stage, iteration)

    def _checkpoint(
        self,
        f: h5py.File,
        iteration: int,
        params: dict[str, np.ndarray],
        state: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Write the checkpoint (and the learner's state) into the idle slot, flush, then
        switch to it."""
        ck = f["checkpoint"]
        if "active" not in ck.attrs:  # a file from before the two slots: write in place
            for name, value in params.items():
                ck[name][...] = value
            if state:
                _write_state(ck.require_group("state"), state)
            ck.attrs["iteration"] = iteration
            return
        active = ck.attrs["active"]
        idle = ck[
            "b" if str(active.decode() if isinstance(active, bytes) else active) == "a" else "a"
        ]
        names = list(params)
        for i, name in enumerate(names):
            idle[name][...] = params[name]
            if i == 0:
                self._fault("slot-partial", iteration)
        if state:
            _write_state(idle.require_group("state"), state)
        idle.attrs["iteration"] = iteration
        idle.attrs["seed"] = ck.attrs["seed"]
        f.flush()
        self._fault("slot-written", iteration)
        ck.attrs["active"] = idle.name.rsplit("/", 1)[-1]
        ck.attrs["iteration"] = iteration
        f.flush()
        self._fault("switched", iteration)

    def record(
        self,
        iteration: int,
        params: dict[str, np.ndarray],
        metrics: dict[str, float],
        state: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Append one iteration's parameters and metrics, then move the checkpoint (with the
        learner's ``state``, if any)."""
        if not self.active:
            return
        with self._open() as f:
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
            self._checkpoint(f, iteration + 1, params, state)

    def rewind(self, iteration: int) -> None:
        """Before resuming: cut the traces back to the checkpoint's ``iteration`` (a killed
        run may have recorded a row after its last checkpoint) and drop the final model."""
        if not self.active:
            return
        with self._open() as f:
            for group in ("params", "metrics"):
                for d in f[group].values():
                    if d.shape[0] > iteration:
                        d.resize(iteration, axis=0)
            if "model" in f:
                del f["model"]

    def extend(self, old_n_iter: int, new_n_iter: int, iteration: int) -> None:
        """Record that a resumed run continues to a larger ``n_iter``: the root attributes
        take this run's configuration, and ``extensions`` (JSON list) keeps each change."""
        if not self.active:
            return
        with h5py.File(self.path, "a") as f:
            for key in ("config", "estimator_params"):
                if key in self.attrs:
                    f.attrs[key] = self.attrs[key]
            done = json.loads(str(f.attrs.get("extensions", "[]")))
            done.append({"from_n_iter": old_n_iter, "to_n_iter": new_n_iter, "at": iteration})
            f.attrs["extensions"] = json.dumps(done)

    def finish(self, params: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
        """Write the final model (what :func:`load` reads)."""
        if not self.active:
            return
        with self._open() as f:
            if "model" in f:
                del f["model"]
            g = f.create_group("model")
            for name, value in params.items():
                g.create_dataset(name, data=np.asarray(value))
            for key, value in attrs.items():
                g.attrs[key] = value


def _write_state(group: h5py.Group, state: dict[str, np.ndarray]) -> None:
    """Write a learner's state arrays into ``group`` (in place when the shape is kept)."""
    for name, value in state.items():
        value = np.asarray(value)
        if name in group and group[name].shape == value.shape:
            group[name][...] = value
        else:
            if name in group:
                del group[name]
            group.create_dataset(name, data=value)


def _replace(tmp: Path, final: Path) -> None:
    """Atomically move a closed file into place (fsync first, same directory)."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)


class StoredRows:
    """A per-row block of a checkpoint's learner state, read rank by rank on resume.

    Parameters
    ----------
    path : str
        The result file.
    name : str
        The dataset's path in the file.
    """

    def __init__(self, path: str, name: str) -> None:
        self.path, self.name = path, name

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` (global indices) of the stored block."""
        with h5py.File(self.path, "r") as f:
            d = f[self.name]
            if stop > d.shape[0]:
                raise ValueError(
                    f"{self.path!r}: the stored {self.name} holds {d.shape[0]} rows; this run "
                    f"needs rows {start}..{stop - 1}."
                )
            return d[start:stop]


def _read_state(path: Path, group: h5py.Group | dict) -> dict[str, Any]:
    """A checkpoint's learner state: arrays, and :class:`StoredRows` for ``rows/<name>``."""
    state: dict[str, Any] = {}
    for name, item in group.items():
        if isinstance(item, h5py.Group):  # per-row blocks stay in the file
            for sub, d in item.items():
                state[f"{name}/{sub}"] = StoredRows(str(path), d.name)
        else:
            state[name] = np.array(item)
    return state


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read the checkpoint of a result file (read-only; see :meth:`ResultWriter.rewind`)."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if "checkpoint" not in f:
                raise ConfigError(f"{str(path)!r} holds no checkpoint; it cannot be resumed.")
            ck = checkpoint_group(f)
            iteration = int(ck.attrs["iteration"])
            params = {name: np.array(d) for name, d in ck.items() if isinstance(d, h5py.Dataset)}
            state = _read_state(path, ck.get("state", {}))
            attrs = dict(f.attrs)
            seed = int(ck.attrs["seed"])
    except OSError as exc:
        raise ConfigError(f"cannot resume from {str(path)!r}: {exc}") from None
    return Checkpoint(iteration, params, seed, attrs, state)


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
        try:
            params = decode_params(str(f.attrs["estimator_params"]))
        except (KeyError, ValueError) as exc:  # JSONDecodeError is a ValueError
            raise ValueError(
                f"{str(path)!r} is damaged: its estimator parameters (root attribute "
                f"'estimator_params') cannot be read ({type(exc).__name__}: {exc})."
            ) from None
        fitted = {name: np.array(d) for name, d in f["model"].items()}
        model_attrs = dict(f["model"].attrs)
        history = {name: np.array(d) for name, d in f["metrics"].items()}
    try:
        estimator = cls(**params)
        estimator._set_fitted(fitted, history, model_attrs)
    except (TypeError, KeyError, ValueError) as exc:
        raise ValueError(
            f"{str(path)!r} is damaged: its stored model does not fit {cls.__name__} "
            f"({type(exc).__name__}: {exc})."
        ) from None
    return estimator
