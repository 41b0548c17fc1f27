"""DataSource: arrays, memory maps and HDF5 datasets read the same, block by block."""

import h5py
import numpy as np
import pytest

from prosper.exceptions import ConfigError
from prosper.io.sources import (
    ArraySource,
    DataSource,
    HDF5Source,
    as_source,
    is_streamable,
    open_source,
)

N, D = 53, 3


@pytest.fixture
def data():
    return np.random.default_rng(0).standard_normal((N, D)).astype(np.float32)


@pytest.fixture(params=["array", "memmap", "hdf5", "npy-file", "hdf5-file"])
def source(request, data, tmp_path):
    """The same rows behind every kind of source."""
    kind = request.param
    if kind == "array":
        yield as_source(data)
    elif kind == "memmap":
        np.save(tmp_path / "y.npy", data)
        yield as_source(np.load(tmp_path / "y.npy", mmap_mode="r"))
    elif kind == "hdf5":
        with h5py.File(tmp_path / "y.h5", "w") as f:
            f["Y"] = data
        with h5py.File(tmp_path / "y.h5", "r") as f:
            yield as_source(f["Y"])
    elif kind == "npy-file":
        np.save(tmp_path / "y.npy", data)
        yield open_source(tmp_path / "y.npy")
    else:
        with h5py.File(tmp_path / "y.h5", "w") as f:
            f["data"] = data
        with open_source(tmp_path / "y.h5", "data") as src:
            yield src


def test_every_kind_reads_the_same_rows(source, data):
    assert isinstance(source, DataSource)
    assert (source.n_rows, source.n_features, source.dtype) == (N, D, np.float32)
    assert source.shape == (N, D) and len(source) == N
    np.testing.assert_array_equal(source.read(10, 20), data[10:20])
    np.testing.assert_array_equal(source[-5:], data[-5:])
    blocks = list(source.batches(10))
    assert [b[0] for b in blocks][-1] == slice(50, 53)
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), data)
    part = list(source.batches(4, start=7, stop=15))
    assert [r for r, _ in part] == [slice(7, 11), slice(11, 15)]
    for rows in ([0, 1, 52], [3, 40], [5, 5, 2], [7]):
        np.testing.assert_array_equal(source.take(rows), data[rows])
        np.testing.assert_array_equal(source[np.array(rows)], data[rows])
    idx, block = source.sample(8, np.random.default_rng(1))
    assert idx.shape == (8,) and np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(block, data[idx])
    assert source.sample(1000, np.random.default_rng(1))[0].shape == (N,)


def test_dtype_conversion_is_per_block(source, data):
    wide = source.with_dtype(np.float64)
    assert wide.dtype == np.float64 and source.dtype == np.float32
    block = wide.read(0, 4)
    assert block.dtype == np.float64 and block.flags.c_contiguous
    np.testing.assert_array_equal(block, data[:4].astype(np.float64))


def test_a_source_is_never_converted_whole(source):
    with pytest.raises(TypeError, match="block by block"):
        np.asarray(source)
    with pytest.raises(TypeError, match="rows only"):
        source[0:2, 1]


def test_integer_data_are_read_as_float64():
    src = as_source(np.arange(6).reshape(3, 2))
    assert src.dtype == np.float64 and src.read(0, 3).dtype == np.float64


def test_rank_block_of_a_file(tmp_path, data):
    with h5py.File(tmp_path / "y.h5", "w") as f:
        f["Y"] = data
    np.save(tmp_path / "y.npy", data)
    for path in ("y.h5", "y.npy"):
        with open_source(tmp_path / path, rows=slice(20, 30)) as src:
            assert src.n_rows == 10
            np.testing.assert_array_equal(src.read(0, 10), data[20:30])
            np.testing.assert_array_equal(src.take([0, 9]), data[[20, 29]])


def test_scattered_hdf5_rows_use_a_point_selection(tmp_path, data):
    with h5py.File(tmp_path / "y.h5", "w") as f:
        f["Y"] = data
    with open_source(tmp_path / "y.h5", rows=slice(2, None)) as src:
        assert isinstance(src, HDF5Source)
        rows = [0, 50]  # spans 51 rows for 2 requested: not read as one block
        np.testing.assert_array_equal(src.take(rows), data[[2, 52]])


def test_memmap_reads_release_their_pages(tmp_path):
    """A pass over a read-only memory map leaves few of its pages resident."""
    big = np.lib.format.open_memmap(tmp_path / "big.npy", "w+", np.float64, (4096, 512))
    big[:] = 1.0
    big.flush()
    del big
    mm = np.load(tmp_path / "big.npy", mmap_mode="r")
    src = as_source(mm)
    assert isinstance(src, ArraySource) and src._mmap is not None
    for _, block in src.batches(256):
        assert block.sum() == block.size
    rss = _mapped_rss(mm)
    if rss is None:
        pytest.skip("needs /proc/self/smaps (Linux)")
    assert rss < 0.2 * mm.nbytes


def _mapped_rss(mm) -> int | None:
    """Bytes of ``mm``'s file mapping resident in this process (from /proc/self/smaps)."""
    try:
        with open("/proc/self/smaps") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    address = np.frombuffer(mm._mmap, dtype=np.uint8, count=1).ctypes.data
    inside = False
    for line in lines:
        head = line.split()[0]
        if "-" in head and ":" not in head:
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= address < hi
        elif inside and head == "Rss:":
            return int(line.split()[1]) * 1024
    return None


def test_streamable_kinds(tmp_path, data):
    np.save(tmp_path / "y.npy", data)
    assert is_streamable(np.load(tmp_path / "y.npy", mmap_mode="r"))
    assert is_streamable(as_source(data))
    assert not is_streamable(data)


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        open_source(tmp_path / "missing.h5")
    np.save(tmp_path / "flat.npy", np.zeros(4))
    with pytest.raises(ConfigError, match="2-D"):
        open_source(tmp_path / "flat.npy")
    with h5py.File(tmp_path / "y.h5", "w") as f:
        f["other"] = np.zeros((2, 2))
    with pytest.raises(ConfigError, match="no dataset 'Y'"):
        open_source(tmp_path / "y.h5")
