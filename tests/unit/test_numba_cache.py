"""The numba kernels are cached on disk: a second process loads them instead of compiling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("numba")

# Each kernel's dispatcher counts, per signature, loads from the cache (hits) and
# compilations (misses); parallel=True kernels could not be cached in older numba releases.
CHILD = textwrap.dedent(
    """
    import json
    from prosper.backends import numba_backend as nb, numba_gsc, numba_mca, numba_search
    from prosper.backends import numba_states

    before = nb.needs_compiling()
    seconds = nb.warmup()
    kernels = {"linear": nb._linear_kernel, "gsc": numba_gsc._gsc_kernel}
    kernels.update(
        (name, getattr(numba_states, name))
        for name in ("_log_joint", "_stats", "_select", "_children")
    )
    kernels["_linear_search"] = numba_search._linear_search
    kernels.update(
        (name, f) for name, f in vars(numba_mca).items()
        if name.startswith("_") and name.endswith("_kernel")
    )
    print(json.dumps({
        "seconds": seconds,
        "needs_compiling": [before, nb.needs_compiling()],
        "hits": {k: sum(f.stats.cache_hits.values()) for k, f in kernels.items()},
        "misses": {k: sum(f.stats.cache_misses.values()) for k, f in kernels.items()},
    }))
    """
)


def _run_child(cache_dir=None, code: str = CHILD) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = str(cache_dir)
    # no time limit: compiling from an empty cache takes minutes on a loaded machine, and
    # what is tested is where the kernels come from, not how fast (speed: benchmarks/)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_second_process_loads_kernels_from_cache():
    # the cache the rest of the suite fills (numba's default place, or the user's
    # NUMBA_CACHE_DIR): the first child compiles only what no earlier process compiled, so the
    # test costs seconds in a full run instead of compiling every kernel into an empty cache
    first = _run_child()
    second = _run_child()
    assert first["needs_compiling"][1] is False, first
    # the second process compiles nothing and loads every kernel from the disk cache
    assert all(n == 0 for n in second["misses"].values()), second
    assert all(n >= 1 for n in second["hits"].values()), second
    assert second["needs_compiling"] == [False, False]


def test_an_empty_cache_is_reported_as_needing_compilation(tmp_path):
    # the "compiling kernels" notice is given when there is something to compile
    probe = "import json\nfrom prosper.backends import numba_backend as nb\n"
    probe += "print(json.dumps(nb.needs_compiling()))"
    assert _run_child(tmp_path, probe) is True
    assert not any(tmp_path.rglob("*.nbi")), "checking must not compile"
