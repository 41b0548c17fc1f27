"""Helpers shared by the benchmark scripts: machine description, GEMM rate, JSON records.

Every benchmark prints the command, the machine and a measured GEMM rate beside its own
GFLOP/s, and writes a JSON record to ``benchmarks/results/<name>.json`` (or to the folder
named by ``PROSPER_BENCH_RESULTS``, e.g. ``$OUT`` on a borrowed GPU machine).

Import from a benchmark script run as ``python benchmarks/bench_x.py``::

    from _common import gemm_gflops, machine_info, write_record
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "best_time",
    "compare_estep_backends",
    "gemm_gflops",
    "machine_info",
    "print_header",
    "results_dir",
    "worker_env",
    "write_record",
]

#: libraries whose versions go into every record (absent ones are recorded as None)
_LIBRARIES = ("numpy", "scipy", "numba", "mpi4py", "h5py", "cupy")
#: environment variables that change thread counts and hence timings
_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "NUMBA_THREADING_LAYER",
    "OMP_WAIT_POLICY",
    "CUDA_VISIBLE_DEVICES",
)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(name: str) -> str | None:
    # importlib.metadata avoids importing heavy modules (cupy initialises CUDA on import)
    from importlib import metadata

    for dist in (name, f"{name}-cuda12x", f"{name}-cuda13x", f"{name}-cuda11x"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _blas_info() -> dict[str, Any]:
    try:
        config = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return {
            "name": blas.get("name"),
            "version": blas.get("version"),
            "config": blas.get("openblas configuration"),
        }
    except (TypeError, KeyError, AttributeError):
        # numpy < 1.25 has no mode="dicts"
        return {"name": "unknown"}


def _gpu_info() -> dict[str, Any] | None:
    """Name, memory and CUDA runtime of the current GPU; None without cupy or a device."""
    if _version("cupy") is None:
        return None
    try:
        cupy = importlib.import_module("cupy")
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
        device = cupy.cuda.Device()
        props = cupy.cuda.runtime.getDeviceProperties(device.id)
        name = props["name"]
        return {
            "name": name.decode() if isinstance(name, bytes) else str(name),
            "memory_GiB": round(props["totalGlobalMem"] / 2**30, 1),
            "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
            "device_count": cupy.cuda.runtime.getDeviceCount(),
        }
    except Exception as exc:  # a broken CUDA set-up is reported, not fatal
        return {"error": repr(exc)}


def machine_info(gpu: bool = False) -> dict[str, Any]:
    """Description of the machine a benchmark ran on.

    Parameters
    ----------
    gpu : bool, default=False
        Also describe the current CUDA device (imports cupy when installed).

    Returns
    -------
    info : dict
        ``platform``, ``python``, ``cpu``, ``cores`` (logical CPUs), ``cores_usable`` (CPUs this
        process may run on), ``blas``, ``versions`` (library -> version or None),
        ``thread_env`` (thread-count variables that are set), ``hostname``, ``date`` and,
        with ``gpu=True``, ``gpu``.
    """
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "blas": _blas_info(),
        "versions": {name: _version(name) for name in _LIBRARIES},
        "thread_env": {k: os.environ[k] for k in _THREAD_VARS if k in os.environ},
        "hostname": platform.node(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if gpu:
        info["gpu"] = _gpu_info()
    return info


def best_time(fn: Callable[[], Any], repeats: int = 3, min_time: float = 0.0) -> float:
    """Smallest wall time of ``repeats`` calls of ``fn`` (seconds).

    Parameters
    ----------
    fn : callable
        Called without arguments; must synchronise itself if it launches asynchronous work.
    repeats : int, default=3
    min_time : float, default=0.0
        Keep calling beyond ``repeats`` until this much time has been spent in total.
    """
    times = []
    start = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def gemm_gflops(n: int = 1024, dtype: Any = np.float64, repeats: int = 5) -> float:
    """Measured rate of an n×n×n matrix product with the BLAS numpy uses (GFLOP/s).

    Counts 2 n³ flops per product and takes the best of ``repeats`` runs, so the figure is
    the machine's attainable GEMM peak with the current thread settings.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    a @ b  # warm up: thread pool start, page faults
    return 2.0 * n**3 / best_time(lambda: a @ b, repeats=repeats) / 1e9


def worker_env(backend: str, threads: int) -> dict[str, str]:
    """Environment of a benchmark worker process running ``backend`` on ``threads`` threads.

    numba parallelises the per-state work; its per-batch GEMMs are small, and BLAS threads
    spinning beside numba's threads slow it down, so BLAS stays single-threaded for numba
    (``threads`` BLAS threads otherwise). The repository root goes first on PYTHONPATH.
    """
    env = dict(os.environ)
    blas = 1 if backend == "numba" else threads
    root = str(Path(__file__).resolve().parent.parent)
    env.update(
        OMP_NUM_THREADS=str(blas),
        OPENBLAS_NUM_THREADS=str(blas),
        MKL_NUM_THREADS=str(blas),
        NUMBA_NUM_THREADS=str(threads),
        PYTHONPATH=root + os.pathsep + env.get("PYTHONPATH", ""),
    )
    return env


def results_dir() -> Path:
    """Folder for records: ``$PROSPER_BENCH_RESULTS`` if set, else ``benchmarks/results``."""
    folder = os.environ.get("PROSPER_BENCH_RESULTS")
    path = Path(folder) if folder else Path(__file__).resolve().parent / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_record(name: str, record: dict[str, Any]) -> Path:
    """Write ``record`` as indented JSON to ``<results_dir>/<name>.json``; returns the path.

    NumPy scalars and arrays are converted to Python numbers and lists.
    """

    def default(obj: Any) -> Any:
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        return str(obj)

    path = results_dir() / f"{name}.json"
    path.write_text(json.dumps(record, indent=2, default=default) + "\n", encoding="utf-8")
    return path


def print_header(title: str, info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Print the command line and the machine; returns the machine info used."""
    info = machine_info() if info is None else info
    print(f"# {title}")
    print("command:", " ".join([os.path.basename(sys.executable), *sys.argv]))
    print(
        f"machine: {info['cpu']}, {info['cores_usable']}/{info['cores']} cores, "
        f"{info['platform']}, BLAS {info['blas'].get('name')} {info['blas'].get('version')}"
    )
    if info.get("gpu"):
        print("gpu:", info["gpu"])
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v)
    print("versions:", versions)
    if info["thread_env"]:
        print("thread env:", info["thread_env"])
    return info


def compare_estep_backends(model, states, params, batches, backend, repeats: int = 3) -> dict:
    """One E-step pass (statistics, T = 1) of ``model``: its NumPy path against ``backend``.

    Both passes run in this process on the same batches and include the preselection, as
    in a fit. The first call of the backend (compile, or load from numba's disk cache) is
    timed on two points before the passes; the two passes' statistics and log marginals
    are compared (a cheap guard against timing a wrong kernel).

    Returns
    -------
    dict
        ``seconds_numpy``, ``seconds_numba``, ``speedup``, ``seconds_first_call``,
        ``max_rel_diff`` and ``numba_threads``.
    """
    import numba

    def run(be):
        return [model.estep_batch(Yb, states, params, 1.0, 1.0, None, True, be) for Yb in batches]

    t0 = time.perf_counter()
    model.estep_batch(batches[0][:2], states, params, 1.0, 1.0, None, True, backend)
    first_call = time.perf_counter() - t0
    t_numpy = best_time(lambda: run(None), repeats=repeats)
    t_numba = best_time(lambda: run(backend), repeats=repeats)
    (ref_lm, ref), (lm, got) = run(None)[0], run(backend)[0]
    pairs = [(lm, ref_lm)] + [(got[k], ref[k]) for k in ref]
    err = max(float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)) for a, b in pairs)
    return {
        "numba_threads": numba.get_num_threads(),
        "seconds_numpy": t_numpy,
        "seconds_numba": t_numba,
        "speedup": t_numpy / t_numba,
        "seconds_first_call": first_call,
        "max_rel_diff": err,
    }
