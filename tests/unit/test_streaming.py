"""Fitting streams the data: batch by batch from memory maps, HDF5 datasets and sources."""

import tracemalloc

import h5py
import numpy as np
import pytest

from prosper import BSC, SBL, SparseCoding
from prosper.io.sources import ArraySource, DataSource, as_source


class SpySource(ArraySource):
    """An ArraySource that records every block it hands out."""

    def __init__(self, array, dtype=None):
        super().__init__(array, dtype)
        self.reads: list[tuple[int, np.dtype]] = []

    def _convert(self, block):
        out = super()._convert(block)
        self.reads.append((out.shape[0], out.dtype))
        return out


def _data(n=600, d=8, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((d, 4)) * 2
    S = rng.random((n, 4)) < 0.3
    return (S @ W.T + 0.3 * rng.standard_normal((n, d))).astype(np.float32)


def _bsc(**kw):
    return BSC(H=4, n_iter=3, batch_size=100, backend="numpy", random_state=3, **kw)


def test_fit_reads_batches_in_the_data_dtype():
    """Every read is at most one batch, float32 stays float32, no other access; with ET data
    selection cutting points (gamma < H), their rows are read again, also by batches."""
    Y = _data()
    spy = SpySource(Y)
    model = _bsc(dtype="float32", ncut_factor=[[0.0, 0.5]], gamma=2).fit(spy)
    assert np.all(model.history_["n_cut"][1:] < 600)
    assert spy.reads, "the fit read nothing through the source"
    assert max(n for n, _ in spy.reads) <= 100
    assert {dt for _, dt in spy.reads} == {np.dtype(np.float32)}
    # the cut points' rows: reads that are not whole batches of 100
    assert any(n % 100 for n, _ in spy.reads)
    reference = _bsc(dtype="float32", ncut_factor=[[0.0, 0.5]], gamma=2).fit(Y)
    np.testing.assert_array_equal(model.W_, reference.W_)
    np.testing.assert_array_equal(model.free_energy_, reference.free_energy_)


def test_float64_fit_converts_block_by_block():
    spy = SpySource(_data())
    _bsc(dtype="float64").fit(spy)
    assert {dt for _, dt in spy.reads} == {np.dtype(np.float64)}
    assert max(n for n, _ in spy.reads) <= 100


def test_memmap_hdf5_and_array_fit_alike(tmp_path):
    Y = _data()
    np.save(tmp_path / "y.npy", Y)
    with h5py.File(tmp_path / "y.h5", "w") as f:
        f.create_dataset("Y", data=Y, chunks=(50, Y.shape[1]))
    reference = _bsc().fit(Y)
    from_memmap = _bsc().fit(np.load(tmp_path / "y.npy", mmap_mode="r"))
    with h5py.File(tmp_path / "y.h5", "r") as f:
        from_hdf5 = _bsc().fit(f["Y"])
    for model in (from_memmap, from_hdf5):
        np.testing.assert_array_equal(model.W_, reference.W_)
        np.testing.assert_array_equal(model.free_energy_, reference.free_energy_)


def test_sparse_coding_and_sbl_take_sources():
    Y = _data(200)
    reference = SparseCoding(H=4, n_iter=2, batch_size=50, random_state=0).fit(Y)
    streamed = SparseCoding(H=4, n_iter=2, batch_size=50, random_state=0).fit(SpySource(Y))
    np.testing.assert_allclose(streamed.W_, reference.W_, rtol=1e-6, atol=1e-8)
    rng = np.random.default_rng(1)
    A = rng.standard_normal((8, 12))
    X = np.zeros((40, 12))
    X[:, [2, 7]] = rng.standard_normal((40, 2))
    snapshots = X @ A.T
    spy = SpySource(snapshots)
    sbl = SBL(dictionary=A, n_iter=5, batch_size=16).fit(spy)
    ref = SBL(dictionary=A, n_iter=5, batch_size=16).fit(snapshots)
    np.testing.assert_allclose(sbl.coef_, ref.coef_, rtol=1e-10, atol=1e-12)
    assert max(n for n, _ in spy.reads) <= 16


def test_the_result_files_checksum_costs_no_pass_of_its_own(tmp_path):
    """The finiteness check keeps Σ y and Σ y² of its pass; the checksum stored for
    ``--resume`` reuses them: a fit with a result file reads no more rows than one without,
    and the stored checksum is the data's."""
    Y = _data(300)
    counts = {}
    for name, out in (("without", None), ("with", tmp_path / "run.h5")):
        spy = SpySource(Y)
        SparseCoding(H=4, n_iter=1, batch_size=50, random_state=0).fit(spy, out=out)
        counts[name] = sum(n for n, _ in spy.reads)
    assert counts["with"] == counts["without"]
    with h5py.File(tmp_path / "run.h5", "r") as f:
        stored = np.asarray(f.attrs["data_checksum"])
    Y64 = Y.astype(np.float64)
    np.testing.assert_allclose(stored, [Y64.sum(), (Y64**2).sum()], rtol=1e-12)
    # an infinite Σ y² of finite float64 values (overflow) is not mistaken for bad data
    from prosper.utils.validation import check_source

    sums = check_source(np.full((4, 2), 1e200)).local_sums
    assert sums[0] == 8e200 and sums[1] == np.inf


def test_bad_values_in_a_streamed_file_are_found_before_fitting(tmp_path):
    Y = _data()
    Y[437, 5] = np.nan
    np.save(tmp_path / "y.npy", Y)
    with pytest.raises(ValueError, match=r"NaN or infinity \(first at row 437, column 5\)"):
        _bsc().fit(np.load(tmp_path / "y.npy", mmap_mode="r"))
    with pytest.raises(ValueError, match="3 features"):
        _bsc().fit(_data()).transform(as_source(np.zeros((5, 3))))


def test_a_source_is_not_loaded_by_inference(tmp_path):
    """transform/score on a memory map read it through a source, not as one array."""
    Y = _data()
    model = _bsc().fit(Y)
    np.save(tmp_path / "y.npy", Y)
    mm = np.load(tmp_path / "y.npy", mmap_mode="r")
    np.testing.assert_array_equal(model.transform(mm), model.transform(Y))
    assert model.score(mm) == pytest.approx(model.score(Y))
    assert isinstance(as_source(mm), DataSource)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fit_holds_a_few_batches_of_a_large_memmap(tmp_path, dtype):
    """tracemalloc sees every NumPy allocation: a full copy of the data (a converted, centred
    or validated copy) would exceed a quarter of the data's size many times over."""
    n, d = 50_000, 64
    mm = np.lib.format.open_memmap(tmp_path / "big.npy", "w+", np.float32, (n, d))
    rng = np.random.default_rng(0)
    for start in range(0, n, 10_000):
        mm[start : start + 10_000] = rng.standard_normal((10_000, d))
    mm.flush()
    del mm
    Y = np.load(tmp_path / "big.npy", mmap_mode="r")
    model = BSC(H=4, n_iter=2, batch_size=500, backend="numpy", random_state=0, dtype=dtype)
    # ET data selection cutting points (gamma < H): the cut rows are read a second time
    model.set_params(ncut_factor=[[0.0, 0.5]], gamma=2)
    tracemalloc.start()
    try:
        model.fit(Y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert model.history_["n_cut"][-1] < n
    # batches of 500 rows are 128-256 kB; per-row state (log marginals, selection) 0.6 MB
    assert peak < Y.nbytes / 4, f"peak {peak / 1e6:.1f} MB for {Y.nbytes / 1e6:.1f} MB of data"


def test_cli_opens_data_files_as_sources(tmp_path):
    """`prosper fit` hands the fit a source over the rank's rows, not the rows themselves."""
    from prosper.cli import _load_data
    from prosper.io.config import read_config
    from prosper.parallel import get_comm

    Y = _data(40)
    with h5py.File(tmp_path / "y.h5", "w") as f:
        f["Y"] = Y
    np.save(tmp_path / "y.npy", Y)
    for name in ("y.h5", "y.npy"):
        job = tmp_path / "job.toml"
        job.write_text(f'[model]\nname = "bsc"\nH = 2\n[data]\nfile = "{name}"\n')
        source, truth = _load_data(read_config(job, []), get_comm())
        with source:
            assert isinstance(source, DataSource) and truth is None
            assert source.shape == Y.shape and source.dtype == np.float32
            np.testing.assert_array_equal(source.read(0, 40), Y)
