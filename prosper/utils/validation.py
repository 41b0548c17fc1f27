"""Parameter constraints and data checks, applied once at the top of ``fit``.

Each estimator declares ``_parameter_constraints``: a dict mapping a parameter name to a
list of accepted constraints (a type, ``None``, an :class:`Interval`, an :class:`Options`
or a callable returning True for valid values). :func:`validate_params` generates the error
message from the constraints, so a message can never list an option the code rejects.
"""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from prosper.exceptions import NotFittedError
from prosper.parallel import AgreedError

__all__ = [
    "Interval",
    "Options",
    "available_memory",
    "check_data",
    "check_is_fitted",
    "check_memory",
    "check_random_state",
    "check_source",
    "parse_memory",
    "validate_params",
]


@dataclass(frozen=True)
class Interval:
    """A real or integer interval constraint.

    Parameters
    ----------
    kind : {"int", "real"}
        ``"int"`` accepts integers only (not bools); ``"real"`` accepts any real number.
    low, high : float or None
        Bounds; None means unbounded.
    closed : {"both", "left", "right", "neither"}, default="both"
        Which bounds belong to the interval.
    """

    kind: str
    low: float | None
    high: float | None
    closed: str = "both"

    def accepts(self, value: Any) -> bool:
        if isinstance(value, (bool, np.bool_)):
            return False
        if self.kind == "int" and not isinstance(value, numbers.Integral):
            return False
        if not isinstance(value, numbers.Real) or not np.isfinite(value):
            return False
        if self.low is not None:
            if value < self.low or (value == self.low and self.closed in ("right", "neither")):
                return False
        if self.high is not None:
            if value > self.high or (value == self.high and self.closed in ("left", "neither")):
                return False
        return True

    def __str__(self) -> str:
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        noun = "an int" if self.kind == "int" else "a float"
        return f"{noun} in the range {left}{low}, {high}{right}"


@dataclass(frozen=True)
class Options:
    """A constraint accepting one of a fixed set of values (strings, usually)."""

    values: tuple

    def accepts(self, value: Any) -> bool:
        try:
            return bool(value in self.values)
        except (TypeError, ValueError):  # unhashable or array-valued input
            return False

    def __str__(self) -> str:
        return "one of {" + ", ".join(repr(v) for v in self.values) + "}"


def _describe(constraint: Any) -> str:
    if constraint is None:
        return "None"
    if isinstance(constraint, type):
        return f"an instance of {constraint.__name__}"
    if callable(constraint) and not isinstance(constraint, (Interval, Options)):
        return constraint.__doc__.strip() if constraint.__doc__ else constraint.__name__
    return str(constraint)


def _accepts(constraint: Any, value: Any) -> bool:
    if constraint is None:
        return value is None
    if isinstance(constraint, type):
        return isinstance(value, constraint)
    if isinstance(constraint, (Interval, Options)):
        return constraint.accepts(value)
    return bool(constraint(value))


def validate_params(owner: str, params: dict[str, Any], constraints: dict[str, list]) -> None:
    """Check ``params`` against ``constraints`` and raise a ``ValueError`` naming the culprit.

    Parameters
    ----------
    owner : str
        Name used in messages, e.g. ``"BSC"``.
    params : dict
        Parameter values, e.g. from ``get_params()``.
    constraints : dict of str to list
        Accepted constraints per parameter; parameters missing here are not checked.
    """
    for name, accepted in constraints.items():
        if name not in params:
            continue
        value = params[name]
        if any(_accepts(c, value) for c in accepted):
            continue
        described = [_describe(c) for c in accepted]
        text = (
            described[0]
            if len(described) == 1
            else (", ".join(described[:-1]) + " or " + described[-1])
        )
        raise ValueError(
            f"The {name!r} parameter of {owner} must be {text}. Got {value!r} instead."
        )


def check_random_state(random_state: int | np.random.Generator | None) -> np.random.Generator:
    """Turn ``random_state`` (None, int or Generator) into a ``numpy.random.Generator``."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(f"random_state must be a non-negative int; got {random_state}.")
        return np.random.default_rng(random_state)
    if random_state is None:
        return np.random.default_rng()
    raise ValueError(
        f"random_state must be None, an int or a numpy.random.Generator; got {random_state!r}."
    )


def check_is_fitted(estimator: Any, attributes: tuple[str, ...] = ("W_",)) -> None:
    """Raise :class:`prosper.NotFittedError` unless ``estimator`` has the fitted attributes."""
    missing = [a for a in attributes if getattr(estimator, a, None) is None]
    if missing:
        raise NotFittedError(
            f"This {type(estimator).__name__} instance is not fitted yet "
            f"(no {', '.join(missing)}); call 'fit' with appropriate data before using this "
            "method."
        )


def check_data(
    Y: Any,
    *,
    comm: Any = None,
    dtype: Any = None,
    n_features: int | None = None,
    name: str = "Y",
    batch_size: int = 1000,
) -> Any:
    """Validate a data matrix, agreeing on the outcome across MPI ranks.

    Parameters
    ----------
    Y : array-like, DataSource, h5py.Dataset or numpy.memmap of shape (N, D)
        Data, one row per data point (each rank passes its own rows).
    comm : prosper.parallel.Communicator or None
        When given, every rank learns whether any rank's data is bad and all raise together
        (no rank is left waiting in a collective); D must agree and every rank needs a row.
    dtype : numpy dtype or None
        Target floating dtype; None keeps float32/float64 and casts other numbers to float64.
    n_features : int or None
        Expected D (e.g. ``n_features_in_`` of a fitted model).
    name : str, default="Y"
        Name used in error messages.
    batch_size : int, default=1000
        Rows checked at a time when ``Y`` is streamed.

    Returns
    -------
    ndarray or DataSource of shape (N, D)
        C-contiguous floating copy or view of an in-memory ``Y``; a streamable ``Y`` (see
        :func:`prosper.io.sources.is_streamable`) is checked block by block and returned as
        a :class:`~prosper.io.sources.DataSource` in ``dtype``, never loaded whole.
    """
    from prosper.io.sources import is_streamable

    if is_streamable(Y):
        return check_source(
            Y, comm=comm, dtype=dtype, n_features=n_features, name=name, batch_size=batch_size
        )
    error = None
    arr = None
    # global row numbers in messages: this rank's rows follow those of the lower ranks
    offset = 0 if comm is None else comm.exscan(_n_rows(Y))
    try:
        arr = _check_local(Y, dtype=dtype, n_features=n_features, name=name, row_offset=offset)
    except ValueError as exc:
        error = str(exc)
    _agree(comm, error, None if arr is None else arr.shape, name)
    return arr


def check_source(
    Y: Any,
    *,
    comm: Any = None,
    dtype: Any = None,
    n_features: int | None = None,
    name: str = "Y",
    batch_size: int = 1000,
) -> Any:
    """Validate data to be streamed and wrap them in a DataSource, without a full copy.

    Shape, dtype and D are checked from the metadata; finiteness is checked reading
    ``batch_size`` rows at a time, so memory stays bounded whatever N is. Under MPI the
    outcome is agreed as in :func:`check_data`.

    Parameters
    ----------
    Y : DataSource, h5py.Dataset, numpy.memmap or array-like of shape (N, D)
        An in-memory array is kept by reference (converted to ``dtype`` block by block).
    comm, dtype, n_features, name, batch_size
        As for :func:`check_data`.

    Returns
    -------
    DataSource
        Returns rows in ``dtype`` (float32/float64 kept when None, other numbers as float64).
    """
    from prosper.io.sources import as_source

    error = None
    source = None
    offset = 0 if comm is None else comm.exscan(_n_rows(Y))
    try:
        source = _check_source_local(
            Y, dtype=dtype, n_features=n_features, name=name, row_offset=offset
        )
        # checked in the target dtype: a float64 value beyond float32's range becomes inf
        source = as_source(source, dtype)
        _check_finite_blocks(source, name, offset, batch_size)
    except ValueError as exc:
        error = str(exc)
    _agree(comm, error, None if source is None else source.shape, name)
    return source


def _check_source_local(
    Y: Any, *, dtype: Any, n_features: int | None, name: str, row_offset: int
) -> Any:
    import h5py

    from prosper.io.sources import DataSource, as_source

    if isinstance(Y, (DataSource, h5py.Dataset)):
        stored = Y.stored_dtype if isinstance(Y, DataSource) else Y.dtype
        shape = Y.shape
    elif isinstance(Y, np.ndarray):
        stored, shape = Y.dtype, Y.shape
    else:
        # a list or another array-like: converted here (it is in memory already)
        return as_source(
            _check_local(Y, dtype=dtype, n_features=n_features, name=name, row_offset=row_offset)
        )
    _check_kind(stored, shape, name)
    if n_features is not None and shape[1] != n_features:
        raise ValueError(
            f"{name} has {shape[1]} features (columns) but the model was fitted with {n_features}."
        )
    return as_source(Y)


def _check_finite_blocks(source: Any, name: str, row_offset: int, batch_size: int) -> None:
    """Raise if a value is NaN or infinite; keep the local sums Σ y and Σ y² (float64) of the
    same pass in ``source.local_sums`` (the data checksum of a result file, which then
    costs no pass over the data of its own)."""
    total, total_sq = 0.0, 0.0
    for rows, block in source.batches(batch_size):
        block_sum = float(block.sum(dtype=np.float64))
        block_sq = float(np.einsum("nd,nd->", block, block, dtype=np.float64))
        # finite sums mean finite values; infinite ones may also be an overflow of Σ y²
        if not (np.isfinite(block_sum) and np.isfinite(block_sq)):
            finite = np.isfinite(block)
            if not finite.all():
                bad = np.argwhere(~finite)[0]
                raise ValueError(
                    f"{name} contains NaN or infinity (first at row "
                    f"{bad[0] + rows.start + row_offset}, column {bad[1]}); remove or impute "
                    "those values before fitting."
                )
        total += block_sum
        total_sq += block_sq
    source.local_sums = np.array([total, total_sq])


def _agree(comm: Any, error: str | None, shape: tuple | None, name: str) -> None:
    """Raise ``error`` (or a cross-rank inconsistency) on every rank together.

    The error is an :class:`~prosper.parallel.AgreedError`: every rank knows that every other
    rank raises it too, so a job can report it once and end cleanly instead of calling
    ``MPI_Abort``, which may lose the message on its way through ``mpiexec``.
    """
    if comm is None:
        if error:
            raise ValueError(error)
        return
    shape = (-1, -1) if shape is None else tuple(shape)
    errors = comm.allgather((comm.rank, error, shape))
    bad = [(r, e) for r, e, _ in errors if e]
    if bad:
        where = "" if comm.size == 1 else f" (rank {bad[0][0]})"
        raise AgreedError(bad[0][1] + where, bad[0][0])
    widths = {s[1] for _, _, s in errors}
    if len(widths) != 1:
        raise AgreedError(
            f"{name} must have the same number of columns D on every rank; got "
            + ", ".join(f"rank {r}: D={s[1]}" for r, _, s in errors)
            + ".",
            0,
        )
    empty = [r for r, _, s in errors if s[0] == 0]
    total = sum(s[0] for _, _, s in errors)
    if total == 0:
        raise AgreedError(f"{name} has no rows (N=0); fitting needs at least one data point.", 0)
    if empty:
        raise AgreedError(
            f"{name} has {total} rows in total but rank(s) {empty} received none: use at most "
            f"as many MPI ranks as data points (N={total}, ranks={comm.size}).",
            empty[0],
        )


def _check_kind(dtype: np.dtype, shape: tuple, name: str) -> None:
    """The dtype and shape checks shared by arrays and streamed data."""
    if dtype.kind == "O" or not (np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)):
        raise ValueError(
            f"{name} must hold real numbers; got dtype {dtype}. Convert it with "
            f"np.asarray({name}, dtype=float) first."
        )
    if np.issubdtype(dtype, np.complexfloating):
        raise ValueError(f"{name} must be real-valued; got complex dtype {dtype}.")
    if len(shape) != 2:
        raise ValueError(
            f"{name} must be 2-D with shape (N, D), one row per data point; got shape {shape}."
            + (" Use Y.reshape(1, -1) for a single data point." if len(shape) == 1 else "")
        )
    if shape[1] == 0:
        raise ValueError(f"{name} has no columns (shape {shape}); D must be at least 1.")


def _n_rows(Y: Any) -> int:
    """Rows of Y for numbering, 0 for anything without a length (checked properly later)."""
    try:
        return len(Y)
    except TypeError:
        return 0


def _check_local(
    Y: Any, *, dtype: Any, n_features: int | None, name: str, row_offset: int = 0
) -> np.ndarray:
    if isinstance(Y, (str, bytes)) or Y is None:
        raise ValueError(
            f"{name} must be a 2-D numeric array of shape (N, D); got {type(Y).__name__}."
        )
    if type(Y).__module__.startswith("scipy.sparse"):
        raise ValueError(
            f"{name} is a scipy.sparse matrix; sparse input is not supported (the models work "
            f"on dense rows): pass {name}.toarray()."
        )
    try:
        arr = np.asarray(Y)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} could not be converted to a numeric array: {exc}") from None
    _check_kind(arr.dtype, arr.shape, name)
    if dtype is None:
        dtype = arr.dtype if arr.dtype in (np.float32, np.float64) else np.float64
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(
            f"{name} contains NaN or infinity (first at row {bad[0] + row_offset}, "
            f"column {bad[1]}); "
            "remove or impute those values before fitting."
        )
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(
            f"{name} has {arr.shape[1]} features (columns) but the model was fitted with "
            f"{n_features}."
        )
    return arr


# -- memory ----------------------------------------------------------------------------------

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "kib": 2**10,
    "m": 10**6,
    "mb": 10**6,
    "mib": 2**20,
    "g": 10**9,
    "gb": 10**9,
    "gib": 2**30,
    "t": 10**12,
    "tb": 10**12,
    "tib": 2**40,
}


def parse_memory(value: Any) -> int | None:
    """A memory size in bytes from an int/float of bytes or a string such as ``"8 GiB"``.

    Returns None for None. Raises ValueError for anything else.
    """
    if value is None:
        return None
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if np.isfinite(value) and value > 0:
            return int(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        number = text.rstrip("kmgtib")
        unit = text[len(number) :]
        try:
            amount = float(number)
        except ValueError:
            amount = -1.0
        if unit in _UNITS and np.isfinite(amount) and amount > 0:
            return int(amount * _UNITS[unit])
    raise ValueError(
        f"max_memory must be a number of bytes > 0 or a string such as '8GB' or '512 MiB'; "
        f"got {value!r}."
    )


def is_memory_size(value: Any) -> bool:
    """None, a number of bytes > 0 or a string such as '8GB'"""
    try:
        parse_memory(value)
    except ValueError:
        return False
    return True


def format_bytes(n: float) -> str:
    """``1234567`` -> ``"1.2 MB"`` (decimal units)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} PB"  # pragma: no cover


def available_memory() -> int | None:
    """Memory available to a new allocation on this machine, in bytes (None if unknown).

    Reads ``MemAvailable`` from /proc/meminfo (Linux), else the free physical pages.
    """
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(
    owner: str, needs: dict[str, float], *, max_memory: Any = None, advice: str = ""
) -> int:
    """Refuse a request whose estimated memory exceeds the limit, before anything is allocated.

    Parameters
    ----------
    owner : str
        What asks (named in the message), e.g. ``"BSC"`` or ``"bars(n_samples=...)"``.
    needs : dict of str to float
        Estimated bytes per item (e.g. ``{"state table": ..., "E-step batch": ...}``).
        Python ints are accepted, so sizes beyond 2**63 are compared exactly.
    max_memory : int, str or None
        The limit (see :func:`parse_memory`); None: the memory available on this machine.
    advice : str
        What to lower, appended to the message.

    Returns
    -------
    int
        The estimate in bytes.

    Raises
    ------
    ValueError
        When the estimate exceeds the limit; the message gives the estimate and its parts.
    """
    total = int(sum(int(v) for v in needs.values()))
    limit = parse_memory(max_memory)
    source = f"max_memory={max_memory!r}"
    if limit is None:
        limit, source = available_memory(), "available on this machine"
    if limit is None or total <= limit:
        return total
    parts = ", ".join(f"{name} {format_bytes(v)}" for name, v in needs.items() if v)
    raise ValueError(
        f"{owner} would need about {format_bytes(total)} of memory ({parts}), more than the "
        f"{format_bytes(limit)} {source}; nothing was allocated." + (f" {advice}" if advice else "")
    )
