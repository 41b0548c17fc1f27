"""The CuPy E-step backend against the NumPy reference (GPU), and its CUDA source (nvcc).

Tests marked ``gpu`` skip without CuPy or a CUDA device; the nvcc check skips without nvcc;
the rest (device selection logic, source consistency) runs everywhere.
"""

from __future__ import annotations

import re
import shutil
import subprocess

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

gpu = pytest.mark.skipif(not cb.AVAILABLE, reason="needs CuPy and a visible CUDA device")


# -- runs everywhere --------------------------------------------------------------------------
def test_kernel_source_is_self_contained_and_block_size_matches():
    source = cb.kernel_source()
    # NVRTC compiles without system headers
    assert "#include" not in source
    assert "prosper_linear_posterior" in source
    match = re.search(r"#define PROSPER_BLOCK (\d+)", source)
    assert match is not None and int(match.group(1)) == cb.BLOCK


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_kernel_compiles_with_nvcc(tmp_path, arch):
    src = tmp_path / "linear_estep.cu"
    src.write_text(cb.kernel_source())
    out = tmp_path / "linear_estep.ptx"
    proc = subprocess.run(
        ["nvcc", "-ptx", f"-arch={arch}", "-Werror", "all-warnings", "-o", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    ptx = out.read_text()
    # extern "C": the entry point keeps its unmangled name, which RawKernel looks up
    assert ".entry prosper_linear_posterior(" in ptx


class _FakeComm:
    """Two nodes with two ranks each: ranks 0, 1 on node-a, ranks 2, 3 on node-b."""

    size = 4

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def allgather(self, value):
        return ["node-a", "node-a", "node-b", "node-b"]


@pytest.mark.parametrize(("rank", "expected"), [(0, 0), (1, 1), (2, 0), (3, 1)])
def test_local_rank_counts_ranks_on_the_same_host(rank, expected):
    assert cb.local_rank(_FakeComm(rank)) == expected


def test_local_rank_from_launcher_environment(monkeypatch):
    for key in cb._LOCAL_RANK_ENV:
        monkeypatch.delenv(key, raising=False)
    assert cb.local_rank(None) == 0
    monkeypatch.setenv("MPI_LOCALRANKID", "3")
    assert cb.local_rank(None) == 3


def test_auto_never_picks_cupy_without_a_device():
    from prosper.backends import get_backend

    if not cb.AVAILABLE:
        assert get_backend("auto").NAME != "cupy"
        with pytest.raises(ValueError, match="not available"):
            get_backend("cupy")


# -- needs a GPU --------------------------------------------------------------------------------
@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
@pytest.mark.parametrize("annealed", [False, True], ids=["beta1", "annealed"])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_cupy_matches_numpy_float64(values, annealed, masked):
    check_matches_numpy(lambda p, **kw: cupy_estep(cb, p, **kw), values, annealed, masked)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_cupy_full_enumeration_and_float32(values):
    H = 6 if len(values) == 2 else 4
    p = make_problem(values, H=H, Hprime=H, gamma=H, D=10, B=40, seed=3)
    assert_same(estep(ref, p, beta=0.8), cupy_estep(cb, p, beta=0.8), rtol=1e-10)
    p = make_problem(values, seed=5)
    assert_same(
        estep(ref, p, beta=0.5), cupy_estep(cb, p, dtype=np.float32, beta=0.5), FLOAT32_RTOL
    )


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("B", [0, 1, 1000])
def test_cupy_batch_sizes_and_posterior_mean(B):
    p = make_problem(VALUE_SETS["ternary"], B=B, seed=7)
    if B:
        assert_same(estep(ref, p), cupy_estep(cb, p), rtol=1e-10)
    args = [p[k] for k in ("Y", "W", "sigma2", "value_logp", "states", "presel")]
    expected = ref.linear_posterior_mean(*args)
    actual = cb.linear_posterior_mean(*args)
    assert actual.shape == expected.shape == (B, 12)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-10)


@gpu
@pytest.mark.gpu
def test_select_device_single_process():
    import cupy

    assert cb.select_device(None) == cb.local_rank(None) % cupy.cuda.runtime.getDeviceCount()


@gpu
@pytest.mark.gpu
def test_bsc_cupy_matches_numpy_end_to_end():
    fits = annealed_et_fits(("numpy", "cupy"))
    np.testing.assert_allclose(fits["cupy"].W_, fits["numpy"].W_, rtol=0, atol=1e-8)


def _signed_bars():
    from prosper.data import bars

    return bars(
        size=4, n_samples=300, pi=0.2, amplitude=5.0, sigma=0.5, signed=True, random_state=2
    ).Y


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("states", ["et", "evo", "full"])
@pytest.mark.parametrize("name", ["BSC", "TSC", "DSC"])
def test_linear_estimators_on_cupy_match_numpy(name, states):
    # ET runs the CUDA kernel; evo and full run the generic E-step (host kernels) under the
    # cupy backend: all three learn the NumPy reference's model
    import prosper

    kw = {"H": 8, "n_iter": 4, "random_state": 3, "states": states, "progress": False}
    if states == "et":
        kw.update(Hprime=5, gamma=3)
    if name == "DSC":
        kw["values"] = (0.0, 1.0, 2.0)
    Y = _signed_bars()
    fits = {b: getattr(prosper, name)(backend=b, **kw).fit(Y) for b in ("numpy", "cupy")}
    np.testing.assert_allclose(fits["cupy"].W_, fits["numpy"].W_, rtol=0, atol=1e-8)
    np.testing.assert_allclose(fits["cupy"].free_energy_, fits["numpy"].free_energy_, rtol=1e-10)


@gpu
@pytest.mark.gpu
def test_bsc_float32_on_cupy_follows_float64():
    from prosper import BSC
    from prosper.data import bars

    data = bars(size=5, n_samples=2000, pi=0.2, amplitude=10.0, sigma=2.0, random_state=0)
    kw = {"H": 10, "Hprime": 6, "gamma": 3, "n_iter": 3, "random_state": 1, "progress": False}
    f64 = BSC(backend="numpy", **kw).fit(data.Y)
    f32 = BSC(backend="cupy", dtype="float32", batch_size=4096, **kw).fit(data.Y)
    np.testing.assert_allclose(f32.W_, f64.W_, rtol=0, atol=1e-3 * np.abs(f64.W_).max())
    np.testing.assert_allclose(f32.free_energy_, f64.free_energy_, rtol=1e-5)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("name", ["GSC", "MCA"])
def test_models_without_a_cuda_kernel_run_under_cupy(name):
    # backend="cupy" for a model without a CuPy kernel runs the model's NumPy E-step
    import prosper
    from prosper.data import bars

    data = bars(
        size=4,
        n_samples=200,
        pi=0.2,
        amplitude=5.0,
        sigma=0.5,
        random_state=4,
        combine="max" if name == "MCA" else "sum",
    )
    kw = {"H": 8, "n_iter": 3, "random_state": 0, "progress": False}
    fits = {b: getattr(prosper, name)(backend=b, **kw).fit(data.Y) for b in ("numpy", "cupy")}
    np.testing.assert_allclose(fits["cupy"].W_, fits["numpy"].W_, rtol=0, atol=1e-10)


@gpu
@pytest.mark.gpu
def test_candidates_on_the_device_break_ties_as_the_host():
    import cupy

    from tests.unit.test_cupy_host import check_candidates_match_host

    check_candidates_match_host(cb, cupy.asarray)


@gpu
@pytest.mark.gpu
def test_nan_parameters_stop_the_estep_on_the_device():
    from tests.unit.test_cupy_host import check_nan_parameters_stop_the_estep

    check_nan_parameters_stop_the_estep(cb)


@gpu
@pytest.mark.gpu
def test_default_batch_on_the_gpu_holds_every_point_and_fits_as_numpy():
    # batch_size=None: the 3000 points go to the device as one batch (the CPU backends read
    # 1000 at a time); the model learned is the same
    from prosper import BSC
    from prosper.backends import get_backend
    from prosper.data import bars

    Y = bars(size=5, n_samples=3000, pi=0.2, amplitude=5.0, sigma=1.0, random_state=1).Y
    kw = {"H": 10, "n_iter": 15, "random_state": 0}
    assert BSC(**kw)._make_learner(25, 0, get_backend("cupy")).batch_size >= 3000
    fits = {b: BSC(backend=b, **kw).fit(Y) for b in ("numpy", "cupy")}
    np.testing.assert_allclose(fits["cupy"].W_, fits["numpy"].W_, rtol=0, atol=1e-8)
    np.testing.assert_allclose(fits["cupy"].free_energy_, fits["numpy"].free_energy_, rtol=1e-10)
