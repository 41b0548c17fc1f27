"""TSC and DSC under mpiexec: the example jobs give the same model on 1 and 2 ranks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import prosper
from tests.helpers import run_mpi

pytestmark = pytest.mark.mpi

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name", ["tsc", "dsc"])
def test_example_job_same_model_on_one_and_two_ranks(tmp_path, name):
    pytest.importorskip("prosper.cli")
    # short runs: the example's model and data, fewer iterations and data points
    settings = ["--set", "model.n_iter=8", "--set", "data.n_samples=600"]
    fitted = {}
    for n in (1, 2):
        out = tmp_path / f"{name}{n}.h5"
        run_mpi(
            n,
            ["prosper", "fit", str(EXAMPLES / f"{name}_bars.toml"), "--out", str(out), *settings],
            cwd=tmp_path,
        )
        fitted[n] = prosper.load(out)
    one, two = fitted[1], fitted[2]
    assert type(one).__name__ == name.upper()
    assert one.W_.shape == (25, 10)
    np.testing.assert_allclose(two.W_, one.W_, rtol=0, atol=1e-8)
    np.testing.assert_allclose(two.pi_, one.pi_, rtol=0, atol=1e-10)
    assert two.sigma_ == pytest.approx(one.sigma_, abs=1e-10)
    np.testing.assert_allclose(two.free_energy_, one.free_energy_, rtol=1e-12)
    if name == "dsc":
        assert one.pi_.shape == (len(one.values),)
