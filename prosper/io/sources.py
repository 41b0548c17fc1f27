"""Data sources read rank-locally: each rank reads only its own block of rows."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from prosper.exceptions import ConfigError

__all__ = ["dataset_shape", "load_array", "read_rows"]

_NPY = (".npy",)
_NPZ = (".npz",)
_HDF5 = (".h5", ".hdf5", ".he5", ".hdf")


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


def read_rows(path: str | os.PathLike, rows: slice, dataset: str | None = None) -> np.ndarray:
    """Read rows ``rows`` of a 2-D array from a .npy, .npz or HDF5 file.

    Only the requested rows are read from .npy (memory map) and HDF5 (hyperslab) files, so
    no rank holds a full copy; .npz archives are compressed and must be read whole.
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
