"""SBL / KroSBL under mpiexec: snapshots split over ranks give the 1-rank γ, σ and x̂.

This file is also the MPI worker: ``python tests/mpi/test_sbl_mpi.py DATA.npz OUT_DIR`` fits
classic SBL and the KroSBL variants (block KroSBL too) on this rank's block of snapshots
and, on rank 0, saves the fitted γ, σ, iteration counts, scores and the gathered x̂ to
``OUT_DIR/result.npz``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.mpi


def _worker(data_path: str, out_dir: str) -> None:
    from prosper import SBL, KroneckerSBL
    from prosper.parallel import get_comm, row_block

    comm = get_comm()
    with np.load(data_path) as data:
        factors = [data["Phi1"], data["Phi2"]]
        Y, noise = data["Y"], data["noise"]
    rows = row_block(Y.shape[0], comm)
    estimators = {
        "am": KroneckerSBL(factors=factors, method="am", n_iter=40, tol=None),
        "svd": KroneckerSBL(factors=factors, method="svd", n_iter=40, tol=None),
        "sbl": SBL(dictionary=np.kron(*factors), n_iter=25, tol=None),
        "am_tol": KroneckerSBL(factors=factors, method="am", tol=1e-5),
        # blocks of 2 and (almost) no threshold: only the dead-block test removes blocks
        "am_block": KroneckerSBL(
            factors=factors, method="am", block_size=2, prune=1e-9, n_iter=40, tol=None
        ),
        # pure noise: the empty model is more probable than the learned one (model_choice)
        "am_noise": KroneckerSBL(factors=factors, method="am", n_iter=40, tol=None),
    }
    result = {}
    for name, est in estimators.items():
        out = Path(out_dir) / f"{name}_{comm.size}.h5" if name == "am" else None
        data = noise if name.endswith("noise") else Y
        est.fit(data[rows], out=out)
        result[f"{name}_margin"] = est.evidence_margin_
        coef = np.concatenate(comm.allgather(est.coef_))
        result.update(
            {
                f"{name}_gamma": est.gamma_,
                f"{name}_sigma": est.sigma_,
                f"{name}_n_iter": est.n_iter_,
                f"{name}_coef": coef,
                f"{name}_score": est.score(data[rows]),
                f"{name}_F": est.free_energy_,
            }
        )
    if comm.rank == 0:
        np.savez(Path(out_dir) / f"result_{comm.size}.npz", **result)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    from prosper.data.kronecker import kronecker_problem
    from tests.helpers import run_mpi

    path = tmp_path_factory.mktemp("sbl_mpi")
    p = kronecker_problem([(8, 12), (8, 12)], sparsity=2, snr_db=20, n_snapshots=7, random_state=0)
    noise = np.random.default_rng(0).standard_normal(p.Y.shape)
    np.savez(path / "data.npz", Phi1=p.factors[0], Phi2=p.factors[1], Y=p.Y, noise=noise)
    out = {}
    for n in (1, 2):
        run_mpi(n, ["python", __file__, str(path / "data.npz"), str(path)], timeout=300)
        with np.load(path / f"result_{n}.npz") as f:
            out[n] = dict(f)
    return path, out


@pytest.mark.parametrize("name", ["am", "svd", "sbl", "am_tol", "am_block", "am_noise"])
def test_one_and_two_ranks_give_the_same_model(results, name):
    _, out = results
    one, two = out[1], out[2]
    # the choice against the empty model is made on reduced sums: the same on every rank
    np.testing.assert_allclose(two[f"{name}_margin"], one[f"{name}_margin"], rtol=1e-9)
    assert (one[f"{name}_margin"] < 0) == (name == "am_noise") == (not one[f"{name}_gamma"].any())
    assert one[f"{name}_n_iter"] == two[f"{name}_n_iter"]  # the tol decision agrees too
    # Two ranks sum the statistics in another order: round-off of ~1e-16 relative to the
    # largest entry, amplified by the fixed point to ~1e-9 of a small entry on some CPUs'
    # BLAS kernels, so the tolerance is relative to the largest entry, not to each one.
    gamma_scale = np.abs(one[f"{name}_gamma"]).max()
    np.testing.assert_allclose(
        two[f"{name}_gamma"], one[f"{name}_gamma"], rtol=1e-9, atol=1e-9 * gamma_scale
    )
    np.testing.assert_array_equal(two[f"{name}_gamma"] > 0, one[f"{name}_gamma"] > 0)
    np.testing.assert_allclose(two[f"{name}_sigma"], one[f"{name}_sigma"], rtol=1e-9)
    np.testing.assert_allclose(two[f"{name}_coef"], one[f"{name}_coef"], rtol=1e-8, atol=1e-12)
    # one-off dips of the trace (F = -2254 among values near +100) carry 2e-9 of round-off
    np.testing.assert_allclose(two[f"{name}_F"], one[f"{name}_F"], rtol=1e-8)
    np.testing.assert_allclose(two[f"{name}_score"], one[f"{name}_score"], rtol=1e-9)
    assert one[f"{name}_coef"].shape[0] == 7


def test_results_file_written_once_by_rank_zero(results):
    import h5py

    import prosper

    path, out = results
    for n in (1, 2):
        with h5py.File(path / f"am_{n}.h5", "r") as f:
            assert f.attrs["n_ranks"] == n and f.attrs["n_samples"] == 7
            assert f["params/gamma_1"].shape == (40, 12)
        np.testing.assert_allclose(
            prosper.load(path / f"am_{n}.h5").gamma_, out[1]["am_gamma"], rtol=1e-9, atol=1e-14
        )


if __name__ == "__main__":
    _worker(*sys.argv[1:3])
