"""The numba E-step backend against the NumPy reference, and the backend registry."""

from __future__ import annotations

import numpy as np
import pytest

from prosper.backends import BACKENDS, available_backends, get_backend
from prosper.backends import numpy_backend as ref
from prosper.solvers.states import ExpectationTruncation

numba = pytest.importorskip("numba")
nb = pytest.importorskip("prosper.backends.numba_backend")
numba_math = pytest.importorskip("prosper.backends.numba_math")

#: float32 inputs: largest deviation from the float64 reference, relative to the largest
#: magnitude of each output (statistics are accumulated in float64 by every backend)
FLOAT32_RTOL = 2e-5

VALUE_SETS = {"binary": (0.0, 1.0), "ternary": (0.0, -1.0, 1.0), "discrete": (0.0, 1.0, 2.0, 3.0)}


def make_problem(values, *, H=12, Hprime=6, gamma=3, D=25, B=120, sigma=0.6, seed=0):
    """Data from the linear model with the given latent values, ET candidate states."""
    rng = np.random.default_rng(seed)
    values = np.asarray(values, dtype=np.float64)
    n_nz = values.size - 1
    prior = np.r_[0.8, np.full(n_nz, 0.2 / n_nz)]
    W = rng.standard_normal((D, H))
    S = values[rng.choice(values.size, size=(B, H), p=prior)]
    Y = S @ W.T + sigma * rng.standard_normal((B, D))
    # the discrete model's preselection: best singleton log-joint over the non-zero values
    nz, norms = values[1:], np.einsum("dh,dh->h", W, W)
    presel = (
        (nz / sigma**2)[:, None] * np.ones(H),
        -0.5 * (nz**2 / sigma**2)[:, None] * norms + np.log(prior[1:])[:, None],
    )
    return {
        "Y": Y,
        "W": W,
        "sigma2": sigma**2,
        "value_logp": np.log(prior),
        "states": ExpectationTruncation(H, Hprime, gamma, values),
        "presel": presel,
    }


def estep(module, p, *, dtype=np.float64, **kw):
    kw.setdefault("beta", 1.0)
    kw.setdefault("prior_beta", 1.0)
    return module.linear_estep(
        p["Y"].astype(dtype),
        p["W"].astype(dtype),
        p["sigma2"],
        p["value_logp"],
        p["states"],
        p["presel"],
        **kw,
    )


def annealed_et_fits(backends_to_compare, before_each=None):
    """Short annealed BSC fits with ET data selection on 4x4 bars, one per backend name.

    ``before_each(name)`` runs before each fit (e.g. to reset a counter).
    """
    from prosper import BSC
    from prosper.data import bars

    data = bars(size=4, n_samples=300, pi=0.2, amplitude=5.0, sigma=0.5, random_state=0)
    kw = {
        "H": 8,
        "Hprime": 6,
        "gamma": 3,
        "n_iter": 5,
        "batch_size": 128,
        "random_state": 1,
        "temperature": [[0, 2.0], [1.0, 1.0]],
        "ncut_factor": [[0, 0.5], [1.0, 1.0]],
        "progress": False,
    }
    fits = {}
    for name in backends_to_compare:
        if before_each is not None:
            before_each(name)
        fits[name] = BSC(backend=name, **kw).fit(data.Y)
    return fits


def assert_same(expected, actual, rtol):
    """log marginals and statistics agree to ``rtol`` relative to each output's magnitude."""
    lm_ref, st_ref = expected
    lm, st = actual
    assert lm.shape == lm_ref.shape
    np.testing.assert_allclose(lm, lm_ref, rtol=0, atol=rtol * np.abs(lm_ref).max())
    if st_ref is None:
        assert st is None
        return
    assert set(st) == set(st_ref)
    for key, value in st_ref.items():
        assert st[key].shape == np.shape(value), key
        assert st[key].dtype == np.float64, key
        scale = max(np.abs(value).max(), 1.0)
        np.testing.assert_allclose(st[key], value, rtol=0, atol=rtol * scale, err_msg=key)


def cupy_estep(module, p, **kw):
    """The CuPy E-step with its statistics copied to the host, as the solver does."""
    lm, stats = estep(module, p, **kw)
    return lm, None if stats is None else module.to_host(stats)


def check_matches_numpy(run, values, annealed, masked):
    """``run(p, **kw)``, a backend's E-step with host statistics, against the NumPy reference.

    Statistics to 1e-10, and the log marginals of a pass without statistics (ET data
    selection) to 1e-12, at temperature 1 or annealed, with or without a data mask.
    """
    p = make_problem(values, seed=len(values))
    kw = {"beta": 0.4, "prior_beta": 0.7} if annealed else {}
    if masked:
        mask = np.random.default_rng(1).random(p["Y"].shape[0])
        mask[::3] = 0.0  # ET data selection: excluded points
        kw["mask"] = mask
    expected = estep(ref, p, **kw)
    actual = run(p, **kw)
    assert all(type(v) is np.ndarray for v in actual[1].values())  # host arrays out
    assert_same(expected, actual, rtol=1e-10)
    lm, stats = run(p, accumulate=False, **kw)
    assert stats is None
    np.testing.assert_allclose(lm, expected[0], rtol=1e-12)


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
@pytest.mark.parametrize("annealed", [False, True], ids=["beta1", "annealed"])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_numba_matches_numpy_float64(values, annealed, masked):
    check_matches_numpy(lambda p, **kw: estep(nb, p, **kw), values, annealed, masked)


def test_statistics_depend_on_temperature_and_mask():
    """Guards the comparisons above: the options really change the statistics."""
    p = make_problem(VALUE_SETS["ternary"])
    base = estep(nb, p)[1]
    tempered = estep(nb, p, beta=0.4, prior_beta=0.7)[1]
    masked = estep(nb, p, mask=np.r_[np.ones(60), np.zeros(60)])[1]
    assert np.abs(base["ss"] - tempered["ss"]).max() > 1e-3
    assert float(masked["n"]) == 60.0
    assert np.abs(base["sy"] - masked["sy"]).max() > 1e-3


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_numba_full_enumeration(values):
    """H' = gamma = H: every state of the model, no preselection."""
    H = 6 if len(values) == 2 else 4
    p = make_problem(values, H=H, Hprime=H, gamma=H, D=10, B=40, seed=3)
    assert p["states"].n_states == len(values) ** H
    assert_same(estep(ref, p, beta=0.8), estep(nb, p, beta=0.8), rtol=1e-10)


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_numba_float32(values):
    p = make_problem(values, seed=5)
    expected = estep(ref, p, beta=0.5)
    actual = estep(nb, p, dtype=np.float32, beta=0.5)
    assert_same(expected, actual, rtol=FLOAT32_RTOL)


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_numba_posterior_mean(values):
    p = make_problem(values, seed=7)
    args = [p[k] for k in ("Y", "W", "sigma2", "value_logp", "states", "presel")]
    expected = ref.linear_posterior_mean(*args)
    actual = nb.linear_posterior_mean(*args)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-10 * np.abs(expected).max())


@pytest.mark.parametrize("B", [1, 3])
def test_numba_small_batches(B):
    """Fewer points than threads, and a single point."""
    p = make_problem(VALUE_SETS["binary"], B=B, seed=11)
    assert_same(estep(ref, p), estep(nb, p), rtol=1e-10)


def test_numba_thread_count_does_not_change_results():
    p = make_problem(VALUE_SETS["discrete"], B=101, seed=13)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = estep(nb, p)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = estep(nb, p)
    finally:
        numba.set_num_threads(before)
    assert_same(one, many, rtol=1e-13)


def test_vectorised_exp_matches_libm():
    x = np.concatenate([-np.geomspace(1e-12, 750.0, 5000), [0.0, -700.0, -1e-300, -np.inf]])
    out = np.empty_like(x)
    numba_math.exp_rows(x, np.zeros_like(x), out, np.empty(x.size, dtype=np.int64), x.size)
    inside = x > -700.0
    np.testing.assert_allclose(out[inside], np.exp(x[inside]), rtol=4e-16, atol=0)
    assert np.all(out[~inside] == 0.0)
    # in place, as the kernel uses it
    y = x.copy()
    numba_math.exp_rows(y, np.zeros_like(x), y, np.empty(x.size, dtype=np.int64), x.size)
    np.testing.assert_array_equal(y, out)


def test_log_rows_matches_numpy():
    from numba import njit

    @njit(error_model="numpy")
    def run(x, out, bits, expo):
        numba_math.log_rows(x, out, bits, expo, x.size)

    rng = np.random.default_rng(11)
    x = np.concatenate(
        [
            np.exp(rng.uniform(-708.0, 709.0, 20000)),
            rng.uniform(0.5, 2.0, 20000),
            [np.finfo(np.float64).tiny, 1.0, 2.0, 0.5, np.sqrt(2.0), np.nextafter(np.sqrt(2.0), 0)],
            [np.finfo(np.float64).max, 1.0 + 2**-52, 1.0 - 2**-53, np.inf],
        ]
    )
    out = np.empty_like(x)
    run(x, out, np.empty(x.size, dtype=np.int64), np.empty_like(x))
    ref = np.log(x[:-1])
    ulps = np.abs(out[:-1] - ref) / np.spacing(np.maximum(np.abs(ref), np.finfo(np.float64).tiny))
    assert ulps.max() <= 2.0
    assert out[-9] == 0.0  # log(1) exactly
    assert out[-1] == np.inf


@pytest.mark.parametrize("size", [3, 26], ids=["H6-ranked", "H52-insertion"])
@pytest.mark.parametrize("Hprime", [1, 3, 5])
def test_preselection_ties_as_numpy(size, Hprime):
    """Equal scores go to the lower latent on every backend (bars data are full of ties).

    Both selection paths of the kernel: SIMD ranking (H <= 48) and insertion (larger H).
    """
    from prosper.data.bars import bars_dictionary

    W = bars_dictionary(size, amplitude=1.0)  # 2 size bars, pairwise overlapping in 1 pixel
    H = W.shape[1]
    states = ExpectationTruncation(H, Hprime, min(Hprime, 2), (0.0, 1.0))
    S = np.zeros((5, H))
    S[0, 0] = S[1, 3] = S[3, [0, 1, H - 1]] = S[4, [2, size + 1]] = 1.0
    Y = S @ W.T
    norms = np.linalg.norm(W, axis=0)
    presel = ((1.0 / norms)[None, :], np.zeros((1, H)))
    scores = (Y @ W) * presel[0]
    assert all(len(set(row)) < H for row in scores)  # the case under test: tied scores
    # a broad posterior (large noise), so that which tied latent is chosen shows in the results
    args = (Y, W, 20.0, np.log([0.7, 0.3]), states, presel)
    expected = ref.linear_estep(*args, 1.0, 1.0)
    assert_same(expected, nb.linear_estep(*args, 1.0, 1.0), rtol=1e-10)
    np.testing.assert_allclose(
        nb.linear_posterior_mean(*args), ref.linear_posterior_mean(*args), rtol=0, atol=1e-12
    )
    # the reference picks the lowest tied latents (row 2 scores 0 everywhere)
    assert states.select(scores, 5).I[2].tolist() == list(range(Hprime))


def test_registry():
    assert set(BACKENDS) == {"numpy", "numba", "cupy"}
    assert get_backend("numba").NAME == "numba"
    assert "numba" in available_backends()
    # auto prefers numba on a machine without a usable GPU
    if "cupy" not in available_backends():
        assert get_backend("auto").NAME == "numba"


def test_bsc_numba_matches_numpy_end_to_end():
    """A few annealed ET iterations with data selection give the same dictionary."""
    fits = annealed_et_fits(("numpy", "numba"))
    np.testing.assert_allclose(fits["numba"].W_, fits["numpy"].W_, rtol=0, atol=1e-8)
    np.testing.assert_allclose(fits["numba"].free_energy_, fits["numpy"].free_energy_, rtol=1e-10)
    # the run moved away from its start, so agreement is not trivial
    assert np.ptp(fits["numba"].free_energy_) > 0.1


def _fake_gpu_backend(calls):
    """A stand-in for the CuPy backend: linear kernels only (NumPy's), records binding.

    It has the interface every backend declares: the fused linear E-step, ``KERNELS``,
    ``batch_points``, ``to_host`` and ``select_device``."""
    import types

    return types.SimpleNamespace(
        NAME="cupy",
        AVAILABLE=True,
        KERNELS=dict(ref.KERNELS),
        linear_estep=ref.linear_estep,
        linear_posterior_mean=ref.linear_posterior_mean,
        batch_points=ref.batch_points,
        to_host=ref.to_host,
        select_device=lambda comm: calls.append(comm.size) or 0,
    )


def test_auto_picks_the_best_backend_with_a_kernel_for_the_model(monkeypatch):
    """On a GPU machine, BSC gets CuPy (bound to a device per rank), GSC and MCA numba."""
    import prosper.backends as backends
    from prosper import BSC, GSC, MCA
    from prosper.data import bars

    calls = []
    fake = _fake_gpu_backend(calls)
    real = backends._try_import
    monkeypatch.setattr(backends, "_try_import", lambda n: fake if n == "cupy" else real(n))
    assert get_backend("auto") is fake
    assert get_backend("auto", supports=lambda m: m.NAME == "numpy").NAME == "numpy"
    for cls, wanted in ((BSC, "cupy"), (GSC, "numba"), (MCA, "numba")):
        chosen = cls(H=4, backend="auto")._make_learner(9, 0, get_backend("auto")).backend
        assert chosen is (fake if wanted == "cupy" else nb), cls.__name__
    data = bars(size=3, n_samples=60, random_state=0)
    BSC(H=6, n_iter=2, progress=False, random_state=0).fit(data.Y)
    assert calls == [1]  # select_device ran once, on the one rank
    GSC(H=6, n_iter=2, progress=False, random_state=0).fit(data.Y)
    assert calls == [1]  # numba has no device to bind


def test_first_kernel_call_is_reported(monkeypatch, caplog):
    """Compiling takes seconds: the first call of a kernel says what it cost, later ones not."""
    monkeypatch.setattr(numba_math, "_REPORTED", set())
    p = make_problem(VALUE_SETS["binary"], B=8)
    with caplog.at_level("INFO", logger="prosper.backends.numba_math"):
        estep(nb, p)
        estep(nb, p)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert lines[0].startswith("numba kernel linear_kernel ")
    assert "compiled" in lines[0] or "loaded from the disk cache" in lines[0]


def test_ranks_that_choose_different_backends_stop_with_a_clear_error(monkeypatch):
    """backend='auto' on a mix of GPU and CPU nodes: refused before any work, on every rank."""
    from prosper import BSC
    from prosper.parallel import Communicator

    real = Communicator.allgather

    def two_nodes(self, value):  # this rank's choice, and a GPU node's
        return [value, "cupy"] if value in BACKENDS else real(self, value)

    monkeypatch.setattr(Communicator, "allgather", two_nodes)
    with pytest.raises(ValueError, match=r"ranks chose different backends \(cupy, numba\)"):
        BSC(H=4, n_iter=1, progress=False).fit(np.random.default_rng(0).random((20, 9)))


@pytest.mark.parametrize("name", ["bsc", "tsc", "dsc", "gsc", "mca", "mmca"])
def test_empty_batch_gives_zero_statistics_on_every_backend(name):
    """A rank can hold no rows of a pass: every model and backend returns zeros, not errors."""
    from prosper.estimators import get_estimator_class

    est = get_estimator_class(name)(H=5, Hprime=3, gamma=2)
    Y = np.random.default_rng(0).random((30, 8)) + 0.5
    est.set_params(n_iter=1, progress=False, random_state=0).fit(Y)
    learner = est._learner_for(Y)
    model, states, params = learner.model, learner.states, learner.params
    results = {}
    for backend in (ref, nb):
        lm, stats = model.estep_batch(Y[:0], states, params, 1.0, 1.0, None, True, backend)
        assert lm.shape == (0,)
        assert all(np.all(np.asarray(v) == 0) for v in stats.values())
        assert model.posterior_mean(Y[:0], states, params, backend).shape == (0, 5)
        results[backend.NAME] = {k: np.shape(v) for k, v in stats.items()}
    assert results["numba"] == results["numpy"]
