"""The noisy-OR test model (tests/noisy_or.py) under mpiexec: 1 and 2 ranks learn the same
model through the Python API, with every state set."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import run_mpi

pytestmark = pytest.mark.mpi

SCRIPT = """
import sys
import numpy as np
from prosper.parallel import get_comm, row_block
from tests.noisy_or import NoisyOR
from tests.unit.test_noisy_or import bars_or

states, out = sys.argv[1], sys.argv[2]
Y = bars_or(301, seed=0)[0]
comm = get_comm()
rows = row_block(Y.shape[0], comm)  # each rank passes its contiguous block of rows
kwargs = {"Hprime": 5, "gamma": 3} if states == "et" else {}
est = NoisyOR(H=6, states=states, n_iter=5, batch_size=64, random_state=1, backend="numpy",
              progress=False, **kwargs).fit(Y[rows])
if comm.rank == 0:
    np.savez(out, W=est.W_, F=est.free_energy_)
"""


@pytest.mark.parametrize("states", ["et", "evo", "full"])
def test_one_and_two_ranks_same_model(tmp_path, states):
    script = tmp_path / "fit.py"
    script.write_text(SCRIPT)
    result = {}
    for n in (1, 2):
        out = tmp_path / f"run{n}.npz"
        run_mpi(n, ["python", str(script), states, str(out)], cwd=tmp_path)
        result[n] = np.load(out)
    np.testing.assert_allclose(result[2]["W"], result[1]["W"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(result[2]["F"], result[1]["F"], rtol=1e-10)
