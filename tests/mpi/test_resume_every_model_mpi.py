"""Every model's CLI run, killed with SIGKILL at a random iteration under ``mpiexec -n 2``,
resumes to the parameters of an uninterrupted run (to 1e-10).

Adding a model is one line in MODELS: its [model] table and its [data] table.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from prosper.data.kronecker import kronecker_problem
from tests.helpers import killed_run, mpiexec_path, run_mpi

pytestmark = [pytest.mark.mpi, pytest.mark.slow]

N_ITER = 30
BARS = 'generator = "bars"\nsize = 3\nn_samples = 400\nrandom_state = 0\n'
ET = "H = 6\nHprime = 4\ngamma = 2\nbatch_size = 64\nnoise = [[0, 0.02], [0.5, 0.0]]\n"
MODELS = {
    "bsc": (ET, BARS),
    "tsc": (ET, BARS + "signed = true\n"),
    "dsc": (ET + "values = [0, 1, 2]\n", BARS + "values = [0, 1, 2]\n"),
    "mca": (ET, BARS),
    "mmca": (ET, BARS),
    "gsc": (
        ET,
        'generator = "gsc_data"\nn_samples = 400\nD = 9\nH = 6\nrandom_state = 0\n',
    ),
    "sbl": (
        'dictionary = {file = "ops.npz", dataset = "A"}\n',
        'file = "ops.npz"\ndataset = "Y"\n',
    ),
    "krosbl": (
        'factors = {file = "ops.npz", dataset = ["Phi1", "Phi2"]}\n',
        'file = "ops.npz"\ndataset = "Y"\n',
    ),
    "sparse_coding": ("H = 12\nbatch_size = 64\nlam = 0.1\n", BARS),
    # evolutionary states: the per-row states are checkpointed and read back rank by rank
    "bsc+evo": (
        'H = 6\nstates = "evo"\nn_states = 8\nbatch_size = 64\nnoise = [[0, 0.02], [0.5, 0.0]]\n',
        BARS,
    ),
}


def write_job(path, name: str) -> None:
    model, data = MODELS[name]
    model_name = name.split("+")[0]  # "bsc+evo" is BSC with other settings
    path.write_text(
        f'[model]\nname = "{model_name}"\nn_iter = {N_ITER}\nrandom_state = 1\nbackend = "numpy"\n'
        f"{model}\n[data]\n{data}"
    )


#: runs several CLI jobs in one launch (the start-up of Python and the imports dominate)
SEVERAL = """
import sys
from prosper.cli import main
sys.exit(max(main(["fit", *job.split()]) for job in sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """For every model: an uninterrupted run, and a run killed after a random iteration and
    resumed (all under mpiexec -n 2); returns {name: (full, resumed, killed at)}."""
    if mpiexec_path() is None:
        pytest.skip("mpiexec not found")
    work = tmp_path_factory.mktemp("resume")
    problem = kronecker_problem(
        [(4, 6), (5, 8)], sparsity=2, snr_db=20, n_snapshots=8, random_state=0
    )
    np.savez(
        work / "ops.npz",
        A=problem.dictionary,
        Phi1=problem.factors[0],
        Phi2=problem.factors[1],
        Y=problem.Y,
    )
    (work / "several.py").write_text(SEVERAL)
    rng = np.random.default_rng()
    done = {}
    for name in MODELS:
        write_job(work / f"{name}.toml", name)
        kill_after = int(rng.integers(1, N_ITER // 3))
        done[name] = killed_run(work / f"{name}.toml", work / f"{name}_killed.h5", kill_after)
        assert kill_after < done[name] < N_ITER, (name, kill_after, done[name])
    jobs = [f"{name}.toml --out {name}_full.h5" for name in MODELS]
    jobs += [f"{name}.toml --out {name}_killed.h5 --resume" for name in MODELS]
    run_mpi(2, ["python", "several.py", *jobs], cwd=work, timeout=600)
    return {
        name: (work / f"{name}_full.h5", work / f"{name}_killed.h5", done[name]) for name in MODELS
    }


@pytest.mark.parametrize("name", sorted(MODELS))
def test_sigkill_at_a_random_iteration_then_resume(runs, name):
    full, resumed, killed_at = runs[name]
    with h5py.File(full, "r") as a, h5py.File(resumed, "r") as b:
        assert set(a["model"]) == set(b["model"])
        for key in a["model"]:
            np.testing.assert_allclose(
                b["model"][key][()], a["model"][key][()], rtol=1e-10, atol=1e-10, err_msg=key
            )
        F_a, F_b = a["metrics/free_energy"][()], b["metrics/free_energy"][()]
        np.testing.assert_allclose(F_b, F_a, rtol=1e-10, err_msg=f"{name} (killed at {killed_at})")
