"""The CuPy backend's host-side code with NumPy standing in for CuPy and for its CUDA kernel.

No GPU has run the CuPy backend yet (tests/gpu does that where one is lent). Everything in
``prosper.backends.cupy_backend`` around the RawKernel (transfers, preselection, GEMMs,
gathers, statistics, the single device-to-host copy) is array code that runs unchanged on a
NumPy stand-in for ``cupy``; the kernel is replaced by a NumPy transcription of
``cuda/linear_estep.cu``. These tests therefore check the backend's bookkeeping against the
NumPy reference on every machine; the CUDA source itself is checked by nvcc and on a GPU.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

from prosper.backends import cupy_backend as cb
from prosper.backends import numpy_backend as ref
from tests.unit.test_backends import (
    FLOAT32_RTOL,
    VALUE_SETS,
    annealed_et_fits,
    assert_same,
    check_matches_numpy,
    cupy_estep,
    estep,
    make_problem,
)


class _DeviceArray(np.ndarray):
    """A host array with CuPy's transfer methods; counts the device-to-host copies."""

    copies = 0

    def get(self) -> np.ndarray:
        _DeviceArray.copies += 1
        return np.array(self)

    def set(self, host: np.ndarray) -> None:
        self[...] = host


def _dev(x):
    return np.asarray(x).view(_DeviceArray)


def _fake_cupy() -> types.SimpleNamespace:
    wrap = ("asarray", "ascontiguousarray", "empty", "ones", "concatenate", "take_along_axis")
    wrap += ("einsum", "diag", "arange", "zeros", "where", "ravel")
    fake = types.SimpleNamespace(**{name: _wrapped(getattr(np, name)) for name in wrap})
    fake.float64, fake.int64, fake.int32, fake.bool_, fake.ndarray = (
        np.float64,
        np.int64,
        np.int32,
        np.bool_,
        _DeviceArray,
    )
    fake.maximum = np.maximum
    fake.broadcast_to = _wrapped(np.broadcast_to)
    fake.add = types.SimpleNamespace(at=np.add.at)
    device = types.SimpleNamespace(id=0, use=lambda: None, mem_info=(16 << 30, 80 << 30))
    fake.get_default_memory_pool = lambda: types.SimpleNamespace(free_bytes=lambda: 0)
    fake.cuda = types.SimpleNamespace(
        Device=lambda *a: device,
        alloc_pinned_memory=bytearray,
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
    )
    return fake


def _wrapped(fn):
    return lambda *a, **k: _dev(fn(*a, **k))


def _posterior_kernel(grid, block, args):
    """NumPy transcription of ``prosper_linear_posterior`` (cuda/linear_estep.cu)."""
    WY, yy, diag, nz, err, lp, mask, B = args[:8]  # then H, V1, Kc: implied by the shapes
    c0, inv2s2, beta, prior_beta, acc, log_marginal, q = args[11:]
    assert grid == (int(B),) and block == (cb.BLOCK,)
    single = yy[:, None, None] - 2.0 * nz[None, :, None] * WY[:, None, :]
    single = single + (nz**2)[None, :, None] * diag[None, None, :]
    e = np.concatenate([yy[:, None], single.reshape(int(B), -1), yy[:, None] + err], axis=1)
    ll = c0 - e * inv2s2
    log_marginal[...] = ref.log_normalise(ll + lp)[0]
    if acc:
        q[...] = ref.log_normalise(beta * ll + prior_beta * lp)[1] * mask[:, None]


def _top_latents(scores, H, k, keep):
    """NumPy transcription of the ``prosper_top_latents`` elementwise kernel."""
    h = np.arange(int(H))
    beats = (scores[:, None, :] > scores[:, :, None]) | (
        (scores[:, None, :] == scores[:, :, None]) & (h[None, :] < h[:, None])
    )
    keep[...] = beats.sum(axis=2) < int(k)


def _compact_latents(keep, H, k, latents, count):
    """NumPy transcription of the ``prosper_compact_latents`` elementwise kernel."""
    count[...] = keep.sum(axis=1)
    for row in range(keep.shape[0]):
        kept = np.flatnonzero(keep[row])[: int(k)]
        latents[row] = 0
        latents[row, : kept.size] = kept


@pytest.fixture
def cupy_on_host(monkeypatch):
    monkeypatch.setattr(cb, "cp", _fake_cupy())
    monkeypatch.setattr(cb, "_posterior_kernel", _posterior_kernel)
    monkeypatch.setattr(cb, "_top_latents", _top_latents)
    monkeypatch.setattr(cb, "_compact_latents", _compact_latents)
    monkeypatch.setattr(cb, "_stage", cb._PinnedStage())
    cb._table_cache.clear()
    yield cb
    cb._table_cache.clear()


@pytest.fixture
def cupy_available(cupy_on_host, monkeypatch):
    """The stand-in CuPy backend as ``get_backend`` sees it on a GPU machine."""
    import prosper.backends as backends

    real = backends._try_import
    monkeypatch.setattr(cupy_on_host, "AVAILABLE", True)
    monkeypatch.setattr(backends, "_try_import", lambda n: cb if n == "cupy" else real(n))
    return cupy_on_host


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
@pytest.mark.parametrize("annealed", [False, True], ids=["beta1", "annealed"])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_host_side_matches_numpy(cupy_on_host, values, annealed, masked):
    check_matches_numpy(lambda p, **kw: cupy_estep(cupy_on_host, p, **kw), values, annealed, masked)


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_host_side_full_enumeration_and_float32(cupy_on_host, values):
    H = 6 if len(values) == 2 else 4
    p = make_problem(values, H=H, Hprime=H, gamma=H, D=10, B=40, seed=3)
    assert_same(estep(ref, p, beta=0.8), cupy_estep(cupy_on_host, p, beta=0.8), rtol=1e-10)
    p = make_problem(values, seed=5)
    expected = estep(ref, p, beta=0.5)
    assert_same(expected, cupy_estep(cupy_on_host, p, dtype=np.float32, beta=0.5), FLOAT32_RTOL)


@pytest.mark.parametrize("B", [0, 1, 300])
def test_host_side_batch_sizes_and_posterior_mean(cupy_on_host, B):
    p = make_problem(VALUE_SETS["ternary"], B=B, seed=7)
    if B:
        assert_same(estep(ref, p), cupy_estep(cupy_on_host, p), rtol=1e-10)
    args = [p[k] for k in ("Y", "W", "sigma2", "value_logp", "states", "presel")]
    expected = ref.linear_posterior_mean(*args)
    actual = cupy_on_host.linear_posterior_mean(*args)
    assert type(actual) is np.ndarray and actual.shape == expected.shape == (B, 12)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-10)


def test_host_side_bsc_fit_matches_numpy(cupy_available):
    """A short annealed ET fit with data selection through the estimator, backend='cupy'."""

    def reset_copies(name):
        _DeviceArray.copies = 0

    fits = annealed_et_fits(("numpy", "cupy"), before_each=reset_copies)
    # per batch the log marginals (the candidates are chosen on the device); the statistics
    # once per pass. Every iteration cuts a few points (at most SUBTRACT_CUT): one pass over
    # 3 batches (300 points in 128s) for the log marginals and the statistics of all points,
    # one over the cut points (1 batch) for theirs; after the last iteration the
    # degenerate-fit check's posterior-mean pass copies the log marginals (to check them)
    # and the means per batch
    assert _DeviceArray.copies == 5 * ((3 + 1) + (1 + 1)) + 2 * 3
    np.testing.assert_allclose(fits["cupy"].W_, fits["numpy"].W_, rtol=0, atol=1e-8)
    np.testing.assert_allclose(fits["cupy"].free_energy_, fits["numpy"].free_energy_, rtol=1e-10)
    assert np.ptp(fits["cupy"].free_energy_) > 0.1


def test_host_side_candidates_break_ties_as_the_host(cupy_on_host):
    check_candidates_match_host(cupy_on_host, np.asarray)


def check_candidates_match_host(module, to_device):
    """The device's H' best latents per point equal ExpectationTruncation.select's, also
    where scores tie across the H'-th place (integer-valued Wᵀy, many ties)."""
    from prosper.backends.linear_terms import preselection_scores
    from prosper.solvers.states import ExpectationTruncation

    rng = np.random.default_rng(0)
    states = ExpectationTruncation(12, 5, 3, (0.0, 1.0, -1.0))
    WY = rng.integers(-3, 4, size=(500, 12)).astype(np.float64)
    presel = (np.stack([np.ones(12), -np.ones(12)]), np.zeros((2, 12)))
    expected = states.select(preselection_scores(WY, presel), 500).I
    actual, count = module._candidates(states, to_device(WY), presel, 500)
    assert actual.dtype == np.int64
    np.testing.assert_array_equal(actual.get(), expected)
    np.testing.assert_array_equal(count.get(), 5)
    # a NaN score is kept and beats nothing: its row keeps 6 latents, the others 5
    WY[7, 3] = np.nan
    actual, count = module._candidates(states, to_device(WY), presel, 500)
    assert (count.get() > 5).tolist() == [row == 7 for row in range(500)]
    assert actual.get().min() >= 0 and actual.get().max() < 12


def check_nan_parameters_stop_the_estep(module):
    """A NaN in W (a diverged fit) raises in the E-step and in the posterior mean instead of
    flowing into the M-step."""
    p = make_problem(VALUE_SETS["binary"], B=50, seed=2)
    names = ("Y", "W", "sigma2", "value_logp", "states", "presel")
    # a NaN in W makes the log-joints NaN; a NaN preselection coefficient only the scores
    # (finite log-joints over an arbitrary candidate set, caught by the kept count)
    W = p["W"].copy()
    W[3, 1] = np.nan
    presel = tuple(c.copy() for c in p["presel"])
    presel[1][0, 1] = np.nan
    for bad in ({"W": W}, {"presel": presel}):
        args = [{**p, **bad}[k] for k in names]
        for accumulate in (True, False):
            with pytest.raises(FloatingPointError, match="non-finite"):
                module.linear_estep(*args, 1.0, 1.0, accumulate=accumulate)
        with pytest.raises(FloatingPointError, match="non-finite"):
            module.linear_posterior_mean(*args)


def test_host_side_nan_parameters_stop_the_estep(cupy_on_host):
    check_nan_parameters_stop_the_estep(cupy_on_host)


@pytest.mark.parametrize(("states", "chosen"), [("et", "cupy"), ("full", "cupy"), ("evo", "numba")])
def test_auto_on_a_gpu_machine_picks_a_compiled_search(cupy_available, states, chosen):
    # CuPy lists the NumPy reference's evolutionary search (run on the host): "auto" gives
    # evolutionary states numba's compiled one instead
    from prosper import BSC
    from prosper.backends import get_backend

    est = BSC(H=6, states=states, backend="auto")
    learner = est._make_learner(16, 0, get_backend("auto"))
    picked = learner.backend.NAME
    assert picked == chosen


def test_batch_size_none_gives_a_gpu_large_batches_and_the_cpu_1000(cupy_available, monkeypatch):
    """batch_size=None: the backend sizes the E-step batch where its kernels run it."""
    from prosper import BSC, GSC, TSC
    from prosper.backends import get_backend

    def resolved(est, name="cupy"):
        return est._make_learner(16, 0, get_backend(name)).batch_size

    for name in ("numpy", "numba"):
        assert resolved(BSC(H=6), name) == ref.BATCH_POINTS == 1000
    # the stand-in GPU has 16 GiB free: far more than 50000 points need
    assert resolved(BSC(H=6)) == resolved(BSC(H=6, backend="auto"), "auto") == 50000
    assert resolved(TSC(H=6, states="full")) == 50000
    # an explicit size stands; the search and GSC's E-step run on the host
    assert resolved(BSC(H=6, batch_size=300)) == 300
    assert resolved(BSC(H=6, states="evo")) == 1000
    assert resolved(GSC(H=6)) == 1000
    # a model without the backend's fused E-step runs the generic path on the host
    from tests.noisy_or import NoisyOR

    assert resolved(NoisyOR(H=6)) == 1000
    # a quarter of the free memory (the pool's cached blocks included) bounds it: room for
    # 3000 points of this E-step
    per_point = BSC(H=6)._et_bytes_per_point(16)
    pool = 1000 * per_point
    device = cupy_available.cp.cuda.Device()
    monkeypatch.setattr(device, "mem_info", (4 * 3000 * per_point - pool, 80 << 30))
    cached = types.SimpleNamespace(free_bytes=lambda: pool)
    monkeypatch.setattr(cupy_available.cp, "get_default_memory_pool", lambda: cached)
    assert resolved(BSC(H=6)) == 3000
    # never below the CPU's batch, whatever the memory says (a device that short of memory
    # fails with CuPy's OutOfMemoryError, a MemoryError: lower batch_size)
    monkeypatch.setattr(device, "mem_info", (10 * per_point, 80 << 30))
    assert resolved(BSC(H=6)) == 1000
    # the memory check counts the host's side of a GPU batch: the (B, D) block and its copy
    host_side = "GPU batch (host side)"
    assert BSC(H=6)._memory_needs(16, 70000)[host_side] == 2 * 50000 * 16 * 8
    assert host_side not in BSC(H=6, batch_size=300)._memory_needs(16, 70000)
