"""Data sources: one rank's rows of a data set, read batch by batch.

A :class:`DataSource` hides where the rows live. An in-memory array, a NumPy memory map
(``np.load(path, mmap_mode="r")`` or ``np.memmap``) and an HDF5 dataset look the same: each
has ``n_rows`` (this rank's rows), ``n_features`` (D) and ``dtype`` (the floating dtype the
rows are returned in), and is read by

- :meth:`DataSource.read` — a contiguous block of local rows ``[start, stop)``;
- :meth:`DataSource.batches` — the local rows (or a range of them) block by block;
- :meth:`DataSource.take` — given local rows (e.g. the rows of a mini-batch);
- :meth:`DataSource.sample` — a bounded random sample of local rows (initialisation).

Every read returns at most the rows asked for, converted to ``dtype`` batch by batch, so a
fit over a source holds O(batch_size · D) of data whatever N is. Reads of a read-only memory
map hand the file pages they touched back to the operating system, so that the resident
memory of a pass stays bounded too. Row numbers are *local* (0 .. n_rows-1); under MPI a
row's global index is this rank's offset (an exclusive scan of ``n_rows``) plus its local
index.

A source also speaks enough of the array protocol for code written against arrays:
``len(source)``, ``source.shape``, ``source.ndim``, ``source[a:b]`` (contiguous rows) and
``source[index_array]`` (any local rows). Converting a whole source into an array
(``np.asarray(source)``) raises ``TypeError``: a source is never copied whole by accident.

Examples
--------
>>> import numpy as np
>>> from prosper.io.sources import as_source
>>> src = as_source(np.arange(12.0).reshape(6, 2))
>>> src.n_rows, src.n_features, src.dtype
(6, 2, dtype('float64'))
>>> [rows for rows, _ in src.batches(4)]
[slice(0, 4, None), slice(4, 6, None)]
>>> src.take(np.array([1, 5]))
array([[ 2.,  3.],
       [10., 11.]])
"""

from __future__ import annotations

import copy
import mmap
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from prosper.exceptions import ConfigError

__all__ = [
    "ArraySource",
    "DataSource",
    "HDF5Source",
    "as_source",
    "dataset_shape",
    "is_streamable",
    "load_array",
    "open_source",
    "read_rows",
]

_NPY = (".npy",)
_NPZ = (".npz",)
_HDF5 = (".h5", ".hdf5", ".he5", ".hdf")


def _float_dtype(stored: np.dtype, dtype: Any) -> np.dtype:
    """The dtype rows are returned in: ``dtype`` if given, else float32/float64 kept and
    anything else read as float64."""
    if dtype is not None:
        return np.dtype(dtype)
    stored = np.dtype(stored)
    return stored if stored in (np.float32, np.float64) else np.dtype(np.float64)


def _as_rows(rows: Any, n: int) -> np.ndarray:
    rows = np.asarray(rows)
    if rows.dtype == bool:
        raise TypeError("select rows of a DataSource by integer index, not by a boolean mask.")
    rows = rows.astype(np.intp, copy=False).reshape(-1)
    if rows.size and (rows.min() < -n or rows.max() >= n):
        raise IndexError(f"row index out of range for a source of {n} rows.")
    return np.where(rows < 0, rows + n, rows)


class DataSource(ABC):
    """This rank's rows of a data set, read block by block (the interface).

    Subclasses implement :meth:`_read` (contiguous rows, stored dtype) and :meth:`_take`
    (sorted unique rows, stored dtype); conversion to ``dtype`` happens here, one block at a
    time.

    Attributes
    ----------
    n_rows : int
        Number of local rows.
    n_features : int
        Number of columns D.
    dtype : numpy.dtype
        Floating dtype of the returned rows (float32 data stay float32 unless a dtype is
        asked for; integer data are read as float64).
    stored_dtype : numpy.dtype
        Dtype of the underlying storage.
    local_sums : ndarray of shape (2,) or None
        Σ y and Σ y² (float64) of the rows in ``dtype``, kept by the finiteness check of
        :func:`prosper.utils.validation.check_source`, so that the data checksum of a result
        file needs no pass over the data of its own; None until then.
    """

    n_rows: int
    n_features: int
    dtype: np.dtype
    stored_dtype: np.dtype
    local_sums: np.ndarray | None = None

    # -- what a subclass provides ------------------------------------------------------------
    @abstractmethod
    def _read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` (0 <= start <= stop <= n_rows) in the stored dtype."""

    @abstractmethod
    def _take(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (sorted, unique, in range) in the stored dtype."""

    def close(self) -> None:  # noqa: B027 (optional hook: most sources hold no file)
        """Release files this source opened itself (a no-op for arrays)."""

    def with_dtype(self, dtype: Any) -> DataSource:
        """The same rows returned in ``dtype`` (``self`` if that is already its dtype; else
        a shallow copy sharing the storage, which :meth:`close` of the original releases)."""
        dtype = np.dtype(dtype)
        if dtype == self.dtype:
            return self
        other = copy.copy(self)
        other.dtype = dtype
        other.local_sums = None  # sums of the rows in the other dtype
        if hasattr(other, "_owns_file"):
            other._owns_file = False
        return other

    # -- the interface -----------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        """``(n_rows, n_features)``."""
        return (self.n_rows, self.n_features)

    @property
    def ndim(self) -> int:
        return 2

    def __len__(self) -> int:
        return self.n_rows

    def _convert(self, block: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(block, dtype=self.dtype)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Local rows ``[start, stop)``.

        Parameters
        ----------
        start, stop : int
            Clipped to ``[0, n_rows]`` like a slice.

        Returns
        -------
        ndarray of shape (stop - start, n_features)
            C-contiguous, in ``dtype``. It may be a read-only view of an in-memory array:
            never write into it.
        """
        start, stop, _ = slice(start, stop).indices(self.n_rows)
        return self._convert(self._read(start, max(start, stop)))

    def batches(
        self, batch_size: int, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[slice, np.ndarray]]:
        """Local rows ``[start, stop)`` in consecutive blocks of at most ``batch_size`` rows.

        Yields
        ------
        rows : slice
            Local rows of the block.
        block : ndarray of shape (rows.stop - rows.start, n_features)
            As returned by :meth:`read`.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1; got {batch_size}.")
        start, stop, _ = slice(start, stop).indices(self.n_rows)
        for lo in range(start, stop, batch_size):
            hi = min(lo + batch_size, stop)
            yield slice(lo, hi), self.read(lo, hi)

    def take(self, rows: Any) -> np.ndarray:
        """Given local rows, in the order given (repeats allowed).

        Parameters
        ----------
        rows : array-like of int, shape (n,)
            Local row indices (negative ones count from the end). Sorted unique indices are
            read fastest (e.g. the rows of a mini-batch this rank holds).

        Returns
        -------
        ndarray of shape (n, n_features)
            A new array in ``dtype``.
        """
        rows = _as_rows(rows, self.n_rows)
        if rows.size == 0:
            return np.empty((0, self.n_features), dtype=self.dtype)
        if rows.size == 1 or bool(np.all(rows[1:] > rows[:-1])):
            return self._convert(self._take(rows))
        unique, inverse = np.unique(rows, return_inverse=True)
        return self._convert(self._take(unique))[inverse]

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A random sample of at most ``n`` distinct local rows (bounded by ``n``, not N).

        Returns
        -------
        rows : ndarray of int, shape (m,)
            Sorted local indices, m = min(n, n_rows).
        block : ndarray of shape (m, n_features)
        """
        m = min(int(n), self.n_rows)
        rows = np.sort(rng.choice(self.n_rows, size=m, replace=False))
        return rows, self.take(rows)

    # -- array-like access -------------------------------------------------------------------
    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            if key.step not in (None, 1):
                return self.take(np.arange(self.n_rows)[key])
            return self.read(key.start, key.stop)
        if isinstance(key, (int, np.integer)):
            return self.take(np.array([key]))[0]
        if isinstance(key, tuple):
            raise TypeError(
                "a DataSource is indexed by rows only (source[a:b] or source[rows]); "
                "select columns on the returned block."
            )
        return self.take(key)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise TypeError(
            f"{type(self).__name__} is read block by block (read, batches, take); it is never "
            "converted to one array. Use source.read(0, len(source)) if you really want all "
            "rows in memory."
        )

    def __enter__(self) -> DataSource:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(n_rows={self.n_rows}, n_features={self.n_features}, dtype={self.dtype})"


def _mmap_of(array: np.ndarray) -> mmap.mmap | None:
    """The shared, read-only (or read-write) file mapping behind a memmap, if pages can be
    released safely (never a copy-on-write map: dropping its pages would lose writes)."""
    if not isinstance(array, np.memmap) or getattr(array, "mode", "c") not in ("r", "r+"):
        return None
    mm = getattr(array, "_mmap", None)
    if not isinstance(mm, mmap.mmap) or not hasattr(mmap, "MADV_DONTNEED"):
        return None
    return mm


class ArraySource(DataSource):
    """An in-memory array or a NumPy memory map as a :class:`DataSource`.

    Parameters
    ----------
    array : ndarray or numpy.memmap of shape (n_rows, n_features)
        Kept by reference (no copy). Blocks of a C-contiguous array in ``dtype`` are views.
    dtype : dtype or None
        Dtype of the returned rows; None keeps float32/float64 and reads others as float64.

    Notes
    -----
    For a memory map opened read-only (``mode="r"``, as ``np.load(..., mmap_mode="r")``) or
    ``"r+"``, every read copies the rows out and then tells the kernel that this process no
    longer needs the file pages it touched (``madvise(MADV_DONTNEED)``): the pages stay in
    the page cache, but a pass over a large file no longer grows the resident memory of the
    process by the file's size.
    """

    def __init__(self, array: np.ndarray, dtype: Any = None) -> None:
        if array.ndim != 2:
            raise ValueError(f"a data source needs a 2-D array (N, D); got shape {array.shape}.")
        self._array = array
        self.n_rows, self.n_features = (int(s) for s in array.shape)
        self.stored_dtype = array.dtype
        self.dtype = _float_dtype(array.dtype, dtype)
        self._mmap = _mmap_of(array)
        self._mmap_start = 0
        if self._mmap is not None:
            probe = np.frombuffer(self._mmap, dtype=np.uint8, count=1)
            self._mmap_start = probe.ctypes.data
            del probe  # an exported buffer would keep the map from being closed

    @property
    def array(self) -> np.ndarray:
        """The wrapped array (a memory map stays one)."""
        return self._array

    def _release(self, view: np.ndarray) -> None:
        """Drop the process's pages of the mapped bytes behind ``view``."""
        if self._mmap is None or view.size == 0:
            return
        low, high = np.lib.array_utils.byte_bounds(view)
        page = mmap.PAGESIZE
        start = ((low - self._mmap_start) // page) * page
        stop = min(high - self._mmap_start, len(self._mmap))
        if stop > start >= 0:
            self._mmap.madvise(mmap.MADV_DONTNEED, start, stop - start)

    def _read(self, start: int, stop: int) -> np.ndarray:
        view = self._array[start:stop]
        if self._mmap is None:
            return np.asarray(view)
        block = np.array(view, dtype=self.dtype)  # copy out, then drop the pages
        self._release(view)
        return block

    def _take(self, rows: np.ndarray) -> np.ndarray:
        block = np.asarray(self._array[rows])
        self._release(self._array[int(rows[0]) : int(rows[-1]) + 1])
        return block


class HDF5Source(DataSource):
    """Rows of an HDF5 dataset, read as hyperslabs (never the whole dataset).

    Parameters
    ----------
    dataset : h5py.Dataset
        A 2-D dataset (N, D); the file must stay open while the source is used.
    rows : slice or None
        The rows of the dataset that belong to this source (e.g. this rank's block from
        :func:`prosper.parallel.row_block`); None: all rows.
    dtype : dtype or None
        As for :class:`ArraySource`.
    owns_file : bool, default=False
        Close the dataset's file in :meth:`close` (set when the source opened it).
    """

    #: contiguous reads serve :meth:`take` when the requested rows span at most this many
    #: times as many rows as requested (otherwise one HDF5 point selection is used)
    span_factor = 4

    def __init__(
        self,
        dataset: h5py.Dataset,
        rows: slice | None = None,
        dtype: Any = None,
        *,
        owns_file: bool = False,
    ) -> None:
        if dataset.ndim != 2:
            raise ValueError(
                f"HDF5 dataset {dataset.name!r} must be 2-D (N, D); got shape {dataset.shape}."
            )
        start, stop, step = (rows or slice(None)).indices(dataset.shape[0])
        if step != 1:
            raise ValueError("the rows of an HDF5 source must be a contiguous slice (step 1).")
        self._ds = dataset
        self._lo = start
        self.n_rows = max(0, stop - start)
        self.n_features = int(dataset.shape[1])
        self.stored_dtype = dataset.dtype
        self.dtype = _float_dtype(dataset.dtype, dtype)
        self._owns_file = owns_file

    @property
    def dataset(self) -> h5py.Dataset:
        return self._ds

    def _read(self, start: int, stop: int) -> np.ndarray:
        if stop <= start:
            return np.empty((0, self.n_features), dtype=self.stored_dtype)
        return self._ds[self._lo + start : self._lo + stop]

    def _take(self, rows: np.ndarray) -> np.ndarray:
        first, last = int(rows[0]), int(rows[-1]) + 1
        if last - first <= self.span_factor * rows.size:
            return self._read(first, last)[rows - first]
        return self._ds[rows + self._lo]

    def close(self) -> None:
        if self._owns_file:
            self._ds.file.close()


def is_streamable(Y: Any) -> bool:
    """Whether ``Y`` is read block by block by ``fit`` without first being loaded whole:
    a :class:`DataSource`, an ``h5py.Dataset`` or a ``numpy.memmap``."""
    return isinstance(Y, (DataSource, h5py.Dataset, np.memmap))


def as_source(Y: Any, dtype: Any = None) -> DataSource:
    """Wrap data in a :class:`DataSource` without copying it.

    Parameters
    ----------
    Y : DataSource, h5py.Dataset, numpy.memmap or array-like of shape (N, D)
        A source is returned as it is when ``dtype`` is None or already its dtype; an h5py
        Dataset is read rows by rows; arrays (memmaps included) are kept by reference.
    dtype : dtype or None
        Dtype of the rows the source returns.

    Returns
    -------
    DataSource
    """
    if isinstance(Y, DataSource):
        return Y if dtype is None else Y.with_dtype(dtype)
    if isinstance(Y, h5py.Dataset):
        return HDF5Source(Y, dtype=dtype)
    return ArraySource(Y if isinstance(Y, np.ndarray) else np.asarray(Y), dtype=dtype)


# -- files -----------------------------------------------------------------------------------
def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in _NPY:
        return "npy"
    if suffix in _NPZ:
        return "npz"
    if suffix in _HDF5:
        return "hdf5"
    raise ConfigError(
        f"data file {str(path)!r}: unknown format {suffix!r}; use .npy, .npz or .h5/.hdf5."
    )


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise ConfigError(f"data file {str(path)!r} does not exist.")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"data file {str(path)!r} is not readable.")


def dataset_shape(path: str | os.PathLike, dataset: str | None = None) -> tuple[int, ...]:
    """Shape of the array stored in ``path`` (``dataset`` names it in HDF5/npz files)."""
    path = Path(path)
    _check_exists(path)
    kind = _kind(path)
    try:
        if kind == "npy":
            return tuple(np.load(path, mmap_mode="r").shape)
        if kind == "npz":
            with np.load(path) as archive:
                return tuple(_npz_member(archive, path, dataset).shape)
        with h5py.File(path, "r") as f:
            return tuple(_h5_member(f, path, dataset).shape)
    except (OSError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"data file {str(path)!r} could not be read: {exc}") from None


def _npz_member(archive: Any, path: Path, dataset: str | None) -> np.ndarray:
    names = list(archive.files)
    name = dataset or (names[0] if len(names) == 1 else "Y")
    if name not in names:
        raise ConfigError(f"data file {str(path)!r} has no array {name!r}; it holds {names}.")
    return archive[name]


def _h5_member(f: h5py.File, path: Path, dataset: str | None) -> h5py.Dataset:
    name = dataset or "Y"
    if name not in f or not isinstance(f[name], h5py.Dataset):
        found: list[str] = []
        f.visititems(lambda n, o: found.append(n) if isinstance(o, h5py.Dataset) else None)
        raise ConfigError(
            f"data file {str(path)!r} has no dataset {name!r}; its datasets are {found}."
        )
    return f[name]


def open_source(
    path: str | os.PathLike,
    dataset: str | None = None,
    rows: slice | None = None,
    dtype: Any = None,
) -> DataSource:
    """A :class:`DataSource` over rows ``rows`` of the 2-D array in a file.

    Parameters
    ----------
    path : str or path-like
        ``.npy`` (memory-mapped), ``.h5``/``.hdf5`` (hyperslab reads) or ``.npz``
        (compressed: the selected rows are loaded into memory).
    dataset : str or None
        Dataset name in HDF5 files (default ``"Y"``) or array name in .npz files.
    rows : slice or None
        Rows of the file that belong to the source (this rank's block); None: all.
    dtype : dtype or None
        Dtype of the returned rows (None keeps float32/float64).

    Returns
    -------
    DataSource
        Close it (or use it as a context manager) to close an HDF5 file.

    Raises
    ------
    prosper.ConfigError
        The file is missing, unreadable, of an unknown kind, lacks the dataset or does not
        hold a 2-D array.
    """
    path = Path(path)
    _check_exists(path)
    kind = _kind(path)
    rows = rows or slice(None)
    try:
        if kind == "npy":
            array = np.load(path, mmap_mode="r")
        elif kind == "npz":
            with np.load(path) as archive:
                array = np.array(_npz_member(archive, path, dataset)[rows])
            rows = slice(None)
        else:
            f = h5py.File(path, "r")
            try:
                ds = _h5_member(f, path, dataset)
                if ds.ndim != 2:
                    raise ConfigError(
                        f"data in {str(path)!r} must be 2-D (N, D); got shape {ds.shape}."
                    )
                return HDF5Source(ds, rows, dtype, owns_file=True)
            except BaseException:
                f.close()
                raise
    except (OSError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"data file {str(path)!r} could not be read: {exc}") from None
    if array.ndim != 2:
        raise ConfigError(f"data in {str(path)!r} must be 2-D (N, D); got shape {array.shape}.")
    return ArraySource(array[rows], dtype)


def read_rows(path: str | os.PathLike, rows: slice, dataset: str | None = None) -> np.ndarray:
    """Read rows ``rows`` of an array from a .npy, .npz or HDF5 file into memory.

    Only the requested rows are read from .npy (memory map) and HDF5 (hyperslab) files;
    .npz archives are compressed and must be read whole. To stream rows instead, use
    :func:`open_source`.
    """
    path = Path(path)
    _check_exists(path)
    kind = _kind(path)
    try:
        if kind == "npy":
            return np.array(np.load(path, mmap_mode="r")[rows])
        if kind == "npz":
            with np.load(path) as archive:
                return np.array(_npz_member(archive, path, dataset)[rows])
        with h5py.File(path, "r") as f:
            return _h5_member(f, path, dataset)[rows]
    except (OSError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"data file {str(path)!r} could not be read: {exc}") from None


def load_array(path: str | os.PathLike, dataset: str | None = None) -> np.ndarray:
    """Read a whole array (e.g. a dictionary factor) from a .npy, .npz or HDF5 file."""
    return read_rows(path, slice(None), dataset)
